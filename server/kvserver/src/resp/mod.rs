//! The Redis-protocol (RESP2/RESP3) front end: a TCP listener on every node that lets
//! redis-cli, redis-benchmark and any Redis client library use raftkv unmodified.
//!
//! The gateway is a client of the cluster like kvcli: it holds one in-process
//! [`kvcli::Client`] per user (`users.rs`: RESP users are the client keys), with shard
//! routing, a leader cache and retries under the same session sequence number, so a
//! command reaches the key's shard leader wherever that is. What this node can answer
//! itself skips the client and enters the node's core directly (`local.rs`): every get
//! of a shard this node holds a replica of, since a follower serves linearizable gets too
//! (its leader confirms the read index), and every write of a shard this node leads,
//! under the sequence number its client session sets aside for it.
//!
//! Per connection: the input buffer is bounded ([`QUERY_BUFFER_BYTES_MAX`]); every
//! complete command in it is planned, runs of pipelined single-key operations on
//! distinct keys run side by side (each under its own session), and the replies are
//! written back in command order.

#[cfg(test)]
mod alloc_tests;
pub mod answer;
pub mod commands;
pub mod local;
pub mod reply;
pub mod users;

use crate::metrics::{FrontEnd, Metrics};
use bytes::{Bytes, BytesMut};
use commands::{ConnCommand, Finish, Plan};
use kv_shared::proto::{ClientRequest, NodeStatus, Op, Outcome, Role};
use kv_shared::{ClientId, NodeId};
use kvcli::{CachedShard, Client, Response, Session};
use local::{LocalRequest, LocalSender, LocalWrite};
use redis_protocol::resp2;
use reply::Reply;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use users::{User, Users};

/// Most client connections served at once; one more is told so and closed, as Redis does.
pub const REDIS_CONNECTIONS_MAX: usize = 1024;
/// Most unparsed bytes held for one connection: a largest command (a 1 KiB key and a
/// 32 KiB value) fits many times over; a client that sends more without completing a
/// command is cut off.
pub const QUERY_BUFFER_BYTES_MAX: usize = 1024 * 1024;
/// Most commands taken from the input buffer before their replies are written, which
/// bounds the output buffer too.
pub const PIPELINE_COMMANDS_MAX: usize = 1024;
/// Most raftkv operations of one connection in flight at once (each needs a session).
pub const CONNECTION_OPS_IN_FLIGHT_MAX: usize = 64;
/// Largest word vector kept for reuse once its command is planned: enough for the
/// common commands; the vector of a long MSET or MGET is freed instead of held.
const RECYCLED_WORDS_CAPACITY_MAX: usize = 8;
/// How long INFO and DBSIZE wait for the nodes' status.
pub const STATUS_TIMEOUT: Duration = Duration::from_millis(500);
/// Tries of the compare-and-set loop of SET ... XX before it gives up under contention.
pub const SET_XX_TRIES_MAX: usize = 64;

/// What every connection shares.
pub struct Gateway {
    /// The gateway's own client (the gateway key): the node status INFO and DBSIZE show.
    client: Client,
    /// The client keys connections authenticate as.
    users: Users,
    node: NodeId,
    /// Reads and writes this node can answer go straight to its core (`local.rs`).
    local: LocalSender,
    /// The shards this node holds a replica of in the bootstrap placement: where a get
    /// goes while the client has not learned a shard's replica set (no move yet).
    bootstrap_shards: std::collections::BTreeSet<kv_shared::ShardId>,
    metrics: Metrics,
    connections: Arc<Semaphore>,
    connected: AtomicUsize,
    next_connection_id: AtomicU64,
    started: Instant,
    listen: String,
}

impl Gateway {
    /// A gateway for node `node` talking to the cluster through `client` and to its own
    /// core through `local`; `bootstrap_shards` are the shards the node holds at
    /// bootstrap.
    pub fn new(
        client: Client,
        users: Users,
        node: NodeId,
        local: LocalSender,
        bootstrap_shards: std::collections::BTreeSet<kv_shared::ShardId>,
        metrics: Metrics,
        listen: String,
    ) -> Arc<Gateway> {
        Arc::new(Gateway {
            client,
            users,
            node,
            local,
            bootstrap_shards,
            metrics,
            connections: Arc::new(Semaphore::new(REDIS_CONNECTIONS_MAX)),
            connected: AtomicUsize::new(0),
            next_connection_id: AtomicU64::new(1),
            started: Instant::now(),
            listen,
        })
    }
}

/// Accepts connections on `listener` for as long as the task runs.
pub async fn serve(listener: TcpListener, gateway: Arc<Gateway>) {
    loop {
        let (mut stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // Out of file descriptors and the like: wait instead of spinning.
                tracing::warn!("RESP accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let Ok(permit) = gateway.connections.clone().try_acquire_owned() else {
            let mut out = BytesMut::new();
            Reply::err("max number of clients reached").encode(2, &mut out);
            let _ = stream.write_all(&out).await;
            continue;
        };
        let gateway = gateway.clone();
        tokio::spawn(async move {
            gateway.connected.fetch_add(1, Ordering::Relaxed);
            let mut conn = Connection::new(gateway.clone());
            if let Some(key) = gateway.users.default_key() {
                match gateway.users.user(key).await {
                    Ok(user) => conn.act_as(user),
                    Err(e) => tracing::warn!("RESP default client {:?}: {e}", key.name),
                }
            }
            if let Err(e) = conn.run(&mut stream).await {
                tracing::debug!(%peer, "RESP connection closed: {e}");
            }
            gateway.connected.fetch_sub(1, Ordering::Relaxed);
            drop(permit);
        });
    }
}

/// One client connection's state.
struct Connection {
    gateway: Arc<Gateway>,
    id: u64,
    name: Option<Bytes>,
    /// RESP version of replies: 2, or 3 after HELLO 3.
    protocol: u8,
    /// READONLY: reads go to any replica without ReadIndex.
    stale: bool,
    /// Who the connection acts as (`None`: nobody yet; only AUTH and a few others run).
    user: Option<Arc<User>>,
    /// Idle sessions of the user's client for operations; one per operation in flight.
    sessions: Vec<Session>,
    /// The client id of this connection's reads through the node's core, bound to the
    /// user's name like a UDP client's session id.
    reader: ClientId,
    /// The sequence number of the last of those reads.
    next_read_seq: u64,
    quit: bool,
    /// Buffers of [`Connection::run_group`], kept so that a command costs no allocation
    /// for them once the connection has run its first.
    scratch: Scratch,
}

/// What one operation's answer gives the command that asked.
type OpResult = Result<Response, kvcli::Error>;

/// [`Connection::run_group`]'s working lists, empty between groups.
#[derive(Default)]
struct Scratch {
    /// [`Connection::run_batch`]'s commands waiting to run side by side.
    group: Vec<Pending>,
    answers: Vec<Answer>,
    finishes: Vec<(Finish, usize, &'static str, Instant)>,
    results: Vec<OpResult>,
    /// Emptied word vectors of parsed commands, for the next commands to parse into.
    words: Vec<Vec<Bytes>>,
    /// The answer slots of the operations handed to the node's core, reused.
    slots: answer::Slots,
}

/// Why a connection was closed by the gateway.
#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("protocol error: {0}")]
    Protocol(String),
}

/// Where one operation's answer will come from.
enum Answer {
    /// This node's core (the operation is kept to retry through the cluster client).
    Local(answer::Waiter, Op),
    /// This node's core, for a write under a reserved sequence number (retried under it
    /// through the cluster client unless the core applied it).
    LocalWrite(LocalWrite),
    /// The cluster client, in a task of its own.
    Remote(tokio::task::JoinHandle<(Session, Result<Response, kvcli::Error>)>),
    /// The cluster client, awaited by the connection itself: the group's only operation
    /// (no pipelining) needs no task to run beside others.
    Alone(Op),
}

/// A parsed command and its plan, waiting for its turn.
struct Pending {
    started: Instant,
    command: &'static str,
    plan: Plan,
}

impl Connection {
    fn new(gateway: Arc<Gateway>) -> Connection {
        let id = gateway.next_connection_id.fetch_add(1, Ordering::Relaxed);
        Connection {
            gateway,
            id,
            name: None,
            protocol: 2,
            stale: false,
            user: None,
            sessions: Vec::new(),
            reader: ClientId(0),
            next_read_seq: 0,
            quit: false,
            scratch: Scratch::default(),
        }
    }

    /// From now on, act as `user`.
    fn act_as(&mut self, user: Arc<User>) {
        self.reader = kv_shared::auth::session_id(&user.name, ClientId(self.id));
        self.sessions.clear();
        self.user = Some(user);
    }

    /// The error for a command this connection may not run now, if any: before AUTH only
    /// PING, HELLO, AUTH and QUIT; a read-only client runs no write.
    fn refusal(&self, command: &str, plan: &Plan) -> Option<Reply> {
        let Some(user) = &self.user else {
            return (!matches!(command, "ping" | "hello" | "auth" | "quit"))
                .then(|| Reply::Error("NOAUTH Authentication required.".into()));
        };
        let denied = match plan {
            Plan::Ops { ops, .. } => ops
                .iter()
                .any(|op| crate::auth::denied(user.permission, op).is_some()),
            Plan::Conn(ConnCommand::SetIfPresent { .. }) => !user.permission.may_write(),
            Plan::Now(_) | Plan::Conn(_) => false,
        };
        denied.then(|| {
            Reply::Error(format!(
                "NOPERM User {} has no permissions to run the '{command}' command",
                user.name
            ))
        })
    }

    /// Checks `password` for `user` and acts as that client from now on.
    async fn authenticate(&mut self, user: &[u8], password: &[u8]) -> Result<(), Reply> {
        let gateway = self.gateway.clone();
        let Some(key) = gateway.users.check(user, password) else {
            return Err(Reply::Error(
                "WRONGPASS invalid username-password pair or user is disabled.".into(),
            ));
        };
        let user = gateway
            .users
            .user(key)
            .await
            .map_err(|e| commands::error_reply(&e))?;
        self.act_as(user);
        Ok(())
    }

    /// The cluster client of the connection's user. Only commands that passed
    /// [`Connection::refusal`] reach the cluster, and those have a user.
    fn client(&self) -> &Client {
        &self
            .user
            .as_ref()
            .expect("commands that reach the cluster run with a user")
            .client
    }

    async fn run(&mut self, stream: &mut TcpStream) -> Result<(), ConnError> {
        let mut input = BytesMut::with_capacity(16 * 1024);
        let mut output = BytesMut::with_capacity(16 * 1024);
        // Kept across reads: a command per read (no pipelining) costs no allocation here.
        let mut batch = Vec::new();
        while !self.quit {
            if stream.read_buf(&mut input).await? == 0 {
                return Ok(());
            }
            let parsed = loop {
                if batch.len() >= PIPELINE_COMMANDS_MAX {
                    break Ok(());
                }
                let mut words = self.scratch.words.pop().unwrap_or_default();
                match parse_command(&mut input, &mut words) {
                    Ok(true) if !words.is_empty() => batch.push(words),
                    Ok(true) => self.scratch.words.push(words),
                    Ok(false) => {
                        self.scratch.words.push(words);
                        break Ok(());
                    }
                    Err(e) => break Err(e),
                }
            };
            self.run_batch(&mut batch, &mut output).await;
            let refuse = match parsed {
                Err(e) => Some(e),
                Ok(()) if input.len() > QUERY_BUFFER_BYTES_MAX => Some(format!(
                    "a command is larger than QUERY_BUFFER_BYTES_MAX = {QUERY_BUFFER_BYTES_MAX} bytes"
                )),
                Ok(()) => None,
            };
            if let Some(why) = &refuse {
                Reply::err(format!("Protocol error: {why}")).encode(self.protocol, &mut output);
            }
            stream.write_all(&output).await?;
            output.clear();
            if let Some(why) = refuse {
                return Err(ConnError::Protocol(why));
            }
        }
        Ok(())
    }

    /// Runs (and empties) `batch` in order, writing each reply to `out` in command order.
    async fn run_batch(&mut self, batch: &mut Vec<Vec<Bytes>>, out: &mut BytesMut) {
        let mut group = std::mem::take(&mut self.scratch.group);
        let mut group_ops = 0;
        for mut words in batch.drain(..) {
            if self.quit {
                break;
            }
            let pending = Pending {
                started: Instant::now(),
                command: command_label(&words[0]),
                plan: commands::plan(&words, self.stale),
            };
            // The plan holds what it needs of the words: their vector serves the next
            // command (unless an unusually long command grew it).
            if words.capacity() <= RECYCLED_WORDS_CAPACITY_MAX {
                words.clear();
                self.scratch.words.push(words);
            }
            if let Some(refused) = self.refusal(pending.command, &pending.plan) {
                self.run_group(&mut group, out).await;
                group_ops = 0;
                self.record(pending.command, pending.started, &refused);
                refused.encode(self.protocol, out);
                continue;
            }
            if let Plan::Ops { ops, .. } = &pending.plan {
                let conflicts = group.iter().any(|p| shares_key(&p.plan, ops));
                if conflicts || group_ops + ops.len() > CONNECTION_OPS_IN_FLIGHT_MAX {
                    self.run_group(&mut group, out).await;
                    group_ops = 0;
                }
                group_ops += ops.len();
                group.push(pending);
                continue;
            }
            self.run_group(&mut group, out).await;
            group_ops = 0;
            let reply = match pending.plan {
                Plan::Now(r) => r,
                Plan::Conn(c) => self.run_conn(c).await,
                Plan::Ops { .. } => unreachable!("grouped above"),
            };
            self.record(pending.command, pending.started, &reply);
            reply.encode(self.protocol, out);
        }
        self.run_group(&mut group, out).await;
        self.scratch.group = group;
    }

    /// Runs the operations of every command in `group` at once, then replies in order.
    /// Reads and writes this node can answer go to its core (which takes them in one
    /// event-loop turn); the rest run through the cluster client, each under its own
    /// session.
    async fn run_group(&mut self, group: &mut Vec<Pending>, out: &mut BytesMut) {
        if group.is_empty() {
            return;
        }
        let alone =
            group.len() == 1 && matches!(&group[0].plan, Plan::Ops { ops, .. } if ops.len() == 1);
        let mut answers = std::mem::take(&mut self.scratch.answers);
        let mut finishes = std::mem::take(&mut self.scratch.finishes);
        let mut results = std::mem::take(&mut self.scratch.results);
        for p in group.drain(..) {
            let Plan::Ops { ops, finish } = p.plan else {
                unreachable!("groups hold operations only")
            };
            finishes.push((finish, ops.len(), p.command, p.started));
            for op in ops {
                let at = self.cached_shard(&op);
                if self.answers_locally(&op, at) {
                    let (answer, rx) = self.scratch.slots.pair();
                    let epoch = at.map_or(0, |a| a.epoch);
                    let request = self.local_request(op.clone(), epoch);
                    // If the event loop is gone the receiver fails and the read falls back.
                    let _ = self.gateway.local.send(LocalRequest { request, answer });
                    answers.push(Answer::Local(rx, op));
                    continue;
                }
                if self.writes_locally(&op, at) {
                    let mut session = self.session();
                    // None: the session's first write to the shard, which opens the
                    // session there through the client.
                    match session.reserve(&op) {
                        Some(reserved) => {
                            let epoch = at.map_or(0, |a| a.epoch);
                            let local = &self.gateway.local;
                            let slots = &mut self.scratch.slots;
                            let write =
                                local::send_write(local, slots, session, reserved, op, epoch);
                            answers.push(Answer::LocalWrite(write));
                            continue;
                        }
                        None => self.sessions.push(session),
                    }
                }
                if alone {
                    answers.push(Answer::Alone(op));
                    continue;
                }
                let mut session = self.session();
                answers.push(Answer::Remote(tokio::spawn(async move {
                    let r = session.execute(op).await;
                    (session, r)
                })));
            }
        }
        for a in answers.drain(..) {
            let r = match a {
                Answer::Local(rx, op) => match self.scratch.slots.settle(rx).await {
                    Some(Outcome::Value(v)) => Ok(Response::Value(v)),
                    // Not (or no longer) this node's to answer: the cluster client finds
                    // the leader.
                    _ => {
                        let mut session = self.session();
                        let r = session.execute(op).await;
                        self.sessions.push(session);
                        r
                    }
                },
                Answer::LocalWrite(write) => {
                    let (session, r) = write.finish(&mut self.scratch.slots).await;
                    self.sessions.push(session);
                    r
                }
                Answer::Alone(op) => {
                    let mut session = self.session();
                    let r = session.execute(op).await;
                    self.sessions.push(session);
                    r
                }
                Answer::Remote(task) => {
                    let (session, r) = task.await.expect("an operation task does not panic");
                    self.sessions.push(session);
                    r
                }
            };
            results.push(r);
        }
        let mut taken = 0;
        for (finish, n, command, started) in finishes.drain(..) {
            let reply = commands::finish(finish, &mut results[taken..taken + n]);
            taken += n;
            self.record(command, started, &reply);
            reply.encode(self.protocol, out);
        }
        results.clear();
        self.scratch.answers = answers;
        self.scratch.finishes = finishes;
        self.scratch.results = results;
    }

    /// What the user's client last learned about `op`'s shard, as it concerns this node:
    /// one look at its cache per operation, copying nothing.
    fn cached_shard(&self, op: &Op) -> Option<CachedShard> {
        let key = op.key()?;
        self.client().cached_shard(key, self.gateway.node)
    }

    /// True if `op` is a read this node's core can answer itself: a stale read (any
    /// replica may), or a linearizable one of a shard this node leads or holds as a
    /// voter (a follower serves it, its leader confirming the read index), as the
    /// client last learned the shard's replica set (`at`; the bootstrap placement until
    /// then). A guess that is wrong costs one local round trip: the core answers
    /// `StaleRoute` or `NotLeader` and the read falls back to the cluster client.
    fn answers_locally(&self, op: &Op, at: Option<CachedShard>) -> bool {
        match op {
            Op::Get { stale: true, .. } => true,
            Op::Get { stale: false, .. } => at.is_some_and(|at| {
                let holds = at
                    .me_votes
                    .unwrap_or_else(|| self.gateway.bootstrap_shards.contains(&at.shard));
                at.me_leads || holds
            }),
            _ => false,
        }
    }

    /// True if `op` is a write this node's core can take itself: a keyed write of a
    /// shard this node leads, as the client last learned (`at`, from its last answer). A
    /// guess that is wrong costs one local round trip: the core answers `NotLeader` or
    /// `StaleRoute` and the write is retried through the cluster client under the same
    /// sequence number. The gateway refused the write already if the user may not write;
    /// the check here keeps the core from ever seeing such a write unchecked.
    fn writes_locally(&self, op: &Op, at: Option<CachedShard>) -> bool {
        let Some(user) = &self.user else {
            return false;
        };
        if !op.is_write()
            || op.is_admin()
            || matches!(op, Op::OpenSession { .. })
            || crate::auth::denied(user.permission, op).is_some()
        {
            return false;
        }
        at.is_some_and(|at| at.me_leads)
    }

    /// Read `op` as a request from this connection's reader id, under a fresh sequence
    /// number, routed by `epoch`.
    fn local_request(&mut self, op: Op, epoch: u64) -> ClientRequest {
        self.next_read_seq += 1;
        ClientRequest {
            client: self.reader,
            seq: self.next_read_seq,
            epoch,
            op,
        }
    }

    fn session(&mut self) -> Session {
        self.sessions
            .pop()
            .unwrap_or_else(|| self.client().session())
    }

    fn record(&self, command: &'static str, started: Instant, reply: &Reply) {
        self.gateway.metrics.request(
            FrontEnd::Resp,
            command,
            matches!(reply, Reply::Error(_)),
            started.elapsed(),
        );
    }

    async fn run_conn(&mut self, c: ConnCommand) -> Reply {
        match c {
            ConnCommand::Hello {
                version,
                auth,
                name,
            } => {
                if let Some((user, password)) = auth {
                    if let Err(e) = self.authenticate(&user, &password).await {
                        return e;
                    }
                }
                if let Some(v) = version {
                    self.protocol = v;
                }
                if name.is_some() {
                    self.name = name;
                }
                Reply::Map(vec![
                    (Reply::text("server"), Reply::text("redis")),
                    (Reply::text("version"), Reply::text(REDIS_VERSION)),
                    (
                        Reply::text("proto"),
                        Reply::Integer(i64::from(self.protocol)),
                    ),
                    (Reply::text("id"), Reply::Integer(self.id as i64)),
                    (Reply::text("mode"), Reply::text("standalone")),
                    (Reply::text("role"), Reply::text("master")),
                    (Reply::text("modules"), Reply::Array(Vec::new())),
                ])
            }
            ConnCommand::Auth { user, password } => match self.authenticate(&user, &password).await
            {
                Ok(()) => Reply::OK,
                Err(e) => e,
            },
            ConnCommand::SetName(name) => {
                if name.iter().any(|b| *b <= b' ') {
                    return Reply::err(
                        "Client names cannot contain spaces, newlines or special characters.",
                    );
                }
                self.name = (!name.is_empty()).then_some(name);
                Reply::OK
            }
            ConnCommand::GetName => Reply::Bulk(self.name.clone()),
            ConnCommand::ClientId => Reply::Integer(self.id as i64),
            ConnCommand::Quit => {
                self.quit = true;
                Reply::OK
            }
            ConnCommand::StaleReads(on) => {
                self.stale = on;
                Reply::OK
            }
            ConnCommand::SetIfPresent { key, value, get } => {
                self.set_if_present(key, value, get).await
            }
            ConnCommand::Info(sections) => self.info(&sections).await,
            ConnCommand::DbSize => {
                let statuses = self.statuses().await;
                Reply::Integer(keys_in_cluster(&statuses) as i64)
            }
        }
    }

    /// SET ... XX: compare-and-set from the value read, until it holds or the key is gone.
    async fn set_if_present(&mut self, key: Bytes, value: Bytes, get: bool) -> Reply {
        let mut session = self.session();
        let mut current = match session
            .execute(Op::Get {
                key: key.clone(),
                stale: false,
            })
            .await
        {
            Ok(Response::Value(v)) => v,
            Ok(other) => return Reply::err(format!("unexpected answer {other:?}")),
            Err(e) => return commands::error_reply(&e),
        };
        let mut reply = Reply::err(format!(
            "SET XX lost {SET_XX_TRIES_MAX} compare-and-set races in a row; try again"
        ));
        for _ in 0..SET_XX_TRIES_MAX {
            let Some(expected) = current.take() else {
                reply = Reply::null();
                break;
            };
            let op = Op::Cas {
                key: key.clone(),
                expected: Some(expected.clone()),
                new: value.clone(),
            };
            match session.execute(op).await {
                Ok(Response::CasOk) => {
                    reply = if get {
                        Reply::bulk(expected)
                    } else {
                        Reply::OK
                    };
                    break;
                }
                Ok(Response::CasMismatch { current: now }) => current = now,
                Ok(other) => {
                    reply = Reply::err(format!("unexpected answer {other:?}"));
                    break;
                }
                Err(e) => {
                    reply = commands::error_reply(&e);
                    break;
                }
            }
        }
        self.sessions.push(session);
        reply
    }

    async fn statuses(&self) -> Vec<NodeStatus> {
        self.gateway
            .client
            .status(STATUS_TIMEOUT)
            .await
            .into_iter()
            .filter_map(|r| r.result.ok().map(|(s, _)| s))
            .collect()
    }

    async fn info(&self, sections: &[String]) -> Reply {
        let all = sections.is_empty()
            || sections
                .iter()
                .any(|s| matches!(s.as_str(), "all" | "everything" | "default"));
        let want = |name: &str| all || sections.iter().any(|s| s == name);
        let statuses = self.statuses().await;
        let g = &self.gateway;
        let mut text = String::new();
        if want("server") {
            text.push_str(&format!(
                "# Server\r\nredis_version:{REDIS_VERSION}\r\nraftkv_version:{}\r\nredis_mode:standalone\r\n\
                 process_id:{}\r\ntcp_port:{}\r\nuptime_in_seconds:{}\r\nraftkv_node:{}\r\n\r\n",
                env!("CARGO_PKG_VERSION"),
                std::process::id(),
                g.listen.rsplit(':').next().unwrap_or(""),
                g.started.elapsed().as_secs(),
                g.node.0,
            ));
        }
        if want("clients") {
            text.push_str(&format!(
                "# Clients\r\nconnected_clients:{}\r\nmaxclients:{REDIS_CONNECTIONS_MAX}\r\n\r\n",
                g.connected.load(Ordering::Relaxed)
            ));
        }
        let mine = statuses.iter().find(|s| s.node == g.node);
        if want("replication") {
            let led = mine.map_or(0, |s| {
                s.shards.iter().filter(|r| r.role == Role::Leader).count()
            });
            let held = mine.map_or(0, |s| s.shards.len());
            text.push_str(&format!(
                "# Replication\r\nrole:master\r\nconnected_slaves:0\r\n\
                 raftkv_shards_led:{led}\r\nraftkv_shards_held:{held}\r\n\r\n"
            ));
        }
        if want("keyspace") {
            text.push_str(&format!(
                "# Keyspace\r\ndb0:keys={},expires=0,avg_ttl=0\r\n\r\n",
                keys_in_cluster(&statuses)
            ));
        }
        if want("raftkv") {
            text.push_str("# Raftkv\r\n");
            text.push_str(&format!(
                "node:{}\r\nnodes_answering:{}\r\nshard_count:{}\r\n",
                g.node.0,
                statuses.len(),
                g.client.shard_count().unwrap_or(0)
            ));
            if let Some(s) = mine {
                for r in &s.shards {
                    text.push_str(&format!(
                        "shard{}:role={:?},term={},leader={},commit={},applied={},keys={},snapshot_index={}\r\n",
                        r.shard.0,
                        r.role,
                        r.term,
                        r.leader.map_or("none".to_string(), |l| l.0.to_string()),
                        r.commit,
                        r.applied,
                        r.keys,
                        r.snapshot_index
                    ));
                }
            }
            text.push_str("\r\n");
        }
        Reply::text(text.trim_end().to_string() + "\r\n")
    }
}

/// The Redis version the gateway claims in HELLO and INFO: client libraries switch
/// features on it, and raftkv answers the commands of that version it lists in
/// docs/REDIS.md.
pub const REDIS_VERSION: &str = "7.0.0";

/// Keys in the cluster: per shard, the count of the replica that leads it (else the
/// highest any replica reports).
fn keys_in_cluster(statuses: &[NodeStatus]) -> u64 {
    let mut per_shard: std::collections::BTreeMap<u32, (bool, u64)> = Default::default();
    for s in statuses {
        for r in &s.shards {
            let leader = r.role == Role::Leader;
            let e = per_shard.entry(r.shard.0).or_insert((leader, r.keys));
            if leader || (!e.0 && r.keys > e.1) {
                *e = (leader, r.keys);
            }
        }
    }
    per_shard.values().map(|(_, k)| k).sum()
}

/// True if `ops` touch a key that `plan`'s operations touch: such commands must not run
/// side by side, or the later one could overtake the earlier.
fn shares_key(plan: &Plan, ops: &[Op]) -> bool {
    let Plan::Ops { ops: theirs, .. } = plan else {
        return false;
    };
    theirs
        .iter()
        .any(|a| ops.iter().any(|b| a.key() == b.key()))
}

/// The metrics label of a command: its lower-case name if the gateway knows it.
fn command_label(name: &[u8]) -> &'static str {
    commands::command_name(name).unwrap_or("unknown")
}

/// Takes one complete command off the front of `buf` into `words` (empty on entry): a
/// RESP array of bulk strings, or an inline command (a line of words, as typed into
/// telnet). `Ok(false)`: incomplete, nothing taken. The codec finds the frame's ranges;
/// the words are slices of the bytes taken off `buf`, so a command costs no copy and no
/// allocation but the codec's list of ranges.
fn parse_command(buf: &mut BytesMut, words: &mut Vec<Bytes>) -> Result<bool, String> {
    debug_assert!(words.is_empty());
    if buf.is_empty() {
        return Ok(false);
    }
    if buf[0] != b'*' {
        let Some(end) = buf.iter().position(|b| *b == b'\n') else {
            return Ok(false);
        };
        let line = buf.split_to(end + 1).freeze();
        words.extend(
            line.split(|b: &u8| b.is_ascii_whitespace())
                .filter(|w| !w.is_empty())
                .map(|w| line.slice_ref(w)),
        );
        return Ok(true);
    }
    let (frame, amt) = match resp2::decode::decode_range(buf) {
        Ok(Some(found)) => found,
        Ok(None) => return Ok(false),
        Err(e) => return Err(e.to_string()),
    };
    let not_words = || "expected an array of bulk strings".to_string();
    let resp2::types::RangeFrame::Array(items) = frame else {
        return Err(not_words());
    };
    let taken = buf.split_to(amt).freeze();
    for item in &items {
        match item {
            resp2::types::RangeFrame::BulkString((start, end)) => {
                // The decoder steps over the two bytes after a bulk string's data without
                // looking: a length shorter than the data would store the value cut
                // short and drop two of its bytes. Redis refuses such input; so do we.
                if taken.get(*end..*end + 2) != Some(&b"\r\n"[..]) {
                    return Err(format!(
                        "expected '\\r\\n' after a bulk string of {} bytes",
                        end - start
                    ));
                }
                words.push(taken.slice(*start..*end));
            }
            resp2::types::RangeFrame::SimpleString((start, end)) => {
                words.push(taken.slice(*start..*end));
            }
            _ => return Err(not_words()),
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `parse_command` into a fresh vector: `None` while the command is incomplete.
    fn parse(buf: &mut BytesMut) -> Result<Option<Vec<Bytes>>, String> {
        let mut words = Vec::new();
        Ok(parse_command(buf, &mut words)?.then_some(words))
    }

    /// A bulk string's declared length shorter than its data: refused, not cut short.
    #[test]
    fn a_bulk_string_longer_than_its_length_is_a_protocol_error() {
        let mut buf = BytesMut::from(&b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nvXY\r\n"[..]);
        assert_eq!(
            parse(&mut buf).unwrap_err(),
            "expected '\\r\\n' after a bulk string of 1 bytes"
        );
        let mut buf = BytesMut::from(&b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$3\r\nvXY\r\n"[..]);
        assert_eq!(parse(&mut buf).unwrap().unwrap().len(), 3);
    }

    #[test]
    fn parses_arrays_inline_and_partial_input() {
        let mut buf = BytesMut::from(&b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\nPING\r\n*1\r\n$4\r\nPI"[..]);
        assert_eq!(
            parse(&mut buf).unwrap(),
            Some(vec![Bytes::from_static(b"GET"), Bytes::from_static(b"k")])
        );
        assert_eq!(
            parse(&mut buf).unwrap(),
            Some(vec![Bytes::from_static(b"PING")])
        );
        assert_eq!(parse(&mut buf).unwrap(), None);
        buf.extend_from_slice(b"NG\r\n");
        assert_eq!(
            parse(&mut buf).unwrap(),
            Some(vec![Bytes::from_static(b"PING")])
        );
        let mut inline = BytesMut::from(&b"  set  k\tv \r\n\r\n"[..]);
        let words = ["set", "k", "v"].map(|w| Bytes::from_static(w.as_bytes()));
        assert_eq!(parse(&mut inline).unwrap(), Some(words.to_vec()));
        assert_eq!(parse(&mut inline).unwrap(), Some(vec![]), "a blank line");
        assert!(inline.is_empty());
        let mut bad = BytesMut::from(&b"*1\r\n:5\r\n"[..]);
        assert!(parse(&mut bad).is_err());
        let mut null = BytesMut::from(&b"*2\r\n$3\r\nGET\r\n$-1\r\n"[..]);
        assert!(parse(&mut null).is_err(), "a null bulk string is no word");
        let mut not_array = BytesMut::from(&b"*-1\r\n"[..]);
        assert!(parse(&mut not_array).is_err());
    }
}
