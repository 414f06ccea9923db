//! Replica processes: each in its own process group, signalled as a group, never left behind.

use std::fs::File;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::Context;
use rustix::process::{kill_process_group, Pid, Signal};

use crate::id::NodeId;

/// How long replicas get to exit after SIGTERM at the end before SIGKILL.
pub const TERM_GRACE: Duration = Duration::from_millis(1000);

/// Where replica stdout/stderr go.
#[derive(Clone, Debug, Default)]
pub enum ReplicaOutput {
    /// Discarded.
    #[default]
    Null,
    /// Inherited from the harness.
    Inherit,
    /// One file per replica in this directory: `<prefix>-<id>.log`.
    Dir(PathBuf),
}

struct Replica {
    id: NodeId,
    child: Child,
    pgid: Pid,
    /// Set once reaped, so the exit is reported once.
    exited: bool,
}

/// The running replicas of one run. Dropping it terminates them all.
pub struct ReplicaSet {
    replicas: Vec<Replica>,
}

impl ReplicaSet {
    /// Starts `program <port> <id> <peers...>` for every `(id, peers)`.
    pub fn spawn(
        program: &Path,
        port: u16,
        plan: &[(NodeId, Vec<NodeId>)],
        output: &ReplicaOutput,
        log_prefix: &str,
        env: &[(String, String)],
    ) -> anyhow::Result<ReplicaSet> {
        let mut set = ReplicaSet {
            replicas: Vec::new(),
        };
        for (id, peers) in plan {
            let mut cmd = Command::new(program);
            cmd.arg(port.to_string())
                .arg(id.to_string())
                .args(peers.iter().map(NodeId::to_string))
                .envs(env.iter().map(|(k, v)| (k, v)))
                .stdin(Stdio::null())
                // Own group: the harness signals the whole group, and Ctrl-C at
                // the terminal reaches only the harness, which then cleans up.
                .process_group(0);
            match output {
                ReplicaOutput::Null => {
                    cmd.stdout(Stdio::null()).stderr(Stdio::null());
                }
                ReplicaOutput::Inherit => {}
                ReplicaOutput::Dir(dir) => {
                    let path = dir.join(format!("{log_prefix}-{id}.log"));
                    let file = File::create(&path)
                        .with_context(|| format!("cannot create {}", path.display()))?;
                    cmd.stdout(file.try_clone()?).stderr(file);
                }
            }
            // On error `set` drops here and terminates the replicas already started.
            let child = cmd
                .spawn()
                .with_context(|| format!("cannot start replica {}", program.display()))?;
            let pgid = Pid::from_child(&child);
            set.replicas.push(Replica {
                id: *id,
                child,
                pgid,
                exited: false,
            });
        }
        Ok(set)
    }

    /// SIGTERM replica `id`'s process group.
    pub fn kill(&mut self, id: NodeId) {
        if let Some(r) = self.replicas.iter().find(|r| r.id == id) {
            // ESRCH only means the group is already gone.
            let _ = kill_process_group(r.pgid, Signal::TERM);
        }
    }

    /// Replicas that exited since the last call, with how.
    pub fn poll_exits(&mut self) -> Vec<(NodeId, String)> {
        let mut exits = Vec::new();
        for r in self.replicas.iter_mut().filter(|r| !r.exited) {
            if let Ok(Some(status)) = r.child.try_wait() {
                r.exited = true;
                exits.push((r.id, describe(status)));
            }
        }
        exits
    }

    /// SIGTERM every group, SIGKILL what is left after `TERM_GRACE`, reap all.
    pub fn shutdown(&mut self) {
        for r in &self.replicas {
            let _ = kill_process_group(r.pgid, Signal::TERM);
        }
        let deadline = Instant::now() + TERM_GRACE;
        while Instant::now() < deadline {
            self.poll_exits();
            if self.replicas.iter().all(|r| r.exited) {
                break;
            }
            sleep(Duration::from_millis(10));
        }
        for r in &mut self.replicas {
            // Also for reaped leaders: a replica's own children may linger in its group.
            let _ = kill_process_group(r.pgid, Signal::KILL);
            if !r.exited {
                let _ = r.child.wait();
                r.exited = true;
            }
        }
        self.replicas.clear();
    }
}

impl Drop for ReplicaSet {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(signal)) => format!("signal {signal}"),
        _ => status.to_string(),
    }
}
