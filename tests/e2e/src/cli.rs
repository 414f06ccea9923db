//! Running the real `kvcli` binary with piped stdin (script or one-shot mode) under a
//! deadline: a kvcli that hangs is killed and the test fails with what it printed, instead
//! of the whole test run hanging.

use std::io::{Read, Write};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// What a finished kvcli run printed, and how it exited.
#[derive(Debug)]
pub struct Run {
    /// The exit code (`None`: killed by a signal).
    pub code: Option<i32>,
    /// Its standard output.
    pub stdout: String,
    /// Its standard error.
    pub stderr: String,
}

impl Run {
    /// Stdout's lines.
    pub fn lines(&self) -> Vec<&str> {
        self.stdout.lines().collect()
    }
}

/// A `kvcli` command with `args`, stdin/stdout/stderr piped.
pub fn command(args: &[&str]) -> Command {
    let mut cmd = Command::new(crate::bin::kvcli());
    cmd.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// `kvcli --cluster FILE args...` with no stdin.
pub fn with_cluster(config: &str, args: &[&str], timeout: Duration) -> Run {
    let all: Vec<&str> = ["--cluster", config]
        .into_iter()
        .chain(args.iter().copied())
        .collect();
    run(&all, "", timeout)
}

/// One JSON object from a kvcli run's stdout (a `--json` command).
pub fn json_of(run: &Run) -> serde_json::Value {
    serde_json::from_str(run.stdout.trim()).unwrap_or_else(|e| panic!("JSON: {e}: {run:?}"))
}

/// `kvcli --json status`'s shard rows.
pub fn shard_rows(config: &str, timeout: Duration) -> Vec<serde_json::Value> {
    let run = with_cluster(config, &["--json", "status"], timeout);
    json_of(&run)["shards"].as_array().expect("shards").clone()
}

/// A JSON array of node ids, as `--json` output lists voters, learners and nodes.
pub fn node_ids(v: &serde_json::Value) -> Vec<u64> {
    v.as_array()
        .unwrap_or_else(|| panic!("an array of ids: {v}"))
        .iter()
        .map(|n| n.as_u64().expect("node id"))
        .collect()
}

/// Runs `kvcli args...`, feeding `stdin` then closing it, and waits up to `timeout`.
/// Panics (after killing it) if it does not exit in time.
pub fn run(args: &[&str], stdin: &str, timeout: Duration) -> Run {
    run_command(command(args), stdin, timeout)
}

/// Runs `cmd` (whose stdio must be piped) as [`run`] does.
pub fn run_command(mut cmd: Command, stdin: &str, timeout: Duration) -> Run {
    let child = cmd.spawn().expect("spawn kvcli");
    let mut guard = KillOnDrop(child);
    let child = &mut guard.0;
    let mut input = child.stdin.take().expect("piped stdin");
    let stdin = stdin.to_string();
    // A thread each, so that no pipe fills up while another is being waited on.
    let writer = std::thread::spawn(move || {
        // kvcli may stop reading at the first error; a closed pipe is fine then.
        let _ = input.write_all(stdin.as_bytes());
    });
    let out = reader(child.stdout.take().expect("piped stdout"));
    let err = reader(child.stderr.take().expect("piped stderr"));
    let status = wait_with_deadline(child, timeout);
    let _ = writer.join();
    let run = Run {
        code: status.and_then(|s| s.code()),
        stdout: out.join().expect("stdout reader"),
        stderr: err.join().expect("stderr reader"),
    };
    assert!(
        status.is_some(),
        "kvcli did not exit within {timeout:?}; it was killed. stdout:\n{}\nstderr:\n{}",
        run.stdout,
        run.stderr
    );
    run
}

fn reader(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = pipe.read_to_string(&mut s);
        s
    })
}

/// Waits for `child` up to `timeout`; on timeout kills it and returns `None`.
fn wait_with_deadline(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Kills the child when dropped (also while a test panics): a process a test starts by
/// hand ends with the test, passed or not.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
