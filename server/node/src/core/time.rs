//! The node core's time-driven inputs: the tick (Raft timers, quiescence, request
//! timeouts, leader spreading) and the finer timers a runtime may drive itself (course
//! mode's vote resends and stall releases).

use super::*;

impl NodeCore {
    /// Advances time one tick: Raft timers, request timeouts, leader spreading.
    ///
    /// Quiescence (`NodeConfig::quiesce`): an idle group stops costing heartbeats. A
    /// leader with nothing to do for a heartbeat period (every member holds every entry
    /// and was sent the commit index) is no longer ticked, so it sends nothing; its
    /// followers, hearing nothing for the group for two heartbeat periods while the
    /// leader's node is alive, stop ticking too, so they do not time out. Any message or
    /// request for the group wakes it. The failure detector is per node, not per group:
    /// nodes send each other a keepalive datagram whenever a heartbeat period passed
    /// without any other datagram, and a quiesced follower whose leader's node was silent
    /// for an election timeout wakes and, in time, elects. Not ticking only slows a
    /// replica's clock, which Raft's safety never depends on. Lease reads do: a leader's
    /// paused clock would stretch its lease, so a group forgets its lease when it wakes,
    /// and with lease reads every client request keeps its group awake for another
    /// heartbeat period, so that a steady stream of reads keeps renewing the lease instead
    /// of waking a quiesced leader for every read.
    pub fn tick(&mut self) {
        self.tick_count += 1;
        let quiesce = self.config.quiesce;
        let hb = u64::from(self.config.raft.heartbeat_ticks);
        let election_min = u64::from(self.config.raft.election_ticks_min);
        let election_max = u64::from(self.config.raft.election_ticks_max);
        let ask_for_leader = self
            .tick_count
            .is_multiple_of(LEADERLESS_ELECTIONS_BEFORE_ASKING_ALL * election_max);
        let cluster_nodes = self.cluster_nodes();
        let me = self.config.node;
        let tick_count = self.tick_count;
        let peers_heard_tick = &self.peers_heard_tick;
        // Only a group whose Raft the tick reaches is marked touched: a quiesced one it
        // leaves alone has nothing new for the next flush's drain.
        self.groups.for_each_mut(|g| {
            let woken = g.quiesced;
            if g.quiesced {
                let leader_silent = g.soft.role != Role::Leader
                    && g.soft.leader.is_none_or(|l| {
                        peers_heard_tick
                            .get(&l)
                            .is_none_or(|&t| tick_count - t >= election_min)
                    });
                let recheck = g.soft.role != Role::Leader
                    && tick_count - g.last_msg_tick
                        >= QUIESCED_FOLLOWER_RECHECK_ELECTIONS * election_max;
                // A quiesced leader rechecks too: one whose group went on without it (it
                // was cut off, and removed, while quiesced) is sent nothing by any current
                // member, and learns the newer term only from the answer to a heartbeat.
                let leader_recheck = g.soft.role == Role::Leader
                    && tick_count - g.last_msg_tick
                        >= QUIESCED_FOLLOWER_RECHECK_ELECTIONS * election_max;
                if leader_recheck {
                    g.last_msg_tick = tick_count;
                }
                if !leader_silent && !recheck && !leader_recheck {
                    return false;
                }
                if recheck {
                    // Awake for an election timeout: if the leader is live and quiesced,
                    // this replica's PreVote wakes it (and is refused); else it elects.
                    g.recheck_until_tick = tick_count + 2 * election_max;
                }
                g.wake();
            }
            if quiesce {
                // Judged before ticking: the previous `take_output` drained every output.
                if g.soft.role == Role::Leader {
                    let idle = g.raft.is_quiescent_leader()
                        && g.waiting.is_empty()
                        && g.proposed.is_empty()
                        && g.reads.is_empty()
                        && g.confirmed_reads.is_empty()
                        && g.snapshot_writes_inflight == 0;
                    g.idle_ticks = if idle { g.idle_ticks + 1 } else { 0 };
                    g.quiesced = g.idle_ticks > hb;
                } else if let Some(l) = g.soft.leader {
                    // An active leader sends each follower something every two heartbeat
                    // periods at the latest (heartbeat suppression skips at most one).
                    let leader_alive = peers_heard_tick
                        .get(&l)
                        .is_some_and(|&t| tick_count - t <= 2 * hb);
                    // A learner stays awake: one whose removal it missed is known to
                    // no later leader, and must time out to ask for one.
                    let voter = g.raft.membership().voters.contains(&me);
                    g.quiesced = l != me
                        && g.soft.role == Role::Follower
                        && voter
                        && leader_alive
                        && tick_count >= g.recheck_until_tick
                        && g.waiting.is_empty()
                        // Follower reads in flight need ticks to be resent or given up.
                        && g.reads.is_empty()
                        && g.confirmed_reads.is_empty()
                        && tick_count - g.last_msg_tick > 2 * hb;
                }
                if g.quiesced {
                    g.idle_ticks = 0;
                    // Woken above (its Raft told so), it is marked as any group given input.
                    return woken;
                }
            }
            g.raft.tick();
            if ask_for_leader && g.soft.leader.is_none() && !g.raft.membership().voters.is_empty() {
                g.raft.ask_for_leader(&cluster_nodes);
            }
            true
        });
        if quiesce && self.tick_count.is_multiple_of(hb) {
            for p in cluster_nodes.iter().filter(|&&p| p != self.config.node) {
                let quiet = self
                    .peers_sent_tick
                    .get(p)
                    .is_none_or(|&t| self.tick_count - t >= hb);
                if quiet {
                    // An empty batch: the keepalive the failure detector listens for.
                    self.outbox.to(*p);
                }
            }
        }
        while let Some(&(deadline, id)) = self.deadlines.front() {
            let Some(r) = self.requests.get(&id) else {
                self.deadlines.pop_front(); // answered already
                continue;
            };
            if deadline > self.tick_count {
                break;
            }
            let shard = r.shard;
            self.reply(id, Outcome::Error(ClientError::Timeout { shard }));
        }
        if self.config.spread_leaders {
            self.spread_leaders();
        }
        for g in self.groups.ids() {
            self.drive_move(g);
        }
        self.forget_unlisted_replicas();
    }

    /// Asks every group's (pre-)candidate to resend its vote requests to the voters that
    /// have not answered (`kv_raft::Raft::resend_vote_requests`; anything else sends
    /// nothing). For a runtime that times these resends finer than its tick (course mode).
    pub fn resend_vote_requests(&mut self) {
        self.groups.for_each_mut(|g| {
            if g.quiesced {
                return false;
            }
            g.raft.resend_vote_requests();
            true
        });
    }

    /// Asks every group's leader to release a stalled commit to its lazy followers
    /// (`kv_raft::Raft::release_stalled`), for a runtime that times stall releases finer
    /// than its tick (course mode).
    pub fn release_stalled(&mut self, targeted: bool) {
        self.groups.for_each_mut(|g| {
            if g.quiesced {
                return false;
            }
            g.raft.release_stalled(targeted);
            true
        });
    }

    /// Tells every group's leader a commit stalled (`kv_raft::Raft::note_stall`): fast
    /// followers that left an Append unanswered are replaced.
    pub fn note_stall(&mut self) {
        self.groups.for_each_mut(|g| {
            if g.quiesced {
                return false;
            }
            g.raft.note_stall();
            true
        });
    }

    /// Switches wide sending of lazy followers in every group
    /// (`kv_raft::Raft::set_send_wide`), for a runtime that decides it from the drop rate
    /// it measures (course mode).
    pub fn set_send_wide(&mut self, on: bool) {
        self.config.raft.lazy_send_wide = on;
        for g in self.groups.iter_mut() {
            g.raft.set_send_wide(on);
        }
    }

    /// Switches kv-raft's heartbeat resends in every group
    /// (`kv_raft::Raft::set_heartbeat_resend_ticks`), for a runtime whose need for them
    /// depends on what it measures (course mode: the drop rate).
    pub fn set_heartbeat_resend_ticks(&mut self, ticks: Option<u32>) {
        self.config.raft.heartbeat_resend_ticks = ticks;
        for g in self.groups.iter_mut() {
            g.raft.set_heartbeat_resend_ticks(ticks);
        }
    }

    /// Switches kv-raft's heartbeat suppression in every group
    /// (`kv_raft::Raft::set_heartbeat_suppression`), for a runtime whose need for every
    /// echo depends on what it measures (course mode: heavy loss).
    pub fn set_heartbeat_suppression(&mut self, on: bool) {
        self.config.raft.heartbeat_suppression = on;
        for g in self.groups.iter_mut() {
            g.raft.set_heartbeat_suppression(on);
        }
    }

    /// A leader that is not its shard's preferred leader hands over once the preferred one
    /// has caught up, at most once every few election timeouts. The preferred leader is
    /// the one an admin named (`WriteOp::PreferLeader`), else the policy's: with spread
    /// leaders the bootstrap placement's, with packed leaders the shard's current voter
    /// that comes first in the order (the bootstrap one may have moved away). A preferred
    /// leader that is down never catches up, so its shard keeps whoever it elected until
    /// the balancer names another.
    fn spread_leaders(&mut self) {
        let interval = 3 * u64::from(self.config.raft.election_ticks_max);
        let (placement, policy, me, tick_count) = (
            &self.placement,
            self.config.leaders,
            self.config.node,
            self.tick_count,
        );
        // Only a group that hands its leadership over is given input (marked touched).
        self.groups.for_each_mut(|g| {
            if g.soft.role != Role::Leader || g.sm.move_in_flight().is_some() {
                // A move hands leadership over itself; spreading could undo that.
                return false;
            }
            // The metadata group has no placement: it keeps whoever it elects.
            let placed = placement.get(g.shard.0 as usize);
            let Some(preferred) = g.sm.preferred_leader().or_else(|| {
                let p = placed?;
                match policy {
                    LeaderPolicy::Spread => Some(p.preferred_leader),
                    LeaderPolicy::Pack => g.raft.membership().voters.iter().min().copied(),
                }
            }) else {
                return false;
            };
            if preferred == me
                || g.last_transfer_tick
                    .is_some_and(|t| tick_count < t + interval)
            {
                return false;
            }
            let st = g.raft.status();
            let caught_up = st
                .progress
                .iter()
                .any(|(n, m)| *n == preferred && *m >= st.last_index);
            if caught_up {
                g.wake();
                g.raft.transfer_leadership(preferred);
                g.last_transfer_tick = Some(tick_count);
            }
            caught_up
        });
    }
}

/// A replica without a leader asks every cluster node outside its membership for one
/// every this many (longest) election timeouts: see `kv_raft::Raft::ask_for_leader`.
const LEADERLESS_ELECTIONS_BEFORE_ASKING_ALL: u64 = 4;

/// A quiesced follower that heard nothing for its group for this many (longest) election
/// timeouts wakes for one, although its leader's node is alive: that node may have
/// stopped leading the group without this replica hearing it (it stepped down after
/// committing its own removal, or removed this replica and stopped sending to it), and
/// quiescence would otherwise trust it forever. At a 10 ms tick and 200 ms elections, a
/// wake every 6 s per idle group (more frequent wakes add elections, which split votes
/// under fsyncs slower than the election timeout).
const QUIESCED_FOLLOWER_RECHECK_ELECTIONS: u64 = 30;
