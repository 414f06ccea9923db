//! Heartbeat resends (`Config::heartbeat_resend_ticks`): a leader asks a follower that
//! has not echoed its heartbeat again, a few times, so that under heavy loss a follower
//! does not miss enough heartbeats in a row to start an election. Kept apart from
//! `replication` because it is an optional send policy with its own small state.

use crate::node::{Raft, RoleState};
use crate::progress::Progress;
use crate::types::{Index, MessageBody};
use kv_shared::NodeId;

/// Most resends of one heartbeat (`Config::heartbeat_resend_ticks`): a follower that is
/// gone costs this many more messages per heartbeat, and at 30% loss one that answers
/// misses all four copies 7% of the time instead of half the time.
pub(crate) const HEARTBEAT_RESENDS_MAX: u32 = 3;

/// A heartbeat sent to one follower and not echoed yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct HeartbeatAsk {
    /// The commit index the heartbeat carried.
    pub commit: Index,
    /// The read round it carried.
    pub read_round: u64,
    /// Leader tick of the latest copy's send.
    pub sent_at: u64,
    /// Resends so far.
    pub resends: u32,
}

impl HeartbeatAsk {
    /// Leader tick at which the next copy is due: `period` ticks after the first send,
    /// doubling with each resend.
    fn due_at(&self, period: u32) -> u64 {
        self.sent_at + u64::from(period) * (1u64 << self.resends)
    }
}

/// True if the leader (leading since tick `since`) has not heard from `p` for
/// `silent_ticks` ticks of its term.
pub(crate) fn silent(p: &Progress, now: u64, since: u64, silent_ticks: Option<u32>) -> bool {
    silent_ticks.is_some_and(|t| now - p.heard_at.max(since) >= u64::from(t))
}

impl Raft {
    /// Switches heartbeat resends on (`Some(period)`) or off at run time, for a caller
    /// whose need for them changes (course mode resends only while loss is unknown or
    /// heavy). Switching off forgets the heartbeats waiting for a resend.
    pub fn set_heartbeat_resend_ticks(&mut self, ticks: Option<u32>) {
        self.drained = false;
        assert!(ticks != Some(0), "heartbeat_resend_ticks must be positive");
        self.cfg.heartbeat_resend_ticks = ticks;
        if ticks.is_none() {
            if let RoleState::Leader(ls) = &mut self.role {
                for p in ls.progress.values_mut() {
                    p.heartbeat_ask = None;
                }
            }
        }
    }

    /// Notes a heartbeat just sent to `to`, to resend it until echoed; not for a silent
    /// follower, nor with resends off.
    pub(crate) fn heartbeat_sent(&mut self, to: NodeId, commit: Index, read_round: u64) {
        let now = self.now;
        let silent_ticks = self.cfg.silent_follower_ticks;
        if self.cfg.heartbeat_resend_ticks.is_none() {
            return;
        }
        let RoleState::Leader(ls) = &mut self.role else {
            return;
        };
        let since = ls.since;
        if let Some(p) = ls.progress.get_mut(&to) {
            p.heartbeat_ask = (!silent(p, now, since, silent_ticks)).then_some(HeartbeatAsk {
                commit,
                read_round,
                sent_at: now,
                resends: 0,
            });
        }
    }

    /// Resends the heartbeats that are due (leader clock).
    pub(crate) fn resend_heartbeats(&mut self) {
        let Some(period) = self.cfg.heartbeat_resend_ticks else {
            return;
        };
        let now = self.now;
        let RoleState::Leader(ls) = &mut self.role else {
            return;
        };
        let mut due = Vec::new();
        for (id, p) in ls.progress.iter_mut() {
            let Some(ask) = &mut p.heartbeat_ask else {
                continue;
            };
            if now < ask.due_at(period) {
                continue;
            }
            ask.sent_at = now;
            ask.resends += 1;
            due.push((*id, ask.commit, ask.read_round));
            if ask.resends >= HEARTBEAT_RESENDS_MAX {
                p.heartbeat_ask = None;
            }
        }
        for (to, commit, read_round) in due {
            self.lazy_send_held(to);
            self.send(to, MessageBody::Heartbeat { commit, read_round });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_resend_waits_twice_as_long_as_the_one_before() {
        let mut ask = HeartbeatAsk {
            commit: 0,
            read_round: 0,
            sent_at: 10,
            resends: 0,
        };
        assert_eq!(ask.due_at(5), 15);
        ask.sent_at = 15;
        ask.resends = 1;
        assert_eq!(ask.due_at(5), 25);
        ask.sent_at = 25;
        ask.resends = 2;
        assert_eq!(ask.due_at(5), 45);
    }

    #[test]
    fn a_follower_is_silent_only_after_the_ticks_with_nothing_heard() {
        let mut p = Progress::new(1);
        p.heard_at = 100;
        assert!(!silent(&p, 129, 0, Some(30)));
        assert!(silent(&p, 130, 0, Some(30)));
        // Leadership that began later counts as hearing from it then.
        assert!(!silent(&p, 130, 120, Some(30)));
        assert!(!silent(&p, 10_000, 0, None));
    }
}
