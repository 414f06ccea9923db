//! Lazy followers (`Config::lazy_followers`): a leader needs acknowledgements from
//! `quorum - 1` followers to commit, so it sends new entries at once only to that many
//! "fast" followers and lets the others catch up when it next sends them anything else
//! (a heartbeat, a heartbeat resend, a ReadIndex round). For a caller that counts
//! datagrams (course mode): a put costs 4 datagrams at 5 replicas instead of 8. Holding
//! entries back is no different, to Raft, from a slow network. Kept apart from
//! `replication` because it is an optional send policy with its own small state.
//!
//! The fast set is ranked by acknowledgement order, a logical clock counted in answers,
//! never time. When a commit stalls the caller, which keeps the (sub-tick) timers, asks
//! for a release ([`Raft::release_stalled`]); under heavy loss it makes every follower
//! fast ([`Raft::set_send_wide`]). Every Append this policy sends to a follower starts
//! just after the follower's match index: it carries every entry the follower has not
//! acknowledged, in log order, so a lost Append costs no refusal and repair round trip.

use crate::heartbeat_resend::silent;
use crate::node::{Raft, RoleState};
use crate::progress::{Progress, ProgressState};
use crate::quorum;
use kv_shared::NodeId;
use std::cmp::Reverse;
use std::collections::BTreeMap;

/// Entries a lazy follower may lack before it is sent them anyway: bounds what one
/// catch-up must carry.
pub(crate) const LAZY_HELD_ENTRIES_MAX: u64 = 256;

/// What the leader tracks for lazy followers during one leadership.
#[derive(Debug, Default)]
pub(crate) struct Lazy {
    /// Followers sent new entries at once.
    fast: Vec<NodeId>,
    /// Answers counted so far: the logical clock of `LazyPeer::answered`.
    answers: u64,
    peers: BTreeMap<NodeId, LazyPeer>,
    /// The leader is sending held entries itself: the gate is open.
    releasing: bool,
}

#[derive(Clone, Copy, Debug, Default)]
struct LazyPeer {
    /// `Lazy::answers` at its latest AppendResp or HeartbeatResp (0: none yet).
    answered: u64,
    /// It left an Append unanswered when a commit stalled ([`Raft::note_stall`]); cleared
    /// by its next AppendResp. A stale follower loses its place in the fast set.
    stale: bool,
}

/// Rewinds a flow so that the next Append starts just after the follower's match index
/// (everything unacknowledged goes again, in one message and in log order).
fn rewind(pr: &mut Progress) {
    match pr.state {
        ProgressState::Replicate if pr.next > pr.match_ + 1 => {
            pr.next = pr.match_ + 1;
            pr.inflight.clear();
        }
        ProgressState::Probe => pr.probe_sent = false,
        _ => {}
    }
}

impl Raft {
    /// Whether lazy followers are in force: on, leading, and past the grace period in
    /// which a new leader sends to everyone (its first Appends tell every follower who
    /// leads).
    fn lazy_active(&self) -> bool {
        let RoleState::Leader(ls) = &self.role else {
            return false;
        };
        self.cfg.lazy_followers && self.now - ls.since >= u64::from(self.cfg.lazy_grace_ticks)
    }

    /// Followers that must acknowledge for a commit, the leader aside.
    fn lazy_quorum_followers(&self) -> usize {
        let me = self.cfg.id;
        let voters = &self.membership.voters;
        quorum::majority(voters.len()).saturating_sub(usize::from(voters.contains(&me)))
    }

    /// True if an Append to `to` is held back now (`maybe_send_append` sends nothing):
    /// a voter outside the fast set and not the target of a leadership transfer (which
    /// must catch up, and learn the commit index before its TimeoutNow), lacking fewer
    /// than [`LAZY_HELD_ENTRIES_MAX`] entries, while the leader is not releasing entries
    /// itself.
    pub(crate) fn lazy_holds(&self, to: NodeId) -> bool {
        if !self.lazy_active() || !self.membership.voters.contains(&to) {
            return false;
        }
        let RoleState::Leader(ls) = &self.role else {
            return false;
        };
        let Some(pr) = ls.progress.get(&to) else {
            return false;
        };
        !ls.lazy.releasing
            && !ls.lazy.fast.contains(&to)
            && ls.transfer.is_none_or(|(target, _)| target != to)
            && !matches!(pr.state, ProgressState::Snapshot(_))
            && self.log.last_index().saturating_sub(pr.match_) < LAZY_HELD_ENTRIES_MAX
    }

    /// Notes an answer from `from` (leader side): the fast set ranks by the latest.
    pub(crate) fn lazy_answered(&mut self, from: NodeId, append_resp: bool) {
        if !self.cfg.lazy_followers {
            return;
        }
        let RoleState::Leader(ls) = &mut self.role else {
            return;
        };
        if !ls.progress.contains_key(&from) {
            return;
        }
        ls.lazy.answers += 1;
        let peer = ls.lazy.peers.entry(from).or_default();
        peer.answered = ls.lazy.answers;
        if append_resp {
            peer.stale = false;
        }
    }

    /// Keeps the fast set: `quorum - 1` voters (every one not silent while sending
    /// wide), replacing stale ones by those that answered most recently. Called before
    /// new entries go out.
    pub(crate) fn lazy_refresh_fast(&mut self) {
        if !self.lazy_active() {
            return;
        }
        let quorum_followers = self.lazy_quorum_followers();
        let (now, silent_ticks, me) = (self.now, self.cfg.silent_follower_ticks, self.cfg.id);
        let wide = self.cfg.lazy_send_wide;
        let voters = &self.membership.voters;
        let RoleState::Leader(ls) = &mut self.role else {
            return;
        };
        let since = ls.since;
        let mut ranked: Vec<(bool, bool, Reverse<u64>, NodeId)> = ls
            .progress
            .iter()
            .filter(|(id, _)| **id != me && voters.contains(id))
            .map(|(id, p)| {
                let lp = ls.lazy.peers.get(id).copied().unwrap_or_default();
                (
                    silent(p, now, since, silent_ticks),
                    lp.stale,
                    Reverse(lp.answered),
                    *id,
                )
            })
            .collect();
        let want = if wide {
            let answering = ranked.iter().filter(|r| !r.0).count();
            answering.max(quorum_followers)
        } else {
            quorum_followers
        };
        let stale = |id: &NodeId| ls.lazy.peers.get(id).is_some_and(|p| p.stale);
        if ls.lazy.fast.len() == want && !ls.lazy.fast.iter().any(stale) {
            return;
        }
        // Not silent, not stale first, then the latest answer, then the lowest id.
        ranked.sort();
        ls.lazy.fast = ranked.into_iter().take(want).map(|r| r.3).collect();
    }

    /// Before new entries go to the fast followers: each Append to one carries every
    /// entry it has not acknowledged.
    pub(crate) fn lazy_rewind_fast(&mut self) {
        if !self.lazy_active() {
            return;
        }
        let RoleState::Leader(ls) = &mut self.role else {
            return;
        };
        for id in ls.lazy.fast.clone() {
            if let Some(pr) = ls.progress.get_mut(&id) {
                rewind(pr);
            }
        }
    }

    /// Sends `to` what it lacks, from just after its match index, gate open. Before any
    /// other message a lazy follower gets (its heartbeat, a heartbeat resend): that
    /// message is how it catches up once per heartbeat interval.
    pub(crate) fn lazy_send_held(&mut self, to: NodeId) {
        if !self.lazy_active() {
            return;
        }
        let last = self.log.last_index();
        let RoleState::Leader(ls) = &mut self.role else {
            return;
        };
        if ls.lazy.fast.contains(&to) {
            return;
        }
        let Some(pr) = ls.progress.get_mut(&to) else {
            return;
        };
        if pr.match_ >= last || matches!(pr.state, ProgressState::Snapshot(_)) {
            return;
        }
        rewind(pr);
        // Entries riding with a heartbeat are not contact of their own: the follower
        // was not sent them since the previous heartbeat, and must not lose the next
        // one to suppression (its timer would then go two intervals unreset).
        let contacted = pr.contacted;
        self.lazy_send_open(to);
        if let RoleState::Leader(ls) = &mut self.role {
            if let Some(pr) = ls.progress.get_mut(&to) {
                pr.contacted = contacted;
            }
        }
    }

    /// True if `p` lacks entries that lazy followers held back from it: with
    /// `heartbeat_suppression_strict` it is then not skipped, since the heartbeat is
    /// what carries them.
    pub(crate) fn lazy_lacks(&self, p: &Progress) -> bool {
        self.cfg.lazy_followers && p.match_ < self.log.last_index()
    }

    /// Sends `to` everything its flow allows, the gate open.
    fn lazy_send_open(&mut self, to: NodeId) {
        if let RoleState::Leader(ls) = &mut self.role {
            ls.lazy.releasing = true;
        }
        while self.maybe_send_append(to, false) {}
        if let RoleState::Leader(ls) = &mut self.role {
            ls.lazy.releasing = false;
        }
    }

    /// Marks every follower that has an Append unanswered as stale, for a caller that
    /// saw a commit stall (its timers are finer than a tick): stale fast followers are
    /// replaced before the next entries go out. Does nothing without lazy followers or
    /// off the leader.
    pub fn note_stall(&mut self) {
        self.drained = false;
        if !self.cfg.lazy_followers {
            return;
        }
        let RoleState::Leader(ls) = &mut self.role else {
            return;
        };
        for (id, p) in &ls.progress {
            if !p.all_acknowledged() {
                ls.lazy.peers.entry(*id).or_default().stale = true;
            }
        }
    }

    /// Releases a stalled commit, for a caller that times it (a commit that has not
    /// moved for a while after new entries). Notes the stall ([`Raft::note_stall`]),
    /// then sends each follower that is not silent and lacks entries everything it has
    /// not acknowledged. With `targeted`, only as many followers as the commit lacks
    /// acknowledgements (fast ones holding every entry count as acknowledged): those
    /// with held entries first (they need them anyway), then those not stale, then the
    /// most recently answered. Without lazy followers (or in a new leader's grace
    /// period) this is a resend of what followers left unanswered, timed by the caller.
    /// Does nothing off the leader.
    pub fn release_stalled(&mut self, targeted: bool) {
        self.drained = false;
        if !matches!(self.role, RoleState::Leader(_)) {
            return;
        }
        self.note_stall();
        let last = self.log.last_index();
        let quorum_followers = self.lazy_quorum_followers();
        let (now, silent_ticks) = (self.now, self.cfg.silent_follower_ticks);
        let RoleState::Leader(ls) = &self.role else {
            return;
        };
        let fast = &ls.lazy.fast;
        let acked = fast
            .iter()
            .filter(|id| ls.progress.get(id).is_some_and(|p| p.match_ >= last))
            .count();
        let need = quorum_followers.saturating_sub(acked).max(1);
        let mut ranked: Vec<(bool, bool, Reverse<u64>, NodeId)> = ls
            .progress
            .iter()
            .filter(|(_, p)| p.match_ < last && !silent(p, now, ls.since, silent_ticks))
            .filter(|(_, p)| !matches!(p.state, ProgressState::Snapshot(_)))
            .map(|(id, p)| {
                let lp = ls.lazy.peers.get(id).copied().unwrap_or_default();
                let held = !fast.contains(id) && p.next <= last;
                (!held, lp.stale, Reverse(lp.answered), *id)
            })
            .collect();
        ranked.sort();
        if targeted && ranked.len() > need {
            ranked.truncate(need);
        }
        let targets: Vec<NodeId> = ranked.into_iter().map(|r| r.3).collect();
        for to in targets {
            if let RoleState::Leader(ls) = &mut self.role {
                if let Some(pr) = ls.progress.get_mut(&to) {
                    rewind(pr);
                }
            }
            self.lazy_send_open(to);
        }
    }

    /// Makes every follower that is not silent fast (`on`), or only `quorum - 1` of
    /// them, for a caller whose need changes with the drop rate it measures (course
    /// mode goes wide under heavy loss: with two fast followers at 30% loss three puts
    /// in four miss an acknowledgement). Takes effect when entries next go out.
    pub fn set_send_wide(&mut self, on: bool) {
        self.drained = false;
        self.cfg.lazy_send_wide = on;
    }
}

#[cfg(test)]
#[path = "lazy_tests.rs"]
mod tests;
