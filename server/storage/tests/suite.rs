//! The storage test suite, run once over the real file system and once over `SimDisk`:
//! what holds on one disk must hold on the other.

mod common;

use common::{entry, many, open, sticky, Harness, RealHarness, SimHarness};
use kv_storage::{Disk, Record, StorageError, TruncatedTail, WalOptions, RECORD_PAYLOAD_BYTES_MAX};

/// A segment holds exactly one 60-byte-payload record (20-byte header + 84-byte
/// record > 100), which makes segment boundaries easy to reason about.
const ONE_RECORD_PER_SEGMENT: WalOptions = WalOptions {
    segment_bytes_max: 100,
};

fn append_sync_reopen<H: Harness>(h: &H) {
    let (mut s, rec) = open(h, WalOptions::default()).unwrap();
    assert!(rec.records.is_empty() && rec.snapshots.is_empty() && rec.truncated_tail.is_none());
    let written: Vec<Record> = (1..=20)
        .map(|i| entry(i as u32 % 3, i, 10 + i as usize))
        .collect();
    for r in &written {
        s.append(r).unwrap();
    }
    s.sync().unwrap();
    drop(s);
    let (mut s, rec) = open(h, WalOptions::default()).unwrap();
    assert_eq!(rec.records, written);
    assert_eq!(rec.truncated_tail, None);
    // The reopened log keeps growing where it left off.
    s.append(&entry(9, 21, 5)).unwrap();
    s.sync().unwrap();
    drop(s);
    let (_, rec) = open(h, WalOptions::default()).unwrap();
    assert_eq!(rec.records.len(), 21);
    assert_eq!(rec.records[20], entry(9, 21, 5));
}

fn segments_roll_and_replay_in_order<H: Harness>(h: &H) {
    let (mut s, _) = open(h, ONE_RECORD_PER_SEGMENT).unwrap();
    let written: Vec<Record> = (1..=5).map(|i| entry(0, i, 60)).collect();
    for r in &written {
        s.append(r).unwrap();
    }
    s.sync().unwrap();
    assert_eq!(s.segment_names().len(), 5);
    drop(s);
    let (s, rec) = open(h, ONE_RECORD_PER_SEGMENT).unwrap();
    assert_eq!(rec.records, written);
    assert_eq!(s.segment_names().len(), 5);
}

fn sticky_records_survive_segment_deletion<H: Harness>(h: &H) {
    let (mut s, _) = open(h, ONE_RECORD_PER_SEGMENT).unwrap();
    s.append(&sticky(1, "term 1")).unwrap();
    s.append(&sticky(2, "term 7")).unwrap();
    for i in 1..=4 {
        s.append(&entry(1, i, 60)).unwrap();
    }
    s.append(&sticky(1, "term 2")).unwrap();
    for i in 5..=8 {
        s.append(&entry(1, i, 60)).unwrap();
    }
    s.sync().unwrap();
    let before = s.segment_names().len();
    s.compact(1, 8).unwrap();
    assert_eq!(
        s.segment_names().len(),
        1,
        "all closed segments were covered (had {before})"
    );
    drop(s);
    let (_, rec) = open(h, ONE_RECORD_PER_SEGMENT).unwrap();
    let stickies: Vec<&Record> = rec.records.iter().filter(|r| r.sticky).collect();
    assert_eq!(stickies, vec![&sticky(1, "term 2"), &sticky(2, "term 7")]);
    assert_eq!(rec.records.last(), Some(&entry(1, 8, 60)));
}

fn compaction_deletes_exactly_the_right_segments<H: Harness>(h: &H) {
    let (mut s, _) = open(h, ONE_RECORD_PER_SEGMENT).unwrap();
    // seg 1: group 2 up to 1 (an idle group); seg 2: group 1 up to 10;
    // seg 3: group 1 up to 5 (a new leader overwrote 5..10); seg 4: group 1 up to 12
    // (active, never deleted).
    for r in [
        entry(2, 1, 60),
        entry(1, 10, 60),
        entry(1, 5, 60),
        entry(1, 12, 60),
    ] {
        s.append(&r).unwrap();
    }
    s.sync().unwrap();
    let names = s.segment_names();
    assert_eq!(names.len(), 4);

    // Seg 3 alone is covered by 6, but seg 2 (kept: 10 > 6) would resurrect entries 6..10
    // that seg 3 overwrote, so seg 3 stays too.
    s.compact(1, 6).unwrap();
    assert_eq!(s.segment_names(), names);

    // Group 1 covered to 10: segs 2 and 3 go; seg 1 is pinned by the idle group 2.
    s.compact(1, 10).unwrap();
    assert_eq!(s.segment_names(), vec![names[0].clone(), names[3].clone()]);

    // Group 2 snapshots: seg 1 goes; the active seg 4 stays even though 12 <= 20.
    s.compact(2, 1).unwrap();
    s.compact(1, 20).unwrap();
    assert_eq!(s.segment_names(), vec![names[3].clone()]);
    drop(s);
    let (s, rec) = open(h, ONE_RECORD_PER_SEGMENT).unwrap();
    assert_eq!(s.segment_names(), vec![names[3].clone()]);
    assert_eq!(rec.records, vec![entry(1, 12, 60)]);
}

/// A record of many groups comes back as written and pins its segment for each group
/// in its cover table until that group's snapshot passes its index there, and the
/// overwrite rule counts its rows as it counts single-group records.
fn many_groups_records_replay_and_pin_each_group<H: Harness>(h: &H) {
    let (mut s, _) = open(h, ONE_RECORD_PER_SEGMENT).unwrap();
    // seg 1: group 1 up to 10 and group 2 up to 3; seg 2: group 1 up to 6 (overwrote
    // 7..10) and group 3 up to 1; seg 3: group 1 up to 12 (active).
    let written = vec![
        many(&[(1, 10), (2, 3)], 20),
        many(&[(1, 6), (3, 1)], 20),
        entry(1, 12, 60),
    ];
    for r in &written {
        s.append(r).unwrap();
    }
    s.sync().unwrap();
    let names = s.segment_names();
    assert_eq!(names.len(), 3);
    drop(s);
    let (mut s, rec) = open(h, ONE_RECORD_PER_SEGMENT).unwrap();
    assert_eq!(rec.records, written);

    // Seg 2 alone is covered for group 1 by 6, but seg 1 (group 1 up to 10) stays, so
    // seg 2 stays too; group 3 pins it anyway.
    s.compact(1, 6).unwrap();
    s.compact(3, 1).unwrap();
    assert_eq!(s.segment_names(), names);
    // Group 1 past 10: seg 2 goes; seg 1 is still pinned by group 2's row.
    s.compact(1, 10).unwrap();
    assert_eq!(s.segment_names(), vec![names[0].clone(), names[2].clone()]);
    s.compact(2, 3).unwrap();
    assert_eq!(s.segment_names(), vec![names[2].clone()]);
    drop(s);
    let (_, rec) = open(h, ONE_RECORD_PER_SEGMENT).unwrap();
    assert_eq!(rec.records, vec![entry(1, 12, 60)]);
}

fn snapshot_indexes_found_at_open_guide_compaction<H: Harness>(h: &H) {
    let (mut s, _) = open(h, ONE_RECORD_PER_SEGMENT).unwrap();
    for i in 1..=3 {
        s.append(&entry(4, i, 60)).unwrap();
    }
    s.sync().unwrap();
    s.save_snapshot(4, 2, b"state at 2").unwrap();
    drop(s);
    let (mut s, _) = open(h, ONE_RECORD_PER_SEGMENT).unwrap();
    // Another group's compaction runs the deletion pass; group 4's index 2 comes from
    // its snapshot file.
    s.compact(9, 0).unwrap();
    assert_eq!(s.segment_names().len(), 1);
}

fn torn_tail_is_truncated_and_reported<H: Harness>(h: &H) {
    let (mut s, _) = open(h, WalOptions::default()).unwrap();
    s.append(&entry(0, 1, 30)).unwrap();
    s.append(&entry(0, 2, 30)).unwrap();
    s.sync().unwrap();
    let seg = s.segment_names()[0].clone();
    let good_len = h.disk().len(&seg).unwrap();
    s.append(&entry(0, 3, 30)).unwrap();
    s.sync().unwrap();
    drop(s);
    let full_len = h.disk().len(&seg).unwrap();
    for cut in [full_len - 1, good_len + 10, good_len + 1] {
        h.disk().truncate(&seg, cut).unwrap();
        let (s, rec) = open(h, WalOptions::default()).unwrap();
        assert_eq!(
            rec.records,
            vec![entry(0, 1, 30), entry(0, 2, 30)],
            "cut at {cut}"
        );
        assert_eq!(
            rec.truncated_tail,
            Some(TruncatedTail {
                file: seg.clone(),
                offset: good_len,
                bytes_cut: cut - good_len,
            })
        );
        assert_eq!(h.disk().len(&seg).unwrap(), good_len);
        drop(s);
        // Put the third record back for the next cut.
        let (mut s, _) = open(h, WalOptions::default()).unwrap();
        s.append(&entry(0, 3, 30)).unwrap();
        s.sync().unwrap();
    }
    // After a truncation the log is clean: the next open reports nothing.
    let (_, rec) = open(h, WalOptions::default()).unwrap();
    assert_eq!(rec.truncated_tail, None);
    assert_eq!(rec.records.len(), 3);
}

fn bad_crc_on_the_last_record_is_a_torn_tail<H: Harness>(h: &H) {
    let (mut s, _) = open(h, WalOptions::default()).unwrap();
    s.append(&entry(0, 1, 30)).unwrap();
    s.sync().unwrap();
    let seg = s.segment_names()[0].clone();
    let last_at = h.disk().len(&seg).unwrap();
    s.append(&entry(0, 2, 30)).unwrap();
    s.sync().unwrap();
    drop(s);
    let full_len = h.disk().len(&seg).unwrap();
    h.flip_byte(&seg, last_at + 30);
    let (_, rec) = open(h, WalOptions::default()).unwrap();
    assert_eq!(rec.records, vec![entry(0, 1, 30)]);
    assert_eq!(
        rec.truncated_tail,
        Some(TruncatedTail {
            file: seg,
            offset: last_at,
            bytes_cut: full_len - last_at,
        })
    );
}

fn torn_segment_header_removes_the_segment<H: Harness>(h: &H) {
    let (mut s, _) = open(h, ONE_RECORD_PER_SEGMENT).unwrap();
    s.append(&entry(0, 1, 60)).unwrap();
    s.append(&entry(0, 2, 60)).unwrap();
    s.sync().unwrap();
    let names = s.segment_names();
    drop(s);
    h.disk().truncate(&names[1], 7).unwrap();
    let (mut s, rec) = open(h, ONE_RECORD_PER_SEGMENT).unwrap();
    assert_eq!(rec.records, vec![entry(0, 1, 60)]);
    assert_eq!(
        rec.truncated_tail,
        Some(TruncatedTail {
            file: names[1].clone(),
            offset: 0,
            bytes_cut: 7,
        })
    );
    assert_eq!(s.segment_names(), vec![names[0].clone()]);
    s.append(&entry(0, 2, 60)).unwrap();
    s.sync().unwrap();
    drop(s);
    let (_, rec) = open(h, ONE_RECORD_PER_SEGMENT).unwrap();
    assert_eq!(rec.records, vec![entry(0, 1, 60), entry(0, 2, 60)]);
}

fn flipped_byte_in_the_middle_is_refused_with_file_and_offset<H: Harness>(h: &H) {
    let (mut s, _) = open(h, WalOptions::default()).unwrap();
    s.append(&entry(0, 1, 30)).unwrap();
    s.sync().unwrap();
    let seg = s.segment_names()[0].clone();
    let second_at = h.disk().len(&seg).unwrap();
    s.append(&entry(0, 2, 30)).unwrap();
    s.append(&entry(0, 3, 30)).unwrap();
    s.sync().unwrap();
    drop(s);
    for (flip, what) in [(second_at + 40, "payload"), (second_at, "length")] {
        h.flip_byte(&seg, flip);
        match open(h, WalOptions::default()) {
            Err(StorageError::Corrupt {
                file,
                offset,
                reason,
            }) => {
                assert_eq!(
                    (file.as_str(), offset),
                    (seg.as_str(), second_at),
                    "{what}: {reason}"
                );
                let msg = StorageError::Corrupt {
                    file,
                    offset,
                    reason,
                }
                .to_string();
                assert!(
                    msg.contains(&seg) && msg.contains(&second_at.to_string()),
                    "{msg}"
                );
            }
            other => panic!("{what} flip: expected Corrupt, got {other:?}"),
        }
        h.flip_byte(&seg, flip); // undo for the next case
    }
    // Nothing was truncated by the refused opens.
    let (_, rec) = open(h, WalOptions::default()).unwrap();
    assert_eq!(rec.records.len(), 3);
}

fn damage_in_a_closed_segment_is_refused<H: Harness>(h: &H) {
    let (mut s, _) = open(h, ONE_RECORD_PER_SEGMENT).unwrap();
    for i in 1..=3 {
        s.append(&entry(0, i, 60)).unwrap();
    }
    s.sync().unwrap();
    let names = s.segment_names();
    drop(s);
    // Even a cut-off last record is corruption when a later segment exists.
    let len = h.disk().len(&names[1]).unwrap();
    h.disk().truncate(&names[1], len - 3).unwrap();
    match open(h, ONE_RECORD_PER_SEGMENT) {
        Err(StorageError::Corrupt { file, offset, .. }) => {
            assert_eq!((file, offset), (names[1].clone(), 20))
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    h.flip_byte(&names[0], 2);
    match open(h, ONE_RECORD_PER_SEGMENT) {
        Err(StorageError::Corrupt { file, offset, .. }) => {
            assert_eq!((file, offset), (names[0].clone(), 0))
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

fn snapshots_save_replace_reload<H: Harness>(h: &H) {
    let (mut s, _) = open(h, WalOptions::default()).unwrap();
    s.save_snapshot(1, 5, b"one at 5").unwrap();
    s.save_snapshot(2, 7, b"two at 7").unwrap();
    s.save_snapshot(1, 9, b"one at 9").unwrap();
    s.save_snapshot(2, 3, b"older than 7").unwrap();
    s.save_snapshot(3, 4, b"").unwrap();
    drop(s);
    let mut snap_files: Vec<String> = h
        .disk()
        .list()
        .unwrap()
        .into_iter()
        .filter(|n| n.starts_with("snap-"))
        .collect();
    snap_files.sort();
    assert_eq!(
        snap_files,
        vec![
            "snap-0000000001-00000000000000000009.snap",
            "snap-0000000002-00000000000000000007.snap",
            "snap-0000000003-00000000000000000004.snap",
        ]
    );
    let (_, rec) = open(h, WalOptions::default()).unwrap();
    let got: Vec<(u32, u64, &[u8])> = rec
        .snapshots
        .iter()
        .map(|(g, i, d)| (*g, *i, &d[..]))
        .collect();
    assert_eq!(
        got,
        vec![
            (1, 9, &b"one at 9"[..]),
            (2, 7, &b"two at 7"[..]),
            (3, 4, &b""[..])
        ]
    );
}

fn a_removed_group_loses_its_snapshots_and_pins_no_segment<H: Harness>(h: &H) {
    let (mut s, _) = open(h, ONE_RECORD_PER_SEGMENT).unwrap();
    for i in 1..=3 {
        s.append(&entry(4, i, 60)).unwrap();
    }
    s.append(&entry(5, 1, 60)).unwrap();
    s.sync().unwrap();
    s.save_snapshot(4, 2, b"state at 2").unwrap();
    s.compact(5, 1).unwrap();
    assert!(
        s.segment_names().len() > 1,
        "group 4's entries pin segments"
    );
    s.remove_group(4).unwrap();
    assert_eq!(s.segment_names().len(), 1, "only the active segment stays");
    s.remove_group(4).unwrap();
    drop(s);
    let (_, rec) = open(h, ONE_RECORD_PER_SEGMENT).unwrap();
    assert!(rec.snapshots.is_empty(), "{:?}", rec.snapshots);
    assert!(h
        .disk()
        .list()
        .unwrap()
        .iter()
        .all(|n| !n.starts_with("snap-")));
}

/// A group removed and then taken back (a replica of it created anew on the node): the
/// earlier life's snapshot is gone, and the new life's records stay on disk although the
/// removal had set the group's compaction point past every index.
fn a_group_taken_back_keeps_its_new_records_and_no_earlier_snapshot<H: Harness>(h: &H) {
    let (mut s, _) = open(h, ONE_RECORD_PER_SEGMENT).unwrap();
    for i in 1..=3 {
        s.append(&entry(4, i, 60)).unwrap();
    }
    s.sync().unwrap();
    s.save_snapshot(4, 2, b"first life at 2").unwrap();
    s.remove_group(4).unwrap();
    s.take_back_group(4).unwrap();
    for i in 10..=12 {
        s.append(&entry(4, i, 60)).unwrap();
    }
    s.append(&entry(5, 1, 60)).unwrap();
    s.sync().unwrap();
    // Group 5's compaction must not take group 4's new records with it.
    s.compact(5, 1).unwrap();
    drop(s);
    let (_, rec) = open(h, ONE_RECORD_PER_SEGMENT).unwrap();
    assert!(rec.snapshots.is_empty(), "{:?}", rec.snapshots);
    let new_life: Vec<u64> = rec
        .records
        .iter()
        .filter(|r| r.group == 4 && r.last_index >= 10)
        .map(|r| r.last_index)
        .collect();
    assert_eq!(new_life, vec![10, 11, 12]);
    // A snapshot of the new life covers its records again, as for any group.
    let (mut s, _) = open(h, ONE_RECORD_PER_SEGMENT).unwrap();
    s.save_snapshot(4, 12, b"second life at 12").unwrap();
    s.compact(4, 12).unwrap();
    s.compact(5, 1).unwrap();
    assert_eq!(s.segment_names().len(), 1, "only the active segment stays");
}

fn corrupt_snapshot_is_refused<H: Harness>(h: &H) {
    let (mut s, _) = open(h, WalOptions::default()).unwrap();
    s.save_snapshot(1, 5, b"snapshot data").unwrap();
    drop(s);
    let name = "snap-0000000001-00000000000000000005.snap";
    h.flip_byte(name, 40);
    match open(h, WalOptions::default()) {
        Err(StorageError::Corrupt { file, .. }) => assert_eq!(file, name),
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

fn leftover_temp_snapshot_is_ignored_and_deleted<H: Harness>(h: &H) {
    let (mut s, _) = open(h, WalOptions::default()).unwrap();
    s.save_snapshot(1, 5, b"good").unwrap();
    drop(s);
    let temp = "snap-0000000001-00000000000000000008.snap.tmp";
    let mut d = h.disk();
    d.create(temp).unwrap();
    d.append(temp, b"half a snapsh").unwrap();
    let (_, rec) = open(h, WalOptions::default()).unwrap();
    assert_eq!(rec.snapshots.len(), 1);
    assert_eq!((rec.snapshots[0].0, rec.snapshots[0].1), (1, 5));
    assert!(!h.disk().list().unwrap().iter().any(|n| n == temp));
}

fn superseded_snapshot_left_by_a_crash_is_removed_at_open<H: Harness>(h: &H) {
    let (mut s, _) = open(h, WalOptions::default()).unwrap();
    s.save_snapshot(1, 3, b"old").unwrap();
    let old = "snap-0000000001-00000000000000000003.snap";
    let old_bytes = h.disk().read(old).unwrap();
    s.save_snapshot(1, 5, b"new").unwrap();
    drop(s);
    // As if the save of 5 crashed after its rename but before removing 3.
    let mut d = h.disk();
    d.create(old).unwrap();
    d.append(old, &old_bytes).unwrap();
    let (_, rec) = open(h, WalOptions::default()).unwrap();
    assert_eq!(
        rec.snapshots,
        vec![(1, 5, bytes::Bytes::from_static(b"new"))]
    );
    assert!(!h.disk().list().unwrap().iter().any(|n| n == old));
}

fn disk_full_is_a_clean_error<H: Harness>(h: &H) {
    let (mut s, _) = open(h, ONE_RECORD_PER_SEGMENT).unwrap();
    s.append(&entry(0, 1, 60)).unwrap();
    s.sync().unwrap();
    s.save_snapshot(0, 1, b"old").unwrap();
    h.set_full(true);
    // The append needs a new segment, and starting it fails.
    let err = s.append(&entry(0, 2, 60)).unwrap_err();
    assert!(matches!(err, StorageError::DiskFull { .. }), "{err}");
    assert!(err.to_string().contains("wal-"), "{err}");
    let err = s.save_snapshot(0, 2, b"new").unwrap_err();
    assert!(matches!(err, StorageError::DiskFull { .. }), "{err}");
    s.sync().unwrap();
    h.set_full(false);
    s.append(&entry(0, 3, 60)).unwrap();
    s.sync().unwrap();
    drop(s);

    let (mut s, rec) = open(h, WalOptions::default()).unwrap();
    assert_eq!(rec.records, vec![entry(0, 1, 60), entry(0, 3, 60)]);
    assert_eq!(rec.truncated_tail, None);
    assert_eq!(rec.snapshots[0].1, 1);
    assert!(!h.disk().list().unwrap().iter().any(|n| n.ends_with(".tmp")));

    // Same segment: the failed append is rolled back before the next one follows it.
    h.set_full(true);
    assert!(matches!(
        s.append(&entry(0, 4, 500)),
        Err(StorageError::DiskFull { .. })
    ));
    h.set_full(false);
    s.append(&entry(0, 5, 10)).unwrap();
    s.sync().unwrap();
    drop(s);
    let (_, rec) = open(h, WalOptions::default()).unwrap();
    assert_eq!(
        rec.records,
        vec![entry(0, 1, 60), entry(0, 3, 60), entry(0, 5, 10)]
    );
    assert_eq!(rec.truncated_tail, None);
}

fn failed_fsync_poisons_until_reopen<H: Harness>(h: &H) {
    let (mut s, _) = open(h, WalOptions::default()).unwrap();
    s.append(&entry(0, 1, 10)).unwrap();
    s.sync().unwrap();
    s.append(&entry(0, 2, 10)).unwrap();
    h.set_syncs_fail(true);
    assert!(matches!(s.sync(), Err(StorageError::Io { .. })));
    h.set_syncs_fail(false);
    let err = s.append(&entry(0, 3, 10)).unwrap_err();
    assert!(matches!(err, StorageError::Poisoned { .. }), "{err}");
    assert!(matches!(s.sync(), Err(StorageError::Poisoned { .. })));
    drop(s);
    let (_, rec) = open(h, WalOptions::default()).unwrap();
    assert_eq!(rec.records[0], entry(0, 1, 10));
}

fn append_all_writes_what_appending_one_by_one_writes<H: Harness>(h: &H) {
    let (mut s, _) = open(h, ONE_RECORD_PER_SEGMENT).unwrap();
    // Rolls inside the batch (one 60-byte record per segment), a small record sharing a
    // segment, and a sticky record that every later segment must repeat.
    let batch = vec![
        entry(0, 1, 60),
        sticky(1, "term 3"),
        entry(0, 2, 60),
        entry(1, 1, 2),
        entry(0, 3, 60),
    ];
    s.append_all(&batch.iter().collect::<Vec<_>>()).unwrap();
    s.sync().unwrap();
    let batched_segments = s.segment_names();
    drop(s);
    let (_, rec) = open(h, ONE_RECORD_PER_SEGMENT).unwrap();
    assert_eq!(common::without_repeats(&rec.records), batch);
    assert_eq!(rec.truncated_tail, None);

    let other = RealHarness::new();
    let (mut one_by_one, _) = open(&other, ONE_RECORD_PER_SEGMENT).unwrap();
    for r in &batch {
        one_by_one.append(r).unwrap();
    }
    one_by_one.sync().unwrap();
    assert_eq!(one_by_one.segment_names(), batched_segments);
    for name in &batched_segments {
        assert_eq!(
            h.disk().read(name).unwrap(),
            other.disk().read(name).unwrap(),
            "{name}"
        );
    }
}

fn append_all_stops_at_the_first_failure<H: Harness>(h: &H) {
    let (mut s, _) = open(h, WalOptions::default()).unwrap();
    let mut big = entry(0, 3, 0);
    big.payload = vec![0; RECORD_PAYLOAD_BYTES_MAX as usize + 1].into();
    let batch = [entry(0, 1, 10), entry(0, 2, 10), big, entry(0, 4, 10)];
    let err = s.append_all(&batch.iter().collect::<Vec<_>>()).unwrap_err();
    assert_eq!(err.appended, 2);
    assert!(
        matches!(err.error, StorageError::RecordTooLarge { .. }),
        "{err}"
    );
    h.set_full(true);
    let err = s
        .append_all(&[&entry(0, 3, 10), &entry(0, 4, 10)])
        .unwrap_err();
    assert_eq!(err.appended, 0);
    assert!(matches!(err.error, StorageError::DiskFull { .. }), "{err}");
    h.set_full(false);
    s.append_all(&[&entry(0, 3, 10)]).unwrap();
    s.sync().unwrap();
    drop(s);
    let (_, rec) = open(h, WalOptions::default()).unwrap();
    assert_eq!(
        rec.records,
        vec![entry(0, 1, 10), entry(0, 2, 10), entry(0, 3, 10)]
    );
    assert_eq!(rec.truncated_tail, None);
}

fn oversized_record_names_the_limit<H: Harness>(h: &H) {
    let (mut s, _) = open(h, WalOptions::default()).unwrap();
    let mut big = entry(0, 1, 0);
    big.payload = vec![0; RECORD_PAYLOAD_BYTES_MAX as usize + 1].into();
    let err = s.append(&big).unwrap_err();
    assert!(
        err.to_string().contains("RECORD_PAYLOAD_BYTES_MAX"),
        "{err}"
    );
    // The limit itself is fine, and larger than a segment: it gets a segment of its own.
    let (mut s, _) = open(
        h,
        WalOptions {
            segment_bytes_max: 1024,
        },
    )
    .unwrap();
    big.payload = vec![7; RECORD_PAYLOAD_BYTES_MAX as usize].into();
    s.append(&entry(0, 1, 10)).unwrap();
    s.append(&big).unwrap();
    s.append(&entry(0, 3, 10)).unwrap();
    s.sync().unwrap();
    assert_eq!(s.segment_names().len(), 3);
}

/// Bytes of space the preallocation tests ask for ahead of the log.
const AHEAD: u64 = 4096;

fn records_go_into_preallocated_space_and_zeros_end_the_log<H: Harness>(h: &H) {
    let (mut s, _) = open(h, WalOptions::default()).unwrap();
    s.append(&entry(0, 1, 30)).unwrap();
    s.sync().unwrap();
    let seg = s.segment_names()[0].clone();
    let end = h.disk().len(&seg).unwrap();
    assert!(s.needs_preallocation(AHEAD));
    assert!(s.preallocate(AHEAD).unwrap());
    assert!(!s.needs_preallocation(AHEAD) && !s.preallocate(AHEAD).unwrap());
    let file_len = h.disk().len(&seg).unwrap();
    assert_eq!(file_len, end + AHEAD);
    assert!(h.disk().read(&seg).unwrap()[end as usize..]
        .iter()
        .all(|&b| b == 0));
    s.append(&entry(0, 2, 30)).unwrap();
    s.append_all(&[&sticky(1, "term 2"), &entry(0, 3, 30)])
        .unwrap();
    s.sync().unwrap();
    // Written over the zeros: the file did not grow.
    assert_eq!(h.disk().len(&seg).unwrap(), file_len);
    drop(s);
    let written = vec![
        entry(0, 1, 30),
        entry(0, 2, 30),
        sticky(1, "term 2"),
        entry(0, 3, 30),
    ];
    let (mut s, rec) = open(h, WalOptions::default()).unwrap();
    assert_eq!(rec.records, written);
    assert_eq!(rec.truncated_tail, None, "the zero tail is the clean end");
    assert_eq!(h.disk().len(&seg).unwrap(), file_len, "zeros kept for use");
    // The reopened log goes on where the records end, not where the file ends.
    s.append(&entry(0, 4, 30)).unwrap();
    s.sync().unwrap();
    assert_eq!(h.disk().len(&seg).unwrap(), file_len);
    drop(s);
    let (_, rec) = open(h, WalOptions::default()).unwrap();
    assert_eq!(rec.records.len(), 5);
    assert_eq!(rec.records[4], entry(0, 4, 30));
}

fn preallocation_stops_at_the_segment_size_and_closed_segments_may_end_in_zeros<H: Harness>(h: &H) {
    let options = WalOptions {
        segment_bytes_max: 300,
    };
    let (mut s, _) = open(h, options).unwrap();
    s.append(&entry(0, 1, 60)).unwrap();
    assert!(s.preallocate(AHEAD).unwrap());
    let first = s.segment_names()[0].clone();
    assert_eq!(h.disk().len(&first).unwrap(), 300);
    assert!(!s.needs_preallocation(AHEAD), "the segment is full size");
    // Four records (84 bytes each) do not fit in 300: the segment closes with zeros at
    // its end.
    for i in 2..=4 {
        s.append(&entry(0, i, 60)).unwrap();
    }
    s.sync().unwrap();
    assert_eq!(s.segment_names().len(), 2);
    assert!(
        s.needs_preallocation(AHEAD),
        "a new segment has no space ahead"
    );
    drop(s);
    let (s, rec) = open(h, options).unwrap();
    assert_eq!(
        rec.records,
        (1..=4).map(|i| entry(0, i, 60)).collect::<Vec<_>>()
    );
    assert_eq!(rec.truncated_tail, None);
    assert_eq!(s.segment_names().len(), 2);
}

fn a_stale_record_past_the_end_is_not_replayed<H: Harness>(h: &H) {
    let (mut s, _) = open(h, ONE_RECORD_PER_SEGMENT).unwrap();
    s.append(&entry(0, 1, 60)).unwrap();
    s.append(&entry(0, 2, 20)).unwrap();
    s.sync().unwrap();
    let names = s.segment_names();
    let (old, active) = (&names[0], &names[1]);
    s.preallocate(AHEAD).unwrap();
    let end = 20 + 24 + 20; // header + record 2
    drop(s);
    // As if the active file had held segment 1's bytes before (a recycled file): its
    // record lies right where the next record of this segment would go.
    let stale = h.disk().read(old).unwrap()[20..].to_vec();
    let mut disk = h.disk();
    disk.write_at(active, end, &stale).unwrap();
    disk.sync_file(active).unwrap();
    let (_, rec) = open(h, ONE_RECORD_PER_SEGMENT).unwrap();
    assert_eq!(rec.records, vec![entry(0, 1, 60), entry(0, 2, 20)]);
    assert_eq!(
        rec.truncated_tail.map(|t| (t.file, t.offset)),
        Some((active.clone(), end))
    );
    assert_eq!(h.disk().len(active).unwrap(), end);
}

fn a_torn_write_in_preallocated_space_is_cut<H: Harness>(h: &H) {
    let (mut s, _) = open(h, WalOptions::default()).unwrap();
    s.append(&entry(0, 1, 30)).unwrap();
    s.preallocate(AHEAD).unwrap();
    let seg = s.segment_names()[0].clone();
    let second_at = 20 + 24 + 30;
    s.append(&entry(0, 2, 30)).unwrap();
    s.sync().unwrap();
    drop(s);
    let file_len = h.disk().len(&seg).unwrap();
    // The second record's last bytes never reached the disk: zeros are still there.
    let mut disk = h.disk();
    disk.write_at(&seg, second_at + 40, &[0; 14]).unwrap();
    disk.sync_file(&seg).unwrap();
    let (mut s, rec) = open(h, WalOptions::default()).unwrap();
    assert_eq!(rec.records, vec![entry(0, 1, 30)]);
    assert_eq!(
        rec.truncated_tail,
        Some(TruncatedTail {
            file: seg.clone(),
            offset: second_at,
            bytes_cut: file_len - second_at,
        })
    );
    assert_eq!(h.disk().len(&seg).unwrap(), second_at);
    // Damage followed by a valid record inside preallocated space is refused, as before.
    s.preallocate(AHEAD).unwrap();
    s.append(&entry(0, 2, 30)).unwrap();
    s.append(&entry(0, 3, 30)).unwrap();
    s.sync().unwrap();
    drop(s);
    h.flip_byte(&seg, second_at + 30);
    match open(h, WalOptions::default()) {
        Err(StorageError::Corrupt { file, offset, .. }) => {
            assert_eq!((file, offset), (seg.clone(), second_at))
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

fn a_full_disk_leaves_preallocation_out_and_the_log_intact<H: Harness>(h: &H) {
    let (mut s, _) = open(h, WalOptions::default()).unwrap();
    s.append(&entry(0, 1, 30)).unwrap();
    s.sync().unwrap();
    let seg = s.segment_names()[0].clone();
    let end = h.disk().len(&seg).unwrap();
    h.set_full(true);
    let err = s.preallocate(AHEAD).unwrap_err();
    assert!(matches!(err, StorageError::DiskFull { .. }), "{err}");
    assert_eq!(
        h.disk().len(&seg).unwrap(),
        end,
        "half-written zeros cut back"
    );
    h.set_full(false);
    s.append(&entry(0, 2, 30)).unwrap();
    s.sync().unwrap();
    // A failed record write into preallocated space is cut back with the space after it.
    s.preallocate(AHEAD).unwrap();
    h.set_full(true);
    assert!(s.append(&entry(0, 3, 300)).is_err());
    h.set_full(false);
    s.append(&entry(0, 4, 10)).unwrap();
    s.sync().unwrap();
    drop(s);
    let (_, rec) = open(h, WalOptions::default()).unwrap();
    assert_eq!(
        rec.records,
        vec![entry(0, 1, 30), entry(0, 2, 30), entry(0, 4, 10)]
    );
    assert_eq!(rec.truncated_tail, None);
}

macro_rules! suite {
    ($($test:ident),* $(,)?) => {
        mod real_disk {
            $( #[test] fn $test() { super::$test(&super::RealHarness::new()) } )*
        }
        mod sim_disk {
            $( #[test] fn $test() { super::$test(&super::SimHarness::new(0x5eed)) } )*
        }
    };
}

suite!(
    append_sync_reopen,
    segments_roll_and_replay_in_order,
    sticky_records_survive_segment_deletion,
    compaction_deletes_exactly_the_right_segments,
    many_groups_records_replay_and_pin_each_group,
    snapshot_indexes_found_at_open_guide_compaction,
    torn_tail_is_truncated_and_reported,
    bad_crc_on_the_last_record_is_a_torn_tail,
    torn_segment_header_removes_the_segment,
    flipped_byte_in_the_middle_is_refused_with_file_and_offset,
    damage_in_a_closed_segment_is_refused,
    snapshots_save_replace_reload,
    a_removed_group_loses_its_snapshots_and_pins_no_segment,
    a_group_taken_back_keeps_its_new_records_and_no_earlier_snapshot,
    corrupt_snapshot_is_refused,
    leftover_temp_snapshot_is_ignored_and_deleted,
    superseded_snapshot_left_by_a_crash_is_removed_at_open,
    disk_full_is_a_clean_error,
    failed_fsync_poisons_until_reopen,
    oversized_record_names_the_limit,
    append_all_writes_what_appending_one_by_one_writes,
    append_all_stops_at_the_first_failure,
    records_go_into_preallocated_space_and_zeros_end_the_log,
    preallocation_stops_at_the_segment_size_and_closed_segments_may_end_in_zeros,
    a_stale_record_past_the_end_is_not_replayed,
    a_torn_write_in_preallocated_space_is_cut,
    a_full_disk_leaves_preallocation_out_and_the_log_intact,
);

#[test]
fn the_real_suite_writes_into_its_temp_dir() {
    let h = RealHarness::new();
    let (s, _) = open(&h, WalOptions::default()).unwrap();
    let seg = s.segment_names()[0].clone();
    assert!(h.path().join(seg).is_file());
}
