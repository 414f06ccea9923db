//! kvcli's receive task: every datagram from the nodes opened (header, tag, replay
//! window), its replies decoded (`kv_shared::proto::decode_replies`, values left in the
//! datagram) and handed to their sessions by client id; and the forms a reply takes on
//! its way there.

use crate::client::{bump, Response, Shared};
use bytes::BytesMut;
use kv_shared::auth::{self, ReplayWindow};
use kv_shared::proto::{decode_replies, ClientError, DecodedReply, NodeStatus, Outcome};
use kv_shared::wire::{self, Kind};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Instant;

/// Receive buffer: any datagram raftkv may send fits.
const RECV_BUFFER_BYTES: usize = 65_536;

/// A reply's outcome as a session takes it: the answers of a completed request inline,
/// the rare large ones boxed. An `Outcome` is as large as its `Status` variant, a few
/// hundred bytes, and each of the half dozen moves of a reply on its way to its session
/// copied all of it.
#[derive(Debug)]
pub(crate) enum Answer {
    /// The request completed.
    Done(Response),
    /// The request was not (or may not have been) carried out.
    Error(Box<ClientError>),
    /// The node's status table.
    Status(Box<NodeStatus>),
}

impl From<Outcome> for Answer {
    // Inlined into the reply decoder, which builds each common reply's `Outcome` only to
    // have it turned into an `Answer` here.
    #[inline]
    fn from(outcome: Outcome) -> Answer {
        match outcome {
            Outcome::Value(v) => Answer::Done(Response::Value(v)),
            Outcome::Done => Answer::Done(Response::Done),
            Outcome::CasOk => Answer::Done(Response::CasOk),
            Outcome::CasMismatch { current } => Answer::Done(Response::CasMismatch { current }),
            Outcome::Integer(n) => Answer::Done(Response::Integer(n)),
            Outcome::Error(e) => Answer::Error(Box::new(e)),
            Outcome::Status(s) => Answer::Status(Box::new(s)),
        }
    }
}

/// What the receiver hands a session.
pub(crate) struct Incoming {
    pub(crate) from: SocketAddr,
    pub(crate) seq: u64,
    pub(crate) outcome: Answer,
    /// 0 for a reply; else the notice that the attempt armed with this mark expired
    /// ([`crate::watchdog::Watchdog::arm`]).
    pub(crate) expired: u64,
    /// When the reply's datagram arrived (or the notice was sent).
    pub(crate) at: Instant,
}

pub(crate) async fn receive_loop(shared: std::sync::Weak<Shared>) {
    // Datagrams are received into one buffer in turn and a reply's value is a slice of
    // its datagram: a value costs no allocation and copy of its own, and the buffer is
    // reused in place once the values of earlier datagrams are dropped.
    let mut buf = BytesMut::new();
    // One window per node (by id); only replies whose tag verified create one.
    let mut windows: HashMap<u64, ReplayWindow> = HashMap::new();
    // A datagram's replies, decoded all before any is handed over; kept between datagrams.
    let mut replies: Vec<DecodedReply<Answer>> = Vec::new();
    loop {
        let Some(s) = shared.upgrade() else { return };
        buf.clear();
        buf.reserve(RECV_BUFFER_BYTES);
        let from = match s.socket.recv_buf_from(&mut buf).await {
            Ok((_, from)) => from,
            // ICMP errors surface here on some systems; the retry logic handles the loss.
            Err(_) => continue,
        };
        // One clock read per datagram: the time its replies arrived, which a session
        // reports as its request's completion.
        let at = Instant::now();
        let mut datagram = buf.split();
        let Some(body) = open_replies(&s, &mut datagram, from, &mut windows) else {
            bump(&s.counters.datagrams_dropped);
            continue;
        };
        let body = datagram.freeze().slice(body);
        if decode_replies(&body, &mut replies).is_none() {
            bump(&s.counters.datagrams_dropped);
            continue;
        }
        drop(body);
        if !replies.is_empty() {
            bump(&s.counters.reply_datagrams);
        }
        let sessions = s.sessions.lock().expect("sessions lock");
        for (client, seq, outcome) in replies.drain(..) {
            bump(&s.counters.replies_received);
            if let Some(mailbox) = sessions.get(&client) {
                mailbox.tx.send(Incoming {
                    from,
                    seq,
                    outcome,
                    expired: 0,
                    at,
                });
            }
        }
    }
}

/// Where in `datagram` its body (its encoded replies) lies, if its header, tag and stamp
/// are good. A hello (a reply whose stamp echoes a ticket, with no replies) sends again,
/// under the ticket, the requests that went to its node without one.
fn open_replies(
    s: &Shared,
    datagram: &mut [u8],
    from: SocketAddr,
    windows: &mut HashMap<u64, ReplayWindow>,
) -> Option<std::ops::Range<usize>> {
    let (header, _) = wire::decode(datagram, s.cluster_id).ok()?;
    if header.kind != Kind::ClientReplies {
        return None;
    }
    let start = datagram.as_ptr() as usize;
    let opened = auth::open(datagram, &header, std::slice::from_ref(&s.replies)).ok()?;
    let stamp = opened.stamp;
    // The body is a part of the datagram (opened in place).
    let offset = opened.body.as_ptr() as usize - start;
    let body = offset..offset + opened.body.len();
    let window = windows.entry(header.sender).or_default();
    window.accept(stamp.incarnation, stamp.counter).ok()?;
    if stamp.echo != 0 {
        let again = s
            .tickets
            .lock()
            .expect("tickets lock")
            .learn(from, stamp.echo);
        for request in again {
            let _ = s.outbox.push(from, |out| {
                out.extend_from_slice(&request);
                Ok::<(), ()>(())
            });
        }
    }
    Some(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use kv_shared::proto::ClientReply;
    use kv_shared::{ClientId, NodeId, ShardId};

    #[test]
    fn replies_reach_a_session_as_the_answers_their_outcomes_say() {
        let outcomes = [
            Outcome::Done,
            Outcome::Value(Some(Bytes::from_static(b"v"))),
            Outcome::Value(None),
            Outcome::CasOk,
            Outcome::CasMismatch { current: None },
            Outcome::Integer(-300),
            Outcome::Error(ClientError::NotLeader {
                shard: ShardId(3),
                leader: Some(NodeId(2)),
            }),
        ];
        let replies: Vec<ClientReply> = outcomes
            .into_iter()
            .enumerate()
            .map(|(i, outcome)| ClientReply {
                client: ClientId(1000 + i as u64),
                seq: 1 << (8 * i),
                outcome,
            })
            .collect();
        let body = Bytes::from(postcard::to_stdvec(&replies).unwrap());
        let mut out: Vec<DecodedReply<Answer>> = Vec::new();
        assert_eq!(decode_replies(&body, &mut out), Some(()));
        assert_eq!(out.len(), replies.len());
        for ((client, seq, answer), want) in out.iter().zip(&replies) {
            assert_eq!((*client, *seq), (want.client, want.seq));
            let as_outcome = match answer {
                Answer::Done(r) => Response::of_outcome(&want.outcome) == Some(r.clone()),
                Answer::Error(e) => want.outcome == Outcome::Error((**e).clone()),
                Answer::Status(_) => false,
            };
            assert!(as_outcome, "{answer:?} for {:?}", want.outcome);
        }
    }
}
