//! One logical client on a shared [`Client`]: its own client id and sequence numbers,
//! and `execute`, which routes an operation, follows redirects and retries it with
//! backoff under the same sequence number until it completes or the deadline passes.

use crate::client::{bump, Client, NodeAddr, Response};
use crate::error::{node_name, Error};
use crate::receive::{Answer, Incoming};
use crate::watchdog::Slot;
use bytes::Bytes;
use kv_shared::auth::BODY_BYTES_MAX;
use kv_shared::proto::{ClientError, ClientRequest, Op};
use kv_shared::registry::METADATA_SHARD;
use kv_shared::shard::shard_for_key;
use kv_shared::{ClientId, NodeId, ShardId};
use rand::rngs::SmallRng;
use rand::Rng;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// The least time before a request's deadline a retry is still sent with: a node answers
/// within it even on a loaded machine, so an attempt gets its answer before the client
/// gives up.
const LAST_ATTEMPT_WINDOW_MIN: Duration = Duration::from_millis(100);

/// One logical client: its own client id and sequence numbers. At most one request is
/// outstanding (methods take `&mut self`), so a retried write can be deduplicated by the
/// shard's session table.
pub struct Session {
    pub(crate) client: Client,
    pub(crate) id: ClientId,
    /// The id the nodes bind `id` to under this client's name; replies carry it.
    pub(crate) bound: ClientId,
    pub(crate) next_seq: u64,
    pub(crate) rx: crate::inbox::Receiver<Incoming>,
    pub(crate) rng: SmallRng,
    pub(crate) rotation: usize,
    /// Shards where this session was opened (`Op::OpenSession`): a node refuses writes
    /// from a client without a session on the shard (it may have been evicted).
    pub(crate) open_shards: std::collections::BTreeSet<ShardId>,
    /// Where this session arms its attempt's deadline for the client's watchdog.
    pub(crate) slot: Slot,
    /// The shard of the last request `execute` routed (the bench tallies by it rather
    /// than hash the key again).
    pub(crate) last_shard: Option<ShardId>,
    /// The client's shard count once known ([`Session::shard_count`]).
    pub(crate) shard_count: Option<u32>,
}

/// A request's times as `execute` takes and gives them (a session keeps none: kvserver's
/// Redis gateway holds sessions, and a larger one makes each of its answers larger). The
/// bench gives its invoke time, so the deadline counts from it without a second clock
/// read, and takes the arrival of the answer's datagram as the completion: one clock
/// read per reply datagram rather than one per request.
#[derive(Default)]
pub(crate) struct Timing {
    /// How long to wait for an answer (`None`: the client's `unavailable_after`).
    pub(crate) wait: Option<Duration>,
    /// Now, if the caller read the clock for the request already.
    pub(crate) invoked: Option<Instant>,
    /// When the datagram carrying the request's answer arrived, once it did.
    pub(crate) answered: Option<Instant>,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.client
            .shared
            .sessions
            .lock()
            .expect("sessions lock")
            .remove(&self.bound);
    }
}

/// A sequence number a [`Session`] set aside for one write sent another way
/// ([`Session::reserve`]). Not `Clone`: it is settled once, by the answer of that way or
/// by [`Session::execute_reserved`].
#[derive(Debug, PartialEq, Eq)]
#[must_use = "a reserved write is answered or retried with Session::execute_reserved"]
pub struct Reserved {
    client: ClientId,
    seq: u64,
    shard: ShardId,
}

impl Reserved {
    /// The write as a request under the session's bound id (as the nodes see it once
    /// they have bound a UDP request to the client's name) and the reserved sequence
    /// number, routed by replica-set `epoch`.
    pub fn request(&self, op: Op, epoch: u64) -> ClientRequest {
        ClientRequest {
            client: self.client,
            seq: self.seq,
            epoch,
            op,
        }
    }

    /// The reserved sequence number.
    pub fn seq(&self) -> u64 {
        self.seq
    }
}

/// [`Session::prepare`]'s answer.
pub(crate) enum Prepared {
    /// Run the request under sequence number `seq`; `shard`: the shard whose session a
    /// write runs under (`None` for reads).
    Ready { seq: u64, shard: Option<ShardId> },
    /// The session must be opened on this shard first ([`Session::execute_waiting`]).
    OpenFirst(ShardId),
}

/// Why the current attempt did not complete.
enum Setback {
    /// No reply within the attempt timeout.
    Silence,
    /// A retryable error reply.
    Error(ClientError),
}

impl Session {
    /// This session's client id.
    pub fn id(&self) -> ClientId {
        self.id
    }

    /// The client this session belongs to.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Reads a key. `Ok(None)`: the key is absent.
    pub async fn get(&mut self, key: impl Into<Bytes>) -> Result<Option<Bytes>, Error> {
        match self
            .execute(Op::Get {
                key: key.into(),
                stale: false,
            })
            .await?
        {
            Response::Value(v) => Ok(v),
            other => unreachable!("a get answered with {other:?}"),
        }
    }

    /// Writes a key.
    pub async fn put(
        &mut self,
        key: impl Into<Bytes>,
        value: impl Into<Bytes>,
    ) -> Result<(), Error> {
        self.execute(Op::Put {
            key: key.into(),
            value: value.into(),
        })
        .await
        .map(drop)
    }

    /// Deletes a key (absent keys are fine).
    pub async fn delete(&mut self, key: impl Into<Bytes>) -> Result<(), Error> {
        self.execute(Op::Delete { key: key.into() }).await.map(drop)
    }

    /// Compare-and-set: writes `new` if the key holds `expected` (`None`: is absent).
    /// Returns `Response::CasOk` or `Response::CasMismatch`.
    pub async fn cas(
        &mut self,
        key: impl Into<Bytes>,
        expected: Option<Bytes>,
        new: impl Into<Bytes>,
    ) -> Result<Response, Error> {
        self.execute(Op::Cas {
            key: key.into(),
            expected,
            new: new.into(),
        })
        .await
    }

    /// Runs one keyed operation to completion: routing, redirects, retries with backoff
    /// under one sequence number, until an answer or the unavailability deadline. The
    /// first write to a shard opens the session there first. A write refused because the
    /// shard evicted the session (`SessionExpired`) is an error whose outcome may be
    /// unknown; the next write reopens the session.
    ///
    /// # Panics
    /// On `Op::Status` (not routed to a shard; use [`Client::status`]).
    pub async fn execute(&mut self, op: Op) -> Result<Response, Error> {
        self.execute_waiting(op, &mut Timing::default()).await
    }

    /// [`Session::execute`], waiting up to `wait` instead of the client's
    /// `unavailable_after` (for an admin request the leader answers only when done, such
    /// as `Op::MoveReplica`).
    pub async fn execute_within(&mut self, op: Op, wait: Duration) -> Result<Response, Error> {
        let mut timing = Timing {
            wait: Some(wait),
            ..Timing::default()
        };
        self.execute_waiting(op, &mut timing).await
    }

    /// [`Session::execute`] under `timing` (which it completes with the answer's arrival).
    pub(crate) async fn execute_waiting(
        &mut self,
        op: Op,
        timing: &mut Timing,
    ) -> Result<Response, Error> {
        let (seq, shard) = match self.prepare(&op).map_err(Error::Limit)? {
            Prepared::Ready { seq, shard } => (seq, shard),
            Prepared::OpenFirst(shard) => {
                let key = op.key().expect("a session is opened for keyed writes");
                let open = Op::OpenSession { key: key.clone() };
                let seq = self.take_seq();
                // The opening is the request that starts at `invoked`; the operation's own
                // deadline counts from its own start.
                let mut opening = Timing {
                    invoked: timing.invoked.take(),
                    ..Timing::default()
                };
                self.execute_once(open, seq, false, Some(shard), &mut opening)
                    .await?;
                self.open_shards.insert(shard);
                (self.take_seq(), Some(shard))
            }
        };
        self.execute_once(op, seq, false, shard, timing).await
    }

    /// What [`Session::execute`] does before its request's attempts: checks the limits
    /// (the error is the limit `op` breaks, an [`Error::Limit`] to `execute`), and takes
    /// the request's sequence number unless the session must be opened on the write's
    /// shard first. The bench runs a [`Prepared::Ready`] request with
    /// [`Session::execute_once`] itself: an async layer less per request.
    pub(crate) fn prepare(&mut self, op: &Op) -> Result<Prepared, ClientError> {
        op.check_limits()?;
        let shard = self.session_shard(op);
        if let Some(shard) = shard {
            if !self.open_shards.contains(&shard) {
                return Ok(Prepared::OpenFirst(shard));
            }
        }
        Ok(Prepared::Ready {
            seq: self.take_seq(),
            shard,
        })
    }

    /// The shard whose session write `op` runs under: `None` for reads, for
    /// `OpenSession` itself, and before the shard count is known.
    fn session_shard(&mut self, op: &Op) -> Option<ShardId> {
        let opens = op.is_write() && !matches!(op, Op::OpenSession { .. });
        if !opens {
            return None;
        }
        match (op.key(), self.shard_count()) {
            (Some(key), Some(count)) => Some(shard_for_key(key, count)),
            _ => None,
        }
    }

    /// The client's shard count, once known (it never changes then): looked up in the
    /// topology until it is, then kept, so that a request takes the topology's lock
    /// fewer times.
    fn shard_count(&mut self) -> Option<u32> {
        if self.shard_count.is_none() {
            self.shard_count = self.client.shard_count();
        }
        self.shard_count
    }

    /// The next sequence number, used up.
    fn take_seq(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }

    /// Sets aside the next sequence number for write `op`, to be sent another way than
    /// through this client (the Redis gateway hands it to its own node's core), as
    /// request [`Reserved::request`]. `None` unless `op` is a write of a shard where this
    /// session is open: a first write opens the session through the cluster, and only
    /// [`Session::execute`] does that.
    ///
    /// The session must run nothing else until the reservation is settled: whatever the
    /// other way answered, either that answer (the write was applied) or
    /// [`Session::execute_reserved`], which retries the write under the same sequence
    /// number, so that the shard's session table applies it at most once whichever
    /// attempt gets there.
    pub fn reserve(&mut self, op: &Op) -> Option<Reserved> {
        let shard = self.session_shard(op)?;
        if !self.open_shards.contains(&shard) || op.check_limits().is_err() {
            return None;
        }
        Some(Reserved {
            client: self.bound,
            seq: self.take_seq(),
            shard,
        })
    }

    /// Runs write `op` through the cluster, as [`Session::execute`] does, under the
    /// sequence number `reserved` set aside for it: the retry of an attempt made another
    /// way that did not end in an answer. `maybe_applied`: that attempt may have been
    /// applied (it was proposed, or nothing is known), so an error here says the outcome
    /// is unknown.
    ///
    /// # Panics
    /// If `op` is not of the shard `reserved` was taken for.
    pub async fn execute_reserved(
        &mut self,
        op: Op,
        reserved: Reserved,
        maybe_applied: bool,
    ) -> Result<Response, Error> {
        let shard = self.session_shard(&op);
        assert_eq!(
            shard,
            Some(reserved.shard),
            "a reservation is retried with its own write"
        );
        self.execute_once(
            op,
            reserved.seq,
            maybe_applied,
            shard,
            &mut Timing::default(),
        )
        .await
    }

    /// [`Session::execute`] without opening the session (limits already checked), under
    /// sequence number `seq`; `outcome_unknown`: an earlier attempt of this write under
    /// `seq` may have been applied. `keyed_shard`: the shard of `op`'s key if the caller
    /// worked it out already (the shard count, once known, never changes); a write the
    /// shard refuses because it evicted this session (`SessionExpired`) leaves the session
    /// closed there, so that the next write reopens it.
    pub(crate) async fn execute_once(
        &mut self,
        op: Op,
        seq: u64,
        outcome_unknown: bool,
        keyed_shard: Option<ShardId>,
        timing: &mut Timing,
    ) -> Result<Response, Error> {
        let stale = matches!(op, Op::Get { stale: true, .. });
        let is_write = op.is_write();
        let shard_count = self.shard_count().expect("connect learned the shard count");
        let shard = match (&op, op.key()) {
            (op, _)
                if op
                    .admin_shard()
                    .is_some_and(|s| s.0 >= shard_count && s != METADATA_SHARD) =>
            {
                return Err(Error::Limit(ClientError::Malformed(format!(
                    "shard {} does not exist; the cluster has {shard_count} shards",
                    op.admin_shard().expect("matched").0
                ))))
            }
            (op, None) => op
                .admin_shard()
                .expect("execute takes keyed or shard-addressed operations"),
            (_, Some(key)) => keyed_shard.unwrap_or_else(|| shard_for_key(key, shard_count)),
        };
        self.last_shard = Some(shard);
        // The epoch is set per attempt, from the same look at the topology as the leader.
        let mut request = ClientRequest {
            client: self.id,
            seq,
            epoch: 0,
            op,
        };
        // Copied out, not the whole options (a clone would allocate on every request).
        let (unavailable_after, backoff_base, backoff_max, attempt_timeout) = {
            let o = &self.client.shared.options;
            (
                o.unavailable_after,
                o.backoff_base,
                o.backoff_max,
                o.attempt_timeout,
            )
        };
        let start = timing.invoked.unwrap_or_else(Instant::now);
        let deadline = start + timing.wait.unwrap_or(unavailable_after);
        let mut backoff = backoff_base;
        let last_attempt_window = attempt_timeout.min(LAST_ATTEMPT_WINDOW_MIN);
        let mut outcome_unknown = outcome_unknown;
        let mut leader_worked = false;
        // Empty until an attempt fails: a request answered at once allocates no reason.
        let mut last = String::new();
        let mut redirects_in_a_row = 0usize;
        let mut asked_for_nodes = false;
        let mut attempt = 0u64;
        // Nodes that let an attempt time out. If none of them, nor any other node, answered
        // anything by the deadline (the counter counts every reply this client received),
        // the cluster is unreachable, not merely leaderless.
        let mut silent: Vec<SocketAddr> = Vec::new();
        // Nodes that answered they hold no replica of the shard and knew no newer replica
        // set than the cached one: asked again only once every other node has been.
        let mut disclaimed: Vec<SocketAddr> = Vec::new();
        let replies_before = self
            .client
            .shared
            .counters
            .replies_received
            .load(Ordering::Relaxed);
        loop {
            // The first attempt starts now, with the epoch and encoding made above: a
            // clock read and a look at the topology fewer per request.
            let mut now = if attempt == 0 { start } else { Instant::now() };
            if attempt > 0 && now < deadline && deadline - now < last_attempt_window {
                // A retry sent now could not be waited for: a write's outcome would turn
                // unknown only because the deadline cut its answer off. Give up at the
                // deadline instead, the write known not applied if every attempt so far
                // was refused.
                tokio::time::sleep_until(deadline.into()).await;
                now = Instant::now();
            }
            if now >= deadline {
                if last.is_empty() {
                    last.push_str("nothing answered yet");
                }
                let waited_ms = now.duration_since(start).as_millis() as u64;
                let nothing_heard = self
                    .client
                    .shared
                    .counters
                    .replies_received
                    .load(Ordering::Relaxed)
                    == replies_before;
                return Err(if nothing_heard && !silent.is_empty() {
                    Error::NoNodeAnswered {
                        waited_ms,
                        tried: silent
                            .iter()
                            .map(|a| a.to_string())
                            .collect::<Vec<_>>()
                            .join(", "),
                        outcome_unknown,
                    }
                } else if leader_worked {
                    Error::GaveUp {
                        shard,
                        waited_ms,
                        last,
                        outcome_unknown,
                    }
                } else {
                    Error::NoLeader {
                        shard,
                        waited_ms,
                        last,
                        outcome_unknown,
                    }
                });
            }
            // The same session and seq: only the routing epoch changes between attempts.
            let (epoch, leader) = self.client.epoch_and_leader(shard);
            request.epoch = epoch;
            let target = self.pick_target(shard, stale, leader, &disclaimed, &silent);
            // The first attempt is refused if too large for a datagram of its own (nothing
            // is sent); a retry's epoch can add a byte or two, which the send task checks.
            if let Err(len) = self.client.enqueue(target.addr, &request, attempt == 0) {
                return Err(Error::Limit(ClientError::Malformed(format!(
                    "request is {len} bytes; a datagram carries at most BODY_BYTES_MAX = {BODY_BYTES_MAX}"
                ))));
            }
            if attempt > 0 {
                bump(&self.client.shared.counters.retries);
            }
            attempt += 1;
            let attempt_end = (now + attempt_timeout).min(deadline);
            let watchdog = &self.client.shared.watchdog;
            let mark = watchdog.arm(&self.slot, attempt_end);
            let answer = loop {
                match self.rx.recv().await {
                    None => break Err(Setback::Silence),
                    // A notice for an earlier attempt (it crossed that attempt's answer).
                    Some(inc) if inc.expired != 0 && inc.expired != mark => continue,
                    Some(inc) if inc.expired != 0 => break Err(Setback::Silence),
                    Some(inc) if inc.seq != seq => continue,
                    Some(inc) => match inc.outcome {
                        Answer::Done(response) => {
                            timing.answered = Some(inc.at);
                            break Ok((inc.from, response));
                        }
                        // A late error for an earlier attempt says nothing about this one.
                        Answer::Error(_) | Answer::Status(_) if inc.from != target.addr => continue,
                        Answer::Status(_) => continue,
                        Answer::Error(e) => break Err(Setback::Error(*e)),
                    },
                }
            };
            watchdog.disarm(&self.slot);
            let setback = match answer {
                Ok((from, response)) => return Ok(self.succeeded(shard, from, stale, response)),
                Err(setback) => setback,
            };
            let named: &[NodeId] = match &setback {
                Setback::Error(ClientError::NotLeader {
                    leader: Some(l), ..
                }) => std::slice::from_ref(l),
                Setback::Error(ClientError::StaleRoute { route, .. }) => &route.voters,
                _ => &[],
            };
            if !asked_for_nodes && !self.client.addresses_known(named) {
                // A leader or replicas that joined after this client learned the nodes
                // (the balancer moves shards and leaderships to joined nodes): the node
                // naming them knows their addresses. Asked once per request, so a name no
                // node can place costs one status round trip, not one per attempt.
                asked_for_nodes = true;
                let wait = attempt_timeout.min(deadline.saturating_duration_since(Instant::now()));
                self.client.learn_nodes_from(target, wait).await;
            }
            let who = node_name(self.client.node_id(target), target.addr);
            match setback {
                Setback::Silence => {
                    outcome_unknown |= is_write;
                    if !silent.contains(&target.addr) {
                        silent.push(target.addr);
                    }
                    last = format!(
                        "{who} did not answer within {} ms",
                        attempt_timeout.as_millis()
                    );
                    self.forget_leader(shard, target);
                    self.rotation = self.rotation.wrapping_add(1);
                }
                Setback::Error(ClientError::NotLeader {
                    leader: Some(l), ..
                }) if Some(l) != target.id
                    && self
                        .client
                        .shared
                        .topology
                        .lock()
                        .expect("topology lock")
                        .addr_of(l)
                        .is_some() =>
                {
                    bump(&self.client.shared.counters.redirects);
                    self.client.set_leader(shard, Some(l));
                    last = format!("{who} redirected to node {}", l.0);
                    redirects_in_a_row += 1;
                    // Follow a fresh hint at once; a ping-pong of stale hints backs off.
                    if redirects_in_a_row <= self.client.shared.options.nodes.len() {
                        continue;
                    }
                }
                Setback::Error(ClientError::StaleRoute { route, .. })
                    if route.shard == shard && self.client.learn_route(&route) =>
                {
                    bump(&self.client.shared.counters.redirects);
                    last = format!(
                        "{who} answered with shard {}'s replicas at epoch {}: {}",
                        shard.0,
                        route.epoch,
                        route.replica_list()
                    );
                    redirects_in_a_row += 1;
                    disclaimed.clear();
                    if redirects_in_a_row <= self.client.shared.options.nodes.len() {
                        continue;
                    }
                }
                Setback::Error(ClientError::StaleRoute { .. }) => {
                    // The node knows no newer set than ours: try another replica, and once
                    // every replica we know of said so (all moved away and forgot the
                    // shard), the other nodes, one of which knows where it went.
                    bump(&self.client.shared.counters.redirects);
                    last = format!("{who} holds no replica of shard {} it can serve", shard.0);
                    self.forget_leader(shard, target);
                    if !disclaimed.contains(&target.addr) {
                        disclaimed.push(target.addr);
                    }
                    self.rotation = self.rotation.wrapping_add(1);
                }
                Setback::Error(ClientError::NotLeader { .. }) => {
                    bump(&self.client.shared.counters.redirects);
                    last = format!("{who} is not its leader and knows none");
                    self.client.set_leader(shard, None);
                    self.rotation = self.rotation.wrapping_add(1);
                }
                Setback::Error(
                    e @ (ClientError::Timeout { .. } | ClientError::NoQuorum { .. }),
                ) => {
                    outcome_unknown |= is_write;
                    leader_worked = true;
                    if matches!(e, ClientError::NoQuorum { .. }) {
                        self.forget_leader(shard, target);
                    }
                    last = format!("{who}: {e}");
                }
                Setback::Error(
                    e @ (ClientError::Overloaded { .. } | ClientError::OverloadedBytes { .. }),
                ) => {
                    leader_worked = true;
                    last = format!("{who}: {e}");
                }
                Setback::Error(error) => {
                    if let (ClientError::SessionExpired, Some(shard)) = (&error, keyed_shard) {
                        // The shard evicted this session: the next write reopens it.
                        self.open_shards.remove(&shard);
                    }
                    let node = self.client.node_id(target);
                    return Err(Error::Refused {
                        node,
                        addr: target.addr,
                        error,
                        outcome_unknown,
                    });
                }
            }
            redirects_in_a_row = 0;
            let jittered = backoff.mul_f64(self.rng.gen_range(0.5..1.0));
            let wake = (Instant::now() + jittered).min(deadline);
            tokio::time::sleep_until(wake.into()).await;
            backoff = (backoff * 2).min(backoff_max);
        }
    }

    /// The node to send to: the cached leader `leader`, else the next of the shard's
    /// replicas in this session's rotation (any replica redirects to the leader it knows;
    /// before the replicas are known, any node answers with them). Stale reads go to any
    /// replica.
    /// The node for the next attempt: the cached leader, else one of the shard's known
    /// replicas in rotation. Nodes that `disclaimed` the shard or were `silent` this
    /// request are left out while any other is left: first the replicas that did
    /// neither; if none is left and one of them disclaimed it (the set moved away and
    /// its nodes forgot the shard), any other node that did neither, one of which knows
    /// where it went; then the replicas that did not disclaim it.
    fn pick_target(
        &mut self,
        shard: ShardId,
        stale: bool,
        leader: Option<NodeAddr>,
        disclaimed: &[SocketAddr],
        silent: &[SocketAddr],
    ) -> NodeAddr {
        if !stale {
            if let Some(l) = leader {
                return l;
            }
        }
        let mut nodes = self.client.candidates(shard);
        if !disclaimed.is_empty() || !silent.is_empty() {
            let fresh = |n: &NodeAddr| !disclaimed.contains(&n.addr) && !silent.contains(&n.addr);
            let moved = nodes.iter().any(|n| disclaimed.contains(&n.addr));
            if nodes.iter().any(fresh) {
                nodes.retain(fresh);
            } else if moved && self.client.nodes().iter().any(fresh) {
                nodes = self.client.nodes();
                nodes.retain(fresh);
            } else if nodes.iter().any(|n| !disclaimed.contains(&n.addr)) {
                nodes.retain(|n| !disclaimed.contains(&n.addr));
            }
        }
        if stale {
            self.rotation = self.rotation.wrapping_add(1);
        }
        nodes[self.rotation % nodes.len()]
    }

    fn forget_leader(&self, shard: ShardId, target: NodeAddr) {
        if self.client.cached_leader(shard).map(|l| l.addr) == Some(target.addr) {
            self.client.set_leader(shard, None);
        }
    }

    fn succeeded(&self, shard: ShardId, from: SocketAddr, stale: bool, r: Response) -> Response {
        if !stale {
            // One look at the topology: the node that answered leads the shard.
            let mut topo = self.client.shared.topology.lock().expect("topology lock");
            if let (Some(id), Some(i)) = (topo.id_of(from), topo.slot(shard)) {
                topo.leaders[i] = Some(id);
            }
        }
        r
    }
}
