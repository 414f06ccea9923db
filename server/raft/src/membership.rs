//! Membership changes, one step at a time (thesis 4.2-4.3), applied when the entry is
//! COMMITTED (etcd style). See docs/RAFT.md for why a leader must first commit an entry
//! of its own term before proposing a change.

use crate::log::RaftLog;
use crate::node::{Raft, RoleState};
use crate::progress::Progress;
use crate::types::{ConfChange, EntryKind, Index, Membership, Message, MessageBody, Term};
use kv_shared::limits::NODES_MAX;
use kv_shared::NodeId;

/// Applies one change to `m`, keeping the lists sorted. Errors if it makes no sense.
pub(crate) fn apply(m: &mut Membership, change: &ConfChange) -> Result<(), String> {
    let member = |m: &Membership, n: NodeId| m.voters.contains(&n) || m.learners.contains(&n);
    match *change {
        ConfChange::AddLearner(n) => {
            if n.is_none() || member(m, n) {
                return Err(format!("{n} is already a member or invalid"));
            }
            if m.voters.len() + m.learners.len() >= NODES_MAX {
                return Err(format!(
                    "a group has at most NODES_MAX = {NODES_MAX} members"
                ));
            }
            m.learners.push(n);
            m.learners.sort();
        }
        ConfChange::PromoteLearner(n) => {
            if !m.learners.contains(&n) {
                return Err(format!("{n} is not a learner"));
            }
            m.learners.retain(|x| *x != n);
            m.voters.push(n);
            m.voters.sort();
        }
        ConfChange::RemoveNode(n) => {
            if !member(m, n) {
                return Err(format!("{n} is not a member"));
            }
            m.learners.retain(|x| *x != n);
            m.voters.retain(|x| *x != n);
        }
    }
    Ok(())
}

/// Applies a committed change, skipping one that does not apply. Its leader validated
/// it, so only a corrupt or forged log holds such a change; every path that replays
/// committed changes (live commit, restart, snapshot metadata) must skip it alike, or a
/// replica would disagree with itself after a restart (and panic on remote input).
pub(crate) fn apply_committed(m: &mut Membership, change: &ConfChange) {
    let _ = apply(m, change);
}

/// The highest index the membership changes in `log` prove committed, if above its
/// commit index. A leader proposes a change only once every earlier change in its log is
/// committed (`Raft::propose_conf_change`), and Log Matching makes a replica's prefix up
/// to any entry that of the entry's leader: so the newest change past the commit index
/// vouches for the one before it, and for everything before that.
///
/// Why a replica must act on it: membership applies at commit. A replica that holds two
/// changes past its commit index (it restarted with an older commit index than the
/// Appends it acknowledged carried) would elect by voters two changes old: {1,2,4}
/// before "promote 3" and "remove 4", whose majority {2,4} shares no node with {1,3}, a
/// majority of the current voters {1,2,3}, so two leaders could win one term. Committing
/// what the log vouches for keeps every replica within one change of the newest, and
/// the majorities of two memberships one change apart always meet.
pub(crate) fn commit_vouched_by_changes(log: &RaftLog) -> Option<Index> {
    let mut changes = log
        .range(log.commit + 1, log.last_index())
        .iter()
        .filter(|e| matches!(e.kind, EntryKind::ConfChange(_)))
        .map(|e| e.index);
    let (mut vouched, mut newest) = (None, changes.next()?);
    for index in changes {
        vouched = Some(newest);
        newest = index;
    }
    vouched
}

impl Raft {
    /// Commits what the membership changes in the log vouch for
    /// ([`commit_vouched_by_changes`]), after new entries reached the log.
    pub(crate) fn commit_vouched(&mut self) {
        if let Some(index) = commit_vouched_by_changes(&self.log) {
            self.commit_to(index);
        }
    }

    /// True if `node` is listed in the membership this replica's log starts from (its
    /// snapshot's, or the bootstrap one) or named by a membership change its log holds,
    /// committed or not. A replica for which this is false for itself holds no entry from
    /// its own addition on, so no quorum ever counted it: it may forget everything but
    /// its term and vote without endangering anything committed.
    pub fn log_names(&self, node: NodeId) -> bool {
        let listed = |m: &Membership| m.voters.contains(&node) || m.learners.contains(&node);
        listed(&self.snap_membership)
            || listed(&self.membership)
            || self
                .log
                .range(self.log.snap_index + 1, self.log.last_index())
                .iter()
                .any(|e| match &e.kind {
                    EntryKind::ConfChange(
                        ConfChange::AddLearner(n)
                        | ConfChange::PromoteLearner(n)
                        | ConfChange::RemoveNode(n),
                    ) => *n == node,
                    _ => false,
                })
    }

    /// True if this replica's log holds, past `index`, a change adding `node` (as a
    /// learner), committed or not. A replica that applied its own removal at `index`
    /// while its log already holds such a re-add may have acknowledged entries of its
    /// next life in the shard: it must not drop them until that re-add commits or is
    /// overwritten.
    pub fn log_adds_after(&self, node: NodeId, index: Index) -> bool {
        self.log
            .range(index.max(self.log.snap_index) + 1, self.log.last_index())
            .iter()
            .any(
                |e| matches!(e.kind, EntryKind::ConfChange(ConfChange::AddLearner(n)) if n == node),
            )
    }

    /// The term of the entry at `index` if this replica knows it committed: what a node
    /// keeps in the tombstone of a replica that applied its own removal at `index`, to
    /// answer vote requests with [`MessageBody::Committed`].
    pub fn committed_term(&self, index: Index) -> Option<Term> {
        if index > self.log.commit {
            return None;
        }
        self.log.term(index)
    }

    /// A node whose replica left the group says the entry `(index, log_term)` is
    /// committed (it applied its own removal there). A leader that removes itself steps
    /// down right after the commit, so a voter that missed its last Append (or crashed
    /// before its commit index was durable) still counts the departed leader; with one
    /// more voter gone for good, no candidate could win in that stale view although the
    /// committed one has a live majority. If this replica holds that entry, Log Matching
    /// makes its prefix the committed one, so it adopts the commit and applies the
    /// removal. A leader commits by its own quorum and ignores this.
    pub(crate) fn learn_committed(&mut self, index: Index, log_term: Term) {
        if matches!(self.role, RoleState::Leader(_)) {
            return;
        }
        if index > self.log.commit && self.log.term(index) == Some(log_term) {
            self.commit_to(index);
        }
    }

    /// A leader asked for a vote by a node outside its membership: that node was removed
    /// without learning it (the leader that removed it stopped sending, or died, before it
    /// held its removal) and campaigns forever, refused by everyone. The leader sends it
    /// the log as a departing member until it holds and was told the current commit,
    /// which is past its removal, so that it applies the removal and goes quiet.
    pub(crate) fn replicate_to_removed_campaigner(&mut self, m: &Message) {
        if !matches!(
            m.body,
            MessageBody::PreVote { .. } | MessageBody::Vote { .. }
        ) || self.membership.voters.contains(&m.from)
            || self.membership.learners.contains(&m.from)
        {
            return;
        }
        if matches!(m.body, MessageBody::Vote { .. })
            && m.term > self.term
            && self.removed_campaigners.len() < NODES_MAX
        {
            self.removed_campaigners.insert(m.from);
        }
        self.replicate_to_departing(m.from);
    }

    /// On a leader: sends `node`, a node outside the membership, the log as a departing
    /// member until it holds the commit index (past its removal) and was told it.
    fn replicate_to_departing(&mut self, node: NodeId) {
        let (last, commit) = (self.log.last_index(), self.log.commit);
        let RoleState::Leader(ls) = &mut self.role else {
            return;
        };
        if ls.progress.contains_key(&node) {
            return;
        }
        // The probe carries the last entry: `retransmit_stalled` resends only flows with
        // data to send, so a lost empty probe would never be resent and the member would
        // wait for its removal forever.
        let mut pr = Progress::new(last.max(1));
        pr.departs_at = Some(commit);
        ls.progress.insert(node, pr);
        self.maybe_send_append(node, true);
    }

    /// A new leader replicates to the removed members that deposed a leader of this
    /// replica's with a Vote (see `Raft::removed_campaigners`): its term is at least
    /// theirs now, so they accept its Appends and learn their removal.
    pub(crate) fn replicate_to_removed_campaigners(&mut self) {
        let campaigners = std::mem::take(&mut self.removed_campaigners);
        for node in campaigners {
            if !self.membership.voters.contains(&node) && !self.membership.learners.contains(&node)
            {
                self.replicate_to_departing(node);
            }
        }
    }

    /// Applies the conf changes in `(from, to]` (just committed) to the membership and
    /// adjusts roles and the leader's progress map.
    pub(crate) fn apply_conf_changes(&mut self, from: Index, to: Index) {
        let changes: Vec<ConfChange> = self
            .log
            .range(from + 1, to)
            .iter()
            .filter_map(|e| match &e.kind {
                EntryKind::ConfChange(c) => Some(c.clone()),
                _ => None,
            })
            .collect();
        if changes.is_empty() {
            return;
        }
        for c in &changes {
            apply_committed(&mut self.membership, c);
        }
        self.events.push(crate::Event::ConfChanged {
            voters: self.membership.voters.to_vec(),
            learners: self.membership.learners.to_vec(),
            term: self.term,
        });
        let me = self.cfg.id;
        let now = self.now;
        let promotable = self.promotable();
        let members: Vec<NodeId> = self
            .membership
            .voters
            .iter()
            .chain(self.membership.learners.iter())
            .copied()
            .collect();
        match &mut self.role {
            RoleState::Leader(ls) => {
                for (id, pr) in ls.progress.iter_mut() {
                    if !members.contains(id) {
                        pr.departs_at.get_or_insert(to);
                    }
                }
                ls.progress.retain(|_, pr| !pr.departed());
                for id in members.iter().filter(|id| **id != me) {
                    // A member just added holds nothing: replicate from the start, which
                    // is a snapshot unless it is in the log's base membership (see
                    // `entries_cannot_serve`). Probing at `last + 1` would send it
                    // nothing until the next proposal.
                    // It counts as heard at its addition, so that the leader builds
                    // its snapshot image at once (`Raft::want_snapshot`) rather than
                    // after its first answer: a node coming back to a group it left
                    // answers nothing before that snapshot.
                    let added = || {
                        let mut pr = Progress::new(1);
                        pr.heard_at = now;
                        pr
                    };
                    let pr = ls.progress.get_or_insert_with(*id, added);
                    if pr.departs_at.is_some() {
                        // Removed, and added back before it stopped being replicated to
                        // as a departing member: its node dropped the earlier life (or
                        // will), so what it matched then is void.
                        *pr = added();
                    }
                }
                if ls
                    .transfer
                    .is_some_and(|(t, _)| !self.membership.voters.contains(&t))
                {
                    ls.transfer = None;
                }
                if !self.membership.voters.contains(&me) {
                    // Removed (its removal is committed): tell the others the commit
                    // index so they apply the removal too, then step down and stay quiet.
                    self.bcast_append();
                    let term = self.term;
                    self.become_follower(term, None);
                    return;
                }
                // The quorum changed: commits or reads may now be possible.
                self.quorum_moved = true;
                self.maybe_commit();
                self.check_reads();
            }
            RoleState::Candidate { .. } | RoleState::PreCandidate { .. } if !promotable => {
                let term = self.term;
                self.become_follower(term, None);
            }
            RoleState::Follower
                if self
                    .leader
                    .is_some_and(|l| !self.membership.voters.contains(&l)) =>
            {
                // The leader committed its own removal and stepped down, silent: it
                // leads nothing any more. Knowing no leader lets this follower time out
                // and elect (and keeps a caller from trusting a silent leader's node).
                self.leader = None;
                self.fail_follower_reads();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(v: &[u64], l: &[u64]) -> Membership {
        Membership {
            voters: v.iter().map(|i| NodeId(*i)).collect(),
            learners: l.iter().map(|i| NodeId(*i)).collect(),
        }
    }

    #[test]
    fn learner_then_promote_then_remove() {
        let mut x = m(&[1, 2, 3], &[]);
        apply(&mut x, &ConfChange::AddLearner(NodeId(4))).unwrap();
        assert_eq!(x, m(&[1, 2, 3], &[4]));
        apply(&mut x, &ConfChange::PromoteLearner(NodeId(4))).unwrap();
        assert_eq!(x, m(&[1, 2, 3, 4], &[]));
        apply(&mut x, &ConfChange::RemoveNode(NodeId(1))).unwrap();
        assert_eq!(x, m(&[2, 3, 4], &[]));
    }

    #[test]
    fn nonsense_changes_are_refused() {
        let mut x = m(&[1, 2, 3], &[4]);
        assert!(apply(&mut x, &ConfChange::AddLearner(NodeId(2))).is_err());
        assert!(apply(&mut x, &ConfChange::AddLearner(NodeId(0))).is_err());
        assert!(apply(&mut x, &ConfChange::PromoteLearner(NodeId(3))).is_err());
        assert!(apply(&mut x, &ConfChange::RemoveNode(NodeId(9))).is_err());
        assert_eq!(x, m(&[1, 2, 3], &[4]), "a refused change changes nothing");
    }

    #[test]
    fn a_group_never_grows_past_nodes_max() {
        let ids: Vec<u64> = (1..=NODES_MAX as u64).collect();
        let mut x = m(&ids, &[]);
        let next = NodeId(NODES_MAX as u64 + 1);
        assert!(apply(&mut x, &ConfChange::AddLearner(next)).is_err());
        apply_committed(&mut x, &ConfChange::AddLearner(next));
        assert_eq!(x, m(&ids, &[]));
    }

    /// A node named by an uncommitted change only is named: its acknowledgements may
    /// already count once that change commits elsewhere.
    #[test]
    fn log_names_sees_the_base_membership_and_every_change_in_the_log() {
        use crate::types::{Entry, HardState};
        use crate::{Config, Raft, Restored};
        let change = |index, c| Entry {
            term: 1,
            index,
            kind: EntryKind::ConfChange(c),
            data: bytes::Bytes::new(),
        };
        let raft = Raft::new(
            Config::new(NodeId(1), 1),
            Restored {
                hard_state: HardState {
                    term: 1,
                    vote: NodeId(2),
                    commit: 0,
                },
                snapshot: None,
                entries: vec![
                    change(1, ConfChange::AddLearner(NodeId(4))),
                    change(2, ConfChange::RemoveNode(NodeId(4))),
                ],
                initial_membership: m(&[1, 2, 3], &[]),
            },
        );
        assert_eq!(
            raft.membership(),
            &m(&[1, 2, 3], &[4]),
            "the removal vouches for the addition; the removal is uncommitted"
        );
        assert!(raft.log_names(NodeId(2)), "in the base membership");
        assert!(raft.log_names(NodeId(4)), "added, and removed uncommitted");
        assert!(!raft.log_names(NodeId(5)));
    }

    /// Found by the raft_step fuzz target: a member's Append committed the same
    /// AddLearner twice; the live path skipped the second, and `Raft::new` then panicked
    /// on restart (and `snapshot_meta` on compaction) replaying it.
    #[test]
    fn restart_replays_a_committed_invalid_conf_change_without_panic() {
        use crate::types::{Entry, HardState};
        use crate::{Config, Raft, Restored};
        let entries: Vec<Entry> = (1..=3)
            .map(|index| Entry {
                term: 1,
                index,
                kind: EntryKind::ConfChange(ConfChange::AddLearner(NodeId(4))),
                data: bytes::Bytes::new(),
            })
            .collect();
        let raft = Raft::new(
            Config::new(NodeId(1), 1),
            Restored {
                hard_state: HardState {
                    term: 1,
                    vote: NodeId(2),
                    commit: 3,
                },
                snapshot: None,
                entries,
                initial_membership: m(&[1, 2, 3], &[]),
            },
        );
        let mut raft = raft;
        while raft.has_ready() {
            let rd = raft.ready();
            if let Some(w) = rd.write {
                raft.on_persisted(w.id);
            }
        }
        assert_eq!(raft.snapshot_meta(3).membership, m(&[1, 2, 3], &[4]));
    }

    /// Churn seeds 1927 and 4886: a leader committed its own removal and stepped down;
    /// a voter that missed the commit still counted it. The departed node's answer to a
    /// vote request (`Committed`, from its tombstone) makes the voter apply the removal,
    /// whatever its term, but only for an entry its own log holds with that term.
    #[test]
    fn a_voter_applies_a_removal_a_departed_leader_says_committed() {
        use crate::types::{Entry, HardState};
        use crate::{Config, Raft, Restored};
        let entry = |index, kind| Entry {
            term: 1,
            index,
            kind,
            data: bytes::Bytes::new(),
        };
        let mut raft = Raft::new(
            Config::new(NodeId(2), 1),
            Restored {
                hard_state: HardState {
                    term: 3,
                    vote: NodeId::NONE,
                    commit: 1,
                },
                snapshot: None,
                entries: vec![
                    entry(1, EntryKind::Noop),
                    entry(2, EntryKind::ConfChange(ConfChange::RemoveNode(NodeId(1)))),
                ],
                initial_membership: m(&[1, 2, 3, 4], &[]),
            },
        );
        let committed = |index, log_term| Message {
            from: NodeId(1),
            to: NodeId(2),
            term: log_term,
            body: MessageBody::Committed { index, log_term },
        };
        raft.step(committed(2, 2));
        raft.step(committed(3, 1));
        assert_eq!(raft.status().hard.commit, 1, "no entry (2, 2) nor 3 here");
        assert_eq!(raft.membership(), &m(&[1, 2, 3, 4], &[]));
        raft.step(committed(2, 1));
        assert_eq!(raft.status().hard.commit, 2);
        assert_eq!(raft.status().hard.term, 3, "no term taken from it");
        assert_eq!(
            raft.membership(),
            &m(&[2, 3, 4], &[]),
            "the removal applied"
        );
        assert_eq!(raft.committed_term(2), Some(1));
        assert_eq!(raft.committed_term(3), None);
    }

    /// A promoted learner whose crash kept its newest entries but lost its commit index
    /// restarts a learner in its own view and never campaigns, while the other voters
    /// cannot win without its vote (its log is newer), and the shard has no leader for
    /// good. A voter asked by it answers with its commit, which makes it a voter again.
    #[test]
    fn a_newer_member_that_lost_its_commit_learns_it_from_a_vote_request() {
        use crate::types::{Entry, HardState};
        use crate::{Config, Raft, Restored};
        let entry = |index, term, kind| Entry {
            term,
            index,
            kind,
            data: bytes::Bytes::new(),
        };
        let entries = [
            entry(1, 1, EntryKind::Noop),
            entry(
                2,
                1,
                EntryKind::ConfChange(ConfChange::PromoteLearner(NodeId(3))),
            ),
            entry(3, 2, EntryKind::Noop),
        ];
        let restore = |id: u64, commit, held: usize| {
            Raft::new(
                Config::new(NodeId(id), id),
                Restored {
                    hard_state: HardState {
                        term: 2,
                        vote: NodeId::NONE,
                        commit,
                    },
                    snapshot: None,
                    entries: entries[..held].to_vec(),
                    initial_membership: m(&[1, 2, 4], &[3]),
                },
            )
        };
        let mut voter = restore(1, 2, 2);
        let mut learner = restore(3, 1, 3);
        assert_eq!(voter.membership(), &m(&[1, 2, 3, 4], &[]));
        assert_eq!(learner.membership(), &m(&[1, 2, 4], &[3]), "lost commit 2");
        // The learner hears no leader and probes the voters it knows.
        let mut probes = Vec::new();
        for _ in 0..100 {
            learner.tick();
            probes.extend(learner.ready().messages);
            if !probes.is_empty() {
                break;
            }
        }
        let probe = probes
            .into_iter()
            .find(|p| p.to == NodeId(1))
            .expect("a probe to node 1");
        voter.step(probe);
        let answers = voter.ready().messages;
        let committed: Vec<_> = answers
            .into_iter()
            .filter(|a| matches!(a.body, MessageBody::Committed { .. }))
            .collect();
        assert_eq!(committed.len(), 1, "the voter tells its commit");
        for c in committed {
            learner.step(c);
        }
        assert_eq!(learner.status().hard.commit, 2);
        assert_eq!(
            learner.membership(),
            &m(&[1, 2, 3, 4], &[]),
            "a voter again"
        );
        assert!(learner.promotable());
    }

    /// Log of a replica that holds "promote 3" and "remove 4" past commit index 1, over
    /// voters {1,2,4} and learner 3.
    fn two_changes_past_commit(id: u64, held: usize) -> crate::Raft {
        use crate::types::{Entry, HardState};
        use crate::{Config, Raft, Restored};
        let entry = |index, kind| Entry {
            term: 1,
            index,
            kind,
            data: bytes::Bytes::new(),
        };
        let entries = [
            entry(1, EntryKind::Noop),
            entry(
                2,
                EntryKind::ConfChange(ConfChange::PromoteLearner(NodeId(3))),
            ),
            entry(3, EntryKind::ConfChange(ConfChange::RemoveNode(NodeId(4)))),
        ];
        Raft::new(
            Config::new(NodeId(id), id),
            Restored {
                hard_state: HardState {
                    term: 1,
                    vote: NodeId::NONE,
                    commit: 1,
                },
                snapshot: None,
                entries: entries[..held].to_vec(),
                initial_membership: m(&[1, 2, 4], &[3]),
            },
        )
    }

    /// Node 2 restarted with commit index 1 although its log holds two changes past it.
    /// Electing by its committed voters {1,2,4}, it could win with {2,4} while another
    /// candidate wins the same term with {1,3}, a majority of the current voters
    /// {1,2,3}. "Remove 4" vouches that "promote 3" is committed: node 2 elects by
    /// {1,2,3,4}, where {2,4} is no majority.
    #[test]
    fn a_replica_restarted_two_changes_past_its_commit_commits_what_the_newer_vouches_for() {
        use crate::node::RoleState;
        let mut r = two_changes_past_commit(2, 3);
        assert_eq!(
            r.status().hard.commit,
            2,
            "the removal vouches for the promotion"
        );
        assert_eq!(r.membership(), &m(&[1, 2, 3, 4], &[]));
        r.campaign(false);
        let term = r.term;
        r.record_vote(NodeId(2), term, false, true);
        r.record_vote(NodeId(4), term, false, true);
        assert!(
            matches!(r.role, RoleState::Candidate { .. }),
            "{{2,4}} is no majority of {{1,2,3,4}}"
        );
        r.record_vote(NodeId(3), term, false, true);
        assert!(matches!(r.role, RoleState::Leader(_)), "{{2,3,4}} is one");
    }

    /// The same two changes reaching a follower in one Append whose commit index lags
    /// (a leader's commit index is never that low, but nothing in a follower may rest on
    /// it): the follower commits the promotion all the same. One change alone vouches
    /// for nothing past the commit index.
    #[test]
    fn a_follower_appending_a_change_commits_the_change_before_it() {
        use crate::types::{Message, MessageBody};
        let mut r = two_changes_past_commit(2, 1);
        let leader = two_changes_past_commit(1, 3);
        let append = |entries: std::ops::Range<u64>| Message {
            from: NodeId(1),
            to: NodeId(2),
            term: 1,
            body: MessageBody::Append {
                prev_index: entries.start - 1,
                prev_term: 1,
                entries: leader.log.range(entries.start, entries.end - 1).to_vec(),
                commit: 1,
            },
        };
        r.step(append(2..3));
        assert_eq!(
            r.status().hard.commit,
            1,
            "a lone change vouches for nothing"
        );
        assert_eq!(r.membership(), &m(&[1, 2, 4], &[3]));
        r.step(append(3..4));
        assert_eq!(r.status().hard.commit, 2);
        assert_eq!(r.membership(), &m(&[1, 2, 3, 4], &[]));
    }
}
