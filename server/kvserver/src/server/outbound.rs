//! What leaves on the socket: the core's output acted on in order (disk writes something
//! waits for, peer datagrams, hellos, client replies batched per address, then a leader's
//! deferrable writes), each datagram sealed in place
//! under the receiver's key with the next stamp of this incarnation. A small write that
//! finds the disk thread idle is written here instead, after the datagrams and replies
//! (none of which waits for it: the core releases what does only after `on_disk_done`).

use super::{EventLoop, ServerError, WRITE_HERE_INPUTS_MAX};
use crate::core_events;
use crate::disk::{DiskEvent, Placed, WriteHereError};
use crate::net::{ClientRoute, DropReason};
use crate::resp::local::LOCAL_TOKEN;
use kv_node::DiskWrite;
use kv_shared::auth::{Stamp, BODY_BYTES_MAX, BODY_OFFSET, TAG_BYTES};
use kv_shared::pack::{pack_by, PackLimit};
use kv_shared::proto::{encode_replies, reply_bytes, ClientReply, Outcome};
use kv_shared::wire::Kind;
use kv_shared::NodeId;
use std::net::SocketAddr;
use tokio::sync::mpsc::UnboundedReceiver;

impl EventLoop {
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

    /// Takes the core's output and acts on it: disk writes, then datagrams, then replies;
    /// writes that are all deferrable (a leader's own) go to the thread after the replies.
    /// Given the disk thread's `events`, writes that the thread would take at once are
    /// written and synced here instead, after the datagrams and replies, if the loop is
    /// otherwise idle (at most [`WRITE_HERE_INPUTS_MAX`] inputs besides one from each
    /// peer came since the last flush, and at most that many client requests wait for an
    /// answer); then the core is
    /// told they are durable and this returns true: it has more to send (the acks and
    /// replies they released), and the caller flushes again.
    pub(super) async fn flush(
        &mut self,
        mut events: Option<&mut UnboundedReceiver<DiskEvent>>,
    ) -> bool {
        let out = self.core.take_output();
        for e in &out.events {
            core_events::record(self.me, e, &self.metrics);
        }
        let inputs_max = WRITE_HERE_INPUTS_MAX + self.peers.len() as u64;
        let quiet = std::mem::take(&mut self.inputs_since_flush) <= inputs_max
            && self.core.pending_requests() as u64 <= WRITE_HERE_INPUTS_MAX;
        let mut writes_here = Vec::new();
        let mut writes_after_sends = Vec::new();
        match &mut events {
            Some(events)
                if quiet
                    && !out.disk_writes.is_empty()
                    && self.disk.as_ref().is_some_and(|d| d.idle()) =>
            {
                // An idle thread has reported all it wrote: the core hears of those
                // first, so it learns of durable writes in id order.
                if let Ok(ev) = events.try_recv() {
                    if let Err(ServerError::Disk(e)) = self.on_disk_events(ev, events) {
                        // Never while idle (a failed thread counts its writes as
                        // queued); should it come, it stops the node after this flush.
                        self.disk_failure = Some(e);
                    }
                }
                writes_here = out.disk_writes;
            }
            // Nothing waits for a leader's own log writes (deferrable) but its own count:
            // they go to the thread after the datagrams, so that waking it is not on the
            // Appends' way out. A write something waits for (a follower's, whose acks it
            // holds) starts first.
            _ if out.disk_writes.iter().all(|w| w.deferrable) => {
                writes_after_sends = out.disk_writes;
            }
            _ => self.submit_writes(out.disk_writes),
        }
        let knows = |peers: &[(NodeId, SocketAddr)], to: NodeId| peers.iter().any(|p| p.0 == to);
        if out.datagrams.iter().any(|(to, _)| !knows(&self.peers, *to)) {
            // The core learnt a registered node (its metadata replica applied the
            // registration) since the last periodic sync.
            self.sync_peers();
        }
        for (to, batch) in out.datagrams {
            let Some(peer) = self.peers.iter().position(|(id, _)| *id == to) else {
                // A shard's membership may name a node that registered after this node's
                // newest registry (a node outside the metadata group hears it every 2 s):
                // Raft resends once the registry lists it and it becomes a peer.
                tracing::debug!(peer = to.0, "no address yet for a node a shard names");
                continue;
            };
            // The core made every batch fit a sealed body.
            let len = kv_node::codec::encode_peer_body(to, &batch, self.body_buf())
                .expect("a batch of the node core fits BODY_BYTES_MAX");
            self.send_to_peer(peer, len).await;
        }
        for peer in 0..self.peers.len() {
            if std::mem::take(&mut self.hello_due[peer]) {
                // An empty batch: its stamp tells the peer this node's incarnation.
                let to = self.peers[peer].0;
                let len =
                    kv_node::codec::encode_peer_body(to, &Default::default(), self.body_buf())
                        .expect("an empty batch fits");
                self.send_to_peer(peer, len).await;
            }
        }
        for (addr, route, ticket) in std::mem::take(&mut self.client_hellos) {
            self.send_replies(addr, route, &[], ticket).await;
        }
        self.answer_clients(out.replies).await;
        self.submit_writes(writes_after_sends);
        match events {
            Some(events) => self.write_here(writes_here, events),
            None => false,
        }
    }

    /// Hands `writes` to the disk thread.
    fn submit_writes(&mut self, writes: Vec<DiskWrite>) {
        let Some(disk) = &self.disk else {
            if !writes.is_empty() {
                tracing::debug!(
                    writes = writes.len(),
                    "disk closed for shutdown: dropping writes (nothing depends on them)"
                );
            }
            return;
        };
        for w in writes {
            self.counters.disk_writes += 1;
            if disk.submit(w).is_err() {
                // The thread stopped; its Failed event (or the closed channel)
                // ends the loop. Nothing of this write is acknowledged.
                self.disk = None;
                break;
            }
        }
    }

    /// Writes `writes` on this thread where the disk thread is idle
    /// (`DiskThread::write_here`: it syncs them, or holds deferrable ones, and queues the
    /// rest) and tells the core which are durable, after the `Done` events the thread
    /// sent before. True if any was. A failure stops the node: `disk_failure` is set.
    fn write_here(
        &mut self,
        writes: Vec<DiskWrite>,
        events: &mut UnboundedReceiver<DiskEvent>,
    ) -> bool {
        let mut durable = false;
        for w in writes {
            let Some(disk) = &self.disk else {
                break;
            };
            self.counters.disk_writes += 1;
            match disk.write_here(w) {
                Ok(Placed::Durable(ids)) => {
                    self.counters.wal_syncs += 1;
                    self.counters.disk_writes_here += 1;
                    if let Ok(ev) = events.try_recv() {
                        if let Err(ServerError::Disk(e)) = self.on_disk_events(ev, events) {
                            self.disk_failure = Some(e);
                        }
                    }
                    for id in ids {
                        self.core.on_disk_done(id);
                    }
                    durable = true;
                }
                Ok(Placed::Held) => self.counters.disk_writes_here += 1,
                Ok(Placed::Queued) => {}
                Err(WriteHereError::Failed(e)) => {
                    self.disk_failure = Some(e);
                    self.disk = None;
                }
                // The thread's Failed event (or the closed channel) ends the loop.
                Err(WriteHereError::Gone(_)) => self.disk = None,
            }
        }
        durable
    }

    /// Sends each client its replies, batched per address (the Redis gateway's through
    /// its channel).
    async fn answer_clients(&mut self, mut replies: Vec<(kv_node::ClientToken, ClientReply)>) {
        if replies.iter().any(|(token, _)| *token == LOCAL_TOKEN) {
            let (local, udp) = replies.into_iter().partition(|(t, _)| *t == LOCAL_TOKEN);
            replies = udp;
            for (_, reply) in local {
                self.local_requests.answer(reply);
            }
        }
        if replies.is_empty() {
            return;
        }
        let now = std::time::Instant::now();
        for (_, reply) in &mut replies {
            self.udp_requests.answered(reply, &self.metrics, now);
            if let Outcome::Status(status) = &mut reply.outcome {
                status.drops = self.counters.drops_by_reason();
                // The counters /metrics shows, brought up to this instant first.
                self.sync_metrics();
                status.counters = self.metrics.counters();
            }
        }
        // Stable: replies to one client keep the core's order within their datagram. Most
        // rounds answer one client (a load generator's sessions share its socket), and
        // sorting would cost a scratch buffer each time.
        if !replies.windows(2).all(|w| w[0].0 .0 <= w[1].0 .0) {
            replies.sort_by_key(|(token, _)| token.0);
        }
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
        self.counters.peer_datagrams_out += 1;
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
        // Most flushes answer a client in one datagram (a hello, with no replies, too):
        // encoded straight away, with no batches built to find that out.
        if let Some(len) = encode_replies(replies, self.body_buf()) {
            self.seal_and_send_replies(addr, route, len, echo).await;
            return;
        }
        let packed = pack_by(
            replies.iter().copied(),
            |r| reply_bytes(r),
            PackLimit::bytes(BODY_BYTES_MAX),
        );
        for reply in &packed.too_large {
            self.counters.dropped(
                DropReason::SendFailed,
                addr,
                &format_args!(
                    "a reply of {} bytes does not fit in a datagram (BODY_BYTES_MAX is {BODY_BYTES_MAX})",
                    reply_bytes(reply)
                ),
            );
        }
        for batch in packed.batches {
            let len = encode_replies(&batch, self.body_buf())
                .expect("a packed batch fits BODY_BYTES_MAX");
            self.seal_and_send_replies(addr, route, len, echo).await;
        }
    }

    /// Seals the replies encoded in [`Self::body_buf`] (`len` bytes) under the client's
    /// key, the stamp echoing `echo`, and sends them.
    async fn seal_and_send_replies(
        &mut self,
        addr: SocketAddr,
        route: ClientRoute,
        len: usize,
        echo: u64,
    ) {
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
                route.protection,
                &mut self.datagram_buf[..end],
            );
        let datagram = std::mem::take(&mut self.datagram_buf);
        self.send(&datagram[..end], addr).await;
        self.datagram_buf = datagram;
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
}
