//! How Raft state becomes kv-storage records, and how recovery turns them back into each
//! group's `kv_raft::Restored`. One WAL serves every group; a record names its group.
//!
//! Record kinds:
//! - [`KIND_ENTRIES`]: `EntriesRecord { first_index, entries }`. Writing it truncates the
//!   group's log from `first_index` (a conflicting suffix is replaced), then appends.
//!   An empty one (after a snapshot from the leader replaced the whole log) only truncates.
//! - [`KIND_HARD_STATE`]: a `HardState`, sticky (the storage keeps the latest forever).
//! - [`KIND_ROUND`]: the log writes of many groups in one round, one record for all
//!   (`kv_storage::MANY_GROUPS`): a [`RoundPart`] per group written, each an entries
//!   record as above plus the group's commit index. A group's term and vote still go
//!   to a [`KIND_HARD_STATE`] record, written only when one of them changes; the commit
//!   index (a hint, see [`restore_groups`]) rides along in the round record.
//! - [`KIND_REPLICA`]: a [`ReplicaRecord`], sticky: a replica this node holds beyond its
//!   bootstrap placement (created by a move), or one it no longer holds (removed).
//!   Decoded by [`decode_replica`]; [`decode`] is for the Raft records.
//!
//! Snapshots are stored by `Storage::save_snapshot` as a postcard `kv_raft::Snapshot`
//! (metadata + state machine image).

use crate::core::Room;
use bytes::Bytes;
use kv_raft::{Entry, EntryKind, HardState, Membership, Restored, Snapshot};
use kv_shared::pack::encode_exact;
use kv_shared::registry::METADATA_SHARD;
use kv_shared::varint;
use kv_shared::ShardId;
use kv_storage::{push_covers, split_covers, Record, Recovered, MANY_GROUPS};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Record kind: log entries of one group.
pub const KIND_ENTRIES: u8 = 1;
/// Record kind: the hard state of one group (sticky).
pub const KIND_HARD_STATE: u8 = 2;

/// Record kind: a replica created or removed (see [`ReplicaRecord`]).
pub const KIND_REPLICA: u8 = 3;

/// Record kind: the log writes of many groups in one round (see [`RoundRecord`]).
pub const KIND_ROUND: u8 = 4;

/// Payload of a [`KIND_REPLICA`] record: the latest one of a shard says whether this
/// node holds a replica of it, whatever the bootstrap placement says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReplicaRecord {
    /// A leader adding this node made it create the replica, with an empty membership
    /// (it learns the real one from the leader's snapshot).
    Created,
    /// The replica was removed from the shard by the membership change at `epoch`; its
    /// records are not replayed and it never serves the shard again. Written by earlier
    /// versions: recovery reads it as a [`Tombstone`] whose removal term is unknown.
    Removed {
        /// The index of the change that removed it.
        epoch: u64,
    },
    /// The replica, created by a move, was dropped before the shard's membership or log
    /// ever named it (see `NodeCore`'s forgetting of such replicas): not held, and, with
    /// no tombstone, created again by a later leader's message like a fresh one.
    Forgotten {
        /// Its term when forgotten: a replica created again starts there, so that no
        /// vote it may have given in an earlier term can be given twice.
        term: u64,
    },
    /// The replica applied its own removal, the committed change at `epoch` of term
    /// `epoch_term` (a [`Tombstone`]): its records are not replayed, and the node answers
    /// the shard's vote requests with that index and term, so a voter that missed the
    /// commit stops counting this replica (`kv_raft::MessageBody::Committed`).
    Departed {
        /// The index of the change that removed it.
        epoch: u64,
        /// That change's term.
        epoch_term: u64,
    },
    /// The shard's replica, removed at `epoch` (its tombstone), was created again: a
    /// leader sent this node a snapshot past `epoch` whose membership lists it, so the
    /// shard added it back after its removal. The new life starts empty at the earlier
    /// life's term and vote (its hard-state record), written after
    /// `Storage::take_back_group` deleted the earlier life's snapshot files. Until it
    /// holds a snapshot past `epoch` it is sealed (see `NodeCore`'s recreation), and if
    /// it is dropped before that its tombstone comes back.
    Rejoined {
        /// The index of the change that removed the earlier life.
        epoch: u64,
        /// That change's term, if the tombstone knew it.
        epoch_term: Option<u64>,
    },
}

/// What a node keeps of a replica that applied its own removal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tombstone {
    /// The index of the committed change that removed it.
    pub epoch: u64,
    /// That change's term, unknown for tombstones written before it was recorded.
    pub epoch_term: Option<u64>,
    /// The replica's term and vote when it left (its last hard state): a replica
    /// created again starts with them, so that it never votes twice in one term.
    pub hard_state: HardState,
}

impl Tombstone {
    /// The replica record that writes this tombstone.
    pub fn record(&self) -> ReplicaRecord {
        match self.epoch_term {
            Some(epoch_term) => ReplicaRecord::Departed {
                epoch: self.epoch,
                epoch_term,
            },
            None => ReplicaRecord::Removed { epoch: self.epoch },
        }
    }
}

/// A [`KIND_REPLICA`] record for `shard`.
pub fn replica_record(shard: u32, record: ReplicaRecord) -> Record {
    Record {
        group: shard,
        kind: KIND_REPLICA,
        sticky: true,
        last_index: 0,
        payload: Bytes::from(encode_exact(&record)),
    }
}

/// Decodes a [`KIND_REPLICA`] record (`None` for records of other kinds).
pub fn decode_replica(record: &Record) -> Result<Option<ReplicaRecord>, RecoveryError> {
    if record.kind != KIND_REPLICA {
        return Ok(None);
    }
    postcard::from_bytes(&record.payload)
        .map(Some)
        .map_err(|e| RecoveryError::BadRecord {
            shard: record.group,
            kind: record.kind,
            reason: e.to_string(),
        })
}

/// What recovery says a node holds: see [`hosted_shards`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Hosted {
    /// Each shard held, with the membership its group starts from when no snapshot says
    /// otherwise.
    pub groups: BTreeMap<ShardId, Membership>,
    /// Each shard whose replica here was removed, with its tombstone.
    pub removed: BTreeMap<ShardId, Tombstone>,
    /// Each shard whose created replica was forgotten, with its term then.
    pub forgotten: BTreeMap<ShardId, u64>,
    /// Each shard held again after its removal (`ReplicaRecord::Rejoined`), with the
    /// earlier life's tombstone.
    pub rejoined: BTreeMap<ShardId, Tombstone>,
}

impl Hosted {
    /// The replica of `shard` here was removed: it is held no more, and `tombstone`
    /// stands for it.
    fn bury(&mut self, shard: ShardId, tombstone: Tombstone) {
        self.groups.remove(&shard);
        self.removed.insert(shard, tombstone);
    }
}

/// The shards this node holds after recovery: the bootstrap placement's (`initial`),
/// plus the replicas created (empty membership), minus the removed and forgotten ones.
pub fn hosted_shards(
    recovered: &Recovered,
    shard_count: u32,
    initial: &BTreeMap<ShardId, Membership>,
) -> Result<Hosted, RecoveryError> {
    let mut latest: BTreeMap<ShardId, ReplicaRecord> = BTreeMap::new();
    // The last hard state of every group, hosted or not: a tombstone keeps its term and
    // vote (the records of a removed replica's life are not replayed otherwise).
    let mut hard_states: BTreeMap<ShardId, HardState> = BTreeMap::new();
    for r in &recovered.records {
        if r.kind == KIND_HARD_STATE {
            if let WalRecord::HardState { shard, hard_state } = decode(r)? {
                hard_states.insert(ShardId(shard), hard_state);
            }
        }
        if let Some(record) = decode_replica(r)? {
            // A replica of the metadata group may be created or removed by a move too.
            if r.group >= shard_count && ShardId(r.group) != METADATA_SHARD {
                return Err(RecoveryError::UnknownGroup {
                    shard: r.group,
                    shard_count,
                });
            }
            latest.insert(ShardId(r.group), record);
        }
    }
    let mut hosted = Hosted {
        groups: initial.clone(),
        removed: BTreeMap::new(),
        forgotten: BTreeMap::new(),
        rejoined: BTreeMap::new(),
    };
    for (shard, record) in latest {
        let hard_state = HardState {
            commit: 0,
            ..hard_states.get(&shard).copied().unwrap_or_default()
        };
        match record {
            ReplicaRecord::Created => {
                hosted.groups.entry(shard).or_default();
            }
            // `Removed` is the older tombstone record, from before tombstones kept the
            // term of their removal.
            ReplicaRecord::Removed { epoch } => hosted.bury(
                shard,
                Tombstone {
                    epoch,
                    epoch_term: None,
                    hard_state,
                },
            ),
            ReplicaRecord::Departed { epoch, epoch_term } => hosted.bury(
                shard,
                Tombstone {
                    epoch,
                    epoch_term: Some(epoch_term),
                    hard_state,
                },
            ),
            ReplicaRecord::Rejoined { epoch, epoch_term } => {
                // Empty membership: it learns the real one from the leader's snapshot.
                hosted.groups.insert(shard, Membership::default());
                hosted.rejoined.insert(
                    shard,
                    Tombstone {
                        epoch,
                        epoch_term,
                        hard_state,
                    },
                );
            }
            ReplicaRecord::Forgotten { term } => {
                hosted.groups.remove(&shard);
                hosted.forgotten.insert(shard, term);
            }
        }
    }
    Ok(hosted)
}

/// Payload of a [`KIND_ENTRIES`] record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntriesRecord {
    /// The group's log is truncated from here before `entries` are appended.
    pub first_index: u64,
    /// Entries `first_index..`, contiguous.
    pub entries: Vec<Entry>,
}

/// One group's part of a [`KIND_ROUND`] record.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct RoundPart {
    /// The group.
    pub shard: u32,
    /// As [`EntriesRecord::first_index`]; 0 if the part changes no log (only `commit`).
    pub first_index: u64,
    /// Entries `first_index..`, contiguous.
    pub entries: Vec<Entry>,
    /// The group's commit index when written (0: not known).
    pub commit: u64,
}

/// [`RoundPart`] as postcard encodes it, borrowing the entries: the reference
/// [`RoundRecord::add`]'s hand-written encoding is tested against.
#[cfg(test)]
#[derive(Serialize)]
struct RoundPartRef<'a> {
    shard: u32,
    first_index: u64,
    entries: &'a [Entry],
    commit: u64,
}

/// Builds one [`KIND_ROUND`] record from the log writes of the groups of a round: one
/// encoding buffer, one record header and CRC, one storage write for all of them,
/// rather than an entries and a hard-state record per group.
#[derive(Debug, Default)]
pub struct RoundRecord {
    body: Vec<u8>,
    covers: Vec<(u32, u64)>,
    /// The bytes recent records took, cover tables included: a record starts with
    /// that much room, so neither its parts nor its cover table grow it. Sized from the
    /// last record alone, a round's big record followed a small one and grew by
    /// doubling, copying its parts each time.
    room: Room,
    room_bytes: usize,
}

impl RoundRecord {
    /// True if nothing was added since the last [`RoundRecord::take`].
    pub fn is_empty(&self) -> bool {
        self.body.is_empty()
    }

    /// Bytes added since the last [`RoundRecord::take`] (the payload, less its cover
    /// table).
    pub fn bytes(&self) -> usize {
        self.body.len()
    }

    /// Adds `shard`'s write: its log truncated from `first_index` (0: left as it is)
    /// and `entries` appended, and its commit index.
    pub fn add(&mut self, shard: u32, first_index: u64, entries: &[Entry], commit: u64) {
        debug_assert!(first_index > 0 || entries.is_empty());
        debug_assert!(entries
            .iter()
            .enumerate()
            .all(|(i, e)| e.index == first_index + i as u64));
        if self.body.is_empty() {
            self.body.reserve(self.room_bytes);
        }
        // Written by hand, byte for byte as postcard writes a `RoundPartRef`: serde's
        // walk over every entry's fields was most of what a part cost beyond copying
        // its data, and a round at many shards writes a part per group.
        let body = &mut self.body;
        varint::push(u64::from(shard), body);
        varint::push(first_index, body);
        varint::push(entries.len() as u64, body);
        for e in entries {
            varint::push(e.term, body);
            varint::push(e.index, body);
            push_kind_and_data(e, body);
        }
        varint::push(commit, body);
        if first_index > 0 {
            self.covers
                .push((shard, first_index + entries.len() as u64 - 1));
        }
    }

    /// The record of everything added since the last call, if anything was.
    pub fn take(&mut self) -> Option<Record> {
        if self.body.is_empty() {
            return None;
        }
        let mut payload = std::mem::take(&mut self.body);
        push_covers(&mut payload, &self.covers);
        self.covers.clear();
        self.room_bytes = self.room.update(payload.len());
        Some(Record {
            group: MANY_GROUPS,
            kind: KIND_ROUND,
            sticky: false,
            last_index: 0,
            payload: Bytes::from(payload),
        })
    }
}

/// Appends postcard's encoding of `e`'s kind and then of its data (a length, then the
/// bytes), as the round parts and the peer frames' records carry them.
pub(crate) fn push_kind_and_data(e: &Entry, out: &mut Vec<u8>) {
    match &e.kind {
        EntryKind::Noop => out.push(0),
        EntryKind::Command => out.push(1),
        kind @ EntryKind::ConfChange(_) => {
            *out = postcard::to_extend(kind, std::mem::take(out))
                .expect("an entry kind always encodes");
        }
    }
    varint::push(e.data.len() as u64, out);
    out.extend_from_slice(&e.data);
}

/// A decoded WAL record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WalRecord {
    /// Log entries (see [`EntriesRecord`]).
    Entries {
        /// The group.
        shard: u32,
        /// The entries.
        record: EntriesRecord,
    },
    /// A hard state.
    HardState {
        /// The group.
        shard: u32,
        /// The state.
        hard_state: HardState,
    },
    /// The writes of many groups in one round.
    Round(Vec<RoundPart>),
}

/// Why the records on disk cannot be turned back into Raft state.
#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    /// A record does not decode.
    #[error("group {shard}: record of kind {kind} does not decode: {reason}")]
    BadRecord {
        /// The group.
        shard: u32,
        /// The record kind.
        kind: u8,
        /// Decoder message.
        reason: String,
    },
    /// A snapshot file does not decode.
    #[error("group {shard}: snapshot at index {index} does not decode: {reason}")]
    BadSnapshot {
        /// The group.
        shard: u32,
        /// Its index.
        index: u64,
        /// Decoder message.
        reason: String,
    },
    /// A record names a group this node does not host.
    #[error("record for group {shard}, but the cluster has {shard_count} shards")]
    UnknownGroup {
        /// The group.
        shard: u32,
        /// Shards configured.
        shard_count: u32,
    },
    /// The surviving entries do not continue the snapshot.
    #[error("group {shard}: log resumes at index {found}, expected at most {expected}")]
    Gap {
        /// The group.
        shard: u32,
        /// First index that would continue the snapshot (or 1).
        expected: u64,
        /// First surviving index.
        found: u64,
    },
}

/// An entries record for `shard`; `first_index` is where the log is truncated from.
pub fn entries_record(shard: u32, first_index: u64, entries: Vec<Entry>) -> Record {
    debug_assert!(entries
        .iter()
        .enumerate()
        .all(|(i, e)| e.index == first_index + i as u64));
    let last_index = first_index + entries.len() as u64 - 1;
    let payload = encode_exact(&EntriesRecord {
        first_index,
        entries,
    });
    Record {
        group: shard,
        kind: KIND_ENTRIES,
        sticky: false,
        last_index,
        payload: Bytes::from(payload),
    }
}

/// A hard state record for `shard`.
pub fn hard_state_record(shard: u32, hard_state: &HardState) -> Record {
    Record {
        group: shard,
        kind: KIND_HARD_STATE,
        sticky: true,
        last_index: 0,
        payload: Bytes::from(encode_exact(hard_state)),
    }
}

/// Encodes a Raft snapshot for `Storage::save_snapshot`.
pub fn encode_snapshot(snapshot: &Snapshot) -> Bytes {
    Bytes::from(encode_exact(snapshot))
}

/// Decodes a stored snapshot.
pub fn decode_snapshot(shard: u32, index: u64, data: &[u8]) -> Result<Snapshot, RecoveryError> {
    postcard::from_bytes(data).map_err(|e| RecoveryError::BadSnapshot {
        shard,
        index,
        reason: e.to_string(),
    })
}

/// Decodes one record.
pub fn decode(record: &Record) -> Result<WalRecord, RecoveryError> {
    let bad = |e: postcard::Error| RecoveryError::BadRecord {
        shard: record.group,
        kind: record.kind,
        reason: e.to_string(),
    };
    match record.kind {
        KIND_ENTRIES => {
            let entries: EntriesRecord = postcard::from_bytes(&record.payload).map_err(bad)?;
            // The CRC says the bytes are what was written, not that what was written
            // is a log: check it, so that recovery refuses it rather than Raft panicking.
            if !contiguous(entries.first_index, &entries.entries) || entries.first_index == 0 {
                return Err(RecoveryError::BadRecord {
                    shard: record.group,
                    kind: record.kind,
                    reason: format!(
                        "entries do not run contiguously from index {}",
                        entries.first_index
                    ),
                });
            }
            Ok(WalRecord::Entries {
                shard: record.group,
                record: entries,
            })
        }
        KIND_HARD_STATE => Ok(WalRecord::HardState {
            shard: record.group,
            hard_state: postcard::from_bytes(&record.payload).map_err(bad)?,
        }),
        KIND_ROUND if record.group == MANY_GROUPS => decode_round(record).map(WalRecord::Round),
        other => Err(RecoveryError::BadRecord {
            shard: record.group,
            kind: other,
            reason: "unknown record kind".into(),
        }),
    }
}

/// True if `entries` run contiguously from `first_index`.
fn contiguous(first_index: u64, entries: &[Entry]) -> bool {
    entries
        .iter()
        .enumerate()
        .all(|(i, e)| Some(e.index) == first_index.checked_add(i as u64))
}

/// The parts of a [`KIND_ROUND`] record, each checked as an entries record is.
fn decode_round(record: &Record) -> Result<Vec<RoundPart>, RecoveryError> {
    let bad = |shard: u32, reason: String| RecoveryError::BadRecord {
        shard,
        kind: record.kind,
        reason,
    };
    let (mut body, _) = split_covers(&record.payload).map_err(|e| bad(record.group, e))?;
    let mut parts = Vec::new();
    while !body.is_empty() {
        let (part, rest): (RoundPart, _) =
            postcard::take_from_bytes(body).map_err(|e| bad(record.group, e.to_string()))?;
        let log_ok = if part.first_index == 0 {
            part.entries.is_empty()
        } else {
            contiguous(part.first_index, &part.entries)
        };
        if !log_ok {
            return Err(bad(
                part.shard,
                format!(
                    "entries do not run contiguously from index {}",
                    part.first_index
                ),
            ));
        }
        parts.push(part);
        body = rest;
    }
    Ok(parts)
}

/// Applies an entries record to an in-memory log (entries with ascending, contiguous
/// indexes): truncate from `first_index`, then append. A record that starts past the end
/// leaves a gap; only a snapshot can cover it, so the older entries are dropped.
pub fn apply_entries(log: &mut Vec<Entry>, record: EntriesRecord) {
    let first = record.first_index;
    if let Some(head) = log.first().map(|e| e.index) {
        if first <= head {
            log.clear();
        } else {
            log.truncate((first - head) as usize);
            if log.last().map(|e| e.index + 1) != Some(first) {
                log.clear();
            }
        }
    }
    log.extend(record.entries);
}

/// Rebuilds the Raft state of each hosted group (`hosted`: shard -> its membership
/// before the first conf change) from what the storage recovered. Records of shards of
/// the cluster that are not hosted here are skipped; a shard outside `0..shard_count` is
/// an error, unless it is the metadata group and hosted.
pub fn restore_groups(
    recovered: &Recovered,
    shard_count: u32,
    hosted: &BTreeMap<ShardId, Membership>,
) -> Result<BTreeMap<ShardId, Restored>, RecoveryError> {
    let mut logs: BTreeMap<ShardId, Vec<Entry>> = BTreeMap::new();
    let mut hard: BTreeMap<ShardId, HardState> = BTreeMap::new();
    // The highest commit index a round record carried: a committed index stays
    // committed, so any of them is as good as the latest hard state's.
    let mut commits: BTreeMap<ShardId, u64> = BTreeMap::new();
    let mut snaps: BTreeMap<ShardId, Snapshot> = BTreeMap::new();
    // The metadata group's shard id lies outside `0..shard_count`; hosted, it is a group.
    let check = |shard: u32| {
        let metadata = ShardId(shard) == METADATA_SHARD && hosted.contains_key(&METADATA_SHARD);
        if shard >= shard_count && !metadata {
            Err(RecoveryError::UnknownGroup { shard, shard_count })
        } else {
            Ok(Some(ShardId(shard)).filter(|s| hosted.contains_key(s)))
        }
    };
    for r in recovered.records.iter().filter(|r| r.kind != KIND_REPLICA) {
        match decode(r)? {
            WalRecord::Entries { shard, record } => {
                if let Some(s) = check(shard)? {
                    apply_entries(logs.entry(s).or_default(), record);
                }
            }
            WalRecord::HardState { shard, hard_state } => {
                if let Some(s) = check(shard)? {
                    hard.insert(s, hard_state);
                }
            }
            WalRecord::Round(parts) => {
                for part in parts {
                    let Some(s) = check(part.shard)? else {
                        continue;
                    };
                    if part.first_index > 0 {
                        let record = EntriesRecord {
                            first_index: part.first_index,
                            entries: part.entries,
                        };
                        apply_entries(logs.entry(s).or_default(), record);
                    }
                    let commit = commits.entry(s).or_default();
                    *commit = (*commit).max(part.commit);
                }
            }
        }
    }
    for (shard, index, data) in &recovered.snapshots {
        let Some(s) = check(*shard)? else {
            continue;
        };
        if snaps.get(&s).is_some_and(|have| have.meta.index >= *index) {
            continue;
        }
        snaps.insert(s, decode_snapshot(*shard, *index, data)?);
    }
    let mut out = BTreeMap::new();
    for (&shard, initial_membership) in hosted {
        let mut log = logs.remove(&shard).unwrap_or_default();
        let mut hard_state = hard.remove(&shard).unwrap_or_default();
        let snapshot = snaps.remove(&shard);
        let base = snapshot.as_ref().map_or(0, |s| s.meta.index);
        log.retain(|e| e.index > base);
        if let Some(first) = log.first() {
            if first.index != base + 1 {
                return Err(RecoveryError::Gap {
                    shard: shard.0,
                    expected: base + 1,
                    found: first.index,
                });
            }
        }
        // The commit index is persisted as a hint only; never past what survived.
        let last = log.last().map_or(base, |e| e.index);
        let commit = hard_state.commit.max(commits.remove(&shard).unwrap_or(0));
        hard_state.commit = commit.min(last).max(base);
        out.insert(
            shard,
            Restored {
                hard_state,
                snapshot,
                entries: log,
                initial_membership: initial_membership.clone(),
            },
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kv_raft::{ConfChange, EntryKind, SnapshotMeta};
    use kv_shared::NodeId;

    fn e(index: u64, term: u64) -> Entry {
        Entry {
            term,
            index,
            kind: EntryKind::Command,
            data: Bytes::from(vec![index as u8]),
        }
    }

    /// Every shard `0..shard_count` hosted, with [`members`].
    fn all_hosted(shard_count: u32) -> BTreeMap<ShardId, Membership> {
        (0..shard_count).map(|s| (ShardId(s), members())).collect()
    }

    fn members() -> Membership {
        Membership {
            voters: vec![NodeId(1), NodeId(2), NodeId(3)],
            learners: vec![],
        }
    }

    fn terms(r: &Restored) -> Vec<(u64, u64)> {
        r.entries.iter().map(|e| (e.index, e.term)).collect()
    }

    #[test]
    fn records_round_trip() {
        let r = entries_record(3, 5, vec![e(5, 1), e(6, 2)]);
        assert_eq!(
            (r.group, r.kind, r.sticky, r.last_index),
            (3, KIND_ENTRIES, false, 6)
        );
        match decode(&r).unwrap() {
            WalRecord::Entries { shard, record } => {
                assert_eq!(shard, 3);
                assert_eq!(record.entries, vec![e(5, 1), e(6, 2)]);
            }
            other => panic!("{other:?}"),
        }
        let hs = HardState {
            term: 4,
            vote: NodeId(2),
            commit: 6,
        };
        let r = hard_state_record(1, &hs);
        assert!(r.sticky);
        assert_eq!(
            decode(&r).unwrap(),
            WalRecord::HardState {
                shard: 1,
                hard_state: hs
            }
        );
        let mut bad = r.clone();
        bad.kind = 99;
        assert!(decode(&bad).is_err());
    }

    #[test]
    fn recovery_truncates_conflicting_suffix_and_keeps_latest_hard_state() {
        let records = vec![
            entries_record(0, 1, vec![e(1, 1), e(2, 1), e(3, 1)]),
            hard_state_record(
                0,
                &HardState {
                    term: 1,
                    vote: NodeId(1),
                    commit: 1,
                },
            ),
            entries_record(1, 1, vec![e(1, 1)]),
            // A new leader replaced index 3 onwards.
            entries_record(0, 3, vec![e(3, 2), e(4, 2)]),
            hard_state_record(
                0,
                &HardState {
                    term: 2,
                    vote: NodeId(2),
                    commit: 9,
                },
            ),
        ];
        let rec = Recovered {
            records,
            snapshots: vec![],
            truncated_tail: None,
        };
        let groups = restore_groups(&rec, 2, &all_hosted(2)).unwrap();
        assert_eq!(
            terms(&groups[&ShardId(0)]),
            vec![(1, 1), (2, 1), (3, 2), (4, 2)]
        );
        assert_eq!(groups[&ShardId(0)].hard_state.term, 2);
        assert_eq!(groups[&ShardId(0)].hard_state.vote, NodeId(2));
        assert_eq!(
            groups[&ShardId(0)].hard_state.commit,
            4,
            "commit clamped to the log"
        );
        assert_eq!(terms(&groups[&ShardId(1)]), vec![(1, 1)]);
        assert_eq!(groups[&ShardId(1)].initial_membership, members());
    }

    /// The round record of three groups' writes (entries, a truncation only, a commit
    /// only) decodes to those writes, and its cover table names the groups whose log it
    /// changes with the last index of each, as entries records' `last_index` would.
    #[test]
    fn round_records_round_trip() {
        let mut round = RoundRecord::default();
        assert!(round.take().is_none());
        round.add(3, 5, &[e(5, 1), e(6, 2)], 4);
        round.add(1, 11, &[], 0);
        round.add(0, 0, &[], 9);
        let r = round.take().unwrap();
        assert!(round.is_empty() && round.take().is_none());
        assert_eq!(
            (r.group, r.kind, r.sticky),
            (MANY_GROUPS, KIND_ROUND, false)
        );
        let (_, covers) = split_covers(&r.payload).unwrap();
        assert_eq!(covers.iter().collect::<Vec<_>>(), vec![(3, 6), (1, 10)]);
        let part = |shard, first_index, entries, commit| RoundPart {
            shard,
            first_index,
            entries,
            commit,
        };
        assert_eq!(
            decode(&r).unwrap(),
            WalRecord::Round(vec![
                part(3, 5, vec![e(5, 1), e(6, 2)], 4),
                part(1, 11, vec![], 0),
                part(0, 0, vec![], 9),
            ])
        );
        // The next round starts empty.
        round.add(2, 1, &[e(1, 1)], 0);
        let next = round.take().unwrap();
        assert_eq!(
            decode(&next).unwrap(),
            WalRecord::Round(vec![part(2, 1, vec![e(1, 1)], 0)])
        );
    }

    /// A data dir written before round records (entries and hard-state records) and
    /// after (round records) recovers as one log: a round part truncates from its first
    /// index inside what an entries record or an earlier round part wrote, the term
    /// and vote come from the latest hard-state record, and the commit index is the
    /// highest any record carried, clamped to the log.
    #[test]
    fn recovery_reads_old_and_round_records_together() {
        let hs = |term, vote, commit| HardState {
            term,
            vote: NodeId(vote),
            commit,
        };
        let mut round = RoundRecord::default();
        let mut rounds = Vec::new();
        // Shard 0 overwrites 3.. of what its entries record wrote; shard 1 appends.
        round.add(0, 3, &[e(3, 2), e(4, 2), e(5, 2)], 2);
        round.add(1, 3, &[e(3, 1)], 3);
        rounds.push(round.take().unwrap());
        // Shard 0 overwrites 5 (inside the earlier round part); shard 1 commits only.
        round.add(0, 5, &[e(5, 3)], 4);
        round.add(1, 0, &[], 3);
        rounds.push(round.take().unwrap());
        let records = vec![
            entries_record(0, 1, vec![e(1, 1), e(2, 1), e(3, 1), e(4, 1)]),
            hard_state_record(0, &hs(1, 1, 2)),
            entries_record(1, 1, vec![e(1, 1), e(2, 1)]),
            hard_state_record(1, &hs(1, 1, 1)),
            rounds[0].clone(),
            hard_state_record(0, &hs(3, 2, 0)),
            rounds[1].clone(),
        ];
        let rec = Recovered {
            records,
            ..Recovered::default()
        };
        let groups = restore_groups(&rec, 2, &all_hosted(2)).unwrap();
        let g0 = &groups[&ShardId(0)];
        assert_eq!(terms(g0), vec![(1, 1), (2, 1), (3, 2), (4, 2), (5, 3)]);
        assert_eq!(g0.hard_state, hs(3, 2, 4));
        let g1 = &groups[&ShardId(1)];
        assert_eq!(terms(g1), vec![(1, 1), (2, 1), (3, 1)]);
        assert_eq!(g1.hard_state, hs(1, 1, 3));

        // A commit index past what survived (the entries' record lost, its commit
        // carried by a later record) is clamped to the log.
        let mut round = RoundRecord::default();
        round.add(1, 0, &[], 7);
        let rec = Recovered {
            records: vec![entries_record(1, 1, vec![e(1, 1)]), round.take().unwrap()],
            ..Recovered::default()
        };
        let groups = restore_groups(&rec, 2, &all_hosted(2)).unwrap();
        assert_eq!(groups[&ShardId(1)].hard_state.commit, 1);
    }

    /// What recovery reads from a WAL of one record, not sticky, that the test encoded.
    fn recovered_one(group: u32, kind: u8, last_index: u64, payload: Vec<u8>) -> Recovered {
        let record = Record {
            group,
            kind,
            sticky: false,
            last_index,
            payload: Bytes::from(payload),
        };
        Recovered {
            records: vec![record],
            ..Recovered::default()
        }
    }

    /// A round record starts with the room recent records took, cover table
    /// included, so a big round after a small one is written without growing its
    /// buffer: a round alternates flushes that write many parts with ones that write
    /// few, and growing the buffer copied the parts written so far each time.
    #[test]
    fn a_round_record_starts_with_the_room_recent_ones_took() {
        let big = |i: u64| Entry {
            term: 1,
            index: i,
            kind: EntryKind::Command,
            data: Bytes::from(vec![7u8; 1000]),
        };
        let mut round = RoundRecord::default();
        for shard in 0..8 {
            round.add(shard, 1, &[big(1)], 0);
        }
        let first = round.take().unwrap().payload.len();
        // A small round in between does not shrink the room.
        round.add(0, 2, &[e(2, 1)], 1);
        assert!(round.body.capacity() >= first);
        round.take().unwrap();
        round.add(0, 3, &[big(3)], 0);
        let room = round.body.capacity();
        assert!(room >= first, "{room} < {first}");
        for shard in 1..8 {
            round.add(shard, 3, &[big(3)], 0);
        }
        assert_eq!(round.body.capacity(), room, "the parts grew the buffer");
        let covers = round.covers.clone();
        push_covers(&mut round.body, &covers);
        assert_eq!(
            round.body.capacity(),
            room,
            "the cover table grew the buffer"
        );
    }

    proptest::proptest! {
        /// The hand-written round parts are postcard's encoding of `RoundPartRef`,
        /// byte for byte, at every varint length and with every entry kind, so a WAL
        /// reads the same whichever of the two wrote it.
        #[test]
        fn round_parts_are_written_as_postcard_writes_them(
            parts in proptest::collection::vec(
                (
                    proptest::num::u32::ANY,
                    proptest::prop_oneof![0..300u64, proptest::num::u64::ANY],
                    proptest::collection::vec(
                        (
                            proptest::prop_oneof![0..300u64, proptest::num::u64::ANY],
                            0..4u8,
                            proptest::prop_oneof![0..300u64, proptest::num::u64::ANY],
                            proptest::collection::vec(proptest::num::u8::ANY, 0..300),
                        ),
                        0..4,
                    ),
                    proptest::prop_oneof![0..300u64, proptest::num::u64::ANY],
                ),
                0..5,
            )
        ) {
            let mut round = RoundRecord::default();
            let mut expected = Vec::new();
            for (shard, first_index, entries, commit) in parts {
                let first_index = first_index.clamp(1, u64::MAX / 2);
                let entries: Vec<Entry> = entries
                    .into_iter()
                    .enumerate()
                    .map(|(i, (term, kind, node, data))| Entry {
                        term,
                        index: first_index + i as u64,
                        kind: match kind {
                            0 => EntryKind::Noop,
                            1 => EntryKind::Command,
                            2 => EntryKind::ConfChange(ConfChange::AddLearner(NodeId(node))),
                            _ => EntryKind::ConfChange(ConfChange::RemoveNode(NodeId(node))),
                        },
                        data: Bytes::from(data),
                    })
                    .collect();
                round.add(shard, first_index, &entries, commit);
                let part = RoundPartRef {
                    shard,
                    first_index,
                    entries: &entries,
                    commit,
                };
                expected = postcard::to_extend(&part, expected).unwrap();
            }
            let covers = round.covers.clone();
            match round.take() {
                None => proptest::prop_assert!(expected.is_empty()),
                Some(r) => {
                    push_covers(&mut expected, &covers);
                    proptest::prop_assert_eq!(&r.payload[..], &expected[..]);
                }
            }
        }
    }

    /// A round part whose entries do not follow its first index, or a commit-only part
    /// with entries, is refused, naming the part's shard.
    #[test]
    fn recovery_refuses_a_round_part_that_is_not_a_log() {
        for (first_index, entries) in [(1, vec![e(1, 1), e(3, 1)]), (0, vec![e(1, 1)])] {
            let mut body = Vec::new();
            body = postcard::to_extend(
                &RoundPartRef {
                    shard: 1,
                    first_index,
                    entries: &entries,
                    commit: 0,
                },
                body,
            )
            .unwrap();
            push_covers(&mut body, &[]);
            let rec = recovered_one(MANY_GROUPS, KIND_ROUND, 0, body);
            let err = restore_groups(&rec, 2, &all_hosted(2)).unwrap_err();
            assert!(
                matches!(err, RecoveryError::BadRecord { shard: 1, .. }),
                "{err}"
            );
        }
    }

    #[test]
    fn recovery_starts_after_the_latest_snapshot() {
        let snap = |index: u64| Snapshot {
            meta: SnapshotMeta {
                index,
                term: 1,
                membership: members(),
            },
            data: Bytes::from_static(b"image"),
        };
        let records = vec![
            entries_record(0, 1, (1..=6).map(|i| e(i, 1)).collect()),
            // Snapshot from the leader at 10 replaced the log: only truncates.
            entries_record(0, 11, vec![]),
            entries_record(0, 11, vec![e(11, 2), e(12, 2)]),
        ];
        let rec = Recovered {
            records,
            snapshots: vec![
                (0, 4, encode_snapshot(&snap(4))),
                (0, 10, encode_snapshot(&snap(10))),
            ],
            truncated_tail: None,
        };
        let groups = restore_groups(&rec, 1, &all_hosted(1)).unwrap();
        assert_eq!(
            groups[&ShardId(0)].snapshot.as_ref().unwrap().meta.index,
            10
        );
        assert_eq!(terms(&groups[&ShardId(0)]), vec![(11, 2), (12, 2)]);
    }

    #[test]
    fn records_of_shards_not_hosted_are_skipped() {
        let rec = Recovered {
            records: vec![
                entries_record(0, 1, vec![e(1, 1)]),
                entries_record(1, 1, vec![e(1, 1), e(2, 1)]),
            ],
            snapshots: vec![],
            truncated_tail: None,
        };
        let hosted: BTreeMap<ShardId, Membership> = [(ShardId(1), members())].into();
        let groups = restore_groups(&rec, 2, &hosted).unwrap();
        assert_eq!(groups.keys().copied().collect::<Vec<_>>(), vec![ShardId(1)]);
        assert_eq!(terms(&groups[&ShardId(1)]), vec![(1, 1), (2, 1)]);
    }

    #[test]
    fn recovery_reports_gaps_and_unknown_groups() {
        let rec = Recovered {
            records: vec![entries_record(0, 3, vec![e(3, 1)])],
            snapshots: vec![],
            truncated_tail: None,
        };
        assert!(matches!(
            restore_groups(&rec, 1, &all_hosted(1)),
            Err(RecoveryError::Gap { .. })
        ));
        assert!(matches!(
            restore_groups(&rec, 0, &all_hosted(0)),
            Err(RecoveryError::UnknownGroup { .. })
        ));
    }

    #[test]
    fn empty_entries_record_only_truncates() {
        let mut log = vec![e(1, 1), e(2, 1), e(3, 1)];
        apply_entries(
            &mut log,
            EntriesRecord {
                first_index: 2,
                entries: vec![],
            },
        );
        assert_eq!(log, vec![e(1, 1)]);
    }

    /// Found by the wal_recovery fuzz target: a CRC-valid entries record whose entries
    /// do not follow its first index made `Raft::new` panic at recovery.
    #[test]
    fn recovery_refuses_an_entries_record_that_is_not_contiguous() {
        let payload = postcard::to_stdvec(&EntriesRecord {
            first_index: 1,
            entries: vec![e(1, 1), e(3, 1)],
        })
        .unwrap();
        let recovered = recovered_one(0, KIND_ENTRIES, 3, payload);
        let err = restore_groups(&recovered, 1, &all_hosted(1)).unwrap_err();
        assert!(
            matches!(err, RecoveryError::BadRecord { shard: 0, .. }),
            "{err}"
        );
    }

    /// The hosted set after a restart is the bootstrap placement, plus replicas created,
    /// minus replicas removed, whatever order the records came in; the latest record of
    /// a shard decides. A tombstone keeps the removed replica's last term and vote, and a
    /// shard created again after its removal is held with an empty membership.
    #[test]
    fn hosted_shards_are_placement_plus_created_minus_removed() {
        let initial: BTreeMap<ShardId, Membership> =
            [(ShardId(0), members()), (ShardId(1), members())].into();
        let records = vec![
            replica_record(2, ReplicaRecord::Created),
            replica_record(1, ReplicaRecord::Removed { epoch: 7 }),
            replica_record(3, ReplicaRecord::Created),
            hard_state_record(
                3,
                &HardState {
                    term: 5,
                    vote: kv_shared::NodeId(2),
                    commit: 9,
                },
            ),
            replica_record(
                3,
                ReplicaRecord::Departed {
                    epoch: 9,
                    epoch_term: 4,
                },
            ),
            entries_record(1, 1, vec![e(1, 1)]),
            replica_record(
                0,
                ReplicaRecord::Departed {
                    epoch: 3,
                    epoch_term: 1,
                },
            ),
            replica_record(
                0,
                ReplicaRecord::Rejoined {
                    epoch: 3,
                    epoch_term: Some(1),
                },
            ),
        ];
        let recovered = Recovered {
            records,
            ..Recovered::default()
        };
        let hosted = hosted_shards(&recovered, 4, &initial).unwrap();
        assert_eq!(
            hosted.groups.keys().copied().collect::<Vec<_>>(),
            vec![ShardId(0), ShardId(2)]
        );
        assert_eq!(hosted.groups[&ShardId(2)], Membership::default());
        assert_eq!(
            hosted.groups[&ShardId(0)],
            Membership::default(),
            "created again: it learns its membership from the leader"
        );
        let tombstone = |epoch, epoch_term, term, vote| Tombstone {
            epoch,
            epoch_term,
            hard_state: HardState {
                term,
                vote: kv_shared::NodeId(vote),
                commit: 0,
            },
        };
        assert_eq!(
            hosted.removed,
            [
                (ShardId(1), tombstone(7, None, 0, 0)),
                (ShardId(3), tombstone(9, Some(4), 5, 2))
            ]
            .into()
        );
        assert_eq!(
            hosted.rejoined,
            [(ShardId(0), tombstone(3, Some(1), 0, 0))].into()
        );
        let restored = restore_groups(&recovered, 4, &hosted.groups).unwrap();
        assert!(
            !restored.contains_key(&ShardId(1)),
            "a removed shard is not replayed"
        );
        assert!(
            hosted_shards(&recovered, 3, &initial).is_err(),
            "shard 3 of 3"
        );
    }

    /// A forgotten replica is not held and has no tombstone; created again, its new life
    /// starts with an empty log (the truncation record `create_replica` writes), so the
    /// entries of its earlier life are not replayed into it.
    #[test]
    fn a_forgotten_replica_is_not_held_and_its_next_life_starts_empty() {
        let initial: BTreeMap<ShardId, Membership> = [(ShardId(0), members())].into();
        let mut records = vec![
            replica_record(1, ReplicaRecord::Created),
            entries_record(1, 5, vec![e(5, 2), e(6, 2)]),
            replica_record(1, ReplicaRecord::Forgotten { term: 4 }),
        ];
        let recovered = Recovered {
            records: records.clone(),
            ..Recovered::default()
        };
        let hosted = hosted_shards(&recovered, 2, &initial).unwrap();
        assert!(!hosted.groups.contains_key(&ShardId(1)));
        assert!(hosted.removed.is_empty(), "no tombstone");
        assert_eq!(hosted.forgotten, [(ShardId(1), 4)].into());
        records.push(replica_record(1, ReplicaRecord::Created));
        records.push(entries_record(1, 1, Vec::new()));
        let recovered = Recovered {
            records,
            ..Recovered::default()
        };
        let hosted = hosted_shards(&recovered, 2, &initial).unwrap();
        assert!(hosted.forgotten.is_empty());
        let restored = restore_groups(&recovered, 2, &hosted.groups).unwrap();
        assert!(restored[&ShardId(1)].entries.is_empty());
    }
}
