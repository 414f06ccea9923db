//! [`NodeCore`]: one node's Raft groups, state machines and client requests, driven by
//! inputs (tick, peer messages, client requests, disk completions) and drained as
//! [`Output`]. Every Raft `Ready` is handled here in the order kv-raft prescribes:
//! persist (as DiskOps of one group-committed DiskWrite), send, apply, serve reads.

mod group;
mod metadata;
mod moving;
mod outbox;
mod progress;
mod ready;
mod requests;
mod time;
mod views;

use crate::codec::frame::{FrameIn, Record};
use crate::codec::{self, GroupMessage, PeerBatch};
use crate::config::NodeConfig;
use crate::events::NodeEvent;
use crate::placement::ShardPlacement;
use crate::wal::{self, RecoveryError};
use crate::write_refusal::WriteRefusal;
use bytes::Bytes;
use group::{Durable, Group, Groups};
use kv_raft::{Entry, Role};
use kv_shared::config::LeaderPolicy;
use kv_shared::hashing::SeededState;
use kv_shared::limits::{SNAPSHOT_IMAGE_BYTES_MAX, SNAPSHOT_RECEIVE_BYTES_MAX};
use kv_shared::proto::{ClientError, ClientReply, ClientRequest, Outcome, ShardRoute};
use kv_shared::registry::Registry;
use kv_shared::wire::WireError;
use kv_shared::{NodeId, ShardId};
pub(crate) use outbox::Room;
use outbox::{take_sized, Outbox};
use std::collections::{BTreeMap, HashMap, VecDeque};
use xxhash_rust::xxh64::Xxh64;

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
    /// The shard's replica left this node and its tombstone is durable (in an earlier
    /// DiskWrite): delete its snapshot files, and let compaction drop the segments only
    /// its records keep (`Storage::remove_group`). Recovery ignores them already; this
    /// only frees the space. In write order, so it never runs after a later life of the
    /// replica wrote (it is not emitted once the shard is hosted again).
    RemoveGroup {
        /// The shard.
        shard: u32,
    },
    /// A replica of the shard is created again after its removal: before the new life's
    /// first record, make the log durable and delete every snapshot file of the earlier
    /// life (`Storage::take_back_group`), so that no crash can bring one back as the new
    /// life's.
    TakeBackGroup {
        /// The shard.
        shard: u32,
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
    /// Only log writes of shards this node leads, whose followers make a quorum without
    /// it ([`kv_raft::Write::deferrable`]): nothing waits for this fsync but the leader's
    /// own count, so the runtime may put it off for a short, bounded time (and sync it
    /// with the next write that is not deferrable). Writes are still reported in id
    /// order.
    pub deferrable: bool,
}

/// What the runtime must do after an input.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Output {
    /// Per destination, all groups batched; each batch fits one datagram with
    /// `codec::encode_peer`.
    pub datagrams: Vec<(NodeId, PeerBatch)>,
    /// Storage work.
    pub disk_writes: Vec<DiskWrite>,
    /// Answers to client requests (exactly one per request).
    pub replies: Vec<(ClientToken, ClientReply)>,
    /// What happened in the shards, for the runtime's log and metrics.
    pub events: Vec<NodeEvent>,
    /// Entries applied, in the order applied (empty if the runtime turned them off with
    /// [`NodeCore::set_applied_reports`]).
    pub applied: Vec<AppliedEntry>,
    /// Client requests proposed as leader, with the index of their entry (empty if the
    /// runtime turned them off with [`NodeCore::set_applied_reports`]).
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
    /// A node recreates a shard it left on any leader message for it (a heartbeat or
    /// append of a leader still replicating to it as a departing member, a snapshot from
    /// before its removal) instead of only on a snapshot that proves it was added back.
    RecreateOnStaleAdd,
    /// A follower serves the gets its leader confirmed at once, from whatever it has
    /// applied, without waiting to apply the confirmed read index.
    FollowerReadBeforeApply,
}

/// A client request not yet answered.
struct Request {
    token: ClientToken,
    req: ClientRequest,
    shard: ShardId,
    /// What it counts against `PENDING_REQUEST_BYTES_MAX`.
    bytes: usize,
}

/// The sans-I/O node: see the crate docs.
pub struct NodeCore {
    config: NodeConfig,
    /// Bootstrap replica sets and preferred leaders of every shard of the cluster.
    placement: Vec<ShardPlacement>,
    groups: Groups,
    /// Shards whose replica here was removed, with their tombstones: they are never
    /// served or created again (their tombstones are in the WAL).
    removed: BTreeMap<ShardId, wal::Tombstone>,
    /// The replica set each removed shard had when its replica here applied the removal
    /// (since this process started): what `StaleRoute` answers carry.
    removed_routes: BTreeMap<ShardId, ShardRoute>,
    /// Shards whose created replica here was forgotten, with its term then (where a
    /// replica created again starts).
    forgotten: BTreeMap<ShardId, u64>,
    /// Hashed: every request is inserted, looked up a few times and removed once, and
    /// only `NodeCore::release_replica` walks them (in id order, after sorting).
    requests: HashMap<u64, Request, SeededState>,
    /// Sum of `Request::bytes` over `requests`.
    pending_request_bytes: usize,
    /// Why client writes are refused now, if they are ([`NodeCore::refuse_writes`]).
    write_refusal: Option<WriteRefusal>,
    /// Remote input refused at the boundary, by reason (see `BoundaryRefusal::ALL`).
    boundary_refusals: [u64; BoundaryRefusal::ALL.len()],
    /// `(deadline_tick, id)` of requests in the order admitted, which is deadline order
    /// (every request gets the same timeout). Answered requests are not taken out here:
    /// `tick` drops them when they reach the front, so a reply costs no search.
    deadlines: VecDeque<(u64, u64)>,
    next_request_id: u64,
    next_read_ctx: u64,
    next_disk_write: u64,
    disk_inflight: BTreeMap<u64, Vec<Durable>>,
    /// Ops of the round being assembled.
    round_ops: ready::RoundOps,
    round_durable: Vec<Durable>,
    outbox: Outbox,
    /// The records of the frame of the peer datagram being taken in, kept from datagram
    /// to datagram with their room.
    frame_in: FrameIn,
    /// One Append's entries on their way from `frame_in` into a group's log, kept
    /// likewise.
    append_entries: Vec<Entry>,
    /// Every group whose `waiting` list got a request since the last flush routed it
    /// (a superset of those with requests waiting): a flush routes these instead of
    /// looking through every hosted group for requests. A group is listed when its list
    /// stops being empty, so at most once per flush (a group emptied and refilled by
    /// other means may be listed twice; a flush sorts and dedups).
    to_route: Vec<ShardId>,
    /// `take_output`'s list of the groups it routes, kept (empty) between flushes.
    routed_buf: Vec<ShardId>,
    /// The room the next `Output`'s datagrams, replies and proposed requests start with.
    out_room: [Room; 3],
    out: Output,
    /// `handle_ready`'s `Ready`, kept so that its vectors keep their room (`None` only
    /// while one is being handled).
    ready_buf: Option<Box<kv_raft::Ready>>,
    /// `apply`'s outcomes of one entry, kept likewise.
    outcomes_buf: Vec<Outcome>,
    /// `route`'s lists of one group's requests, of its writes and of its gets, kept
    /// likewise.
    route_ids: Vec<u64>,
    route_writes: Vec<u64>,
    route_read_ids: Vec<u64>,
    /// Emptied lists of request ids of applied batches, for the next proposals
    /// (`NodeCore::ids_vec`).
    ids_pool: Vec<Vec<u64>>,
    /// The entry being encoded, kept likewise, and the blocks its payload is copied to.
    entry_buf: Vec<u8>,
    entry_arena: requests::EntryArena,
    /// Whether [`Output::applied`] and [`Output::proposed`] are filled
    /// ([`NodeCore::set_applied_reports`]).
    applied_reports: bool,
    /// Whether a leader serves a lease read on its arrival
    /// ([`NodeCore::set_reads_on_arrival`]).
    reads_on_arrival: bool,
    /// Whether a follower leaves the applying of committed commands to
    /// [`NodeCore::apply_deferred`] ([`NodeCore::set_defer_follower_applies`]).
    defer_follower_applies: bool,
    /// The groups holding deferred entries, each once.
    deferred_groups: Vec<ShardId>,
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
    /// The newest metadata group route heard from outside this node (for a node that
    /// holds no metadata replica), via [`NodeCore::learn_metadata_route`].
    metadata_route_heard: Option<ShardRoute>,
    #[cfg(feature = "planted-bugs")]
    read_without_read_index: bool,
    #[cfg(feature = "planted-bugs")]
    created_with_bootstrap_membership: bool,
    #[cfg(feature = "planted-bugs")]
    removed_replica_serves_reads: bool,
    #[cfg(feature = "planted-bugs")]
    remove_before_catch_up: bool,
    #[cfg(feature = "planted-bugs")]
    recreate_on_stale_add: bool,
    #[cfg(feature = "planted-bugs")]
    follower_read_before_apply: bool,
    /// Routed groups `take_output` drained after routing, for the tests of which it skips.
    #[cfg(test)]
    routed_drained: u64,
}

impl NodeCore {
    /// Builds the node from its settings and what its storage recovered.
    pub fn new(
        config: NodeConfig,
        recovered: kv_storage::Recovered,
    ) -> Result<NodeCore, RecoveryError> {
        assert!(config.shard_count > 0, "a node hosts at least one shard");
        if config.quiesce {
            // Quiescence pauses Raft clocks, which a lease would count as time: a group
            // forgets its lease when it wakes (`kv_raft::Raft::wake`), so lease reads
            // combine with it.
            assert!(
                config.raft.election_ticks_min > 2 * config.raft.heartbeat_ticks + 1,
                "quiescence needs elections slower than two heartbeat periods"
            );
        }
        // A node outside the bootstrap members (one that joined) learns its peers from a
        // registry: the metadata group's, or, without one (`NodeConfig::for_test`, the
        // simulator), the one its driver hands it (`NodeCore::learn_registry`).
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
            let mut group = Group::new(&config, shard, r)?;
            group.sealed = hosted
                .rejoined
                .get(&shard)
                .copied()
                .filter(|t| group.snapshot_index <= t.epoch);
            groups.insert(shard, group);
        }
        // A removed shard's files may have outlived a crash before their deletion; its
        // tombstone is durable (recovered), so they can go now.
        let round_ops = hosted
            .removed
            .keys()
            .map(|s| DiskOp::RemoveGroup { shard: s.0 })
            .collect();
        Ok(NodeCore {
            write_refusal: None,
            config,
            placement,
            groups: Groups::new(groups),
            removed: hosted.removed,
            removed_routes: BTreeMap::new(),
            forgotten: hosted.forgotten,
            requests: HashMap::default(),
            pending_request_bytes: 0,
            boundary_refusals: [0; BoundaryRefusal::ALL.len()],
            deadlines: VecDeque::new(),
            next_request_id: 1,
            next_read_ctx: 1,
            next_disk_write: 1,
            disk_inflight: BTreeMap::new(),
            round_ops,
            round_durable: Vec::new(),
            outbox: Outbox::default(),
            frame_in: FrameIn::default(),
            append_entries: Vec::new(),
            to_route: Vec::new(),
            routed_buf: Vec::new(),
            out_room: Default::default(),
            out: Output::default(),
            ready_buf: None,
            outcomes_buf: Vec::new(),
            route_ids: Vec::new(),
            route_writes: Vec::new(),
            route_read_ids: Vec::new(),
            ids_pool: Vec::new(),
            entry_buf: Vec::new(),
            entry_arena: requests::EntryArena::default(),
            applied_reports: true,
            reads_on_arrival: true,
            defer_follower_applies: false,
            deferred_groups: Vec::new(),
            tick_count: 0,
            peers_heard_ms: BTreeMap::new(),
            peers_heard_tick: BTreeMap::new(),
            peers_sent_tick: BTreeMap::new(),
            now_ms: 0,
            registry_heard: None,
            metadata_route_heard: None,
            #[cfg(feature = "planted-bugs")]
            read_without_read_index: false,
            #[cfg(feature = "planted-bugs")]
            created_with_bootstrap_membership: false,
            #[cfg(feature = "planted-bugs")]
            removed_replica_serves_reads: false,
            #[cfg(feature = "planted-bugs")]
            remove_before_catch_up: false,
            #[cfg(feature = "planted-bugs")]
            recreate_on_stale_add: false,
            #[cfg(feature = "planted-bugs")]
            follower_read_before_apply: false,
            #[cfg(test)]
            routed_drained: 0,
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
            PlantedBug::FollowerReadBeforeApply => self.follower_read_before_apply = true,
            PlantedBug::RemoveBeforeCatchUp => self.remove_before_catch_up = true,
            PlantedBug::RecreateOnStaleAdd => self.recreate_on_stale_add = true,
        }
    }

    /// Messages from a peer. Messages from a non-member, naming another sender or
    /// receiver, or for an unknown shard are dropped and counted (`status().refused`);
    /// kv-raft checks the rest of each message itself.
    pub fn on_peer_messages(&mut self, from: NodeId, msgs: Vec<GroupMessage>) {
        if !self.admit_peer(from) {
            return;
        }
        for gm in msgs {
            self.take_message(from, gm);
        }
    }

    /// The payload of a peer datagram (its header and tag checked by the runtime): its
    /// frame's records, then its messages, each as [`NodeCore::on_peer_messages`] takes
    /// a message. A payload that does not decode is refused whole, before anything in
    /// it is taken.
    pub fn on_peer_payload(&mut self, from: NodeId, payload: &[u8]) -> Result<(), WireError> {
        let mut frame = std::mem::take(&mut self.frame_in);
        let taken = codec::decode_peer_into(payload, &mut frame).map(|msgs| {
            if self.admit_peer(from) {
                self.take_frame(from, &mut frame);
                for gm in msgs {
                    self.take_message(from, gm);
                }
            }
        });
        frame.records.clear();
        frame.entries.clear();
        self.frame_in = frame;
        taken
    }

    /// False (and counted) for a datagram from a node that is not a member.
    fn admit_peer(&mut self, from: NodeId) -> bool {
        if !self.is_peer(from) {
            self.refuse(BoundaryRefusal::UnknownSender);
            return false;
        }
        self.peers_heard_tick.insert(from, self.tick_count);
        true
    }

    /// The records of a frame from `from`: each group's Appends go into its log from the
    /// kept vectors, and its acks step it (`Raft::step_ack`), without a message built
    /// for either; a
    /// record for a group not hosted here, or sealed, takes the way of its message.
    fn take_frame(&mut self, from: NodeId, frame: &mut FrameIn) {
        if frame.records.is_empty() {
            return;
        }
        let me = self.config.node;
        if frame.to != me {
            for _ in 0..frame.records.len() {
                self.refuse(BoundaryRefusal::Misaddressed);
            }
            return;
        }
        let mut entries = std::mem::take(&mut self.append_entries);
        let mut carried = frame.entries.drain(..);
        for &record in &frame.records {
            match record {
                Record::Append {
                    shard,
                    term,
                    prev_index,
                    prev_term,
                    commit,
                    entries: count,
                } => {
                    entries.extend(carried.by_ref().take(count));
                    let header = kv_raft::AppendHeader {
                        from,
                        to: me,
                        term,
                        prev_index,
                        prev_term,
                        commit,
                    };
                    self.take_append(shard, header, &mut entries);
                }
                Record::Ack { shard, term, index } => match self.groups.get_mut(shard) {
                    Some(g) => {
                        g.heard(from, self.tick_count, Heard::Member);
                        g.raft.step_ack(from, me, term, index);
                    }
                    None => {
                        let body = codec::frame::ack(index);
                        let msg = kv_raft::Message {
                            from,
                            to: me,
                            term,
                            body,
                        };
                        self.take_message(from, GroupMessage { shard, msg });
                    }
                },
            }
        }
        drop(carried);
        self.append_entries = entries;
    }

    /// An Append record: into the group's log from `entries`, which it leaves empty.
    fn take_append(
        &mut self,
        shard: ShardId,
        header: kv_raft::AppendHeader,
        entries: &mut Vec<Entry>,
    ) {
        match self.groups.get_mut(shard) {
            Some(g) if g.sealed.is_none() => {
                g.heard(
                    header.from,
                    self.tick_count,
                    Heard::LeaderCommit(header.commit),
                );
                g.raft.step_append(header, entries);
            }
            _ => {
                // Not hosted (a replica to create, a tombstone) or sealed: rare, and the
                // message's way decides.
                let body = kv_raft::MessageBody::Append {
                    prev_index: header.prev_index,
                    prev_term: header.prev_term,
                    entries: std::mem::take(entries),
                    commit: header.commit,
                };
                let msg = kv_raft::Message {
                    from: header.from,
                    to: header.to,
                    term: header.term,
                    body,
                };
                self.take_message(header.from, GroupMessage { shard, msg });
            }
        }
    }

    /// One message from `from`, a member.
    fn take_message(&mut self, from: NodeId, gm: GroupMessage) {
        if gm.msg.from != from || gm.msg.to != self.config.node {
            self.refuse(BoundaryRefusal::Misaddressed);
            return;
        }
        if !self.groups.contains(gm.shard) && self.answer_from_tombstone(&gm) {
            return;
        }
        if self.sealed_refuses(&gm) {
            return;
        }
        if !self.groups.contains(gm.shard) && !self.create_replica(&gm) {
            // Not hosted here: an unknown shard, or one this node holds no replica of.
            self.refuse(BoundaryRefusal::UnknownShard);
            return;
        }
        if !self.snapshot_receive_has_room(gm.shard, &gm.msg) {
            if let Some(g) = self.groups.get_mut(gm.shard) {
                g.raft.refuse(kv_raft::Refusal::SnapshotReceiveFull);
            }
            return;
        }
        let Some(g) = self.groups.get_mut(gm.shard) else {
            return;
        };
        let election_min = u64::from(self.config.raft.election_ticks_min);
        let rechecking = self.tick_count < g.recheck_until_tick;
        let trusts_its_leader = (g.quiesced || rechecking)
            && g.soft.role != Role::Leader
            && g.soft.leader.is_some_and(|l| {
                l != from
                    && self
                        .peers_heard_tick
                        .get(&l)
                        .is_some_and(|&t| self.tick_count - t < election_min)
            });
        if trusts_its_leader && matches!(gm.msg.body, kv_raft::MessageBody::PreVote { .. }) {
            // A quiesced (or rechecking) follower heard nothing from its leader
            // for long, so Raft's CheckQuorum lease has lapsed and would grant the
            // PreVote of a peer rechecking the same quiet leader: every recheck of
            // an idle group elected a new leader. Quiescence trusts the leader's
            // live node (the group wakes when that node falls silent), so the
            // PreVote is left unanswered, as a follower in its lease ignores one;
            // the leader, woken by it, heartbeats, which answers the recheck.
            return;
        }
        let heard = match gm.msg.body {
            kv_raft::MessageBody::Append { commit, .. } => Heard::LeaderCommit(commit),
            kv_raft::MessageBody::Heartbeat { .. }
            | kv_raft::MessageBody::InstallSnapshot { .. } => Heard::Leader,
            _ => Heard::Member,
        };
        g.heard(from, self.tick_count, heard);
        g.raft.step(gm.msg);
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
            .iter()
            .filter(|other| other.shard != shard)
            .map(|other| other.raft.incoming_snapshot_bytes())
            .sum();
        others.saturating_add(*total_len) <= SNAPSHOT_RECEIVE_BYTES_MAX
    }

    /// Forgets every group's leader lease (`kv_raft::Raft::expire_lease`): the driver
    /// saw its ticks fall behind real time (a stalled process), which the leases would
    /// count as less time than passed. Reads take a heartbeat round until new echoes come.
    pub fn expire_leases(&mut self) {
        for g in self.groups.iter_mut() {
            g.raft.expire_lease();
        }
    }

    /// Whether [`Output::applied`] lists the entries applied and [`Output::proposed`] the
    /// requests proposed (on from the start). A runtime that reads neither turns it off
    /// and saves a digest of every applied entry and a record of every proposed write;
    /// nothing else the core does depends on it.
    pub fn set_applied_reports(&mut self, on: bool) {
        self.applied_reports = on;
    }

    /// Whether a leader whose lease holds serves a linearizable get the moment it
    /// arrives (on from the start), or at the next flush like every other request. A get
    /// served on arrival reads the state before the writes that flush applies, and its
    /// reply may leave after theirs: linearizable (the get began before those writes
    /// ended), but a client that checks each get against the last write acknowledged
    /// when the reply arrives (the course harness) takes it for a stale read. Course mode
    /// turns it off.
    pub fn set_reads_on_arrival(&mut self, on: bool) {
        self.reads_on_arrival = on;
    }

    /// Whether a follower applies the commands a leader's Append reports committed in
    /// the flush that takes them in (off from the start), or leaves them to
    /// [`NodeCore::apply_deferred`], which the runtime calls once that flush's datagrams
    /// left. A follower's acknowledgement waits for its write, not for its applying; the
    /// leader waits for the acknowledgement, so applying first put the follower's state
    /// machine on every commit's path. Reads are unaffected: each waits for the state
    /// machine's own applied index. Entries of any other kind, and everything a group
    /// deferred once it leads or installs a snapshot, are applied at once, in log order.
    pub fn set_defer_follower_applies(&mut self, on: bool) {
        self.defer_follower_applies = on;
        if !on {
            self.apply_deferred();
        }
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

    /// Everything to do now. Call after every input.
    pub fn take_output(&mut self) -> Output {
        self.drive();
        // Routing proposes and reads only in the groups it has requests for, and touches
        // no other group's Raft: only those need draining again, not every hosted group,
        // and of those only the ones whose Raft it gave input (gets served from the
        // lease give none).
        // Swapped with the list of the flush before, so that neither grows anew every
        // round (a flush without requests between two with 40 groups each).
        let mut routed =
            std::mem::replace(&mut self.to_route, std::mem::take(&mut self.routed_buf));
        routed.sort_unstable();
        routed.dedup();
        routed.retain(|&g| self.groups.get(g).is_some_and(|g| !g.waiting.is_empty()));
        routed.retain(|&g| self.route(g));
        #[cfg(test)]
        {
            self.routed_drained += routed.len() as u64;
        }
        for &g in &routed {
            self.drive_group(g);
        }
        routed.clear();
        self.routed_buf = routed;
        if !self.round_ops.is_empty() {
            let id = self.next_disk_write;
            self.next_disk_write += 1;
            self.disk_inflight
                .insert(id, take_sized(&mut self.round_durable));
            let (ops, deferrable) = self.round_ops.take();
            self.out.disk_writes.push(DiskWrite {
                id,
                ops,
                deferrable,
            });
        }
        debug_assert!(self.round_durable.is_empty());
        let mut outbox = self.outbox.take();
        for mut peer in outbox.drain(..) {
            let to = peer.peer;
            self.peers_sent_tick.insert(to, self.tick_count);
            let runs = peer.frame.take_runs();
            if peer.msgs.is_empty() && runs.is_empty() {
                self.out.datagrams.push((to, PeerBatch::default())); // a keepalive
                continue;
            }
            let first = self.out.datagrams.len();
            if !peer.msgs.is_empty() {
                for msgs in codec::split(peer.msgs) {
                    let frame = Vec::new();
                    self.out.datagrams.push((to, PeerBatch { msgs, frame }));
                }
            }
            for run in runs {
                // The first run rides with the last batch of messages if both fit.
                match self.out.datagrams[first..].last_mut() {
                    Some((_, b))
                        if b.frame.is_empty() && codec::fit_together(&b.msgs, to, run.len()) =>
                    {
                        b.frame = run;
                    }
                    _ => {
                        let batch = PeerBatch {
                            msgs: Vec::new(),
                            frame: run,
                        };
                        self.out.datagrams.push((to, batch));
                    }
                }
            }
        }
        self.outbox.give_back(outbox);
        // The next round's lists start with the room recent ones needed: 64 replies a
        // round otherwise grow their vector five times every round.
        let [datagrams, replies, proposed] = &mut self.out_room;
        let next = Output {
            datagrams: Vec::with_capacity(datagrams.update(self.out.datagrams.len())),
            replies: Vec::with_capacity(replies.update(self.out.replies.len())),
            proposed: Vec::with_capacity(proposed.update(self.out.proposed.len())),
            ..Output::default()
        };
        std::mem::replace(&mut self.out, next)
    }
}

/// What a message tells a group about its sender (`Group::heard`).
#[derive(Clone, Copy, Debug)]
enum Heard {
    /// A member spoke.
    Member,
    /// The leader spoke (a heartbeat, a snapshot chunk).
    Leader,
    /// The leader sent an Append, with its commit index.
    LeaderCommit(u64),
}

/// True if `node` is a voter or learner of `membership`.
fn is_listed(membership: &kv_raft::Membership, node: NodeId) -> bool {
    membership.voters.contains(&node) || membership.learners.contains(&node)
}
