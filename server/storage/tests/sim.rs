//! SimDisk-only properties: a crash loses exactly the unsynced data and never invents or
//! reorders any, and one seed always produces the same files.

mod common;

use std::collections::BTreeMap;

use bytes::Bytes;
use common::without_repeats;
use kv_storage::{Disk, Record, SimDisk, Storage, StorageError, WalOptions};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    Append {
        group: u32,
        sticky: bool,
        len: usize,
    },
    /// Several appends through `Storage::append_all` (one write per segment).
    AppendAll(Vec<(u32, bool, usize)>),
    Sync,
    Crash,
    Compact {
        group: u32,
    },
    Snapshot {
        group: u32,
    },
    Full(bool),
    /// `Storage::preallocate` this many bytes ahead: later records are written over
    /// synced zeros.
    Preallocate(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0..3u32, prop::bool::weighted(0.2), 0..120usize)
            .prop_map(|(group, sticky, len)| Op::Append { group, sticky, len }),
        3 => prop::collection::vec((0..3u32, prop::bool::weighted(0.2), 0..120usize), 1..6)
            .prop_map(Op::AppendAll),
        3 => Just(Op::Sync),
        1 => Just(Op::Crash),
        1 => (0..3u32).prop_map(|group| Op::Compact { group }),
        1 => (0..3u32).prop_map(|group| Op::Snapshot { group }),
        1 => prop::bool::weighted(0.3).prop_map(Op::Full),
        2 => (0..300u64).prop_map(Op::Preallocate),
    ]
}

/// What the test knows must be on disk, kept next to the storage under test.
struct Model {
    /// Every record appended successfully, in order (replaced by what recovery returns
    /// after a crash, since that is what the log then is).
    log: Vec<Record>,
    /// How many records of `log` were covered by a successful sync.
    durable: usize,
    /// Highest index appended so far, per group (entries get increasing indexes).
    next_index: BTreeMap<u32, u64>,
    /// Index each group was compacted or snapshotted to (storage also takes the
    /// snapshot files' indexes as compaction points when it reopens).
    compacted: BTreeMap<u32, u64>,
    /// Latest successfully saved snapshot per group.
    snapshots: BTreeMap<u32, (u64, Bytes)>,
    /// A unique number per record, so a copy can never pass for another record.
    serial: u64,
}

impl Model {
    /// A new record with a unique payload; entries get the group's next index.
    fn record(&mut self, group: u32, sticky: bool, len: usize) -> Record {
        self.serial += 1;
        let mut payload = self.serial.to_le_bytes().to_vec();
        payload.resize(8 + len, group as u8);
        let last_index = if sticky {
            0
        } else {
            let i = self.next_index.entry(group).or_insert(0);
            *i += 1;
            *i
        };
        Record {
            group,
            kind: if sticky { 9 } else { 1 },
            sticky,
            last_index,
            payload: payload.into(),
        }
    }
}

/// Runs `ops` on a fresh `SimDisk` and checks every crash recovery against the model.
/// With `compaction` off, recovery must return exactly a prefix of the log that holds
/// every synced record; with it on, records covered by a compaction may be missing.
fn run(seed: u64, ops: &[Op], compaction: bool) -> Result<(), TestCaseError> {
    let options = WalOptions {
        segment_bytes_max: 400,
    };
    let disk = SimDisk::new(seed);
    let (mut storage, _) = Storage::open(disk.clone(), options).unwrap();
    let mut m = Model {
        log: Vec::new(),
        durable: 0,
        next_index: BTreeMap::new(),
        compacted: BTreeMap::new(),
        snapshots: BTreeMap::new(),
        serial: 0,
    };
    for op in ops {
        match op.clone() {
            Op::Append { group, sticky, len } => {
                let record = m.record(group, sticky, len);
                match storage.append(&record) {
                    Ok(()) => m.log.push(record),
                    Err(StorageError::DiskFull { .. }) => {}
                    Err(e) => return Err(TestCaseError::fail(format!("append: {e}"))),
                }
            }
            Op::AppendAll(specs) => {
                let records: Vec<Record> = specs
                    .into_iter()
                    .map(|(group, sticky, len)| m.record(group, sticky, len))
                    .collect();
                let refs: Vec<&Record> = records.iter().collect();
                let appended = match storage.append_all(&refs) {
                    Ok(()) => records.len(),
                    Err(p) if matches!(p.error, StorageError::DiskFull { .. }) => p.appended,
                    Err(p) => return Err(TestCaseError::fail(format!("append_all: {p}"))),
                };
                m.log.extend(records.into_iter().take(appended));
            }
            Op::Sync => {
                storage.sync().unwrap();
                m.durable = m.log.len();
            }
            Op::Full(full) => disk.set_full(full),
            // Changes no record, and makes none durable as far as the model knows (the
            // directory entry of a new segment may still be unsynced).
            Op::Preallocate(ahead) => match storage.preallocate(ahead) {
                Ok(_) | Err(StorageError::DiskFull { .. }) => {}
                Err(e) => return Err(TestCaseError::fail(format!("preallocate: {e}"))),
            },
            Op::Compact { group } if compaction => {
                let to = m.next_index.get(&group).copied().unwrap_or(0);
                storage.compact(group, to).unwrap();
                m.compacted.insert(group, to);
            }
            Op::Snapshot { group } if compaction => {
                let index = m.next_index.get(&group).copied().unwrap_or(0);
                let data = Bytes::from(format!("snapshot {group} at {index}"));
                match storage.save_snapshot(group, index, &data) {
                    Ok(()) => {
                        let covered = m.compacted.entry(group).or_insert(0);
                        *covered = (*covered).max(index);
                        let keep = m.snapshots.get(&group).is_none_or(|(i, _)| *i <= index);
                        if keep {
                            m.snapshots.insert(group, (index, data));
                        }
                    }
                    Err(StorageError::DiskFull { .. }) => {}
                    Err(e) => return Err(TestCaseError::fail(format!("snapshot: {e}"))),
                }
            }
            Op::Compact { .. } | Op::Snapshot { .. } => {}
            Op::Crash => {
                drop(storage);
                disk.crash();
                disk.set_full(false);
                let (s, recovered) = Storage::open(disk.clone(), options)
                    .map_err(|e| TestCaseError::fail(format!("reopen after crash: {e}")))?;
                storage = s;
                let got = without_repeats(&recovered.records);
                check_recovery(&m, &got, compaction)?;
                let snapshots: BTreeMap<u32, (u64, Bytes)> = recovered
                    .snapshots
                    .into_iter()
                    .map(|(g, i, d)| (g, (i, d)))
                    .collect();
                prop_assert_eq!(&snapshots, &m.snapshots);
                m.log = got;
                m.durable = m.log.len();
            }
        }
    }
    Ok(())
}

fn check_recovery(m: &Model, got: &[Record], compaction: bool) -> Result<(), TestCaseError> {
    if !compaction {
        prop_assert!(
            got.len() >= m.durable,
            "lost synced records: {} < {}",
            got.len(),
            m.durable
        );
        prop_assert!(
            m.log.starts_with(got),
            "recovered records are not a prefix of the log"
        );
        return Ok(());
    }
    // Non-sticky records: in log order (a subsequence), nothing invented, and every
    // synced one that no compaction covers is there.
    let plain = |r: &&Record| !r.sticky;
    let got_plain: Vec<&Record> = got.iter().filter(plain).collect();
    let mut pos = 0;
    for r in &got_plain {
        let found = m.log[pos..].iter().position(|l| l == *r);
        prop_assert!(
            found.is_some(),
            "recovered a record not in the log, or out of order: {:?}",
            r
        );
        pos += found.unwrap() + 1;
    }
    for r in m.log[..m.durable].iter().filter(plain) {
        let covered = r.last_index <= m.compacted.get(&r.group).copied().unwrap_or(0);
        prop_assert!(
            covered || got_plain.contains(&r),
            "lost synced record {:?}",
            r
        );
    }
    // Sticky records: for each group, the latest synced one or a later one survives,
    // and it is one that was really appended.
    let latest = |records: &[Record]| -> BTreeMap<u32, Record> {
        records
            .iter()
            .filter(|r| r.sticky)
            .map(|r| (r.group, r.clone()))
            .collect()
    };
    let got_latest = latest(got);
    for (group, want) in latest(&m.log[..m.durable]) {
        let Some(have) = got_latest.get(&group) else {
            return Err(TestCaseError::fail(format!(
                "lost the sticky record of group {group}"
            )));
        };
        let at_have = m.log.iter().position(|l| l == have);
        let at_want = m
            .log
            .iter()
            .position(|l| *l == want)
            .expect("want comes from the log");
        prop_assert!(
            at_have.is_some_and(|h| h >= at_want),
            "group {} sticky went back in time or was invented",
            group
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn crash_loses_only_unsynced_records(seed in any::<u64>(), ops in prop::collection::vec(op(), 1..80)) {
        run(seed, &ops, false)?;
    }

    #[test]
    fn crash_with_compaction_keeps_every_uncovered_synced_record(
        seed in any::<u64>(),
        ops in prop::collection::vec(op(), 1..80),
    ) {
        run(seed, &ops, true)?;
    }
}

/// The files after a fixed, fault-heavy script, with their contents.
fn script(seed: u64) -> Vec<(String, Vec<u8>)> {
    // Segments big enough that unsynced appends land in a segment whose directory
    // entry is durable: only then does a crash have a choice to make.
    let options = WalOptions {
        segment_bytes_max: 2000,
    };
    let disk = SimDisk::new(seed);
    let (mut s, _) = Storage::open(disk.clone(), options).unwrap();
    for round in 0..6u64 {
        for i in 0..7u64 {
            let r = common::entry((i % 3) as u32, round * 10 + i + 1, 20 + (i as usize * 7));
            let _ = s.append(&r);
        }
        s.sync().unwrap();
        disk.set_full(round == 2);
        for i in 0..3u64 {
            let _ = s.append(&common::entry(1, 100 + round * 10 + i, 50));
        }
        disk.set_full(false);
        if round % 2 == 1 {
            s.compact(0, round * 10).unwrap();
        }
        drop(s);
        disk.crash();
        s = Storage::open(disk.clone(), options).unwrap().0;
    }
    let mut d = disk.clone();
    disk.files()
        .into_iter()
        .map(|(name, _)| {
            let data = d.read(&name).unwrap();
            (name, data)
        })
        .collect()
}

#[test]
fn same_seed_same_files() {
    for seed in [0, 1, 42, u64::MAX] {
        assert_eq!(script(seed), script(seed), "seed {seed}");
    }
}

#[test]
fn the_seed_decides_what_a_crash_keeps() {
    let outcomes: std::collections::BTreeSet<Vec<(String, Vec<u8>)>> =
        (0..20).map(script).collect();
    assert!(
        outcomes.len() > 1,
        "20 seeds all gave the same files: the seed is not used"
    );
}

#[test]
fn one_sync_is_one_fsync_for_all_groups() {
    let disk = SimDisk::new(1);
    let (mut s, _) = Storage::open(disk.clone(), WalOptions::default()).unwrap();
    let before = disk.stats();
    for group in 0..50 {
        s.append(&common::entry(group, 1, 100)).unwrap();
        s.append(&common::sticky(group, "hard state")).unwrap();
    }
    s.sync().unwrap();
    let after = disk.stats();
    assert_eq!(
        (
            after.file_syncs - before.file_syncs,
            after.dir_syncs - before.dir_syncs
        ),
        (1, 0)
    );
    // A sync with nothing new costs nothing.
    s.sync().unwrap();
    assert_eq!(disk.stats().file_syncs, after.file_syncs);
}

#[test]
fn crash_right_after_a_roll_keeps_the_closed_segment_whole() {
    // The roll fsyncs the old segment first, so losing the new segment entirely (its
    // directory entry was never synced) loses only the records after the roll.
    for seed in 0..30 {
        let disk = SimDisk::new(seed);
        let options = WalOptions {
            segment_bytes_max: 100,
        };
        let (mut s, _) = Storage::open(disk.clone(), options).unwrap();
        s.append(&common::entry(0, 1, 60)).unwrap();
        s.append(&common::entry(0, 2, 60)).unwrap(); // rolls
        drop(s);
        disk.crash();
        let (_, rec) = Storage::open(disk.clone(), options).unwrap();
        assert!(
            !rec.records.is_empty(),
            "seed {seed}: the record before the roll was lost"
        );
        assert_eq!(rec.records[0], common::entry(0, 1, 60), "seed {seed}");
    }
}

/// Found by the property test: a crash tore the sticky copies at the head of the newest
/// segment (its name was durable, its bytes not), recovery continued appending to it,
/// and a compaction then deleted the older segments that held the only full copies.
#[test]
fn regression_torn_sticky_copies_then_compaction() {
    use Op::*;
    let a = |group, sticky, len| Append { group, sticky, len };
    let mut ops = vec![
        a(0, false, 0),
        a(0, false, 53),
        a(0, false, 40),
        a(0, false, 6),
        a(0, true, 2),
    ];
    ops.extend([
        a(0, false, 47),
        a(0, false, 9),
        a(0, false, 40),
        a(0, false, 82),
        a(0, false, 88),
    ]);
    ops.extend([
        a(0, true, 64),
        a(0, false, 99),
        a(1, true, 57),
        a(2, true, 105),
        a(0, false, 27),
    ]);
    ops.extend([
        a(0, false, 38),
        Snapshot { group: 0 },
        Sync,
        a(1, false, 0),
        a(0, true, 0),
    ]);
    ops.extend([
        Snapshot { group: 0 },
        Sync,
        a(0, false, 0),
        Snapshot { group: 1 },
        Crash,
    ]);
    ops.extend([Compact { group: 0 }, Snapshot { group: 0 }, Crash]);
    run(14132563133504977499, &ops, true).unwrap();
}

/// The running-storage side of the same hazard: sticky copies at the head of a new
/// segment are not durable yet when a compaction deletes the older segments, and a
/// later directory fsync (here: a snapshot save) makes the deletion durable.
#[test]
fn compaction_never_relies_on_unsynced_sticky_copies() {
    for seed in 0..40 {
        let disk = SimDisk::new(seed);
        let options = WalOptions {
            segment_bytes_max: 100,
        };
        let (mut s, _) = Storage::open(disk.clone(), options).unwrap();
        s.append(&common::sticky(1, "hard state")).unwrap();
        s.append(&common::entry(1, 1, 60)).unwrap();
        s.sync().unwrap();
        s.append(&common::entry(1, 2, 60)).unwrap(); // rolls: copies not yet synced
        s.save_snapshot(1, 2, b"snap").unwrap();
        s.compact(1, 2).unwrap();
        s.save_snapshot(2, 1, b"other").unwrap();
        drop(s);
        disk.crash();
        let (_, rec) = Storage::open(disk.clone(), options).unwrap();
        assert!(
            rec.records.contains(&common::sticky(1, "hard state")),
            "seed {seed}: sticky record lost"
        );
    }
}

/// A killed process leaves its unsynced writes in the page cache, where the next open
/// reads them; the node then acts on them (a vote, say), so open must make them durable
/// before a power loss can take them back.
#[test]
fn what_open_reads_after_a_process_crash_survives_a_later_power_loss() {
    for seed in 0..20 {
        let disk = SimDisk::new(seed);
        let options = WalOptions::default();
        let (mut s, _) = Storage::open(disk.clone(), options).unwrap();
        s.append(&common::sticky(3, "voted for node 2 in term 5"))
            .unwrap();
        s.append(&common::entry(3, 1, 30)).unwrap();
        drop(s); // kill -9: no sync, but no power loss either
        let (_, first) = Storage::open(disk.clone(), options).unwrap();
        assert_eq!(first.records.len(), 2, "seed {seed}");
        disk.crash();
        let (_, second) = Storage::open(disk.clone(), options).unwrap();
        assert_eq!(
            without_repeats(&second.records),
            first.records,
            "seed {seed}"
        );
    }
}

/// A disk that counts its writes (each is one write(2) on the real disk).
#[derive(Debug)]
struct CountingDisk {
    inner: SimDisk,
    appends: std::rc::Rc<std::cell::Cell<u64>>,
}

impl Disk for CountingDisk {
    fn create(&mut self, name: &str) -> Result<(), StorageError> {
        self.inner.create(name)
    }
    fn append(&mut self, name: &str, data: &[u8]) -> Result<(), StorageError> {
        self.appends.set(self.appends.get() + 1);
        self.inner.append(name, data)
    }
    fn write_at(&mut self, name: &str, offset: u64, data: &[u8]) -> Result<(), StorageError> {
        self.appends.set(self.appends.get() + 1);
        self.inner.write_at(name, offset, data)
    }
    fn read(&mut self, name: &str) -> Result<Vec<u8>, StorageError> {
        self.inner.read(name)
    }
    fn sync_file(&mut self, name: &str) -> Result<(), StorageError> {
        self.inner.sync_file(name)
    }
    fn rename(&mut self, from: &str, to: &str) -> Result<(), StorageError> {
        self.inner.rename(from, to)
    }
    fn remove(&mut self, name: &str) -> Result<(), StorageError> {
        self.inner.remove(name)
    }
    fn list(&mut self) -> Result<Vec<String>, StorageError> {
        self.inner.list()
    }
    fn sync_dir(&mut self) -> Result<(), StorageError> {
        self.inner.sync_dir()
    }
    fn len(&mut self, name: &str) -> Result<u64, StorageError> {
        self.inner.len(name)
    }
    fn truncate(&mut self, name: &str, len: u64) -> Result<(), StorageError> {
        self.inner.truncate(name, len)
    }
}

#[test]
fn append_all_is_one_write_per_segment() {
    let appends = std::rc::Rc::new(std::cell::Cell::new(0));
    let disk = CountingDisk {
        inner: SimDisk::new(7),
        appends: appends.clone(),
    };
    let (mut s, _) = Storage::open(disk, WalOptions::default()).unwrap();
    let records: Vec<Record> = (1..=16)
        .map(|i| Record {
            group: i % 8,
            kind: 1,
            sticky: false,
            last_index: u64::from(i),
            payload: vec![i as u8; 120].into(),
        })
        .collect();
    let before = appends.get();
    s.append_all(&records.iter().collect::<Vec<_>>()).unwrap();
    assert_eq!(
        appends.get() - before,
        1,
        "16 records of 8 groups, one write"
    );
    s.sync().unwrap();
}

/// A group's life on a node ends (its tombstone, a sticky record, is appended, synced,
/// then `remove_group`) and a new one starts (`take_back_group`, then the new life's
/// records and snapshot). A power loss at any point recovers one consistent life: while
/// the tombstone is lost, the first life's snapshot is there to go with its log; once the
/// new life's first record survives, no snapshot of the first life does.
#[test]
fn a_crash_anywhere_in_a_removal_and_take_back_recovers_one_life() {
    type Step<'a> = dyn Fn(&mut Storage<SimDisk>) + 'a;
    const STEPS: usize = 8;
    let tombstone = common::sticky(4, "removed at 3");
    let reborn = common::sticky(4, "created again");
    for crash_after in 0..=STEPS {
        for seed in 0..20 {
            let disk = SimDisk::new(seed);
            let options = WalOptions {
                segment_bytes_max: 100,
            };
            let (mut s, _) = Storage::open(disk.clone(), options).unwrap();
            for i in 1..=3 {
                s.append(&common::entry(4, i, 60)).unwrap();
            }
            s.sync().unwrap();
            s.save_snapshot(4, 2, b"first").unwrap();
            s.compact(4, 2).unwrap();
            let steps: [&Step<'_>; STEPS] = [
                &|s| s.append(&tombstone).unwrap(),
                &|s| s.sync().unwrap(),
                &|s| s.remove_group(4).unwrap(),
                &|s| s.take_back_group(4).unwrap(),
                &|s| s.append(&reborn).unwrap(),
                &|s| s.append(&common::entry(4, 9, 60)).unwrap(),
                &|s| s.sync().unwrap(),
                &|s| s.save_snapshot(4, 9, b"second").unwrap(),
            ];
            for step in &steps[..crash_after] {
                step(&mut s);
            }
            drop(s);
            disk.crash();
            let (_, rec) = Storage::open(disk.clone(), options).unwrap();
            let at = format!("crash after step {crash_after}, seed {seed}");
            let has = |r: &Record| rec.records.contains(r);
            let snapshots: Vec<(u64, &[u8])> = rec
                .snapshots
                .iter()
                .filter(|(g, _, _)| *g == 4)
                .map(|(_, i, d)| (*i, &d[..]))
                .collect();
            if has(&reborn) {
                assert!(has(&tombstone), "{at}: the new life without the tombstone");
                assert!(
                    snapshots.iter().all(|(i, _)| *i == 9),
                    "{at}: the first life's snapshot came back: {snapshots:?}"
                );
            } else if !has(&tombstone) {
                assert_eq!(snapshots, vec![(2, &b"first"[..])], "{at}");
            }
            if crash_after >= 7 {
                assert!(has(&common::entry(4, 9, 60)), "{at}: a synced record lost");
            }
        }
    }
}
