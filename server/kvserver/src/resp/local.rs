//! The gateway's direct path into its own node's core, for reads: a GET whose shard this
//! node leads (or any READONLY read) is handed to the event loop over a channel instead
//! of crossing the in-process UDP client, its sealing and a datagram to itself.
//!
//! Only reads take this path. They need no session (nothing to apply exactly once), a
//! linearizable one still runs the core's ReadIndex round, and any answer but a value
//! (this node no longer leads, the shard moved) sends the gateway back to the cluster
//! client, which is always correct. Writes keep the client's sessions and retries.

use kv_node::ClientToken;
use kv_shared::proto::{ClientReply, ClientRequest, Outcome};
use kv_shared::ClientId;
use std::collections::HashMap;
use tokio::sync::{mpsc, oneshot};

/// The token the event loop gives the core for the gateway's requests. UDP clients never
/// get it: IPv4 tokens use the low 59 bits, IPv6 tokens count up from `1 << 63`.
pub const LOCAL_TOKEN: ClientToken = ClientToken(u64::MAX);

/// One read for the core and where its answer goes.
#[derive(Debug)]
pub struct LocalRead {
    /// The request as the core takes it (its client id already bound to the
    /// authenticated client's name, like a UDP request's).
    pub request: ClientRequest,
    /// Receives the core's outcome.
    pub answer: oneshot::Sender<Outcome>,
}

/// The gateway's end. One message per read: the event loop runs only once the
/// connections that woke with it have sent theirs, so it still takes them in one turn.
pub type LocalSender = mpsc::UnboundedSender<LocalRead>;

/// The event loop's end: takes the gateway's reads and routes the core's replies to
/// them. Unbounded is bounded here: each connection has at most
/// `CONNECTION_OPS_IN_FLIGHT_MAX` operations out and there are at most
/// `REDIS_CONNECTIONS_MAX` connections; the core refuses past `PENDING_REQUESTS_MAX`.
#[derive(Debug)]
pub struct LocalInbox {
    rx: Option<mpsc::UnboundedReceiver<LocalRead>>,
    waiting: HashMap<(ClientId, u64), oneshot::Sender<Outcome>>,
}

/// A connected pair: the gateway's sender and the event loop's inbox.
pub fn channel() -> (LocalSender, LocalInbox) {
    let (tx, rx) = mpsc::unbounded_channel();
    (
        tx,
        LocalInbox {
            rx: Some(rx),
            waiting: HashMap::new(),
        },
    )
}

impl LocalInbox {
    /// The next read; never resolves once the gateway is gone (or was never started), so
    /// the event loop can always select on it.
    pub async fn next(&mut self) -> LocalRead {
        if let Some(rx) = &mut self.rx {
            if let Some(read) = rx.recv().await {
                return read;
            }
            self.rx = None;
        }
        std::future::pending().await
    }

    /// A read already waiting, if any (never blocks).
    pub fn try_next(&mut self) -> Option<LocalRead> {
        self.rx.as_mut()?.try_recv().ok()
    }

    /// Notes where the answer to `read` goes and returns the request for the core.
    pub fn take(&mut self, read: LocalRead) -> ClientRequest {
        let r = read.request;
        self.waiting.insert((r.client, r.seq), read.answer);
        r
    }

    /// Delivers `reply` if it answers one of the gateway's reads.
    pub fn answer(&mut self, reply: ClientReply) {
        if let Some(tx) = self.waiting.remove(&(reply.client, reply.seq)) {
            // A connection that closed meanwhile no longer waits: nothing to do.
            let _ = tx.send(reply.outcome);
        }
    }

    /// Reads handed to the core and not yet answered.
    pub fn pending(&self) -> usize {
        self.waiting.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use kv_shared::proto::Op;

    fn read(client: u64, seq: u64) -> (LocalRead, oneshot::Receiver<Outcome>) {
        let (answer, rx) = oneshot::channel();
        let request = ClientRequest {
            client: ClientId(client),
            seq,
            epoch: 0,
            op: Op::Get {
                key: Bytes::from_static(b"k"),
                stale: false,
            },
        };
        (LocalRead { request, answer }, rx)
    }

    #[tokio::test]
    async fn replies_reach_the_read_they_answer() {
        let (tx, mut inbox) = channel();
        let (a, mut rx_a) = read(7, 1);
        let (b, rx_b) = read(7, 2);
        tx.send(a).unwrap();
        tx.send(b).unwrap();
        let first = inbox.next().await;
        let second = inbox.try_next().expect("the second read waits already");
        let reqs = [inbox.take(first), inbox.take(second)];
        assert_eq!(inbox.pending(), 2);
        let reply = |seq, v: &'static [u8]| ClientReply {
            client: reqs[0].client,
            seq,
            outcome: Outcome::Value(Some(Bytes::from_static(v))),
        };
        inbox.answer(reply(2, b"two"));
        assert_eq!(
            rx_b.await.unwrap(),
            Outcome::Value(Some(Bytes::from_static(b"two")))
        );
        assert!(rx_a.try_recv().is_err(), "seq 1 is not answered yet");
        // A reply to someone else's request is not delivered to this one.
        inbox.answer(ClientReply {
            client: ClientId(8),
            seq: 1,
            outcome: Outcome::Value(None),
        });
        assert!(rx_a.try_recv().is_err());
        inbox.answer(reply(1, b"one"));
        assert_eq!(
            rx_a.await.unwrap(),
            Outcome::Value(Some(Bytes::from_static(b"one")))
        );
        assert_eq!(inbox.pending(), 0);
    }

    #[tokio::test]
    async fn a_closed_gateway_leaves_the_inbox_waiting() {
        let (tx, mut inbox) = channel();
        drop(tx);
        let waited = tokio::time::timeout(std::time::Duration::from_millis(20), inbox.next()).await;
        assert!(
            waited.is_err(),
            "next() must not return once the sender is gone"
        );
        assert!(inbox.try_next().is_none());
    }
}
