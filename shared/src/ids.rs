//! Identifiers, as newtypes so a node id can never be passed where a shard id belongs.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A node (server process) of the cluster. `0` is never a valid node id; Raft uses it for "none".
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
pub struct NodeId(pub u64);

impl NodeId {
    /// "No node": no vote cast, no leader known.
    pub const NONE: NodeId = NodeId(0);

    /// True for the "no node" sentinel.
    pub fn is_none(self) -> bool {
        self.0 == 0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "n{}", self.0)
    }
}

/// A shard, i.e. one Raft group. Shards are numbered `0..shard_count`.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
pub struct ShardId(pub u32);

impl fmt::Display for ShardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s{}", self.0)
    }
}

/// A client session: chosen at random by the client, with a per-client sequence number
/// so that a retried write applies exactly once.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
pub struct ClientId(pub u64);

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "c{:x}", self.0)
    }
}
