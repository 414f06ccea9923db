//! The coalesced part of a peer datagram: every group's Appends and append acks for one
//! peer as compact records after the datagram's other messages, instead of a whole
//! message each. A round at many shards sends an Append per group and follower and gets
//! an ack per group back; as messages, each carried its sender, receiver and variant,
//! and was built (a vector of cloned entries on the leader), encoded, decoded (a vector
//! on the follower) and dispatched on its own. A record is written straight from the
//! leader's log (`kv_raft::AppendRef`) and read into vectors the node keeps, and the
//! frame names its receiver once.
//!
//! ```text
//! frame  := to record*                     (to: the receiver's node id; runs to the end)
//! record := 0 append | 1 ack
//! append := shard term prev_index prev_term commit count entry{count}
//! entry  := term kind data                 (index: prev_index + 1 + its position)
//! ack    := shard term index               (AppendResp { reject: false, index }, no hint)
//! ```
//!
//! Integers are postcard's varints (a shard a `u32`), `kind` and `data` are postcard's
//! encoding of an entry's kind and payload, as in the messages (`hand.rs`). The sender
//! is the datagram's.

use super::hand::{read_kind, SharedData};
use super::GroupMessage;
use crate::wal::push_kind_and_data;
use kv_raft::{AppendRef, Entry, Message, MessageBody};
use kv_shared::cursor::Reader;
use kv_shared::varint;
use kv_shared::{NodeId, ShardId};

const APPEND: u8 = 0;
const ACK: u8 = 1;

/// The smallest encoding of an entry (term, kind, data length: a byte each): no count
/// makes the reader reserve more entries than the bytes left can hold.
const ENTRY_BYTES_MIN: usize = 3;

/// An Append whose entries carry this many bytes of data or more goes as a message,
/// not a record: the frame is for the many small Appends of a round at many shards, and
/// a record's data is copied twice, into the frame and then into the datagram.
pub const RECORD_DATA_BYTES_MAX: usize = 4 * 1024;

/// Most bytes of a frame's records in one datagram: the body's limit less the frame's
/// receiver id and the empty list of other messages before it (one byte).
pub const RECORDS_BYTES_MAX: usize = kv_shared::auth::BODY_BYTES_MAX - varint::BYTES_MAX - 1;

/// Bytes of the receiver id that heads a frame.
pub fn head_len(to: NodeId) -> usize {
    varint::len(to.0)
}

/// The records for one peer gathered during a flush, cut into runs that each fit one
/// datagram.
#[derive(Debug, Default)]
pub struct FrameOut {
    bytes: Vec<u8>,
    /// Where each run after the first begins.
    cuts: Vec<usize>,
}

impl FrameOut {
    /// An empty frame with room for `bytes` of records.
    pub fn with_capacity(bytes: usize) -> FrameOut {
        FrameOut {
            bytes: Vec::with_capacity(bytes),
            cuts: Vec::new(),
        }
    }

    /// Bytes of the records written.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Writes the Append `a` of group `shard`, whose entries are `entries`.
    pub fn append(&mut self, shard: ShardId, a: &AppendRef, entries: &[Entry]) {
        debug_assert_eq!(entries.len() as u64, a.last - a.prev_index);
        let start = self.bytes.len();
        let out = &mut self.bytes;
        out.push(APPEND);
        varint::push(u64::from(shard.0), out);
        varint::push(a.term, out);
        varint::push(a.prev_index, out);
        varint::push(a.prev_term, out);
        varint::push(a.commit, out);
        varint::push(entries.len() as u64, out);
        for e in entries {
            varint::push(e.term, out);
            push_kind_and_data(e, out);
        }
        self.record_ends(start);
    }

    /// Writes group `shard`'s acknowledgement of its leader's log up to `index`.
    pub fn ack(&mut self, shard: ShardId, term: u64, index: u64) {
        let start = self.bytes.len();
        let out = &mut self.bytes;
        out.push(ACK);
        varint::push(u64::from(shard.0), out);
        varint::push(term, out);
        varint::push(index, out);
        self.record_ends(start);
    }

    /// The record from `start` was written: it begins a new run if the current one
    /// would not fit a datagram with it.
    fn record_ends(&mut self, start: usize) {
        let run_start = self.cuts.last().copied().unwrap_or(0);
        assert!(
            self.bytes.len() - start <= RECORDS_BYTES_MAX,
            "a record cannot fit a datagram (limits are inconsistent)"
        );
        if self.bytes.len() - run_start > RECORDS_BYTES_MAX {
            self.cuts.push(start);
        }
    }

    /// The runs written, in order (each fits a datagram with its frame head), leaving
    /// this empty.
    pub fn take_runs(&mut self) -> Vec<Vec<u8>> {
        if self.bytes.is_empty() {
            return Vec::new();
        }
        let mut bytes = std::mem::take(&mut self.bytes);
        let mut runs = Vec::with_capacity(self.cuts.len() + 1);
        for cut in self.cuts.drain(..).rev() {
            runs.push(bytes.split_off(cut));
        }
        runs.push(bytes);
        runs.reverse();
        runs
    }
}

/// One record of a frame read by [`FrameIn::decode`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Record {
    /// An Append: its fields, and how many of [`FrameIn::entries`] (the next ones) it
    /// carries.
    Append {
        /// The group.
        shard: ShardId,
        /// The leader's term.
        term: u64,
        /// Index of the entry before the first carried.
        prev_index: u64,
        /// Its term.
        prev_term: u64,
        /// The leader's commit index.
        commit: u64,
        /// Entries carried.
        entries: usize,
    },
    /// An acknowledgement of the leader's log up to `index`.
    Ack {
        /// The group.
        shard: ShardId,
        /// The follower's term.
        term: u64,
        /// The highest index matching the leader's.
        index: u64,
    },
}

/// A frame's records, read into vectors its owner keeps from datagram to datagram.
#[derive(Debug, Default)]
pub struct FrameIn {
    /// The receiver the frame names.
    pub to: NodeId,
    /// The records, in order.
    pub records: Vec<Record>,
    /// Every Append's entries, in record order.
    pub entries: Vec<Entry>,
}

impl FrameIn {
    /// Reads the frame `frame` (a slice of `payload`, running to its end) into these
    /// vectors, after clearing them; `None` if it is malformed. Entry data are slices of
    /// `shared`'s copy of `payload`.
    pub fn decode(&mut self, payload: &[u8], frame: &[u8], shared: &mut SharedData) -> Option<()> {
        let mut r = Reader::new(frame);
        self.to = NodeId(r.u64()?);
        self.decode_records(payload, r.rest, shared)
    }

    /// [`FrameIn::decode`] of a frame's records alone (`records`, a slice of `payload`),
    /// leaving the receiver as it is.
    pub fn decode_records(
        &mut self,
        payload: &[u8],
        records: &[u8],
        shared: &mut SharedData,
    ) -> Option<()> {
        self.records.clear();
        self.entries.clear();
        let mut r = Reader::new(records);
        while let Some((&tag, rest)) = r.rest.split_first() {
            r.rest = rest;
            let shard = ShardId(r.u32()?);
            let term = r.u64()?;
            let record = match tag {
                APPEND => {
                    let prev_index = r.u64()?;
                    let prev_term = r.u64()?;
                    let commit = r.u64()?;
                    let count = r.count()?;
                    self.entries.reserve(r.capacity_for(count, ENTRY_BYTES_MIN));
                    for i in 1..=count as u64 {
                        let term = r.u64()?;
                        let kind = read_kind(&mut r)?;
                        let data = shared.bytes(payload, r.bytes()?);
                        self.entries.push(Entry {
                            term,
                            index: prev_index.checked_add(i)?,
                            kind,
                            data,
                        });
                    }
                    Record::Append {
                        shard,
                        term,
                        prev_index,
                        prev_term,
                        commit,
                        entries: count,
                    }
                }
                ACK => Record::Ack {
                    shard,
                    term,
                    index: r.u64()?,
                },
                _ => return None,
            };
            self.records.push(record);
        }
        Some(())
    }

    /// The records as the messages they stand for, from `from` (the datagram's sender)
    /// to the frame's receiver, leaving these vectors empty.
    pub fn drain_messages(&mut self, from: NodeId, out: &mut Vec<GroupMessage>) {
        let to = self.to;
        let mut entries = self.entries.drain(..);
        for record in self.records.drain(..) {
            let (shard, term, body) = match record {
                Record::Append {
                    shard,
                    term,
                    prev_index,
                    prev_term,
                    commit,
                    entries: count,
                } => {
                    let body = MessageBody::Append {
                        prev_index,
                        prev_term,
                        entries: entries.by_ref().take(count).collect(),
                        commit,
                    };
                    (shard, term, body)
                }
                Record::Ack { shard, term, index } => (shard, term, ack(index)),
            };
            let msg = Message {
                from,
                to,
                term,
                body,
            };
            out.push(GroupMessage { shard, msg });
        }
    }
}

/// The acknowledgement an ack record stands for.
pub fn ack(index: u64) -> MessageBody {
    MessageBody::AppendResp {
        reject: false,
        index,
        hint_index: 0,
        hint_term: 0,
    }
}

/// The index an AppendResp acknowledges, if an ack record can carry it (a success
/// without a hint).
pub fn acked_index(body: &MessageBody) -> Option<u64> {
    match *body {
        MessageBody::AppendResp {
            reject: false,
            index,
            hint_index: 0,
            hint_term: 0,
        } => Some(index),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{decode_peer, decode_peer_into, encode_peer_body, payload_len, PeerBatch};
    use bytes::Bytes;
    use kv_raft::{ConfChange, EntryKind};
    use proptest::prelude::*;

    /// Integers of every varint length.
    fn int() -> impl Strategy<Value = u64> {
        (any::<u64>(), 0u32..64).prop_map(|(n, shift)| n >> shift)
    }

    fn kind() -> impl Strategy<Value = EntryKind> {
        prop_oneof![
            3 => Just(EntryKind::Command),
            1 => Just(EntryKind::Noop),
            1 => int().prop_map(|n| EntryKind::ConfChange(ConfChange::RemoveNode(NodeId(n)))),
        ]
    }

    /// A record to write: an Append (its fields and its entries' terms, kinds and
    /// data) or an ack.
    #[derive(Clone, Debug)]
    enum Written {
        Append(ShardId, AppendRef, Vec<Entry>),
        Ack(ShardId, u64, u64),
    }

    fn written() -> impl Strategy<Value = Written> {
        let entries = proptest::collection::vec(
            (int(), kind(), proptest::collection::vec(any::<u8>(), 0..30)),
            0..4,
        );
        let shard = (any::<u32>(), 0u32..32).prop_map(|(s, shift)| ShardId(s >> shift));
        prop_oneof![
            (shard.clone(), int(), int(), int(), int(), entries).prop_map(
                |(shard, term, prev, prev_term, commit, entries)| {
                    // Indexes after `prev` that cannot overflow.
                    let prev_index = prev.min(u64::MAX - 8);
                    let entries: Vec<Entry> = (entries.into_iter().enumerate())
                        .map(|(i, (term, kind, data))| Entry {
                            term,
                            index: prev_index + 1 + i as u64,
                            kind,
                            data: Bytes::from(data),
                        })
                        .collect();
                    let a = AppendRef {
                        to: NodeId(2),
                        term,
                        prev_index,
                        prev_term,
                        last: prev_index + entries.len() as u64,
                        commit,
                    };
                    Written::Append(shard, a, entries)
                }
            ),
            (shard, int(), int()).prop_map(|(shard, term, index)| Written::Ack(shard, term, index)),
        ]
    }

    /// What `w` stands for, as a message from node 1 to `to`.
    fn message(w: &Written, to: NodeId) -> GroupMessage {
        let (shard, term, body) = match w {
            Written::Append(shard, a, entries) => {
                let body = MessageBody::Append {
                    prev_index: a.prev_index,
                    prev_term: a.prev_term,
                    entries: entries.clone(),
                    commit: a.commit,
                };
                (*shard, a.term, body)
            }
            Written::Ack(shard, term, index) => (*shard, *term, ack(*index)),
        };
        let msg = Message {
            from: NodeId(1),
            to,
            term,
            body,
        };
        GroupMessage { shard, msg }
    }

    fn write(records: &[Written]) -> FrameOut {
        let mut out = FrameOut::default();
        for w in records {
            match w {
                Written::Append(shard, a, entries) => out.append(*shard, a, entries),
                Written::Ack(shard, term, index) => out.ack(*shard, *term, *index),
            }
        }
        out
    }

    fn payload(to: NodeId, batch: &PeerBatch) -> Vec<u8> {
        let mut out = vec![0; payload_len(to, batch)];
        let len = encode_peer_body(to, batch, &mut out).expect("the counted length fits");
        assert_eq!(len, out.len(), "the counted length is the encoding's");
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        /// Written records read back as the messages they stand for, before the
        /// datagram's other messages, whatever the receiver's id.
        #[test]
        fn records_read_back_as_the_messages_they_stand_for(
            records in proptest::collection::vec(written(), 1..6),
            to in int(),
            heartbeats in 0..3u64,
        ) {
            let to = NodeId(to);
            let mut frame = write(&records);
            let runs = frame.take_runs();
            prop_assert_eq!(runs.len(), 1);
            let msgs: Vec<GroupMessage> = (0..heartbeats)
                .map(|i| GroupMessage {
                    shard: ShardId(i as u32),
                    msg: Message {
                        from: NodeId(1),
                        to,
                        term: i,
                        body: MessageBody::HeartbeatResp { read_round: i },
                    },
                })
                .collect();
            let batch = PeerBatch { msgs: msgs.clone(), frame: runs[0].clone() };
            let mut expected: Vec<GroupMessage> = records.iter().map(|w| message(w, to)).collect();
            expected.extend(msgs);
            let bytes = payload(to, &batch);
            prop_assert_eq!(decode_peer(NodeId(1), &bytes).unwrap(), expected.clone());
            prop_assert_eq!(batch.into_messages(NodeId(1), to), expected);
        }

        /// A payload cut short or altered decodes to messages or is refused whole, and
        /// never panics; refused, it leaves no record to act on.
        #[test]
        fn cut_or_altered_frames_decode_or_are_refused_whole(
            records in proptest::collection::vec(written(), 1..4),
            cut: prop::sample::Index,
            flip: prop::sample::Index,
            bit in 0u8..8,
        ) {
            let runs = write(&records).take_runs();
            let batch = PeerBatch { msgs: Vec::new(), frame: runs[0].clone() };
            let mut bytes = payload(NodeId(2), &batch);
            let mut into = FrameIn::default();
            let cut_short = &bytes[..cut.index(bytes.len())];
            if decode_peer_into(cut_short, &mut into).is_err() {
                prop_assert!(into.records.is_empty() && into.entries.is_empty());
            }
            let i = flip.index(bytes.len());
            bytes[i] ^= 1 << bit;
            if decode_peer_into(&bytes, &mut into).is_err() {
                prop_assert!(into.records.is_empty() && into.entries.is_empty());
            }
        }
    }

    #[test]
    fn a_truncated_record_refuses_the_whole_payload() {
        let records = [
            Written::Ack(ShardId(1), 2, 3),
            Written::Ack(ShardId(2), 2, 4),
        ];
        let runs = write(&records).take_runs();
        let batch = PeerBatch {
            msgs: Vec::new(),
            frame: runs[0].clone(),
        };
        let bytes = payload(NodeId(2), &batch);
        let mut into = FrameIn::default();
        assert!(decode_peer_into(&bytes, &mut into).is_ok());
        assert_eq!(into.records.len(), 2);
        assert!(decode_peer_into(&bytes[..bytes.len() - 1], &mut into).is_err());
        assert!(into.records.is_empty(), "not even the first record is kept");
        let mut unknown = bytes.clone();
        unknown.extend_from_slice(&[7, 1, 2, 3]);
        assert!(
            decode_peer_into(&unknown, &mut into).is_err(),
            "an unknown record"
        );
    }

    /// Records beyond one datagram go on in further runs, each fitting a datagram with
    /// the frame's head, and together they are every record in order.
    #[test]
    fn records_beyond_a_datagram_are_cut_into_runs_that_fit() {
        let append = |shard: u32| {
            let entries = vec![Entry {
                term: 3,
                index: 5,
                kind: EntryKind::Command,
                data: Bytes::from(vec![shard as u8; 5000]),
            }];
            let a = AppendRef {
                to: NodeId(2),
                term: 3,
                prev_index: 4,
                prev_term: 3,
                last: 5,
                commit: 4,
            };
            Written::Append(ShardId(shard), a, entries)
        };
        let records: Vec<Written> = (0..40).map(append).collect();
        let runs = write(&records).take_runs();
        assert!(runs.len() > 1, "200 KB cannot fit one datagram");
        let mut read = Vec::new();
        for run in runs {
            let batch = PeerBatch {
                msgs: Vec::new(),
                frame: run,
            };
            let bytes = payload(NodeId(u64::MAX), &batch);
            assert!(bytes.len() <= kv_shared::auth::BODY_BYTES_MAX);
            read.extend(decode_peer(NodeId(1), &bytes).unwrap());
        }
        let expected: Vec<GroupMessage> = records
            .iter()
            .map(|w| message(w, NodeId(u64::MAX)))
            .collect();
        assert_eq!(read, expected);
    }
}
