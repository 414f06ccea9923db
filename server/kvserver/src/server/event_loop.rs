//! The loop itself: what wakes it, the inputs it feeds the core between flushes (disk
//! completions, ticks, registration news, the Redis gateway's requests), the periodic metrics,
//! and the orderly finish on shutdown.

use super::{
    EventLoop, ServerError, METRICS_INTERVAL, METRICS_SYNC_TICKS, SLOW_TURN,
    WRITES_HERE_PER_TURN_MAX,
};
use crate::balancer::Leadership;
use crate::disk::{DiskEvent, SYNC_DEFER_MAX};
use crate::registration::RegistrationEvent;
use crate::resp::local::{LocalRequest, LOCAL_TOKEN};
use kv_node::WriteRefusal;
use kv_shared::auth::ReplayWindow;
use kv_shared::registry::{NodeState, METADATA_SHARD};
use std::future::Future;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::MissedTickBehavior;

/// What woke the loop up.
enum Wake {
    Shutdown,
    Disk(Option<DiskEvent>),
    Tick,
    Readable(std::io::Result<()>),
    Metrics,
    Local(LocalRequest),
    Registration(Option<RegistrationEvent>),
}

impl Wake {
    /// For the slow-turn warning: what the turn started with.
    fn name(&self) -> &'static str {
        match self {
            Wake::Shutdown => "shutdown",
            Wake::Disk(_) => "disk",
            Wake::Tick => "tick",
            Wake::Readable(_) => "socket",
            Wake::Metrics => "metrics",
            Wake::Local(_) => "redis",
            Wake::Registration(_) => "registration",
        }
    }
}

impl EventLoop {
    pub(super) async fn run(
        mut self,
        mut events: UnboundedReceiver<DiskEvent>,
        tick: Duration,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), ServerError> {
        let mut ticker = tokio::time::interval(tick);
        // A late tick is not made up for with a burst: Raft timeouts only get longer.
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut metrics = tokio::time::interval_at(
            tokio::time::Instant::now() + METRICS_INTERVAL,
            METRICS_INTERVAL,
        );
        tokio::pin!(shutdown);
        let result = loop {
            let wake = tokio::select! {
                biased;
                () = &mut shutdown => Wake::Shutdown,
                ev = events.recv() => Wake::Disk(ev),
                _ = ticker.tick() => Wake::Tick,
                r = self.socket.readable() => Wake::Readable(r),
                _ = metrics.tick() => Wake::Metrics,
                local = self.local_requests.next() => Wake::Local(local),
                ev = self.registration.recv(), if self.registration_open => Wake::Registration(ev),
            };
            let turn_started = Instant::now();
            let woke = wake.name();
            self.guard_leases();
            let step = match wake {
                Wake::Shutdown => break Ok(()),
                Wake::Disk(None) => Err(ServerError::DiskThreadStopped),
                Wake::Disk(Some(ev)) => self.on_disk_events(ev, &mut events),
                Wake::Registration(ev) => self.on_registration(ev),
                Wake::Tick if !self.taking_part => Ok(()),
                Wake::Tick => {
                    // Wall time only feeds the status table ("ms since a peer was heard").
                    self.core.set_now_ms(self.now_ms());
                    self.core.tick();
                    // Deferrable writes this loop executed itself wait for a sync no
                    // later than the thread's own would: asked for a tick early.
                    if let Some(disk) = &self.disk {
                        disk.sync_held_older_than(SYNC_DEFER_MAX.saturating_sub(tick));
                    }
                    if let Some(guard) = &mut self.lease_guard {
                        guard.ticked(std::time::Instant::now());
                    }
                    self.ticks += 1;
                    if self.ticks.is_multiple_of(METRICS_SYNC_TICKS) {
                        self.sync_metrics();
                        self.sync_peers();
                        self.feed_balancer();
                    }
                    Ok(())
                }
                Wake::Readable(Ok(())) => {
                    self.drain_socket();
                    Ok(())
                }
                Wake::Readable(Err(e)) => Err(e.into()),
                Wake::Metrics => {
                    self.log_metrics();
                    Ok(())
                }
                Wake::Local(local) => {
                    self.on_local_request(local);
                    Ok(())
                }
            };
            if let Err(e) = step.and_then(|()| self.gather_ready(&mut events)) {
                break Err(e);
            }
            if let Err(e) = self.flush_all(&mut events).await {
                break Err(e);
            }
            self.note_turn(woke, turn_started);
            if let Some(e) = self.disk_failure.take() {
                break Err(ServerError::Disk(e));
            }
            if self.disk.is_none() {
                break Err(ServerError::DiskThreadStopped);
            }
        };
        self.finish(events, result).await
    }

    /// Flushes the core's output, and again after every write the flush made durable
    /// itself (the acks and replies it released), taking in meanwhile whatever arrived
    /// during its fsync (a follower's ack, the next requests). At most
    /// [`WRITES_HERE_PER_TURN_MAX`] such writes, so a steady stream of them cannot keep
    /// ticks and disk completions waiting; the last flush hands its writes to the thread.
    async fn flush_all(
        &mut self,
        events: &mut UnboundedReceiver<DiskEvent>,
    ) -> Result<(), ServerError> {
        let mut writes_here = 0;
        while self
            .flush((writes_here < WRITES_HERE_PER_TURN_MAX).then_some(&mut *events))
            .await
        {
            writes_here += 1;
            self.gather_ready(events)?;
        }
        // A follower's applying, deferred until its acks left (NodeCore::
        // set_defer_follower_applies): off the leader's commit path, and while a write
        // handed to the disk thread syncs. What it releases (answers to follower reads)
        // leaves in one more flush.
        if self.core.apply_deferred() {
            self.flush(None).await;
        }
        Ok(())
    }

    /// Takes in every other input that is already waiting (disk completions, queued
    /// datagrams) so that one flush answers them all: acks released by an fsync and the
    /// replies to datagrams that arrived meanwhile leave in one datagram per peer instead
    /// of one per input. Costs no syscall when nothing is waiting (tokio knows the
    /// socket's readiness without asking the kernel).
    fn gather_ready(
        &mut self,
        events: &mut UnboundedReceiver<DiskEvent>,
    ) -> Result<(), ServerError> {
        self.guard_leases();
        if let Ok(ev) = events.try_recv() {
            self.on_disk_events(ev, events)?;
        }
        self.drain_socket();
        while let Some(local) = self.local_requests.try_next() {
            self.on_local_request(local);
        }
        Ok(())
    }

    /// Before the core takes input: if its ticks fell behind real time, it forgets its
    /// leader leases (`lease_guard`), so no read is answered from a lease that has run
    /// out in real time.
    fn guard_leases(&mut self) {
        if let Some(guard) = &mut self.lease_guard {
            if guard.must_expire(std::time::Instant::now()) {
                self.core.expire_leases();
                self.metrics.lease_expired();
            }
        }
    }

    /// A Redis gateway's request: straight into the core. It is bound to a client name
    /// already (a write to the session id the client's UDP requests bind to), and the
    /// gateway checked the client's permission; the core checks a full disk itself.
    fn on_local_request(&mut self, local: LocalRequest) {
        self.inputs_since_flush += 1;
        let request = self.local_requests.take(local);
        self.core.on_client_request(LOCAL_TOKEN, request);
    }

    /// What the registration task found.
    fn on_registration(&mut self, ev: Option<RegistrationEvent>) -> Result<(), ServerError> {
        match ev {
            // The task ended: nothing more will come.
            None => self.registration_open = false,
            Some(RegistrationEvent::Heard(registry)) => {
                self.core.learn_registry(registry);
                self.sync_peers();
            }
            Some(RegistrationEvent::HeardMetadataRoute(route)) => {
                self.core.learn_metadata_route(route);
            }
            Some(RegistrationEvent::Cleared) => {
                tracing::info!(
                    node = self.me.0,
                    "new data directory: no node knows this id under another one; taking part"
                );
                self.taking_part = true;
            }
            Some(RegistrationEvent::Registered) => {
                tracing::info!(node = self.me.0, "registered in the node registry");
            }
            Some(RegistrationEvent::Refused(refusal)) => return Err(ServerError::Refused(refusal)),
        }
        Ok(())
    }

    /// Makes a peer of every node the registry lists that this node does not know yet
    /// (joined after the cluster file was written), and follows a joined node's new
    /// address (never a cluster-file node's): only such nodes' datagrams are opened, and
    /// only they are sent to.
    pub(super) fn sync_peers(&mut self) {
        let Some(registry) = self.core.registry() else {
            return;
        };
        for r in registry.nodes.iter().filter(|r| r.id != self.me) {
            if r.state == NodeState::Removed {
                continue;
            }
            match self.peers.iter().position(|(id, _)| *id == r.id) {
                Some(i) if i >= self.file_peers => self.peers[i].1 = r.addr,
                Some(_) => {}
                None => {
                    tracing::info!(peer = r.id.0, addr = %r.addr, "a registered node becomes a peer");
                    self.peers.push((r.id, r.addr));
                    self.peer_windows.push(ReplayWindow::default());
                    self.hello_due.push(false);
                    self.peer_send.push(self.keys.peer_sender(self.me, r.id));
                    self.peer_recv.push(self.keys.peer_receivers(self.me, r.id));
                }
            }
        }
    }

    /// Tells the balancer whether this node leads the metadata group, with its registry
    /// (only when that changed).
    fn feed_balancer(&self) {
        if let Some(feed) = &self.balancer_feed {
            let leads = self.core.leader_of(METADATA_SHARD) == Some(self.me);
            let now = Leadership {
                leads,
                registry: self.core.registry(),
            };
            feed.send_if_modified(|had| {
                let changed = *had != now;
                if changed {
                    *had = now;
                }
                changed
            });
        }
    }

    /// Warns (at most once a second) about a turn longer than [`SLOW_TURN`].
    fn note_turn(&mut self, woke: &'static str, started: Instant) {
        *self.counters.turns.entry(woke).or_default() += 1;
        let took = started.elapsed();
        if took < SLOW_TURN {
            return;
        }
        if let Some(suppressed) = self.slow_turns.check(Instant::now()) {
            tracing::warn!(
                node = self.me.0,
                ms = took.as_millis() as u64,
                woke,
                suppressed,
                "slow event loop turn: every group's timers waited"
            );
        }
    }

    /// Milliseconds since the node started.
    pub(super) fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Handles `first` and every other disk event already queued.
    pub(super) fn on_disk_events(
        &mut self,
        first: DiskEvent,
        events: &mut UnboundedReceiver<DiskEvent>,
    ) -> Result<(), ServerError> {
        let mut next = Some(first);
        while let Some(ev) = next {
            match ev {
                DiskEvent::Done(ids) => {
                    self.counters.wal_syncs += 1;
                    for id in ids {
                        self.core.on_disk_done(id);
                    }
                }
                DiskEvent::Full(reason) => {
                    tracing::error!(
                        "{reason}: refusing client writes until space frees up \
                         (reads are still served; the stalled write is retried every {:?})",
                        crate::disk::DISK_FULL_RETRY
                    );
                    self.core.refuse_writes(Some(WriteRefusal::DiskFull));
                }
                DiskEvent::Recovered => {
                    tracing::info!("disk has room again: accepting client writes");
                    self.core.refuse_writes(None);
                }
                DiskEvent::Failed(error) => return Err(ServerError::Disk(error)),
            }
            next = events.try_recv().ok();
        }
        Ok(())
    }

    pub(super) fn sync_metrics(&self) {
        let status = self.core.status();
        for s in &status.shards {
            if let Some(view) = self.core.group_view(s.shard) {
                self.metrics.proposals_to(s.shard.0, view.proposed_writes);
            }
        }
        self.metrics
            .sync(&status, &self.counters, self.core.pending_requests());
    }

    fn log_metrics(&mut self) {
        let c = &self.counters;
        let drops = c.drops_total();
        if drops > self.drops_logged {
            tracing::info!(
                datagrams_in = c.datagrams_in,
                datagrams_out = c.datagrams_out,
                client_requests = c.client_requests,
                "datagrams dropped so far: {}",
                c.drops_summary()
            );
        } else {
            tracing::debug!(
                datagrams_in = c.datagrams_in,
                datagrams_out = c.datagrams_out,
                client_requests = c.client_requests,
                "traffic; drops: {}",
                c.drops_summary()
            );
        }
        self.drops_logged = drops;
    }

    /// Shutdown (or a fatal error): close the disk queue, wait for the batch in progress,
    /// and on a clean shutdown let the core release what that batch made durable.
    async fn finish(
        mut self,
        mut events: UnboundedReceiver<DiskEvent>,
        result: Result<(), ServerError>,
    ) -> Result<(), ServerError> {
        if let Some(disk) = self.disk.take() {
            let joined = tokio::task::spawn_blocking(move || disk.finish()).await;
            if !matches!(joined, Ok(Ok(()))) {
                tracing::error!("the disk thread panicked");
            }
        }
        let mut failed = None;
        while let Ok(ev) = events.try_recv() {
            match ev {
                DiskEvent::Done(ids) if result.is_ok() => {
                    for id in ids {
                        self.core.on_disk_done(id);
                    }
                }
                DiskEvent::Failed(error) => failed = Some(error),
                DiskEvent::Done(_) | DiskEvent::Full(_) | DiskEvent::Recovered => {}
            }
        }
        if result.is_ok() {
            // The disk is closed: nothing is written here.
            self.flush(None).await;
        }
        // A storage failure's own words beat the generic "the disk thread stopped".
        let result = match (result, failed) {
            (Ok(()) | Err(ServerError::Disk(_) | ServerError::DiskThreadStopped), Some(error)) => {
                Err(ServerError::Disk(error))
            }
            (result, _) => result,
        };
        self.log_metrics();
        tracing::info!(node = self.me.0, "kvserver node stopped");
        result
    }
}
