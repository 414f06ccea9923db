//! The node's Prometheus metrics: one registry, filled by the event loop (shard state from
//! the core's status table, the same rows `kvcli status` shows; datagram counters; core
//! events), the disk thread (fsync latency, bytes written) and the front ends (requests
//! and their latency), and encoded as OpenMetrics text by the HTTP endpoint.

use crate::disk::{LogStore, StoreError};
use crate::net::{Counters, DropReason};
use kv_node::DiskOp;
use kv_shared::hashing::SeededState;
use kv_shared::limits::PENDING_REQUESTS_MAX;
use kv_shared::proto::{ClientReply, ClientRequest, NodeStatus, Op, Outcome, Role};
use kv_shared::ClientId;
use kv_storage::Record;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Which front end a request came in by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrontEnd {
    /// The native UDP client protocol (kvcli).
    Udp,
    /// The Redis protocol over TCP.
    Resp,
}

impl FrontEnd {
    fn label(self) -> &'static str {
        match self {
            FrontEnd::Udp => "udp",
            FrontEnd::Resp => "resp",
        }
    }

    fn index(self) -> usize {
        match self {
            FrontEnd::Udp => 0,
            FrontEnd::Resp => 1,
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ShardLabels {
    shard: u32,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ShardRoleLabels {
    shard: u32,
    role: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    front_end: &'static str,
    op: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LatencyLabels {
    front_end: &'static str,
    op: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WokeLabels {
    woke: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

const ROLES: [(Role, &str); 5] = [
    (Role::Follower, "follower"),
    (Role::PreCandidate, "pre_candidate"),
    (Role::Candidate, "candidate"),
    (Role::Leader, "leader"),
    (Role::Learner, "learner"),
];

/// Latency buckets: 50 µs to about 1.6 s, doubling.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
}

struct Inner {
    /// The counters and gauges that are not per shard: what [`Metrics::counters`] lists.
    /// Encoded first, so the status's counters are a prefix of the `/metrics` text.
    node_registry: Registry,
    /// Everything else `/metrics` serves: the per-shard series and the histograms.
    registry: Registry,
    shard_role: Family<ShardRoleLabels, Gauge>,
    shard_term: Family<ShardLabels, Gauge>,
    shard_commit: Family<ShardLabels, Gauge>,
    shard_applied: Family<ShardLabels, Gauge>,
    shard_has_leader: Family<ShardLabels, Gauge>,
    proposals: Family<ShardLabels, Counter>,
    leader_changes: Family<ShardLabels, Counter>,
    elections: Family<ShardLabels, Counter>,
    requests: Family<RequestLabels, Counter>,
    request_seconds: Family<LatencyLabels, Histogram, fn() -> Histogram>,
    /// Handles on the series of `requests` and `request_seconds` whose operation is one of
    /// [`OP_LABELS`], taken from the families on first use (so a series still appears
    /// only once it counted something): a request then costs no label hashing and no
    /// family lock.
    request_series: RequestSeries,
    wal_fsync_seconds: Histogram,
    wal_bytes: Counter,
    datagrams_received: Counter,
    datagrams_sent: Counter,
    peer_datagrams_sent: Counter,
    loop_turns: Family<WokeLabels, Counter>,
    disk_writes: Counter,
    disk_writes_here: Counter,
    wal_syncs: Counter,
    datagrams_dropped: Family<ReasonLabels, Counter>,
    snapshots_sent: Counter,
    snapshots_installed: Counter,
    leases_expired: Counter,
    pending_requests: Gauge,
    refused: Family<ReasonLabels, Counter>,
    balancer: BalancerSeries,
    /// True once every shard this node holds has a known leader (for `/health`).
    healthy: AtomicBool,
    /// Handles on each shard's series, made on the shard's first sync:
    /// a sync then sets each value with one store instead of hashing its labels and
    /// locking its family (at 64 shards that was most of a sync's cost).
    shard_series: Mutex<HashMap<u32, ShardSeries>>,
}

/// One shard's series (see [`Inner::shard_series`]).
struct ShardSeries {
    /// In the order of [`ROLES`].
    role: [Gauge; ROLES.len()],
    term: Gauge,
    commit: Gauge,
    applied: Gauge,
    has_leader: Gauge,
    proposals: Counter,
}

/// A handle on the node's metrics; clones share them.
#[derive(Clone)]
pub struct Metrics(Arc<Inner>);

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every metric registered (under the `raftkv_` prefix).
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("raftkv");
        let inner = Inner {
            shard_role: Family::default(),
            shard_term: Family::default(),
            shard_commit: Family::default(),
            shard_applied: Family::default(),
            shard_has_leader: Family::default(),
            proposals: Family::default(),
            leader_changes: Family::default(),
            elections: Family::default(),
            requests: Family::default(),
            request_seconds: Family::new_with_constructor(latency_histogram),
            request_series: RequestSeries::default(),
            wal_fsync_seconds: latency_histogram(),
            wal_bytes: Counter::default(),
            datagrams_received: Counter::default(),
            datagrams_sent: Counter::default(),
            peer_datagrams_sent: Counter::default(),
            loop_turns: Family::default(),
            disk_writes: Counter::default(),
            disk_writes_here: Counter::default(),
            wal_syncs: Counter::default(),
            datagrams_dropped: Family::default(),
            snapshots_sent: Counter::default(),
            snapshots_installed: Counter::default(),
            leases_expired: Counter::default(),
            pending_requests: Gauge::default(),
            refused: Family::default(),
            balancer: BalancerSeries::default(),
            healthy: AtomicBool::new(false),
            shard_series: Mutex::new(HashMap::new()),
            node_registry: Registry::default(),
            registry: Registry::default(),
        };
        let mut node_registry = Registry::with_prefix("raftkv");
        let r = &mut registry;
        r.register(
            "shard_role",
            "1 for this replica's current Raft role in the shard, 0 for the others",
            inner.shard_role.clone(),
        );
        r.register("shard_term", "Current Raft term", inner.shard_term.clone());
        r.register(
            "shard_commit_index",
            "Raft commit index",
            inner.shard_commit.clone(),
        );
        r.register(
            "shard_applied_index",
            "Index of the last entry applied to the state machine",
            inner.shard_applied.clone(),
        );
        r.register(
            "shard_has_leader",
            "1 when this replica knows a leader of the shard",
            inner.shard_has_leader.clone(),
        );
        r.register(
            "shard_proposals",
            "Client writes this node proposed as the shard's leader",
            inner.proposals.clone(),
        );
        r.register(
            "shard_leader_changes",
            "Times this replica saw the shard's leader change",
            inner.leader_changes.clone(),
        );
        r.register(
            "shard_elections",
            "Elections this replica started for the shard",
            inner.elections.clone(),
        );
        let n = &mut node_registry;
        n.register(
            "requests",
            "Client requests by front end, operation and result",
            inner.requests.clone(),
        );
        r.register(
            "request_duration_seconds",
            "Client request latency by front end and operation, from arrival to reply",
            inner.request_seconds.clone(),
        );
        r.register(
            "wal_fsync_duration_seconds",
            "Latency of one WAL group commit (write and fsync)",
            inner.wal_fsync_seconds.clone(),
        );
        n.register(
            "wal_written_bytes",
            "Bytes written to the WAL",
            inner.wal_bytes.clone(),
        );
        n.register(
            "datagrams_received",
            "UDP datagrams received",
            inner.datagrams_received.clone(),
        );
        n.register(
            "datagrams_sent",
            "UDP datagrams sent",
            inner.datagrams_sent.clone(),
        );
        n.register(
            "peer_datagrams_sent",
            "UDP datagrams sent to peer nodes (part of datagrams_sent)",
            inner.peer_datagrams_sent.clone(),
        );
        n.register(
            "loop_turns",
            "Event-loop turns, by what woke the loop (each turn flushes the core's output once)",
            inner.loop_turns.clone(),
        );
        n.register(
            "disk_writes",
            "Writes (one per event-loop flush that had something to persist), by the disk thread or the event loop",
            inner.disk_writes.clone(),
        );
        n.register(
            "disk_writes_here",
            "Of disk_writes, those the event loop wrote and synced itself because the disk thread was idle",
            inner.disk_writes_here.clone(),
        );
        n.register(
            "wal_syncs",
            "WAL group commits (one fsync each), the disk thread's and the event loop's",
            inner.wal_syncs.clone(),
        );
        n.register(
            "datagrams_dropped",
            "UDP datagrams dropped, by reason",
            inner.datagrams_dropped.clone(),
        );
        n.register(
            "snapshots_sent",
            "Snapshots this node started sending to a lagging replica",
            inner.snapshots_sent.clone(),
        );
        n.register(
            "snapshots_installed",
            "Snapshots this node installed from a leader",
            inner.snapshots_installed.clone(),
        );
        n.register(
            "leases_expired",
            "Times this node's ticks lagged real time and its leader leases were forgotten (lease reads)",
            inner.leases_expired.clone(),
        );
        n.register(
            "pending_requests",
            "Client requests waiting in the node core",
            inner.pending_requests.clone(),
        );
        n.register(
            "refused",
            "Remote input the node core refused, by reason (malformed or misaddressed peer messages, limits reached)",
            inner.refused.clone(),
        );
        inner.balancer.register(n);
        Metrics(Arc::new(Inner {
            node_registry,
            registry,
            ..inner
        }))
    }

    /// The metrics as OpenMetrics text: the node-wide counters and gauges (the text
    /// [`Metrics::counters`] reads), then the per-shard series and the histograms.
    pub fn encode(&self) -> String {
        use prometheus_client::encoding::text;
        let mut out = self.encode_node_series();
        text::encode_registry(&mut out, &self.0.registry)
            .and_then(|()| text::encode_eof(&mut out))
            .expect("writing to a String does not fail");
        out
    }

    /// The start of [`Metrics::encode`]'s text: the counters and gauges that are not per
    /// shard.
    fn encode_node_series(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode_registry(&mut out, &self.0.node_registry)
            .expect("writing to a String does not fail");
        out
    }

    /// Every counter and gauge series of [`Metrics::encode`] that is not per shard, as
    /// `(name{labels}, value)` in the text's order: what `kvcli status` shows beside the
    /// shard rows, taken from the very text `/metrics` serves (its first part, encoded by
    /// the same code) so the two cannot differ. Encoding only that part keeps a status
    /// request's cost independent of the shard count and free of the histograms.
    pub fn counters(&self) -> Vec<(String, u64)> {
        series_of_kind(&self.encode_node_series(), &["counter", "gauge"])
            .filter(|(series, _)| !series.contains("shard=\""))
            .collect()
    }

    /// The balancer's series (`crate::balancer` keeps them up to date).
    pub fn balancer(&self) -> &BalancerSeries {
        &self.0.balancer
    }

    /// True when every shard this node holds has a known leader.
    pub fn healthy(&self) -> bool {
        self.0.healthy.load(Ordering::Relaxed)
    }

    /// Counts a finished client request and its latency.
    pub fn request(&self, front_end: FrontEnd, op: &'static str, failed: bool, took: Duration) {
        let m = &self.0;
        let labels = RequestLabels {
            front_end: front_end.label(),
            op,
            result: if failed { "error" } else { "ok" },
        };
        let Some(op_index) = OP_LABELS.iter().position(|known| *known == op) else {
            m.requests.get_or_create(&labels).inc();
            m.request_seconds
                .get_or_create(&LatencyLabels {
                    front_end: labels.front_end,
                    op,
                })
                .observe(took.as_secs_f64());
            return;
        };
        self.request_of(front_end, op_index, failed, took.as_secs_f64());
    }

    /// [`Metrics::request`] for the operation `OP_LABELS[op_index]`, `seconds` long: the
    /// UDP path keeps the index, so no label is looked up by name per request.
    fn request_of(&self, front_end: FrontEnd, op_index: usize, failed: bool, seconds: f64) {
        let m = &self.0;
        let op = OP_LABELS[op_index];
        let series = &m.request_series;
        let at = front_end.index() * OP_LABELS.len() + op_index;
        series.counts[at * 2 + usize::from(failed)]
            .get_or_init(|| {
                m.requests.get_or_create_owned(&RequestLabels {
                    front_end: front_end.label(),
                    op,
                    result: if failed { "error" } else { "ok" },
                })
            })
            .inc();
        series.seconds[at]
            .get_or_init(|| {
                m.request_seconds.get_or_create_owned(&LatencyLabels {
                    front_end: front_end.label(),
                    op,
                })
            })
            .observe(seconds);
    }

    /// Records one WAL group commit.
    pub fn wal_commit(&self, bytes: u64, took: Duration) {
        self.0.wal_bytes.inc_by(bytes);
        self.0.wal_fsync_seconds.observe(took.as_secs_f64());
    }

    /// Brings the proposal counter of `shard` up to the core's count.
    pub fn proposals_to(&self, shard: u32, total: u64) {
        self.with_shard_series(shard, |series| raise(&series.proposals, total));
    }

    /// Calls `f` with `shard`'s series.
    fn with_shard_series<R>(&self, shard: u32, f: impl FnOnce(&ShardSeries) -> R) -> R {
        let mut cache = self.0.shard_series.lock().expect("shard series lock");
        f(shard_series(&self.0, &mut cache, shard))
    }

    /// Counts a leader change seen in `shard`.
    pub fn leader_change(&self, shard: u32) {
        self.0
            .leader_changes
            .get_or_create(&ShardLabels { shard })
            .inc();
    }

    /// Counts an election started for `shard`.
    pub fn election(&self, shard: u32) {
        self.0.elections.get_or_create(&ShardLabels { shard }).inc();
    }

    /// Counts a snapshot transfer this node started.
    pub fn snapshot_sent(&self) {
        self.0.snapshots_sent.inc();
    }

    /// Counts the leases forgotten because the ticks lagged real time.
    pub fn lease_expired(&self) {
        self.0.leases_expired.inc();
    }

    /// Counts a snapshot this node installed.
    pub fn snapshot_installed(&self) {
        self.0.snapshots_installed.inc();
    }

    /// Copies the status table and the runtime's datagram counters into the gauges and
    /// counters, and decides health.
    pub fn sync(&self, status: &NodeStatus, counters: &Counters, pending: usize) {
        let m = &self.0;
        let mut cache = m.shard_series.lock().expect("shard series lock");
        for s in &status.shards {
            let series = shard_series(m, &mut cache, s.shard.0);
            for ((role, _), gauge) in ROLES.iter().zip(&series.role) {
                gauge.set(i64::from(*role == s.role));
            }
            series.term.set(s.term as i64);
            series.commit.set(s.commit as i64);
            series.applied.set(s.applied as i64);
            series.has_leader.set(i64::from(s.leader.is_some()));
        }
        drop(cache);
        m.healthy.store(
            status.shards.iter().all(|s| s.leader.is_some()),
            Ordering::Relaxed,
        );
        m.pending_requests.set(pending as i64);
        for (reason, n) in &status.refused {
            // The core's reasons are a fixed set of static names; a label needs 'static.
            if let Some(reason) = kv_node::BoundaryRefusal::ALL
                .iter()
                .map(|r| r.name())
                .find(|name| name == reason)
            {
                raise(&m.refused.get_or_create(&ReasonLabels { reason }), *n);
            }
        }
        raise(&m.datagrams_received, counters.datagrams_in);
        raise(&m.datagrams_sent, counters.datagrams_out);
        raise(&m.peer_datagrams_sent, counters.peer_datagrams_out);
        raise(&m.disk_writes, counters.disk_writes);
        raise(&m.disk_writes_here, counters.disk_writes_here);
        raise(&m.wal_syncs, counters.wal_syncs);
        for (&woke, &n) in &counters.turns {
            raise(&m.loop_turns.get_or_create(&WokeLabels { woke }), n);
        }
        for reason in DropReason::ALL {
            raise(
                &m.datagrams_dropped.get_or_create(&ReasonLabels {
                    reason: reason.name(),
                }),
                counters.drops(reason),
            );
        }
    }
}

/// When each UDP client request arrived, so its latency is known when the reply leaves.
/// Every request the core takes is answered exactly once, so entries do not pile up; a
/// bound guards against a core bug all the same.
#[derive(Debug, Default)]
pub struct UdpRequests {
    /// Keyed by ids clients choose: seeded. The value: arrival and index in `OP_LABELS`.
    arrived: HashMap<(ClientId, u64), (Instant, u8), SeededState>,
    /// The latency of the last arrival answered in this flush: the requests of one
    /// datagram share their arrival, and their replies mostly one flush.
    last: Option<(Instant, Instant, f64)>,
}

impl UdpRequests {
    /// Notes a request's arrival at `at` (the requests of one datagram share its
    /// arrival: one clock read per datagram, not per request).
    pub fn arrived(&mut self, req: &ClientRequest, at: Instant) {
        if self.arrived.len() < PENDING_REQUESTS_MAX {
            self.arrived
                .insert((req.client, req.seq), (at, op_index(&req.op) as u8));
        }
    }

    /// Counts the request `reply` answers, if its arrival was noted, as answered at `now`
    /// (the replies of one flush share it).
    pub fn answered(&mut self, reply: &ClientReply, metrics: &Metrics, now: Instant) {
        if let Some((at, op)) = self.arrived.remove(&(reply.client, reply.seq)) {
            let failed = matches!(reply.outcome, Outcome::Error(_));
            let seconds = match self.last {
                Some((last_at, last_now, seconds)) if last_at == at && last_now == now => seconds,
                _ => {
                    let seconds = now.saturating_duration_since(at).as_secs_f64();
                    self.last = Some((at, now, seconds));
                    seconds
                }
            };
            metrics.request_of(FrontEnd::Udp, usize::from(op), failed, seconds);
        }
    }
}

/// The metrics labels of the client operations, in the order of [`op_label`]'s match.
const OP_LABELS: [&str; 14] = [
    "get",
    "put",
    "delete",
    "cas",
    "incr",
    "append",
    "swap",
    "open_session",
    "shard_leader",
    "move_replica",
    "register_node",
    "set_node_state",
    "pause_balancer",
    "status",
];

/// The series handles of [`Inner::request_series`]: counts by (front end, operation,
/// result), latencies by (front end, operation).
struct RequestSeries {
    counts: [OnceLock<Counter>; 2 * OP_LABELS.len() * 2],
    seconds: [OnceLock<Histogram>; 2 * OP_LABELS.len()],
}

impl Default for RequestSeries {
    fn default() -> Self {
        RequestSeries {
            counts: [const { OnceLock::new() }; 2 * OP_LABELS.len() * 2],
            seconds: [const { OnceLock::new() }; 2 * OP_LABELS.len()],
        }
    }
}

/// The metrics label of a client operation.
pub fn op_label(op: &Op) -> &'static str {
    OP_LABELS[op_index(op)]
}

/// Where [`op_label`] finds `op`'s label in `OP_LABELS`.
fn op_index(op: &Op) -> usize {
    match op {
        Op::Get { .. } => 0,
        Op::Put { .. } => 1,
        Op::Delete { .. } => 2,
        Op::Cas { .. } => 3,
        Op::Incr { .. } => 4,
        Op::Append { .. } => 5,
        Op::Swap { .. } => 6,
        Op::OpenSession { .. } => 7,
        Op::ShardLeader { .. } => 8,
        Op::MoveReplica { .. } => 9,
        Op::RegisterNode { .. } => 10,
        Op::SetNodeState { .. } => 11,
        Op::PauseBalancer { .. } => 12,
        Op::Status => 13,
    }
}

/// A [`LogStore`] that times every fsync and counts the record bytes appended, so the
/// disk thread stays free of metrics code.
pub struct MeteredStore<S> {
    inner: S,
    metrics: Metrics,
    appended_bytes: u64,
}

impl<S: LogStore> MeteredStore<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, metrics: Metrics) -> Self {
        MeteredStore {
            inner,
            metrics,
            appended_bytes: 0,
        }
    }
}

impl<S: LogStore> LogStore for MeteredStore<S> {
    fn execute(&mut self, op: &DiskOp) -> Result<(), StoreError> {
        let result = self.inner.execute(op);
        if let (Ok(()), DiskOp::Append(r)) = (&result, op) {
            self.appended_bytes += r.payload.len() as u64;
        }
        result
    }

    fn append_all(&mut self, records: &[&Record]) -> Result<(), (usize, StoreError)> {
        let result = self.inner.append_all(records);
        let appended = match &result {
            Ok(()) => records.len(),
            Err((n, _)) => *n,
        };
        self.appended_bytes += records[..appended]
            .iter()
            .map(|r| r.payload.len() as u64)
            .sum::<u64>();
        result
    }

    fn sync(&mut self) -> Result<(), StoreError> {
        let start = Instant::now();
        let result = self.inner.sync();
        self.metrics
            .wal_commit(std::mem::take(&mut self.appended_bytes), start.elapsed());
        result
    }

    fn wants_prepare(&self) -> bool {
        self.inner.wants_prepare()
    }

    fn prepare(&mut self) -> Result<(), StoreError> {
        self.inner.prepare()
    }
}

/// The samples of OpenMetrics `text` whose family is one of `kinds` (by its `# TYPE`
/// line), as `(name{labels}, value)`; values are whole numbers for counters and gauges.
fn series_of_kind<'a>(
    text: &'a str,
    kinds: &'a [&str],
) -> impl Iterator<Item = (String, u64)> + 'a {
    let mut kind = "";
    text.lines().filter_map(move |line| {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            kind = rest.rsplit(' ').next().unwrap_or("");
            return None;
        }
        if line.starts_with('#') || !kinds.contains(&kind) {
            return None;
        }
        let (series, value) = line.rsplit_once(' ')?;
        let value = value.parse::<u64>().ok().or_else(|| {
            // A gauge below zero is no count; none of the node's gauges go there.
            value
                .parse::<f64>()
                .ok()
                .filter(|v| *v >= 0.0)
                .map(|v| v as u64)
        })?;
        Some((series.to_string(), value))
    })
}

/// `shard`'s series in `cache`, made (and so registered in their families) on first use.
fn shard_series<'c>(
    m: &Inner,
    cache: &'c mut HashMap<u32, ShardSeries>,
    shard: u32,
) -> &'c ShardSeries {
    cache.entry(shard).or_insert_with(|| {
        let l = ShardLabels { shard };
        ShardSeries {
            role: ROLES.map(|(_, role)| {
                m.shard_role
                    .get_or_create_owned(&ShardRoleLabels { shard, role })
            }),
            term: m.shard_term.get_or_create_owned(&l),
            commit: m.shard_commit.get_or_create_owned(&l),
            applied: m.shard_applied.get_or_create_owned(&l),
            has_leader: m.shard_has_leader.get_or_create_owned(&l),
            proposals: m.proposals.get_or_create_owned(&l),
        }
    })
}

/// Brings `counter` up to `total` (the runtime's own count since start).
fn raise(counter: &Counter, total: u64) {
    let now = counter.get();
    if total > now {
        counter.inc_by(total - now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kv_shared::proto::ShardStatus;
    use kv_shared::{NodeId, ShardId};

    /// Node 1's status with `shards` and nothing else.
    fn node_status(shard_count: u32, shards: Vec<ShardStatus>) -> NodeStatus {
        NodeStatus {
            node: NodeId(1),
            shard_count,
            shards,
            peers: Vec::new(),
            refused: Vec::new(),
            drops: Vec::new(),
            counters: Vec::new(),
            nodes: Vec::new(),
            routes: Vec::new(),
            registry: None,
            metadata: None,
        }
    }

    #[test]
    fn sync_copies_status_and_counters() {
        let m = Metrics::new();
        let row = |shard, leader| ShardStatus {
            shard: ShardId(shard),
            role: Role::Leader,
            term: 4,
            leader,
            commit: 9,
            applied: 8,
            log_entries: 0,
            snapshot_index: 0,
            keys: 0,
            replicas: Vec::new(),
            epoch: 0,
        };
        let mut status = node_status(2, vec![row(0, Some(NodeId(1))), row(1, None)]);
        let mut counters = Counters::default();
        counters.datagrams_in = 5;
        m.sync(&status, &counters, 3);
        assert!(!m.healthy(), "shard 1 has no leader");
        status.shards[1].leader = Some(NodeId(2));
        counters.datagrams_in = 7;
        m.sync(&status, &counters, 3);
        assert!(m.healthy());
        let text = m.encode();
        for line in [
            "raftkv_shard_term{shard=\"1\"} 4",
            "raftkv_shard_commit_index{shard=\"0\"} 9",
            "raftkv_shard_role{shard=\"0\",role=\"leader\"} 1",
            "raftkv_shard_role{shard=\"0\",role=\"follower\"} 0",
            "raftkv_datagrams_received_total 7",
            "raftkv_pending_requests 3",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
    }

    #[test]
    fn later_syncs_move_the_shard_series_made_by_the_first() {
        let m = Metrics::new();
        let row = |role, term, commit| ShardStatus {
            shard: ShardId(3),
            role,
            term,
            leader: Some(NodeId(1)),
            commit,
            applied: commit,
            log_entries: 0,
            snapshot_index: 0,
            keys: 0,
            replicas: Vec::new(),
            epoch: 0,
        };
        m.sync(
            &node_status(4, vec![row(Role::Follower, 2, 5)]),
            &Counters::default(),
            0,
        );
        m.proposals_to(3, 4);
        m.sync(
            &node_status(4, vec![row(Role::Leader, 3, 17)]),
            &Counters::default(),
            0,
        );
        m.proposals_to(3, 9);
        let text = m.encode();
        for line in [
            "raftkv_shard_term{shard=\"3\"} 3",
            "raftkv_shard_commit_index{shard=\"3\"} 17",
            "raftkv_shard_applied_index{shard=\"3\"} 17",
            "raftkv_shard_role{shard=\"3\",role=\"leader\"} 1",
            "raftkv_shard_role{shard=\"3\",role=\"follower\"} 0",
            "raftkv_shard_proposals_total{shard=\"3\"} 9",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
        assert_eq!(text.matches("raftkv_shard_term{").count(), 1, "{text}");
    }

    #[test]
    fn metrics_text_is_one_openmetrics_document_that_starts_with_the_status_counters() {
        let m = Metrics::new();
        let row = ShardStatus {
            shard: ShardId(0),
            role: Role::Leader,
            term: 1,
            leader: Some(NodeId(1)),
            commit: 1,
            applied: 1,
            log_entries: 0,
            snapshot_index: 0,
            keys: 0,
            replicas: Vec::new(),
            epoch: 0,
        };
        m.sync(&node_status(1, vec![row]), &Counters::default(), 1);
        m.request(FrontEnd::Udp, "put", false, Duration::from_micros(70));
        let text = m.encode();
        assert!(text.starts_with(&m.encode_node_series()), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert_eq!(text.matches("# EOF").count(), 1, "{text}");
        assert!(text.contains("raftkv_shard_term{shard=\"0\"} 1"), "{text}");
        assert!(
            text.contains("raftkv_request_duration_seconds_count"),
            "{text}"
        );
        assert!(text.contains("raftkv_pending_requests 1"), "{text}");
    }

    #[test]
    fn turn_structure_counters_reach_the_status_counters() {
        let m = Metrics::new();
        let status = node_status(1, Vec::new());
        let mut counters = Counters::default();
        counters.datagrams_out = 9;
        counters.peer_datagrams_out = 6;
        counters.disk_writes = 4;
        counters.disk_writes_here = 2;
        counters.wal_syncs = 3;
        counters.turns.insert("socket", 5);
        counters.turns.insert("disk", 2);
        m.sync(&status, &counters, 0);
        let value = |name: &str| {
            m.counters()
                .into_iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v)
        };
        assert_eq!(value("raftkv_peer_datagrams_sent_total"), Some(6));
        assert_eq!(value("raftkv_disk_writes_total"), Some(4));
        assert_eq!(value("raftkv_disk_writes_here_total"), Some(2));
        assert_eq!(value("raftkv_wal_syncs_total"), Some(3));
        assert_eq!(value("raftkv_loop_turns_total{woke=\"socket\"}"), Some(5));
        assert_eq!(value("raftkv_loop_turns_total{woke=\"disk\"}"), Some(2));
        // Counters only rise: a sync with smaller totals leaves them as they were.
        m.sync(&status, &Counters::default(), 0);
        assert_eq!(value("raftkv_wal_syncs_total"), Some(3));
    }

    #[test]
    fn status_counters_are_the_metrics_text_without_shard_series_and_histograms() {
        let m = Metrics::new();
        let status = NodeStatus {
            refused: vec![("pending_requests_full".into(), 4), ("nonsense".into(), 9)],
            ..node_status(1, Vec::new())
        };
        let mut counters = Counters::default();
        counters.datagrams_out = 11;
        m.sync(&status, &counters, 2);
        m.request(FrontEnd::Resp, "get", false, Duration::from_micros(80));
        m.request(FrontEnd::Resp, "get", false, Duration::from_micros(90));
        m.leader_change(0);
        m.wal_commit(100, Duration::from_micros(500));
        let got = m.counters();
        let value = |name: &str| got.iter().find(|(n, _)| n == name).map(|(_, v)| *v);
        assert_eq!(
            value("raftkv_requests_total{front_end=\"resp\",op=\"get\",result=\"ok\"}"),
            Some(2)
        );
        assert_eq!(value("raftkv_datagrams_sent_total"), Some(11));
        assert_eq!(value("raftkv_pending_requests"), Some(2));
        assert_eq!(value("raftkv_wal_written_bytes_total"), Some(100));
        assert_eq!(
            value("raftkv_refused_total{reason=\"pending_requests_full\"}"),
            Some(4)
        );
        assert!(got.iter().all(|(n, _)| !n.contains("nonsense")), "{got:?}");
        assert!(got.iter().all(|(n, _)| !n.contains("shard=")), "{got:?}");
        assert!(got.iter().all(|(n, _)| !n.contains("_bucket")), "{got:?}");
        // Every series listed is in the text /metrics serves, with the same value.
        let text = m.encode();
        for (series, v) in &got {
            assert!(
                text.contains(&format!("{series} {v}")),
                "{series} {v}\n{text}"
            );
        }
    }

    // The UDP path keeps each request's operation as an index and works a latency out
    // once per arrival answered in a flush: the counts and sums must be what one
    // `Metrics::request` per reply would have made.
    #[test]
    fn udp_requests_are_counted_and_timed_from_their_own_arrival_to_their_flush() {
        use bytes::Bytes;
        use kv_shared::proto::{ClientError, ClientReply, ClientRequest, Outcome};
        let m = Metrics::new();
        let mut udp = UdpRequests::default();
        let ms = Duration::from_millis;
        let request = |seq: u64, op: Op| ClientRequest {
            client: ClientId(7),
            seq,
            epoch: 0,
            op,
        };
        let get = || Op::Get {
            key: Bytes::from_static(b"k"),
            stale: false,
        };
        let put = || Op::Put {
            key: Bytes::from_static(b"k"),
            value: Bytes::from_static(b"v"),
        };
        let reply = |seq: u64, outcome: Outcome| ClientReply {
            client: ClientId(7),
            seq,
            outcome,
        };
        let a = Instant::now();
        // One datagram of three gets at `a`, one put at a + 1 ms, one get at `a` again.
        for seq in 1..=3 {
            udp.arrived(&request(seq, get()), a);
        }
        udp.arrived(&request(4, put()), a + ms(1));
        udp.arrived(&request(5, get()), a);
        // One flush at a + 3 ms answers the first four (the put failed) ...
        let flush = a + ms(3);
        let shard = ShardId(0);
        udp.answered(
            &reply(4, Outcome::Error(ClientError::Timeout { shard })),
            &m,
            flush,
        );
        for seq in 1..=3 {
            udp.answered(&reply(seq, Outcome::Value(None)), &m, flush);
        }
        // ... a later one at a + 5 ms the last get; the same arrival, a longer latency.
        udp.answered(&reply(5, Outcome::Value(None)), &m, a + ms(5));
        // A reply to nothing noted counts nothing.
        udp.answered(&reply(9, Outcome::Done), &m, a + ms(5));
        let text = m.encode();
        let has = |line: &str| {
            assert!(text.lines().any(|l| l == line), "{line}\n{text}");
        };
        has("raftkv_requests_total{front_end=\"udp\",op=\"get\",result=\"ok\"} 4");
        has("raftkv_requests_total{front_end=\"udp\",op=\"put\",result=\"error\"} 1");
        has("raftkv_request_duration_seconds_count{front_end=\"udp\",op=\"get\"} 4");
        has("raftkv_request_duration_seconds_count{front_end=\"udp\",op=\"put\"} 1");
        let sum = |op: &str| -> f64 {
            let prefix =
                format!("raftkv_request_duration_seconds_sum{{front_end=\"udp\",op=\"{op}\"}} ");
            let line = text.lines().find(|l| l.starts_with(&prefix)).expect("sum");
            line[prefix.len()..].parse().unwrap()
        };
        assert!((sum("get") - 0.014).abs() < 1e-9, "{text}");
        assert!((sum("put") - 0.002).abs() < 1e-9, "{text}");
        assert!(!text.contains("result=\"ok\"} 5"), "{text}");
    }

    #[test]
    fn requests_land_in_the_series_of_their_front_end_operation_and_result() {
        let m = Metrics::new();
        let ms = Duration::from_millis;
        m.request(FrontEnd::Udp, "put", false, ms(1));
        m.request(FrontEnd::Udp, "put", false, ms(1));
        m.request(FrontEnd::Udp, "put", true, ms(1));
        m.request(FrontEnd::Udp, "get", false, ms(1));
        m.request(FrontEnd::Resp, "put", false, ms(1));
        m.request(FrontEnd::Udp, "status", false, ms(1));
        // A Redis command name that is no client operation of the native protocol.
        m.request(FrontEnd::Resp, "mget", true, ms(1));
        let got = m.counters();
        let value = |name: &str| got.iter().find(|(n, _)| n == name).map(|(_, v)| *v);
        let series = |f: &str, op: &str, r: &str| {
            value(&format!(
                "raftkv_requests_total{{front_end=\"{f}\",op=\"{op}\",result=\"{r}\"}}"
            ))
        };
        assert_eq!(series("udp", "put", "ok"), Some(2));
        assert_eq!(series("udp", "put", "error"), Some(1));
        assert_eq!(series("udp", "get", "ok"), Some(1));
        assert_eq!(series("resp", "put", "ok"), Some(1));
        assert_eq!(series("udp", "status", "ok"), Some(1));
        assert_eq!(series("resp", "mget", "error"), Some(1));
        // A series appears once it counted something, not before.
        assert_eq!(series("udp", "get", "error"), None);
        assert_eq!(series("resp", "put", "error"), None);
        let text = m.encode();
        for (labels, n) in [
            ("front_end=\"udp\",op=\"put\"", 3),
            ("front_end=\"udp\",op=\"get\"", 1),
            ("front_end=\"resp\",op=\"put\"", 1),
            ("front_end=\"resp\",op=\"mget\"", 1),
        ] {
            let line = format!("raftkv_request_duration_seconds_count{{{labels}}} {n}");
            assert!(text.contains(&line), "{line}\n{text}");
        }
        assert!(!text.contains("op=\"delete\""), "{text}");
    }
}

/// The balancer's series: what `kvcli rebalance status` shows of the balancer (it reads
/// them from the status replies' counters) and what Prometheus scrapes. Names are the
/// registered names (`raftkv_` prefix; counters end in `_total`).
#[derive(Default)]
pub struct BalancerSeries {
    /// 1 when the cluster file enables the balancer on this node.
    pub enabled: Gauge,
    /// 1 while this node's balancer plans: it leads the metadata group and the balancer
    /// is not paused.
    pub active: Gauge,
    /// Planning rounds this node's balancer ran.
    pub rounds: Counter,
    /// Replica moves it asked for and that have not ended.
    pub moves_in_flight: Gauge,
    /// Replica moves it asked for.
    pub moves_started: Counter,
    /// Of those, moves that ended done.
    pub moves_done: Counter,
    /// Of those, moves refused, undone or not answered in time.
    pub moves_failed: Counter,
    /// Leader transfers it asked for.
    pub leader_transfers: Counter,
    /// The last round's new moves, leader transfers and stuck replicas.
    pub last_round_moves: Gauge,
    /// See `last_round_moves`.
    pub last_round_transfers: Gauge,
    /// See `last_round_moves`.
    pub last_round_stuck: Gauge,
    /// Nodes the last round counted as down for longer than `down_after_ms`.
    pub nodes_down_too_long: Gauge,
}

impl BalancerSeries {
    fn register(&self, r: &mut Registry) {
        let gauges: [(&str, &str, &Gauge); 7] = [
            (
                "balancer_enabled",
                "1 when the cluster file enables the balancer",
                &self.enabled,
            ),
            (
                "balancer_active",
                "1 while this node's balancer plans (it leads the metadata group, not paused)",
                &self.active,
            ),
            (
                "balancer_moves_in_flight",
                "Replica moves this node's balancer asked for that have not ended",
                &self.moves_in_flight,
            ),
            (
                "balancer_last_round_moves",
                "Moves the balancer's last round started",
                &self.last_round_moves,
            ),
            (
                "balancer_last_round_transfers",
                "Leader transfers the balancer's last round asked for",
                &self.last_round_transfers,
            ),
            (
                "balancer_last_round_stuck",
                "Replicas or shards the balancer's last round could not place",
                &self.last_round_stuck,
            ),
            (
                "balancer_nodes_down_too_long",
                "Nodes the balancer's last round counted as down longer than down_after_ms",
                &self.nodes_down_too_long,
            ),
        ];
        for (name, help, g) in gauges {
            r.register(name, help, g.clone());
        }
        let counters: [(&str, &str, &Counter); 5] = [
            ("balancer_rounds", "Planning rounds this node's balancer ran", &self.rounds),
            ("balancer_moves_started", "Replica moves this node's balancer asked for", &self.moves_started),
            ("balancer_moves_done", "Replica moves this node's balancer asked for that ended done", &self.moves_done),
            ("balancer_moves_failed", "Replica moves this node's balancer asked for that were refused, undone or timed out", &self.moves_failed),
            ("balancer_leader_transfers", "Leader transfers this node's balancer asked for", &self.leader_transfers),
        ];
        for (name, help, c) in counters {
            r.register(name, help, c.clone());
        }
    }
}
