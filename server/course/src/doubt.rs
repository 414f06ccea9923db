//! Answers a new leader holds back because the leader before it may have sent them: a
//! second `ok` to an MID is a scored duplicate, a missing one can fail the run.
//!
//! A leader answers a put when it commits it, and followers learn of that answer only
//! with the leader's next datagram (`handoff.rs`, answered-through reports). A leader cut
//! off by a partition in between leaves the majority side unable to tell an answered put
//! from an unanswered one, and the new leader would answer every put it commits from the
//! old leader's term again. So it holds those answers until it knows:
//!
//! - a report covers the entry (the old leader comes back after the partition heals, and
//!   every datagram carries what its sender answered through): someone answered it, drop;
//! - every peer has been heard since the hold began and none covers it: nobody answered
//!   it (whoever did would report it), answer now;
//! - the hold has lasted `max` (a killed leader never reports), or this replica is no
//!   longer leader: answer now (at worst a duplicate).
//!
//! While an answer is held, the client may ask about the same key again, and the harness
//! checks each get against the client's last acknowledged put: a get that shows the held
//! put's value, or a later put's `ok` that the held one would then overtake, would be an
//! incorrect reply. So every answer about a key with a held put waits behind it, in order.

use crate::handoff::{Duty, Owed};
use bytes::Bytes;
use kv_raft::Index;
use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

/// Held answers and the answers waiting behind them (`W`: whatever the runtime needs to
/// send one later).
#[derive(Debug)]
pub struct Doubts<W> {
    max: Duration,
    held: BTreeMap<Index, Owed>,
    /// When the oldest held answer was held.
    since: Option<Instant>,
    waiting: VecDeque<(Bytes, W)>,
}

/// What [`Doubts::settle`] decided.
#[derive(Debug, PartialEq, Eq)]
pub struct Settled<W> {
    /// Answers to send now, in log order.
    pub answer: Vec<Duty>,
    /// Held answers dropped because someone else sent them.
    pub dropped: usize,
    /// Waiting answers free to go now (after `answer`), in the order they came.
    pub release: Vec<W>,
}

impl<W> Doubts<W> {
    /// Holds answers at most `max` (zero: never).
    pub fn new(max: Duration) -> Doubts<W> {
        Doubts {
            max,
            held: BTreeMap::new(),
            since: None,
            waiting: VecDeque::new(),
        }
    }

    /// Holds the answers entry `index` owes.
    pub fn hold(&mut self, index: Index, owed: Owed, now: Instant) {
        if owed.duties.is_empty() {
            return;
        }
        self.since.get_or_insert(now);
        self.held.insert(index, owed);
    }

    /// When the oldest held answer was held, if any is.
    pub fn since(&self) -> Option<Instant> {
        self.since
    }

    /// When the held answers go regardless.
    pub fn deadline(&self) -> Option<Instant> {
        self.since.map(|s| s + self.max)
    }

    /// The lowest index with held answers: the leader has answered through the one below.
    pub fn floor(&self) -> Option<Index> {
        self.held.first_key_value().map(|(&i, _)| i)
    }

    fn blocks(&self, key: &[u8]) -> bool {
        self.held
            .values()
            .any(|o| o.keys.iter().any(|k| k.as_ref() == key))
    }

    /// Queues `w`, an answer about `key`, if a held put of that key (or an answer already
    /// waiting on it) must go first; otherwise gives it back to be sent now.
    pub fn wait_or_pass(&mut self, key: &[u8], w: W) -> Option<W> {
        if self.blocks(key) || self.waiting.iter().any(|(k, _)| k.as_ref() == key) {
            self.waiting.push_back((Bytes::copy_from_slice(key), w));
            return None;
        }
        Some(w)
    }

    /// Settles what can be settled: `reported` is the highest answered-through report
    /// heard, `leader` whether this replica still leads, `everyone_heard` whether every
    /// peer has been heard since [`Doubts::since`].
    pub fn settle(
        &mut self,
        reported: Index,
        leader: bool,
        everyone_heard: bool,
        now: Instant,
    ) -> Settled<W> {
        let mut dropped = 0;
        while self
            .held
            .first_key_value()
            .is_some_and(|(&i, _)| i <= reported)
        {
            self.held.pop_first();
            dropped += 1;
        }
        let expired = self
            .deadline()
            .is_some_and(|d| now >= d || !leader || everyone_heard);
        let mut answer = Vec::new();
        if expired {
            for (_, owed) in std::mem::take(&mut self.held) {
                answer.extend(owed.duties);
            }
        }
        if self.held.is_empty() {
            self.since = None;
        }
        let mut release = Vec::new();
        let mut kept = VecDeque::new();
        for (key, w) in std::mem::take(&mut self.waiting) {
            if self.blocks(&key) || kept.iter().any(|(k, _): &(Bytes, W)| *k == key) {
                kept.push_back((key, w));
            } else {
                release.push(w);
            }
        }
        self.waiting = kept;
        Settled {
            answer,
            dropped,
            release,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::CourseId;

    fn owed(mid: &str, key: &'static [u8]) -> Owed {
        Owed {
            duties: vec![Duty::OkFor(CourseId(0x15), mid.into())],
            keys: vec![Bytes::from_static(key)],
        }
    }

    fn ok(mid: &str) -> Duty {
        Duty::OkFor(CourseId(0x15), mid.into())
    }

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn a_report_that_covers_a_held_answer_drops_it_and_frees_its_key() {
        let t0 = Instant::now();
        let mut d = Doubts::new(4 * SECOND);
        d.hold(7, owed("m7", b"k"), t0);
        d.hold(8, owed("m8", b"j"), t0);
        assert_eq!(d.floor(), Some(7));
        assert_eq!(d.wait_or_pass(b"k", "get k"), None, "waits behind m7");
        assert_eq!(d.wait_or_pass(b"x", "get x"), Some("get x"));
        let s = d.settle(6, true, false, t0 + SECOND);
        assert_eq!((s.answer, s.dropped, s.release), (vec![], 0, vec![]));
        // The old leader is back and reports it answered through 7.
        let s = d.settle(7, true, false, t0 + 2 * SECOND);
        assert_eq!((s.answer, s.dropped, s.release), (vec![], 1, vec!["get k"]));
        assert_eq!(d.floor(), Some(8));
    }

    #[test]
    fn held_answers_go_once_every_peer_was_heard_or_the_hold_ran_out_or_leadership_ended() {
        let t0 = Instant::now();
        for (leader, everyone_heard, at) in [
            (true, true, t0 + SECOND),
            (true, false, t0 + 4 * SECOND),
            (false, false, t0 + SECOND),
        ] {
            let mut d = Doubts::new(4 * SECOND);
            d.hold(7, owed("m7", b"k"), t0);
            d.hold(9, owed("m9", b"k"), t0);
            assert_eq!(d.wait_or_pass(b"k", "put k"), None);
            let s = d.settle(6, leader, everyone_heard, at);
            assert_eq!(s.answer, vec![ok("m7"), ok("m9")], "in log order");
            assert_eq!(s.release, vec!["put k"], "after the held answers");
            assert_eq!((d.since(), d.floor()), (None, None));
        }
        let mut d = Doubts::<&str>::new(4 * SECOND);
        d.hold(7, owed("m7", b"k"), t0);
        let s = d.settle(6, true, false, t0 + 4 * SECOND - Duration::from_millis(1));
        assert!(s.answer.is_empty(), "not yet");
    }

    #[test]
    fn answers_about_a_key_keep_their_order_behind_a_held_put() {
        let t0 = Instant::now();
        let mut d = Doubts::new(4 * SECOND);
        d.hold(7, owed("m7", b"k"), t0);
        assert_eq!(d.wait_or_pass(b"k", 1), None);
        let s = d.settle(7, true, false, t0);
        assert_eq!(s.release, vec![1]);
        // Nothing held any more: answers pass.
        assert_eq!(d.wait_or_pass(b"k", 2), Some(2));
        d.hold(10, owed("m10", b"k"), t0);
        assert_eq!(d.wait_or_pass(b"k", 3), None);
        assert_eq!(d.wait_or_pass(b"j", 4), Some(4));
        let s = d.settle(9, true, true, t0);
        assert_eq!((s.answer, s.release), (vec![ok("m10")], vec![3]));
    }

    #[test]
    fn with_no_hold_time_answers_go_at_once() {
        let t0 = Instant::now();
        let mut d = Doubts::<u8>::new(Duration::ZERO);
        d.hold(7, owed("m7", b"k"), t0);
        assert_eq!(d.settle(0, true, false, t0).answer, vec![ok("m7")]);
    }
}
