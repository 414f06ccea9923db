//! `kv_node::codec::decode_peer`, and what the node core does with what it accepts: a
//! node of a three-member cluster gets arbitrary payloads from its two peers,
//! interleaved with ticks, client writes, restarts and the peers' agreeable answers.
//! Whatever decodes must re-encode to the same messages; the node must not panic, its
//! datagrams must fit, and it must recover from what it wrote.

use crate::input::{push_chunk, Input};
use crate::targets::node::{NodeHarness, ME};
use bytes::Bytes;
use kv_node::codec::decode_peer;
use kv_node::{ClientToken, GroupMessage};
use kv_raft::{Entry, EntryKind, Message, MessageBody};
use kv_shared::proto::{ClientRequest, Op};
use kv_shared::{ClientId, NodeId, ShardId};

/// Most operations one input runs.
const OPS_MAX: usize = 128;
/// Most ticks one tick operation runs.
const TICKS_PER_OP_MAX: u8 = 32;

pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let mut node = NodeHarness::new(3, |_| {});
    let mut seq = 0;
    for _ in 0..OPS_MAX {
        if input.is_empty() {
            break;
        }
        match input.u8() % 6 {
            0 | 1 => {
                let from = NodeId(2 + u64::from(input.u8() % 2));
                let address_fixup = !input.u8().is_multiple_of(4);
                let payload = input.chunk();
                // The messages before a frame's records are postcard's list, whether
                // the hand-written reader or postcard reads them; the records come first.
                let decoded = decode_peer(from, payload).ok();
                let by_postcard: Option<Vec<GroupMessage>> = postcard::from_bytes(payload).ok();
                if let Some(msgs) = &decoded {
                    let listed = by_postcard.expect("postcard reads the list");
                    assert!(
                        msgs.ends_with(&listed),
                        "{msgs:?} does not end with {listed:?}"
                    );
                }
                let Some(mut msgs) = decoded else {
                    // Refused whole: nothing in it may be taken.
                    node.deliver_payload(from, payload);
                    continue;
                };
                let again = postcard::to_stdvec(&msgs).expect("decoded messages encode");
                assert_eq!(decode_peer(from, &again).ok().as_ref(), Some(&msgs));
                if address_fixup {
                    for gm in &mut msgs {
                        gm.msg.from = from;
                        gm.msg.to = ME;
                    }
                    node.deliver(from, msgs);
                } else {
                    node.deliver_payload(from, payload);
                }
            }
            2 => node.tick(u32::from(input.u8() % TICKS_PER_OP_MAX) + 1),
            3 => node.answer(),
            4 => {
                seq += 1;
                let key = Bytes::copy_from_slice(input.bytes(2));
                node.core().on_client_request(
                    ClientToken(1),
                    ClientRequest {
                        client: ClientId(9),
                        seq,
                        epoch: 0,
                        op: Op::Put {
                            key,
                            value: Bytes::from_static(b"v"),
                        },
                    },
                );
                node.pump();
            }
            _ => node.restart(),
        }
    }
}

fn push_batch(out: &mut Vec<u8>, from: u8, msgs: &[GroupMessage]) {
    out.extend_from_slice(&[0, from, 1]);
    push_chunk(out, &postcard::to_stdvec(msgs).expect("messages encode"));
}

fn message(shard: u32, term: u64, body: MessageBody) -> GroupMessage {
    GroupMessage {
        shard: ShardId(shard),
        msg: Message {
            from: NodeId(2),
            to: ME,
            term,
            body,
        },
    }
}

pub fn seeds() -> Vec<Vec<u8>> {
    // Elected by the agreeable peers, then client writes replicated.
    let elected = vec![
        2, 31, 3, 3, 3, 4, b'k', b'1', 3, 4, b'k', b'2', 2, 3, 3, 5, 2, 20,
    ];

    let mut follower = Vec::new();
    let entries = (1..=3)
        .map(|index| Entry {
            term: 1,
            index,
            kind: EntryKind::Command,
            data: Bytes::from_static(b"\x00"),
        })
        .collect();
    push_batch(
        &mut follower,
        0,
        &[
            message(
                0,
                1,
                MessageBody::Append {
                    prev_index: 0,
                    prev_term: 0,
                    entries,
                    commit: 3,
                },
            ),
            message(
                1,
                1,
                MessageBody::Heartbeat {
                    commit: 0,
                    read_round: 1,
                },
            ),
        ],
    );
    let mut sm = kv_node::sm::StateMachine::new(4);
    for index in 1..=5 {
        sm.apply_empty(index, 2);
    }
    let image = sm.to_image();
    push_batch(
        &mut follower,
        0,
        &[message(
            1,
            2,
            MessageBody::InstallSnapshot {
                meta: kv_raft::SnapshotMeta {
                    index: 5,
                    term: 2,
                    membership: kv_raft::Membership {
                        voters: vec![NodeId(1), NodeId(2), NodeId(3)],
                        learners: vec![],
                    },
                },
                offset: 0,
                total_len: image.len() as u64,
                chunk: image,
            },
        )],
    );
    follower.extend_from_slice(&[2, 5, 5, 2, 5]);
    vec![elected, follower]
}
