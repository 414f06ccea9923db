//! The node core's side of Raft's Ready: persisting (as DiskOps of the round), sending,
//! applying committed entries and installing snapshots, in the order kv-raft prescribes;
//! taking snapshots; and finishing DiskWrites once durable. Split from core.rs to keep
//! that file readable.

use super::{is_listed, DiskOp, Durable, Group, NodeCore};
use crate::codec::{frame, GroupMessage};
use crate::events::{EventKind, NodeEvent};
use crate::sm::StateMachine;
use crate::wal;
use kv_raft::{ConfChange, Entry, EntryKind, Role, Snapshot};
use kv_shared::proto::{ClientError, Outcome};
use kv_shared::ShardId;

/// A shard takes a snapshot once this many entry payload bytes were applied since its
/// last one, even below `snapshot_threshold_entries`: entries batch many writes, so an
/// entry count alone let a long run of small puts stay in memory as log, and a restarted
/// follower replayed them instead of installing a snapshot.
const SNAPSHOT_LOG_BYTES_MAX: u64 = 8 * 1024 * 1024;

impl NodeCore {
    /// DiskWrite `id` is durable.
    pub fn on_disk_done(&mut self, id: u64) {
        let Some(done) = self.disk_inflight.remove(&id) else {
            return;
        };
        for d in done {
            match d {
                // The replica was removed meanwhile: nothing of it is waiting any more.
                Durable::Raft(g, _)
                | Durable::OwnSnapshot(g, _)
                | Durable::ReceivedSnapshot(g, _)
                    if !self.groups.contains(g) => {}
                Durable::Raft(g, wid) => {
                    // The acknowledgements the write held leave now, without a whole
                    // Ready of their own: a follower's round took one per group.
                    let mut rd = self.ready_buf.take().unwrap_or_default();
                    let group = &mut self.groups[g];
                    group.raft.on_persisted(wid);
                    group.raft.take_messages(&mut rd.messages);
                    let shard = group.shard;
                    for m in rd.messages.drain(..) {
                        self.send_message(shard, m);
                    }
                    self.ready_buf = Some(rd);
                }
                Durable::OwnSnapshot(g, snap) => {
                    let group = &mut self.groups[g];
                    group.snapshot_writes_inflight -= 1;
                    let index = snap.meta.index;
                    if index > group.snapshot_index {
                        group.snapshot_index = index;
                        group.raft.compact(snap);
                        self.round_ops.push(DiskOp::Compact { shard: g.0, index });
                    }
                }
                Durable::ReceivedSnapshot(g, index) => {
                    let group = &mut self.groups[g];
                    group.snapshot_writes_inflight -= 1;
                    if group.removed_by_snapshot == Some(index) {
                        group.removed_at = Some(index);
                    }
                    self.round_ops.push(DiskOp::Compact { shard: g.0, index });
                }
                // Created again meanwhile: its take-back deleted the files already,
                // and a removal now would delete the new life's.
                Durable::Removed(g) if self.groups.contains(g) => {}
                Durable::Removed(g) => self.round_ops.push(DiskOp::RemoveGroup { shard: g.0 }),
            }
        }
    }

    /// Drains every group with something to do: a Ready, a removal to finish, or a
    /// snapshot due. Only the groups touched since the last call can have any
    /// ([`super::group::Groups`] says why), so only those are asked; a group that the
    /// draining of another touches is asked on the next call, as when every group was
    /// asked once up front.
    pub(super) fn drive(&mut self) {
        let threshold = self.config.snapshot_threshold_entries;
        let touched = self.groups.take_touched();
        for &g in &touched {
            let (ready, busy) = self.groups.peek_mut(g).map_or((false, false), |g| {
                let ready = g.raft.has_ready();
                (
                    ready,
                    ready || g.removed_at.is_some() || snapshot_due(g, threshold),
                )
            });
            if busy {
                self.drive_group_known(g, ready);
            }
        }
        self.groups.give_back(touched);
    }

    /// Drains group `g`'s Ready until it has none, then removes the replica or takes a
    /// snapshot if due.
    pub(super) fn drive_group(&mut self, g: ShardId) {
        let ready = self.groups.contains(g) && self.groups[g].raft.has_ready();
        self.drive_group_known(g, ready);
    }

    /// [`NodeCore::drive_group`] where the caller just asked `has_ready` (`ready`), so
    /// that the first round of the loop does not ask again: a leader's group is asked
    /// several times per round, and each ask runs its batched sends first.
    fn drive_group_known(&mut self, g: ShardId, mut ready: bool) {
        if !self.groups.contains(g) {
            return;
        }
        while ready {
            self.handle_ready(g);
            ready = self.groups.get_mut(g).is_some_and(|g| g.raft.has_ready());
        }
        let group = &mut self.groups[g];
        if group.removed_at.is_some() && is_listed(group.raft.membership(), self.config.node) {
            // A later change, committed with the removal (a lagging replica applying
            // a batch), added it back: it stays, with what it acknowledged.
            group.removed_at = None;
        }
        if let Some(epoch) = group.removed_at {
            if self.groups[g].raft.log_adds_after(self.config.node, epoch) {
                // Added back by a change not committed yet, whose entries it may
                // have acknowledged already: it stays until that change commits
                // (above) or is overwritten.
                self.maybe_snapshot(g);
                return;
            }
            #[cfg(feature = "planted-bugs")]
            if self.removed_replica_serves_reads {
                self.maybe_snapshot(g);
                return;
            }
            self.drop_replica(g, epoch);
            return;
        }
        self.maybe_snapshot(g);
        // Nothing above gave the group input after its last `has_ready`: a snapshot
        // taken now waits for its disk write, which touches the group when done.
        self.groups.settle(g);
    }

    fn handle_ready(&mut self, g: ShardId) {
        // One `Ready` serves every group's every round: its vectors keep their room, so
        // a round allocates nothing for them per group (`kv_raft::Raft::ready_into`).
        // Boxed because it is taken out and put back on every call: moving a `Ready`
        // (over 400 bytes) copied it twice per group per round.
        let mut rd = self.ready_buf.take().unwrap_or_default();
        let group = &mut self.groups[g];
        group.raft.ready_into(&mut rd);
        let shard = group.shard;
        // Each vector is drained only if it holds something: most of a round's Readies
        // carry one or two of them, and an empty drain still costs a call to its drop.
        if !rd.events.is_empty() {
            self.out
                .events
                .extend(rd.events.drain(..).map(|e| NodeEvent::from_raft(shard, e)));
        }
        if let Some(ss) = rd.soft_state {
            let old = self.groups[g].soft;
            self.groups[g].soft = ss;
            let changes = [
                (old.role != ss.role).then_some(EventKind::RoleChanged {
                    from: old.role,
                    to: ss.role,
                }),
                (old.leader != ss.leader).then_some(EventKind::LeaderChanged {
                    from: old.leader,
                    to: ss.leader,
                }),
            ];
            for kind in changes.into_iter().flatten() {
                self.out.events.push(NodeEvent {
                    shard,
                    term: ss.term,
                    kind,
                });
            }
            if old.role == Role::Leader && (ss.role != Role::Leader || ss.term != old.term) {
                self.fail_leader_requests(g, ss.leader);
            }
        }
        if let Some(w) = &mut rd.write {
            self.persist(g, w);
            // Kept for its entries' room only: what it held is in the round's ops now,
            // and a snapshot image must not stay alive in the buffer.
            w.entries.clear();
            w.snapshot = None;
        }
        if !rd.appends.is_empty() {
            // Written into the peer's frame straight from the group's log, unless its
            // entries are large: a record's data is copied twice (into the frame, then
            // the datagram), a message's once, and its own costs weigh little then.
            let raft = &self.groups[g].raft;
            for a in rd.appends.drain(..) {
                let entries = raft.append_entries(&a);
                let bytes: usize = entries.iter().map(|e| e.data.len()).sum();
                if bytes < frame::RECORD_DATA_BYTES_MAX {
                    self.outbox.frame(a.to).append(shard, &a, entries);
                } else {
                    let msg = raft.append_message(&a);
                    self.outbox.to(a.to).push(GroupMessage { shard, msg });
                }
            }
        }
        if !rd.messages.is_empty() {
            for m in rd.messages.drain(..) {
                self.send_message(shard, m);
            }
        }
        if let Some(snap) = rd.apply_snapshot.take() {
            self.apply_deferred_of(g);
            self.out.events.push(NodeEvent {
                shard,
                term: self.groups[g].soft.term,
                kind: EventKind::SnapshotInstalled {
                    index: snap.meta.index,
                },
            });
            self.restore_snapshot(g, snap);
        }
        if !rd.committed.is_empty() {
            let group = &mut self.groups[g];
            let defer = self.defer_follower_applies
                && group.soft.role == Role::Follower
                && group.sm.move_in_flight().is_none()
                && rd.committed.iter().all(|e| e.kind == EntryKind::Command);
            if defer {
                if group.deferred.is_empty() {
                    self.deferred_groups.push(g);
                }
                group.deferred.append(&mut rd.committed);
            } else {
                self.apply_deferred_of(g);
                for e in rd.committed.drain(..) {
                    self.apply(g, e);
                }
            }
        }
        if rd.snapshot_wanted {
            self.provide_snapshot(g);
        }
        if !rd.reads.is_empty() {
            for rs in rd.reads.drain(..) {
                if let Some(ids) = self.groups[g].reads.remove(&rs.ctx) {
                    self.groups[g].confirmed_reads.push((rs.index, ids));
                }
            }
        }
        if !rd.failed_reads.is_empty() {
            let leader = self.groups[g].soft.leader;
            for ctx in rd.failed_reads.drain(..) {
                if let Some(ids) = self.groups[g].reads.remove(&ctx) {
                    for id in ids {
                        self.reply(id, Outcome::Error(ClientError::NotLeader { shard, leader }));
                    }
                }
            }
        }
        self.ready_buf = Some(rd);
        self.serve_confirmed_reads(g);
        let group = &mut self.groups[g];
        // Sticky: Raft's membership is the committed one, which runs ahead of what this
        // node applied. A member whose removal Raft committed before its entries were
        // durable never applies that removal when a leader's snapshot past it overtakes
        // them; the snapshot must still count as its removal.
        group.was_member |= is_listed(group.raft.membership(), self.config.node);
    }

    /// Puts group `shard`'s message `m` in its peer's outbox: an acknowledgement of
    /// the leader's log as a record of the peer's frame, any other message whole.
    fn send_message(&mut self, shard: ShardId, m: kv_raft::Message) {
        if m.to == self.config.node {
            return;
        }
        match frame::acked_index(&m.body) {
            Some(index) => self.outbox.frame(m.to).ack(shard, m.term, index),
            None => self.outbox.to(m.to).push(GroupMessage { shard, msg: m }),
        }
    }

    /// Turns a Raft Write into DiskOps of this round: snapshot, then the log and commit
    /// index as a part of the round record, then the term and vote, only if changed.
    fn persist(&mut self, g: ShardId, w: &kv_raft::Write) {
        let shard = g.0;
        if !w.deferrable {
            self.round_ops.mark_urgent();
        }
        let mut replaced_log = false;
        if let Some(snap) = &w.snapshot {
            self.round_ops.push(DiskOp::SaveSnapshot {
                shard,
                index: snap.meta.index,
                data: wal::encode_snapshot(snap),
            });
            self.groups[g].snapshot_writes_inflight += 1;
            self.round_durable
                .push(Durable::ReceivedSnapshot(g, snap.meta.index));
            let me = self.config.node;
            let group = &mut self.groups[g];
            let listed = is_listed(&snap.meta.membership, me);
            // A member that missed its removal (it was cut off) learns it from a
            // snapshot past it: removed like by the change itself, once the snapshot
            // (and so its acknowledgement) is durable.
            group.removed_by_snapshot = (group.was_member && !listed).then_some(snap.meta.index);
            // Did Raft keep a log suffix past the snapshot? If not, the stored one is void.
            let raft = &self.groups[g].raft;
            replaced_log =
                raft.write_entries(w).is_empty() && raft.status().last_index == snap.meta.index;
            if replaced_log {
                self.round_ops.add_part(shard, snap.meta.index + 1, &[], 0);
            }
        }
        let commit = w.hard_state.map_or(0, |hs| hs.commit);
        // Written into the round record straight from the group's log.
        let entries = self.groups[g].raft.write_entries(w);
        if let Some(first) = entries.first().map(|e| e.index) {
            debug_assert!(!replaced_log);
            self.round_ops.add_part(shard, first, entries, commit);
        } else if commit > 0 {
            self.round_ops.add_part(shard, 0, &[], commit);
        }
        if let Some(hs) = &w.hard_state {
            let group = &mut self.groups[g];
            if (hs.term, hs.vote) != group.term_vote_written {
                group.term_vote_written = (hs.term, hs.vote);
                self.round_ops
                    .push(DiskOp::Append(wal::hard_state_record(shard, hs)));
            }
        }
        self.round_durable.push(Durable::Raft(g, w.id));
    }

    fn restore_snapshot(&mut self, g: ShardId, snap: Snapshot) {
        let sessions_max = self.config.sessions_max();
        let group = &mut self.groups[g];
        // kv-raft persisted and handed out this snapshot only after
        // `sm::snapshot_image_restorable` accepted it.
        let sm = StateMachine::from_image(&snap.data, sessions_max)
            .unwrap_or_else(|e| panic!("shard {g}: a checked snapshot image fails: {e}"));
        assert_eq!(
            sm.applied_index(),
            snap.meta.index,
            "snapshot image and metadata disagree"
        );
        group.sm = sm;
        if group.sealed.is_some_and(|t| snap.meta.index > t.epoch) {
            // Past its earlier life's removal: nothing of that life can be replayed
            // into it any more, and it votes and acknowledges as any member.
            group.sealed = None;
        }
        group.applied_bytes_since_snapshot = 0;
        group.snapshot_index = group.snapshot_index.max(snap.meta.index);
        let shard = group.shard;
        let leader = group.soft.leader;
        while let Some((_, _, ids)) = self.groups[g].proposed.pop_through(snap.meta.index) {
            for id in ids {
                self.reply(id, Outcome::Error(ClientError::NotLeader { shard, leader }));
            }
        }
    }

    /// Applies what followers deferred ([`NodeCore::set_defer_follower_applies`]), then
    /// serves the reads that waited for it. True if that left output for the next
    /// [`NodeCore::take_output`] (answers, events, a snapshot to write), so the runtime
    /// knows to flush again.
    pub fn apply_deferred(&mut self) -> bool {
        if self.deferred_groups.is_empty() {
            return false;
        }
        let mut groups = std::mem::take(&mut self.deferred_groups);
        for &g in &groups {
            // Dropped meanwhile (its deferred entries went with it), or already applied
            // by a later Ready of its own.
            if !self.groups.contains(g) || self.groups[g].deferred.is_empty() {
                continue;
            }
            self.apply_deferred_of(g);
            self.serve_confirmed_reads(g);
            self.maybe_snapshot(g);
        }
        groups.clear();
        self.deferred_groups = groups;
        !self.out.replies.is_empty()
            || !self.out.events.is_empty()
            || !self.out.applied.is_empty()
            || !self.round_ops.is_empty()
    }

    /// Applies group `g`'s deferred entries, ahead of anything later in its log.
    // Inline for the check: every leader's Ready that commits asks, and has none.
    #[inline]
    fn apply_deferred_of(&mut self, g: ShardId) {
        if !self.groups[g].deferred.is_empty() {
            self.apply_deferred_entries(g);
        }
    }

    #[inline(never)]
    fn apply_deferred_entries(&mut self, g: ShardId) {
        let mut deferred = std::mem::take(&mut self.groups[g].deferred);
        for e in deferred.drain(..) {
            self.apply(g, e);
        }
        // Its room serves the next round's entries.
        self.groups[g].deferred = deferred;
    }

    fn apply(&mut self, g: ShardId, e: Entry) {
        self.report_applied(self.groups[g].shard, &e);
        let me = self.config.node;
        // Kept from entry to entry: most entries carry one or two writes.
        let mut outcomes = std::mem::take(&mut self.outcomes_buf);
        outcomes.clear();
        let group = &mut self.groups[g];
        group.applied_bytes_since_snapshot += e.data.len() as u64;
        let moving = group.sm.move_in_flight();
        match e.kind {
            EntryKind::Command => {
                group
                    .sm
                    .apply_entry_into(e.index, e.term, &e.data, &mut outcomes)
            }
            EntryKind::Noop => group.sm.apply_empty(e.index, e.term),
            EntryKind::ConfChange(change) => {
                group.sm.apply_membership_change(e.index, e.term);
                if change == ConfChange::RemoveNode(me) {
                    group.removed_at = Some(e.index);
                }
            }
        }
        let move_ended = moving.is_some() && group.sm.move_in_flight() != moving;
        let shard = group.shard;
        let leader = group.soft.leader;
        // Batches proposed at or below this index either are this entry or were lost.
        // Answering one touches no group's `proposed`, so they are taken one at a time.
        while let Some((i, term, ids)) = self.groups[g].proposed.pop_through(e.index) {
            if i == e.index && term == e.term && outcomes.len() == ids.len() {
                for (&id, outcome) in ids.iter().zip(outcomes.drain(..)) {
                    if self.is_move_in_flight_request(g, id) {
                        self.groups[g].move_waiters.push(id);
                        continue;
                    }
                    self.reply(id, outcome);
                }
            } else {
                for &id in &ids {
                    self.reply(id, Outcome::Error(ClientError::NotLeader { shard, leader }));
                }
            }
            self.recycle_ids(ids);
        }
        self.outcomes_buf = outcomes;
        if move_ended {
            self.move_ended(g);
        }
    }

    // Inline, and the snapshot itself not: every group's every drain and deferred
    // apply asks, and nearly always nothing is due.
    #[inline]
    fn maybe_snapshot(&mut self, g: ShardId) {
        if snapshot_due(&self.groups[g], self.config.snapshot_threshold_entries) {
            self.take_snapshot(g);
        }
    }

    /// Answers `Ready::snapshot_wanted` (kv-raft keeps a snapshot image only while a
    /// follower takes it) with an image of the shard's applied state, from memory: no
    /// disk write or read on the way to a lagging follower.
    fn provide_snapshot(&mut self, g: ShardId) {
        let group = &mut self.groups[g];
        let snap = Snapshot {
            meta: group.raft.snapshot_meta(group.sm.applied_index()),
            data: group.sm.to_image(),
        };
        group.raft.provide_snapshot(snap);
    }

    /// Writes a snapshot of shard `g` at its applied index; Raft compacts once durable.
    #[inline(never)]
    fn take_snapshot(&mut self, g: ShardId) {
        let group = &mut self.groups[g];
        let applied = group.sm.applied_index();
        group.applied_bytes_since_snapshot = 0;
        // The membership as of `applied`, not Raft's current one: a change committed
        // but not yet applied would otherwise be in the snapshot and not in its image,
        // and `compact` refuses a meta that disagrees with the log.
        let snap = Snapshot {
            meta: group.raft.snapshot_meta(applied),
            data: group.sm.to_image(),
        };
        group.snapshot_writes_inflight += 1;
        self.round_ops.push(DiskOp::SaveSnapshot {
            shard: g.0,
            index: applied,
            data: wal::encode_snapshot(&snap),
        });
        self.round_durable.push(Durable::OwnSnapshot(g, snap));
    }
}

/// Bytes of log writes after which a round record is closed and the next one begun:
/// a quarter of `kv_storage::RECORD_PAYLOAD_BYTES_MAX`, so that a record stays below it
/// with one more entry of the largest size a client may write.
const ROUND_RECORD_BYTES: usize = 4 << 20;

/// Most bytes an entry's encoding takes besides its data (term, index, kind and the
/// data's length as varints).
const ENTRY_ENCODING_BYTES_MAX: usize = 32;

const _: () = assert!(
    ROUND_RECORD_BYTES + 2 * (kv_shared::limits::ENTRY_BYTES_MAX + ENTRY_ENCODING_BYTES_MAX)
        < kv_storage::RECORD_PAYLOAD_BYTES_MAX as usize
);

/// The DiskOps of the round being assembled. The log writes of consecutive groups
/// share one round record ([`wal::RoundRecord`]); any other op closes it first, so
/// every op keeps its place in the order the round made them.
#[derive(Debug, Default)]
pub(super) struct RoundOps {
    ops: Vec<DiskOp>,
    open: wal::RoundRecord,
    /// Something other than log parts of `deferrable` Raft writes was added: the
    /// round's `DiskWrite` must be synced promptly.
    urgent: bool,
}

impl RoundOps {
    /// Adds `op` after everything added so far. Only log parts of deferrable Raft writes
    /// may wait for their fsync, so any other op makes the round urgent.
    pub(super) fn push(&mut self, op: DiskOp) {
        self.close();
        self.ops.push(op);
        self.urgent = true;
    }

    /// Something waits for this round's durability (see [`kv_raft::Write::deferrable`]).
    fn mark_urgent(&mut self) {
        self.urgent = true;
    }

    /// Adds a group's log write and commit index (see [`wal::RoundRecord::add`]). A
    /// round's log writes are unbounded (a follower catching up takes in every Append
    /// its socket holds in one turn, megabytes for each of many groups), and storage
    /// refuses a record over `RECORD_PAYLOAD_BYTES_MAX` by stopping the node: so a record
    /// is closed once it holds [`ROUND_RECORD_BYTES`], and a group's entries that do not
    /// fit go on in the next record as a part of their own (truncating from its first
    /// index, the end of what the part before appended, truncates nothing).
    fn add_part(&mut self, shard: u32, mut first_index: u64, entries: &[Entry], commit: u64) {
        let mut rest = entries;
        loop {
            let room = ROUND_RECORD_BYTES.saturating_sub(self.open.bytes());
            let (mut fit, mut bytes) = (0, 0);
            for e in rest {
                bytes += e.data.len() + ENTRY_ENCODING_BYTES_MAX;
                // An empty record takes at least one entry, whatever its size.
                if bytes > room && !(fit == 0 && self.open.is_empty()) {
                    break;
                }
                fit += 1;
            }
            if fit == rest.len() {
                self.open.add(shard, first_index, rest, commit);
                if self.open.bytes() >= ROUND_RECORD_BYTES {
                    self.close();
                }
                return;
            }
            if fit > 0 {
                // The commit index goes with the last part (recovery takes the highest).
                self.open.add(shard, first_index, &rest[..fit], 0);
                first_index += fit as u64;
                rest = &rest[fit..];
            }
            self.close();
        }
    }

    /// True if nothing was added since the last take.
    pub(super) fn is_empty(&self) -> bool {
        self.ops.is_empty() && self.open.is_empty()
    }

    /// The ops of the round, leaving room for as many in the next, and whether their
    /// fsync may wait (`DiskWrite::deferrable`).
    pub(super) fn take(&mut self) -> (Vec<DiskOp>, bool) {
        self.close();
        let deferrable = !std::mem::take(&mut self.urgent);
        (super::outbox::take_sized(&mut self.ops), deferrable)
    }

    fn close(&mut self) {
        if let Some(record) = self.open.take() {
            self.ops.push(DiskOp::Append(record));
        }
    }
}

impl FromIterator<DiskOp> for RoundOps {
    fn from_iter<I: IntoIterator<Item = DiskOp>>(ops: I) -> RoundOps {
        let ops: Vec<DiskOp> = ops.into_iter().collect();
        RoundOps {
            urgent: !ops.is_empty(),
            ops,
            open: wal::RoundRecord::default(),
        }
    }
}

/// True if `group` should take a snapshot now: none is being written, and its log grew
/// past `threshold_entries` entries or `SNAPSHOT_LOG_BYTES_MAX` bytes since the last one.
#[inline]
fn snapshot_due(group: &Group, threshold_entries: u64) -> bool {
    let applied = group.sm.applied_index();
    let log_small = applied <= group.snapshot_index + threshold_entries
        && group.applied_bytes_since_snapshot < SNAPSHOT_LOG_BYTES_MAX;
    group.snapshot_writes_inflight == 0 && applied > group.snapshot_index && !log_small
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn entry(index: u64, bytes: usize) -> Entry {
        Entry {
            term: 1,
            index,
            kind: EntryKind::Command,
            data: Bytes::from(vec![index as u8; bytes]),
        }
    }

    /// The parts of the round records `ops` holds, in order.
    fn parts(ops: &[DiskOp]) -> Vec<wal::RoundPart> {
        let mut parts = Vec::new();
        for op in ops {
            let DiskOp::Append(record) = op else {
                panic!("only appends: {op:?}");
            };
            assert!(
                record.payload.len() < kv_storage::RECORD_PAYLOAD_BYTES_MAX as usize,
                "a record storage would refuse: {} bytes",
                record.payload.len()
            );
            match wal::decode(record).unwrap() {
                wal::WalRecord::Round(p) => parts.extend(p),
                other => panic!("not a round record: {other:?}"),
            }
        }
        parts
    }

    /// A follower catching up can take in more log writes in one turn than storage
    /// takes in one record (which stops the node): they are spread over records below
    /// the limit, and replaying the parts in order appends exactly the same entries, with
    /// the commit index in the last part of the group.
    #[test]
    fn a_round_larger_than_a_record_is_split_into_records_storage_takes() {
        let mut ops = RoundOps::default();
        ops.add_part(7, 0, &[], 3);
        let big: Vec<Entry> = (1..=700).map(|i| entry(i, 30 * 1024)).collect();
        ops.add_part(1, 1, &big, 650);
        let small: Vec<Entry> = (41..=42).map(|i| entry(i, 100)).collect();
        ops.add_part(2, 41, &small, 40);
        let (ops, _) = ops.take();
        assert!(
            ops.len() >= 5,
            "21 MB in records of 4 MiB: {} records",
            ops.len()
        );
        let parts = parts(&ops);
        let mut log: Vec<Entry> = Vec::new();
        let mut commits = Vec::new();
        for part in &parts {
            if part.shard != 1 {
                continue;
            }
            let keep = (part.first_index - 1) as usize;
            assert_eq!(
                keep,
                log.len(),
                "each part goes on where the last one ended"
            );
            log.truncate(keep);
            log.extend(part.entries.iter().cloned());
            commits.push(part.commit);
        }
        assert_eq!(log, big);
        assert_eq!(commits.last(), Some(&650));
        assert!(commits[..commits.len() - 1].iter().all(|&c| c == 0));
        let others: Vec<(u32, u64, usize, u64)> = (parts.iter())
            .filter(|p| p.shard != 1)
            .map(|p| (p.shard, p.first_index, p.entries.len(), p.commit))
            .collect();
        assert_eq!(others, vec![(7, 0, 0, 3), (2, 41, 2, 40)]);
    }

    /// An ordinary round stays one record.
    #[test]
    fn a_small_round_is_one_record() {
        let mut ops = RoundOps::default();
        ops.add_part(1, 5, &[entry(5, 100), entry(6, 100)], 4);
        ops.add_part(2, 9, &[entry(9, 100)], 8);
        let (ops, _) = ops.take();
        assert_eq!(ops.len(), 1);
        assert_eq!(parts(&ops).len(), 2);
    }
}
