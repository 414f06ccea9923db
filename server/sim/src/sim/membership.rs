//! The Churn profile's membership churn: nodes join (a new id that starts empty and gets
//! replicas only by moves), drain (every replica moved off, then the node leaves for
//! good) and die for good (their replicas rebuilt elsewhere by moves from the dead node),
//! interleaved with the admin's random moves and the profile's crashes, partitions and
//! slow disks. `NodeConfig::for_test` runs no metadata group, so the registry that makes
//! a joined node a peer is handed to every core directly (`NodeCore::learn_registry`).

use super::{Sim, TICK_NS};
use kv_shared::proto::{Op, ShardRoute};
use kv_shared::registry::Registry;
use kv_shared::{NodeId, ShardId};
use rand::Rng;
use std::collections::BTreeSet;
use std::net::SocketAddr;

/// Nodes a Churn run may add after the start (their ids follow the bootstrap nodes').
pub(super) const CHURN_SPARE_NODES: usize = 2;

/// A node on its way out: every replica it holds is moved elsewhere first.
#[derive(Clone, Copy, Debug)]
struct Retiring {
    node: usize,
    /// Killed for good (`node remove --dead`), else drained (`node drain`) and then
    /// stopped.
    dead: bool,
}

/// Which nodes are in the cluster, as an operator's joins, drains and removals left it.
#[derive(Default)]
pub(super) struct MembershipChurn {
    /// Node indexes not joined yet, next first.
    spares: Vec<usize>,
    /// Nodes gone for good (drained and stopped, or dead): never started again.
    retired: BTreeSet<usize>,
    retiring: Option<Retiring>,
    /// The nodes that joined, as every core is told.
    registry: Registry,
}

impl MembershipChurn {
    /// `spares` are the indexes of the nodes that may join later.
    pub(super) fn new(spares: Vec<usize>) -> MembershipChurn {
        MembershipChurn {
            spares,
            ..MembershipChurn::default()
        }
    }
}

fn placeholder_addr(node: NodeId) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7000 + node.0 as u16))
}

impl Sim {
    /// True if node `i` is not part of the cluster now (not joined yet, or gone for
    /// good): it is neither started nor restarted, nor expected to take part in liveness.
    pub(super) fn out_of_cluster(&self, i: usize) -> bool {
        self.churn
            .as_ref()
            .is_some_and(|c| c.spares.contains(&i) || c.retired.contains(&i))
    }

    /// Nodes a replica may move to: in the cluster and not on their way out.
    pub(super) fn move_targets(&self) -> Vec<NodeId> {
        let retiring = self.churn.as_ref().and_then(|c| c.retiring).map(|r| r.node);
        (0..self.nodes.len())
            .filter(|&i| !self.out_of_cluster(i) && Some(i) != retiring)
            .map(|i| self.ids[i])
            .collect()
    }

    /// True while a node is on its way out: the admin moves nothing else meanwhile.
    pub(super) fn churn_busy(&self) -> bool {
        self.churn.as_ref().is_some_and(|c| c.retiring.is_some())
    }

    /// Hands the registry of joined nodes to node `i`'s core (at its start, and to
    /// every running core when a node joins).
    pub(super) fn tell_registry(&mut self, i: usize) {
        let Some(c) = self.churn.as_ref() else {
            return;
        };
        if c.registry.nodes.is_empty() {
            return;
        }
        let registry = c.registry.clone();
        if let Some(r) = self.nodes[i].run.as_mut() {
            r.core.learn_registry(registry);
        }
    }

    /// The Churn admin's step: carry on with a node on its way out, or sometimes begin a
    /// join, a drain or a dead-node removal. Returns the request to ask, if any (else
    /// the admin draws a random move as in the Moves profile).
    pub(super) fn churn_step(&mut self) -> Option<(Op, ShardRoute)> {
        if let Some(r) = self.churn.as_ref().and_then(|c| c.retiring) {
            return self.evacuate(r);
        }
        let active = (0..self.nodes.len())
            .filter(|&i| !self.out_of_cluster(i))
            .count();
        let spare = self.churn.as_ref().and_then(|c| c.spares.first().copied());
        let roll = self.rng.gen_range(0..100);
        match (roll, spare) {
            (0..=24, Some(i)) => self.join(i),
            (25..=44, _) | (45..=59, None) if active > self.stats.replication => {
                let candidates: Vec<usize> = (0..self.nodes.len())
                    .filter(|&i| !self.out_of_cluster(i))
                    .collect();
                let node = candidates[self.rng.gen_range(0..candidates.len())];
                let dead = self.rng.gen_bool(0.4);
                if dead {
                    self.trace.log(
                        self.now,
                        format!(
                            "{} DIES for good; its replicas go elsewhere",
                            self.ids[node]
                        ),
                    );
                    self.crash(node);
                    self.stats.admin.dead_removals += 1;
                } else {
                    self.trace
                        .log(self.now, format!("{} DRAINS", self.ids[node]));
                    self.stats.admin.drains += 1;
                }
                let c = self.churn.as_mut().expect("churn");
                c.retiring = Some(Retiring { node, dead });
                if dead {
                    c.retired.insert(node);
                }
                None
            }
            _ => None,
        }
    }

    /// Node `i` joins: it starts empty, and every core learns it as a peer.
    fn join(&mut self, i: usize) -> Option<(Op, ShardRoute)> {
        let id = self.ids[i];
        let c = self.churn.as_mut().expect("churn");
        c.spares.retain(|&s| s != i);
        let version = c.registry.version + 1;
        c.registry
            .register(version, id, placeholder_addr(id), id.0)
            .expect("a new id registers");
        self.trace.log(self.now, format!("{id} JOINS"));
        self.stats.admin.joins += 1;
        self.start_node(i);
        let phase = self.rng.gen_range(0..TICK_NS);
        self.at(self.now + phase, super::Ev::Tick(i));
        for j in 0..self.nodes.len() {
            self.tell_registry(j);
        }
        None
    }

    /// The next move off the retiring node, or, once no replica set names it and it
    /// holds nothing, its departure.
    fn evacuate(&mut self, r: Retiring) -> Option<(Op, ShardRoute)> {
        let from = self.ids[r.node];
        // A shard no running replica reports on may still list the node: wait for one.
        let routes: Vec<ShardRoute> = (0..self.shards)
            .map(|s| self.freshest_route(s))
            .collect::<Option<_>>()?;
        let named: Vec<&ShardRoute> = routes
            .iter()
            .filter(|route| route.voters.contains(&from) || route.learners.contains(&from))
            .collect();
        let holds = self.nodes[r.node]
            .run
            .as_ref()
            .is_some_and(|run| (0..self.shards).any(|s| run.core.hosts(ShardId(s))));
        if named.is_empty() && !holds {
            self.trace.log(
                self.now,
                format!("{from} holds no replica any more: it leaves for good"),
            );
            if !r.dead {
                self.crash(r.node);
            }
            let c = self.churn.as_mut().expect("churn");
            c.retired.insert(r.node);
            c.retiring = None;
            return None;
        }
        let route = named
            .into_iter()
            .find(|route| route.voters.contains(&from))?
            .clone();
        let targets: Vec<NodeId> = self
            .move_targets()
            .into_iter()
            .filter(|n| !route.voters.contains(n) && !route.learners.contains(n))
            .collect();
        if targets.is_empty() {
            return None;
        }
        let to = self.pick_target(route.shard.0, &targets);
        Some((
            Op::MoveReplica {
                shard: route.shard,
                from,
                to,
            },
            route,
        ))
    }
}
