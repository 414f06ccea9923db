//! The balancer: on the node that leads the metadata group, it runs the balance planner
//! (`kv_shared::balance`) every interval on the cluster as the registration task's
//! status polls show it, with node states from the node registry and a down timer, and
//! asks for the planned replica moves and leader transfers like a client would
//! (`Op::MoveReplica`, `Op::ShardLeader`), at most `moves_max` moves at once. It is
//! policy only: every move is a Raft membership change its shard's leader checks and
//! drives, so a balancer that stops, restarts elsewhere or plans from a stale view costs
//! time, never safety. Pausing is replicated state (`Registry::balancer_paused`), so a
//! new metadata leader keeps it paused.

use crate::metrics::{BalancerSeries, Metrics};
use kv_shared::balance::{self, Cluster, LeaderTransfer, Move, Plan};
use kv_shared::config::BalancerConfig;
use kv_shared::proto::{ClientError, MoveRefusal, Op};
use kv_shared::registry::Registry;
use kv_shared::{NodeId, ShardId};
use kvcli::output::combine_status;
use kvcli::{Client, ClientOptions, Error, NodeReport};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// How long one move may take before the balancer stops waiting for it (the move goes
/// on in its shard; the shard's learners keep the planner off it meanwhile).
const MOVE_WAIT: Duration = Duration::from_secs(600);
/// How long a leader transfer gets to show in the status before leaders are planned
/// again.
const TRANSFER_SETTLE: Duration = Duration::from_secs(10);
/// How long a shard whose leader reported another admin's move in flight is left alone.
const FOREIGN_MOVE_BACKOFF: Duration = Duration::from_secs(5);
/// Pause between attempts to reach the cluster at start.
const CONNECT_RETRY: Duration = Duration::from_millis(500);

/// What the event loop tells the balancer: whether this node leads the metadata group,
/// and the registry it holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Leadership {
    /// This node leads the metadata group.
    pub leads: bool,
    /// The newest registry this node knows.
    pub registry: Option<Registry>,
}

/// One round of status replies the registration task collected.
#[derive(Debug)]
pub struct StatusRound {
    /// When the round ended.
    pub at: Instant,
    /// Every node's answer (or why it gave none).
    pub reports: Vec<NodeReport>,
}

/// The latest status round (`None` until the first).
pub type StatusRounds = watch::Receiver<Option<Arc<StatusRound>>>;

/// A move running as its own task, under its own admin session.
type MoveResult = (Move, Result<(), Error>);

/// The balancer's memory between rounds. Lost when leadership moves: the new leader's
/// balancer starts from the status (learners show moves in flight).
struct State {
    config: BalancerConfig,
    replication: usize,
    /// When this node became the metadata leader (the down timer of a node never heard
    /// starts then).
    leading_since: Option<Instant>,
    /// When each node last answered a status poll.
    last_heard: BTreeMap<NodeId, Instant>,
    /// Moves asked for and not ended.
    in_flight: Vec<Move>,
    /// Moves that ended after the newest status round was taken: planned as if still in
    /// flight until a round shows their result.
    ended: Vec<(Move, Instant)>,
    /// Another admin's moves, left alone for a while.
    foreign: Vec<(Move, Instant)>,
    /// Nodes each shard must not move to (they hold its tombstone, or did not catch up).
    avoid: BTreeMap<ShardId, Vec<NodeId>>,
    /// Leader transfers asked for, until the status shows them or they time out.
    settling: Vec<(LeaderTransfer, Instant)>,
}

impl State {
    fn new(config: BalancerConfig, replication: usize) -> State {
        State {
            config,
            replication,
            leading_since: None,
            last_heard: BTreeMap::new(),
            in_flight: Vec::new(),
            ended: Vec::new(),
            foreign: Vec::new(),
            avoid: BTreeMap::new(),
            settling: Vec::new(),
        }
    }

    /// Leadership went elsewhere: what this node knew of the others' silence is stale
    /// by the time it leads again.
    fn stop_leading(&mut self) {
        self.leading_since = None;
        self.last_heard.clear();
        self.settling.clear();
    }

    /// Notes who answered in `round` (also while paused, so that a resumed balancer
    /// does not count a node that answered all along as silent since the pause).
    fn hear(&mut self, round: &StatusRound) {
        for r in &round.reports {
            if let Ok((status, _)) = &r.result {
                let heard = self.last_heard.entry(status.node).or_insert(round.at);
                *heard = (*heard).max(round.at);
            }
        }
    }

    /// The planner's input from a status round and the registry: nodes silent for
    /// `down_after_ms` count as dead, their replicas rebuilt elsewhere.
    fn view(&mut self, round: &StatusRound, registry: &Registry, shard_count: u32) -> Cluster {
        let status = combine_status(&round.reports, shard_count);
        let since = self.leading_since.unwrap_or(round.at);
        let down_after = Duration::from_millis(self.config.down_after_ms);
        let silent_too_long = |node: NodeId| {
            let heard = self.last_heard.get(&node).copied().unwrap_or(since);
            round.at.saturating_duration_since(heard) >= down_after
        };
        let mut cluster = kvcli::balance_cmd::planner_view(
            &status,
            Some(registry),
            None,
            &silent_too_long,
            &self.avoid,
        );
        cluster.replication = self.replication;
        cluster
    }

    /// The round's plan, moves in flight (and just ended) counted as done.
    fn plan(&mut self, cluster: &Cluster, round_at: Instant) -> Plan {
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
        let mut busy = self.in_flight.clone();
        busy.extend(self.ended.iter().map(|(m, _)| *m));
        busy.extend(self.foreign.iter().map(|(m, _)| *m));
        let mut plan = balance::plan(cluster, &busy, self.config.moves_max as usize);
        if !self.settling.is_empty() || !self.ended.is_empty() {
            plan.leader_transfers.clear();
        }
        plan
    }

    /// Records how a move ended.
    fn move_ended(&mut self, m: Move, result: &Result<(), Error>, series: &BalancerSeries) {
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
                // The old node keeps a tombstone of the shard and cannot take it back.
                self.avoid.entry(m.shard).or_default().push(m.from);
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

/// Runs the balancer until the node stops. `leadership` comes from the event loop,
/// `rounds` from the registration task's status polls.
pub async fn run(
    config: BalancerConfig,
    replication: u32,
    options: ClientOptions,
    mut leadership: watch::Receiver<Leadership>,
    rounds: StatusRounds,
    metrics: Metrics,
) {
    let series = metrics.balancer();
    series.enabled.set(1);
    let client = loop {
        match Client::connect(options.clone()).await {
            Ok(c) => break c,
            Err(e) => {
                tracing::debug!("balancer: cannot reach the cluster yet: {e}");
                tokio::time::sleep(CONNECT_RETRY).await;
            }
        }
    };
    let shard_count = client.shard_count().unwrap_or(0);
    let mut state = State::new(config.clone(), replication as usize);
    let mut running: JoinSet<MoveResult> = JoinSet::new();
    let mut ticker = tokio::time::interval(Duration::from_millis(config.interval_ms));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_round_at: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            Some(joined) = running.join_next(), if !running.is_empty() => {
                if let Ok((m, result)) = joined {
                    state.move_ended(m, &result, series);
                }
                series.moves_in_flight.set(state.in_flight.len() as i64);
                continue;
            }
            changed = leadership.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
        let lead = leadership.borrow_and_update().clone();
        let paused = lead.registry.as_ref().is_some_and(|r| r.balancer_paused);
        let Some(registry) = lead.registry.filter(|_| lead.leads) else {
            if state.leading_since.is_some() {
                tracing::info!("balancer: this node no longer leads the metadata group");
            }
            series.active.set(0);
            state.stop_leading();
            continue;
        };
        if state.leading_since.is_none() {
            tracing::info!("balancer: this node leads the metadata group; balancing");
            state.leading_since = Some(Instant::now());
        }
        series.active.set(i64::from(!paused));
        let Some(round) = rounds.borrow().clone() else {
            continue;
        };
        if last_round_at == Some(round.at) {
            continue;
        }
        last_round_at = Some(round.at);
        state.hear(&round);
        if paused {
            continue;
        }
        let cluster = state.view(&round, &registry, shard_count);
        let plan = state.plan(&cluster, round.at);
        series.rounds.inc();
        series.last_round_moves.set(plan.moves.len() as i64);
        series
            .last_round_transfers
            .set(plan.leader_transfers.len() as i64);
        series.last_round_stuck.set(plan.stuck.len() as i64);
        let dead = cluster
            .nodes
            .iter()
            .filter(|n| n.state == balance::NodeState::Dead)
            .count();
        series.nodes_down_too_long.set(dead as i64);
        for m in plan.moves {
            tracing::info!(
                shard = m.shard.0,
                from = m.from.0,
                to = m.to.0,
                reason = ?m.reason,
                "balancer: moving a replica"
            );
            series.moves_started.inc();
            state.in_flight.push(m);
            let client = client.clone();
            running.spawn(async move {
                let op = Op::MoveReplica {
                    shard: m.shard,
                    from: m.from,
                    to: m.to,
                };
                let result = client.session().execute_within(op, MOVE_WAIT).await;
                (m, result.map(|_| ()))
            });
        }
        series.moves_in_flight.set(state.in_flight.len() as i64);
        for t in plan.leader_transfers {
            tracing::info!(
                shard = t.shard.0,
                from = t.from.0,
                to = t.to.0,
                "balancer: moving a shard's leadership"
            );
            let op = Op::ShardLeader {
                shard: t.shard,
                node: t.to,
            };
            match client.session().execute(op).await {
                Ok(_) => {
                    series.leader_transfers.inc();
                    state.settling.push((t, Instant::now()));
                }
                Err(e) => {
                    tracing::info!(shard = t.shard.0, "balancer: leader transfer failed: {e}")
                }
            }
        }
    }
}
