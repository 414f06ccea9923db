//! The client protocol: what kvcli sends to a node and what it gets back. Each request
//! carries its session (client id, sequence number) so that a retried write applies once.
//! Encoded with postcard inside a [`crate::wire`] datagram of kind `ClientRequests`/`ClientReplies`;
//! `codec` (proto/codec.rs) reads and writes that layout for both kvcli and kvserver.

use crate::ids::{ClientId, NodeId, ShardId};
use crate::limits::{KEY_BYTES_MAX, VALUE_BYTES_MAX};
use crate::registry::{NodeState, NodeStateRefusal, RegisterRefusal, Registry, METADATA_SHARD};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

mod codec;

pub use codec::{
    decode_replies, decode_requests, encode_replies, encode_request, reply_bytes, DecodedReply,
};

/// One client operation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// Read a key. `stale` opts out of linearizability: any replica answers from its own state.
    Get {
        /// The key.
        key: Bytes,
        /// Serve locally without ReadIndex (explicit opt-in).
        stale: bool,
    },
    /// Write a key.
    Put {
        /// The key.
        key: Bytes,
        /// The new value.
        value: Bytes,
    },
    /// Remove a key (absent keys are fine).
    Delete {
        /// The key.
        key: Bytes,
    },
    /// Write `new` if the current value equals `expected` (`None`: only if the key is absent).
    Cas {
        /// The key.
        key: Bytes,
        /// The value the key must hold now, or `None` for "absent".
        expected: Option<Bytes>,
        /// The value to write on a match.
        new: Bytes,
    },
    /// Add `delta` to the key's value read as a decimal i64 (absent counts as 0) and
    /// answer the sum, atomically in the state machine (Redis INCRBY).
    Incr {
        /// The key.
        key: Bytes,
        /// What to add (negative to subtract).
        delta: i64,
    },
    /// Append `value` to the key's value (absent counts as empty) and answer the new
    /// length, atomically in the state machine (Redis APPEND).
    Append {
        /// The key.
        key: Bytes,
        /// The bytes to append.
        value: Bytes,
    },
    /// Replace the key's value with `new` (`None`: delete it) and answer the old value,
    /// atomically in the state machine (Redis GETSET and GETDEL).
    Swap {
        /// The key.
        key: Bytes,
        /// The value to write, or `None` to delete the key.
        new: Option<Bytes>,
    },
    /// Ask the node for its status table (not routed to a shard).
    Status,
    /// Open this client's session on the shard of `key` (or keep it open): goes through
    /// the log like a write but changes no data, so retrying it is always safe. A write
    /// from a client without a session gets [`ClientError::SessionExpired`] unless its
    /// sequence number is 1 (docs/NODE.md, "Client sessions").
    OpenSession {
        /// Any key of the shard (the one the client is about to write).
        key: Bytes,
    },
    /// Admin: make `node` the preferred leader of `shard`. Recorded in the shard's log
    /// (so every replica agrees and it outlives leader changes); the leader then hands
    /// leadership over once `node` has caught up. `node` must be a voter of the shard.
    ShardLeader {
        /// The shard.
        shard: ShardId,
        /// Its new preferred leader.
        node: NodeId,
    },
    /// Admin: move `shard`'s replica from node `from` to node `to`, sent to the shard's
    /// leader. For the metadata group only, one side may be `NodeId::NONE`: `to` added
    /// as a voter (learner, catch-up, promotion) or `from` removed (leadership handed
    /// over first if it leads), which is how its voter count follows the cluster's size. It adds `to` as a learner, waits until it has caught up, promotes it,
    /// hands leadership away from `from` if `from` leads, and removes `from`: one
    /// membership change at a time, each a new epoch. Answered `Done` once `to` is a
    /// voter and `from` is no longer a member; exactly once under the admin's session
    /// (a retry of the same request waits for the same move). At most one move per shard
    /// is in flight; see [`MoveRefusal`] for the others refused.
    MoveReplica {
        /// The shard.
        shard: ShardId,
        /// The node whose replica goes (a voter of the shard).
        from: NodeId,
        /// The node that receives a replica (a cluster member holding none of the shard).
        to: NodeId,
    },
    /// Register node `node` at `addr` with its data directory's `identity` in the node
    /// registry (the metadata group's state; docs/ELASTIC.md). Sent by kvserver at every
    /// start. `Done` once registered (a repeat with the same identity only updates the
    /// address); [`ClientError::RegisterRefused`] when the id is registered under another
    /// identity or was removed (ids are never reused).
    RegisterNode {
        /// The node.
        node: NodeId,
        /// Where peers and clients reach it.
        addr: SocketAddr,
        /// Its data directory's identity.
        identity: u64,
    },
    /// Admin: mark `node` `draining` (it receives no replica and its replicas move away)
    /// or `removed` (for good: its id never registers again and its datagrams are
    /// refused) in the node registry. Exactly once under the admin's session; refused
    /// with [`ClientError::NodeStateRefused`] for an unknown or removed node.
    SetNodeState {
        /// The node.
        node: NodeId,
        /// `Draining` or `Removed`.
        state: NodeState,
    },
    /// Admin: pause (`true`) or resume the balancer that runs on the metadata group's
    /// leader. Kept in the node registry, so a new metadata leader honours it.
    PauseBalancer {
        /// Paused or running.
        paused: bool,
    },
}

impl Op {
    /// The key this operation touches, if any.
    pub fn key(&self) -> Option<&Bytes> {
        match self {
            Op::Get { key, .. }
            | Op::Put { key, .. }
            | Op::Delete { key }
            | Op::Cas { key, .. }
            | Op::OpenSession { key }
            | Op::Incr { key, .. }
            | Op::Append { key, .. }
            | Op::Swap { key, .. } => Some(key),
            Op::Status
            | Op::ShardLeader { .. }
            | Op::MoveReplica { .. }
            | Op::RegisterNode { .. }
            | Op::SetNodeState { .. }
            | Op::PauseBalancer { .. } => None,
        }
    }

    /// The shard an admin operation names (`None` for keyed operations and status).
    pub fn admin_shard(&self) -> Option<ShardId> {
        match self {
            Op::ShardLeader { shard, .. } | Op::MoveReplica { shard, .. } => Some(*shard),
            Op::RegisterNode { .. } | Op::SetNodeState { .. } | Op::PauseBalancer { .. } => {
                Some(METADATA_SHARD)
            }
            _ => None,
        }
    }

    /// True for the operations only an admin key may run (docs/SECURITY.md): they change
    /// who the cluster's nodes are, where replicas and leaderships live, or the balancer.
    pub fn is_admin(&self) -> bool {
        matches!(
            self,
            Op::ShardLeader { .. }
                | Op::MoveReplica { .. }
                | Op::RegisterNode { .. }
                | Op::SetNodeState { .. }
                | Op::PauseBalancer { .. }
        )
    }

    /// What the operation does, for a permission refusal (`cannot ...`).
    pub fn permission_name(&self) -> &'static str {
        match self {
            Op::ShardLeader { .. } => "move a shard's leadership (admin only)",
            Op::MoveReplica { .. } => "move a replica (admin only)",
            Op::RegisterNode { .. } => "register a node (admin only)",
            Op::SetNodeState { .. } => "change a node's state (admin only)",
            Op::PauseBalancer { .. } => "pause or resume the balancer (admin only)",
            _ => "write",
        }
    }

    /// True for operations that go through the log under the client's session (writes,
    /// and opening the session).
    pub fn is_write(&self) -> bool {
        matches!(
            self,
            Op::Put { .. }
                | Op::Delete { .. }
                | Op::Cas { .. }
                | Op::OpenSession { .. }
                | Op::Incr { .. }
                | Op::Append { .. }
                | Op::Swap { .. }
                | Op::ShardLeader { .. }
                | Op::MoveReplica { .. }
                | Op::RegisterNode { .. }
                | Op::SetNodeState { .. }
                | Op::PauseBalancer { .. }
        )
    }

    /// Checks the size limits, naming the limit that was crossed.
    pub fn check_limits(&self) -> Result<(), ClientError> {
        if let Some(key) = self.key() {
            if key.len() > KEY_BYTES_MAX {
                return Err(ClientError::KeyTooLarge {
                    len: key.len(),
                    max: KEY_BYTES_MAX,
                });
            }
        }
        let value = match self {
            Op::Put { value, .. } | Op::Append { value, .. } => Some(value),
            Op::Swap { new, .. } => new.as_ref(),
            Op::Cas { new, expected, .. } => {
                if let Some(e) = expected {
                    if e.len() > VALUE_BYTES_MAX {
                        return Err(ClientError::ValueTooLarge {
                            len: e.len(),
                            max: VALUE_BYTES_MAX,
                        });
                    }
                }
                Some(new)
            }
            _ => None,
        };
        if let Some(v) = value {
            if v.len() > VALUE_BYTES_MAX {
                return Err(ClientError::ValueTooLarge {
                    len: v.len(),
                    max: VALUE_BYTES_MAX,
                });
            }
        }
        Ok(())
    }
}

/// A request: one operation under a client session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientRequest {
    /// The session.
    pub client: ClientId,
    /// Per-client sequence number, starting at 1, one higher for each new request. A retry
    /// reuses the number. A client has at most one write outstanding at a time.
    pub seq: u64,
    /// The epoch of the replica set the client routed by (0: it knows none). A node whose
    /// view of the shard is newer answers a request it cannot serve with
    /// [`ClientError::StaleRoute`], so the client learns the new replica set.
    pub epoch: u64,
    /// What to do.
    pub op: Op,
}

/// The outcome of a request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// A get's answer: the value, or `None` if the key is absent.
    Value(Option<Bytes>),
    /// A put or delete was applied.
    Done,
    /// A compare-and-set found the expected value and wrote the new one.
    CasOk,
    /// A compare-and-set found another value (shown) and wrote nothing.
    CasMismatch {
        /// What the key holds now (`None`: absent).
        current: Option<Bytes>,
    },
    /// An increment's sum or an append's new length.
    Integer(i64),
    /// The node's status table.
    Status(NodeStatus),
    /// The request was not (or may not have been) carried out.
    Error(ClientError),
}

/// A reply to one request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientReply {
    /// The session of the request answered.
    pub client: ClientId,
    /// The sequence number of the request answered.
    pub seq: u64,
    /// What happened.
    pub outcome: Outcome,
}

/// Why a request failed. Each says plainly which shard, which limit or which node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ClientError {
    /// This node does not lead the key's shard. Retry at `leader` (if known).
    #[error("shard {shard}: this node is not its leader (leader: {})", leader.map(|l| l.to_string()).unwrap_or_else(|| "unknown".into()))]
    NotLeader {
        /// The key's shard.
        shard: ShardId,
        /// The best known leader.
        leader: Option<NodeId>,
    },
    /// The shard's leader lost its quorum before the request completed. Whether a write
    /// was applied is unknown; retry with the same session to find out safely.
    #[error("shard {shard}: no quorum; the outcome is unknown")]
    NoQuorum {
        /// The key's shard.
        shard: ShardId,
    },
    /// The request did not complete in time. A write may or may not have been applied.
    #[error("shard {shard}: timed out; the outcome is unknown")]
    Timeout {
        /// The key's shard.
        shard: ShardId,
    },
    /// The key is longer than the limit.
    #[error("key is {len} bytes; the limit KEY_BYTES_MAX is {max}")]
    KeyTooLarge {
        /// Key length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The value is longer than the limit.
    #[error("value is {len} bytes; the limit VALUE_BYTES_MAX is {max}")]
    ValueTooLarge {
        /// Value length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The request's sequence number is older than the session's latest: a late duplicate.
    #[error("request seq {seq} is older than this session's latest ({latest}); a late duplicate")]
    StaleSequence {
        /// The request's sequence number.
        seq: u64,
        /// The session's latest applied sequence number.
        latest: u64,
    },
    /// The node refuses writes (for example its disk is full); reads may still work.
    #[error("node {node} refuses writes: {reason}")]
    Unavailable {
        /// The node.
        node: NodeId,
        /// Why.
        reason: String,
    },
    /// Too many requests are pending at this node.
    #[error("node {node} is overloaded: {pending} requests pending (limit PENDING_REQUESTS_MAX)")]
    Overloaded {
        /// The node.
        node: NodeId,
        /// Requests pending now.
        pending: usize,
    },
    /// An increment found a value that is not a decimal 64-bit integer.
    #[error("value is not an integer or out of range")]
    NotAnInteger,
    /// An increment would leave the 64-bit integer range.
    #[error("increment or decrement would overflow")]
    Overflow,
    /// The request could not be decoded or makes no sense.
    #[error("malformed request: {0}")]
    Malformed(String),
    /// The client has no session on this shard (it was evicted, or never opened): the
    /// write was not applied now, but an earlier attempt of it may have been. Retrying
    /// cannot tell; open a session and treat the outcome as unknown.
    #[error("session expired on this shard (evicted or never opened); the outcome of this write is unknown")]
    SessionExpired,
    /// The requests pending at this node hold too many bytes.
    #[error("node {node} is overloaded: {pending_bytes} bytes of requests pending (limit PENDING_REQUEST_BYTES_MAX)")]
    OverloadedBytes {
        /// The node.
        node: NodeId,
        /// Bytes pending now.
        pending_bytes: usize,
    },
    /// The client's key does not allow this operation (a write under a read-only key, an
    /// admin operation under a key that is not admin).
    #[error("permission denied: client {client} is {permission} and cannot {operation}")]
    PermissionDenied {
        /// The authenticated client name.
        client: String,
        /// Its permission ("read-only", "read-write").
        permission: String,
        /// What it asked for ("write", "move a replica (admin only)").
        operation: String,
    },
    /// The client routed by an older replica set than this node knows, or to a node that
    /// holds no replica of the shard: here is the node's view of it. Retry there.
    #[error("shard {}: {} cannot serve it; its replicas at epoch {} are {}", route.shard, node, route.epoch, route.replica_list())]
    StaleRoute {
        /// The node answering.
        node: NodeId,
        /// Its view of the shard's replica set.
        route: ShardRoute,
    },
    /// An admin move of one of the shard's replicas was refused or undone; nothing of it
    /// remains in the shard's membership.
    #[error("shard {shard}: cannot {}: {reason}", move_words(*from, *to))]
    MoveRefused {
        /// The shard.
        shard: ShardId,
        /// The move's `from`.
        from: NodeId,
        /// The move's `to`.
        to: NodeId,
        /// Why.
        reason: MoveRefusal,
    },
    /// The node registry refused a registration ([`Op::RegisterNode`]).
    #[error("{0}")]
    RegisterRefused(RegisterRefusal),
    /// The node registry refused a state change ([`Op::SetNodeState`]).
    #[error("{0}")]
    NodeStateRefused(NodeStateRefusal),
}

/// What a [`Op::MoveReplica`] asks for, in words: a move, or (one side `NodeId::NONE`)
/// a voter added or removed.
pub fn move_words(from: NodeId, to: NodeId) -> String {
    match (from.is_none(), to.is_none()) {
        (true, false) => format!("add node {to} as a voter"),
        (false, true) => format!("remove node {from}'s voter"),
        _ => format!("move a replica from node {from} to node {to}"),
    }
}

/// Why a [`Op::MoveReplica`] was refused (or undone).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum MoveRefusal {
    /// `to` or `from` is not a node of the cluster.
    #[error("node {node} is not a member of the cluster")]
    UnknownNode {
        /// The node.
        node: NodeId,
    },
    /// `from` and `to` name the same node.
    #[error("from and to are the same node")]
    SameNode,
    /// `to` already holds a replica of the shard.
    #[error("node {node} already holds a replica of the shard (replicas: {})", route.replica_list())]
    AlreadyMember {
        /// The node.
        node: NodeId,
        /// The shard's replica set now.
        route: ShardRoute,
    },
    /// `from` is not a voter of the shard.
    #[error("node {node} is not a voter of the shard (replicas: {})", route.replica_list())]
    NotAVoter {
        /// The node.
        node: NodeId,
        /// The shard's replica set now.
        route: ShardRoute,
    },
    /// Another move of the shard is in flight; one at a time.
    #[error("the move of its replica from node {from} to node {to} is in flight")]
    MoveInFlight {
        /// The move in flight's `from`.
        from: NodeId,
        /// The move in flight's `to`.
        to: NodeId,
    },
    /// `to` is draining or removed in the node registry: it receives no replica.
    #[error("node {node} is {state} and receives no replica")]
    NotActive {
        /// The node.
        node: NodeId,
        /// Its registry state.
        state: NodeState,
    },
    /// A voter added or removed without a replica leaving or arriving (`from` or `to`
    /// is n0): only the metadata group's voter count changes; a data shard keeps R.
    #[error("a data shard keeps the replication factor's voters: move a replica instead (only the metadata group gains or loses a voter)")]
    VoterCountFixed,
    /// Removing `node` would leave the group without a voter.
    #[error("node {node} is the group's last voter")]
    LastVoter {
        /// The node.
        node: NodeId,
    },
    /// The new replica did not catch up with the leader in time; the move was undone
    /// (the learner removed), so it can be asked again.
    #[error("node {node} did not catch up within {ticks} ticks; the move was undone")]
    CatchUpTimedOut {
        /// The learner.
        node: NodeId,
        /// How long the leader waited.
        ticks: u64,
    },
}

impl ClientError {
    /// True when a write may have been applied despite the error (the outcome is unknown).
    pub fn outcome_unknown(&self) -> bool {
        matches!(
            self,
            ClientError::NoQuorum { .. }
                | ClientError::Timeout { .. }
                | ClientError::SessionExpired
        )
    }
}

/// Where a shard lives: its replica set as of `epoch`, and who leads it (a hint).
///
/// The epoch is the log index of the membership change that produced the set (0 for the
/// initial placement), so it grows with every change and two views compare by it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardRoute {
    /// The shard.
    pub shard: ShardId,
    /// Bumped by every membership change of the shard.
    pub epoch: u64,
    /// Voting replicas, ascending.
    pub voters: Vec<NodeId>,
    /// Replicas still catching up (not voting, not serving), ascending.
    pub learners: Vec<NodeId>,
    /// The leader as the answering node knows it.
    pub leader: Option<NodeId>,
}

impl ShardRoute {
    /// The replica set for messages: voters, then learners marked as such.
    pub fn replica_list(&self) -> String {
        let mut parts: Vec<String> = self.voters.iter().map(|v| v.to_string()).collect();
        parts.extend(self.learners.iter().map(|l| format!("{l} (learner)")));
        format!("[{}]", parts.join(", "))
    }
}

/// Raft role of a replica, for status output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    /// Follows a leader (or waits for one).
    Follower,
    /// Asking for pre-votes before disrupting the term.
    PreCandidate,
    /// Asking for votes.
    Candidate,
    /// Leads the group.
    Leader,
    /// Receives the log but does not vote.
    Learner,
}

/// One replica's view of one shard.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardStatus {
    /// The shard.
    pub shard: ShardId,
    /// This replica's role.
    pub role: Role,
    /// Current term.
    pub term: u64,
    /// Known leader.
    pub leader: Option<NodeId>,
    /// Commit index.
    pub commit: u64,
    /// Applied index.
    pub applied: u64,
    /// Entries held in the log (after the snapshot).
    pub log_entries: u64,
    /// Index of the latest snapshot.
    pub snapshot_index: u64,
    /// Keys in the state machine.
    pub keys: u64,
    /// Epoch of the replica set this replica applied (see [`ShardRoute`]).
    pub epoch: u64,
    /// On a leader: each replica's match index.
    pub replicas: Vec<(NodeId, u64)>,
}

/// A node's status table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// The node answering.
    pub node: NodeId,
    /// Number of shards in the cluster.
    pub shard_count: u32,
    /// One row per shard hosted here.
    pub shards: Vec<ShardStatus>,
    /// Each peer and the milliseconds since a datagram last arrived from it (`None`: never).
    pub peers: Vec<(NodeId, Option<u64>)>,
    /// Remote input the node refused since it started, by reason (every reason listed,
    /// zero or not): malformed or misaddressed peer messages, and limits reached.
    pub refused: Vec<(String, u64)>,
    /// Datagrams (or requests) this node dropped since it started, by reason, as the
    /// runtime counts them (the node core leaves this empty).
    pub drops: Vec<(String, u64)>,
    /// The node's own counters and gauges since it started, each under its name and
    /// labels as its `/metrics` endpoint shows it (for example
    /// `raftkv_requests_total{front_end="resp",op="get",result="ok"}`), copied from the
    /// same registry when this reply was made. Per-shard series are left out (the shard
    /// rows carry those). The node core leaves this empty; the runtime fills it.
    pub counters: Vec<(String, u64)>,
    /// Every node the answering node knows, with its address: a client given one node
    /// learns the rest.
    pub nodes: Vec<(NodeId, SocketAddr)>,
    /// Every shard of the cluster as the answering node knows it, hosted here or not.
    pub routes: Vec<ShardRoute>,
    /// The newest node registry the answering node has seen (`None`: none yet). Boxed:
    /// a status is one variant of [`Outcome`], which stays small for the others.
    pub registry: Option<Box<Registry>>,
    /// The metadata group's replica set and leader as the answering node knows it (its
    /// own replica's, or the newest heard from another node; `None`: the cluster runs no
    /// metadata group). The group moves like a shard, so its voters are not the bootstrap
    /// nodes for long: clients route admin operations, and the balancer plans, by this.
    /// Boxed like the registry.
    pub metadata: Option<Box<ShardRoute>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_name_the_limit() {
        let op = Op::Put {
            key: Bytes::from(vec![0; KEY_BYTES_MAX + 1]),
            value: Bytes::new(),
        };
        let e = op.check_limits().unwrap_err();
        assert!(e.to_string().contains("KEY_BYTES_MAX"), "{e}");
        let op = Op::Put {
            key: Bytes::from_static(b"k"),
            value: Bytes::from(vec![0; VALUE_BYTES_MAX + 1]),
        };
        assert!(op
            .check_limits()
            .unwrap_err()
            .to_string()
            .contains("VALUE_BYTES_MAX"));
        let op = Op::Put {
            key: Bytes::from_static(b"k"),
            value: Bytes::from(vec![0; VALUE_BYTES_MAX]),
        };
        assert!(op.check_limits().is_ok());
    }
}
