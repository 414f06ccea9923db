//! What the node core reports happened in its shards, for the runtime to log (with
//! `tracing`) and count (metrics): role and leader changes, elections, leadership
//! transfers, membership changes, snapshot transfers and installs. The core stays free
//! of I/O: it only hands these out with its `Output`.

use kv_shared::proto::Role;
use kv_shared::{NodeId, ShardId};

/// One event in one shard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeEvent {
    /// The shard it happened in.
    pub shard: ShardId,
    /// This replica's term when it happened.
    pub term: u64,
    /// What happened.
    pub kind: EventKind,
}

/// What happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// This replica's role changed.
    RoleChanged {
        /// The role before.
        from: Role,
        /// The role now.
        to: Role,
    },
    /// The leader this replica knows changed (`None`: it knows none now).
    LeaderChanged {
        /// The leader before.
        from: Option<NodeId>,
        /// The leader now.
        to: Option<NodeId>,
    },
    /// This replica started an election (a pre-vote round first, with PreVote).
    ElectionStarted {
        /// A pre-vote round rather than a real one.
        pre_vote: bool,
        /// Started by a leadership transfer rather than a timeout.
        transfer: bool,
    },
    /// This leader began handing leadership over.
    TransferStarted {
        /// The successor.
        to: NodeId,
    },
    /// Committed membership changes took effect.
    ConfChanged {
        /// Voters now.
        voters: Vec<NodeId>,
        /// Learners now.
        learners: Vec<NodeId>,
    },
    /// This leader started sending a snapshot to a lagging follower.
    SnapshotSendStarted {
        /// The follower.
        to: NodeId,
        /// The snapshot's last index.
        index: u64,
    },
    /// This replica installed a snapshot from its leader.
    SnapshotInstalled {
        /// The snapshot's last index.
        index: u64,
    },
    /// A leader adding this node to the shard made it create a replica (empty until the
    /// leader's snapshot arrives).
    ReplicaCreated {
        /// The leader whose message created it.
        leader: NodeId,
    },
    /// A leader's snapshot showed that the shard added this node back after its replica
    /// was removed at `removed_at`: the replica is created again, empty, at its earlier
    /// life's term and vote.
    ReplicaRecreated {
        /// The leader whose snapshot created it.
        leader: NodeId,
        /// The index of the change that removed the earlier life.
        removed_at: u64,
    },
    /// This node's replica was removed from the shard at `epoch`: it stopped serving and
    /// its data goes (`DiskOp::RemoveGroup`, once its tombstone is durable).
    ReplicaRemoved {
        /// The index of the change that removed it.
        epoch: u64,
    },
    /// This node's replica, created by a move and never listed in the shard's
    /// membership (the move was undone, or the replica removed, before the leader's
    /// snapshot or log named it), was forgotten: no tombstone, so a later move may create
    /// it again.
    ReplicaForgotten,
    /// A replica move of this shard ended on this leader.
    MoveEnded {
        /// The node whose replica went.
        from: NodeId,
        /// The node that received one.
        to: NodeId,
        /// `None`: done; else why it was undone.
        refusal: Option<kv_shared::proto::MoveRefusal>,
    },
}

impl NodeEvent {
    /// Translates a Raft core event of `shard`.
    pub fn from_raft(shard: ShardId, e: kv_raft::Event) -> NodeEvent {
        let (term, kind) = match e {
            kv_raft::Event::ElectionStarted {
                term,
                pre_vote,
                transfer,
            } => (term, EventKind::ElectionStarted { pre_vote, transfer }),
            kv_raft::Event::TransferStarted { to, term } => {
                (term, EventKind::TransferStarted { to })
            }
            kv_raft::Event::SnapshotSendStarted { to, index, term } => {
                (term, EventKind::SnapshotSendStarted { to, index })
            }
            kv_raft::Event::ConfChanged {
                voters,
                learners,
                term,
            } => (term, EventKind::ConfChanged { voters, learners }),
        };
        NodeEvent { shard, term, kind }
    }
}
