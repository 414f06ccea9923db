//! One timer per client instead of one per request: each session arms its attempt's
//! deadline in a slot and one task sweeps the slots, so that a request costs two atomic
//! stores rather than a tokio timer registered and cancelled (the load generator shares
//! the benchmark's cores, and that timer was a tenth of its work per operation).

use crate::client::{Response, Shared};
use crate::receive::{Answer, Incoming};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// A session's armed attempt deadline, in microseconds since the watchdog's epoch; 0 when
/// the session waits for nothing.
pub(crate) type Slot = Arc<AtomicU64>;

/// How often the sweeper looks while attempts are outstanding: an attempt is found
/// expired at most this late, a small fraction of the attempt timeout.
pub(crate) fn sweep_period(attempt_timeout: Duration) -> Duration {
    (attempt_timeout / 20).clamp(Duration::from_millis(1), Duration::from_millis(10))
}

pub(crate) struct Watchdog {
    epoch: Instant,
    period: Duration,
    /// The sweeper waits for `wake` instead of ticking: an idle client wakes no one.
    idle: AtomicBool,
    wake: Notify,
}

impl Watchdog {
    pub(crate) fn new(attempt_timeout: Duration) -> Watchdog {
        Watchdog {
            epoch: Instant::now(),
            period: sweep_period(attempt_timeout),
            idle: AtomicBool::new(false),
            wake: Notify::new(),
        }
    }

    /// Arms `slot` for an attempt ending at `at`; returns the mark the expiry notice will
    /// carry ([`Incoming::expired`]), never 0.
    pub(crate) fn arm(&self, slot: &AtomicU64, at: Instant) -> u64 {
        let mark = (at.saturating_duration_since(self.epoch).as_micros() as u64).max(1);
        // SeqCst on both sides (here and in `sweep_loop`): either the sweeper's last look
        // before it sleeps sees this deadline, or this sees it asleep and wakes it.
        slot.store(mark, Ordering::SeqCst);
        if self.idle.load(Ordering::SeqCst) {
            self.wake.notify_one();
        }
        mark
    }

    /// The attempt ended another way: no notice is needed (a late one is ignored anyway).
    pub(crate) fn disarm(&self, slot: &AtomicU64) {
        slot.store(0, Ordering::Relaxed);
    }

    /// Sends an expiry notice to every session whose attempt deadline has passed; returns
    /// how many attempts are still armed.
    fn sweep(&self, s: &Shared) -> usize {
        let at = Instant::now();
        let now = at.saturating_duration_since(self.epoch).as_micros() as u64;
        let sessions = s.sessions.lock().expect("sessions lock");
        let mut armed = 0;
        for mailbox in sessions.values() {
            let mark = mailbox.slot.load(Ordering::SeqCst);
            if mark == 0 {
                continue;
            }
            if mark > now {
                armed += 1;
            } else if mailbox
                .slot
                .compare_exchange(mark, 0, Ordering::SeqCst, Ordering::Relaxed)
                .is_ok()
            {
                mailbox.tx.send(Incoming::expiry(mark, at));
            }
        }
        armed
    }
}

pub(crate) async fn sweep_loop(shared: Weak<Shared>) {
    loop {
        let Some(s) = shared.upgrade() else { return };
        let w = &s.watchdog;
        if w.sweep(&s) == 0 {
            w.idle.store(true, Ordering::SeqCst);
            if w.sweep(&s) == 0 {
                w.wake.notified().await;
            }
            w.idle.store(false, Ordering::SeqCst);
        }
        let period = w.period;
        drop(s);
        tokio::time::sleep(period).await;
    }
}

impl Incoming {
    /// The notice, sent at `at`, that the attempt armed with `mark` has expired.
    fn expiry(mark: u64, at: Instant) -> Incoming {
        Incoming {
            from: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
            seq: 0,
            outcome: Answer::Done(Response::Done),
            expired: mark,
            at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sweep_period_is_a_small_fraction_of_the_attempt_timeout() {
        assert_eq!(
            sweep_period(Duration::from_secs(1)),
            Duration::from_millis(10)
        );
        assert_eq!(
            sweep_period(Duration::from_millis(100)),
            Duration::from_millis(5)
        );
        assert_eq!(
            sweep_period(Duration::from_millis(5)),
            Duration::from_millis(1)
        );
    }

    #[test]
    fn a_mark_is_never_zero_and_later_deadlines_mark_later() {
        let w = Watchdog::new(Duration::from_secs(1));
        let slot = AtomicU64::new(0);
        let a = w.arm(&slot, w.epoch);
        assert_eq!(a, 1);
        assert_eq!(slot.load(Ordering::SeqCst), 1);
        let b = w.arm(&slot, w.epoch + Duration::from_millis(3));
        assert_eq!(b, 3000);
        w.disarm(&slot);
        assert_eq!(slot.load(Ordering::SeqCst), 0);
    }
}
