//! What a replica starts from and what it hands its caller: [`Restored`] in, [`Ready`]
//! (with its [`Write`] to persist) out.

use crate::types::*;
use kv_shared::NodeId;

/// What survived on disk, handed to [`Raft::new`](crate::Raft::new) at start.
#[derive(Clone, Debug, Default)]
pub struct Restored {
    /// The durable hard state (default for a fresh replica).
    pub hard_state: HardState,
    /// The latest durable snapshot, if any. The caller restores its state machine from it
    /// itself; it is not handed back as `Ready::apply_snapshot`.
    pub snapshot: Option<Snapshot>,
    /// Durable entries after the snapshot, contiguous.
    pub entries: Vec<Entry>,
    /// Membership before the first conf-change entry, used when there is no snapshot (a
    /// fresh cluster): every initial voter gets the same list. Conf-change entries are
    /// deltas applied on top of it, so a node added later must be given the same list
    /// (or catch up from a snapshot).
    pub initial_membership: Membership,
}

/// Identifies one [`Write`], to be reported with [`Raft::on_persisted`](crate::Raft::on_persisted).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WriteId(pub u64);

/// State to make durable, in this order: snapshot, then entries, then hard state (one
/// fsync may cover it all). Writes must be persisted in `id` order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Write {
    /// Report this id to [`Raft::on_persisted`](crate::Raft::on_persisted) once durable.
    pub id: WriteId,
    /// A snapshot received from the leader, to store (and then restore, see
    /// `Ready::apply_snapshot`). It replaces the whole stored log: drop every stored entry,
    /// then append `entries` (which then start at `snapshot.meta.index + 1`).
    pub snapshot: Option<Snapshot>,
    /// Entries to append. If the first index is at or below the last stored index, the
    /// stored log is truncated from that index first (a conflicting suffix is replaced).
    /// Empty with `Config::entries_by_reference`: see `entries_in_log`.
    pub entries: Vec<Entry>,
    /// With `Config::entries_by_reference`, the first and last index of the entries to
    /// append, which stay in the log: read them with
    /// [`Raft::write_entries`](crate::Raft::write_entries) before the replica's next
    /// input. `None` otherwise, and when there are none.
    pub entries_in_log: Option<(Index, Index)>,
    /// New hard state, if it changed.
    pub hard_state: Option<HardState>,
    /// True when nothing waits for this write but this leader's own count toward a
    /// quorum that its followers, all answering promptly, make without it: the caller
    /// may put off the fsync (for a short, bounded time), and entries still commit as
    /// soon as the followers have them. It holds only the leader's own entries and
    /// commit index: no snapshot, no new term or vote, no message held for it. The
    /// writes stay in `id` order, and `on_persisted` comes when the fsync does.
    pub deferrable: bool,
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

/// An Append a leader sends, its entries left in the leader's log
/// (`Config::entries_by_reference`): the message
/// `Message { from: leader, to, term, body: Append { prev_index, prev_term, entries, commit } }`
/// whose entries are [`Raft::append_entries`](crate::Raft::append_entries) of it, the
/// log's `prev_index + 1 ..= last`. Read them before the replica's next input: the log
/// may drop them then (a leader that steps down or compacts first turns the Appends it
/// has not handed out yet into messages).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppendRef {
    /// Receiver.
    pub to: NodeId,
    /// The leader's term.
    pub term: Term,
    /// Index of the entry before the first one carried.
    pub prev_index: Index,
    /// Its term.
    pub prev_term: Term,
    /// Index of the last entry carried (`prev_index` if none: a probe or a commit).
    pub last: Index,
    /// Leader's commit index.
    pub commit: Index,
}

/// A batch of work for the caller; see the crate docs for the order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ready {
    /// Messages to send now.
    pub messages: Vec<Message>,
    /// Appends to send now, their entries in the leader's log (only with
    /// `Config::entries_by_reference`; otherwise they are in `messages`).
    pub appends: Vec<AppendRef>,
    /// State to persist; report with `on_persisted`.
    pub write: Option<Write>,
    /// A durable snapshot the state machine must restore before applying `committed`.
    pub apply_snapshot: Option<Snapshot>,
    /// Committed entries to apply, in order: durable here too, except on a leader, which
    /// applies what its followers made durable while its own write (perhaps `deferrable`)
    /// is pending; each is in a `Write` handed out already, this one's or an earlier one's.
    pub committed: Vec<Entry>,
    /// ReadIndex requests confirmed by a quorum.
    pub reads: Vec<ReadState>,
    /// ReadIndex requests that can no longer be confirmed (leadership lost): answer them
    /// with "not leader".
    pub failed_reads: Vec<u64>,
    /// Set when role, term or leader changed since the last `Ready`.
    pub soft_state: Option<SoftState>,
    /// A follower that answers needs a snapshot, and this leader no longer holds the
    /// image of its latest one (images are dropped once no transfer needs them: they are
    /// as large as the state machine). Answer with [`Raft::provide_snapshot`](crate::Raft::provide_snapshot).
    pub snapshot_wanted: bool,
    /// What happened since the last `Ready`, for the caller's log and metrics.
    pub events: Vec<crate::Event>,
}

impl Ready {
    /// True if there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
            && self.appends.is_empty()
            && self.write.is_none()
            && self.apply_snapshot.is_none()
            && self.committed.is_empty()
            && self.reads.is_empty()
            && self.failed_reads.is_empty()
            && self.soft_state.is_none()
            && !self.snapshot_wanted
            && self.events.is_empty()
    }
}
