//! The client protocol's four hand-written halves held to postcard: each encoder writes
//! what postcard writes, each decoder reads what postcard reads (also cut, altered,
//! extended and random payloads), and requests and replies survive the round trip.

use super::*;
use crate::proto::ClientError;
use crate::{NodeId, ShardId};
use proptest::prelude::*;

/// Integers of every varint length.
fn int() -> impl Strategy<Value = u64> {
    (any::<u64>(), 0u32..64).prop_map(|(n, shift)| n >> shift)
}

/// Mostly short, sometimes with a length of two or three varint bytes.
fn data() -> impl Strategy<Value = Bytes> {
    prop_oneof![
        8 => proptest::collection::vec(any::<u8>(), 0..40),
        1 => proptest::collection::vec(any::<u8>(), 100..300),
        1 => proptest::collection::vec(any::<u8>(), 16_380..16_400),
    ]
    .prop_map(Bytes::from)
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
        1 => (data(), proptest::option::of(data())).prop_map(|(key, new)| Op::Swap { key, new }),
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
        1 => Just(Outcome::CasOk),
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

/// Bytes that make varints, bools and variant indexes of every kind, valid or not.
fn noise() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(
        prop_oneof![2 => 0u8..4, 1 => 0x80u8.., 1 => any::<u8>()],
        0..48,
    )
}

/// A request datagram's payload as kvcli writes it: a count, then each request.
fn request_payload(reqs: &[ClientRequest]) -> Vec<u8> {
    let mut out = vec![0u8; varint::BYTES_MAX];
    let count_bytes = varint::write(reqs.len() as u64, &mut out);
    out.truncate(count_bytes);
    for r in reqs {
        encode_request(r, &mut out);
    }
    out
}

fn postcard_requests(payload: &[u8]) -> Option<Vec<ClientRequest>> {
    postcard::from_bytes(payload).ok()
}

/// What kvcli's reply decoder makes of `body`, its outcomes kept as they are.
fn hand_replies(body: &[u8]) -> Option<Vec<DecodedReply<Outcome>>> {
    let mut out = vec![(ClientId(9), 9, Outcome::CasOk)];
    decode_replies(&Bytes::copy_from_slice(body), &mut out).map(|()| out)
}

fn postcard_replies(body: &[u8]) -> Option<Vec<DecodedReply<Outcome>>> {
    let replies: Vec<ClientReply> = postcard::from_bytes(body).ok()?;
    Some(
        replies
            .into_iter()
            .map(|r| (r.client, r.seq, r.outcome))
            .collect(),
    )
}

/// `bytes` cut at `cut`, with one bit flipped at `flip`, and with a byte added: each must
/// decode as postcard decodes it.
fn damaged(
    bytes: &[u8],
    cut: prop::sample::Index,
    flip: prop::sample::Index,
    bit: u8,
    extra: u8,
) -> [Vec<u8>; 3] {
    let cut_short = bytes[..cut.index(bytes.len())].to_vec();
    let mut flipped = bytes.to_vec();
    if !flipped.is_empty() {
        let i = flip.index(flipped.len());
        flipped[i] ^= 1 << bit;
    }
    let mut extended = flipped.clone();
    extended.push(extra);
    [cut_short, flipped, extended]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3_000))]

    #[test]
    fn requests_are_written_as_postcard_writes_them_and_read_back(
        reqs in proptest::collection::vec(request(), 0..6),
    ) {
        for r in &reqs {
            // Appended after what the buffer holds.
            let mut out = vec![9u8];
            encode_request(r, &mut out);
            prop_assert_eq!(out[0], 9);
            prop_assert_eq!(&out[1..], &postcard::to_stdvec(r).unwrap()[..]);
        }
        let payload = request_payload(&reqs);
        prop_assert_eq!(&payload, &postcard::to_stdvec(&reqs).unwrap());
        prop_assert_eq!(decode_requests_by_hand(&payload), Some(reqs.clone()));
        prop_assert_eq!(decode_requests(&payload).ok(), Some(reqs));
    }

    #[test]
    fn requests_are_read_as_postcard_reads_them_also_cut_altered_or_extended(
        reqs in proptest::collection::vec(request(), 0..6),
        cut: prop::sample::Index,
        flip: prop::sample::Index,
        bit in 0u8..8,
        extra: u8,
    ) {
        let payload = request_payload(&reqs);
        for bytes in damaged(&payload, cut, flip, bit, extra) {
            prop_assert_eq!(decode_requests_by_hand(&bytes), postcard_requests(&bytes));
            prop_assert_eq!(decode_requests(&bytes).ok(), postcard_requests(&bytes));
        }
    }

    #[test]
    fn replies_are_written_and_counted_as_postcard_writes_them_and_read_back(
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
        let back: Vec<DecodedReply<Outcome>> =
            replies.into_iter().map(|r| (r.client, r.seq, r.outcome)).collect();
        prop_assert_eq!(hand_replies(&out[..expected.len()]), Some(back));
    }

    #[test]
    fn replies_are_read_as_postcard_reads_them_also_cut_altered_or_extended(
        replies in proptest::collection::vec(reply(), 0..6),
        cut: prop::sample::Index,
        flip: prop::sample::Index,
        bit in 0u8..8,
        extra: u8,
    ) {
        let body = postcard::to_stdvec(&replies).unwrap();
        prop_assert_eq!(hand_replies(&body), postcard_replies(&body));
        for bytes in damaged(&body, cut, flip, bit, extra) {
            prop_assert_eq!(hand_replies(&bytes), postcard_replies(&bytes));
        }
    }

    #[test]
    fn random_bytes_are_read_as_postcard_reads_them(bytes in noise()) {
        prop_assert_eq!(decode_requests_by_hand(&bytes), postcard_requests(&bytes));
        prop_assert_eq!(hand_replies(&bytes), postcard_replies(&bytes));
    }
}

#[test]
fn a_decoded_value_is_a_slice_of_its_datagram_not_a_copy() {
    let replies = vec![ClientReply {
        client: ClientId(7),
        seq: 1,
        outcome: Outcome::Value(Some(Bytes::from_static(b"the value"))),
    }];
    let body = Bytes::from(postcard::to_stdvec(&replies).unwrap());
    let mut out: Vec<DecodedReply<Outcome>> = Vec::new();
    assert_eq!(decode_replies(&body, &mut out), Some(()));
    let Outcome::Value(Some(value)) = &out[0].2 else {
        panic!("{:?}", out[0]);
    };
    assert_eq!(&value[..], b"the value");
    assert!(
        body.as_ptr_range().contains(&value.as_ptr()),
        "the value points into the body"
    );
}
