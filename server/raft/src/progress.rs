//! What a leader knows about one follower: how far its log matches, where to send next,
//! and which of the three sending modes it is in (probe, replicate with a bounded window,
//! snapshot). Mirrors etcd's `tracker/` so the flow-control rules are tested on their own.

use crate::types::Index;
use kv_shared::NodeId;
use std::collections::VecDeque;

/// A leader's [`Progress`] of each other member, by id: a map over a vector sorted by
/// id. A group has a handful of members and a leader looks a follower up several times
/// per Append and per acknowledgement (and for each voter at every quorum count); a
/// BTreeMap's generic search cost more than a scan of a few ids.
#[derive(Clone, Debug, Default)]
pub(crate) struct ProgressMap {
    members: Vec<(NodeId, Progress)>,
}

impl ProgressMap {
    /// Where `id` is, or would be inserted.
    #[inline]
    fn find(&self, id: NodeId) -> Result<usize, usize> {
        for (i, (m, _)) in self.members.iter().enumerate() {
            if *m >= id {
                return if *m == id { Ok(i) } else { Err(i) };
            }
        }
        Err(self.members.len())
    }

    #[inline]
    pub fn get(&self, id: &NodeId) -> Option<&Progress> {
        self.find(*id).ok().map(|i| &self.members[i].1)
    }

    #[inline]
    pub fn get_mut(&mut self, id: &NodeId) -> Option<&mut Progress> {
        self.find(*id).ok().map(|i| &mut self.members[i].1)
    }

    pub fn contains_key(&self, id: &NodeId) -> bool {
        self.find(*id).is_ok()
    }

    /// `id`'s progress, `make` inserting it first if it has none.
    pub fn get_or_insert_with(
        &mut self,
        id: NodeId,
        make: impl FnOnce() -> Progress,
    ) -> &mut Progress {
        let i = match self.find(id) {
            Ok(i) => i,
            Err(i) => {
                self.members.insert(i, (id, make()));
                i
            }
        };
        &mut self.members[i].1
    }

    pub fn insert(&mut self, id: NodeId, progress: Progress) {
        match self.find(id) {
            Ok(i) => self.members[i].1 = progress,
            Err(i) => self.members.insert(i, (id, progress)),
        }
    }

    pub fn remove(&mut self, id: &NodeId) -> Option<Progress> {
        let i = self.find(*id).ok()?;
        Some(self.members.remove(i).1)
    }

    pub fn retain(&mut self, mut keep: impl FnMut(&NodeId, &mut Progress) -> bool) {
        self.members.retain_mut(|(id, p)| keep(id, p));
    }

    /// Ascending by id.
    pub fn iter(&self) -> impl Iterator<Item = (&NodeId, &Progress)> {
        self.members.iter().map(|(id, p)| (id, p))
    }

    /// Ascending by id.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&NodeId, &mut Progress)> {
        self.members.iter_mut().map(|(id, p)| (&*id, p))
    }

    pub fn values(&self) -> impl Iterator<Item = &Progress> {
        self.members.iter().map(|(_, p)| p)
    }

    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut Progress> {
        self.members.iter_mut().map(|(_, p)| p)
    }

    /// The first member after `after` (from the first with `None`), by id.
    pub fn next_after(&self, after: Option<NodeId>) -> Option<NodeId> {
        let start = match after {
            None => 0,
            Some(a) => match self.find(a) {
                Ok(i) => i + 1,
                Err(i) => i,
            },
        };
        self.members.get(start).map(|(id, _)| *id)
    }
}

impl FromIterator<(NodeId, Progress)> for ProgressMap {
    fn from_iter<I: IntoIterator<Item = (NodeId, Progress)>>(members: I) -> ProgressMap {
        let mut map = ProgressMap::default();
        for (id, p) in members {
            map.insert(id, p);
        }
        map
    }
}

impl std::ops::Index<&NodeId> for ProgressMap {
    type Output = Progress;

    fn index(&self, id: &NodeId) -> &Progress {
        self.get(id).expect("a member with progress")
    }
}

impl<'a> IntoIterator for &'a ProgressMap {
    type Item = (&'a NodeId, &'a Progress);
    type IntoIter = std::iter::Map<
        std::slice::Iter<'a, (NodeId, Progress)>,
        fn(&'a (NodeId, Progress)) -> (&'a NodeId, &'a Progress),
    >;

    fn into_iter(self) -> Self::IntoIter {
        self.members.iter().map(|(id, p)| (id, p))
    }
}

/// How the leader currently sends to a follower.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ProgressState {
    /// Next index unknown: one Append at a time, then wait for the answer (or a heartbeat).
    Probe,
    /// Matching: stream Appends optimistically, at most `inflight_appends_max` unacked.
    Replicate,
    /// Behind the compacted log: stream InstallSnapshot chunks.
    Snapshot(SnapshotSend),
}

/// A snapshot transfer to one follower, resumable from the follower's acknowledged offset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SnapshotSend {
    /// Index of the snapshot being sent.
    pub index: Index,
    /// Bytes the follower said it holds.
    pub acked: u64,
    /// Next offset to send.
    pub next_offset: u64,
    /// True once the last chunk went out (until a resend rewinds `next_offset`).
    pub all_sent: bool,
    /// `acked` at the previous retransmission check, to detect a stalled transfer.
    pub acked_at_check: u64,
    /// The offset last resent from on a gap report, so one gap costs one resend.
    pub gap_resent_from: Option<u64>,
}

impl SnapshotSend {
    /// A fresh transfer of snapshot `index`.
    pub fn new(index: Index) -> Self {
        SnapshotSend {
            index,
            acked: 0,
            next_offset: 0,
            all_sent: false,
            acked_at_check: 0,
            gap_resent_from: None,
        }
    }
}

/// The leader's view of one follower.
#[derive(Clone, Debug)]
pub(crate) struct Progress {
    /// Highest index known to match (and be durable) on the follower.
    pub match_: Index,
    /// Next index to send.
    pub next: Index,
    /// Sending mode.
    pub state: ProgressState,
    /// In Probe: an Append is out and unanswered, so wait.
    pub probe_sent: bool,
    /// In Replicate: last index of each unacknowledged Append, oldest first.
    pub inflight: VecDeque<Index>,
    /// Heard from in the current CheckQuorum period.
    pub recent_active: bool,
    /// `match_` at the previous retransmission check, to detect a stalled pipeline.
    pub match_at_check: Index,
    /// Highest index sent (`next - 1`) at the previous retransmission check.
    pub sent_at_check: Index,
    /// Sent an Append or chunk to since the previous periodic heartbeat (heartbeat
    /// suppression: that message already reset the follower's election timer).
    pub contacted: bool,
    /// Leader tick at which it was last heard from (heartbeat suppression; whether a
    /// snapshot is still worth sending to it).
    pub heard_at: u64,
    /// Highest commit index sent to it in an Append or heartbeat (what it may know).
    pub commit_told: Index,
    /// A member removed by the change at this index: it is still sent the log (counted in
    /// no quorum) until it holds and has been told the commit of its own removal, so
    /// that it learns it was removed (a leader that forgot it at once left it waiting).
    pub departs_at: Option<Index>,
    /// Retransmission back-off (`Config::retransmit_backoff_ticks_max`): ticks to wait
    /// after the latest resend that brought no progress (0: none sent since progress).
    pub resend_wait: u64,
    /// Leader tick before which the stalled flow is not resent again.
    pub resend_not_before: u64,
    /// The latest heartbeat not echoed yet, while it may be resent
    /// (`Config::heartbeat_resend_ticks`).
    pub heartbeat_ask: Option<crate::heartbeat_resend::HeartbeatAsk>,
}

impl Progress {
    /// A follower about which nothing is known yet.
    pub fn new(next: Index) -> Self {
        Progress {
            match_: 0,
            next,
            state: ProgressState::Probe,
            probe_sent: false,
            inflight: VecDeque::new(),
            recent_active: true,
            match_at_check: 0,
            sent_at_check: 0,
            contacted: false,
            heard_at: 0,
            commit_told: 0,
            departs_at: None,
            resend_wait: 0,
            resend_not_before: 0,
            heartbeat_ask: None,
        }
    }

    /// True for a removed member that holds the entry of its removal and was told it
    /// is committed: the leader stops sending to it.
    pub fn departed(&self) -> bool {
        self.departs_at
            .is_some_and(|at| self.match_ >= at && self.commit_told >= at)
    }

    /// True if nothing sent to it waits for an acknowledgement: every Append it was
    /// sent is matched, no probe is out, no snapshot is being sent.
    pub fn all_acknowledged(&self) -> bool {
        match self.state {
            ProgressState::Probe => !self.probe_sent,
            ProgressState::Replicate => self.match_ + 1 >= self.next,
            ProgressState::Snapshot(_) => false,
        }
    }

    /// Back to probing from just after `match_`.
    pub fn become_probe(&mut self) {
        self.state = ProgressState::Probe;
        self.next = self.match_ + 1;
        self.probe_sent = false;
        self.inflight.clear();
    }

    /// Streaming from just after `match_`.
    pub fn become_replicate(&mut self) {
        self.state = ProgressState::Replicate;
        self.next = self.match_ + 1;
        self.probe_sent = false;
        self.inflight.clear();
    }

    /// Switches to sending snapshot `index`.
    pub fn become_snapshot(&mut self, index: Index) {
        self.state = ProgressState::Snapshot(SnapshotSend::new(index));
        self.probe_sent = false;
        self.inflight.clear();
    }

    /// True if no Append may be sent now.
    pub fn is_paused(&self, inflight_max: usize) -> bool {
        match self.state {
            ProgressState::Probe => self.probe_sent,
            ProgressState::Replicate => self.inflight.len() >= inflight_max,
            ProgressState::Snapshot(_) => true,
        }
    }

    /// A successful ack up to `index`. Returns true if it was news.
    pub fn maybe_update(&mut self, index: Index) -> bool {
        while self.inflight.front().is_some_and(|i| *i <= index) {
            self.inflight.pop_front();
        }
        if index <= self.match_ {
            return false;
        }
        self.match_ = index;
        self.next = self.next.max(index + 1);
        self.probe_sent = false;
        true
    }

    /// Records an Append carrying entries up to `last` sent in Replicate.
    pub fn sent_entries(&mut self, last: Index) {
        match self.state {
            ProgressState::Replicate => {
                self.next = last + 1;
                self.inflight.push_back(last);
            }
            ProgressState::Probe => self.probe_sent = true,
            ProgressState::Snapshot(_) => {}
        }
    }

    /// A rejection of the Append whose previous index was `rejected`, with the leader's
    /// computed probe point `match_hint`. Returns false if the rejection is stale, or
    /// rejects an index the follower acknowledged before: only a follower that lost
    /// acknowledged entries sends that, no probe point can satisfy it, and answering each
    /// copy at once would bounce Appends and rejections back and forth as fast as the
    /// network carries them (the next heartbeat round probes again instead).
    pub fn maybe_decr_to(&mut self, rejected: Index, match_hint: Index) -> bool {
        if rejected <= self.match_ {
            return false;
        }
        match self.state {
            ProgressState::Replicate => {
                self.become_probe();
                self.next = self.match_ + 1;
                true
            }
            ProgressState::Probe => {
                if self.next.saturating_sub(1) != rejected {
                    return false;
                }
                self.next = rejected.min(match_hint + 1).max(self.match_ + 1);
                self.probe_sent = false;
                true
            }
            ProgressState::Snapshot(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// The progress map answers as a BTreeMap of the same members does, whatever order
    /// they come in, are removed or retained in.
    #[test]
    fn the_progress_map_is_a_map_by_id() {
        let ids = [5u64, 2, 9, 2, 7, 1, 5, 3];
        let mut map = ProgressMap::default();
        let mut model = BTreeMap::new();
        for (n, id) in ids.iter().enumerate() {
            let p = Progress::new(n as u64 + 10);
            map.insert(NodeId(*id), p.clone());
            model.insert(NodeId(*id), p);
        }
        let listed =
            |map: &ProgressMap| map.iter().map(|(id, p)| (*id, p.next)).collect::<Vec<_>>();
        let expected: Vec<_> = model.iter().map(|(id, p)| (*id, p.next)).collect();
        assert_eq!(
            listed(&map),
            expected,
            "ascending, the last insert of an id kept"
        );
        let rebuilt: ProgressMap = ids
            .iter()
            .enumerate()
            .map(|(n, id)| (NodeId(*id), Progress::new(n as u64 + 10)))
            .collect();
        assert_eq!(listed(&rebuilt), expected);
        for id in 0..11 {
            let id = NodeId(id);
            assert_eq!(map.get(&id).map(|p| p.next), model.get(&id).map(|p| p.next));
            assert_eq!(map.contains_key(&id), model.contains_key(&id));
            let next = model.range(id..).find(|(m, _)| **m != id).map(|(m, _)| *m);
            assert_eq!(map.next_after(Some(id)), next, "after {id}");
        }
        assert_eq!(map.next_after(None), Some(NodeId(1)));
        assert_eq!(map.remove(&NodeId(5)).map(|p| p.next), Some(16));
        assert!(map.remove(&NodeId(5)).is_none());
        map.get_or_insert_with(NodeId(4), || Progress::new(99))
            .match_ = 3;
        map.get_or_insert_with(NodeId(4), || unreachable!()).match_ += 1;
        map.retain(|id, _| id.0 % 2 == 1);
        let left: Vec<u64> = map.iter().map(|(id, _)| id.0).collect();
        assert_eq!(left, [1, 3, 7, 9]);
        map.get_or_insert_with(NodeId(8), || Progress::new(1));
        assert_eq!(map[&NodeId(8)].next, 1);
        assert_eq!(map.values().count(), 5);
    }

    #[test]
    fn replicate_window_pauses_when_full_and_acks_free_it() {
        let mut p = Progress::new(1);
        p.maybe_update(0);
        p.become_replicate();
        for last in [2, 4, 6] {
            p.sent_entries(last);
        }
        assert!(p.is_paused(3));
        assert_eq!(p.next, 7);
        assert!(p.maybe_update(4));
        assert_eq!(p.inflight, VecDeque::from(vec![6]));
        assert!(!p.is_paused(3));
        assert!(!p.maybe_update(3), "an old ack is not news");
    }

    #[test]
    fn probe_sends_one_at_a_time() {
        let mut p = Progress::new(5);
        assert!(!p.is_paused(8));
        p.sent_entries(5);
        assert!(p.is_paused(8));
        assert!(p.maybe_update(5));
        assert!(!p.is_paused(8));
    }

    #[test]
    fn probe_rejection_uses_the_hint_but_never_goes_below_match() {
        let mut p = Progress::new(10);
        p.match_ = 3;
        assert!(
            !p.maybe_decr_to(7, 2),
            "rejection of an older probe is stale"
        );
        assert!(p.maybe_decr_to(9, 5));
        assert_eq!(p.next, 6);
        assert!(p.maybe_decr_to(5, 0));
        assert_eq!(p.next, 4, "never below match + 1");
    }

    #[test]
    fn probe_rejection_of_an_acknowledged_index_sends_nothing_at_once() {
        // A follower that lost entries it acknowledged rejects the probe at match_ with an
        // empty log; every copy of that rejection answered with a new probe would make
        // the pair ping-pong at network speed.
        let mut p = Progress::new(38);
        p.maybe_update(37);
        assert_eq!(p.next, 38);
        assert!(!p.maybe_decr_to(37, 0));
        assert!(!p.maybe_decr_to(37, 0), "nor for a duplicate");
        assert_eq!((p.next, p.match_), (38, 37));
    }

    #[test]
    fn replicate_rejection_falls_back_to_probe_from_match() {
        let mut p = Progress::new(1);
        p.maybe_update(4);
        p.become_replicate();
        p.sent_entries(8);
        assert!(!p.maybe_decr_to(3, 0), "at or below match: stale");
        assert!(p.maybe_decr_to(6, 0));
        assert_eq!(p.state, ProgressState::Probe);
        assert_eq!(p.next, 5);
    }
}
