//! The node registry: which nodes the cluster knows, where they are and which data
//! directory each runs on. It is the state of the metadata group (a Raft group of its
//! own, on the shard id [`METADATA_SHARD`]); nodes and kvcli read it from status replies.

use crate::ids::{NodeId, ShardId};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::SocketAddr;

/// The metadata group's shard id. Keys hash to `0..shard_count` and `SHARDS_MAX` is far
/// below it, so no key ever lands on it.
pub const METADATA_SHARD: ShardId = ShardId(u32::MAX);
const _: () = assert!(crate::limits::SHARDS_MAX < METADATA_SHARD.0);

/// Most replicas of the metadata group: the first nodes of the cluster file, up to this.
pub const METADATA_VOTERS_MAX: usize = 5;

/// The metadata group's voters: the first `min(5, N)` of the bootstrap nodes by id.
pub fn metadata_voters(bootstrap_nodes: &[NodeId]) -> Vec<NodeId> {
    let mut nodes = bootstrap_nodes.to_vec();
    nodes.sort();
    nodes.dedup();
    nodes.truncate(METADATA_VOTERS_MAX);
    nodes
}

/// Where a node is in its life in the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum NodeState {
    /// Registered, and not yet known to every node that answers: those nodes would
    /// refuse its datagrams, so it receives no replica. The node marks itself active
    /// once every node answering its status poll lists it ([`Registry::known_to_all`]).
    Joining,
    /// Serving; may receive replicas.
    Active,
    /// Its replicas are being moved away.
    Draining,
    /// Gone for good; its id is never used again.
    Removed,
}

impl NodeState {
    /// The lower-case name output and `--json` use.
    pub fn name(self) -> &'static str {
        match self {
            NodeState::Joining => "joining",
            NodeState::Active => "active",
            NodeState::Draining => "draining",
            NodeState::Removed => "removed",
        }
    }
}

impl fmt::Display for NodeState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One node of the registry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// The node.
    pub id: NodeId,
    /// Where peers and clients reach it.
    pub addr: SocketAddr,
    /// Its state.
    pub state: NodeState,
    /// The random identity of its data directory, made when the directory was: a node
    /// that comes back with another one (an empty or foreign directory) is refused.
    pub identity: u64,
}

/// Why the registry refused a registration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum RegisterRefusal {
    /// The id is registered under another data-directory identity: the node's data
    /// directory is empty or not its own. Ids are never reused.
    #[error("node {node} is registered with data-dir identity {registered:016x}, and this data directory has {presented:016x}: its data directory is empty or belongs to another node. A node whose disk died comes back under a new id: start it with --join and a new --node id")]
    IdentityMismatch {
        /// The node.
        node: NodeId,
        /// The identity the registry holds.
        registered: u64,
        /// The identity the node presented.
        presented: u64,
    },
    /// The id belongs to a removed node; ids are never reused.
    #[error("node {node} was removed from the cluster and its id is never reused: start the node under a new id with --join")]
    Removed {
        /// The node.
        node: NodeId,
    },
}

/// Why the registry refused to change a node's state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum NodeStateRefusal {
    /// The id was never registered.
    #[error("node {node} is not in the node registry (registered: {registered})")]
    Unknown {
        /// The node.
        node: NodeId,
        /// The registered ids, for the message.
        registered: String,
    },
    /// The node was removed: removal is final, its id is never used again.
    #[error("node {node} was removed from the cluster; removal is final")]
    Removed {
        /// The node.
        node: NodeId,
    },
    /// Only `active` (from `joining`), `draining` and `removed` are set; `joining` comes
    /// with a registration.
    #[error(
        "a node's state can be set to active (from joining), draining or removed, not {state}"
    )]
    NotSettable {
        /// The state asked for.
        state: NodeState,
    },
    /// `active` is set only on a joining node: a draining node does not come back.
    #[error("node {node} is {state}; only a joining node becomes active")]
    NotJoining {
        /// The node.
        node: NodeId,
        /// Its state.
        state: NodeState,
    },
}

/// The registry: every node ever registered, by id, the version (the metadata group's
/// log index of its last change; 0: nothing registered yet), and whether the balancer
/// is paused (replicated here so that a new metadata leader keeps it paused).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registry {
    /// The metadata log index of the last change.
    pub version: u64,
    /// The nodes, ascending by id.
    pub nodes: Vec<NodeRecord>,
    /// The balancer starts no move or leader transfer while this holds.
    pub balancer_paused: bool,
}

impl Registry {
    /// The record of `node`, if registered.
    pub fn get(&self, node: NodeId) -> Option<&NodeRecord> {
        self.nodes.iter().find(|r| r.id == node)
    }

    /// Registers `node` (applied at metadata log index `index`): a new id becomes
    /// joining; a known id with the same identity only updates its address; a known id
    /// under another identity, or a removed one, is refused and nothing changes.
    pub fn register(
        &mut self,
        index: u64,
        node: NodeId,
        addr: SocketAddr,
        identity: u64,
    ) -> Result<(), RegisterRefusal> {
        match self.nodes.binary_search_by_key(&node, |r| r.id) {
            Ok(i) => {
                let r = &mut self.nodes[i];
                if r.identity != identity {
                    return Err(RegisterRefusal::IdentityMismatch {
                        node,
                        registered: r.identity,
                        presented: identity,
                    });
                }
                if r.state == NodeState::Removed {
                    return Err(RegisterRefusal::Removed { node });
                }
                if r.addr != addr {
                    r.addr = addr;
                    self.version = index;
                }
            }
            Err(i) => {
                self.nodes.insert(
                    i,
                    NodeRecord {
                        id: node,
                        addr,
                        state: NodeState::Joining,
                        identity,
                    },
                );
                self.version = index;
            }
        }
        Ok(())
    }

    /// Marks `node` active (only from joining), draining or removed (applied at metadata
    /// log index `index`). Setting the state it already has changes nothing; a removed
    /// node stays removed.
    pub fn set_state(
        &mut self,
        index: u64,
        node: NodeId,
        state: NodeState,
    ) -> Result<(), NodeStateRefusal> {
        if state == NodeState::Joining {
            return Err(NodeStateRefusal::NotSettable { state });
        }
        let registered = self.registered_ids();
        let Some(r) = self.nodes.iter_mut().find(|r| r.id == node) else {
            return Err(NodeStateRefusal::Unknown { node, registered });
        };
        if r.state == state {
            return Ok(());
        }
        if r.state == NodeState::Removed {
            return Err(NodeStateRefusal::Removed { node });
        }
        if state == NodeState::Active && r.state != NodeState::Joining {
            return Err(NodeStateRefusal::NotJoining {
                node,
                state: r.state,
            });
        }
        r.state = state;
        self.version = index;
        Ok(())
    }

    /// Pauses or resumes the balancer (applied at metadata log index `index`).
    pub fn set_balancer_paused(&mut self, index: u64, paused: bool) {
        if self.balancer_paused != paused {
            self.balancer_paused = paused;
            self.version = index;
        }
    }

    /// The state of `node` (`None`: not registered).
    pub fn state_of(&self, node: NodeId) -> Option<NodeState> {
        self.get(node).map(|r| r.state)
    }

    fn registered_ids(&self) -> String {
        let ids: Vec<String> = self.nodes.iter().map(|r| r.id.0.to_string()).collect();
        if ids.is_empty() {
            "none".into()
        } else {
            ids.join(", ")
        }
    }

    /// What the registry says of `node` starting with `identity`: `Err` if it must not
    /// run (its id registered under another identity, or removed).
    pub fn check(&self, node: NodeId, identity: u64) -> Result<(), RegisterRefusal> {
        match self.get(node) {
            Some(r) if r.identity != identity => Err(RegisterRefusal::IdentityMismatch {
                node,
                registered: r.identity,
                presented: identity,
            }),
            Some(r) if r.state == NodeState::Removed => Err(RegisterRefusal::Removed { node }),
            _ => Ok(()),
        }
    }

    /// Whether joining `node` may become active: every registry in `heard` (one per node
    /// that answered a status poll, its own included) lists it. Until then some node
    /// would refuse its datagrams (`unknown_sender`) and a move to it would fail.
    pub fn known_to_all(node: NodeId, heard: &[&Registry]) -> bool {
        !heard.is_empty() && heard.iter().all(|r| r.get(node).is_some())
    }

    /// Well formed: ids ascending without repeats, none of them 0 (checked on images
    /// and on what a status reply carries).
    pub fn is_well_formed(&self) -> bool {
        self.nodes.windows(2).all(|w| w[0].id < w[1].id)
            && self.nodes.iter().all(|r| !r.id.is_none())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn a_new_id_registers_joining_and_a_repeat_changes_nothing() {
        let mut r = Registry::default();
        r.register(3, NodeId(2), addr(2), 0xaa).unwrap();
        r.register(4, NodeId(1), addr(1), 0xbb).unwrap();
        assert_eq!(r.version, 4);
        assert_eq!(r.nodes.iter().map(|n| n.id.0).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(r.get(NodeId(2)).unwrap().state, NodeState::Joining);
        r.register(9, NodeId(2), addr(2), 0xaa).unwrap();
        assert_eq!(r.version, 4, "a repeat is no change");
        r.register(10, NodeId(2), addr(7), 0xaa).unwrap();
        assert_eq!((r.version, r.get(NodeId(2)).unwrap().addr), (10, addr(7)));
        assert!(r.is_well_formed());
    }

    #[test]
    fn a_known_id_under_another_identity_is_refused_with_what_to_do() {
        let mut r = Registry::default();
        r.register(1, NodeId(1), addr(1), 0xaa).unwrap();
        let e = r.register(2, NodeId(1), addr(1), 0xcc).unwrap_err();
        assert_eq!(
            e,
            RegisterRefusal::IdentityMismatch {
                node: NodeId(1),
                registered: 0xaa,
                presented: 0xcc
            }
        );
        let msg = e.to_string();
        assert!(msg.contains("node n1") && msg.contains("--join"), "{msg}");
        assert_eq!(r.version, 1);
        assert_eq!(r.check(NodeId(1), 0xcc), Err(e));
        assert_eq!(r.check(NodeId(1), 0xaa), Ok(()));
        assert_eq!(r.check(NodeId(5), 0xcc), Ok(()), "unknown ids may register");
    }

    #[test]
    fn a_removed_id_is_never_reused() {
        let mut r = Registry::default();
        r.register(1, NodeId(3), addr(3), 7).unwrap();
        r.nodes[0].state = NodeState::Removed;
        assert_eq!(
            r.register(2, NodeId(3), addr(3), 7),
            Err(RegisterRefusal::Removed { node: NodeId(3) })
        );
    }

    #[test]
    fn drain_then_remove_is_final_and_each_change_is_a_version() {
        let mut r = Registry::default();
        r.register(1, NodeId(1), addr(1), 7).unwrap();
        r.register(2, NodeId(2), addr(2), 8).unwrap();
        r.set_state(3, NodeId(1), NodeState::Active).unwrap();
        r.set_state(4, NodeId(2), NodeState::Active).unwrap();
        r.set_state(5, NodeId(2), NodeState::Draining).unwrap();
        assert_eq!(
            (r.version, r.state_of(NodeId(2))),
            (5, Some(NodeState::Draining))
        );
        r.set_state(6, NodeId(2), NodeState::Draining).unwrap();
        assert_eq!(r.version, 5, "a repeat is no change");
        r.set_state(7, NodeId(2), NodeState::Removed).unwrap();
        assert_eq!(r.state_of(NodeId(2)), Some(NodeState::Removed));
        assert_eq!(
            r.set_state(8, NodeId(2), NodeState::Draining),
            Err(NodeStateRefusal::Removed { node: NodeId(2) })
        );
        assert_eq!(r.set_state(9, NodeId(2), NodeState::Removed), Ok(()));
        assert_eq!(
            r.register(10, NodeId(2), addr(2), 8),
            Err(RegisterRefusal::Removed { node: NodeId(2) })
        );
        let e = r.set_state(11, NodeId(4), NodeState::Removed).unwrap_err();
        assert_eq!(
            e.to_string(),
            "node n4 is not in the node registry (registered: 1, 2)"
        );
        assert_eq!(
            r.set_state(12, NodeId(1), NodeState::Joining),
            Err(NodeStateRefusal::NotSettable {
                state: NodeState::Joining
            })
        );
        assert_eq!(r.version, 7);
        r.set_balancer_paused(13, true);
        r.set_balancer_paused(14, true);
        assert!(r.balancer_paused);
        assert_eq!(r.version, 13);
    }

    #[test]
    fn a_joining_node_becomes_active_once_every_answering_node_lists_it() {
        let mut knows_both = Registry::default();
        knows_both.register(1, NodeId(1), addr(1), 7).unwrap();
        knows_both.register(2, NodeId(4), addr(4), 8).unwrap();
        let mut stale = knows_both.clone();
        stale.nodes.retain(|n| n.id != NodeId(4));
        assert!(!Registry::known_to_all(NodeId(4), &[&knows_both, &stale]));
        assert!(Registry::known_to_all(
            NodeId(4),
            &[&knows_both, &knows_both]
        ));
        assert!(!Registry::known_to_all(NodeId(4), &[]), "nobody heard yet");
        knows_both
            .set_state(3, NodeId(4), NodeState::Active)
            .unwrap();
        assert_eq!(knows_both.state_of(NodeId(4)), Some(NodeState::Active));
        knows_both
            .set_state(4, NodeId(4), NodeState::Draining)
            .unwrap();
        assert_eq!(
            knows_both.set_state(5, NodeId(4), NodeState::Active),
            Err(NodeStateRefusal::NotJoining {
                node: NodeId(4),
                state: NodeState::Draining
            })
        );
    }

    #[test]
    fn metadata_voters_are_the_first_five_by_id() {
        let ids: Vec<NodeId> = [7, 1, 3, 2, 9, 4, 5].into_iter().map(NodeId).collect();
        assert_eq!(metadata_voters(&ids), [1, 2, 3, 4, 5].map(NodeId).to_vec());
        assert_eq!(metadata_voters(&ids[..2]), [1, 7].map(NodeId).to_vec());
    }
}
