//! Replica-to-replica payloads: a batch of the node core's [`GroupMessage`]s, encoded with
//! postcard and carried as base64 in the `m` field of one JSON datagram.
//!
//! Binary inside base64 keeps entries compact (a JSON array of numbers would be 3-4x
//! larger). A batch that would not fit one datagram is split across several; a single
//! Append too large on its own is split into consecutive Appends (the second one's
//! `prev` is the first one's last entry), which a follower accepts like any pipelined
//! pair. Each datagram counts against the harness's message budget, so splitting only
//! happens when it must.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use kv_node::GroupMessage;
use kv_raft::MessageBody;
use kv_shared::limits::DATAGRAM_BYTES_MAX;
use kv_shared::pack::{count_prefix_bytes, encoded_bytes, pack, PackLimit};

use crate::protocol::{PEER_ENVELOPE_BYTES, SIDE_INFO_BYTES_MAX};

/// Most base64 characters one datagram's payload may hold (the rest is envelope and
/// side info).
pub const PAYLOAD_CHARS_MAX: usize = DATAGRAM_BYTES_MAX - PEER_ENVELOPE_BYTES - SIDE_INFO_BYTES_MAX;

/// Why an inbound payload was dropped.
#[derive(Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// Not base64.
    Base64,
    /// Not a postcard batch of group messages.
    Postcard,
}

/// Decodes a payload produced by [`encode`].
pub fn decode(payload: &str) -> Result<Vec<GroupMessage>, DecodeError> {
    if payload.len() > PAYLOAD_CHARS_MAX {
        return Err(DecodeError::Base64);
    }
    let bytes = B64.decode(payload).map_err(|_| DecodeError::Base64)?;
    postcard::from_bytes(&bytes).map_err(|_| DecodeError::Postcard)
}

/// Most postcard bytes whose base64 fits [`PAYLOAD_CHARS_MAX`] (4 characters per 3 bytes).
const PAYLOAD_BYTES_MAX: usize = PAYLOAD_CHARS_MAX / 4 * 3;

/// Encodes a batch into as few payloads as fit [`PAYLOAD_CHARS_MAX`] each. A message that
/// cannot be made to fit (it never happens with the core's limits) is left out and
/// counted in the second value, like a dropped datagram.
pub fn encode(msgs: Vec<GroupMessage>) -> (Vec<String>, usize) {
    let mut fitting = Vec::with_capacity(msgs.len());
    let mut dropped = 0;
    for gm in msgs {
        split_to_fit(gm, &mut fitting, &mut dropped);
    }
    let packed = pack(fitting, PackLimit::bytes(PAYLOAD_BYTES_MAX));
    debug_assert!(packed.too_large.is_empty(), "split_to_fit left a giant");
    let payloads = packed
        .batches
        .iter()
        .map(|batch| B64.encode(postcard::to_allocvec(batch).expect("group messages encode")))
        .collect();
    (payloads, dropped)
}

/// Pushes `gm` to `out`, split into consecutive Appends until each fits a payload alone;
/// counts what cannot be split small enough in `dropped`.
fn split_to_fit(gm: GroupMessage, out: &mut Vec<GroupMessage>, dropped: &mut usize) {
    if count_prefix_bytes(1) + encoded_bytes(&gm) <= PAYLOAD_BYTES_MAX {
        out.push(gm);
        return;
    }
    match split_append(gm) {
        Some((head, rest)) => {
            split_to_fit(head, out, dropped);
            split_to_fit(rest, out, dropped);
        }
        None => *dropped += 1,
    }
}

/// Splits an Append of two or more entries into two consecutive Appends.
fn split_append(gm: GroupMessage) -> Option<(GroupMessage, GroupMessage)> {
    let GroupMessage { shard, msg } = gm;
    let kv_raft::Message {
        from,
        to,
        term,
        body,
    } = msg;
    let wrap = |body| GroupMessage {
        shard,
        msg: kv_raft::Message {
            from,
            to,
            term,
            body,
        },
    };
    match body {
        MessageBody::Append {
            prev_index,
            prev_term,
            mut entries,
            commit,
        } if entries.len() > 1 => {
            let tail = entries.split_off(entries.len() / 2);
            let last = entries.last().expect("non-empty head");
            let (mid_index, mid_term) = (last.index, last.term);
            let head = MessageBody::Append {
                prev_index,
                prev_term,
                entries,
                commit,
            };
            let rest = MessageBody::Append {
                prev_index: mid_index,
                prev_term: mid_term,
                entries: tail,
                commit,
            };
            Some((wrap(head), wrap(rest)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use kv_raft::{Entry, EntryKind, Message};
    use kv_shared::{NodeId, ShardId};

    fn append(first: u64, n: u64, entry_bytes: usize) -> GroupMessage {
        let entries = (first..first + n)
            .map(|index| Entry {
                term: 3,
                index,
                kind: EntryKind::Command,
                data: Bytes::from(vec![0xAB; entry_bytes]),
            })
            .collect();
        GroupMessage {
            shard: ShardId(0),
            msg: Message {
                from: NodeId(1),
                to: NodeId(2),
                term: 3,
                body: MessageBody::Append {
                    prev_index: first - 1,
                    prev_term: 2,
                    entries,
                    commit: first - 1,
                },
            },
        }
    }

    fn heartbeat() -> GroupMessage {
        GroupMessage {
            shard: ShardId(0),
            msg: Message {
                from: NodeId(1),
                to: NodeId(2),
                term: 3,
                body: MessageBody::Heartbeat {
                    commit: 4,
                    read_round: 9,
                },
            },
        }
    }

    #[test]
    fn small_batch_is_one_payload_and_round_trips() {
        let batch = vec![heartbeat(), append(5, 3, 100)];
        let (payloads, dropped) = encode(batch.clone());
        assert_eq!((payloads.len(), dropped), (1, 0));
        assert_eq!(decode(&payloads[0]).unwrap(), batch);
    }

    #[test]
    fn big_batches_split_and_every_payload_fits() {
        let batch: Vec<_> = (0..40).map(|i| append(1 + i * 10, 10, 400)).collect();
        let (payloads, dropped) = encode(batch.clone());
        assert_eq!(dropped, 0);
        assert!(payloads.len() > 1);
        let mut back = Vec::new();
        for p in &payloads {
            assert!(p.len() <= PAYLOAD_CHARS_MAX);
            back.extend(decode(p).unwrap());
        }
        assert_eq!(back, batch, "order and content survive the split");
    }

    #[test]
    fn one_huge_append_becomes_consecutive_appends() {
        let (payloads, dropped) = encode(vec![append(1, 100, 1000)]);
        assert_eq!(dropped, 0);
        assert!(payloads.len() >= 2);
        let mut next_prev = (0, 2);
        let mut count = 0;
        for p in &payloads {
            assert!(p.len() <= PAYLOAD_CHARS_MAX);
            for gm in decode(p).unwrap() {
                let MessageBody::Append {
                    prev_index,
                    prev_term,
                    entries,
                    ..
                } = gm.msg.body
                else {
                    panic!("not an append");
                };
                assert_eq!((prev_index, prev_term), next_prev);
                let last = entries.last().unwrap();
                next_prev = (last.index, last.term);
                count += entries.len();
            }
        }
        assert_eq!(count, 100);
    }

    #[test]
    fn an_unsplittable_giant_is_dropped_not_sent() {
        let (payloads, dropped) = encode(vec![heartbeat(), append(1, 1, DATAGRAM_BYTES_MAX)]);
        assert_eq!(dropped, 1);
        assert_eq!(payloads.len(), 1, "the heartbeat still goes");
    }

    #[test]
    fn bad_payloads_are_errors() {
        assert_eq!(decode("!!!"), Err(DecodeError::Base64));
        assert_eq!(
            decode(&B64.encode([0xFF, 0xFF, 0xFF])),
            Err(DecodeError::Postcard)
        );
        assert_eq!(
            decode(&"A".repeat(PAYLOAD_CHARS_MAX + 4)),
            Err(DecodeError::Base64)
        );
    }
}
