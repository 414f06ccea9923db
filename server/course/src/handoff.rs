//! Who answers a put across a leader change, so that every committed put is answered
//! `ok`, at once, by exactly one replica, and no put that got `redirect` is ever answered
//! `ok` later.
//!
//! The harness checks each get against the client's last acknowledged put of the key.
//! If a leader dies (or is cut off) after a put's entry reached a majority but before it
//! answered, the next leader commits the entry; unless someone answers its MID `ok`, a
//! later get of that key looks like an incorrect reply. So the rule is:
//!
//! - **The leader that applies an entry answers every put in it**: its own requests
//!   through the node core as usual, and other replicas' requests from *side info*, the
//!   (session, client, MID) triples a leader attaches to every datagram that carries
//!   entries, which followers keep. A leader answers only entries above the commit index
//!   it knew when elected (older ones were committed, and answered, by a previous leader).
//! - **A deposed leader does not redirect the puts it proposed** (the core answers them
//!   "not leader" when leadership ends): they become *orphans*. When this replica applies
//!   the orphan's entry, the leader that committed it has answered it; when it applies
//!   the orphan's index (the node core's `Output::proposed`) with another entry, the put
//!   is lost for good (log matching) and is answered `redirect`, which is then safe to
//!   retry.
//!
//! - **Answered-through reports.** A leader answers a put when it applies it, before any
//!   datagram that carries the new commit index leaves, so a leader whose commit index
//!   is `c` (and that holds back no answer, see `doubt.rs`) knows every put at or below
//!   `c` was answered. Every peer datagram carries the highest such index its sender
//!   knows (field `c`), with the entries below it whose answers a leader deferred
//!   (field `o`, `report.rs`): as leader, what it answered through; as follower, the
//!   reports it heard, merged (never its own commit index: a leader that holds answers
//!   back commits entries it has not answered). A new leader does not answer entries
//!   the reports it heard cover. Followers learn the commit index only with
//!   the next append, so the last put before a leader dies would often be answered
//!   twice (once by each leader): a leader that has sent nothing for
//!   [`Settings::commit_notice_idle`](crate::settings::Settings) after its commit index
//!   moved tells one follower in a datagram of its own ([`CommitNotice`]), and a new
//!   leader holds its answers for a previous leader's entries until it has heard every
//!   peer's report (`doubt.rs`).
//! - **Entries a follower applies above what it knows was answered** are kept (with the
//!   answers they would need) until a report covers them: if this replica becomes
//!   leader first, it owes them (the leader that committed them may have held their
//!   answers back and died).
//!
//! Sessions are `(node << 40) | token` (see `requests.rs`), so a replica recognises its
//! own. Pure bookkeeping: the runtime feeds entries and applies and executes the result.

use crate::ids::CourseId;
use crate::report::Report;
use bytes::Bytes;
use kv_node::sm::{CommandBatch, WriteOp};
use kv_raft::{Entry, EntryKind, Index, Term};
use kv_shared::NodeId;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

/// Most side-info triples remembered (a run has a few thousand puts).
pub const SIDE_INFO_MAX: usize = 100_000;
/// Most triples attached to one datagram.
pub const SIDE_INFO_PER_DATAGRAM_MAX: usize = 64;

/// Side info: which client and MID a session answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SideInfo {
    /// The session of the put.
    pub session: u64,
    /// The client that sent it.
    pub client: CourseId,
    /// Its MID.
    pub mid: String,
}

/// An answer the runtime must send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Duty {
    /// Answer this replica's own request (token) `ok`.
    OkOwn(u64),
    /// Answer another replica's request `ok`, from side info.
    OkFor(CourseId, String),
    /// Answer this replica's own request `redirect`: its put is lost, never applied.
    RedirectOwn(u64),
    /// This replica's own put (session) was applied: the node core's `ok` for it, if it
    /// came this turn, goes now, so that answers leave in log order.
    CoreAnswers(u64),
}

#[derive(Clone, Copy, Debug)]
struct Orphan {
    token: u64,
    /// The highest index the put's entry can have.
    bound: Index,
}

/// The bookkeeping of one replica.
#[derive(Debug)]
pub struct Handoff {
    me: NodeId,
    side: HashMap<u64, (CourseId, String)>,
    side_order: VecDeque<u64>,
    /// Entries seen in appends (sent or received) and not yet applied.
    entries: BTreeMap<Index, Noted>,
    /// Own puts the core proposed, not yet answered: session -> index of their entry.
    proposed: HashMap<u64, Index>,
    orphans: HashMap<u64, Orphan>,
    /// Sessions answered from side info (never answer one twice).
    answered: HashSet<u64>,
    answered_order: VecDeque<u64>,
    /// While leader: the term, and what was known answered when leadership began.
    leading_from: Option<(Term, Report)>,
    /// What the reports heard from peers say was answered, merged.
    reported: Report,
    /// The highest index this replica, as leader, answered every put through (but for
    /// `led_owed`).
    led_through: Index,
    /// The entries whose answers this replica, as leader, deferred (`doubt.rs`).
    led_owed: Vec<Index>,
    /// Entries applied as follower above what was known answered: their answers and keys.
    unsure: BTreeMap<Index, Owed>,
}

/// The writes of an entry seen in an append: each one's session and, for a put, its key.
#[derive(Debug)]
struct Noted {
    term: Term,
    writes: Vec<(u64, Option<Bytes>)>,
}

/// Answers an applied entry may still need, and the keys of its puts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owed {
    /// The entry's term.
    pub term: Term,
    /// The answers, each with the key of the put it answers.
    pub duties: Vec<(Duty, Option<Bytes>)>,
    /// The keys its puts wrote (answers about them must not overtake these).
    pub keys: Vec<Bytes>,
}

/// Most entries kept as unsure (a run commits a few hundred).
pub const UNSURE_MAX: usize = 10_000;

impl Handoff {
    /// Bookkeeping for replica `me`.
    pub fn new(me: NodeId) -> Handoff {
        Handoff {
            me,
            side: HashMap::new(),
            side_order: VecDeque::new(),
            entries: BTreeMap::new(),
            proposed: HashMap::new(),
            orphans: HashMap::new(),
            answered: HashSet::new(),
            answered_order: VecDeque::new(),
            leading_from: None,
            reported: Report::default(),
            led_through: 0,
            led_owed: Vec::new(),
            unsure: BTreeMap::new(),
        }
    }

    fn own_token(&self, session: u64) -> Option<u64> {
        (session >> 40 == self.me.0).then_some(session & ((1 << 40) - 1))
    }

    /// Remembers which client and MID a session answers (own admissions and side info
    /// received from a leader).
    pub fn learn(&mut self, info: SideInfo) {
        if self.side.contains_key(&info.session) {
            return;
        }
        if self.side_order.len() >= SIDE_INFO_MAX {
            if let Some(old) = self.side_order.pop_front() {
                self.side.remove(&old);
            }
        }
        self.side_order.push_back(info.session);
        self.side.insert(info.session, (info.client, info.mid));
    }

    /// Notes the sessions of entries carried by an append (sent or received).
    pub fn note_entries(&mut self, entries: &[Entry]) {
        for e in entries {
            self.entries.insert(
                e.index,
                Noted {
                    term: e.term,
                    writes: writes_of(e),
                },
            );
        }
    }

    /// The keys the puts of entry (`index`, `term`) write, if it was seen in an append.
    pub fn keys_at(&self, index: Index, term: Term) -> Vec<Bytes> {
        match self.entries.get(&index) {
            Some(n) if n.term == term => n.writes.iter().filter_map(|(_, k)| k.clone()).collect(),
            _ => Vec::new(),
        }
    }

    /// The side info to attach to a datagram carrying `entries`.
    pub fn side_info_for(&self, entries: &[&Entry]) -> Vec<SideInfo> {
        let mut out = Vec::new();
        for e in entries {
            for (session, _) in writes_of(e) {
                if out.len() >= SIDE_INFO_PER_DATAGRAM_MAX {
                    return out;
                }
                if let Some((client, mid)) = self.side.get(&session) {
                    out.push(SideInfo {
                        session,
                        client: *client,
                        mid: mid.clone(),
                    });
                }
            }
        }
        out
    }

    /// The node core proposed an own put as the entry at `index` of this leader's log
    /// (the highest index it can have: only a later leader replaces that entry).
    pub fn proposed(&mut self, session: u64, index: Index) {
        self.proposed.insert(session, index);
    }

    /// The core answered an own put. Returns false if the answer must be withheld: a
    /// non-ok answer to a put that may still commit makes it an orphan instead.
    pub fn on_core_answer(&mut self, session: u64, ok: bool) -> bool {
        let Some(bound) = self.proposed.remove(&session) else {
            return true;
        };
        if ok {
            return true;
        }
        let token = self.own_token(session).expect("own session");
        self.orphans.insert(session, Orphan { token, bound });
        false
    }

    /// A peer reported what was answered.
    pub fn hear_report(&mut self, report: &Report) {
        self.reported.merge(report);
        self.forget_unsure();
    }

    /// What the reports heard from peers say was answered.
    pub fn reported(&self) -> &Report {
        &self.reported
    }

    /// As leader, this replica has answered (or holds no answer back for) every put at or
    /// below `index`, but for the deferred ones ([`Handoff::note_deferred`]).
    pub fn note_answered(&mut self, index: Index) {
        self.led_through = self.led_through.max(index);
        self.forget_unsure();
    }

    /// The entries whose answers this replica has deferred now (a deposed leader keeps
    /// them, owed in its reports, until a report covers them).
    pub fn note_deferred(&mut self, owed: impl Iterator<Item = Index>) {
        self.led_owed.clear();
        self.led_owed.extend(owed);
    }

    fn forget_unsure(&mut self) {
        let known = self.report();
        self.unsure.retain(|&i, _| !known.covers(i));
    }

    /// What this replica reports: what it answered as leader, merged with what the
    /// reports it heard say.
    pub fn report(&self) -> Report {
        let mut r = Report::new(self.led_through, self.led_owed.iter().copied());
        r.merge(&self.reported);
        r
    }

    /// Leadership as seen after a round. True when a leadership begins: the caller then
    /// takes what it owes ([`Handoff::take_unsure`]).
    pub fn observe(&mut self, leader: bool, term: Term) -> bool {
        match (leader, &self.leading_from) {
            (true, Some((t, _))) if *t == term => false,
            (true, _) => {
                self.leading_from = Some((term, self.report()));
                true
            }
            (false, _) => {
                self.leading_from = None;
                false
            }
        }
    }

    /// The answers owed for entries applied as follower that are not known answered, in
    /// log order.
    pub fn take_unsure(&mut self) -> Vec<(Index, Owed)> {
        std::mem::take(&mut self.unsure).into_iter().collect()
    }

    /// Entry (`index`, `term`) was applied here. Returns the answers now due, each with
    /// the key of the put it answers.
    pub fn on_applied(&mut self, index: Index, term: Term) -> Vec<(Duty, Option<Bytes>)> {
        let mut duties = Vec::new();
        let writes = match self.entries.remove(&index) {
            Some(n) if n.term == term => n.writes,
            _ => Vec::new(),
        };
        let keys: Vec<Bytes> = writes.iter().filter_map(|(_, k)| k.clone()).collect();
        // Entries at or below `index` that were not applied were replaced.
        while let Some((&i, _)) = self.entries.first_key_value() {
            if i > index {
                break;
            }
            self.entries.pop_first();
        }
        let answering = self
            .leading_from
            .as_ref()
            .is_some_and(|(_, from)| !from.covers(index) && !self.reported.covers(index));
        let unsure = self.leading_from.is_none() && !self.report().covers(index);
        let mut owed = Vec::new();
        for (session, key) in writes {
            if let Some(o) = self.orphans.remove(&session) {
                if answering {
                    duties.push((Duty::OkOwn(o.token), key));
                } else if unsure {
                    owed.push((Duty::OkOwn(o.token), key));
                }
                continue;
            }
            if self.proposed.contains_key(&session) || self.own_token(session).is_some() {
                duties.push((Duty::CoreAnswers(session), key));
                continue;
            }
            if (answering || unsure) && !self.answered.contains(&session) {
                if let Some((client, mid)) = self.side.get(&session) {
                    let duty = (Duty::OkFor(*client, mid.clone()), key);
                    if answering {
                        duties.push(duty);
                    } else {
                        owed.push(duty);
                    }
                    self.mark_answered(session);
                }
            }
        }
        if !owed.is_empty() && self.unsure.len() < UNSURE_MAX {
            self.unsure.insert(
                index,
                Owed {
                    term,
                    duties: owed,
                    keys,
                },
            );
        }
        let lost: Vec<u64> = self
            .orphans
            .iter()
            .filter(|(_, o)| o.bound <= index)
            .map(|(&s, _)| s)
            .collect();
        for s in lost {
            let o = self.orphans.remove(&s).expect("listed");
            duties.push((Duty::RedirectOwn(o.token), None));
        }
        duties
    }

    fn mark_answered(&mut self, session: u64) {
        if self.answered_order.len() >= SIDE_INFO_MAX {
            if let Some(old) = self.answered_order.pop_front() {
                self.answered.remove(&old);
            }
        }
        self.answered.insert(session);
        self.answered_order.push_back(session);
    }

    /// Orphans not yet resolved.
    pub fn orphan_count(&self) -> usize {
        self.orphans.len()
    }
}

/// When a leader sends its commit index in a datagram of its own. A leader answers a
/// put at commit, but followers learn that commit with the next append; if the leader
/// dies (or is cut off) first, its successor answers the put again (a duplicate). So
/// once the commit index has gone untold for a while, one follower is told.
///
/// How long: while commits come closer together than `idle`, the next append usually
/// tells for free, and a notice after `idle` only covers the longer gaps. Once the
/// recent gaps are longer than `idle` (sparse puts), every commit pays a notice
/// whatever the wait, so the notice goes after `idle_sparse`, closing the window almost
/// entirely for the same number of datagrams.
///
/// A leader that may hold a stalled commit back (`StallTimer::defers_first_release`)
/// tells at once when two or more of its answered puts are untold: its successor answers
/// such a leader's unreported puts rather than presume them answered (`doubt.rs`), and a
/// stalled entry typically commits together with the next put, so a kill before the
/// next datagram would cost two duplicates where an ordinary gap costs one. Only below
/// [`EAGER_NOTICE_LOSS_MAX`].
#[derive(Debug)]
pub struct CommitNotice {
    idle: Duration,
    idle_sparse: Duration,
    /// The highest answered-through index sent to any peer.
    told: Index,
    /// Since when this leader's commit index has been above `told`.
    untold_since: Option<Instant>,
    /// The commit index last seen advance, and when.
    last_advance: Option<(Index, Instant)>,
    /// The most recent gaps between commit advances (at most [`COMMIT_GAPS_KEPT`]).
    gaps: VecDeque<Duration>,
    /// The wait before a notice, as the gaps decide (updated when a gap is added).
    wait: Duration,
    /// Entries above `told` this leader applied, with the number of puts each carried.
    untold_puts: VecDeque<(Index, usize)>,
}

/// The loss estimate (`LossMeter::loss`) from which a leader that holds stalled commits
/// back no longer tells two untold puts at once: a put stalls with probability 1 - (1-d)^4 at
/// loss d, so the notices grow with loss until, under heavy loss, they cost more
/// datagrams than a run without kills can spare under its message bonus. Unknown loss
/// (a run's first seconds) counts as light.
pub const EAGER_NOTICE_LOSS_MAX: f64 = 0.075;

/// The `eager` of [`CommitNotice::due`]: whether a leader tells of two untold puts at once,
/// given whether it may hold stalled commits back and the `LossMeter::loss` estimate.
pub fn eager_notice(defers_first_release: bool, loss: Option<f64>) -> bool {
    defers_first_release && loss.is_none_or(|l| l < EAGER_NOTICE_LOSS_MAX)
}

/// Gaps between commit advances that decide whether puts are sparse.
pub const COMMIT_GAPS_KEPT: usize = 8;

impl CommitNotice {
    /// A notice after `idle` without telling, or after `idle_sparse` while puts are
    /// sparse.
    pub fn new(idle: Duration, idle_sparse: Duration) -> CommitNotice {
        CommitNotice {
            idle,
            idle_sparse,
            told: 0,
            untold_since: None,
            last_advance: None,
            gaps: VecDeque::new(),
            wait: idle,
            untold_puts: VecDeque::new(),
        }
    }

    /// As leader, this replica applied entry `index`, which carried `puts` puts (each
    /// answered now or owed by this leader).
    pub fn applied(&mut self, index: Index, puts: usize) {
        if puts > 0 && index > self.told {
            self.untold_puts.push_back((index, puts));
        }
    }

    /// A datagram to a peer carried answered-through index `index`.
    pub fn told(&mut self, index: Index) {
        self.told = self.told.max(index);
        while self
            .untold_puts
            .front()
            .is_some_and(|&(i, _)| i <= self.told)
        {
            self.untold_puts.pop_front();
        }
        if self
            .last_advance
            .is_some_and(|(commit, _)| commit <= self.told)
        {
            self.untold_since = None;
        }
    }

    /// Adds a gap between commit advances; the wait becomes `idle_sparse` once the
    /// median of a full window of recent gaps exceeds `idle`.
    fn add_gap(&mut self, gap: Duration) {
        if self.gaps.len() == COMMIT_GAPS_KEPT {
            self.gaps.pop_front();
        }
        self.gaps.push_back(gap);
        let mut gaps: Vec<Duration> = self.gaps.iter().copied().collect();
        gaps.sort_unstable();
        let sparse = gaps.len() == COMMIT_GAPS_KEPT && gaps[gaps.len() / 2] > self.idle;
        self.wait = if sparse { self.idle_sparse } else { self.idle };
    }

    /// After a round: true if a notice must go now (the caller then sends one and
    /// reports it with [`CommitNotice::told`]). `commit` is the leader's answered-through
    /// index; `eager` says whether two untold answered puts make the notice go at once
    /// (the leader may hold a stalled commit back, under light loss).
    pub fn due(&mut self, leader: bool, commit: Index, eager: bool, now: Instant) -> bool {
        if !leader {
            self.untold_since = None;
            self.last_advance = None;
            self.gaps.clear();
            self.wait = self.idle;
            self.untold_puts.clear();
            return false;
        }
        match self.last_advance {
            Some((seen, at)) if commit > seen => {
                self.add_gap(now.saturating_duration_since(at));
                self.last_advance = Some((commit, now));
            }
            Some(_) => {}
            None => self.last_advance = Some((commit, now)),
        }
        if commit <= self.told {
            self.untold_since = None;
            return false;
        }
        let since = *self.untold_since.get_or_insert(now);
        let untold_puts: usize = self
            .untold_puts
            .iter()
            .take_while(|&&(i, _)| i <= commit)
            .map(|&(_, puts)| puts)
            .sum();
        (eager && untold_puts >= 2) || now.saturating_duration_since(since) >= self.wait
    }

    /// When the pending notice falls due, if one is pending.
    pub fn deadline(&self) -> Option<Instant> {
        self.untold_since.map(|since| since + self.wait)
    }
}

/// Each write of an entry: its session and, for a put, its key.
fn writes_of(e: &Entry) -> Vec<(u64, Option<Bytes>)> {
    if e.kind != EntryKind::Command {
        return Vec::new();
    }
    let Ok(batch) = CommandBatch::decode(&e.data) else {
        return Vec::new();
    };
    batch
        .writes
        .into_iter()
        .map(|w| match w.op {
            WriteOp::Put { key, .. } => (w.client.0, Some(key)),
            _ => (w.client.0, None),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::requests;
    use bytes::Bytes;
    use kv_node::sm::{WriteCommand, WriteOp};
    use kv_shared::ClientId;

    fn entry(index: Index, term: Term, sessions: &[u64]) -> Entry {
        let writes = sessions
            .iter()
            .map(|&s| WriteCommand {
                client: ClientId(s),
                seq: 1,
                op: WriteOp::from_op(&kv_shared::proto::Op::Put {
                    key: Bytes::from_static(b"k"),
                    value: Bytes::from_static(b"v"),
                })
                .expect("a put is a write"),
            })
            .collect();
        Entry {
            term,
            index,
            kind: EntryKind::Command,
            data: CommandBatch { writes }.encode(),
        }
    }

    /// The answers without their keys.
    fn duties_of(answers: Vec<(Duty, Option<Bytes>)>) -> Vec<Duty> {
        answers.into_iter().map(|(d, _)| d).collect()
    }

    fn session_for(node: NodeId, token: u64) -> u64 {
        requests::session_for(node, token).0
    }

    fn info(session: u64, mid: &str) -> SideInfo {
        SideInfo {
            session,
            client: CourseId(0x15),
            mid: mid.into(),
        }
    }

    #[test]
    fn a_new_leader_answers_puts_of_the_old_one_it_commits_once() {
        let old = session_for(NodeId(1), 7);
        let mut h = Handoff::new(NodeId(2));
        h.learn(info(old, "m7"));
        h.note_entries(&[entry(5, 1, &[old])]);
        h.hear_report(&Report::new(4, []));
        assert!(h.observe(true, 2));
        assert!(!h.observe(true, 2), "the same leadership");
        assert_eq!(
            duties_of(h.on_applied(5, 1)),
            vec![Duty::OkFor(CourseId(0x15), "m7".into())]
        );
        // Seen again (a resent append, applied again after a restart of the view): no
        // second answer.
        h.note_entries(&[entry(5, 1, &[old])]);
        assert!(duties_of(h.on_applied(5, 1)).is_empty());
    }

    #[test]
    fn entries_the_previous_leader_committed_are_not_answered_again() {
        let old = session_for(NodeId(1), 7);
        let mut h = Handoff::new(NodeId(2));
        h.learn(info(old, "m7"));
        h.note_entries(&[entry(5, 1, &[old])]);
        h.hear_report(&Report::new(5, []));
        h.observe(true, 2);
        assert!(duties_of(h.on_applied(5, 1)).is_empty());
        // A follower never answers for others.
        let mut f = Handoff::new(NodeId(3));
        f.learn(info(old, "m7"));
        f.note_entries(&[entry(5, 1, &[old])]);
        assert!(duties_of(f.on_applied(5, 1)).is_empty());
    }

    #[test]
    fn a_follower_owes_what_it_applied_above_the_reports_if_it_comes_to_lead() {
        let old = session_for(NodeId(1), 7);
        let mut f = Handoff::new(NodeId(3));
        f.learn(info(old, "m7"));
        f.note_entries(&[entry(5, 1, &[old]), entry(6, 1, &[])]);
        f.hear_report(&Report::new(4, []));
        assert_eq!(f.keys_at(5, 1), vec![Bytes::from_static(b"k")]);
        assert!(duties_of(f.on_applied(5, 1)).is_empty());
        assert!(duties_of(f.on_applied(6, 1)).is_empty());
        // Applying does not make the follower report it: its leader may hold the answer.
        assert_eq!(f.report().through, 4);
        assert!(f.observe(true, 2));
        let owed = f.take_unsure();
        assert_eq!(owed.len(), 1);
        assert_eq!(owed[0].0, 5);
        assert_eq!(
            duties_of(owed[0].1.duties.clone()),
            vec![Duty::OkFor(CourseId(0x15), "m7".into())]
        );
        assert_eq!(owed[0].1.keys, vec![Bytes::from_static(b"k")]);
        // Owed entries a report covers are forgotten.
        let mut g = Handoff::new(NodeId(4));
        g.learn(info(old, "m7"));
        g.note_entries(&[entry(5, 1, &[old])]);
        assert!(duties_of(g.on_applied(5, 1)).is_empty());
        g.hear_report(&Report::new(5, []));
        g.observe(true, 2);
        assert!(g.take_unsure().is_empty());
    }

    #[test]
    fn entries_a_report_lists_as_owed_stay_owed_on_followers_and_new_leaders() {
        let old = session_for(NodeId(1), 7);
        let newer = session_for(NodeId(1), 8);
        let owing = Report::new(6, [5]);
        // Applied before the report came: kept as unsure although 5 <= 6.
        let mut f = Handoff::new(NodeId(3));
        f.learn(info(old, "m7"));
        f.note_entries(&[entry(5, 1, &[old]), entry(6, 1, &[newer])]);
        f.hear_report(&Report::new(4, []));
        assert!(f.on_applied(5, 1).is_empty());
        f.hear_report(&owing);
        assert_eq!(f.report(), owing, "a follower passes the report on");
        assert!(f.observe(true, 3));
        let owed = f.take_unsure();
        assert_eq!(owed.iter().map(|(i, _)| *i).collect::<Vec<_>>(), vec![5]);
        // Applied after the report came, as follower: owed too.
        let mut g = Handoff::new(NodeId(4));
        g.learn(info(old, "m7"));
        g.note_entries(&[entry(5, 1, &[old])]);
        g.hear_report(&owing);
        assert!(g.on_applied(5, 1).is_empty());
        g.observe(true, 3);
        assert_eq!(g.take_unsure().len(), 1);
        // Applied after leadership began: answered (the runtime defers it at once).
        let mut h = Handoff::new(NodeId(2));
        h.learn(info(old, "m7"));
        h.learn(info(newer, "m8"));
        h.note_entries(&[entry(5, 1, &[old]), entry(6, 1, &[newer])]);
        h.hear_report(&owing);
        h.observe(true, 3);
        assert_eq!(
            h.on_applied(5, 1),
            vec![(
                Duty::OkFor(CourseId(0x15), "m7".into()),
                Some(Bytes::from_static(b"k"))
            )]
        );
        assert!(h.on_applied(6, 1).is_empty(), "covered by the report");
        assert!(h.report().owes(5));
    }

    #[test]
    fn a_leader_reports_its_deferred_entries_as_owed_until_they_are_settled() {
        let mut h = Handoff::new(NodeId(2));
        h.hear_report(&Report::new(4, []));
        h.observe(true, 2);
        h.note_answered(10);
        h.note_deferred([7].into_iter());
        assert_eq!(h.report(), Report::new(10, [7]));
        h.note_deferred(std::iter::empty());
        assert_eq!(h.report(), Report::new(10, []));
        // A peer's report that covers more merges in.
        h.hear_report(&Report::new(12, [11]));
        assert_eq!(h.report(), Report::new(12, [11]));
    }

    /// Replica 1 proposed its put with MID token 3 as entry 8 of term 1.
    fn own_put_at_8() -> (Handoff, u64) {
        let me = NodeId(1);
        let s = session_for(me, 3);
        let mut h = Handoff::new(me);
        h.proposed(s, 8);
        h.note_entries(&[entry(8, 1, &[s])]);
        (h, s)
    }

    #[test]
    fn a_deposed_leaders_put_is_withheld_then_dropped_when_committed_elsewhere() {
        let (mut h, s) = own_put_at_8();
        assert!(
            !h.on_core_answer(s, false),
            "no redirect for a put that may commit"
        );
        assert_eq!(h.orphan_count(), 1);
        // The new leader committed it (and answered it): nothing for us to send.
        assert!(duties_of(h.on_applied(8, 1)).is_empty());
        assert_eq!(h.orphan_count(), 0);
    }

    #[test]
    fn a_lost_orphan_is_redirected_once_the_log_passes_it() {
        let (mut h, s) = own_put_at_8();
        assert!(!h.on_core_answer(s, false));
        // The new leader's log has another entry at 8.
        h.note_entries(&[entry(8, 2, &[session_for(NodeId(2), 1)])]);
        assert!(
            duties_of(h.on_applied(7, 2)).is_empty(),
            "not past the bound yet"
        );
        assert_eq!(duties_of(h.on_applied(8, 2)), vec![Duty::RedirectOwn(3)]);
    }

    #[test]
    fn an_orphan_committed_by_this_replica_as_leader_again_is_answered_ok() {
        let (mut h, s) = own_put_at_8();
        assert!(!h.on_core_answer(s, false));
        h.hear_report(&Report::new(7, []));
        h.observe(true, 3);
        assert_eq!(duties_of(h.on_applied(8, 1)), vec![Duty::OkOwn(3)]);
    }

    #[test]
    fn answers_to_unproposed_or_successful_puts_pass_through() {
        let me = NodeId(1);
        let mut h = Handoff::new(me);
        assert!(
            h.on_core_answer(session_for(me, 1), false),
            "never proposed: redirect"
        );
        h.proposed(session_for(me, 2), 4);
        assert!(h.on_core_answer(session_for(me, 2), true));
        assert_eq!(h.orphan_count(), 0);
    }

    #[test]
    fn side_info_travels_with_entries() {
        let mut h = Handoff::new(NodeId(1));
        let s = session_for(NodeId(1), 9);
        h.learn(info(s, "m9"));
        let e = entry(3, 1, &[s, session_for(NodeId(4), 1)]);
        assert_eq!(h.side_info_for(&[&e]), vec![info(s, "m9")]);
    }

    #[test]
    fn a_new_leader_leaves_puts_a_peer_reported_answered() {
        let old = session_for(NodeId(1), 7);
        let newer = session_for(NodeId(1), 8);
        let mut h = Handoff::new(NodeId(2));
        h.learn(info(old, "m7"));
        h.learn(info(newer, "m8"));
        h.note_entries(&[entry(5, 1, &[old]), entry(6, 1, &[newer])]);
        // A follower the old leader told reports 5.
        h.hear_report(&Report::new(5, []));
        h.observe(true, 2);
        assert!(
            duties_of(h.on_applied(5, 1)).is_empty(),
            "the old leader answered it"
        );
        assert_eq!(
            duties_of(h.on_applied(6, 1)),
            vec![Duty::OkFor(CourseId(0x15), "m8".into())]
        );
        assert_eq!(h.report().through, 5);
        h.note_answered(6);
        assert_eq!(h.report().through, 6);
    }

    #[test]
    fn a_commit_notice_goes_once_the_commit_index_went_untold_for_the_idle_time() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut n = CommitNotice::new(ms(80), ms(10));
        assert!(!n.due(true, 0, false, t0), "nothing committed");
        assert!(!n.due(true, 3, false, t0));
        assert_eq!(n.deadline(), Some(t0 + ms(80)));
        assert!(!n.due(true, 3, false, t0 + ms(79)));
        assert!(n.due(true, 3, false, t0 + ms(80)));
        n.told(3);
        assert!(!n.due(true, 3, false, t0 + ms(81)));
        assert_eq!(n.deadline(), None);
        // An append that carries the new commit index tells for free.
        assert!(!n.due(true, 4, false, t0 + ms(100)));
        n.told(4);
        assert!(!n.due(true, 4, false, t0 + ms(200)));
        // Followers never send notices.
        assert!(!n.due(false, 9, false, t0 + ms(300)));
        assert!(!n.due(false, 9, false, t0 + ms(900)));
    }

    #[test]
    fn only_a_leader_that_holds_stalled_commits_back_under_light_loss_tells_eagerly() {
        assert!(eager_notice(true, None), "unknown loss counts as light");
        assert!(eager_notice(true, Some(0.0)));
        assert!(eager_notice(true, Some(0.05)));
        assert!(!eager_notice(true, Some(EAGER_NOTICE_LOSS_MAX)));
        assert!(
            !eager_notice(true, Some(0.10)),
            "heavy loss: the notices cost too much"
        );
        assert!(
            !eager_notice(false, None),
            "a leader that holds nothing back waits"
        );
        assert!(!eager_notice(false, Some(0.0)));
    }

    #[test]
    fn a_leader_that_holds_stalled_commits_back_tells_at_once_of_two_untold_puts() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut n = CommitNotice::new(ms(80), ms(10));
        // One answered put untold: the idle wait, as for any leader.
        n.applied(1, 1);
        assert!(!n.due(true, 1, true, t0));
        n.told(1);
        // A stalled entry commits with the next put in one turn: the notice goes now.
        n.applied(2, 1);
        n.applied(3, 1);
        assert!(n.due(true, 3, true, t0 + ms(60)));
        n.told(3);
        assert!(!n.due(true, 3, true, t0 + ms(61)));
        // The same two commits in successive turns: the second turn tells.
        n.applied(4, 1);
        assert!(!n.due(true, 4, true, t0 + ms(120)));
        n.applied(5, 1);
        assert!(n.due(true, 5, true, t0 + ms(121)));
        n.told(5);
        // Two puts in one entry are two answers a successor would repeat.
        n.applied(6, 2);
        assert!(n.due(true, 6, true, t0 + ms(180)));
        n.told(6);
        // An entry without puts (a leader's no-op) counts for nothing.
        n.applied(7, 0);
        n.applied(8, 1);
        assert!(!n.due(true, 8, true, t0 + ms(240)));
        n.told(8);
        // An append that carried the report in the same turn already told.
        n.applied(9, 1);
        n.applied(10, 1);
        n.told(10);
        assert!(!n.due(true, 10, true, t0 + ms(300)));
        // Puts above the answered-through index (answers still held) are not told yet.
        n.applied(11, 1);
        n.applied(12, 1);
        assert!(!n.due(true, 11, true, t0 + ms(360)));
        assert!(n.due(true, 12, true, t0 + ms(361)));
        n.told(12);
        // A leader that holds nothing back waits the idle time: its successor presumes
        // its unreported puts answered.
        n.applied(13, 1);
        n.applied(14, 1);
        assert!(!n.due(true, 14, false, t0 + ms(420)));
        assert!(n.due(true, 14, false, t0 + ms(500)));
        // Leadership lost: what it had applied is forgotten.
        assert!(!n.due(false, 14, true, t0 + ms(510)));
        assert!(!n.due(true, 14, true, t0 + ms(520)));
    }

    #[test]
    fn a_leader_again_answers_its_orphans_and_new_puts_in_log_order() {
        // Replica 1 led term 1, proposed its put (token 3) as entry 8, lost leadership,
        // took a new put (token 4, entry 10 of term 3) and leads again.
        let (mut h, orphan) = own_put_at_8();
        assert!(!h.on_core_answer(orphan, false));
        let new_put = session_for(NodeId(1), 4);
        h.note_entries(&[entry(10, 3, &[new_put])]);
        h.hear_report(&Report::new(7, []));
        h.observe(true, 3);
        assert_eq!(duties_of(h.on_applied(8, 1)), vec![Duty::OkOwn(3)]);
        assert_eq!(duties_of(h.on_applied(9, 3)), vec![]);
        // The core's own `ok` for the new put goes at its entry's turn, not before.
        assert_eq!(
            duties_of(h.on_applied(10, 3)),
            vec![Duty::CoreAnswers(new_put)]
        );
    }

    #[test]
    fn while_puts_are_sparse_the_notice_goes_sooner() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut n = CommitNotice::new(ms(80), ms(10));
        // Dense puts (a commit every 60 ms, each told by the next append): the wait stays
        // 80 ms.
        let mut now = t0;
        for commit in 1..=10 {
            assert!(!n.due(true, commit, false, now));
            n.told(commit);
            now += ms(60);
        }
        assert!(!n.due(true, 11, false, now));
        assert_eq!(n.deadline(), Some(now + ms(80)));
        n.told(11);
        // Sparse puts (a commit every 120 ms): after a full window of gaps, 10 ms.
        for commit in 12..=20 {
            now += ms(120);
            assert!(!n.due(true, commit, false, now));
            n.told(commit);
        }
        now += ms(120);
        assert!(!n.due(true, 21, false, now));
        assert_eq!(n.deadline(), Some(now + ms(10)));
        assert!(n.due(true, 21, false, now + ms(10)));
        // A new leadership starts from the long wait.
        assert!(!n.due(false, 21, false, now + ms(20)));
        assert!(!n.due(true, 22, false, now + ms(30)));
        assert_eq!(n.deadline(), Some(now + ms(30) + ms(80)));
    }
}
