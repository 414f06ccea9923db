//! The gateway's direct path into its own node's core: a GET whose shard this node leads
//! or follows (or any READONLY read), and a write whose shard this node leads, is handed
//! to the event loop over a channel instead of crossing the in-process UDP client, its
//! sealing and a datagram to itself.
//!
//! A read needs no session (nothing to apply exactly once); a linearizable one still runs
//! the core's ReadIndex round. A write runs under a sequence number its cluster-client
//! session set aside for it ([`kvcli::Session::reserve`]), under the session's own
//! bound id: the core's session table sees exactly the request the client would have
//! sent. Any answer but a value or an applied write (this node no longer leads, the shard
//! moved, the core timed out, the event loop is gone) sends the operation back to the
//! cluster client, which is always correct: a read as a new read, a write as a retry
//! under the same sequence number ([`kvcli::Session::execute_reserved`]), which the
//! shard's session table applies at most once whichever attempt reaches the log.

use super::answer::{Answerer, Slots, Waiter};
use kv_node::ClientToken;
use kv_shared::proto::{ClientError, ClientReply, ClientRequest, Op, Outcome};
use kv_shared::ClientId;
use kvcli::{Reserved, Response, Session};
use std::collections::HashMap;
use tokio::sync::mpsc;

/// The token the event loop gives the core for the gateway's requests. UDP clients never
/// get it: IPv4 tokens use the low 59 bits, IPv6 tokens count up from `1 << 63`.
pub const LOCAL_TOKEN: ClientToken = ClientToken(u64::MAX);

/// One request for the core and where its answer goes.
#[derive(Debug)]
pub struct LocalRequest {
    /// The request as the core takes it (its client id already bound to the
    /// authenticated client's name, like a UDP request's).
    pub request: ClientRequest,
    /// Receives the core's outcome.
    pub answer: Answerer,
}

/// The gateway's end. One message per request: the event loop runs only once the
/// connections that woke with it have sent theirs, so it still takes them in one turn.
pub type LocalSender = mpsc::UnboundedSender<LocalRequest>;

/// The event loop's end: takes the gateway's requests and routes the core's replies to
/// them. Unbounded is bounded here: each connection has at most
/// `CONNECTION_OPS_IN_FLIGHT_MAX` operations out and there are at most
/// `REDIS_CONNECTIONS_MAX` connections; the core refuses past `PENDING_REQUESTS_MAX`.
#[derive(Debug)]
pub struct LocalInbox {
    rx: Option<mpsc::UnboundedReceiver<LocalRequest>>,
    waiting: HashMap<(ClientId, u64), Answerer>,
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
    /// The next request; never resolves once the gateway is gone (or was never started), so
    /// the event loop can always select on it.
    pub async fn next(&mut self) -> LocalRequest {
        if let Some(rx) = &mut self.rx {
            if let Some(read) = rx.recv().await {
                return read;
            }
            self.rx = None;
        }
        std::future::pending().await
    }

    /// A request already waiting, if any (never blocks).
    pub fn try_next(&mut self) -> Option<LocalRequest> {
        self.rx.as_mut()?.try_recv().ok()
    }

    /// Notes where the answer to `local` goes and returns the request for the core.
    pub fn take(&mut self, local: LocalRequest) -> ClientRequest {
        let r = local.request;
        self.waiting.insert((r.client, r.seq), local.answer);
        r
    }

    /// Delivers `reply` if it answers one of the gateway's requests.
    pub fn answer(&mut self, reply: ClientReply) {
        if let Some(answerer) = self.waiting.remove(&(reply.client, reply.seq)) {
            answerer.send(reply.outcome);
        }
    }

    /// Requests handed to the core and not yet answered.
    pub fn pending(&self) -> usize {
        self.waiting.len()
    }
}

/// A write handed to the core, with the session it runs under until it is settled.
pub struct LocalWrite {
    answer: Waiter,
    op: Op,
    session: Session,
    reserved: Reserved,
}

/// Hands write `op` to the core over `local` under the sequence number `reserved` that
/// `session` set aside for it ([`Session::reserve`]), routed by replica-set `epoch`, its
/// answer to a slot of `slots`; [`LocalWrite::finish`] takes the answer.
pub fn send_write(
    local: &LocalSender,
    slots: &mut Slots,
    session: Session,
    reserved: Reserved,
    op: Op,
    epoch: u64,
) -> LocalWrite {
    let (answer, rx) = slots.pair();
    let request = reserved.request(op.clone(), epoch);
    // If the event loop is gone the receiver fails and the write falls back.
    let _ = local.send(LocalRequest { request, answer });
    LocalWrite {
        answer: rx,
        op,
        session,
        reserved,
    }
}

impl LocalWrite {
    /// The core's answer if it applied the write; else the write run through the cluster
    /// client under its reserved sequence number. Returns the session too, free again,
    /// and the answer's slot to `slots`.
    pub async fn finish(self, slots: &mut Slots) -> (Session, Result<Response, kvcli::Error>) {
        let LocalWrite {
            answer,
            op,
            mut session,
            reserved,
        } = self;
        let maybe_applied = match slots.settle(answer).await {
            Some(outcome) => match Response::of_outcome(&outcome) {
                Some(response) => return (session, Ok(response)),
                None => may_have_been_applied(&outcome),
            },
            // The event loop stopped with the write in its hands: nothing is known.
            None => true,
        };
        let r = session.execute_reserved(op, reserved, maybe_applied).await;
        (session, r)
    }
}

/// True if the core's answer `outcome` to a write leaves open whether it was applied: it
/// may have been proposed before the core lost its leadership, lost its quorum or timed
/// out, and that entry may still commit. Every other error is a refusal or a final
/// answer that changed nothing.
fn may_have_been_applied(outcome: &Outcome) -> bool {
    matches!(
        outcome,
        Outcome::Error(
            ClientError::NotLeader { .. }
                | ClientError::NoQuorum { .. }
                | ClientError::Timeout { .. }
        )
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use kv_shared::proto::Op;

    fn read(slots: &mut Slots, client: u64, seq: u64) -> (LocalRequest, Waiter) {
        let (answer, rx) = slots.pair();
        let request = ClientRequest {
            client: ClientId(client),
            seq,
            epoch: 0,
            op: Op::Get {
                key: Bytes::from_static(b"k"),
                stale: false,
            },
        };
        (LocalRequest { request, answer }, rx)
    }

    #[tokio::test]
    async fn replies_reach_the_read_they_answer() {
        let (tx, mut inbox) = channel();
        let mut slots = Slots::default();
        let (a, rx_a) = read(&mut slots, 7, 1);
        let (b, rx_b) = read(&mut slots, 7, 2);
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
            rx_b.wait().await,
            Some(Outcome::Value(Some(Bytes::from_static(b"two"))))
        );
        assert!(!rx_a.settled(), "seq 1 is not answered yet");
        // A reply to someone else's request is not delivered to this one.
        inbox.answer(ClientReply {
            client: ClientId(8),
            seq: 1,
            outcome: Outcome::Value(None),
        });
        assert!(!rx_a.settled());
        inbox.answer(reply(1, b"one"));
        assert_eq!(
            rx_a.wait().await,
            Some(Outcome::Value(Some(Bytes::from_static(b"one"))))
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
