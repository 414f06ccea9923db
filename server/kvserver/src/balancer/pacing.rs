//! Leader transfers paced: the planner spreads leaders in one round, and asking for all
//! of them at once puts dozens of shards into elections together (on a loaded node,
//! seconds without a leader for clients). This picks the few that may go now.

use kv_shared::balance::LeaderTransfer;
use kv_shared::{NodeId, ShardId};
use std::collections::{BTreeMap, BTreeSet};

/// Transfers a node takes part in at once (giving up a leadership or receiving one).
pub const TRANSFERS_PER_NODE_MAX: usize = 2;

/// How far (in log entries) a transfer's target may be behind the shard's leader, as the
/// status shows both applied indexes: further behind, it would make clients wait while
/// it catches up as the new leader (the shard's leader also waits for it to catch up
/// before it hands over; this keeps such transfers from taking a place meanwhile).
pub const TRANSFER_CAUGHT_UP_LAG_ENTRIES: u64 = 256;

/// What the pacing needs to know besides the planned transfers.
pub struct PacingInput<'a> {
    /// Transfers asked for and not yet shown by the status.
    pub settling: &'a [LeaderTransfer],
    /// Shards a replica move runs on (own, or seen as learners or an extra voter).
    pub moving: &'a BTreeSet<ShardId>,
    /// Most transfers in flight at once (`transfers_max`).
    pub transfers_max: usize,
    /// Whether `node`'s replica of `shard` has caught up with the shard's leader.
    pub caught_up: &'a dyn Fn(ShardId, NodeId) -> bool,
}

/// The planned transfers that may be asked for now, in plan order: at most
/// `transfers_max` in flight counting `settling`, each node in at most
/// [`TRANSFERS_PER_NODE_MAX`] of them (giving or receiving), none on a shard that moves
/// or already has a transfer settling, and none to a target that has not caught up.
pub fn pace(planned: &[LeaderTransfer], input: &PacingInput<'_>) -> Vec<LeaderTransfer> {
    let mut per_node: BTreeMap<NodeId, usize> = BTreeMap::new();
    for t in input.settling {
        *per_node.entry(t.from).or_default() += 1;
        *per_node.entry(t.to).or_default() += 1;
    }
    let mut shards: BTreeSet<ShardId> = input.settling.iter().map(|t| t.shard).collect();
    let mut places = input.transfers_max.saturating_sub(input.settling.len());
    let mut now = Vec::new();
    for t in planned {
        if places == 0 {
            break;
        }
        let busy = |n: NodeId| per_node.get(&n).copied().unwrap_or(0) >= TRANSFERS_PER_NODE_MAX;
        if busy(t.from)
            || busy(t.to)
            || shards.contains(&t.shard)
            || input.moving.contains(&t.shard)
            || !(input.caught_up)(t.shard, t.to)
        {
            continue;
        }
        *per_node.entry(t.from).or_default() += 1;
        *per_node.entry(t.to).or_default() += 1;
        shards.insert(t.shard);
        places -= 1;
        now.push(*t);
    }
    now
}

/// Whether a replica that applied `applied` (`None`: it did not say) is caught up with a
/// leader that applied `leader_applied`.
pub fn caught_up(applied: Option<u64>, leader_applied: u64) -> bool {
    applied.is_some_and(|a| a.saturating_add(TRANSFER_CAUGHT_UP_LAG_ENTRIES) >= leader_applied)
}
