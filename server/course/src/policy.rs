//! Course mode's send policy: which Raft messages leave now and which wait. It exists
//! because the course counts every replica-bound datagram, and Raft as written sends every
//! append to every follower.
//!
//! kv-raft has a native version of retransmission (`retransmit_ticks` with
//! `retransmit_backoff_ticks_max`); course mode does not use it yet (docs/COURSE_MODE.md,
//! "What is not kv-raft's own yet"): its periods are below the 10 ms tick, and the
//! targeted release, loss-driven widening and deferral have no kv-raft counterpart. The
//! leader lease for gets (`lease_reads`), vote resends (`Raft::resend_vote_requests`,
//! timed by [`crate::vote_resend`]), heartbeat resends (`heartbeat_resend_ticks`,
//! switched by [`wants_heartbeat_resends`]) and heartbeat suppression
//! (`heartbeat_suppression` with `heartbeat_suppression_strict`, switched off while
//! [`SendPolicy::sending_wide`]) are kv-raft's own.
//!
//! - Lazy followers: a leader needs acknowledgements from `quorum - 1` followers to
//!   commit, so it sends appends at once only to that many ("fast" followers). Appends to
//!   the others are held and go out with their next heartbeat, or as soon as a commit has
//!   stalled for [`Settings::stall`] (a dropped datagram or a dead fast follower), after
//!   which a fast follower that did not answer is replaced. Holding a message is no
//!   different, to Raft, from a slow network.
//! - Deferred release: under light loss the first release of a stalled commit waits for
//!   [`Settings::stall_defer`], because the next put's appends, which carry every append a
//!   follower left unanswered, usually commit the stalled entry first at no extra datagram.
//!   Not after a leader change (kills and partitions bring their own slow requests).
//! - Wide sending and a precise stall timer under heavy loss, decided by the drop rate
//!   measured from sequence numbers ([`crate::loss`]).
//! - Silent followers (dead or cut off) get only their heartbeats (and, from kv-raft's
//!   `silent_follower_ticks`, no heartbeat resends).
//!
//! Commit piggybacking is kv-raft's own (`broadcast_commit` off): a leader then sends no
//! append without entries that a follower could as well learn from its next append or
//! heartbeat, so a fast follower gets every message at once.
//!
//! Time comes in as arguments, so all of this is tested without a clock.

use crate::settings::Settings;
use kv_node::GroupMessage;
use kv_raft::{Index, MessageBody, Role, Term};
use kv_shared::NodeId;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Most messages held for one lazy follower before they are sent anyway.
pub const HELD_MESSAGES_MAX: usize = 256;

/// The longest wait between two stall releases.
pub const STALL_WAIT_MAX: Duration = Duration::from_millis(500);

/// How long a new leader sends everything to everyone before holding anything: its first
/// appends tell every follower who leads.
pub const LEADER_GRACE: Duration = Duration::from_millis(200);

/// Weight of the newest commit in [`SendPolicy`]'s running stall rate.
const STALL_RATE_WEIGHT: f64 = 1.0 / 16.0;

/// Above this running fraction of commits that stalled (for `stall`), the leader sends
/// new appends to every follower at once: at 30% loss three puts in four miss one of
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
/// off: it gets no appends of its own and no stall releases, only its heartbeat (which
/// carries what it lacks) until it answers again. Killed replicas stay destinations, and
/// sending wide to one would cost a datagram per put for the rest of the run. A live
/// follower sent wide appends answers many times a second; a lazy one answers a
/// heartbeat a second, and at 10% loss three in a row go unanswered about once in 150
/// seconds.
pub const SILENT_AFTER: Duration = Duration::from_secs(3);

/// Weight of the newest commit in the slower running stall rate that decides deferral
/// ([`Settings::stall_defer`]). With two fast followers a put stalls with probability
/// 1 - (1-d)^4: 19% at d = 5% loss, 34% at 10%, 48% at 15%. Deferred puts wait for the
/// next put (tens of ms), which leaves the median alone only while clearly fewer than
/// half the requests are slow; at 15% loss with leader kills, the elections' slow
/// requests add to the deferred ones. At weight 1/64 the rate's standard deviation is
/// about 0.04, so a 42% bound defers at 10% loss and not at 15%.
const DEFER_RATE_WEIGHT: f64 = 1.0 / 64.0;

/// The parts of the Raft status the policy needs, read after each round of input.
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

#[derive(Debug, Default)]
struct Peer {
    held: Vec<GroupMessage>,
    /// Last acknowledgement (AppendResp / HeartbeatResp) addressed to us: its term and
    /// when it arrived.
    ack: Option<(Term, Instant)>,
    /// Oldest append sent since the peer last answered one.
    unacked_since: Option<Instant>,
    /// Copies of the appends with entries sent since the peer last answered one, to
    /// resend when a commit stalls (a duplicate append is harmless to Raft).
    unacked: Vec<GroupMessage>,
}

/// Leadership as this policy tracks it.
#[derive(Debug)]
struct Leadership {
    term: Term,
    since: Instant,
}

/// The send policy of one replica.
#[derive(Debug)]
pub struct SendPolicy {
    settings: Settings,
    me: NodeId,
    quorum: usize,
    peers: BTreeMap<NodeId, Peer>,
    leading: Option<Leadership>,
    fast: Vec<NodeId>,
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

impl SendPolicy {
    /// A policy for `me` in a group of `members` (which includes `me`).
    pub fn new(settings: Settings, me: NodeId, members: &[NodeId]) -> SendPolicy {
        let peers = members
            .iter()
            .filter(|&&m| m != me)
            .map(|&m| (m, Peer::default()))
            .collect();
        SendPolicy {
            settings,
            me,
            quorum: members.len() / 2 + 1,
            peers,
            leading: None,
            fast: Vec::new(),
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

    /// Whether every follower is fast (heavy loss). Every heartbeat should then go
    /// (kv-raft's suppression off): the lease needs their echoes, and no lazy follower
    /// is left to give them.
    pub fn sending_wide(&self) -> bool {
        self.wide
    }

    /// Notes acknowledgements among messages just received from `from`.
    pub fn on_inbound(&mut self, from: NodeId, msgs: &[GroupMessage], now: Instant) {
        let Some(peer) = self.peers.get_mut(&from) else {
            return;
        };
        for gm in msgs.iter().filter(|gm| gm.msg.to == self.me) {
            match gm.msg.body {
                MessageBody::AppendResp { .. } => {
                    peer.ack = Some((gm.msg.term, now));
                    peer.unacked_since = None;
                    peer.unacked.clear();
                }
                MessageBody::HeartbeatResp { .. } => {
                    peer.ack = Some((gm.msg.term, now));
                }
                _ => {}
            }
        }
    }

    /// Takes in the Raft status after a round of input (before routing its output).
    pub fn observe(&mut self, view: View, now: Instant) {
        match self.first_leader {
            None => self.first_leader = view.leader,
            Some(first) if view.leader != Some(first) => self.leader_changed = true,
            Some(_) => {}
        }
        if view.role == Role::Leader {
            if self.leading.as_ref().map(|l| l.term) != Some(view.term) {
                self.leading = Some(Leadership {
                    term: view.term,
                    since: now,
                });
                self.fast.clear();
                self.drop_held();
                self.uncommitted_since = None;
            }
        } else if self.leading.take().is_some() {
            self.fast.clear();
            self.drop_held();
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

    fn drop_held(&mut self) {
        for p in self.peers.values_mut() {
            p.held.clear();
            p.unacked_since = None;
            p.unacked.clear();
        }
    }

    fn lazy_active(&self, now: Instant) -> bool {
        self.settings.lazy_followers
            && self
                .leading
                .as_ref()
                .is_some_and(|l| now.saturating_duration_since(l.since) >= LEADER_GRACE)
    }

    fn stale(&self, peer: &Peer, now: Instant) -> bool {
        peer.unacked_since
            .is_some_and(|t| now.saturating_duration_since(t) >= self.settings.stall)
    }

    /// True if `peer` has not answered this leader for [`SILENT_AFTER`].
    fn silent(&self, peer: &Peer, now: Instant) -> bool {
        let Some(leading) = &self.leading else {
            return false;
        };
        let heard = match peer.ack {
            Some((term, at)) if term == leading.term => at.max(leading.since),
            _ => leading.since,
        };
        now.saturating_duration_since(heard) >= SILENT_AFTER
    }

    /// Keeps `quorum - 1` fast followers, replacing any that left an append unanswered for
    /// longer than the stall time by the followers that answered most recently.
    /// Under heavy loss (see [`WIDE_ENTER_LOSS`]) every follower that is not silent is
    /// fast.
    fn refresh_fast(&mut self, now: Instant) {
        let want = if self.wide {
            let answering = self.peers.values().filter(|p| !self.silent(p, now)).count();
            answering.max(self.quorum - 1)
        } else {
            self.quorum - 1
        };
        let healthy =
            self.fast.len() == want && self.fast.iter().all(|id| !self.stale(&self.peers[id], now));
        if healthy {
            return;
        }
        let term = self.leading.as_ref().map(|l| l.term);
        let mut ranked: Vec<(bool, bool, Option<Instant>, NodeId)> = self
            .peers
            .iter()
            .map(|(&id, p)| {
                let ack = p.ack.filter(|(t, _)| Some(*t) == term).map(|(_, at)| at);
                (self.silent(p, now), self.stale(p, now), ack, id)
            })
            .collect();
        // Not silent, not stale first, then the most recent acknowledgement, then the
        // lowest id.
        ranked.sort_by(|a, b| {
            (a.0, a.1)
                .cmp(&(b.0, b.1))
                .then(b.2.cmp(&a.2))
                .then(a.3.cmp(&b.3))
        });
        self.fast = ranked.into_iter().take(want).map(|r| r.3).collect();
    }

    /// Decides what of `msgs` (bound for `dst`) leaves now; the rest is held.
    pub fn route(
        &mut self,
        dst: NodeId,
        msgs: Vec<GroupMessage>,
        now: Instant,
    ) -> Vec<GroupMessage> {
        if !self.peers.contains_key(&dst) {
            return msgs;
        }
        if !self.lazy_active(now) {
            self.note_sent(dst, &msgs, now);
            return msgs;
        }
        self.refresh_fast(now);
        let fast = self.fast.contains(&dst);
        let peer = self.peers.get_mut(&dst).expect("known peer");
        let mut out = std::mem::take(&mut peer.held);
        out.extend(msgs);
        if !fast && out.len() < HELD_MESSAGES_MAX && out.iter().all(|gm| holdable(&gm.msg.body)) {
            peer.held = out;
            return Vec::new();
        }
        // A datagram that carries appends also carries the ones the follower has not
        // answered: if one of those was lost, the newer appends alone would be refused
        // (log mismatch) and cost a refusal and a repair round trip, two datagrams more.
        // Bytes are free here, datagrams are not.
        if out.iter().any(|gm| is_append(&gm.msg.body)) {
            let mut resend = std::mem::take(&mut peer.unacked);
            resend.append(&mut out);
            out = resend;
        }
        in_log_order(&mut out);
        self.note_sent(dst, &out, now);
        out
    }

    fn note_sent(&mut self, dst: NodeId, msgs: &[GroupMessage], now: Instant) {
        let Some(p) = self.peers.get_mut(&dst) else {
            return;
        };
        for gm in msgs {
            if let MessageBody::Append { entries, .. } = &gm.msg.body {
                p.unacked_since.get_or_insert(now);
                if !entries.is_empty() && p.unacked.len() < HELD_MESSAGES_MAX {
                    p.unacked.push(gm.clone());
                }
            }
        }
    }

    /// When a commit has stalled, sends what the commit lacks. The first release after
    /// progress is targeted (unless sending wide): one follower per missing acknowledgement, preferring those
    /// with held appends (they need them anyway) over resending to a silent fast one.
    /// Later releases send every held message and resend every append still unanswered,
    /// so that any quorum of followers that can be reached makes the commit. Consecutive
    /// releases without commit progress back off exponentially up to [`STALL_WAIT_MAX`].
    pub fn release_if_stalled(&mut self, now: Instant) -> Vec<(NodeId, Vec<GroupMessage>)> {
        let Some(since) = self.uncommitted_since else {
            return Vec::new();
        };
        let wait = self.stall_wait.max(self.settings.stall);
        if self.leading.is_none() || now.saturating_duration_since(since) < wait {
            return Vec::new();
        }
        self.overdue = true;
        if now < self.release_at(since) {
            return Vec::new();
        }
        self.uncommitted_since = Some(now);
        self.stall_wait = (wait * 2).min(STALL_WAIT_MAX);
        // Under heavy loss a targeted resend fails half the time and costs a doubled
        // stall period: resend to everyone at once.
        let targets = if self.released || self.wide {
            None
        } else {
            self.targets(now)
        };
        self.released = true;
        let silent: Vec<NodeId> = self
            .peers
            .iter()
            .filter(|(_, p)| self.silent(p, now))
            .map(|(&id, _)| id)
            .collect();
        let mut out = Vec::new();
        for (&id, p) in self.peers.iter_mut() {
            if targets.as_ref().is_some_and(|t| !t.contains(&id)) || silent.contains(&id) {
                continue;
            }
            let mut msgs = std::mem::take(&mut p.unacked);
            msgs.append(&mut p.held);
            in_log_order(&mut msgs);
            if !msgs.is_empty() {
                out.push((id, msgs));
            }
        }
        for (id, msgs) in &out {
            self.note_sent(*id, msgs, now);
        }
        out
    }

    /// Whether the first release of a stall waits for [`Settings::stall_defer`]: only
    /// narrow (once loss is measured, narrow means light loss; before, the slow stall
    /// rate stands in for it, see [`DEFER_RATE_WEIGHT`]) and before any leader change.
    /// The appends of the next put go to the fast followers with every append they left
    /// unanswered, so their acknowledgements commit the stalled entry too; a release
    /// would cost a datagram and its acknowledgement for an entry whose acknowledgement
    /// alone may have been lost. The stall rate is only a stand-in until the drop rate
    /// is known: acknowledgements slowed by CPU load also count as stalls, so near its
    /// bound it would defer erratically.
    fn deferring(&self) -> bool {
        !self.released
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

    /// The followers a first release goes to, or None for everyone: as many as the
    /// commit lacks acknowledgements (fast followers with nothing unanswered count as
    /// acknowledged), held appends first, then the most recently heard.
    fn targets(&self, now: Instant) -> Option<Vec<NodeId>> {
        let acked = self
            .fast
            .iter()
            .filter(|id| self.peers[*id].unacked.is_empty())
            .count();
        let need = (self.quorum - 1).saturating_sub(acked).max(1);
        let mut ranked: Vec<(bool, bool, Option<Instant>, NodeId)> = self
            .peers
            .iter()
            .filter(|(id, p)| {
                let acked = self.fast.contains(id) && p.unacked.is_empty();
                let nothing_to_send = p.held.is_empty() && p.unacked.is_empty();
                !(acked || nothing_to_send || self.silent(p, now))
            })
            .map(|(&id, p)| {
                (
                    p.held.is_empty(),
                    self.stale(p, now),
                    p.ack.map(|a| a.1),
                    id,
                )
            })
            .collect();
        // Held appends first, then not stale, then the most recent acknowledgement.
        ranked.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)).then(b.2.cmp(&a.2)));
        if ranked.len() <= need {
            return None;
        }
        Some(ranked.into_iter().take(need).map(|r| r.3).collect())
    }

    /// When [`SendPolicy::release_if_stalled`] next has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        let stall = self.uncommitted_since.filter(|_| {
            self.leading.is_some()
                && self
                    .peers
                    .values()
                    .any(|p| !p.held.is_empty() || !p.unacked.is_empty())
        });
        // The stall is noted after `stall` (the stall rate's sample) even while the
        // release is deferred.
        stall.map(|since| {
            let noted = since + self.stall_wait.max(self.settings.stall);
            if self.overdue {
                self.release_at(since)
            } else {
                noted
            }
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

fn is_append(body: &MessageBody) -> bool {
    matches!(body, MessageBody::Append { .. })
}

/// Puts the appends of one datagram first, in log order and without repeats, the other
/// messages after them in the order they came. A follower handles a datagram's messages
/// in order, and refuses an append whose previous entry it lacks: resent appends queued
/// behind newer ones would each be refused (and repaired with another round trip).
fn in_log_order(msgs: &mut Vec<GroupMessage>) {
    let (mut appends, others): (Vec<_>, Vec<_>) = std::mem::take(msgs)
        .into_iter()
        .partition(|gm| is_append(&gm.msg.body));
    // Stable: appends from the same point keep the order the core gave them.
    appends.sort_by_key(|gm| match &gm.msg.body {
        MessageBody::Append { prev_index, .. } => *prev_index,
        _ => 0,
    });
    // At most HELD_MESSAGES_MAX appends or so: quadratic is fine.
    for gm in appends {
        if !msgs.contains(&gm) {
            msgs.push(gm);
        }
    }
    msgs.extend(others);
}

/// Messages a lazy follower can wait for: appends. Anything else (its heartbeat, a
/// ReadIndex round, a snapshot chunk, TimeoutNow) goes at once and carries the held
/// appends with it, so a lazy follower catches up once per heartbeat interval.
fn holdable(body: &MessageBody) -> bool {
    matches!(body, MessageBody::Append { .. })
}

#[cfg(test)]
mod tests;
