//! Validation of peer messages before the protocol sees them: a message is remote input,
//! so every field the protocol computes with or stores is checked here once, and a
//! message that fails is dropped and counted by reason instead of reaching an assertion
//! or an overflow. The checks are stateless; those that need the replica's state
//! (snapshot sizes across groups, the state machine image) live where that state is.

use crate::types::{
    AppendHeader, ConfChange, Entry, EntryKind, Membership, Message, MessageBody, SnapshotMeta,
};
use kv_shared::limits::{
    NODES_MAX, RAFT_INDEX_MAX, RAFT_TERM_MAX, SNAPSHOT_CHUNK_BYTES_MAX, SNAPSHOT_IMAGE_BYTES_MAX,
};

/// Why a peer message (or part of one) was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Refusal {
    /// A term above `RAFT_TERM_MAX`, or a log term above the message's own term.
    TermOutOfRange,
    /// A log index or byte offset above `RAFT_INDEX_MAX`.
    IndexOutOfRange,
    /// Entries not contiguous after `prev_index`, with decreasing terms, or a payload
    /// on an entry that carries none (no-op, conf change). Payload sizes are bounded by
    /// the datagram that carried them.
    EntriesMalformed,
    /// A conf change naming node 0.
    ConfChangeInvalid,
    /// Snapshot membership that is empty, unsorted, repeated or larger than `NODES_MAX`.
    SnapshotMetaInvalid,
    /// A snapshot chunk past its announced total, larger than `SNAPSHOT_CHUNK_BYTES_MAX`,
    /// or a total above `SNAPSHOT_IMAGE_BYTES_MAX`.
    SnapshotSizeInvalid,
    /// A snapshot transfer refused because the node reassembles too many bytes already
    /// (`SNAPSHOT_RECEIVE_BYTES_MAX`; counted by the node, which sees every group).
    SnapshotReceiveFull,
    /// A complete snapshot whose state machine image failed `Config::snapshot_image_check`.
    SnapshotImageInvalid,
}

impl Refusal {
    /// Every reason, in counter order.
    pub const ALL: [Refusal; 8] = [
        Refusal::TermOutOfRange,
        Refusal::IndexOutOfRange,
        Refusal::EntriesMalformed,
        Refusal::ConfChangeInvalid,
        Refusal::SnapshotMetaInvalid,
        Refusal::SnapshotSizeInvalid,
        Refusal::SnapshotReceiveFull,
        Refusal::SnapshotImageInvalid,
    ];

    /// A stable snake_case name for status output and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Refusal::TermOutOfRange => "term_out_of_range",
            Refusal::IndexOutOfRange => "index_out_of_range",
            Refusal::EntriesMalformed => "entries_malformed",
            Refusal::ConfChangeInvalid => "conf_change_invalid",
            Refusal::SnapshotMetaInvalid => "snapshot_meta_invalid",
            Refusal::SnapshotSizeInvalid => "snapshot_size_invalid",
            Refusal::SnapshotReceiveFull => "snapshot_receive_full",
            Refusal::SnapshotImageInvalid => "snapshot_image_invalid",
        }
    }
}

/// Counts of refused messages, one per [`Refusal`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Refusals([u64; Refusal::ALL.len()]);

impl Refusals {
    /// Counts one refusal.
    pub fn count(&mut self, reason: Refusal) {
        let slot = &mut self.0[reason as usize];
        *slot = slot.saturating_add(1);
    }

    /// How many were refused for `reason`.
    pub fn get(&self, reason: Refusal) -> u64 {
        self.0[reason as usize]
    }

    /// Adds another set of counts to these.
    pub fn add(&mut self, other: &Refusals) {
        for (mine, theirs) in self.0.iter_mut().zip(other.0) {
            *mine = mine.saturating_add(theirs);
        }
    }

    /// (reason, count) for every reason.
    pub fn iter(&self) -> impl Iterator<Item = (Refusal, u64)> + '_ {
        Refusal::ALL.iter().map(|r| (*r, self.get(*r)))
    }

    /// Refusals of every reason together.
    pub fn total(&self) -> u64 {
        self.0.iter().fold(0u64, |a, b| a.saturating_add(*b))
    }
}

/// Checks everything in `msg` that does not depend on the receiver's state.
pub fn check_message(msg: &Message) -> Result<(), Refusal> {
    let term = msg.term;
    if term > RAFT_TERM_MAX {
        return Err(Refusal::TermOutOfRange);
    }
    let log_term = |t: u64| {
        if t > term {
            Err(Refusal::TermOutOfRange)
        } else {
            Ok(())
        }
    };
    let index = |i: u64| {
        if i > RAFT_INDEX_MAX {
            Err(Refusal::IndexOutOfRange)
        } else {
            Ok(())
        }
    };
    match &msg.body {
        MessageBody::PreVote {
            last_index,
            last_term,
        }
        | MessageBody::Vote {
            last_index,
            last_term,
            ..
        } => {
            index(*last_index)?;
            log_term(*last_term)
        }
        MessageBody::PreVoteResp { .. }
        | MessageBody::VoteResp { .. }
        | MessageBody::HeartbeatResp { .. }
        | MessageBody::ReadIndex { .. }
        | MessageBody::TimeoutNow => Ok(()),
        MessageBody::ReadIndexResp { index: i, .. } => index(*i),
        MessageBody::Append {
            prev_index,
            prev_term,
            entries,
            commit,
        } => check_append_fields(term, *prev_index, *prev_term, entries, *commit),
        MessageBody::AppendResp {
            index: i,
            hint_index,
            hint_term,
            ..
        } => {
            index(*i)?;
            index(*hint_index)?;
            log_term(*hint_term)
        }
        MessageBody::Heartbeat { commit, .. } => index(*commit),
        MessageBody::Committed {
            index: i,
            log_term: t,
        } => {
            index(*i)?;
            log_term(*t)
        }
        MessageBody::InstallSnapshot {
            meta,
            offset,
            total_len,
            chunk,
        } => {
            check_snapshot_meta(term, meta)?;
            let end = offset.checked_add(chunk.len() as u64);
            let fits = end.is_some_and(|end| end <= *total_len);
            if !fits
                || *total_len > SNAPSHOT_IMAGE_BYTES_MAX
                || chunk.len() > SNAPSHOT_CHUNK_BYTES_MAX
            {
                return Err(Refusal::SnapshotSizeInvalid);
            }
            Ok(())
        }
        MessageBody::InstallSnapshotResp {
            snapshot_index,
            received,
            ..
        } => {
            index(*snapshot_index)?;
            index(*received)
        }
    }
}

/// [`check_message`] of an Append handed in by parts (`Raft::step_append`).
pub(crate) fn check_append(h: &AppendHeader, entries: &[Entry]) -> Result<(), Refusal> {
    if h.term > RAFT_TERM_MAX {
        return Err(Refusal::TermOutOfRange);
    }
    check_append_fields(h.term, h.prev_index, h.prev_term, entries, h.commit)
}

/// An Append's fields of a message of a term already checked.
fn check_append_fields(
    term: u64,
    prev_index: u64,
    prev_term: u64,
    entries: &[Entry],
    commit: u64,
) -> Result<(), Refusal> {
    for i in [
        prev_index,
        commit,
        prev_index.saturating_add(entries.len() as u64),
    ] {
        if i > RAFT_INDEX_MAX {
            return Err(Refusal::IndexOutOfRange);
        }
    }
    if prev_term > term {
        return Err(Refusal::TermOutOfRange);
    }
    check_entries(term, prev_index, prev_term, entries)
}

/// Entries must continue `prev_index` one by one, with terms from `prev_term` up to
/// the message's term, and carry a payload only as commands (whose size the datagram
/// bounds: a batch of writes may exceed `ENTRY_BYTES_MAX` by its length prefix).
fn check_entries(
    term: u64,
    prev_index: u64,
    prev_term: u64,
    entries: &[Entry],
) -> Result<(), Refusal> {
    let mut expected_index = prev_index;
    let mut floor_term = prev_term;
    for e in entries {
        expected_index += 1; // cannot overflow: prev_index + len was checked
        if e.index != expected_index || e.term < floor_term || e.term > term {
            return Err(Refusal::EntriesMalformed);
        }
        floor_term = e.term;
        match &e.kind {
            EntryKind::Command => {}
            EntryKind::Noop if e.data.is_empty() => {}
            EntryKind::ConfChange(c) if e.data.is_empty() => check_conf_change(c)?,
            _ => return Err(Refusal::EntriesMalformed),
        }
    }
    Ok(())
}

fn check_conf_change(change: &ConfChange) -> Result<(), Refusal> {
    let node = match change {
        ConfChange::AddLearner(n) | ConfChange::PromoteLearner(n) | ConfChange::RemoveNode(n) => n,
    };
    if node.is_none() {
        return Err(Refusal::ConfChangeInvalid);
    }
    Ok(())
}

fn check_snapshot_meta(term: u64, meta: &SnapshotMeta) -> Result<(), Refusal> {
    if meta.index > RAFT_INDEX_MAX {
        return Err(Refusal::IndexOutOfRange);
    }
    if meta.term > term {
        return Err(Refusal::TermOutOfRange);
    }
    if !membership_is_valid(&meta.membership) {
        return Err(Refusal::SnapshotMetaInvalid);
    }
    Ok(())
}

/// A membership a replica can adopt: at least one voter, both lists strictly ascending
/// (sorted, no repeats), no node 0, no node in both, at most `NODES_MAX` members.
pub(crate) fn membership_is_valid(m: &Membership) -> bool {
    let ascending = |ids: &[kv_shared::NodeId]| ids.windows(2).all(|w| w[0] < w[1]);
    !m.voters.is_empty()
        && m.voters.len() + m.learners.len() <= NODES_MAX
        && ascending(&m.voters)
        && ascending(&m.learners)
        && m.voters.iter().chain(&m.learners).all(|n| !n.is_none())
        && m.learners.iter().all(|l| !m.voters.contains(l))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use kv_shared::NodeId;

    fn msg(term: u64, body: MessageBody) -> Message {
        Message {
            from: NodeId(2),
            to: NodeId(1),
            term,
            body,
        }
    }

    fn entry(index: u64, term: u64) -> Entry {
        Entry {
            term,
            index,
            kind: EntryKind::Command,
            data: Bytes::from_static(b"x"),
        }
    }

    fn append(term: u64, prev_index: u64, prev_term: u64, entries: Vec<Entry>) -> Message {
        msg(
            term,
            MessageBody::Append {
                prev_index,
                prev_term,
                entries,
                commit: 0,
            },
        )
    }

    fn chunk(term: u64, meta: SnapshotMeta, offset: u64, total_len: u64, len: usize) -> Message {
        msg(
            term,
            MessageBody::InstallSnapshot {
                meta,
                offset,
                total_len,
                chunk: Bytes::from(vec![0; len]),
            },
        )
    }

    fn meta(voters: &[u64], learners: &[u64]) -> SnapshotMeta {
        SnapshotMeta {
            index: 5,
            term: 2,
            membership: Membership {
                voters: voters.iter().map(|v| NodeId(*v)).collect(),
                learners: learners.iter().map(|v| NodeId(*v)).collect(),
            },
        }
    }

    #[test]
    fn term_of_u64_max_is_refused() {
        let heartbeat = MessageBody::Heartbeat {
            commit: 0,
            read_round: 0,
        };
        assert_eq!(
            check_message(&msg(u64::MAX, heartbeat.clone())),
            Err(Refusal::TermOutOfRange)
        );
        assert_eq!(check_message(&msg(RAFT_TERM_MAX, heartbeat)), Ok(()));
    }

    #[test]
    fn index_near_u64_max_is_refused() {
        let resp = MessageBody::AppendResp {
            reject: true,
            index: 3,
            hint_index: u64::MAX,
            hint_term: 0,
        };
        assert_eq!(check_message(&msg(3, resp)), Err(Refusal::IndexOutOfRange));
        let at_end = append(3, RAFT_INDEX_MAX, 1, vec![entry(RAFT_INDEX_MAX + 1, 3)]);
        assert_eq!(check_message(&at_end), Err(Refusal::IndexOutOfRange));
    }

    #[test]
    fn entries_must_be_contiguous_with_rising_terms_within_the_message_term() {
        let ok = append(3, 4, 2, vec![entry(5, 2), entry(6, 3)]);
        assert_eq!(check_message(&ok), Ok(()));
        for bad in [
            append(3, 4, 2, vec![entry(6, 2)]),
            append(3, 4, 2, vec![entry(5, 3), entry(6, 2)]),
            append(3, 4, 2, vec![entry(5, 4)]),
            append(3, 4, 2, vec![entry(5, 1)]),
        ] {
            assert_eq!(
                check_message(&bad),
                Err(Refusal::EntriesMalformed),
                "{bad:?}"
            );
        }
        let mut noop_with_data = entry(5, 3);
        noop_with_data.kind = EntryKind::Noop;
        assert_eq!(
            check_message(&append(3, 4, 2, vec![noop_with_data])),
            Err(Refusal::EntriesMalformed)
        );
    }

    #[test]
    fn conf_change_of_node_zero_is_refused() {
        let e = Entry {
            term: 3,
            index: 5,
            kind: EntryKind::ConfChange(ConfChange::AddLearner(NodeId::NONE)),
            data: Bytes::new(),
        };
        assert_eq!(
            check_message(&append(3, 4, 2, vec![e])),
            Err(Refusal::ConfChangeInvalid)
        );
    }

    #[test]
    fn snapshot_chunks_stay_within_the_announced_and_global_sizes() {
        assert_eq!(
            check_message(&chunk(3, meta(&[1, 2], &[]), 0, 10, 10)),
            Ok(())
        );
        for (offset, total, len) in [
            (5, 10, 6),
            (u64::MAX, 10, 1),
            (0, SNAPSHOT_IMAGE_BYTES_MAX + 1, 1),
            (0, 1 << 20, SNAPSHOT_CHUNK_BYTES_MAX + 1),
        ] {
            assert_eq!(
                check_message(&chunk(3, meta(&[1, 2], &[]), offset, total, len)),
                Err(Refusal::SnapshotSizeInvalid),
                "offset {offset} total {total} len {len}"
            );
        }
    }

    #[test]
    fn snapshot_membership_must_be_adoptable() {
        for (voters, learners) in [
            (&[][..], &[][..]),
            (&[2, 1][..], &[][..]),
            (&[1, 1][..], &[][..]),
            (&[0, 1][..], &[][..]),
            (&[1, 2][..], &[2][..]),
            (
                &(1..=(NODES_MAX as u64 + 1)).collect::<Vec<_>>()[..],
                &[][..],
            ),
        ] {
            assert_eq!(
                check_message(&chunk(3, meta(voters, learners), 0, 1, 1)),
                Err(Refusal::SnapshotMetaInvalid),
                "{voters:?} {learners:?}"
            );
        }
        let mut newer = meta(&[1], &[]);
        newer.term = 4;
        assert_eq!(
            check_message(&chunk(3, newer, 0, 1, 1)),
            Err(Refusal::TermOutOfRange)
        );
    }
}
