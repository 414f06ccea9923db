//! Peer datagrams: the messages of many groups for one destination, behind the
//! kv_shared::wire header. A payload is postcard's encoding of a list of messages,
//! followed, when there are any, by a frame of compact records of every group's Appends
//! and append acks for that peer (`frame.rs`). Splitting lives here too, so that every
//! batch the core hands out is known to fit one datagram.

pub(crate) mod frame;
mod hand;

use frame::FrameIn;
use hand::SharedData;
use kv_shared::pack::{encoded_bytes, pack, PackLimit};
use kv_shared::varint;
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

/// What one datagram carries to one peer: messages, and a frame's records, encoded
/// already by the node core (each group's Appends straight from its log).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerBatch {
    /// Messages, each whole.
    pub msgs: Vec<GroupMessage>,
    /// The frame's records (`frame.rs`), without the receiver id that heads them on the
    /// wire; empty if none.
    pub frame: Vec<u8>,
}

impl PeerBatch {
    /// Every message the batch carries, from `from` to `to`, in the order the receiver
    /// takes them: the frame's, then the others.
    pub fn into_messages(self, from: NodeId, to: NodeId) -> Vec<GroupMessage> {
        let mut records = FrameIn {
            to,
            ..FrameIn::default()
        };
        records
            .decode_records(&self.frame, &self.frame, &mut SharedData::default())
            .expect("the node core's records decode");
        let mut msgs = Vec::with_capacity(records.records.len() + self.msgs.len());
        records.drain_messages(from, &mut msgs);
        msgs.extend(self.msgs);
        msgs
    }
}

/// Encodes a whole peer datagram (header + payload) for `to`.
///
/// # Panics
/// If the batch does not fit one datagram: batches from [`NodeCore`](crate::NodeCore)
/// always do.
pub fn encode_peer(cluster_id: u64, sender: NodeId, to: NodeId, batch: &PeerBatch) -> Vec<u8> {
    let mut payload = vec![0; payload_len(to, batch)];
    let len = encode_peer_body(to, batch, &mut payload).expect("the counted length fits");
    debug_assert_eq!(len, payload.len(), "the counted length is the encoding's");
    let mut out = Vec::with_capacity(HEADER_BYTES + payload.len());
    wire::encode(Kind::Peer, cluster_id, sender.0, &payload, &mut out);
    out
}

/// Bytes of the payload of a datagram carrying `batch` to `to`.
pub fn payload_len(to: NodeId, batch: &PeerBatch) -> usize {
    let frame = if batch.frame.is_empty() {
        0
    } else {
        frame::head_len(to) + batch.frame.len()
    };
    hand::encoded_len(&batch.msgs) + frame
}

/// Writes the payload of a peer datagram carrying `batch` to `to` at the start of
/// `out`, and returns its length; `None` if it does not fit. The messages of a put's
/// round are written by hand, the others by postcard; the frame's records are copied.
pub fn encode_peer_body(to: NodeId, batch: &PeerBatch, out: &mut [u8]) -> Option<usize> {
    let mut len = hand::encode(&batch.msgs, out)?;
    if !batch.frame.is_empty() {
        let head = frame::head_len(to);
        let end = len + head + batch.frame.len();
        let room = out.get_mut(len..end)?;
        let mut to_bytes = [0; varint::BYTES_MAX];
        varint::write(to.0, &mut to_bytes);
        room[..head].copy_from_slice(&to_bytes[..head]);
        room[head..].copy_from_slice(&batch.frame);
        len = end;
    }
    Some(len)
}

/// Decodes the payload of a peer datagram (after [`wire::decode`] checked its header)
/// from `sender`: its messages, the frame's records as the messages they stand for
/// first. The messages of a put's round are read by hand, the others, and any list
/// the hand-written reader declines, by postcard, so the list is postcard's.
pub fn decode_peer(sender: NodeId, payload: &[u8]) -> Result<Vec<GroupMessage>, WireError> {
    let mut records = FrameIn::default();
    let msgs = decode_peer_into(payload, &mut records)?;
    let mut all = Vec::with_capacity(records.records.len() + msgs.len());
    records.drain_messages(sender, &mut all);
    all.extend(msgs);
    Ok(all)
}

/// [`decode_peer`] that reads the frame's records into `records` (cleared first, kept
/// by the caller from datagram to datagram) and returns the other messages. On an error
/// nothing is returned, and `records` holds nothing to act on.
pub fn decode_peer_into(
    payload: &[u8],
    records: &mut FrameIn,
) -> Result<Vec<GroupMessage>, WireError> {
    records.records.clear();
    records.entries.clear();
    let mut shared = SharedData::default();
    let (msgs, rest) = match hand::decode(payload, &mut shared) {
        Some(read) => read,
        None => {
            postcard::take_from_bytes(payload).map_err(|e| WireError::BadPayload(e.to_string()))?
        }
    };
    if !rest.is_empty() && records.decode(payload, rest, &mut shared).is_none() {
        records.records.clear();
        records.entries.clear();
        return Err(WireError::BadPayload("malformed frame records".into()));
    }
    Ok(msgs)
}

/// Checks a whole datagram as peer traffic: (sender, payload).
pub fn open_peer_datagram(datagram: &[u8], cluster_id: u64) -> Result<(NodeId, &[u8]), WireError> {
    let (header, payload) = wire::decode(datagram, cluster_id)?;
    if header.kind != Kind::Peer {
        return Err(WireError::BadKind(header.kind as u8));
    }
    Ok((NodeId(header.sender), payload))
}

/// Checks a whole datagram and decodes it as peer traffic: (sender, messages).
pub fn decode_peer_datagram(
    datagram: &[u8],
    cluster_id: u64,
) -> Result<(NodeId, Vec<GroupMessage>), WireError> {
    let (sender, payload) = open_peer_datagram(datagram, cluster_id)?;
    Ok((sender, decode_peer(sender, payload)?))
}

/// True if `msgs` and a frame run of `run` bytes for `to` fit one datagram's body.
pub(crate) fn fit_together(msgs: &[GroupMessage], to: NodeId, run: usize) -> bool {
    hand::encoded_len(msgs) + frame::head_len(to) + run <= kv_shared::auth::BODY_BYTES_MAX
}

/// Splits messages for one destination into batches whose encoding fits the body of one
/// sealed datagram (`auth::BODY_BYTES_MAX`, which also fits an unsealed one), keeping
/// their order.
///
/// # Panics
/// If one message alone cannot fit: the core's limits keep every message well below a
/// datagram (`kv_shared::limits`), so that would be a bug, not an input.
pub fn split(msgs: Vec<GroupMessage>) -> Vec<Vec<GroupMessage>> {
    // Most rounds' messages for one peer fit one datagram by far: a bound from their
    // payload lengths says so without a sizing pass over every message and entry (the
    // encoding makes another). Near the limit, one sizing pass over the whole batch
    // decides, instead of one per message and a copy of each into a new batch.
    let bound = msgs.iter().try_fold(VARINT_BYTES_MAX, |sum, m| {
        Some(sum + encoded_bytes_at_most(m)?)
    });
    if bound.is_some_and(|b| b <= kv_shared::auth::BODY_BYTES_MAX)
        || encoded_bytes(&msgs) <= kv_shared::auth::BODY_BYTES_MAX
    {
        return vec![msgs];
    }
    let packed = pack(msgs, PackLimit::bytes(kv_shared::auth::BODY_BYTES_MAX));
    assert!(
        packed.too_large.is_empty(),
        "a peer message cannot fit a datagram (limits are inconsistent)"
    );
    packed.batches
}

/// Most bytes postcard spends on one integer (a `u64` varint; `u32` and enum variant
/// indices take at most five).
const VARINT_BYTES_MAX: usize = 10;

/// An upper bound on the encoded size of `m`, for the messages of a put's round
/// (Appends, their answers, heartbeats); `None` for the others, which are counted.
fn encoded_bytes_at_most(m: &GroupMessage) -> Option<usize> {
    use kv_raft::{EntryKind, MessageBody};
    const V: usize = VARINT_BYTES_MAX;
    // shard, from, to, term, body variant
    let head = 5 * V;
    let body = match &m.msg.body {
        MessageBody::Append { entries, .. } => {
            // prev_index, prev_term, commit, entry count; per entry term, index, kind
            // (variant, and a ConfChange's variant and node id), data length and data.
            let mut bytes = 4 * V;
            for e in entries {
                let kind = match e.kind {
                    EntryKind::Noop | EntryKind::Command => V,
                    EntryKind::ConfChange(_) => 3 * V,
                };
                bytes += 3 * V + kind + e.data.len();
            }
            bytes
        }
        MessageBody::AppendResp { .. } => 1 + 3 * V,
        MessageBody::Heartbeat { .. } => 2 * V,
        MessageBody::HeartbeatResp { .. } => V,
        _ => return None,
    };
    Some(head + body)
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
        let batch = PeerBatch {
            msgs: msgs.clone(),
            frame: Vec::new(),
        };
        let d = encode_peer(42, NodeId(1), NodeId(2), &batch);
        let (from, back) = decode_peer_datagram(&d, 42).unwrap();
        assert_eq!((from, back), (NodeId(1), msgs));
        assert!(matches!(
            decode_peer_datagram(&d, 43),
            Err(WireError::WrongCluster { .. })
        ));
        assert!(decode_peer(NodeId(1), b"\xff\xff\xff").is_err());
    }

    #[test]
    fn the_size_bound_is_never_below_the_encoding() {
        use kv_raft::ConfChange;
        let extremes = [0u64, 1, 127, 128, 1 << 35, u64::MAX];
        let mut bounded = 0;
        for (i, &x) in extremes.iter().enumerate() {
            let y = extremes[(i + 3) % extremes.len()];
            let entry = |kind| Entry {
                term: x,
                index: y,
                kind,
                data: Bytes::from(vec![1u8; (x % 300) as usize]),
            };
            let bodies = [
                MessageBody::Append {
                    prev_index: x,
                    prev_term: y,
                    entries: vec![
                        entry(EntryKind::Command),
                        entry(EntryKind::Noop),
                        entry(EntryKind::ConfChange(ConfChange::RemoveNode(NodeId(x)))),
                    ],
                    commit: x,
                },
                MessageBody::Append {
                    prev_index: y,
                    prev_term: x,
                    entries: vec![],
                    commit: y,
                },
                MessageBody::AppendResp {
                    reject: x % 2 == 0,
                    index: x,
                    hint_index: y,
                    hint_term: x,
                },
                MessageBody::Heartbeat {
                    commit: x,
                    read_round: y,
                },
                MessageBody::HeartbeatResp { read_round: x },
                MessageBody::TimeoutNow,
            ];
            for body in bodies {
                let m = GroupMessage {
                    shard: ShardId(if x > y { u32::MAX } else { 7 }),
                    msg: Message {
                        from: NodeId(x),
                        to: NodeId(y),
                        term: x,
                        body,
                    },
                };
                if let Some(bound) = encoded_bytes_at_most(&m) {
                    bounded += 1;
                    assert!(bound >= encoded_bytes(&m), "{m:?}");
                }
            }
        }
        assert_eq!(bounded, 5 * extremes.len(), "TimeoutNow alone is counted");
        // Near the limit the count decides, as without the bound.
        for n in [
            kv_shared::auth::BODY_BYTES_MAX / 3 - 40,
            kv_shared::auth::BODY_BYTES_MAX / 3 - 20,
        ] {
            let big: Vec<_> = (0..3).map(|i| append(i, n)).collect();
            let exact = encoded_bytes(&big);
            let batches = split(big);
            assert_eq!(
                batches.len() == 1,
                exact <= kv_shared::auth::BODY_BYTES_MAX,
                "{exact} bytes"
            );
        }
    }

    #[test]
    fn split_keeps_order_and_every_batch_fits() {
        let msgs: Vec<_> = (0..40).map(|i| append(i, 5000)).collect();
        let batches = split(msgs.clone());
        assert!(batches.len() > 1, "200 KB cannot fit one datagram");
        for b in &batches {
            let batch = PeerBatch {
                msgs: b.clone(),
                frame: Vec::new(),
            };
            let d = encode_peer(1, NodeId(1), NodeId(2), &batch);
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
