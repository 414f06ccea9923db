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
use kv_shared::NodeId;
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
    }

    /// True if a quorum of `voters` (`me` counting always) echoed a round sent less than
    /// `span` ticks before `now`.
    pub fn holds(&self, voters: &[NodeId], me: NodeId, now: u64, span: u64) -> bool {
        !self.void
            && quorum::has_quorum(voters, |v| {
                v == me || self.acks.get(&v).is_some_and(|t| now < t + span)
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
        let single = self.membership.voters == [self.cfg.id];
        let room = ls.reads.len() < self.cfg.pending_reads_max;
        (room && commit >= ls.term_start && (single || self.lease_valid())).then_some(commit)
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
