//! An estimate of the harness's drop rate, from sequence numbers on peer datagrams. It
//! exists because the best choices of lazy followers differ by loss: two fast followers
//! under light loss, every follower at once and a precise stall timer under heavy loss,
//! and a running stall rate mixes loss with the sending mode it decides.
//!
//! Every peer datagram carries a number counting the datagrams its sender sent to this
//! destination (field `s`); a gap between two numbers received from one sender is that
//! many datagrams dropped. The harness drops each replica-bound copy independently with
//! one probability for the whole run, so the estimate is cumulative over the process's
//! life. A long gap is a partition or a replica that was not talking to us, not random
//! loss, and is left out.

use kv_shared::NodeId;
use std::collections::HashMap;

/// Gaps longer than this (datagrams missed in a row) are partitions, not random drops:
/// at 30% loss eight drops in a row happen once in 15,000 datagrams.
pub const GAP_MAX: u64 = 8;

/// Datagrams accounted for before the estimate is given: at 10% loss the estimate's
/// standard deviation after 200 is about 2 percentage points.
pub const SAMPLES_MIN: u64 = 200;

/// Counts datagrams received against datagrams sent to us, per sender.
#[derive(Debug, Default)]
pub struct LossMeter {
    /// Highest sequence number received from each peer.
    last: HashMap<NodeId, u64>,
    /// Datagrams received that closed a counted gap.
    received: u64,
    /// Datagrams sent to us over the counted gaps (received or not).
    sent: u64,
}

impl LossMeter {
    /// Notes a datagram from `from` carrying sequence number `seq` (0: not carried).
    pub fn on_datagram(&mut self, from: NodeId, seq: u64) {
        if seq == 0 {
            return;
        }
        match self.last.get(&from).copied() {
            None => {
                self.last.insert(from, seq);
            }
            Some(last) if seq > last => {
                let gap = seq - last;
                if gap <= GAP_MAX {
                    self.sent += gap;
                    self.received += 1;
                }
                self.last.insert(from, seq);
            }
            // Reordered or repeated: already accounted for as a drop or a receipt.
            Some(_) => {}
        }
    }

    /// The fraction of datagrams dropped on the way to us, once [`SAMPLES_MIN`] are
    /// accounted for.
    pub fn loss(&self) -> Option<f64> {
        (self.sent >= SAMPLES_MIN).then(|| 1.0 - self.received as f64 / self.sent as f64)
    }
}

/// Numbers the datagrams this replica sends to each peer (from 1; 0 means "not carried").
#[derive(Debug, Default)]
pub struct SendCounter {
    next: HashMap<NodeId, u64>,
}

impl SendCounter {
    /// The sequence number of the next datagram to `dst`.
    pub fn next(&mut self, dst: NodeId) -> u64 {
        let n = self.next.entry(dst).or_insert(0);
        *n += 1;
        *n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: NodeId = NodeId(2);
    const B: NodeId = NodeId(3);

    #[test]
    fn no_estimate_before_enough_samples() {
        let mut m = LossMeter::default();
        for s in 1..=SAMPLES_MIN {
            m.on_datagram(A, s);
        }
        // The first datagram opens the count: SAMPLES_MIN - 1 accounted for.
        assert_eq!(m.loss(), None);
        m.on_datagram(A, SAMPLES_MIN + 1);
        assert_eq!(m.loss(), Some(0.0));
    }

    #[test]
    fn every_tenth_datagram_dropped_reads_as_ten_percent() {
        let mut m = LossMeter::default();
        for s in 1..=2001u64 {
            if s % 10 != 5 {
                m.on_datagram(A, s);
                m.on_datagram(B, s);
            }
        }
        let loss = m.loss().expect("enough samples");
        assert!((loss - 0.1).abs() < 0.002, "{loss}");
    }

    #[test]
    fn a_partition_is_not_loss_and_reordering_is_not_counted_twice() {
        let mut m = LossMeter::default();
        let mut s = 0;
        for _ in 0..300 {
            s += 1;
            m.on_datagram(A, s);
        }
        // A partition: 50 datagrams never arrive, then traffic resumes.
        s += 50;
        for _ in 0..300 {
            s += 1;
            m.on_datagram(A, s);
        }
        // A late copy of an old datagram changes nothing.
        m.on_datagram(A, 10);
        assert_eq!(m.loss(), Some(0.0));
    }

    #[test]
    fn unnumbered_datagrams_are_ignored_and_numbers_start_at_one() {
        let mut m = LossMeter::default();
        for _ in 0..1000 {
            m.on_datagram(A, 0);
        }
        assert_eq!(m.loss(), None);
        let mut c = SendCounter::default();
        assert_eq!((c.next(A), c.next(A), c.next(B)), (1, 2, 1));
    }
}
