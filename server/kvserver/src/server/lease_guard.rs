//! Keeps lease reads safe when this node's ticks fall behind real time. kv-raft counts a
//! leader's lease in ticks; the loop ticks late when the process stalls or the machine is
//! busy (a late tick is never made up), so a stalled leader would count less time than
//! really passed and could answer from a lease its followers no longer honour. The guard
//! watches the monotonic clock and tells the core to forget its leases when the ticks lag.
//!
//! The rule: a lease may rest on a heartbeat sent at a tick less than `span` ticks ago
//! (`span = election_ticks_min - lease_margin_ticks`). A follower honours the leader for
//! at least `election_ticks_min - 1` ticks of its own from hearing it, and its ticks are
//! never early. So the guard expires the leases whenever the real time since the oldest
//! tick a lease may rest on reaches `(election_ticks_min - 1) * tick`; rounds sent before
//! that are forgotten with them, and the guard starts counting afresh.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The instants of the ticks a lease may rest on, and the real time they may span.
#[derive(Debug)]
pub(super) struct LeaseGuard {
    /// The real instants of the latest ticks (the newest last), at most `span` of them;
    /// the front is the earliest a heartbeat backing a lease can have been sent.
    ticks: VecDeque<Instant>,
    span_ticks: usize,
    /// How long a follower surely honours a heartbeat it heard.
    honoured: Duration,
}

impl LeaseGuard {
    /// A guard for a node with lease reads on (`None` if off), started at `now`.
    pub(super) fn new(
        lease_reads: bool,
        tick: Duration,
        election_ticks_min: u32,
        lease_margin_ticks: u32,
        now: Instant,
    ) -> Option<LeaseGuard> {
        let span_ticks = election_ticks_min.saturating_sub(lease_margin_ticks) as usize;
        (lease_reads && span_ticks > 0).then(|| LeaseGuard {
            ticks: VecDeque::from([now]),
            span_ticks,
            honoured: tick * election_ticks_min.saturating_sub(1),
        })
    }

    /// The core was ticked at `now`.
    pub(super) fn ticked(&mut self, now: Instant) {
        if self.ticks.len() == self.span_ticks {
            self.ticks.pop_front();
        }
        self.ticks.push_back(now);
    }

    /// True if the core must forget its leases before it takes any input at `now` (the
    /// caller then calls `NodeCore::expire_leases`); the guard counts from `now` on.
    pub(super) fn must_expire(&mut self, now: Instant) -> bool {
        let oldest = *self
            .ticks
            .front()
            .expect("the guard holds at least one instant");
        if now.saturating_duration_since(oldest) < self.honoured {
            return false;
        }
        self.ticks.clear();
        self.ticks.push_back(now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TICK: Duration = Duration::from_millis(10);

    /// local-3's timing: election_ticks_min 30, margin 6, so span 24 ticks and a
    /// heartbeat is honoured for at least 290 ms.
    fn guard(start: Instant) -> LeaseGuard {
        LeaseGuard::new(true, TICK, 30, 6, start).expect("lease reads on")
    }

    #[test]
    fn off_without_lease_reads() {
        assert!(LeaseGuard::new(false, TICK, 30, 6, Instant::now()).is_none());
    }

    #[test]
    fn ticks_on_time_never_expire_the_lease() {
        let start = Instant::now();
        let mut g = guard(start);
        for i in 1..=1000u32 {
            let now = start + TICK * i;
            g.ticked(now);
            assert!(
                !g.must_expire(now + TICK - Duration::from_millis(1)),
                "tick {i}"
            );
        }
    }

    #[test]
    fn late_ticks_within_the_margin_are_tolerated() {
        let start = Instant::now();
        let mut g = guard(start);
        let mut now = start;
        for _ in 0..100 {
            // Every tick 1 ms late: 24 ticks span 264 ms, under 290.
            now += TICK + Duration::from_millis(1);
            g.ticked(now);
            assert!(!g.must_expire(now));
        }
    }

    #[test]
    fn a_stall_expires_the_lease_once_and_the_guard_counts_afresh() {
        let start = Instant::now();
        let mut g = guard(start);
        let mut now = start;
        for _ in 0..30 {
            now += TICK;
            g.ticked(now);
        }
        // The process stops for 300 ms: more than a follower surely waits.
        now += Duration::from_millis(300);
        assert!(g.must_expire(now), "the stall must expire the leases");
        assert!(!g.must_expire(now), "counted afresh from the expiry");
        for _ in 0..30 {
            now += TICK;
            g.ticked(now);
            assert!(!g.must_expire(now));
        }
    }

    #[test]
    fn ticks_lagging_a_little_each_add_up_to_an_expiry() {
        let start = Instant::now();
        let mut g = guard(start);
        let mut now = start;
        let mut expired = false;
        for _ in 0..100 {
            // Every tick 3 ms late: 24 ticks span 312 ms, past the 290 ms honoured.
            now += TICK + Duration::from_millis(3);
            g.ticked(now);
            expired |= g.must_expire(now);
        }
        assert!(
            expired,
            "a slow clock must expire the lease before it outlasts the promise"
        );
    }
}
