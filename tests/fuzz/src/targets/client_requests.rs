//! Client request payloads as kvserver decodes them (a postcard `Vec<ClientRequest>`, gets
//! and puts read by hand, `kv_shared::proto::decode_requests`), fed
//! to the node core of a single-node cluster that leads its shards. Whatever decodes must
//! re-encode to the same requests (also by kvcli's encoder), and every request gets
//! exactly one reply within the request timeout. The same payloads, read as reply bodies
//! by kvcli's decoder (`kv_shared::proto::decode_replies`), must decode as postcard
//! decodes them, and the node's replies must come back from kvserver's encoder through
//! kvcli's decoder unchanged.

use crate::input::{push_chunk, Input};
use crate::targets::node::NodeHarness;
use bytes::Bytes;
use kv_node::ClientToken;
use kv_shared::proto::{
    decode_replies, encode_replies, encode_request, ClientReply, ClientRequest, DecodedReply, Op,
    Outcome,
};
use kv_shared::wire::decode_value;
use kv_shared::ClientId;

/// Election timeout range of the node, in ticks: short, because every input starts a
/// node and waits for it to lead (quiescence needs the minimum above two heartbeats).
const ELECTION_TICKS_MIN: u32 = 4;
const ELECTION_TICKS_MAX: u32 = 6;
/// Ticks until the single node surely leads every shard.
const ELECTION_TICKS: u32 = 2 * ELECTION_TICKS_MAX;
/// The node's request timeout, in ticks.
const REQUEST_TIMEOUT_TICKS: u32 = 10;
/// Ticks after which every request must have been answered.
const ANSWER_TICKS: u32 = REQUEST_TIMEOUT_TICKS + 4;
/// Most payloads one input delivers.
const PAYLOADS_MAX: u64 = 8;

pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let mut node = NodeHarness::new(1, |c| {
        c.raft.election_ticks_min = ELECTION_TICKS_MIN;
        c.raft.election_ticks_max = ELECTION_TICKS_MAX;
        c.request_timeout_ticks = REQUEST_TIMEOUT_TICKS;
    });
    node.tick(ELECTION_TICKS);
    let mut sent = Vec::new();
    for token in 1..=PAYLOADS_MAX {
        if input.is_empty() {
            break;
        }
        let payload = input.chunk();
        // kvcli's reply reader (done and values by hand) must agree with postcard's.
        assert_eq!(
            hand_replies(payload),
            decode_value::<Vec<ClientReply>>(payload).ok().map(|rs| rs
                .into_iter()
                .map(|r| (r.client, r.seq, r.outcome))
                .collect())
        );
        // kvserver's reader (gets and puts by hand) must agree with postcard's.
        let decoded = kv_shared::proto::decode_requests(payload).ok();
        assert_eq!(decoded, decode_value::<Vec<ClientRequest>>(payload).ok());
        let Some(requests) = decoded else {
            continue;
        };
        let again = postcard::to_stdvec(&requests).expect("decoded requests encode");
        assert_eq!(
            decode_value::<Vec<ClientRequest>>(&again).ok().as_ref(),
            Some(&requests)
        );
        let mut by_kvcli = postcard::to_stdvec(&requests.len()).expect("a count encodes");
        for r in &requests {
            encode_request(r, &mut by_kvcli);
        }
        assert_eq!(
            by_kvcli, again,
            "kvcli's encoder writes what postcard writes"
        );
        sent.push((ClientToken(token), requests.len()));
        for r in requests {
            node.core().on_client_request(ClientToken(token), r);
        }
        node.pump();
        node.tick(u32::from(input.u8() % 4));
    }
    node.tick(ANSWER_TICKS);
    for (token, requests) in sent {
        let replies: Vec<&ClientReply> = node
            .replies
            .iter()
            .filter(|(t, _)| *t == token)
            .map(|(_, r)| r)
            .collect();
        assert_eq!(
            replies.len(),
            requests,
            "token {token:?}: {requests} requests, {} replies",
            replies.len()
        );
        // kvserver's encoder to kvcli's decoder: the replies as they were.
        let mut body = vec![0u8; postcard::to_stdvec(&replies).expect("replies encode").len()];
        let len = encode_replies(&replies, &mut body).expect("the replies fit their length");
        let back: Vec<DecodedReply<Outcome>> = replies
            .iter()
            .map(|r| (r.client, r.seq, r.outcome.clone()))
            .collect();
        assert_eq!(hand_replies(&body[..len]), Some(back));
    }
}

/// kvcli's reading of `body`, each outcome as it is.
fn hand_replies(body: &[u8]) -> Option<Vec<DecodedReply<Outcome>>> {
    let mut out = Vec::new();
    decode_replies(&Bytes::copy_from_slice(body), &mut out).map(|()| out)
}

pub fn seeds() -> Vec<Vec<u8>> {
    let b = |s: &'static str| Bytes::from_static(s.as_bytes());
    let req = |seq, op| ClientRequest {
        client: ClientId(5),
        seq,
        epoch: 0,
        op,
    };
    let batches = [
        vec![
            req(
                1,
                Op::Put {
                    key: b("a"),
                    value: b("1"),
                },
            ),
            req(
                2,
                Op::Get {
                    key: b("a"),
                    stale: false,
                },
            ),
        ],
        vec![
            req(
                2,
                Op::Put {
                    key: b("a"),
                    value: b("1"),
                },
            ),
            req(
                3,
                Op::Cas {
                    key: b("a"),
                    expected: Some(b("1")),
                    new: b("2"),
                },
            ),
            req(4, Op::Delete { key: b("a") }),
            req(
                4,
                Op::Get {
                    key: b("a"),
                    stale: true,
                },
            ),
            req(5, Op::Status),
        ],
    ];
    let mut seed = Vec::new();
    for batch in &batches {
        push_chunk(
            &mut seed,
            &postcard::to_stdvec(batch).expect("requests encode"),
        );
        seed.push(1);
    }
    // A reply body, for the reply reader: each of its by-hand outcomes and one it leaves
    // to postcard.
    let reply = |seq, outcome| ClientReply {
        client: ClientId(5),
        seq,
        outcome,
    };
    let replies = [
        reply(1, Outcome::Done),
        reply(2, Outcome::Value(Some(b("1")))),
        reply(3, Outcome::Value(None)),
        reply(4, Outcome::Integer(-2)),
    ];
    let mut replies_seed = Vec::new();
    push_chunk(
        &mut replies_seed,
        &postcard::to_stdvec(&replies).expect("replies encode"),
    );
    vec![seed, replies_seed]
}
