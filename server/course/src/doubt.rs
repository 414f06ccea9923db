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
//!   partition, counted from the election that follows it): the answer is *deferred*
//!   (below), or sent (at worst a duplicate) if deferral is off or the entry's leader
//!   may have held a stalled commit back;
//! - this replica is no longer leader: answer now (at worst a duplicate).
//!
//! Held answers go in log order: a later entry waits for an earlier one still held.
//!
//! While an answer is held, the client may ask about the same key again, and the harness
//! checks each get against the client's last acknowledged put: a get that shows the held
//! put's value, or a later put's `ok` that the held one would then overtake, would be an
//! incorrect reply. So every answer about a key with a held put waits behind it, in order.
//!
//! **Deferred answers.** A leader that dies between answering a put and its next
//! datagram leaves that put unreported, and it is the common case: with a put every
//! 60-100 ms the next append carries the report, so a kill lands in that window most of
//! the time, while a kill between a put's commit and its answer needs the kill inside
//! the leader's turn, unless the leader holds a stalled commit back until its next put
//! (`StallTimer::defers_first_release`; every leader datagram says whether it may, field
//! `w`): then a put a quorum has may wait uncommitted at the leader for as long as the
//! gap between puts, and such a leader's puts are answered when the hold runs out, as
//! before. Otherwise, once the hold runs out the put is presumed answered, and its
//! answer is kept only as a debt on its key: a reply that would show the put's value (a
//! get's `ok`) sends it first; a later put's `ok` of that key makes it moot (the client's
//! last acknowledged put is then the later one, and it must never see the earlier `ok`
//! after it), so it is dropped. A deferred put whose key the client never uses again is
//! not answered again (if the dead leader had not answered it after all, it counts as
//! unanswered: a failure, not an incorrect reply). Reports list deferred entries as owed
//! (`report.rs`), so the next leader inherits the debt if this one dies or is deposed;
//! the old leader heard again without covering one sends it. A deposed leader keeps its
//! deferred answers (listed as owed, until a report covers them) and sends none: the
//! next leader may already have acknowledged a later put of the key, and an earlier
//! `ok` arriving after that would make the client's next get look wrong.

use crate::handoff::{Duty, Owed};
use crate::report::Report;
use bytes::Bytes;
use kv_raft::{Index, Term};
use kv_shared::NodeId;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

/// Most terms whose leader is remembered (a run has a few dozen).
const LEADERS_MAX: usize = 1024;

/// Held answers, deferred answers and the answers waiting behind held ones (`W`:
/// whatever the runtime needs to send one later).
#[derive(Debug)]
pub struct Doubts<W> {
    max: Duration,
    defer: bool,
    held: BTreeMap<Index, Held>,
    deferred: BTreeMap<Index, Held>,
    /// The peer that led each term, from the appends and heartbeats it sent us, and
    /// whether the last of them said it may hold a stalled commit back.
    leaders: BTreeMap<Term, (NodeId, bool)>,
    waiting: VecDeque<Waiting<W>>,
}

/// One entry's held (or deferred) answers.
#[derive(Debug)]
struct Held {
    owed: Owed,
    since: Instant,
}

#[derive(Debug)]
struct Waiting<W> {
    key: Bytes,
    touch: Touch,
    w: W,
}

/// What a reply about a key does to the client's view of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Touch {
    /// A get's `ok`: it shows the key's value, so every put before it must be answered.
    Shows,
    /// A put's `ok`: it becomes the client's last acknowledged put of the key.
    Overwrites,
    /// Anything else (a redirect): the client learns nothing about the key.
    Neither,
}

/// What [`Doubts::settle`] decided.
#[derive(Debug, PartialEq, Eq)]
pub struct Settled<W> {
    /// Answers to send now, in log order.
    pub answer: Vec<Duty>,
    /// Held or deferred answers dropped because someone else sent them.
    pub dropped: usize,
    /// Held answers deferred this time.
    pub deferred: usize,
    /// Waiting answers free to go now (after `answer`), in the order they came.
    pub release: Vec<W>,
}

/// What this replica knows when it settles: what reports say was answered, whether it
/// still leads and in which term, and when it last heard each peer.
#[derive(Debug)]
pub struct Now<'a> {
    /// What the reports heard say was answered.
    pub reported: &'a Report,
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
    /// Holds answers at most `max` (zero: never), then defers them if `defer`, else sends
    /// them.
    pub fn new(max: Duration, defer: bool) -> Doubts<W> {
        Doubts {
            max,
            defer,
            held: BTreeMap::new(),
            deferred: BTreeMap::new(),
            leaders: BTreeMap::new(),
            waiting: VecDeque::new(),
        }
    }

    /// Peer `node` sent an append or heartbeat in `term`: it led that term, and
    /// `holds_back` says whether it may hold a stalled commit back for its next put
    /// (`StallTimer::defers_first_release`).
    pub fn note_leader(&mut self, term: Term, node: NodeId, holds_back: bool) {
        let new = self.leaders.insert(term, (node, holds_back)).is_none();
        if new && self.leaders.len() > LEADERS_MAX {
            self.leaders.pop_first();
        }
    }

    /// Whether the leader of `term` may have held a stalled commit back (unknown: yes).
    /// Its unanswered puts may then be committed puts it never answered, waiting for
    /// the next put, for as long as the gap between puts, and presuming them answered
    /// would leave them unanswered for good; so their answers are sent, not deferred.
    fn held_back(&self, term: Term) -> bool {
        self.leaders
            .get(&term)
            .is_none_or(|&(_, held_back)| held_back)
    }

    /// Holds the answers entry `index` owes.
    pub fn hold(&mut self, index: Index, owed: Owed, now: Instant) {
        if owed.duties.is_empty() {
            return;
        }
        self.held.insert(index, Held { owed, since: now });
    }

    /// Defers the answers entry `index` owes at once: a report listed it as owed, so a
    /// leader before us already held it and presumed it answered.
    pub fn defer(&mut self, index: Index, owed: Owed, now: Instant) {
        if !self.defer {
            return self.hold(index, owed, now);
        }
        if owed.duties.is_empty() {
            return;
        }
        self.deferred.insert(index, Held { owed, since: now });
    }

    /// When the next held answer goes (or is deferred) regardless.
    pub fn deadline(&self) -> Option<Instant> {
        self.held.values().map(|h| h.since + self.max).min()
    }

    /// The lowest index with held answers: the leader has answered through the one below
    /// (but for the deferred ones, [`Doubts::deferred_indexes`]).
    pub fn floor(&self) -> Option<Index> {
        self.held.first_key_value().map(|(&i, _)| i)
    }

    /// The entries whose answers are deferred, ascending.
    pub fn deferred_indexes(&self) -> impl Iterator<Item = Index> + '_ {
        self.deferred.keys().copied()
    }

    fn blocks(&self, key: &[u8]) -> bool {
        self.held
            .values()
            .any(|h| h.owed.keys.iter().any(|k| k.as_ref() == key))
    }

    /// Settles the deferred answers of `key` below index `below` for a reply that
    /// touches it `touch`: the answers it must follow (a reply that shows the value), or
    /// none (a later put's `ok` makes them moot, and they are dropped).
    fn settle_key(&mut self, key: &[u8], touch: Touch, below: Index) -> Vec<Duty> {
        let mut first = Vec::new();
        if touch == Touch::Neither {
            return first;
        }
        for held in self.deferred.range_mut(..below).map(|(_, h)| h) {
            held.owed.duties.retain(|(duty, k)| {
                if k.as_deref() != Some(key) {
                    return true;
                }
                if touch == Touch::Shows {
                    first.push(duty.clone());
                }
                false
            });
        }
        self.deferred.retain(|_, h| !h.owed.duties.is_empty());
        first
    }

    /// Queues `w`, an answer about `key`, if a held put of that key (or an answer already
    /// waiting on it) must go first; otherwise gives it back to be sent now, after the
    /// deferred answers it must follow.
    pub fn wait_or_pass(&mut self, key: &[u8], touch: Touch, w: W) -> Option<(Vec<Duty>, W)> {
        if self.blocks(key) || self.waiting.iter().any(|q| q.key.as_ref() == key) {
            self.waiting.push_back(Waiting {
                key: Bytes::copy_from_slice(key),
                touch,
                w,
            });
            return None;
        }
        Some((self.settle_key(key, touch, Index::MAX), w))
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
            .all(|(_, (node, _))| heard.get(node).is_some_and(|at| *at >= since))
    }

    /// Answers a held or deferred entry's puts: earlier deferred answers of the same keys
    /// become moot.
    fn answer_entry(&mut self, index: Index, held: Held, answer: &mut Vec<Duty>) {
        for (duty, key) in held.owed.duties {
            if let Some(key) = key {
                self.settle_key(&key, Touch::Overwrites, index);
            }
            answer.push(duty);
        }
    }

    /// Settles what can be settled (see the module comment).
    pub fn settle(&mut self, now: Now) -> Settled<W> {
        let mut dropped = 0;
        for map in [&mut self.held, &mut self.deferred] {
            map.retain(|&i, _| {
                let covered = now.reported.covers(i);
                dropped += usize::from(covered);
                !covered
            });
        }
        let mut answer = Vec::new();
        let mut deferred = 0;
        if !now.leader {
            for (i, h) in std::mem::take(&mut self.held) {
                self.answer_entry(i, h, &mut answer);
            }
        } else {
            let unanswered: Vec<Index> = self
                .deferred
                .iter()
                .filter(|(_, h)| self.leaders_heard(h.owed.term, now.term, h.since, now.heard))
                .map(|(&i, _)| i)
                .collect();
            for i in unanswered {
                let h = self.deferred.remove(&i).expect("just listed");
                self.answer_entry(i, h, &mut answer);
            }
            while let Some((_, h)) = self.held.first_key_value() {
                let heard = self.leaders_heard(h.owed.term, now.term, h.since, now.heard);
                let ran_out = now.at >= h.since + self.max;
                if !heard && !ran_out {
                    break;
                }
                let (i, h) = self.held.pop_first().expect("just looked");
                if !heard && self.defer && !self.held_back(h.owed.term) {
                    self.deferred.insert(i, h);
                    deferred += 1;
                } else {
                    self.answer_entry(i, h, &mut answer);
                }
            }
        }
        let mut release = Vec::new();
        let mut kept: VecDeque<Waiting<W>> = VecDeque::new();
        for q in std::mem::take(&mut self.waiting) {
            if self.blocks(&q.key) || kept.iter().any(|k| k.key == q.key) {
                kept.push_back(q);
            } else {
                answer.extend(self.settle_key(&q.key, q.touch, Index::MAX));
                release.push(q.w);
            }
        }
        self.waiting = kept;
        Settled {
            answer,
            dropped,
            deferred,
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
            duties: vec![(ok(mid), Some(Bytes::from_static(key)))],
            keys: vec![Bytes::from_static(key)],
        }
    }

    fn ok(mid: &str) -> Duty {
        Duty::OkFor(CourseId(0x15), mid.into())
    }

    const SECOND: Duration = Duration::from_secs(1);

    /// This replica (0) leads term 2; replica 1 led term 1. Nobody heard yet.
    fn leading_after_1<W>(max: Duration, defer: bool) -> (Doubts<W>, HashMap<NodeId, Instant>) {
        let mut d = Doubts::new(max, defer);
        d.note_leader(1, NodeId(1), false);
        (d, HashMap::new())
    }

    fn now<'a>(
        reported: &'a Report,
        leader: bool,
        heard: &'a HashMap<NodeId, Instant>,
        at: Instant,
    ) -> Now<'a> {
        Now {
            reported,
            leader,
            term: 2,
            heard,
            at,
        }
    }

    fn through(index: Index) -> Report {
        Report::new(index, [])
    }

    /// Each answer `(key, touch, tag)` passes at once, after the deferred answers listed
    /// with it.
    fn assert_pass(
        d: &mut Doubts<&'static str>,
        answers: &[(&[u8], Touch, &'static str, Vec<Duty>)],
    ) {
        for (key, touch, tag, first) in answers {
            assert_eq!(
                d.wait_or_pass(key, *touch, *tag),
                Some((first.clone(), *tag)),
                "{tag}"
            );
        }
    }

    #[test]
    fn a_report_that_covers_a_held_answer_drops_it_and_frees_its_key() {
        let t0 = Instant::now();
        let (mut d, heard) = leading_after_1(4 * SECOND, true);
        d.hold(7, owed("m7", b"k"), t0);
        d.hold(8, owed("m8", b"j"), t0);
        assert_eq!(d.floor(), Some(7));
        assert_eq!(
            d.wait_or_pass(b"k", Touch::Shows, "get k"),
            None,
            "waits behind m7"
        );
        assert_pass(&mut d, &[(b"x", Touch::Shows, "get x", vec![])]);
        let s = d.settle(now(&through(6), true, &heard, t0 + SECOND));
        assert_eq!((s.answer, s.dropped, s.release), (vec![], 0, vec![]));
        // The old leader is back and reports it answered through 7.
        let s = d.settle(now(&through(7), true, &heard, t0 + 2 * SECOND));
        assert_eq!((s.answer, s.dropped, s.release), (vec![], 1, vec!["get k"]));
        assert_eq!(d.floor(), Some(8));
        // A report that lists 8 as owed does not cover it.
        let s = d.settle(now(&Report::new(9, [8]), true, &heard, t0 + 2 * SECOND));
        assert_eq!((s.dropped, d.floor()), (0, Some(8)));
    }

    #[test]
    fn held_answers_go_once_the_old_leader_was_heard_or_the_hold_ran_out_or_leadership_ended() {
        let t0 = Instant::now();
        let heard_1 = HashMap::from([(NodeId(1), t0 + SECOND)]);
        let nobody = HashMap::new();
        for (defer, leader, heard, at) in [
            (true, true, &heard_1, t0 + SECOND),
            (false, true, &nobody, t0 + 4 * SECOND),
            (true, false, &nobody, t0 + SECOND),
        ] {
            let (mut d, _) = leading_after_1(4 * SECOND, defer);
            d.hold(7, owed("m7", b"k"), t0);
            d.hold(9, owed("m9", b"k"), t0);
            assert_eq!(d.wait_or_pass(b"k", Touch::Overwrites, "put k"), None);
            let s = d.settle(now(&through(6), leader, heard, at));
            assert_eq!(s.answer, vec![ok("m7"), ok("m9")], "in log order");
            assert_eq!(s.release, vec!["put k"], "after the held answers");
            assert_eq!((d.deadline(), d.floor()), (None, None));
            assert_eq!(d.deferred_indexes().count(), 0);
        }
        let (mut d, _) = leading_after_1::<&str>(4 * SECOND, true);
        d.hold(7, owed("m7", b"k"), t0);
        // Heard before the hold began: that datagram may predate the answer.
        let early = HashMap::from([(NodeId(1), t0 - SECOND)]);
        let s = d.settle(now(
            &through(6),
            true,
            &early,
            t0 + 4 * SECOND - Duration::from_millis(1),
        ));
        assert!(s.answer.is_empty(), "not yet");
    }

    #[test]
    fn a_dead_peer_that_led_none_of_the_terms_does_not_hold_answers_up() {
        let t0 = Instant::now();
        let (mut d, _) = leading_after_1::<u8>(4 * SECOND, true);
        d.hold(7, owed("m7", b"k"), t0);
        // Replica 3 was killed as a follower and is never heard; 1 (the old leader), 2
        // and 4 are.
        let at = t0 + Duration::from_millis(100);
        let heard = HashMap::from([(NodeId(1), at), (NodeId(2), at), (NodeId(4), at)]);
        let s = d.settle(now(&through(6), true, &heard, at));
        assert_eq!(s.answer, vec![ok("m7")]);
    }

    #[test]
    fn every_leader_from_the_entrys_term_on_is_waited_for_and_no_one_else() {
        let t0 = Instant::now();
        let mut d = Doubts::<u8>::new(4 * SECOND, true);
        d.note_leader(1, NodeId(1), false);
        d.note_leader(2, NodeId(2), false);
        d.note_leader(4, NodeId(4), false); // a later term than ours: not of these entries
        let mut m9 = owed("m9", b"j");
        m9.term = 2;
        d.hold(7, owed("m7", b"k"), t0);
        d.hold(9, m9, t0);
        let at = t0 + SECOND;
        let mut heard = HashMap::from([(NodeId(2), at)]);
        let none = through(0);
        fn term3<'a>(r: &'a Report, heard: &'a HashMap<NodeId, Instant>, at: Instant) -> Now<'a> {
            Now {
                term: 3,
                ..now(r, true, heard, at)
            }
        }
        // Term 2's leader is heard, term 1's is not: entry 7 waits, and 9 waits behind it.
        let s = d.settle(term3(&none, &heard, at));
        assert!(s.answer.is_empty());
        heard.insert(NodeId(1), at);
        let s = d.settle(term3(&none, &heard, at));
        assert_eq!(s.answer, vec![ok("m7"), ok("m9")]);
    }

    #[test]
    fn answers_about_a_key_keep_their_order_behind_a_held_put() {
        let t0 = Instant::now();
        let (mut d, heard) = leading_after_1(4 * SECOND, false);
        d.hold(7, owed("m7", b"k"), t0);
        assert_eq!(d.wait_or_pass(b"k", Touch::Shows, 1), None);
        let s = d.settle(now(&through(7), true, &heard, t0));
        assert_eq!(s.release, vec![1]);
        // Nothing held any more: answers pass.
        assert_eq!(d.wait_or_pass(b"k", Touch::Shows, 2), Some((vec![], 2)));
        d.hold(10, owed("m10", b"k"), t0);
        assert_eq!(d.wait_or_pass(b"k", Touch::Shows, 3), None);
        assert_eq!(d.wait_or_pass(b"j", Touch::Shows, 4), Some((vec![], 4)));
        let s = d.settle(now(&through(9), true, &heard, t0 + 4 * SECOND));
        assert_eq!((s.answer, s.release), (vec![ok("m10")], vec![3]));
    }

    #[test]
    fn with_no_hold_time_answers_go_at_once() {
        let t0 = Instant::now();
        let (mut d, heard) = leading_after_1::<u8>(Duration::ZERO, false);
        d.hold(7, owed("m7", b"k"), t0);
        assert_eq!(
            d.settle(now(&through(0), true, &heard, t0)).answer,
            vec![ok("m7")]
        );
    }

    /// Entries 7 (key k) and 8 (key j) of a dead leader's term, held from `t0` and
    /// deferred at `t0 + 4 s`.
    fn deferred_7_and_8(t0: Instant) -> Doubts<&'static str> {
        let (mut d, heard) = leading_after_1(4 * SECOND, true);
        d.hold(7, owed("m7", b"k"), t0);
        d.hold(8, owed("m8", b"j"), t0);
        let s = d.settle(now(&through(6), true, &heard, t0 + 4 * SECOND));
        assert_eq!((s.answer, s.deferred), (vec![], 2));
        assert_eq!(d.floor(), None, "deferred answers hold nothing up");
        assert_eq!(d.deadline(), None);
        assert_eq!(d.deferred_indexes().collect::<Vec<_>>(), vec![7, 8]);
        d
    }

    #[test]
    fn a_deferred_answer_goes_before_a_reply_that_shows_its_value_and_only_then() {
        let t0 = Instant::now();
        let mut d = deferred_7_and_8(t0);
        assert_pass(
            &mut d,
            &[
                // A redirect shows nothing; another key's get passes untouched.
                (b"k", Touch::Neither, "redirect", vec![]),
                (b"x", Touch::Shows, "get x", vec![]),
                (b"k", Touch::Shows, "get k", vec![ok("m7")]),
                // Sent once.
                (b"k", Touch::Shows, "get k again", vec![]),
            ],
        );
        assert_eq!(d.deferred_indexes().collect::<Vec<_>>(), vec![8]);
    }

    #[test]
    fn a_later_puts_ok_makes_a_deferred_answer_of_its_key_moot() {
        let t0 = Instant::now();
        let mut d = deferred_7_and_8(t0);
        assert_pass(
            &mut d,
            &[
                (b"j", Touch::Overwrites, "put j", vec![]),
                // m8 must never arrive after the later put's ok.
                (b"j", Touch::Shows, "get j", vec![]),
            ],
        );
        assert_eq!(d.deferred_indexes().collect::<Vec<_>>(), vec![7]);
        // A put of key k of our own term, answered through the hold in log order, does the
        // same to 7.
        let mut m9 = owed("m9", b"k");
        m9.term = 2;
        d.hold(9, m9, t0 + 5 * SECOND);
        let s = d.settle(now(&through(6), true, &HashMap::new(), t0 + 5 * SECOND));
        assert_eq!(s.answer, vec![ok("m9")]);
        assert_eq!(d.deferred_indexes().count(), 0);
    }

    #[test]
    fn deferred_answers_go_when_their_leader_is_heard_stay_when_leadership_ends_and_drop_when_reported(
    ) {
        let t0 = Instant::now();
        let later = t0 + 5 * SECOND;
        // The old leader comes back (a healed partition) and does not cover them: it
        // never answered them.
        let mut d = deferred_7_and_8(t0);
        let heard = HashMap::from([(NodeId(1), later)]);
        let s = d.settle(now(&through(6), true, &heard, later));
        assert_eq!(s.answer, vec![ok("m7"), ok("m8")]);
        // This replica stops leading: the next leader may have acknowledged a later put
        // of k already, so they stay, still owed in its reports.
        let mut d = deferred_7_and_8(t0);
        let s = d.settle(now(&through(6), false, &HashMap::new(), later));
        assert!(s.answer.is_empty());
        assert_eq!(d.deferred_indexes().collect::<Vec<_>>(), vec![7, 8]);
        // A report covers 7 and lists 8 as owed.
        let mut d = deferred_7_and_8(t0);
        let s = d.settle(now(&Report::new(8, [8]), true, &HashMap::new(), later));
        assert_eq!((s.answer, s.dropped), (vec![], 1));
        assert_eq!(d.deferred_indexes().collect::<Vec<_>>(), vec![8]);
    }

    #[test]
    fn an_answer_waiting_behind_a_held_put_that_is_deferred_goes_after_it_if_it_shows_it() {
        let t0 = Instant::now();
        let (mut d, heard) = leading_after_1(4 * SECOND, true);
        d.hold(7, owed("m7", b"k"), t0);
        d.hold(8, owed("m8", b"j"), t0);
        assert_eq!(d.wait_or_pass(b"k", Touch::Shows, "get k"), None);
        assert_eq!(d.wait_or_pass(b"j", Touch::Overwrites, "put j"), None);
        let s = d.settle(now(&through(6), true, &heard, t0 + 4 * SECOND));
        assert_eq!(
            s.answer,
            vec![ok("m7")],
            "shown by the get; m8 made moot by the put"
        );
        assert_eq!(s.release, vec!["get k", "put j"]);
        assert_eq!(d.deferred_indexes().count(), 0);
    }

    #[test]
    fn a_put_of_a_leader_that_held_stalled_commits_back_is_answered_when_the_hold_runs_out() {
        let t0 = Instant::now();
        for (said, known) in [(true, true), (false, false)] {
            let mut d = Doubts::<u8>::new(4 * SECOND, true);
            if known {
                d.note_leader(1, NodeId(1), said);
            }
            d.hold(7, owed("m7", b"k"), t0);
            let s = d.settle(now(&through(6), true, &HashMap::new(), t0 + 4 * SECOND));
            assert_eq!(
                (s.answer, s.deferred),
                (vec![ok("m7")], 0),
                "{said} {known}"
            );
        }
        // The leader of term 2 said it did not, but the entry is of term 1.
        let mut d = Doubts::<u8>::new(4 * SECOND, true);
        d.note_leader(1, NodeId(1), true);
        d.note_leader(2, NodeId(2), false);
        d.hold(7, owed("m7", b"k"), t0);
        let s = d.settle(now(&through(6), true, &HashMap::new(), t0 + 4 * SECOND));
        assert_eq!(s.answer, vec![ok("m7")]);
    }

    #[test]
    fn an_entry_a_report_lists_as_owed_is_deferred_at_once() {
        let t0 = Instant::now();
        let (mut d, _) = leading_after_1::<u8>(4 * SECOND, true);
        d.defer(7, owed("m7", b"k"), t0);
        assert_eq!((d.floor(), d.deadline()), (None, None));
        assert_eq!(
            d.wait_or_pass(b"k", Touch::Shows, 1),
            Some((vec![ok("m7")], 1))
        );
        // With deferral off it is only held.
        let (mut d, _) = leading_after_1::<u8>(4 * SECOND, false);
        d.defer(7, owed("m7", b"k"), t0);
        assert_eq!(d.floor(), Some(7));
    }
}
