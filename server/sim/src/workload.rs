//! Simulated clients: each runs one operation at a time under its session, as kvcli does
//! (leader cache per shard, redirects, retries under the same sequence number, a give-up
//! deadline), and records what it observed for the linearizability check.

use bytes::Bytes;
use kv_shared::linearizability::{KvOp, KvResult, Operation};
use kv_shared::proto::{ClientError, ClientReply, ClientRequest, Op, Outcome, ShardRoute};
use kv_shared::shard::shard_for_key;
use kv_shared::{ClientId, NodeId};
use rand::rngs::SmallRng;
use rand::Rng;

/// What a client wants the simulator to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send this request to this node now, and wake me at `wake_ns` with `epoch`.
    Send {
        /// Target.
        node: NodeId,
        /// The request.
        req: ClientRequest,
        /// Attempt timeout.
        wake_ns: u64,
        /// Epoch of the timer.
        epoch: u64,
    },
    /// Wake me at `wake_ns` with `epoch` (think time or backoff).
    Wake {
        /// When.
        wake_ns: u64,
        /// Epoch of the timer.
        epoch: u64,
    },
    /// Nothing to do.
    Idle,
}

/// The operation a client is working on.
#[derive(Clone, Debug)]
struct Pending {
    req: ClientRequest,
    key: Bytes,
    op: KvOp,
    invoke_ns: u64,
    give_up_ns: u64,
    /// A request is in flight (as opposed to waiting out a backoff).
    sent: bool,
    /// `req` opens the session on the key's shard; `op` follows once it is open.
    opens: bool,
    /// A stale read (`Op::Get { stale: true }`): any replica answers from its own state,
    /// so it is left out of the linearizability check.
    stale: bool,
    /// A linearizable get sent to any replica of the shard rather than its cached
    /// leader, so that followers serve it (ReadIndex asked of the leader); it is checked
    /// for linearizability like every other get.
    anywhere: bool,
    /// Nodes that answered they hold no replica of the shard and knew no newer replica
    /// set than the client's: asked again only once every other node has been (as
    /// kvcli).
    disclaimed: Vec<NodeId>,
    /// Nodes that let an attempt time out: asked again only once no other node is left.
    silent: Vec<NodeId>,
    /// The node of the attempt in flight.
    target: Option<NodeId>,
    /// Redirects followed at once (a leader hint, or a newer replica set). Past the node
    /// count, one waits a backoff first, as kvcli backs off from a ping-pong of stale
    /// hints.
    redirects: usize,
}

/// Percent of a client's linearizable gets sent to any replica (`Pending::anywhere`).
pub const FOLLOWER_READ_PERCENT: u64 = 30;

/// Workload timing.
#[derive(Clone, Copy, Debug)]
pub struct ClientTiming {
    /// Per-attempt timeout.
    pub attempt_ns: u64,
    /// An operation is abandoned (outcome unknown) after this long.
    pub give_up_ns: u64,
    /// Pause between retries.
    pub backoff_ns: u64,
    /// Most think time between operations.
    pub think_ns_max: u64,
}

/// What a client's step uses of the simulation around it: the clock, the run's
/// randomness, the nodes and keys, the timing, and the history the checker reads.
pub struct ClientWorld<'a> {
    /// Simulated time now.
    pub now_ns: u64,
    /// The run's randomness (one seed decides the whole run).
    pub rng: &'a mut SmallRng,
    /// Every node a request may go to.
    pub nodes: &'a [NodeId],
    /// The keys the workload uses.
    pub keys: &'a [Bytes],
    /// The shard count.
    pub shards: u32,
    /// The clients' timing.
    pub timing: &'a ClientTiming,
    /// Where completed operations are recorded.
    pub history: &'a mut Vec<Operation>,
}

/// One simulated client.
#[derive(Clone, Debug)]
pub struct Client {
    /// Index among the clients.
    pub index: usize,
    /// Session id.
    pub id: ClientId,
    seq: u64,
    epoch: u64,
    pending: Option<Pending>,
    leader_cache: Vec<Option<NodeId>>,
    /// Each shard's replica set as a node last answered it (`StaleRoute`), as kvcli keeps.
    routes: Vec<Option<ShardRoute>>,
    next_node: usize,
    /// Last value this client saw per key (to aim CAS at a likely match).
    seen: Vec<Option<Bytes>>,
    /// Shards where this client's session is open (a write needs one).
    open_shards: Vec<bool>,
    /// Operations completed with a definite outcome.
    pub ok: u64,
    /// Operations abandoned.
    pub unknown: u64,
    /// When set, start no new random operation (the final read-back is scripted).
    pub stopped: bool,
    /// Keys to read once each, in order, before stopping (the final read-back).
    pub script: Vec<Bytes>,
    /// Bytes of padding after each written value's unique prefix: large values make a
    /// leader need several Appends to catch a follower up (only a prefix of its log is
    /// acknowledged at a time, as in Raft's Figure 8).
    pub value_pad_bytes: usize,
    /// Percent of random reads sent as stale reads to any replica of the client's route
    /// (0: none; the Moves profile aims them at replicas that may have been removed).
    pub stale_read_percent: u32,
}

/// The request carrying `op` on `key`.
fn wire_op(key: &Bytes, op: &KvOp) -> Op {
    match op {
        KvOp::Get => Op::Get {
            key: key.clone(),
            stale: false,
        },
        KvOp::Put(v) => Op::Put {
            key: key.clone(),
            value: v.clone(),
        },
        KvOp::Delete => Op::Delete { key: key.clone() },
        KvOp::Cas { expected, new } => Op::Cas {
            key: key.clone(),
            expected: expected.clone(),
            new: new.clone(),
        },
    }
}

/// The key space: a few keys, so operations on one key overlap often.
pub fn keys(count: usize) -> Vec<Bytes> {
    (0..count).map(|i| Bytes::from(format!("k{i}"))).collect()
}

impl Client {
    /// A client with session `id`.
    pub fn new(index: usize, id: ClientId, shards: u32, key_count: usize) -> Client {
        Client {
            index,
            id,
            seq: 0,
            epoch: 0,
            pending: None,
            leader_cache: vec![None; shards as usize],
            routes: vec![None; shards as usize],
            next_node: index,
            seen: vec![None; key_count],
            open_shards: vec![false; shards as usize],
            ok: 0,
            unknown: 0,
            stopped: false,
            script: Vec::new(),
            value_pad_bytes: 0,
            stale_read_percent: 0,
        }
    }

    /// True while an operation is in progress.
    pub fn busy(&self) -> bool {
        self.pending.is_some()
    }

    /// A short description of the operation in progress, for reports.
    pub fn describe(&self) -> String {
        match &self.pending {
            Some(p) => format!(
                "{} seq {} {:?} on {:?}",
                self.id,
                p.req.seq,
                p.op,
                String::from_utf8_lossy(&p.key)
            ),
            None => format!("{} idle", self.id),
        }
    }

    /// The cached leader of the key's shard, else the next of its known replicas (of all
    /// nodes while none are known).
    /// A read sent `anywhere` (stale, or to a follower) goes to any of the shard's known
    /// replicas.
    fn target(
        &mut self,
        key: &Bytes,
        anywhere: bool,
        nodes: &[NodeId],
        shards: u32,
        disclaimed: &[NodeId],
        silent: &[NodeId],
    ) -> NodeId {
        let s = shard_for_key(key, shards).0 as usize;
        if let (Some(l), false) = (self.leader_cache[s], anywhere) {
            return l;
        }
        let mut candidates: Vec<NodeId> = match &self.routes[s] {
            Some(r) if !r.voters.is_empty() => r.voters.clone(),
            _ => nodes.to_vec(),
        };
        narrow(&mut candidates, nodes, disclaimed, silent);
        self.next_node = self.next_node.wrapping_add(1);
        candidates[self.next_node % candidates.len()]
    }

    /// Timer `epoch` fired at `world.now_ns`.
    pub fn wake(&mut self, epoch: u64, world: ClientWorld<'_>) -> Action {
        let ClientWorld {
            now_ns,
            rng,
            nodes,
            keys,
            shards,
            timing: t,
            history,
        } = world;
        if epoch != self.epoch {
            return Action::Idle;
        }
        let Some(p) = &self.pending else {
            return self.start(now_ns, rng, nodes, keys, shards, t);
        };
        if now_ns >= p.give_up_ns {
            self.abandon(now_ns, history);
            return self.think(now_ns, rng, t);
        }
        // Attempt timed out (or a backoff ended): try the next node.
        let key = p.key.clone();
        let s = shard_for_key(&key, shards).0 as usize;
        if p.sent {
            self.leader_cache[s] = None;
            let p = self.pending.as_mut().expect("pending");
            if let Some(node) = p.target.filter(|n| !p.silent.contains(n)) {
                p.silent.push(node);
            }
        }
        self.send(now_ns, nodes, shards, t)
    }

    /// Ends the run for this client: an operation in progress is recorded as unknown
    /// (a write may still take effect) or dropped (a read constrains nothing).
    pub fn abandon(&mut self, now_ns: u64, history: &mut Vec<Operation>) {
        if let Some(p) = self.pending.take() {
            self.unknown += 1;
            // A write waiting for its session to open was never sent.
            if p.req.op.is_write() && !p.opens {
                history.push(Operation {
                    client: self.id.0,
                    key: p.key,
                    op: p.op,
                    result: KvResult::Unknown,
                    invoke_ns: p.invoke_ns,
                    complete_ns: now_ns,
                });
            }
        }
    }

    fn think(&mut self, now_ns: u64, rng: &mut SmallRng, t: &ClientTiming) -> Action {
        self.epoch += 1;
        Action::Wake {
            wake_ns: now_ns + rng.gen_range(0..=t.think_ns_max),
            epoch: self.epoch,
        }
    }

    fn start(
        &mut self,
        now_ns: u64,
        rng: &mut SmallRng,
        nodes: &[NodeId],
        keys: &[Bytes],
        shards: u32,
        t: &ClientTiming,
    ) -> Action {
        let (key_index, op) = if let Some(k) = self.script.first().cloned() {
            self.script.remove(0);
            let i = keys
                .iter()
                .position(|x| *x == k)
                .expect("scripted key exists");
            (i, KvOp::Get)
        } else if self.stopped {
            return Action::Idle;
        } else {
            let i = rng.gen_range(0..keys.len());
            let mut value = format!("{}-{}", self.id, self.seq + 1);
            value.extend(std::iter::repeat_n('.', self.value_pad_bytes));
            let value = Bytes::from(value);
            let op = match rng.gen_range(0..100) {
                0..=39 => KvOp::Get,
                40..=69 => KvOp::Put(value),
                70..=79 => KvOp::Delete,
                _ => KvOp::Cas {
                    expected: if rng.gen_bool(0.7) {
                        self.seen[i].clone()
                    } else {
                        None
                    },
                    new: value,
                },
            };
            (i, op)
        };
        let stale = op == KvOp::Get
            && self.script.is_empty()
            && !self.stopped
            && self.stale_read_percent > 0
            && rng.gen_range(0..100) < self.stale_read_percent;
        // From the sequence number, not the run's RNG, so that every draw of an existing
        // seed stays the same.
        let spread = (self.seq + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32;
        let anywhere = op == KvOp::Get
            && !stale
            && self.script.is_empty()
            && !self.stopped
            && spread % 100 < FOLLOWER_READ_PERCENT;
        let key = keys[key_index].clone();
        let shard = shard_for_key(&key, shards).0 as usize;
        let opens = op != KvOp::Get && !self.open_shards[shard];
        let wire_op = if opens {
            Op::OpenSession { key: key.clone() }
        } else if stale {
            Op::Get {
                key: key.clone(),
                stale: true,
            }
        } else {
            wire_op(&key, &op)
        };
        self.seq += 1;
        self.pending = Some(Pending {
            req: ClientRequest {
                client: self.id,
                seq: self.seq,
                epoch: 0,
                op: wire_op,
            },
            key,
            op,
            invoke_ns: now_ns,
            give_up_ns: now_ns + t.give_up_ns,
            sent: false,
            opens,
            stale,
            anywhere,
            disclaimed: Vec::new(),
            silent: Vec::new(),
            target: None,
            redirects: 0,
        });
        self.send(now_ns, nodes, shards, t)
    }

    fn send(&mut self, now_ns: u64, nodes: &[NodeId], shards: u32, t: &ClientTiming) -> Action {
        let p = self.pending.as_ref().expect("pending");
        let (key, anywhere) = (p.key.clone(), p.stale || p.anywhere);
        // Copies, as `target` borrows the client whole (empty unless attempts failed).
        let (disclaimed, silent) = (p.disclaimed.clone(), p.silent.clone());
        let node = self.target(&key, anywhere, nodes, shards, &disclaimed, &silent);
        self.pending.as_mut().expect("pending").target = Some(node);
        let route_epoch = self.routes[shard_for_key(&key, shards).0 as usize]
            .as_ref()
            .map_or(0, |r| r.epoch);
        let p = self.pending.as_mut().expect("pending");
        p.sent = true;
        p.req.epoch = route_epoch;
        self.epoch += 1;
        Action::Send {
            node,
            req: p.req.clone(),
            wake_ns: now_ns + t.attempt_ns,
            epoch: self.epoch,
        }
    }

    /// Counts a redirect of the pending request; true while it may be followed at once.
    fn redirect_at_once(&mut self, nodes: &[NodeId]) -> bool {
        let p = self.pending.as_mut().expect("pending");
        p.redirects += 1;
        p.redirects <= nodes.len()
    }

    /// No attempt in flight until `t.backoff_ns` from `now_ns`, when the pending request
    /// is sent again.
    fn back_off(&mut self, now_ns: u64, t: &ClientTiming) -> Action {
        let p = self.pending.as_mut().expect("pending");
        p.sent = false;
        self.epoch += 1;
        Action::Wake {
            wake_ns: now_ns + t.backoff_ns,
            epoch: self.epoch,
        }
    }

    /// A reply arrived at `world.now_ns`. Returns the next action, or an error text if the
    /// reply is one a correct server never sends.
    pub fn on_reply(
        &mut self,
        reply: ClientReply,
        world: ClientWorld<'_>,
    ) -> Result<Action, String> {
        let ClientWorld {
            now_ns,
            rng,
            nodes,
            keys,
            shards,
            timing: t,
            history,
        } = world;
        let Some(p) = &self.pending else {
            return Ok(Action::Idle);
        };
        if reply.seq != p.req.seq || reply.client != self.id {
            return Ok(Action::Idle);
        }
        if !p.sent && matches!(reply.outcome, Outcome::Error(_)) {
            // Waiting out a backoff, no attempt is in flight: this answers a copy of an
            // earlier one (the network duplicates datagrams, and each copy is answered).
            // Acting on every such answer would multiply the attempts in flight.
            return Ok(Action::Idle);
        }
        let result = match reply.outcome {
            Outcome::Done if p.opens => {
                // The session is open: the write itself follows, under the next seq.
                self.open_shards[shard_for_key(&p.key, shards).0 as usize] = true;
                self.seq += 1;
                let p = self.pending.as_mut().expect("pending");
                p.opens = false;
                p.req.seq = self.seq;
                p.req.op = wire_op(&p.key, &p.op);
                return Ok(self.send(now_ns, nodes, shards, t));
            }
            Outcome::Value(v) => KvResult::Value(v),
            Outcome::Done => KvResult::Done,
            Outcome::CasOk => KvResult::CasOk,
            Outcome::CasMismatch { current } => KvResult::CasMismatch { current },
            Outcome::Error(ClientError::NotLeader { shard, leader }) => {
                self.leader_cache[shard.0 as usize] = leader;
                if leader.is_some() && self.redirect_at_once(nodes) {
                    return Ok(self.send(now_ns, nodes, shards, t));
                }
                return Ok(self.back_off(now_ns, t));
            }
            Outcome::Error(ClientError::StaleRoute { node, route }) => {
                let s = route.shard.0 as usize;
                let newer = self.routes[s]
                    .as_ref()
                    .is_none_or(|have| have.epoch <= route.epoch);
                // Only a strictly newer set tells the client something: a node that
                // answers with ours or an older one holds no replica it can serve.
                let strictly_newer = self.routes[s]
                    .as_ref()
                    .is_none_or(|have| have.epoch < route.epoch);
                if newer {
                    self.leader_cache[s] = route.leader;
                    self.routes[s] = Some(route);
                } else if self.leader_cache[s] == Some(node) {
                    // It holds no replica it can serve and knows no newer set than ours
                    // (it forgot the shard, or restarted after its removal): not the
                    // leader to go back to, as kvcli also forgets it (kept, a client
                    // would ask it forever).
                    self.leader_cache[s] = None;
                }
                let p = self.pending.as_mut().expect("pending");
                if strictly_newer {
                    p.disclaimed.clear();
                } else if !p.disclaimed.contains(&node) {
                    // Nor a node to ask again while others are left: if every node of
                    // our set moved away and forgot the shard, another knows where it went.
                    p.disclaimed.push(node);
                }
                if newer && self.leader_cache[s].is_some() && self.redirect_at_once(nodes) {
                    return Ok(self.send(now_ns, nodes, shards, t));
                }
                return Ok(self.back_off(now_ns, t));
            }
            Outcome::Error(ClientError::Timeout { shard } | ClientError::NoQuorum { shard }) => {
                self.leader_cache[shard.0 as usize] = None;
                return Ok(self.back_off(now_ns, t));
            }
            other => {
                return Err(format!(
                    "{} seq {} got an answer a correct server never gives: {other:?}",
                    self.id, reply.seq
                ))
            }
        };
        let p = self.pending.take().expect("pending");
        self.ok += 1;
        if p.stale {
            return Ok(self.think(now_ns, rng, t));
        }
        if let Some(i) = keys.iter().position(|k| *k == p.key) {
            self.seen[i] = match (&p.op, &result) {
                (_, KvResult::Value(v)) => v.clone(),
                (KvOp::Put(v), _) => Some(v.clone()),
                (KvOp::Delete, _) => None,
                (KvOp::Cas { new, .. }, KvResult::CasOk) => Some(new.clone()),
                (_, KvResult::CasMismatch { current }) => current.clone(),
                _ => self.seen[i].clone(),
            };
        }
        history.push(Operation {
            client: self.id.0,
            key: p.key,
            op: p.op,
            result,
            invoke_ns: p.invoke_ns,
            complete_ns: now_ns,
        });
        Ok(self.think(now_ns, rng, t))
    }
}

/// Narrows a request's `candidates` (its shard's known replicas) as kvcli does: first the
/// ones that neither disclaimed the shard nor let an attempt time out; if none is left
/// and one of them disclaimed it (the set moved away), any other node that did neither;
/// then the replicas that did not disclaim it; else all of them as they are.
fn narrow(
    candidates: &mut Vec<NodeId>,
    nodes: &[NodeId],
    disclaimed: &[NodeId],
    silent: &[NodeId],
) {
    let fresh = |n: &NodeId| !disclaimed.contains(n) && !silent.contains(n);
    if candidates.iter().any(fresh) {
        candidates.retain(fresh);
    } else if candidates.iter().any(|n| disclaimed.contains(n)) && nodes.iter().any(fresh) {
        *candidates = nodes.iter().copied().filter(fresh).collect();
    } else if candidates.iter().any(|n| !disclaimed.contains(n)) {
        candidates.retain(|n| !disclaimed.contains(n));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kv_shared::ShardId;
    use rand::SeedableRng;

    /// Redirects to a leader that cannot serve, on a network that duplicates datagrams:
    /// a client that sent again on every answer, each copy's included, would multiply
    /// its attempts in flight without bound.
    #[test]
    fn redirects_back_off_after_the_node_count_and_late_copies_are_ignored() {
        let mut client = Client::new(0, ClientId(7), 1, 1);
        let mut rng = SmallRng::seed_from_u64(1);
        let nodes = [NodeId(1), NodeId(2), NodeId(3)];
        let keys = [Bytes::from_static(b"k0")];
        let timing = ClientTiming {
            attempt_ns: 50,
            give_up_ns: 1_000_000,
            backoff_ns: 20,
            think_ns_max: 1,
        };
        let mut history = Vec::new();
        macro_rules! world {
            ($now:expr) => {
                ClientWorld {
                    now_ns: $now,
                    rng: &mut rng,
                    nodes: &nodes,
                    keys: &keys,
                    shards: 1,
                    timing: &timing,
                    history: &mut history,
                }
            };
        }
        let Action::Send { req, .. } = client.wake(0, world!(0)) else {
            panic!("the first wake starts an operation");
        };
        let not_leader = || ClientReply {
            client: ClientId(7),
            seq: req.seq,
            outcome: Outcome::Error(ClientError::NotLeader {
                shard: ShardId(0),
                leader: Some(NodeId(2)),
            }),
        };
        for i in 0..nodes.len() {
            let a = client.on_reply(not_leader(), world!(1 + i as u64)).unwrap();
            assert!(
                matches!(
                    a,
                    Action::Send {
                        node: NodeId(2),
                        ..
                    }
                ),
                "redirect {i}: {a:?}"
            );
        }
        let Action::Wake { wake_ns, epoch } = client.on_reply(not_leader(), world!(10)).unwrap()
        else {
            panic!("past the node count, a redirect waits a backoff");
        };
        assert_eq!(wake_ns, 10 + timing.backoff_ns);
        let late = client.on_reply(not_leader(), world!(11)).unwrap();
        assert!(
            matches!(late, Action::Idle),
            "a late copy's answer: {late:?}"
        );
        let again = client.wake(epoch, world!(wake_ns));
        assert!(
            matches!(again, Action::Send { .. }),
            "after the backoff: {again:?}"
        );
    }
}
