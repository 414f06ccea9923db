//! Course mode's send policy: which Raft messages leave now and which wait. It exists
//! because the course counts every replica-bound datagram, and Raft as written sends every
//! append to every follower.
//!
//! kv-raft has native versions of these behaviours (`eager_followers`, `retransmit_ticks`,
//! `heartbeat_suppression`); course mode does not use them, because at 30% loss and with
//! dead or cut-off followers they cost more (docs/COURSE_MODE.md, "Why the policy is
//! not kv-raft's own"): native retransmission repeats every `retransmit_ticks` without
//! back-off, so a period short enough for loss (a few ms) floods dead and cut-off
//! followers, and native suppression counts an append this policy holds as contact.
//! The leader lease for gets is kv-raft's own (`lease_reads`).
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
//! - Silent followers (dead or cut off) get only their heartbeats.
//! - Commit piggybacking: an append without entries only spreads a new commit index; a
//!   fast follower gets it with its next append or heartbeat, not in a datagram of its own.
//! - Heartbeat suppression: a fast follower that acknowledged an append within the last
//!   heartbeat interval does not need the heartbeat (the append reset its election timer
//!   and its acknowledgement counts for CheckQuorum). Heartbeats go to every follower
//!   while gets wait for a ReadIndex round: their echoes are what confirms the reads.
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
    /// Last time an append went to this peer.
    append_sent: Option<Instant>,
    /// Oldest append sent since the peer last answered one.
    unacked_since: Option<Instant>,
    /// Copies of the appends with entries sent since the peer last answered one, to
    /// resend when a commit stalls (a duplicate append is harmless to Raft).
    unacked: Vec<GroupMessage>,
    /// The PreVote or Vote request last sent to this peer and not answered yet.
    vote_ask: Option<Ask>,
    /// The heartbeat last sent to this peer and not echoed yet (see
    /// [`SendPolicy::resends_heartbeats`]).
    beat_ask: Option<Ask>,
}

/// An unanswered vote request or heartbeat, resent a few times under loss.
/// - A candidate needs answers from a quorum, and one lost datagram otherwise costs a
///   whole election timeout. Asking again is harmless: a PreVote changes nothing, and a
///   voter grants a Vote again to the candidate it already voted for in that term.
/// - A follower that misses two or three heartbeats in a row starts an election; at 30%
///   loss, before any put flows, the others have often missed them too and grant it.
///   A repeated heartbeat is harmless: it carries the same read round, whose lease counts
///   from the first copy's send, and a follower's promise not to vote counts from when it
///   hears a copy, so later.
#[derive(Debug)]
struct Ask {
    msg: GroupMessage,
    /// When it was (re)sent last.
    sent: Instant,
    /// Resends so far.
    resends: u32,
}

/// First wait before a vote request or heartbeat is resent (a harness round trip is
/// ~0.5 ms); it doubles with each resend.
pub const RESEND_FIRST: Duration = Duration::from_millis(5);

/// Resends of one vote request or heartbeat at most (5, 10, 20 ms): a dead or cut-off
/// peer costs three more datagrams per election round, and at 30% loss a peer that
/// answers is missed by all four tries 7% of the time instead of 51%.
pub const RESENDS_MAX: u32 = 3;

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
                    peer.beat_ask = None;
                }
                MessageBody::PreVoteResp { .. } | MessageBody::VoteResp { .. } => {
                    peer.vote_ask = None;
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
        if !matches!(view.role, Role::PreCandidate | Role::Candidate) {
            for p in self.peers.values_mut() {
                p.vote_ask = None;
            }
        }
        if view.role != Role::Leader {
            for p in self.peers.values_mut() {
                p.beat_ask = None;
            }
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
    /// `reads_waiting`: gets wait for a ReadIndex round (every heartbeat then goes out).
    pub fn route(
        &mut self,
        dst: NodeId,
        msgs: Vec<GroupMessage>,
        reads_waiting: bool,
        now: Instant,
    ) -> Vec<GroupMessage> {
        let Some(peer) = self.peers.get_mut(&dst) else {
            return msgs;
        };
        if let Some(gm) = msgs.iter().rev().find(|gm| {
            matches!(
                gm.msg.body,
                MessageBody::PreVote { .. } | MessageBody::Vote { .. }
            )
        }) {
            peer.vote_ask = Some(Ask {
                msg: gm.clone(),
                sent: now,
                resends: 0,
            });
        }
        if !self.lazy_active(now) {
            self.note_sent(dst, &msgs, now);
            return msgs;
        }
        self.refresh_fast(now);
        let heartbeat_interval = self.settings.heartbeat_interval();
        let suppress = self.settings.suppress_heartbeats;
        let fast = self.fast.contains(&dst);
        let peer = self.peers.get_mut(&dst).expect("known peer");
        let mut out = std::mem::take(&mut peer.held);
        // Sending wide (heavy loss), every heartbeat goes: the lease needs their echoes,
        // and no lazy follower is left to give them.
        let skip_heartbeats = fast
            && suppress
            && !self.wide
            && !reads_waiting
            && peer.unacked_since.is_none()
            && peer
                .append_sent
                .is_some_and(|t| now.saturating_duration_since(t) < heartbeat_interval);
        out.extend(msgs.into_iter().filter(|gm| {
            // With lease reads every heartbeat carries a read round (its echo renews the
            // lease); the lazy followers' echoes renew it while the fast ones are busy.
            !(skip_heartbeats && matches!(gm.msg.body, MessageBody::Heartbeat { .. }))
        }));
        let may_wait = |body: &MessageBody| {
            if fast {
                commit_only(body)
            } else {
                holdable(body)
            }
        };
        if out.len() < HELD_MESSAGES_MAX && out.iter().all(|gm| may_wait(&gm.msg.body)) {
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
        // A silent follower (dead, most likely) gets its heartbeat once.
        let resend_beats =
            self.resends_heartbeats() && self.peers.get(&dst).is_some_and(|p| !self.silent(p, now));
        let Some(p) = self.peers.get_mut(&dst) else {
            return;
        };
        if resend_beats {
            if let Some(gm) = msgs
                .iter()
                .rev()
                .find(|gm| matches!(gm.msg.body, MessageBody::Heartbeat { .. }))
            {
                p.beat_ask = Some(Ask {
                    msg: gm.clone(),
                    sent: now,
                    resends: 0,
                });
            }
        }
        for gm in msgs {
            if let MessageBody::Append { entries, .. } = &gm.msg.body {
                p.append_sent = Some(now);
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

    /// Whether a leader resends unechoed heartbeats: while the drop rate is unknown (a
    /// run's first seconds, when heartbeats are all the traffic) or heavy (see
    /// [`WIDE_ENTER_LOSS`]). Without loss every echo comes back and nothing is resent;
    /// under light loss a missed heartbeat or two cost nothing, since the followers that
    /// heard the leader refuse a PreVote.
    fn resends_heartbeats(&self) -> bool {
        self.leading.is_some() && self.loss.is_none_or(|l| l >= WIDE_ENTER_LOSS)
    }

    /// Vote requests and heartbeats due for a resend (see [`Ask`]), while this replica
    /// still asks for votes or leads.
    pub fn resend_unanswered(&mut self, now: Instant) -> Vec<(NodeId, Vec<GroupMessage>)> {
        let mut out = Vec::new();
        for (&id, p) in self.peers.iter_mut() {
            for ask in [&mut p.vote_ask, &mut p.beat_ask] {
                let Some(a) = ask else {
                    continue;
                };
                if now < resend_at(a) {
                    continue;
                }
                a.sent = now;
                a.resends += 1;
                out.push((id, vec![a.msg.clone()]));
                if a.resends == RESENDS_MAX {
                    *ask = None;
                }
            }
        }
        out
    }

    /// When [`SendPolicy::release_if_stalled`] or [`SendPolicy::resend_unanswered`] next
    /// has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        let votes = self
            .peers
            .values()
            .flat_map(|p| [p.vote_ask.as_ref(), p.beat_ask.as_ref()])
            .flatten()
            .map(resend_at)
            .min();
        let stall = self.uncommitted_since.filter(|_| {
            self.leading.is_some()
                && self
                    .peers
                    .values()
                    .any(|p| !p.held.is_empty() || !p.unacked.is_empty())
        });
        // The stall is noted after `stall` (the stall rate's sample) even while the
        // release is deferred.
        let stall = stall.map(|since| {
            let noted = since + self.stall_wait.max(self.settings.stall);
            if self.overdue {
                self.release_at(since)
            } else {
                noted
            }
        });
        match (votes, stall) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

fn resend_at(ask: &Ask) -> Instant {
    ask.sent + RESEND_FIRST * 2u32.pow(ask.resends)
}

/// An append without entries: the leader spreading a new commit index (kv-raft sends one
/// to every follower each time the commit advances). A fast follower gets it with the
/// next append or heartbeat instead: doubling the datagrams of every put for a commit
/// index the follower does not need yet would double the message count.
fn commit_only(body: &MessageBody) -> bool {
    matches!(body, MessageBody::Append { entries, .. } if entries.is_empty())
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
mod tests {
    use super::*;
    use bytes::Bytes;
    use kv_raft::{Entry, EntryKind, Message};
    use kv_shared::ShardId;

    const ME: NodeId = NodeId(1);

    fn members() -> Vec<NodeId> {
        (1..=5).map(NodeId).collect()
    }

    fn policy() -> SendPolicy {
        SendPolicy::new(Settings::default(), ME, &members())
    }

    fn gm(from: NodeId, to: NodeId, term: u64, body: MessageBody) -> GroupMessage {
        GroupMessage {
            shard: ShardId(0),
            msg: Message {
                from,
                to,
                term,
                body,
            },
        }
    }

    fn append(to: NodeId, index: u64) -> GroupMessage {
        gm(
            ME,
            to,
            2,
            MessageBody::Append {
                prev_index: index - 1,
                prev_term: 2,
                entries: vec![Entry {
                    term: 2,
                    index,
                    kind: EntryKind::Command,
                    data: Bytes::from_static(b"x"),
                }],
                commit: index - 1,
            },
        )
    }

    fn heartbeat(to: NodeId, read_round: u64) -> GroupMessage {
        gm(
            ME,
            to,
            2,
            MessageBody::Heartbeat {
                commit: 1,
                read_round,
            },
        )
    }

    fn ack(from: NodeId, term: u64) -> GroupMessage {
        gm(
            from,
            ME,
            term,
            MessageBody::AppendResp {
                reject: false,
                index: 1,
                hint_index: 0,
                hint_term: 0,
            },
        )
    }

    fn leader(commit: u64, last_index: u64) -> View {
        View {
            role: Role::Leader,
            term: 2,
            commit,
            last_index,
            leader: Some(ME),
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// The default settings with `stall_defer` set (zero: no deferral).
    fn deferral(stall_defer: Duration) -> Settings {
        Settings {
            stall_defer,
            ..Settings::default()
        }
    }

    /// A leader past its grace period, with followers 2 and 3 having acknowledged last.
    fn settled(t0: Instant) -> (SendPolicy, Instant) {
        settled_with(Settings::default(), t0)
    }

    fn settled_with(settings: Settings, t0: Instant) -> (SendPolicy, Instant) {
        let mut p = SendPolicy::new(settings, ME, &members());
        p.observe(leader(1, 1), t0);
        let now = t0 + LEADER_GRACE;
        for (i, f) in [5, 4, 3, 2].into_iter().enumerate() {
            p.on_inbound(NodeId(f), &[ack(NodeId(f), 2)], now + ms(i as u64));
        }
        (p, now + ms(10))
    }

    #[test]
    fn a_new_leader_sends_to_everyone() {
        let t0 = Instant::now();
        let mut p = policy();
        p.observe(leader(0, 1), t0);
        for f in 2..=5 {
            assert_eq!(
                p.route(NodeId(f), vec![append(NodeId(f), 1)], false, t0)
                    .len(),
                1
            );
        }
    }

    #[test]
    fn appends_go_at_once_to_a_quorum_and_wait_for_the_rest() {
        let t0 = Instant::now();
        let (mut p, now) = settled(t0);
        p.observe(leader(1, 2), now);
        let sent: Vec<usize> = (2..=5)
            .map(|f| {
                p.route(NodeId(f), vec![append(NodeId(f), 2)], false, now)
                    .len()
            })
            .collect();
        assert_eq!(
            sent,
            vec![1, 1, 0, 0],
            "the two most recent ackers are fast"
        );
        // The next heartbeat to a lazy follower carries what it missed.
        let out = p.route(NodeId(4), vec![heartbeat(NodeId(4), 0)], false, now + ms(1));
        assert_eq!(out.len(), 2);
        assert!(matches!(out[0].msg.body, MessageBody::Append { .. }));
    }

    #[test]
    fn a_stalled_commit_releases_held_appends_and_replaces_the_silent_follower() {
        let t0 = Instant::now();
        let (mut p, now) = settled(t0);
        p.observe(leader(1, 2), now);
        append_to_all(&mut p, 2, now);
        let stall = Settings::default().stall;
        assert_eq!(p.next_deadline(), Some(now + stall));
        assert!(p.release_if_stalled(now + stall / 2).is_empty(), "not yet");
        // Follower 3 answers, follower 2 does not: the commit stalls.
        p.on_inbound(NodeId(3), &[ack(NodeId(3), 2)], now + stall / 2);
        let later = now + stall;
        let ids = |r: Vec<(NodeId, Vec<GroupMessage>)>| {
            r.into_iter().map(|(id, _)| id).collect::<Vec<_>>()
        };
        assert_eq!(
            ids(p.release_if_stalled(later)),
            vec![NodeId(4)],
            "one acknowledgement is missing: the lazy follower heard last gets what was held"
        );
        assert!(
            p.release_if_stalled(later).is_empty(),
            "once per stall period"
        );
        // 4 answers; the next append skips the silent 2.
        p.on_inbound(NodeId(4), &[ack(NodeId(4), 2)], later + stall / 4);
        p.observe(leader(2, 3), later + stall / 4);
        let sent: Vec<usize> = (2..=5)
            .map(|f| {
                p.route(
                    NodeId(f),
                    vec![append(NodeId(f), 3)],
                    false,
                    later + stall / 2,
                )
                .len()
            })
            .collect();
        assert_eq!(sent, vec![0, 1, 1, 0]);
    }

    fn entry_ranges(msgs: &[GroupMessage]) -> Vec<(u64, u64)> {
        msgs.iter()
            .filter_map(|gm| match &gm.msg.body {
                MessageBody::Append {
                    prev_index,
                    entries,
                    ..
                } => Some((prev_index + 1, prev_index + entries.len() as u64)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn an_unanswered_append_rides_with_the_next_heartbeat() {
        let t0 = Instant::now();
        let (mut p, now) = settled(t0);
        p.observe(leader(1, 2), now);
        append_to_all(&mut p, 2, now);
        // 3 answers, 2 does not (its append or its acknowledgement was lost) and is
        // replaced by 4 once 4 has the entry too.
        p.on_inbound(NodeId(3), &[ack(NodeId(3), 2)], now + ms(1));
        p.on_inbound(NodeId(4), &[ack(NodeId(4), 2)], now + ms(5));
        p.observe(leader(2, 3), now + ms(60));
        let sent: Vec<bool> = (2..=5)
            .map(|f| {
                !p.route(NodeId(f), vec![append(NodeId(f), 3)], false, now + ms(60))
                    .is_empty()
            })
            .collect();
        assert_eq!(sent, vec![false, true, true, false]);
        let out = p.route(
            NodeId(2),
            vec![heartbeat(NodeId(2), 0)],
            false,
            now + ms(900),
        );
        assert_eq!(
            entry_ranges(&out),
            vec![(2, 2), (3, 3)],
            "without entry 2, 2 would refuse entry 3"
        );
        // Once 2 has answered, nothing is carried again.
        p.on_inbound(NodeId(2), &[ack(NodeId(2), 2)], now + ms(901));
        let out = p.route(
            NodeId(2),
            vec![heartbeat(NodeId(2), 0)],
            false,
            now + ms(1900),
        );
        assert_eq!(entry_ranges(&out), Vec::<(u64, u64)>::new());
    }

    #[test]
    fn a_release_sends_in_log_order() {
        let t0 = Instant::now();
        let (mut p, now) = settled(t0);
        // Fast follower 2 leaves entry 2 unanswered and is replaced; entry 3 is held for it.
        p.observe(leader(1, 2), now);
        append_to_all(&mut p, 2, now);
        let stall = Settings::default().stall;
        for f in [3, 4, 5] {
            p.on_inbound(NodeId(f), &[ack(NodeId(f), 2)], now + stall / 2);
        }
        p.observe(leader(2, 3), now + stall / 2);
        let later = now + stall * 2;
        append_to_all(&mut p, 3, later);
        let released = p.release_if_stalled(later + stall * 4);
        let to_2 = released
            .iter()
            .find(|(id, _)| *id == NodeId(2))
            .expect("2 owes answers");
        assert_eq!(entry_ranges(&to_2.1), vec![(2, 2), (3, 3)]);
    }

    /// The leader's append of entry `index` to each of followers 2..=5, routed at `now`.
    /// Stalls the commit of every entry in `indexes`: each is released (asserted), then
    /// acknowledged by every follower. Returns the time after the last.
    fn stall_every_commit(
        p: &mut SendPolicy,
        indexes: std::ops::Range<u64>,
        mut now: Instant,
    ) -> Instant {
        for i in indexes {
            p.observe(leader(i - 1, i), now);
            append_to_all(p, i, now);
            now = p.next_deadline().unwrap();
            assert!(!p.release_if_stalled(now).is_empty(), "released at {i}");
            for f in 2..=5 {
                p.on_inbound(NodeId(f), &[ack(NodeId(f), 2)], now);
            }
        }
        now
    }

    /// The followers a release due at `at` goes to.
    fn released_to(p: &mut SendPolicy, at: Instant) -> Vec<NodeId> {
        p.release_if_stalled(at)
            .into_iter()
            .map(|(id, _)| id)
            .collect()
    }

    fn append_to_all(p: &mut SendPolicy, index: u64, now: Instant) {
        for f in 2..=5 {
            p.route(NodeId(f), vec![append(NodeId(f), index)], false, now);
        }
    }

    /// Commits `n` puts, each acknowledged by the fast followers at once.
    fn commit_quickly(p: &mut SendPolicy, first: u64, n: u64, mut now: Instant) -> Instant {
        for i in first..first + n {
            p.observe(leader(i - 1, i), now);
            append_to_all(p, i, now);
            for f in [2, 3] {
                p.on_inbound(NodeId(f), &[ack(NodeId(f), 2)], now + ms(1) / 2);
            }
            now += ms(60);
            p.observe(leader(i, i), now);
        }
        now
    }

    #[test]
    fn under_light_loss_the_next_put_carries_a_stalled_one() {
        let t0 = Instant::now();
        let settings = deferral(ms(150));
        let (mut p, now) = settled_with(settings.clone(), t0);
        let now = commit_quickly(&mut p, 2, 20, now);
        let stall = settings.stall;
        // Entry 22: 2 answers, 3 does not.
        p.observe(leader(21, 22), now);
        append_to_all(&mut p, 22, now);
        p.on_inbound(NodeId(2), &[ack(NodeId(2), 2)], now + stall / 2);
        assert_eq!(p.next_deadline(), Some(now + stall), "the stall is noted");
        assert!(
            p.release_if_stalled(now + stall).is_empty(),
            "no release: the next put will carry entry 22"
        );
        assert_eq!(p.next_deadline(), Some(now + settings.stall_defer));
        // The next put, 60 ms later: the silent 3 is replaced by 4, which gets 22 with 23.
        let next = now + ms(60);
        p.observe(leader(21, 23), next);
        let out: Vec<Vec<(u64, u64)>> = (2..=5)
            .map(|f| entry_ranges(&p.route(NodeId(f), vec![append(NodeId(f), 23)], false, next)))
            .collect();
        assert_eq!(out[0], vec![(23, 23)]);
        assert!(out[1].is_empty() && out[3].is_empty());
        assert!(
            out[2].ends_with(&[(22, 22), (23, 23)]),
            "4 was lazy: it gets all it lacks"
        );
        // Without a next put, the release comes after `stall_defer`.
        let quiet = next + settings.stall_defer;
        assert!(!p.release_if_stalled(quiet).is_empty());
    }

    #[test]
    fn measured_light_loss_defers_however_many_commits_stalled() {
        let t0 = Instant::now();
        let settings = deferral(ms(150));
        let (mut p, mut now) = settled_with(settings.clone(), t0);
        p.set_loss(Some(0.10));
        // Every commit stalls (slow acknowledgements count as stalls too).
        for i in 2..40 {
            p.observe(leader(i - 1, i), now);
            append_to_all(&mut p, i, now);
            now = p.next_deadline().unwrap();
            assert!(p.release_if_stalled(now).is_empty(), "deferred at {i}");
            for f in 2..=5 {
                p.on_inbound(NodeId(f), &[ack(NodeId(f), 2)], now);
            }
            p.observe(leader(i, i), now);
            now += ms(60);
        }
        p.observe(leader(39, 40), now);
        append_to_all(&mut p, 40, now);
        assert!(p.release_if_stalled(now + settings.stall).is_empty());
        assert_eq!(p.next_deadline(), Some(now + settings.stall_defer));
    }

    #[test]
    fn after_a_leader_change_a_stall_is_released_without_deferral() {
        let t0 = Instant::now();
        let settings = deferral(ms(150));
        let (mut p, now) = settled_with(settings.clone(), t0);
        let now = commit_quickly(&mut p, 2, 20, now);
        // Deposed, then elected again: this replica has seen the leader change.
        let follower = View {
            role: Role::Follower,
            leader: Some(NodeId(3)),
            ..leader(21, 21)
        };
        p.observe(follower, now);
        p.observe(leader(21, 22), now);
        append_to_all(&mut p, 22, now);
        p.on_inbound(NodeId(2), &[ack(NodeId(2), 2)], now);
        assert_eq!(p.next_deadline(), Some(now + settings.stall));
        assert!(!p.release_if_stalled(now + settings.stall).is_empty());
    }

    #[test]
    fn without_deferral_a_stalled_commit_is_released_after_the_stall_time() {
        let t0 = Instant::now();
        let settings = deferral(Duration::ZERO);
        let (mut p, now) = settled_with(settings.clone(), t0);
        let now = commit_quickly(&mut p, 2, 20, now);
        p.observe(leader(21, 22), now);
        append_to_all(&mut p, 22, now);
        assert!(!p.release_if_stalled(now + settings.stall).is_empty());
    }

    #[test]
    fn a_second_release_without_progress_goes_to_everyone() {
        let t0 = Instant::now();
        let (mut p, now) = settled(t0);
        p.observe(leader(1, 2), now);
        append_to_all(&mut p, 2, now);
        let first = p.next_deadline().unwrap();
        assert_eq!(
            p.release_if_stalled(first).len(),
            2,
            "two acknowledgements missing"
        );
        let second = p.next_deadline().unwrap();
        assert_eq!(
            released_to(&mut p, second),
            vec![NodeId(2), NodeId(3), NodeId(4), NodeId(5)]
        );
    }

    #[test]
    fn a_silent_follower_gets_only_its_heartbeat_until_it_answers() {
        let t0 = Instant::now();
        let (mut p, mut now) = settled(t0);
        p.set_loss(Some(0.3));
        // Follower 5 answers nothing for SILENT_AFTER; the others answer everything.
        let mut index = 2;
        let end = now + SILENT_AFTER + ms(100);
        while now < end {
            p.observe(leader(index - 1, index), now);
            append_to_all(&mut p, index, now);
            for f in 2..=4 {
                p.on_inbound(NodeId(f), &[ack(NodeId(f), 2)], now);
            }
            p.observe(leader(index, index), now);
            index += 1;
            now += ms(50);
        }
        p.observe(leader(index - 1, index), now);
        let sent: Vec<usize> = (2..=5)
            .map(|f| {
                p.route(NodeId(f), vec![append(NodeId(f), index)], false, now)
                    .len()
            })
            .collect();
        assert_eq!(
            sent,
            vec![1, 1, 1, 0],
            "wide, but not to the silent follower"
        );
        // A stalled commit is released to the answering followers only.
        let due = p.next_deadline().unwrap();
        let released = released_to(&mut p, due);
        assert!(!released.contains(&NodeId(5)), "{released:?}");
        // Its heartbeat carries what it lacks; once it answers it is fast again.
        let beat = p.route(NodeId(5), vec![heartbeat(NodeId(5), 0)], false, due);
        assert!(beat.len() > 1, "held appends ride with the heartbeat");
        p.on_inbound(NodeId(5), &[ack(NodeId(5), 2)], due);
        let next = p.route(NodeId(5), vec![append(NodeId(5), index + 1)], false, due);
        assert_eq!(next.len(), 1);
    }

    fn echo(from: NodeId, read_round: u64) -> GroupMessage {
        gm(from, ME, 2, MessageBody::HeartbeatResp { read_round })
    }

    #[test]
    fn unechoed_heartbeats_are_resent_while_loss_is_unknown_or_heavy() {
        let t0 = Instant::now();
        let (mut p, now) = settled(t0);
        // Loss unknown: follower 4's heartbeat goes unechoed and is resent three times.
        let out = p.route(NodeId(4), vec![heartbeat(NodeId(4), 7)], false, now);
        assert_eq!(out.len(), 1);
        let mut at = now;
        let mut resent = Vec::new();
        for _ in 0..4 {
            at = p.next_deadline().unwrap();
            for (id, msgs) in p.resend_unanswered(at) {
                resent.push((id, at.duration_since(now), msgs[0].clone()));
            }
            if p.next_deadline().is_none() {
                break;
            }
        }
        let times: Vec<Duration> = resent.iter().map(|r| r.1).collect();
        assert_eq!(times, vec![ms(5), ms(15), ms(35)]);
        assert!(resent
            .iter()
            .all(|r| r.0 == NodeId(4) && r.2 == heartbeat(NodeId(4), 7)));
        // An echo ends the resends.
        p.route(NodeId(5), vec![heartbeat(NodeId(5), 8)], false, at);
        p.on_inbound(NodeId(5), &[echo(NodeId(5), 8)], at + ms(1));
        assert!(p.resend_unanswered(at + ms(100)).is_empty());
        // Under light loss a lost heartbeat is not worth a datagram.
        p.set_loss(Some(0.05));
        p.route(NodeId(4), vec![heartbeat(NodeId(4), 9)], false, at);
        assert_eq!(p.next_deadline(), None);
        // Under heavy loss it is again.
        p.set_loss(Some(0.3));
        p.route(NodeId(4), vec![heartbeat(NodeId(4), 10)], false, at);
        assert_eq!(p.next_deadline(), Some(at + ms(5)));
    }

    #[test]
    fn heavy_loss_makes_every_follower_fast() {
        let t0 = Instant::now();
        let (mut p, now) = settled(t0);
        // Every commit needs a release.
        let now = stall_every_commit(&mut p, 2..40, now);
        p.observe(leader(39, 40), now);
        let sent: Vec<usize> = (2..=5)
            .map(|f| {
                p.route(NodeId(f), vec![append(NodeId(f), 40)], false, now)
                    .len()
            })
            .collect();
        assert_eq!(sent, vec![1, 1, 1, 1]);
    }

    #[test]
    fn measured_loss_alone_decides_wide_sending_and_precise_timing() {
        let t0 = Instant::now();
        // Without deferral, so that every stall below is released at once.
        let settings = deferral(Duration::ZERO);
        let (mut p, now) = settled_with(settings, t0);
        let fanout = |p: &mut SendPolicy, loss: f64, index: u64| {
            p.set_loss(Some(loss));
            p.observe(leader(index - 1, index), now);
            let sent: usize = (2..=5)
                .map(|f| {
                    let out = p.route(NodeId(f), vec![append(NodeId(f), index)], false, now);
                    usize::from(!out.is_empty())
                })
                .sum();
            for f in 2..=5 {
                p.on_inbound(NodeId(f), &[ack(NodeId(f), 2)], now);
            }
            (sent, p.precise_timing())
        };
        assert_eq!(fanout(&mut p, 0.10, 2), (2, false));
        assert_eq!(fanout(&mut p, 0.15, 3), (4, true));
        // Between the two bounds the mode stays as it was.
        assert_eq!(fanout(&mut p, 0.12, 4), (4, true));
        assert_eq!(fanout(&mut p, 0.10, 5), (2, false));
        assert_eq!(fanout(&mut p, 0.12, 6), (2, false));
        // Once loss is measured, stalls no longer switch the mode: every commit stalls
        // here, which without a measurement sends wide (see the test above).
        stall_every_commit(&mut p, 7..40, now);
        assert!(!p.precise_timing());
    }

    #[test]
    fn a_leader_without_a_quorum_backs_off() {
        let t0 = Instant::now();
        let (mut p, now) = settled(t0);
        p.observe(leader(1, 2), now);
        append_to_all(&mut p, 2, now);
        let mut at = now;
        let mut gaps = Vec::new();
        for _ in 0..10 {
            let next = p.next_deadline().expect("still stalled");
            gaps.push(next.saturating_duration_since(at));
            assert!(!p.release_if_stalled(next).is_empty());
            at = next;
        }
        assert_eq!(gaps[0], Settings::default().stall);
        assert!(gaps.windows(2).all(|w| w[1] >= w[0]), "{gaps:?}");
        assert_eq!(*gaps.last().unwrap(), STALL_WAIT_MAX);
        // Progress resets the back-off.
        p.on_inbound(NodeId(2), &[ack(NodeId(2), 2)], at);
        p.observe(leader(2, 3), at);
        assert_eq!(
            p.next_deadline().map(|d| d.saturating_duration_since(at)),
            Some(Settings::default().stall),
            "3..5 still owe an answer, but the wait is short again"
        );
    }

    #[test]
    fn heartbeats_to_busy_fast_followers_are_skipped_unless_reads_wait() {
        let t0 = Instant::now();
        let (mut p, now) = settled(t0);
        p.observe(leader(1, 2), now);
        assert_eq!(
            p.route(NodeId(2), vec![append(NodeId(2), 2)], false, now)
                .len(),
            1
        );
        p.on_inbound(NodeId(2), &[ack(NodeId(2), 2)], now + ms(1));
        assert!(p
            .route(NodeId(2), vec![heartbeat(NodeId(2), 7)], false, now + ms(2))
            .is_empty());
        assert_eq!(
            p.route(NodeId(2), vec![heartbeat(NodeId(2), 8)], true, now + ms(2))
                .len(),
            1,
            "gets wait for this round's echoes"
        );
        // A heartbeat interval after the last append, the heartbeat goes again.
        let idle = now + Settings::default().heartbeat_interval();
        assert_eq!(
            p.route(NodeId(2), vec![heartbeat(NodeId(2), 9)], false, idle)
                .len(),
            1
        );
    }

    fn commit_spread(to: NodeId, commit: u64) -> GroupMessage {
        gm(
            ME,
            to,
            2,
            MessageBody::Append {
                prev_index: commit,
                prev_term: 2,
                entries: vec![],
                commit,
            },
        )
    }

    #[test]
    fn a_commit_index_alone_waits_for_the_next_append() {
        let t0 = Instant::now();
        let (mut p, now) = settled(t0);
        p.observe(leader(2, 2), now);
        assert!(p
            .route(NodeId(2), vec![commit_spread(NodeId(2), 2)], false, now)
            .is_empty());
        p.observe(leader(2, 3), now + ms(50));
        let out = p.route(NodeId(2), vec![append(NodeId(2), 3)], false, now + ms(50));
        assert_eq!(out.len(), 2, "the held commit rides along");
        assert_eq!(out[0], commit_spread(NodeId(2), 2));
    }

    fn vote_request(to: NodeId) -> GroupMessage {
        gm(
            ME,
            to,
            3,
            MessageBody::Vote {
                last_index: 1,
                last_term: 2,
                transfer: false,
            },
        )
    }

    #[test]
    fn unanswered_vote_requests_are_resent_three_times_with_back_off() {
        let t0 = Instant::now();
        let mut p = policy();
        let candidate = View {
            role: Role::Candidate,
            term: 3,
            commit: 1,
            last_index: 1,
            leader: None,
        };
        p.observe(candidate, t0);
        for f in 2..=5 {
            assert_eq!(
                p.route(NodeId(f), vec![vote_request(NodeId(f))], false, t0)
                    .len(),
                1
            );
        }
        // 2 answers (a refusal counts: it came through).
        let answer = gm(NodeId(2), ME, 3, MessageBody::VoteResp { reject: true });
        p.on_inbound(NodeId(2), &[answer], t0 + ms(1));
        let mut at = t0;
        let mut waits = Vec::new();
        while let Some(next) = p.next_deadline() {
            let resent = p.resend_unanswered(next);
            let ids: Vec<NodeId> = resent.iter().map(|(id, _)| *id).collect();
            assert_eq!(ids, vec![NodeId(3), NodeId(4), NodeId(5)]);
            assert_eq!(resent[0].1, vec![vote_request(NodeId(3))]);
            waits.push(next.saturating_duration_since(at));
            at = next;
        }
        assert_eq!(waits, vec![ms(5), ms(10), ms(20)]);
        // Asking again, then no longer a candidate: nothing is resent.
        p.route(NodeId(3), vec![vote_request(NodeId(3))], false, at);
        p.observe(
            View {
                role: Role::Follower,
                ..candidate
            },
            at,
        );
        assert_eq!(p.next_deadline(), None);
        assert!(p.resend_unanswered(at + ms(100)).is_empty());
    }

    #[test]
    fn losing_leadership_drops_held_messages() {
        let t0 = Instant::now();
        let (mut p, now) = settled(t0);
        p.observe(leader(1, 2), now);
        assert!(p
            .route(NodeId(5), vec![append(NodeId(5), 2)], false, now)
            .is_empty());
        p.observe(
            View {
                role: Role::Follower,
                term: 3,
                commit: 1,
                last_index: 2,
                leader: Some(NodeId(3)),
            },
            now + ms(1),
        );
        assert_eq!(p.next_deadline(), None);
        assert!(p.release_if_stalled(now + ms(100)).is_empty());
        // As a follower everything goes out unchanged.
        assert_eq!(
            p.route(NodeId(5), vec![heartbeat(NodeId(5), 0)], false, now)
                .len(),
            1
        );
    }
}
