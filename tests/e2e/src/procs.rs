//! Processes the tests did not start themselves: `kvcli --local` spawns its own `kvserver`
//! nodes, so the quick-start test finds them by a unique path in their command line (to
//! check none outlives kvcli, and to kill them if the test fails), and takes a lock that
//! other test processes on the machine respect, because those nodes use fixed ports.

use rustix::fs::FlockOperation;
use std::fs::File;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Ids of the live processes (Linux `/proc`) with an argument containing `needle`.
pub fn pids_with_arg_containing(needle: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut pids: Vec<u32> = entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            // A process may exit between the listing and the read: it no longer counts.
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| {
                cmdline
                    .split(|b| *b == 0)
                    .any(|arg| String::from_utf8_lossy(arg).contains(needle))
            })
        })
        .collect();
    // Zombies keep their pid until reaped but hold no resources and run nothing.
    pids.retain(|pid| !is_zombie(*pid));
    pids.sort_unstable();
    pids
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        // The state follows the parenthesised command name, which may contain spaces.
        stat.rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z'))
    })
}

/// SIGKILLs every process with an argument containing `needle`; returns their ids.
pub fn kill_with_arg_containing(needle: &str) -> Vec<u32> {
    let pids = pids_with_arg_containing(needle);
    for &pid in &pids {
        if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        }
    }
    pids
}

/// An exclusive `flock` on a file in the temp directory, held until dropped. Every test
/// process on the machine that asks for the same name waits for it.
#[derive(Debug)]
pub struct MachineLock {
    _file: File,
    /// The lock file.
    pub path: PathBuf,
}

impl MachineLock {
    /// Takes the lock named `name`, waiting up to `timeout`; `None` if another process
    /// still holds it then.
    pub fn acquire(name: &str, timeout: Duration) -> Option<MachineLock> {
        let path = std::env::temp_dir().join(format!("{name}.lock"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
        let deadline = Instant::now() + timeout;
        loop {
            match rustix::fs::flock(&file, FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => return Some(MachineLock { _file: file, path }),
                Err(e) if e == rustix::io::Errno::WOULDBLOCK => {}
                Err(e) => panic!("flock {}: {e}", path.display()),
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn finds_and_kills_a_process_by_an_argument() {
        let marker = format!("kv-e2e-procs-test-{}", std::process::id());
        // `read` is a shell builtin, so the shell (with the marker as $0) stays the process.
        let mut child = Command::new("sh")
            .args(["-c", "read line", &marker])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("spawn sh");
        crate::wait_for("the child to show up", Duration::from_secs(5), || {
            (pids_with_arg_containing(&marker) == vec![child.id()]).then_some(())
        });
        assert_eq!(kill_with_arg_containing(&marker), vec![child.id()]);
        assert!(!child.wait().expect("reap").success());
        assert!(pids_with_arg_containing(&marker).is_empty());
    }

    #[test]
    fn the_lock_is_exclusive_until_dropped() {
        let name = format!("kv-e2e-lock-test-{}", std::process::id());
        let first = MachineLock::acquire(&name, Duration::from_secs(1)).expect("free lock");
        assert!(MachineLock::acquire(&name, Duration::from_millis(200)).is_none());
        drop(first);
        let again = MachineLock::acquire(&name, Duration::from_secs(1)).expect("released");
        let _ = std::fs::remove_file(&again.path);
    }
}
