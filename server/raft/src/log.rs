//! The in-memory Raft log of one replica: a compacted prefix (the snapshot point) and the
//! entries after it, plus the commit/applied/persisted cursors and the part not yet handed
//! to the caller for writing. Pure bookkeeping; the protocol decisions live in `node.rs`.

use crate::types::{Entry, Index, Term};

/// The log and its cursors. Invariants (checked by `assert_invariants` in tests):
/// `applied <= commit`, `snap_index <= commit <= last_index`, entries are contiguous after
/// `snap_index`, terms never decrease.
#[derive(Debug)]
pub(crate) struct RaftLog {
    /// Last index covered by the latest snapshot (0 if none).
    pub snap_index: Index,
    /// Term of `snap_index`.
    pub snap_term: Term,
    /// Entries `snap_index + 1 ..= last_index()`.
    entries: Vec<Entry>,
    /// Highest index known committed.
    pub commit: Index,
    /// Highest index handed out for applying (or restored from a snapshot).
    pub applied: Index,
    /// Highest index durable on this node AND equal in memory: entries up to here may be
    /// counted by a leader for itself, and handed out for applying by a follower (a
    /// leader applies up to its commit index, durable on a quorum).
    pub persisted: Index,
    /// First index not yet part of an emitted `Write`.
    pub unstable_from: Index,
}

impl RaftLog {
    /// A log restored from a snapshot point and the durable entries after it.
    pub fn restore(snap_index: Index, snap_term: Term, entries: Vec<Entry>, commit: Index) -> Self {
        for (i, e) in entries.iter().enumerate() {
            assert_eq!(
                e.index,
                snap_index + 1 + i as u64,
                "restored entries are not contiguous"
            );
        }
        let last = snap_index + entries.len() as u64;
        RaftLog {
            snap_index,
            snap_term,
            entries,
            commit: commit.clamp(snap_index, last),
            applied: snap_index,
            persisted: last,
            unstable_from: last + 1,
        }
    }

    /// First index still held as an entry.
    pub fn first_index(&self) -> Index {
        self.snap_index + 1
    }

    /// Last index (the snapshot index if no entries).
    pub fn last_index(&self) -> Index {
        self.snap_index + self.entries.len() as u64
    }

    /// Term of the last entry.
    pub fn last_term(&self) -> Term {
        self.entries.last().map_or(self.snap_term, |e| e.term)
    }

    /// Term at `index`, `None` if compacted away or beyond the end.
    pub fn term(&self, index: Index) -> Option<Term> {
        if index == self.snap_index {
            return Some(self.snap_term);
        }
        if index < self.snap_index || index > self.last_index() {
            return None;
        }
        Some(self.entries[(index - self.snap_index - 1) as usize].term)
    }

    /// True if the log holds `index` with `term`.
    pub fn matches(&self, index: Index, term: Term) -> bool {
        self.term(index) == Some(term)
    }

    /// Entries `lo..=hi` (clamped to what is held).
    pub fn range(&self, lo: Index, hi: Index) -> &[Entry] {
        let lo = lo.max(self.first_index());
        let hi = hi.min(self.last_index());
        if lo > hi {
            return &[];
        }
        let off = self.snap_index + 1;
        &self.entries[(lo - off) as usize..=(hi - off) as usize]
    }

    /// How many entries from `lo` on fit in `bytes_max` of payload, but at least one if
    /// any: the entries of an Append starting at `lo`.
    pub fn batch_len(&self, lo: Index, bytes_max: usize) -> usize {
        self.range_within(lo, self.last_index(), bytes_max).len()
    }

    /// The longest prefix of `range(lo, hi)` whose payload fits in `bytes_max`, but at
    /// least one entry if the range holds any.
    pub fn range_within(&self, lo: Index, hi: Index, bytes_max: usize) -> &[Entry] {
        let range = self.range(lo, hi);
        let mut bytes = 0usize;
        let fit = range
            .iter()
            .take_while(|e| {
                bytes += e.data.len();
                bytes <= bytes_max
            })
            .count();
        &range[..fit.max(1).min(range.len())]
    }

    /// Thesis 5.4.1 "at least as up-to-date" comparison for votes.
    pub fn is_up_to_date(&self, last_index: Index, last_term: Term) -> bool {
        last_term > self.last_term()
            || (last_term == self.last_term() && last_index >= self.last_index())
    }

    /// Largest index `<= index` whose term is `<= term`, and that term (0 if unknown
    /// because compacted). Used on both sides of fast backtracking: the follower names a
    /// point that may match, the leader skips whole terms it cannot share.
    pub fn find_conflict_by_term(&self, index: Index, term: Term) -> (Index, Term) {
        let mut i = index.min(self.last_index());
        loop {
            match self.term(i) {
                Some(t) if t > term && i > 0 => i -= 1,
                Some(t) => return (i, t),
                None => return (i, 0),
            }
        }
    }

    /// Appends `entries` (contiguous, first index `<= last_index() + 1`), replacing any
    /// suffix from the first index on. Returns the index truncated from, if a suffix was
    /// dropped.
    #[cfg(test)]
    pub fn append(&mut self, entries: &[Entry]) -> Option<Index> {
        let truncated = self.make_room(entries.first()?.index);
        self.entries.extend_from_slice(entries);
        truncated
    }

    /// Appends `e`, the entry after the last, moved in: a leader's proposal, which it
    /// has no other use for (a clone costs a reference count, and the first clone of a
    /// payload made from a vector an allocation).
    pub fn push(&mut self, e: Entry) {
        assert_eq!(e.index, self.last_index() + 1, "push out of order");
        self.unstable_from = self.unstable_from.min(e.index);
        self.entries.push(e);
    }

    /// [`RaftLog::append`] of entries the caller owns: moved in, not cloned (a follower
    /// appends what an Append carried, which it has no other use for), leaving `entries`
    /// empty with its room.
    pub fn append_owned(&mut self, entries: &mut Vec<Entry>) -> Option<Index> {
        let truncated = self.make_room(entries.first()?.index);
        self.entries.append(entries);
        truncated
    }

    /// Drops the suffix from `first` on (if held) so that entries from `first` can be
    /// appended; returns `first` if that dropped any.
    fn make_room(&mut self, first: Index) -> Option<Index> {
        assert!(
            first > self.snap_index && first <= self.last_index() + 1,
            "append out of range"
        );
        assert!(
            first > self.commit,
            "append would overwrite committed index {}",
            self.commit
        );
        let truncated = (first <= self.last_index()).then_some(first);
        self.entries
            .truncate((first - self.snap_index - 1) as usize);
        self.unstable_from = self.unstable_from.min(first);
        truncated
    }

    /// Appends the entries not yet handed out in a `Write` to `out`; marks them as
    /// handed out.
    pub fn take_unstable_into(&mut self, out: &mut Vec<Entry>) {
        out.extend_from_slice(self.range(self.unstable_from, self.last_index()));
        self.unstable_from = self.last_index() + 1;
    }

    /// The first and last index of the entries not yet handed out in a `Write`, if any;
    /// marks them as handed out (the `Write` names them, `entries_by_reference`).
    pub fn take_unstable_range(&mut self) -> Option<(Index, Index)> {
        let last = self.last_index();
        let first = std::mem::replace(&mut self.unstable_from, last + 1);
        (first <= last).then_some((first, last))
    }

    /// True if some entries were never handed out in a `Write`.
    pub fn has_unstable(&self) -> bool {
        self.unstable_from <= self.last_index()
    }

    /// Drops entries up to `index` (which must be held or be the snapshot point).
    pub fn compact(&mut self, index: Index, term: Term) {
        assert!(index <= self.last_index(), "compact beyond the log");
        let drop = (index - self.snap_index) as usize;
        self.entries.drain(..drop);
        self.snap_index = index;
        self.snap_term = term;
    }

    /// Replaces the whole log by a snapshot point (received from a leader).
    pub fn reset_to_snapshot(&mut self, index: Index, term: Term) {
        self.entries.clear();
        self.snap_index = index;
        self.snap_term = term;
        self.commit = index;
        self.unstable_from = index + 1;
    }

    /// Checks the structural invariants; called after every step in tests.
    #[cfg(test)]
    pub fn assert_invariants(&self) {
        assert!(self.snap_index <= self.commit, "commit below snapshot");
        assert!(
            self.applied <= self.commit,
            "applied {} above commit {}",
            self.applied,
            self.commit
        );
        assert!(
            self.commit <= self.last_index(),
            "commit {} beyond last {}",
            self.commit,
            self.last_index()
        );
        let mut prev_term = self.snap_term;
        for (i, e) in self.entries.iter().enumerate() {
            assert_eq!(e.index, self.snap_index + 1 + i as u64);
            assert!(e.term >= prev_term, "terms decrease at {}", e.index);
            prev_term = e.term;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::EntryKind;
    use bytes::Bytes;

    fn ent(index: Index, term: Term) -> Entry {
        Entry {
            term,
            index,
            kind: EntryKind::Command,
            data: Bytes::from_static(b"xy"),
        }
    }

    fn log_of(terms: &[Term]) -> RaftLog {
        let entries = terms
            .iter()
            .enumerate()
            .map(|(i, t)| ent(i as u64 + 1, *t))
            .collect();
        RaftLog::restore(0, 0, entries, 0)
    }

    #[test]
    fn range_within_stops_at_the_byte_limit_but_yields_one_entry() {
        // Every entry of `log_of` carries 2 payload bytes.
        let log = log_of(&[1, 1, 1, 1]);
        assert_eq!(log.range_within(1, 4, 4).len(), 2, "exactly full");
        assert_eq!(
            log.range_within(1, 4, 5).len(),
            2,
            "a third would be one byte over"
        );
        assert_eq!(
            log.range_within(1, 4, 1).len(),
            1,
            "one entry larger than the limit"
        );
        assert_eq!(
            log.range_within(2, 3, 100).len(),
            2,
            "the range bounds it too"
        );
        assert!(log.range_within(5, 9, 100).is_empty());
    }

    #[test]
    fn term_lookup_respects_snapshot_and_end() {
        let mut log = log_of(&[1, 1, 2, 3]);
        assert_eq!(log.term(0), Some(0));
        assert_eq!(log.term(4), Some(3));
        assert_eq!(log.term(5), None);
        log.commit = 3;
        log.applied = 3;
        log.compact(2, 1);
        assert_eq!(log.term(1), None);
        assert_eq!(log.term(2), Some(1));
        assert_eq!(log.first_index(), 3);
        assert_eq!(log.last_index(), 4);
        log.assert_invariants();
    }

    #[test]
    fn append_truncates_conflicting_suffix_and_tracks_unstable() {
        let mut log = log_of(&[1, 1, 2, 2]);
        assert!(!log.has_unstable());
        assert_eq!(log.append(&[ent(3, 3)]), Some(3));
        assert_eq!(log.last_index(), 3);
        assert_eq!(log.unstable_from, 3);
        let mut out = vec![ent(9, 9)];
        log.take_unstable_into(&mut out);
        assert_eq!(
            out,
            vec![ent(9, 9), ent(3, 3)],
            "appended after what it held"
        );
        assert_eq!(log.append(&[ent(4, 3)]), None);
        out.clear();
        log.take_unstable_into(&mut out);
        assert_eq!(out, vec![ent(4, 3)]);
        log.take_unstable_into(&mut out);
        assert_eq!(out.len(), 1, "nothing is handed out twice");
    }

    #[test]
    fn append_owned_is_append_without_the_copy() {
        for new in [vec![ent(3, 3), ent(4, 3)], vec![ent(5, 2)], Vec::new()] {
            let (mut by_ref, mut owned) = (log_of(&[1, 1, 2, 2]), log_of(&[1, 1, 2, 2]));
            let mut moved = new.clone();
            assert_eq!(by_ref.append(&new), owned.append_owned(&mut moved));
            assert!(moved.is_empty(), "the entries are moved out");
            assert_eq!(by_ref.range(1, 10), owned.range(1, 10));
            assert_eq!(by_ref.unstable_from, owned.unstable_from);
            owned.assert_invariants();
        }
    }

    #[test]
    fn push_is_append_of_one() {
        let (mut by_ref, mut pushed) = (log_of(&[1, 1]), log_of(&[1, 1]));
        by_ref.take_unstable_into(&mut Vec::new());
        pushed.take_unstable_into(&mut Vec::new());
        by_ref.append(&[ent(3, 2)]);
        pushed.push(ent(3, 2));
        assert_eq!(by_ref.range(1, 10), pushed.range(1, 10));
        assert_eq!(
            pushed.unstable_from, 3,
            "the pushed entry waits for a write"
        );
        pushed.assert_invariants();
    }

    #[test]
    #[should_panic(expected = "push out of order")]
    fn push_refuses_a_gap() {
        log_of(&[1, 1]).push(ent(4, 1));
    }

    #[test]
    #[should_panic(expected = "overwrite committed")]
    fn append_never_overwrites_committed() {
        let mut log = log_of(&[1, 1]);
        log.commit = 2;
        log.append(&[ent(2, 2)]);
    }

    #[test]
    fn batch_is_bounded_by_bytes_but_never_empty() {
        let log = log_of(&[1, 1, 1, 1]);
        assert_eq!(log.batch_len(1, 0), 1);
        assert_eq!(log.batch_len(1, 4), 2);
        assert_eq!(log.batch_len(3, 100), 2);
        assert_eq!(log.batch_len(5, 100), 0);
    }

    #[test]
    fn find_conflict_by_term_skips_whole_terms() {
        let log = log_of(&[1, 1, 2, 2, 4, 4]);
        assert_eq!(log.find_conflict_by_term(6, 3), (4, 2));
        assert_eq!(log.find_conflict_by_term(6, 4), (6, 4));
        assert_eq!(log.find_conflict_by_term(10, 1), (2, 1));
        assert_eq!(log.find_conflict_by_term(6, 0), (0, 0));
    }

    #[test]
    fn up_to_date_compares_term_then_index() {
        let log = log_of(&[1, 2]);
        assert!(log.is_up_to_date(2, 2));
        assert!(log.is_up_to_date(1, 3));
        assert!(!log.is_up_to_date(5, 1));
        assert!(!log.is_up_to_date(1, 2));
    }
}
