//! The node core's side of the node registry: the newest registry this node knows (its
//! own metadata replica's, or one heard from another node), and the cluster's nodes it
//! makes peers of: the bootstrap nodes plus every node registered, less the removed ones.

use super::NodeCore;
use kv_shared::proto::ShardRoute;
use kv_shared::registry::{NodeState, Registry, METADATA_SHARD};
use kv_shared::NodeId;
use std::net::SocketAddr;

impl NodeCore {
    /// The newest node registry this node knows: its own metadata replica's, or the one
    /// last heard from another node, whichever is newer (`None`: none yet).
    pub fn registry(&self) -> Option<Registry> {
        self.registry_ref().cloned()
    }

    fn registry_ref(&self) -> Option<&Registry> {
        let own = self
            .groups
            .get(METADATA_SHARD)
            .and_then(|g| g.sm.registry())
            .filter(|r| r.version > 0);
        match (own, &self.registry_heard) {
            (Some(own), Some(heard)) if heard.version > own.version => Some(heard),
            (Some(own), _) => Some(own),
            (None, heard) => heard.as_ref(),
        }
    }

    /// A node registry another node answered with: kept if newer than the one heard
    /// before (a registry that is not well formed is remote garbage, and ignored).
    pub fn learn_registry(&mut self, registry: Registry) {
        let newer = self
            .registry_heard
            .as_ref()
            .is_none_or(|have| registry.version > have.version);
        if newer && registry.is_well_formed() {
            self.registry_heard = Some(registry);
        }
    }

    /// Every node of the cluster, ascending: the bootstrap nodes and the nodes the
    /// registry lists (nodes that joined later), less the ones it lists as removed.
    pub fn cluster_nodes(&self) -> Vec<NodeId> {
        let mut nodes = self.config.sorted_members();
        let registered = self.registry_ref().into_iter().flat_map(|r| &r.nodes);
        nodes.extend(registered.map(|r| r.id));
        nodes.sort();
        nodes.dedup();
        nodes.retain(|n| !self.is_removed(*n));
        nodes
    }

    /// The registry's state of `node` (`None`: not registered, or no registry known).
    pub fn node_state(&self, node: NodeId) -> Option<NodeState> {
        self.registry_ref().and_then(|r| r.state_of(node))
    }

    /// True if the registry lists `node` as removed: removal is final, so its datagrams
    /// are refused even if the cluster file lists it (it may still run, holding copies
    /// the cluster no longer counts).
    fn is_removed(&self, node: NodeId) -> bool {
        self.node_state(node) == Some(NodeState::Removed)
    }

    /// True if `node` is another node of the cluster ([`NodeCore::cluster_nodes`]).
    pub(super) fn is_peer(&self, node: NodeId) -> bool {
        let registered = || self.node_state(node).is_some();
        node != self.config.node
            && (self.config.members.contains(&node) || registered())
            && !self.is_removed(node)
    }

    /// Where each node of the cluster is reached: the configured addresses, then the
    /// registry's for the nodes they leave out.
    pub(super) fn node_addrs(&self) -> Vec<(NodeId, SocketAddr)> {
        let mut addrs = self.config.addrs.clone();
        for r in self.registry_ref().into_iter().flat_map(|r| &r.nodes) {
            if r.state != NodeState::Removed && !addrs.iter().any(|(id, _)| *id == r.id) {
                addrs.push((r.id, r.addr));
            }
        }
        addrs
    }
}

impl NodeCore {
    /// A metadata group route another node answered with: kept if newer (higher epoch)
    /// than the one heard before, so that a node holding no metadata replica routes
    /// admin operations to the group's voters after it moved off the bootstrap nodes.
    pub fn learn_metadata_route(&mut self, route: ShardRoute) {
        let newer = self
            .metadata_route_heard
            .as_ref()
            .is_none_or(|have| route.epoch > have.epoch);
        if route.shard == METADATA_SHARD && newer {
            self.metadata_route_heard = Some(route);
        }
    }

    /// The metadata group's route when this node holds no replica of it: the newest of
    /// the one heard, the one its removed replica left, and the bootstrap voters.
    pub(super) fn metadata_route_known(&self) -> ShardRoute {
        let bootstrap = ShardRoute {
            shard: METADATA_SHARD,
            epoch: 0,
            voters: self.config.metadata_voters.clone(),
            learners: Vec::new(),
            leader: None,
        };
        [
            self.metadata_route_heard.as_ref(),
            self.removed_routes.get(&METADATA_SHARD),
        ]
        .into_iter()
        .flatten()
        .filter(|r| r.epoch > 0)
        .max_by_key(|r| r.epoch)
        .cloned()
        .unwrap_or(bootstrap)
    }
}
