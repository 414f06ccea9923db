//! How far a cluster is from the balance the planner aims for: what `kvcli rebalance`
//! and `kvcli status` report, and what the tests judge a plan's end state by.

use super::{leader_counts, packed_leader, voters_wanted, Cluster, NodeState};
use crate::config::LeaderPolicy;
use crate::{NodeId, ShardId};

/// One node's share of the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeLoad {
    /// The node.
    pub id: NodeId,
    /// Its state.
    pub state: NodeState,
    /// Replicas it holds (voters and learners).
    pub replicas: usize,
    /// Shards it leads.
    pub leaders: usize,
}

/// How far a cluster is from balanced.
#[derive(Clone, Debug, PartialEq)]
pub struct Assessment {
    /// Every node, ascending.
    pub nodes: Vec<NodeLoad>,
    /// Replicas per live node, on average.
    pub replicas_mean: f64,
    /// Shards led per live node, on average.
    pub leaders_mean: f64,
    /// Replicas on nodes that are not live (draining, down, dead).
    pub replicas_not_live: usize,
    /// Replicas above the mean's ceiling, summed over live nodes: the balance moves left.
    pub replicas_over: usize,
    /// Leaderships above the mean's ceiling, summed over live nodes (with spread leaders;
    /// 0 with packed leaders, which do not even out leader counts).
    pub leaders_over: usize,
    /// Data shards led by a node other than the one the policy names (with packed
    /// leaders: [`super::packed_leader`], when some voter is live; 0 with spread leaders).
    /// A shard without a leader is not counted: no transfer can help it.
    pub leaders_misplaced: usize,
    /// The leader policy `leaders_misplaced` and `leaders_over` judge by.
    pub leaders: LeaderPolicy,
    /// Shards with fewer than R voters on live nodes.
    pub short_shards: Vec<ShardId>,
    /// Shards whose voters are not R (moves cannot fix that).
    pub miscounted_shards: Vec<ShardId>,
    /// Shards with learners (a move in flight).
    pub moving_shards: Vec<ShardId>,
}

impl Assessment {
    /// Every shard has R voters on live nodes and no move in flight, no replica is
    /// elsewhere, replicas per live node are within one of the mean, and leaders are where
    /// the policy puts them: with spread leaders within one of the mean per live node, with
    /// packed leaders each on its shard's packed leader.
    pub fn balanced(&self) -> bool {
        self.replicas_not_live == 0
            && self.replicas_over == 0
            && self.leaders_over == 0
            && self.leaders_misplaced == 0
            && self.short_shards.is_empty()
            && self.miscounted_shards.is_empty()
            && self.moving_shards.is_empty()
            && self.within_one_of_the_mean()
    }

    fn within_one_of_the_mean(&self) -> bool {
        let live = self.nodes.iter().filter(|n| n.state == NodeState::Live);
        live.clone()
            .all(|n| (n.replicas as f64 - self.replicas_mean).abs() < 1.0)
            && (self.leaders == LeaderPolicy::Pack
                || live
                    .clone()
                    .all(|n| (n.leaders as f64 - self.leaders_mean).abs() < 1.0))
    }
}

/// Measures `cluster` against the balance the planner aims for.
pub fn assess(cluster: &Cluster) -> Assessment {
    let leaders = leader_counts(cluster, &cluster.shards);
    let mut ids: Vec<NodeId> = cluster.nodes.iter().map(|n| n.id).collect();
    for s in &cluster.shards {
        ids.extend(s.voters.iter().chain(&s.learners));
    }
    ids.sort();
    ids.dedup();
    let nodes: Vec<NodeLoad> = ids
        .into_iter()
        .map(|id| NodeLoad {
            id,
            state: cluster.state_of(id),
            replicas: cluster
                .shards
                .iter()
                .filter(|s| s.voters.contains(&id) || s.learners.contains(&id))
                .count(),
            leaders: leaders.get(&id).copied().unwrap_or(0),
        })
        .collect();
    let live: Vec<&NodeLoad> = nodes
        .iter()
        .filter(|n| n.state == NodeState::Live)
        .collect();
    let mean = |f: fn(&NodeLoad) -> usize| {
        if live.is_empty() {
            0.0
        } else {
            live.iter().map(|n| f(n)).sum::<usize>() as f64 / live.len() as f64
        }
    };
    let (replicas_mean, leaders_mean) = (mean(|n| n.replicas), mean(|n| n.leaders));
    let over = |f: fn(&NodeLoad) -> usize, m: f64| {
        live.iter()
            .map(|n| f(n).saturating_sub(m.ceil() as usize))
            .sum()
    };
    let is_live = |n: &NodeId| cluster.state_of(*n) == NodeState::Live;
    let (leaders_over, leaders_misplaced) = match cluster.leaders {
        LeaderPolicy::Spread => (over(|n| n.leaders, leaders_mean), 0),
        LeaderPolicy::Pack => {
            let misplaced = (cluster.shards.iter())
                .filter(|s| s.shard != crate::registry::METADATA_SHARD)
                .filter(|s| {
                    let wanted = packed_leader(cluster, s);
                    s.leader.is_some_and(|l| wanted.is_some_and(|p| p != l))
                })
                .count();
            (0, misplaced)
        }
    };
    Assessment {
        replicas_not_live: nodes
            .iter()
            .filter(|n| n.state != NodeState::Live)
            .map(|n| n.replicas)
            .sum(),
        replicas_over: over(|n| n.replicas, replicas_mean),
        leaders_over,
        leaders_misplaced,
        leaders: cluster.leaders,
        short_shards: cluster
            .shards
            .iter()
            .filter(|s| s.voters.iter().filter(|v| is_live(v)).count() < voters_wanted(cluster, s))
            .map(|s| s.shard)
            .collect(),
        miscounted_shards: cluster
            .shards
            .iter()
            .filter(|s| s.voters.len() != voters_wanted(cluster, s))
            .map(|s| s.shard)
            .collect(),
        moving_shards: cluster
            .shards
            .iter()
            .filter(|s| !s.learners.is_empty())
            .map(|s| s.shard)
            .collect(),
        nodes,
        replicas_mean,
        leaders_mean,
    }
}
