//! How a driving command reaches its goal: by watching the balancer work, or, when none
//! runs, by driving the plan itself (replica moves as tasks of their own, leader
//! transfers), printing progress on stderr either way.

use super::{describe_stuck, read_view, DriveOptions, View};
use crate::balance_output::{shard_name, BalanceOutput, DoneMove, Driven, FailedMove};
use crate::client::{Client, Response};
use crate::error::Error;
use crate::output::ClusterStatus;
use kv_shared::balance::{self, LeaderTransfer, Move, MoveReason, NodeState, Plan};
use kv_shared::proto::{ClientError, MoveRefusal, Op};
use kv_shared::{NodeId, ShardId};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use tokio::task::JoinSet;

/// How often the driver reads the cluster again while nothing ends.
const POLL_INTERVAL: Duration = Duration::from_millis(500);
/// While driving, how long a status read waits for the other nodes once one answered: a
/// dead node would otherwise cost every round the whole status timeout. A node slower
/// than this counts as down for one round (never a move's source or target). Checks
/// before driving (is a node dead?) wait the whole timeout.
const DRIVE_STATUS_GRACE: Duration = Duration::from_millis(250);
/// How long a leader transfer (a preference the shard's leader acts on once the new
/// leader has caught up) gets before the driver plans leaders again.
const TRANSFER_SETTLE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the driver leaves a shard alone whose leader reported another move in flight.
const FOREIGN_MOVE_BACKOFF: Duration = Duration::from_secs(5);

/// What a driving command is after.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Goal {
    /// `node` holds no replica (so it leads nothing).
    Empty(NodeId, NodeState),
    /// The plan is empty.
    Balanced,
}

impl Goal {
    fn marked(self) -> Option<(NodeId, NodeState)> {
        match self {
            Goal::Empty(node, state) => Some((node, state)),
            Goal::Balanced => None,
        }
    }

    /// The part of `plan` this goal drives: for emptying a node, only the moves off it
    /// and the transfers away from it.
    fn select(self, mut plan: Plan) -> Plan {
        if let Goal::Empty(node, _) = self {
            plan.moves
                .retain(|m| m.from == node && m.reason != MoveReason::Balance);
            plan.leader_transfers.retain(|t| t.from == node);
            plan.stuck.retain(|s| s.node == Some(node));
        }
        plan
    }
}

/// Replicas `node` holds (voters and learners) and shards it leads.
pub(super) fn held_by(status: &ClusterStatus, node: NodeId) -> (usize, usize) {
    let replicas = status
        .shards
        .iter()
        .filter(|s| s.voters.contains(&node) || s.learners.contains(&node))
        .count();
    let leads = status
        .shards
        .iter()
        .filter(|s| s.leader == Some(node))
        .count();
    // The metadata group's replica moves off a drained node too (docs/ELASTIC.md), when
    // an answering node outside the group can take it (else it stays, as the planner
    // leaves it).
    let (metadata_replica, metadata_leader) =
        status.metadata.as_ref().map_or((false, false), |m| {
            let in_group = |n: NodeId| m.voters.contains(&n) || m.learners.contains(&n);
            let movable = status
                .nodes
                .iter()
                .filter(|r| r.rtt_us.is_some())
                .filter_map(|r| r.node.id)
                .any(|n| n != node && !in_group(n));
            (in_group(node) && movable, m.leader == Some(node) && movable)
        });
    (
        replicas + usize::from(metadata_replica),
        leads + usize::from(metadata_leader),
    )
}

/// What watching the balancer and driving the plan share: when they started, when they
/// give up, and the progress line printed last (a line is printed only when it changes).
struct Watch {
    started: Instant,
    deadline: Instant,
    last_progress: String,
}

impl Watch {
    fn start(drive: DriveOptions) -> Self {
        let started = Instant::now();
        Watch {
            started,
            deadline: started + Duration::from_secs(drive.wait_s),
            last_progress: String::new(),
        }
    }

    /// Reads the cluster (waiting [`DRIVE_STATUS_GRACE`] for the slower nodes) and prints
    /// how far `goal` is on stderr if that changed.
    async fn read(
        &mut self,
        client: &Client,
        goal: Goal,
        avoid: &BTreeMap<ShardId, Vec<NodeId>>,
    ) -> Result<View, Error> {
        let view = read_view(client, DRIVE_STATUS_GRACE, goal.marked(), avoid).await?;
        let progress = progress_line(goal, &view);
        if progress != self.last_progress {
            crate::note!("{progress}");
            self.last_progress = progress;
        }
        Ok(view)
    }
}

/// Waits, printing progress on stderr, until the balancer reached `goal` (a node holds
/// no replica; or the cluster is balanced) or `drive.wait_s` passes.
pub(super) async fn watch_until(
    client: &Client,
    goal: Goal,
    drive: DriveOptions,
) -> Result<BalanceOutput, Error> {
    let mut watch = Watch::start(drive);
    loop {
        let view = watch.read(client, goal, &BTreeMap::new()).await?;
        let assessment = balance::assess(&view.cluster);
        let reached = match goal {
            Goal::Empty(node, _) => held_by(&view.status, node) == (0, 0),
            Goal::Balanced => assessment.balanced(),
        };
        if reached {
            return Ok(BalanceOutput::Driven(Driven {
                goal: goal.marked(),
                by_balancer: true,
                elapsed: watch.started.elapsed(),
                moves: Vec::new(),
                failed: Vec::new(),
                leader_transfers: Vec::new(),
                stuck: Vec::new(),
                assessment,
            }));
        }
        if Instant::now() >= watch.deadline {
            return Err(Error::Balance {
                kind: "gave-up",
                message: format!(
                    "gave up waiting for the balancer after {} s: {}; it goes on (kvcli rebalance status shows it)",
                    drive.wait_s,
                    progress_line(goal, &view)
                ),
            });
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// A move running as its own task: its own admin session, so that it applies once and a
/// retry waits for the same move.
type MoveResult = (Move, Result<Response, Error>, Duration);

fn start_move(running: &mut JoinSet<MoveResult>, client: &Client, m: Move, wait: Duration) {
    let client = client.clone();
    running.spawn(async move {
        let started = Instant::now();
        let op = Op::MoveReplica {
            shard: m.shard,
            from: m.from,
            to: m.to,
        };
        let result = client.session().execute_within(op, wait).await;
        (m, result, started.elapsed())
    });
}

/// Drives the plan until `goal` holds or `drive.wait_s` passes, printing progress on
/// stderr.
pub(super) async fn drive_to(
    client: &Client,
    goal: Goal,
    drive: DriveOptions,
) -> Result<BalanceOutput, Error> {
    let mut watch = Watch::start(drive);
    let deadline = watch.deadline;
    let mut avoid: BTreeMap<ShardId, Vec<NodeId>> = BTreeMap::new();
    let mut running: JoinSet<MoveResult> = JoinSet::new();
    let mut in_flight: Vec<Move> = Vec::new();
    let mut foreign: Vec<(Move, Instant)> = Vec::new();
    let mut done: Vec<DoneMove> = Vec::new();
    let mut failed: Vec<FailedMove> = Vec::new();
    let mut transfers: Vec<LeaderTransfer> = Vec::new();
    let mut settling: Vec<(LeaderTransfer, Instant)> = Vec::new();
    loop {
        let view = watch.read(client, goal, &avoid).await?;
        settling.retain(|(t, at)| {
            at.elapsed() < TRANSFER_SETTLE_TIMEOUT
                && view.status.shards[t.shard.0 as usize].leader != Some(t.to)
        });
        foreign.retain(|(_, at)| at.elapsed() < FOREIGN_MOVE_BACKOFF);
        let mut busy: Vec<Move> = in_flight.clone();
        busy.extend(foreign.iter().map(|(m, _)| *m));
        let plan = goal.select(balance::plan(&view.cluster, &busy, drive.moves_max));
        let reached = match goal {
            Goal::Empty(node, _) => held_by(&view.status, node) == (0, 0),
            // Learners (an undone move's, being removed) keep leader transfers off: wait.
            Goal::Balanced => {
                plan.is_empty()
                    && settling.is_empty()
                    && view.status.shards.iter().all(|s| s.learners.is_empty())
            }
        };
        if reached && in_flight.is_empty() {
            return Ok(BalanceOutput::Driven(Driven {
                goal: goal.marked(),
                by_balancer: false,
                elapsed: watch.started.elapsed(),
                moves: done,
                failed,
                leader_transfers: transfers,
                stuck: plan.stuck,
                assessment: balance::assess(&view.cluster),
            }));
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(Error::Balance {
                kind: "gave-up",
                message: format!(
                    "gave up after {} s: {}; {} moves still in flight may finish (kvcli status lists moves in flight)",
                    drive.wait_s,
                    progress_line(goal, &view),
                    in_flight.len()
                ),
            });
        }
        for m in &plan.moves {
            crate::note!("{}", move_line(m, "moving", "adding", "removing"));
            start_move(&mut running, client, *m, deadline - now);
            in_flight.push(*m);
        }
        if settling.is_empty() {
            for t in &plan.leader_transfers {
                crate::note!(
                    "{}: leadership from node {} to node {}",
                    shard_name(t.shard, false),
                    t.from.0,
                    t.to.0
                );
                let op = Op::ShardLeader {
                    shard: t.shard,
                    node: t.to,
                };
                client.session().execute(op).await?;
                transfers.push(*t);
                settling.push((*t, Instant::now()));
            }
        }
        let idle = in_flight.is_empty() && plan.is_empty() && settling.is_empty();
        if idle && !plan.stuck.is_empty() && foreign.is_empty() {
            let why: Vec<String> = plan.stuck.iter().map(describe_stuck).collect();
            return Err(Error::Balance {
                kind: "stuck",
                message: format!("cannot go on: {}", why.join("; ")),
            });
        }
        let ended = tokio::select! {
            r = running.join_next(), if !running.is_empty() => r,
            _ = tokio::time::sleep(POLL_INTERVAL) => None,
        };
        if let Some(joined) = ended {
            let (m, result, took) = joined.map_err(|e| Error::Io(format!("move task: {e}")))?;
            in_flight.retain(|x| *x != m);
            match result {
                Ok(_) => {
                    crate::note!(
                        "{} in {:.1} s",
                        move_line(&m, "moved", "added", "removed"),
                        took.as_secs_f64()
                    );
                    done.push(DoneMove { mv: m, took });
                }
                Err(e) => {
                    crate::note!(
                        "{} failed: {e}",
                        move_line(&m, "moving", "adding", "removing")
                    );
                    if let Error::Refused {
                        error: ClientError::MoveRefused { reason, .. },
                        ..
                    } = &e
                    {
                        match reason {
                            MoveRefusal::CatchUpTimedOut { node, .. } => {
                                avoid.entry(m.shard).or_default().push(*node)
                            }
                            MoveRefusal::MoveInFlight { from, to } => foreign.push((
                                Move {
                                    shard: m.shard,
                                    from: *from,
                                    to: *to,
                                    reason: m.reason,
                                },
                                Instant::now(),
                            )),
                            // The status was older than the shard's membership: plan again.
                            _ => {}
                        }
                    } else if !matches!(
                        e,
                        Error::NoLeader { .. }
                            | Error::GaveUp { .. }
                            | Error::NoNodeAnswered { .. }
                    ) {
                        return Err(e);
                    }
                    // Else a timeout or a lost leader: the move may go on; the next status
                    // shows it (learners) and the planner leaves the shard alone.
                    failed.push(FailedMove {
                        mv: m,
                        error: e.to_string(),
                    });
                }
            }
        }
    }
}

/// One line of how far a driving command is.
fn progress_line(goal: Goal, view: &View) -> String {
    let a = balance::assess(&view.cluster);
    match goal {
        Goal::Empty(node, _) => {
            let (replicas, leads) = held_by(&view.status, node);
            format!(
                "node {}: {replicas} replicas, leads {leads}; shards short of {} live voters: {}",
                node.0,
                view.cluster.replication,
                a.short_shards.len()
            )
        }
        Goal::Balanced => format!(
            "replicas above the mean's ceiling: {}, leaderships: {}, replicas on nodes not live: {}, moves in flight: {}",
            a.replicas_over,
            a.leaders_over,
            a.replicas_not_live,
            a.moving_shards.len()
        ),
    }
}

/// A line about move `m` with the verb for a move, a voter added, or a voter removed
/// (the metadata group's size changes: one side is `NodeId::NONE`).
fn move_line(m: &Move, moving: &str, adding: &str, removing: &str) -> String {
    let shard = shard_name(m.shard, false);
    match m.reason {
        MoveReason::GrowMetadata => format!("{adding} node {} as a voter of {shard}", m.to.0),
        MoveReason::ShrinkMetadata => {
            format!("{removing} node {}'s voter of {shard}", m.from.0)
        }
        _ => format!(
            "{moving} {shard}'s replica from node {} to node {}",
            m.from.0, m.to.0
        ),
    }
}
