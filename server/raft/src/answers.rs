//! What `Raft`'s calls answer besides `Ready`: why a proposal or read was refused, and
//! the status report for displays and tests.

use crate::types::{HardState, Index, Membership, Role};
use kv_shared::NodeId;

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
    /// The leader already holds `Config::pending_reads_max` unconfirmed reads.
    #[error("too many pending reads (limit {limit})")]
    TooManyPendingReads {
        /// The configured limit.
        limit: usize,
    },
}

/// Where this replica stands, for status displays and tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    /// This replica.
    pub id: NodeId,
    /// Role.
    pub role: Role,
    /// Current term, vote in it, and commit index.
    pub hard: HardState,
    /// Known leader.
    pub leader: Option<NodeId>,
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
