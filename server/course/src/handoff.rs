//! Who answers a put across a leader change, so that every committed put is answered
//! `ok`, no put that got `redirect` is ever answered `ok` later, and a put the old leader
//! already answered is not answered again by the next one.
//!
//! The harness checks each get against the client's last acknowledged put of the key, and
//! scores a second `ok` to an MID as a duplicate. A leader answers a put as soon as it
//! commits; followers learn that commit index only with the leader's next append, so after
//! a leader is killed (or cut off) the next leader holds the last put or two above the
//! commit index it knows, and cannot tell whether they were answered. Answering them (as
//! this module once did) cost one duplicate per leader kill; not answering them must not
//! let a get observe a put whose `ok` never left. The rules:
//!
//! - **The leader of a put's own term answers it** (through the node core) when it
//!   commits it, before it tells anyone the new commit index: replies leave before peer
//!   datagrams in every turn. So a put whose commit a replica learns from that leader was
//!   answered.
//! - **A put committed by a later leader is *unsure*.** Each leader announces its
//!   *crossing* `(term, from, last)`: the commit index it knew when elected and its last
//!   index then; entries of earlier terms in `(from, last]` are the only ones it can be
//!   the first to commit. Every datagram a replica sends carries the crossings it knows,
//!   so a replica holding an entry of term T also knows T's crossing. A replica applying
//!   a put inside a crossing of a later term marks it unsure: nobody answers it now.
//! - **A get that would observe an unsure put answers the put first** (`on_read`), unless
//!   it proves the client already has that put's ack: the put was the first write of the
//!   key in the log and the get comes from the put's own client (the harness generates a
//!   get only for a key the client has had acknowledged, so the ack it holds is for this
//!   put or for a retry of it, whose MID must then stay unanswered anyway).
//! - **A deposed leader does not redirect the puts it proposed** (the core answers them
//!   "not leader" when leadership ends): they become *orphans*. When this replica applies
//!   an orphan's entry, it answers it `ok` (whoever committed it left it unsure); when it
//!   applies past the highest index the orphan could have had without meeting it, the
//!   put is lost for good (log matching) and is answered `redirect`, which is then safe
//!   to retry.
//!
//! What is left unanswered: an unsure put whose old leader died before its acknowledgements
//! arrived (a window of one round trip) and that no get observes. That is a failure, never
//! an incorrect reply.
//!
//! Sessions are `(node << 40) | token` (see `requests.rs`), so a replica recognises its
//! own. Pure bookkeeping: the runtime feeds entries, crossings, applies and reads, and
//! executes the result.

use crate::ids::CourseId;
use bytes::Bytes;
use kv_node::sm::{CommandBatch, WriteOp};
use kv_raft::{Entry, EntryKind, Index, Term};
use kv_shared::NodeId;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

/// Most side-info triples remembered (a run has a few thousand puts).
pub const SIDE_INFO_MAX: usize = 100_000;
/// Most triples attached to one datagram.
pub const SIDE_INFO_PER_DATAGRAM_MAX: usize = 64;
/// Most crossings remembered and attached to one datagram (one per leader of a run; the
/// oldest matter least, their entries were applied long ago everywhere).
pub const CROSSINGS_MAX: usize = 32;

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

/// A leader's crossing: entries of earlier terms at indexes `from + 1 ..= last` may have
/// been committed first by the leader of `term`, which did not answer them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Crossing {
    /// The leader's term.
    pub term: Term,
    /// The commit index it knew when elected.
    pub from: Index,
    /// Its last index when it saw itself leader (entries of its own term above are
    /// excluded by their term).
    pub last: Index,
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
}

/// What a get's value requires before it may be answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadCheck {
    /// Send these answers first (possibly none), then the get's.
    AnswerAfter(Vec<Duty>),
    /// The get observes an unsure put this replica cannot answer (no side info): the get
    /// must stay unanswered (a failure) rather than be answered before that put's `ok`.
    Withhold,
}

#[derive(Clone, Copy, Debug)]
struct Orphan {
    token: u64,
    /// The highest index the put's entry can have.
    bound: Index,
}

/// One write of an entry: its session, key and, for a put, the value.
#[derive(Clone, Debug)]
struct Write {
    session: u64,
    key: Bytes,
    value: Option<Bytes>,
}

/// A committed put that may never have been answered.
#[derive(Clone, Debug)]
struct Unsure {
    session: u64,
    value: Bytes,
    /// No earlier entry of the log wrote its key.
    first_write: bool,
}

/// The bookkeeping of one replica.
#[derive(Debug)]
pub struct Handoff {
    me: NodeId,
    side: HashMap<u64, (CourseId, String)>,
    side_order: VecDeque<u64>,
    /// Writes of entries seen in appends (sent or received) and not yet applied. Raft
    /// gives one entry per (index, term), so this is exact whatever arrives stale.
    entries: BTreeMap<(Index, Term), Vec<Write>>,
    /// Own puts handed to the core while leader, not yet answered: session -> bound.
    proposed: HashMap<u64, Index>,
    orphans: HashMap<u64, Orphan>,
    /// Known crossings by term.
    crossings: BTreeMap<Term, (Index, Index)>,
    /// The last index applied here.
    applied: Index,
    /// Keys written by applied entries; exact while `complete`.
    written: HashSet<Bytes>,
    /// Every entry applied here since index 1 was known (else first writes are unknown).
    complete: bool,
    /// Unsure puts by key (a later put of the key hides them).
    unsure: HashMap<Bytes, Unsure>,
}

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
            crossings: BTreeMap::new(),
            applied: 0,
            written: HashSet::new(),
            complete: true,
            unsure: HashMap::new(),
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

    /// Notes the writes of entries carried by an append (sent or received).
    pub fn note_entries(&mut self, entries: &[Entry]) {
        for e in entries {
            if e.index <= self.applied {
                continue;
            }
            if let Some(writes) = writes_of(e) {
                self.entries.insert((e.index, e.term), writes);
            }
        }
    }

    /// The side info to attach to a datagram carrying `entries`.
    pub fn side_info_for(&self, entries: &[&Entry]) -> Vec<SideInfo> {
        let mut out = Vec::new();
        for e in entries {
            for session in sessions_of(e) {
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

    /// This replica leads `term`, knowing commit index `commit` and holding entries up to
    /// `last`. The first call of a term records its crossing.
    pub fn leading(&mut self, term: Term, commit: Index, last: Index) {
        self.learn_crossings(&[Crossing {
            term,
            from: commit,
            last,
        }]);
    }

    /// Remembers crossings announced by other replicas (a term's first one stands).
    pub fn learn_crossings(&mut self, crossings: &[Crossing]) {
        for c in crossings {
            self.crossings.entry(c.term).or_insert((c.from, c.last));
        }
        while self.crossings.len() > CROSSINGS_MAX {
            self.crossings.pop_first();
        }
    }

    /// The crossings to attach to every datagram.
    pub fn crossings(&self) -> Vec<Crossing> {
        self.crossings
            .iter()
            .map(|(&term, &(from, last))| Crossing { term, from, last })
            .collect()
    }

    /// An own put is in the log of this leader, at or below `bound` (called again each
    /// round while it leads, with the growing last index).
    pub fn proposed(&mut self, session: u64, bound: Index) {
        self.proposed.insert(session, bound);
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

    /// True if entry (`index`, `term`) lies in the crossing of a later term: its first
    /// committer may have been a leader that did not answer it.
    fn crossed(&self, index: Index, term: Term) -> bool {
        self.crossings
            .range(term + 1..)
            .any(|(_, &(from, last))| from < index && index <= last)
    }

    /// Entry (`index`, `term`) was applied here. Returns the answers now due.
    pub fn on_applied(&mut self, index: Index, term: Term) -> Vec<Duty> {
        let mut duties = Vec::new();
        let writes = self.entries.remove(&(index, term));
        if writes.is_none() || index != self.applied + 1 {
            self.complete = false;
        }
        self.applied = self.applied.max(index);
        // Entries at or below `index` that were not applied were replaced.
        while let Some((&(i, _), _)) = self.entries.first_key_value() {
            if i > index {
                break;
            }
            self.entries.pop_first();
        }
        let crossed = self.crossed(index, term);
        for w in writes.unwrap_or_default() {
            let first_write = self.complete && !self.written.contains(&w.key);
            self.written.insert(w.key.clone());
            let Some(value) = w.value else {
                continue; // not a put: it hides nothing and nothing unsure is added
            };
            self.unsure.remove(&w.key);
            if let Some(o) = self.orphans.remove(&w.session) {
                duties.push(Duty::OkOwn(o.token));
                continue;
            }
            if self.proposed.contains_key(&w.session) || self.own_token(w.session).is_some() {
                continue; // the core answers its own requests
            }
            if crossed {
                self.unsure.insert(
                    w.key,
                    Unsure {
                        session: w.session,
                        value,
                        first_write,
                    },
                );
            }
        }
        let lost: Vec<u64> = self
            .orphans
            .iter()
            .filter(|(_, o)| o.bound <= index)
            .map(|(&s, _)| s)
            .collect();
        for s in lost {
            let o = self.orphans.remove(&s).expect("listed");
            duties.push(Duty::RedirectOwn(o.token));
        }
        duties
    }

    /// A get from `client` on `key` is about to be answered with `value` (read from what
    /// this replica applied). Says what must be sent first.
    pub fn on_read(&mut self, client: CourseId, key: &[u8], value: Option<&[u8]>) -> ReadCheck {
        let Some(u) = self.unsure.get(key) else {
            return ReadCheck::AnswerAfter(Vec::new());
        };
        if value != Some(&u.value[..]) {
            return ReadCheck::AnswerAfter(Vec::new());
        }
        let Some((owner, mid)) = self.side.get(&u.session).cloned() else {
            return ReadCheck::Withhold;
        };
        let proven = u.first_write && owner == client;
        self.unsure.remove(key);
        if proven {
            ReadCheck::AnswerAfter(Vec::new())
        } else {
            ReadCheck::AnswerAfter(vec![Duty::OkFor(owner, mid)])
        }
    }

    /// Orphans not yet resolved.
    pub fn orphan_count(&self) -> usize {
        self.orphans.len()
    }

    /// Unsure puts held (for tests and logs).
    pub fn unsure_count(&self) -> usize {
        self.unsure.len()
    }
}

fn sessions_of(e: &Entry) -> Vec<u64> {
    writes_of(e)
        .unwrap_or_default()
        .into_iter()
        .map(|w| w.session)
        .collect()
}

/// The writes of an entry; `None` if a command entry does not decode.
fn writes_of(e: &Entry) -> Option<Vec<Write>> {
    if e.kind != EntryKind::Command {
        return Some(Vec::new());
    }
    let batch = CommandBatch::decode(&e.data).ok()?;
    Some(
        batch
            .writes
            .into_iter()
            .map(|w| {
                let (key, value) = match w.op {
                    WriteOp::Put { key, value } => (key, Some(value)),
                    WriteOp::Delete { key } | WriteOp::Cas { key, .. } => (key, None),
                };
                Write {
                    session: w.client.0,
                    key,
                    value,
                }
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::requests;
    use kv_node::sm::WriteCommand;
    use kv_shared::ClientId;

    /// An entry of puts of key `k`, one per session, each writing `v<session>`.
    fn entry(index: Index, term: Term, sessions: &[u64]) -> Entry {
        let writes = sessions
            .iter()
            .map(|&s| WriteCommand {
                client: ClientId(s),
                seq: 1,
                op: WriteOp::Put {
                    key: Bytes::from_static(b"k"),
                    value: value(s),
                },
            })
            .collect();
        Entry {
            term,
            index,
            kind: EntryKind::Command,
            data: CommandBatch { writes }.encode(),
        }
    }

    fn value(session: u64) -> Bytes {
        Bytes::from(format!("v{session}"))
    }

    fn session_for(node: NodeId, token: u64) -> u64 {
        requests::session_for(node, token).0
    }

    const OWNER: CourseId = CourseId(0x15);
    const OTHER: CourseId = CourseId(0x16);

    fn info(session: u64, mid: &str) -> SideInfo {
        SideInfo {
            session,
            client: OWNER,
            mid: mid.into(),
        }
    }

    fn answer_after(duties: Vec<Duty>) -> ReadCheck {
        ReadCheck::AnswerAfter(duties)
    }

    /// Replica 2 applied entries 1..=4 (no puts), holds replica 1's put (session `old`,
    /// MID m7) at 5 of term 1 above the commit index 4 it knew, and leads term 2.
    fn new_leader_holding_old_put(key_written_before: bool) -> (Handoff, u64) {
        let old = session_for(NodeId(1), 7);
        let mut h = Handoff::new(NodeId(2));
        let earlier = session_for(NodeId(1), 1);
        for i in 1..=4 {
            let sessions: &[u64] = if key_written_before && i == 4 {
                &[earlier]
            } else {
                &[]
            };
            h.note_entries(&[entry(i, 1, sessions)]);
            assert!(h.on_applied(i, 1).is_empty());
        }
        h.learn(info(old, "m7"));
        h.note_entries(&[entry(5, 1, &[old])]);
        h.leading(2, 4, 6);
        (h, old)
    }

    #[test]
    fn a_new_leader_does_not_answer_an_earlier_leaders_put_it_commits() {
        let (mut h, _) = new_leader_holding_old_put(true);
        assert!(
            h.on_applied(5, 1).is_empty(),
            "the old leader likely answered"
        );
        assert_eq!(h.unsure_count(), 1);
    }

    #[test]
    fn a_get_observing_an_unsure_put_answers_the_put_first_and_once() {
        let (mut h, old) = new_leader_holding_old_put(true);
        h.on_applied(5, 1);
        assert_eq!(
            h.on_read(OTHER, b"k", Some(b"v0")),
            answer_after(vec![]),
            "another value observes nothing unsure"
        );
        assert_eq!(
            h.on_read(OWNER, b"k", Some(&value(old))),
            answer_after(vec![Duty::OkFor(OWNER, "m7".into())]),
            "an overwrite may be what the client lacks: answer it first"
        );
        assert_eq!(
            h.on_read(OWNER, b"k", Some(&value(old))),
            answer_after(vec![])
        );
    }

    #[test]
    fn a_first_write_read_by_its_own_client_was_acknowledged_already() {
        let (mut h, old) = new_leader_holding_old_put(false);
        h.on_applied(5, 1);
        assert_eq!(
            h.on_read(OWNER, b"k", Some(&value(old))),
            answer_after(vec![])
        );
        assert_eq!(h.unsure_count(), 0);
        // Another client reading it proves nothing.
        let (mut h, old) = new_leader_holding_old_put(false);
        h.on_applied(5, 1);
        assert_eq!(
            h.on_read(OTHER, b"k", Some(&value(old))),
            answer_after(vec![Duty::OkFor(OWNER, "m7".into())])
        );
    }

    #[test]
    fn without_every_applied_entry_known_no_write_counts_as_first() {
        let old = session_for(NodeId(1), 7);
        let mut h = Handoff::new(NodeId(2));
        // Entry 1 was applied without being seen: it may have written k.
        h.on_applied(1, 1);
        h.learn(info(old, "m7"));
        h.note_entries(&[entry(2, 1, &[old])]);
        h.leading(2, 1, 2);
        h.on_applied(2, 1);
        assert_eq!(
            h.on_read(OWNER, b"k", Some(&value(old))),
            answer_after(vec![Duty::OkFor(OWNER, "m7".into())])
        );
    }

    #[test]
    fn a_later_put_of_the_key_hides_an_unsure_one() {
        let (mut h, _) = new_leader_holding_old_put(true);
        h.on_applied(5, 1);
        let newer = session_for(NodeId(2), 1);
        h.note_entries(&[entry(6, 2, &[newer])]);
        h.on_applied(6, 2);
        assert_eq!(h.unsure_count(), 0);
    }

    #[test]
    fn an_unsure_put_without_side_info_withholds_the_get() {
        let old = session_for(NodeId(1), 7);
        let mut h = Handoff::new(NodeId(2));
        h.note_entries(&[entry(1, 1, &[old])]);
        h.leading(2, 0, 1);
        h.on_applied(1, 1);
        assert_eq!(
            h.on_read(OWNER, b"k", Some(&value(old))),
            ReadCheck::Withhold
        );
    }

    #[test]
    fn puts_whose_commit_came_from_their_own_leader_are_sure() {
        let (mut h, old) = new_leader_holding_old_put(true);
        // Here the commit index known at election already covered entry 5.
        h.crossings.clear();
        h.leading(2, 5, 6);
        h.on_applied(5, 1);
        assert_eq!(h.unsure_count(), 0);
        assert_eq!(
            h.on_read(OWNER, b"k", Some(&value(old))),
            answer_after(vec![])
        );
    }

    #[test]
    fn followers_learn_crossings_and_mark_the_same_puts_unsure() {
        let old = session_for(NodeId(1), 7);
        let mut f = Handoff::new(NodeId(3));
        f.learn(info(old, "m7"));
        f.note_entries(&[entry(5, 1, &[old])]);
        f.learn_crossings(&[Crossing {
            term: 2,
            from: 4,
            last: 6,
        }]);
        assert!(f.on_applied(5, 1).is_empty(), "a follower answers nothing");
        assert_eq!(f.unsure_count(), 1);
        assert_eq!(
            f.crossings(),
            vec![Crossing {
                term: 2,
                from: 4,
                last: 6
            }]
        );
        // Only later terms cross an entry: term 1's own crossing does not.
        let mut g = Handoff::new(NodeId(3));
        g.note_entries(&[entry(5, 1, &[old])]);
        g.learn_crossings(&[Crossing {
            term: 1,
            from: 0,
            last: 9,
        }]);
        g.on_applied(5, 1);
        assert_eq!(g.unsure_count(), 0);
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
    fn a_deposed_leaders_put_committed_elsewhere_is_answered_by_it() {
        let (mut h, s) = own_put_at_8();
        assert!(
            !h.on_core_answer(s, false),
            "no redirect for a put that may commit"
        );
        assert_eq!(h.orphan_count(), 1);
        // The new leader committed it and left it unsure: the proposer answers.
        assert_eq!(h.on_applied(8, 1), vec![Duty::OkOwn(3)]);
        assert_eq!(h.orphan_count(), 0);
    }

    #[test]
    fn a_lost_orphan_is_redirected_once_the_log_passes_it() {
        let (mut h, s) = own_put_at_8();
        assert!(!h.on_core_answer(s, false));
        // The new leader's log has another entry at 8.
        h.note_entries(&[entry(8, 2, &[session_for(NodeId(2), 1)])]);
        assert!(h.on_applied(7, 2).is_empty(), "not past the bound yet");
        assert_eq!(h.on_applied(8, 2), vec![Duty::RedirectOwn(3)]);
    }

    #[test]
    fn an_orphan_committed_by_this_replica_as_leader_again_is_answered_ok() {
        let (mut h, s) = own_put_at_8();
        assert!(!h.on_core_answer(s, false));
        h.leading(3, 7, 8);
        assert_eq!(h.on_applied(8, 1), vec![Duty::OkOwn(3)]);
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
    fn only_the_latest_crossings_are_kept() {
        let mut h = Handoff::new(NodeId(1));
        for term in 1..=(CROSSINGS_MAX as u64 + 5) {
            h.leading(term, term, term);
        }
        let kept = h.crossings();
        assert_eq!(kept.len(), CROSSINGS_MAX);
        assert_eq!(kept[0].term, 6);
        // A term's first crossing stands.
        h.learn_crossings(&[Crossing {
            term: 6,
            from: 0,
            last: 0,
        }]);
        assert_eq!(h.crossings()[0].from, 6);
    }
}
