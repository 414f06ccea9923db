//! The simulation engine: one seed decides the cluster, the faults and the workload; a
//! discrete-event loop runs the real NodeCore and Storage<SimDisk> of every node on a
//! simulated clock, network and disk, checking invariants after every step.

use crate::invariants::{Checker, TrackedLog, Violation};
use crate::trace::Trace;
use crate::workload::{keys, Action, Client, ClientTiming};
use bytes::Bytes;
use kv_node::codec::{decode_peer_datagram, encode_peer};
use kv_node::wal::{self, WalRecord};
use kv_node::{ClientToken, DiskOp, GroupMessage, GroupView, NodeConfig, NodeCore};
use kv_raft::MessageBody;
use kv_shared::linearizability::{check, CheckBudget, Operation, Verdict};
use kv_shared::proto::{ClientReply, ClientRequest, Role};
use kv_shared::{ClientId, NodeId, ShardId};
use kv_storage::{Recovered, SimDisk, Storage, WalOptions};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::fmt::Write as _;
use std::sync::Arc;

/// Simulated length of one tick.
pub const TICK_NS: u64 = 10_000_000;
const CLUSTER_ID: u64 = 0x5111;

/// Which faults a run injects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultMix {
    /// A perfect network and disk, no crashes.
    None,
    /// Network faults: loss, duplication, delay, reordering, partitions.
    Net,
    /// Network faults plus crashes, pauses and slow disks.
    All,
}

/// How the faults of an `All` run are aimed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultProfile {
    /// Any cluster shape; partitions, crashes, pauses, slow disks, leader hits.
    Mixed,
    /// Leader churn on a small cluster (3 nodes, 1 shard unless set) with slow disks:
    /// chaos every 3..12 ticks crashes or isolates the leader, crashes the leader with a
    /// follower or the whole cluster at once (power loss: unsynced writes vanish). It
    /// aims at acks sent before a write is durable; it comes near Raft's Figure 8 but
    /// has never caught it (see `Figure8`).
    Churn,
    /// Raft's Figure 8 driven on purpose (3 nodes, 1 shard unless set; shard 0 is the
    /// target): a repeated partition script reacting to who leads. Cut off leader A (it
    /// keeps appending client writes alone); when B wins among the rest, cut B off at
    /// once (its no-op stays on B); reconnect A with the others, and when one of them
    /// wins, cut it off (or crash it) after a random delay of a few network round trips
    /// and reconnect B. Appends carry one entry each (`append_bytes_max` 1), so a new
    /// leader catches a follower up entry by entry and the cut can fall between acks.
    /// Only `kvsim --profile figure8` or `SimOptions::profile` selects it.
    Figure8,
}

/// Where the Figure 8 script stands (see [`FaultProfile::Figure8`]).
#[derive(Clone, Copy, Debug)]
enum Fig8 {
    /// All links up; cut the leader off at `start_ns`.
    Idle { start_ns: u64 },
    /// `old`, leader in `term`, is alone; waiting for a leader among the others.
    OldCut {
        old: usize,
        term: u64,
        give_up_ns: u64,
    },
    /// `mid` won and was cut off too: every node alone until `rejoin_ns`.
    AllCut { mid: usize, rejoin_ns: u64 },
    /// Everyone but `mid` (leader in `term`) reconnected; waiting for their leader.
    Rejoined {
        mid: usize,
        term: u64,
        give_up_ns: u64,
    },
    /// Their leader will be cut off by an `Ev::Fig8Cut`.
    Racing,
    /// The cut leader is alone, `mid` rejoined the rest; heal everything at `heal_ns`.
    Final { heal_ns: u64 },
}

/// Called on every NodeCore the simulator starts (tests plant bugs with it).
pub type NodeHook = Arc<dyn Fn(&mut NodeCore) + Send + Sync>;

/// What to run.
#[derive(Clone)]
pub struct SimOptions {
    /// The seed: decides everything not fixed below.
    pub seed: u64,
    /// Cluster size (3..=7); seed-chosen if `None`.
    pub nodes: Option<usize>,
    /// Shards (1..=8); seed-chosen if `None`.
    pub shards: Option<u32>,
    /// Replicas per shard (1..=nodes); seed-chosen if `None` (every node for Figure 8).
    pub replication: Option<usize>,
    /// Fault mix.
    pub faults: FaultMix,
    /// How `FaultMix::All` aims its faults; seed-chosen if `None` (Churn for about one
    /// seed in four).
    pub profile: Option<FaultProfile>,
    /// Ticks of the safety phase (faults on).
    pub safety_ticks: u64,
    /// Most ticks the liveness phase (faults healed) may take.
    pub liveness_ticks: u64,
    /// Keep the whole trace (for `--trace`), not only its tail.
    pub trace: bool,
    /// Trace every datagram and disk write (slower; on for single-seed replays).
    pub detail: bool,
    /// Applied to every NodeCore started.
    pub node_hook: Option<NodeHook>,
    /// Every fsync of every node takes exactly this long, in both phases (0: off). Writes
    /// that arrive while one runs share the next one, as the runtime's disk thread does
    /// (group commit). For liveness with disks slower than a heartbeat.
    pub slow_disk_ns: u64,
}

impl SimOptions {
    /// Defaults for `seed`: all faults, 800 ticks of safety phase.
    pub fn new(seed: u64) -> SimOptions {
        SimOptions {
            seed,
            nodes: None,
            shards: None,
            replication: None,
            faults: FaultMix::All,
            profile: None,
            safety_ticks: 800,
            liveness_ticks: 1500,
            trace: false,
            detail: false,
            node_hook: None,
            slow_disk_ns: 0,
        }
    }
}

/// A failed run.
#[derive(Clone, Debug)]
pub struct Failure {
    /// The invariant broken.
    pub invariant: String,
    /// Facts.
    pub detail: String,
    /// The last events before the failure.
    pub trace_tail: Vec<String>,
}

/// Counters of a run.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    /// Nodes.
    pub nodes: usize,
    /// Shards.
    pub shards: u32,
    /// Replicas per shard.
    pub replication: usize,
    /// Simulated time at the end.
    pub end_ns: u64,
    /// Events processed.
    pub events: u64,
    /// Client operations with a definite outcome.
    pub ops_ok: u64,
    /// Client operations abandoned (unknown outcome).
    pub ops_unknown: u64,
    /// Crashes injected.
    pub crashes: u64,
    /// Partitions injected.
    pub partitions: u64,
    /// Leaders elected (distinct (shard, term)).
    pub elections: u64,
    /// Datagrams delivered between nodes.
    pub datagrams: u64,
}

/// The result of one run.
#[derive(Clone, Debug)]
pub struct Report {
    /// The seed.
    pub seed: u64,
    /// `None` if every check passed.
    pub failure: Option<Failure>,
    /// Counters.
    pub stats: Stats,
    /// The whole trace (only with `SimOptions::trace`).
    pub trace: Vec<String>,
}

impl Report {
    /// True if every check passed.
    pub fn passed(&self) -> bool {
        self.failure.is_none()
    }
}

#[derive(Clone, Debug)]
enum Ev {
    Tick(usize),
    Deliver {
        to: usize,
        bytes: Vec<u8>,
    },
    DiskDone {
        node: usize,
        inc: u64,
        id: u64,
    },
    ToNode {
        node: usize,
        req: ClientRequest,
    },
    ToClient {
        client: usize,
        reply: ClientReply,
    },
    ClientWake {
        client: usize,
        epoch: u64,
    },
    Chaos,
    Heal,
    Restart(usize),
    Unpause(usize),
    DiskFast(usize),
    /// Crash a node that just became leader, if it is still the same incarnation.
    HitNewLeader {
        node: usize,
        inc: u64,
    },
    /// Figure 8 script: cut off (maybe crash) the leader the reconnected nodes elected.
    Fig8Cut(usize),
    Liveness,
}

struct Queued {
    at: u64,
    seq: u64,
    ev: Ev,
}

impl PartialEq for Queued {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Queued {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(o.at, o.seq))
    }
}

struct Running {
    core: NodeCore,
    storage: Storage<SimDisk>,
}

struct Node {
    id: NodeId,
    config: NodeConfig,
    disk: SimDisk,
    run: Option<Running>,
    inc: u64,
    paused: bool,
    disk_slow: bool,
    disk_free_ns: u64,
    /// With `slow_disk_ns`: when the fsync that ends at `disk_free_ns` started.
    disk_sync_start_ns: u64,
    ticks: u64,
}

/// Network behaviour; the safety phase draws it from the seed, liveness makes it quiet.
#[derive(Clone, Copy, Debug)]
struct NetParams {
    loss: f64,
    dup: f64,
    delay_ns_min: u64,
    delay_ns_max: u64,
    long_delay: f64,
}

impl NetParams {
    fn quiet() -> NetParams {
        NetParams {
            loss: 0.0,
            dup: 0.0,
            delay_ns_min: 200_000,
            delay_ns_max: 2_000_000,
            long_delay: 0.0,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    Safety,
    Liveness,
    ReadBack,
}

struct Outstanding {
    node: usize,
    inc: u64,
    issued_tick: u64,
}

struct Sim {
    opts: SimOptions,
    rng: SmallRng,
    now: u64,
    seq: u64,
    queue: BinaryHeap<Reverse<Queued>>,
    nodes: Vec<Node>,
    ids: Vec<NodeId>,
    shards: u32,
    net: NetParams,
    blocked: BTreeSet<(usize, usize)>,
    clients: Vec<Client>,
    timing: ClientTiming,
    keys: Vec<Bytes>,
    history: Vec<Operation>,
    checker: Checker,
    trace: Trace,
    next_token: u64,
    outstanding: BTreeMap<u64, Outstanding>,
    phase: Phase,
    liveness_start_ns: u64,
    ok_at_liveness: Vec<u64>,
    stats: Stats,
    failure: Option<Violation>,
    done: bool,
    disk_latency_ns_max: u64,
    request_timeout_ticks: u64,
    profile: FaultProfile,
    fig8: Fig8,
}

/// Runs one simulation.
pub fn run(opts: &SimOptions) -> Report {
    let mut sim = Sim::new(opts.clone());
    sim.run();
    sim.report()
}

fn summarize(msgs: &[GroupMessage]) -> String {
    let mut s = String::new();
    for (i, gm) in msgs.iter().enumerate() {
        if i == 6 {
            let _ = write!(s, " +{}", msgs.len() - 6);
            break;
        }
        let m = &gm.msg;
        let _ = write!(s, " s{}:", gm.shard.0);
        let _ = match &m.body {
            MessageBody::PreVote {
                last_index,
                last_term,
            } => {
                write!(s, "PreVote(t{} last {last_index}/{last_term})", m.term)
            }
            MessageBody::PreVoteResp { reject } => {
                write!(s, "PreVoteResp(t{} rej={reject})", m.term)
            }
            MessageBody::Vote {
                last_index,
                last_term,
                transfer,
            } => write!(
                s,
                "Vote(t{} last {last_index}/{last_term}{})",
                m.term,
                if *transfer { " transfer" } else { "" }
            ),
            MessageBody::VoteResp { reject } => write!(s, "VoteResp(t{} rej={reject})", m.term),
            MessageBody::Append {
                prev_index,
                prev_term,
                entries,
                commit,
            } => write!(
                s,
                "App(t{} prev {prev_index}/{prev_term} n{} c{commit})",
                m.term,
                entries.len()
            ),
            MessageBody::AppendResp { reject, index, .. } => {
                write!(s, "AppResp(t{} idx {index} rej={reject})", m.term)
            }
            MessageBody::Heartbeat { commit, read_round } => {
                write!(s, "HB(t{} c{commit} r{read_round})", m.term)
            }
            MessageBody::HeartbeatResp { read_round } => {
                write!(s, "HBResp(t{} r{read_round})", m.term)
            }
            MessageBody::InstallSnapshot {
                meta,
                offset,
                chunk,
                ..
            } => write!(
                s,
                "Snap(t{} idx {} off {offset} len {})",
                m.term,
                meta.index,
                chunk.len()
            ),
            MessageBody::InstallSnapshotResp {
                snapshot_index,
                received,
                done,
            } => write!(
                s,
                "SnapResp(t{} idx {snapshot_index} got {received} done={done})",
                m.term
            ),
            MessageBody::TimeoutNow => write!(s, "TimeoutNow(t{})", m.term),
        };
    }
    s
}

impl Sim {
    fn new(opts: SimOptions) -> Sim {
        let mut rng = SmallRng::seed_from_u64(opts.seed);
        // Drawn from its own stream so that Mixed seeds run exactly as before profiles.
        let profile = match (opts.faults, opts.profile) {
            (FaultMix::All, Some(p)) => p,
            (FaultMix::All, None)
                if SmallRng::seed_from_u64(opts.seed ^ 0x9e37_79b9_7f4a_7c15).gen_bool(0.25) =>
            {
                FaultProfile::Churn
            }
            _ => FaultProfile::Mixed,
        };
        let churn = profile == FaultProfile::Churn;
        let small = churn || profile == FaultProfile::Figure8;
        let n = opts.nodes.unwrap_or_else(|| {
            let drawn = rng.gen_range(3..=7);
            if small {
                3
            } else {
                drawn
            }
        });
        let shards = opts.shards.unwrap_or_else(|| {
            let drawn = rng.gen_range(1..=8);
            if small {
                1
            } else {
                drawn
            }
        });
        assert!((1..=16).contains(&n) && shards >= 1, "bad cluster shape");
        let ids: Vec<NodeId> = (1..=n as u64).map(NodeId).collect();
        let faulty = opts.faults != FaultMix::None;
        let mut net = if faulty {
            NetParams {
                loss: [0.0, 0.01, 0.05, 0.15][rng.gen_range(0..4)],
                dup: [0.0, 0.02, 0.1][rng.gen_range(0..3)],
                delay_ns_min: 100_000,
                delay_ns_max: rng.gen_range(1..=30) * 1_000_000,
                long_delay: [0.0, 0.01, 0.05][rng.gen_range(0..3)],
            }
        } else {
            NetParams::quiet()
        };
        if profile == FaultProfile::Figure8 {
            // The script's partitions are the faults; heavy loss would only stall it.
            net.loss = net.loss.min(0.01);
            net.long_delay = 0.0;
        }
        let pre_vote = rng.gen_bool(0.8);
        let check_quorum = rng.gen_bool(0.8);
        let spread_leaders = rng.gen_bool(0.5);
        let snapshot_threshold_entries = [20, 50, 200, 100_000][rng.gen_range(0..4)];
        let request_timeout_ticks: u64 = 40;
        // Optional Raft behaviours come from a stream of their own, so that drawing one
        // more never changes what the main stream draws for a seed.
        let mut tuning_rng = SmallRng::seed_from_u64(opts.seed ^ 0x7e57_7a11_0f0c_a5e5);
        let quiesce = tuning_rng.gen_bool(0.75);
        let eager_followers = tuning_rng.gen_bool(0.2).then_some(n / 2);
        let broadcast_commit = tuning_rng.gen_bool(0.2);
        // Half the seeds place every shard on every node, the others on R of N; Figure 8
        // scripts partitions of the whole cluster around one group on every node.
        let replication = opts.replication.unwrap_or_else(|| {
            let drawn = tuning_rng.gen_range(1..=n);
            if profile == FaultProfile::Figure8 || tuning_rng.gen_bool(0.5) {
                n
            } else {
                drawn
            }
        });
        assert!((1..=n).contains(&replication), "bad replication factor");
        let nodes = ids
            .iter()
            .map(|&id| {
                let mut config = NodeConfig::for_test(id, ids.clone(), shards);
                config.replication = replication;
                config.raft.heartbeat_ticks = 2;
                config.raft.election_ticks_min = 10;
                config.raft.election_ticks_max = 20;
                config.raft.pre_vote = pre_vote;
                config.raft.check_quorum = check_quorum;
                config.spread_leaders = spread_leaders;
                config.snapshot_threshold_entries = snapshot_threshold_entries;
                config.request_timeout_ticks = request_timeout_ticks as u32;
                config.seed = opts.seed;
                config.quiesce = quiesce;
                config.raft.eager_followers = eager_followers;
                config.raft.broadcast_commit = broadcast_commit;
                if profile == FaultProfile::Figure8 {
                    // One entry per Append: a follower catching up acks old-term entries
                    // one by one before the new leader's no-op.
                    config.raft.append_bytes_max = 1;
                }
                Node {
                    id,
                    config,
                    disk: SimDisk::new(rng.gen()),
                    run: None,
                    inc: 0,
                    paused: false,
                    disk_slow: false,
                    disk_free_ns: 0,
                    disk_sync_start_ns: 0,
                    ticks: 0,
                }
            })
            .collect();
        let key_count = rng.gen_range(2..=6);
        let client_count = rng.gen_range(2..=5);
        let mut clients: Vec<Client> = (0..client_count)
            .map(|i| Client::new(i, ClientId(rng.gen::<u64>() | 1), shards, key_count))
            .collect();
        if churn {
            let pad = [0, 12_000, 24_000][rng.gen_range(0..3)];
            for c in &mut clients {
                c.value_pad_bytes = pad;
            }
        }
        let timing = ClientTiming {
            attempt_ns: (request_timeout_ticks + 10) * TICK_NS,
            give_up_ns: 300 * TICK_NS,
            backoff_ns: 2 * TICK_NS,
            think_ns_max: 3 * TICK_NS,
        };
        let trace = Trace::new(opts.trace, opts.detail);
        let disk_latency_ns_max = if opts.faults == FaultMix::All {
            let drawn = [0, 2_000_000, 10_000_000, 30_000_000][rng.gen_range(0..4)];
            match profile {
                FaultProfile::Churn => rng.gen_range(20..=60) * 1_000_000,
                FaultProfile::Figure8 => rng.gen_range(2..=30) * 1_000_000,
                FaultProfile::Mixed => drawn,
            }
        } else {
            0
        };
        Sim {
            rng,
            now: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            nodes,
            ids,
            shards,
            net,
            blocked: BTreeSet::new(),
            clients,
            timing,
            keys: keys(key_count),
            history: Vec::new(),
            checker: Checker::default(),
            trace,
            next_token: 1,
            outstanding: BTreeMap::new(),
            phase: Phase::Safety,
            liveness_start_ns: 0,
            ok_at_liveness: Vec::new(),
            stats: Stats {
                nodes: n,
                shards,
                replication,
                ..Stats::default()
            },
            failure: None,
            done: false,
            disk_latency_ns_max,
            request_timeout_ticks,
            profile,
            fig8: Fig8::Idle { start_ns: 0 },
            opts,
        }
    }

    fn at(&mut self, at: u64, ev: Ev) {
        self.seq += 1;
        self.queue.push(Reverse(Queued {
            at,
            seq: self.seq,
            ev,
        }));
    }

    fn fail(&mut self, v: Violation) {
        if self.failure.is_none() {
            self.trace
                .log(self.now, format!("VIOLATION {}: {}", v.invariant, v.detail));
            self.failure = Some(v);
        }
    }

    fn run(&mut self) {
        self.trace.log(
            0,
            format!(
                "seed {} nodes {} shards {} clients {} keys {} faults {:?} profile {:?} net {:?} disk latency max {}ms",
                self.opts.seed,
                self.nodes.len(),
                self.shards,
                self.clients.len(),
                self.keys.len(),
                self.opts.faults,
                self.profile,
                self.net,
                self.disk_latency_ns_max / 1_000_000
            ),
        );
        for i in 0..self.nodes.len() {
            self.start_node(i);
            let phase = self.rng.gen_range(0..TICK_NS);
            self.at(phase, Ev::Tick(i));
        }
        for c in 0..self.clients.len() {
            let t = self.rng.gen_range(0..5 * TICK_NS);
            self.at(
                t,
                Ev::ClientWake {
                    client: c,
                    epoch: 0,
                },
            );
        }
        if self.opts.faults != FaultMix::None {
            let t = self.rng.gen_range(20..60) * TICK_NS;
            self.at(t, Ev::Chaos);
        }
        let live_at = self.opts.safety_ticks * TICK_NS;
        self.at(live_at, Ev::Liveness);
        let deadline = live_at + self.opts.liveness_ticks * TICK_NS;
        while let Some(Reverse(q)) = self.queue.pop() {
            if self.failure.is_some() || self.done {
                break;
            }
            if q.at > deadline {
                self.liveness_failure();
                break;
            }
            self.now = q.at;
            self.stats.events += 1;
            self.step(q.ev);
        }
        if self.failure.is_none() && self.done {
            self.final_checks();
        }
    }

    fn step(&mut self, ev: Ev) {
        match ev {
            Ev::Tick(i) => {
                self.at(self.now + TICK_NS, Ev::Tick(i));
                if self.nodes[i].paused {
                    return;
                }
                let Some(r) = self.nodes[i].run.as_mut() else {
                    return;
                };
                r.core.tick();
                self.nodes[i].ticks += 1;
                self.after_input(i);
                self.check_progress(i);
                self.check_unanswered(i);
                if i == 0 && self.phase == Phase::Liveness {
                    self.check_liveness_done();
                }
            }
            Ev::Deliver { to, bytes } => {
                if self.nodes[to].paused || self.nodes[to].run.is_none() {
                    return;
                }
                let (from, msgs) = match decode_peer_datagram(&bytes, CLUSTER_ID) {
                    Ok(x) => x,
                    Err(e) => {
                        return self.fail(Violation {
                            invariant: "codec",
                            detail: format!(
                                "a datagram the node core encoded does not decode: {e}"
                            ),
                        })
                    }
                };
                let f = from.0 as usize - 1;
                if self.blocked.contains(&(f, to)) {
                    return;
                }
                self.stats.datagrams += 1;
                if self.trace.wants_detail() {
                    let s = summarize(&msgs);
                    self.trace
                        .log(self.now, format!("{from}->{} {s}", self.ids[to]));
                }
                let now_ms = self.now / 1_000_000;
                let r = self.nodes[to].run.as_mut().expect("running");
                r.core.note_peer_heard(from, now_ms);
                r.core.on_peer_messages(from, msgs);
                self.after_input(to);
            }
            Ev::DiskDone { node, inc, id } => {
                if self.nodes[node].inc != inc {
                    return;
                }
                let r = self.nodes[node]
                    .run
                    .as_mut()
                    .expect("same incarnation runs");
                r.storage.sync().expect("sim disk sync");
                r.core.on_disk_done(id);
                self.after_input(node);
            }
            Ev::ToNode { node, req } => {
                if self.nodes[node].paused || self.nodes[node].run.is_none() {
                    return;
                }
                // Every arriving datagram gets its own token, as the runtime does.
                let token = self.next_token;
                self.next_token += 1;
                // Padded values (Churn) would make every line tens of kilobytes.
                let mut op = format!("{:?}", req.op);
                if op.len() > 240 {
                    let cut = (0..=240)
                        .rev()
                        .find(|&i| op.is_char_boundary(i))
                        .unwrap_or(0);
                    op.truncate(cut);
                    op.push_str("...");
                }
                self.trace.log(
                    self.now,
                    format!(
                        "{} <- client {} seq {} {op}",
                        self.ids[node], req.client, req.seq
                    ),
                );
                self.outstanding.insert(
                    token,
                    Outstanding {
                        node,
                        inc: self.nodes[node].inc,
                        issued_tick: self.nodes[node].ticks,
                    },
                );
                let r = self.nodes[node].run.as_mut().expect("running");
                r.core.on_client_request(ClientToken(token), req);
                self.after_input(node);
            }
            Ev::ToClient { client, reply } => {
                self.trace.log(
                    self.now,
                    format!(
                        "client {} got seq {} {:?}",
                        reply.client, reply.seq, reply.outcome
                    ),
                );
                let c = &mut self.clients[client];
                let r = c.on_reply(
                    reply,
                    self.now,
                    &mut self.rng,
                    &self.ids,
                    &self.keys,
                    self.shards,
                    &self.timing,
                    &mut self.history,
                );
                match r {
                    Ok(a) => {
                        self.client_action(client, a);
                        if self.readback_finished() {
                            self.done = true;
                        }
                    }
                    Err(detail) => self.fail(Violation {
                        invariant: "client protocol",
                        detail,
                    }),
                }
            }
            Ev::ClientWake { client, epoch } => {
                let c = &mut self.clients[client];
                let a = c.wake(
                    epoch,
                    self.now,
                    &mut self.rng,
                    &self.ids,
                    &self.keys,
                    self.shards,
                    &self.timing,
                    &mut self.history,
                );
                self.client_action(client, a);
            }
            Ev::Chaos => self.chaos(),
            Ev::Heal => {
                if !self.blocked.is_empty() {
                    self.trace.log(self.now, "heal partitions".into());
                    self.blocked.clear();
                }
            }
            Ev::Restart(i) => {
                if self.nodes[i].run.is_none() {
                    self.start_node(i);
                }
            }
            Ev::Unpause(i) => {
                if self.nodes[i].paused {
                    self.trace.log(self.now, format!("{} resumes", self.ids[i]));
                    self.nodes[i].paused = false;
                }
            }
            Ev::DiskFast(i) => self.nodes[i].disk_slow = false,
            Ev::HitNewLeader { node, inc } => {
                if self.phase == Phase::Safety && self.nodes[node].inc == inc {
                    self.trace
                        .log(self.now, format!("new leader {} is hit", self.ids[node]));
                    self.crash_for(node, 2..=25);
                }
            }
            Ev::Fig8Cut(x) => self.figure8_cut(x),
            Ev::Liveness => self.start_liveness(),
        }
    }

    fn client_action(&mut self, client: usize, a: Action) {
        match a {
            Action::Idle => {}
            Action::Wake { wake_ns, epoch } => self.at(wake_ns, Ev::ClientWake { client, epoch }),
            Action::Send {
                node,
                req,
                wake_ns,
                epoch,
            } => {
                self.at(wake_ns, Ev::ClientWake { client, epoch });
                let node = node.0 as usize - 1;
                for at in self.net_delays() {
                    self.at(
                        at,
                        Ev::ToNode {
                            node,
                            req: req.clone(),
                        },
                    );
                }
            }
        }
    }

    /// Arrival times of one message: none if lost, two if duplicated.
    fn net_delays(&mut self) -> Vec<u64> {
        let p = self.net;
        if p.loss > 0.0 && self.rng.gen_bool(p.loss) {
            return Vec::new();
        }
        let copies = if p.dup > 0.0 && self.rng.gen_bool(p.dup) {
            2
        } else {
            1
        };
        (0..copies)
            .map(|_| {
                let mut d = self.rng.gen_range(p.delay_ns_min..=p.delay_ns_max);
                if p.long_delay > 0.0 && self.rng.gen_bool(p.long_delay) {
                    d += self.rng.gen_range(1..=30) * TICK_NS;
                }
                self.now + d
            })
            .collect()
    }

    fn start_node(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let (storage, recovered) = Storage::open(
            node.disk.clone(),
            WalOptions {
                segment_bytes_max: 64 * 1024,
            },
        )
        .expect("the sim disk recovers");
        let logs = tracked_logs(&recovered, self.shards, &node.config);
        let mut core = match NodeCore::new(node.config.clone(), recovered) {
            Ok(c) => c,
            Err(e) => {
                return self.fail(Violation {
                    invariant: "recovery",
                    detail: format!("{} cannot recover: {e}", self.ids[i]),
                })
            }
        };
        core.set_observe_applies(true);
        if let Some(hook) = &self.opts.node_hook {
            hook(&mut core);
        }
        node.inc += 1;
        node.ticks = 0;
        node.paused = false;
        node.disk_free_ns = self.now;
        node.disk_sync_start_ns = self.now;
        node.run = Some(Running { core, storage });
        self.checker.restarted(self.ids[i], logs);
        if self.nodes[i].inc > 1 {
            self.trace
                .log(self.now, format!("{} restarts", self.ids[i]));
        }
    }

    fn crash(&mut self, i: usize) {
        let Some(r) = self.nodes[i].run.take() else {
            return;
        };
        drop(r.core);
        let disk = r.storage.into_disk();
        disk.crash();
        self.nodes[i].inc += 1;
        self.outstanding.retain(|_, o| o.node != i);
        self.stats.crashes += 1;
        self.trace.log(self.now, format!("{} CRASHES", self.ids[i]));
    }

    /// Executes a node's output: disk writes, datagrams, replies; then checks.
    fn after_input(&mut self, i: usize) {
        let id = self.ids[i];
        let Some(r) = self.nodes[i].run.as_mut() else {
            return;
        };
        let out = r.core.take_output();
        let applied = r.core.take_applied();
        for a in applied {
            if let Err(v) = self.checker.applied(id, a.shard.0, a.index, a.term, a.hash) {
                return self.fail(v);
            }
        }
        for w in out.disk_writes {
            if self.trace.wants_detail() {
                let line = describe_write(&w);
                self.trace
                    .log(self.now, format!("{id} disk write {}:{line}", w.id));
            }
            let r = self.nodes[i].run.as_mut().expect("running");
            for op in w.ops {
                match op {
                    DiskOp::Append(rec) => {
                        if let Ok(WalRecord::Entries { shard, record }) = wal::decode(&rec) {
                            let e: Vec<(u64, u64)> = record
                                .entries
                                .iter()
                                .map(|e| (e.term, kv_node::entry_hash(e)))
                                .collect();
                            if let Err(v) =
                                self.checker
                                    .wrote_entries(id, shard, record.first_index, &e)
                            {
                                return self.fail(v);
                            }
                        }
                        r.storage.append(&rec).expect("sim disk append");
                    }
                    DiskOp::SaveSnapshot { shard, index, data } => {
                        self.checker.wrote_snapshot(id, shard, index);
                        r.storage
                            .save_snapshot(shard, index, &data)
                            .expect("sim disk snapshot");
                    }
                    DiskOp::Compact { shard, index } => {
                        r.storage.compact(shard, index).expect("sim disk compact");
                    }
                }
            }
            let node = &mut self.nodes[i];
            let mut latency = if self.disk_latency_ns_max > 0 {
                self.rng.gen_range(0..=self.disk_latency_ns_max)
            } else {
                0
            };
            if node.disk_slow {
                latency += self.rng.gen_range(1..=15) * TICK_NS;
            }
            let done = if self.opts.slow_disk_ns > 0 {
                // Group commit: join the fsync that has not started yet, or start one
                // when the running one ends.
                if node.disk_sync_start_ns <= self.now {
                    node.disk_sync_start_ns = node.disk_free_ns.max(self.now);
                    node.disk_free_ns = node.disk_sync_start_ns + self.opts.slow_disk_ns;
                }
                node.disk_free_ns
            } else {
                node.disk_free_ns.max(self.now) + latency
            };
            node.disk_free_ns = done;
            let inc = node.inc;
            self.at(
                done,
                Ev::DiskDone {
                    node: i,
                    inc,
                    id: w.id,
                },
            );
        }
        for (to, msgs) in out.datagrams {
            let t = to.0 as usize - 1;
            if self.blocked.contains(&(i, t)) {
                continue;
            }
            let bytes = encode_peer(CLUSTER_ID, id, &msgs);
            for at in self.net_delays() {
                self.at(
                    at,
                    Ev::Deliver {
                        to: t,
                        bytes: bytes.clone(),
                    },
                );
            }
        }
        for (token, reply) in out.replies {
            if self.outstanding.remove(&token.0).is_none() {
                return self.fail(Violation {
                    invariant: "one reply per request",
                    detail: format!(
                        "{id} answered request {} (client {} seq {}) a second time: {:?}",
                        token.0, reply.client, reply.seq, reply.outcome
                    ),
                });
            }
            let client = self
                .clients
                .iter()
                .position(|c| c.id == reply.client)
                .expect("replies go to known clients");
            for at in self.net_delays() {
                self.at(
                    at,
                    Ev::ToClient {
                        client,
                        reply: reply.clone(),
                    },
                );
            }
        }
        // Committed entries (from the commit index, before any apply), election safety
        // and leader completeness, monotonic applied, on every step.
        let elections = self.checker.elections;
        let r = self.nodes[i].run.as_ref().expect("running");
        for s in 0..self.shards {
            let Some(v) = r.core.group_view(ShardId(s)) else {
                continue;
            };
            let commit = r.core.raft_status(ShardId(s)).commit;
            if let Err(v) = self.checker.committed(id, s, commit) {
                return self.fail(v);
            }
            if v.role == Role::Leader {
                if let Err(v) = self.checker.saw_leader(id, s, v.term) {
                    return self.fail(v);
                }
            }
            if let Err(v) = self.checker.progress(id, s, None, v.applied) {
                return self.fail(v);
            }
        }
        // Churn: a new leader sometimes crashes while its first entries have reached only
        // some followers and its own disk may not have them yet (Figure 8's window).
        if self.checker.elections > elections
            && self.profile == FaultProfile::Churn
            && self.phase == Phase::Safety
            && self.rng.gen_bool(0.3)
        {
            let at = self.now + self.rng.gen_range(0..=4 * TICK_NS);
            let inc = self.nodes[i].inc;
            self.at(at, Ev::HitNewLeader { node: i, inc });
        }
        if self.checker.elections > elections && self.profile == FaultProfile::Figure8 {
            self.figure8_elected(i);
        }
        self.stats.elections = self.checker.elections;
    }

    fn check_progress(&mut self, i: usize) {
        let id = self.ids[i];
        let Some(r) = self.nodes[i].run.as_ref() else {
            return;
        };
        for s in 0..self.shards {
            let Some(GroupView { applied, .. }) = r.core.group_view(ShardId(s)) else {
                continue;
            };
            let st = r.core.raft_status(ShardId(s));
            if let Err(v) = self.checker.progress(id, s, Some(st.commit), applied) {
                return self.fail(v);
            }
        }
    }

    /// Every request a live node took must be answered within its request timeout.
    fn check_unanswered(&mut self, i: usize) {
        let inc = self.nodes[i].inc;
        let ticks = self.nodes[i].ticks;
        let limit = self.request_timeout_ticks + 2;
        let late = self
            .outstanding
            .iter()
            .find(|(_, o)| o.node == i && o.inc == inc && ticks > o.issued_tick + limit);
        if let Some((token, o)) = late {
            let detail = format!(
                "{} has not answered request {token} after {} ticks (request timeout {})",
                self.ids[i],
                ticks - o.issued_tick,
                self.request_timeout_ticks
            );
            self.fail(Violation {
                invariant: "every request answered",
                detail,
            });
        }
    }

    fn chaos(&mut self) {
        if self.phase != Phase::Safety {
            return;
        }
        match self.profile {
            FaultProfile::Churn => return self.chaos_churn(),
            FaultProfile::Figure8 => return self.figure8_step(),
            FaultProfile::Mixed => {}
        }
        let next = self.now + self.rng.gen_range(5..=30) * TICK_NS;
        self.at(next, Ev::Chaos);
        let all = self.opts.faults == FaultMix::All;
        let n = self.nodes.len();
        let roll = self.rng.gen_range(0..100);
        match roll {
            0..=24 if self.blocked.is_empty() => {
                self.stats.partitions += 1;
                let kind = self.rng.gen_range(0..3);
                let desc = match kind {
                    0 => {
                        let x = self.rng.gen_range(0..n);
                        for j in 0..n {
                            if j != x {
                                self.blocked.insert((x, j));
                                self.blocked.insert((j, x));
                            }
                        }
                        format!("isolate {}", self.ids[x])
                    }
                    1 => {
                        let side: Vec<bool> = (0..n).map(|_| self.rng.gen_bool(0.5)).collect();
                        for a in 0..n {
                            for b in 0..n {
                                if side[a] != side[b] {
                                    self.blocked.insert((a, b));
                                }
                            }
                        }
                        format!("split {side:?}")
                    }
                    _ => {
                        for a in 0..n {
                            for b in 0..n {
                                if a != b && self.rng.gen_bool(0.3) {
                                    self.blocked.insert((a, b));
                                }
                            }
                        }
                        format!("one-way cuts {:?}", self.blocked)
                    }
                };
                self.trace.log(self.now, format!("PARTITION {desc}"));
                let heal = self.now + self.rng.gen_range(20..=200) * TICK_NS;
                self.at(heal, Ev::Heal);
            }
            25..=39 if all => {
                let x = self.rng.gen_range(0..n);
                if self.nodes[x].run.is_some() {
                    self.crash(x);
                    let back = self.now + self.rng.gen_range(5..=100) * TICK_NS;
                    self.at(back, Ev::Restart(x));
                }
            }
            40..=47 if all => {
                let x = self.rng.gen_range(0..n);
                if self.nodes[x].run.is_some() && !self.nodes[x].paused {
                    self.nodes[x].paused = true;
                    self.trace.log(self.now, format!("{} PAUSES", self.ids[x]));
                    let back = self.now + self.rng.gen_range(5..=60) * TICK_NS;
                    self.at(back, Ev::Unpause(x));
                }
            }
            48..=57 if all => {
                let x = self.rng.gen_range(0..n);
                self.nodes[x].disk_slow = true;
                self.trace
                    .log(self.now, format!("{} disk slow", self.ids[x]));
                let back = self.now + self.rng.gen_range(20..=100) * TICK_NS;
                self.at(back, Ev::DiskFast(x));
            }
            58..=72 => {
                // Leader churn: the faults that matter most hit leaders.
                let s = self.rng.gen_range(0..self.shards);
                let Some(x) = (0..n).find(|&j| {
                    self.nodes[j]
                        .run
                        .as_ref()
                        .is_some_and(|r| is_leader(r.core.group_view(ShardId(s))))
                }) else {
                    return;
                };
                if all && self.rng.gen_bool(0.5) {
                    self.trace.log(
                        self.now,
                        format!("leader {} of shard {s} is hit", self.ids[x]),
                    );
                    self.crash(x);
                    let back = self.now + self.rng.gen_range(3..=30) * TICK_NS;
                    self.at(back, Ev::Restart(x));
                } else if self.blocked.is_empty() {
                    self.stats.partitions += 1;
                    for j in 0..n {
                        if j != x {
                            self.blocked.insert((x, j));
                            self.blocked.insert((j, x));
                        }
                    }
                    self.trace.log(
                        self.now,
                        format!("PARTITION isolate leader {} of shard {s}", self.ids[x]),
                    );
                    let heal = self.now + self.rng.gen_range(15..=60) * TICK_NS;
                    self.at(heal, Ev::Heal);
                }
            }
            _ => {}
        }
    }

    /// The leader of `shard` among running nodes, if any.
    fn leader_of(&self, shard: u32) -> Option<usize> {
        (0..self.nodes.len()).find(|&j| {
            self.nodes[j]
                .run
                .as_ref()
                .is_some_and(|r| is_leader(r.core.group_view(ShardId(shard))))
        })
    }

    fn crash_for(&mut self, x: usize, ticks: std::ops::RangeInclusive<u64>) {
        if self.nodes[x].run.is_some() {
            self.crash(x);
            let back = self.now + self.rng.gen_range(ticks) * TICK_NS;
            self.at(back, Ev::Restart(x));
        }
    }

    fn isolate_for(&mut self, x: usize, ticks: std::ops::RangeInclusive<u64>, why: &str) {
        if !self.blocked.is_empty() {
            return;
        }
        self.stats.partitions += 1;
        for j in 0..self.nodes.len() {
            if j != x {
                self.blocked.insert((x, j));
                self.blocked.insert((j, x));
            }
        }
        self.trace
            .log(self.now, format!("PARTITION isolate {why}{}", self.ids[x]));
        let heal = self.now + self.rng.gen_range(ticks) * TICK_NS;
        self.at(heal, Ev::Heal);
    }

    /// The Churn profile's chaos step: frequent, aimed at leaders and at unsynced writes.
    fn chaos_churn(&mut self) {
        let next = self.now + self.rng.gen_range(3..=12) * TICK_NS;
        self.at(next, Ev::Chaos);
        let n = self.nodes.len();
        let s = self.rng.gen_range(0..self.shards);
        let leader = self.leader_of(s);
        let roll = self.rng.gen_range(0..100);
        match (roll, leader) {
            (0..=29, Some(x)) => {
                self.trace.log(
                    self.now,
                    format!("leader {} of shard {s} is hit", self.ids[x]),
                );
                if self.rng.gen_bool(0.5) {
                    self.crash_for(x, 2..=25);
                } else {
                    self.isolate_for(x, 5..=40, "leader ");
                }
            }
            (30..=44, _) => {
                let x = self.rng.gen_range(0..n);
                self.crash_for(x, 2..=25);
            }
            (45..=54, _) => {
                self.trace.log(self.now, "POWER LOSS: every node".into());
                for x in 0..n {
                    self.crash_for(x, 1..=20);
                }
            }
            (55..=64, Some(x)) => {
                let y = (x + self.rng.gen_range(1..n)) % n;
                self.trace.log(
                    self.now,
                    format!(
                        "leader {} of shard {s} and {} are hit",
                        self.ids[x], self.ids[y]
                    ),
                );
                self.crash_for(x, 2..=25);
                self.crash_for(y, 1..=15);
            }
            (65..=74, _) => {
                let x = self.rng.gen_range(0..n);
                self.isolate_for(x, 5..=40, "");
            }
            (75..=84, _) => {
                let x = self.rng.gen_range(0..n);
                self.nodes[x].disk_slow = true;
                self.trace
                    .log(self.now, format!("{} disk slow", self.ids[x]));
                let back = self.now + self.rng.gen_range(20..=60) * TICK_NS;
                self.at(back, Ev::DiskFast(x));
            }
            _ => {}
        }
    }

    /// Cuts every link between nodes on different sides (`side[node]`).
    fn split(&mut self, side: &[usize]) {
        self.blocked.clear();
        let n = self.nodes.len();
        for a in 0..n {
            for b in 0..n {
                if side[a] != side[b] {
                    self.blocked.insert((a, b));
                }
            }
        }
        self.stats.partitions += 1;
        let mut groups: BTreeMap<usize, Vec<NodeId>> = BTreeMap::new();
        for (j, &s) in side.iter().enumerate() {
            groups.entry(s).or_default().push(self.ids[j]);
        }
        let groups: Vec<_> = groups.into_values().collect();
        self.trace
            .log(self.now, format!("PARTITION figure8 {groups:?}"));
    }

    /// Heals every link and waits a little before the script's next round.
    fn figure8_restart(&mut self) {
        if !self.blocked.is_empty() {
            self.trace.log(self.now, "heal partitions".into());
            self.blocked.clear();
        }
        let start_ns = self.now + self.rng.gen_range(10..=40) * TICK_NS;
        self.fig8 = Fig8::Idle { start_ns };
    }

    /// The Figure 8 script's timed steps, every tick of the safety phase.
    fn figure8_step(&mut self) {
        self.at(self.now + TICK_NS, Ev::Chaos);
        match self.fig8 {
            Fig8::Idle { start_ns } if self.now >= start_ns => {
                // The newest leader: a cut-off one without CheckQuorum may still think
                // it leads an older term.
                let Some((term, old)) = (0..self.nodes.len())
                    .filter_map(|j| Some((self.leader_term(j)?, j)))
                    .max()
                else {
                    return;
                };
                let side: Vec<usize> = (0..self.nodes.len())
                    .map(|j| usize::from(j == old))
                    .collect();
                self.split(&side);
                let give_up_ns = self.now + 150 * TICK_NS;
                self.fig8 = Fig8::OldCut {
                    old,
                    term,
                    give_up_ns,
                };
            }
            Fig8::OldCut { give_up_ns, .. } | Fig8::Rejoined { give_up_ns, .. }
                if self.now >= give_up_ns =>
            {
                self.figure8_restart()
            }
            Fig8::AllCut { mid, rejoin_ns } if self.now >= rejoin_ns => {
                let term = self.term_of(mid);
                let side: Vec<usize> = (0..self.nodes.len())
                    .map(|j| usize::from(j == mid))
                    .collect();
                self.split(&side);
                let give_up_ns = self.now + 150 * TICK_NS;
                self.fig8 = Fig8::Rejoined {
                    mid,
                    term,
                    give_up_ns,
                };
            }
            Fig8::Final { heal_ns } if self.now >= heal_ns => self.figure8_restart(),
            _ => {}
        }
    }

    /// The Figure 8 script's reactions to a new leader (node `i`, just elected).
    fn figure8_elected(&mut self, i: usize) {
        if self.phase != Phase::Safety {
            return;
        }
        let Some(term) = self.leader_term(i) else {
            return;
        };
        match self.fig8 {
            Fig8::OldCut { old, term: t, .. } if i != old && term > t => {
                // Before its first Appends land: its no-op stays in its own log only.
                let side: Vec<usize> = (0..self.nodes.len())
                    .map(|j| {
                        if j == old {
                            0
                        } else if j == i {
                            1
                        } else {
                            2
                        }
                    })
                    .collect();
                self.split(&side);
                let rejoin_ns = self.now + self.rng.gen_range(3..=10) * TICK_NS;
                self.fig8 = Fig8::AllCut { mid: i, rejoin_ns };
            }
            Fig8::Rejoined { mid, term: t, .. } if i != mid && term > t => {
                // A few network round trips and disk writes: the new leader is catching
                // the others up, one entry per Append.
                let window_ns = 4 * self.net.delay_ns_max + 2 * self.disk_latency_ns_max;
                let at = self.now + self.rng.gen_range(0..=window_ns);
                self.at(at, Ev::Fig8Cut(i));
                self.fig8 = Fig8::Racing;
            }
            _ => {}
        }
    }

    /// Cuts off the leader the reconnected nodes elected (crashing it half the time) and
    /// reconnects everyone else, the earlier cut-off leader included.
    fn figure8_cut(&mut self, x: usize) {
        if self.phase != Phase::Safety || !matches!(self.fig8, Fig8::Racing) {
            return;
        }
        let side: Vec<usize> = (0..self.nodes.len()).map(|j| usize::from(j == x)).collect();
        self.split(&side);
        if self.rng.gen_bool(0.5) {
            self.crash_for(x, 20..=60);
        }
        let heal_ns = self.now + self.rng.gen_range(60..=120) * TICK_NS;
        self.fig8 = Fig8::Final { heal_ns };
    }

    /// `x`'s current term in shard 0 (0 if it is down).
    fn term_of(&self, x: usize) -> u64 {
        self.nodes[x]
            .run
            .as_ref()
            .and_then(|r| r.core.group_view(ShardId(0)))
            .map_or(0, |v| v.term)
    }

    /// `x`'s term if it runs and leads shard 0.
    fn leader_term(&self, x: usize) -> Option<u64> {
        let v = self.nodes[x].run.as_ref()?.core.group_view(ShardId(0))?;
        (v.role == Role::Leader).then_some(v.term)
    }

    fn start_liveness(&mut self) {
        self.trace
            .log(self.now, "LIVENESS phase: all faults healed".into());
        self.phase = Phase::Liveness;
        self.liveness_start_ns = self.now;
        self.blocked.clear();
        self.net = NetParams::quiet();
        self.disk_latency_ns_max = 0;
        for i in 0..self.nodes.len() {
            self.nodes[i].paused = false;
            self.nodes[i].disk_slow = false;
            if self.nodes[i].run.is_none() {
                self.start_node(i);
            }
        }
        self.ok_at_liveness = self.clients.iter().map(|c| c.ok).collect();
    }

    fn agreed_leader(&self, s: u32) -> Option<NodeId> {
        let mut leader = None;
        for n in &self.nodes {
            let r = n.run.as_ref()?;
            let Some(v) = r.core.group_view(ShardId(s)) else {
                continue;
            };
            match (leader, v.leader) {
                (_, None) => return None,
                (None, l) => leader = l,
                (Some(a), Some(b)) if a != b => return None,
                _ => {}
            }
        }
        let l = leader?;
        let r = self.nodes[l.0 as usize - 1].run.as_ref()?;
        is_leader(r.core.group_view(ShardId(s))).then_some(l)
    }

    fn check_liveness_done(&mut self) {
        if (0..self.shards).any(|s| self.agreed_leader(s).is_none()) {
            return;
        }
        let enough = self
            .clients
            .iter()
            .zip(&self.ok_at_liveness)
            .all(|(c, &base)| c.ok >= base + 3);
        if !enough {
            return;
        }
        self.phase = Phase::ReadBack;
        self.trace
            .log(self.now, "READBACK: every key read once".into());
        for c in &mut self.clients {
            c.stopped = true;
        }
        // Client 0's pending timer (or its current operation's end) starts the script.
        self.clients[0].script = self.keys.clone();
    }

    fn readback_finished(&self) -> bool {
        let c = &self.clients[0];
        self.phase == Phase::ReadBack && c.script.is_empty() && !c.busy()
    }

    fn liveness_failure(&mut self) {
        let mut missing = Vec::new();
        for s in 0..self.shards {
            if self.agreed_leader(s).is_none() {
                let views: Vec<String> = self
                    .nodes
                    .iter()
                    .filter_map(|n| {
                        let v = n.run.as_ref()?.core.group_view(ShardId(s))?;
                        Some(format!("{}:{:?}/t{}/l{:?}", n.id, v.role, v.term, v.leader))
                    })
                    .collect();
                missing.push(format!(
                    "shard {s} has no agreed leader ({})",
                    views.join(" ")
                ));
            }
        }
        for (c, &base) in self.clients.iter().zip(&self.ok_at_liveness) {
            if c.ok < base + 3 {
                missing.push(format!(
                    "client {} completed {} ops in the liveness phase (now: {})",
                    c.index,
                    c.ok - base,
                    c.describe()
                ));
            }
        }
        if self.phase == Phase::ReadBack {
            missing.push(format!(
                "read-back unfinished: {}",
                self.clients[0].describe()
            ));
        }
        self.fail(Violation {
            invariant: "liveness",
            detail: format!(
                "after {} ticks without faults: {}",
                self.opts.liveness_ticks,
                missing.join("; ")
            ),
        });
    }

    fn final_checks(&mut self) {
        // Writes still in flight may yet take effect: their outcome is unknown.
        for c in &mut self.clients {
            c.abandon(self.now, &mut self.history);
        }
        // Replicas that applied the same prefix hold the same state.
        for s in 0..self.shards {
            let mut by_index: BTreeMap<u64, (NodeId, u64)> = BTreeMap::new();
            for n in &self.nodes {
                let Some(r) = n.run.as_ref() else { continue };
                let Some((applied, digest)) = r.core.state_digest(ShardId(s)) else {
                    continue;
                };
                if let Some((other, d)) = by_index.get(&applied) {
                    if *d != digest {
                        let detail = format!("shard {s}: {} and {other} applied up to {applied} but hold different states", n.id);
                        return self.fail(Violation {
                            invariant: "state machine safety",
                            detail,
                        });
                    }
                }
                by_index.insert(applied, (n.id, digest));
            }
        }
        let budget = CheckBudget {
            steps_per_key_max: 2_000_000,
            steps_total_max: 10_000_000,
            shrink_steps_max: 500_000,
            ..CheckBudget::default()
        };
        match check(&self.history, budget) {
            Verdict::Linearizable => {}
            Verdict::NotLinearizable {
                explanation, key, ..
            } => {
                let mut ops: Vec<&Operation> =
                    self.history.iter().filter(|o| o.key == key).collect();
                ops.sort_by_key(|o| o.invoke_ns);
                let lines: Vec<String> = ops
                    .iter()
                    .map(|o| {
                        format!(
                            "history {:?}: client {:x} {:?} -> {:?} [{} .. {}]",
                            String::from_utf8_lossy(&key),
                            o.client,
                            o.op,
                            o.result,
                            o.invoke_ns,
                            o.complete_ns
                        )
                    })
                    .collect();
                for l in lines {
                    self.trace.log(self.now, l);
                }
                self.fail(Violation {
                    invariant: "linearizability",
                    detail: explanation,
                })
            }
            Verdict::Timeout { key } => self.fail(Violation {
                invariant: "linearizability checker budget",
                detail: format!(
                    "no verdict for key {:?} within the budget",
                    String::from_utf8_lossy(&key)
                ),
            }),
        }
    }

    fn report(mut self) -> Report {
        self.stats.end_ns = self.now;
        self.stats.ops_ok = self.clients.iter().map(|c| c.ok).sum();
        self.stats.ops_unknown = self.clients.iter().map(|c| c.unknown).sum();
        let failure = self.failure.take().map(|v| Failure {
            invariant: v.invariant.to_string(),
            detail: v.detail,
            trace_tail: self.trace.tail(),
        });
        Report {
            seed: self.opts.seed,
            failure,
            stats: self.stats,
            trace: self.trace.into_full(),
        }
    }
}

/// True if `view` is of a hosted shard this node leads.
fn is_leader(view: Option<GroupView>) -> bool {
    view.is_some_and(|v| v.role == Role::Leader)
}

/// The logs recovery will hand each hosted group, as the checker tracks them.
fn tracked_logs(recovered: &Recovered, shards: u32, config: &NodeConfig) -> Vec<(u32, TrackedLog)> {
    match wal::restore_groups(recovered, shards, &config.initial_groups()) {
        Ok(groups) => groups
            .into_iter()
            .map(|(shard, g)| {
                let base = g.snapshot.as_ref().map_or(0, |s| s.meta.index);
                let log = TrackedLog::new(
                    base,
                    g.entries
                        .iter()
                        .map(|e| (e.term, kv_node::entry_hash(e)))
                        .collect(),
                );
                (shard.0, log)
            })
            .collect(),
        // NodeCore::new reports the same error as a violation.
        Err(_) => Vec::new(),
    }
}

fn describe_write(w: &kv_node::DiskWrite) -> String {
    let mut s = String::new();
    for op in &w.ops {
        let _ = match op {
            DiskOp::Append(rec) => match wal::decode(rec) {
                Ok(WalRecord::Entries { shard, record }) => {
                    let terms: Vec<u64> = record.entries.iter().map(|e| e.term).collect();
                    write!(
                        s,
                        " s{shard}:entries@{} terms {terms:?}",
                        record.first_index
                    )
                }
                Ok(WalRecord::HardState { shard, hard_state }) => write!(
                    s,
                    " s{shard}:hs(t{} v{} c{})",
                    hard_state.term, hard_state.vote.0, hard_state.commit
                ),
                Err(e) => write!(s, " undecodable record: {e}"),
            },
            DiskOp::SaveSnapshot { shard, index, .. } => write!(s, " s{shard}:snapshot@{index}"),
            DiskOp::Compact { shard, index } => write!(s, " s{shard}:compact@{index}"),
        };
    }
    s
}
