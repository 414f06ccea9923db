//! Turns the node core's events into log lines (info level, with node, shard and term
//! fields) and metrics, so elections, leader changes, transfers, membership changes and
//! snapshot transfers leave a trace without the core doing any I/O.

use crate::metrics::Metrics;
use kv_node::{EventKind, NodeEvent};
use kv_shared::NodeId;

fn name(n: Option<NodeId>) -> String {
    n.map_or_else(|| "none".to_string(), |n| n.0.to_string())
}

/// Logs `e` (seen by node `me`) and counts it.
pub fn record(me: NodeId, e: &NodeEvent, metrics: &Metrics) {
    let (node, shard, term) = (me.0, e.shard.0, e.term);
    match &e.kind {
        EventKind::RoleChanged { from, to } => {
            tracing::info!(node, shard, term, "role changed: {from:?} -> {to:?}");
        }
        EventKind::LeaderChanged { from, to } => {
            metrics.leader_change(shard);
            tracing::info!(
                node,
                shard,
                term,
                "leader changed: {} -> {}",
                name(*from),
                name(*to)
            );
        }
        EventKind::ElectionStarted { pre_vote, transfer } => {
            if !pre_vote {
                metrics.election(shard);
            }
            let what = match (pre_vote, transfer) {
                (true, _) => "pre-vote started",
                (false, true) => "election started by a leadership transfer",
                (false, false) => "election started",
            };
            tracing::info!(node, shard, term, "{what}");
        }
        EventKind::TransferStarted { to } => {
            tracing::info!(node, shard, term, to = to.0, "leadership transfer started");
        }
        EventKind::ConfChanged { voters, learners } => {
            let ids = |v: &[NodeId]| {
                v.iter()
                    .map(|n| n.0.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            };
            tracing::info!(
                node,
                shard,
                term,
                voters = ids(voters),
                learners = ids(learners),
                "membership changed"
            );
        }
        EventKind::SnapshotSendStarted { to, index } => {
            metrics.snapshot_sent();
            tracing::info!(node, shard, term, to = to.0, index, "snapshot send started");
        }
        EventKind::SnapshotInstalled { index } => {
            metrics.snapshot_installed();
            tracing::info!(node, shard, term, index, "snapshot installed");
        }
        EventKind::ReplicaCreated { leader } => {
            tracing::info!(
                node,
                shard,
                term,
                leader = leader.0,
                "replica created for a move"
            );
        }
        EventKind::ReplicaRecreated { leader, removed_at } => {
            tracing::info!(
                node,
                shard,
                term,
                leader = leader.0,
                removed_at,
                "replica created again for a move back to this node"
            );
        }
        EventKind::ReplicaRemoved { epoch } => {
            tracing::info!(
                node,
                shard,
                term,
                epoch,
                "replica removed; its data is dropped"
            );
        }
        EventKind::ReplicaForgotten => {
            tracing::info!(
                node,
                shard,
                term,
                "replica created for a move that never listed it: forgotten"
            );
        }
        EventKind::MoveEnded { from, to, refusal } => match refusal {
            None => tracing::info!(node, shard, term, from = from.0, to = to.0, "move done"),
            Some(reason) => tracing::warn!(
                node,
                shard,
                term,
                from = from.0,
                to = to.0,
                %reason,
                "move undone"
            ),
        },
    }
}
