//! The per-shard state the node core keeps: [`Group`] (one shard's Raft replica, state
//! machine and requests in flight), the [`Groups`] hosted here, and what to do when a
//! DiskWrite is durable ([`Durable`]). Split from core.rs to keep that file readable.

use super::{is_listed, Heard};
use crate::config::NodeConfig;
use crate::sm::StateMachine;
use crate::wal::{RecoveryError, Tombstone};
use kv_raft::{Raft, Restored, Snapshot, SoftState, WriteId};
use kv_shared::registry::METADATA_SHARD;
use kv_shared::{NodeId, ShardId};
use std::collections::{BTreeMap, VecDeque};
use std::ops::{Index, IndexMut};

/// What to do when a DiskWrite is durable.
pub(super) enum Durable {
    Raft(ShardId, WriteId),
    OwnSnapshot(ShardId, Snapshot),
    ReceivedSnapshot(ShardId, u64),
    /// The removal record of a replica this node no longer holds.
    Removed(ShardId),
}

/// One shard: its Raft replica, state machine and requests in flight.
pub(super) struct Group {
    pub(super) shard: ShardId,
    /// The term and vote of the latest hard-state record written (or recovered): a
    /// write that changes only the commit index needs none (see `wal::KIND_ROUND`).
    pub(super) term_vote_written: (u64, NodeId),
    pub(super) raft: Raft,
    pub(super) sm: StateMachine,
    pub(super) soft: SoftState,
    /// Requests to route next round: new ones, and ones held while no leader is known.
    pub(super) waiting: Vec<u64>,
    /// Proposed batches by log index: (term, request ids in batch order).
    pub(super) proposed: Proposed,
    /// ReadIndex rounds awaiting confirmation, by ctx.
    pub(super) reads: BTreeMap<u64, Vec<u64>>,
    /// Confirmed reads waiting for the state machine to reach their index.
    pub(super) confirmed_reads: Vec<(u64, Vec<u64>)>,
    /// Committed command entries a follower applies after its acknowledgements left
    /// (`NodeCore::set_defer_follower_applies`), in log order.
    pub(super) deferred: Vec<kv_raft::Entry>,
    /// Index of the latest durable snapshot.
    pub(super) snapshot_index: u64,
    /// Snapshot writes (own or received) not yet durable.
    pub(super) snapshot_writes_inflight: u32,
    /// Entry payload bytes applied since the latest snapshot was taken or installed.
    pub(super) applied_bytes_since_snapshot: u64,
    pub(super) last_transfer_tick: Option<u64>,
    /// Client writes proposed as leader, for metrics.
    pub(super) proposed_writes: u64,
    /// Not ticked while idle (`NodeConfig::quiesce`; see `NodeCore::tick`).
    pub(super) quiesced: bool,
    /// Consecutive ticks this leader had nothing to do.
    pub(super) idle_ticks: u64,
    /// Tick of the last Raft message received for this group.
    pub(super) last_msg_tick: u64,
    /// A follower woken to check on its silent leader stays awake until this tick.
    pub(super) recheck_until_tick: u64,
    /// `MoveReplica` requests answered when the move in flight ends.
    pub(super) move_waiters: Vec<u64>,
    /// Tick at which this leader first saw the move's learner catching up.
    pub(super) catch_up_since: Option<u64>,
    /// Tick of the last message for this group from the move's learner.
    pub(super) learner_heard_tick: Option<u64>,
    /// Log index of this leader's `EndMove` proposal not yet applied.
    pub(super) move_end_proposed: Option<u64>,
    /// Leadership transfers this replica started for the move in flight (it is the
    /// replica that goes), to try another target when they do not take.
    pub(super) move_transfers_tried: u32,
    /// Index of the committed change that removed this node from the shard.
    pub(super) removed_at: Option<u64>,
    /// A membership this replica knew in this life listed this node: a replica created
    /// by a move starts outside it, until the leader's snapshot adds it. A snapshot that
    /// does not list a replica that was a member is its removal.
    pub(super) was_member: bool,
    /// A received snapshot, not yet durable, whose membership no longer lists this
    /// member: its index. Once durable (and acknowledged) the replica is removed.
    pub(super) removed_by_snapshot: Option<u64>,
    /// Created by a move (it started from an empty membership), not by the bootstrap
    /// placement: forgotten if the shard never lists it (`forget_unlisted_replicas`).
    pub(super) created: bool,
    /// Tick of the last message a leader sends (append, heartbeat, snapshot chunk).
    pub(super) leader_heard_tick: u64,
    /// The commit index the latest Append for this group carried (unclamped).
    pub(super) leader_commit_told: Option<u64>,
    /// Created again after its removal, and holding no snapshot past that removal yet:
    /// the earlier life's tombstone, which still answers for it (see
    /// `NodeCore::sealed_refuses`).
    pub(super) sealed: Option<Tombstone>,
    /// Handed out mutably since [`Groups::take_touched`] last listed it (see [`Groups`]).
    touched: bool,
}

impl Group {
    /// A group for `shard` from what recovery (or a replica's creation) gives it.
    pub(super) fn new(
        config: &NodeConfig,
        shard: ShardId,
        r: Restored,
    ) -> Result<Group, RecoveryError> {
        let (sm, snapshot_index) = match &r.snapshot {
            Some(s) => {
                let sm = StateMachine::from_image(&s.data, config.sessions_max()).map_err(|e| {
                    RecoveryError::BadSnapshot {
                        shard: shard.0,
                        index: s.meta.index,
                        reason: e.to_string(),
                    }
                })?;
                (sm, s.meta.index)
            }
            None if shard == METADATA_SHARD => {
                (StateMachine::new_metadata(config.sessions_max()), 0)
            }
            None => (StateMachine::new(config.sessions_max()), 0),
        };
        let created = r.initial_membership.voters.is_empty();
        let snapshot_lists_me = r
            .snapshot
            .as_ref()
            .is_none_or(|s| is_listed(&s.meta.membership, config.node));
        let raft = Raft::new(config.raft_config(shard), r);
        let st = raft.status();
        // A replica of the bootstrap placement is listed by its initial membership, so
        // it was a member; if the snapshot it recovered (a leader's, past its removal,
        // durable before a crash cut the removal short) does not list it, it was removed
        // at that snapshot and is dropped as by the change itself (`NodeCore::drive`,
        // which keeps it if its log adds it back).
        let was_member = is_listed(&st.membership, config.node) || !created;
        let removed_at = (!created && !snapshot_lists_me).then_some(snapshot_index);
        Ok(Group {
            shard,
            term_vote_written: (st.hard.term, st.hard.vote),
            raft,
            sm,
            soft: SoftState {
                role: st.role,
                term: st.hard.term,
                leader: st.leader,
            },
            waiting: Vec::new(),
            proposed: Proposed::default(),
            reads: BTreeMap::new(),
            confirmed_reads: Vec::new(),
            deferred: Vec::new(),
            snapshot_index,
            snapshot_writes_inflight: 0,
            applied_bytes_since_snapshot: 0,
            last_transfer_tick: None,
            proposed_writes: 0,
            quiesced: false,
            idle_ticks: 0,
            last_msg_tick: 0,
            recheck_until_tick: 0,
            move_waiters: Vec::new(),
            catch_up_since: None,
            learner_heard_tick: None,
            move_end_proposed: None,
            move_transfers_tried: 0,
            removed_at,
            was_member,
            removed_by_snapshot: None,
            created,
            leader_heard_tick: 0,
            leader_commit_told: None,
            sealed: None,
            touched: false,
        })
    }
}

impl Group {
    /// Ticks a quiesced group again (`NodeCore::tick` explains quiescence).
    pub(super) fn wake(&mut self) {
        if self.quiesced {
            self.quiesced = false;
            self.raft.wake();
        }
    }

    /// A message for this group from `from` arrives at `tick`: what quiescence and a
    /// move in flight learn from it, and the group wakes.
    pub(super) fn heard(&mut self, from: NodeId, tick: u64, heard: Heard) {
        self.last_msg_tick = tick;
        match heard {
            Heard::LeaderCommit(commit) => {
                self.leader_heard_tick = tick;
                self.leader_commit_told = Some(commit);
            }
            Heard::Leader => self.leader_heard_tick = tick,
            Heard::Member => {}
        }
        if self.leader_heard_tick == tick {
            // A leader that sends to this replica leads the group and replicates to
            // it: a recheck has its answer, and may quiesce again. Kept awake, its
            // timer would run out behind a leader that quiesced again, and its
            // quiesced peers, hearing no leader either, would elect it.
            self.recheck_until_tick = self.recheck_until_tick.min(tick);
        }
        if self.sm.move_in_flight().is_some_and(|m| m.to == from) {
            self.learner_heard_tick = Some(tick);
        }
        self.wake();
    }
}

/// A leader's proposed batches of one group, by log index, lowest first. Each round
/// proposes past the last one and each apply takes the first, so a queue serves: an
/// insert and a removal per group and round, where an ordered map's cost several
/// times as much at many groups with a batch or two each.
#[derive(Debug, Default)]
pub(super) struct Proposed(VecDeque<(u64, u64, Vec<u64>)>);

impl Proposed {
    /// Records batch `ids` proposed at `index` in `term`, replacing one recorded at the
    /// same index (a later term's proposal overwrote it).
    pub(super) fn insert(&mut self, index: u64, term: u64, ids: Vec<u64>) {
        match self.0.back() {
            Some(&(last, _, _)) if last >= index => {
                match self.0.binary_search_by_key(&index, |&(i, _, _)| i) {
                    Ok(at) => self.0[at] = (index, term, ids),
                    Err(at) => self.0.insert(at, (index, term, ids)),
                }
            }
            _ => self.0.push_back((index, term, ids)),
        }
    }

    /// Takes the lowest batch if its index is at most `index`: (index, term, ids).
    pub(super) fn pop_through(&mut self, index: u64) -> Option<(u64, u64, Vec<u64>)> {
        if self.0.front()?.0 > index {
            return None;
        }
        self.0.pop_front()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Takes every batch, lowest index first.
    pub(super) fn take_all(&mut self) -> VecDeque<(u64, u64, Vec<u64>)> {
        std::mem::take(&mut self.0)
    }
}

/// The groups of the shards hosted here, by shard. Indexing a shard not hosted here is a
/// programmer error (callers check [`Groups::contains`] at the boundary).
///
/// Every way to a `&mut Group` ([`IndexMut`], [`Groups::get_mut`], [`Groups::iter_mut`],
/// [`Groups::insert`]) marks the group touched, so [`Groups::take_touched`] names every
/// group that may have taken input since it last did. A group nobody touched has no new
/// Ready: kv-raft changes only through its inputs, and the node core's own per-group
/// state (removal, snapshot due) only through such a reference. `NodeCore::drive` asks
/// only the touched groups: at 64 shards, asking all 65 for a Ready on every flush was a
/// large share of a put's instructions. [`Groups::peek_mut`] is the one unmarked way in,
/// for that question alone.
///
/// Shards below `SHARDS_MAX` (all but the metadata group) sit in a vector indexed by
/// their id: a round looks its groups up many times each, and at 64 shards a BTreeMap's
/// search per lookup was a tenth of the leader node's instructions.
pub(super) struct Groups {
    dense: Vec<Option<Group>>,
    /// Groups of shard ids from `SHARDS_MAX` on (the metadata group).
    sparse: BTreeMap<ShardId, Group>,
    /// The touched groups in the order they were first touched, each once (the ones
    /// removed since may be listed: [`Groups::take_touched`] leaves them out).
    touched: Vec<ShardId>,
    /// The list [`Groups::take_touched`] handed out last, given back emptied
    /// ([`Groups::give_back`]): the two take turns, so a round's touches grow no vector.
    spare: Vec<ShardId>,
}

impl Groups {
    /// The groups restored at startup, all touched: each is asked for its first Ready.
    pub(super) fn new(map: BTreeMap<ShardId, Group>) -> Groups {
        let mut groups = Groups {
            dense: Vec::new(),
            sparse: BTreeMap::new(),
            touched: Vec::new(),
            spare: Vec::new(),
        };
        for (shard, group) in map {
            groups.insert(shard, group);
        }
        groups
    }

    pub(super) fn contains(&self, shard: ShardId) -> bool {
        self.get(shard).is_some()
    }

    /// The hosted shards, ascending (a copy, so the caller may mutate groups meanwhile).
    pub(super) fn ids(&self) -> Vec<ShardId> {
        self.iter().map(|g| g.shard).collect()
    }

    /// Every group, ascending by shard.
    pub(super) fn iter(&self) -> impl Iterator<Item = &Group> {
        self.dense.iter().flatten().chain(self.sparse.values())
    }

    /// Every group, each marked touched.
    pub(super) fn iter_mut(&mut self) -> impl Iterator<Item = &mut Group> {
        for g in self
            .dense
            .iter_mut()
            .flatten()
            .chain(self.sparse.values_mut())
        {
            mark(&mut self.touched, g);
        }
        self.dense
            .iter_mut()
            .flatten()
            .chain(self.sparse.values_mut())
    }

    /// Calls `f` on every group, ascending by shard, and marks touched the groups it
    /// says it gave input (true): a pass over every group that leaves most of them
    /// alone (a tick of quiesced groups) does not make the next flush ask them all for
    /// a Ready.
    pub(super) fn for_each_mut(&mut self, mut f: impl FnMut(&mut Group) -> bool) {
        for g in self
            .dense
            .iter_mut()
            .flatten()
            .chain(self.sparse.values_mut())
        {
            if f(g) {
                mark(&mut self.touched, g);
            }
        }
    }

    #[inline]
    pub(super) fn get(&self, shard: ShardId) -> Option<&Group> {
        match dense_slot(shard) {
            Some(i) => self.dense.get(i)?.as_ref(),
            None => self.sparse.get(&shard),
        }
    }

    /// The group, marked touched.
    #[inline]
    pub(super) fn get_mut(&mut self, shard: ShardId) -> Option<&mut Group> {
        let g = match dense_slot(shard) {
            Some(i) => self.dense.get_mut(i)?.as_mut()?,
            None => self.sparse.get_mut(&shard)?,
        };
        mark(&mut self.touched, g);
        Some(g)
    }

    /// The group, NOT marked touched: only for asking whether it has work, which changes
    /// nothing of it when it has none.
    pub(super) fn peek_mut(&mut self, shard: ShardId) -> Option<&mut Group> {
        match dense_slot(shard) {
            Some(i) => self.dense.get_mut(i)?.as_mut(),
            None => self.sparse.get_mut(&shard),
        }
    }

    /// Hosts `group` (touched).
    pub(super) fn insert(&mut self, shard: ShardId, mut group: Group) {
        group.touched = false;
        mark(&mut self.touched, &mut group);
        match dense_slot(shard) {
            Some(i) => {
                if self.dense.len() <= i {
                    self.dense.resize_with(i + 1, || None);
                }
                self.dense[i] = Some(group);
            }
            None => {
                self.sparse.insert(shard, group);
            }
        }
    }

    pub(super) fn remove(&mut self, shard: ShardId) -> Option<Group> {
        match dense_slot(shard) {
            Some(i) => self.dense.get_mut(i)?.take(),
            None => self.sparse.remove(&shard),
        }
    }

    /// Takes back a list [`Groups::take_touched`] handed out, for its room.
    pub(super) fn give_back(&mut self, mut list: Vec<ShardId>) {
        list.clear();
        self.spare = list;
    }

    /// Unmarks `shard`: the caller drained its Ready until it had none, so what touched
    /// it so far is done. The drain itself reaches it through [`IndexMut`], which marked
    /// it again, and the next flush asked it once more for nothing (at 64 shards a
    /// leader's group was asked about seven times per round). It stays in the list, which
    /// [`Groups::take_touched`] filters by the mark, and a later touch lists it anew.
    pub(super) fn settle(&mut self, shard: ShardId) {
        if let Some(g) = self.peek_mut(shard) {
            g.touched = false;
        }
    }

    /// The hosted groups touched since the last call, in the order first touched; their
    /// marks are cleared.
    pub(super) fn take_touched(&mut self) -> Vec<ShardId> {
        let mut touched = std::mem::replace(&mut self.touched, std::mem::take(&mut self.spare));
        touched.retain(|&shard| match self.peek_mut(shard) {
            Some(g) if g.touched => {
                g.touched = false;
                true
            }
            // Removed (and perhaps hosted again, which listed it anew).
            _ => false,
        });
        touched
    }
}

/// Out of line, so that the lookups a round makes by the hundred inline to their fast
/// path instead of each paying a call.
#[cold]
#[inline(never)]
fn not_hosted(shard: ShardId) -> ! {
    panic!("shard {shard} is not hosted here")
}

/// Where `shard`'s group sits in `Groups::dense`, if there.
#[inline]
fn dense_slot(shard: ShardId) -> Option<usize> {
    (shard.0 < kv_shared::limits::SHARDS_MAX).then_some(shard.0 as usize)
}

#[inline]
fn mark(touched: &mut Vec<ShardId>, g: &mut Group) {
    if !g.touched {
        g.touched = true;
        touched.push(g.shard);
    }
}

impl Index<ShardId> for Groups {
    type Output = Group;

    #[inline]
    fn index(&self, shard: ShardId) -> &Group {
        match self.get(shard) {
            Some(g) => g,
            None => not_hosted(shard),
        }
    }
}

impl IndexMut<ShardId> for Groups {
    #[inline]
    fn index_mut(&mut self, shard: ShardId) -> &mut Group {
        match self.get_mut(shard) {
            Some(g) => g,
            None => not_hosted(shard),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kv_shared::NodeId;

    fn groups(shards: &[u32]) -> Groups {
        let config = NodeConfig::for_test(NodeId(1), vec![NodeId(1)], 4);
        let map = shards
            .iter()
            .map(|&s| {
                let group = Group::new(&config, ShardId(s), kv_raft::Restored::default())
                    .expect("an empty replica");
                (ShardId(s), group)
            })
            .collect();
        Groups::new(map)
    }

    #[test]
    fn every_mutable_way_in_marks_a_group_touched_and_peeking_does_not() {
        let mut gs = groups(&[0, 1, 2, 3]);
        // Restored groups are all asked for their first Ready.
        assert_eq!(gs.take_touched(), [0, 1, 2, 3].map(ShardId));
        assert!(gs.take_touched().is_empty());
        let _ = gs.peek_mut(ShardId(1));
        let _ = gs.get(ShardId(1));
        let _ = &gs[ShardId(1)];
        assert!(
            gs.take_touched().is_empty(),
            "reading or peeking touches nothing"
        );
        gs[ShardId(2)].idle_ticks += 1;
        let _ = gs.get_mut(ShardId(0));
        gs[ShardId(2)].idle_ticks += 1;
        assert_eq!(
            gs.take_touched(),
            [ShardId(2), ShardId(0)],
            "first-touched order, once each"
        );
        gs.iter_mut().for_each(drop);
        assert_eq!(gs.take_touched(), [0, 1, 2, 3].map(ShardId));
    }

    #[test]
    fn a_removed_group_is_not_listed_and_one_hosted_again_is_listed_once() {
        let mut gs = groups(&[0, 1]);
        gs.take_touched();
        gs[ShardId(0)].idle_ticks += 1;
        gs[ShardId(1)].idle_ticks += 1;
        let g0 = gs.remove(ShardId(0)).expect("hosted");
        let g1 = gs.remove(ShardId(1)).expect("hosted");
        gs.insert(ShardId(1), g1);
        assert_eq!(gs.take_touched(), [ShardId(1)]);
        gs.insert(ShardId(0), g0);
        assert_eq!(gs.take_touched(), [ShardId(0)]);
    }

    /// Batches come out lowest index first, only up to the index asked, and one
    /// recorded again at an index (a later term's proposal there) replaces the first,
    /// also when it does not come last.
    #[test]
    fn proposed_batches_come_out_in_index_order() {
        let mut p = Proposed::default();
        p.insert(5, 1, vec![50]);
        p.insert(7, 1, vec![70]);
        p.insert(6, 1, vec![60]);
        p.insert(5, 2, vec![51]);
        assert_eq!(p.pop_through(4), None);
        assert_eq!(p.pop_through(6), Some((5, 2, vec![51])));
        assert_eq!(p.pop_through(6), Some((6, 1, vec![60])));
        assert_eq!(p.pop_through(6), None);
        p.insert(9, 2, vec![90]);
        let rest: Vec<_> = p.take_all().into_iter().collect();
        assert_eq!(rest, vec![(7, 1, vec![70]), (9, 2, vec![90])]);
        assert!(p.is_empty());
    }
}
