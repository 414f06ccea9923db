//! Client request payloads as kvserver decodes them (a postcard `Vec<ClientRequest>`, gets
//! and puts read by hand, `kv_shared::proto::decode_requests`), fed
//! to the node core of a single-node cluster that leads its shards. Whatever decodes must
//! re-encode to the same requests, and every request gets exactly one reply within the
//! request timeout.

use crate::input::{push_chunk, Input};
use crate::targets::node::NodeHarness;
use bytes::Bytes;
use kv_node::ClientToken;
use kv_shared::proto::{ClientRequest, Op};
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
        sent.push((ClientToken(token), requests.len()));
        for r in requests {
            node.core().on_client_request(ClientToken(token), r);
        }
        node.pump();
        node.tick(u32::from(input.u8() % 4));
    }
    node.tick(ANSWER_TICKS);
    for (token, requests) in sent {
        let replies = node.replies.iter().filter(|(t, _)| *t == token).count();
        assert_eq!(
            replies, requests,
            "token {token:?}: {requests} requests, {replies} replies"
        );
    }
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
    vec![seed]
}
