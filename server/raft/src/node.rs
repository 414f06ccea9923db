//! The public face of one Raft replica: [`Raft`], its inputs and outputs. How a message
//! enters it is `step.rs`; the protocol pieces live in sibling modules (`election`,
//! `replication`, `snapshot`, `membership`, `persist`) as further `impl Raft` blocks.

use crate::answers::{ProposeError, Status};
use crate::check::{Refusal, Refusals};
use crate::config::Config;
use crate::log::RaftLog;
use crate::progress::ProgressMap;
use crate::read_index::ReadRounds;
use crate::ready::{AppendRef, Ready, Restored, SoftState, Write, WriteId};
use crate::types::*;
use kv_shared::NodeId;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, VecDeque};

/// A known bug that can be switched on in tests to prove that the simulator's safety
/// checks catch it. Only with the `planted-bugs` cargo feature.
#[cfg(feature = "planted-bugs")]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PlantedBug {
    /// Grant a vote to a second candidate in a term already voted in.
    GrantSecondVote,
    /// Commit an entry of an earlier term as soon as a majority stores it (Figure 8).
    CommitPriorTermByCount,
    /// Send append acks and vote grants before the write they depend on is durable.
    AckBeforePersist,
    /// A follower confirms its reads at its own commit index without asking the leader.
    FollowerReadsOwnCommit,
    /// A leader counts its own deferrable write toward the quorum when it hands it out,
    /// before it is durable.
    LeaderCountsDeferredWrite,
}

/// Evaluates to true if `$bug` is planted; to `false` (compiled out) without the feature.
macro_rules! planted {
    ($raft:expr, $bug:ident) => {{
        #[cfg(feature = "planted-bugs")]
        let on = $raft.planted.contains(&crate::node::PlantedBug::$bug);
        #[cfg(not(feature = "planted-bugs"))]
        let on = false;
        on
    }};
}
pub(crate) use planted;

/// Role-only data (STYLE: role data lives in the role's variant).
#[derive(Debug)]
pub(crate) enum RoleState {
    /// Following (also learners and removed nodes).
    Follower,
    /// Collecting pre-votes for `term + 1`.
    PreCandidate {
        /// Answers so far.
        votes: BTreeMap<NodeId, bool>,
    },
    /// Collecting votes for `term`.
    Candidate {
        /// Answers so far (own vote only once durable).
        votes: BTreeMap<NodeId, bool>,
        /// Started by a leadership transfer (its vote requests say so).
        transfer: bool,
    },
    /// Leading.
    Leader(Box<LeaderState>),
}

/// What only a leader tracks.
#[derive(Debug)]
pub(crate) struct LeaderState {
    /// Every other member (voters and learners).
    pub progress: ProgressMap,
    /// Index of the newest conf-change entry (or the last index at election).
    pub pending_conf_index: Index,
    /// Index of this term's no-op: committing it means an entry of this term committed.
    pub term_start: Index,
    /// Leadership transfer target, and ticks since it started.
    pub transfer: Option<(NodeId, u32)>,
    /// Pending ReadIndex requests.
    pub reads: ReadRounds,
    /// Lease-read bookkeeping (`Config::lease_reads`).
    pub lease: crate::lease::Lease,
    /// New entries were proposed: send them at the next `ready()` (batching).
    pub bcast_pending: bool,
    /// Tick at which this leadership began.
    pub since: u64,
    /// Lazy followers' fast set and answer order (`Config::lazy_followers`).
    pub lazy: crate::lazy::Lazy,
}

/// A message held until a write is durable (persist before send).
#[derive(Debug)]
pub(crate) enum Held {
    /// Send to a peer.
    Send(Message),
    /// Count our own vote in `term` (a candidate's vote is durable before it counts).
    SelfVote(Term),
}

/// A `Write` handed out and not yet reported durable.
#[derive(Debug)]
pub(crate) struct InflightWrite {
    pub id: u64,
    /// Highest index durable once this write is, if it carries entries or a snapshot;
    /// lowered if memory truncates below it meanwhile.
    pub last: Option<Index>,
}

/// One Raft replica. See the crate docs for how to drive it.
#[derive(Debug)]
pub struct Raft {
    pub(crate) cfg: Config,
    pub(crate) rng: SmallRng,
    pub(crate) term: Term,
    pub(crate) vote: NodeId,
    pub(crate) leader: Option<NodeId>,
    pub(crate) role: RoleState,
    pub(crate) log: RaftLog,
    /// Membership as of the commit index (changes apply when committed).
    pub(crate) membership: Membership,
    /// Membership as of the snapshot point (the initial one if no snapshot).
    pub(crate) snap_membership: Membership,
    /// The snapshot to send, kept only while a follower that answers needs it (see
    /// `snapshot_image_needed`): the latest compacted one, or a newer one handed to
    /// `provide_snapshot`.
    pub(crate) snapshot: Option<Snapshot>,
    /// Index of the latest snapshot handed to `compact` (the log may start below it: a
    /// leader keeps entries a lagging follower still needs, `compaction_floor`).
    pub(crate) snapshot_at: Index,
    /// A leader found a follower to send a snapshot to but holds no image.
    pub(crate) snapshot_wanted: bool,
    /// Events since the last `Ready` (a handful per round at most).
    pub(crate) events: Vec<crate::Event>,
    pub(crate) election_elapsed: u32,
    pub(crate) heartbeat_elapsed: u32,
    /// Ticks since the leader last checked for stalled flows (`retransmit_ticks`).
    pub(crate) retransmit_elapsed: u32,
    /// Ticks since this replica started: its local clock (leases, heartbeat suppression).
    pub(crate) now: u64,
    pub(crate) randomized_timeout: u32,
    /// Election timeouts in a row without hearing a leader: each doubles the next
    /// randomized timeout (up to `ELECTION_BACKOFF_DOUBLINGS_MAX`), so that elections
    /// still finish when votes take longer than a timeout to become durable (slow disks).
    pub(crate) leaderless_timeouts: u32,
    /// ReadIndex round ids never repeat in this replica's lifetime.
    pub(crate) next_read_round: u64,
    /// Reads this replica asked its leader to confirm (only a follower holds any).
    pub(crate) follower_reads: crate::follower_read::FollowerReads,
    /// Nodes outside the membership that asked this replica for a Vote of a higher term:
    /// members removed while cut off, campaigning without PreVote. A leader asked sends
    /// them the log at once (`replicate_to_removed_campaigner`), but the Vote deposes it
    /// before its Appends, of the lower term, can reach the candidate, which refuses
    /// them; and the next leader, elected among the members, knows nothing of the
    /// candidate. So every replica asked remembers it and, when it next becomes leader,
    /// replicates to it at a term it accepts. At most `NODES_MAX`.
    pub(crate) removed_campaigners: std::collections::BTreeSet<NodeId>,
    // ---- outputs ----
    pub(crate) msgs: Vec<Message>,
    /// Appends not handed out yet whose entries stay in the log
    /// (`Config::entries_by_reference`); a leader only.
    pub(crate) appends: Vec<AppendRef>,
    pub(crate) held: Vec<(u64, Held)>,
    /// Empty between calls: `on_persisted`'s buffer for what it releases from `held`.
    pub(crate) held_released: Vec<(u64, Held)>,
    pub(crate) next_write_id: u64,
    pub(crate) persisted_write: u64,
    pub(crate) inflight_writes: VecDeque<InflightWrite>,
    /// Hard state as of the last emitted write.
    pub(crate) hs_written: HardState,
    /// Something the leader's quorum commit depends on (a voter's match index, its own
    /// durable index, the voters) changed since `maybe_commit` last computed it: until
    /// then it cannot move, and `has_ready`, which runs many times per round, skips it.
    pub(crate) quorum_moved: bool,
    /// Nothing happened since `ready_into` left nothing to hand out: `has_ready`,
    /// which a caller asks after every `Ready` to learn whether more waits, is false
    /// without walking the state. Set by `ready_into` when nothing is left; cleared by
    /// every other public method that takes `&mut self` (each is an input).
    pub(crate) drained: bool,
    /// How many times `maybe_commit` computed the quorum commit (tests only).
    #[cfg(test)]
    pub(crate) quorum_computations: u64,
    /// A received snapshot not yet in a write.
    pub(crate) snapshot_unwritten: Option<Snapshot>,
    /// A received snapshot in write `.0`, to hand out once durable.
    pub(crate) snapshot_in_write: Option<(u64, Snapshot)>,
    /// A durable received snapshot to hand out as `apply_snapshot`.
    pub(crate) snapshot_ready: Option<Snapshot>,
    pub(crate) reads_ready: Vec<ReadState>,
    pub(crate) failed_reads: Vec<u64>,
    pub(crate) last_soft: SoftState,
    /// A snapshot being received in chunks.
    pub(crate) incoming: Option<crate::snapshot::Incoming>,
    /// Messages refused by reason (see `check`).
    pub(crate) refusals: Refusals,
    #[cfg(feature = "planted-bugs")]
    pub(crate) planted: Vec<PlantedBug>,
}

impl Raft {
    /// Builds a replica from its config and what survived on disk.
    pub fn new(config: Config, restored: Restored) -> Raft {
        assert!(!config.id.is_none(), "node id 0 is reserved");
        assert!(
            config.election_ticks_min > config.heartbeat_ticks,
            "election timeout must exceed the heartbeat"
        );
        assert!(
            config.election_ticks_max > config.election_ticks_min,
            "empty election timeout range"
        );
        assert!(config.inflight_appends_max > 0 && config.snapshot_chunk_bytes_max > 0);
        assert!(
            config.retransmit_ticks() > 0,
            "retransmit_ticks must be positive"
        );
        assert!(
            config
                .retransmit_backoff_ticks_max
                .is_none_or(|max| max >= config.retransmit_ticks()),
            "retransmit_backoff_ticks_max is below retransmit_ticks"
        );
        let Restored {
            hard_state,
            snapshot,
            entries,
            initial_membership,
        } = restored;
        let (si, st, base) = match &snapshot {
            Some(s) => (s.meta.index, s.meta.term, s.meta.membership.clone()),
            None => (0, 0, initial_membership),
        };
        let mut log = RaftLog::restore(si, st, entries, hard_state.commit);
        if let Some(vouched) = crate::membership::commit_vouched_by_changes(&log) {
            log.commit = vouched;
        }
        let mut membership = base.clone();
        for e in log.range(si + 1, log.commit) {
            if let EntryKind::ConfChange(c) = &e.kind {
                crate::membership::apply_committed(&mut membership, c);
            }
        }
        let mut raft = Raft {
            rng: SmallRng::seed_from_u64(config.seed),
            follower_reads: crate::follower_read::FollowerReads::new(config.boot_nonce),
            cfg: config,
            term: hard_state.term,
            vote: hard_state.vote,
            leader: None,
            role: RoleState::Follower,
            log,
            membership,
            snap_membership: base,
            snapshot,
            snapshot_at: si,
            snapshot_wanted: false,
            events: Vec::new(),
            election_elapsed: 0,
            heartbeat_elapsed: 0,
            retransmit_elapsed: 0,
            now: 0,
            randomized_timeout: 0,
            leaderless_timeouts: 0,
            next_read_round: 1,
            removed_campaigners: std::collections::BTreeSet::new(),
            msgs: Vec::new(),
            appends: Vec::new(),
            held: Vec::new(),
            held_released: Vec::new(),
            next_write_id: 1,
            persisted_write: 0,
            inflight_writes: VecDeque::new(),
            hs_written: hard_state,
            quorum_moved: true,
            drained: false,
            #[cfg(test)]
            quorum_computations: 0,
            snapshot_unwritten: None,
            snapshot_in_write: None,
            snapshot_ready: None,
            reads_ready: Vec::new(),
            failed_reads: Vec::new(),
            last_soft: SoftState {
                role: Role::Follower,
                term: 0,
                leader: None,
            },
            incoming: None,
            refusals: Refusals::default(),
            #[cfg(feature = "planted-bugs")]
            planted: Vec::new(),
        };
        raft.hs_written.commit = raft.log.commit;
        raft.reset_randomized_timeout();
        raft.last_soft = raft.soft_state();
        raft
    }

    /// Switches on a planted bug (tests of the simulator only).
    #[cfg(feature = "planted-bugs")]
    pub fn plant_bug(&mut self, bug: PlantedBug) {
        self.drained = false;
        if !self.planted.contains(&bug) {
            self.planted.push(bug);
            self.quorum_moved = true;
        }
    }

    /// Advances logical time by one tick (elections, heartbeats, CheckQuorum).
    pub fn tick(&mut self) {
        self.drained = false;
        self.now += 1;
        if matches!(self.role, RoleState::Leader(_)) {
            self.tick_leader();
        } else {
            self.tick_follower_reads();
            self.tick_election();
        }
    }

    /// The entries of `a`, one of this replica's `Ready::appends`
    /// (`Config::entries_by_reference`), from its log.
    pub fn append_entries(&self, a: &AppendRef) -> &[Entry] {
        let entries = self.log.range(a.prev_index + 1, a.last);
        debug_assert_eq!(
            entries.len() as u64,
            a.last - a.prev_index,
            "an Append's entries left the log before it was handed out"
        );
        entries
    }

    /// The entries `w`, one of this replica's writes, appends: carried, or in the log
    /// (`Config::entries_by_reference`).
    pub fn write_entries<'a>(&'a self, w: &'a Write) -> &'a [Entry] {
        match w.entries_in_log {
            Some((first, last)) => {
                let entries = self.log.range(first, last);
                debug_assert_eq!(
                    entries.len() as u64,
                    last + 1 - first,
                    "a write's entries left the log before it was persisted"
                );
                entries
            }
            None => &w.entries,
        }
    }

    /// `a` as the message it stands for, its entries copied out of the log.
    pub fn append_message(&self, a: &AppendRef) -> Message {
        Message {
            from: self.cfg.id,
            to: a.to,
            term: a.term,
            body: MessageBody::Append {
                prev_index: a.prev_index,
                prev_term: a.prev_term,
                entries: self.append_entries(a).to_vec(),
                commit: a.commit,
            },
        }
    }

    /// Queues an Append: by reference, or as a message carrying its entries.
    pub(crate) fn send_append(&mut self, a: AppendRef) {
        if self.cfg.entries_by_reference {
            self.appends.push(a);
        } else {
            let m = self.append_message(&a);
            self.msgs.push(m);
        }
    }

    /// Turns the Appends not handed out yet into messages, before the log may drop their
    /// entries (a compaction, or a leader stepping down, whose log a new leader may cut).
    pub(crate) fn settle_appends(&mut self) {
        if self.appends.is_empty() {
            return;
        }
        let appends = std::mem::take(&mut self.appends);
        for a in &appends {
            let m = self.append_message(a);
            self.msgs.push(m);
        }
    }

    /// Appends an application command to the log. Returns its (index, term): the command
    /// is committed iff the entry applied at `index` has term `term`.
    pub fn propose(&mut self, data: bytes::Bytes) -> Result<(Index, Term), ProposeError> {
        self.drained = false;
        self.leader_accepting()?;
        Ok(self.append_as_leader(EntryKind::Command, data))
    }

    /// Proposes a membership change (one step; see [`ConfChange`]).
    pub fn propose_conf_change(
        &mut self,
        change: ConfChange,
    ) -> Result<(Index, Term), ProposeError> {
        self.drained = false;
        self.leader_accepting()?;
        let RoleState::Leader(ls) = &self.role else {
            unreachable!()
        };
        // A leader may change membership only once an entry of its own term is committed
        // (this closes the one-at-a-time bug: see docs/RAFT.md), and one change at a time.
        if self.log.commit < ls.term_start || ls.pending_conf_index > self.log.commit {
            return Err(ProposeError::ConfChangePending);
        }
        let mut next = self.membership.clone();
        crate::membership::apply(&mut next, &change).map_err(ProposeError::InvalidConfChange)?;
        if next.voters.is_empty() {
            return Err(ProposeError::InvalidConfChange(
                "would leave no voter".into(),
            ));
        }
        let (index, term) =
            self.append_as_leader(EntryKind::ConfChange(change), bytes::Bytes::new());
        if let RoleState::Leader(ls) = &mut self.role {
            ls.pending_conf_index = index;
        }
        Ok((index, term))
    }

    /// Starts a linearizable read. When a quorum confirms that the leader is still
    /// leader, a [`ReadState`] with `ctx` appears in a later `Ready` (or `ctx` in
    /// `failed_reads`). Many reads share one round. On a follower that knows its leader
    /// (with `Config::follower_reads`), the reads issued before the next `ready()` go to
    /// the leader in one request
    /// (`follower_read`); the `ReadState` then carries the leader's commit index, which
    /// the caller applies before serving. Elsewhere: [`ProposeError::NotLeader`].
    pub fn read_index(&mut self, ctx: u64) -> Result<(), ProposeError> {
        self.drained = false;
        if matches!(self.role, RoleState::Leader(_)) {
            self.leader_read(crate::read_index::Reader::Local(ctx))
        } else {
            self.read_index_at_follower(ctx)
        }
    }

    /// A replica without a leader asks `nodes` other than its voters whether one of them
    /// leads: a member removed while cut off knows only the voters of its time, and the
    /// leader that took over may be none of them (a learner then, or unknown). The PreVote it sends them counts for
    /// nothing (only its own voters' answers do); a leader asked by a non-member sends it
    /// the log, its removal included.
    pub fn ask_for_leader(&mut self, nodes: &[NodeId]) {
        self.drained = false;
        if self.leader.is_some() || matches!(self.role, RoleState::Leader(_)) {
            return;
        }
        let me = self.cfg.id;
        let outside: Vec<NodeId> = nodes
            .iter()
            .copied()
            .filter(|n| *n != me && !self.membership.voters.contains(n))
            .collect();
        self.send_leader_probes(&outside);
    }

    /// Hands leadership to `to` (thesis 3.10): catch it up, then send TimeoutNow.
    pub fn transfer_leadership(&mut self, to: NodeId) {
        self.drained = false;
        let last = self.log.last_index();
        let RoleState::Leader(ls) = &mut self.role else {
            return;
        };
        if to == self.cfg.id || !self.membership.voters.contains(&to) {
            return;
        }
        if ls.transfer.is_some_and(|(t, _)| t == to) {
            return;
        }
        ls.transfer = Some((to, 0));
        self.events.push(crate::Event::TransferStarted {
            to,
            term: self.term,
        });
        let caught_up = ls.progress.get(&to).is_some_and(|p| p.match_ == last);
        if caught_up {
            self.send_timeout_now(to);
        } else {
            self.maybe_send_append(to, true);
        }
    }

    /// True if `ready()` would return something. It first runs the leader's batched sends
    /// (the step `ready` starts with), so that the answer is exact: a broadcast to
    /// followers that are all paused sends nothing and leaves nothing to do.
    pub fn has_ready(&mut self) -> bool {
        if self.drained {
            debug_assert!(
                !self.flush_pending() && !self.has_output(),
                "output appeared after ready_into without an input"
            );
            return false;
        }
        self.flush_leader_sends();
        self.flush_follower_reads();
        self.has_output()
    }

    /// True if `flush_leader_sends` or `flush_follower_reads` would do something.
    fn flush_pending(&self) -> bool {
        self.leader_sends_pending() || self.follower_reads.has_queued()
    }

    /// True if outputs wait for `ready()`, the leader's unflushed sends aside.
    fn has_output(&self) -> bool {
        !self.msgs.is_empty()
            || !self.appends.is_empty()
            || self.needs_write()
            || self.snapshot_ready.is_some()
            || self.next_committed_hi() > self.log.applied
            || !self.reads_ready.is_empty()
            || !self.failed_reads.is_empty()
            || self.soft_state() != self.last_soft
            || self.snapshot_wanted
            || !self.events.is_empty()
    }

    /// Moves the messages waiting to be sent (what the next `Ready::messages` would
    /// hold) to the end of `out`, and nothing else of a `Ready`: a caller that just
    /// reported a write durable (`on_persisted`) sends the acknowledgements it released
    /// at once, without a whole `Ready` for each group whose write that was. Not an
    /// input: what `has_ready` answers changes only by the messages taken.
    pub fn take_messages(&mut self, out: &mut Vec<Message>) {
        if !self.msgs.is_empty() {
            out.append(&mut self.msgs);
        }
    }

    /// Takes the work accumulated since the last call.
    pub fn ready(&mut self) -> Ready {
        let mut rd = Ready::default();
        self.ready_into(&mut rd);
        rd
    }

    /// [`Raft::ready`] into a `Ready` the caller keeps from round to round: its vectors
    /// (and the entries vector of its previous `write`) are cleared and refilled, so a
    /// caller driving many groups allocates nothing per group per round for them. What
    /// `rd` held before is dropped, so consume it first.
    pub fn ready_into(&mut self, rd: &mut Ready) {
        self.flush_leader_sends();
        self.flush_follower_reads();
        if !self.needs_write() {
            rd.write = None;
        } else if let Some(w) = &mut rd.write {
            self.fill_write(w);
        } else {
            let mut w = Write {
                id: WriteId(0),
                snapshot: None,
                entries: Vec::new(),
                entries_in_log: None,
                hard_state: None,
                deferrable: false,
            };
            self.fill_write(&mut w);
            rd.write = Some(w);
        }
        // Most of a round's Readies carry one or two of the parts below: each part is
        // moved only if there is one, since even an empty move copies a snapshot's
        // hundred bytes or checks a vector's reservation, every group and round.
        if self.snapshot_ready.is_some() || rd.apply_snapshot.is_some() {
            rd.apply_snapshot = self.snapshot_ready.take();
        }
        if let Some(s) = &rd.apply_snapshot {
            self.log.applied = s.meta.index;
        }
        let hi = self.next_committed_hi();
        rd.committed.clear();
        if hi > self.log.applied {
            rd.committed.extend_from_slice(self.log.range_within(
                self.log.applied + 1,
                hi,
                self.cfg.committed_bytes_per_ready_max,
            ));
        }
        if let Some(last) = rd.committed.last() {
            self.log.applied = last.index;
        }
        let soft = self.soft_state();
        rd.soft_state = (soft != self.last_soft).then_some(soft);
        self.last_soft = soft;
        if self.snapshot.is_some() && !self.snapshot_image_needed() {
            self.snapshot = None;
        }
        // `append` moves the items and leaves both vectors their capacity.
        move_all(&mut self.msgs, &mut rd.messages);
        move_all(&mut self.appends, &mut rd.appends);
        move_all(&mut self.reads_ready, &mut rd.reads);
        move_all(&mut self.failed_reads, &mut rd.failed_reads);
        rd.snapshot_wanted = std::mem::take(&mut self.snapshot_wanted);
        move_all(&mut self.events, &mut rd.events);
        // Everything above was handed out but the committed entries past the byte limit
        // and what the sends this call began with left for another flush (a quorum
        // input moved by the write, under a planted bug): with neither, `has_ready`
        // answers false until the next input.
        // (`hi` still holds: nothing since moved the commit index or a snapshot.)
        self.drained = hi <= self.log.applied && !self.flush_pending();
    }

    /// Messages refused so far, by reason.
    pub fn refusals(&self) -> Refusals {
        self.refusals
    }

    /// Bytes announced by the snapshot transfer this replica is receiving (0 if none): a
    /// node bounds the sum over its groups (`SNAPSHOT_RECEIVE_BYTES_MAX`).
    pub fn incoming_snapshot_bytes(&self) -> u64 {
        self.incoming.as_ref().map_or(0, |i| i.total_len())
    }

    /// Counts a refused input (the caller's boundary checks count theirs here too, so
    /// one set of counters covers the group).
    pub fn refuse(&mut self, reason: Refusal) {
        self.drained = false;
        self.refusals.count(reason);
    }

    /// True if this replica leads and a membership change may still be uncommitted: one
    /// it proposed, or (until an entry of its own term commits) one a predecessor left
    /// in its log. A caller driving a sequence of changes waits for this to clear, so
    /// that it never decides its next step from a membership about to change.
    pub fn conf_change_pending(&self) -> bool {
        match &self.role {
            RoleState::Leader(ls) => {
                self.log.commit < ls.term_start || ls.pending_conf_index > self.log.commit
            }
            _ => false,
        }
    }

    /// The membership as of the commit index (what `status().membership` copies).
    pub fn membership(&self) -> &Membership {
        &self.membership
    }

    /// Where this replica stands (allocates; see [`Raft::membership`] for the cheap part).
    pub fn status(&self) -> Status {
        let mut progress = Vec::new();
        if let RoleState::Leader(ls) = &self.role {
            progress.push((self.cfg.id, self.log.persisted));
            progress.extend(ls.progress.iter().map(|(id, p)| (*id, p.match_)));
            progress.sort();
        }
        Status {
            id: self.cfg.id,
            role: self.role_now(),
            hard: self.hard_state(),
            leader: self.leader,
            applied: self.log.applied,
            last_index: self.log.last_index(),
            persisted: self.log.persisted,
            snapshot_index: self.log.snap_index.max(self.snapshot_at),
            membership: self.membership.clone(),
            progress,
        }
    }

    /// True if this replica leads and has nothing left to do until something new arrives:
    /// no proposal, read, transfer, write, message or apply pending, and every member
    /// holds every entry and was sent the commit index. A caller may then stop ticking it
    /// (quiesce the group) to save the heartbeats of an idle group, provided it wakes it
    /// with [`Raft::wake`] before the next input and arranges for its followers to notice
    /// if its node dies (kv-node's quiescence does both; docs/RAFT.md).
    pub fn is_quiescent_leader(&self) -> bool {
        let RoleState::Leader(ls) = &self.role else {
            return false;
        };
        let last = self.log.last_index();
        ls.transfer.is_none()
            && !ls.bcast_pending
            && ls.reads.len() == 0
            && self.log.commit == last
            && self.log.persisted == last
            && self.log.applied == last
            && self.held.is_empty()
            && self.inflight_writes.is_empty()
            && !self.has_output()
            && ls.progress.values().all(|p| {
                p.match_ == last
                    && p.commit_told == last
                    && p.inflight.is_empty()
                    && p.state == crate::progress::ProgressState::Replicate
            })
    }

    /// Resumes a replica whose ticks the caller paused (a quiesced group). A leader
    /// restarts its CheckQuorum period, because its followers were silent by design
    /// rather than unreachable, and heartbeats on the next tick so that every follower
    /// hears it again. Safe at any time: it only delays a step-down and speeds a heartbeat.
    /// With `lease_reads`, a leader also forgets its lease (see [`Raft::expire_lease`]):
    /// its clock stood still while real time passed, so the next read takes a heartbeat
    /// round, whose echoes start a new lease.
    pub fn wake(&mut self) {
        self.drained = false;
        if let RoleState::Leader(_) = &self.role {
            self.election_elapsed = 0;
            self.heartbeat_elapsed = self.cfg.heartbeat_ticks;
        }
        self.expire_lease();
    }

    /// Forgets the leader lease earned so far (`Config::lease_reads`): reads take a
    /// heartbeat round until a quorum echoes a heartbeat sent after this call. For a
    /// caller whose ticks fell behind real time (a stalled process, ticks withheld), which
    /// the lease would otherwise count as less time than really passed. Does nothing
    /// without a lease or off the leader.
    pub fn expire_lease(&mut self) {
        self.drained = false;
        if let RoleState::Leader(ls) = &mut self.role {
            ls.lease.forget();
        }
    }

    // ---------------------------------------------------------------- internals

    /// The role to report: non-voting followers are learners.
    pub(crate) fn role_now(&self) -> Role {
        match self.role {
            RoleState::Leader(_) => Role::Leader,
            RoleState::Candidate { .. } => Role::Candidate,
            RoleState::PreCandidate { .. } => Role::PreCandidate,
            RoleState::Follower if self.membership.learners.contains(&self.cfg.id) => Role::Learner,
            RoleState::Follower => Role::Follower,
        }
    }

    pub(crate) fn soft_state(&self) -> SoftState {
        SoftState {
            role: self.role_now(),
            term: self.term,
            leader: self.leader,
        }
    }

    pub(crate) fn hard_state(&self) -> HardState {
        HardState {
            term: self.term,
            vote: self.vote,
            commit: self.log.commit,
        }
    }

    /// True if a vote could be held by a voter of the current membership.
    pub(crate) fn promotable(&self) -> bool {
        self.membership.voters.contains(&self.cfg.id)
    }

    /// CheckQuorum lease: a leader was heard from within the minimum election timeout.
    /// With lease reads, a replica that just started also waits that long before voting:
    /// it may have promised a leader (before a crash) not to vote for that long.
    pub(crate) fn in_lease(&self) -> bool {
        let min = self.cfg.election_ticks_min;
        self.cfg.check_quorum
            && self.election_elapsed < min
            && (self.leader.is_some() || (self.cfg.lease_reads && self.now < u64::from(min)))
    }

    /// True if this leader may answer a read from its lease: it committed an entry of its
    /// term, and a quorum echoed heartbeats it sent less than `election_ticks_min -
    /// lease_margin_ticks` ticks ago (see `lease`).
    pub(crate) fn lease_valid(&self) -> bool {
        let RoleState::Leader(ls) = &self.role else {
            return false;
        };
        let span = self
            .cfg
            .election_ticks_min
            .saturating_sub(self.cfg.lease_margin_ticks);
        self.cfg.lease_reads
            && self.cfg.check_quorum
            && ls.transfer.is_none()
            && self.log.commit >= ls.term_start
            && ls.lease.holds(
                &self.membership.voters,
                self.cfg.id,
                self.now,
                u64::from(span),
            )
    }

    /// Leadership transfer's last step. Voids the lease for the rest of the term: the
    /// target's `Vote { transfer }` overrides every follower's stickiness.
    ///
    /// A target not yet told the commit index gets it first, in an Append just before
    /// the TimeoutNow: a learner promoted by the entry just committed is a voter only
    /// once it knows that entry committed, and ignores a TimeoutNow before. Without
    /// commit broadcasts it learned that from the next heartbeat, after the TimeoutNow,
    /// so a move's transfer to its new voter did nothing and was retried seconds later.
    pub(crate) fn send_timeout_now(&mut self, to: NodeId) {
        let commit = self.log.commit;
        let mut untold = false;
        if let RoleState::Leader(ls) = &mut self.role {
            ls.lease.void();
            untold = ls.progress.get(&to).is_some_and(|p| p.commit_told < commit);
        }
        if untold {
            self.maybe_send_append(to, true);
        }
        self.send(to, MessageBody::TimeoutNow);
    }

    pub(crate) fn reset_randomized_timeout(&mut self) {
        let base = self
            .rng
            .gen_range(self.cfg.election_ticks_min..self.cfg.election_ticks_max);
        let doublings = self
            .leaderless_timeouts
            .min(crate::election::ELECTION_BACKOFF_DOUBLINGS_MAX);
        self.randomized_timeout = base.saturating_mul(1 << doublings);
    }

    /// Queues a message that promises nothing about durability.
    pub(crate) fn send(&mut self, to: NodeId, body: MessageBody) {
        let term = self.term;
        self.msgs.push(Message {
            from: self.cfg.id,
            to,
            term,
            body,
        });
    }
}

/// Replaces what `to` holds by what `from` holds, leaving `from` empty: both keep their
/// capacity. An empty `from` costs no append (its reservation check and copy of
/// nothing), the common case for most of a `Ready`'s vectors.
#[inline]
fn move_all<T>(from: &mut Vec<T>, to: &mut Vec<T>) {
    to.clear();
    if !from.is_empty() {
        to.append(from);
    }
}
