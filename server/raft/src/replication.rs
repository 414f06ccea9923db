//! Log replication: the leader's sending (batching, pipelining in a bounded window, probe
//! and replicate modes, fast backtracking), the follower's Append handling, the commit
//! rule (thesis 3.6.2: only entries of the current term commit by counting), heartbeats
//! with retransmission over a lossy network, and the ReadIndex rounds they carry.

use crate::node::{planted, Raft, RoleState};
use crate::progress::{Progress, ProgressMap, ProgressState};
use crate::quorum;
use crate::ready::AppendRef;
use crate::types::{ConfChange, Entry, EntryKind, Index, Membership, Message, MessageBody, Term};
use crate::{ProposeError, Refusal};
use kv_shared::limits::{RAFT_INDEX_MAX, RAFT_TERM_MAX};
use kv_shared::NodeId;
use std::collections::BTreeSet;

impl Raft {
    /// Err unless this is a leader that takes proposals now.
    pub(crate) fn leader_accepting(&self) -> Result<(), ProposeError> {
        match &self.role {
            RoleState::Leader(ls) if ls.transfer.is_some() => Err(ProposeError::Transferring),
            RoleState::Leader(_) => Ok(()),
            _ => Err(ProposeError::NotLeader {
                leader: self.leader,
            }),
        }
    }

    /// Appends one entry to the leader's log; it goes out at the next `ready()`, so that
    /// proposals made between two `ready()` calls share Append messages.
    pub(crate) fn append_as_leader(
        &mut self,
        kind: EntryKind,
        data: bytes::Bytes,
    ) -> (Index, Term) {
        let index = self.log.last_index() + 1;
        self.log.push(Entry {
            term: self.term,
            index,
            kind,
            data,
        });
        if let RoleState::Leader(ls) = &mut self.role {
            ls.bcast_pending = true;
        }
        (index, self.term)
    }

    /// Sends what proposals and reads accumulated since the last `ready()`.
    ///
    /// Runs at every `has_ready` and `ready` of every group, a few times per group and
    /// round, and usually finds nothing to do (always on a follower): that answer is
    /// given inline, without the call into the body, whose frame is that of the whole
    /// send loop. Without a broadcast, a read round or a moved quorum input the body
    /// does nothing either (`maybe_commit` returns at once).
    #[inline]
    pub(crate) fn flush_leader_sends(&mut self) {
        if self.leader_sends_pending() {
            self.flush_leader_sends_now();
        }
    }

    /// True if [`Raft::flush_leader_sends`] may have something to do: a leader with a
    /// broadcast or a read round to send, or a quorum input that moved.
    #[inline]
    pub(crate) fn leader_sends_pending(&self) -> bool {
        match &self.role {
            RoleState::Leader(ls) => ls.bcast_pending || self.quorum_moved || ls.reads.has_unsent(),
            _ => false,
        }
    }

    /// [`Raft::flush_leader_sends`] once it may have something to do.
    #[inline(never)]
    fn flush_leader_sends_now(&mut self) {
        let (bcast, reads) = match &mut self.role {
            RoleState::Leader(ls) => (std::mem::take(&mut ls.bcast_pending), ls.reads.has_unsent()),
            _ => return,
        };
        if bcast {
            self.lazy_refresh_fast();
            self.lazy_rewind_fast();
            let mut peer = self.next_peer(None);
            while let Some(id) = peer {
                while self.maybe_send_append(id, false) {}
                peer = self.next_peer(Some(id));
            }
        }
        if reads {
            self.bcast_heartbeat(true);
        }
        if self.maybe_commit() {
            self.commit_advanced();
        }
    }

    /// The commit index moved on a leader: tell everyone at once, unless
    /// `broadcast_commit` is off (followers then learn it from the next Append or
    /// heartbeat, which saves one message per follower and commit).
    pub(crate) fn commit_advanced(&mut self) {
        if self.cfg.broadcast_commit {
            self.bcast_append();
        }
    }

    /// The first member a leader replicates to after `after` (from the first with
    /// `None`), in id order. Walking them this way instead of collecting them first saves
    /// an allocation per group per round, and sees the progress map as each send left
    /// it, as the collected list did: a send never adds or removes a member.
    #[inline]
    pub(crate) fn next_peer(&self, after: Option<NodeId>) -> Option<NodeId> {
        let RoleState::Leader(ls) = &self.role else {
            return None;
        };
        ls.progress.next_after(after)
    }

    /// Sends one Append (or snapshot chunks) to `to` if its flow control allows. Returns
    /// true if something was sent.
    pub(crate) fn maybe_send_append(&mut self, to: NodeId, send_if_empty: bool) -> bool {
        let last = self.log.last_index();
        let RoleState::Leader(ls) = &self.role else {
            return false;
        };
        let Some(pr) = ls.progress.get(&to) else {
            return false;
        };
        // A follower sent everything has nothing to get: the loops that send until this
        // returns false (`flush_leader_sends`, after an ack) ask once more per follower
        // and round, so that answer comes first, before the checks below, which all
        // return false without a side effect too, or find the entry at `last` held (a
        // leader's log never ends below its snapshot point) and servable (only index
        // 0 can need a snapshot while held).
        if !send_if_empty
            && last > 0
            && pr.next == last + 1
            && !matches!(pr.state, ProgressState::Snapshot(_))
        {
            return false;
        }
        if self.lazy_holds(to) {
            return false;
        }
        let inflight_max = self.cfg.inflight_appends_max;
        let RoleState::Leader(ls) = &mut self.role else {
            return false;
        };
        let Some(pr) = ls.progress.get_mut(&to) else {
            return false;
        };
        if let ProgressState::Snapshot(_) = pr.state {
            return self.send_snapshot_chunks(to);
        }
        if pr.is_paused(inflight_max) {
            return false;
        }
        let prev_index = pr.next - 1;
        let prev_term = match self.log.term(prev_index) {
            Some(t) if !self.entries_cannot_serve(prev_index, to) => t,
            _ => return self.start_snapshot(to),
        };
        if !send_if_empty && prev_index >= self.log.last_index() {
            // Nothing to send, and so nothing to do: the batch below would be empty. The
            // loop in `flush_leader_sends` asks once more after every Append it sends, so
            // each group's round ends here, not in a second progress lookup and batch.
            return false;
        }
        let RoleState::Leader(ls) = &mut self.role else {
            return false;
        };
        let pr = ls.progress.get_mut(&to).expect("checked above");
        let carried = self.log.batch_len(pr.next, self.cfg.append_bytes_max) as u64;
        if carried == 0 && !send_if_empty {
            return false;
        }
        let last = prev_index + carried;
        if carried > 0 {
            pr.sent_entries(last);
        } else if pr.state == ProgressState::Probe {
            pr.probe_sent = true;
        }
        let commit = self.log.commit;
        pr.contacted = true;
        // The follower takes min(commit, last index this Append leaves it with).
        pr.commit_told = pr.commit_told.max(commit.min(last));
        self.send_append(AppendRef {
            to,
            term: self.term,
            prev_index,
            prev_term,
            last,
            commit,
        });
        true
    }

    /// True if a follower that needs the entries after `prev_index` must get a snapshot
    /// instead: they are compacted away, or it needs the log from its start and is not
    /// in the membership the log starts from. The bootstrap membership is not in the log,
    /// so a member added later (a replica created empty by a move) could not rebuild the
    /// membership from the entries alone; the snapshot's metadata carries it. Nor does a
    /// member the log removes get the log from its start: it was removed and added again
    /// (its node recreated the replica), and replaying its own removal would drop it.
    pub(crate) fn entries_cannot_serve(&self, prev_index: Index, to: NodeId) -> bool {
        self.log.term(prev_index).is_none()
            || needs_base(prev_index, to, &self.snap_membership)
            || (prev_index == 0 && self.log_removes(to))
    }

    /// True if an entry of the log (past its snapshot) removes `node`.
    fn log_removes(&self, node: NodeId) -> bool {
        self.log
            .range(self.log.snap_index + 1, self.log.last_index())
            .iter()
            .any(
                |e| matches!(e.kind, EntryKind::ConfChange(ConfChange::RemoveNode(n)) if n == node),
            )
    }

    /// One Append to every peer (to spread a new commit index).
    pub(crate) fn bcast_append(&mut self) {
        let mut peer = self.next_peer(None);
        while let Some(id) = peer {
            self.maybe_send_append(id, true);
            peer = self.next_peer(Some(id));
        }
    }

    /// Takes the message by reference: what a leader is sent carries no data it keeps,
    /// and moving the message in copied all of it (the size of the largest variant)
    /// once per acknowledgement.
    pub(crate) fn step_leader(&mut self, m: &Message) {
        let answered = match m.body {
            MessageBody::AppendResp { .. } => Some(Answered::Append),
            MessageBody::HeartbeatResp { .. } => Some(Answered::Heartbeat),
            _ => None,
        };
        if !self.leader_hears(m.from, answered) {
            return;
        }
        let RoleState::Leader(ls) = &mut self.role else {
            return;
        };
        match m.body {
            MessageBody::AppendResp {
                reject,
                index,
                hint_index,
                hint_term,
            } => self.handle_append_resp(m.from, reject, index, hint_index, hint_term),
            MessageBody::HeartbeatResp { read_round }
                if read_round != 0 && self.membership.voters.contains(&m.from) =>
            {
                ls.reads.ack(m.from, read_round);
                ls.lease.echoed(m.from, read_round);
                self.check_reads();
            }
            MessageBody::ReadIndex { request } => self.on_read_index(m.from, request),
            MessageBody::InstallSnapshotResp {
                snapshot_index,
                received,
                done,
            } => self.handle_snapshot_resp(m.from, snapshot_index, received, done),
            _ => {}
        }
        self.forget_if_departed(m.from);
    }

    /// [`Raft::step`] of the acknowledgement `AppendResp { reject: false, index,
    /// hint_index: 0, hint_term: 0 }` from `from` to `to` in `term`, without the
    /// message: a caller that decodes every group's acks itself (kv-node's frames) hands
    /// each in this way, and `step` hands its own here.
    pub fn step_ack(&mut self, from: NodeId, to: NodeId, term: Term, index: Index) {
        self.drained = false;
        if !self.addressed_here(from, to) {
            return;
        }
        // `check_message` of the message: its hint fields are 0.
        if term > RAFT_TERM_MAX {
            return self.refuse(Refusal::TermOutOfRange);
        }
        if index > RAFT_INDEX_MAX {
            return self.refuse(Refusal::IndexOutOfRange);
        }
        // Not a vote request: nothing else of `step` applies before the terms are
        // compared; a follower or candidate takes nothing from an ack.
        if term > self.term {
            self.become_follower(term, None);
        } else if term == self.term
            && matches!(self.role, RoleState::Leader(_))
            && self.leader_hears(from, Some(Answered::Append))
        {
            self.handle_append_resp(from, false, index, 0, 0);
            self.forget_if_departed(from);
        }
    }

    /// A leader heard from member `from` (what it `answered`, if anything): it counts
    /// as active, and for lazy followers as having answered. False if `from` is not a
    /// member this leader replicates to.
    fn leader_hears(&mut self, from: NodeId, answered: Option<Answered>) -> bool {
        let RoleState::Leader(ls) = &mut self.role else {
            return false;
        };
        let Some(pr) = ls.progress.get_mut(&from) else {
            return false;
        };
        pr.recent_active = true;
        pr.heard_at = self.now;
        if answered == Some(Answered::Heartbeat) {
            pr.heartbeat_ask = None;
        }
        if let Some(a) = answered {
            self.lazy_answered(from, a == Answered::Append);
        }
        true
    }

    /// Stops replicating to `from` once it departed (holds its removal and was told it
    /// committed).
    fn forget_if_departed(&mut self, from: NodeId) {
        if let RoleState::Leader(ls) = &mut self.role {
            if ls.progress.get(&from).is_some_and(|p| p.departed()) {
                ls.progress.remove(&from);
                self.quorum_moved = true;
            }
        }
    }

    fn handle_append_resp(
        &mut self,
        from: NodeId,
        reject: bool,
        index: Index,
        hint_index: Index,
        hint_term: Term,
    ) {
        let last = self.log.last_index();
        let probe_point = if hint_term > 0 {
            self.log.find_conflict_by_term(hint_index, hint_term).0
        } else {
            hint_index
        };
        let RoleState::Leader(ls) = &mut self.role else {
            return;
        };
        let Some(pr) = ls.progress.get_mut(&from) else {
            return;
        };
        if reject {
            if pr.maybe_decr_to(index, probe_point) {
                self.maybe_send_append(from, false);
            }
            return;
        }
        if index > last || !pr.maybe_update(index) {
            return;
        }
        self.quorum_moved = true;
        match &pr.state {
            ProgressState::Probe => pr.become_replicate(),
            ProgressState::Snapshot(s) if pr.match_ >= s.index => pr.become_probe(),
            _ => {}
        }
        let transfer_now = ls.transfer.is_some_and(|(t, _)| t == from) && pr.match_ == last;
        // What `maybe_send_append` answers first, read while `pr` is at hand: most acks
        // leave the follower sent everything, and asking again costs a lookup.
        let sent_all =
            last > 0 && pr.next == last + 1 && !matches!(pr.state, ProgressState::Snapshot(_));
        if transfer_now {
            self.send_timeout_now(from);
        }
        if self.maybe_commit() {
            self.commit_advanced();
        } else if sent_all && !transfer_now {
            // Nothing changed since `sent_all` was read: no commit (whose membership
            // changes may touch the progress map) and no transfer message.
            return;
        }
        while self.maybe_send_append(from, false) {}
    }

    /// Advances the commit index to what a quorum (the leader counting itself only up to
    /// its durable index) stores, if that entry is of the current term. Returns true if
    /// the commit index moved.
    pub(crate) fn maybe_commit(&mut self) -> bool {
        if !std::mem::take(&mut self.quorum_moved) {
            debug_assert_eq!(self.quorum_commit(), None, "quorum inputs moved unnoticed");
            return false;
        }
        #[cfg(test)]
        {
            self.quorum_computations += 1;
        }
        match self.quorum_commit() {
            Some(q) => {
                self.commit_to(q);
                true
            }
            None => false,
        }
    }

    /// The index `maybe_commit` would commit now, if any.
    pub(crate) fn quorum_commit(&self) -> Option<Index> {
        let RoleState::Leader(ls) = &self.role else {
            return None;
        };
        let me = self.cfg.id;
        let persisted = self.log.persisted;
        let q = quorum::committed_index(&self.membership.voters, |v| {
            if v == me {
                persisted
            } else {
                ls.progress.get(&v).map_or(0, |p| p.match_)
            }
        });
        if q <= self.log.commit {
            return None;
        }
        // Thesis 3.6.2 / Figure 8: counting replicas commits only entries of this term.
        let current = self.log.term(q) == Some(self.term);
        if !current && !planted!(self, CommitPriorTermByCount) {
            return None;
        }
        Some(q)
    }

    /// Moves the commit index to `index` (never backwards), applying membership changes
    /// and, on a leader, releasing reads that waited for this term's first commit.
    pub(crate) fn commit_to(&mut self, index: Index) {
        let old = self.log.commit;
        if index <= old {
            return;
        }
        self.log.commit = index;
        let commit = index;
        let me = self.cfg.id;
        let single = self.membership.voters == [me];
        let waiting = match &mut self.role {
            RoleState::Leader(ls) if commit >= ls.term_start => ls.reads.take_waiting(),
            _ => Vec::new(),
        };
        for reader in waiting {
            if single {
                self.release_read(reader, commit);
            } else if let RoleState::Leader(ls) = &mut self.role {
                let next = &mut self.next_read_round;
                ls.reads.add(reader, commit, me, || {
                    *next += 1;
                    *next - 1
                });
            }
        }
        self.apply_conf_changes(old, index);
    }

    /// Releases the reads a quorum confirmed.
    pub(crate) fn check_reads(&mut self) {
        let RoleState::Leader(ls) = &mut self.role else {
            return;
        };
        for (reader, index) in ls.reads.take_confirmed(&self.membership.voters) {
            self.release_read(reader, index);
        }
    }

    /// Follower side of AppendEntries.
    pub(crate) fn handle_append(
        &mut self,
        from: NodeId,
        mut prev_index: Index,
        mut prev_term: Term,
        entries: &mut Vec<Entry>,
        leader_commit: Index,
    ) {
        // `step` checked the entries (`check_message`): contiguous after `prev_index`,
        // terms rising from `prev_term` to the message's term, indexes far from overflow.
        let commit = self.log.commit;
        if prev_index < commit {
            // Entries up to our commit are settled; skip them (and the duplicate work).
            entries.retain(|e| e.index > commit);
            if entries.is_empty() {
                self.send_after_persist(from, ack(commit));
                return;
            }
            prev_index = commit;
            prev_term = self.log.term(commit).expect("the commit index is held");
            if entries[0].term < prev_term {
                return; // inconsistent with our committed log: not from a real leader
            }
        }
        if !self.log.matches(prev_index, prev_term) {
            let (hint_index, hint_term) = self
                .log
                .find_conflict_by_term(prev_index.min(self.log.last_index()), prev_term);
            self.send(
                from,
                MessageBody::AppendResp {
                    reject: true,
                    index: prev_index,
                    hint_index,
                    hint_term,
                },
            );
            return;
        }
        let last_new = prev_index + entries.len() as u64;
        if let Some(pos) = entries
            .iter()
            .position(|e| !self.log.matches(e.index, e.term))
        {
            if entries[pos].index <= self.log.commit {
                return; // would rewrite a committed entry: not from a real leader
            }
            let conf_change = entries[pos..]
                .iter()
                .any(|e| matches!(e.kind, EntryKind::ConfChange(_)));
            entries.drain(..pos);
            if let Some(t) = self.log.append_owned(entries) {
                self.on_truncated(t);
            }
            if conf_change {
                self.commit_vouched();
            }
        }
        let c = leader_commit.min(last_new);
        if c > self.log.commit {
            self.commit_to(c);
        }
        self.send_after_persist(from, ack(last_new));
    }

    /// Switches heartbeat suppression (`Config::heartbeat_suppression`) at run time, for
    /// a caller whose need for every echo changes (course mode sends every heartbeat
    /// under heavy loss, where the lease needs all the echoes it can get). Takes effect
    /// at the next heartbeat.
    pub fn set_heartbeat_suppression(&mut self, on: bool) {
        self.drained = false;
        self.cfg.heartbeat_suppression = on;
    }

    /// Heartbeats to all peers, each carrying the commit index capped to what that peer
    /// matches, and the newest ReadIndex round.
    /// With `heartbeat_suppression`, the periodic heartbeat skips a follower that got an
    /// Append or chunk since the previous one (it reset its election timer) and answered
    /// something within half the minimum election timeout, unless reads wait for
    /// confirmation (their echoes are what the heartbeat is for); with
    /// `heartbeat_suppression_strict`, fewer (see there).
    /// One silent for longer
    /// may hold its acks until a slow fsync ends; the heartbeat's immediate echo keeps
    /// CheckQuorum from deposing us.
    pub(crate) fn bcast_heartbeat(&mut self, reads_only: bool) {
        let commit = self.log.commit;
        let suppress = self.cfg.heartbeat_suppression && !reads_only;
        let now = self.now;
        // Heard within half a CheckQuorum period: its next answer will come in time even
        // if this heartbeat is skipped and the next one is not.
        let answering_ticks = u64::from(self.cfg.election_ticks_min / 2);
        let lacking: BTreeSet<NodeId> = match &self.role {
            RoleState::Leader(ls) => (ls.progress.iter())
                .filter(|(_, p)| self.lazy_lacks(p))
                .map(|(id, _)| *id)
                .collect(),
            _ => BTreeSet::new(),
        };
        let RoleState::Leader(ls) = &mut self.role else {
            return;
        };
        let reads_round = ls.reads.latest_round();
        let read_round = if self.cfg.lease_reads && !ls.reads.has_unsent() {
            // A fresh round for every broadcast, so each echo dates the send it answers
            // (it also confirms every older read round, sent before it).
            self.next_read_round += 1;
            self.next_read_round - 1
        } else {
            reads_round
        };
        ls.reads.mark_sent();
        ls.lease.sent(read_round, now);
        let strict = self.cfg.heartbeat_suppression_strict;
        let skips: Vec<(NodeId, bool)> = ls
            .progress
            .iter()
            .map(|(id, p)| {
                let answering = now - p.heard_at < answering_ticks;
                let acked = !strict || (p.all_acknowledged() && !lacking.contains(id));
                let skip = suppress && reads_round == 0 && p.contacted && answering && acked;
                (*id, skip)
            })
            .collect();
        let mut skip: BTreeSet<NodeId> = skips.iter().filter(|s| s.1).map(|s| s.0).collect();
        if strict && self.cfg.lease_reads {
            let alive_ticks = u64::from(self.cfg.election_ticks_min);
            let alive = |p: &Progress| now - p.heard_at < alive_ticks;
            let voters = &self.membership.voters;
            keep_lease_quorum(&mut skip, voters, self.cfg.id, &ls.progress, alive);
        }
        let mut targets: Vec<(NodeId, Index)> = Vec::new();
        for (id, p) in ls.progress.iter_mut() {
            if reads_only && !self.membership.voters.contains(id) {
                continue;
            }
            let c = commit.min(p.match_);
            let skipped = skip.contains(id);
            if !skipped {
                p.commit_told = p.commit_told.max(c);
            }
            if !reads_only {
                p.contacted = false;
            }
            if skipped {
                continue;
            }
            targets.push((*id, c));
        }
        for (to, c) in targets {
            self.lazy_send_held(to);
            self.send(
                to,
                MessageBody::Heartbeat {
                    commit: c,
                    read_round,
                },
            );
            self.heartbeat_sent(to, c, read_round);
        }
    }

    /// Leader clock: heartbeats (and retransmission), CheckQuorum, transfer timeout.
    pub(crate) fn tick_leader(&mut self) {
        self.heartbeat_elapsed += 1;
        self.election_elapsed += 1;
        let election_min = self.cfg.election_ticks_min;
        let me = self.cfg.id;
        let RoleState::Leader(ls) = &mut self.role else {
            return;
        };
        if let Some((_, elapsed)) = &mut ls.transfer {
            *elapsed += 1;
            if *elapsed >= election_min {
                ls.transfer = None; // thesis 3.10: abort if not done within a timeout
            }
        }
        if self.election_elapsed >= election_min {
            self.election_elapsed = 0;
            if self.cfg.check_quorum {
                let active = quorum::has_quorum(&self.membership.voters, |v| {
                    v == me || ls.progress.get(&v).is_some_and(|p| p.recent_active)
                });
                // A removed member silent for a whole period has dropped its replica or
                // is down: stop sending to it. Should it campaign later, it is sent the
                // log again (`replicate_to_removed_campaigner`).
                ls.progress
                    .retain(|_, p| p.departs_at.is_none() || p.recent_active);
                for p in ls.progress.values_mut() {
                    p.recent_active = false;
                }
                if !active {
                    let term = self.term;
                    self.become_follower(term, None);
                    return;
                }
            }
        }
        if self.heartbeat_elapsed >= self.cfg.heartbeat_ticks {
            self.heartbeat_elapsed = 0;
            self.bcast_heartbeat(false);
        } else {
            self.resend_heartbeats();
        }
        self.retransmit_elapsed += 1;
        if self.retransmit_elapsed >= self.cfg.retransmit_ticks() {
            self.retransmit_elapsed = 0;
            self.retransmit_stalled();
        }
    }

    /// UDP loses Appends and chunks: every `retransmit_ticks`, restart any flow that made
    /// no progress since the previous check (so a loss costs between one and two periods,
    /// independent of a long heartbeat interval). With `retransmit_backoff_ticks_max`, a
    /// flow resent without progress since is left alone until its back-off has passed.
    fn retransmit_stalled(&mut self) {
        let last = self.log.last_index();
        let now = self.now;
        let period = u64::from(self.cfg.retransmit_ticks());
        let backoff_max = self.cfg.retransmit_backoff_ticks_max.map(u64::from);
        let RoleState::Leader(ls) = &mut self.role else {
            return;
        };
        let mut resend = Vec::new();
        for (id, pr) in ls.progress.iter_mut() {
            let progressed = pr.match_ > pr.match_at_check
                || matches!(&pr.state, ProgressState::Snapshot(s) if s.acked > s.acked_at_check);
            if progressed {
                pr.resend_wait = 0;
                pr.resend_not_before = 0;
            }
            let backing_off = backoff_max.is_some() && now < pr.resend_not_before;
            let stalled = !backing_off
                && match &mut pr.state {
                    ProgressState::Probe => {
                        pr.probe_sent = false;
                        pr.match_ < last
                    }
                    ProgressState::Replicate => {
                        // Only data already out at the previous check counts as lost: an
                        // Append sent just before this check has had no time to be acked.
                        let stalled = pr.match_ < last
                            && pr.match_ == pr.match_at_check
                            && pr.sent_at_check > pr.match_at_check;
                        if stalled {
                            pr.become_probe();
                        }
                        stalled
                    }
                    ProgressState::Snapshot(s) => {
                        let stalled = s.acked == s.acked_at_check;
                        if stalled {
                            s.next_offset = s.acked;
                            s.all_sent = false;
                        }
                        stalled
                    }
                };
            if let ProgressState::Snapshot(s) = &mut pr.state {
                s.acked_at_check = s.acked;
            }
            pr.match_at_check = pr.match_;
            pr.sent_at_check = pr.next - 1;
            if stalled {
                if let Some(max) = backoff_max {
                    pr.resend_wait = (pr.resend_wait.max(period) * 2).min(max);
                    pr.resend_not_before = now + pr.resend_wait;
                }
                resend.push(*id);
            }
        }
        for id in resend {
            self.maybe_send_append(id, false);
        }
    }
}

/// What a member's message to its leader answered (`Raft::leader_hears`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Answered {
    /// An Append (an AppendResp).
    Append,
    /// A heartbeat (a HeartbeatResp).
    Heartbeat,
}

/// See [`Raft::entries_cannot_serve`]: the follower needs the log from its start and
/// the membership it starts from does not list it.
fn needs_base(prev_index: Index, to: NodeId, base: &Membership) -> bool {
    prev_index == 0 && !base.voters.contains(&to) && !base.learners.contains(&to)
}

fn ack(index: Index) -> MessageBody {
    MessageBody::AppendResp {
        reject: false,
        index,
        hint_index: 0,
        hint_term: 0,
    }
}

/// Takes followers out of `skip` (suppressed heartbeats) until the voters that get the
/// heartbeat and are `alive` (a dead one echoes nothing), with the leader, make a quorum:
/// least recently heard first (those are the ones whose echoes the lease cannot get
/// otherwise), then by id.
fn keep_lease_quorum(
    skip: &mut BTreeSet<NodeId>,
    voters: &[NodeId],
    me: NodeId,
    progress: &ProgressMap,
    alive: impl Fn(&Progress) -> bool,
) {
    let need = quorum::majority(voters.len()).saturating_sub(usize::from(voters.contains(&me)));
    let beating = voters
        .iter()
        .filter(|v| **v != me && !skip.contains(v))
        .filter(|v| progress.get(v).is_some_and(&alive))
        .count();
    let mut skipped: Vec<(u64, NodeId)> = voters
        .iter()
        .filter(|v| skip.contains(v))
        .map(|v| (progress[v].heard_at, *v))
        .collect();
    skipped.sort();
    for (_, v) in skipped.into_iter().take(need.saturating_sub(beating)) {
        skip.remove(&v);
    }
}
