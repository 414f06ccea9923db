//! Peer datagrams: the messages of many groups for one destination, postcard-encoded
//! behind the kv_shared::wire header. Splitting lives here too, so that every batch the
//! core hands out is known to fit one datagram.

use kv_shared::pack::{encoded_bytes, pack, PackLimit};
use kv_shared::wire::{self, Kind, WireError, HEADER_BYTES};
use kv_shared::{NodeId, ShardId};
use serde::{Deserialize, Serialize};

/// A Raft message of one group (shard), as carried between nodes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupMessage {
    /// The group.
    pub shard: ShardId,
    /// The message.
    pub msg: kv_raft::Message,
}

/// Encodes a whole peer datagram (header + payload).
///
/// # Panics
/// If the messages do not fit one datagram: batches from [`split`] always do.
pub fn encode_peer(cluster_id: u64, sender: NodeId, msgs: &[GroupMessage]) -> Vec<u8> {
    let payload = kv_shared::pack::encode_exact(msgs);
    let mut out = Vec::with_capacity(HEADER_BYTES + payload.len());
    wire::encode(Kind::Peer, cluster_id, sender.0, &payload, &mut out);
    out
}

/// Decodes the payload of a peer datagram (after [`wire::decode`] checked its header).
pub fn decode_peer(payload: &[u8]) -> Result<Vec<GroupMessage>, WireError> {
    wire::decode_value(payload)
}

/// Checks a whole datagram and decodes it as peer traffic: (sender, messages).
pub fn decode_peer_datagram(
    datagram: &[u8],
    cluster_id: u64,
) -> Result<(NodeId, Vec<GroupMessage>), WireError> {
    let (header, payload) = wire::decode(datagram, cluster_id)?;
    if header.kind != Kind::Peer {
        return Err(WireError::BadKind(header.kind as u8));
    }
    Ok((NodeId(header.sender), decode_peer(payload)?))
}

/// Splits messages for one destination into batches whose encoding fits the body of one
/// sealed datagram (`auth::BODY_BYTES_MAX`, which also fits an unsealed one), keeping
/// their order.
///
/// # Panics
/// If one message alone cannot fit: the core's limits keep every message well below a
/// datagram (`kv_shared::limits`), so that would be a bug, not an input.
pub fn split(msgs: Vec<GroupMessage>) -> Vec<Vec<GroupMessage>> {
    // Most rounds' messages for one peer fit one datagram: one sizing pass over the
    // whole batch then, instead of one per message and a copy of each into a new batch.
    if encoded_bytes(&msgs) <= kv_shared::auth::BODY_BYTES_MAX {
        return vec![msgs];
    }
    let packed = pack(msgs, PackLimit::bytes(kv_shared::auth::BODY_BYTES_MAX));
    assert!(
        packed.too_large.is_empty(),
        "a peer message cannot fit a datagram (limits are inconsistent)"
    );
    packed.batches
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use kv_raft::{Entry, EntryKind, Message, MessageBody};

    fn append(shard: u32, data_bytes: usize) -> GroupMessage {
        GroupMessage {
            shard: ShardId(shard),
            msg: Message {
                from: NodeId(1),
                to: NodeId(2),
                term: 3,
                body: MessageBody::Append {
                    prev_index: 4,
                    prev_term: 3,
                    entries: vec![Entry {
                        term: 3,
                        index: 5,
                        kind: EntryKind::Command,
                        data: Bytes::from(vec![7u8; data_bytes]),
                    }],
                    commit: 4,
                },
            },
        }
    }

    #[test]
    fn round_trip_through_the_wire_header() {
        let msgs = vec![
            append(0, 10),
            GroupMessage {
                shard: ShardId(5),
                msg: Message {
                    from: NodeId(1),
                    to: NodeId(2),
                    term: 9,
                    body: MessageBody::Heartbeat {
                        commit: 3,
                        read_round: 2,
                    },
                },
            },
        ];
        let d = encode_peer(42, NodeId(1), &msgs);
        let (from, back) = decode_peer_datagram(&d, 42).unwrap();
        assert_eq!((from, back), (NodeId(1), msgs));
        assert!(matches!(
            decode_peer_datagram(&d, 43),
            Err(WireError::WrongCluster { .. })
        ));
        assert!(decode_peer(b"\xff\xff\xff").is_err());
    }

    #[test]
    fn split_keeps_order_and_every_batch_fits() {
        let msgs: Vec<_> = (0..40).map(|i| append(i, 5000)).collect();
        let batches = split(msgs.clone());
        assert!(batches.len() > 1, "200 KB cannot fit one datagram");
        for b in &batches {
            let d = encode_peer(1, NodeId(1), b);
            assert!(d.len() <= kv_shared::limits::DATAGRAM_BYTES_MAX);
        }
        let flat: Vec<_> = batches.into_iter().flatten().collect();
        assert_eq!(flat, msgs);
    }

    #[test]
    fn messages_that_fit_stay_one_batch_up_to_the_last_byte() {
        let fits = |n: usize| {
            let msgs: Vec<_> = (0..4).map(|i| append(i, n)).collect();
            encoded_bytes(&msgs) <= kv_shared::auth::BODY_BYTES_MAX
        };
        // The largest payload for which four appends still fit one sealed body.
        let mut n = 1;
        while fits(n + 1) {
            n += 1;
        }
        let at_limit: Vec<_> = (0..4).map(|i| append(i, n)).collect();
        assert_eq!(split(at_limit.clone()), vec![at_limit]);
        let over: Vec<_> = (0..4).map(|i| append(i, n + 1)).collect();
        let batches = split(over.clone());
        assert_eq!(batches.len(), 2, "one byte over the limit splits");
        assert_eq!(batches.concat(), over);
    }
}
