//! The async kvcli client library: one UDP socket shared by many logical sessions, each
//! key routed to its shard's cached leader (else to one of the shard's replicas),
//! redirects followed, timeouts retried with backoff and jitter under the SAME (client id,
//! sequence number) so a write applies once. The client learns the nodes, each shard's
//! replica set (with its epoch) and leader hints from any node that answers.
//!
//! Shape: [`Client::connect`] binds the socket and starts two tasks, a receiver (`receive`) that
//! demultiplexes replies to sessions by client id, and a sender (`sender`) that batches the
//! requests ready for the same node into one datagram. A [`Session`] is one logical client
//! (`&mut self` methods, so at most one request outstanding, as the protocol requires).

use crate::error::Error;
use crate::inbox;
use crate::receive::{receive_loop, Answer, Incoming};
use crate::sender::send_loop;
pub use crate::session::Session;
use crate::tickets::Tickets;
use crate::watchdog::{sweep_loop, Slot, Watchdog};
use bytes::Bytes;
use kv_shared::auth::{self, ClientKey, Protection, Sealer, BODY_BYTES_MAX};
use kv_shared::config::{ClusterConfig, LeaderPolicy};
use kv_shared::hashing::SeededState;
use kv_shared::pack::count_prefix_bytes;
use kv_shared::proto::{ClientRequest, NodeStatus, Op, Outcome, Role, ShardRoute};
use kv_shared::registry::METADATA_SHARD;
use kv_shared::shard::shard_for_key;
use kv_shared::{ClientId, NodeId, ShardId};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;

/// A node as the client knows it: its address always, its id once learned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeAddr {
    /// Node id, if known (from a cluster file or a Status reply).
    pub id: Option<NodeId>,
    /// UDP address.
    pub addr: SocketAddr,
}

/// How the client finds the cluster, who it is, and how patiently it retries.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Cluster id carried in every datagram; nodes drop other clusters' datagrams.
    pub cluster_id: u64,
    /// The client key: requests are sealed under it, replies must verify under it, and
    /// the nodes bind this client's sessions to its name.
    pub key: ClientKey,
    /// Whether requests are only authenticated or encrypted too (replies follow suit).
    pub protection: Protection,
    /// The nodes to talk to.
    pub nodes: Vec<NodeAddr>,
    /// Shard count, if known from a cluster file; otherwise learned from a Status reply.
    pub shard_count: Option<u32>,
    /// How long one attempt waits for its reply before it is retried.
    pub attempt_timeout: Duration,
    /// First backoff before a retry; doubles per retry (with jitter) up to `backoff_max`.
    pub backoff_base: Duration,
    /// Largest backoff.
    pub backoff_max: Duration,
    /// A request whose shard has shown no working leader for this long fails with
    /// "unavailable: shard N has no leader" instead of hanging.
    pub unavailable_after: Duration,
    /// How long [`Client::connect`] waits for the first Status reply.
    pub discovery_timeout: Duration,
    /// Where the cluster puts shard leaderships (its file's `[placement] leaders`; spread
    /// when no cluster file is known): what balance planning aims for.
    pub leaders: LeaderPolicy,
}

impl ClientOptions {
    /// Defaults for talking to the cluster described by a cluster file, as `key`.
    pub fn from_config(config: &ClusterConfig, key: ClientKey) -> Self {
        let nodes = config
            .nodes
            .iter()
            .map(|n| NodeAddr {
                id: Some(NodeId(n.id)),
                addr: n.addr,
            })
            .collect();
        ClientOptions {
            shard_count: Some(config.shards),
            protection: config.protection,
            leaders: config.placement.leaders,
            ..Self::from_addrs(config.cluster_id, nodes, key)
        }
    }

    /// Defaults for a bare list of node addresses (`--nodes`): ids and the shard count are
    /// learned from the nodes' Status replies.
    pub fn from_addrs(cluster_id: u64, nodes: Vec<NodeAddr>, key: ClientKey) -> Self {
        ClientOptions {
            cluster_id,
            key,
            protection: Protection::Mac,
            nodes,
            shard_count: None,
            attempt_timeout: Duration::from_millis(1000),
            backoff_base: Duration::from_millis(20),
            backoff_max: Duration::from_millis(1000),
            unavailable_after: Duration::from_secs(5),
            discovery_timeout: Duration::from_secs(2),
            leaders: LeaderPolicy::Spread,
        }
    }
}

/// A completed request's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response {
    /// A get: the value, or `None` if absent.
    Value(Option<Bytes>),
    /// A put or delete was applied.
    Done,
    /// A compare-and-set matched and wrote.
    CasOk,
    /// A compare-and-set found another value and wrote nothing.
    CasMismatch {
        /// The current value (`None`: absent).
        current: Option<Bytes>,
    },
    /// An increment's sum or an append's new length.
    Integer(i64),
}

impl Response {
    /// The answer `outcome` gives if it says the request completed (a value, or a write
    /// applied); `None` for an error or a status.
    pub fn of_outcome(outcome: &Outcome) -> Option<Response> {
        match outcome {
            Outcome::Value(v) => Some(Response::Value(v.clone())),
            Outcome::Done => Some(Response::Done),
            Outcome::CasOk => Some(Response::CasOk),
            Outcome::CasMismatch { current } => Some(Response::CasMismatch {
                current: current.clone(),
            }),
            Outcome::Integer(n) => Some(Response::Integer(*n)),
            Outcome::Error(_) | Outcome::Status(_) => None,
        }
    }
}

/// One node's answer to a status request.
#[derive(Clone, Debug)]
pub struct NodeReport {
    /// Which node was asked.
    pub node: NodeAddr,
    /// Its status and the round-trip time, or why it did not answer.
    pub result: Result<(NodeStatus, Duration), String>,
}

/// Counters of the client's own work, for the bench report.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Metrics {
    /// Datagrams sent.
    pub datagrams_sent: u64,
    /// Requests sent (first attempts and retries).
    pub requests_sent: u64,
    /// Retries after a timeout or a retryable error.
    pub retries: u64,
    /// Redirects followed.
    pub redirects: u64,
    /// Replies received.
    pub replies_received: u64,
    /// Datagrams received that carried replies.
    pub reply_datagrams_received: u64,
    /// Datagrams dropped as malformed, from another cluster, failing their tag
    /// (forged, or sealed under another key) or replayed.
    pub datagrams_dropped: u64,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) datagrams_sent: AtomicU64,
    pub(crate) requests_sent: AtomicU64,
    pub(crate) retries: AtomicU64,
    pub(crate) redirects: AtomicU64,
    pub(crate) replies_received: AtomicU64,
    /// Datagrams whose replies the receive task handed to sessions.
    pub(crate) reply_datagrams: AtomicU64,
    pub(crate) datagrams_dropped: AtomicU64,
}

pub(crate) fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// Where the receiver and the watchdog reach a session.
pub(crate) struct Mailbox {
    pub(crate) tx: inbox::Sender<Incoming>,
    pub(crate) slot: Slot,
}

/// [`Client::cached_shard`]'s answer: one shard's cached leader and replica set, as they
/// concern one node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CachedShard {
    /// The shard of the key asked about.
    pub shard: ShardId,
    /// The node asked about leads the shard, as last learned.
    pub me_leads: bool,
    /// The node asked about is one of the shard's voters (`None`: the replica set is not
    /// learned yet).
    pub me_votes: Option<bool>,
    /// The epoch of the replica set learned (0: none yet).
    pub epoch: u64,
}

/// The client's view of the cluster: who the nodes are, how many shards, where each
/// shard lives and which node leads it.
pub(crate) struct Topology {
    pub(crate) nodes: Vec<NodeAddr>,
    pub(crate) shard_count: Option<u32>,
    pub(crate) leaders: Vec<Option<NodeId>>,
    /// Each shard's newest known replica set (by epoch).
    pub(crate) routes: Vec<Option<ShardRoute>>,
}

impl Topology {
    pub(crate) fn id_of(&self, addr: SocketAddr) -> Option<NodeId> {
        self.nodes
            .iter()
            .find(|n| n.addr == addr)
            .and_then(|n| n.id)
    }

    pub(crate) fn addr_of(&self, id: NodeId) -> Option<SocketAddr> {
        self.nodes.iter().find(|n| n.id == Some(id)).map(|n| n.addr)
    }

    pub(crate) fn set_shard_count(&mut self, count: u32) {
        if self.shard_count.is_none() && count > 0 && count <= kv_shared::limits::SHARDS_MAX {
            self.shard_count = Some(count);
            // One slot more: the metadata group's (see `slot`).
            self.leaders = vec![None; count as usize + 1];
            self.routes = vec![None; count as usize + 1];
        }
    }

    /// The index of `shard` in `leaders` and `routes`: a shard's own number, and the
    /// slot after the shards' for the metadata group (`None`: no such group known).
    pub(crate) fn slot(&self, shard: ShardId) -> Option<usize> {
        let count = self.shard_count?;
        if shard == METADATA_SHARD {
            Some(count as usize)
        } else {
            (shard.0 < count).then_some(shard.0 as usize)
        }
    }

    /// [`Client::cached_shard`] on the cache itself.
    pub(crate) fn shard_view(&self, key: &[u8], me: NodeId) -> Option<CachedShard> {
        let shard = shard_for_key(key, self.shard_count?);
        let i = self.slot(shard)?;
        let route = self.routes[i].as_ref();
        Some(CachedShard {
            shard,
            // As `Client::cached_leader`: a leader counts once its address is known.
            me_leads: self.leaders[i] == Some(me) && self.addr_of(me).is_some(),
            me_votes: route.map(|r| r.voters.contains(&me)),
            epoch: route.map_or(0, |r| r.epoch),
        })
    }

    /// Adopts `route` if it is newer than the cached one; true if it was.
    pub(crate) fn learn_route(&mut self, route: &ShardRoute) -> bool {
        let Some(index) = self.slot(route.shard) else {
            return false;
        };
        let slot = &mut self.routes[index];
        if slot.as_ref().is_some_and(|have| have.epoch >= route.epoch) {
            return false;
        }
        *slot = Some(route.clone());
        let leader = &mut self.leaders[index];
        if leader.is_some_and(|l| !route.voters.contains(&l)) {
            *leader = None;
        }
        if leader.is_none() {
            *leader = route.leader;
        }
        true
    }

    /// Learns the answering node's id, the nodes it knows, and its view of every shard's
    /// replica set and leader.
    pub(crate) fn learn(&mut self, from: SocketAddr, status: &NodeStatus) {
        if let Some(n) = self.nodes.iter_mut().find(|n| n.addr == from) {
            n.id.get_or_insert(status.node);
        }
        for &(id, addr) in &status.nodes {
            if let Some(n) = self.nodes.iter_mut().find(|n| n.addr == addr) {
                n.id.get_or_insert(id);
            } else if self.nodes.len() < kv_shared::limits::NODES_MAX && self.addr_of(id).is_none()
            {
                self.nodes.push(NodeAddr { id: Some(id), addr });
            }
        }
        self.set_shard_count(status.shard_count);
        for route in status.routes.iter().chain(status.metadata.as_deref()) {
            self.learn_route(route);
        }
        for s in &status.shards {
            let Some(slot) = self.slot(s.shard).map(|i| &mut self.leaders[i]) else {
                continue;
            };
            if s.role == Role::Leader {
                *slot = Some(status.node);
            } else if slot.is_none() {
                *slot = s.leader;
            }
        }
    }
}

pub(crate) struct Shared {
    pub(crate) socket: UdpSocket,
    pub(crate) cluster_id: u64,
    /// Seals requests under the client key.
    pub(crate) requests: Sealer,
    /// Opens replies under the client key.
    pub(crate) replies: Sealer,
    /// The client key's id, carried in every request datagram.
    pub(crate) key_id: u64,
    pub(crate) options: ClientOptions,
    pub(crate) topology: Mutex<Topology>,
    /// By bound session id. Looked up once per reply: SipHash, std's default, was a
    /// tenth of the receive task's work per reply.
    pub(crate) sessions: Mutex<HashMap<ClientId, Mailbox, SeededState>>,
    /// Times out the sessions' attempts.
    pub(crate) watchdog: Watchdog,
    pub(crate) outbox: crate::outbox::Sender,
    pub(crate) counters: Counters,
    pub(crate) ids: Mutex<SmallRng>,
    /// The ticket each node issued to this process, which requests to it echo, and the
    /// requests sent before it was known.
    pub(crate) tickets: Mutex<Tickets>,
}

/// Aborts the client's tasks when the last handle goes away.
pub(crate) struct Tasks(Vec<tokio::task::JoinHandle<()>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

/// A connection to a raftkv cluster. Cheap to clone; all clones share one socket.
#[derive(Clone)]
pub struct Client {
    pub(crate) shared: Arc<Shared>,
    pub(crate) _tasks: Arc<Tasks>,
}

impl Client {
    /// Binds a socket, starts the receive and send tasks, and asks the nodes for their
    /// status to learn the shard count and leaders. Fails only if the shard count is
    /// unknown (no cluster file) and no node answers within `discovery_timeout`.
    pub async fn connect(options: ClientOptions) -> Result<Client, Error> {
        assert!(!options.nodes.is_empty(), "a cluster has at least one node");
        let bind_ip = if options
            .nodes
            .iter()
            .all(|n| n.addr.ip().is_loopback() && n.addr.is_ipv4())
        {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else if options.nodes.iter().any(|n| n.addr.is_ipv6()) {
            IpAddr::V6(Ipv6Addr::UNSPECIFIED)
        } else {
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        };
        let socket = UdpSocket::bind(SocketAddr::new(bind_ip, 0))
            .await
            .map_err(|e| Error::Io(format!("cannot bind a UDP socket on {bind_ip}: {e}")))?;
        let incarnation = auth::random_u64().map_err(|e| {
            Error::Io(format!(
                "no OS randomness for the client's incarnation: {e}"
            ))
        })?;
        let (outbox, outbox_rx) = crate::outbox::outbox();
        let mut topology = Topology {
            nodes: options.nodes.clone(),
            shard_count: None,
            leaders: Vec::new(),
            routes: Vec::new(),
        };
        if let Some(count) = options.shard_count {
            topology.set_shard_count(count);
        }
        let shared = Arc::new(Shared {
            socket,
            cluster_id: options.cluster_id,
            requests: Sealer::client_requests(&options.key.key),
            replies: Sealer::client_replies(&options.key.key).receiving_as(options.protection),
            key_id: options.key.id(),
            watchdog: Watchdog::new(options.attempt_timeout),
            options,
            topology: Mutex::new(topology),
            sessions: Mutex::new(HashMap::with_hasher(SeededState::new())),
            outbox,
            counters: Counters::default(),
            ids: Mutex::new(SmallRng::seed_from_u64(entropy())),
            tickets: Mutex::new(Tickets::default()),
        });
        let tasks = Tasks(vec![
            tokio::spawn(receive_loop(Arc::downgrade(&shared))),
            tokio::spawn(send_loop(Arc::downgrade(&shared), outbox_rx, incarnation)),
            tokio::spawn(sweep_loop(Arc::downgrade(&shared))),
        ]);
        let client = Client {
            shared,
            _tasks: Arc::new(tasks),
        };
        client.discover().await?;
        Ok(client)
    }

    /// Asks every node for its status until the shard count is known and, where node ids
    /// are unknown, every node had a short grace period to answer.
    pub(crate) async fn discover(&self) -> Result<(), Error> {
        let opts = &self.shared.options;
        let ids_known = opts.nodes.iter().all(|n| n.id.is_some());
        let grace = Duration::from_millis(300);
        let start = Instant::now();
        // With a cluster file the shard count is known: leaders are a bonus that requests
        // also learn by redirects, so a dead cluster should not delay the first error much.
        let first_wait = if opts.shard_count.is_some() {
            opts.discovery_timeout.min(Duration::from_millis(500))
        } else {
            opts.discovery_timeout
        };
        let reports = self
            .collect_status(first_wait, if ids_known { Duration::ZERO } else { grace })
            .await;
        if self.shard_count().is_none() {
            let tried = reports
                .iter()
                .map(|r| r.node.addr.to_string())
                .collect::<Vec<_>>()
                .join(", ");
            return Err(Error::NoNodeAnswered {
                waited_ms: start.elapsed().as_millis() as u64,
                tried,
                outcome_unknown: false,
            });
        }
        Ok(())
    }

    /// Asks every node for its status; waits at most `timeout` in all.
    pub async fn status(&self, timeout: Duration) -> Vec<NodeReport> {
        self.collect_status(timeout, timeout).await
    }

    /// Sends Status to every node (resending every 250 ms) until all answered, `timeout`
    /// passed, or `grace` passed since the first answer.
    pub(crate) async fn collect_status(
        &self,
        timeout: Duration,
        grace: Duration,
    ) -> Vec<NodeReport> {
        self.collect_status_from(self.nodes(), timeout, grace).await
    }

    /// Asks `node` for its status and learns from it the nodes it knows (every node
    /// registered since this client connected, with its address); waits at most
    /// `timeout`.
    pub(crate) async fn learn_nodes_from(&self, node: NodeAddr, timeout: Duration) {
        self.collect_status_from(vec![node], timeout, Duration::ZERO)
            .await;
    }

    /// True if this client has an address for every node of `ids`.
    pub(crate) fn addresses_known(&self, ids: &[NodeId]) -> bool {
        let topo = self.shared.topology.lock().expect("topology lock");
        ids.iter().all(|id| topo.addr_of(*id).is_some())
    }

    /// [`Client::collect_status`] from `nodes` only.
    async fn collect_status_from(
        &self,
        nodes: Vec<NodeAddr>,
        timeout: Duration,
        grace: Duration,
    ) -> Vec<NodeReport> {
        let mut session = self.session();
        let seq = session.next_seq;
        session.next_seq += 1;
        let request = ClientRequest {
            client: session.id,
            seq,
            epoch: 0,
            op: Op::Status,
        };
        let start = Instant::now();
        let mut results: Vec<Option<(NodeStatus, Duration)>> = vec![None; nodes.len()];
        let mut first_answer: Option<Instant> = None;
        let resend_every = Duration::from_millis(250);
        let mut next_send = start;
        loop {
            let now = Instant::now();
            let mut deadline = start + timeout;
            if let Some(t) = first_answer {
                deadline = deadline.min(t + grace);
            }
            if now >= deadline || results.iter().all(Option::is_some) {
                break;
            }
            if now >= next_send {
                for (i, n) in nodes.iter().enumerate() {
                    if results[i].is_none() {
                        // A status request is far below a datagram's limit.
                        let _ = self.enqueue(n.addr, &request, false);
                    }
                }
                next_send = now + resend_every;
            }
            let wake = deadline.min(next_send);
            match tokio::time::timeout_at(wake.into(), session.rx.recv()).await {
                Ok(Some(incoming)) => {
                    let Answer::Status(status) = incoming.outcome else {
                        continue;
                    };
                    if incoming.seq != seq {
                        continue;
                    }
                    if let Some(i) = nodes.iter().position(|n| n.addr == incoming.from) {
                        self.shared
                            .topology
                            .lock()
                            .expect("topology lock")
                            .learn(incoming.from, &status);
                        results[i].get_or_insert((*status, start.elapsed()));
                        first_answer.get_or_insert(Instant::now());
                    }
                }
                Ok(None) => break,
                Err(_) => {}
            }
        }
        nodes
            .into_iter()
            .zip(results)
            .map(|(node, r)| NodeReport {
                node,
                result: r.ok_or_else(|| format!("no answer in {} ms", start.elapsed().as_millis())),
            })
            .collect()
    }

    /// A new logical client with a fresh random client id.
    pub fn session(&self) -> Session {
        let (tx, rx) = inbox::inbox();
        let mut sessions = self.shared.sessions.lock().expect("sessions lock");
        let (id, rng_seed) = {
            let mut rng = self.shared.ids.lock().expect("id rng lock");
            loop {
                let id = ClientId(rng.gen::<u64>() | 1);
                if !sessions.contains_key(&self.bound(id)) {
                    break (id, rng.gen::<u64>());
                }
            }
        };
        let bound = self.bound(id);
        let slot = Slot::default();
        sessions.insert(
            bound,
            Mailbox {
                tx,
                slot: slot.clone(),
            },
        );
        Session {
            client: self.clone(),
            id,
            bound,
            next_seq: 1,
            rx,
            rng: SmallRng::seed_from_u64(rng_seed),
            rotation: rng_seed as usize,
            open_shards: std::collections::BTreeSet::new(),
            slot,
            last_shard: None,
            shard_count: None,
        }
    }

    /// The session id the nodes bind the declared id `id` to (replies carry it).
    pub(crate) fn bound(&self, id: ClientId) -> ClientId {
        auth::session_id(&self.shared.options.key.name, id)
    }

    /// The shard count (known once a cluster file was given or a node answered).
    pub fn shard_count(&self) -> Option<u32> {
        self.shared
            .topology
            .lock()
            .expect("topology lock")
            .shard_count
    }

    /// The shard that owns `key`.
    pub fn shard_of(&self, key: &[u8]) -> Option<ShardId> {
        self.shard_count().map(|n| shard_for_key(key, n))
    }

    /// The cached leader of `shard`, with its address if known.
    pub fn cached_leader(&self, shard: ShardId) -> Option<NodeAddr> {
        let topo = self.shared.topology.lock().expect("topology lock");
        let id = topo.leaders[topo.slot(shard)?]?;
        Some(NodeAddr {
            id: Some(id),
            addr: topo.addr_of(id)?,
        })
    }

    /// What the client last learned about the shard of `key`, as seen by node `me`, in
    /// one look at the cache and without copying the replica set: the per-request check
    /// of a gateway that answers what its own node holds (`None`: the shard count is not
    /// known yet).
    pub fn cached_shard(&self, key: &[u8], me: NodeId) -> Option<CachedShard> {
        let topo = self.shared.topology.lock().expect("topology lock");
        topo.shard_view(key, me)
    }

    /// The epoch of `shard`'s replica set as last learned (0: not learned yet), which
    /// every request carries: read in place, since a copy of the route allocates.
    pub fn cached_epoch(&self, shard: ShardId) -> u64 {
        let topo = self.shared.topology.lock().expect("topology lock");
        topo.slot(shard)
            .and_then(|i| topo.routes[i].as_ref())
            .map_or(0, |r| r.epoch)
    }

    /// [`Client::cached_epoch`] and [`Client::cached_leader`] in one look at the topology
    /// (each attempt of a request needs both).
    pub(crate) fn epoch_and_leader(&self, shard: ShardId) -> (u64, Option<NodeAddr>) {
        let topo = self.shared.topology.lock().expect("topology lock");
        let Some(i) = topo.slot(shard) else {
            return (0, None);
        };
        let epoch = topo.routes[i].as_ref().map_or(0, |r| r.epoch);
        let leader = topo.leaders[i].and_then(|id| {
            Some(NodeAddr {
                id: Some(id),
                addr: topo.addr_of(id)?,
            })
        });
        (epoch, leader)
    }

    /// The replica set of `shard` as last learned (`None`: not learned yet).
    pub fn cached_route(&self, shard: ShardId) -> Option<ShardRoute> {
        let topo = self.shared.topology.lock().expect("topology lock");
        topo.slot(shard).and_then(|i| topo.routes[i].clone())
    }

    /// The nodes that may serve `shard`: its known voters with an address, else every
    /// known node.
    pub(crate) fn candidates(&self, shard: ShardId) -> Vec<NodeAddr> {
        let topo = self.shared.topology.lock().expect("topology lock");
        let replicas: Vec<NodeAddr> = topo
            .slot(shard)
            .and_then(|i| topo.routes[i].as_ref())
            .map(|r| {
                r.voters
                    .iter()
                    .filter_map(|&id| topo.addr_of(id).map(|addr| NodeAddr { id: Some(id), addr }))
                    .collect()
            })
            .unwrap_or_default();
        if replicas.is_empty() {
            topo.nodes.clone()
        } else {
            replicas
        }
    }

    /// Adopts a replica set a node answered with, if newer; true if it was.
    pub(crate) fn learn_route(&self, route: &ShardRoute) -> bool {
        self.shared
            .topology
            .lock()
            .expect("topology lock")
            .learn_route(route)
    }

    /// The nodes, with the ids learned so far.
    pub fn nodes(&self) -> Vec<NodeAddr> {
        self.shared
            .topology
            .lock()
            .expect("topology lock")
            .nodes
            .clone()
    }

    /// The client's counters so far.
    pub fn metrics(&self) -> Metrics {
        let c = &self.shared.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Metrics {
            datagrams_sent: get(&c.datagrams_sent),
            requests_sent: get(&c.requests_sent),
            retries: get(&c.retries),
            redirects: get(&c.redirects),
            replies_received: get(&c.replies_received),
            reply_datagrams_received: get(&c.reply_datagrams),
            datagrams_dropped: get(&c.datagrams_dropped),
        }
    }

    /// The options in force.
    pub fn options(&self) -> &ClientOptions {
        &self.shared.options
    }

    /// A target's node id: the one it was named with, else the one discovery learnt.
    pub(crate) fn node_id(&self, target: NodeAddr) -> Option<NodeId> {
        target.id.or_else(|| {
            self.shared
                .topology
                .lock()
                .expect("topology lock")
                .id_of(target.addr)
        })
    }

    /// Queues `request` for `to`, encoded straight into the outbox. `checked`: refuse it
    /// (queue nothing) if it is too large for a datagram of its own, answering its
    /// encoded length.
    pub(crate) fn enqueue(
        &self,
        to: SocketAddr,
        request: &ClientRequest,
        checked: bool,
    ) -> Result<(), usize> {
        self.shared.outbox.push(to, |out| {
            let start = out.len();
            kv_shared::proto::encode_request(request, out);
            let len = out.len() - start;
            if checked && count_prefix_bytes(1) + len > BODY_BYTES_MAX {
                return Err(len);
            }
            Ok(())
        })?;
        bump(&self.shared.counters.requests_sent);
        Ok(())
    }

    pub(crate) fn set_leader(&self, shard: ShardId, leader: Option<NodeId>) {
        let mut topo = self.shared.topology.lock().expect("topology lock");
        if let Some(i) = topo.slot(shard) {
            topo.leaders[i] = leader;
        }
    }
}

/// A seed that differs between processes and calls, without OS randomness APIs.
fn entropy() -> u64 {
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let x = nanos
        ^ (u64::from(std::process::id()) << 32)
        ^ CALLS
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15);
    // Spreads nearby seeds apart.
    kv_shared::splitmix::mix(x)
}
#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn a_shard_view_says_what_the_cached_route_and_leader_say() {
        let mut topo = Topology {
            nodes: vec![
                NodeAddr {
                    id: Some(NodeId(1)),
                    addr: addr(1),
                },
                NodeAddr {
                    id: Some(NodeId(2)),
                    addr: addr(2),
                },
            ],
            shard_count: None,
            leaders: Vec::new(),
            routes: Vec::new(),
        };
        assert_eq!(topo.shard_view(b"k", NodeId(1)), None, "no shard count yet");
        topo.set_shard_count(4);
        let shard = shard_for_key(b"k", 4);
        let unlearned = CachedShard {
            shard,
            me_leads: false,
            me_votes: None,
            epoch: 0,
        };
        assert_eq!(topo.shard_view(b"k", NodeId(1)), Some(unlearned));
        topo.learn_route(&ShardRoute {
            shard,
            epoch: 5,
            voters: vec![NodeId(1), NodeId(2)],
            learners: vec![NodeId(3)],
            leader: Some(NodeId(2)),
        });
        let view = |topo: &Topology, me| topo.shard_view(b"k", NodeId(me)).expect("known");
        assert_eq!(
            view(&topo, 2),
            CachedShard {
                shard,
                me_leads: true,
                me_votes: Some(true),
                epoch: 5
            }
        );
        let one = view(&topo, 1);
        assert_eq!((one.me_leads, one.me_votes), (false, Some(true)));
        assert_eq!(
            (view(&topo, 3).me_leads, view(&topo, 3).me_votes),
            (false, Some(false)),
            "a learner does not vote"
        );
        // A leader whose address the client does not know is not counted, as in
        // `cached_leader`.
        topo.leaders[shard.0 as usize] = Some(NodeId(3));
        assert!(!view(&topo, 3).me_leads);
    }
}
