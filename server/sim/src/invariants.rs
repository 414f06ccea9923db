//! Safety invariants checked while the simulation runs (TigerBeetle style: after every
//! step), over bookkeeping the simulator keeps from what the nodes write and apply:
//! election safety, log matching, leader completeness, state machine safety,
//! monotonic commit/applied within a process incarnation, and no read served by a
//! replica after its removal from the shard was applied.

use kv_shared::NodeId;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// One broken invariant: which one, and the facts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The invariant's name (stable, for tests and reports).
    pub invariant: &'static str,
    /// What was seen.
    pub detail: String,
}

fn violation(invariant: &'static str, detail: String) -> Result<(), Violation> {
    Err(Violation { invariant, detail })
}

/// A node's log of one shard, as issued to its disk: entries `base+1..` as (term, hash).
#[derive(Clone, Debug, Default)]
pub struct TrackedLog {
    base: u64,
    entries: Vec<(u64, u64)>,
}

impl TrackedLog {
    /// A log that starts after `base` (a snapshot index, or 0).
    pub fn new(base: u64, entries: Vec<(u64, u64)>) -> TrackedLog {
        TrackedLog { base, entries }
    }

    /// (term, hash) at `index`, if held.
    pub fn get(&self, index: u64) -> Option<(u64, u64)> {
        if index <= self.base {
            return None;
        }
        self.entries.get((index - self.base - 1) as usize).copied()
    }

    fn last(&self) -> u64 {
        self.base + self.entries.len() as u64
    }

    /// A snapshot at `index` replaces everything up to it.
    fn snapshot(&mut self, index: u64) {
        if index >= self.last() {
            self.entries.clear();
        } else if index > self.base {
            self.entries.drain(..(index - self.base) as usize);
        } else {
            return;
        }
        self.base = index;
    }

    /// Truncates from `first` and appends (the semantics of a WAL entries record).
    fn write(&mut self, first: u64, entries: &[(u64, u64)]) {
        if first <= self.base + 1 || first > self.last() + 1 {
            self.entries.clear();
            self.base = first - 1;
        } else {
            self.entries.truncate((first - self.base - 1) as usize);
        }
        self.entries.extend_from_slice(entries);
    }
}

/// A membership as one replica reported it.
struct ReportedMembership {
    voters: Vec<NodeId>,
    learners: Vec<NodeId>,
    by: NodeId,
}

/// What the checker knows of one committed entry.
#[derive(Clone, Copy, Debug)]
struct Committed {
    term: u64,
    hash: u64,
    /// The current term of the first node seen knowing the entry committed: the leader
    /// that committed it (the checker looks after every step, before any message of
    /// that step is delivered), so the term of the commit. Leaders of later terms must
    /// hold the entry (Raft's Leader Completeness), a leader of an earlier one need not.
    /// `u64::MAX` while only a replica dropped in the same step has reported it.
    known_in_term: u64,
}

/// All the bookkeeping for one run.
#[derive(Default)]
pub struct Checker {
    /// (shard, term) -> the leader seen in that term, over the whole run.
    leaders: BTreeMap<(u32, u64), NodeId>,
    /// (node, shard) -> its log as written.
    logs: BTreeMap<(NodeId, u32), TrackedLog>,
    /// (shard, index, term) -> (entry hash, term of the entry before it if known).
    entries: HashMap<(u32, u64, u64), (u64, Option<u64>)>,
    /// (shard, index) -> the entry committed (reported by a node's commit index) or
    /// applied there by anyone: its term and hash, and the current term of the first
    /// node seen knowing it committed.
    applied: HashMap<(u32, u64), Committed>,
    /// shard -> highest index known applied or committed.
    applied_max: BTreeMap<u32, u64>,
    /// shard -> highest index whose committed entry was taken from a node's commit index.
    committed_seen: BTreeMap<u32, u64>,
    /// (node, shard) -> (commit, applied) in the current incarnation.
    progress: BTreeMap<(NodeId, u32), (u64, u64)>,
    /// shard -> the newest membership (epoch, voters and learners) any replica applied.
    memberships: BTreeMap<u32, (u64, Vec<NodeId>)>,
    /// shard -> every node that was ever a member.
    members_ever: BTreeMap<u32, BTreeSet<NodeId>>,
    /// (node, shard) -> when a membership without `node` was first applied anywhere
    /// (cleared if a newer one adds it back).
    removed_at_ns: BTreeMap<(NodeId, u32), u64>,
    /// (shard, commit index) -> the membership a replica first reported at that commit
    /// index.
    memberships_at_commit: HashMap<(u32, u64), ReportedMembership>,
    /// (shard, node) -> the epoch at which a replica first applied a membership listing
    /// `node` as a learner (the index of the change adding it), until it is promoted.
    learner_since: BTreeMap<(u32, NodeId), u64>,
    /// Elections seen.
    pub elections: u64,
}

impl Checker {
    /// A node restarted: its volatile state starts over and its log is what recovery found.
    pub fn restarted(&mut self, node: NodeId, logs: Vec<(u32, TrackedLog)>) {
        self.progress.retain(|(n, _), _| *n != node);
        for (shard, log) in logs {
            self.logs.insert((node, shard), log);
        }
    }

    /// A replica of `shard` applied the membership `members` (voters and learners) of
    /// `epoch` at `now_ns`. Applied means committed, so from then on every node that was
    /// a member before and is not now must serve no reads of the shard.
    pub fn applied_membership(&mut self, shard: u32, epoch: u64, members: &[NodeId], now_ns: u64) {
        let ever = self.members_ever.entry(shard).or_default();
        match self.memberships.get(&shard) {
            Some((known, _)) if *known >= epoch => return,
            _ => {}
        }
        for n in ever.iter() {
            if !members.contains(n) {
                self.removed_at_ns.entry((*n, shard)).or_insert(now_ns);
            }
        }
        for n in members {
            self.removed_at_ns.remove(&(*n, shard));
            ever.insert(*n);
        }
        self.memberships.insert(shard, (epoch, members.to_vec()));
    }

    /// `node` reports `voters` and `learners` as the membership of `shard` at its commit
    /// index `commit`. The membership at an index is a function of the committed log up
    /// to it, so every replica reporting one at the same commit index reports the same
    /// (membership safety). A replica that knows none (created by a move, before the
    /// leader's snapshot) reports nothing.
    pub fn membership_at_commit(
        &mut self,
        node: NodeId,
        shard: u32,
        commit: u64,
        voters: &[NodeId],
        learners: &[NodeId],
    ) -> Result<(), Violation> {
        if voters.is_empty() && learners.is_empty() {
            return Ok(());
        }
        match self.memberships_at_commit.get(&(shard, commit)) {
            None => {
                let reported = ReportedMembership {
                    voters: voters.to_vec(),
                    learners: learners.to_vec(),
                    by: node,
                };
                self.memberships_at_commit.insert((shard, commit), reported);
                Ok(())
            }
            Some(m) if m.voters == voters && m.learners == learners => Ok(()),
            Some(m) => violation(
                "membership safety",
                format!(
                    "shard {shard}: at commit index {commit} {} had voters {:?} learners {:?}, {node} voters {voters:?} learners {learners:?}",
                    m.by, m.voters, m.learners
                ),
            ),
        }
    }

    /// A replica of `shard` applied the membership `voters` + `learners` of `epoch`,
    /// newer than any applied before (see `newest_epoch`). Returns the learners it
    /// promotes, each with the epoch of the change that added it: the caller checks
    /// with [`Checker::learner_promoted`] that each held its log up to there.
    pub fn promotions(
        &mut self,
        shard: u32,
        epoch: u64,
        voters: &[NodeId],
        learners: &[NodeId],
    ) -> Vec<(NodeId, u64)> {
        for l in learners {
            self.learner_since.entry((shard, *l)).or_insert(epoch);
        }
        let promoted: Vec<(NodeId, u64)> = voters
            .iter()
            .filter_map(|v| Some((*v, self.learner_since.remove(&(shard, *v))?)))
            .collect();
        self.learner_since
            .retain(|(s, n), _| *s != shard || learners.contains(n));
        promoted
    }

    /// The newest epoch of `shard` any replica applied (0 before any change).
    pub fn newest_epoch(&self, shard: u32) -> u64 {
        self.memberships.get(&shard).map_or(0, |m| m.0)
    }

    /// `learner` was promoted to a voter of `shard` while its replica held its log (or
    /// snapshot) only up to `held`: a leader promotes a learner only once it holds the
    /// leader's commit index, which is past `added_at`, the change that added it.
    pub fn learner_promoted(
        &self,
        shard: u32,
        learner: NodeId,
        added_at: u64,
        held: u64,
    ) -> Result<(), Violation> {
        if held >= added_at {
            return Ok(());
        }
        violation(
            "learner caught up before promotion",
            format!("shard {shard}: {learner}, added at index {added_at}, was promoted holding the log up to {held}"),
        )
    }

    /// `node` answered a linearizable read of `shard` with a value, for a request it
    /// accepted at `accepted_ns`.
    pub fn served_read(&self, node: NodeId, shard: u32, accepted_ns: u64) -> Result<(), Violation> {
        match self.removed_at_ns.get(&(node, shard)) {
            Some(&removed_ns) if removed_ns <= accepted_ns => violation(
                "removed replica serves no reads",
                format!("shard {shard}: {node} answered a read it accepted at {accepted_ns} ns, after a membership without it was applied at {removed_ns} ns (epoch {})", self.memberships.get(&shard).map_or(0, |m| m.0)),
            ),
            _ => Ok(()),
        }
    }

    /// `node` no longer holds `shard` (its replica was removed and its data dropped): a
    /// replica created there later starts from nothing.
    pub fn dropped(&mut self, node: NodeId, shard: u32) {
        self.logs.remove(&(node, shard));
        self.progress.remove(&(node, shard));
    }

    /// `node` wrote entries `first..` of `shard` (each (term, hash)) to its log.
    pub fn wrote_entries(
        &mut self,
        node: NodeId,
        shard: u32,
        first: u64,
        entries: &[(u64, u64)],
    ) -> Result<(), Violation> {
        let log = self.logs.entry((node, shard)).or_default();
        log.write(first, entries);
        for (i, (term, hash)) in entries.iter().enumerate() {
            let index = first + i as u64;
            let prev = if index == 1 {
                Some(0)
            } else {
                log.get(index - 1).map(|(t, _)| t)
            };
            match self.entries.get_mut(&(shard, index, *term)) {
                None => {
                    self.entries.insert((shard, index, *term), (*hash, prev));
                }
                Some((h, p)) => {
                    if h != hash {
                        return violation(
                            "log matching",
                            format!("shard {shard}: {node} holds a different entry at index {index} term {term} than another node"),
                        );
                    }
                    match (*p, prev) {
                        (Some(a), Some(b)) if a != b => {
                            return violation(
                                "log matching",
                                format!("shard {shard}: entry at index {index} term {term} follows term {b} on {node} but term {a} elsewhere"),
                            );
                        }
                        (None, Some(b)) => *p = Some(b),
                        _ => {}
                    }
                }
            }
        }
        Ok(())
    }

    /// `node` stored a snapshot of `shard` at `index`.
    pub fn wrote_snapshot(&mut self, node: NodeId, shard: u32, index: u64) {
        self.logs.entry((node, shard)).or_default().snapshot(index);
    }

    /// `node` reports itself leader of `shard` in `term`.
    pub fn saw_leader(&mut self, node: NodeId, shard: u32, term: u64) -> Result<(), Violation> {
        match self.leaders.get(&(shard, term)) {
            Some(l) if *l == node => return Ok(()),
            Some(l) => {
                return violation(
                    "election safety",
                    format!("shard {shard}: both {l} and {node} were leader in term {term}"),
                )
            }
            None => {}
        }
        self.leaders.insert((shard, term), node);
        self.elections += 1;
        // Leader completeness: every entry committed in an earlier term than the new
        // leader's must be in its log, unless its snapshot covers it. The term of the
        // commit, not of the entry: an entry of term 7 that a leader of term 10 commits
        // need not be in the log of a leader elected in term 9 before that.
        let log = self.logs.get(&(node, shard)).cloned().unwrap_or_default();
        let top = self.applied_max.get(&shard).copied().unwrap_or(0);
        for index in log.base + 1..=top {
            let Some(&Committed {
                term: t,
                hash: h,
                known_in_term,
            }) = self.applied.get(&(shard, index))
            else {
                continue;
            };
            if known_in_term >= term {
                continue;
            }
            if log.get(index).map(|(_, hash)| hash) != Some(h) {
                return violation(
                    "leader completeness",
                    format!("shard {shard}: new leader {node} of term {term} lacks committed entry {index} (term {t}); its log holds {:?}", log.get(index)),
                );
            }
        }
        Ok(())
    }

    /// `node`, in its term `node_term`, reports `commit` as its commit index of `shard`:
    /// every entry its log holds up to there is committed. Recorded like an apply, so
    /// state machine safety and leader completeness hold it even if no node applies it
    /// before a crash (Figure 8: a leader that counts an earlier term's entry to a
    /// majority and commits it leaves it to be overwritten by a later leader).
    pub fn committed(
        &mut self,
        node: NodeId,
        shard: u32,
        commit: u64,
        node_term: u64,
    ) -> Result<(), Violation> {
        let seen = self.committed_seen.get(&shard).copied().unwrap_or(0);
        if commit <= seen {
            return Ok(());
        }
        self.committed_seen.insert(shard, commit);
        let Some(log) = self.logs.get(&(node, shard)) else {
            return Ok(());
        };
        let held: Vec<(u64, u64, u64)> = (seen + 1..=commit)
            .filter_map(|i| log.get(i).map(|(t, h)| (i, t, h)))
            .collect();
        for (index, term, hash) in held {
            self.record(node, shard, index, (term, hash), node_term, "committed")?;
        }
        Ok(())
    }

    /// `node`, in its term `node_term`, applied an entry.
    pub fn applied(
        &mut self,
        node: NodeId,
        shard: u32,
        index: u64,
        (term, hash): (u64, u64),
        node_term: u64,
    ) -> Result<(), Violation> {
        self.record(node, shard, index, (term, hash), node_term, "applied")
    }

    fn record(
        &mut self,
        node: NodeId,
        shard: u32,
        index: u64,
        (term, hash): (u64, u64),
        node_term: u64,
        how: &str,
    ) -> Result<(), Violation> {
        match self.applied.get_mut(&(shard, index)) {
            Some(c) if c.hash != hash => violation(
                "state machine safety",
                format!("shard {shard}: {node} {how} (index {index}, term {term}) but the entry of term {} was committed or applied there", c.term),
            ),
            Some(c) => {
                // Not lowered by later reports: a replica may learn of a commit from a
                // departed member's tombstone (`MessageBody::Committed`) while its own
                // term is still below the commit's.
                if c.known_in_term == u64::MAX {
                    c.known_in_term = node_term;
                }
                Ok(())
            }
            None => {
                self.applied.insert(
                    (shard, index),
                    Committed {
                        term,
                        hash,
                        known_in_term: node_term,
                    },
                );
                let m = self.applied_max.entry(shard).or_insert(0);
                *m = (*m).max(index);
                Ok(())
            }
        }
    }

    /// Commit and applied of (node, shard) must never go back within an incarnation.
    pub fn progress(
        &mut self,
        node: NodeId,
        shard: u32,
        commit: Option<u64>,
        applied: u64,
    ) -> Result<(), Violation> {
        let p = self.progress.entry((node, shard)).or_insert((0, 0));
        if applied < p.1 {
            return violation(
                "monotonic applied",
                format!(
                    "shard {shard}: {node} applied index went from {} to {applied}",
                    p.1
                ),
            );
        }
        p.1 = applied;
        if let Some(c) = commit {
            if c < p.0 {
                return violation(
                    "monotonic commit",
                    format!(
                        "shard {shard}: {node} commit index went from {} to {c}",
                        p.0
                    ),
                );
            }
            p.0 = c;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_memberships_at_one_commit_index_are_caught() {
        let mut c = Checker::default();
        let n = |ids: &[u64]| ids.iter().map(|i| NodeId(*i)).collect::<Vec<_>>();
        c.membership_at_commit(NodeId(1), 0, 0, &n(&[1, 2, 3]), &[])
            .unwrap();
        c.membership_at_commit(NodeId(4), 0, 0, &[], &[]).unwrap();
        c.membership_at_commit(NodeId(2), 0, 0, &n(&[1, 2, 3]), &[])
            .unwrap();
        let v = c
            .membership_at_commit(NodeId(4), 0, 0, &n(&[1, 2, 3, 4]), &[])
            .unwrap_err();
        assert_eq!(v.invariant, "membership safety");
    }

    #[test]
    fn a_learner_promoted_before_it_held_its_addition_is_caught() {
        let mut c = Checker::default();
        let n = |ids: &[u64]| ids.iter().map(|i| NodeId(*i)).collect::<Vec<_>>();
        assert!(c.promotions(0, 5, &n(&[1, 2, 3]), &n(&[4])).is_empty());
        let promoted = c.promotions(0, 6, &n(&[1, 2, 3, 4]), &[]);
        assert_eq!(promoted, vec![(NodeId(4), 5)]);
        assert!(c.learner_promoted(0, NodeId(4), 5, 5).is_ok());
        let v = c.learner_promoted(0, NodeId(4), 5, 0).unwrap_err();
        assert_eq!(v.invariant, "learner caught up before promotion");
    }

    #[test]
    fn two_leaders_in_one_term_is_caught() {
        let mut c = Checker::default();
        c.saw_leader(NodeId(1), 0, 3).unwrap();
        c.saw_leader(NodeId(1), 0, 3).unwrap();
        c.saw_leader(NodeId(2), 1, 3).unwrap();
        assert_eq!(
            c.saw_leader(NodeId(2), 0, 3).unwrap_err().invariant,
            "election safety"
        );
    }

    #[test]
    fn different_entries_at_one_index_and_term_are_caught() {
        let mut c = Checker::default();
        c.wrote_entries(NodeId(1), 0, 1, &[(1, 10), (1, 11)])
            .unwrap();
        c.wrote_entries(NodeId(2), 0, 1, &[(1, 10)]).unwrap();
        let v = c.wrote_entries(NodeId(2), 0, 2, &[(1, 99)]).unwrap_err();
        assert_eq!(v.invariant, "log matching");
    }

    #[test]
    fn leader_missing_a_committed_entry_is_caught() {
        let mut c = Checker::default();
        c.wrote_entries(NodeId(1), 0, 1, &[(1, 10), (1, 11)])
            .unwrap();
        c.wrote_entries(NodeId(2), 0, 1, &[(1, 10)]).unwrap();
        c.applied(NodeId(1), 0, 1, (1, 10), 1).unwrap();
        c.applied(NodeId(1), 0, 2, (1, 11), 1).unwrap();
        c.saw_leader(NodeId(1), 0, 2).unwrap();
        assert_eq!(
            c.saw_leader(NodeId(2), 0, 3).unwrap_err().invariant,
            "leader completeness"
        );
    }

    /// An entry of term 7 that the leader of term 10 commits need not be in the log of
    /// a leader of term 9 whose votes came before that commit (Raft allows it, so the
    /// checker must); a leader of term 11 without the entry it must still catch.
    #[test]
    fn an_entry_committed_in_a_later_term_binds_only_later_leaders() {
        let mut c = Checker::default();
        c.wrote_entries(NodeId(3), 0, 1, &[(7, 70), (10, 100)])
            .unwrap();
        c.wrote_entries(NodeId(4), 0, 1, &[(7, 70), (10, 100)])
            .unwrap();
        c.wrote_entries(NodeId(2), 0, 1, &[(7, 70)]).unwrap();
        // First on the leader that committed it, then on a replica told by a tombstone
        // in a lower term: the first counts.
        c.applied(NodeId(3), 0, 2, (10, 100), 10).unwrap();
        c.committed(NodeId(4), 0, 2, 8).unwrap();
        c.saw_leader(NodeId(2), 0, 9).unwrap();
        assert_eq!(
            c.saw_leader(NodeId(2), 0, 11).unwrap_err().invariant,
            "leader completeness"
        );
    }

    #[test]
    fn a_committed_entry_missing_from_a_later_leader_is_caught() {
        // Figure 8: n1 counts (2, term 2) to a majority and commits it; n5, holding
        // (2, term 3), later wins a term. Nobody applied the entry.
        let mut c = Checker::default();
        c.wrote_entries(NodeId(1), 0, 1, &[(1, 10), (2, 20)])
            .unwrap();
        c.wrote_entries(NodeId(5), 0, 1, &[(1, 10), (3, 30)])
            .unwrap();
        c.committed(NodeId(1), 0, 2, 4).unwrap();
        c.committed(NodeId(1), 0, 2, 4).unwrap();
        assert_eq!(
            c.saw_leader(NodeId(5), 0, 5).unwrap_err().invariant,
            "leader completeness"
        );
        assert_eq!(
            c.applied(NodeId(5), 0, 2, (3, 30), 5)
                .unwrap_err()
                .invariant,
            "state machine safety"
        );
    }

    #[test]
    fn divergent_applies_and_going_back_are_caught() {
        let mut c = Checker::default();
        c.applied(NodeId(1), 0, 1, (1, 10), 1).unwrap();
        c.applied(NodeId(2), 0, 1, (1, 10), 1).unwrap();
        assert_eq!(
            c.applied(NodeId(3), 0, 1, (2, 20), 2)
                .unwrap_err()
                .invariant,
            "state machine safety"
        );
        c.progress(NodeId(1), 0, Some(5), 4).unwrap();
        assert!(c.progress(NodeId(1), 0, Some(4), 4).is_err());
        c.restarted(NodeId(1), vec![]);
        c.progress(NodeId(1), 0, Some(0), 0).unwrap();
    }

    #[test]
    fn tracked_log_truncates_and_resets_on_gaps() {
        let mut l = TrackedLog::default();
        l.write(1, &[(1, 1), (1, 2), (1, 3)]);
        l.write(2, &[(2, 9)]);
        assert_eq!(l.get(2), Some((2, 9)));
        assert_eq!(l.get(3), None);
        l.write(11, &[]);
        assert_eq!((l.base, l.get(1)), (10, None));
        l.write(11, &[(3, 1), (3, 2), (3, 3)]);
        l.snapshot(12);
        assert_eq!((l.base, l.get(12), l.get(13)), (12, None, Some((3, 3))));
        l.snapshot(20);
        assert_eq!((l.base, l.get(13)), (20, None));
    }

    #[test]
    fn a_read_a_removed_replica_accepted_after_its_removal_is_caught() {
        let mut c = Checker::default();
        let (n1, n2, n3, n4) = (NodeId(1), NodeId(2), NodeId(3), NodeId(4));
        c.applied_membership(0, 0, &[n1, n2, n3], 100);
        c.applied_membership(0, 7, &[n1, n2, n3, n4], 200);
        // n1 is removed at 300 (seen applied); an older epoch seen later changes nothing.
        c.applied_membership(0, 9, &[n2, n3, n4], 300);
        c.applied_membership(0, 7, &[n1, n2, n3, n4], 400);
        c.served_read(n1, 0, 299).unwrap();
        c.served_read(n2, 0, 500).unwrap();
        c.served_read(n1, 1, 500).unwrap();
        assert_eq!(
            c.served_read(n1, 0, 300).unwrap_err().invariant,
            "removed replica serves no reads"
        );
        // Added back at a newer epoch: it may serve again.
        c.applied_membership(0, 12, &[n1, n2, n3, n4], 600);
        c.served_read(n1, 0, 700).unwrap();
    }

    #[test]
    fn a_dropped_replica_created_again_starts_its_progress_over() {
        let mut c = Checker::default();
        c.progress(NodeId(1), 0, Some(9), 9).unwrap();
        c.dropped(NodeId(1), 0);
        c.progress(NodeId(1), 0, Some(0), 0).unwrap();
        // Without the drop, going back is a violation.
        c.progress(NodeId(1), 0, Some(9), 9).unwrap();
        assert!(c.progress(NodeId(1), 0, Some(0), 0).is_err());
    }
}
