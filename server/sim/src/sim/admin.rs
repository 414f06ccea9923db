//! The Moves profile's operator: a client-side actor that asks a shard's leader to move
//! one of its replicas (`Op::MoveReplica`) or to hand leadership to a voter
//! (`Op::ShardLeader`), one request at a time during the safety phase, interleaved with
//! the profile's crashes, partitions and slow disks. Like kvcli it follows `NotLeader`
//! hints and retries the same request (same session and sequence number) until a
//! give-up deadline, so a move is asked exactly once however often the request travels.

use super::{Ev, Phase, Sim, TICK_NS};
use kv_shared::proto::{ClientError, ClientReply, ClientRequest, Op, Outcome, ShardRoute};
use kv_shared::{ClientId, NodeId, ShardId};
use rand::Rng;

/// Session ids of admin requests carry this tag in their top bits (the workload's
/// clients draw theirs at random; a clash is as likely as between two of them).
const ADMIN_CLIENT_ID_TAG: u64 = 0xAD41_0000_0000_0000;
/// Ticks between one admin request's end and the next one's start.
const ADMIN_PAUSE_TICKS: std::ops::RangeInclusive<u64> = 5..=60;
/// An attempt not answered within this many ticks is sent again.
const ADMIN_ATTEMPT_TICKS: u64 = 60;
/// A request still unanswered this many ticks after it started is abandoned.
const ADMIN_GIVE_UP_TICKS: u64 = 600;
/// Ticks to wait before retrying after an answer that names no leader.
const ADMIN_BACKOFF_TICKS: u64 = 3;

/// The request in flight.
struct AdminRequest {
    req: ClientRequest,
    /// Where the next attempt goes.
    target: NodeId,
    give_up_ns: u64,
}

/// The admin actor's state.
#[derive(Default)]
pub(super) struct Admin {
    pending: Option<AdminRequest>,
    /// Requests started (numbers the sessions).
    started: u64,
    /// Only the newest timer counts.
    timer: u64,
}

/// True if `client` is one of the admin's sessions.
pub(super) fn is_admin(client: ClientId) -> bool {
    client.0 & 0xFFFF_0000_0000_0000 == ADMIN_CLIENT_ID_TAG
}

/// A workload client's id: random and odd, and never one of the admin's, whose replies
/// go to the admin (a draw among them, one in 65,536, is drawn again; every other draw
/// stays as it was, so no other seed's run changes).
pub(super) fn workload_client_id(rng: &mut impl Rng) -> ClientId {
    loop {
        let id = ClientId(rng.gen::<u64>() | 1);
        if !is_admin(id) {
            return id;
        }
    }
}

impl Sim {
    /// Starts the admin's first request some time into the safety phase.
    pub(super) fn start_admin(&mut self) {
        let at = self.now + self.rng.gen_range(20..=80) * TICK_NS;
        self.admin_timer(at);
    }

    fn admin_timer(&mut self, at: u64) {
        let admin = self
            .admin
            .as_mut()
            .expect("the Moves profile runs an admin");
        admin.timer += 1;
        let epoch = admin.timer;
        self.at(at, Ev::AdminWake { epoch });
    }

    /// The admin's timer: start a request, retry the one in flight, or give it up.
    pub(super) fn admin_wake(&mut self, epoch: u64) {
        let Some(admin) = self.admin.as_mut() else {
            return;
        };
        if epoch != admin.timer {
            return;
        }
        match &admin.pending {
            Some(p) if self.now >= p.give_up_ns => {
                self.trace.log(
                    self.now,
                    format!(
                        "admin gives up {:?}",
                        admin.pending.as_ref().map(|p| &p.req.op)
                    ),
                );
                admin.pending = None;
                self.stats.admin.abandoned += 1;
                self.admin_next();
            }
            Some(_) => self.admin_send(),
            None => self.admin_start(),
        }
    }

    /// Schedules the next request after a pause (none once the safety phase is over).
    fn admin_next(&mut self) {
        if self.phase == Phase::Safety {
            let at = self.now + self.rng.gen_range(ADMIN_PAUSE_TICKS) * TICK_NS;
            self.admin_timer(at);
        }
    }

    /// Draws a new request from the freshest replica set of a random shard: a move of a
    /// random voter (the leader included) to a node outside the set, or a new preferred
    /// leader.
    fn admin_start(&mut self) {
        if self.phase != Phase::Safety {
            return;
        }
        if self.churn.is_some() {
            if let Some((op, route)) = self.churn_step() {
                let fallback = route.voters.iter().copied().find(|v| match op {
                    Op::MoveReplica { from, .. } => *v != from,
                    _ => true,
                });
                return self.admin_ask(op, &route, fallback.unwrap_or(route.voters[0]));
            }
            if self.churn_busy() {
                return self.admin_next();
            }
        }
        let shard = self.rng.gen_range(0..self.shards);
        let Some(route) = self.freshest_route(shard) else {
            return self.admin_next();
        };
        let outside: Vec<NodeId> = self
            .move_targets()
            .into_iter()
            .filter(|n| !route.voters.contains(n) && !route.learners.contains(n))
            .collect();
        let voter = route.voters[self.rng.gen_range(0..route.voters.len())];
        let op = if !outside.is_empty() && self.rng.gen_bool(0.75) {
            let to = self.pick_target(shard, &outside);
            Op::MoveReplica {
                shard: ShardId(shard),
                from: voter,
                to,
            }
        } else {
            Op::ShardLeader {
                shard: ShardId(shard),
                node: voter,
            }
        };
        self.admin_ask(op, &route, voter);
    }

    /// Starts request `op`, routed by `route`: to its leader, else to `voter`.
    fn admin_ask(&mut self, op: Op, route: &ShardRoute, voter: NodeId) {
        let target = route.leader.unwrap_or(voter);
        let admin = self.admin.as_mut().expect("admin");
        admin.started += 1;
        // A fresh session per request: sequence number 1 needs no open session, and
        // every retry of it carries the same (client, seq), so it applies once.
        let req = ClientRequest {
            client: ClientId(ADMIN_CLIENT_ID_TAG | admin.started),
            seq: 1,
            epoch: route.epoch,
            op,
        };
        self.trace
            .log(self.now, format!("admin asks {target}: {:?}", req.op));
        admin.pending = Some(AdminRequest {
            req,
            target,
            give_up_ns: self.now + ADMIN_GIVE_UP_TICKS * TICK_NS,
        });
        self.admin_send();
    }

    /// Sends the request in flight to its target and arms the attempt timeout.
    fn admin_send(&mut self) {
        let admin = self.admin.as_mut().expect("admin");
        let Some(p) = admin.pending.as_ref() else {
            return;
        };
        let (node, req) = (p.target, p.req.clone());
        self.send_request(node, &req);
        self.admin_timer(self.now + ADMIN_ATTEMPT_TICKS * TICK_NS);
    }

    /// A node answered one of the admin's requests.
    pub(super) fn admin_reply(&mut self, reply: ClientReply) {
        let admin = self.admin.as_mut().expect("admin replies go to an admin");
        let Some(p) = admin.pending.as_mut() else {
            return;
        };
        if p.req.client != reply.client || p.req.seq != reply.seq {
            return;
        }
        let shard = p.req.op.admin_shard().expect("admin ops name a shard").0;
        let retry_at = |sim: &mut Sim, target: Option<NodeId>| {
            let admin = sim.admin.as_mut().expect("admin");
            let p = admin.pending.as_mut().expect("pending");
            match target {
                Some(t) => {
                    p.target = t;
                    sim.admin_send();
                }
                None => {
                    // Next attempt: wherever the freshest view says the leader is.
                    if let Some(l) = sim.freshest_route(shard).and_then(|r| r.leader) {
                        sim.admin
                            .as_mut()
                            .expect("admin")
                            .pending
                            .as_mut()
                            .expect("pending")
                            .target = l;
                    }
                    sim.admin_timer(sim.now + ADMIN_BACKOFF_TICKS * TICK_NS);
                }
            }
        };
        match reply.outcome {
            Outcome::Done => {
                let moved = matches!(p.req.op, Op::MoveReplica { .. });
                admin.pending = None;
                if moved {
                    self.stats.admin.moves_done += 1;
                } else {
                    self.stats.admin.leader_changes += 1;
                }
                self.admin_next();
            }
            Outcome::Error(ClientError::NotLeader { leader, .. }) => retry_at(self, leader),
            Outcome::Error(ClientError::StaleRoute { route, .. }) => retry_at(self, route.leader),
            Outcome::Error(ClientError::Timeout { .. } | ClientError::NoQuorum { .. }) => {
                retry_at(self, None)
            }
            Outcome::Error(ClientError::MoveRefused { .. }) => {
                admin.pending = None;
                self.stats.admin.refused += 1;
                self.admin_next();
            }
            other => {
                // A preferred leader that stopped being a voter, an overloaded node:
                // an answer an operator reads and moves on from.
                self.trace
                    .log(self.now, format!("admin request refused: {other:?}"));
                admin.pending = None;
                self.stats.admin.refused += 1;
                self.admin_next();
            }
        }
    }

    /// A node among `targets` to move a replica of `shard` to: half the time, when one
    /// exists, a node whose replica of the shard left it (it creates the replica again),
    /// else any of them.
    pub(super) fn pick_target(&mut self, shard: u32, targets: &[NodeId]) -> NodeId {
        let left: Vec<NodeId> = targets
            .iter()
            .copied()
            .filter(|n| {
                let i = self
                    .ids
                    .iter()
                    .position(|id| id == n)
                    .expect("a node of the run");
                self.nodes[i]
                    .run
                    .as_ref()
                    .is_some_and(|r| r.core.has_left(ShardId(shard)))
            })
            .collect();
        if !left.is_empty() && self.rng.gen_bool(0.5) {
            return left[self.rng.gen_range(0..left.len())];
        }
        targets[self.rng.gen_range(0..targets.len())]
    }

    /// The replica set of `shard` with the highest epoch any running replica applied.
    pub(super) fn freshest_route(&self, shard: u32) -> Option<ShardRoute> {
        self.nodes
            .iter()
            .filter_map(|n| n.run.as_ref())
            .filter(|r| r.core.hosts(ShardId(shard)))
            .map(|r| r.core.shard_route(ShardId(shard)))
            .filter(|r| !r.voters.is_empty())
            .max_by_key(|r| (r.epoch, r.leader.is_some()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::mock::StepRng;

    /// A workload client with an id in the admin's range would have its replies taken
    /// for the admin's, in a run that may have no admin.
    #[test]
    fn a_workload_client_never_gets_an_admin_id() {
        let mut rng = StepRng::new(ADMIN_CLIENT_ID_TAG, 1 << 48);
        let id = workload_client_id(&mut rng);
        assert!(!is_admin(id));
        assert_eq!(
            id,
            ClientId(0xAD42_0000_0000_0001),
            "the next draw, made odd"
        );
        let mut rng = StepRng::new(0x1234, 0);
        assert_eq!(
            workload_client_id(&mut rng),
            ClientId(0x1235),
            "a draw outside stays"
        );
    }
}
