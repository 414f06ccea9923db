//! The simulation engine: one seed decides the cluster, the faults and the workload; a
//! discrete-event loop runs the real NodeCore and Storage<SimDisk> of every node on a
//! simulated clock, network and disk, checking invariants after every step.
//!
//! Layout: this file holds the run loop, node start and crash, and what happens to a
//! node's output; [`queue`] orders events in time, [`network`] and [`disk`] model the
//! datagram and fsync latencies, [`faults`] and [`figure8`] inject the faults of each
//! profile, [`admin`] asks for replica moves and leader changes (Moves profile),
//! [`phases`] runs the liveness phase and the read-back, [`checks`] holds the per-step
//! and final checks beside the invariant `Checker`.

mod admin;
mod checks;
mod disk;
mod faults;
mod figure8;
mod membership;
mod network;
mod phases;
mod queue;

use crate::invariants::{Checker, TrackedLog, Violation};
use crate::options::{Failure, FaultMix, FaultProfile, Report, SimOptions, Stats};
use crate::trace::Trace;
use crate::workload::{keys, Action, Client, ClientTiming, ClientWorld};
use admin::{is_admin, workload_client_id, Admin};
use bytes::Bytes;
use figure8::Fig8;
use kv_node::wal;
use kv_node::{ClientToken, GroupView, NodeConfig, NodeCore};
use kv_shared::config::LeaderPolicy;
use kv_shared::linearizability::Operation;
use kv_shared::proto::{Op, Outcome, Role};
use kv_shared::shard::shard_for_key;
use kv_shared::NodeId;
use kv_storage::{Recovered, SimDisk, Storage, WalOptions};
use membership::{MembershipChurn, CHURN_SPARE_NODES};
use network::NetParams;
use queue::{Ev, EventQueue};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, BTreeSet};

/// Simulated length of one tick.
pub const TICK_NS: u64 = 10_000_000;
const CLUSTER_ID: u64 = 0x5111;
/// Percent of the Moves profile's random reads that are stale reads to any replica.
const MOVES_STALE_READ_PERCENT: u32 = 30;
/// WAL space kept preallocated in the runs that draw it: a quarter of the simulated
/// segment size (64 KiB), so that many records land in preallocated space and segments
/// still roll.
const WAL_AHEAD_BYTES: u64 = 16 * 1024;

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
    /// The shard of a read (for "a removed replica serves no reads").
    read_shard: Option<u32>,
    /// The read is a stale read (served from the replica's own state).
    stale_read: bool,
    /// The shard epoch the request was routed by.
    route_epoch: u64,
    accepted_ns: u64,
}

struct Sim {
    opts: SimOptions,
    rng: SmallRng,
    now: u64,
    queue: EventQueue,
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
    /// WAL space each node keeps preallocated ahead of its log once a write is durable
    /// (0: none; see [`WAL_AHEAD_BYTES`]).
    wal_ahead_bytes: u64,
    /// Longest extra time a deferrable write waits for its sync (0: none waits).
    defer_sync_ns: u64,
    request_timeout_ticks: u64,
    profile: FaultProfile,
    fig8: Fig8,
    /// The Moves profile's admin actor.
    admin: Option<Admin>,
    /// With an admin: which shards each node hosted after its last step.
    hosted: Vec<Vec<bool>>,
    /// The Churn profile's joins, drains and dead nodes.
    churn: Option<MembershipChurn>,
}

/// Runs one simulation.
pub fn run(opts: &SimOptions) -> Report {
    let mut sim = Sim::new(opts.clone());
    sim.run();
    sim.report()
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
        let small = profile == FaultProfile::Figure8;
        let moves = profile == FaultProfile::Moves;
        let n = opts.nodes.unwrap_or_else(|| {
            let drawn = rng.gen_range(3..=7);
            if small {
                3
            } else if churn {
                4
            } else if moves {
                4 + drawn % 2
            } else {
                drawn
            }
        });
        let shards = opts.shards.unwrap_or_else(|| {
            let drawn = rng.gen_range(1..=8);
            if small {
                1
            } else if moves || churn {
                1 + drawn % 3
            } else {
                drawn
            }
        });
        assert!((1..=16).contains(&n) && shards >= 1, "bad cluster shape");
        // Churn: nodes that may join later follow the bootstrap ones.
        let spares = if churn { CHURN_SPARE_NODES } else { 0 };
        let bootstrap: Vec<NodeId> = (1..=n as u64).map(NodeId).collect();
        let ids: Vec<NodeId> = (1..=(n + spares) as u64).map(NodeId).collect();
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
        // The draw of the removed quorum-first knob (kv-raft's `eager_followers`) stays,
        // so that a regression seed keeps every later draw.
        let _ = tuning_rng.gen_bool(0.2);
        let broadcast_commit = tuning_rng.gen_bool(0.2);
        // Half the seeds place every shard on every node, the others on R of N; Figure 8
        // scripts partitions of the whole cluster around one group on every node.
        let replication = opts.replication.unwrap_or_else(|| {
            let drawn = tuning_rng.gen_range(1..=n);
            if moves || churn {
                3.min(n)
            } else if profile == FaultProfile::Figure8 || tuning_rng.gen_bool(0.5) {
                n
            } else {
                drawn
            }
        });
        assert!((1..=n).contains(&replication), "bad replication factor");
        // Course mode's send policy (kv-raft's lazy followers), without quiescence. The
        // simulator never releases a stalled commit, so held entries reach a lazy
        // follower with its next heartbeat. The last draw of the stream, so that earlier
        // seeds keep every other draw.
        let lazy_followers = !quiesce && tuning_rng.gen_bool(0.5);
        // In half the runs the WAL writes into preallocated space, as kvserver's idle
        // disk thread keeps it: records overwrite synced zeros, and recovery must find
        // the end of the log where the zeros start, after crashes that tear overwrites.
        // Drawn after every other draw, for the same reason as the one above.
        let wal_ahead_bytes = if tuning_rng.gen_bool(0.5) {
            WAL_AHEAD_BYTES
        } else {
            0
        };
        // Half the runs that spread leaders pack them instead (`[placement] leaders =
        // "pack"`: every shard's leadership goes to its lowest voter). Drawn last, for
        // the same reason as the two above.
        let leaders = if tuning_rng.gen_bool(0.5) {
            LeaderPolicy::Pack
        } else {
            LeaderPolicy::Spread
        };
        // In half the runs a deferrable write (a leader's own log, which its followers
        // commit without) becomes durable up to a tick later than its turn, as kvserver's
        // disk thread puts off its fsync: the leader applies and answers entries its own
        // disk may lose to a crash. Drawn last, for the same reason as the ones above.
        let defer_sync_ns = if tuning_rng.gen_bool(0.5) { TICK_NS } else { 0 };
        let nodes = ids
            .iter()
            .map(|&id| {
                // The placement comes from the bootstrap nodes only: a node that joins
                // starts empty.
                let mut config = NodeConfig::for_test(id, bootstrap.clone(), shards);
                config.replication = replication;
                config.raft.heartbeat_ticks = 2;
                config.raft.election_ticks_min = 10;
                config.raft.election_ticks_max = 20;
                config.raft.pre_vote = pre_vote;
                config.raft.check_quorum = check_quorum;
                config.spread_leaders = spread_leaders;
                config.leaders = leaders;
                config.snapshot_threshold_entries = snapshot_threshold_entries;
                config.request_timeout_ticks = request_timeout_ticks as u32;
                config.seed = opts.seed;
                config.quiesce = quiesce;
                config.raft.broadcast_commit = broadcast_commit;
                config.raft.lazy_followers = lazy_followers;
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
            .map(|i| Client::new(i, workload_client_id(&mut rng), shards, key_count))
            .collect();
        if churn || moves {
            let pad = [0, 12_000, 24_000][rng.gen_range(0..3)];
            for c in &mut clients {
                c.value_pad_bytes = pad;
                if moves || churn {
                    c.stale_read_percent = MOVES_STALE_READ_PERCENT;
                }
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
                FaultProfile::Mixed | FaultProfile::Moves => drawn,
            }
        } else {
            0
        };
        Sim {
            rng,
            now: 0,
            queue: EventQueue::default(),
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
                nodes: n + spares,
                shards,
                replication,
                lazy_followers,
                preallocated_wal: wal_ahead_bytes > 0,
                deferred_syncs: defer_sync_ns > 0,
                packed_leaders: spread_leaders && leaders == LeaderPolicy::Pack,
                ..Stats::default()
            },
            failure: None,
            done: false,
            disk_latency_ns_max,
            wal_ahead_bytes,
            defer_sync_ns,
            request_timeout_ticks,
            profile,
            fig8: Fig8::Idle { start_ns: 0 },
            admin: (moves || churn).then(Admin::default),
            hosted: Vec::new(),
            churn: churn.then(|| MembershipChurn::new((n..n + spares).collect())),
            opts,
        }
    }

    fn at(&mut self, at: u64, ev: Ev) {
        self.queue.push(at, ev);
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
            if self.out_of_cluster(i) {
                continue;
            }
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
        if self.admin.is_some() {
            self.start_admin();
        }
        let live_at = self.opts.safety_ticks * TICK_NS;
        self.at(live_at, Ev::Liveness);
        let deadline = live_at + self.opts.liveness_ticks * TICK_NS;
        while let Some((at, ev)) = self.queue.pop() {
            if self.failure.is_some() || self.done {
                break;
            }
            if at > deadline {
                self.liveness_failure();
                break;
            }
            self.now = at;
            self.stats.events += 1;
            if self.stats.events > self.opts.events_max {
                self.fail(Violation {
                    invariant: "bounded work",
                    detail: format!(
                        "{} events by {} ms of simulated time ({} datagrams delivered); passing runs take far fewer",
                        self.opts.events_max,
                        self.now / 1_000_000,
                        self.stats.datagrams
                    ),
                });
                break;
            }
            self.step(ev);
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
                // Once a tick, on the first node still in the cluster.
                let first = (0..self.nodes.len()).find(|&j| !self.out_of_cluster(j));
                if self.phase == Phase::Liveness && first == Some(i) {
                    self.check_liveness_done();
                }
            }
            Ev::Deliver { to, bytes } => self.deliver(to, &bytes),
            Ev::DiskDone { node, inc, id } => self.disk_done(node, inc, id),
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
                let (read_shard, stale_read) = match &req.op {
                    Op::Get { key, stale } => (Some(shard_for_key(key, self.shards).0), *stale),
                    _ => (None, false),
                };
                self.outstanding.insert(
                    token,
                    Outstanding {
                        node,
                        inc: self.nodes[node].inc,
                        issued_tick: self.nodes[node].ticks,
                        read_shard,
                        stale_read,
                        route_epoch: req.epoch,
                        accepted_ns: self.now,
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
                let r = self.client_step(client, |c, world| c.on_reply(reply, world));
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
                let a = self.client_step(client, |c, world| c.wake(epoch, world));
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
                if self.nodes[i].run.is_none() && !self.out_of_cluster(i) {
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
            Ev::AdminWake { epoch } => self.admin_wake(epoch),
            Ev::ToAdmin { reply } => {
                self.trace.log(
                    self.now,
                    format!("admin got {} {:?}", reply.client, reply.outcome),
                );
                self.admin_reply(reply);
            }
            Ev::Liveness => self.start_liveness(),
        }
    }

    /// Runs one step of client `client` with the simulation around it (the clock, the
    /// run's randomness, the nodes, keys and timing, and the history).
    fn client_step<R>(
        &mut self,
        client: usize,
        step: impl FnOnce(&mut Client, ClientWorld<'_>) -> R,
    ) -> R {
        let world = ClientWorld {
            now_ns: self.now,
            rng: &mut self.rng,
            nodes: &self.ids,
            keys: &self.keys,
            shards: self.shards,
            timing: &self.timing,
            history: &mut self.history,
        };
        step(&mut self.clients[client], world)
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
                self.send_request(node, &req);
            }
        }
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
        let mut config = node.config.clone();
        // A new nonce per start, as kvserver's incarnation: a follower read's answer
        // from before a restart must not confirm a read after it.
        config.raft.boot_nonce = node.inc;
        let mut core = match NodeCore::new(config, recovered) {
            Ok(c) => c,
            Err(e) => {
                return self.fail(Violation {
                    invariant: "recovery",
                    detail: format!("{} cannot recover: {e}", self.ids[i]),
                })
            }
        };
        // kvserver defers a follower's applying until its acks left; every other start of
        // each node does, so that both ways meet in every simulation.
        core.set_defer_follower_applies((i as u64 + node.inc).is_multiple_of(2));
        if let Some(hook) = &self.opts.node_hook {
            hook(&mut core);
        }
        node.inc += 1;
        node.ticks = 0;
        node.paused = false;
        node.disk_free_ns = self.now;
        node.disk_sync_start_ns = self.now;
        node.run = Some(Running { core, storage });
        self.tell_registry(i);
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
        self.stats.admin.recreated += out
            .events
            .iter()
            .filter(|e| matches!(e.kind, kv_node::EventKind::ReplicaRecreated { .. }))
            .count() as u64;
        if self.trace.wants_detail() {
            // A replay shows what each replica did (elections, membership changes,
            // replicas created, removed or forgotten), not only what it sent.
            for e in &out.events {
                let line = format!("{id} s{}:t{} {:?}", e.shard.0, e.term, e.kind);
                self.trace.log(self.now, line);
            }
        }
        for a in out.applied {
            // The node's term: on the leader that committed the entry, the term of the
            // commit. A replica dropped in this same step (its removal applied) names none
            // (u64::MAX): the checker then takes the next node's seen knowing it committed.
            let node_term = self.nodes[i]
                .run
                .as_ref()
                .and_then(|r| r.core.group_view(a.shard))
                .map_or(u64::MAX, |v| v.term);
            if let Err(v) =
                self.checker
                    .applied(id, a.shard.0, a.index, (a.term, a.hash), node_term)
            {
                return self.fail(v);
            }
        }
        for w in out.disk_writes {
            if let Err(v) = self.write_to_disk(i, w) {
                return self.fail(v);
            }
        }
        self.send_datagrams(i, out.datagrams);
        for (token, reply) in out.replies {
            let Some(o) = self.outstanding.remove(&token.0) else {
                return self.fail(Violation {
                    invariant: "one reply per request",
                    detail: format!(
                        "{id} answered request {} (client {} seq {}) a second time: {:?}",
                        token.0, reply.client, reply.seq, reply.outcome
                    ),
                });
            };
            if let (Some(shard), Outcome::Value(_)) = (o.read_shard, &reply.outcome) {
                let served = if o.stale_read {
                    self.check_stale_read(i, shard, o.route_epoch)
                } else {
                    self.checker.served_read(id, shard, o.accepted_ns)
                };
                if let Err(v) = served {
                    return self.fail(v);
                }
            }
            if is_admin(reply.client) {
                for at in self.net_delays() {
                    let reply = reply.clone();
                    self.at(at, Ev::ToAdmin { reply });
                }
                continue;
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
        // As kvserver does once a flush's datagrams left.
        if self.nodes[i]
            .run
            .as_mut()
            .is_some_and(|r| r.core.apply_deferred())
        {
            return self.after_input(i);
        }
        let elections = self.checker.elections;
        if let Err(v) = self.check_groups(i) {
            return self.fail(v);
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
    // The shards recovery hands the node: its placement's, plus replicas created by
    // moves, minus removed ones.
    let restored = wal::hosted_shards(recovered, shards, &config.initial_groups())
        .and_then(|hosted| wal::restore_groups(recovered, shards, &hosted.groups));
    match restored {
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
