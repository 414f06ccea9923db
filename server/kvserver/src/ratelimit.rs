//! A warning limiter: a flood of bad datagrams must not turn into a flood of log lines,
//! yet an operator must still learn that it happens and how often.

use std::time::{Duration, Instant};

/// Lets one event through per `interval` and counts the ones it held back, so the next
/// line can say how many were suppressed.
#[derive(Debug)]
pub struct RateLimit {
    interval: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLimit {
    /// A limiter that allows one event per `interval`.
    pub fn new(interval: Duration) -> RateLimit {
        RateLimit {
            interval,
            last: None,
            suppressed: 0,
        }
    }

    /// Records an event at `now`. Returns `Some(suppressed)` when the caller should log
    /// it (with the number of events held back since the last logged one), else `None`.
    pub fn check(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.saturating_duration_since(last) < self.interval => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_event_per_interval_and_the_rest_are_counted() {
        let mut r = RateLimit::new(Duration::from_secs(1));
        let t0 = Instant::now();
        assert_eq!(r.check(t0), Some(0));
        assert_eq!(r.check(t0 + Duration::from_millis(10)), None);
        assert_eq!(r.check(t0 + Duration::from_millis(999)), None);
        assert_eq!(r.check(t0 + Duration::from_millis(1000)), Some(2));
        assert_eq!(r.check(t0 + Duration::from_millis(1001)), None);
        assert_eq!(r.check(t0 + Duration::from_millis(2500)), Some(1));
    }
}
