//! The client requests and replies a load spends its time on (gets and puts, and their
//! `Value` and `Done` answers) decoded and encoded by hand, byte for byte as postcard
//! does: serde's generic walk over every field was a large part of what a request cost
//! the server. Every other operation and outcome goes through postcard, field by field
//! beside the hand-written ones; the tests hold both directions to postcard.

use super::{ClientReply, ClientRequest, Op, Outcome};
use crate::cursor::{Reader, Writer};
use crate::varint;
use crate::wire::{self, WireError};
use crate::ClientId;
use bytes::Bytes;

// postcard writes an enum's variant as its index in declaration order: `Op`'s and
// `Outcome`'s (the tests fail if the declarations move).
const GET: u32 = 0;
const PUT: u32 = 1;
const VALUE: u64 = 0;
const DONE: u64 = 1;

/// The smallest request: client, seq, epoch and variant, a byte each (`Status`).
const REQUEST_BYTES_MIN: usize = 4;

/// Decodes the payload of a client request datagram, a postcard `Vec<ClientRequest>`:
/// gets and puts by hand, everything else, and any payload the hand-written reader
/// declines, by postcard, so the result is postcard's.
pub fn decode_requests(payload: &[u8]) -> Result<Vec<ClientRequest>, WireError> {
    match decode_by_hand(payload) {
        Some(reqs) => Ok(reqs),
        None => wire::decode_value(payload),
    }
}

fn decode_by_hand(payload: &[u8]) -> Option<Vec<ClientRequest>> {
    let mut r = Reader::new(payload);
    let count = r.count()?;
    let mut reqs = Vec::with_capacity(r.capacity_for(count, REQUEST_BYTES_MIN));
    for _ in 0..count {
        let client = ClientId(r.u64()?);
        let seq = r.u64()?;
        let epoch = r.u64()?;
        let before_variant = r;
        let op = match r.u32()? {
            GET => {
                let key = r.bytes()?;
                Op::Get {
                    stale: r.bool()?,
                    key: Bytes::copy_from_slice(key),
                }
            }
            PUT => {
                let key = r.bytes()?;
                let value = r.bytes()?;
                Op::Put {
                    key: Bytes::copy_from_slice(key),
                    value: Bytes::copy_from_slice(value),
                }
            }
            _ => {
                r = before_variant;
                r.postcard()?
            }
        };
        reqs.push(ClientRequest {
            client,
            seq,
            epoch,
            op,
        });
    }
    Some(reqs)
}

/// Bytes of `reply`'s postcard encoding; `Value` and `Done` replies counted by hand.
pub fn reply_bytes(reply: &ClientReply) -> usize {
    let head = varint::len(reply.client.0) + varint::len(reply.seq);
    head + match &reply.outcome {
        Outcome::Done => 1,
        Outcome::Value(None) => 2,
        Outcome::Value(Some(v)) => 2 + varint::len(v.len() as u64) + v.len(),
        outcome => crate::pack::encoded_bytes(outcome),
    }
}

/// Writes postcard's encoding of `replies` (as a `Vec<ClientReply>`) at the start of
/// `out` and returns its length, or `None` if it does not fit; `Value` and `Done`
/// replies are written by hand.
pub fn encode_replies(replies: &[&ClientReply], out: &mut [u8]) -> Option<usize> {
    let mut w = Writer::new(out);
    w.varint(replies.len() as u64)?;
    for reply in replies {
        w.varint(reply.client.0)?;
        w.varint(reply.seq)?;
        match &reply.outcome {
            Outcome::Done => w.varint(DONE)?,
            Outcome::Value(value) => {
                w.varint(VALUE)?;
                match value {
                    None => w.bool(false)?,
                    Some(v) => {
                        w.bool(true)?;
                        w.bytes(v)?;
                    }
                }
            }
            outcome => w.postcard(outcome)?,
        }
    }
    Some(w.at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::ClientError;
    use crate::{NodeId, ShardId};
    use proptest::prelude::*;

    /// Integers of every varint length.
    fn int() -> impl Strategy<Value = u64> {
        (any::<u64>(), 0u32..64).prop_map(|(n, shift)| n >> shift)
    }

    fn data() -> impl Strategy<Value = Bytes> {
        proptest::collection::vec(any::<u8>(), 0..40).prop_map(Bytes::from)
    }

    /// Gets and puts mostly, and some of the operations postcard alone handles.
    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (data(), data()).prop_map(|(key, value)| Op::Put { key, value }),
            4 => (data(), any::<bool>()).prop_map(|(key, stale)| Op::Get { key, stale }),
            1 => data().prop_map(|key| Op::Delete { key }),
            1 => (data(), proptest::option::of(data()), data())
                .prop_map(|(key, expected, new)| Op::Cas { key, expected, new }),
            1 => (data(), any::<i64>()).prop_map(|(key, delta)| Op::Incr { key, delta }),
            1 => Just(Op::Status),
        ]
    }

    fn request() -> impl Strategy<Value = ClientRequest> {
        (int(), int(), int(), op()).prop_map(|(client, seq, epoch, op)| ClientRequest {
            client: ClientId(client),
            seq,
            epoch,
            op,
        })
    }

    fn outcome() -> impl Strategy<Value = Outcome> {
        prop_oneof![
            4 => Just(Outcome::Done),
            4 => proptest::option::of(data()).prop_map(Outcome::Value),
            1 => any::<i64>().prop_map(Outcome::Integer),
            1 => proptest::option::of(data()).prop_map(|current| Outcome::CasMismatch { current }),
            1 => (any::<u32>(), proptest::option::of(int())).prop_map(|(shard, leader)| {
                Outcome::Error(ClientError::NotLeader {
                    shard: ShardId(shard),
                    leader: leader.map(NodeId),
                })
            }),
        ]
    }

    fn reply() -> impl Strategy<Value = ClientReply> {
        (int(), int(), outcome()).prop_map(|(client, seq, outcome)| ClientReply {
            client: ClientId(client),
            seq,
            outcome,
        })
    }

    fn postcard_requests(payload: &[u8]) -> Option<Vec<ClientRequest>> {
        postcard::from_bytes(payload).ok()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(5_000))]

        #[test]
        fn requests_are_read_as_postcard_reads_them_also_cut_altered_or_extended(
            reqs in proptest::collection::vec(request(), 0..6),
            cut: prop::sample::Index,
            flip: prop::sample::Index,
            bit in 0u8..8,
            extra: u8,
        ) {
            let mut bytes = postcard::to_stdvec(&reqs).unwrap();
            prop_assert_eq!(decode_by_hand(&bytes), Some(reqs.clone()));
            prop_assert_eq!(decode_requests(&bytes).ok(), Some(reqs));
            let cut_short = &bytes[..cut.index(bytes.len())];
            prop_assert_eq!(decode_by_hand(cut_short), postcard_requests(cut_short));
            let i = flip.index(bytes.len());
            bytes[i] ^= 1 << bit;
            prop_assert_eq!(decode_by_hand(&bytes), postcard_requests(&bytes));
            bytes.push(extra);
            prop_assert_eq!(decode_by_hand(&bytes), postcard_requests(&bytes));
        }

        #[test]
        fn random_bytes_are_read_as_postcard_reads_them(
            bytes in proptest::collection::vec(
                prop_oneof![2 => 0u8..4, 1 => 0x80u8.., 1 => any::<u8>()], 0..48),
        ) {
            prop_assert_eq!(decode_by_hand(&bytes), postcard_requests(&bytes));
        }

        #[test]
        fn replies_are_written_and_counted_as_postcard_writes_them(
            replies in proptest::collection::vec(reply(), 0..6),
        ) {
            let refs: Vec<&ClientReply> = replies.iter().collect();
            let expected = postcard::to_stdvec(&refs).unwrap();
            let counted: usize = replies.iter().map(reply_bytes).sum();
            prop_assert_eq!(crate::pack::count_prefix_bytes(replies.len()) + counted, expected.len());
            for r in &replies {
                prop_assert_eq!(reply_bytes(r), crate::pack::encoded_bytes(r));
            }
            let mut out = vec![0u8; expected.len() + 20];
            prop_assert_eq!(encode_replies(&refs, &mut out), Some(expected.len()));
            prop_assert_eq!(&out[..expected.len()], &expected[..]);
            let mut short = vec![0u8; expected.len() - 1];
            prop_assert_eq!(encode_replies(&refs, &mut short), None);
        }
    }
}
