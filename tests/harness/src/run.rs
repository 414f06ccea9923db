//! The runtime around the sans-I/O core: one UDP socket, the real clock, the replica processes.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use tokio::net::UdpSocket;
use tokio::time::{Instant, MissedTickBehavior};

use crate::procs::{ReplicaOutput, ReplicaSet};
use crate::scenario::Scenario;
use crate::sim::{Action, LateDatagrams, RunData, Sim};

/// Receive buffer: larger than any UDP datagram.
pub const DATAGRAM_BYTES_MAX: usize = 65_536;
/// How often replica processes are checked for an unplanned exit.
pub const EXIT_POLL: Duration = Duration::from_millis(50);
/// Datagrams drained per wake-up before timers get another look.
const DRAIN_BATCH: usize = 64;

/// How to run one scenario.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// The replica program (`./3700kvstore`).
    pub replica: PathBuf,
    /// Decides every random choice (workload, drops, partitions, victims).
    pub seed: u64,
    /// Harness UDP port on 127.0.0.1; 0 picks a free one.
    pub port: u16,
    /// Where replica output goes.
    pub output: ReplicaOutput,
    /// Prefix of replica log file names when `output` is a directory.
    pub log_prefix: String,
    /// Extra environment for the replica processes.
    pub env: Vec<(String, String)>,
    /// What happens to a datagram a replica sent but the harness reads after killing it.
    pub late_datagrams: LateDatagrams,
}

impl RunOptions {
    /// Defaults for `replica` with `seed`: free port, output discarded, late datagrams dropped.
    pub fn new(replica: impl Into<PathBuf>, seed: u64) -> RunOptions {
        RunOptions {
            replica: replica.into(),
            seed,
            port: 0,
            output: ReplicaOutput::Null,
            log_prefix: "replica".into(),
            env: Vec::new(),
            late_datagrams: LateDatagrams::Drop,
        }
    }
}

/// Runs `scenario` against real replica processes until its lifetime ends or
/// a packet storm stops it. Dropping the future (Ctrl-C) terminates the replicas.
pub async fn run_scenario(scenario: &Scenario, opts: &RunOptions) -> anyhow::Result<RunData> {
    let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, opts.port))
        .await
        .context("cannot bind the harness UDP socket")?;
    let port = socket.local_addr()?.port();
    let mut sim = Sim::new(scenario, opts.seed).with_late_datagrams(opts.late_datagrams);
    let start = Instant::now();
    let mut procs = ReplicaSet::spawn(
        &opts.replica,
        port,
        &sim.launch_args(),
        &opts.output,
        &opts.log_prefix,
        &opts.env,
    )?;
    let mut buf = vec![0u8; DATAGRAM_BYTES_MAX];
    let mut out = Vec::new();
    let mut send_errors = 0u64;
    let mut exit_poll = tokio::time::interval(EXIT_POLL);
    exit_poll.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let timer = tokio::time::sleep_until(start + sim.next_deadline());
    tokio::pin!(timer);
    while sim.stopped().is_none() {
        timer.as_mut().reset(start + sim.next_deadline());
        tokio::select! {
            received = socket.recv_from(&mut buf) => {
                if let Ok((len, from)) = received {
                    sim.on_datagram(start.elapsed(), from, &buf[..len], &mut out);
                    // Drain what is already queued so a busy socket cannot starve timers.
                    for _ in 0..DRAIN_BATCH {
                        let Ok((len, from)) = socket.try_recv_from(&mut buf) else { break };
                        sim.on_datagram(start.elapsed(), from, &buf[..len], &mut out);
                    }
                }
                // A receive error (an ICMP echo of a send to a closed port) carries no datagram.
            }
            _ = &mut timer => {}
            _ = exit_poll.tick() => {
                for (id, status) in procs.poll_exits() {
                    sim.on_replica_exit(start.elapsed(), id, &status);
                }
            }
        }
        sim.on_tick(start.elapsed(), &mut out);
        for action in out.drain(..) {
            match action {
                Action::Send { to, bytes } => {
                    if socket.send_to(&bytes, to).await.is_err() {
                        send_errors += 1;
                    }
                }
                Action::Kill(id) => procs.kill(id),
            }
        }
    }
    let ended = start.elapsed();
    procs.shutdown();
    let mut data = sim.finish(ended);
    if send_errors > 0 {
        data.notes.push(format!(
            "{send_errors} datagrams could not be sent by the harness socket"
        ));
    }
    Ok(data)
}

/// `run_scenario` on a fresh single-threaded runtime, for callers without one.
pub fn run_blocking(scenario: &Scenario, opts: &RunOptions) -> anyhow::Result<RunData> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(run_scenario(scenario, opts))
}
