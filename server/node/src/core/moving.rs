//! The node core's side of moving replicas: driving the moves this node leads, creating
//! a replica a leader is adding this node to, and dropping one that was removed. The
//! move's steps themselves are decided by the pure [`crate::moves`].

use super::{is_listed, Durable, Group, NodeCore};
use crate::events::{EventKind, NodeEvent};
use crate::moves::{self, LeaderView, MoveStep};
use crate::sm::{CommandBatch, WriteCommand, WriteOp};
use crate::wal::{self, ReplicaRecord, Tombstone};
use crate::{DiskOp, GroupMessage};
use kv_raft::{ConfChange, HardState, Restored, Role};
use kv_shared::proto::{ClientError, Op, Outcome};
use kv_shared::ShardId;

impl NodeCore {
    /// Takes the next step of shard `g`'s move in flight, if this replica leads it and
    /// has applied everything committed (so the move record and membership it reads are
    /// the ones the log holds); also removes a learner no move is adding.
    pub(super) fn drive_move(&mut self, g: ShardId) {
        let me = self.config.node;
        let tick = self.tick_count;
        // Looked at unmarked: the tick asks every group, and only one that may take a
        // step below is given input (a group marked touched is asked for a Ready).
        let group = self
            .groups
            .peek_mut(g)
            .expect("moves are driven in hosted groups");
        let in_flight = group.sm.move_in_flight();
        let idle = in_flight.is_none() && group.raft.membership().learners.is_empty();
        if group.soft.role != Role::Leader || idle {
            // The common case, every tick: no status built.
            return;
        }
        let group = &mut self.groups[g];
        // Each step is decided from the committed membership and the applied move record,
        // so it must wait until the previous step took effect: a promotion proposed just
        // before the move's end (or the end just before a promotion) would both commit,
        // leaving the learner a voter of a move recorded as undone.
        let end_unapplied = group
            .move_end_proposed
            .is_some_and(|i| i > group.sm.applied_index());
        if end_unapplied || group.raft.conf_change_pending() {
            return;
        }
        let st = group.raft.status();
        if group.sm.applied_index() < st.hard.commit {
            return;
        }
        let Some(m) = in_flight else {
            if let Some(stray) = moves::stray_learner(&st.membership, None) {
                group.wake();
                let _ = group
                    .raft
                    .propose_conf_change(ConfChange::RemoveNode(stray));
            }
            return;
        };
        let catching_up = st.membership.learners.contains(&m.to);
        let since = *group.catch_up_since.get_or_insert(tick);
        if !catching_up {
            group.catch_up_since = None;
        }
        let heard = group.learner_heard_tick.map_or(since, |h| h.max(since));
        #[cfg(feature = "planted-bugs")]
        let commit = if self.remove_before_catch_up {
            0
        } else {
            st.hard.commit
        };
        #[cfg(not(feature = "planted-bugs"))]
        let commit = st.hard.commit;
        let view = LeaderView {
            me,
            membership: &st.membership,
            progress: &st.progress,
            commit,
            catch_up_ticks: if catching_up { tick - since } else { 0 },
            learner_silent_ticks: if catching_up { tick - heard } else { 0 },
            learner_silent_ticks_max: moves::MOVE_LEARNER_SILENT_ELECTIONS_MAX
                * u64::from(self.config.raft.election_ticks_max),
            transfers_tried: group.move_transfers_tried,
        };
        match moves::next_step(&m, &view) {
            MoveStep::Wait => {}
            MoveStep::Change(change) => {
                group.wake();
                // Refused while another change is being applied: tried again next tick.
                let _ = group.raft.propose_conf_change(change);
            }
            MoveStep::TransferLeadership(to) => {
                let interval = 3 * u64::from(self.config.raft.election_ticks_max);
                if group
                    .last_transfer_tick
                    .is_none_or(|t| tick >= t + interval)
                {
                    group.wake();
                    group.raft.transfer_leadership(to);
                    group.last_transfer_tick = Some(tick);
                    group.move_transfers_tried = group.move_transfers_tried.saturating_add(1);
                }
            }
            MoveStep::End(refusal) => {
                let shard = group.shard;
                let term = group.soft.term;
                let end: WriteCommand = WriteCommand {
                    client: m.client,
                    seq: m.seq,
                    op: WriteOp::EndMove {
                        client: m.client,
                        seq: m.seq,
                        refusal: refusal.clone(),
                    },
                };
                group.wake();
                if let Ok((index, _)) = group
                    .raft
                    .propose(CommandBatch { writes: vec![end] }.encode())
                {
                    group.move_end_proposed = Some(index);
                    self.out.events.push(NodeEvent {
                        shard,
                        term,
                        kind: EventKind::MoveEnded {
                            from: m.from,
                            to: m.to,
                            refusal,
                        },
                    });
                }
            }
        }
    }

    /// Answers a vote request for a shard whose replica here applied its own removal
    /// with that removal's index and term (`MessageBody::Committed`): a voter that missed
    /// the commit (its leader, this replica, stepped down right after it) would count
    /// this replica forever, and with one more voter gone no election could succeed in
    /// its view. True if `gm` was such a request.
    pub(super) fn answer_from_tombstone(&mut self, gm: &GroupMessage) -> bool {
        let Some(tombstone) = self.removed.get(&gm.shard).copied() else {
            return false;
        };
        self.answer_vote_with(tombstone, gm)
    }

    /// Answers `gm` with `tombstone`'s removal if it is a vote request (see
    /// [`NodeCore::answer_from_tombstone`]). True if it was one that could be answered.
    fn answer_vote_with(&mut self, tombstone: Tombstone, gm: &GroupMessage) -> bool {
        use kv_raft::{Message, MessageBody};
        let vote_request = matches!(
            gm.msg.body,
            MessageBody::PreVote { .. } | MessageBody::Vote { .. }
        );
        let Some(log_term) = tombstone.epoch_term.filter(|_| vote_request) else {
            return false;
        };
        let index = tombstone.epoch;
        let answer = Message {
            from: self.config.node,
            to: gm.msg.from,
            term: log_term,
            body: MessageBody::Committed { index, log_term },
        };
        self.outbox.to(gm.msg.from).push(GroupMessage {
            shard: gm.shard,
            msg: answer,
        });
        true
    }

    /// While a replica created again after its removal holds no snapshot past that
    /// removal (`Group::sealed`), its earlier life's tombstone still answers for it: vote
    /// requests get the removal (`MessageBody::Committed`), never a vote from its empty
    /// log, which would count, in a stale candidate's configuration that still lists the
    /// earlier life, a vote without the entries that life acknowledged; and the log from
    /// its start, or a snapshot not past the removal, is dropped, so that the earlier
    /// life's removal is never replayed into the new one. True if `gm` was refused.
    pub(super) fn sealed_refuses(&mut self, gm: &GroupMessage) -> bool {
        use kv_raft::MessageBody;
        let Some(tombstone) = self.groups.get(gm.shard).and_then(|g| g.sealed) else {
            return false;
        };
        match &gm.msg.body {
            MessageBody::PreVote { .. } | MessageBody::Vote { .. } => {
                self.answer_vote_with(tombstone, gm);
                true
            }
            MessageBody::Append { prev_index: 0, .. } => true,
            MessageBody::InstallSnapshot { meta, .. } => meta.index <= tombstone.epoch,
            _ => false,
        }
    }

    /// True if `msg` proves that the shard added this node back after the removal
    /// `tombstone` records: a snapshot chunk past the removal whose membership lists this
    /// node. A snapshot holds only committed entries, and committed logs are one history,
    /// so the membership at an index past the removal lists this node only if a change
    /// after the removal added it. No stale leader can forge that (a departing member's
    /// snapshot does not list it; an older one is not past the removal), and kv-raft
    /// sends a member only a snapshot that lists it (`Raft::start_snapshot`).
    fn proves_readdition(&self, msg: &kv_raft::Message, tombstone: Tombstone) -> bool {
        #[cfg(feature = "planted-bugs")]
        if self.recreate_on_stale_add {
            return true;
        }
        match &msg.body {
            kv_raft::MessageBody::InstallSnapshot { meta, .. } => {
                meta.index > tombstone.epoch && is_listed(&meta.membership, self.config.node)
            }
            _ => false,
        }
    }

    /// Creates the replica a leader is adding this node to, if `gm` is such a message:
    /// one only a leader sends (an append, heartbeat or snapshot chunk), for a shard of
    /// the cluster; for a shard this node was removed from, only a snapshot chunk that
    /// proves the shard added it back since (`proves_readdition`). The replica starts
    /// with an empty membership, so it cannot campaign or count itself anywhere until the
    /// leader's snapshot tells it the real one (kv-raft sends a member missing from the
    /// log's base membership, or removed by the log, a snapshot, never the log from its
    /// start). Its creation is persisted before any of its own writes, so a restart
    /// recovers it.
    pub(super) fn create_replica(&mut self, gm: &GroupMessage) -> bool {
        use kv_raft::MessageBody;
        let from_a_leader = matches!(
            gm.msg.body,
            MessageBody::Append { .. }
                | MessageBody::Heartbeat { .. }
                | MessageBody::InstallSnapshot { .. }
        );
        // The metadata group moves like a shard (the balancer keeps it off draining and
        // dead nodes), so a node may be added to it too.
        let of_the_cluster = gm.shard.0 < self.config.shard_count
            || (gm.shard == kv_shared::registry::METADATA_SHARD && self.config.is_group(gm.shard));
        let tombstone = self.removed.get(&gm.shard).copied();
        if !from_a_leader
            || !of_the_cluster
            || tombstone.is_some_and(|t| !self.proves_readdition(&gm.msg, t))
        {
            return false;
        }
        if tombstone.is_some() && self.writes_in_flight(gm.shard) {
            // A write of the earlier life is not durable yet: its completion would reach
            // the new life's Raft, which never issued it. The leader sends again.
            return false;
        }
        #[cfg(feature = "planted-bugs")]
        let membership = if self.created_with_bootstrap_membership {
            let mut voters = self.placement[gm.shard.0 as usize].replicas.clone();
            voters.push(self.config.node);
            voters.sort();
            voters.dedup();
            kv_raft::Membership {
                voters,
                learners: Vec::new(),
            }
        } else {
            kv_raft::Membership::default()
        };
        #[cfg(not(feature = "planted-bugs"))]
        let membership = kv_raft::Membership::default();
        // A replica created again starts at its earlier life's term and vote.
        let hard_state = match tombstone {
            Some(t) => t.hard_state,
            None => HardState {
                term: self.forgotten.remove(&gm.shard).unwrap_or(0),
                ..HardState::default()
            },
        };
        let restored = Restored {
            initial_membership: membership,
            hard_state,
            ..Restored::default()
        };
        let mut group = Group::new(&self.config, gm.shard, restored)
            .expect("an empty replica has no snapshot to fail");
        group.created = true;
        group.leader_heard_tick = self.tick_count;
        group.sealed = tombstone;
        self.groups.insert(gm.shard, group);
        let record = match tombstone {
            Some(t) => {
                self.removed.remove(&gm.shard);
                self.removed_routes.remove(&gm.shard);
                // Before the new life's first record: the earlier life's snapshot files
                // go, durably, and its records stop counting as compacted.
                self.round_ops
                    .push(DiskOp::TakeBackGroup { shard: gm.shard.0 });
                ReplicaRecord::Rejoined {
                    epoch: t.epoch,
                    epoch_term: t.epoch_term,
                }
            }
            None => ReplicaRecord::Created,
        };
        // The log starts empty: an earlier life of this replica may have left entries in
        // the WAL (in segments its removal could not delete), which recovery must not
        // replay into this one. That reset goes BEFORE the record that makes the shard
        // hosted: a crash may keep a prefix of the write, and a `Rejoined` kept without
        // the reset would bring the earlier life's entries back as a log with a gap; the
        // reset kept without the record belongs to a shard recovery does not host, and is
        // skipped.
        self.round_ops.push(DiskOp::Append(wal::entries_record(
            gm.shard.0,
            1,
            Vec::new(),
        )));
        self.round_ops
            .push(DiskOp::Append(wal::replica_record(gm.shard.0, record)));
        let kind = match tombstone {
            Some(t) => EventKind::ReplicaRecreated {
                leader: gm.msg.from,
                removed_at: t.epoch,
            },
            None => EventKind::ReplicaCreated {
                leader: gm.msg.from,
            },
        };
        self.out.events.push(NodeEvent {
            shard: gm.shard,
            term: gm.msg.term,
            kind,
        });
        true
    }

    /// This node's replica of `g` applied its own removal at `epoch`: it stops serving at
    /// once (requests for the shard get `StaleRoute` with the new replica set), and its
    /// tombstone goes to the WAL, after which the runtime deletes its snapshot files.
    pub(super) fn drop_replica(&mut self, g: ShardId, epoch: u64) {
        // Unknown only if a snapshot compacted the removal away meanwhile (a replica
        // that waited for a re-add that never committed): that tombstone cannot answer.
        let raft = &self.groups[g].raft;
        let tombstone = Tombstone {
            epoch,
            epoch_term: raft.committed_term(epoch),
            // What the round wrote before the tombstone holds it (Raft's writes of this
            // ready are pushed before its entries are applied).
            hard_state: HardState {
                commit: 0,
                ..raft.status().hard
            },
        };
        let term = self.release_replica(g, tombstone.record());
        self.removed.insert(g, tombstone);
        self.round_durable.push(Durable::Removed(g));
        self.out.events.push(NodeEvent {
            shard: g,
            term,
            kind: EventKind::ReplicaRemoved { epoch },
        });
    }

    /// Forgets every replica created by a move that its shard never listed (neither its
    /// snapshot's membership nor any change in its log names this node) and that voted
    /// for nobody in its term, once it either holds the commit index a leader told it (so
    /// that leader does not list it: it was removed, or the move undone, before its
    /// addition reached it) or has heard no leader for
    /// [`moves::CREATED_REPLICA_SILENT_ELECTIONS_MAX`] election timeouts (the move was undone
    /// before the leader's snapshot came). No quorum ever counted such a replica, so
    /// forgetting it loses nothing; it leaves no tombstone, so a later move may create it
    /// again, and it keeps its term for that. A replica the shard did list is dropped
    /// by its removal instead ([`NodeCore::drop_replica`]).
    pub(super) fn forget_unlisted_replicas(&mut self) {
        let me = self.config.node;
        let silent_ticks_max = moves::CREATED_REPLICA_SILENT_ELECTIONS_MAX
            * u64::from(self.config.raft.election_ticks_max);
        let unlisted: Vec<(ShardId, u64)> = self
            .groups
            .iter()
            .filter(|g| g.created && !g.raft.log_names(me))
            .filter_map(|g| {
                let st = g.raft.status();
                // A sealed replica's vote, if any, is its earlier life's, which its
                // tombstone keeps.
                let settled = (st.hard.vote.is_none() || g.sealed.is_some())
                    && st.persisted >= st.last_index
                    && g.snapshot_writes_inflight == 0;
                let told = g.leader_commit_told.is_some_and(|c| st.hard.commit >= c);
                let silent = self.tick_count - g.leader_heard_tick >= silent_ticks_max;
                (settled && (told || silent)).then_some((g.shard, st.hard.term))
            })
            .collect();
        for (g, term) in unlisted {
            if self.writes_in_flight(g) {
                // Its acknowledgement (or a write of its term) is not out yet.
                continue;
            }
            if let Some(sealed) = self.groups[g].sealed {
                // Created again but never past its removal: the tombstone comes back,
                // with the term and vote it holds now.
                let tombstone = Tombstone {
                    hard_state: HardState {
                        commit: 0,
                        ..self.groups[g].raft.status().hard
                    },
                    ..sealed
                };
                self.release_replica(g, tombstone.record());
                self.removed.insert(g, tombstone);
                self.round_durable.push(Durable::Removed(g));
                self.out.events.push(NodeEvent {
                    shard: g,
                    term,
                    kind: EventKind::ReplicaForgotten,
                });
                continue;
            }
            self.release_replica(g, ReplicaRecord::Forgotten { term });
            self.forgotten.insert(g, term);
            self.out.events.push(NodeEvent {
                shard: g,
                term,
                kind: EventKind::ReplicaForgotten,
            });
        }
    }

    /// True if a disk write of replica `g` is not durable yet (issued, or in this round).
    fn writes_in_flight(&self, g: ShardId) -> bool {
        let round = self.round_durable.iter();
        self.disk_inflight
            .values()
            .flatten()
            .chain(round)
            .any(|d| match d {
                Durable::Raft(s, _)
                | Durable::OwnSnapshot(s, _)
                | Durable::ReceivedSnapshot(s, _) => *s == g,
                Durable::Removed(_) => false,
            })
    }

    /// Stops hosting `g`: its requests are answered with `StaleRoute` and the replica set
    /// it knew, and `record` goes to the WAL. Returns the replica's term.
    fn release_replica(&mut self, g: ShardId, record: ReplicaRecord) -> u64 {
        let route = self.shard_route(g);
        let group = self.groups.remove(g).expect("hosted");
        let mut ids: Vec<u64> = self
            .requests
            .iter()
            .filter(|(_, r)| r.shard == g)
            .map(|(id, _)| *id)
            .collect();
        // In the order they came, as before the table was hashed.
        ids.sort_unstable();
        for id in ids {
            let e = ClientError::StaleRoute {
                node: self.config.node,
                route: route.clone(),
            };
            self.reply(id, Outcome::Error(e));
        }
        self.removed_routes.insert(g, route);
        self.round_ops
            .push(DiskOp::Append(wal::replica_record(g.0, record)));
        group.soft.term
    }

    /// True if request `id` is the `MoveReplica` that began the move in flight of `g`.
    pub(super) fn is_move_in_flight_request(&self, g: ShardId, id: u64) -> bool {
        let (Some(r), Some(m)) = (self.requests.get(&id), self.groups[g].sm.move_in_flight())
        else {
            return false;
        };
        matches!(r.req.op, Op::MoveReplica { .. }) && (r.req.client, r.req.seq) == (m.client, m.seq)
    }

    /// The move in flight of `g` ended (applied `EndMove`): its waiters get the outcome
    /// the admin's session now holds, the same a retry would get.
    pub(super) fn move_ended(&mut self, g: ShardId) {
        let group = &mut self.groups[g];
        group.catch_up_since = None;
        group.learner_heard_tick = None;
        group.move_end_proposed = None;
        group.move_transfers_tried = 0;
        let waiters = std::mem::take(&mut group.move_waiters);
        for id in waiters {
            let Some(r) = self.requests.get(&id) else {
                continue;
            };
            let outcome = self.groups[g]
                .sm
                .saved_outcome(r.req.client, r.req.seq)
                .unwrap_or(Outcome::Error(ClientError::SessionExpired));
            self.reply(id, outcome);
        }
    }
}
