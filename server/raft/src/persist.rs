//! Persist before send (thesis 10.2.1, etcd's msgsAfterAppend): the writes a replica
//! hands out, the messages and self-votes held until a write is durable, and what
//! `on_persisted` releases.

use crate::node::{planted, Held, InflightWrite, Raft, RoleState};
use crate::progress::ProgressState;
use crate::ready::{Write, WriteId};
use crate::types::*;
use kv_shared::NodeId;

impl Raft {
    /// The caller has made `write` durable.
    pub fn on_persisted(&mut self, id: WriteId) {
        self.drained = false;
        assert!(
            id.0 >= 1 && id.0 < self.next_write_id,
            "on_persisted({}) of a write never issued",
            id.0
        );
        if id.0 <= self.persisted_write {
            return;
        }
        self.persisted_write = id.0;
        self.quorum_moved = true;
        while self.inflight_writes.front().is_some_and(|w| w.id <= id.0) {
            let w = self.inflight_writes.pop_front().expect("checked");
            if let Some(last) = w.last {
                self.log.persisted = self.log.persisted.max(last);
            }
        }
        if self
            .snapshot_in_write
            .as_ref()
            .is_some_and(|(w, _)| *w <= id.0)
        {
            let (_, snap) = self.snapshot_in_write.take().expect("checked");
            self.snapshot_ready = Some(snap);
        }
        // `held` is in write order, so what this write releases is a prefix. It goes
        // through a kept buffer: a follower of many groups releases an ack per group per
        // round, and splitting `held` into two new vectors each time was a visible share
        // of its instructions.
        debug_assert!(self.held.windows(2).all(|p| p[0].0 <= p[1].0));
        let released = self.held.partition_point(|(w, _)| *w <= id.0);
        // A leader's writes usually release nothing (it holds no acks): no drains then,
        // whose drops are calls even when empty.
        let only_sends = || {
            self.held[..released]
                .iter()
                .all(|(_, h)| matches!(h, Held::Send(_)))
        };
        if released > 0 && only_sends() {
            // Acks only (a follower's round): straight into `msgs`, each moved once.
            let sends = self.held.drain(..released).filter_map(|(_, h)| match h {
                Held::Send(m) => Some(m),
                Held::SelfVote(_) => None,
            });
            self.msgs.extend(sends);
        } else if released > 0 {
            let mut release = std::mem::take(&mut self.held_released);
            release.extend(self.held.drain(..released));
            for (_, h) in release.drain(..) {
                match h {
                    Held::Send(m) => self.msgs.push(m),
                    Held::SelfVote(term) => self.count_self_vote(term),
                }
            }
            self.held_released = release;
        }
        if self.maybe_commit() {
            self.commit_advanced();
        }
    }

    /// Queues a message that promises durable state (a vote grant, an append ack): it
    /// leaves only once every write issued or pending now is durable.
    pub(crate) fn send_after_persist(&mut self, to: NodeId, body: MessageBody) {
        let m = Message {
            from: self.cfg.id,
            to,
            term: self.term,
            body,
        };
        if planted!(self, AckBeforePersist) {
            self.msgs.push(m);
            return;
        }
        match self.write_dependency() {
            // The same message held for the same write says nothing new: without this, a
            // peer repeating one Append while a write is slow would grow `held` without
            // bound.
            Some(w) if self.held_already(w, &m) => {}
            Some(w) => self.held.push((w, Held::Send(m))),
            None => self.msgs.push(m),
        }
    }

    /// True if `m` is held for write `w` already (`held` is in write order).
    pub(crate) fn held_already(&self, w: u64, m: &Message) -> bool {
        self.held
            .iter()
            .rev()
            .take_while(|(dep, _)| *dep == w)
            .any(|(_, h)| matches!(h, Held::Send(x) if x == m))
    }

    /// The write whose durability covers all state changed so far, if not durable yet.
    pub(crate) fn write_dependency(&self) -> Option<u64> {
        if self.needs_write() {
            Some(self.next_write_id)
        } else {
            self.inflight_writes.back().map(|w| w.id)
        }
    }

    /// True if there is state that no emitted write covers yet.
    pub(crate) fn needs_write(&self) -> bool {
        self.log.has_unstable()
            || self.snapshot_unwritten.is_some()
            || self.term != self.hs_written.term
            || self.vote != self.hs_written.vote
    }

    /// Makes `w` the next write, in place: its entries vector (cleared first) keeps its
    /// room, and a caller that keeps its `Ready` moves no `Write` in or out per round.
    pub(crate) fn fill_write(&mut self, w: &mut Write) {
        let id = self.next_write_id;
        self.next_write_id += 1;
        let snapshot = self.snapshot_unwritten.take();
        w.entries.clear();
        w.entries_in_log = None;
        if self.cfg.entries_by_reference {
            w.entries_in_log = self.log.take_unstable_range();
        } else {
            self.log.take_unstable_into(&mut w.entries);
        }
        let hs = self.hard_state();
        let term_vote_kept = hs.term == self.hs_written.term && hs.vote == self.hs_written.vote;
        w.deferrable = snapshot.is_none() && term_vote_kept && self.followers_make_quorum();
        w.hard_state = (hs != self.hs_written).then_some(hs);
        self.hs_written = hs;
        let last = w
            .entries_in_log
            .map(|(_, last)| last)
            .or(w.entries.last().map(|e| e.index))
            .or(snapshot.as_ref().map(|s| s.meta.index));
        if let Some(s) = &snapshot {
            self.snapshot_in_write = Some((id, s.clone()));
        }
        if w.deferrable && planted!(self, LeaderCountsDeferredWrite) {
            if let Some(last) = last {
                self.log.persisted = self.log.persisted.max(last);
                self.quorum_moved = true;
            }
        }
        self.inflight_writes.push_back(InflightWrite { id, last });
        w.id = WriteId(id);
        w.snapshot = snapshot;
    }

    /// True if this is a leader whose voters other than itself are a quorum, each in
    /// steady replication and heard from within two heartbeat intervals: the entries of
    /// its next write then commit without its own copy (thesis 10.2.1 lets a leader
    /// count itself late). A follower that stops answering ends it within those two
    /// intervals, and the leader's own fsync counts again.
    pub(crate) fn followers_make_quorum(&self) -> bool {
        let RoleState::Leader(ls) = &self.role else {
            return false;
        };
        let me = self.cfg.id;
        let recent = 2 * u64::from(self.cfg.heartbeat_ticks);
        let voters = &self.membership.voters;
        let prompt = voters
            .iter()
            .filter(|&&v| v != me)
            .filter(|v| {
                ls.progress.get(v).is_some_and(|pr| {
                    matches!(pr.state, ProgressState::Replicate)
                        && pr.departs_at.is_none()
                        && self.now - pr.heard_at <= recent
                })
            })
            .count();
        prompt >= crate::quorum::majority(voters.len())
    }

    /// Highest index that may be handed out for applying now. A leader applies up to
    /// its commit index, durable on a quorum, whether or not its own write is durable
    /// yet (it may have deferred that fsync, and its followers committed without it; the
    /// state machine is rebuilt from durable state on restart, so applying early
    /// promises nothing the quorum does not keep). Any other role applies only what is
    /// durable here too.
    pub(crate) fn next_committed_hi(&self) -> Index {
        if self.snapshot_unwritten.is_some()
            || self.snapshot_in_write.is_some()
            || self.snapshot_ready.is_some()
        {
            // The state machine must restore the snapshot first.
            return self.log.applied;
        }
        let durable_here = match self.role {
            RoleState::Leader(_) => self.log.commit,
            _ => self.log.commit.min(self.log.persisted),
        };
        durable_here.max(self.log.applied)
    }

    /// Memory dropped entries from `index` on: durable copies of them no longer count.
    pub(crate) fn on_truncated(&mut self, index: Index) {
        let keep = index - 1;
        self.log.persisted = self.log.persisted.min(keep);
        self.quorum_moved = true;
        for w in &mut self.inflight_writes {
            w.last = w.last.map(|l| l.min(keep));
        }
    }
}
