//! A small blocking client for the tests: one UDP socket, one session, leader redirects
//! and retries under the same sequence number (so a retried write applies once). It
//! speaks the same protocol as kvcli, built from kv-shared's types only, so a test
//! failure points at the server and not at a client library. It seals its requests under
//! a client key, echoing the ticket each node gave it (learnt from the node's hello), and
//! accepts only replies that verify under the key.

use bytes::Bytes;
use kv_shared::auth::{self, ClientKey, Protection, Sealer, Stamp};
use kv_shared::proto::{ClientError, ClientReply, ClientRequest, NodeStatus, Op, Outcome};
use kv_shared::wire::{self, Kind};
use kv_shared::{ClientId, NodeId, ShardId};
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

/// How long one attempt waits for its reply before trying another node.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_millis(300);
/// How long a request is retried before the call gives up.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// A client session.
#[derive(Debug)]
pub struct Client {
    socket: UdpSocket,
    cluster_id: u64,
    nodes: Vec<(NodeId, SocketAddr)>,
    shards: u32,
    id: ClientId,
    seq: u64,
    leaders: HashMap<ShardId, NodeId>,
    /// Shards where this session is open (a node refuses writes without one).
    open_shards: std::collections::HashSet<ShardId>,
    next_node: usize,
    buf: Vec<u8>,
    key: ClientKey,
    requests: Sealer,
    replies: Sealer,
    incarnation: u64,
    counter: u64,
    /// The ticket each node issued to this client, by address (a node executes only
    /// requests that echo it).
    tickets: HashMap<SocketAddr, u64>,
}

/// Why a call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// No node gave a final answer within the call timeout; the last thing heard.
    GaveUp(String),
    /// The request was answered with an error that retrying does not fix.
    Refused(ClientError),
}

impl Client {
    /// A new session (random client id) for the cluster `nodes`, as client `key`.
    pub fn new(
        cluster_id: u64,
        nodes: Vec<(NodeId, SocketAddr)>,
        shards: u32,
        key: ClientKey,
    ) -> Client {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind client socket");
        let id = ClientId(
            std::collections::hash_map::RandomState::new()
                .build_hasher()
                .finish(),
        );
        Client {
            socket,
            cluster_id,
            nodes,
            shards,
            id,
            seq: 0,
            leaders: HashMap::new(),
            open_shards: std::collections::HashSet::new(),
            next_node: 0,
            buf: vec![0; kv_shared::limits::DATAGRAM_BYTES_MAX + 1],
            requests: Sealer::client_requests(&key.key),
            replies: Sealer::client_replies(&key.key),
            key,
            incarnation: auth::random_u64().expect("OS randomness"),
            counter: 0,
            tickets: HashMap::new(),
        }
    }

    /// Seals `body` as a client request datagram for `node` under this client's key,
    /// echoing the ticket `node` gave this client (asking for one first if it has none),
    /// so that `node` gets as far as decoding it.
    pub fn seal_for(&mut self, node: NodeId, body: &[u8]) -> Vec<u8> {
        let addr = self.addr(node);
        if !self.tickets.contains_key(&addr) {
            self.status(node)
                .unwrap_or_else(|| panic!("{node} did not answer a status request"));
        }
        self.seal(addr, body)
    }

    /// The datagram this client sends `node` for `op` now (the next sequence number, the
    /// ticket it holds for `node`, or none before its first contact), without sending it:
    /// what an attacker on the wire records.
    pub fn request_datagram(&mut self, node: NodeId, op: Op) -> Vec<u8> {
        self.seq += 1;
        let req = ClientRequest {
            client: self.id,
            seq: self.seq,
            epoch: 0,
            op,
        };
        let body = postcard::to_stdvec(&vec![req]).expect("request encodes");
        self.seal(self.addr(node), &body)
    }

    /// Seals `body` for the node at `addr`, echoing its ticket (0 if none is known yet).
    fn seal(&mut self, addr: SocketAddr, body: &[u8]) -> Vec<u8> {
        let stamp = Stamp {
            incarnation: self.incarnation,
            counter: self.counter,
            echo: self.tickets.get(&addr).copied().unwrap_or(0),
        };
        self.counter += 1;
        let mut out = Vec::new();
        self.requests.seal(
            Kind::ClientRequests,
            self.cluster_id,
            self.key.id(),
            stamp,
            Protection::Mac,
            body,
            &mut out,
        );
        out
    }

    /// Declares another session's client id and sequence number from now on: what a
    /// client trying to take over another's session would send.
    pub fn spoof_session(&mut self, id: ClientId, last_seq: u64) {
        self.id = id;
        self.seq = last_seq;
    }

    /// The session id the nodes bind this session to (replies carry it).
    pub fn bound_id(&self) -> ClientId {
        auth::session_id(&self.key.name, self.id)
    }

    /// This session's declared client id.
    pub fn id(&self) -> ClientId {
        self.id
    }

    /// Runs `op` at the key's shard leader, following redirects and retrying other nodes
    /// (same sequence number) until a final answer or [`CALL_TIMEOUT`].
    pub fn call(&mut self, op: Op) -> Result<Outcome, CallError> {
        self.call_within(op, CALL_TIMEOUT)
    }

    /// [`Client::call`] with an explicit overall timeout. The first write to a shard
    /// opens the session there first.
    pub fn call_within(&mut self, op: Op, timeout: Duration) -> Result<Outcome, CallError> {
        if op.is_write() && !matches!(op, Op::OpenSession { .. }) {
            let key = op.key().expect("writes have keys").clone();
            let shard = kv_shared::shard::shard_for_key(&key, self.shards);
            if !self.open_shards.contains(&shard) {
                self.call_within(Op::OpenSession { key }, timeout)?;
                self.open_shards.insert(shard);
            }
        }
        self.seq += 1;
        let req = ClientRequest {
            client: self.id,
            seq: self.seq,
            epoch: 0,
            op,
        };
        let shard = req
            .op
            .key()
            .map(|k| kv_shared::shard::shard_for_key(k, self.shards));
        let deadline = Instant::now() + timeout;
        let mut target = shard
            .and_then(|s| self.leaders.get(&s).copied())
            .unwrap_or_else(|| self.round_robin());
        let mut last = String::from("no attempt");
        while Instant::now() < deadline {
            let outcome = match self.attempt(target, &req) {
                Some(o) => o,
                None => {
                    last = format!("no reply from {target} within {ATTEMPT_TIMEOUT:?}");
                    target = self.round_robin();
                    continue;
                }
            };
            match outcome {
                Outcome::Error(ClientError::NotLeader {
                    leader: Some(l), ..
                }) if l != target => {
                    last = format!("{target} redirected to {l}");
                    target = l;
                }
                Outcome::Error(e @ ClientError::NotLeader { .. })
                | Outcome::Error(e @ ClientError::NoQuorum { .. })
                | Outcome::Error(e @ ClientError::Timeout { .. })
                | Outcome::Error(e @ ClientError::Unavailable { .. })
                | Outcome::Error(e @ ClientError::Overloaded { .. }) => {
                    last = format!("{target}: {e}");
                    std::thread::sleep(Duration::from_millis(50));
                    target = self.round_robin();
                }
                Outcome::Error(e) => return Err(CallError::Refused(e)),
                other => {
                    if let Some(s) = shard {
                        self.leaders.insert(s, target);
                    }
                    return Ok(other);
                }
            }
        }
        Err(CallError::GaveUp(last))
    }

    /// Sends `op` to `node` once, without redirects; `None` if no reply came in time.
    pub fn call_at(&mut self, node: NodeId, op: Op) -> Option<Outcome> {
        self.seq += 1;
        let req = ClientRequest {
            client: self.id,
            seq: self.seq,
            epoch: 0,
            op,
        };
        self.attempt(node, &req)
    }

    /// Writes `key = value`; panics unless acknowledged.
    pub fn put(&mut self, key: &str, value: &str) {
        let outcome = self.try_put(key, value);
        assert_eq!(outcome, Ok(Outcome::Done), "put {key}");
    }

    /// Writes `key = value`, returning the final outcome.
    pub fn try_put(&mut self, key: &str, value: &str) -> Result<Outcome, CallError> {
        self.call(Op::Put {
            key: Bytes::copy_from_slice(key.as_bytes()),
            value: Bytes::copy_from_slice(value.as_bytes()),
        })
    }

    /// A linearizable read; panics unless answered.
    pub fn get(&mut self, key: &str) -> Option<String> {
        match self.call(Op::Get {
            key: Bytes::copy_from_slice(key.as_bytes()),
            stale: false,
        }) {
            Ok(Outcome::Value(v)) => v.map(|b| String::from_utf8_lossy(&b).into_owned()),
            other => panic!("get {key}: {other:?}"),
        }
    }

    /// A stale read served by `node` from its own state (`None` if it did not answer).
    pub fn stale_get_at(&mut self, node: NodeId, key: &str) -> Option<Option<String>> {
        match self.call_at(
            node,
            Op::Get {
                key: Bytes::copy_from_slice(key.as_bytes()),
                stale: true,
            },
        )? {
            Outcome::Value(v) => Some(v.map(|b| String::from_utf8_lossy(&b).into_owned())),
            _ => None,
        }
    }

    /// `node`'s status table, or `None` if it did not answer in time.
    pub fn status(&mut self, node: NodeId) -> Option<NodeStatus> {
        match self.call_at(node, Op::Status)? {
            Outcome::Status(s) => Some(s),
            _ => None,
        }
    }

    /// Sends raw bytes to `node` (for the tests of malformed datagrams).
    pub fn send_raw(&self, node: NodeId, bytes: &[u8]) {
        self.socket
            .send_to(bytes, self.addr(node))
            .expect("send raw datagram");
    }

    fn round_robin(&mut self) -> NodeId {
        let n = self.nodes[self.next_node % self.nodes.len()].0;
        self.next_node += 1;
        n
    }

    fn addr(&self, node: NodeId) -> SocketAddr {
        self.nodes
            .iter()
            .find(|(id, _)| *id == node)
            .map(|(_, a)| *a)
            .unwrap_or_else(|| panic!("{node} is not a node of this cluster"))
    }

    /// One send and the wait for the reply to exactly this request. A hello with a new
    /// ticket (the first contact, or the node restarted) sends the request again under it.
    fn attempt(&mut self, node: NodeId, req: &ClientRequest) -> Option<Outcome> {
        let body = postcard::to_stdvec(&vec![req.clone()]).expect("request encodes");
        let addr = self.addr(node);
        let datagram = self.seal(addr, &body);
        self.socket.send_to(&datagram, addr).ok()?;
        let deadline = Instant::now() + ATTEMPT_TIMEOUT;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            self.socket
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .expect("set_read_timeout");
            let (n, from) = match self.socket.recv_from(&mut self.buf) {
                Ok(x) => x,
                Err(_) => continue,
            };
            let Ok((header, _)) = wire::decode(&self.buf[..n], self.cluster_id) else {
                continue;
            };
            if header.kind != Kind::ClientReplies {
                continue;
            }
            let replies_sealer = std::slice::from_ref(&self.replies);
            let Ok(opened) = auth::open(&mut self.buf[..n], &header, replies_sealer) else {
                continue;
            };
            let ticket = opened.stamp.echo;
            let Ok(replies) = wire::decode_value::<Vec<ClientReply>>(opened.body) else {
                continue;
            };
            if ticket != 0 && self.tickets.insert(from, ticket) != Some(ticket) && from == addr {
                let again = self.seal(addr, &body);
                self.socket.send_to(&again, addr).ok()?;
            }
            // Late replies to earlier requests of this session are skipped.
            let bound = auth::session_id(&self.key.name, req.client);
            if let Some(r) = replies
                .into_iter()
                .find(|r| r.client == bound && r.seq == req.seq)
            {
                return Some(r.outcome);
            }
        }
    }
}
