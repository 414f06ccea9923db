//! The phases after the safety phase: liveness (faults healed, every shard must elect a
//! leader all nodes agree on, with packed leaders its lowest voter, and every client must
//! make progress) and the read-back.

use super::{is_leader, NetParams, Phase, Sim};
use crate::invariants::Violation;
use kv_shared::{NodeId, ShardId};

impl Sim {
    pub(super) fn start_liveness(&mut self) {
        self.trace
            .log(self.now, "LIVENESS phase: all faults healed".into());
        self.phase = Phase::Liveness;
        self.liveness_start_ns = self.now;
        self.blocked.clear();
        self.net = NetParams::quiet();
        self.disk_latency_ns_max = 0;
        for i in 0..self.nodes.len() {
            self.nodes[i].paused = false;
            self.nodes[i].disk_slow = false;
            if self.nodes[i].run.is_none() && !self.out_of_cluster(i) {
                self.start_node(i);
            }
        }
        self.ok_at_liveness = self.clients.iter().map(|c| c.ok).collect();
    }

    fn agreed_leader(&self, s: u32) -> Option<NodeId> {
        let mut leader = None;
        for (i, n) in self.nodes.iter().enumerate() {
            if self.out_of_cluster(i) {
                continue;
            }
            let r = n.run.as_ref()?;
            let Some(v) = r.core.group_view(ShardId(s)) else {
                continue;
            };
            match (leader, v.leader) {
                (_, None) => return None,
                (None, l) => leader = l,
                (Some(a), Some(b)) if a != b => return None,
                _ => {}
            }
        }
        let l = leader?;
        let r = self.nodes[l.0 as usize - 1].run.as_ref()?;
        is_leader(r.core.group_view(ShardId(s))).then_some(l)
    }

    /// Why shard `s`, whose leader is `leader`, is not yet back to R voters and no
    /// learners with every other copy dropped (a move in flight must finish or be undone).
    fn unsettled(&self, s: u32, leader: NodeId) -> Option<String> {
        let r = self.nodes[leader.0 as usize - 1].run.as_ref()?;
        let route = r.core.shard_route(ShardId(s));
        let strays: Vec<NodeId> = self
            .nodes
            .iter()
            .filter(|n| n.run.as_ref().is_some_and(|r| r.core.hosts(ShardId(s))))
            .map(|n| n.id)
            .filter(|id| !route.voters.contains(id))
            .collect();
        let replication = self.stats.replication;
        (route.voters.len() != replication || !route.learners.is_empty() || !strays.is_empty())
            .then(|| {
                format!(
                    "shard {s} is not settled at epoch {}: voters {:?}, learners {:?} (want {replication} voters, no learners), still held outside them by {strays:?}",
                    route.epoch, route.voters, route.learners
                )
            })
    }

    /// Why shard `s`, whose leader is `leader`, is not yet led where packed leaders put
    /// it: its lowest voter. Not judged when an admin may have named a leader (whose
    /// choice wins over the policy), nor under `--slow-disk-ms`: a leader hands over only
    /// to a voter that has every entry, which a voter behind such a disk seldom has while
    /// the clients write.
    fn unpacked(&self, s: u32, leader: NodeId) -> Option<String> {
        if !self.stats.packed_leaders || self.admin.is_some() || self.opts.slow_disk_ns > 0 {
            return None;
        }
        let r = self.nodes[leader.0 as usize - 1].run.as_ref()?;
        let lowest = *r.core.shard_route(ShardId(s)).voters.iter().min()?;
        (lowest != leader).then(|| {
            format!(
                "shard {s} is led by {leader}, not by its lowest voter {lowest} (packed leaders)"
            )
        })
    }

    pub(super) fn check_liveness_done(&mut self) {
        for s in 0..self.shards {
            match self.agreed_leader(s) {
                Some(l) if self.unsettled(s, l).is_none() && self.unpacked(s, l).is_none() => {}
                _ => return,
            }
        }
        let enough = self
            .clients
            .iter()
            .zip(&self.ok_at_liveness)
            .all(|(c, &base)| c.ok >= base + 3);
        if !enough {
            return;
        }
        self.phase = Phase::ReadBack;
        self.trace
            .log(self.now, "READBACK: every key read once".into());
        for c in &mut self.clients {
            c.stopped = true;
        }
        // Client 0's pending timer (or its current operation's end) starts the script.
        self.clients[0].script = self.keys.clone();
    }

    pub(super) fn readback_finished(&self) -> bool {
        let c = &self.clients[0];
        self.phase == Phase::ReadBack && c.script.is_empty() && !c.busy()
    }

    pub(super) fn liveness_failure(&mut self) {
        let mut missing = Vec::new();
        for s in 0..self.shards {
            if self.agreed_leader(s).is_none() {
                let views: Vec<String> = self
                    .nodes
                    .iter()
                    .filter_map(|n| {
                        let v = n.run.as_ref()?.core.group_view(ShardId(s))?;
                        Some(format!("{}:{:?}/t{}/l{:?}", n.id, v.role, v.term, v.leader))
                    })
                    .collect();
                missing.push(format!(
                    "shard {s} has no agreed leader ({})",
                    views.join(" ")
                ));
            } else if let Some(why) = self
                .agreed_leader(s)
                .and_then(|l| self.unsettled(s, l).or_else(|| self.unpacked(s, l)))
            {
                missing.push(why);
            }
        }
        for (c, &base) in self.clients.iter().zip(&self.ok_at_liveness) {
            if c.ok < base + 3 {
                missing.push(format!(
                    "client {} completed {} ops in the liveness phase (now: {})",
                    c.index,
                    c.ok - base,
                    c.describe()
                ));
            }
        }
        if self.phase == Phase::ReadBack {
            missing.push(format!(
                "read-back unfinished: {}",
                self.clients[0].describe()
            ));
        }
        self.fail(Violation {
            invariant: "liveness",
            detail: format!(
                "after {} ticks without faults: {}",
                self.opts.liveness_ticks,
                missing.join("; ")
            ),
        });
    }
}
