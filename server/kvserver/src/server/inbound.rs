//! What arrives on the socket: every datagram is authenticated (tag, then replay window)
//! before any of its payload is decoded, then peer messages go to the core and client
//! requests are bound to the client's name and checked against its permission.

use super::{EventLoop, RECV_BATCH_MAX};
use crate::net::{ClientRoute, DropReason};
use kv_node::{codec, ClientToken};
use kv_shared::auth::{self as kv_auth, Protection};
use kv_shared::limits::{CLIENT_HELLOS_PER_FLUSH_MAX, CLIENT_REQUESTS_PER_DATAGRAM_MAX};
use kv_shared::proto::{ClientError, ClientRequest};
use kv_shared::wire::{self, Kind};
use kv_shared::NodeId;
use std::net::SocketAddr;
use std::time::Instant;

impl EventLoop {
    /// Reads every queued datagram (up to [`RECV_BATCH_MAX`]) into the core.
    pub(super) fn drain_socket(&mut self) {
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
        self.inputs_since_flush += 1;
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
        let taken = if self.taking_part {
            let taken = self.core.on_peer_payload(sender, opened.body);
            if taken.is_ok() {
                self.core.note_peer_heard(sender, self.now_ms());
            }
            taken
        } else {
            codec::decode_peer(sender, opened.body).map(drop)
        };
        if let Err(e) = taken {
            self.counters.dropped(DropReason::BadPayload, from, &e);
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
        let mut reqs = match kv_shared::proto::decode_requests(opened.body) {
            Ok(reqs) => reqs,
            Err(e) => {
                self.counters.dropped(DropReason::BadPayload, from, &e);
                return;
            }
        };
        let permission = client.permission;
        for req in &mut reqs {
            req.client = self.session_bindings.bind(&self.keys, index, req.client);
        }
        let route = ClientRoute {
            key_index: index as u16,
            protection: Protection::of_flags(header.flags),
        };
        let token = self.clients.token_for(from, route);
        let arrived = Instant::now();
        for req in reqs {
            if let Some(operation) = crate::auth::denied(permission, &req.op) {
                let client = self.keys.client(index);
                let error = ClientError::PermissionDenied {
                    client: client.name.clone(),
                    permission: permission.name().into(),
                    operation: operation.into(),
                };
                let why = format_args!(
                    "{operation} from {} client {:?}",
                    permission.name(),
                    client.name
                );
                self.counters
                    .dropped(DropReason::PermissionDenied, from, &why);
                self.core.refuse_request(token, &req, error);
                continue;
            }
            self.on_client_request(token, req, arrived);
        }
    }

    fn on_client_request(&mut self, token: ClientToken, req: ClientRequest, arrived: Instant) {
        self.counters.client_requests += 1;
        self.udp_requests.arrived(&req, arrived);
        self.core.on_client_request(token, req);
    }
}
