//! Snapshots over a lossy network: the leader streams a snapshot in chunks within a
//! window and resumes from the follower's acknowledged offset; the follower assembles the
//! chunks, makes the snapshot durable through a `Write`, then acknowledges `done`.

use crate::node::{Raft, RoleState};
use crate::progress::ProgressState;
use crate::types::{EntryKind, Index, MessageBody, Snapshot, SnapshotMeta, Term};
use bytes::{Bytes, BytesMut};
use kv_shared::NodeId;

/// How many election timeouts of silence from every follower that needs it a leader
/// keeps a snapshot image (see `Raft::snapshot_image_needed`).
const SNAPSHOT_HOLD_ELECTIONS: u64 = 10;

/// A snapshot being received.
#[derive(Debug)]
pub(crate) struct Incoming {
    /// Term of the leader sending it: a new leader's transfer starts over.
    term: Term,
    meta: SnapshotMeta,
    total_len: u64,
    buf: BytesMut,
}

impl Incoming {
    /// The size the sender announced (what the buffer may grow to).
    pub(crate) fn total_len(&self) -> u64 {
        self.total_len
    }
}

impl Raft {
    /// The caller has durably stored `snapshot` of its state machine (its index at or
    /// below the applied index): drop the log up to it and use it for lagging followers.
    pub fn compact(&mut self, snapshot: Snapshot) {
        self.drained = false;
        let index = snapshot.meta.index;
        assert!(
            index <= self.log.applied,
            "compact({index}) beyond the applied index {}",
            self.log.applied
        );
        if index <= self.log.snap_index {
            return;
        }
        let meta = self.snapshot_meta(index);
        assert_eq!(
            meta, snapshot.meta,
            "snapshot meta does not match the log (use snapshot_meta)"
        );
        self.snapshot_at = self.snapshot_at.max(index);
        let cut = self.compaction_floor(index);
        if cut > self.log.snap_index {
            self.settle_appends();
            let cut_meta = if cut == index {
                meta
            } else {
                self.snapshot_meta(cut)
            };
            self.log.compact(cut, cut_meta.term);
            self.snap_membership = cut_meta.membership;
        }
        if self.snapshot.as_ref().is_none_or(|s| s.meta.index < index) {
            self.snapshot = Some(snapshot);
        }
    }

    /// Where compacting at a snapshot of `index` may cut the log. A follower's cut is
    /// the snapshot. A leader keeps the entries a follower heard within an election
    /// timeout still lacks (above its match index), as long as they hold at most
    /// `Config::compact_keep_bytes_max` payload bytes: a follower a little behind (the
    /// slower of two on a busy disk) then catches up from the log, where a cut at the
    /// snapshot sent it the image of the whole shard, which slowed it further.
    fn compaction_floor(&self, index: Index) -> Index {
        let RoleState::Leader(ls) = &self.role else {
            return index;
        };
        let alive_ticks = u64::from(self.cfg.election_ticks_max);
        let Some(slowest) = ls
            .progress
            .values()
            .filter(|p| self.now - p.heard_at < alive_ticks)
            .map(|p| p.match_)
            .min()
        else {
            return index;
        };
        let floor = slowest.clamp(self.log.snap_index, index);
        let kept: usize = self
            .log
            .range(floor + 1, index)
            .iter()
            .map(|e| e.data.len())
            .sum();
        if kept > self.cfg.compact_keep_bytes_max {
            index
        } else {
            floor
        }
    }

    /// Answers `Ready::snapshot_wanted`: an image of the state machine at an applied
    /// index at or above the compacted one, to send to followers. It compacts nothing and
    /// need not be durable here: it holds only committed entries, and a follower persists
    /// it before acknowledging it.
    pub fn provide_snapshot(&mut self, snapshot: Snapshot) {
        self.drained = false;
        let index = snapshot.meta.index;
        assert_eq!(
            self.snapshot_meta(index),
            snapshot.meta,
            "snapshot meta does not match the log (use snapshot_meta)"
        );
        if self.snapshot.as_ref().is_none_or(|s| s.meta.index < index) {
            self.snapshot = Some(snapshot);
        }
    }

    /// The metadata a snapshot of the state machine at `index` must carry (term and
    /// membership as of `index`), for building the argument of [`Raft::compact`].
    /// `index` must be applied and not below the current snapshot.
    pub fn snapshot_meta(&self, index: Index) -> SnapshotMeta {
        assert!(
            index <= self.log.applied && index >= self.log.snap_index,
            "snapshot_meta({index}) out of range"
        );
        let mut membership = self.snap_membership.clone();
        for e in self.log.range(self.log.snap_index + 1, index) {
            if let EntryKind::ConfChange(c) = &e.kind {
                crate::membership::apply_committed(&mut membership, c);
            }
        }
        SnapshotMeta {
            index,
            term: self.log.term(index).expect("held"),
            membership,
        }
    }

    /// True if `to` answered within `elections` election timeouts. A follower not heard
    /// from yet counts from tick 0: a young leader's life is that short anyway.
    fn heard_within(&self, to: NodeId, elections: u64) -> bool {
        let RoleState::Leader(ls) = &self.role else {
            return false;
        };
        let ticks = elections * u64::from(self.cfg.election_ticks_max);
        ls.progress
            .get(&to)
            .is_some_and(|pr| self.now - pr.heard_at < ticks)
    }

    /// True while a leader sends (or is about to send) its snapshot to a follower heard
    /// within `SNAPSHOT_HOLD_ELECTIONS` election timeouts; otherwise `ready` drops the
    /// image, and `Ready::snapshot_wanted` asks for one again (`provide_snapshot`) when a
    /// transfer starts. The span is long because a follower installing large snapshots,
    /// or a leader building images, can be silent for a while, and an image dropped
    /// mid-transfer costs a rebuild; a follower dead for longer pins nothing.
    pub(crate) fn snapshot_image_needed(&self) -> bool {
        let RoleState::Leader(ls) = &self.role else {
            return false;
        };
        ls.progress.iter().any(|(id, pr)| {
            let behind = matches!(pr.state, ProgressState::Snapshot(_))
                || self.entries_cannot_serve(pr.next - 1, *id);
            behind && self.heard_within(*id, SNAPSHOT_HOLD_ELECTIONS)
        })
    }

    /// Asks the caller for a snapshot image if `to` answered within an election timeout:
    /// a dead follower triggers no image builds.
    fn want_snapshot(&mut self, to: NodeId) {
        if self.heard_within(to, 1) {
            self.snapshot_wanted = true;
        }
    }

    /// Switches `to` to snapshot mode (its next entry is compacted) and starts sending.
    pub(crate) fn start_snapshot(&mut self, to: NodeId) -> bool {
        let Some(index) = self.snapshot.as_ref().map(|s| s.meta.index) else {
            self.want_snapshot(to);
            return false;
        };
        let listed =
            |m: &crate::types::Membership| m.voters.contains(&to) || m.learners.contains(&to);
        let predates_member = listed(&self.membership)
            && self
                .snapshot
                .as_ref()
                .is_some_and(|s| !listed(&s.meta.membership));
        if predates_member {
            // An image from before `to` was added: a node that left the group and
            // comes back recreates its replica only from a snapshot that lists it
            // (the proof that it was added again after its removal), so ask for an
            // image of the applied state, which holds the addition.
            self.want_snapshot(to);
            return false;
        }
        let RoleState::Leader(ls) = &mut self.role else {
            return false;
        };
        let Some(pr) = ls.progress.get_mut(&to) else {
            return false;
        };
        pr.become_snapshot(index);
        self.events.push(crate::Event::SnapshotSendStarted {
            to,
            index,
            term: self.term,
        });
        self.send_snapshot_chunks(to)
    }

    /// How many bytes beyond a follower's acknowledged offset a transfer may have out.
    /// The follower keeps only the chunk at its offset, so a chunk its socket drops
    /// wastes the rest of the window, which is sent again: the window should fit, with
    /// every other group's, in the follower's receive buffer.
    pub(crate) fn snapshot_window_bytes(&self) -> u64 {
        let chunk_max = self.cfg.snapshot_chunk_bytes_max as u64;
        let by_count = chunk_max * self.cfg.inflight_appends_max as u64;
        by_count
            .min(self.cfg.snapshot_inflight_bytes_max as u64)
            .max(chunk_max)
    }

    /// Sends the next chunks of the current snapshot to `to`, at most
    /// `snapshot_window_bytes` beyond what it acknowledged.
    pub(crate) fn send_snapshot_chunks(&mut self, to: NodeId) -> bool {
        let Some(snap) = self.snapshot.clone() else {
            self.want_snapshot(to);
            return false;
        };
        let chunk_max = self.cfg.snapshot_chunk_bytes_max as u64;
        let window = self.snapshot_window_bytes();
        let RoleState::Leader(ls) = &mut self.role else {
            return false;
        };
        let Some(pr) = ls.progress.get_mut(&to) else {
            return false;
        };
        let ProgressState::Snapshot(s) = &mut pr.state else {
            return false;
        };
        if s.index != snap.meta.index {
            // Compacted again meanwhile: send the newer snapshot from the start.
            *s = crate::progress::SnapshotSend::new(snap.meta.index);
        }
        let total = snap.data.len() as u64;
        let mut chunks = Vec::new();
        while !s.all_sent && s.next_offset - s.acked < window {
            let off = s.next_offset;
            let len = chunk_max.min(total - off);
            chunks.push((off, snap.data.slice(off as usize..(off + len) as usize)));
            s.next_offset = off + len;
            s.all_sent = s.next_offset == total;
        }
        let sent = !chunks.is_empty();
        pr.contacted |= sent;
        for (offset, chunk) in chunks {
            self.send(
                to,
                MessageBody::InstallSnapshot {
                    meta: snap.meta.clone(),
                    offset,
                    total_len: total,
                    chunk,
                },
            );
        }
        sent
    }

    /// Leader side: the follower reports how far it got.
    pub(crate) fn handle_snapshot_resp(
        &mut self,
        from: NodeId,
        index: Index,
        received: u64,
        done: bool,
    ) {
        let total = self.snapshot.as_ref().map_or(0, |s| s.data.len() as u64);
        let RoleState::Leader(ls) = &mut self.role else {
            return;
        };
        let Some(pr) = ls.progress.get_mut(&from) else {
            return;
        };
        let ProgressState::Snapshot(s) = &mut pr.state else {
            // Late answer for a finished transfer.
            return;
        };
        if s.index != index {
            return;
        }
        if done {
            pr.maybe_update(index);
            self.quorum_moved = true;
            pr.become_probe();
            while self.maybe_send_append(from, false) {}
            return;
        }
        if received < s.acked {
            // The follower lost its partial copy (restart or a new leader's transfer):
            // go back to where it is.
            s.acked = received;
            s.next_offset = received;
            s.all_sent = false;
        } else if received <= s.next_offset {
            if received == s.acked
                && received < s.next_offset
                && s.gap_resent_from != Some(received)
            {
                // The follower answered a chunk without moving: it got one past a gap
                // (it keeps only the chunk at its offset), so the chunk at `received`
                // was lost and everything sent after it is wasted. Resend from there
                // now rather than at the next retransmission check (one to two periods
                // per loss, which made a lossy catch-up crawl), once per gap.
                s.next_offset = received;
                s.all_sent = false;
                s.gap_resent_from = Some(received);
            }
            s.acked = received;
        } else if received <= total {
            // After a rewind (a stalled window is resent from `acked`), the follower may
            // report chunks it got before the rewind: it holds them (its buffer belongs
            // to this snapshot and term), so resume from there. Ignoring the report
            // livelocked a transfer whose window is smaller than the gap.
            s.acked = received;
            s.next_offset = received;
            s.all_sent = received == total;
        }
        self.send_snapshot_chunks(from);
    }

    /// Follower side: one chunk.
    pub(crate) fn handle_snapshot_chunk(
        &mut self,
        from: NodeId,
        meta: SnapshotMeta,
        offset: u64,
        total_len: u64,
        chunk: Bytes,
    ) {
        let index = meta.index;
        if index <= self.log.commit {
            // Nothing to learn from it (already installed, or older than our commit):
            // acknowledge so the leader moves on. Our log up to `index` must be durable
            // before we claim it, hence the hold.
            self.incoming = None;
            let body = MessageBody::InstallSnapshotResp {
                snapshot_index: index,
                received: total_len,
                done: true,
            };
            self.send_after_persist(from, body);
            return;
        }
        // `check_message` bounded offset + chunk by total_len, and total_len by
        // SNAPSHOT_IMAGE_BYTES_MAX: the buffer below never outgrows either.
        let term = self.term;
        let fresh = !self
            .incoming
            .as_ref()
            .is_some_and(|i| i.term == term && i.meta == meta && i.total_len == total_len);
        if fresh {
            self.incoming = None;
            if offset != 0 {
                let body = MessageBody::InstallSnapshotResp {
                    snapshot_index: index,
                    received: 0,
                    done: false,
                };
                self.send(from, body);
                return;
            }
            self.incoming = Some(Incoming {
                term,
                meta,
                total_len,
                buf: BytesMut::new(),
            });
        }
        let inc = self.incoming.as_mut().expect("set above");
        if offset == inc.buf.len() as u64 {
            inc.buf.extend_from_slice(&chunk);
        }
        // Duplicates and chunks past a gap are dropped; the ack below tells the leader
        // where to resume.
        let received = inc.buf.len() as u64;
        if received < inc.total_len {
            let body = MessageBody::InstallSnapshotResp {
                snapshot_index: index,
                received,
                done: false,
            };
            self.send(from, body);
            return;
        }
        let inc = self.incoming.take().expect("checked");
        let snap = Snapshot {
            meta: inc.meta,
            data: inc.buf.freeze(),
        };
        if self
            .cfg
            .snapshot_image_check
            .is_some_and(|valid| !valid(&snap))
        {
            // Nothing is persisted or acknowledged: the leader resends, and a node that
            // restarts does not find an image it cannot restore.
            self.refuse(crate::Refusal::SnapshotImageInvalid);
            return;
        }
        self.install_snapshot(snap);
        let body = MessageBody::InstallSnapshotResp {
            snapshot_index: index,
            received,
            done: true,
        };
        self.send_after_persist(from, body);
    }

    /// Replaces the log by a received snapshot (newer than our commit index).
    fn install_snapshot(&mut self, snap: Snapshot) {
        let meta = &snap.meta;
        if self.log.matches(meta.index, meta.term) {
            // We hold that entry: everything up to it is committed, nothing to restore.
            self.commit_to(meta.index);
            return;
        }
        let old_commit = self.log.commit;
        self.log.reset_to_snapshot(meta.index, meta.term);
        // Durable entries beyond our old commit may differ from the snapshot's prefix.
        self.on_truncated(old_commit + 1);
        self.membership = meta.membership.clone();
        self.snap_membership = meta.membership.clone();
        self.snapshot = Some(snap.clone());
        self.snapshot_unwritten = Some(snap);
    }
}

#[cfg(test)]
mod tests {
    use crate::node::RoleState;
    use crate::progress::ProgressState;
    use crate::testing::{test_config, Cluster};
    use crate::Config;
    use bytes::Bytes;
    use kv_shared::NodeId;

    fn run(c: &mut Cluster, ticks: usize) {
        for _ in 0..ticks {
            for id in [1, 2, 3] {
                c.tick(id);
            }
            c.stabilize();
        }
    }

    /// A 3-node cluster whose leader compacted `entries` proposals while one follower
    /// was down: returns (cluster, leader, the follower, still down).
    fn follower_behind_the_compacted_log(opts: Config, entries: usize) -> (Cluster, u64, u64) {
        let mut c = Cluster::new(3, &[], opts);
        c.quiet = true;
        run(&mut c, 60);
        let lead = c.leader().expect("a leader after 60 ticks");
        let down = if lead == 3 { 2 } else { 3 };
        c.crash(down);
        for i in 0..entries {
            let r = c
                .nodes
                .get_mut(&lead)
                .expect("leader")
                .raft
                .propose(Bytes::from(format!("value-{i:04}")));
            assert!(r.is_ok(), "{r:?}");
            c.stabilize();
        }
        run(&mut c, 2);
        c.compact(lead);
        (c, lead, down)
    }

    /// A snapshot image is as large as the state machine, so a leader holds one only
    /// while a follower that answers needs it: not for a dead follower, and not after the
    /// transfer. A follower that comes back gets it through `snapshot_wanted`.
    #[test]
    fn leader_holds_a_snapshot_image_only_while_a_live_follower_needs_it() {
        let (mut c, lead, down) = follower_behind_the_compacted_log(test_config(), 5);
        // Timeouts are 10..20 ticks: past 10 of them the dead follower pins nothing.
        run(&mut c, 210);
        assert_eq!(c.leader(), Some(lead));
        assert!(
            c.nodes[&lead].raft.snapshot.is_none(),
            "image held for a dead follower"
        );

        c.restart(down);
        c.quiet = false;
        run(&mut c, 250);
        assert!(
            c.out.contains(&format!("n{lead} snapshot wanted")),
            "{}",
            c.out
        );
        assert!(
            c.out.contains(&format!("n{down} restore snap@")),
            "{}",
            c.out
        );
        let applied = |c: &Cluster, id: u64| c.nodes[&id].raft.log.applied;
        assert_eq!(applied(&c, down), applied(&c, lead));
        for id in [1, 2, 3] {
            assert!(
                c.nodes[&id].raft.snapshot.is_none(),
                "n{id} still holds an image"
            );
        }
        assert!(matches!(c.nodes[&lead].raft.role, RoleState::Leader(_)));
    }

    /// A leader keeps, below its snapshot, the entries a follower heard within an
    /// election timeout still lacks, up to `compact_keep_bytes_max` of payload: that
    /// follower catches up from the log, without the image of the whole state. Past the
    /// bound the cut is at the snapshot, and the follower gets the image.
    #[test]
    fn a_follower_a_little_behind_catches_up_from_the_log_kept_for_it() {
        // Five entries of 10 bytes ("value-0000") above the follower's match index.
        for (keep, from_log) in [(50, true), (49, false)] {
            let opts = Config {
                compact_keep_bytes_max: keep,
                ..test_config()
            };
            let (mut c, lead, down) = follower_behind_the_compacted_log(opts, 5);
            let leader = &c.nodes[&lead].raft;
            let snapshot = leader.status().snapshot_index;
            assert_eq!(
                snapshot, c.nodes[&lead].applied,
                "keep {keep}: snapshot index"
            );
            assert_eq!(
                leader.log.snap_index < snapshot,
                from_log,
                "keep {keep}: log from {} under a snapshot at {snapshot}",
                leader.log.snap_index
            );
            c.restart(down);
            c.quiet = false;
            run(&mut c, 250);
            let applied = |c: &Cluster, id: u64| c.nodes[&id].raft.log.applied;
            assert_eq!(applied(&c, down), applied(&c, lead), "keep {keep}");
            assert_eq!(
                c.out.contains(&format!("n{down} restore snap@")),
                !from_log,
                "keep {keep}: {}",
                c.out
            );
        }
    }

    /// A follower catching up takes every group's window into one socket buffer, and a
    /// chunk it drops wastes the rest of the window: 64 chunks of 32 KiB per group made
    /// a restarted kvserver node drop thousands of datagrams. The byte bound holds even
    /// when `inflight_appends_max` chunks would be more.
    #[test]
    fn snapshot_chunks_in_flight_stay_within_the_byte_window() {
        let opts = Config {
            inflight_appends_max: 64,
            snapshot_chunk_bytes_max: 8,
            snapshot_inflight_bytes_max: 16,
            ..test_config()
        };
        let (mut c, lead, down) = follower_behind_the_compacted_log(opts, 40);
        c.restart(down);
        let mut widest = 0;
        for _ in 0..200 {
            for id in [1, 2, 3] {
                c.tick(id);
            }
            for _ in 0..1000 {
                for id in [1, 2, 3] {
                    c.process(id);
                }
                let Some(m) = c.net.pop_front() else { break };
                c.deliver_one(m);
                if let RoleState::Leader(ls) = &c.nodes[&lead].raft.role {
                    if let ProgressState::Snapshot(s) = &ls.progress[&NodeId(down)].state {
                        widest = widest.max(s.next_offset - s.acked);
                    }
                }
            }
        }
        assert!(widest > 0, "no snapshot transfer seen");
        assert!(widest <= 16, "{widest} bytes in flight, window 16");
        let applied = |c: &Cluster, id: u64| c.nodes[&id].raft.log.applied;
        assert_eq!(applied(&c, down), applied(&c, lead));
    }

    /// A lost chunk used to wait for the next retransmission check (the follower keeps
    /// only the chunk at its offset and answers the others with that offset); now the
    /// first answer that shows the gap makes the leader resend from it, without a tick.
    #[test]
    fn a_lost_snapshot_chunk_is_resent_when_the_follower_reports_the_gap() {
        let opts = Config {
            inflight_appends_max: 4,
            snapshot_chunk_bytes_max: 8,
            ..test_config()
        };
        let (mut c, lead, down) = follower_behind_the_compacted_log(opts, 40);
        c.restart(down);
        let is_chunk_to_down = |m: &crate::Message, at: Option<u64>| {
            m.to == NodeId(down)
                && matches!(m.body, crate::MessageBody::InstallSnapshot { offset, .. }
                    if at.is_none_or(|a| a == offset))
        };
        // Tick until the first window of chunks is out.
        let mut ticks = 0;
        while !c.net.iter().any(|m| is_chunk_to_down(m, None)) {
            assert!(ticks < 200, "no snapshot chunks after 200 ticks");
            for id in [1, 2, 3] {
                c.tick(id);
            }
            ticks += 1;
            for _ in 0..1000 {
                if c.net.iter().any(|m| is_chunk_to_down(m, None)) {
                    break;
                }
                let Some(m) = c.net.pop_front() else { break };
                c.deliver_one(m);
            }
        }
        // Lose the first chunk of the window, deliver the rest and the answers; no tick.
        let first = c
            .net
            .iter()
            .position(|m| is_chunk_to_down(m, None))
            .expect("a chunk");
        let lost = c.net.remove(first).expect("a chunk");
        let crate::MessageBody::InstallSnapshot { offset: gap, .. } = lost.body else {
            unreachable!("checked above");
        };
        let mut resent = false;
        for _ in 0..1000 {
            let Some(m) = c.net.pop_front() else { break };
            if is_chunk_to_down(&m, Some(gap)) {
                resent = true;
                break;
            }
            c.deliver_one(m);
        }
        assert!(resent, "chunk at {gap} not resent before the next tick");
        run(&mut c, 100);
        let applied = |c: &Cluster, id: u64| c.nodes[&id].raft.log.applied;
        assert_eq!(applied(&c, down), applied(&c, lead));
    }
}
