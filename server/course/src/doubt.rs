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
//! - every replica that led a term from the entry's term up to ours (as far as appends
//!   and heartbeats told us; only a leader answers puts) has been heard since the hold
//!   began and none covers it: nobody answered it, answer now. A peer that never led
//!   those terms cannot have answered, so a dead follower does not hold anything up;
//! - the hold has lasted `max` (a killed leader never reports; `max` outlasts a
//!   partition, counted from the election that follows it), or this replica is no
//!   longer leader: answer now (at worst a duplicate).
//!
//! Held answers go in log order: a later entry waits for an earlier one still held.
//!
//! While an answer is held, the client may ask about the same key again, and the harness
//! checks each get against the client's last acknowledged put: a get that shows the held
//! put's value, or a later put's `ok` that the held one would then overtake, would be an
//! incorrect reply. So every answer about a key with a held put waits behind it, in order.

use crate::handoff::{Duty, Owed};
use bytes::Bytes;
use kv_raft::{Index, Term};
use kv_shared::NodeId;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

/// Most terms whose leader is remembered (a run has a few dozen).
const LEADERS_MAX: usize = 1024;

/// Held answers and the answers waiting behind them (`W`: whatever the runtime needs to
/// send one later).
#[derive(Debug)]
pub struct Doubts<W> {
    max: Duration,
    held: BTreeMap<Index, Held>,
    /// The peer that led each term, from the appends and heartbeats it sent us.
    leaders: BTreeMap<Term, NodeId>,
    waiting: VecDeque<(Bytes, W)>,
}

/// One entry's held answers.
#[derive(Debug)]
struct Held {
    owed: Owed,
    since: Instant,
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

/// What this replica knows when it settles: the highest answered-through report heard,
/// whether it still leads and in which term, and when it last heard each peer.
#[derive(Debug)]
pub struct Now<'a> {
    /// The highest answered-through report heard.
    pub reported: Index,
    /// Whether this replica leads.
    pub leader: bool,
    /// Its current term.
    pub term: Term,
    /// When each peer was last heard.
    pub heard: &'a HashMap<NodeId, Instant>,
    /// The time.
    pub at: Instant,
}

impl<W> Doubts<W> {
    /// Holds answers at most `max` (zero: never).
    pub fn new(max: Duration) -> Doubts<W> {
        Doubts {
            max,
            held: BTreeMap::new(),
            leaders: BTreeMap::new(),
            waiting: VecDeque::new(),
        }
    }

    /// Peer `node` sent an append or heartbeat in `term`: it led that term.
    pub fn note_leader(&mut self, term: Term, node: NodeId) {
        if self.leaders.insert(term, node).is_none() && self.leaders.len() > LEADERS_MAX {
            self.leaders.pop_first();
        }
    }

    /// Holds the answers entry `index` owes.
    pub fn hold(&mut self, index: Index, owed: Owed, now: Instant) {
        if owed.duties.is_empty() {
            return;
        }
        self.held.insert(index, Held { owed, since: now });
    }

    /// When the next held answer goes regardless.
    pub fn deadline(&self) -> Option<Instant> {
        self.held.values().map(|h| h.since + self.max).min()
    }

    /// The lowest index with held answers: the leader has answered through the one below.
    pub fn floor(&self) -> Option<Index> {
        self.held.first_key_value().map(|(&i, _)| i)
    }

    fn blocks(&self, key: &[u8]) -> bool {
        self.held
            .values()
            .any(|h| h.owed.keys.iter().any(|k| k.as_ref() == key))
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

    /// Whether every peer that led a term from `from` up to (not including) `to` has
    /// been heard since `since`. Peers that never led those terms cannot have answered
    /// puts of them, so they are not waited for.
    fn leaders_heard(
        &self,
        from: Term,
        to: Term,
        since: Instant,
        heard: &HashMap<NodeId, Instant>,
    ) -> bool {
        self.leaders
            .range(from..to)
            .all(|(_, node)| heard.get(node).is_some_and(|at| *at >= since))
    }

    /// Settles what can be settled (see the module comment).
    pub fn settle(&mut self, now: Now) -> Settled<W> {
        let mut dropped = 0;
        while self
            .held
            .first_key_value()
            .is_some_and(|(&i, _)| i <= now.reported)
        {
            self.held.pop_first();
            dropped += 1;
        }
        let mut answer = Vec::new();
        while let Some((_, h)) = self.held.first_key_value() {
            let due = !now.leader
                || now.at >= h.since + self.max
                || self.leaders_heard(h.owed.term, now.term, h.since, now.heard);
            if !due {
                break;
            }
            let (_, h) = self.held.pop_first().expect("just looked");
            answer.extend(h.owed.duties);
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

    /// Entry of term 1 with a put of `key` answered to MID `mid`.
    fn owed(mid: &str, key: &'static [u8]) -> Owed {
        Owed {
            term: 1,
            duties: vec![Duty::OkFor(CourseId(0x15), mid.into())],
            keys: vec![Bytes::from_static(key)],
        }
    }

    fn ok(mid: &str) -> Duty {
        Duty::OkFor(CourseId(0x15), mid.into())
    }

    const SECOND: Duration = Duration::from_secs(1);

    /// This replica (0) leads term 2; replica 1 led term 1. Nobody heard yet.
    fn leading_after_1<W>(max: Duration) -> (Doubts<W>, HashMap<NodeId, Instant>) {
        let mut d = Doubts::new(max);
        d.note_leader(1, NodeId(1));
        (d, HashMap::new())
    }

    fn now(
        reported: Index,
        leader: bool,
        heard: &HashMap<NodeId, Instant>,
        at: Instant,
    ) -> Now<'_> {
        Now {
            reported,
            leader,
            term: 2,
            heard,
            at,
        }
    }

    #[test]
    fn a_report_that_covers_a_held_answer_drops_it_and_frees_its_key() {
        let t0 = Instant::now();
        let (mut d, heard) = leading_after_1(4 * SECOND);
        d.hold(7, owed("m7", b"k"), t0);
        d.hold(8, owed("m8", b"j"), t0);
        assert_eq!(d.floor(), Some(7));
        assert_eq!(d.wait_or_pass(b"k", "get k"), None, "waits behind m7");
        assert_eq!(d.wait_or_pass(b"x", "get x"), Some("get x"));
        let s = d.settle(now(6, true, &heard, t0 + SECOND));
        assert_eq!((s.answer, s.dropped, s.release), (vec![], 0, vec![]));
        // The old leader is back and reports it answered through 7.
        let s = d.settle(now(7, true, &heard, t0 + 2 * SECOND));
        assert_eq!((s.answer, s.dropped, s.release), (vec![], 1, vec!["get k"]));
        assert_eq!(d.floor(), Some(8));
    }

    #[test]
    fn held_answers_go_once_the_old_leader_was_heard_or_the_hold_ran_out_or_leadership_ended() {
        let t0 = Instant::now();
        let heard_1 = HashMap::from([(NodeId(1), t0 + SECOND)]);
        let nobody = HashMap::new();
        for (leader, heard, at) in [
            (true, &heard_1, t0 + SECOND),
            (true, &nobody, t0 + 4 * SECOND),
            (false, &nobody, t0 + SECOND),
        ] {
            let (mut d, _) = leading_after_1(4 * SECOND);
            d.hold(7, owed("m7", b"k"), t0);
            d.hold(9, owed("m9", b"k"), t0);
            assert_eq!(d.wait_or_pass(b"k", "put k"), None);
            let s = d.settle(now(6, leader, heard, at));
            assert_eq!(s.answer, vec![ok("m7"), ok("m9")], "in log order");
            assert_eq!(s.release, vec!["put k"], "after the held answers");
            assert_eq!((d.deadline(), d.floor()), (None, None));
        }
        let (mut d, _) = leading_after_1::<&str>(4 * SECOND);
        d.hold(7, owed("m7", b"k"), t0);
        // Heard before the hold began: that datagram may predate the answer.
        let early = HashMap::from([(NodeId(1), t0 - SECOND)]);
        let s = d.settle(now(
            6,
            true,
            &early,
            t0 + 4 * SECOND - Duration::from_millis(1),
        ));
        assert!(s.answer.is_empty(), "not yet");
    }

    #[test]
    fn a_dead_peer_that_led_none_of_the_terms_does_not_hold_answers_up() {
        let t0 = Instant::now();
        let (mut d, _) = leading_after_1::<u8>(4 * SECOND);
        d.hold(7, owed("m7", b"k"), t0);
        // Replica 3 was killed as a follower and is never heard; 1 (the old leader), 2
        // and 4 are.
        let at = t0 + Duration::from_millis(100);
        let heard = HashMap::from([(NodeId(1), at), (NodeId(2), at), (NodeId(4), at)]);
        let s = d.settle(now(6, true, &heard, at));
        assert_eq!(s.answer, vec![ok("m7")]);
    }

    #[test]
    fn every_leader_from_the_entrys_term_on_is_waited_for_and_no_one_else() {
        let t0 = Instant::now();
        let mut d = Doubts::<u8>::new(4 * SECOND);
        d.note_leader(1, NodeId(1));
        d.note_leader(2, NodeId(2));
        d.note_leader(4, NodeId(4)); // a later term than ours: not of these entries
        let mut m9 = owed("m9", b"j");
        m9.term = 2;
        d.hold(7, owed("m7", b"k"), t0);
        d.hold(9, m9, t0);
        let at = t0 + SECOND;
        let mut heard = HashMap::from([(NodeId(2), at)]);
        fn term3(heard: &HashMap<NodeId, Instant>, at: Instant) -> Now<'_> {
            Now {
                term: 3,
                ..now(0, true, heard, at)
            }
        }
        // Term 2's leader is heard, term 1's is not: entry 7 waits, and 9 waits behind it.
        let s = d.settle(term3(&heard, at));
        assert!(s.answer.is_empty());
        heard.insert(NodeId(1), at);
        let s = d.settle(term3(&heard, at));
        assert_eq!(s.answer, vec![ok("m7"), ok("m9")]);
    }

    #[test]
    fn answers_about_a_key_keep_their_order_behind_a_held_put() {
        let t0 = Instant::now();
        let (mut d, heard) = leading_after_1(4 * SECOND);
        d.hold(7, owed("m7", b"k"), t0);
        assert_eq!(d.wait_or_pass(b"k", 1), None);
        let s = d.settle(now(7, true, &heard, t0));
        assert_eq!(s.release, vec![1]);
        // Nothing held any more: answers pass.
        assert_eq!(d.wait_or_pass(b"k", 2), Some(2));
        d.hold(10, owed("m10", b"k"), t0);
        assert_eq!(d.wait_or_pass(b"k", 3), None);
        assert_eq!(d.wait_or_pass(b"j", 4), Some(4));
        let s = d.settle(now(9, true, &heard, t0 + 4 * SECOND));
        assert_eq!((s.answer, s.release), (vec![ok("m10")], vec![3]));
    }

    #[test]
    fn with_no_hold_time_answers_go_at_once() {
        let t0 = Instant::now();
        let (mut d, heard) = leading_after_1::<u8>(Duration::ZERO);
        d.hold(7, owed("m7", b"k"), t0);
        assert_eq!(d.settle(now(0, true, &heard, t0)).answer, vec![ok("m7")]);
    }
}
