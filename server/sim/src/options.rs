//! What a simulation run is asked to do (`SimOptions`, the fault mix and profile) and what
//! it reports back (`Report`, `Failure`, `Stats`): the simulator's public vocabulary.

use kv_node::NodeCore;
use std::sync::Arc;

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
    /// Replica moves under faults: 4..=5 nodes, 1..=3 shards, 3 replicas each (unless
    /// set), so every shard has somewhere to move to. An admin actor asks shards'
    /// leaders to move a random voter (the leader included) to a node outside the set
    /// and to hand leadership to a voter, one request at a time, while the Mixed chaos
    /// runs (partitions, crashes, pauses, slow disks, leader hits). Only
    /// `kvsim --profile moves` or `SimOptions::profile` selects it.
    Moves,
}

/// The default of [`SimOptions::events_max`]: passing runs of every profile take at most
/// a few tens of thousands of events, so a run this long is a storm, not a slow seed.
pub const EVENTS_MAX: u64 = 2_000_000;

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
    /// Most events a run may process. A run past it fails "bounded work": a message storm
    /// or a loop of zero-delay events would otherwise never reach the liveness deadline,
    /// which is counted in simulated time, and the run would never end.
    pub events_max: u64,
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
            events_max: EVENTS_MAX,
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

/// What the Moves profile's admin asked, and how it ended (part of [`Stats`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct AdminCounts {
    /// Moves answered `Done`.
    pub moves_done: u64,
    /// Requests refused (a move refused or undone, a preferred leader no longer a voter).
    pub refused: u64,
    /// Leader preferences answered `Done`.
    pub leader_changes: u64,
    /// Requests abandoned at the give-up deadline (outcome unknown).
    pub abandoned: u64,
    /// Churn: nodes that joined.
    pub joins: u64,
    /// Churn: nodes drained (every replica moved off, then stopped for good).
    pub drains: u64,
    /// Churn: nodes killed for good, their replicas moved off them while dead.
    pub dead_removals: u64,
    /// Replicas a node created again after its replica of the shard had left it (a move
    /// back), counted from the nodes' `ReplicaRecreated` events.
    pub recreated: u64,
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
    /// Whether leaders ran kv-raft's lazy followers (course mode's send policy).
    pub lazy_followers: bool,
    /// Whether the nodes' WALs wrote into preallocated space.
    pub preallocated_wal: bool,
    /// Whether deferrable writes (a leader's own log) became durable later than others.
    pub deferred_syncs: bool,
    /// Whether leaders were handed to each shard's lowest voter (`[placement] leaders =
    /// "pack"` with leader spreading on).
    pub packed_leaders: bool,
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
    /// The Moves profile's admin requests.
    pub admin: AdminCounts,
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
