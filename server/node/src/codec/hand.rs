//! The peer messages of a put's round (Appends, their answers, heartbeats and theirs)
//! encoded and decoded by hand, byte for byte as postcard does, because serde's generic
//! walk over every field and entry was a large part of what a round's messages cost the
//! runtime. Every other message body, and every input the hand-written reader does not
//! take, goes through postcard; the tests hold both directions to postcard.

use super::GroupMessage;
use bytes::Bytes;
use kv_raft::{Entry, EntryKind, Message, MessageBody};
use kv_shared::cursor::{Reader, Writer};
use kv_shared::varint;
use kv_shared::{NodeId, ShardId};

// postcard writes an enum's variant as its index in declaration order; these are
// `MessageBody`'s and `EntryKind`'s (the tests fail if the declarations move).
const APPEND: u64 = 4;
const APPEND_RESP: u64 = 5;
const HEARTBEAT: u64 = 6;
const HEARTBEAT_RESP: u64 = 7;
pub(super) const NOOP: u64 = 0;
pub(super) const COMMAND: u64 = 1;

/// The smallest encoding of a message (shard, from, to, term, variant: a byte each) and
/// of an entry (term, index, kind, data length): no count can promise more items than
/// the bytes left hold, so no count makes a decoder reserve more than the datagram.
const MESSAGE_BYTES_MIN: usize = 5;
const ENTRY_BYTES_MIN: usize = 4;

/// Writes postcard's encoding of `msgs` (a `Vec<GroupMessage>`) at the start of `out`
/// and returns its length, or `None` if it does not fit.
pub fn encode(msgs: &[GroupMessage], out: &mut [u8]) -> Option<usize> {
    let mut w = Writer::new(out);
    w.varint(msgs.len() as u64)?;
    for m in msgs {
        w.varint(u64::from(m.shard.0))?;
        w.varint(m.msg.from.0)?;
        w.varint(m.msg.to.0)?;
        w.varint(m.msg.term)?;
        match &m.msg.body {
            MessageBody::Append {
                prev_index,
                prev_term,
                entries,
                commit,
            } => {
                w.varint(APPEND)?;
                w.varint(*prev_index)?;
                w.varint(*prev_term)?;
                w.varint(entries.len() as u64)?;
                for e in entries {
                    w.varint(e.term)?;
                    w.varint(e.index)?;
                    match &e.kind {
                        EntryKind::Noop => w.varint(NOOP)?,
                        EntryKind::Command => w.varint(COMMAND)?,
                        kind @ EntryKind::ConfChange(_) => w.postcard(kind)?,
                    }
                    w.bytes(&e.data)?;
                }
                w.varint(*commit)?;
            }
            MessageBody::AppendResp {
                reject,
                index,
                hint_index,
                hint_term,
            } => {
                w.varint(APPEND_RESP)?;
                w.bool(*reject)?;
                w.varint(*index)?;
                w.varint(*hint_index)?;
                w.varint(*hint_term)?;
            }
            MessageBody::Heartbeat { commit, read_round } => {
                w.varint(HEARTBEAT)?;
                w.varint(*commit)?;
                w.varint(*read_round)?;
            }
            MessageBody::HeartbeatResp { read_round } => {
                w.varint(HEARTBEAT_RESP)?;
                w.varint(*read_round)?;
            }
            body => w.postcard(body)?,
        }
    }
    Some(w.at)
}

/// Bytes of postcard's encoding of `msgs`, counted without encoding the hot messages.
pub fn encoded_len(msgs: &[GroupMessage]) -> usize {
    let v = varint::len;
    let mut n = v(msgs.len() as u64);
    for m in msgs {
        n += v(u64::from(m.shard.0)) + v(m.msg.from.0) + v(m.msg.to.0) + v(m.msg.term);
        n += match &m.msg.body {
            MessageBody::Append {
                prev_index,
                prev_term,
                entries,
                commit,
            } => {
                let mut b = 1 + v(*prev_index) + v(*prev_term) + v(entries.len() as u64);
                for e in entries {
                    b += v(e.term) + v(e.index) + v(e.data.len() as u64) + e.data.len();
                    b += match &e.kind {
                        EntryKind::Noop | EntryKind::Command => 1,
                        kind => kv_shared::pack::encoded_bytes(kind),
                    };
                }
                b + v(*commit)
            }
            MessageBody::AppendResp {
                index,
                hint_index,
                hint_term,
                ..
            } => 2 + v(*index) + v(*hint_index) + v(*hint_term),
            MessageBody::Heartbeat { commit, read_round } => 1 + v(*commit) + v(*read_round),
            MessageBody::HeartbeatResp { read_round } => 1 + v(*read_round),
            body => kv_shared::pack::encoded_bytes(body),
        };
    }
    n
}

/// Reads a `Vec<GroupMessage>` at the start of `payload` as postcard does, and the bytes
/// after it, or `None` where the caller should ask postcard (which then decodes the
/// same messages, or says what is wrong): malformed input, and anything this reader
/// does not take. Entry data are slices of `shared`'s copy of `payload`.
pub fn decode<'a>(
    payload: &'a [u8],
    shared: &mut SharedData,
) -> Option<(Vec<GroupMessage>, &'a [u8])> {
    let mut r = Reader::new(payload);
    let count = r.count()?;
    let mut msgs = Vec::with_capacity(r.capacity_for(count, MESSAGE_BYTES_MIN));
    for _ in 0..count {
        let shard = ShardId(r.u32()?);
        let from = NodeId(r.u64()?);
        let to = NodeId(r.u64()?);
        let term = r.u64()?;
        let before_variant = r;
        let body = match u64::from(r.u32()?) {
            APPEND => {
                let prev_index = r.u64()?;
                let prev_term = r.u64()?;
                let n = r.count()?;
                let mut entries = Vec::with_capacity(r.capacity_for(n, ENTRY_BYTES_MIN));
                for _ in 0..n {
                    let term = r.u64()?;
                    let index = r.u64()?;
                    let kind = read_kind(&mut r)?;
                    let data = shared.bytes(payload, r.bytes()?);
                    entries.push(Entry {
                        term,
                        index,
                        kind,
                        data,
                    });
                }
                MessageBody::Append {
                    prev_index,
                    prev_term,
                    entries,
                    commit: r.u64()?,
                }
            }
            APPEND_RESP => MessageBody::AppendResp {
                reject: r.bool()?,
                index: r.u64()?,
                hint_index: r.u64()?,
                hint_term: r.u64()?,
            },
            HEARTBEAT => MessageBody::Heartbeat {
                commit: r.u64()?,
                read_round: r.u64()?,
            },
            HEARTBEAT_RESP => MessageBody::HeartbeatResp {
                read_round: r.u64()?,
            },
            _ => {
                r = before_variant;
                r.postcard()?
            }
        };
        msgs.push(GroupMessage {
            shard,
            msg: Message {
                from,
                to,
                term,
                body,
            },
        });
    }
    Some((msgs, r.rest))
}

/// An entry's kind as postcard writes it: the two kinds of a put's round read by hand,
/// any other (a conf change) by postcard.
pub fn read_kind(r: &mut Reader) -> Option<EntryKind> {
    let before_kind = *r;
    Some(match u64::from(r.u32()?) {
        NOOP => EntryKind::Noop,
        COMMAND => EntryKind::Command,
        _ => {
            *r = before_kind;
            r.postcard()?
        }
    })
}

/// The copy of a datagram's payload that its entries' data are slices of, made at the
/// first entry with data: the entries' payloads share one copy of the datagram from the
/// first of them on, instead of a copy each. An Append per group made that an
/// allocation (and, at the first clone into the log, another for the shared handle) per
/// entry, per group and round. The copy lives as long as any of its entries does, which
/// the follower's log holds anyway; what else it carries is the messages' few bytes.
#[derive(Default)]
pub struct SharedData {
    /// The copy, and the offset in the payload it starts at.
    copy: Option<(Bytes, usize)>,
}

impl SharedData {
    /// `data` (a slice of `payload`) as a `Bytes` sharing the copy.
    pub fn bytes(&mut self, payload: &[u8], data: &[u8]) -> Bytes {
        if data.is_empty() {
            return Bytes::new();
        }
        let at = data.as_ptr() as usize - payload.as_ptr() as usize;
        let (copy, start) = self
            .copy
            .get_or_insert_with(|| (Bytes::copy_from_slice(&payload[at..]), at));
        copy.slice(at - *start..at - *start + data.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kv_raft::{ConfChange, Membership, SnapshotMeta};
    use proptest::prelude::*;

    /// Integers of every varint length.
    fn int() -> impl Strategy<Value = u64> {
        (any::<u64>(), 0u32..64).prop_map(|(n, shift)| n >> shift)
    }

    fn node() -> impl Strategy<Value = NodeId> {
        int().prop_map(NodeId)
    }

    fn data() -> impl Strategy<Value = Bytes> {
        proptest::collection::vec(any::<u8>(), 0..40).prop_map(Bytes::from)
    }

    fn entry() -> impl Strategy<Value = Entry> {
        let kind = prop_oneof![
            3 => Just(EntryKind::Command),
            1 => Just(EntryKind::Noop),
            1 => node().prop_map(|n| EntryKind::ConfChange(ConfChange::AddLearner(n))),
            1 => node().prop_map(|n| EntryKind::ConfChange(ConfChange::RemoveNode(n))),
        ];
        (int(), int(), kind, data()).prop_map(|(term, index, kind, data)| Entry {
            term,
            index,
            kind,
            data,
        })
    }

    /// The hot bodies mostly, and some of those postcard alone handles.
    fn body() -> impl Strategy<Value = MessageBody> {
        prop_oneof![
            4 => (int(), int(), proptest::collection::vec(entry(), 0..4), int()).prop_map(
                |(prev_index, prev_term, entries, commit)| MessageBody::Append {
                    prev_index,
                    prev_term,
                    entries,
                    commit,
                }
            ),
            3 => (any::<bool>(), int(), int(), int()).prop_map(
                |(reject, index, hint_index, hint_term)| MessageBody::AppendResp {
                    reject,
                    index,
                    hint_index,
                    hint_term,
                }
            ),
            2 => (int(), int())
                .prop_map(|(commit, read_round)| MessageBody::Heartbeat { commit, read_round }),
            2 => int().prop_map(|read_round| MessageBody::HeartbeatResp { read_round }),
            1 => Just(MessageBody::TimeoutNow),
            1 => (int(), int(), any::<bool>()).prop_map(|(last_index, last_term, transfer)| {
                MessageBody::Vote {
                    last_index,
                    last_term,
                    transfer,
                }
            }),
            1 => (int(), int(), proptest::collection::vec(node(), 0..3), data()).prop_map(
                |(index, offset, voters, chunk)| MessageBody::InstallSnapshot {
                    meta: SnapshotMeta {
                        index,
                        term: offset,
                        membership: Membership {
                            voters,
                            learners: vec![],
                        },
                    },
                    offset,
                    total_len: index,
                    chunk,
                }
            ),
        ]
    }

    fn message() -> impl Strategy<Value = GroupMessage> {
        ((any::<u32>(), 0u32..32), node(), node(), int(), body()).prop_map(
            |((shard, shift), from, to, term, body)| GroupMessage {
                shard: ShardId(shard >> shift),
                msg: Message {
                    from,
                    to,
                    term,
                    body,
                },
            },
        )
    }

    /// The messages [`super::decode`] reads, checked to leave the bytes postcard leaves.
    fn decode(payload: &[u8]) -> Option<Vec<GroupMessage>> {
        let (msgs, rest) = super::decode(payload, &mut SharedData::default())?;
        let by_postcard: (Vec<GroupMessage>, &[u8]) =
            postcard::take_from_bytes(payload).expect("postcard reads what the reader reads");
        assert_eq!(rest, by_postcard.1, "the bytes after the messages");
        Some(msgs)
    }

    fn postcard_decode(payload: &[u8]) -> Option<Vec<GroupMessage>> {
        postcard::from_bytes(payload).ok()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(5_000))]

        #[test]
        fn writes_and_counts_what_postcard_writes(
            msgs in proptest::collection::vec(message(), 0..6),
        ) {
            let expected = postcard::to_stdvec(&msgs).unwrap();
            prop_assert_eq!(encoded_len(&msgs), expected.len());
            let mut out = vec![0u8; expected.len() + 20];
            let len = encode(&msgs, &mut out);
            prop_assert_eq!(len, Some(expected.len()));
            prop_assert_eq!(&out[..expected.len()], &expected[..]);
            // One byte short of room, and nothing is claimed written.
            let mut short = vec![0u8; expected.len() - 1];
            prop_assert_eq!(encode(&msgs, &mut short), None);
        }

        #[test]
        fn reads_what_postcard_reads_also_when_cut_altered_or_extended(
            msgs in proptest::collection::vec(message(), 0..6),
            cut: prop::sample::Index,
            flip: prop::sample::Index,
            bit in 0u8..8,
            extra: u8,
        ) {
            let mut bytes = postcard::to_stdvec(&msgs).unwrap();
            prop_assert_eq!(decode(&bytes), Some(msgs));
            let cut_short = &bytes[..cut.index(bytes.len())];
            prop_assert_eq!(decode(cut_short), postcard_decode(cut_short));
            let i = flip.index(bytes.len());
            bytes[i] ^= 1 << bit;
            prop_assert_eq!(decode(&bytes), postcard_decode(&bytes));
            bytes.push(extra);
            prop_assert_eq!(decode(&bytes), postcard_decode(&bytes));
        }

        #[test]
        fn reads_random_bytes_as_postcard_does(
            bytes in proptest::collection::vec(
                prop_oneof![2 => 0u8..8, 1 => 0x80u8.., 1 => any::<u8>()], 0..64),
        ) {
            prop_assert_eq!(decode(&bytes), postcard_decode(&bytes));
        }
    }

    /// The entries of a datagram, across its messages, are slices of one copy of it:
    /// each entry's data lies where its bytes lie in the payload, relative to the first.
    #[test]
    fn the_entries_of_a_datagram_share_one_copy_of_it() {
        let entry = |index: u64, data: &'static [u8]| Entry {
            term: 1,
            index,
            kind: EntryKind::Command,
            data: Bytes::from_static(data),
        };
        let append = |shard: u32, entries: Vec<Entry>| GroupMessage {
            shard: ShardId(shard),
            msg: Message {
                from: NodeId(1),
                to: NodeId(2),
                term: 1,
                body: MessageBody::Append {
                    prev_index: 0,
                    prev_term: 0,
                    entries,
                    commit: 0,
                },
            },
        };
        let msgs = vec![
            append(
                0,
                vec![entry(1, b"first entry"), entry(2, b""), entry(3, b"second")],
            ),
            append(7, vec![entry(1, b"of another group")]),
        ];
        let payload = postcard::to_stdvec(&msgs).unwrap();
        let decoded = decode(&payload).unwrap();
        assert_eq!(decoded, msgs);
        let data: Vec<Bytes> = decoded
            .into_iter()
            .flat_map(|m| match m.msg.body {
                MessageBody::Append { entries, .. } => entries.into_iter().map(|e| e.data),
                _ => unreachable!(),
            })
            .filter(|d| !d.is_empty())
            .collect();
        let in_payload = |d: &[u8]| {
            payload
                .windows(d.len())
                .position(|w| w == d)
                .expect("the data is in the payload")
        };
        let first = &data[0];
        for d in &data[1..] {
            assert_eq!(
                d.as_ptr() as usize - first.as_ptr() as usize,
                in_payload(d) - in_payload(first),
                "{d:?} is not in the copy {first:?} is in"
            );
        }
    }

    #[test]
    fn odd_but_valid_varints_are_read_and_overlong_ones_refused_as_postcard_does() {
        let hb = |shard: &[u8]| {
            // One Heartbeat: count, shard, from 1, to 2, term 3, variant 6, commit 4, round 5.
            let mut b = vec![1];
            b.extend_from_slice(shard);
            b.extend_from_slice(&[1, 2, 3, 6, 4, 5]);
            b
        };
        // A shard id of 0 in five bytes: postcard's u32 takes it.
        let five = hb(&[0x80, 0x80, 0x80, 0x80, 0x00]);
        assert!(postcard_decode(&five).is_some());
        assert_eq!(decode(&five), postcard_decode(&five));
        // u32::MAX, the fifth byte at its largest: both take it.
        let max = hb(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
        assert_eq!(decode(&max).unwrap()[0].shard, ShardId(u32::MAX));
        assert_eq!(decode(&max), postcard_decode(&max));
        // Over u32 in five bytes, and six bytes: postcard refuses, and so does the reader.
        for bad in [
            hb(&[0xff, 0xff, 0xff, 0xff, 0x10]),
            hb(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x00]),
        ] {
            assert!(postcard_decode(&bad).is_none(), "{bad:x?}");
            assert_eq!(decode(&bad), None, "{bad:x?}");
        }
        // A bool other than 0 or 1 in an AppendResp.
        let resp = [1, 0, 1, 2, 3, 5, 2, 7, 0, 0];
        assert!(postcard_decode(&resp).is_none());
        assert_eq!(decode(&resp), None);
        let mut ok = resp;
        ok[6] = 1;
        assert_eq!(decode(&ok), postcard_decode(&ok));
        assert!(decode(&ok).is_some());
    }
}
