//! The public face of one Raft replica: [`Raft`] and its inputs/outputs.
//! (API fixed; bodies are being implemented.)

use crate::types::*;
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
    /// Seed of this replica's RNG (election jitter). Derive it from (run seed, node, group).
    pub seed: u64,
}

/// What survived on disk, handed to [`Raft::new`] at start.
#[derive(Clone, Debug, Default)]
pub struct Restored {
    /// The durable hard state (default for a fresh replica).
    pub hard_state: HardState,
    /// The latest durable snapshot, if any.
    pub snapshot: Option<Snapshot>,
    /// Durable entries after the snapshot, contiguous.
    pub entries: Vec<Entry>,
    /// Membership to bootstrap with when there is no snapshot and no conf-change entry
    /// (a fresh cluster): every initial voter gets the same list.
    pub initial_membership: Membership,
}

/// Identifies one [`Write`], to be reported with [`Raft::on_persisted`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WriteId(pub u64);

/// State to make durable, in this order: snapshot, then entries, then hard state (one
/// fsync may cover it all). Writes must be persisted in `id` order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Write {
    /// Report this id to [`Raft::on_persisted`] once durable.
    pub id: WriteId,
    /// A snapshot received from the leader, to store (and then restore, see `Ready::apply_snapshot`).
    pub snapshot: Option<Snapshot>,
    /// Entries to append. If the first index is at or below the last stored index, the
    /// stored log is truncated from that index first (a conflicting suffix is replaced).
    pub entries: Vec<Entry>,
    /// New hard state, if it changed.
    pub hard_state: Option<HardState>,
}

/// Role, term and leader, reported when any of them changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SoftState {
    /// Role now.
    pub role: Role,
    /// Term now.
    pub term: Term,
    /// Known leader.
    pub leader: Option<NodeId>,
}

/// A batch of work for the caller; see the crate docs for the order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ready {
    /// Messages to send now.
    pub messages: Vec<Message>,
    /// State to persist; report with `on_persisted`.
    pub write: Option<Write>,
    /// A durable snapshot the state machine must restore before applying `committed`.
    pub apply_snapshot: Option<Snapshot>,
    /// Committed, locally durable entries to apply, in order.
    pub committed: Vec<Entry>,
    /// ReadIndex requests confirmed by a quorum.
    pub reads: Vec<ReadState>,
    /// ReadIndex requests that can no longer be confirmed (leadership lost): answer them
    /// with "not leader".
    pub failed_reads: Vec<u64>,
    /// Set when role, term or leader changed since the last `Ready`.
    pub soft_state: Option<SoftState>,
}

impl Ready {
    /// True if there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
            && self.write.is_none()
            && self.apply_snapshot.is_none()
            && self.committed.is_empty()
            && self.reads.is_empty()
            && self.failed_reads.is_empty()
            && self.soft_state.is_none()
    }
}

/// Why a proposal or read was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    /// Only the leader takes proposals and reads.
    #[error("not leader (leader: {leader:?})")]
    NotLeader {
        /// Best known leader.
        leader: Option<NodeId>,
    },
    /// A leadership transfer is in progress; proposals wait until it ends.
    #[error("leadership transfer in progress")]
    Transferring,
    /// Another membership change is not yet applied.
    #[error("a membership change is already pending")]
    ConfChangePending,
    /// The change makes no sense (adding a member twice, removing a stranger...).
    #[error("invalid membership change: {0}")]
    InvalidConfChange(String),
}

/// Where this replica stands, for status displays and tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    /// This replica.
    pub id: NodeId,
    /// Role.
    pub role: Role,
    /// Current term.
    pub term: Term,
    /// Vote in the current term.
    pub vote: NodeId,
    /// Known leader.
    pub leader: Option<NodeId>,
    /// Commit index.
    pub commit: Index,
    /// Highest index handed out for applying.
    pub applied: Index,
    /// Last index in the log (or the snapshot index if the log is empty).
    pub last_index: Index,
    /// Highest index known durable locally.
    pub persisted: Index,
    /// Index of the latest snapshot (0 if none).
    pub snapshot_index: Index,
    /// Current membership.
    pub membership: Membership,
    /// On a leader: each member's match index.
    pub progress: Vec<(NodeId, Index)>,
}

/// One Raft replica. See the crate docs for how to drive it.
#[derive(Debug)]
pub struct Raft {
    _private: (),
}

impl Raft {
    /// Builds a replica from its config and what survived on disk.
    pub fn new(_config: Config, _restored: Restored) -> Raft {
        todo!("kv-raft implementation")
    }

    /// Advances logical time by one tick (elections, heartbeats, CheckQuorum).
    pub fn tick(&mut self) {
        todo!()
    }

    /// Handles a message from a peer of this group. Messages for another replica or
    /// malformed ones are ignored.
    pub fn step(&mut self, _msg: Message) {
        todo!()
    }

    /// Appends an application command to the log. Returns its (index, term): the command
    /// is committed iff the entry applied at `index` has term `term`.
    pub fn propose(&mut self, _data: bytes::Bytes) -> Result<(Index, Term), ProposeError> {
        todo!()
    }

    /// Proposes a membership change (one step; see [`ConfChange`]).
    pub fn propose_conf_change(
        &mut self,
        _change: ConfChange,
    ) -> Result<(Index, Term), ProposeError> {
        todo!()
    }

    /// Starts a linearizable read. When a quorum confirms this leader is still leader, a
    /// [`ReadState`] with `ctx` appears in a later `Ready`. Many reads share one round.
    pub fn read_index(&mut self, _ctx: u64) -> Result<(), ProposeError> {
        todo!()
    }

    /// Hands leadership to `to` (thesis 3.10): catch it up, then send TimeoutNow.
    pub fn transfer_leadership(&mut self, _to: NodeId) {
        todo!()
    }

    /// The caller has made `write` durable.
    pub fn on_persisted(&mut self, _id: WriteId) {
        todo!()
    }

    /// The caller has durably stored `snapshot` of its state machine (its index at or
    /// below the applied index): drop the log up to it and use it for lagging followers.
    pub fn compact(&mut self, _snapshot: Snapshot) {
        todo!()
    }

    /// True if `ready()` would return something.
    pub fn has_ready(&self) -> bool {
        todo!()
    }

    /// Takes the work accumulated since the last call.
    pub fn ready(&mut self) -> Ready {
        todo!()
    }

    /// Where this replica stands.
    pub fn status(&self) -> Status {
        todo!()
    }
}
