//! WAL and snapshot-file decoding and recovery: kv-storage over its simulated disk opens
//! segment files that hold a written log (entries, hard-state and round records, and
//! records of any kind with arbitrary payloads) with arbitrary bytes after it (a torn or
//! corrupt tail), or arbitrary bytes as whole segment and snapshot files; then the node
//! core rebuilds its groups from whatever was recovered.
//!
//! Checked: nothing panics; a successful recovery is stable (opening the recovered
//! disk again finds the same records and cuts nothing more); a cut tail reports the
//! bytes it cut.

use crate::input::{push_chunk, Input};
use kv_node::wal::{RoundRecord, KIND_ROUND};
use kv_node::{NodeConfig, NodeCore};
use kv_raft::{Entry, EntryKind};
use kv_shared::NodeId;
use kv_storage::{push_covers, Disk, Record, SimDisk, Storage, WalOptions, MANY_GROUPS};

/// Shards of the node that recovers (records may name others: that is an error, not a
/// panic).
const SHARDS: u32 = 3;
/// Most records one input writes.
const RECORDS_MAX: usize = 64;

pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let mode = input.u8();
    let options = WalOptions {
        segment_bytes_max: 128 + 64 * u64::from(input.u8()),
    };
    let disk = SimDisk::new(u64::from(input.u8()));
    if mode.is_multiple_of(2) {
        write_log_then_garbage(&mut input, &disk, options);
    } else {
        write_raw_files(&mut input, &disk);
    }
    let Ok((storage, recovered)) = Storage::open(disk.clone(), options) else {
        return;
    };
    drop(storage);
    let (_, again) = Storage::open(disk, options).expect("a recovered disk opens again");
    assert_eq!(again.truncated_tail, None, "a second recovery cut more");
    assert_eq!(
        again.records, recovered.records,
        "a second recovery read other records"
    );
    assert_eq!(again.snapshots, recovered.snapshots);
    if let Some(tail) = &recovered.truncated_tail {
        assert!(
            tail.bytes_cut > 0 || tail.offset == 0,
            "a cut of nothing: {tail:?}"
        );
    }
    let config = NodeConfig::for_test(NodeId(1), vec![NodeId(1), NodeId(2)], SHARDS);
    let _ = NodeCore::new(config, recovered);
}

/// Writes records through the storage (valid framing, arbitrary payloads), syncs, and
/// appends the rest of the input raw to the last segment.
fn write_log_then_garbage(input: &mut Input, disk: &SimDisk, options: WalOptions) {
    let (mut storage, _) = Storage::open(disk.clone(), options).expect("an empty disk opens");
    for _ in 0..RECORDS_MAX {
        let record = match input.u8() % 5 {
            0 => break,
            1 => raw_record(input),
            2 => kv_node::wal::hard_state_record(
                u32::from(input.u8() % 4),
                &kv_raft::HardState {
                    term: u64::from(input.u8()),
                    vote: NodeId(u64::from(input.u8() % 3)),
                    commit: u64::from(input.u8()),
                },
            ),
            3 => {
                let _ = storage.sync();
                continue;
            }
            _ => round_record(input),
        };
        let _ = storage.append(&record);
    }
    let _ = storage.sync();
    let last = storage.segment_names().last().cloned();
    drop(storage);
    let garbage = input.rest();
    if let (Some(last), false) = (last, garbage.is_empty()) {
        let mut d = disk.clone();
        d.append(&last, garbage).expect("the sim disk is not full");
        d.sync_file(&last).expect("syncs do not fail");
    }
}

/// A record of any kind and group with an arbitrary payload, as the storage takes one: a
/// many-groups record ([`MANY_GROUPS`]) is not sticky and ends with a cover table.
fn raw_record(input: &mut Input) -> Record {
    let group = match input.u8() % 5 {
        4 => MANY_GROUPS,
        g => u32::from(g),
    };
    let kind = input.u8() % (KIND_ROUND + 1);
    let sticky = input.u8() % 2 == 1 && group != MANY_GROUPS;
    let last_index = u64::from(input.u16());
    let mut payload = input.chunk().to_vec();
    if group == MANY_GROUPS {
        let covers: Vec<(u32, u64)> = (0..input.u8() % 3)
            .map(|_| (u32::from(input.u8() % 4), u64::from(input.u16())))
            .collect();
        push_covers(&mut payload, &covers);
    }
    Record {
        group,
        kind,
        sticky,
        last_index,
        payload: payload.into(),
    }
}

/// A round record as the node core builds it: one to four parts, each a group (sometimes
/// one the node does not host), a log write (none when its first index is 0: a part
/// that only carries a commit index) and a commit index.
fn round_record(input: &mut Input) -> Record {
    let mut round = RoundRecord::default();
    for _ in 0..=input.u8() % 4 {
        let shard = u32::from(input.u8() % 4);
        let first_index = u64::from(input.u16());
        let count = if first_index == 0 { 0 } else { input.u8() % 4 };
        let entries: Vec<Entry> = (0..u64::from(count))
            .map(|i| Entry {
                term: u64::from(input.u8()),
                index: first_index + i,
                kind: if input.u8() % 2 == 1 {
                    EntryKind::Command
                } else {
                    EntryKind::Noop
                },
                data: bytes::Bytes::copy_from_slice(input.chunk()),
            })
            .collect();
        round.add(shard, first_index, &entries, u64::from(input.u16()));
    }
    round.take().expect("a round with a part is a record")
}

/// Writes up to two segment files and one snapshot file of arbitrary bytes.
fn write_raw_files(input: &mut Input, disk: &SimDisk) {
    let mut d = disk.clone();
    let snapshot_name = format!("snap-{:010}-{:020}.snap", input.u8() % 4, input.u8());
    let names = [
        "wal-00000000000000000001.log".to_string(),
        "wal-00000000000000000002.log".to_string(),
        snapshot_name,
    ];
    for name in &names {
        let bytes = input.chunk();
        if bytes.is_empty() {
            continue;
        }
        d.create(name).expect("create on the sim disk");
        d.append(name, bytes).expect("the sim disk is not full");
        d.sync_file(name).expect("syncs do not fail");
    }
    d.sync_dir().expect("syncs do not fail");
}

pub fn seeds() -> Vec<Vec<u8>> {
    let mut seed = vec![0, 1, 7];
    seed.extend_from_slice(&[2, 0, 3, 0, 1]);
    let entries = kv_node::wal::entries_record(
        0,
        1,
        vec![kv_raft::Entry {
            term: 3,
            index: 1,
            kind: kv_raft::EntryKind::Noop,
            data: bytes::Bytes::new(),
        }],
    );
    seed.extend_from_slice(&[1, 0, entries.kind, 0, 1, 0]);
    push_chunk(&mut seed, &entries.payload);
    seed.extend_from_slice(&[3, 0]);
    seed.extend_from_slice(b"\x40\x00\x00\x00torn tail");
    vec![seed, round_seed()]
}

/// A log of one round record of three parts (shard 0: two entries, shard 1: one, shard
/// 2: only a commit index), synced, then a torn tail.
fn round_seed() -> Vec<u8> {
    let mut seed = vec![0, 1, 7];
    seed.extend_from_slice(&[4, 2]);
    seed.extend_from_slice(&[0, 1, 0, 2, 1, 0, 0, 0, 1, 1]);
    push_chunk(&mut seed, b"put");
    seed.extend_from_slice(&[2, 0]);
    seed.extend_from_slice(&[1, 1, 0, 1, 2, 0, 0, 0, 1, 0]);
    seed.extend_from_slice(&[2, 0, 0, 0, 0]);
    seed.extend_from_slice(&[3, 0]);
    seed.extend_from_slice(b"\x40\x00torn");
    seed
}

#[cfg(test)]
mod tests {
    use super::*;
    use kv_node::wal::{decode, WalRecord};

    /// The round seed reaches a round record on disk, as the node core writes them.
    #[test]
    fn the_round_seed_writes_a_round_record_of_three_parts() {
        let seed = round_seed();
        let mut input = Input::new(&seed);
        assert_eq!(input.u8() % 2, 0, "the written-log mode");
        let options = WalOptions {
            segment_bytes_max: 128 + 64 * u64::from(input.u8()),
        };
        let disk = SimDisk::new(u64::from(input.u8()));
        write_log_then_garbage(&mut input, &disk, options);
        let (_, recovered) = Storage::open(disk, options).expect("the seed's log opens");
        let rounds: Vec<_> = (recovered.records.iter())
            .filter(|r| r.kind == KIND_ROUND)
            .map(|r| decode(r).expect("a round record decodes"))
            .collect();
        let [WalRecord::Round(parts)] = &rounds[..] else {
            panic!("one round record, found {rounds:?}");
        };
        let shape: Vec<_> = (parts.iter())
            .map(|p| (p.shard, p.first_index, p.entries.len(), p.commit))
            .collect();
        assert_eq!(shape, [(0, 1, 2, 2), (1, 1, 1, 1), (2, 0, 0, 0)]);
        assert_eq!(&parts[0].entries[1].data[..], b"put");
    }
}
