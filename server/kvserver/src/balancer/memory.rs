//! What the balancer remembers between rounds, and what of it outlives this node's
//! leadership of the metadata group. Every node keeps hearing the status rounds, led or
//! not, so the down timer is already known to the node that leads next; the moves a balancer asked for are dropped when it loses the
//! leadership (their shards drive them on) and a new leader adopts them from what the
//! cluster shows (learners, an extra voter), counting them toward `moves_max`.

use super::pacing::{self, PacingInput};
use super::StatusRound;
use crate::metrics::BalancerSeries;
use kv_shared::balance::{self, Cluster, LeaderTransfer, Move, Plan};
use kv_shared::config::{BalancerConfig, LeaderPolicy};
use kv_shared::proto::{ClientError, MoveRefusal};
use kv_shared::registry::Registry;
use kv_shared::{NodeId, ShardId};
use kvcli::output::{combine_status, ClusterStatus};
use kvcli::Error;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// How long a leader transfer gets to show in the status before its place is freed.
const TRANSFER_SETTLE: Duration = Duration::from_secs(10);
/// How long a shard whose leader reported another admin's move in flight is left alone.
const FOREIGN_MOVE_BACKOFF: Duration = Duration::from_secs(5);

/// The balancer's memory.
pub(super) struct State {
    config: BalancerConfig,
    replication: usize,
    /// Where leaderships go (the cluster file's `[placement] leaders`).
    pub(super) leaders: LeaderPolicy,
    /// When this balancer started: the down timer of a node never heard starts then
    /// (a restarted node counts nobody dead before `down_after_ms` of its own).
    started: Instant,
    /// This node leads the metadata group (and the balancer plans).
    pub(super) leading: bool,
    /// When each node last answered a status poll (heard led or not).
    last_heard: BTreeMap<NodeId, Instant>,
    /// Moves this balancer asked for and that have not ended.
    pub(super) in_flight: Vec<Move>,
    /// Moves that ended after the newest status round was taken: planned as if still in
    /// flight until a round shows their result.
    ended: Vec<(Move, Instant)>,
    /// Another admin's moves, left alone for a while.
    foreign: Vec<(Move, Instant)>,
    /// Nodes each shard must not move to: a move to them was undone because they did
    /// not catch up (unreachable, or too slow), so asking again would likely fail too.
    /// A node that left a shard is not avoided: it takes the shard back when a move
    /// adds it again (it creates the replica anew, docs/ELASTIC.md).
    pub(super) avoid: BTreeMap<ShardId, Vec<NodeId>>,
    /// Leader transfers asked for, until the status shows them or they time out.
    settling: Vec<(LeaderTransfer, Instant)>,
}

impl State {
    pub(super) fn new(config: BalancerConfig, replication: usize, started: Instant) -> State {
        State {
            config,
            replication,
            leaders: LeaderPolicy::Spread,
            started,
            leading: false,
            last_heard: BTreeMap::new(),
            in_flight: Vec::new(),
            ended: Vec::new(),
            foreign: Vec::new(),
            avoid: BTreeMap::new(),
            settling: Vec::new(),
        }
    }

    /// Leadership went elsewhere: the moves asked for go on in their shards (each is in
    /// its shard's log) and the next leader adopts them, so this balancer forgets them
    /// (the caller cancels their tasks). The down timer and the nodes to avoid stay.
    pub(super) fn stop_leading(&mut self) {
        self.leading = false;
        self.in_flight.clear();
        self.ended.clear();
        self.foreign.clear();
        self.settling.clear();
    }

    /// Notes who answered in `round`. Done on every node, led or not, paused or not.
    pub(super) fn hear(&mut self, round: &StatusRound) {
        let answered = round.reports.iter().filter_map(|r| r.result.as_ref().ok());
        self.hear_nodes(round.at, answered.map(|(s, _)| s.node));
    }

    pub(super) fn hear_nodes(&mut self, at: Instant, answered: impl Iterator<Item = NodeId>) {
        for node in answered {
            let heard = self.last_heard.entry(node).or_insert(at);
            *heard = (*heard).max(at);
        }
    }

    /// `node` has not answered for `down_after_ms` as of `at` (timed from this
    /// balancer's start if never heard).
    pub(super) fn silent_too_long(&self, node: NodeId, at: Instant) -> bool {
        let heard = self.last_heard.get(&node).copied().unwrap_or(self.started);
        at.saturating_duration_since(heard) >= Duration::from_millis(self.config.down_after_ms)
    }

    /// The planner's input from a status round and the registry: nodes silent for
    /// `down_after_ms` count as dead, their replicas rebuilt elsewhere.
    pub(super) fn view(
        &self,
        round: &StatusRound,
        registry: &Registry,
        shard_count: u32,
    ) -> (Cluster, ClusterStatus) {
        let status = combine_status(&round.reports, shard_count);
        let silent = |node: NodeId| self.silent_too_long(node, round.at);
        let mut cluster =
            kvcli::balance_cmd::planner_view(&status, Some(registry), None, &silent, &self.avoid);
        cluster.replication = self.replication;
        cluster.leaders = self.leaders;
        (cluster, status)
    }

    /// The round's plan: moves in flight (own, just ended, or shown by the cluster)
    /// counted as running; leader transfers settling counted as done, and the new ones
    /// paced (`pacing::pace`).
    pub(super) fn plan(
        &mut self,
        cluster: &Cluster,
        status: &ClusterStatus,
        round_at: Instant,
    ) -> Plan {
        self.ended.retain(|(_, at)| *at >= round_at);
        self.foreign
            .retain(|(_, at)| at.elapsed() < FOREIGN_MOVE_BACKOFF);
        self.settling.retain(|(t, at)| {
            at.elapsed() < TRANSFER_SETTLE
                && cluster
                    .shards
                    .iter()
                    .find(|s| s.shard == t.shard)
                    .is_some_and(|s| s.leader != Some(t.to))
        });
        let settling: Vec<LeaderTransfer> = self.settling.iter().map(|(t, _)| *t).collect();
        let mut projected = cluster.clone();
        projected.apply(&Plan {
            leader_transfers: settling.clone(),
            ..Plan::default()
        });
        let mut busy = self.in_flight.clone();
        busy.extend(self.ended.iter().map(|(m, _)| *m));
        busy.extend(self.foreign.iter().map(|(m, _)| *m));
        let limits = balance::MoveLimits {
            moves_max: self.config.moves_max as usize,
            repairs_max: Some(self.config.repairs_max as usize),
        };
        let mut plan = balance::plan_within(&projected, &busy, limits);
        if !self.ended.is_empty() {
            plan.leader_transfers.clear();
        }
        let moving = moving_shards(cluster, &busy);
        let caught_up = |shard: ShardId, node: NodeId| {
            status
                .shards
                .iter()
                .find(|s| s.shard == shard)
                .is_some_and(|s| {
                    let own = s
                        .replicas
                        .iter()
                        .find(|(r, _)| *r == node)
                        .and_then(|r| r.1);
                    pacing::caught_up(own, s.applied)
                })
        };
        plan.leader_transfers = pacing::pace(
            &plan.leader_transfers,
            &PacingInput {
                settling: &settling,
                moving: &moving,
                transfers_max: self.config.transfers_max as usize,
                caught_up: &caught_up,
            },
        );
        plan
    }

    /// A transfer was asked for: it holds its places until the status shows it.
    pub(super) fn transfer_asked(&mut self, t: LeaderTransfer, at: Instant) {
        self.settling.push((t, at));
    }

    /// Records how a move ended.
    pub(super) fn move_ended(
        &mut self,
        m: Move,
        result: &Result<(), Error>,
        series: &BalancerSeries,
    ) {
        self.in_flight.retain(|x| *x != m);
        self.ended.push((m, Instant::now()));
        match result {
            Ok(()) => {
                series.moves_done.inc();
                tracing::info!(
                    shard = m.shard.0,
                    from = m.from.0,
                    to = m.to.0,
                    "balancer: move done"
                );
            }
            Err(e) => {
                series.moves_failed.inc();
                tracing::info!(
                    shard = m.shard.0,
                    from = m.from.0,
                    to = m.to.0,
                    "balancer: move failed: {e}"
                );
                if let Error::Refused {
                    error: ClientError::MoveRefused { reason, .. },
                    ..
                } = e
                {
                    match reason {
                        MoveRefusal::CatchUpTimedOut { node, .. } => {
                            self.avoid.entry(m.shard).or_default().push(*node)
                        }
                        MoveRefusal::MoveInFlight { from, to } => self.foreign.push((
                            Move {
                                from: *from,
                                to: *to,
                                ..m
                            },
                            Instant::now(),
                        )),
                        _ => {}
                    }
                }
            }
        }
    }
}

/// Shards a move runs on: the caller's `busy` ones, and those the cluster shows moving
/// (learners, or more voters than wanted).
pub(super) fn moving_shards(cluster: &Cluster, busy: &[Move]) -> BTreeSet<ShardId> {
    let shown = cluster
        .shards
        .iter()
        .filter(|s| !s.learners.is_empty() || s.voters.len() > balance::voters_wanted(cluster, s));
    shown
        .map(|s| s.shard)
        .chain(busy.iter().map(|m| m.shard))
        .collect()
}
