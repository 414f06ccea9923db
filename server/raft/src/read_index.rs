//! ReadIndex bookkeeping on a leader (thesis 6.4): reads are grouped into rounds, one
//! heartbeat round confirms a whole batch, and a round confirmed by a quorum also
//! confirms every older round. A round holds the leader's own reads and the requests of
//! followers (`follower_read`), each of which stands for a batch of reads there.

use crate::quorum;
use crate::types::Index;
use kv_shared::NodeId;
use std::collections::{BTreeSet, VecDeque};

/// Whose read a round confirms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reader {
    /// The leader's own `read_index(ctx)`.
    Local(u64),
    /// A follower's ReadIndex request, answered with a ReadIndexResp.
    Remote {
        /// The follower.
        from: NodeId,
        /// Its request id.
        request: u64,
    },
}

/// One batch of reads confirmed together.
#[derive(Debug)]
struct Round {
    id: u64,
    /// Commit index when the newest read of the round arrived.
    index: Index,
    readers: Vec<Reader>,
    /// Voters that echoed this round (or a newer one).
    acks: BTreeSet<NodeId>,
    /// Heartbeats carrying this round went out; later reads start a new round, because
    /// an ack may already be on its way and would not cover them.
    sent: bool,
}

/// Pending reads of a leader.
#[derive(Debug, Default)]
pub(crate) struct ReadRounds {
    rounds: VecDeque<Round>,
    /// Reads that arrived before the leader committed an entry of its term.
    waiting: Vec<Reader>,
}

impl ReadRounds {
    /// Queues a read until the leader has committed an entry of its own term.
    pub fn wait_for_term_commit(&mut self, reader: Reader) {
        self.waiting.push(reader);
    }

    /// Takes the reads queued before the first commit of the term.
    pub fn take_waiting(&mut self) -> Vec<Reader> {
        std::mem::take(&mut self.waiting)
    }

    /// Adds a read at commit index `commit`, joining the unsent round if there is one.
    /// `next_id` yields a fresh round id when a new round is needed; `me` acks at once.
    pub fn add(
        &mut self,
        reader: Reader,
        commit: Index,
        me: NodeId,
        next_id: impl FnOnce() -> u64,
    ) {
        if let Some(r) = self.rounds.back_mut().filter(|r| !r.sent) {
            // Commit only grows; the whole round must see writes committed before its
            // newest read.
            r.index = commit;
            r.readers.push(reader);
            return;
        }
        let mut acks = BTreeSet::new();
        acks.insert(me);
        self.rounds.push_back(Round {
            id: next_id(),
            index: commit,
            readers: vec![reader],
            acks,
            sent: false,
        });
    }

    /// Reads held (waiting for the term's first commit or for a quorum); a follower's
    /// request counts as one.
    pub fn len(&self) -> usize {
        self.waiting.len() + self.rounds.iter().map(|r| r.readers.len()).sum::<usize>()
    }

    /// The round to put in heartbeats (newest), 0 if none.
    pub fn latest_round(&self) -> u64 {
        self.rounds.back().map_or(0, |r| r.id)
    }

    /// True if a round is waiting for its first heartbeat.
    pub fn has_unsent(&self) -> bool {
        self.rounds.back().is_some_and(|r| !r.sent)
    }

    /// Marks every round as sent.
    pub fn mark_sent(&mut self) {
        for r in &mut self.rounds {
            r.sent = true;
        }
    }

    /// Records that `from` echoed `round`: it acks that round and all older ones.
    pub fn ack(&mut self, from: NodeId, round: u64) {
        for r in self.rounds.iter_mut().filter(|r| r.id <= round && r.sent) {
            r.acks.insert(from);
        }
    }

    /// Pops every round up to the newest one confirmed by a quorum of `voters`.
    pub fn take_confirmed(&mut self, voters: &[NodeId]) -> Vec<(Reader, Index)> {
        let newest = self
            .rounds
            .iter()
            .rposition(|r| quorum::has_quorum(voters, |v| r.acks.contains(&v)));
        let Some(pos) = newest else { return Vec::new() };
        let mut out = Vec::new();
        for r in self.rounds.drain(..=pos) {
            out.extend(r.readers.into_iter().map(|reader| (reader, r.index)));
        }
        out
    }

    /// Every pending read, for failing them when leadership is lost.
    pub fn take_all(&mut self) -> Vec<Reader> {
        let mut out = std::mem::take(&mut self.waiting);
        for r in self.rounds.drain(..) {
            out.extend(r.readers);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Reader::Local;

    fn ids(n: &[u64]) -> Vec<NodeId> {
        n.iter().map(|i| NodeId(*i)).collect()
    }

    #[test]
    fn reads_before_a_heartbeat_share_a_round_and_take_the_newest_commit() {
        let mut r = ReadRounds::default();
        let mut next = 0;
        r.add(Local(1), 5, NodeId(1), || {
            next += 1;
            next
        });
        r.add(Local(2), 7, NodeId(1), || {
            unreachable!("joins the unsent round")
        });
        assert_eq!(r.latest_round(), 1);
        r.mark_sent();
        r.ack(NodeId(2), 1);
        let got = r.take_confirmed(&ids(&[1, 2, 3]));
        assert_eq!(got, vec![(Local(1), 7), (Local(2), 7)]);
    }

    #[test]
    fn a_read_after_the_heartbeat_needs_a_new_round() {
        let mut r = ReadRounds::default();
        r.add(Local(1), 5, NodeId(1), || 1);
        r.mark_sent();
        r.add(Local(2), 6, NodeId(1), || 2);
        assert!(r.has_unsent());
        r.ack(NodeId(2), 1);
        assert_eq!(r.take_confirmed(&ids(&[1, 2, 3])), vec![(Local(1), 5)]);
        // An ack of a round not yet sent does not count: the follower answered an older
        // heartbeat.
        r.ack(NodeId(3), 2);
        assert!(r.take_confirmed(&ids(&[1, 2, 3])).is_empty());
        r.mark_sent();
        r.ack(NodeId(3), 2);
        assert_eq!(r.take_confirmed(&ids(&[1, 2, 3])), vec![(Local(2), 6)]);
    }

    #[test]
    fn newer_round_confirms_older_ones_and_loss_fails_all() {
        let mut r = ReadRounds::default();
        r.add(Local(1), 5, NodeId(1), || 1);
        r.mark_sent();
        r.add(Local(2), 6, NodeId(1), || 2);
        r.mark_sent();
        r.ack(NodeId(2), 2);
        assert_eq!(r.take_confirmed(&ids(&[1, 2, 3])).len(), 2);
        r.wait_for_term_commit(Local(9));
        r.add(Local(3), 6, NodeId(1), || 3);
        assert_eq!(r.take_all(), vec![Local(9), Local(3)]);
    }
}
