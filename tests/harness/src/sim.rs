//! The harness core: turns (datagram, clock tick, process exit) into (datagrams, kills), sans I/O.
//!
//! The runtime in `run.rs` owns the socket, the clock and the processes; this
//! module only decides, so the routing and checking rules are unit-tested
//! without any process or socket.

use std::net::SocketAddr;
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::id::{client_ids, replica_ids, NodeId};
use crate::network::{choose_majority, CopyFate, NetCounts, Network, ReplicaState};
use crate::scenario::{EventKind, Scenario};
use crate::workload::{ReplyKind, ReplyOutcome, WorkCounts, Workload};

/// Error messages kept verbatim in a report; the rest are only counted.
pub const ERRORS_KEPT: usize = 50;

/// Something the runtime must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send these bytes from the harness socket.
    Send {
        /// Destination.
        to: SocketAddr,
        /// The datagram.
        bytes: Vec<u8>,
    },
    /// SIGTERM this replica's process group.
    Kill(NodeId),
}

/// What the harness does with a datagram of a replica it killed, read after the kill.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum LateDatagrams {
    /// Ignore it, as if the replica had died before sending it.
    #[default]
    Drop,
    /// Handle it like any other datagram of that replica: routed, counted, checked.
    Deliver,
}

/// Late datagrams of killed replicas: the policy of the run and what it did to them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct LateCounts {
    /// What the run did with them.
    pub policy: LateDatagrams,
    /// Handled like any other datagram (`LateDatagrams::Deliver`).
    pub delivered: u64,
    /// Ignored (`LateDatagrams::Drop`).
    pub ignored: u64,
}

/// Why a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// `lifetime` seconds passed.
    Lifetime,
    /// total_msgs reached the packet-storm cutoff.
    PacketStorm,
}

/// A replica that died without being killed by a scheduled event (check 2).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Death {
    /// Seconds after launch.
    pub time: f64,
    /// The replica.
    pub replica: String,
    /// What happened.
    pub reason: String,
}

/// A replica process exit the harness observed (killed or not).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Exit {
    /// Seconds after launch.
    pub time: f64,
    /// The replica.
    pub replica: String,
    /// Exit code or signal.
    pub status: String,
}

/// A scheduled event as it played out.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EventRecord {
    /// Seconds after launch.
    pub time: f64,
    /// The event.
    pub kind: EventKind,
    /// What it did (which replica was killed, which side is which).
    pub outcome: String,
}

/// Everything a finished run measured; scoring reads only this.
#[derive(Clone, Debug, Serialize)]
pub struct RunData {
    /// Why the run ended.
    pub stop: StopReason,
    /// Seconds after launch when it ended.
    pub ended_at: f64,
    /// Replica-bound traffic.
    pub net: NetCounts,
    /// Datagrams of killed replicas read after the kill.
    pub late: LateCounts,
    /// Client traffic.
    pub work: WorkCounts,
    /// Gets unanswered at the end.
    pub unanswered_gets: u64,
    /// Puts unanswered at the end.
    pub unanswered_puts: u64,
    /// Latency of every answered MID, seconds.
    #[serde(skip)]
    pub latencies: Vec<f64>,
    /// The 10th, 20th ... 90th percentile of `latencies`: where a median comes from.
    pub latency_deciles: Vec<f64>,
    /// Number of correctness errors (check 1).
    pub error_count: u64,
    /// The first `ERRORS_KEPT` of them.
    pub errors: Vec<String>,
    /// Replicas that died on their own or were marked dead (check 2).
    pub deaths: Vec<Death>,
    /// Scheduled events as they played out.
    pub events: Vec<EventRecord>,
    /// Replica exits observed during the run (not the final shutdown).
    pub exits: Vec<Exit>,
    /// The last replica named as leader.
    pub last_leader: Option<String>,
    /// Things worth knowing that are not errors.
    pub notes: Vec<String>,
}

/// The harness state for one run.
#[derive(Debug)]
pub struct Sim {
    scenario: Scenario,
    ids: Vec<NodeId>,
    clients: Vec<NodeId>,
    peers: Vec<Vec<NodeId>>,
    net: Network,
    work: Workload,
    fault_rng: SmallRng,
    events: Vec<(Duration, EventKind)>,
    next_event: usize,
    next_request: usize,
    error_count: u64,
    errors: Vec<String>,
    deaths: Vec<Death>,
    event_log: Vec<EventRecord>,
    exits: Vec<Exit>,
    notes: Vec<String>,
    late: LateCounts,
    stop: Option<(StopReason, Duration)>,
}

/// Independent RNG streams, so that e.g. a different drop pattern does not
/// change the workload of the same seed.
fn stream(seed: u64, stream: u64) -> SmallRng {
    SmallRng::seed_from_u64(seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

impl Sim {
    /// A run of `scenario` whose random choices all derive from `seed`.
    pub fn new(scenario: &Scenario, seed: u64) -> Sim {
        let ids = replica_ids(scenario.replicas);
        let clients = client_ids(scenario.clients);
        let mut launch_rng = stream(seed, 1);
        let peers = ids
            .iter()
            .map(|me| {
                let mut others: Vec<NodeId> = ids.iter().copied().filter(|p| p != me).collect();
                others.shuffle(&mut launch_rng);
                others
            })
            .collect();
        let mut events: Vec<(Duration, EventKind)> = scenario
            .events
            .iter()
            .map(|e| (scenario.event_time(e), e.kind))
            .collect();
        events.sort_by_key(|(at, _)| *at);
        Sim {
            net: Network::new(scenario.replicas, scenario.drops, stream(seed, 2)),
            work: Workload::new(&clients, scenario.replicas, scenario.mix, stream(seed, 3)),
            fault_rng: stream(seed, 4),
            scenario: scenario.clone(),
            ids,
            clients,
            peers,
            events,
            next_event: 0,
            next_request: 0,
            error_count: 0,
            errors: Vec::new(),
            deaths: Vec::new(),
            event_log: Vec::new(),
            exits: Vec::new(),
            notes: Vec::new(),
            late: LateCounts::default(),
            stop: None,
        }
    }

    /// The same run with `policy` for late datagrams of killed replicas (default: drop).
    pub fn with_late_datagrams(mut self, policy: LateDatagrams) -> Sim {
        self.late.policy = policy;
        self
    }

    /// Each replica's argv after the port: own id, then peers in random order.
    pub fn launch_args(&self) -> Vec<(NodeId, Vec<NodeId>)> {
        self.ids
            .iter()
            .copied()
            .zip(self.peers.iter().cloned())
            .collect()
    }

    /// Set once the run is over.
    pub fn stopped(&self) -> Option<StopReason> {
        self.stop.map(|(reason, _)| reason)
    }

    /// The next launch-relative time at which `on_tick` has work to do.
    pub fn next_deadline(&self) -> Duration {
        let mut next = self.scenario.end_time();
        if let Some((at, _)) = self.events.get(self.next_event) {
            next = next.min(*at);
        }
        if self.next_request < self.scenario.requests {
            next = next.min(self.scenario.request_time(self.next_request));
        }
        next
    }

    /// Runs every event and request due by `now`; ends the run at `lifetime`.
    pub fn on_tick(&mut self, now: Duration, out: &mut Vec<Action>) {
        if self.stop.is_some() {
            return;
        }
        while let Some(&(at, kind)) = self.events.get(self.next_event) {
            if at > now {
                break;
            }
            self.next_event += 1;
            self.apply_event(now, kind, out);
        }
        while self.next_request < self.scenario.requests
            && self.scenario.request_time(self.next_request) <= now
        {
            self.next_request += 1;
            let op = self.work.generate();
            self.send_op(now, op, None, out);
        }
        if now >= self.scenario.end_time() {
            self.stop = Some((StopReason::Lifetime, now));
        }
    }

    /// The process of replica `id` exited; `status` describes how.
    pub fn on_replica_exit(&mut self, now: Duration, id: NodeId, status: &str) {
        let Some(index) = self.net.index_of(id) else {
            return;
        };
        self.exits.push(Exit {
            time: now.as_secs_f64(),
            replica: id.to_string(),
            status: status.to_string(),
        });
        match self.net.state(index) {
            ReplicaState::Killed | ReplicaState::Exited => {}
            ReplicaState::Up => {
                self.net.set_state(index, ReplicaState::Exited);
                self.death(
                    now,
                    index,
                    format!("replica died: exited on its own ({status})"),
                );
            }
            ReplicaState::Dead => {
                self.net.set_state(index, ReplicaState::Exited);
                self.notes.push(format!(
                    "replica {id} exited ({status}) after being marked dead"
                ));
            }
        }
    }

    /// Routes or answers one datagram that arrived from `from`.
    pub fn on_datagram(
        &mut self,
        now: Duration,
        from: SocketAddr,
        bytes: &[u8],
        out: &mut Vec<Action>,
    ) {
        if self.stop.is_some() {
            return;
        }
        let sender = self.net.replica_at(from);
        if sender.is_some_and(|s| !self.admits(s)) {
            return;
        }
        let obj = match parse_object(bytes) {
            Ok(obj) => obj,
            Err(why) => return self.malformed(now, sender, from, why),
        };
        let field = |name: &str| obj.get(name).and_then(Value::as_str);
        let (Some(src), Some(dst), Some(leader), Some(kind)) =
            (field("src"), field("dst"), field("leader"), field("type"))
        else {
            return self.malformed(
                now,
                sender,
                from,
                "missing or non-string src, dst, leader or type".into(),
            );
        };
        let Some(src_index) = NodeId::parse(src).and_then(|id| self.net.index_of(id)) else {
            return self.malformed(
                now,
                sender,
                from,
                format!("src {src:?} is not a replica id"),
            );
        };
        let Some(leader) = NodeId::parse(leader)
            .filter(|&l| l == NodeId::BROADCAST || self.net.index_of(l).is_some())
        else {
            return self.malformed(
                now,
                sender.or(Some(src_index)),
                from,
                format!("leader {leader:?} is neither FFFF nor a replica id"),
            );
        };
        match (sender, self.net.addr(src_index)) {
            (Some(s), _) if s != src_index => {
                return self.malformed(
                    now,
                    sender,
                    from,
                    format!("claims src {src} but said hello as {}", self.ids[s]),
                );
            }
            (None, Some(hello_addr)) => {
                return self.error(
                    now,
                    format!("datagram from {from} claims src {src}, whose hello came from {hello_addr} (one socket per replica)"),
                );
            }
            _ => {}
        }
        // A sender known by its address was admitted above; this src has not said hello yet.
        if sender.is_none() && !self.admits(src_index) {
            return;
        }
        // A killed replica's view of who leads is stale: it must not pick the
        // next kill_leader victim or part_easy's majority.
        if leader != NodeId::BROADCAST && self.net.is_up(src_index) {
            self.net.last_leader = Some(leader);
        }
        if kind == "hello" {
            self.net.learn(src_index, from);
            return;
        }
        let dst_id = NodeId::parse(dst);
        if dst_id == Some(NodeId::BROADCAST) {
            for target in 0..self.net.len() {
                if target != src_index && !self.copy(now, src_index, target, bytes, out) {
                    break;
                }
            }
        } else if let Some(target) = dst_id.and_then(|d| self.net.index_of(d)) {
            self.copy(now, src_index, target, bytes, out);
        } else if let Some(client) = dst_id.and_then(|d| self.work.client_index(d)) {
            self.on_client_reply(now, src, client, kind, &obj, leader, out);
        } else {
            self.error(
                now,
                format!("replica {src} sent to dst {dst:?}: not a replica, FFFF or a client"),
            );
        }
    }

    /// Whether a datagram of replica `index` is handled: always while it is up;
    /// after the harness killed it as the late-datagram policy says (counted);
    /// never once it is marked dead or has exited on its own.
    fn admits(&mut self, index: usize) -> bool {
        match self.net.state(index) {
            ReplicaState::Up => true,
            ReplicaState::Killed => match self.late.policy {
                LateDatagrams::Deliver => {
                    self.late.delivered += 1;
                    true
                }
                LateDatagrams::Drop => {
                    self.late.ignored += 1;
                    false
                }
            },
            ReplicaState::Dead | ReplicaState::Exited => false,
        }
    }

    /// Counts and routes one replica-bound copy; false once the packet storm stops the run.
    fn copy(
        &mut self,
        now: Duration,
        src: usize,
        target: usize,
        bytes: &[u8],
        out: &mut Vec<Action>,
    ) -> bool {
        match self.net.route_copy(src, target) {
            CopyFate::Deliver(to) => out.push(Action::Send {
                to,
                bytes: bytes.to_vec(),
            }),
            CopyFate::BeforeHello => self.before_hello(now, target),
            CopyFate::TargetDown | CopyFate::Blocked | CopyFate::Dropped => {}
        }
        if self.net.counts.total_msgs >= self.scenario.max_packets {
            self.stop = Some((StopReason::PacketStorm, now));
            return false;
        }
        true
    }

    #[allow(clippy::too_many_arguments)] // one reply's parsed fields; a struct would only rename them
    fn on_client_reply(
        &mut self,
        now: Duration,
        src: &str,
        client: usize,
        kind: &str,
        obj: &Map<String, Value>,
        leader: NodeId,
        out: &mut Vec<Action>,
    ) {
        let Some(reply) = ReplyKind::parse(kind) else {
            return self.error(
                now,
                format!("replica {src} sent a client a reply of type {kind:?}"),
            );
        };
        let Some(mid) = obj.get("MID").and_then(Value::as_str) else {
            return self.error(
                now,
                format!("replica {src} sent a {kind} without a string MID"),
            );
        };
        let value = obj.get("value").and_then(Value::as_str);
        let live_leader = self
            .net
            .index_of(leader)
            .filter(|&l| self.net.is_up(l))
            .map(|_| leader);
        match self.work.on_reply(now, client, reply, mid, value) {
            ReplyOutcome::Done => {
                if let Some(l) = live_leader {
                    self.work.set_leader(client, l);
                }
            }
            ReplyOutcome::Retry { op } => self.send_op(now, op, Some(live_leader), out),
            ReplyOutcome::Duplicate => {}
            ReplyOutcome::Error(e) => self.error(now, format!("from {src}: {e}")),
        }
    }

    /// Sends operation `op` under a new MID. A retry (`hint` = Some) goes to the
    /// live replica named in the reply's leader, else a random live one; a new
    /// operation goes to the client's current leader if it is still live.
    fn send_op(
        &mut self,
        now: Duration,
        op: usize,
        hint: Option<Option<NodeId>>,
        out: &mut Vec<Action>,
    ) {
        let client = self.work.ops()[op].client;
        let preferred = match hint {
            Some(named) => named,
            None => Some(self.work.leader_of(client)),
        };
        let live = |id: NodeId| self.net.index_of(id).is_some_and(|i| self.net.is_up(i));
        let target = match preferred.filter(|&id| live(id)) {
            Some(id) => id,
            None => {
                let up = self.net.up_replicas();
                let Some(&pick) = up.choose(&mut self.fault_rng) else {
                    return; // no replica left: the operation stays unanswered
                };
                self.ids[pick]
            }
        };
        self.work.set_leader(client, target);
        let bytes = self.work.issue(op, target, now);
        let index = usize::from(target.0);
        match self.net.addr(index) {
            Some(to) => out.push(Action::Send { to, bytes }),
            None => self.before_hello(now, index),
        }
    }

    fn apply_event(&mut self, now: Duration, kind: EventKind, out: &mut Vec<Action>) {
        let leader = self.net.last_leader.and_then(|l| self.net.index_of(l));
        let outcome = match kind {
            EventKind::KillLeader => match leader {
                None => "no leader named yet; nothing killed".to_string(),
                Some(l) if !self.net.is_up(l) => {
                    format!(
                        "last named leader {} is already down; nothing killed",
                        self.ids[l]
                    )
                }
                Some(l) => self.kill(l, out),
            },
            EventKind::KillNonLeader => {
                let candidates: Vec<usize> = self
                    .net
                    .up_replicas()
                    .into_iter()
                    .filter(|&i| Some(i) != leader)
                    .collect();
                match candidates.choose(&mut self.fault_rng) {
                    Some(&victim) => self.kill(victim, out),
                    None => "no live non-leader; nothing killed".to_string(),
                }
            }
            EventKind::PartEasy | EventKind::PartHard => {
                let must = match kind {
                    EventKind::PartEasy => {
                        Some(leader.unwrap_or_else(|| self.fault_rng.gen_range(0..self.net.len())))
                    }
                    _ => None,
                };
                let side = choose_majority(self.net.len(), must, &mut self.fault_rng);
                let names = |on: bool| -> Vec<String> {
                    (0..side.len())
                        .filter(|&i| side[i] == on)
                        .map(|i| self.ids[i].to_string())
                        .collect()
                };
                let text = format!("majority {:?} | minority {:?}", names(true), names(false));
                self.net.set_partition(Some(side));
                text
            }
            EventKind::PartEnd => {
                self.net.set_partition(None);
                "healed".to_string()
            }
        };
        self.event_log.push(EventRecord {
            time: now.as_secs_f64(),
            kind,
            outcome,
        });
    }

    fn kill(&mut self, index: usize, out: &mut Vec<Action>) -> String {
        self.net.set_state(index, ReplicaState::Killed);
        out.push(Action::Kill(self.ids[index]));
        format!("killed {}", self.ids[index])
    }

    fn before_hello(&mut self, now: Duration, index: usize) {
        self.net.set_state(index, ReplicaState::Dead);
        self.death(
            now,
            index,
            "marked dead: a message was addressed to it before its hello".into(),
        );
    }

    fn death(&mut self, now: Duration, index: usize, reason: String) {
        self.deaths.push(Death {
            time: now.as_secs_f64(),
            replica: self.ids[index].to_string(),
            reason,
        });
    }

    /// A datagram that breaks the format: an error, and its sender is dead.
    fn malformed(&mut self, now: Duration, sender: Option<usize>, from: SocketAddr, why: String) {
        match sender {
            Some(s) => {
                self.error(now, format!("replica {}: {why}", self.ids[s]));
                if self.net.is_up(s) {
                    self.net.set_state(s, ReplicaState::Dead);
                    self.death(now, s, format!("marked dead: {why}"));
                }
            }
            None => self.error(now, format!("datagram from {from}: {why}")),
        }
    }

    fn error(&mut self, now: Duration, what: String) {
        self.error_count += 1;
        if self.errors.len() < ERRORS_KEPT {
            self.errors
                .push(format!("[{:.3}s] {what}", now.as_secs_f64()));
        }
    }

    /// The client ids of this run.
    pub fn client_ids(&self) -> &[NodeId] {
        &self.clients
    }

    /// Ends the run now (if not already over) and hands over what it measured.
    pub fn finish(mut self, now: Duration) -> RunData {
        let (stop, at) = *self.stop.get_or_insert((StopReason::Lifetime, now));
        let (unanswered_gets, unanswered_puts) = self.work.unanswered();
        if self.next_request < self.scenario.requests {
            self.notes.push(format!(
                "only {} of {} requests were generated before the run ended",
                self.next_request, self.scenario.requests
            ));
        }
        if self
            .scenario
            .tests
            .maximum_appends_batched_fraction
            .is_some()
        {
            self.notes.push(
                "tests.maximum_appends_batched_fraction is not checked by this harness".into(),
            );
        }
        if self.work.counts.non_ok_after_ok > 0 {
            self.notes.push(format!(
                "{} redirect/fail replies came after an ok to the same MID (counted as duplicates)",
                self.work.counts.non_ok_after_ok
            ));
        }
        RunData {
            stop,
            ended_at: at.as_secs_f64(),
            net: self.net.counts.clone(),
            late: self.late,
            work: self.work.counts.clone(),
            unanswered_gets,
            unanswered_puts,
            latency_deciles: crate::score::deciles(&self.work.latencies),
            latencies: std::mem::take(&mut self.work.latencies),
            error_count: self.error_count,
            errors: self.errors,
            deaths: self.deaths,
            events: self.event_log,
            exits: self.exits,
            last_leader: self.net.last_leader.map(|l| l.to_string()),
            notes: self.notes,
        }
    }
}

fn parse_object(bytes: &[u8]) -> Result<Map<String, Value>, String> {
    if bytes.is_empty() {
        return Err("empty datagram".into());
    }
    let text = std::str::from_utf8(bytes).map_err(|_| "non-UTF-8 datagram".to_string())?;
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(obj)) => Ok(obj),
        Ok(_) => Err("datagram is JSON but not an object".into()),
        Err(e) => Err(format!("datagram is not JSON ({e})")),
    }
}

#[cfg(test)]
#[path = "sim_tests.rs"]
mod tests;
