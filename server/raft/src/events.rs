//! What a replica reports happened, for the caller to log and count: the moments an
//! operator wants to see in a node's log that the soft state (role, term, leader) alone
//! does not tell. The core only records them; it never logs.

use crate::types::{Index, Term};
use kv_shared::NodeId;

/// Something that happened inside one Raft replica since the last `Ready`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// This replica's election timer fired (or a transfer told it to campaign).
    ElectionStarted {
        /// The term campaigned for.
        term: Term,
        /// A pre-vote round (thesis 9.6): the term is not raised unless it wins.
        pre_vote: bool,
        /// Started by a leadership transfer (TimeoutNow), not by a timeout.
        transfer: bool,
    },
    /// This leader began handing leadership to `to` (thesis 3.10).
    TransferStarted {
        /// The chosen successor.
        to: NodeId,
        /// The leader's term.
        term: Term,
    },
    /// This leader started sending its snapshot to a follower whose next entry it has
    /// compacted away.
    SnapshotSendStarted {
        /// The follower.
        to: NodeId,
        /// The snapshot's last index.
        index: Index,
        /// The leader's term.
        term: Term,
    },
    /// Committed membership changes took effect.
    ConfChanged {
        /// Voters now.
        voters: Vec<NodeId>,
        /// Learners now.
        learners: Vec<NodeId>,
        /// The term of this replica when it applied them.
        term: Term,
    },
}
