//! Unit tests of the disk thread (`disk.rs`) against a fake store: batching, syncs,
//! deferred syncs, refusals, failures and preallocation.

use super::*;
use kv_storage::StorageError;
use std::sync::{Arc, Condvar, Mutex};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

/// What the fake store saw, shared with the test.
#[derive(Default)]
struct Log {
    /// (shard, index) of each executed Compact op, in order.
    executed: Vec<(u32, u64)>,
    /// Number of executed ops at each sync.
    syncs: Vec<usize>,
    /// Fail this many next executes with Full.
    full_for: usize,
    /// Fail the next sync fatally.
    fail_sync: bool,
    /// While true, sync blocks (to let writes pile up behind it).
    hold_sync: bool,
    /// `last_index` of each appended record, in order.
    appended: Vec<u64>,
    /// Length of each `append_all` batch.
    batches: Vec<usize>,
    /// The next `append_all` appends this many records, then finds the disk full.
    full_after: Option<usize>,
    /// Each RemoveGroup ("remove") and TakeBackGroup ("take back") op, with its
    /// shard and the number of ops executed before it.
    group_ops: Vec<(&'static str, u32, usize)>,
    /// Preallocated records left (`None`: the store never prepares): each appended
    /// record uses one, the store wants to prepare below 2, and a preparation makes
    /// it 4.
    space: Option<usize>,
    /// Name of the thread of each preparation.
    prepared_on: Vec<String>,
    /// The next preparation fails fatally.
    fail_prepare: bool,
}

#[derive(Clone, Default)]
struct Fake(Arc<(Mutex<Log>, Condvar)>);

fn full_wal() -> StorageError {
    StorageError::DiskFull {
        file: "wal-1".into(),
    }
}

impl LogStore for Fake {
    fn execute(&mut self, op: &DiskOp) -> Result<(), StoreError> {
        let mut log = self.0 .0.lock().unwrap();
        if log.full_for > 0 {
            log.full_for -= 1;
            return Err(StoreError::Full(full_wal()));
        }
        let before = log.executed.len() + log.group_ops.len();
        match op {
            DiskOp::Compact { shard, index } => log.executed.push((*shard, *index)),
            DiskOp::RemoveGroup { shard } => log.group_ops.push(("remove", *shard, before)),
            DiskOp::TakeBackGroup { shard } => log.group_ops.push(("take back", *shard, before)),
            other => panic!("the fake takes no {other:?}"),
        }
        Ok(())
    }

    fn append_all(&mut self, records: &[&Record]) -> Result<(), (usize, StoreError)> {
        let mut log = self.0 .0.lock().unwrap();
        let n = log
            .full_after
            .take()
            .unwrap_or(records.len())
            .min(records.len());
        log.appended
            .extend(records[..n].iter().map(|r| r.last_index));
        log.space = log.space.map(|s| s.saturating_sub(n));
        log.batches.push(records.len());
        if n < records.len() {
            return Err((n, StoreError::Full(full_wal())));
        }
        Ok(())
    }

    fn sync(&mut self) -> Result<(), StoreError> {
        let (lock, cvar) = &*self.0;
        let mut log = cvar
            .wait_while(lock.lock().unwrap(), |l| l.hold_sync)
            .unwrap();
        if log.fail_sync {
            return Err(StoreError::Fatal(StorageError::Io {
                file: "wal-1".into(),
                source: std::io::Error::other("fsync failed"),
            }));
        }
        let n = log.executed.len();
        log.syncs.push(n);
        Ok(())
    }

    fn wants_prepare(&self) -> bool {
        matches!(self.0 .0.lock().unwrap().space, Some(s) if s < 2)
    }

    fn prepare(&mut self) -> Result<(), StoreError> {
        let mut log = self.0 .0.lock().unwrap();
        if log.fail_prepare {
            return Err(StoreError::Fatal(StorageError::Io {
                file: "wal-1".into(),
                source: std::io::Error::other("preallocating failed"),
            }));
        }
        let name = std::thread::current().name().unwrap_or("").to_string();
        log.prepared_on.push(name);
        log.space = Some(4);
        Ok(())
    }
}

impl Fake {
    fn with<R>(&self, f: impl FnOnce(&mut Log) -> R) -> R {
        let r = f(&mut self.0 .0.lock().unwrap());
        self.0 .1.notify_all();
        r
    }
}

fn write(id: u64) -> DiskWrite {
    DiskWrite {
        deferrable: false,
        id,
        ops: vec![
            DiskOp::Compact {
                shard: 0,
                index: id * 10,
            },
            DiskOp::Compact {
                shard: 1,
                index: id * 10 + 1,
            },
        ],
    }
}

fn next(rx: &mut UnboundedReceiver<DiskEvent>) -> DiskEvent {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match rx.try_recv() {
            Ok(e) => return e,
            Err(_) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(1))
            }
            Err(e) => panic!("no disk event within 10 s: {e}"),
        }
    }
}

fn done_ids(rx: &mut UnboundedReceiver<DiskEvent>, want: usize) -> Vec<u64> {
    let mut ids = Vec::new();
    while ids.len() < want {
        match next(rx) {
            DiskEvent::Done(batch) => ids.extend(batch),
            other => panic!("expected Done, got {other:?}"),
        }
    }
    ids
}

#[test]
fn writes_queued_during_an_fsync_share_the_next_one() {
    let (fake, disk, mut erx) = started(|l| l.hold_sync = true);
    disk.submit(write(1)).unwrap();
    // Wait until write 1 is executed and its sync is blocked, then queue 50 more.
    wait_until(|| fake.with(|l| l.executed.len()) >= 2);
    for id in 2..=51 {
        disk.submit(write(id)).unwrap();
    }
    fake.with(|l| l.hold_sync = false);
    let ids = done_ids(&mut erx, 51);
    assert_eq!(ids, (1..=51).collect::<Vec<_>>());
    // One sync for write 1, one for the 50 that queued behind it.
    assert_eq!(fake.with(|l| l.syncs.clone()), vec![2, 102]);
    disk.finish().unwrap();
}

/// A shard's removal and its take-back (a replica created again) run where the
/// node core put them among the other ops, across writes of one batch too: the
/// removal queued first can never run after the new life's take-back (as it would
/// if removed shards' files were deleted after the whole batch).
#[test]
fn a_removal_and_a_take_back_run_in_write_order() {
    let (fake, disk, mut erx) = started(|l| l.hold_sync = true);
    disk.submit(write(1)).unwrap();
    wait_until(|| fake.with(|l| l.executed.len()) >= 2);
    let compact = |index| DiskOp::Compact { shard: 0, index };
    disk.submit(DiskWrite {
        deferrable: false,
        id: 2,
        ops: vec![compact(20), DiskOp::RemoveGroup { shard: 7 }],
    })
    .unwrap();
    disk.submit(DiskWrite {
        deferrable: false,
        id: 3,
        ops: vec![DiskOp::TakeBackGroup { shard: 7 }, compact(30)],
    })
    .unwrap();
    fake.with(|l| l.hold_sync = false);
    assert_eq!(done_ids(&mut erx, 3), vec![1, 2, 3]);
    disk.finish().unwrap();
    assert_eq!(
        fake.with(|l| l.group_ops.clone()),
        vec![("remove", 7, 3), ("take back", 7, 4)]
    );
}

#[test]
fn nothing_is_reported_done_before_its_sync() {
    let (fake, disk, mut erx) = started(|l| l.hold_sync = true);
    disk.submit(write(1)).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    assert!(
        erx.try_recv().is_err(),
        "reported done while the fsync was pending"
    );
    fake.with(|l| l.hold_sync = false);
    assert!(matches!(next(&mut erx), DiskEvent::Done(ids) if ids == [1]));
    disk.finish().unwrap();
}

#[test]
fn a_full_disk_stalls_then_resumes_at_the_failed_op_without_duplicates() {
    let (fake, disk, mut erx) = started(|l| l.full_for = 2);
    disk.submit(write(1)).unwrap();
    match next(&mut erx) {
        DiskEvent::Full(e) => assert!(matches!(e, StorageError::DiskFull { .. }), "{e}"),
        other => panic!("expected Full, got {other:?}"),
    }
    disk.submit(write(2)).unwrap();
    assert!(matches!(next(&mut erx), DiskEvent::Recovered));
    assert_eq!(done_ids(&mut erx, 2), vec![1, 2]);
    assert_eq!(
        fake.with(|l| l.executed.clone()),
        vec![(0, 10), (1, 11), (0, 20), (1, 21)]
    );
    disk.finish().unwrap();
}

fn append(last_index: u64) -> DiskOp {
    DiskOp::Append(Record {
        group: 0,
        kind: 1,
        sticky: false,
        last_index,
        payload: b"entry".to_vec().into(),
    })
}

#[test]
fn appends_of_queued_writes_go_as_one_batch_and_resume_after_a_full_disk() {
    let (fake, disk, mut erx) = started(|l| l.hold_sync = true);
    disk.submit(DiskWrite {
        deferrable: false,
        id: 1,
        ops: vec![append(1), append(2)],
    })
    .unwrap();
    wait_until(|| !fake.with(|l| l.batches.is_empty()));
    // Writes 2 and 3 queue behind write 1's sync: their appends meet across the two
    // writes, and a Compact splits the run.
    disk.submit(DiskWrite {
        deferrable: false,
        id: 2,
        ops: vec![append(3), append(4)],
    })
    .unwrap();
    disk.submit(DiskWrite {
        deferrable: false,
        id: 3,
        ops: vec![append(5), DiskOp::Compact { shard: 0, index: 1 }, append(6)],
    })
    .unwrap();
    fake.with(|l| {
        l.full_after = Some(1);
        l.hold_sync = false;
    });
    assert_eq!(done_ids(&mut erx, 1), vec![1]);
    match next(&mut erx) {
        DiskEvent::Full(e) => assert!(matches!(e, StorageError::DiskFull { .. }), "{e}"),
        other => panic!("expected Full, got {other:?}"),
    }
    assert!(matches!(next(&mut erx), DiskEvent::Recovered));
    assert_eq!(done_ids(&mut erx, 2), vec![2, 3]);
    assert_eq!(fake.with(|l| l.appended.clone()), vec![1, 2, 3, 4, 5, 6]);
    // [1,2] alone; [3,4,5] across writes 2 and 3, cut after 3; the retry [4,5]; after
    // the Compact, [6].
    assert_eq!(fake.with(|l| l.batches.clone()), vec![2, 3, 2, 1]);
    assert_eq!(fake.with(|l| l.executed.clone()), vec![(0, 1)]);
    disk.finish().unwrap();
}

#[test]
fn a_failed_sync_is_fatal_and_acknowledges_nothing() {
    let (_, disk, mut erx) = started(|l| l.fail_sync = true);
    disk.submit(write(1)).unwrap();
    match next(&mut erx) {
        DiskEvent::Failed(e) => assert!(e.to_string().contains("fsync"), "{e}"),
        other => panic!("expected Failed, got {other:?}"),
    }
    disk.finish().unwrap();
    assert!(
        erx.try_recv().is_err(),
        "something was reported after the failure"
    );
}

/// A thread over a fake store set up by `setup`, and its events.
fn started(setup: impl FnOnce(&mut Log)) -> (Fake, DiskThread, UnboundedReceiver<DiskEvent>) {
    let fake = Fake::default();
    fake.with(setup);
    let (etx, erx) = unbounded_channel();
    let disk = DiskThread::spawn(fake.clone(), etx).unwrap();
    (fake, disk, erx)
}

fn wait_until(mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "waited 10 s");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The loop's own writes: durable when `write_here` returns and not before, never
/// reported as Done, and only while the thread holds nothing, so ids stay in order.
#[test]
fn a_write_here_returns_only_after_its_sync() {
    let (fake, disk, mut erx) = started(|l| l.hold_sync = true);
    let disk = Arc::new(disk);
    let writer = {
        let disk = disk.clone();
        std::thread::spawn(move || disk.write_here(write(1)).unwrap())
    };
    wait_until(|| fake.with(|l| l.executed.len()) == 2);
    std::thread::sleep(Duration::from_millis(50));
    assert!(!writer.is_finished(), "write_here returned before its sync");
    fake.with(|l| l.hold_sync = false);
    assert_eq!(writer.join().unwrap(), Placed::Durable(vec![1]));
    assert_eq!(fake.with(|l| l.syncs.clone()), vec![2]);
    assert!(erx.try_recv().is_err(), "a write here is not reported");
    Arc::into_inner(disk).unwrap().finish().unwrap();
}

#[test]
fn a_write_here_waits_its_turn_behind_the_threads_writes() {
    let (fake, disk, mut erx) = started(|l| l.hold_sync = true);
    disk.submit(write(1)).unwrap();
    wait_until(|| fake.with(|l| l.executed.len()) == 2);
    assert!(!disk.idle());
    // Queued behind write 1 at once, without waiting for its sync.
    assert_eq!(disk.write_here(write(2)).unwrap(), Placed::Queued);
    fake.with(|l| l.hold_sync = false);
    assert_eq!(done_ids(&mut erx, 2), vec![1, 2]);
    wait_until(|| disk.idle());
    assert_eq!(disk.write_here(write(3)).unwrap(), Placed::Durable(vec![3]));
    let executed = fake.with(|l| l.executed.clone());
    assert_eq!(
        executed.iter().map(|e| e.1 / 10).collect::<Vec<_>>(),
        vec![1, 1, 2, 2, 3, 3]
    );
    disk.finish().unwrap();
}

/// Preallocation is the idle thread's work, at start and when the loop's own writes
/// used up the space; never the loop's (it would hold up the put that found it), and
/// not asked for by the thread's own writes (load, where group commit pays).
#[test]
fn the_idle_thread_preallocates_and_the_loop_never_does() {
    let (fake, disk, _erx) = started(|l| l.space = Some(0));
    wait_until(|| fake.with(|l| l.prepared_on.len()) == 1);
    let three = DiskWrite {
        deferrable: false,
        id: 1,
        ops: vec![append(1), append(2), append(3)],
    };
    assert_eq!(disk.write_here(three).unwrap(), Placed::Durable(vec![1]));
    // One record of space left: the loop's write nudged the thread.
    wait_until(|| fake.with(|l| l.prepared_on.len()) == 2);
    let one = DiskWrite {
        deferrable: false,
        id: 2,
        ops: vec![append(4)],
    };
    // Durable here, or queued if it met the thread still holding the store.
    disk.write_here(one).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(
        fake.with(|l| l.prepared_on.clone()),
        vec!["disk", "disk"],
        "three records of space left: no preparation wanted"
    );
    wait_until(|| disk.idle());
    let thread_writes = DiskWrite {
        deferrable: false,
        id: 3,
        ops: vec![append(5), append(6), append(7)],
    };
    disk.submit(thread_writes).unwrap();
    wait_until(|| disk.idle());
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(fake.with(|l| l.space), Some(0));
    assert_eq!(
        fake.with(|l| l.prepared_on.len()),
        2,
        "the thread's own writes ask for no preparation"
    );
    disk.finish().unwrap();
}

#[test]
fn a_failed_preparation_stops_the_thread() {
    let (_, disk, mut erx) = started(|l| {
        l.space = Some(0);
        l.fail_prepare = true;
    });
    match next(&mut erx) {
        DiskEvent::Failed(e) => assert!(e.to_string().contains("preallocating"), "{e}"),
        other => panic!("expected Failed, got {other:?}"),
    }
    disk.finish().unwrap();
}

#[test]
fn large_writes_and_snapshots_go_to_the_thread() {
    let (_, disk, mut erx) = started(|_| {});
    let big = DiskOp::Append(Record {
        group: 0,
        kind: 1,
        sticky: false,
        last_index: 1,
        payload: vec![0; WRITE_HERE_BYTES_MAX + 1].into(),
    });
    let big = DiskWrite {
        deferrable: false,
        id: 1,
        ops: vec![big],
    };
    assert_eq!(disk.write_here(big).unwrap(), Placed::Queued);
    assert_eq!(done_ids(&mut erx, 1), vec![1]);
    wait_until(|| disk.idle());
    let removal = DiskWrite {
        deferrable: false,
        id: 2,
        ops: vec![DiskOp::RemoveGroup { shard: 3 }],
    };
    assert_eq!(disk.write_here(removal).unwrap(), Placed::Queued);
    assert_eq!(done_ids(&mut erx, 1), vec![2]);
    disk.finish().unwrap();
}

/// A full disk met here hands the write to the thread, which resumes it at the op
/// that failed: no record is appended twice.
#[test]
fn a_write_here_that_finds_the_disk_full_is_resumed_by_the_thread() {
    let (fake, disk, mut erx) = started(|l| l.full_after = Some(1));
    let w = DiskWrite {
        deferrable: false,
        id: 1,
        ops: vec![append(1), append(2)],
    };
    assert_eq!(disk.write_here(w).unwrap(), Placed::Queued);
    assert_eq!(done_ids(&mut erx, 1), vec![1]);
    assert_eq!(fake.with(|l| l.appended.clone()), vec![1, 2]);
    assert_eq!(fake.with(|l| l.batches.clone()), vec![2, 1]);
    disk.finish().unwrap();
}

#[test]
fn a_failed_sync_here_is_an_error_not_a_durable_write() {
    let (_, disk, _erx) = started(|l| l.fail_sync = true);
    match disk.write_here(write(1)) {
        Err(WriteHereError::Failed(e)) => assert!(e.to_string().contains("fsync"), "{e}"),
        other => panic!("expected Failed, got {other:?}"),
    }
    disk.finish().unwrap();
}

#[test]
fn finish_writes_and_reports_everything_queued() {
    let (fake, disk, mut erx) = started(|_| {});
    for id in 1..=20 {
        disk.submit(write(id)).unwrap();
    }
    disk.finish().unwrap();
    assert_eq!(done_ids(&mut erx, 20), (1..=20).collect::<Vec<_>>());
    assert_eq!(fake.with(|l| l.executed.len()), 40);
}

fn deferrable(id: u64) -> DiskWrite {
    DiskWrite {
        deferrable: true,
        ..write(id)
    }
}

fn started_deferring(defer: Duration) -> (Fake, DiskThread, UnboundedReceiver<DiskEvent>) {
    let fake = Fake::default();
    let (etx, erx) = unbounded_channel();
    let disk = DiskThread::spawn_deferring(fake.clone(), etx, defer).unwrap();
    (fake, disk, erx)
}

/// A deferrable write is executed at once but synced (and reported) only when the
/// bound runs out, never before its sync.
#[test]
fn a_deferrable_write_is_synced_when_its_bound_runs_out() {
    let defer = Duration::from_millis(100);
    let (fake, disk, mut erx) = started_deferring(defer);
    let submitted = std::time::Instant::now();
    disk.submit(deferrable(1)).unwrap();
    wait_until(|| fake.with(|l| l.executed.len()) == 2);
    assert!(fake.with(|l| l.syncs.is_empty()), "synced before its bound");
    assert_eq!(done_ids(&mut erx, 1), vec![1]);
    assert!(
        submitted.elapsed() >= defer,
        "reported before its bound ran out"
    );
    assert_eq!(fake.with(|l| l.syncs.clone()), vec![2]);
    disk.finish().unwrap();
}

/// The loop executes a deferrable write itself without a sync and without waking the
/// thread; the thread syncs it only when the loop asks (its ticks) and reports it.
#[test]
fn a_deferrable_write_here_is_held_until_the_loop_asks_for_its_sync() {
    let (fake, disk, mut erx) = started_deferring(Duration::from_secs(60));
    assert_eq!(disk.write_here(deferrable(1)).unwrap(), Placed::Held);
    assert_eq!(fake.with(|l| l.executed.len()), 2);
    assert!(disk.idle(), "a held write keeps nothing queued");
    disk.sync_held_older_than(Duration::from_secs(60));
    std::thread::sleep(Duration::from_millis(50));
    assert!(
        fake.with(|l| l.syncs.is_empty()),
        "synced before it was due"
    );
    assert!(erx.try_recv().is_err(), "reported before its sync");
    disk.sync_held_older_than(Duration::ZERO);
    assert_eq!(done_ids(&mut erx, 1), vec![1]);
    assert_eq!(fake.with(|l| l.syncs.clone()), vec![2]);
    disk.finish().unwrap();
}

/// A write here that cannot wait syncs what is held, the thread's deferred writes and
/// the loop's own, and names them before itself.
#[test]
fn a_write_here_syncs_and_names_the_held_writes() {
    let (fake, disk, mut erx) = started_deferring(Duration::from_secs(60));
    disk.submit(deferrable(1)).unwrap();
    wait_until(|| disk.idle());
    assert_eq!(fake.with(|l| l.executed.len()), 2);
    assert_eq!(disk.write_here(deferrable(2)).unwrap(), Placed::Held);
    assert_eq!(
        disk.write_here(write(3)).unwrap(),
        Placed::Durable(vec![1, 2, 3])
    );
    assert_eq!(fake.with(|l| l.syncs.clone()), vec![6]);
    // Nothing is left for the thread to sync or report.
    disk.finish().unwrap();
    assert!(erx.try_recv().is_err(), "a write was reported twice");
    assert_eq!(fake.with(|l| l.syncs.len()), 1);
}

/// The next write that is not deferrable ends the wait: one sync covers it and the
/// deferred ones, reported together in id order.
#[test]
fn a_write_that_cannot_wait_syncs_the_deferred_ones_with_it() {
    let (fake, disk, mut erx) = started_deferring(Duration::from_secs(60));
    disk.submit(deferrable(1)).unwrap();
    disk.submit(deferrable(2)).unwrap();
    wait_until(|| fake.with(|l| l.executed.len()) == 4);
    std::thread::sleep(Duration::from_millis(20));
    assert!(
        erx.try_recv().is_err(),
        "a deferred write was reported early"
    );
    disk.submit(write(3)).unwrap();
    assert_eq!(done_ids(&mut erx, 3), vec![1, 2, 3]);
    assert_eq!(fake.with(|l| l.syncs.clone()), vec![6]);
    disk.finish().unwrap();
}

/// Shutting down does not wait for the bound: what was deferred is synced and
/// reported before the thread ends.
#[test]
fn finish_syncs_and_reports_deferred_writes() {
    let (fake, disk, mut erx) = started_deferring(Duration::from_secs(60));
    disk.submit(deferrable(1)).unwrap();
    wait_until(|| fake.with(|l| l.executed.len()) == 2);
    wait_until(|| disk.idle());
    assert_eq!(disk.write_here(deferrable(2)).unwrap(), Placed::Held);
    let started = std::time::Instant::now();
    disk.finish().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "finish waited for the bound"
    );
    assert_eq!(fake.with(|l| l.syncs.clone()), vec![4]);
    assert_eq!(done_ids(&mut erx, 2), vec![1, 2]);
}
