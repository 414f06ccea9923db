//! The node core's settings, and how they derive from the cluster file, so the runtime,
//! the simulator and tests all build Raft groups the same way.

use crate::placement::{initial_placement, shards_of, ShardPlacement};
use kv_raft::Membership;
use kv_shared::config::ClusterConfig;
use kv_shared::limits::{
    APPEND_BYTES_MAX, INFLIGHT_APPENDS_MAX, SESSIONS_MAX, SNAPSHOT_CHUNK_BYTES_MAX,
    SNAPSHOT_INFLIGHT_BYTES_MAX,
};
use kv_shared::{NodeId, ShardId};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use xxhash_rust::xxh64::xxh64;

/// Settings of one node core. Timing is in ticks; the runtime decides how long a tick is.
#[derive(Clone, Debug, PartialEq, Eq)]
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
    /// Ticks between leader heartbeats.
    pub heartbeat_ticks: u32,
    /// Election timeout lower bound (inclusive), in ticks.
    pub election_ticks_min: u32,
    /// Election timeout upper bound (exclusive), in ticks.
    pub election_ticks_max: u32,
    /// Raft PreVote.
    pub pre_vote: bool,
    /// Raft CheckQuorum.
    pub check_quorum: bool,
    /// A pending client request is answered `Timeout` after this many ticks.
    pub request_timeout_ticks: u32,
    /// Take a shard snapshot when more than this many applied entries follow the last one.
    pub snapshot_threshold_entries: u64,
    /// A leader transfers to its shard's preferred leader (see [`NodeConfig::placement`])
    /// once that one is caught up.
    pub spread_leaders: bool,
    /// Run seed: each group's RNG derives from (seed, node, shard).
    pub seed: u64,
    /// Optional Raft behaviours, the same for every group of the node.
    pub tuning: RaftTuning,
}

/// The optional Raft behaviours a deployment chooses (each is documented on
/// [`kv_raft::Config`]). Kept apart from the timing so that kvserver, course mode and the
/// simulator share one way of building a group's Raft settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RaftTuning {
    /// Most entry payload bytes in one Append message.
    pub append_bytes_max: usize,
    /// Leader lease reads.
    pub lease_reads: bool,
    /// Ticks taken off the lease for clock drift.
    pub lease_margin_ticks: u32,
    /// Skip heartbeats to followers that recently got an Append.
    pub heartbeat_suppression: bool,
    /// Send an Append to every follower as soon as the commit index advances.
    pub broadcast_commit: bool,
    /// Resend unacknowledged Appends after this many ticks; `None`: every heartbeat.
    pub retransmit_ticks: Option<u32>,
    /// Send new entries at once only to this many most responsive voters.
    pub eager_followers: Option<usize>,
    /// Stop ticking idle groups, with a per-node failure detector to wake them
    /// (`NodeCore::tick` explains). Incompatible with `lease_reads`.
    pub quiesce: bool,
}

impl Default for RaftTuning {
    /// kvserver's choice. Followers learn the commit index from the next Append or
    /// heartbeat: a commit-only Append per entry cost 2 datagrams and a follower wake-up
    /// each, and measured +50% put throughput at 8 shards when removed
    /// (docs/PERFORMANCE.md).
    fn default() -> RaftTuning {
        RaftTuning {
            append_bytes_max: APPEND_BYTES_MAX,
            lease_reads: false,
            lease_margin_ticks: 2,
            heartbeat_suppression: true,
            broadcast_commit: false,
            retransmit_ticks: None,
            eager_followers: None,
            quiesce: false,
        }
    }
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
            heartbeat_ticks: t.heartbeat_ticks,
            election_ticks_min: t.election_ticks_min,
            election_ticks_max: t.election_ticks_max,
            pre_vote: true,
            check_quorum: true,
            request_timeout_ticks: t.election_ticks_max * 4,
            snapshot_threshold_entries: 10_000,
            spread_leaders: true,
            seed: cluster.cluster_id ^ node.0.rotate_left(32),
            // Idle shards cost almost nothing (issue 6).
            tuning: RaftTuning {
                quiesce: true,
                ..RaftTuning::default()
            },
        }
    }

    /// Small, fast settings for tests: heartbeat 1 tick, elections in 10..20 ticks, every
    /// node holding every shard.
    pub fn for_test(node: NodeId, members: Vec<NodeId>, shard_count: u32) -> NodeConfig {
        NodeConfig {
            node,
            replication: members.len(),
            members,
            addrs: Vec::new(),
            shard_count,
            heartbeat_ticks: 1,
            election_ticks_min: 10,
            election_ticks_max: 20,
            pre_vote: true,
            check_quorum: true,
            request_timeout_ticks: 50,
            snapshot_threshold_entries: 1000,
            spread_leaders: false,
            seed: 1,
            // As kvserver runs, so that tests and the simulator exercise quiescence.
            tuning: RaftTuning {
                quiesce: true,
                ..RaftTuning::default()
            },
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
    /// recovery starts a group from when no snapshot says otherwise).
    pub fn initial_groups(&self) -> BTreeMap<ShardId, Membership> {
        let placement = self.placement();
        shards_of(&placement, self.node)
            .into_iter()
            .map(|shard| {
                let voters = placement[shard.0 as usize].replicas.clone();
                let learners = Vec::new();
                (shard, Membership { voters, learners })
            })
            .collect()
    }

    /// The Raft settings of one group.
    pub fn raft_config(&self, shard: ShardId) -> kv_raft::Config {
        let mut seed_bytes = [0u8; 20];
        seed_bytes[..8].copy_from_slice(&self.seed.to_le_bytes());
        seed_bytes[8..16].copy_from_slice(&self.node.0.to_le_bytes());
        seed_bytes[16..].copy_from_slice(&shard.0.to_le_bytes());
        let t = &self.tuning;
        kv_raft::Config {
            id: self.node,
            election_ticks_min: self.election_ticks_min,
            election_ticks_max: self.election_ticks_max,
            heartbeat_ticks: self.heartbeat_ticks,
            pre_vote: self.pre_vote,
            check_quorum: self.check_quorum,
            append_bytes_max: t.append_bytes_max,
            inflight_appends_max: INFLIGHT_APPENDS_MAX,
            snapshot_chunk_bytes_max: SNAPSHOT_CHUNK_BYTES_MAX,
            snapshot_inflight_bytes_max: SNAPSHOT_INFLIGHT_BYTES_MAX,
            seed: xxh64(&seed_bytes, 0x5eed),
            retransmit_ticks: t.retransmit_ticks.unwrap_or(self.heartbeat_ticks),
            broadcast_commit: t.broadcast_commit,
            heartbeat_suppression: t.heartbeat_suppression,
            lease_reads: t.lease_reads,
            lease_margin_ticks: t.lease_margin_ticks,
            eager_followers: t.eager_followers,
            snapshot_image_check: Some(crate::sm::snapshot_image_restorable),
            ..kv_raft::Config::new(self.node, 0)
        }
    }

    /// Most sessions a shard keeps.
    pub fn sessions_max(&self) -> usize {
        SESSIONS_MAX
    }
}
