//! The node core's settings, and how they derive from the cluster file, so the runtime,
//! the simulator and tests all build Raft groups the same way.

use crate::placement::{initial_placement, shards_of, ShardPlacement};
use kv_raft::Membership;
use kv_shared::config::{ClusterConfig, LeaderPolicy};
use kv_shared::limits::SESSIONS_MAX;
use kv_shared::registry::{metadata_voters, METADATA_SHARD};
use kv_shared::{NodeId, ShardId};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use xxhash_rust::xxh64::xxh64;

/// Settings of one node core. Timing is in ticks; the runtime decides how long a tick is.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// This node.
    pub node: NodeId,
    /// Every node of the cluster, this one included.
    pub members: Vec<NodeId>,
    /// Where peers and clients reach each member (for status replies; may be empty).
    pub addrs: Vec<(NodeId, SocketAddr)>,
    /// Groups `0..shard_count` exist in the cluster; this node hosts those its replica
    /// sets name (initially [`NodeConfig::placement`]).
    pub shard_count: u32,
    /// Replicas per shard at bootstrap, `1..=members.len()`.
    pub replication: usize,
    /// The metadata group's bootstrap voters (the first `min(5, N)` bootstrap nodes by
    /// id); empty: no metadata group (course mode, and tests that leave it out).
    pub metadata_voters: Vec<NodeId>,
    /// A pending client request is answered `Timeout` after this many ticks.
    pub request_timeout_ticks: u32,
    /// Take a shard snapshot when more than this many applied entries follow the last one.
    pub snapshot_threshold_entries: u64,
    /// A leader transfers to its shard's preferred leader (see [`NodeConfig::placement`])
    /// once that one is caught up.
    pub spread_leaders: bool,
    /// Whom a leader hands over to (the cluster file's `[placement] leaders`): spread, the
    /// preferred leader of [`NodeConfig::placement`]; pack, the shard's lowest current voter.
    pub leaders: LeaderPolicy,
    /// Run seed: each group's RNG derives from (seed, node, shard).
    pub seed: u64,
    /// The Raft settings of every group of the node (timing in ticks, optional
    /// behaviours, limits); [`NodeConfig::raft_config`] gives each group its own id, seed
    /// and snapshot check.
    pub raft: kv_raft::Config,
    /// Stop ticking idle groups, with a per-node failure detector to wake them
    /// (`NodeCore::tick` explains). With `raft.lease_reads`, a group forgets its lease
    /// when it wakes, since its leader's ticks stood still while time passed.
    pub quiesce: bool,
}

/// kvserver's Raft settings with the given timing. Followers learn the commit index from
/// the next Append or heartbeat (no commit broadcast: a commit-only Append per entry costs
/// 2 datagrams and a follower wake-up each), heartbeats skip followers that just got
/// an Append, and followers serve linearizable gets themselves (ReadIndex asked of the
/// leader) instead of redirecting them.
pub fn kvserver_raft_config(
    node: NodeId,
    heartbeat_ticks: u32,
    election_ticks_min: u32,
    election_ticks_max: u32,
) -> kv_raft::Config {
    kv_raft::Config {
        heartbeat_ticks,
        election_ticks_min,
        election_ticks_max,
        heartbeat_suppression: true,
        broadcast_commit: false,
        follower_reads: true,
        ..kv_raft::Config::new(node, 0)
    }
}

/// The lease margin of kvserver's lease reads: a fifth of the minimum election timeout
/// (at least the 2 ticks kv-raft needs). The margin is the real-time lag of a leader's
/// ticks that the runtime tolerates before it expires the leases
/// (`kv_server`'s lease clock guard), so it must be more than the jitter of a busy event
/// loop's ticks: with local-3's timing, 6 ticks (60 ms) of a 300 ms election timeout.
pub fn lease_margin_ticks(election_ticks_min: u32) -> u32 {
    (election_ticks_min / 5).max(2)
}

impl NodeConfig {
    /// Settings for `node` of a cluster file. The seed comes from the cluster id and node,
    /// so election jitter differs per node.
    pub fn from_cluster(cluster: &ClusterConfig, node: NodeId) -> NodeConfig {
        let t = &cluster.timing;
        NodeConfig {
            node,
            members: cluster.node_ids(),
            addrs: cluster
                .nodes
                .iter()
                .map(|n| (NodeId(n.id), n.addr))
                .collect(),
            shard_count: cluster.shards,
            replication: cluster.replication as usize,
            metadata_voters: metadata_voters(&cluster.node_ids()),
            request_timeout_ticks: t.election_ticks_max * 4,
            snapshot_threshold_entries: 10_000,
            spread_leaders: true,
            leaders: cluster.placement.leaders,
            seed: cluster.cluster_id ^ node.0.rotate_left(32),
            raft: kv_raft::Config {
                lease_reads: t.lease_reads,
                lease_margin_ticks: lease_margin_ticks(t.election_ticks_min),
                ..kvserver_raft_config(
                    node,
                    t.heartbeat_ticks,
                    t.election_ticks_min,
                    t.election_ticks_max,
                )
            },
            // Idle shards cost almost nothing (issue 6).
            quiesce: true,
        }
    }

    /// Small, fast settings for tests: heartbeat 1 tick, elections in 10..20 ticks, every
    /// node holding every shard, no metadata group.
    pub fn for_test(node: NodeId, members: Vec<NodeId>, shard_count: u32) -> NodeConfig {
        NodeConfig {
            node,
            replication: members.len(),
            metadata_voters: Vec::new(),
            members,
            addrs: Vec::new(),
            shard_count,
            request_timeout_ticks: 50,
            snapshot_threshold_entries: 1000,
            spread_leaders: false,
            leaders: LeaderPolicy::Spread,
            seed: 1,
            raft: kvserver_raft_config(node, 1, 10, 20),
            // As kvserver runs, so that tests and the simulator exercise quiescence.
            quiesce: true,
        }
    }

    /// Members in ascending order (the order leader preference uses).
    pub fn sorted_members(&self) -> Vec<NodeId> {
        let mut m = self.members.clone();
        m.sort();
        m.dedup();
        m
    }

    /// The bootstrap replica set and preferred leader of every shard.
    pub fn placement(&self) -> Vec<ShardPlacement> {
        initial_placement(&self.members, self.shard_count, self.replication)
    }

    /// The shards this node holds at bootstrap, each with its initial membership (what
    /// recovery starts a group from when no snapshot says otherwise), and the metadata
    /// group if this node is one of its voters.
    pub fn initial_groups(&self) -> BTreeMap<ShardId, Membership> {
        let placement = self.placement();
        let mut groups: BTreeMap<ShardId, Membership> = shards_of(&placement, self.node)
            .into_iter()
            .map(|shard| {
                let voters = placement[shard.0 as usize].replicas.clone();
                let learners = Vec::new();
                (shard, Membership { voters, learners })
            })
            .collect();
        if self.metadata_voters.contains(&self.node) {
            let voters = self.metadata_voters.clone();
            let learners = Vec::new();
            groups.insert(METADATA_SHARD, Membership { voters, learners });
        }
        groups
    }

    /// True if `shard` is a group of this cluster: a data shard, or the metadata group
    /// when the cluster runs one.
    pub fn is_group(&self, shard: ShardId) -> bool {
        shard.0 < self.shard_count || (shard == METADATA_SHARD && !self.metadata_voters.is_empty())
    }

    /// The Raft settings of one group.
    pub fn raft_config(&self, shard: ShardId) -> kv_raft::Config {
        let mut seed_bytes = [0u8; 20];
        seed_bytes[..8].copy_from_slice(&self.seed.to_le_bytes());
        seed_bytes[8..16].copy_from_slice(&self.node.0.to_le_bytes());
        seed_bytes[16..].copy_from_slice(&shard.0.to_le_bytes());
        kv_raft::Config {
            id: self.node,
            seed: xxh64(&seed_bytes, 0x5eed),
            snapshot_image_check: Some(crate::sm::snapshot_image_restorable),
            // The node core writes every Append into its peer's frame from the log.
            entries_by_reference: true,
            ..self.raft.clone()
        }
    }

    /// Most sessions a shard keeps.
    pub fn sessions_max(&self) -> usize {
        SESSIONS_MAX
    }
}
