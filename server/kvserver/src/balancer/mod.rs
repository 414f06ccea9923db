//! The balancer: on the node that leads the metadata group, it runs the balance planner
//! (`kv_shared::balance`) every interval on the cluster as the registration task's
//! status polls show it, with node states from the node registry and a down timer, and
//! asks for the planned replica moves and leader transfers like a client would
//! (`Op::MoveReplica`, `Op::ShardLeader`), at most `moves_max` moves and `repairs_max` repairs at once. It is
//! policy only: every move is a Raft membership change its shard's leader checks and
//! drives, so a balancer that stops, restarts elsewhere or plans from a stale view costs
//! time, never safety. Pausing is replicated state (`Registry::balancer_paused`), so a
//! new metadata leader keeps it paused. What it remembers, and what a new metadata
//! leader's balancer knows of its predecessor's work, is in [`memory`]; how leader
//! transfers are paced, in [`pacing`].

mod memory;
pub mod pacing;
#[cfg(test)]
mod tests;

use crate::metrics::Metrics;
use kv_shared::balance::{self, Move};
use kv_shared::config::BalancerConfig;
use kv_shared::proto::Op;
use kv_shared::registry::Registry;
use kvcli::{Client, ClientOptions, Error, NodeReport};
use memory::State;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// How long one move may take before the balancer stops waiting for it (the move goes
/// on in its shard; the shard's learners keep the planner off it meanwhile). A balancer
/// that loses the metadata leadership stops waiting at once.
const MOVE_WAIT: Duration = Duration::from_secs(600);
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

/// This node stopped leading the metadata group: its move tasks end now (the moves go
/// on in their shards, whose leaders drive them from their logs, and the next leader
/// adopts them), and so does what it knew only as the leader.
fn step_down(state: &mut State, running: &mut JoinSet<MoveResult>) {
    running.abort_all();
    state.stop_leading();
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
    let mut state = State::new(config.clone(), replication as usize, Instant::now());
    state.leaders = options.leaders;
    let mut running: JoinSet<MoveResult> = JoinSet::new();
    let mut ticker = tokio::time::interval(Duration::from_millis(config.interval_ms));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut last_heard_at, mut last_planned_at): (Option<Instant>, Option<Instant>) = (None, None);
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
        // Every node hears every round, so that the node leading next knows who has been
        // silent how long.
        let round = rounds.borrow().clone();
        if let Some(round) = round.as_ref().filter(|r| last_heard_at != Some(r.at)) {
            last_heard_at = Some(round.at);
            state.hear(round);
        }
        let Some(registry) = lead.registry.filter(|_| lead.leads) else {
            if state.leading {
                tracing::info!(
                    moves_cancelled = state.in_flight.len(),
                    "balancer: this node no longer leads the metadata group"
                );
                step_down(&mut state, &mut running);
                series.moves_in_flight.set(0);
            }
            series.active.set(0);
            continue;
        };
        if !state.leading {
            tracing::info!("balancer: this node leads the metadata group; balancing");
            state.leading = true;
        }
        series.active.set(i64::from(!paused));
        let Some(round) = round else {
            continue;
        };
        if paused || last_planned_at == Some(round.at) {
            continue;
        }
        last_planned_at = Some(round.at);
        let (cluster, status) = state.view(&round, &registry, shard_count);
        let plan = state.plan(&cluster, &status, round.at);
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
                    state.transfer_asked(t, Instant::now());
                }
                Err(e) => {
                    tracing::info!(shard = t.shard.0, "balancer: leader transfer failed: {e}")
                }
            }
        }
    }
}
