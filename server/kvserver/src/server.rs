//! The kvserver event loop: one UDP socket, one tick timer, one disk thread, and the
//! node core in the middle. Every wake-up feeds the core as much input as is ready
//! (disk completions, a tick, every queued datagram), then takes its output once and
//! acts on it: writes to the disk thread first (so the fsync starts early), then peer
//! datagrams, then client replies batched per address. A small write that finds the
//! disk thread idle is written and synced here instead, last, saving the two thread
//! wake-ups on the way to its acknowledgement.
//!
//! Every datagram is authenticated before any of its payload is decoded (the tag under
//! the cluster key or the client's key, then the sender's replay window); nothing is ever
//! sent to a source whose datagram did not verify. Client sessions are bound to the
//! authenticated client name here, at the boundary, so the core is unchanged.
//!
//! Acknowledgements are safe by construction: the core only releases a client reply
//! or a vote after `on_disk_done`, which this loop calls only for writes the disk thread
//! reported synced or that it synced itself. A kill -9 at any instant therefore loses
//! nothing acknowledged.

use crate::auth::{next_incarnation, ClientWindows, NodeKeys, SessionBindings};
use crate::balancer::{self, Leadership};
use crate::disk::{DiskThread, LogStore};
use crate::front_ends;
use crate::metrics::{MeteredStore, Metrics, UdpRequests};
use crate::net::{ClientAddrs, ClientRoute, Counters};
use crate::registration::{self, Registration, RegistrationEvent};
use crate::resp::local::LocalInbox;
use kv_node::{NodeConfig, NodeCore};
use kv_shared::auth::{self as kv_auth, ReplayWindow, Sealer};
use kv_shared::config::ClusterConfig;
use kv_shared::limits::DATAGRAM_BYTES_MAX;
use kv_shared::NodeId;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

mod error;
mod event_loop;
mod inbound;
mod lease_guard;
mod outbound;

pub use error::ServerError;

/// Most datagrams read from the socket before the loop hands control back (so ticks and
/// disk completions are never starved by a flood) and flushes the core's output.
pub const RECV_BATCH_MAX: usize = 256;
/// Most writes one event-loop turn writes and syncs itself (`DiskThread::write_here`)
/// before it goes back to its timers: each blocks the loop for an fsync.
pub const WRITES_HERE_PER_TURN_MAX: usize = 4;
/// Most client requests waiting for their answer, and most inputs (datagrams, Redis
/// gateway requests) taken in since the last flush besides one datagram from each peer,
/// for the flush's writes to be made by the loop itself. The peers' share is there
/// because at one client a leader's turn often takes in the next request together with
/// the slower follower's ack of the previous write. More say the node is busy: while
/// the disk thread syncs, the loop goes on serving them (acks and requests of its
/// groups), which a loop blocked in an fsync could not.
pub const WRITE_HERE_INPUTS_MAX: u64 = 1;
/// How often the traffic counters are logged (at `info` when datagrams were dropped in
/// the interval, else at `debug`).
pub const METRICS_INTERVAL: Duration = Duration::from_secs(10);
/// Ticks between copies of the status table and counters into the metrics.
pub const METRICS_SYNC_TICKS: u64 = 10;
/// An event-loop turn (input taken in, the core's output sent) longer than this is
/// logged at warn: every group's heartbeats and elections wait on the loop, so a long
/// turn (a large snapshot image built or restored, a burst of input) shows up as
/// elections elsewhere. A few heartbeat intervals at the default timing.
pub const SLOW_TURN: Duration = Duration::from_millis(100);
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
    // Follower read requests of this start must never match answers meant for an
    // earlier one (kv_raft::Config::boot_nonce); the incarnation only grows.
    config.raft.boot_nonce = incarnation;
    let holds_data = !recovered.records.is_empty() || !recovered.snapshots.is_empty();
    let identity =
        registration::data_dir_identity(&opts.data_dir, holds_data).map_err(|source| {
            ServerError::DataDirIdentity {
                dir: opts.data_dir.clone(),
                source,
            }
        })?;
    let mut core = NodeCore::new(config, recovered).map_err(|source| ServerError::Recovery {
        dir: opts.data_dir.clone(),
        source,
    })?;
    // The runtime reads none of the applied entries (the simulator and course mode do).
    core.set_applied_reports(false);
    core.set_defer_follower_applies(true);
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
            if !key.permission.may_administer() {
                tracing::warn!(
                    "client key `{}` is {}: this node registers itself and runs the \
                     balancer under it, and both need the admin permission (make \
                     client_key_file an admin key, docs/SECURITY.md)",
                    key.name,
                    key.permission.name()
                );
            }
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
    let lease_guard = {
        let raft = &core.config().raft;
        lease_guard::LeaseGuard::new(
            raft.lease_reads,
            Duration::from_millis(opts.cluster.timing.tick_ms),
            raft.election_ticks_min,
            raft.lease_margin_ticks,
            Instant::now(),
        )
    };
    let event_loop = EventLoop {
        lease_guard,
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
        disk_failure: None,
        inputs_since_flush: 0,
        recv_buf: vec![0; DATAGRAM_BYTES_MAX + 1],
        datagram_buf: vec![0; DATAGRAM_BYTES_MAX],
        started: Instant::now(),
        drops_logged: 0,
        metrics,
        _front_ends: front_ends.tasks,
        local_requests: front_ends.local_requests,
        udp_requests: UdpRequests::default(),
        ticks: 0,
        slow_turns: crate::ratelimit::RateLimit::new(Duration::from_secs(1)),
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

/// A task that stops when its owner is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The running node's state. Its methods are split by what they handle: the loop and its
/// inputs (`event_loop`), datagrams received (`inbound`), and the core's output sent
/// (`outbound`).
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
    /// `None` once shutdown has closed it (or a write here failed).
    disk: Option<DiskThread>,
    /// A write or sync done on this thread failed: the node stops with it.
    disk_failure: Option<kv_storage::StorageError>,
    /// Datagrams and gateway requests taken in since the last flush
    /// ([`WRITE_HERE_INPUTS_MAX`]).
    inputs_since_flush: u64,
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
    /// Reads and writes the Redis gateway hands to the core directly, and where their
    /// replies go.
    local_requests: LocalInbox,
    udp_requests: UdpRequests,
    ticks: u64,
    /// At most one "slow event loop turn" line per second.
    slow_turns: crate::ratelimit::RateLimit,
    /// Expires the leases when the ticks lag real time (`None`: no lease reads).
    lease_guard: Option<lease_guard::LeaseGuard>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A follower catching up takes every shard's snapshot window into one receive
    /// buffer, which the kernel's default size cannot hold (docs/RUNTIME.md, socket
    /// buffers); the node must ask for as much as the kernel lets it have.
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
