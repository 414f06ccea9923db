//! The data kv-raft takes in and hands out: log entries, hard state, snapshots, messages,
//! and the `Ready` batch of work for the caller. Everything here is plain data (serde),
//! so the node layer can put it on the wire and on disk unchanged.

use bytes::Bytes;
use kv_shared::NodeId;
use serde::{Deserialize, Serialize};

/// A log position.
pub type Index = u64;
/// A Raft term.
pub type Term = u64;

/// What a log entry carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryKind {
    /// The empty entry a new leader appends to commit its term (thesis 3.6.2 / 6.4).
    Noop,
    /// An application command (opaque to Raft).
    Command,
    /// A membership change; `data` is empty, the change is in the variant.
    ConfChange(ConfChange),
}

/// One log entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Term in which the leader created it.
    pub term: Term,
    /// Position in the log (first is 1).
    pub index: Index,
    /// Kind.
    pub kind: EntryKind,
    /// Payload for `Command` entries.
    pub data: Bytes,
}

/// A one-step membership change. raftkv adds a node as a learner first, lets it catch up,
/// then promotes it; each step changes the voter set by at most one (thesis 4.2-4.3).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConfChange {
    /// Add a non-voting member that receives the log.
    AddLearner(NodeId),
    /// Turn a learner into a voter.
    PromoteLearner(NodeId),
    /// Remove a voter or learner.
    RemoveNode(NodeId),
}

/// The voters and learners of a group.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    /// Members that vote and count for quorums, ascending.
    pub voters: Vec<NodeId>,
    /// Members that receive the log but do not vote, ascending.
    pub learners: Vec<NodeId>,
}

/// State that must be durable before a vote or append acknowledgement leaves.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HardState {
    /// Latest term seen.
    pub term: Term,
    /// Candidate voted for in `term` (`NodeId::NONE` if none).
    pub vote: NodeId,
    /// Highest index known committed (persisting it is an optimisation, not a requirement).
    pub commit: Index,
}

/// Identifies a snapshot: the log prefix it replaces and the membership at that point.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotMeta {
    /// Last index covered.
    pub index: Index,
    /// Term of that entry.
    pub term: Term,
    /// Membership as of `index`.
    pub membership: Membership,
}

/// A whole snapshot: metadata and the state machine image (opaque to Raft).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// What it covers.
    pub meta: SnapshotMeta,
    /// The serialized state machine.
    pub data: Bytes,
}

/// A message between two members of one group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Sender.
    pub from: NodeId,
    /// Receiver.
    pub to: NodeId,
    /// Sender's term (for PreVote: the term the sender would campaign in).
    pub term: Term,
    /// What it says.
    pub body: MessageBody,
}

/// An Append's fields besides its entries, for a caller that decodes Appends itself and
/// hands them in with [`Raft::step_append`](crate::Raft::step_append), entries apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppendHeader {
    /// Sender.
    pub from: NodeId,
    /// Receiver.
    pub to: NodeId,
    /// Sender's term.
    pub term: Term,
    /// Index of the entry before the entries.
    pub prev_index: Index,
    /// Its term.
    pub prev_term: Term,
    /// Leader's commit index.
    pub commit: Index,
}

/// The kinds of messages.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MessageBody {
    /// "Would you vote for me?" without disturbing anyone's term (thesis 9.6).
    PreVote {
        /// Candidate's last log index.
        last_index: Index,
        /// Candidate's last log term.
        last_term: Term,
    },
    /// Answer to PreVote.
    PreVoteResp {
        /// True if refused.
        reject: bool,
    },
    /// RequestVote.
    Vote {
        /// Candidate's last log index.
        last_index: Index,
        /// Candidate's last log term.
        last_term: Term,
        /// Set during leadership transfer: overrides the leader lease (CheckQuorum stickiness).
        transfer: bool,
    },
    /// Answer to Vote. A grant is sent only after the vote is durable.
    VoteResp {
        /// True if refused.
        reject: bool,
    },
    /// AppendEntries.
    Append {
        /// Index of the entry before `entries`.
        prev_index: Index,
        /// Its term.
        prev_term: Term,
        /// Entries to append (may be empty: a probe).
        entries: Vec<Entry>,
        /// Leader's commit index.
        commit: Index,
    },
    /// Answer to Append. A success is sent only after the entries are durable.
    AppendResp {
        /// True if `prev_index/prev_term` did not match.
        reject: bool,
        /// On success: the highest index now matching the leader. On reject: the
        /// rejected `prev_index`.
        index: Index,
        /// On reject: fast-backtracking hint, the largest index at or below the rejected
        /// `prev_index` (and the follower's last index) whose term is at most the leader's
        /// `prev_term`: the next point that may match (etcd's findConflictByTerm).
        hint_index: Index,
        /// On reject: the term at `hint_index` in the follower's log (0 if unknown).
        hint_term: Term,
    },
    /// Leader heartbeat. Carries the commit index (capped to what the follower matches)
    /// and the newest pending ReadIndex round, so one round confirms a batch of reads.
    Heartbeat {
        /// Commit index the follower may adopt.
        commit: Index,
        /// ReadIndex round being confirmed (0 if none).
        read_round: u64,
    },
    /// Answer to Heartbeat.
    HeartbeatResp {
        /// Echo of `read_round`.
        read_round: u64,
    },
    /// One chunk of a snapshot for a follower behind the compacted log.
    InstallSnapshot {
        /// What the whole snapshot covers.
        meta: SnapshotMeta,
        /// Byte offset of `chunk` in the snapshot data.
        offset: u64,
        /// Total size of the snapshot data.
        total_len: u64,
        /// The bytes.
        chunk: Bytes,
    },
    /// Answer to InstallSnapshot: how far the follower got (resume point), or done.
    InstallSnapshotResp {
        /// Index of the snapshot being received.
        snapshot_index: Index,
        /// Bytes received so far (the next offset wanted).
        received: u64,
        /// True once the whole snapshot is durable.
        done: bool,
    },
    /// Leadership transfer: "start an election now".
    TimeoutNow,
    /// "The entry at `index` with term `log_term` is committed": sent by a node whose
    /// replica left the group (it applied its own removal there), in answer to a vote
    /// request, so that a voter that never learned the removal committed (its leader
    /// stepped down right after) stops counting the departed replica. `Message::term`
    /// is `log_term`; the receiver takes no term from it.
    Committed {
        /// Index of the committed entry (the departed replica's removal).
        index: Index,
        /// Its term.
        log_term: Term,
    },
    /// A follower asks its leader to confirm a batch of reads (ReadIndex at a follower,
    /// thesis 6.4): every read waiting at the follower when it was sent. The reads
    /// themselves stay at the follower; only the request id travels.
    ReadIndex {
        /// Chosen by the follower, unique across its restarts (`Config::boot_nonce`).
        request: u64,
    },
    /// Answer to ReadIndex, once the leader confirmed its leadership after the request
    /// arrived (a heartbeat round, or its lease).
    ReadIndexResp {
        /// Echo of the request id.
        request: u64,
        /// The leader's commit index when the request arrived: the follower serves the
        /// batch once it has applied this index.
        index: Index,
        /// True if the receiver could not take the request (not leader, too many pending
        /// reads): the follower fails the batch at once instead of waiting.
        reject: bool,
    },
}

/// A ReadIndex request that may now be served: once the state machine has applied
/// `index`, a read issued with `ctx` sees every write committed before it was issued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadState {
    /// The caller's context from `read_index`.
    pub ctx: u64,
    /// Apply up to here, then serve.
    pub index: Index,
}

/// A role of this replica.
pub use kv_shared::proto::Role;
