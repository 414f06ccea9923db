//! When course mode asks kv-raft to resend unanswered vote requests. kv-raft decides who
//! has not answered and builds the requests (`Raft::resend_vote_requests`); only the
//! timing lives here, because it is finer than the 10 ms Raft tick and time is the
//! runtime's. At 30% loss a candidate otherwise hears from two of three live peers in
//! one round less than half of the time, and each miss costs an election timeout.

use std::time::{Duration, Instant};

/// First wait before the vote requests of a round are asked again (a harness round trip
/// is ~0.5 ms); it doubles with each resend: 5, 10 and 20 ms after the previous send
/// (5, 15 and 35 ms into the round when every turn is on time). Timed from the sends,
/// not from a tick: a resend a whole 10 ms tick after the requests would leave an
/// election that lost a datagram that much slower.
pub const VOTE_RESEND_FIRST: Duration = Duration::from_millis(5);

/// Resends per (pre-)vote round at most: a dead or cut-off voter costs three more
/// datagrams per round, and at 30% loss a voter that answers is missed by all four tries
/// 7% of the time instead of 51%.
pub const VOTE_RESENDS_MAX: u32 = 3;

/// The resend schedule of the current (pre-)vote round, if one is open.
#[derive(Debug, Default)]
pub struct VoteResends {
    /// When the round's requests, or the last resend, left.
    last_sent: Option<Instant>,
    /// Resends asked for in this round.
    resends: u32,
}

impl VoteResends {
    /// A (pre-)vote round's requests left at `now` (a new campaign, or the step from
    /// PreVote to Vote): the schedule starts over.
    pub fn round_started(&mut self, now: Instant) {
        self.last_sent = Some(now);
        self.resends = 0;
    }

    /// This replica no longer asks for votes (it leads, or follows someone).
    pub fn ended(&mut self) {
        self.last_sent = None;
    }

    /// When the next resend is due, if any is left.
    pub fn deadline(&self) -> Option<Instant> {
        let sent = self.last_sent?;
        (self.resends < VOTE_RESENDS_MAX).then(|| sent + VOTE_RESEND_FIRST * (1 << self.resends))
    }

    /// True (once per resend) if a resend is due at `now`: the caller then asks the core,
    /// and the next wait counts from `now`.
    pub fn take_due(&mut self, now: Instant) -> bool {
        let due = self.deadline().is_some_and(|d| d <= now);
        if due {
            self.resends += 1;
            self.last_sent = Some(now);
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_round_is_asked_again_5_15_and_35_ms_in_then_never() {
        let t0 = Instant::now();
        let mut v = VoteResends::default();
        assert_eq!(v.deadline(), None);
        assert!(!v.take_due(t0 + ms(100)));
        v.round_started(t0);
        assert!(!v.take_due(t0 + ms(4)));
        let mut due = Vec::new();
        while let Some(d) = v.deadline() {
            assert!(v.take_due(d));
            assert!(!v.take_due(d), "once per resend");
            due.push(d - t0);
        }
        assert_eq!(due, vec![ms(5), ms(15), ms(35)]);
        assert!(!v.take_due(t0 + ms(1000)));
    }

    /// The call the schedule drives reaches kv-raft through the node core as course mode
    /// builds it, and asks again exactly the voters that have not answered.
    #[test]
    fn the_node_core_resends_a_pre_vote_to_every_silent_voter_and_nothing_as_follower() {
        use crate::core_config::node_config;
        use crate::ids::Roster;
        use crate::settings::Settings;
        use kv_node::{GroupMessage, NodeCore};
        use kv_raft::{MessageBody, Role};
        use kv_shared::{NodeId, ShardId};

        let roster = Roster::new("0000", &["0001".into(), "0002".into()]).unwrap();
        let mut core = NodeCore::new(
            node_config(&Settings::default(), &roster),
            Default::default(),
        )
        .expect("empty state loads");
        let pre_votes_to = |core: &mut NodeCore| -> Vec<NodeId> {
            let out = core.take_output();
            for w in &out.disk_writes {
                core.on_disk_done(w.id);
            }
            let is_pre_vote =
                |gm: &GroupMessage| matches!(gm.msg.body, MessageBody::PreVote { .. });
            out.datagrams
                .iter()
                .filter(|(_, batch)| batch.msgs.iter().any(is_pre_vote))
                .map(|(to, _)| *to)
                .collect()
        };
        core.resend_vote_requests();
        assert!(pre_votes_to(&mut core).is_empty(), "a follower asks nobody");
        let mut ticks = 0;
        while core.raft_status(ShardId(0)).role == Role::Follower {
            core.tick();
            ticks += 1;
            assert!(ticks < 1000, "no election timeout");
        }
        assert_eq!(core.raft_status(ShardId(0)).role, Role::PreCandidate);
        let mut peers = pre_votes_to(&mut core);
        peers.sort();
        assert_eq!(peers.len(), 2, "the round's own requests");
        core.resend_vote_requests();
        let mut again = pre_votes_to(&mut core);
        again.sort();
        assert_eq!(again, peers, "nobody answered: both asked again");
    }

    #[test]
    fn a_late_turn_asks_once_and_a_new_round_starts_over() {
        let t0 = Instant::now();
        let mut v = VoteResends::default();
        v.round_started(t0);
        // A turn 15 ms late asks once; the next wait (10 ms) counts from that resend.
        assert!(v.take_due(t0 + ms(20)));
        assert!(!v.take_due(t0 + ms(20)));
        assert_eq!(v.deadline(), Some(t0 + ms(30)));
        // The step from PreVote to Vote is a new round.
        v.round_started(t0 + ms(21));
        assert_eq!(v.deadline(), Some(t0 + ms(26)));
        v.ended();
        assert_eq!(v.deadline(), None);
        assert!(!v.take_due(t0 + ms(100)));
    }
}
