//! A fake raftkv cluster for kvcli's tests: N UDP "nodes" on loopback sharing one in-memory
//! map, one of them leading every shard. Tests steer it (move or remove the leader, drop
//! requests or replies, delay replies, serve a stale read) and inspect what it received.
//! It runs on its own thread and runtime, so a kvcli process or client can talk to it.
//! Like a real node it accepts only requests sealed under its client key, binds sessions
//! to the client's name, and seals its replies.

#![allow(dead_code)] // Each test binary uses a different part of the fake.

use bytes::Bytes;
use kv_shared::auth::{self, ClientKey, Key, Permission, Protection, Sealer, Stamp};
use kv_shared::proto::{
    ClientError, ClientReply, ClientRequest, NodeStatus, Op, Outcome, Role, ShardRoute, ShardStatus,
};
use kv_shared::shard::shard_for_key;
use kv_shared::wire::{self, Kind};
use kv_shared::{ClientId, NodeId, ShardId};
use kvcli::client::{ClientOptions, NodeAddr};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The fake's state and knobs.
#[derive(Default)]
pub struct Ctl {
    /// Node id leading every shard; `None`: no leader anywhere.
    pub leader: Option<u64>,
    /// Non-leaders include the leader hint in redirects.
    pub hint: bool,
    /// The map.
    pub data: HashMap<Bytes, Bytes>,
    /// Per key: the value before its latest write, and the session that wrote it. A stale
    /// read is planted only when that same session reads the key: a session runs one request
    /// at a time, so its write completed before its read was invoked, and the old value is
    /// then certainly not linearizable, however fast or slow the machine.
    pub prev: HashMap<Bytes, (Option<Bytes>, ClientId)>,
    /// Per client: latest applied seq and its outcome (the session table).
    pub sessions: HashMap<ClientId, (u64, Outcome)>,
    /// Every application of a write, by (client, seq).
    pub applied: Vec<(ClientId, u64)>,
    /// Every request received: (node id, client, seq, op).
    pub received: Vec<(u64, ClientId, u64, Op)>,
    /// Datagrams received per node id, and how many requests each carried.
    pub datagrams: Vec<(u64, usize)>,
    /// Drop this many of the next requests at the leader, unapplied.
    pub drop_requests: usize,
    /// Apply this many of the next writes at the leader but send no reply.
    pub drop_replies: usize,
    /// Answer this many of the next eligible gets with the key's previous value.
    pub stale_reads: usize,
    /// Stale reads served.
    pub stale_served: usize,
    /// Delay before each reply datagram.
    pub delay: Duration,
    /// Drop every datagram (the whole cluster is down).
    pub silent: bool,
    /// Refuse every write at the leader with this reason, as kvserver does on a full
    /// disk (reads are still served).
    pub refuse_writes: Option<String>,
    /// Refuse this many writes (not session openings) as a shard that evicted the
    /// writer's session does.
    pub expire_sessions: usize,
    /// Node addresses, reported in status replies (node i+1 at `addrs[i]`).
    pub addrs: Vec<SocketAddr>,
    /// The node ids holding every shard (`None`: all); the others answer keyed requests
    /// with `StaleRoute`.
    pub replicas: Option<Vec<u64>>,
    /// The epoch of that replica set.
    pub route_epoch: u64,
    /// Nodes outside `replicas` that forgot the shard (removed, then restarted): they
    /// answer with the bootstrap replica set (every node, epoch 0), not the current one.
    pub forgetful: Vec<u64>,
    /// `ShardLeader` requests the leader took: (shard, node).
    pub preferred_leaders: Vec<(u32, u64)>,
    /// `MoveReplica` requests the leader carried out: (shard, from, to, client, seq).
    pub moves: Vec<(u32, u64, u64, u64, u64)>,
}

impl Ctl {
    fn route(&self, shard: ShardId, n: usize) -> ShardRoute {
        let voters = match &self.replicas {
            Some(r) => r.iter().copied().map(NodeId).collect(),
            None => (1..=n as u64).map(NodeId).collect(),
        };
        ShardRoute {
            shard,
            epoch: self.route_epoch,
            voters,
            learners: vec![],
            leader: self.leader.map(NodeId),
        }
    }
}

/// A running fake cluster.
pub struct FakeCluster {
    /// The cluster id it expects.
    pub cluster_id: u64,
    /// Shard count.
    pub shards: u32,
    /// Node addresses; node i+1 is at `nodes[i]`.
    pub nodes: Vec<SocketAddr>,
    /// The state and knobs.
    pub ctl: Arc<Mutex<Ctl>>,
    /// The one client key it accepts.
    pub key: ClientKey,
    /// Holds `key` as a file, for the kvcli binary's --key-file.
    key_dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeCluster {
    /// Starts `n` nodes with `shards` shards, node `leader` leading them all.
    pub fn start(n: usize, shards: u32, leader: Option<u64>) -> FakeCluster {
        let cluster_id = 4242;
        let key = ClientKey {
            name: "tester".into(),
            permission: Permission::ReadWrite,
            key: Key::from_bytes([7; auth::KEY_BYTES]),
        };
        let key_dir = tempfile::tempdir().unwrap();
        auth::write_client_key(&key_dir.path().join("tester.key"), &key).unwrap();
        let node_key = key.clone();
        let ctl = Arc::new(Mutex::new(Ctl {
            leader,
            hint: true,
            ..Ctl::default()
        }));
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let ctl2 = ctl.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let mut addrs = Vec::new();
                let mut sockets = Vec::new();
                for _ in 0..n {
                    let s = Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap());
                    addrs.push(s.local_addr().unwrap());
                    sockets.push(s);
                }
                ctl2.lock().unwrap().addrs = addrs.clone();
                addr_tx.send(addrs).unwrap();
                for (i, s) in sockets.into_iter().enumerate() {
                    tokio::spawn(node_loop(
                        i as u64 + 1,
                        s,
                        ctl2.clone(),
                        node_key.clone(),
                        cluster_id,
                        shards,
                        n,
                    ));
                }
                let _ = stop_rx.await;
            });
        });
        let nodes = addr_rx.recv().unwrap();
        FakeCluster {
            cluster_id,
            shards,
            nodes,
            ctl,
            key,
            key_dir,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    /// Client options for this cluster as `--nodes` would give them (ids unknown), with
    /// short timeouts so that tests are quick.
    pub fn options(&self) -> ClientOptions {
        let mut o = ClientOptions::from_addrs(
            self.cluster_id,
            self.nodes
                .iter()
                .map(|&addr| NodeAddr { id: None, addr })
                .collect(),
            self.key.clone(),
        );
        o.attempt_timeout = Duration::from_millis(100);
        o.backoff_base = Duration::from_millis(5);
        o.backoff_max = Duration::from_millis(50);
        o.unavailable_after = Duration::from_secs(3);
        o.discovery_timeout = Duration::from_secs(2);
        o
    }

    /// `--nodes a,b,c` for the kvcli binary.
    pub fn nodes_flag(&self) -> String {
        self.nodes
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The client key file, for the kvcli binary's --key-file.
    pub fn key_file(&self) -> std::path::PathBuf {
        self.key_dir.path().join("tester.key")
    }

    /// Locks the state.
    pub fn ctl(&self) -> std::sync::MutexGuard<'_, Ctl> {
        self.ctl.lock().unwrap()
    }
}

impl Drop for FakeCluster {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn node_loop(
    me: u64,
    socket: Arc<tokio::net::UdpSocket>,
    ctl: Arc<Mutex<Ctl>>,
    key: ClientKey,
    cluster_id: u64,
    shards: u32,
    n: usize,
) {
    let requests = Sealer::client_requests(&key.key);
    let replies_sealer = Sealer::client_replies(&key.key);
    let mut counter = 0u64;
    let mut buf = vec![0u8; 65536];
    loop {
        let Ok((len, from)) = socket.recv_from(&mut buf).await else {
            continue;
        };
        let Ok((h, _)) = wire::decode(&buf[..len], cluster_id) else {
            continue;
        };
        assert_eq!(
            h.kind,
            Kind::ClientRequests,
            "kvcli sends only client requests"
        );
        assert_eq!(h.sender, key.id(), "kvcli sends under its key id");
        let opened = auth::open(&mut buf[..len], &h, std::slice::from_ref(&requests))
            .expect("kvcli seals under its key");
        let mut reqs: Vec<ClientRequest> =
            wire::decode_value(opened.body).expect("kvcli's payload decodes");
        for r in &mut reqs {
            r.client = auth::session_id(&key.name, r.client);
        }
        let (replies, delay) = {
            let mut c = ctl.lock().unwrap();
            if c.silent {
                continue;
            }
            c.datagrams.push((me, reqs.len()));
            let replies: Vec<ClientReply> = reqs
                .into_iter()
                .filter_map(|r| answer(&mut c, me, r, shards, n))
                .collect();
            (replies, c.delay)
        };
        if replies.is_empty() {
            continue;
        }
        let body = postcard::to_stdvec(&replies).expect("replies encode");
        let mut datagram = Vec::new();
        let stamp = Stamp {
            incarnation: 1,
            counter,
            echo: 0,
        };
        counter += 1;
        replies_sealer.seal(
            Kind::ClientReplies,
            cluster_id,
            me,
            stamp,
            Protection::Mac,
            &body,
            &mut datagram,
        );
        let socket = socket.clone();
        if delay.is_zero() {
            let _ = socket.send_to(&datagram, from).await;
        } else {
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let _ = socket.send_to(&datagram, from).await;
            });
        }
    }
}

fn answer(c: &mut Ctl, me: u64, r: ClientRequest, shards: u32, n: usize) -> Option<ClientReply> {
    c.received.push((me, r.client, r.seq, r.op.clone()));
    let reply = |outcome| {
        Some(ClientReply {
            client: r.client,
            seq: r.seq,
            outcome,
        })
    };
    if r.op == Op::Status {
        let leader = c.leader.map(NodeId);
        let status = NodeStatus {
            node: NodeId(me),
            shard_count: shards,
            shards: (0..shards)
                .map(|s| ShardStatus {
                    shard: ShardId(s),
                    role: if c.leader == Some(me) {
                        Role::Leader
                    } else {
                        Role::Follower
                    },
                    term: 1,
                    leader,
                    commit: 0,
                    applied: 0,
                    log_entries: 0,
                    snapshot_index: 0,
                    keys: 0,
                    epoch: c.route_epoch,
                    replicas: vec![],
                })
                .collect(),
            peers: (1..=n as u64)
                .filter(|p| *p != me)
                .map(|p| (NodeId(p), Some(5)))
                .collect(),
            refused: vec![],
            drops: Vec::new(),
            counters: Vec::new(),
            nodes: (1..).map(NodeId).zip(c.addrs.iter().copied()).collect(),
            routes: (0..shards).map(|s| c.route(ShardId(s), n)).collect(),
            registry: None,
            metadata: None,
        };
        return reply(Outcome::Status(status));
    }
    if let Op::ShardLeader { shard, node } = r.op {
        if c.leader != Some(me) {
            return reply(Outcome::Error(ClientError::NotLeader {
                shard,
                leader: c.leader.map(NodeId),
            }));
        }
        c.preferred_leaders.push((shard.0, node.0));
        return reply(Outcome::Done);
    }
    if let Op::MoveReplica { shard, from, to } = r.op {
        if c.leader != Some(me) {
            return reply(Outcome::Error(ClientError::NotLeader {
                shard,
                leader: c.leader.map(NodeId),
            }));
        }
        if from == to {
            return reply(Outcome::Error(ClientError::MoveRefused {
                shard,
                from,
                to,
                reason: kv_shared::proto::MoveRefusal::SameNode,
            }));
        }
        c.moves.push((shard.0, from.0, to.0, r.client.0, r.seq));
        return reply(Outcome::Done);
    }
    let key = r.op.key().expect("keyed").clone();
    let shard = shard_for_key(&key, shards);
    if c.replicas.as_ref().is_some_and(|r| !r.contains(&me)) {
        let route = if c.forgetful.contains(&me) {
            ShardRoute {
                shard,
                epoch: 0,
                voters: (1..=n as u64).map(NodeId).collect(),
                learners: vec![],
                leader: None,
            }
        } else {
            c.route(shard, n)
        };
        return reply(Outcome::Error(ClientError::StaleRoute {
            node: NodeId(me),
            route,
        }));
    }
    if c.leader != Some(me) {
        let hint = if c.hint { c.leader.map(NodeId) } else { None };
        return reply(Outcome::Error(ClientError::NotLeader {
            shard,
            leader: hint,
        }));
    }
    if c.drop_requests > 0 {
        c.drop_requests -= 1;
        return None;
    }
    if let Op::Get { .. } = r.op {
        if c.stale_reads > 0 {
            if let Some((old, writer)) = c.prev.get(&key) {
                if *writer == r.client {
                    let old = old.clone();
                    c.stale_reads -= 1;
                    c.stale_served += 1;
                    return reply(Outcome::Value(old));
                }
            }
        }
        return reply(Outcome::Value(c.data.get(&key).cloned()));
    }
    if let Some(reason) = &c.refuse_writes {
        return reply(Outcome::Error(ClientError::Unavailable {
            node: NodeId(me),
            reason: reason.clone(),
        }));
    }
    if c.expire_sessions > 0 && !matches!(r.op, Op::OpenSession { .. }) {
        c.expire_sessions -= 1;
        return reply(Outcome::Error(ClientError::SessionExpired));
    }
    // A write: deduplicate by session, as the real state machine does.
    if let Some((latest, outcome)) = c.sessions.get(&r.client) {
        if r.seq == *latest {
            let outcome = outcome.clone();
            if c.drop_replies > 0 && !matches!(r.op, Op::OpenSession { .. }) {
                c.drop_replies -= 1;
                return None;
            }
            return reply(outcome);
        }
        if r.seq < *latest {
            return reply(Outcome::Error(ClientError::StaleSequence {
                seq: r.seq,
                latest: *latest,
            }));
        }
    }
    let before = c.data.get(&key).cloned();
    let outcome = match &r.op {
        Op::Put { value, .. } => {
            c.data.insert(key.clone(), value.clone());
            Outcome::Done
        }
        Op::Delete { .. } => {
            c.data.remove(&key);
            Outcome::Done
        }
        Op::Cas { expected, new, .. } => {
            if &before == expected {
                c.data.insert(key.clone(), new.clone());
                Outcome::CasOk
            } else {
                Outcome::CasMismatch {
                    current: before.clone(),
                }
            }
        }
        Op::OpenSession { .. } => Outcome::Done,
        Op::Incr { delta, .. } => {
            let current = before.as_deref().map_or(Some(0), |v| {
                std::str::from_utf8(v)
                    .ok()
                    .and_then(|t| t.parse::<i64>().ok())
            });
            match current.and_then(|n| n.checked_add(*delta)) {
                Some(sum) => {
                    c.data.insert(key.clone(), Bytes::from(sum.to_string()));
                    Outcome::Integer(sum)
                }
                None => Outcome::Error(ClientError::NotAnInteger),
            }
        }
        Op::Append { value, .. } => {
            let mut v = before.as_deref().unwrap_or_default().to_vec();
            v.extend_from_slice(value);
            let len = v.len() as i64;
            c.data.insert(key.clone(), Bytes::from(v));
            Outcome::Integer(len)
        }
        Op::Swap { new, .. } => {
            match new {
                Some(v) => c.data.insert(key.clone(), v.clone()),
                None => c.data.remove(&key),
            };
            Outcome::Value(before.clone())
        }
        Op::Get { .. }
        | Op::Status
        | Op::ShardLeader { .. }
        | Op::MoveReplica { .. }
        | Op::RegisterNode { .. }
        | Op::SetNodeState { .. }
        | Op::PauseBalancer { .. } => {
            unreachable!("handled above")
        }
    };
    if c.data.get(&key) != before.as_ref() {
        c.prev.insert(key, (before, r.client));
    }
    if !matches!(r.op, Op::OpenSession { .. }) {
        c.applied.push((r.client, r.seq));
    }
    c.sessions.insert(r.client, (r.seq, outcome.clone()));
    if c.drop_replies > 0 && !matches!(r.op, Op::OpenSession { .. }) {
        c.drop_replies -= 1;
        return None;
    }
    reply(outcome)
}
