//! When a course-mode leader releases a stalled commit, and whether it sends wide: the
//! timing half of lazy followers. kv-raft owns the sending (`Config::lazy_followers`:
//! the fast set, held entries, what a release sends to whom); this module owns the
//! clock, which runs finer than kv-raft's 10 ms tick (a stall is 1 ms, about three
//! harness round trips), and the drop-rate estimate that decides wide sending.
//!
//! - Stall release: if the commit has not moved for [`Settings::stall`] after new
//!   entries, the runtime tells kv-raft (`note_stall`: fast followers that left an
//!   Append unanswered are replaced) and asks for a release (`release_stalled`), the
//!   first one targeted unless sending wide. Releases without progress back off (1, 2,
//!   4 ... [`STALL_WAIT_MAX`]) so a leader cut off from its quorum does not flood.
//! - Deferred release: under light loss the first release of a stalled commit waits for
//!   [`Settings::stall_defer`], because the next put's Appends, which carry every entry a
//!   follower left unanswered, usually commit the stalled entry first at no extra
//!   datagram. Not after a leader change (kills and partitions bring their own slow
//!   requests).
//! - Wide sending and a precise stall timer under heavy loss, decided by the drop rate
//!   estimated from sequence numbers ([`crate::loss`]), or before there is an estimate by
//!   the running rate of stalled commits.
//!
//! Time comes in as arguments, so all of this is tested without a clock.

use crate::settings::Settings;
use kv_raft::{Index, Role, Term};
use kv_shared::NodeId;
use std::time::{Duration, Instant};

/// The longest wait between two stall releases.
pub const STALL_WAIT_MAX: Duration = Duration::from_millis(500);

/// How long a new leader sends everything to everyone before holding anything: its first
/// Appends tell every follower who leads (kv-raft's `lazy_grace_ticks`).
pub const LEADER_GRACE: Duration = Duration::from_millis(200);

/// Weight of the newest commit in [`StallTimer`]'s running stall rate.
const STALL_RATE_WEIGHT: f64 = 1.0 / 16.0;

/// Above this running fraction of commits that stalled (for `stall`), the leader sends
/// new entries to every follower at once: at 30% loss three puts in four miss one of
/// two fast acknowledgements, while any two of four arrive two times in three. (At 10%
/// loss a third of the puts stall with two fast followers, at 15% half.)
pub const WIDE_ENTER_STALL_RATE: f64 = 0.6;

/// The stall rate a replica starts from: halfway, so that a leader elected under heavy
/// loss goes wide after a few stalled commits, while one without loss stays narrow.
pub const STALL_RATE_INITIAL: f64 = 0.5;

/// Below this stall rate a leader sending to everyone goes back to `quorum - 1` fast
/// followers. Sending wide stalls far less (a third of the commits at 30% loss, 7% at
/// 15%), hence the gap.
pub const WIDE_LEAVE_STALL_RATE: f64 = 0.2;

/// Measured loss (see [`crate::loss`]) at or above which a leader sends wide and times
/// stall releases precisely. With two fast followers a put stalls with probability
/// 1 - (1-d)^4: 34% at d = 10%, 48% at 15%, so at 15% the median request sits on the
/// edge between first-try commits (under 1 ms) and releases (4-9 ms with the coarse
/// timer), and which side it lands on is chance. Sent wide, a put commits at once 93% of
/// the time at 15% (81% with one follower dead). At 10% narrow stays cheaper in
/// datagrams, which unreliable-2's budget needs.
pub const WIDE_ENTER_LOSS: f64 = 0.13;

/// Measured loss below which a leader sending wide goes back to `quorum - 1` fast
/// followers; the gap keeps an estimate near the threshold from flapping.
pub const WIDE_LEAVE_LOSS: f64 = 0.11;

/// A follower that has not answered this leader for this long is taken for dead or cut
/// off (kv-raft's `silent_follower_ticks`): it is no fast follower, gets no stall
/// releases and no heartbeat resends, only its heartbeat (which carries what it lacks)
/// until it answers again. Killed replicas stay destinations, and sending wide to one
/// would cost a datagram per put for the rest of the run. A live follower sent wide
/// Appends answers many times a second; a lazy one answers a heartbeat a second, and at
/// 10% loss three in a row go unanswered about once in 150 seconds.
pub const SILENT_AFTER: Duration = Duration::from_secs(3);

/// Weight of the newest commit in the slower running stall rate that decides deferral
/// ([`Settings::stall_defer`]). With two fast followers a put stalls with probability
/// 1 - (1-d)^4: 19% at d = 5% loss, 34% at 10%, 48% at 15%. Deferred puts wait for the
/// next put (tens of ms), which leaves the median alone only while clearly fewer than
/// half the requests are slow; at 15% loss with leader kills, the elections' slow
/// requests add to the deferred ones. At weight 1/64 the rate's standard deviation is
/// about 0.04, so a 42% bound defers at 10% loss and not at 15%.
const DEFER_RATE_WEIGHT: f64 = 1.0 / 64.0;

/// The parts of the Raft status the timer needs, read after each round of input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct View {
    /// This replica's role.
    pub role: Role,
    /// Its term.
    pub term: Term,
    /// Commit index.
    pub commit: Index,
    /// Last log index.
    pub last_index: Index,
    /// The leader this replica believes in, if any.
    pub leader: Option<NodeId>,
}

/// What the runtime asks of kv-raft now (`NodeCore::note_stall`,
/// `NodeCore::release_stalled`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StallAction {
    /// Nothing is due.
    Wait,
    /// The commit stalled but its release is deferred: note the stall only.
    Note,
    /// Release the stalled commit, to as many followers as it lacks (`targeted`) or to
    /// everyone.
    Release {
        /// Only as many followers as the commit lacks acknowledgements.
        targeted: bool,
    },
}

/// The stall clock and the wide-sending decision of one replica.
#[derive(Debug)]
pub struct StallTimer {
    settings: Settings,
    /// The term this replica leads in, if it leads.
    leading: Option<Term>,
    last_commit: Index,
    uncommitted_since: Option<Instant>,
    /// Wait before the next stall release; doubles after each release without commit
    /// progress (a leader cut off from its quorum must not flood the network).
    stall_wait: Duration,
    /// A stall release happened since the commit index last moved.
    released: bool,
    /// The commit has stalled (for [`Settings::stall`]) since it last moved, released
    /// or not: the sample of the stall rate.
    overdue: bool,
    /// Running fraction of commits that stalled for `stall`, released or deferred (an
    /// estimate of loss).
    stall_rate: f64,
    /// The same, averaged over more commits: decides deferral.
    defer_rate: f64,
    /// Every follower is fast (heavy loss; see [`WIDE_ENTER_LOSS`] and
    /// [`WIDE_ENTER_STALL_RATE`]).
    wide: bool,
    /// The measured drop rate, once known (see [`crate::loss`]).
    loss: Option<f64>,
    /// The first leader this replica knew.
    first_leader: Option<NodeId>,
    /// This replica has since believed in another leader, or in none (a kill or a
    /// partition): no deferral from then on. Runs with kills and partitions already have
    /// slow requests (those waiting out an election), and deferred puts on top of them
    /// can carry the median latency into the slow ones; runs without them keep deferring.
    leader_changed: bool,
}

impl StallTimer {
    /// A timer with nothing stalled yet.
    pub fn new(settings: Settings) -> StallTimer {
        StallTimer {
            settings,
            leading: None,
            last_commit: 0,
            uncommitted_since: None,
            stall_wait: Duration::ZERO,
            released: false,
            overdue: false,
            stall_rate: STALL_RATE_INITIAL,
            defer_rate: STALL_RATE_INITIAL,
            wide: false,
            loss: None,
            first_leader: None,
            leader_changed: false,
        }
    }

    /// Takes in the measured drop rate (see [`crate::loss`]). Once it is known it alone
    /// decides wide sending; before, the stall rate does.
    pub fn set_loss(&mut self, loss: Option<f64>) {
        self.loss = loss;
        match loss {
            Some(l) if l >= WIDE_ENTER_LOSS => self.wide = true,
            Some(l) if l < WIDE_LEAVE_LOSS => self.wide = false,
            _ => {}
        }
    }

    /// Whether stall releases should leave on time to the microsecond rather than the
    /// scheduler tick: while sending wide (heavy loss), where a release is worth its
    /// datagrams and its delay is the median latency.
    pub fn precise_timing(&self) -> bool {
        self.wide
    }

    /// Whether every follower should be fast (heavy loss; kv-raft's `set_send_wide`).
    /// Every heartbeat should then go (kv-raft's suppression off): the lease needs their
    /// echoes, and no lazy follower is left to give them.
    pub fn sending_wide(&self) -> bool {
        self.wide
    }

    /// Takes in the Raft status after a round of input.
    pub fn observe(&mut self, view: View, now: Instant) {
        match self.first_leader {
            None => self.first_leader = view.leader,
            Some(first) if view.leader != Some(first) => self.leader_changed = true,
            Some(_) => {}
        }
        let leading = (view.role == Role::Leader).then_some(view.term);
        if leading != self.leading {
            self.leading = leading;
            self.uncommitted_since = None;
        }
        if view.commit != self.last_commit {
            self.stall_wait = self.settings.stall;
            if self.leading.is_some() && view.commit > self.last_commit {
                let sample = if self.overdue { 1.0 } else { 0.0 };
                self.stall_rate += (sample - self.stall_rate) * STALL_RATE_WEIGHT;
                self.defer_rate += (sample - self.defer_rate) * DEFER_RATE_WEIGHT;
                if self.loss.is_none() {
                    if self.stall_rate > WIDE_ENTER_STALL_RATE {
                        self.wide = true;
                    } else if self.stall_rate < WIDE_LEAVE_STALL_RATE {
                        self.wide = false;
                    }
                }
            }
            self.released = false;
            self.overdue = false;
        }
        if view.last_index <= view.commit {
            self.uncommitted_since = None;
        } else if view.commit != self.last_commit || self.uncommitted_since.is_none() {
            self.uncommitted_since = Some(now);
        }
        self.last_commit = view.commit;
    }

    /// What is due at `now` for a stalled commit. The first release after progress is
    /// targeted (unless sending wide); later ones go to everyone, each after twice the
    /// previous wait, up to [`STALL_WAIT_MAX`].
    pub fn due(&mut self, now: Instant) -> StallAction {
        let Some(since) = self.uncommitted_since else {
            return StallAction::Wait;
        };
        let wait = self.stall_wait.max(self.settings.stall);
        if self.leading.is_none() || now.saturating_duration_since(since) < wait {
            return StallAction::Wait;
        }
        let first_note = !self.overdue;
        self.overdue = true;
        if now < self.release_at(since) {
            return if first_note {
                StallAction::Note
            } else {
                StallAction::Wait
            };
        }
        self.uncommitted_since = Some(now);
        self.stall_wait = (wait * 2).min(STALL_WAIT_MAX);
        // Under heavy loss a targeted resend fails half the time and costs a doubled
        // stall period: resend to everyone at once.
        let targeted = !self.released && !self.wide;
        self.released = true;
        StallAction::Release { targeted }
    }

    /// Whether the first release of a stall waits for [`Settings::stall_defer`]: only
    /// narrow (once loss is measured, narrow means light loss; before, the slow stall
    /// rate stands in for it, see [`DEFER_RATE_WEIGHT`]) and before any leader change.
    /// The Appends of the next put go to the fast followers with every entry they left
    /// unanswered, so their acknowledgements commit the stalled entry too; a release
    /// would cost a datagram and its acknowledgement for an entry whose acknowledgement
    /// alone may have been lost. The stall rate is only a stand-in until the drop rate
    /// is known: acknowledgements slowed by CPU load also count as stalls, so near its
    /// bound it would defer erratically.
    fn deferring(&self) -> bool {
        !self.released && self.defers_first_release()
    }

    /// Whether this replica leads and a stalled commit's first release would wait for
    /// [`Settings::stall_defer`] now ([`StallTimer::deferring`] before a release): a put
    /// of this leader can then stay uncommitted at the leader, though a quorum has it,
    /// for up to that long. Peers are told (`doubt.rs` decides by it whether a put this
    /// leader may not have answered is presumed answered).
    pub fn defers_first_release(&self) -> bool {
        self.leading.is_some()
            && !self.wide
            && !self.leader_changed
            && (self.loss.is_some()
                || self.defer_rate * 100.0 < f64::from(self.settings.stall_defer_rate_max_percent))
            && self.settings.stall_defer > self.settings.stall
    }

    /// When the next stall release is due for a stall (re)counted from `since`.
    fn release_at(&self, since: Instant) -> Instant {
        if self.deferring() {
            since + self.settings.stall_defer
        } else {
            since + self.stall_wait.max(self.settings.stall)
        }
    }

    /// When [`StallTimer::due`] next has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        let since = self.uncommitted_since.filter(|_| self.leading.is_some())?;
        // The stall is noted after `stall` (the stall rate's sample) even while the
        // release is deferred.
        Some(if self.overdue {
            self.release_at(since)
        } else {
            since + self.stall_wait.max(self.settings.stall)
        })
    }
}

/// Whether a leader should resend unechoed heartbeats (kv-raft's
/// `heartbeat_resend_ticks`, switched by the runtime) at drop rate `loss` (the estimate
/// of [`crate::loss`]):
/// while it is unknown (a run's first seconds, when heartbeats are all the traffic) or
/// heavy (see [`WIDE_ENTER_LOSS`]). At 30% loss a follower that misses two or three
/// heartbeats in a row starts an election before any put flows, and the others, having
/// missed theirs too, grant it. Without loss every echo comes back and nothing is
/// resent; under light loss a missed heartbeat or two cost nothing, since the followers
/// that heard the leader refuse a PreVote.
pub fn wants_heartbeat_resends(loss: Option<f64>) -> bool {
    loss.is_none_or(|l| l >= WIDE_ENTER_LOSS)
}

#[cfg(test)]
#[path = "stall_tests.rs"]
mod tests;
