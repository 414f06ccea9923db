//! Checks the simulator runs beside the invariant `Checker`: commit and applied progress
//! per tick, every accepted request answered in time, and at the end equal states at
//! equal applied indexes and a linearizable client history.

use super::Sim;
use crate::invariants::Violation;
use kv_node::GroupView;
use kv_shared::linearizability::{check, CheckBudget, Operation, Verdict};
use kv_shared::proto::Role;
use kv_shared::{NodeId, ShardId};
use std::collections::BTreeMap;

impl Sim {
    /// Node `i` just answered a stale read of `shard`, routed by `epoch`, from its own
    /// state (stale reads are answered at once). A replica that applied its own removal
    /// serves nothing of the shard, and none serves a stale read to a client that knows a
    /// newer replica set than its own (it may have been removed without knowing).
    pub(super) fn check_stale_read(
        &self,
        i: usize,
        shard: u32,
        epoch: u64,
    ) -> Result<(), Violation> {
        let id = self.ids[i];
        let r = self.nodes[i].run.as_ref().expect("running");
        let route = r.core.shard_route(ShardId(shard));
        let fail = |why: String| {
            Err(Violation {
                invariant: "removed replica serves no reads",
                detail: format!("shard {shard}: {id} served a stale read {why}"),
            })
        };
        if epoch > route.epoch {
            return fail(format!(
                "routed by epoch {epoch}, newer than its own {}",
                route.epoch
            ));
        }
        // Raft's membership changes at commit, the state machine's at apply: judge only
        // a replica that has applied everything it knows committed.
        let applied = r.core.group_view(ShardId(shard)).map_or(0, |v| v.applied);
        let member = route.voters.contains(&id) || route.learners.contains(&id);
        if member || applied < r.core.raft_status(ShardId(shard)).hard.commit {
            return Ok(());
        }
        fail(format!(
            "after applying epoch {} without itself (voters {:?}, learners {:?})",
            route.epoch, route.voters, route.learners
        ))
    }

    /// Records the membership of every shard node `i` holds, and forgets the tracked log
    /// of a replica it dropped (a replica created there later starts empty). The first
    /// replica to apply a promotion (the leader, at its commit) checks that the learner's
    /// replica held the log up to the change that added it.
    fn observe_membership(&mut self, i: usize) -> Result<(), Violation> {
        let id = self.ids[i];
        if self.hosted.len() < self.nodes.len() {
            self.hosted = vec![vec![false; self.shards as usize]; self.nodes.len()];
        }
        let r = self.nodes[i].run.as_ref().expect("running");
        for s in 0..self.shards {
            let hosts = r.core.hosts(ShardId(s));
            if self.hosted[i][s as usize] && !hosts {
                self.checker.dropped(id, s);
            }
            self.hosted[i][s as usize] = hosts;
            if hosts {
                let route = r.core.shard_route(ShardId(s));
                if route.epoch > self.checker.newest_epoch(s) {
                    let promoted =
                        self.checker
                            .promotions(s, route.epoch, &route.voters, &route.learners);
                    for (learner, added_at) in promoted {
                        self.check_promoted(s, learner, added_at)?;
                    }
                }
                let r = self.nodes[i].run.as_ref().expect("running");
                let route = r.core.shard_route(ShardId(s));
                let members: Vec<NodeId> = route
                    .voters
                    .iter()
                    .chain(&route.learners)
                    .copied()
                    .collect();
                self.checker
                    .applied_membership(s, route.epoch, &members, self.now);
            }
        }
        Ok(())
    }

    /// `learner` was just promoted in `shard`: its replica, if its node runs, must hold
    /// the log up to `added_at` (durably: its leader counted only acknowledged entries).
    fn check_promoted(&self, shard: u32, learner: NodeId, added_at: u64) -> Result<(), Violation> {
        let Some(i) = self.ids.iter().position(|n| *n == learner) else {
            return Ok(());
        };
        let Some(r) = self.nodes[i].run.as_ref() else {
            return Ok(());
        };
        let held = if r.core.hosts(ShardId(shard)) {
            let st = r.core.raft_status(ShardId(shard));
            st.persisted.max(st.snapshot_index)
        } else {
            0
        };
        self.checker
            .learner_promoted(shard, learner, added_at, held)
    }
    /// After every step of node `i`: its commit index (every entry up to it counts as
    /// committed), election safety and leader completeness, monotonic applied; with
    /// replica moves, the memberships it applied and the replicas it dropped or created.
    pub(super) fn check_groups(&mut self, i: usize) -> Result<(), Violation> {
        let id = self.ids[i];
        if self.admin.is_some() {
            self.observe_membership(i)?;
        }
        let r = self.nodes[i].run.as_ref().expect("running");
        for s in 0..self.shards {
            let Some(v) = r.core.group_view(ShardId(s)) else {
                continue;
            };
            let st = r.core.raft_status(ShardId(s));
            let commit = st.hard.commit;
            self.checker.committed(id, s, commit, st.hard.term)?;
            self.checker.membership_at_commit(
                id,
                s,
                commit,
                &st.membership.voters,
                &st.membership.learners,
            )?;
            if v.role == Role::Leader {
                self.checker.saw_leader(id, s, v.term)?;
            }
            self.checker.progress(id, s, None, v.applied)?;
        }
        Ok(())
    }
    pub(super) fn check_progress(&mut self, i: usize) {
        let id = self.ids[i];
        let Some(r) = self.nodes[i].run.as_ref() else {
            return;
        };
        for s in 0..self.shards {
            let Some(GroupView { applied, .. }) = r.core.group_view(ShardId(s)) else {
                continue;
            };
            let st = r.core.raft_status(ShardId(s));
            if let Err(v) = self.checker.progress(id, s, Some(st.hard.commit), applied) {
                return self.fail(v);
            }
        }
    }

    /// Every request a live node took must be answered within its request timeout.
    pub(super) fn check_unanswered(&mut self, i: usize) {
        let inc = self.nodes[i].inc;
        let ticks = self.nodes[i].ticks;
        let limit = self.request_timeout_ticks + 2;
        let late = self
            .outstanding
            .iter()
            .find(|(_, o)| o.node == i && o.inc == inc && ticks > o.issued_tick + limit);
        if let Some((token, o)) = late {
            let detail = format!(
                "{} has not answered request {token} after {} ticks (request timeout {})",
                self.ids[i],
                ticks - o.issued_tick,
                self.request_timeout_ticks
            );
            self.fail(Violation {
                invariant: "every request answered",
                detail,
            });
        }
    }

    pub(super) fn final_checks(&mut self) {
        // Writes still in flight may yet take effect: their outcome is unknown.
        for c in &mut self.clients {
            c.abandon(self.now, &mut self.history);
        }
        // Replicas that applied the same prefix hold the same state.
        for s in 0..self.shards {
            let mut by_index: BTreeMap<u64, (NodeId, u64)> = BTreeMap::new();
            for n in &self.nodes {
                let Some(r) = n.run.as_ref() else { continue };
                let Some((applied, digest)) = r.core.state_digest(ShardId(s)) else {
                    continue;
                };
                if let Some((other, d)) = by_index.get(&applied) {
                    if *d != digest {
                        let detail = format!("shard {s}: {} and {other} applied up to {applied} but hold different states", n.id);
                        return self.fail(Violation {
                            invariant: "state machine safety",
                            detail,
                        });
                    }
                }
                by_index.insert(applied, (n.id, digest));
            }
        }
        let budget = CheckBudget {
            steps_per_key_max: 2_000_000,
            steps_total_max: 10_000_000,
            shrink_steps_max: 500_000,
            ..CheckBudget::default()
        };
        match check(&self.history, budget) {
            Verdict::Linearizable => {}
            Verdict::NotLinearizable {
                explanation, key, ..
            } => {
                let mut ops: Vec<&Operation> =
                    self.history.iter().filter(|o| o.key == key).collect();
                ops.sort_by_key(|o| o.invoke_ns);
                let lines: Vec<String> = ops
                    .iter()
                    .map(|o| {
                        format!(
                            "history {:?}: client {:x} {:?} -> {:?} [{} .. {}]",
                            String::from_utf8_lossy(&key),
                            o.client,
                            o.op,
                            o.result,
                            o.invoke_ns,
                            o.complete_ns
                        )
                    })
                    .collect();
                for l in lines {
                    self.trace.log(self.now, l);
                }
                self.fail(Violation {
                    invariant: "linearizability",
                    detail: explanation,
                })
            }
            Verdict::Timeout { key } => self.fail(Violation {
                invariant: "linearizability checker budget",
                detail: format!(
                    "no verdict for key {:?} within the budget",
                    String::from_utf8_lossy(&key)
                ),
            }),
        }
    }
}
