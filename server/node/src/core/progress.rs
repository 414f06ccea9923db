//! What the node core reports of its work beyond client replies: the entries it applied
//! and the client requests it proposed (with their log index), in [`super::Output`], and
//! (to its tests) how many reads it holds. Course mode answers puts across leader changes
//! from these and the simulator checks state machine safety with the applied entries, so
//! neither needs a hook into the core or a copy of its request table.

use super::{entry_hash, ClientToken, NodeCore};
use kv_raft::Entry;
use kv_shared::ShardId;

/// An entry this replica applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppliedEntry {
    /// The shard.
    pub shard: ShardId,
    /// Index.
    pub index: u64,
    /// Term.
    pub term: u64,
    /// [`entry_hash`] of the entry.
    pub hash: u64,
}

/// A client request this replica proposed as leader: its write is in the entry at
/// `index` of `shard`'s log (unless a later leader replaces that entry).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProposedRequest {
    /// The request.
    pub token: ClientToken,
    /// The shard.
    pub shard: ShardId,
    /// The index of the entry that carries it.
    pub index: u64,
}

impl NodeCore {
    pub(super) fn report_applied(&mut self, shard: ShardId, e: &Entry) {
        if !self.applied_reports {
            return;
        }
        self.out.applied.push(AppliedEntry {
            shard,
            index: e.index,
            term: e.term,
            hash: entry_hash(e),
        });
    }

    /// Reports the requests `ids` proposed in the entry at `index` of `shard`.
    pub(super) fn report_proposed(&mut self, shard: ShardId, index: u64, ids: &[u64]) {
        if !self.applied_reports {
            return;
        }
        for id in ids {
            if let Some(r) = self.requests.get(id) {
                self.out.proposed.push(ProposedRequest {
                    token: r.token,
                    shard,
                    index,
                });
            }
        }
    }

    /// Gets accepted and not yet answered (waiting for a leader, a ReadIndex round, or
    /// the state machine to reach their read index).
    #[cfg(test)]
    pub(crate) fn pending_gets(&self) -> usize {
        self.requests
            .values()
            .filter(|r| matches!(r.req.op, kv_shared::proto::Op::Get { .. }))
            .count()
    }
}
