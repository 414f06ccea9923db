//! The kvserver event loop: one UDP socket, one tick timer, one disk thread, and the
//! node core in the middle. Every wake-up feeds the core as much input as is ready
//! (disk completions, a tick, every queued datagram), then takes its output once and
//! acts on it: writes to the disk thread first (so the fsync starts early), then peer
//! datagrams, then client replies batched per address.
//!
//! Every datagram is authenticated before any of its payload is decoded (the tag under
//! the cluster key or the client's key, then the sender's replay window); nothing is ever
//! sent to a source whose datagram did not verify. Client sessions are bound to the
//! authenticated client name here, at the boundary, so the core is unchanged.
//!
//! Acknowledgements are safe by construction: the core only releases a client reply
//! or a vote after `on_disk_done`, which this loop calls only for writes the disk thread
//! reported synced. A kill -9 at any instant therefore loses nothing acknowledged.

use crate::auth::{next_incarnation, ClientWindows, NodeKeys, SessionBindings};
use crate::balancer::{self, Leadership};
use crate::disk::{DiskEvent, DiskThread, LogStore};
use crate::metrics::{MeteredStore, Metrics, UdpRequests};
use crate::net::{ClientAddrs, ClientRoute, Counters, DropReason};
use crate::registration::{self, Registration, RegistrationEvent};
use crate::resp::local::{LocalInbox, LocalRead, LOCAL_TOKEN};
use crate::{core_events, front_ends};
use kv_node::{codec, ClientToken, NodeConfig, NodeCore, WriteRefusal};
use kv_shared::auth::{
    self as kv_auth, Permission, Protection, ReplayWindow, Sealer, Stamp, BODY_BYTES_MAX,
    BODY_OFFSET, TAG_BYTES,
};
use kv_shared::config::ClusterConfig;
use kv_shared::limits::{
    CLIENT_HELLOS_PER_FLUSH_MAX, CLIENT_REQUESTS_PER_DATAGRAM_MAX, DATAGRAM_BYTES_MAX,
};
use kv_shared::pack::{encoded_bytes, pack, PackLimit};
use kv_shared::proto::{ClientError, ClientReply, ClientRequest, Outcome};
use kv_shared::registry::{NodeState, METADATA_SHARD};
use kv_shared::wire::{self, Kind};
use kv_shared::NodeId;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};
use tokio::time::MissedTickBehavior;

/// Most datagrams read from the socket before the loop hands control back (so ticks and
/// disk completions are never starved by a flood) and flushes the core's output.
pub const RECV_BATCH_MAX: usize = 256;
/// How often the traffic counters are logged (at `info` when datagrams were dropped in
/// the interval, else at `debug`).
pub const METRICS_INTERVAL: Duration = Duration::from_secs(10);
/// Ticks between copies of the status table and counters into the metrics.
pub const METRICS_SYNC_TICKS: u64 = 10;
/// Receive and send buffer asked of the kernel for the node's socket (it caps the request
/// at `net.core.rmem_max` / `wmem_max`). The default (208 KiB on Linux) holds about six
/// 32 KiB snapshot chunks, and a follower catching up takes the windows of every shard's
/// transfer at once: with the default it drops chunks, and every drop costs a resend.
pub const SOCKET_BUFFER_BYTES: usize = 8 * 1024 * 1024;

/// Everything a node needs to run, validated.
#[derive(Debug)]
pub struct ServerOptions {
    /// The cluster file.
    pub cluster: ClusterConfig,
    /// The keys its key files hold ([`NodeKeys::load`]).
    pub keys: NodeKeys,
    /// This node (must be listed in `cluster`).
    pub node: NodeId,
    /// Where this node's WAL and snapshots live (created if missing).
    pub data_dir: PathBuf,
    /// Overrides the core's snapshot threshold (entries in a shard's log before it takes
    /// a snapshot); tests use a tiny one to force compaction.
    pub snapshot_threshold_entries: Option<u64>,
    /// Seed of the core's randomness (election jitter).
    pub seed: u64,
    /// Where to serve the Redis protocol (`None`: not at all).
    pub redis_addr: Option<SocketAddr>,
    /// Where to serve `/metrics` and `/health` (`None`: not at all).
    pub http_addr: Option<SocketAddr>,
    /// Set for a node that is not in the cluster file and joins a running cluster.
    pub join: Option<JoinOptions>,
}

/// How a node outside the cluster file joins (`kvserver --join`).
#[derive(Clone, Debug)]
pub struct JoinOptions {
    /// Nodes of the cluster to ask first (any will do; they name the others).
    pub seeds: Vec<SocketAddr>,
    /// Where this node listens for peers and clients.
    pub listen: SocketAddr,
}

impl ServerOptions {
    /// Where this node listens: the cluster file's address, or `--listen` when joining.
    pub fn listen_addr(&self) -> Option<SocketAddr> {
        match &self.join {
            Some(j) => Some(j.listen),
            None => self.cluster.addr_of(self.node),
        }
    }
}

/// Why a node stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A node joining with `--join` whose id the cluster file lists.
    #[error("node {node} is listed in the cluster file: start it without --join (--join is for a node the file does not list)")]
    JoinListed {
        /// The id asked for.
        node: NodeId,
    },
    /// The node id is not listed in the cluster file.
    #[error("node {node} is not listed in the cluster file (members: {members}); a node the file does not list joins with --join")]
    NotAMember {
        /// The id asked for.
        node: NodeId,
        /// The ids listed.
        members: String,
    },
    /// The data directory could not be created or opened, or its WAL is corrupt.
    #[error("cannot open the data directory {}: {source}", dir.display())]
    Storage {
        /// The data directory.
        dir: PathBuf,
        /// What kv-storage said (file and offset for corruption).
        #[source]
        source: kv_storage::StorageError,
    },
    /// The data directory could not be created.
    #[error("cannot create the data directory {}: {source}", dir.display())]
    DataDir {
        /// The data directory.
        dir: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The node core refused what storage recovered.
    #[error("recovery from {} failed: {source}", dir.display())]
    Recovery {
        /// The data directory.
        dir: PathBuf,
        /// What the core said.
        #[source]
        source: kv_node::RecoveryError,
    },
    /// A front end's TCP address could not be bound.
    #[error("cannot bind the {what} address {addr}: {source}")]
    Bind {
        /// Which front end.
        what: &'static str,
        /// The address from the cluster file (or its default).
        addr: SocketAddr,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The Redis gateway's client key file is missing, unreadable or malformed.
    #[error("the Redis gateway's client key: {0}")]
    GatewayKey(#[source] kv_shared::auth::KeyFileError),
    /// The Redis front end's users could not be set up from the cluster file.
    #[error("the Redis front end's users: {0}")]
    RespUsers(#[source] crate::resp::users::UsersError),
    /// The socket (or the disk thread's creation) failed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// Storage failed while running (other than a full disk); the node cannot continue.
    #[error("storage failed: {0}")]
    Disk(#[source] kv_storage::StorageError),
    /// The disk thread stopped without saying why (it panicked); nothing more becomes
    /// durable, so the node cannot continue.
    #[error("the disk thread stopped")]
    DiskThreadStopped,
    /// The node registry refuses this node with this data directory.
    #[error("refusing to start: {0}")]
    Refused(#[source] kv_shared::registry::RegisterRefusal),
    /// The data directory's identity file could not be read or written.
    #[error("cannot read or make the identity of the data directory {}: {source}", dir.display())]
    DataDirIdentity {
        /// The data directory.
        dir: PathBuf,
        /// What the OS said (or why the file is malformed).
        #[source]
        source: std::io::Error,
    },
    /// The incarnation file in the data directory could not be read or written.
    #[error("cannot record this start's incarnation in {}: {source}", dir.display())]
    Incarnation {
        /// The data directory.
        dir: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
}

impl ServerError {
    /// The process exit code for this error: 3 when the data on disk is refused (a
    /// corrupt WAL or a recovery error: an operator must look), 2 for a configuration
    /// mistake, 1 for anything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            ServerError::Storage { .. } | ServerError::Recovery { .. } => 3,
            ServerError::NotAMember { .. }
            | ServerError::JoinListed { .. }
            | ServerError::Refused(_)
            | ServerError::GatewayKey(_)
            | ServerError::RespUsers(_) => 2,
            ServerError::DataDir { .. }
            | ServerError::Bind { .. }
            | ServerError::Io(_)
            | ServerError::Disk(_)
            | ServerError::DiskThreadStopped
            | ServerError::DataDirIdentity { .. }
            | ServerError::Incarnation { .. } => 1,
        }
    }
}

/// Runs a node on `socket` until `shutdown` completes (then finishes the disk batch in
/// progress, sends what it made acknowledgeable, and returns `Ok`) or a fatal error.
///
/// Opens the data directory (recovering the WAL), builds the node core, starts the disk
/// thread, and drives the event loop. The socket is the caller's, so tests can bind
/// port 0; peers are still addressed as the cluster file says.
pub async fn run(
    socket: UdpSocket,
    opts: ServerOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    check_member(&opts)?;
    let dir = opts.data_dir.clone();
    let (storage, recovered) = tokio::task::spawn_blocking(move || open_storage(dir))
        .await
        .expect("opening storage panicked")?;
    run_with_store(socket, opts, storage, recovered, shutdown).await
}

/// Asks for `SOCKET_BUFFER_BYTES` of receive and send buffer and returns what the kernel
/// granted (0 if it could not be read), so a log line shows when `rmem_max` capped it. A
/// refusal is no reason to stop: the node works with smaller buffers, only it loses more.
fn enlarge_buffers(socket: &UdpSocket) -> (usize, usize) {
    let sock = socket2::SockRef::from(socket);
    if let Err(e) = sock.set_recv_buffer_size(SOCKET_BUFFER_BYTES) {
        tracing::warn!("cannot enlarge the socket's receive buffer: {e}");
    }
    if let Err(e) = sock.set_send_buffer_size(SOCKET_BUFFER_BYTES) {
        tracing::warn!("cannot enlarge the socket's send buffer: {e}");
    }
    (
        sock.recv_buffer_size().unwrap_or(0),
        sock.send_buffer_size().unwrap_or(0),
    )
}

/// [`run`] over an already opened store and what it recovered: the seam for tests that
/// wrap the real storage (for example to make the disk look full).
pub async fn run_with_store<S: LogStore>(
    socket: UdpSocket,
    opts: ServerOptions,
    store: S,
    recovered: kv_storage::Recovered,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    check_member(&opts)?;
    if let Some(tail) = &recovered.truncated_tail {
        // The end of an append a crash interrupted: expected after a power loss, but an
        // operator should be able to see what was dropped.
        tracing::warn!(
            file = %opts.data_dir.join(&tail.file).display(),
            offset = tail.offset,
            bytes_cut = tail.bytes_cut,
            "cut a torn WAL tail at recovery"
        );
    }
    let me = opts.node;
    let mut config = NodeConfig::from_cluster(&opts.cluster, me);
    if let Some(n) = opts.snapshot_threshold_entries {
        config.snapshot_threshold_entries = n;
    }
    config.seed = opts.seed;
    let now_unix_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let incarnation = next_incarnation(&opts.data_dir, now_unix_ms).map_err(|source| {
        ServerError::Incarnation {
            dir: opts.data_dir.clone(),
            source,
        }
    })?;
    let holds_data = !recovered.records.is_empty() || !recovered.snapshots.is_empty();
    let identity =
        registration::data_dir_identity(&opts.data_dir, holds_data).map_err(|source| {
            ServerError::DataDirIdentity {
                dir: opts.data_dir.clone(),
                source,
            }
        })?;
    let core = NodeCore::new(config, recovered).map_err(|source| ServerError::Recovery {
        dir: opts.data_dir.clone(),
        source,
    })?;
    let metrics = Metrics::new();
    let front_ends = front_ends::start(&opts, metrics.clone()).await?;
    let (events_tx, events) = unbounded_channel();
    let disk = DiskThread::spawn(MeteredStore::new(store, metrics.clone()), events_tx)?;
    let (recv_buffer_bytes, send_buffer_bytes) = enlarge_buffers(&socket);
    tracing::info!(
        node = me.0,
        addr = %socket.local_addr()?,
        recv_buffer_bytes,
        send_buffer_bytes,
        data_dir = %opts.data_dir.display(),
        shards = opts.cluster.shards,
        incarnation,
        data_dir_identity = format_args!("{:016x}", identity.identity),
        new_data_dir = identity.new,
        protection = ?opts.keys.protection,
        cluster_keys = opts.keys.cluster.len(),
        client_keys = opts.keys.clients.len(),
        "kvserver node started"
    );
    let peers: Vec<_> = opts
        .cluster
        .nodes
        .iter()
        .filter(|n| n.id != me.0)
        .map(|n| (NodeId(n.id), n.addr))
        .collect();
    let peer_send = peers
        .iter()
        .map(|(p, _)| opts.keys.peer_sender(me, *p))
        .collect();
    let peer_recv = peers
        .iter()
        .map(|(p, _)| opts.keys.peer_receivers(me, *p))
        .collect();
    let (registration_tx, registration) = unbounded_channel();
    let (mut balancer_feed, mut balancer_task) = (None, None);
    let registration_task = match front_ends::gateway_key(&opts.cluster)? {
        Some(key) => {
            let reg = Registration {
                node: me,
                addr: opts.listen_addr().expect("check_member passed"),
                identity,
                others: match &opts.join {
                    // The registry decides: it is enough to hear it from one node.
                    Some(_) => Vec::new(),
                    None => peers.iter().map(|(p, _)| *p).collect(),
                },
                needs_registry: opts.join.is_some(),
            };
            let mut options = kvcli::ClientOptions::from_config(&opts.cluster, key);
            if let Some(join) = &opts.join {
                options.nodes = (join.seeds.iter())
                    .map(|&addr| kvcli::NodeAddr { id: None, addr })
                    .collect();
            }
            let (rounds_tx, rounds) = tokio::sync::watch::channel(None);
            if opts.cluster.balancer.enabled {
                let (feed, leadership) = tokio::sync::watch::channel(Leadership::default());
                balancer_feed = Some(feed);
                balancer_task = Some(AbortOnDrop(tokio::spawn(balancer::run(
                    opts.cluster.balancer.clone(),
                    opts.cluster.replication,
                    options.clone(),
                    leadership,
                    rounds,
                    metrics.clone(),
                ))));
            }
            Some(tokio::spawn(registration::run(
                reg,
                options,
                registration_tx,
                rounds_tx,
            )))
        }
        None => {
            tracing::warn!(
                "this node cannot register in the node registry: the cluster file names no \
                 read-write client key (client_key_file, or client_key_files)"
            );
            None
        }
    };
    // A new data directory takes part only once the cluster says its id is not known
    // under another one (`registration`); without a way to ask, it cannot wait.
    let taking_part = !identity.new || registration_task.is_none();
    let event_loop = EventLoop {
        registration,
        registration_open: registration_task.is_some(),
        _registration_task: registration_task.map(AbortOnDrop),
        balancer_feed,
        _balancer_task: balancer_task,
        taking_part,
        core,
        socket,
        me,
        cluster_id: opts.cluster.cluster_id,
        peer_windows: vec![ReplayWindow::default(); peers.len()],
        hello_due: vec![false; peers.len()],
        client_hellos: Vec::new(),
        peer_send,
        peer_recv,
        file_peers: peers.len(),
        peers,
        keys: opts.keys,
        incarnation,
        sent_counter: 0,
        client_windows: ClientWindows::new(kv_auth::random_u64()?),
        session_bindings: SessionBindings::default(),
        clients: ClientAddrs::default(),
        counters: Counters::default(),
        disk: Some(disk),
        recv_buf: vec![0; DATAGRAM_BYTES_MAX + 1],
        datagram_buf: vec![0; DATAGRAM_BYTES_MAX],
        started: Instant::now(),
        drops_logged: 0,
        metrics,
        _front_ends: front_ends.tasks,
        local_reads: front_ends.local_reads,
        udp_requests: UdpRequests::default(),
        ticks: 0,
    };
    event_loop
        .run(
            events,
            Duration::from_millis(opts.cluster.timing.tick_ms),
            shutdown,
        )
        .await
}

fn check_member(opts: &ServerOptions) -> Result<(), ServerError> {
    let members = opts.cluster.node_ids();
    match (members.contains(&opts.node), &opts.join) {
        (true, None) | (false, Some(_)) => return Ok(()),
        (true, Some(_)) => return Err(ServerError::JoinListed { node: opts.node }),
        (false, None) => {}
    }
    Err(ServerError::NotAMember {
        node: opts.node,
        members: members
            .iter()
            .map(|n| n.0.to_string())
            .collect::<Vec<_>>()
            .join(", "),
    })
}

/// Opens (creating if needed) the data directory and recovers its WAL and snapshots.
pub fn open_storage(
    dir: PathBuf,
) -> Result<
    (
        kv_storage::Storage<kv_storage::RealDisk>,
        kv_storage::Recovered,
    ),
    ServerError,
> {
    std::fs::create_dir_all(&dir).map_err(|source| ServerError::DataDir {
        dir: dir.clone(),
        source,
    })?;
    let storage_err = |source| ServerError::Storage {
        dir: dir.clone(),
        source,
    };
    let disk = kv_storage::RealDisk::open(&dir).map_err(storage_err)?;
    kv_storage::Storage::open(disk, kv_storage::WalOptions::default()).map_err(storage_err)
}

/// What woke the loop up.
enum Wake {
    Shutdown,
    Disk(Option<DiskEvent>),
    Tick,
    Readable(std::io::Result<()>),
    Metrics,
    LocalReads(Vec<LocalRead>),
    Registration(Option<RegistrationEvent>),
}

/// A task that stops when its owner is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

struct EventLoop {
    /// What the registration task reports.
    registration: UnboundedReceiver<RegistrationEvent>,
    /// False once the registration task is gone (its channel closed).
    registration_open: bool,
    _registration_task: Option<AbortOnDrop>,
    /// Tells the balancer whether this node leads the metadata group (`None`: disabled).
    balancer_feed: Option<tokio::sync::watch::Sender<Leadership>>,
    _balancer_task: Option<AbortOnDrop>,
    /// False while a new data directory waits for the first-start check: the core is
    /// neither ticked nor given peer messages (it answers status, which the check of
    /// the other nodes' new directories needs).
    taking_part: bool,
    core: NodeCore,
    socket: UdpSocket,
    me: NodeId,
    cluster_id: u64,
    peers: Vec<(NodeId, SocketAddr)>,
    /// How many of `peers`, from the front, the cluster file lists: their addresses are
    /// the file's, whatever the registry says (a registration, open to any read-write
    /// client key, must not be able to redirect a bootstrap node's traffic).
    file_peers: usize,
    /// The replay window of each peer, in the order of `peers`; its incarnation is what
    /// this node's datagrams to the peer echo.
    peer_windows: Vec<ReplayWindow>,
    /// Peers that sent a datagram meant for another incarnation of this node since the
    /// last flush: each gets this node's stamp in a datagram of its own, unless the flush
    /// sends it one anyway.
    hello_due: Vec<bool>,
    /// Clients whose requests echoed no ticket or another one since the last flush: each
    /// gets a hello, an empty reply datagram whose stamp echoes its ticket.
    client_hellos: Vec<(SocketAddr, ClientRoute, u64)>,
    /// Seals what this node sends to each peer, in the order of `peers`.
    peer_send: Vec<Sealer>,
    /// Opens what each peer sends, under every cluster key held, in the order of `peers`.
    peer_recv: Vec<Vec<Sealer>>,
    keys: NodeKeys,
    /// This start's incarnation: the first half of every stamp this node sends.
    incarnation: u64,
    /// Datagrams sealed in this incarnation: the second half of the next stamp.
    sent_counter: u64,
    client_windows: ClientWindows,
    /// The session ids bound to client names, remembered per declared id.
    session_bindings: SessionBindings,
    clients: ClientAddrs,
    counters: Counters,
    /// `None` once shutdown has closed it.
    disk: Option<DiskThread>,
    /// One byte longer than the largest datagram, so an oversized one shows as such.
    recv_buf: Vec<u8>,
    /// Where each datagram sent is made: its body is encoded at `BODY_OFFSET` and sealed
    /// in place around it (DATAGRAM_BYTES_MAX long, so any body fits).
    datagram_buf: Vec<u8>,
    started: Instant,
    drops_logged: u64,
    metrics: Metrics,
    /// The RESP and HTTP tasks; they stop when the loop ends.
    _front_ends: front_ends::Tasks,
    /// Reads the Redis gateway hands to the core directly, and where their replies go.
    local_reads: LocalInbox,
    udp_requests: UdpRequests,
    ticks: u64,
}

impl EventLoop {
    async fn run(
        mut self,
        mut events: UnboundedReceiver<DiskEvent>,
        tick: Duration,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), ServerError> {
        let mut ticker = tokio::time::interval(tick);
        // A late tick is not made up for with a burst: Raft timeouts only get longer.
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut metrics = tokio::time::interval_at(
            tokio::time::Instant::now() + METRICS_INTERVAL,
            METRICS_INTERVAL,
        );
        tokio::pin!(shutdown);
        let result = loop {
            let wake = tokio::select! {
                biased;
                () = &mut shutdown => Wake::Shutdown,
                ev = events.recv() => Wake::Disk(ev),
                _ = ticker.tick() => Wake::Tick,
                r = self.socket.readable() => Wake::Readable(r),
                _ = metrics.tick() => Wake::Metrics,
                reads = self.local_reads.next() => Wake::LocalReads(reads),
                ev = self.registration.recv(), if self.registration_open => Wake::Registration(ev),
            };
            let step = match wake {
                Wake::Shutdown => break Ok(()),
                Wake::Disk(None) => Err(ServerError::DiskThreadStopped),
                Wake::Disk(Some(ev)) => self.on_disk_events(ev, &mut events),
                Wake::Registration(ev) => self.on_registration(ev),
                Wake::Tick if !self.taking_part => Ok(()),
                Wake::Tick => {
                    // Wall time only feeds the status table ("ms since a peer was heard").
                    self.core.set_now_ms(self.now_ms());
                    self.core.tick();
                    self.ticks += 1;
                    if self.ticks.is_multiple_of(METRICS_SYNC_TICKS) {
                        self.sync_metrics();
                        self.sync_peers();
                        self.feed_balancer();
                    }
                    Ok(())
                }
                Wake::Readable(Ok(())) => {
                    self.drain_socket();
                    Ok(())
                }
                Wake::Readable(Err(e)) => Err(e.into()),
                Wake::Metrics => {
                    self.log_metrics();
                    Ok(())
                }
                Wake::LocalReads(reads) => {
                    self.on_local_reads(reads);
                    Ok(())
                }
            };
            if let Err(e) = step.and_then(|()| self.gather_ready(&mut events)) {
                break Err(e);
            }
            self.flush().await;
            if self.disk.is_none() {
                break Err(ServerError::DiskThreadStopped);
            }
        };
        self.finish(events, result).await
    }

    /// Takes in every other input that is already waiting (disk completions, queued
    /// datagrams) so that one flush answers them all: acks released by an fsync and the
    /// replies to datagrams that arrived meanwhile leave in one datagram per peer instead
    /// of one per input. Costs no syscall when nothing is waiting (tokio knows the
    /// socket's readiness without asking the kernel).
    fn gather_ready(
        &mut self,
        events: &mut UnboundedReceiver<DiskEvent>,
    ) -> Result<(), ServerError> {
        if let Ok(ev) = events.try_recv() {
            self.on_disk_events(ev, events)?;
        }
        self.drain_socket();
        while let Some(reads) = self.local_reads.try_next() {
            self.on_local_reads(reads);
        }
        Ok(())
    }

    /// The Redis gateway's reads: straight into the core (already bound to a client name
    /// and reads only, so no permission or disk-full check applies).
    fn on_local_reads(&mut self, reads: Vec<LocalRead>) {
        for read in reads {
            let request = self.local_reads.take(read);
            self.core.on_client_request(LOCAL_TOKEN, request);
        }
    }

    /// What the registration task found.
    fn on_registration(&mut self, ev: Option<RegistrationEvent>) -> Result<(), ServerError> {
        match ev {
            // The task ended: nothing more will come.
            None => self.registration_open = false,
            Some(RegistrationEvent::Heard(registry)) => {
                self.core.learn_registry(registry);
                self.sync_peers();
            }
            Some(RegistrationEvent::Cleared) => {
                tracing::info!(
                    node = self.me.0,
                    "new data directory: no node knows this id under another one; taking part"
                );
                self.taking_part = true;
            }
            Some(RegistrationEvent::Registered) => {
                tracing::info!(node = self.me.0, "registered in the node registry");
            }
            Some(RegistrationEvent::Refused(refusal)) => return Err(ServerError::Refused(refusal)),
        }
        Ok(())
    }

    /// Makes a peer of every node the registry lists that this node does not know yet
    /// (joined after the cluster file was written), and follows a joined node's new
    /// address (never a cluster-file node's): only such nodes' datagrams are opened, and
    /// only they are sent to.
    fn sync_peers(&mut self) {
        let Some(registry) = self.core.registry() else {
            return;
        };
        for r in registry.nodes.iter().filter(|r| r.id != self.me) {
            if r.state == NodeState::Removed {
                continue;
            }
            match self.peers.iter().position(|(id, _)| *id == r.id) {
                Some(i) if i >= self.file_peers => self.peers[i].1 = r.addr,
                Some(_) => {}
                None => {
                    tracing::info!(peer = r.id.0, addr = %r.addr, "a registered node becomes a peer");
                    self.peers.push((r.id, r.addr));
                    self.peer_windows.push(ReplayWindow::default());
                    self.hello_due.push(false);
                    self.peer_send.push(self.keys.peer_sender(self.me, r.id));
                    self.peer_recv.push(self.keys.peer_receivers(self.me, r.id));
                }
            }
        }
    }

    /// Tells the balancer whether this node leads the metadata group, with its registry
    /// (only when that changed).
    fn feed_balancer(&self) {
        if let Some(feed) = &self.balancer_feed {
            let leads = self.core.leader_of(METADATA_SHARD) == Some(self.me);
            let now = Leadership {
                leads,
                registry: self.core.registry(),
            };
            feed.send_if_modified(|had| {
                let changed = *had != now;
                if changed {
                    *had = now;
                }
                changed
            });
        }
    }

    /// Milliseconds since the node started.
    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Handles `first` and every other disk event already queued.
    fn on_disk_events(
        &mut self,
        first: DiskEvent,
        events: &mut UnboundedReceiver<DiskEvent>,
    ) -> Result<(), ServerError> {
        let mut next = Some(first);
        while let Some(ev) = next {
            match ev {
                DiskEvent::Done(ids) => {
                    for id in ids {
                        self.core.on_disk_done(id);
                    }
                }
                DiskEvent::Full(reason) => {
                    tracing::error!(
                        "{reason}: refusing client writes until space frees up \
                         (reads are still served; the stalled write is retried every {:?})",
                        crate::disk::DISK_FULL_RETRY
                    );
                    self.core.refuse_writes(Some(WriteRefusal::DiskFull));
                }
                DiskEvent::Recovered => {
                    tracing::info!("disk has room again: accepting client writes");
                    self.core.refuse_writes(None);
                }
                DiskEvent::Failed(error) => return Err(ServerError::Disk(error)),
            }
            next = events.try_recv().ok();
        }
        Ok(())
    }

    /// Reads every queued datagram (up to [`RECV_BATCH_MAX`]) into the core.
    fn drain_socket(&mut self) {
        let mut buf = std::mem::take(&mut self.recv_buf);
        for _ in 0..RECV_BATCH_MAX {
            match self.socket.try_recv_from(&mut buf) {
                Ok((n, from)) => self.on_datagram(&mut buf[..n], from),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    // Not fatal: a UDP socket reports asynchronous errors (an ICMP
                    // unreachable) this way; the next read goes on.
                    let unspecified = SocketAddr::from(([0, 0, 0, 0], 0));
                    self.counters.dropped(
                        DropReason::BadHeader,
                        unspecified,
                        &format_args!("recv failed: {e}"),
                    );
                    break;
                }
            }
        }
        self.recv_buf = buf;
    }

    fn on_datagram(&mut self, datagram: &mut [u8], from: SocketAddr) {
        self.counters.datagrams_in += 1;
        let header = match wire::decode(datagram, self.cluster_id) {
            Ok((header, _)) => header,
            Err(e) => {
                self.counters
                    .dropped(DropReason::of_wire_error(&e), from, &e);
                return;
            }
        };
        match header.kind {
            Kind::Peer => self.on_peer_datagram(datagram, &header, from),
            Kind::ClientRequests => self.on_client_datagram(datagram, &header, from),
            Kind::ClientReplies => self.counters.dropped(
                DropReason::UnexpectedKind,
                from,
                &"a client reply sent to a server",
            ),
        }
    }

    /// Peer traffic: member sender, then tag, then replay window, then decode.
    fn on_peer_datagram(&mut self, datagram: &mut [u8], header: &wire::Header, from: SocketAddr) {
        let sender = NodeId(header.sender);
        let Some(peer) = self.peers.iter().position(|(id, _)| *id == sender) else {
            self.counters.dropped(
                DropReason::UnknownSender,
                from,
                &format_args!(
                    "peer datagram claims sender {sender}, not a peer of {}",
                    self.me
                ),
            );
            return;
        };
        let opened = match kv_auth::open(datagram, header, &self.peer_recv[peer]) {
            Ok(o) => o,
            Err(e) => {
                let why = format_args!("peer datagram claiming sender {sender}: {e}");
                self.counters
                    .dropped(DropReason::of_auth_error(&e), from, &why);
                return;
            }
        };
        let stamp = opened.stamp;
        let checked = self.peer_windows[peer]
            .accept(stamp.incarnation, stamp.counter)
            .and_then(|()| {
                // The window learnt the sender's incarnation even if the datagram was not
                // meant for this one: the hello below tells the sender this one.
                kv_auth::check_echo(stamp.echo, self.incarnation)
                    .inspect_err(|_| self.hello_due[peer] = true)
            });
        if let Err(e) = checked {
            let why = format_args!("peer datagram from {sender}: {e}");
            self.counters
                .dropped(DropReason::of_replay_error(&e), from, &why);
            return;
        }
        match codec::decode_peer(opened.body) {
            Ok(_) if !self.taking_part => {}
            Ok(msgs) => {
                self.core.note_peer_heard(sender, self.now_ms());
                self.core.on_peer_messages(sender, msgs);
            }
            Err(e) => self.counters.dropped(DropReason::BadPayload, from, &e),
        }
    }

    /// Client requests: known key, tag, replay window and ticket, request count, decode;
    /// then each
    /// request's session is bound to the client's name and writes are checked against
    /// its permission.
    fn on_client_datagram(&mut self, datagram: &mut [u8], header: &wire::Header, from: SocketAddr) {
        let Some(index) = self.keys.client_index(header.sender) else {
            self.counters.dropped(
                DropReason::UnknownClient,
                from,
                &format_args!("client requests under unknown key id {:#x}", header.sender),
            );
            return;
        };
        let client = self.keys.client(index);
        let opened = match kv_auth::open(datagram, header, std::slice::from_ref(&client.requests)) {
            Ok(o) => o,
            Err(e) => {
                let why = format_args!("client requests claiming client {:?}: {e}", client.name);
                self.counters
                    .dropped(DropReason::of_auth_error(&e), from, &why);
                return;
            }
        };
        if let Err(refusal) = self.client_windows.admit(header.sender, opened.stamp) {
            // A first contact, or a request under a ticket this node does not hold (from
            // before it restarted or forgot the client, or for another node): the hello
            // tells the client its ticket, and its retry is executed. The hello's body is
            // one byte (a zero count), so a request with a body at least as long is never
            // outgrown.
            if let (Some(ticket), false) = (refusal.ticket(), opened.body.is_empty()) {
                let route = ClientRoute {
                    key_index: index as u16,
                    protection: Protection::of_flags(header.flags),
                };
                let hello = (from, route, ticket);
                if self.client_hellos.len() < CLIENT_HELLOS_PER_FLUSH_MAX
                    && !self.client_hellos.contains(&hello)
                {
                    self.client_hellos.push(hello);
                }
            }
            let why = format_args!("client requests of {:?}: {refusal}", client.name);
            self.counters
                .dropped(DropReason::of_client_refusal(&refusal), from, &why);
            return;
        }
        // Refuse an oversized batch from its count alone, before decoding any of it.
        let count = postcard::take_from_bytes::<u64>(opened.body).map(|(n, _)| n);
        if let Ok(n) = count {
            if n > CLIENT_REQUESTS_PER_DATAGRAM_MAX as u64 {
                let why = format_args!(
                    "{n} requests from {:?} in one datagram; the limit CLIENT_REQUESTS_PER_DATAGRAM_MAX is {CLIENT_REQUESTS_PER_DATAGRAM_MAX}",
                    client.name
                );
                self.counters
                    .dropped(DropReason::TooManyRequests, from, &why);
                return;
            }
        }
        let mut reqs = match wire::decode_value::<Vec<ClientRequest>>(opened.body) {
            Ok(reqs) => reqs,
            Err(e) => {
                self.counters.dropped(DropReason::BadPayload, from, &e);
                return;
            }
        };
        let read_only = client.permission == Permission::ReadOnly;
        for req in &mut reqs {
            req.client = self.session_bindings.bind(&self.keys, index, req.client);
        }
        let route = ClientRoute {
            key_index: index as u16,
            protection: Protection::of_flags(header.flags),
        };
        let token = self.clients.token_for(from, route);
        for req in reqs {
            if read_only && req.op.is_write() {
                let client = self.keys.client(index);
                let error = ClientError::PermissionDenied {
                    client: client.name.clone(),
                    permission: client.permission.name().into(),
                };
                let why = format_args!("a write from read-only client {:?}", client.name);
                self.counters
                    .dropped(DropReason::PermissionDenied, from, &why);
                self.core.refuse_request(token, &req, error);
                continue;
            }
            self.on_client_request(token, req);
        }
    }

    /// The stamp of the next datagram this node seals, to a receiver whose incarnation
    /// this node knows to be `echo` (0: unknown).
    fn next_stamp(&mut self, echo: u64) -> Stamp {
        let counter = self.sent_counter;
        self.sent_counter += 1;
        Stamp {
            incarnation: self.incarnation,
            counter,
            echo,
        }
    }

    fn on_client_request(&mut self, token: ClientToken, req: ClientRequest) {
        self.counters.client_requests += 1;
        self.udp_requests.arrived(&req);
        self.core.on_client_request(token, req);
    }

    /// Takes the core's output and acts on it: disk writes, then datagrams, then replies.
    async fn flush(&mut self) {
        let out = self.core.take_output();
        for e in &out.events {
            core_events::record(self.me, e, &self.metrics);
        }
        match &self.disk {
            Some(disk) => {
                for w in out.disk_writes {
                    if disk.submit(w).is_err() {
                        // The thread stopped; its Failed event (or the closed channel)
                        // ends the loop. Nothing of this write is acknowledged.
                        self.disk = None;
                        break;
                    }
                }
                for shard in out.removed_shards {
                    if self
                        .disk
                        .as_ref()
                        .is_some_and(|d| d.remove_group(shard).is_err())
                    {
                        self.disk = None;
                    }
                }
            }
            None => {
                if !out.disk_writes.is_empty() {
                    tracing::debug!(
                        writes = out.disk_writes.len(),
                        "disk closed for shutdown: dropping writes (nothing depends on them)"
                    );
                }
            }
        }
        let knows = |peers: &[(NodeId, SocketAddr)], to: NodeId| peers.iter().any(|p| p.0 == to);
        if out.datagrams.iter().any(|(to, _)| !knows(&self.peers, *to)) {
            // The core learnt a registered node (its metadata replica applied the
            // registration) since the last periodic sync.
            self.sync_peers();
        }
        for (to, msgs) in out.datagrams {
            let Some(peer) = self.peers.iter().position(|(id, _)| *id == to) else {
                // A shard's membership may name a node that registered after this node's
                // newest registry (a node outside the metadata group hears it every 2 s):
                // Raft resends once the registry lists it and it becomes a peer.
                tracing::debug!(peer = to.0, "no address yet for a node a shard names");
                continue;
            };
            // codec::split made every batch fit a sealed body.
            let len = postcard::to_slice(&msgs, self.body_buf())
                .expect("a batch from codec::split fits BODY_BYTES_MAX")
                .len();
            self.send_to_peer(peer, len).await;
        }
        for peer in 0..self.peers.len() {
            if std::mem::take(&mut self.hello_due[peer]) {
                // An empty batch: its stamp tells the peer this node's incarnation.
                let empty: &[kv_node::GroupMessage] = &[];
                let len = postcard::to_slice(empty, self.body_buf())
                    .expect("an empty batch fits")
                    .len();
                self.send_to_peer(peer, len).await;
            }
        }
        for (addr, route, ticket) in std::mem::take(&mut self.client_hellos) {
            self.send_replies(addr, route, &[], ticket).await;
        }
        let mut replies = out.replies;
        if replies.iter().any(|(token, _)| *token == LOCAL_TOKEN) {
            let (local, udp) = replies.into_iter().partition(|(t, _)| *t == LOCAL_TOKEN);
            replies = udp;
            for (_, reply) in local {
                self.local_reads.answer(reply);
            }
        }
        if replies.is_empty() {
            return;
        }
        for (_, reply) in &mut replies {
            self.udp_requests.answered(reply, &self.metrics);
            if let Outcome::Status(status) = &mut reply.outcome {
                status.drops = self.counters.drops_by_reason();
                // The counters /metrics shows, brought up to this instant first.
                self.sync_metrics();
                status.counters = self.metrics.counters();
            }
        }
        // Stable: replies to one client keep the core's order within their datagram.
        replies.sort_by_key(|(token, _)| token.0);
        for run in replies.chunk_by(|a, b| a.0 == b.0) {
            let token = run[0].0;
            let Some((addr, route)) = self.clients.client_of(token) else {
                let unknown = SocketAddr::from(([0, 0, 0, 0], 0));
                self.counters.dropped(
                    DropReason::SendFailed,
                    unknown,
                    &format_args!("{} replies to a forgotten client address", run.len()),
                );
                continue;
            };
            let refs: Vec<&ClientReply> = run.iter().map(|(_, r)| r).collect();
            self.send_replies(addr, route, &refs, 0).await;
        }
    }

    /// Where the body of the next datagram is encoded, to be sealed in place.
    fn body_buf(&mut self) -> &mut [u8] {
        &mut self.datagram_buf[BODY_OFFSET..BODY_OFFSET + BODY_BYTES_MAX]
    }

    /// Seals the body of `len` bytes encoded in [`Self::body_buf`] for `peer` and sends it.
    async fn send_to_peer(&mut self, peer: usize, len: usize) {
        // Whatever this node sends the peer tells it this node's incarnation.
        self.hello_due[peer] = false;
        let stamp = self.next_stamp(self.peer_windows[peer].incarnation());
        let end = BODY_OFFSET + len + TAG_BYTES;
        self.peer_send[peer].seal_in_place(
            Kind::Peer,
            self.cluster_id,
            self.me.0,
            stamp,
            self.keys.protection,
            &mut self.datagram_buf[..end],
        );
        let datagram = std::mem::take(&mut self.datagram_buf);
        self.send(&datagram[..end], self.peers[peer].1).await;
        self.datagram_buf = datagram;
    }

    /// Sends `replies` to one client, sealed under its key, in as few datagrams as fit,
    /// their stamps echoing `echo`: 0, or the client's ticket in a hello (no replies, one
    /// datagram).
    async fn send_replies(
        &mut self,
        addr: SocketAddr,
        route: ClientRoute,
        replies: &[&ClientReply],
        echo: u64,
    ) {
        let protection = route.protection;
        let mut packed = pack(replies.iter().copied(), PackLimit::bytes(BODY_BYTES_MAX));
        if replies.is_empty() {
            // A hello: one empty batch whose stamp tells the client its ticket.
            packed.batches.push(Vec::new());
        }
        for reply in &packed.too_large {
            self.counters.dropped(
                DropReason::SendFailed,
                addr,
                &format_args!(
                    "a reply of {} bytes does not fit in a datagram (BODY_BYTES_MAX is {BODY_BYTES_MAX})",
                    encoded_bytes(reply)
                ),
            );
        }
        for batch in packed.batches {
            let len = postcard::to_slice(&batch, self.body_buf())
                .expect("a packed batch fits BODY_BYTES_MAX")
                .len();
            let stamp = self.next_stamp(echo);
            let end = BODY_OFFSET + len + TAG_BYTES;
            self.keys
                .client(usize::from(route.key_index))
                .replies
                .seal_in_place(
                    Kind::ClientReplies,
                    self.cluster_id,
                    self.me.0,
                    stamp,
                    protection,
                    &mut self.datagram_buf[..end],
                );
            let datagram = std::mem::take(&mut self.datagram_buf);
            self.send(&datagram[..end], addr).await;
            self.datagram_buf = datagram;
        }
    }

    async fn send(&mut self, datagram: &[u8], addr: SocketAddr) {
        match self.socket.send_to(datagram, addr).await {
            Ok(_) => self.counters.datagrams_out += 1,
            Err(e) => self.counters.dropped(
                DropReason::SendFailed,
                addr,
                &format_args!("send failed: {e}"),
            ),
        }
    }

    fn sync_metrics(&self) {
        let status = self.core.status();
        for s in &status.shards {
            if let Some(view) = self.core.group_view(s.shard) {
                self.metrics.proposals_to(s.shard.0, view.proposed_writes);
            }
        }
        self.metrics
            .sync(&status, &self.counters, self.core.pending_requests());
    }

    fn log_metrics(&mut self) {
        let c = &self.counters;
        let drops = c.drops_total();
        if drops > self.drops_logged {
            tracing::info!(
                datagrams_in = c.datagrams_in,
                datagrams_out = c.datagrams_out,
                client_requests = c.client_requests,
                "datagrams dropped so far: {}",
                c.drops_summary()
            );
        } else {
            tracing::debug!(
                datagrams_in = c.datagrams_in,
                datagrams_out = c.datagrams_out,
                client_requests = c.client_requests,
                "traffic; drops: {}",
                c.drops_summary()
            );
        }
        self.drops_logged = drops;
    }

    /// Shutdown (or a fatal error): close the disk queue, wait for the batch in progress,
    /// and on a clean shutdown let the core release what that batch made durable.
    async fn finish(
        mut self,
        mut events: UnboundedReceiver<DiskEvent>,
        result: Result<(), ServerError>,
    ) -> Result<(), ServerError> {
        if let Some(disk) = self.disk.take() {
            let joined = tokio::task::spawn_blocking(move || disk.finish()).await;
            if !matches!(joined, Ok(Ok(()))) {
                tracing::error!("the disk thread panicked");
            }
        }
        let mut failed = None;
        while let Ok(ev) = events.try_recv() {
            match ev {
                DiskEvent::Done(ids) if result.is_ok() => {
                    for id in ids {
                        self.core.on_disk_done(id);
                    }
                }
                DiskEvent::Failed(error) => failed = Some(error),
                DiskEvent::Done(_) | DiskEvent::Full(_) | DiskEvent::Recovered => {}
            }
        }
        if result.is_ok() {
            self.flush().await;
        }
        // A storage failure's own words beat the generic "the disk thread stopped".
        let result = match (result, failed) {
            (Ok(()) | Err(ServerError::Disk(_) | ServerError::DiskThreadStopped), Some(error)) => {
                Err(ServerError::Disk(error))
            }
            (result, _) => result,
        };
        self.log_metrics();
        tracing::info!(node = self.me.0, "kvserver node stopped");
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The default receive buffer dropped ~25,000 snapshot chunks in the 1,000,000-key
    /// catch-up; the node must ask for as much as the kernel lets it have.
    #[tokio::test]
    async fn the_socket_gets_the_largest_buffers_the_kernel_allows() {
        let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let (recv, send) = enlarge_buffers(&socket);
        let sysctl = |name: &str| {
            std::fs::read_to_string(format!("/proc/sys/net/core/{name}"))
                .ok()
                .and_then(|s| s.trim().parse::<usize>().ok())
        };
        // Linux grants min(request, sysctl cap) and reports twice that (bookkeeping).
        if let (Some(rmem_max), Some(wmem_max)) = (sysctl("rmem_max"), sysctl("wmem_max")) {
            assert!(
                recv >= SOCKET_BUFFER_BYTES.min(rmem_max),
                "{recv} of {rmem_max}"
            );
            assert!(
                send >= SOCKET_BUFFER_BYTES.min(wmem_max),
                "{send} of {wmem_max}"
            );
        }
    }
}
