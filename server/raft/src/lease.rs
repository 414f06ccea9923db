//! Leader lease reads (`Config::lease_reads`): a leader that a quorum confirmed recently
//! answers reads without a heartbeat round. Its safety rests on CheckQuorum stickiness (a
//! follower ignores votes for `election_ticks_min` ticks after hearing from its leader)
//! and on bounded clock drift; docs/RAFT.md states the assumption.
//!
//! The lease is counted from when the leader SENT a heartbeat a follower echoed, never
//! from when the echo arrived: the follower heard the leader at or after the send, so its
//! promise not to vote runs at least until `send + election_ticks_min`.

use crate::node::{Raft, RoleState};
use crate::quorum;
use crate::types::Index;
use kv_shared::limits::NODES_MAX;
use kv_shared::NodeId;
use std::cell::OnceCell;
use std::collections::{BTreeMap, VecDeque};

/// Most heartbeat rounds whose send tick is remembered; an echo of an older round is
/// simply not counted (conservative).
const LEASE_ROUNDS_MAX: usize = 64;

/// A leader's lease bookkeeping for one term.
#[derive(Debug, Default)]
pub(crate) struct Lease {
    /// (round id, leader tick of its first send), ids ascending.
    rounds: VecDeque<(u64, u64)>,
    /// Per voter: send tick of the newest round it echoed.
    acks: BTreeMap<NodeId, u64>,
    /// TimeoutNow went out in this term: its target may win votes at any time (transfer
    /// overrides stickiness, and a duplicate may arrive late), so no lease this term.
    void: bool,
    /// When the lease runs out given the echoes so far, for the voter set it was worked
    /// out for. A leader serving lease reads asks `holds` for every get, and between two
    /// echoes the answer moves only with `now`: one comparison instead of a map lookup
    /// per voter. Cleared whenever `acks` changes.
    expiry: OnceCell<Expiry>,
}

/// [`Lease::holds`] for one voter set, node and span, as the tick it stops holding at.
#[derive(Debug)]
struct Expiry {
    voters: [NodeId; NODES_MAX],
    count: usize,
    me: NodeId,
    span: u64,
    /// The lease holds while `now < until`.
    until: u64,
}

impl Expiry {
    #[inline]
    fn is_for(&self, voters: &[NodeId], me: NodeId, span: u64) -> bool {
        self.me == me && self.span == span && self.voters[..self.count] == *voters
    }
}

impl Lease {
    /// Heartbeats carrying `round` go out at tick `now`; the first send is what counts.
    pub fn sent(&mut self, round: u64, now: u64) {
        if round == 0 || self.rounds.back().is_some_and(|(id, _)| *id >= round) {
            return;
        }
        if self.rounds.len() == LEASE_ROUNDS_MAX {
            self.rounds.pop_front();
        }
        self.rounds.push_back((round, now));
    }

    /// `from` echoed `round`.
    pub fn echoed(&mut self, from: NodeId, round: u64) {
        let Ok(i) = self.rounds.binary_search_by_key(&round, |(id, _)| *id) else {
            return;
        };
        let sent = self.rounds[i].1;
        let t = self.acks.entry(from).or_insert(sent);
        *t = (*t).max(sent);
        self.expiry.take();
    }

    /// No lease for the rest of the term.
    pub fn void(&mut self) {
        self.void = true;
    }

    /// Forgets every round sent so far and every echo of them: the leader's clock may
    /// have lagged real time since (a paused group, a stalled process), so only rounds
    /// sent from now on count. An echo of a forgotten round arriving later counts for
    /// nothing, like one of a round never sent.
    pub fn forget(&mut self) {
        self.rounds.clear();
        self.acks.clear();
        self.expiry.take();
    }

    /// True if a quorum of `voters` (`me` counting always) echoed a round sent less than
    /// `span` ticks before `now`.
    #[inline]
    pub fn holds(&self, voters: &[NodeId], me: NodeId, now: u64, span: u64) -> bool {
        if self.void {
            return false;
        }
        match self.expiry.get() {
            Some(e) if e.is_for(voters, me, span) => now < e.until,
            _ => self.holds_afresh(voters, me, now, span),
        }
    }

    /// [`Lease::holds`] worked out from the echoes, kept for the next ask unless an
    /// answer for another voter set is kept (a membership change: that one is then
    /// worked out afresh each time, until the next echo clears the kept one). Apart, so
    /// that the common ask stays a few instructions.
    #[cold]
    #[inline(never)]
    fn holds_afresh(&self, voters: &[NodeId], me: NodeId, now: u64, span: u64) -> bool {
        let until = self.until(voters, me, span);
        if voters.len() <= NODES_MAX && self.expiry.get().is_none() {
            let mut e = Expiry {
                voters: [NodeId(0); NODES_MAX],
                count: voters.len(),
                me,
                span,
                until,
            };
            e.voters[..voters.len()].copy_from_slice(voters);
            let _ = self.expiry.set(e);
        }
        now < until
    }

    /// The tick at which the echoes so far stop making a quorum of `voters`: a voter
    /// counts until `span` ticks after the round it echoed was sent (`me` always), so
    /// a quorum counts while `now` is below the majority-th latest of those ends, the
    /// index a quorum reached were they match indexes. 0 (never) for no voters.
    fn until(&self, voters: &[NodeId], me: NodeId, span: u64) -> u64 {
        quorum::committed_index(voters, |v| {
            if v == me {
                u64::MAX
            } else {
                self.acks.get(&v).map_or(0, |t| t.saturating_add(span))
            }
        })
    }
}

impl Raft {
    /// The index a linearizable read may be served at right now, with no message and no
    /// `Ready`: the commit index, if this leader would confirm a `read_index` at once
    /// (it committed an entry of its term, holds its lease or is the only voter, and is
    /// below `pending_reads_max`); `None` where `read_index` would take a heartbeat
    /// round, wait, or refuse.
    ///
    /// For a caller that batches: a read `read_index` confirms at once still costs a
    /// `ReadState` and a drain of the group's `Ready`, per group and round. A read served
    /// at this index once the state machine applied it is exactly the read that
    /// `read_index` would have confirmed at the same moment. It changes nothing here, so
    /// asking leaves no work behind.
    pub fn lease_read_index(&self) -> Option<Index> {
        let RoleState::Leader(ls) = &self.role else {
            return None;
        };
        let commit = self.log.commit;
        let room = ls.reads.len() < self.cfg.pending_reads_max;
        // The lease first: it holds on nearly every ask of a replicated group.
        let confirmed = || self.lease_valid() || self.membership.voters == [self.cfg.id];
        (room && commit >= ls.term_start && confirmed()).then_some(commit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{test_config, Cluster};

    /// The only voter confirms its own reads (no lease needed): at once, at its commit
    /// index, once it committed an entry of its term. (`Cluster::read` checks every read
    /// of every test against what `read_index` released at once.)
    #[test]
    fn a_single_voter_reads_at_its_commit_index_without_a_lease() {
        let mut c = Cluster::new(1, &[], test_config());
        assert!(!c.opts.lease_reads);
        assert_eq!(c.nodes[&1].raft.lease_read_index(), None, "a follower");
        while c.nodes[&1].raft.role_now() != crate::Role::Leader {
            c.tick(1);
        }
        c.stabilize();
        let commit = c.nodes[&1].raft.log.commit;
        assert!(commit > 0, "its term's entry committed");
        assert_eq!(c.nodes[&1].raft.lease_read_index(), Some(commit));
        c.read(1, 1).expect("leader");
    }

    fn ids(n: &[u64]) -> Vec<NodeId> {
        n.iter().map(|i| NodeId(*i)).collect()
    }

    /// `holds` as a quorum count, straight from the echoes: what the kept expiry must
    /// always answer.
    fn holds_by_count(l: &Lease, voters: &[NodeId], me: NodeId, now: u64, span: u64) -> bool {
        !l.void
            && quorum::has_quorum(voters, |v| {
                v == me || l.acks.get(&v).is_some_and(|t| now < t + span)
            })
    }

    /// Any sequence of sends, echoes, forgets and voids, asked at any tick about any of
    /// several voter sets (a membership change between two asks included): the kept
    /// expiry answers as counting the echoes afresh would.
    #[test]
    fn the_kept_expiry_answers_as_a_fresh_count() {
        use rand::{Rng, SeedableRng};
        let sets = [
            ids(&[1, 2, 3]),
            ids(&[1, 2, 3, 4, 5]),
            ids(&[2, 3, 4]),
            ids(&[1]),
            ids(&[]),
            ids(&[1, 3]),
        ];
        let mut asked = [0u64; 2];
        for seed in 0..300u64 {
            let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
            let mut l = Lease::default();
            let (mut round, mut now) = (0u64, 0u64);
            for _ in 0..200 {
                match rng.gen_range(0..100) {
                    0..=19 => {
                        round += 1;
                        l.sent(round, now);
                    }
                    20..=49 => {
                        let back = rng.gen_range(0..3);
                        l.echoed(NodeId(rng.gen_range(1..=5)), round.saturating_sub(back));
                    }
                    50..=51 => l.forget(),
                    52 if rng.gen_range(0..10) == 0 => l.void(),
                    _ => now += rng.gen_range(0..4),
                }
                // Asked twice about one set in a row (the kept answer), then another.
                let voters = &sets[rng.gen_range(0..sets.len())];
                let me = NodeId(rng.gen_range(1..=2));
                let span = [8, 24][rng.gen_range(0..2)];
                for _ in 0..2 {
                    let at = now + rng.gen_range(0..30);
                    let want = holds_by_count(&l, voters, me, at, span);
                    assert_eq!(
                        l.holds(voters, me, at, span),
                        want,
                        "seed {seed}: voters {voters:?}, me {me:?}, at {at}, span {span}, {l:?}"
                    );
                    asked[usize::from(want)] += 1;
                }
            }
        }
        assert!(
            asked[0] > 1000 && asked[1] > 1000,
            "both answers asked: {asked:?}"
        );
    }

    #[test]
    fn counts_from_the_first_send_and_expires() {
        let mut l = Lease::default();
        let v = ids(&[1, 2, 3]);
        l.sent(7, 10);
        l.sent(7, 15); // a resend of the same round does not move its start
        assert!(!l.holds(&v, NodeId(1), 11, 8), "no echo yet");
        l.echoed(NodeId(2), 7);
        assert!(l.holds(&v, NodeId(1), 17, 8));
        assert!(
            !l.holds(&v, NodeId(1), 18, 8),
            "sent at 10, span 8: over at 18"
        );
    }

    #[test]
    fn unknown_rounds_and_void_count_for_nothing() {
        let mut l = Lease::default();
        let v = ids(&[1, 2, 3]);
        l.echoed(NodeId(2), 3);
        assert!(!l.holds(&v, NodeId(1), 1, 8), "echo of a round never sent");
        l.sent(5, 6);
        l.echoed(NodeId(3), 5);
        assert!(l.holds(&v, NodeId(1), 6, 8));
        l.void();
        assert!(!l.holds(&v, NodeId(1), 6, 8));
    }

    #[test]
    fn forgetting_drops_old_rounds_and_their_late_echoes() {
        let mut l = Lease::default();
        let v = ids(&[1, 2, 3]);
        l.sent(4, 10);
        l.sent(5, 12);
        l.echoed(NodeId(2), 4);
        assert!(l.holds(&v, NodeId(1), 12, 8));
        l.forget();
        assert!(
            !l.holds(&v, NodeId(1), 12, 8),
            "echoes before forget count no more"
        );
        l.echoed(NodeId(3), 5);
        assert!(
            !l.holds(&v, NodeId(1), 12, 8),
            "a late echo of a round sent before forget counts for nothing"
        );
        l.sent(6, 13);
        l.echoed(NodeId(3), 6);
        assert!(
            l.holds(&v, NodeId(1), 13, 8),
            "rounds sent after forget count"
        );
    }
}
