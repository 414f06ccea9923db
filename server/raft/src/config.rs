//! A replica's settings, in one place: kv-node, course mode, the simulator and the tests
//! all build theirs from [`Config::new`] with struct update syntax.

use crate::types::Snapshot;
use kv_shared::NodeId;

/// Per-replica settings. Timing is in ticks; the caller decides how long a tick is.
#[derive(Clone, Debug)]
pub struct Config {
    /// This replica's id (non-zero).
    pub id: NodeId,
    /// Election timeout is drawn uniformly from `election_ticks_min..election_ticks_max`.
    pub election_ticks_min: u32,
    /// Exclusive upper bound of the election timeout.
    pub election_ticks_max: u32,
    /// A leader sends heartbeats every this many ticks.
    pub heartbeat_ticks: u32,
    /// Ask for pre-votes before starting a real election (thesis 9.6).
    pub pre_vote: bool,
    /// A leader that has not heard from a quorum for an election timeout steps down, and a
    /// follower that heard from a leader within the minimum election timeout ignores votes.
    pub check_quorum: bool,
    /// Most entry payload bytes in one Append message (at least one entry is always sent).
    pub append_bytes_max: usize,
    /// Most unacknowledged Append messages per follower in the replicate state.
    pub inflight_appends_max: usize,
    /// Most bytes in one InstallSnapshot chunk.
    pub snapshot_chunk_bytes_max: usize,
    /// Most snapshot bytes a leader sends beyond a follower's acknowledged offset, within
    /// `inflight_appends_max` chunks (one chunk is always allowed).
    pub snapshot_inflight_bytes_max: usize,
    /// Most entry payload bytes handed out in one `Ready::committed` (at least one entry
    /// is always handed out); the rest follow in the next `Ready`. Bounds the memory a
    /// replica catching up on a long committed log hands its caller at once.
    pub committed_bytes_per_ready_max: usize,
    /// Most entry payload bytes a leader's compaction keeps below its snapshot for a
    /// follower heard lately that still lacks them (0: cut at the snapshot), so that it
    /// catches up from the log instead of by a snapshot of the whole state.
    pub compact_keep_bytes_max: usize,
    /// Seed of this replica's RNG (election jitter). Derive it from (run seed, node, group).
    pub seed: u64,
    /// Leader lease reads (needs `check_quorum`): a leader that committed an entry of its
    /// term and got echoes from a quorum of heartbeats it sent less than
    /// `election_ticks_min - lease_margin_ticks` ticks ago answers `read_index` at once,
    /// without a heartbeat round. Assumes tick rates of the replicas differ by less than
    /// the margin over an election timeout (docs/RAFT.md). Default false.
    pub lease_reads: bool,
    /// Ticks taken off the lease for clock drift and tick granularity (at least 2; must
    /// be below `election_ticks_min` when `lease_reads` is on).
    pub lease_margin_ticks: u32,
    /// Skip the periodic heartbeat to a follower that got an Append since the previous
    /// heartbeat and was heard from within half the minimum election timeout (one whose
    /// acks wait on a slow disk gets the heartbeat: its answer keeps CheckQuorum happy).
    /// Default false.
    pub heartbeat_suppression: bool,
    /// With `heartbeat_suppression`, skip fewer heartbeats: only to a follower that also
    /// acknowledged everything sent to it (no Append or chunk in flight), and, with
    /// `lease_reads`, never so many that fewer voters than a quorum (the leader counted,
    /// followers heard within `election_ticks_min` ticks) could echo the heartbeat, so
    /// the lease renews on every heartbeat. For a caller that
    /// holds some Appends back: a held Append is not contact, and the skipped heartbeat
    /// would be what carries it. The caller may switch suppression at run time
    /// ([`Raft::set_heartbeat_suppression`](crate::Raft::set_heartbeat_suppression)).
    /// Default false.
    pub heartbeat_suppression_strict: bool,
    /// Send an Append to every follower as soon as the commit index advances (true, the
    /// classic behaviour). When false, followers learn the commit index from the next
    /// Append or heartbeat (commit piggybacking), and a leader sends an Append without
    /// entries only where a follower must learn the commit index now: to a leadership
    /// transfer's target, to a removed member that asks for a vote, and to everyone when
    /// the leader's own removal commits. A caller that counts datagrams needs to
    /// hold none back. Default true.
    pub broadcast_commit: bool,
    /// Appends and snapshot chunks that made no progress for this many ticks are resent.
    /// `None` (default): every `heartbeat_ticks` (retransmission rides on heartbeats).
    pub retransmit_ticks: Option<u32>,
    /// With `Some(max)`, a follower resent to without progress since waits twice as long
    /// before the next resend (`retransmit_ticks`, then 2x, 4x, ... up to `max` ticks);
    /// any progress (its match index or acknowledged snapshot offset moves) brings the
    /// wait back to `retransmit_ticks`. A dead or cut-off follower then costs a few
    /// datagrams per `max` ticks instead of one per period. `None` (default): resend
    /// every `retransmit_ticks` while stalled.
    pub retransmit_backoff_ticks_max: Option<u32>,
    /// With `Some(k)`, a (pre-)candidate resends its vote request to the voters that have
    /// not answered after `k` ticks, then 2k and 4k ticks later (3 resends at most; a
    /// candidate once its term is durable). Under loss one lost request or answer
    /// otherwise costs a whole election timeout. `None` (default): each request once.
    pub vote_resend_ticks: Option<u32>,
    /// With `Some(k)`, a leader resends a heartbeat its follower has not echoed after `k`
    /// ticks, then 2k and 4k ticks after each resend (3 resends at most; a newer
    /// heartbeat to that follower starts over). Under heavy loss a follower otherwise
    /// misses enough heartbeats in a row to time out, and others that missed theirs grant
    /// its PreVote. The copy carries the same commit index and read round, so the lease
    /// still counts from the first copy's send. Not to a silent follower
    /// (`silent_follower_ticks`). The caller may switch it at run time
    /// ([`Raft::set_heartbeat_resend_ticks`](crate::Raft::set_heartbeat_resend_ticks)).
    /// `None` (default): each heartbeat once.
    pub heartbeat_resend_ticks: Option<u32>,
    /// With `Some(t)`, a follower this leader has not heard from for `t` ticks of its
    /// term (dead or cut off) gets no heartbeat resends, only its periodic heartbeat,
    /// until it answers again. `None` (default): no follower is taken for silent.
    pub silent_follower_ticks: Option<u32>,
    /// Lazy followers (the `lazy` module): a leader sends new entries at once only to
    /// `quorum - 1` "fast" followers, ranked by who answered last, and the others catch up
    /// from their next heartbeat (or a heartbeat resend, or a ReadIndex round), unless a
    /// commit stalls and the caller asks for a release
    /// ([`Raft::release_stalled`](crate::Raft::release_stalled)). Every Append it sends
    /// carries all the entries the follower has not acknowledged. For a caller that
    /// counts datagrams; it should also use `heartbeat_suppression_strict` (a held
    /// Append is not contact). Default false.
    pub lazy_followers: bool,
    /// With `lazy_followers`, a new leader sends to every follower for this many ticks
    /// first (its first Appends tell them who leads).
    pub lazy_grace_ticks: u32,
    /// With `lazy_followers`, every follower that is not silent is fast. The caller may
    /// switch it at run time ([`Raft::set_send_wide`](crate::Raft::set_send_wide)).
    /// Default false.
    pub lazy_send_wide: bool,
    /// Most `read_index` requests a leader holds unconfirmed; more get
    /// [`ProposeError::TooManyPendingReads`](crate::ProposeError::TooManyPendingReads).
    pub pending_reads_max: usize,
    /// Decides whether a snapshot received from a leader holds a state machine image the
    /// caller can restore. A refused one is dropped before it is persisted (and counted as
    /// [`Refusal::SnapshotImageInvalid`](crate::Refusal::SnapshotImageInvalid)):
    /// persisted, it would fail every restart. `None` accepts every image.
    pub snapshot_image_check: Option<ImageCheck>,
    /// A follower that knows its leader takes `read_index` too, asking the leader to
    /// confirm its reads (`follower_read`); without it a follower refuses reads with
    /// `NotLeader`, as before. A leader answers followers' requests either way.
    /// Default false.
    pub follower_reads: bool,
    /// A value that differs each time this replica starts (the runtime draws one at
    /// boot). The ids of its follower ReadIndex requests derive from it, so that a
    /// leader's answer to a request of an earlier life, still in the network, is never
    /// taken for the answer to a new one (its index may predate the new read). 0 (the
    /// default) only suits a replica never restarted under the same config.
    pub boot_nonce: u64,
    /// Entries a `Ready` hands out to be sent or written stay in the log, and the
    /// caller reads them from there before the replica's next input: a leader's Appends
    /// come out in `Ready::appends` as [`AppendRef`]s ([`Raft::append_entries`]) instead
    /// of messages in `Ready::messages` that each carry a copy of their entries, and a
    /// `Write` names its entries' indexes (`Write::entries_in_log`,
    /// [`Raft::write_entries`]) instead of carrying copies. A caller that encodes them
    /// at once anyway (kv-node, into datagrams and its WAL record) saves building and
    /// dropping a vector of cloned entries per follower, per write and round. The
    /// Appends and writes are the same either way, the Appends in the same order among
    /// themselves. Default false.
    ///
    /// [`AppendRef`]: crate::AppendRef
    /// [`Raft::append_entries`]: crate::Raft::append_entries
    /// [`Raft::write_entries`]: crate::Raft::write_entries
    pub entries_by_reference: bool,
}

/// Default of [`Config::committed_bytes_per_ready_max`]: a few Append batches' worth.
pub const COMMITTED_BYTES_PER_READY_MAX: usize = 1024 * 1024;

/// Default of [`Config::compact_keep_bytes_max`]: as much log as a shard keeps between
/// two of its snapshots at the node core's byte trigger, so that a follower one snapshot
/// behind still catches up from the log.
pub const COMPACT_KEEP_BYTES_MAX: usize = 8 * 1024 * 1024;

/// See [`Config::snapshot_image_check`]: true if the caller can restore the snapshot.
/// A plain function (pure, deterministic) so that `Config` stays plain data.
pub type ImageCheck = fn(&Snapshot) -> bool;

impl Config {
    /// Defaults for replica `id` with RNG seed `seed`: election timeout 10..20 ticks,
    /// heartbeat every 2, PreVote and CheckQuorum on, the byte and window limits of
    /// `kv_shared::limits`, and every optional behaviour at its classic setting (no lease
    /// reads, no suppression, commit broadcasts, retransmit with heartbeats, no vote
    /// or heartbeat resends). Change fields with struct update syntax.
    pub fn new(id: NodeId, seed: u64) -> Config {
        Config {
            id,
            election_ticks_min: 10,
            election_ticks_max: 20,
            heartbeat_ticks: 2,
            pre_vote: true,
            check_quorum: true,
            append_bytes_max: kv_shared::limits::APPEND_BYTES_MAX,
            inflight_appends_max: kv_shared::limits::INFLIGHT_APPENDS_MAX,
            snapshot_chunk_bytes_max: kv_shared::limits::SNAPSHOT_CHUNK_BYTES_MAX,
            snapshot_inflight_bytes_max: kv_shared::limits::SNAPSHOT_INFLIGHT_BYTES_MAX,
            committed_bytes_per_ready_max: COMMITTED_BYTES_PER_READY_MAX,
            compact_keep_bytes_max: COMPACT_KEEP_BYTES_MAX,
            seed,
            lease_reads: false,
            lease_margin_ticks: 2,
            heartbeat_suppression: false,
            heartbeat_suppression_strict: false,
            broadcast_commit: true,
            retransmit_ticks: None,
            retransmit_backoff_ticks_max: None,
            vote_resend_ticks: None,
            heartbeat_resend_ticks: None,
            silent_follower_ticks: None,
            lazy_followers: false,
            lazy_grace_ticks: 0,
            lazy_send_wide: false,
            pending_reads_max: kv_shared::limits::PENDING_REQUESTS_MAX,
            snapshot_image_check: None,
            follower_reads: false,
            boot_nonce: 0,
            entries_by_reference: false,
        }
    }

    /// Ticks after which a flow without progress is resent ([`Config::retransmit_ticks`]).
    pub fn retransmit_ticks(&self) -> u32 {
        self.retransmit_ticks.unwrap_or(self.heartbeat_ticks)
    }
}
