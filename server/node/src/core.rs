//! [`NodeCore`]: one node's Raft groups, state machines and client requests, driven by
//! inputs (tick, peer messages, client requests, disk completions) and drained as
//! [`Output`]. Every Raft `Ready` is handled here in the order kv-raft prescribes:
//! persist (as DiskOps of one group-committed DiskWrite), send, apply, serve reads.

mod metadata;
mod moving;
mod progress;

use crate::codec::{self, GroupMessage};
use crate::config::NodeConfig;
use crate::events::{EventKind, NodeEvent};
use crate::moves;
use crate::placement::ShardPlacement;
use crate::sm::{CommandBatch, StateMachine, WriteCommand, WriteOp};
use crate::wal::{self, RecoveryError};
use crate::write_refusal::{self, WriteRefusal};
use bytes::Bytes;
use kv_raft::{
    ConfChange, Entry, EntryKind, ProposeError, Raft, Restored, Role, Snapshot, SoftState, WriteId,
};
use kv_shared::limits::{
    ENTRY_BYTES_MAX, PENDING_REQUESTS_MAX, PENDING_REQUEST_BYTES_MAX, SNAPSHOT_IMAGE_BYTES_MAX,
    SNAPSHOT_RECEIVE_BYTES_MAX,
};
use kv_shared::proto::{
    ClientError, ClientReply, ClientRequest, NodeStatus, Op, Outcome, ShardRoute, ShardStatus,
};
use kv_shared::registry::{Registry, METADATA_SHARD};
use kv_shared::shard::shard_for_key;
use kv_shared::{NodeId, ShardId};
use std::collections::{BTreeMap, BTreeSet};
use std::ops::{Index, IndexMut};
use xxhash_rust::xxh64::Xxh64;

/// A shard takes a snapshot once this many entry payload bytes were applied since its
/// last one, even below `snapshot_threshold_entries`: entries batch many writes, so an
/// entry count alone let a long run of small puts stay in memory as log, and a restarted
/// follower replayed them instead of installing a snapshot.
const SNAPSHOT_LOG_BYTES_MAX: u64 = 8 * 1024 * 1024;

/// Room for a snapshot's metadata next to its image in one snapshot file: a received
/// image of the largest size the network accepts must also fit kv-storage's file limit,
/// or the follower could never persist it.
const SNAPSHOT_META_BYTES_MAX: u64 = 64 * 1024;
const _: () =
    assert!(SNAPSHOT_IMAGE_BYTES_MAX + SNAPSHOT_META_BYTES_MAX <= kv_storage::SNAPSHOT_BYTES_MAX);

/// Why the node core refused remote input before it reached a Raft group or a shard
/// (kv-raft counts what it refuses itself: [`kv_raft::Refusal`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum BoundaryRefusal {
    /// A datagram from a node that is not a member of the cluster.
    UnknownSender,
    /// A message for a shard this node does not host.
    UnknownShard,
    /// A message whose sender or receiver is not the datagram's sender and this node.
    Misaddressed,
    /// A client request while `PENDING_REQUESTS_MAX` requests are pending.
    PendingRequestsFull,
    /// A client request while its bytes would exceed `PENDING_REQUEST_BYTES_MAX`.
    PendingBytesFull,
}

impl BoundaryRefusal {
    /// Every reason, in counter order.
    pub const ALL: [BoundaryRefusal; 5] = [
        BoundaryRefusal::UnknownSender,
        BoundaryRefusal::UnknownShard,
        BoundaryRefusal::Misaddressed,
        BoundaryRefusal::PendingRequestsFull,
        BoundaryRefusal::PendingBytesFull,
    ];

    /// A stable snake_case name for status output and metrics.
    pub fn name(self) -> &'static str {
        match self {
            BoundaryRefusal::UnknownSender => "unknown_sender",
            BoundaryRefusal::UnknownShard => "unknown_shard",
            BoundaryRefusal::Misaddressed => "misaddressed",
            BoundaryRefusal::PendingRequestsFull => "pending_requests_full",
            BoundaryRefusal::PendingBytesFull => "pending_bytes_full",
        }
    }
}

/// Opaque to the core: the runtime maps it to a client address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClientToken(pub u64);

/// One storage operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DiskOp {
    /// Append a WAL record (entries or hard state, see [`crate::wal`]).
    Append(kv_storage::Record),
    /// Store a shard snapshot (a postcard `kv_raft::Snapshot`).
    SaveSnapshot {
        /// The shard.
        shard: u32,
        /// Its last index.
        index: u64,
        /// The encoded snapshot.
        data: Bytes,
    },
    /// The shard's WAL records up to `index` are no longer needed.
    Compact {
        /// The shard.
        shard: u32,
        /// Snapshot index.
        index: u64,
    },
}

/// Storage work of one round, for all groups: execute the ops in order, sync once, then
/// report `on_disk_done(id)`. Execute DiskWrites in id order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskWrite {
    /// Report this to [`NodeCore::on_disk_done`] once durable.
    pub id: u64,
    /// The operations.
    pub ops: Vec<DiskOp>,
}

/// What the runtime must do after an input.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Output {
    /// Per destination, all groups batched; each Vec fits one datagram with `encode_peer`.
    pub datagrams: Vec<(NodeId, Vec<GroupMessage>)>,
    /// Storage work.
    pub disk_writes: Vec<DiskWrite>,
    /// Answers to client requests (exactly one per request).
    pub replies: Vec<(ClientToken, ClientReply)>,
    /// What happened in the shards, for the runtime's log and metrics.
    pub events: Vec<NodeEvent>,
    /// Shards whose replica here was removed, its removal now durable in the WAL: delete
    /// their snapshot files (recovery ignores them and their WAL records already).
    pub removed_shards: Vec<u32>,
    /// Entries applied, in the order applied.
    pub applied: Vec<AppliedEntry>,
    /// Client requests proposed as leader, with the index of their entry.
    pub proposed: Vec<ProposedRequest>,
}

pub use progress::{AppliedEntry, ProposedRequest};

/// Role, term, leader and applied index of one shard, as of the last `take_output`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupView {
    /// Role.
    pub role: Role,
    /// Term.
    pub term: u64,
    /// Known leader.
    pub leader: Option<NodeId>,
    /// Applied index of the state machine.
    pub applied: u64,
    /// Client writes this replica proposed (as leader) since it started.
    pub proposed_writes: u64,
}

/// What a pending request counts against `PENDING_REQUEST_BYTES_MAX`: its keys and values
/// (the bulk of what it holds) plus a fixed share for the rest of the request.
fn request_bytes(op: &Op) -> usize {
    const REQUEST_OVERHEAD_BYTES: usize = 128;
    let payload = match op {
        Op::Put { key, value } | Op::Append { key, value } => key.len() + value.len(),
        Op::Swap { key, new } => key.len() + new.as_ref().map_or(0, |v| v.len()),
        Op::Incr { key, .. } => key.len() + 8,
        Op::Cas { key, expected, new } => {
            key.len() + expected.as_ref().map_or(0, |e| e.len()) + new.len()
        }
        Op::Get { key, .. } | Op::Delete { key } | Op::OpenSession { key } => key.len(),
        Op::Status | Op::ShardLeader { .. } | Op::MoveReplica { .. } | Op::RegisterNode { .. } => 0,
    };
    REQUEST_OVERHEAD_BYTES + payload
}

/// A digest of an entry, equal for equal entries. Every applied entry is hashed (for
/// `Output::applied`), so it streams the fields instead of encoding a copy of the payload.
pub fn entry_hash(e: &Entry) -> u64 {
    let mut h = Xxh64::new(0);
    h.update(&e.term.to_le_bytes());
    h.update(&e.index.to_le_bytes());
    // A kind encodes in a few bytes (a conf change carries one node id).
    let mut kind = [0u8; 32];
    h.update(postcard::to_slice(&e.kind, &mut kind).expect("an entry kind fits 32 bytes"));
    h.update(&e.data);
    h.digest()
}

/// Bugs the simulator must catch; see the `planted-bugs` feature.
#[cfg(feature = "planted-bugs")]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlantedBug {
    /// A bug planted in kv-raft.
    Raft(kv_raft::PlantedBug),
    /// Serve linearizable gets from local state at once, without ReadIndex.
    ReadWithoutReadIndex,
    /// A replica created for a move starts from the bootstrap placement's membership
    /// with itself as a voter (as if this node had held the shard from the start)
    /// instead of an empty one: it may campaign and vote in a configuration it is not
    /// part of.
    CreatedReplicaWithBootstrapMembership,
    /// A replica that applied its own removal keeps its data and keeps answering stale
    /// reads, also to requests routed by a newer epoch than its own (no tombstone).
    RemovedReplicaServesReads,
    /// A move promotes its learner, and goes on to remove the old replica, without
    /// waiting for the learner to catch up with the leader's commit index.
    RemoveBeforeCatchUp,
}

/// A client request not yet answered.
struct Request {
    token: ClientToken,
    req: ClientRequest,
    shard: ShardId,
    deadline_tick: u64,
    /// What it counts against `PENDING_REQUEST_BYTES_MAX`.
    bytes: usize,
}

/// What to do when a DiskWrite is durable.
enum Durable {
    Raft(ShardId, WriteId),
    OwnSnapshot(ShardId, Snapshot),
    ReceivedSnapshot(ShardId, u64),
    /// The removal record of a replica this node no longer holds.
    Removed(ShardId),
}

/// One shard: its Raft replica, state machine and requests in flight.
struct Group {
    shard: ShardId,
    raft: Raft,
    sm: StateMachine,
    soft: SoftState,
    /// Requests to route next round: new ones, and ones held while no leader is known.
    waiting: Vec<u64>,
    /// Proposed batches by log index: (term, request ids in batch order).
    proposed: BTreeMap<u64, (u64, Vec<u64>)>,
    /// ReadIndex rounds awaiting confirmation, by ctx.
    reads: BTreeMap<u64, Vec<u64>>,
    /// Confirmed reads waiting for the state machine to reach their index.
    confirmed_reads: Vec<(u64, Vec<u64>)>,
    /// Index of the latest durable snapshot.
    snapshot_index: u64,
    /// Snapshot writes (own or received) not yet durable.
    snapshot_writes_inflight: u32,
    /// Entry payload bytes applied since the latest snapshot was taken or installed.
    applied_bytes_since_snapshot: u64,
    last_transfer_tick: Option<u64>,
    /// Client writes proposed as leader, for metrics.
    proposed_writes: u64,
    /// Not ticked while idle (`NodeConfig::quiesce`; see `NodeCore::tick`).
    quiesced: bool,
    /// Consecutive ticks this leader had nothing to do.
    idle_ticks: u64,
    /// Tick of the last Raft message received for this group.
    last_msg_tick: u64,
    /// A follower woken to check on its silent leader stays awake until this tick.
    recheck_until_tick: u64,
    /// `MoveReplica` requests answered when the move in flight ends.
    move_waiters: Vec<u64>,
    /// Tick at which this leader first saw the move's learner catching up.
    catch_up_since: Option<u64>,
    /// Tick of the last message for this group from the move's learner.
    learner_heard_tick: Option<u64>,
    /// Log index of this leader's `EndMove` proposal not yet applied.
    move_end_proposed: Option<u64>,
    /// Index of the committed change that removed this node from the shard.
    removed_at: Option<u64>,
    /// The membership this replica knew at its last Ready listed this node: a replica
    /// created by a move starts outside it, until the leader's snapshot adds it.
    was_member: bool,
    /// A received snapshot, not yet durable, whose membership no longer lists this
    /// member: its index. Once durable (and acknowledged) the replica is removed.
    removed_by_snapshot: Option<u64>,
    /// Created by a move (it started from an empty membership), not by the bootstrap
    /// placement: forgotten if the shard never lists it (`forget_unlisted_replicas`).
    created: bool,
    /// Tick of the last message a leader sends (append, heartbeat, snapshot chunk).
    leader_heard_tick: u64,
    /// The commit index the latest Append for this group carried (unclamped).
    leader_commit_told: Option<u64>,
}

impl Group {
    /// A group for `shard` from what recovery (or a replica's creation) gives it.
    fn new(config: &NodeConfig, shard: ShardId, r: Restored) -> Result<Group, RecoveryError> {
        let (sm, snapshot_index) = match &r.snapshot {
            Some(s) => {
                let sm = StateMachine::from_image(&s.data, config.sessions_max()).map_err(|e| {
                    RecoveryError::BadSnapshot {
                        shard: shard.0,
                        index: s.meta.index,
                        reason: e.to_string(),
                    }
                })?;
                (sm, s.meta.index)
            }
            None if shard == METADATA_SHARD => {
                (StateMachine::new_metadata(config.sessions_max()), 0)
            }
            None => (StateMachine::new(config.sessions_max()), 0),
        };
        let created = r.initial_membership.voters.is_empty();
        let raft = Raft::new(config.raft_config(shard), r);
        let st = raft.status();
        let was_member = is_listed(&st.membership, config.node);
        Ok(Group {
            shard,
            raft,
            sm,
            soft: SoftState {
                role: st.role,
                term: st.term,
                leader: st.leader,
            },
            waiting: Vec::new(),
            proposed: BTreeMap::new(),
            reads: BTreeMap::new(),
            confirmed_reads: Vec::new(),
            snapshot_index,
            snapshot_writes_inflight: 0,
            applied_bytes_since_snapshot: 0,
            last_transfer_tick: None,
            proposed_writes: 0,
            quiesced: false,
            idle_ticks: 0,
            last_msg_tick: 0,
            recheck_until_tick: 0,
            move_waiters: Vec::new(),
            catch_up_since: None,
            learner_heard_tick: None,
            move_end_proposed: None,
            removed_at: None,
            was_member,
            removed_by_snapshot: None,
            created,
            leader_heard_tick: 0,
            leader_commit_told: None,
        })
    }
}

impl Group {
    /// Ticks a quiesced group again (`NodeCore::tick` explains quiescence).
    fn wake(&mut self) {
        if self.quiesced {
            self.quiesced = false;
            self.raft.wake();
        }
    }
}

/// The groups of the shards hosted here, by shard. Indexing a shard not hosted here is a
/// programmer error (callers check [`Groups::contains`] at the boundary).
struct Groups(BTreeMap<ShardId, Group>);

impl Groups {
    fn contains(&self, shard: ShardId) -> bool {
        self.0.contains_key(&shard)
    }

    /// The hosted shards, ascending (a copy, so the caller may mutate groups meanwhile).
    fn ids(&self) -> Vec<ShardId> {
        self.0.keys().copied().collect()
    }

    fn iter(&self) -> impl Iterator<Item = &Group> {
        self.0.values()
    }

    fn iter_mut(&mut self) -> impl Iterator<Item = &mut Group> {
        self.0.values_mut()
    }
}

impl Index<ShardId> for Groups {
    type Output = Group;

    fn index(&self, shard: ShardId) -> &Group {
        self.0
            .get(&shard)
            .unwrap_or_else(|| panic!("shard {shard} is not hosted here"))
    }
}

impl IndexMut<ShardId> for Groups {
    fn index_mut(&mut self, shard: ShardId) -> &mut Group {
        self.0
            .get_mut(&shard)
            .unwrap_or_else(|| panic!("shard {shard} is not hosted here"))
    }
}

/// The sans-I/O node: see the crate docs.
pub struct NodeCore {
    config: NodeConfig,
    /// Bootstrap replica sets and preferred leaders of every shard of the cluster.
    placement: Vec<ShardPlacement>,
    groups: Groups,
    /// Shards whose replica here was removed, with the epoch of the removal: they are
    /// never served or created again (their tombstones are in the WAL).
    removed: BTreeMap<ShardId, u64>,
    /// The replica set each removed shard had when its replica here applied the removal
    /// (since this process started): what `StaleRoute` answers carry.
    removed_routes: BTreeMap<ShardId, ShardRoute>,
    /// Shards whose created replica here was forgotten, with its term then (where a
    /// replica created again starts).
    forgotten: BTreeMap<ShardId, u64>,
    requests: BTreeMap<u64, Request>,
    /// Sum of `Request::bytes` over `requests`.
    pending_request_bytes: usize,
    /// Why client writes are refused now, if they are ([`NodeCore::refuse_writes`]).
    write_refusal: Option<WriteRefusal>,
    /// Remote input refused at the boundary, by reason (see `BoundaryRefusal::ALL`).
    boundary_refusals: [u64; BoundaryRefusal::ALL.len()],
    deadlines: BTreeSet<(u64, u64)>,
    next_request_id: u64,
    next_read_ctx: u64,
    next_disk_write: u64,
    disk_inflight: BTreeMap<u64, Vec<Durable>>,
    /// Ops of the round being assembled.
    round_ops: Vec<DiskOp>,
    round_durable: Vec<Durable>,
    outbox: BTreeMap<NodeId, Vec<GroupMessage>>,
    out: Output,
    tick_count: u64,
    peers_heard_ms: BTreeMap<NodeId, u64>,
    /// Tick of the last datagram from each peer (quiescence's failure detector).
    peers_heard_tick: BTreeMap<NodeId, u64>,
    /// Tick of the last datagram to each peer (quiescence's keepalives).
    peers_sent_tick: BTreeMap<NodeId, u64>,
    now_ms: u64,
    /// The newest node registry heard from outside this node (status replies of other
    /// nodes, via [`NodeCore::learn_registry`]); a metadata voter also reads its own.
    registry_heard: Option<Registry>,
    #[cfg(feature = "planted-bugs")]
    read_without_read_index: bool,
    #[cfg(feature = "planted-bugs")]
    created_with_bootstrap_membership: bool,
    #[cfg(feature = "planted-bugs")]
    removed_replica_serves_reads: bool,
    #[cfg(feature = "planted-bugs")]
    remove_before_catch_up: bool,
}

impl NodeCore {
    /// Builds the node from its settings and what its storage recovered.
    pub fn new(
        config: NodeConfig,
        recovered: kv_storage::Recovered,
    ) -> Result<NodeCore, RecoveryError> {
        assert!(config.shard_count > 0, "a node hosts at least one shard");
        if config.quiesce {
            assert!(
                !config.raft.lease_reads,
                "quiescence pauses Raft clocks, which a lease would count as time"
            );
            assert!(
                config.raft.election_ticks_min > 2 * config.raft.heartbeat_ticks + 1,
                "quiescence needs elections slower than two heartbeat periods"
            );
        }
        assert!(
            config.members.contains(&config.node) || !config.metadata_voters.is_empty(),
            "node {} is not among the members, and no registry can list it",
            config.node
        );
        assert!(
            config
                .metadata_voters
                .iter()
                .all(|v| config.members.contains(v)),
            "the metadata group's voters are members"
        );
        let placement = config.placement();
        let hosted = wal::hosted_shards(&recovered, config.shard_count, &config.initial_groups())?;
        let restored = wal::restore_groups(&recovered, config.shard_count, &hosted.groups)?;
        let mut groups = BTreeMap::new();
        for (shard, r) in restored {
            groups.insert(shard, Group::new(&config, shard, r)?);
        }
        // A removed shard's files may have outlived a crash before their deletion; its
        // tombstone is durable (recovered), so they can go now.
        let out = Output {
            removed_shards: hosted.removed.keys().map(|s| s.0).collect(),
            ..Output::default()
        };
        Ok(NodeCore {
            write_refusal: None,
            config,
            placement,
            groups: Groups(groups),
            removed: hosted.removed,
            removed_routes: BTreeMap::new(),
            forgotten: hosted.forgotten,
            requests: BTreeMap::new(),
            pending_request_bytes: 0,
            boundary_refusals: [0; BoundaryRefusal::ALL.len()],
            deadlines: BTreeSet::new(),
            next_request_id: 1,
            next_read_ctx: 1,
            next_disk_write: 1,
            disk_inflight: BTreeMap::new(),
            round_ops: Vec::new(),
            round_durable: Vec::new(),
            outbox: BTreeMap::new(),
            out,
            tick_count: 0,
            peers_heard_ms: BTreeMap::new(),
            peers_heard_tick: BTreeMap::new(),
            peers_sent_tick: BTreeMap::new(),
            now_ms: 0,
            registry_heard: None,
            #[cfg(feature = "planted-bugs")]
            read_without_read_index: false,
            #[cfg(feature = "planted-bugs")]
            created_with_bootstrap_membership: false,
            #[cfg(feature = "planted-bugs")]
            removed_replica_serves_reads: false,
            #[cfg(feature = "planted-bugs")]
            remove_before_catch_up: false,
        })
    }

    /// This node's settings.
    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    /// Plants a bug (tests only).
    #[cfg(feature = "planted-bugs")]
    pub fn plant_bug(&mut self, bug: PlantedBug) {
        match bug {
            PlantedBug::Raft(b) => {
                for g in self.groups.iter_mut() {
                    g.raft.plant_bug(b);
                }
            }
            PlantedBug::ReadWithoutReadIndex => self.read_without_read_index = true,
            PlantedBug::CreatedReplicaWithBootstrapMembership => {
                self.created_with_bootstrap_membership = true
            }
            PlantedBug::RemovedReplicaServesReads => self.removed_replica_serves_reads = true,
            PlantedBug::RemoveBeforeCatchUp => self.remove_before_catch_up = true,
        }
    }

    /// Advances time one tick: Raft timers, request timeouts, leader spreading.
    ///
    /// Quiescence (`NodeConfig::quiesce`): an idle group stops costing heartbeats. A
    /// leader with nothing to do for a heartbeat period (every member holds every entry
    /// and was sent the commit index) is no longer ticked, so it sends nothing; its
    /// followers, hearing nothing for the group for two heartbeat periods while the
    /// leader's node is alive, stop ticking too, so they do not time out. Any message or
    /// request for the group wakes it. The failure detector is per node, not per group:
    /// nodes send each other a keepalive datagram whenever a heartbeat period passed
    /// without any other datagram, and a quiesced follower whose leader's node was silent
    /// for an election timeout wakes and, in time, elects. Not ticking only slows a
    /// replica's clock, which Raft's safety never depends on; lease reads do, so the two
    /// are not combined (checked in `NodeCore::new`).
    pub fn tick(&mut self) {
        self.tick_count += 1;
        let quiesce = self.config.quiesce;
        let hb = u64::from(self.config.raft.heartbeat_ticks);
        let election_min = u64::from(self.config.raft.election_ticks_min);
        let election_max = u64::from(self.config.raft.election_ticks_max);
        let ask_for_leader = self
            .tick_count
            .is_multiple_of(LEADERLESS_ELECTIONS_BEFORE_ASKING_ALL * election_max);
        let cluster_nodes = self.cluster_nodes();
        for g in self.groups.iter_mut() {
            if g.quiesced {
                let leader_silent = g.soft.role != Role::Leader
                    && g.soft.leader.is_none_or(|l| {
                        self.peers_heard_tick
                            .get(&l)
                            .is_none_or(|&t| self.tick_count - t >= election_min)
                    });
                let recheck = g.soft.role != Role::Leader
                    && self.tick_count - g.last_msg_tick
                        >= QUIESCED_FOLLOWER_RECHECK_ELECTIONS * election_max;
                if !leader_silent && !recheck {
                    continue;
                }
                if recheck {
                    // Awake for an election timeout: if the leader is live and quiesced,
                    // this replica's PreVote wakes it (and is refused); else it elects.
                    g.recheck_until_tick = self.tick_count + 2 * election_max;
                }
                g.wake();
            }
            if quiesce {
                // Judged before ticking: the previous `take_output` drained every output.
                if g.soft.role == Role::Leader {
                    let idle = g.raft.is_quiescent_leader()
                        && g.waiting.is_empty()
                        && g.proposed.is_empty()
                        && g.reads.is_empty()
                        && g.confirmed_reads.is_empty()
                        && g.snapshot_writes_inflight == 0;
                    g.idle_ticks = if idle { g.idle_ticks + 1 } else { 0 };
                    g.quiesced = g.idle_ticks > hb;
                } else if let Some(l) = g.soft.leader {
                    // An active leader sends each follower something every two heartbeat
                    // periods at the latest (heartbeat suppression skips at most one).
                    let leader_alive = self
                        .peers_heard_tick
                        .get(&l)
                        .is_some_and(|&t| self.tick_count - t <= 2 * hb);
                    // A learner stays awake: one whose removal it missed is known to
                    // no later leader, and must time out to ask for one.
                    let voter = g.raft.membership().voters.contains(&self.config.node);
                    g.quiesced = l != self.config.node
                        && g.soft.role == Role::Follower
                        && voter
                        && leader_alive
                        && self.tick_count >= g.recheck_until_tick
                        && g.waiting.is_empty()
                        && self.tick_count - g.last_msg_tick > 2 * hb;
                }
                if g.quiesced {
                    g.idle_ticks = 0;
                    continue;
                }
            }
            g.raft.tick();
            if ask_for_leader && g.soft.leader.is_none() && !g.raft.membership().voters.is_empty() {
                g.raft.ask_for_leader(&cluster_nodes);
            }
        }
        if quiesce && self.tick_count.is_multiple_of(hb) {
            for p in cluster_nodes.iter().filter(|&&p| p != self.config.node) {
                let quiet = self
                    .peers_sent_tick
                    .get(p)
                    .is_none_or(|&t| self.tick_count - t >= hb);
                if quiet {
                    // An empty batch: the keepalive the failure detector listens for.
                    self.outbox.entry(*p).or_default();
                }
            }
        }
        while let Some(&(deadline, id)) = self.deadlines.first() {
            if deadline > self.tick_count {
                break;
            }
            let shard = self.requests[&id].shard;
            self.reply(id, Outcome::Error(ClientError::Timeout { shard }));
        }
        if self.config.spread_leaders {
            self.spread_leaders();
        }
        for g in self.groups.ids() {
            self.drive_move(g);
        }
        self.forget_unlisted_replicas();
    }

    /// A leader that is not its shard's preferred leader hands over once the preferred one
    /// has caught up, at most once every few election timeouts.
    fn spread_leaders(&mut self) {
        let interval = 3 * u64::from(self.config.raft.election_ticks_max);
        for g in self.groups.iter_mut() {
            if g.soft.role != Role::Leader || g.sm.move_in_flight().is_some() {
                // A move hands leadership over itself; spreading could undo that.
                continue;
            }
            // The metadata group has no placement: it keeps whoever it elects.
            let Some(preferred) = g.sm.preferred_leader().or_else(|| {
                let placed = self.placement.get(g.shard.0 as usize);
                placed.map(|p| p.preferred_leader)
            }) else {
                continue;
            };
            if preferred == self.config.node
                || g.last_transfer_tick
                    .is_some_and(|t| self.tick_count < t + interval)
            {
                continue;
            }
            let st = g.raft.status();
            let caught_up = st
                .progress
                .iter()
                .any(|(n, m)| *n == preferred && *m >= st.last_index);
            if caught_up {
                g.wake();
                g.raft.transfer_leadership(preferred);
                g.last_transfer_tick = Some(self.tick_count);
            }
        }
    }

    /// Messages from a peer. Messages from a non-member, naming another sender or
    /// receiver, or for an unknown shard are dropped and counted (`status().refused`);
    /// kv-raft checks the rest of each message itself.
    pub fn on_peer_messages(&mut self, from: NodeId, msgs: Vec<GroupMessage>) {
        if !self.is_peer(from) {
            self.refuse(BoundaryRefusal::UnknownSender);
            return;
        }
        self.peers_heard_tick.insert(from, self.tick_count);
        for gm in msgs {
            if gm.msg.from != from || gm.msg.to != self.config.node {
                self.refuse(BoundaryRefusal::Misaddressed);
                continue;
            }
            if !self.groups.contains(gm.shard) && !self.create_replica(&gm) {
                // Not hosted here: an unknown shard, or one this node holds no replica of.
                self.refuse(BoundaryRefusal::UnknownShard);
                continue;
            }
            if !self.snapshot_receive_has_room(gm.shard, &gm.msg) {
                if let Some(g) = self.groups.0.get_mut(&gm.shard) {
                    g.raft.refuse(kv_raft::Refusal::SnapshotReceiveFull);
                }
                continue;
            }
            let Some(g) = self.groups.0.get_mut(&gm.shard) else {
                continue;
            };
            g.last_msg_tick = self.tick_count;
            match gm.msg.body {
                kv_raft::MessageBody::Append { commit, .. } => {
                    g.leader_heard_tick = self.tick_count;
                    g.leader_commit_told = Some(commit);
                }
                kv_raft::MessageBody::Heartbeat { .. }
                | kv_raft::MessageBody::InstallSnapshot { .. } => {
                    g.leader_heard_tick = self.tick_count;
                }
                _ => {}
            }
            if g.sm.move_in_flight().is_some_and(|m| m.to == from) {
                g.learner_heard_tick = Some(self.tick_count);
            }
            g.wake();
            g.raft.step(gm.msg);
        }
    }

    fn refuse(&mut self, reason: BoundaryRefusal) {
        let slot = &mut self.boundary_refusals[reason as usize];
        *slot = slot.saturating_add(1);
    }

    /// A snapshot transfer starts (offset 0) only if the node's reassembly buffers, with
    /// it, stay within `SNAPSHOT_RECEIVE_BYTES_MAX` (kv-raft bounds each group's by
    /// `SNAPSHOT_IMAGE_BYTES_MAX`; this bounds their sum).
    fn snapshot_receive_has_room(&self, shard: ShardId, msg: &kv_raft::Message) -> bool {
        let kv_raft::MessageBody::InstallSnapshot {
            offset: 0,
            total_len,
            ..
        } = &msg.body
        else {
            return true;
        };
        let others: u64 = self
            .groups
            .0
            .iter()
            .filter(|(s, _)| **s != shard)
            .map(|(_, other)| other.raft.incoming_snapshot_bytes())
            .sum();
        others.saturating_add(*total_len) <= SNAPSHOT_RECEIVE_BYTES_MAX
    }

    /// Remote input refused so far, by reason: the node core's boundary checks, then
    /// kv-raft's, summed over every group. Every reason is listed, zero or not.
    pub fn refusals(&self) -> Vec<(&'static str, u64)> {
        let mut raft = kv_raft::Refusals::default();
        for g in self.groups.0.values() {
            raft.add(&g.raft.refusals());
        }
        BoundaryRefusal::ALL
            .iter()
            .map(|r| (r.name(), self.boundary_refusals[*r as usize]))
            .chain(raft.iter().map(|(r, n)| (r.name(), n)))
            .collect()
    }

    /// A client request. Answered (exactly once) in some later `Output`, or in the next.
    pub fn on_client_request(&mut self, token: ClientToken, req: ClientRequest) {
        let reply_now = |core: &mut NodeCore, outcome| {
            core.out.replies.push((
                token,
                ClientReply {
                    client: req.client,
                    seq: req.seq,
                    outcome,
                },
            ));
        };
        if let Err(e) = req.op.check_limits() {
            return reply_now(self, Outcome::Error(e));
        }
        if let Some(e) = write_refusal::refused(self.write_refusal, self.config.node, &req.op) {
            return reply_now(self, Outcome::Error(e));
        }
        let shard_count = self.config.shard_count;
        let shard = match &req.op {
            Op::Status => {
                let s = self.status();
                return reply_now(self, Outcome::Status(s));
            }
            op => match op.admin_shard() {
                Some(METADATA_SHARD)
                    if matches!(op, Op::RegisterNode { .. })
                        && self.config.is_group(METADATA_SHARD) =>
                {
                    METADATA_SHARD
                }
                Some(shard) if shard.0 >= shard_count => {
                    let e = ClientError::Malformed(format!(
                        "shard {} does not exist; the cluster has {shard_count} shards",
                        shard.0
                    ));
                    return reply_now(self, Outcome::Error(e));
                }
                Some(shard) => shard,
                None => shard_for_key(op.key().expect("keyed op"), shard_count),
            },
        };
        if !self.groups.contains(shard) {
            let e = ClientError::StaleRoute {
                node: self.config.node,
                route: self.shard_route(shard),
            };
            return reply_now(self, Outcome::Error(e));
        }
        if let Op::Get { stale: true, key } = &req.op {
            let g = &self.groups[shard];
            #[cfg(feature = "planted-bugs")]
            let removal_checked = !self.removed_replica_serves_reads;
            #[cfg(not(feature = "planted-bugs"))]
            let removal_checked = true;
            let outside = !is_listed(g.raft.membership(), self.config.node);
            if removal_checked && (outside || req.epoch > g.sm.membership_epoch()) {
                // The client knows a newer replica set: this replica may have been
                // removed and not know it yet, so its state may be arbitrarily old. A
                // replica outside its own membership was created by a move and has not
                // had the leader's snapshot yet, or has just applied its removal.
                let e = ClientError::StaleRoute {
                    node: self.config.node,
                    route: self.shard_route(shard),
                };
                return reply_now(self, Outcome::Error(e));
            }
            let v = g.sm.get(key);
            return reply_now(self, Outcome::Value(v));
        }
        if self.requests.len() >= PENDING_REQUESTS_MAX {
            self.refuse(BoundaryRefusal::PendingRequestsFull);
            let e = ClientError::Overloaded {
                node: self.config.node,
                pending: self.requests.len(),
            };
            return reply_now(self, Outcome::Error(e));
        }
        let bytes = request_bytes(&req.op);
        if self.pending_request_bytes + bytes > PENDING_REQUEST_BYTES_MAX {
            self.refuse(BoundaryRefusal::PendingBytesFull);
            let e = ClientError::OverloadedBytes {
                node: self.config.node,
                pending_bytes: self.pending_request_bytes,
            };
            return reply_now(self, Outcome::Error(e));
        }
        self.pending_request_bytes += bytes;
        let id = self.next_request_id;
        self.next_request_id += 1;
        let deadline_tick = self.tick_count + u64::from(self.config.request_timeout_ticks);
        self.requests.insert(
            id,
            Request {
                token,
                req,
                shard,
                deadline_tick,
                bytes,
            },
        );
        self.deadlines.insert((deadline_tick, id));
        let g = &mut self.groups[shard];
        g.wake();
        g.waiting.push(id);
    }

    /// Refuses client writes from now on with `Unavailable` and the refusal's reason
    /// (`Some`), or accepts them again (`None`). Reads are served either way.
    pub fn refuse_writes(&mut self, refusal: Option<WriteRefusal>) {
        self.write_refusal = refusal;
    }

    /// Answers `req` with `error` without running it: a refusal the runtime decided at
    /// its boundary (a write from a read-only client key), sent with the core's replies.
    pub fn refuse_request(&mut self, token: ClientToken, req: &ClientRequest, error: ClientError) {
        self.out.replies.push((
            token,
            ClientReply {
                client: req.client,
                seq: req.seq,
                outcome: Outcome::Error(error),
            },
        ));
    }

    /// DiskWrite `id` is durable.
    pub fn on_disk_done(&mut self, id: u64) {
        let Some(done) = self.disk_inflight.remove(&id) else {
            return;
        };
        for d in done {
            match d {
                // The replica was removed meanwhile: nothing of it is waiting any more.
                Durable::Raft(g, _)
                | Durable::OwnSnapshot(g, _)
                | Durable::ReceivedSnapshot(g, _)
                    if !self.groups.contains(g) => {}
                Durable::Raft(g, wid) => self.groups[g].raft.on_persisted(wid),
                Durable::OwnSnapshot(g, snap) => {
                    let group = &mut self.groups[g];
                    group.snapshot_writes_inflight -= 1;
                    let index = snap.meta.index;
                    if index > group.snapshot_index {
                        group.snapshot_index = index;
                        group.raft.compact(snap);
                        self.round_ops.push(DiskOp::Compact { shard: g.0, index });
                    }
                }
                Durable::ReceivedSnapshot(g, index) => {
                    let group = &mut self.groups[g];
                    group.snapshot_writes_inflight -= 1;
                    if group.removed_by_snapshot == Some(index) {
                        group.removed_at = Some(index);
                    }
                    self.round_ops.push(DiskOp::Compact { shard: g.0, index });
                }
                Durable::Removed(g) => self.out.removed_shards.push(g.0),
            }
        }
    }

    /// Everything to do now. Call after every input.
    pub fn take_output(&mut self) -> Output {
        self.drive();
        for g in self.groups.ids() {
            self.route(g);
        }
        self.drive();
        if !self.round_ops.is_empty() {
            let id = self.next_disk_write;
            self.next_disk_write += 1;
            self.disk_inflight
                .insert(id, std::mem::take(&mut self.round_durable));
            self.out.disk_writes.push(DiskWrite {
                id,
                ops: std::mem::take(&mut self.round_ops),
            });
        }
        debug_assert!(self.round_durable.is_empty());
        for (to, msgs) in std::mem::take(&mut self.outbox) {
            self.peers_sent_tick.insert(to, self.tick_count);
            if msgs.is_empty() {
                self.out.datagrams.push((to, msgs)); // a keepalive
                continue;
            }
            for batch in codec::split(msgs) {
                self.out.datagrams.push((to, batch));
            }
        }
        std::mem::take(&mut self.out)
    }

    fn drive(&mut self) {
        for g in self.groups.ids() {
            while self.groups[g].raft.has_ready() {
                self.handle_ready(g);
            }
            let group = &mut self.groups[g];
            if group.removed_at.is_some() && is_listed(group.raft.membership(), self.config.node) {
                // A later change, committed with the removal (a lagging replica applying
                // a batch), added it back: it stays, with what it acknowledged.
                group.removed_at = None;
            }
            if let Some(epoch) = self.groups[g].removed_at {
                #[cfg(feature = "planted-bugs")]
                if self.removed_replica_serves_reads {
                    self.maybe_snapshot(g);
                    continue;
                }
                self.drop_replica(g, epoch);
                continue;
            }
            self.maybe_snapshot(g);
        }
    }

    fn handle_ready(&mut self, g: ShardId) {
        let rd = self.groups[g].raft.ready();
        let shard = self.groups[g].shard;
        self.out.events.extend(
            rd.events
                .into_iter()
                .map(|e| NodeEvent::from_raft(shard, e)),
        );
        if let Some(ss) = rd.soft_state {
            let old = self.groups[g].soft;
            self.groups[g].soft = ss;
            let changes = [
                (old.role != ss.role).then_some(EventKind::RoleChanged {
                    from: old.role,
                    to: ss.role,
                }),
                (old.leader != ss.leader).then_some(EventKind::LeaderChanged {
                    from: old.leader,
                    to: ss.leader,
                }),
            ];
            for kind in changes.into_iter().flatten() {
                self.out.events.push(NodeEvent {
                    shard,
                    term: ss.term,
                    kind,
                });
            }
            if old.role == Role::Leader && (ss.role != Role::Leader || ss.term != old.term) {
                self.fail_leader_requests(g, ss.leader);
            }
        }
        if let Some(w) = rd.write {
            self.persist(g, w);
        }
        for m in rd.messages {
            if m.to == self.config.node {
                continue;
            }
            self.outbox
                .entry(m.to)
                .or_default()
                .push(GroupMessage { shard, msg: m });
        }
        if let Some(snap) = rd.apply_snapshot {
            self.out.events.push(NodeEvent {
                shard,
                term: self.groups[g].soft.term,
                kind: EventKind::SnapshotInstalled {
                    index: snap.meta.index,
                },
            });
            self.restore_snapshot(g, snap);
        }
        for e in rd.committed {
            self.apply(g, e);
        }
        if rd.snapshot_wanted {
            self.provide_snapshot(g);
        }
        for rs in rd.reads {
            if let Some(ids) = self.groups[g].reads.remove(&rs.ctx) {
                self.groups[g].confirmed_reads.push((rs.index, ids));
            }
        }
        let leader = self.groups[g].soft.leader;
        for ctx in rd.failed_reads {
            if let Some(ids) = self.groups[g].reads.remove(&ctx) {
                for id in ids {
                    self.reply(id, Outcome::Error(ClientError::NotLeader { shard, leader }));
                }
            }
        }
        self.serve_confirmed_reads(g);
        let group = &mut self.groups[g];
        group.was_member = is_listed(group.raft.membership(), self.config.node);
    }

    /// Turns a Raft Write into DiskOps of this round: snapshot, entries, hard state.
    fn persist(&mut self, g: ShardId, w: kv_raft::Write) {
        let shard = g.0;
        let mut replaced_log = false;
        if let Some(snap) = &w.snapshot {
            self.round_ops.push(DiskOp::SaveSnapshot {
                shard,
                index: snap.meta.index,
                data: wal::encode_snapshot(snap),
            });
            self.groups[g].snapshot_writes_inflight += 1;
            self.round_durable
                .push(Durable::ReceivedSnapshot(g, snap.meta.index));
            let me = self.config.node;
            let group = &mut self.groups[g];
            let listed = is_listed(&snap.meta.membership, me);
            // A member that missed its removal (it was cut off) learns it from a
            // snapshot past it: removed like by the change itself, once the snapshot
            // (and so its acknowledgement) is durable.
            group.removed_by_snapshot = (group.was_member && !listed).then_some(snap.meta.index);
            // Did Raft keep a log suffix past the snapshot? If not, the stored one is void.
            replaced_log =
                w.entries.is_empty() && self.groups[g].raft.status().last_index == snap.meta.index;
            if replaced_log {
                self.round_ops.push(DiskOp::Append(wal::entries_record(
                    shard,
                    snap.meta.index + 1,
                    Vec::new(),
                )));
            }
        }
        if let Some(first) = w.entries.first().map(|e| e.index) {
            debug_assert!(!replaced_log);
            self.round_ops
                .push(DiskOp::Append(wal::entries_record(shard, first, w.entries)));
        }
        if let Some(hs) = &w.hard_state {
            self.round_ops
                .push(DiskOp::Append(wal::hard_state_record(shard, hs)));
        }
        self.round_durable.push(Durable::Raft(g, w.id));
    }

    fn restore_snapshot(&mut self, g: ShardId, snap: Snapshot) {
        let sessions_max = self.config.sessions_max();
        let group = &mut self.groups[g];
        // kv-raft persisted and handed out this snapshot only after
        // `sm::snapshot_image_restorable` accepted it.
        let sm = StateMachine::from_image(&snap.data, sessions_max)
            .unwrap_or_else(|e| panic!("shard {g}: a checked snapshot image fails: {e}"));
        assert_eq!(
            sm.applied_index(),
            snap.meta.index,
            "snapshot image and metadata disagree"
        );
        group.sm = sm;
        group.applied_bytes_since_snapshot = 0;
        group.snapshot_index = group.snapshot_index.max(snap.meta.index);
        let stale: Vec<u64> = group
            .proposed
            .range(..=snap.meta.index)
            .map(|(i, _)| *i)
            .collect();
        let shard = group.shard;
        let leader = group.soft.leader;
        for i in stale {
            let (_, ids) = self.groups[g].proposed.remove(&i).expect("listed");
            for id in ids {
                self.reply(id, Outcome::Error(ClientError::NotLeader { shard, leader }));
            }
        }
    }

    fn apply(&mut self, g: ShardId, e: Entry) {
        self.report_applied(self.groups[g].shard, &e);
        let me = self.config.node;
        let group = &mut self.groups[g];
        group.applied_bytes_since_snapshot += e.data.len() as u64;
        let moving = group.sm.move_in_flight();
        let outcomes = match e.kind {
            EntryKind::Command => group.sm.apply_entry(e.index, e.term, &e.data),
            EntryKind::Noop => {
                group.sm.apply_empty(e.index, e.term);
                Vec::new()
            }
            EntryKind::ConfChange(change) => {
                group.sm.apply_membership_change(e.index, e.term);
                if change == ConfChange::RemoveNode(me) {
                    group.removed_at = Some(e.index);
                }
                Vec::new()
            }
        };
        let move_ended = moving.is_some() && group.sm.move_in_flight() != moving;
        let shard = group.shard;
        let leader = group.soft.leader;
        // Batches proposed at or below this index either are this entry or were lost.
        let mut answered = Vec::new();
        while let Some((&i, _)) = group.proposed.first_key_value() {
            if i > e.index {
                break;
            }
            let (term, ids) = group.proposed.pop_first().expect("present").1;
            answered.push((i, term, ids));
        }
        for (i, term, ids) in answered {
            if i == e.index && term == e.term && outcomes.len() == ids.len() {
                for (id, outcome) in ids.into_iter().zip(outcomes.iter()) {
                    if self.is_move_in_flight_request(g, id) {
                        self.groups[g].move_waiters.push(id);
                        continue;
                    }
                    self.reply(id, outcome.clone());
                }
            } else {
                for id in ids {
                    self.reply(id, Outcome::Error(ClientError::NotLeader { shard, leader }));
                }
            }
        }
        if move_ended {
            self.move_ended(g);
        }
    }

    fn serve_confirmed_reads(&mut self, g: ShardId) {
        let applied = self.groups[g].sm.applied_index();
        let (ready, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.groups[g].confirmed_reads)
            .into_iter()
            .partition(|(index, _)| *index <= applied);
        self.groups[g].confirmed_reads = later;
        for (_, ids) in ready {
            for id in ids {
                self.serve_get(g, id);
            }
        }
    }

    fn serve_get(&mut self, g: ShardId, id: u64) {
        let Some(r) = self.requests.get(&id) else {
            return;
        };
        let key = r.req.op.key().expect("gets have keys");
        let v = self.groups[g].sm.get(key);
        self.reply(id, Outcome::Value(v));
    }

    /// Leadership ended: nothing pending on it can be promised any more.
    fn fail_leader_requests(&mut self, g: ShardId, leader: Option<NodeId>) {
        let group = &mut self.groups[g];
        let shard = group.shard;
        let mut ids: Vec<u64> = std::mem::take(&mut group.proposed)
            .into_values()
            .flat_map(|(_, ids)| ids)
            .collect();
        ids.extend(std::mem::take(&mut group.reads).into_values().flatten());
        ids.append(&mut group.move_waiters);
        group.catch_up_since = None;
        group.move_end_proposed = None;
        for id in ids {
            self.reply(id, Outcome::Error(ClientError::NotLeader { shard, leader }));
        }
    }

    /// Sends this round's requests of group `g` where they belong: proposals and reads
    /// on a leader, redirects elsewhere; held while no leader is known.
    fn route(&mut self, g: ShardId) {
        let ids = std::mem::take(&mut self.groups[g].waiting);
        if ids.is_empty() {
            return;
        }
        let me = self.config.node;
        let shard = self.groups[g].shard;
        let soft = self.groups[g].soft;
        let mut writes: Vec<(u64, WriteCommand)> = Vec::new();
        let mut reads: Vec<u64> = Vec::new();
        let mut refused: Vec<(u64, NodeId)> = Vec::new();
        let mut moves_refused: Vec<(u64, ClientError)> = Vec::new();
        for id in ids {
            let Some(r) = self.requests.get(&id) else {
                continue;
            };
            if soft.role == Role::Leader {
                match WriteOp::from_op(&r.req.op) {
                    Some(WriteOp::PreferLeader { node }) if !self.is_voter(g, node) => {
                        refused.push((id, node));
                    }
                    Some(WriteOp::BeginMove { from, to, .. }) => {
                        let sm = &self.groups[g].sm;
                        let in_flight = sm.move_in_flight();
                        let session = (r.req.client, r.req.seq);
                        if in_flight.is_some_and(|m| (m.client, m.seq) == session) {
                            // A retry of the move in flight: answered when it ends.
                            self.groups[g].move_waiters.push(id);
                            continue;
                        }
                        let route = self.shard_route(shard);
                        // A retry of a move that ended is answered from its session.
                        let checked = match sm.saved_outcome(session.0, session.1) {
                            Some(_) => Ok(()),
                            None => {
                                let nodes = self.cluster_nodes();
                                moves::check_move(from, to, &nodes, &route, in_flight)
                            }
                        };
                        match checked {
                            Ok(()) => writes.push((
                                id,
                                WriteCommand {
                                    client: r.req.client,
                                    seq: r.req.seq,
                                    op: WriteOp::BeginMove { shard, from, to },
                                },
                            )),
                            Err(reason) => moves_refused.push((
                                id,
                                ClientError::MoveRefused {
                                    shard,
                                    from,
                                    to,
                                    reason,
                                },
                            )),
                        }
                    }
                    Some(op) => writes.push((
                        id,
                        WriteCommand {
                            client: r.req.client,
                            seq: r.req.seq,
                            op,
                        },
                    )),
                    None => reads.push(id),
                }
            } else {
                self.redirect_or_hold(g, id, soft.leader.filter(|l| *l != me), shard);
            }
        }
        for (id, e) in moves_refused {
            self.reply(id, Outcome::Error(e));
        }
        for (id, node) in refused {
            let voters: Vec<String> = (self.groups[g].raft.status().membership.voters)
                .iter()
                .map(|v| v.to_string())
                .collect();
            let e = ClientError::Malformed(format!(
                "{node} is not a voter of shard {} (voters: {})",
                shard.0,
                voters.join(", ")
            ));
            self.reply(id, Outcome::Error(e));
        }
        // One entry per ENTRY_BYTES_MAX of writes: an entry must fit one Append datagram.
        let mut batch: Vec<(u64, WriteCommand)> = Vec::new();
        let mut batch_bytes = 0usize;
        for (id, write) in writes {
            let bytes = postcard::experimental::serialized_size(&write).expect("a write encodes");
            if !batch.is_empty() && batch_bytes + bytes > ENTRY_BYTES_MAX {
                self.propose_batch(g, std::mem::take(&mut batch));
                batch_bytes = 0;
            }
            batch_bytes += bytes;
            batch.push((id, write));
        }
        if !batch.is_empty() {
            self.propose_batch(g, batch);
        }
        if !reads.is_empty() {
            #[cfg(feature = "planted-bugs")]
            if self.read_without_read_index {
                for id in reads {
                    self.serve_get(g, id);
                }
                return;
            }
            let ctx = self.next_read_ctx;
            self.next_read_ctx += 1;
            match self.groups[g].raft.read_index(ctx) {
                Ok(()) => {
                    self.groups[g].reads.insert(ctx, reads);
                }
                Err(e) => self.refused(g, reads, e),
            }
        }
    }

    fn propose_batch(&mut self, g: ShardId, writes: Vec<(u64, WriteCommand)>) {
        let (ids, writes): (Vec<u64>, Vec<WriteCommand>) = writes.into_iter().unzip();
        let count = writes.len() as u64;
        let data = CommandBatch { writes }.encode();
        match self.groups[g].raft.propose(data) {
            Ok((index, term)) => {
                self.report_proposed(self.groups[g].shard, index, &ids);
                self.groups[g].proposed_writes += count;
                self.groups[g].proposed.insert(index, (term, ids));
            }
            Err(e) => self.refused(g, ids, e),
        }
    }

    fn refused(&mut self, g: ShardId, ids: Vec<u64>, e: ProposeError) {
        let shard = self.groups[g].shard;
        let me = self.config.node;
        let leader = match e {
            ProposeError::NotLeader { leader } => leader.filter(|l| *l != me),
            // A transfer (or anything transient) ends soon: try again next round.
            _ => None,
        };
        for id in ids {
            self.redirect_or_hold(g, id, leader, shard);
        }
    }

    /// Redirects request `id` to `leader`, or holds it while no leader is known. A client
    /// that routed by an older replica set gets the current one with the hint.
    fn redirect_or_hold(&mut self, g: ShardId, id: u64, leader: Option<NodeId>, shard: ShardId) {
        let Some(l) = leader else {
            self.groups[g].waiting.push(id);
            return;
        };
        let routed_by = self.requests.get(&id).map_or(0, |r| r.req.epoch);
        let e = if routed_by < self.groups[g].sm.membership_epoch() {
            ClientError::StaleRoute {
                node: self.config.node,
                route: self.shard_route(shard),
            }
        } else {
            ClientError::NotLeader {
                shard,
                leader: Some(l),
            }
        };
        self.reply(id, Outcome::Error(e));
    }

    fn is_voter(&self, g: ShardId, node: NodeId) -> bool {
        self.groups[g]
            .raft
            .status()
            .membership
            .voters
            .contains(&node)
    }

    /// This node's view of where `shard` lives: its own replica's membership if it hosts
    /// one, else the bootstrap placement.
    pub fn shard_route(&self, shard: ShardId) -> ShardRoute {
        match self.groups.0.get(&shard) {
            Some(g) => {
                let m = g.raft.status().membership;
                ShardRoute {
                    shard,
                    epoch: g.sm.membership_epoch(),
                    voters: m.voters,
                    learners: m.learners,
                    leader: g.soft.leader,
                }
            }
            None if self.removed_routes.contains_key(&shard) => self.removed_routes[&shard].clone(),
            None if shard == METADATA_SHARD => ShardRoute {
                shard,
                epoch: 0,
                voters: self.config.metadata_voters.clone(),
                learners: Vec::new(),
                leader: None,
            },
            None => ShardRoute {
                shard,
                epoch: 0,
                voters: self.placement[shard.0 as usize].replicas.clone(),
                learners: Vec::new(),
                leader: None,
            },
        }
    }

    fn maybe_snapshot(&mut self, g: ShardId) {
        let group = &mut self.groups[g];
        let applied = group.sm.applied_index();
        let log_small = applied <= group.snapshot_index + self.config.snapshot_threshold_entries
            && group.applied_bytes_since_snapshot < SNAPSHOT_LOG_BYTES_MAX;
        if group.snapshot_writes_inflight > 0 || applied <= group.snapshot_index || log_small {
            return;
        }
        self.take_snapshot(g);
    }

    /// Answers `Ready::snapshot_wanted` (kv-raft keeps a snapshot image only while a
    /// follower takes it) with an image of the shard's applied state, from memory: no
    /// disk write or read on the way to a lagging follower.
    fn provide_snapshot(&mut self, g: ShardId) {
        let group = &mut self.groups[g];
        let snap = Snapshot {
            meta: group.raft.snapshot_meta(group.sm.applied_index()),
            data: group.sm.to_image(),
        };
        group.raft.provide_snapshot(snap);
    }

    /// Writes a snapshot of shard `g` at its applied index; Raft compacts once durable.
    fn take_snapshot(&mut self, g: ShardId) {
        let group = &mut self.groups[g];
        let applied = group.sm.applied_index();
        group.applied_bytes_since_snapshot = 0;
        // The membership as of `applied`, not Raft's current one: a change committed
        // but not yet applied would otherwise be in the snapshot and not in its image,
        // and `compact` refuses a meta that disagrees with the log.
        let snap = Snapshot {
            meta: group.raft.snapshot_meta(applied),
            data: group.sm.to_image(),
        };
        group.snapshot_writes_inflight += 1;
        self.round_ops.push(DiskOp::SaveSnapshot {
            shard: g.0,
            index: applied,
            data: wal::encode_snapshot(&snap),
        });
        self.round_durable.push(Durable::OwnSnapshot(g, snap));
    }

    /// Answers request `id` unless it was answered already: the one place replies are made.
    fn reply(&mut self, id: u64, outcome: Outcome) {
        let Some(r) = self.requests.remove(&id) else {
            return;
        };
        self.pending_request_bytes -= r.bytes;
        self.deadlines.remove(&(r.deadline_tick, id));
        self.out.replies.push((
            r.token,
            ClientReply {
                client: r.req.client,
                seq: r.req.seq,
                outcome,
            },
        ));
    }

    /// The status table (also served to `Op::Status`).
    pub fn status(&self) -> NodeStatus {
        // The metadata group is no shard of the keyspace: status shows its registry.
        let shards = self
            .groups
            .iter()
            .filter(|g| g.shard != METADATA_SHARD)
            .map(|g| {
                let st = g.raft.status();
                ShardStatus {
                    shard: g.shard,
                    role: st.role,
                    term: st.term,
                    leader: st.leader,
                    commit: st.commit,
                    applied: g.sm.applied_index(),
                    log_entries: st.last_index.saturating_sub(st.snapshot_index),
                    snapshot_index: st.snapshot_index,
                    keys: g.sm.keys() as u64,
                    epoch: g.sm.membership_epoch(),
                    replicas: st.progress,
                }
            })
            .collect();
        let peers = self
            .cluster_nodes()
            .into_iter()
            .filter(|p| *p != self.config.node)
            .map(|p| {
                let since = self
                    .peers_heard_ms
                    .get(&p)
                    .map(|t| self.now_ms.saturating_sub(*t));
                (p, since)
            })
            .collect();
        NodeStatus {
            node: self.config.node,
            shard_count: self.config.shard_count,
            shards,
            peers,
            refused: self
                .refusals()
                .into_iter()
                .map(|(reason, n)| (reason.to_string(), n))
                .collect(),
            drops: Vec::new(),
            counters: Vec::new(),
            nodes: self.node_addrs(),
            routes: (0..self.config.shard_count)
                .map(|s| self.shard_route(ShardId(s)))
                .collect(),
            registry: self.registry().map(Box::new),
        }
    }

    /// True if this node holds a replica of `shard`. The per-shard accessors below
    /// panic for a shard not hosted here.
    pub fn hosts(&self, shard: ShardId) -> bool {
        self.groups.contains(shard)
    }

    /// The shards this node holds a replica of, ascending.
    pub fn hosted_shards(&self) -> Vec<ShardId> {
        self.groups.ids()
    }

    /// Raft's view of one shard (for invariant checks).
    pub fn raft_status(&self, shard: ShardId) -> kv_raft::Status {
        self.groups[shard].raft.status()
    }

    /// The cheap per-shard view the simulator checks after every step (`None`: the shard
    /// is not hosted here).
    pub fn group_view(&self, shard: ShardId) -> Option<GroupView> {
        self.groups.0.get(&shard).map(|g| GroupView {
            role: g.soft.role,
            term: g.soft.term,
            leader: g.soft.leader,
            applied: g.sm.applied_index(),
            proposed_writes: g.proposed_writes,
        })
    }

    /// The known leader of `shard` (`None` also when the shard is not hosted here).
    pub fn leader_of(&self, shard: ShardId) -> Option<NodeId> {
        self.groups.0.get(&shard).and_then(|g| g.soft.leader)
    }

    /// Records that a datagram from `peer` arrived at wall time `now_ms` (for status).
    /// Only members are recorded: sender ids are remote input.
    pub fn note_peer_heard(&mut self, peer: NodeId, now_ms: u64) {
        self.now_ms = self.now_ms.max(now_ms);
        if self.is_peer(peer) {
            self.peers_heard_ms.insert(peer, now_ms);
        }
    }

    /// Sets the wall time status reports measure against.
    pub fn set_now_ms(&mut self, now_ms: u64) {
        self.now_ms = self.now_ms.max(now_ms);
    }

    /// Requests accepted and not yet answered.
    pub fn pending_requests(&self) -> usize {
        self.requests.len()
    }

    /// Key and value bytes of the requests accepted and not yet answered.
    pub fn pending_request_bytes(&self) -> usize {
        self.pending_request_bytes
    }

    /// (applied index, state digest) of one shard's state machine (`None`: not hosted).
    pub fn state_digest(&self, shard: ShardId) -> Option<(u64, u64)> {
        let sm = &self.groups.0.get(&shard)?.sm;
        Some((sm.applied_index(), sm.digest()))
    }
}

/// True if `node` is a voter or learner of `membership`.
fn is_listed(membership: &kv_raft::Membership, node: NodeId) -> bool {
    membership.voters.contains(&node) || membership.learners.contains(&node)
}

/// A replica without a leader asks every cluster node outside its membership for one
/// every this many (longest) election timeouts: see `kv_raft::Raft::ask_for_leader`.
const LEADERLESS_ELECTIONS_BEFORE_ASKING_ALL: u64 = 4;

/// A quiesced follower that heard nothing for its group for this many (longest) election
/// timeouts wakes for one, although its leader's node is alive: that node may have
/// stopped leading the group without this replica hearing it (it stepped down after
/// committing its own removal, or removed this replica and stopped sending to it), and
/// quiescence would otherwise trust it forever. At a 10 ms tick and 200 ms elections, a
/// wake every 6 s per idle group (a wake every 2 s added enough elections to split more
/// votes under fsyncs slower than the election timeout).
const QUIESCED_FOLLOWER_RECHECK_ELECTIONS: u64 = 30;
