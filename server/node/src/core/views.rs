//! Read-only views of the node core for the runtime, status and the simulator: status,
//! refusal counters, shard routes, per-shard views, digests and pending-request counts.
//! Split from core.rs to keep that file readable.

use super::{BoundaryRefusal, GroupView, NodeCore};
use kv_shared::proto::{ClientError, NodeStatus, ShardRoute, ShardStatus};
use kv_shared::registry::METADATA_SHARD;
use kv_shared::{NodeId, ShardId};

impl NodeCore {
    /// Remote input refused so far, by reason: the node core's boundary checks, then
    /// kv-raft's, summed over every group. Every reason is listed, zero or not.
    pub fn refusals(&self) -> Vec<(&'static str, u64)> {
        let mut raft = kv_raft::Refusals::default();
        for g in self.groups.iter() {
            raft.add(&g.raft.refusals());
        }
        BoundaryRefusal::ALL
            .iter()
            .map(|r| (r.name(), self.boundary_refusals[*r as usize]))
            .chain(raft.iter().map(|(r, n)| (r.name(), n)))
            .collect()
    }

    /// The answer to a request this node cannot serve for `shard` by the replica set the
    /// client routed by: where the shard lives, as this node knows it.
    pub(super) fn stale_route(&self, shard: ShardId) -> ClientError {
        ClientError::StaleRoute {
            node: self.config.node,
            route: self.shard_route(shard),
        }
    }

    /// This node's view of where `shard` lives: its own replica's membership if it hosts
    /// one, else the bootstrap placement.
    pub fn shard_route(&self, shard: ShardId) -> ShardRoute {
        match self.groups.get(shard) {
            Some(g) => {
                let m = g.raft.status().membership;
                ShardRoute {
                    shard,
                    epoch: g.sm.membership_epoch(),
                    voters: m.voters,
                    learners: m.learners,
                    leader: g.soft.leader,
                }
            }
            None if shard == METADATA_SHARD => self.metadata_route_known(),
            None if self.removed_routes.contains_key(&shard) => self.removed_routes[&shard].clone(),
            None => ShardRoute {
                shard,
                epoch: 0,
                voters: self.placement[shard.0 as usize].replicas.clone(),
                learners: Vec::new(),
                leader: None,
            },
        }
    }

    /// The status table (also served to `Op::Status`).
    pub fn status(&self) -> NodeStatus {
        // The metadata group is no shard of the keyspace: status shows its registry.
        let shards = self
            .groups
            .iter()
            .filter(|g| g.shard != METADATA_SHARD)
            .map(|g| {
                let st = g.raft.status();
                ShardStatus {
                    shard: g.shard,
                    role: st.role,
                    term: st.hard.term,
                    leader: st.leader,
                    commit: st.hard.commit,
                    applied: g.sm.applied_index(),
                    log_entries: st.last_index.saturating_sub(st.snapshot_index),
                    snapshot_index: st.snapshot_index,
                    keys: g.sm.keys() as u64,
                    epoch: g.sm.membership_epoch(),
                    replicas: st.progress,
                }
            })
            .collect();
        let peers = self
            .cluster_nodes()
            .into_iter()
            .filter(|p| *p != self.config.node)
            .map(|p| {
                let since = self
                    .peers_heard_ms
                    .get(&p)
                    .map(|t| self.now_ms.saturating_sub(*t));
                (p, since)
            })
            .collect();
        NodeStatus {
            node: self.config.node,
            shard_count: self.config.shard_count,
            shards,
            peers,
            refused: self
                .refusals()
                .into_iter()
                .map(|(reason, n)| (reason.to_string(), n))
                .collect(),
            drops: Vec::new(),
            counters: Vec::new(),
            nodes: self.node_addrs(),
            routes: (0..self.config.shard_count)
                .map(|s| self.shard_route(ShardId(s)))
                .collect(),
            registry: self.registry().map(Box::new),
            metadata: self
                .config
                .is_group(METADATA_SHARD)
                .then(|| Box::new(self.shard_route(METADATA_SHARD))),
        }
    }

    /// True if this node holds a replica of `shard`. The per-shard accessors below
    /// panic for a shard not hosted here.
    pub fn hosts(&self, shard: ShardId) -> bool {
        self.groups.contains(shard)
    }

    /// True if this node's replica of `shard` left it (a tombstone) and is not held
    /// again: a move back to this node creates it again (the simulator aims moves there).
    pub fn has_left(&self, shard: ShardId) -> bool {
        self.removed.contains_key(&shard)
    }

    /// The shards this node holds a replica of, ascending.
    pub fn hosted_shards(&self) -> Vec<ShardId> {
        self.groups.ids()
    }

    /// Raft's view of one shard (for invariant checks).
    pub fn raft_status(&self, shard: ShardId) -> kv_raft::Status {
        self.groups[shard].raft.status()
    }

    /// The cheap per-shard view the simulator checks after every step (`None`: the shard
    /// is not hosted here).
    pub fn group_view(&self, shard: ShardId) -> Option<GroupView> {
        self.groups.get(shard).map(|g| GroupView {
            role: g.soft.role,
            term: g.soft.term,
            leader: g.soft.leader,
            applied: g.sm.applied_index(),
            proposed_writes: g.proposed_writes,
        })
    }

    /// The known leader of `shard` (`None` also when the shard is not hosted here).
    pub fn leader_of(&self, shard: ShardId) -> Option<NodeId> {
        self.groups.get(shard).and_then(|g| g.soft.leader)
    }

    /// Records that a datagram from `peer` arrived at wall time `now_ms` (for status).
    /// Only members are recorded: sender ids are remote input.
    pub fn note_peer_heard(&mut self, peer: NodeId, now_ms: u64) {
        self.now_ms = self.now_ms.max(now_ms);
        if self.is_peer(peer) {
            self.peers_heard_ms.insert(peer, now_ms);
        }
    }

    /// Sets the wall time status reports measure against.
    pub fn set_now_ms(&mut self, now_ms: u64) {
        self.now_ms = self.now_ms.max(now_ms);
    }

    /// Requests accepted and not yet answered.
    pub fn pending_requests(&self) -> usize {
        self.requests.len()
    }

    /// Key and value bytes of the requests accepted and not yet answered.
    pub fn pending_request_bytes(&self) -> usize {
        self.pending_request_bytes
    }

    /// (applied index, state digest) of one shard's state machine (`None`: not hosted).
    pub fn state_digest(&self, shard: ShardId) -> Option<(u64, u64)> {
        let sm = &self.groups.get(shard)?.sm;
        Some((sm.applied_index(), sm.digest()))
    }
}
