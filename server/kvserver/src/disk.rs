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
//! only while nothing is queued for the thread, and the thread only for queued writes
//! and for syncing the deferrable writes either side executed and holds ([`Shared`]).
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
//! A write the node core marks deferrable (a leader's own log writes, which its
//! followers commit without) is executed at once, but its sync and its `Done` wait up to
//! [`SYNC_DEFER_MAX`], or until a write that is not deferrable comes, which one sync then
//! covers together with them: the leader's fsync stays out of the way of its followers'
//! on a shared disk and covers several rounds. The idle loop executes such a write
//! itself too, without a sync and without waking the thread; it then asks the thread for
//! the sync ([`DiskThread::sync_held_older_than`]) unless a write of its own that cannot
//! wait syncs it first.
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
use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedSender;

/// Most `DiskWrite`s committed by one fsync. Bounds the latency the first write of a
/// batch waits for the others; far above what one event-loop round produces.
pub const BATCH_WRITES_MAX: usize = 4096;
/// How long the thread waits before retrying a write that found the disk full.
pub const DISK_FULL_RETRY: Duration = Duration::from_secs(1);
/// Longest the thread holds written, deferrable writes (`DiskWrite::deferrable`: a
/// leader's own log writes, which its followers commit without) before it syncs them.
/// While every follower answers, the leader's fsync then stays out of the way of
/// theirs on a shared disk and covers several rounds; when one stops answering, the
/// leader's writes stop being deferrable within two heartbeat intervals, and until
/// then a commit that needs the leader's copy waits at most this long for it.
pub const SYNC_DEFER_MAX: Duration = Duration::from_millis(10);
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
    /// Writes queued for the thread and neither held ([`Shared::held`]) nor reported
    /// done (or failed). At 0 the thread does not touch the store except to sync and
    /// report held writes, and every other write it took is reported.
    queued: Arc<AtomicUsize>,
    store: Arc<Mutex<Shared<dyn LogStore>>>,
}

/// The store, and the deferrable writes executed on it whose sync waits: by whichever
/// side holds the lock, so a sync and the report of what it covered cannot interleave
/// with the other side's writes.
pub struct Shared<S: ?Sized> {
    /// Ids of executed, unsynced deferrable writes, ascending.
    held: Vec<u64>,
    /// When the oldest of `held` was executed.
    held_since: Instant,
    store: S,
}

impl<S: ?Sized> Shared<S> {
    fn hold(&mut self, id: u64) {
        if self.held.is_empty() {
            self.held_since = Instant::now();
        }
        self.held.push(id);
    }
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
    /// Written and synced on the caller's thread, with the held writes the sync covered:
    /// durable now (ids ascending, the write's own last), and no [`DiskEvent::Done`]
    /// will name them. The caller takes in the `Done` events already queued first: the
    /// thread may have reported earlier writes just before.
    Durable(Vec<u64>),
    /// A deferrable write, executed on the caller's thread and held unsynced: a later
    /// `Durable` or `Done` names it.
    Held,
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
        Self::spawn_deferring(store, events, SYNC_DEFER_MAX)
    }

    /// As [`DiskThread::spawn`], holding deferrable writes up to `sync_defer_max`.
    pub fn spawn_deferring<S: LogStore>(
        store: S,
        events: UnboundedSender<DiskEvent>,
        sync_defer_max: Duration,
    ) -> std::io::Result<DiskThread> {
        let (tx, rx) = mpsc::channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let store = Arc::new(Mutex::new(Shared {
            held: Vec::new(),
            held_since: Instant::now(),
            store,
        }));
        let thread_side = Side {
            store: store.clone(),
            queued: queued.clone(),
        };
        let handle = std::thread::Builder::new()
            .name("disk".into())
            .spawn(move || disk_main(thread_side, rx, events, sync_defer_max))?;
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
    /// durable and reported or held unsynced, and it will not touch the store until the
    /// next submit except to sync held writes.
    pub fn idle(&self) -> bool {
        self.queued.load(Ordering::Acquire) == 0
    }

    /// Asks the thread to sync the held writes if the oldest was executed at least `age`
    /// ago: the event loop's writes held here have no timer of their own, so its ticks
    /// call this (with an age one tick short of [`SYNC_DEFER_MAX`]).
    pub fn sync_held_older_than(&self, age: Duration) {
        let due = match self.store.try_lock() {
            Ok(shared) => !shared.held.is_empty() && shared.held_since.elapsed() >= age,
            // The thread holds it, to write or sync: it reports what it syncs.
            Err(_) => false,
        };
        if let (true, Some(tx)) = (due, &self.tx) {
            // A thread that is gone is reported by the next write.
            let _ = tx.send(Msg::Sync);
        }
    }

    /// Writes `write` on the calling thread if the disk thread is [idle](Self::idle)
    /// and the write is small (appends and compactions of at most
    /// [`WRITE_HERE_BYTES_MAX`] record bytes): a deferrable write is held unsynced
    /// ([`Placed::Held`]; the thread puts off its fsync, [`SYNC_DEFER_MAX`]), any other
    /// is synced together with the held ones, blocking the caller for the fsync.
    /// Otherwise, or if it finds the disk full, it queues the write for the thread
    /// (which retries it from the op that failed). Writes stay in id order either way:
    /// an idle thread holds none but the held ones, which are older.
    pub fn write_here(&self, write: DiskWrite) -> Result<Placed, WriteHereError> {
        if !self.idle() || !small(&write) {
            self.submit(write)?;
            return Ok(Placed::Queued);
        }
        let mut shared = match self.store.try_lock() {
            Ok(shared) => shared,
            // The thread is preparing (it then takes the write next), or it panicked
            // (poisoned), and the submit reports it gone.
            Err(_) => {
                self.submit(write)?;
                return Ok(Placed::Queued);
            }
        };
        let (id, deferrable) = (write.id, write.deferrable);
        let mut one = VecDeque::from([Pending { write, ops_done: 0 }]);
        match execute_all(&mut shared.store, &mut one) {
            Ok(()) => {}
            Err(StoreError::Full(_)) => {
                drop(shared);
                let pending = one.pop_front().expect("the write is still there");
                self.queue(pending)?;
                return Ok(Placed::Queued);
            }
            Err(StoreError::Fatal(e)) => return Err(WriteHereError::Failed(e)),
        }
        let placed = if deferrable {
            shared.hold(id);
            Placed::Held
        } else {
            match shared.store.sync() {
                Ok(()) => {}
                Err(StoreError::Fatal(e) | StoreError::Full(e)) => {
                    return Err(WriteHereError::Failed(e))
                }
            }
            let mut ids = std::mem::take(&mut shared.held);
            ids.push(id);
            Placed::Durable(ids)
        };
        if shared.store.wants_prepare() {
            drop(shared);
            // Not counted as queued: it is no write. A thread that is gone is reported
            // by the next write.
            if let Some(tx) = &self.tx {
                let _ = tx.send(Msg::Prepare);
            }
        }
        Ok(placed)
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
    /// Writes the loop holds are due: sync them.
    Sync,
}

/// The disk thread's side of the shared store.
struct Side<S> {
    store: Arc<Mutex<Shared<S>>>,
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
    sync_defer_max: Duration,
) {
    let mut queue: VecDeque<Pending> = VecDeque::new();
    let mut open = true;
    let mut full = false;
    // Prepared at start, and at the first empty queue after each nudge.
    let mut nudges = Nudges {
        prepare: true,
        sync: false,
    };
    loop {
        if queue.is_empty() {
            let held_since = {
                let shared = side.lock();
                (!shared.held.is_empty()).then_some(shared.held_since)
            };
            if let Some(since) = held_since {
                let wait = (since + sync_defer_max).saturating_duration_since(Instant::now());
                let received = if open && !wait.is_zero() && !std::mem::take(&mut nudges.sync) {
                    rx.recv_timeout(wait)
                } else {
                    Err(RecvTimeoutError::Timeout)
                };
                match received {
                    Ok(w) => push(&mut queue, &mut nudges, w),
                    Err(RecvTimeoutError::Disconnected) => open = false,
                    Err(RecvTimeoutError::Timeout) => {
                        if !sync_and_report(&side, &events, &mut queue) {
                            return;
                        }
                    }
                }
                continue;
            }
            // Held writes the loop synced with a write of its own need nothing more.
            nudges.sync = false;
            if !open {
                return;
            }
            if std::mem::take(&mut nudges.prepare) {
                if let Err(StoreError::Fatal(error) | StoreError::Full(error)) = prepare(&side) {
                    let _ = events.send(DiskEvent::Failed(error));
                    return;
                }
            }
            match rx.recv() {
                Ok(w) => push(&mut queue, &mut nudges, w),
                Err(_) => return,
            }
            continue;
        }
        // Group commit: everything that queued up while we were busy joins this batch.
        while open && queue.len() < BATCH_WRITES_MAX {
            match rx.try_recv() {
                Ok(w) => push(&mut queue, &mut nudges, w),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => open = false,
            }
        }
        // The loop takes the store only while nothing is queued, so this never waits.
        let mut shared = side.lock();
        match execute_all(&mut shared.store, &mut queue) {
            Ok(()) => {}
            Err(StoreError::Full(error)) => {
                drop(shared);
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
                    Ok(w) => push(&mut queue, &mut nudges, w),
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
        if open && queue.iter().all(|p| p.write.deferrable) {
            let n = queue.len();
            for p in queue.drain(..) {
                shared.hold(p.write.id);
            }
            // Under the lock: a loop that reads 0 finds them held.
            side.queued.fetch_sub(n, Ordering::AcqRel);
        }
        drop(shared);
        if full {
            full = false;
            let _ = events.send(DiskEvent::Recovered);
        }
        if !queue.is_empty() && !sync_and_report(&side, &events, &mut queue) {
            return;
        }
    }
}

/// What the loop asked for besides writes.
struct Nudges {
    prepare: bool,
    sync: bool,
}

/// Takes one message of the loop: a write joins `queue`, a nudge is noted.
fn push(queue: &mut VecDeque<Pending>, nudges: &mut Nudges, msg: Msg) {
    let pending = match msg {
        Msg::Write(pending) => pending,
        Msg::Prepare => {
            nudges.prepare = true;
            return;
        }
        Msg::Sync => {
            nudges.sync = true;
            return;
        }
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
}

impl<S> Side<S> {
    fn lock(&self) -> std::sync::MutexGuard<'_, Shared<S>> {
        self.store
            .lock()
            .expect("only the disk thread panics holding it")
    }
}

/// Syncs the store and reports the held writes and then `queue` (all executed) done, in
/// id order, holding the lock until they are reported (a write the loop makes next is
/// reported after them). False if the sync failed (reported) or the event loop is gone.
fn sync_and_report<S: LogStore>(
    side: &Side<S>,
    events: &UnboundedSender<DiskEvent>,
    queue: &mut VecDeque<Pending>,
) -> bool {
    let mut shared = side.lock();
    if shared.held.is_empty() && queue.is_empty() {
        return true;
    }
    if let Err(StoreError::Fatal(error) | StoreError::Full(error)) = shared.store.sync() {
        let _ = events.send(DiskEvent::Failed(error));
        return false;
    }
    let mut ids = std::mem::take(&mut shared.held);
    let n = queue.len();
    ids.extend(queue.drain(..).map(|p| p.write.id));
    if events.send(DiskEvent::Done(ids)).is_err() {
        // The event loop is gone; nothing can be acknowledged any more.
        return false;
    }
    drop(shared);
    // Only now: a loop that reads 0 finds these reported already.
    side.queued.fetch_sub(n, Ordering::AcqRel);
    true
}

/// Lets the store prepare if it wants to. Runs only with nothing queued; the loop then
/// finds the store locked at most for the preparation and queues its write instead.
fn prepare<S: LogStore>(side: &Side<S>) -> Result<(), StoreError> {
    let mut shared = side.lock();
    if shared.store.wants_prepare() {
        shared.store.prepare()?;
    }
    Ok(())
}

/// Executes every op not yet executed, in order; stops at the first failure, leaving the
/// failed op (and everything after it) to be retried. Consecutive appends, across
/// writes too, go to the store as one batch: several writes can be queued (a round's
/// record, snapshots' and replicas' records), and one write(2) for all of them instead
/// of one each saves the disk thread's system calls.
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
#[path = "disk_tests.rs"]
mod tests;
