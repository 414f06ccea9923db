//! The disk thread: the only place that touches the WAL, so the event loop never blocks
//! on a write or an fsync. It executes the node core's `DiskWrite`s in id order and
//! commits them in groups: everything that queued up while the previous fsync ran is
//! written, then synced ONCE, then reported done together (group commit across shards
//! and across rounds of the event loop).
//!
//! A small write that finds the thread idle is written and synced by the event loop
//! itself ([`DiskThread::write_here`]): handing it over costs a wake-up of this thread
//! and another of the loop when it is done, a large part of a put's latency at low load.
//! The store is shared for that, but used by one side at a time: the loop touches it
//! only while nothing is queued for the thread, and the thread only for queued writes.
//!
//! At low load, when the loop makes its writes itself and each put waits for its own
//! fsync, the thread keeps space written with zeros (and synced) ahead of the end of the
//! WAL ([`LogStore::prepare`]): a record written there changes no file size, so its
//! fsync has only the data to flush, not a file-system journal commit as well. The
//! thread prepares when it starts and when the loop nudges it after a write of its own
//! that used up most of that space, once its queue is empty. Its own writes never ask
//! for space: under load one fsync commits many writes anyway, and zeros written ahead
//! would double the bytes the disk takes while it is the bottleneck.
//!
//! A full disk does not stop the thread: the write that hit it is retried (from the op
//! that failed, since kv-storage leaves the log as it was before a failed write) until
//! space frees up, and the event loop is told so it can refuse new client writes in the
//! meantime. Any other storage failure is fatal for the node: its state on disk is then
//! unknown and only recovery on restart may decide what survived.

use kv_node::{DiskOp, DiskWrite};
use kv_storage::Record;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, TryRecvError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::sync::mpsc::UnboundedSender;

/// Most `DiskWrite`s committed by one fsync. Bounds the latency the first write of a
/// batch waits for the others; far above what one event-loop round produces.
pub const BATCH_WRITES_MAX: usize = 4096;
/// How long the thread waits before retrying a write that found the disk full.
pub const DISK_FULL_RETRY: Duration = Duration::from_secs(1);
/// Most record payload bytes of a write the event loop writes itself: a round of small
/// appends, not a catch-up batch (whose write would hold up every group's timers).
pub const WRITE_HERE_BYTES_MAX: usize = 64 * 1024;
/// Bytes of WAL space the idle thread preallocates ahead of the end of the log: each
/// round of it is one write and one fsync, so it should be rare, and it holds the store
/// for that long, so it should be short.
pub const PREALLOCATE_BYTES: u64 = 2 * 1024 * 1024;
/// The thread preallocates again when less than this is left ahead of the log (about
/// half a second of writes at 64 clients), so that a busy spell rarely runs past it.
pub const PREALLOCATE_LOW_BYTES: u64 = 1024 * 1024;

/// How a storage operation failed, as far as the disk thread's policy is concerned.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No room: the operation did not happen and may be retried later.
    #[error(transparent)]
    Full(kv_storage::StorageError),
    /// Anything else: the node must stop.
    #[error(transparent)]
    Fatal(kv_storage::StorageError),
}

/// What the disk thread executes `DiskOp`s on: `kv_storage::Storage` in production, a
/// recording fake in this module's tests.
pub trait LogStore: Send + 'static {
    /// Executes one op other than an append (durable only after [`LogStore::sync`]).
    fn execute(&mut self, op: &DiskOp) -> Result<(), StoreError>;
    /// Appends `records` in order, as few writes as possible (durable only after
    /// [`LogStore::sync`]). On error, the count is how many of them, from the start, are
    /// in the log; none of the rest is.
    fn append_all(&mut self, records: &[&Record]) -> Result<(), (usize, StoreError)>;
    /// Makes every op executed so far durable.
    fn sync(&mut self) -> Result<(), StoreError>;
    /// Whether [`LogStore::prepare`] has work to do.
    fn wants_prepare(&self) -> bool {
        false
    }
    /// Housekeeping for an idle moment that makes later writes faster (preallocating WAL
    /// space). Changes nothing a recovery reads. A full disk is not an error here.
    fn prepare(&mut self) -> Result<(), StoreError> {
        Ok(())
    }
}

impl<D> LogStore for kv_storage::Storage<D>
where
    D: kv_storage::Disk + Send + 'static,
{
    fn execute(&mut self, op: &DiskOp) -> Result<(), StoreError> {
        let result = match op {
            DiskOp::Append(record) => self.append(record),
            DiskOp::SaveSnapshot { shard, index, data } => self.save_snapshot(*shard, *index, data),
            DiskOp::Compact { shard, index } => self.compact(*shard, *index),
            // In write order with the rest: a removal never runs after a later life of
            // the replica wrote (the node core emits none once the shard is hosted again).
            DiskOp::RemoveGroup { shard } => self.remove_group(*shard),
            DiskOp::TakeBackGroup { shard } => self.take_back_group(*shard),
        };
        result.map_err(classify)
    }

    fn append_all(&mut self, records: &[&Record]) -> Result<(), (usize, StoreError)> {
        kv_storage::Storage::append_all(self, records).map_err(|p| (p.appended, classify(p.error)))
    }

    fn sync(&mut self) -> Result<(), StoreError> {
        // A failed fsync leaves the page cache in an unknown state (the "fsyncgate"
        // lesson), so even ENOSPC here is fatal rather than retried.
        kv_storage::Storage::sync(self).map_err(StoreError::Fatal)
    }

    fn wants_prepare(&self) -> bool {
        self.needs_preallocation(PREALLOCATE_LOW_BYTES)
    }

    fn prepare(&mut self) -> Result<(), StoreError> {
        match self.preallocate(PREALLOCATE_BYTES) {
            // Without the space, records are appended as they were before it.
            Ok(_) | Err(kv_storage::StorageError::DiskFull { .. }) => Ok(()),
            Err(e) => Err(StoreError::Fatal(e)),
        }
    }
}

fn classify(e: kv_storage::StorageError) -> StoreError {
    match e {
        kv_storage::StorageError::DiskFull { .. } => StoreError::Full(e),
        other => StoreError::Fatal(other),
    }
}

/// What the disk thread reports to the event loop.
#[derive(Debug)]
pub enum DiskEvent {
    /// These writes are durable (executed and synced); ids ascending.
    Done(Vec<u64>),
    /// A write found the disk full; writes stall and are retried every
    /// [`DISK_FULL_RETRY`] until [`DiskEvent::Recovered`].
    Full(kv_storage::StorageError),
    /// The stalled writes went through: there is room again.
    Recovered,
    /// A storage failure other than a full disk. The thread has stopped; the writes it
    /// held are not durable.
    Failed(kv_storage::StorageError),
}

/// The disk thread's channel end was closed: the thread stopped (after a failure or a
/// panic), so nothing more will become durable.
#[derive(Debug, thiserror::Error)]
#[error("the disk thread has stopped")]
pub struct DiskThreadGone;

/// Handle to the running disk thread.
pub struct DiskThread {
    tx: Option<mpsc::Sender<Msg>>,
    handle: Option<JoinHandle<()>>,
    /// Writes queued for the thread and not yet reported done (or failed). At 0 the
    /// thread does not touch the store, and every write it took is reported.
    queued: Arc<AtomicUsize>,
    store: Arc<Mutex<dyn LogStore>>,
}

impl std::fmt::Debug for DiskThread {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiskThread")
            .field("queued", &self.queued.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// Where [`DiskThread::write_here`] left a write.
#[derive(Debug, PartialEq, Eq)]
pub enum Placed {
    /// Written and synced on the caller's thread: durable now, and no
    /// [`DiskEvent::Done`] will name it.
    Durable(u64),
    /// Queued for the disk thread, which reports it as any submitted write.
    Queued,
}

/// Why [`DiskThread::write_here`] could not place a write.
#[derive(Debug, thiserror::Error)]
pub enum WriteHereError {
    /// Writing or syncing it failed for a reason other than a full disk: as for the
    /// thread's own failures, the state on disk is unknown and the node must stop.
    #[error(transparent)]
    Failed(kv_storage::StorageError),
    /// It had to be queued, and the thread has stopped.
    #[error(transparent)]
    Gone(#[from] DiskThreadGone),
}

impl DiskThread {
    /// Starts the thread over `store`; it reports on `events`.
    pub fn spawn<S: LogStore>(
        store: S,
        events: UnboundedSender<DiskEvent>,
    ) -> std::io::Result<DiskThread> {
        let (tx, rx) = mpsc::channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let store = Arc::new(Mutex::new(store));
        let thread_side = Side {
            store: store.clone(),
            queued: queued.clone(),
        };
        let handle = std::thread::Builder::new()
            .name("disk".into())
            .spawn(move || disk_main(thread_side, rx, events))?;
        Ok(DiskThread {
            tx: Some(tx),
            handle: Some(handle),
            queued,
            store,
        })
    }

    /// Queues a write. Never blocks.
    pub fn submit(&self, write: DiskWrite) -> Result<(), DiskThreadGone> {
        self.queue(Pending { write, ops_done: 0 })
    }

    fn queue(&self, pending: Pending) -> Result<(), DiskThreadGone> {
        let tx = self.tx.as_ref().ok_or(DiskThreadGone)?;
        // Counted before the thread can see it, so the count never reads 0 while the
        // thread may still touch the store for it.
        self.queued.fetch_add(1, Ordering::AcqRel);
        tx.send(Msg::Write(pending)).map_err(|_| DiskThreadGone)
    }

    /// True if the thread has nothing queued or in progress: every write it took is
    /// durable and reported, and it will not touch the store until the next submit.
    pub fn idle(&self) -> bool {
        self.queued.load(Ordering::Acquire) == 0
    }

    /// Writes and syncs `write` on the calling thread, blocking it for the write and the
    /// fsync, if the disk thread is [idle](Self::idle) and the write is small (appends
    /// and compactions of at most [`WRITE_HERE_BYTES_MAX`] record bytes); otherwise, or
    /// if it finds the disk full, queues it for the thread (which retries it from the op
    /// that failed). Writes stay in id order either way: an idle thread holds none.
    pub fn write_here(&self, write: DiskWrite) -> Result<Placed, WriteHereError> {
        if !self.idle() || !small(&write) {
            self.submit(write)?;
            return Ok(Placed::Queued);
        }
        let mut store = match self.store.try_lock() {
            Ok(store) => store,
            // The thread is preparing (it then takes the write next), or it panicked
            // (poisoned), and the submit reports it gone.
            Err(_) => {
                self.submit(write)?;
                return Ok(Placed::Queued);
            }
        };
        let id = write.id;
        let mut one = VecDeque::from([Pending { write, ops_done: 0 }]);
        match execute_all(&mut *store, &mut one) {
            Ok(()) => {}
            Err(StoreError::Full(_)) => {
                drop(store);
                let pending = one.pop_front().expect("the write is still there");
                self.queue(pending)?;
                return Ok(Placed::Queued);
            }
            Err(StoreError::Fatal(e)) => return Err(WriteHereError::Failed(e)),
        }
        match store.sync() {
            Ok(()) => {}
            Err(StoreError::Fatal(e) | StoreError::Full(e)) => {
                return Err(WriteHereError::Failed(e))
            }
        }
        if store.wants_prepare() {
            drop(store);
            // Not counted as queued: it is no write. A thread that is gone is reported
            // by the next write.
            if let Some(tx) = &self.tx {
                let _ = tx.send(Msg::Prepare);
            }
        }
        Ok(Placed::Durable(id))
    }

    /// Closes the queue and waits (blocking) until the thread has written, synced and
    /// reported everything queued, or stopped on a failure. Returns `Err` if the thread
    /// panicked.
    pub fn finish(mut self) -> Result<(), DiskThreadGone> {
        self.tx = None;
        match self.handle.take() {
            Some(h) => h.join().map_err(|_| DiskThreadGone),
            None => Ok(()),
        }
    }
}

/// True if `write` is small enough for [`DiskThread::write_here`].
fn small(write: &DiskWrite) -> bool {
    let mut bytes = 0;
    for op in &write.ops {
        match op {
            DiskOp::Append(record) => bytes += record.payload.len(),
            DiskOp::Compact { .. } => {}
            DiskOp::SaveSnapshot { .. }
            | DiskOp::RemoveGroup { .. }
            | DiskOp::TakeBackGroup { .. } => return false,
        }
    }
    bytes <= WRITE_HERE_BYTES_MAX
}

/// What the event loop hands the disk thread.
enum Msg {
    /// A write of the node core, executed in id order, from the op a full disk stopped
    /// at if the loop tried it first.
    Write(Pending),
    /// The loop's own writes used up the preallocated space: prepare more while idle.
    Prepare,
}

/// The disk thread's side of the shared store.
struct Side<S> {
    store: Arc<Mutex<S>>,
    queued: Arc<AtomicUsize>,
}

/// A queued write and how many of its ops are already executed (a disk-full retry
/// resumes at the op that failed, so no record is appended twice).
struct Pending {
    write: DiskWrite,
    ops_done: usize,
}

fn disk_main<S: LogStore>(
    side: Side<S>,
    rx: mpsc::Receiver<Msg>,
    events: UnboundedSender<DiskEvent>,
) {
    let mut queue: VecDeque<Pending> = VecDeque::new();
    let mut open = true;
    let mut full = false;
    // Prepared at start, and at the first empty queue after each nudge.
    let mut prepare_due = true;
    let push = |queue: &mut VecDeque<Pending>, prepare_due: &mut bool, msg: Msg| {
        let Msg::Write(pending) = msg else {
            *prepare_due = true;
            return;
        };
        if let Some(last) = queue.back() {
            assert!(
                pending.write.id > last.write.id,
                "DiskWrites must come in id order: {} after {}",
                pending.write.id,
                last.write.id
            );
        }
        queue.push_back(pending);
    };
    loop {
        if queue.is_empty() {
            if !open {
                return;
            }
            if std::mem::take(&mut prepare_due) {
                if let Err(StoreError::Fatal(error) | StoreError::Full(error)) = prepare(&side) {
                    let _ = events.send(DiskEvent::Failed(error));
                    return;
                }
            }
            match rx.recv() {
                Ok(w) => push(&mut queue, &mut prepare_due, w),
                Err(_) => return,
            }
        }
        // Group commit: everything that queued up while we were busy joins this batch.
        while open && queue.len() < BATCH_WRITES_MAX {
            match rx.try_recv() {
                Ok(w) => push(&mut queue, &mut prepare_due, w),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => open = false,
            }
        }
        // The loop takes the store only while nothing is queued, so this never waits.
        let mut store = side
            .store
            .lock()
            .expect("only the disk thread panics holding it");
        match execute_all(&mut *store, &mut queue) {
            Ok(()) => {}
            Err(StoreError::Full(error)) => {
                drop(store);
                if !full {
                    full = true;
                    let _ = events.send(DiskEvent::Full(error));
                }
                if !open {
                    // Shutting down with no room: what is queued was never acknowledged,
                    // so leaving it unwritten loses nothing that was promised.
                    return;
                }
                match rx.recv_timeout(DISK_FULL_RETRY) {
                    Ok(w) => push(&mut queue, &mut prepare_due, w),
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => open = false,
                }
                continue;
            }
            Err(StoreError::Fatal(error)) => {
                let _ = events.send(DiskEvent::Failed(error));
                return;
            }
        }
        if let Err(StoreError::Fatal(error) | StoreError::Full(error)) = store.sync() {
            let _ = events.send(DiskEvent::Failed(error));
            return;
        }
        drop(store);
        if full {
            full = false;
            let _ = events.send(DiskEvent::Recovered);
        }
        let ids: Vec<u64> = queue.drain(..).map(|p| p.write.id).collect();
        let n = ids.len();
        if !ids.is_empty() && events.send(DiskEvent::Done(ids)).is_err() {
            // The event loop is gone; nothing can be acknowledged any more.
            return;
        }
        // Only now: a loop that reads 0 finds these reported already.
        side.queued.fetch_sub(n, Ordering::AcqRel);
    }
}

/// Lets the store prepare if it wants to. Runs only with nothing queued; the loop then
/// finds the store locked at most for the preparation and queues its write instead.
fn prepare<S: LogStore>(side: &Side<S>) -> Result<(), StoreError> {
    let mut store = side
        .store
        .lock()
        .expect("only the disk thread panics holding it");
    if store.wants_prepare() {
        store.prepare()?;
    }
    Ok(())
}

/// Executes every op not yet executed, in order; stops at the first failure, leaving the
/// failed op (and everything after it) to be retried. Consecutive appends, across
/// writes too, go to the store as one batch: with many groups a round holds an entries
/// and a hard-state record per group, and one write(2) for all of them instead of one
/// each is most of the disk thread's system calls.
fn execute_all<S: LogStore + ?Sized>(
    store: &mut S,
    queue: &mut VecDeque<Pending>,
) -> Result<(), StoreError> {
    let mut at = 0;
    while at < queue.len() {
        let p = &queue[at];
        let Some(op) = p.write.ops.get(p.ops_done) else {
            at += 1;
            continue;
        };
        if !matches!(op, DiskOp::Append(_)) {
            store.execute(op)?;
            queue[at].ops_done += 1;
            continue;
        }
        let run = append_run(queue, at);
        let (appended, result) = match store.append_all(&run) {
            Ok(()) => (run.len(), Ok(())),
            Err((n, e)) => (n, Err(e)),
        };
        drop(run);
        mark_done(queue, at, appended);
        result?;
    }
    Ok(())
}

/// The records of the appends that come next from `queue[at]` on, up to the first op
/// that is not an append.
fn append_run(queue: &VecDeque<Pending>, at: usize) -> Vec<&Record> {
    let mut run = Vec::new();
    for p in queue.iter().skip(at) {
        for op in &p.write.ops[p.ops_done..] {
            match op {
                DiskOp::Append(record) => run.push(record),
                _ => return run,
            }
        }
    }
    run
}

/// Counts the next `n` ops from `queue[at]` on as executed.
fn mark_done(queue: &mut VecDeque<Pending>, mut at: usize, mut n: usize) {
    while n > 0 {
        let p = &mut queue[at];
        let k = n.min(p.write.ops.len() - p.ops_done);
        p.ops_done += k;
        n -= k;
        at += 1;
    }
}

#[cfg(test)]
mod tests {
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
                DiskOp::TakeBackGroup { shard } => {
                    log.group_ops.push(("take back", *shard, before))
                }
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
        let fake = Fake::default();
        let (etx, mut erx) = unbounded_channel();
        let disk = DiskThread::spawn(fake.clone(), etx).unwrap();
        fake.with(|l| l.hold_sync = true);
        disk.submit(write(1)).unwrap();
        // Wait until write 1 is executed and its sync is blocked, then queue 50 more.
        while fake.with(|l| l.executed.len()) < 2 {
            std::thread::sleep(Duration::from_millis(1));
        }
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
        let fake = Fake::default();
        let (etx, mut erx) = unbounded_channel();
        let disk = DiskThread::spawn(fake.clone(), etx).unwrap();
        fake.with(|l| l.hold_sync = true);
        disk.submit(write(1)).unwrap();
        while fake.with(|l| l.executed.len()) < 2 {
            std::thread::sleep(Duration::from_millis(1));
        }
        let compact = |index| DiskOp::Compact { shard: 0, index };
        disk.submit(DiskWrite {
            id: 2,
            ops: vec![compact(20), DiskOp::RemoveGroup { shard: 7 }],
        })
        .unwrap();
        disk.submit(DiskWrite {
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
        let fake = Fake::default();
        let (etx, mut erx) = unbounded_channel();
        let disk = DiskThread::spawn(fake.clone(), etx).unwrap();
        fake.with(|l| l.hold_sync = true);
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
        let fake = Fake::default();
        fake.with(|l| l.full_for = 2);
        let (etx, mut erx) = unbounded_channel();
        let disk = DiskThread::spawn(fake.clone(), etx).unwrap();
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
        let fake = Fake::default();
        let (etx, mut erx) = unbounded_channel();
        let disk = DiskThread::spawn(fake.clone(), etx).unwrap();
        fake.with(|l| l.hold_sync = true);
        disk.submit(DiskWrite {
            id: 1,
            ops: vec![append(1), append(2)],
        })
        .unwrap();
        while fake.with(|l| l.batches.len()) < 1 {
            std::thread::sleep(Duration::from_millis(1));
        }
        // Writes 2 and 3 queue behind write 1's sync: their appends meet across the two
        // writes, and a Compact splits the run.
        disk.submit(DiskWrite {
            id: 2,
            ops: vec![append(3), append(4)],
        })
        .unwrap();
        disk.submit(DiskWrite {
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
        let fake = Fake::default();
        fake.with(|l| l.fail_sync = true);
        let (etx, mut erx) = unbounded_channel();
        let disk = DiskThread::spawn(fake.clone(), etx).unwrap();
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
        assert_eq!(writer.join().unwrap(), Placed::Durable(1));
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
        assert_eq!(disk.write_here(write(3)).unwrap(), Placed::Durable(3));
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
            id: 1,
            ops: vec![append(1), append(2), append(3)],
        };
        assert_eq!(disk.write_here(three).unwrap(), Placed::Durable(1));
        // One record of space left: the loop's write nudged the thread.
        wait_until(|| fake.with(|l| l.prepared_on.len()) == 2);
        let one = DiskWrite {
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
            id: 1,
            ops: vec![big],
        };
        assert_eq!(disk.write_here(big).unwrap(), Placed::Queued);
        assert_eq!(done_ids(&mut erx, 1), vec![1]);
        wait_until(|| disk.idle());
        let removal = DiskWrite {
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
        let fake = Fake::default();
        let (etx, mut erx) = unbounded_channel();
        let disk = DiskThread::spawn(fake.clone(), etx).unwrap();
        for id in 1..=20 {
            disk.submit(write(id)).unwrap();
        }
        disk.finish().unwrap();
        assert_eq!(done_ids(&mut erx, 20), (1..=20).collect::<Vec<_>>());
        assert_eq!(fake.with(|l| l.executed.len()), 40);
    }
}
