//! kvcli's elastic-cluster commands, `node drain N`, `node remove N --dead`, `rebalance`
//! and `rebalance status`: they mark nodes in the node registry (`Op::SetNodeState`),
//! read the cluster from the nodes' status replies (node states from the registry they
//! carry), plan with the shared balance planner (`kv_shared::balance`), and drive the plan
//! with the admin operations (`Op::MoveReplica`, `Op::ShardLeader`) until done.

use crate::balance_output::{shard_name, BalanceOutput, BalancerStatus};
use crate::client::Client;
use crate::command::ParseError;
use crate::error::Error;
use crate::output::{combine_status, ClusterStatus};
use crate::run::STATUS_TIMEOUT;
use kv_shared::balance::{self, Cluster, NodeInfo, NodeState, ShardInfo};
use kv_shared::proto::Op;
use kv_shared::registry::{self, Registry};
use kv_shared::{NodeId, ShardId};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

mod drive;

use drive::{drive_to, watch_until, Goal};

/// Replica moves running at once unless `--moves-max` says otherwise: each new replica
/// catches up by a snapshot, so a few at a time keep the disks and the links busy without
/// starving client traffic.
pub const MOVES_MAX_DEFAULT: usize = 4;
/// How long `node drain`, `node remove --dead` and `rebalance` keep driving moves by
/// default, in seconds.
pub const BALANCE_WAIT_DEFAULT_S: u64 = 3600;
/// Rounds `rebalance --dry-run` simulates at most.
const DRY_RUN_ROUNDS_MAX: usize = 1000;

/// One of the elastic-cluster commands, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BalanceCommand {
    /// Move every replica off `node` (and so its leaderships).
    Drain {
        /// The node.
        node: NodeId,
        /// Options.
        drive: DriveOptions,
    },
    /// Rebuild every replica of a node that will not come back on live nodes.
    RemoveDead {
        /// The node.
        node: NodeId,
        /// Options.
        drive: DriveOptions,
    },
    /// Move replicas and leaderships until balanced (or print the plan).
    Rebalance {
        /// Print the rounds instead of driving them.
        dry_run: bool,
        /// Options.
        drive: DriveOptions,
    },
    /// The balancer, the balance of the cluster and the next round of the plan.
    Status {
        /// The cap the next round is planned with.
        moves_max: usize,
    },
    /// Pause (`true`) or resume the balancer.
    Pause(bool),
}

/// How a driving command runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DriveOptions {
    /// Give up after this many seconds.
    pub wait_s: u64,
    /// Moves running at once.
    pub moves_max: usize,
}

/// The usage of `node` (as in the command table).
pub const NODE_USAGE: &str =
    "list | drain NODE [--wait SECS] [--moves-max N] | remove NODE --dead [--wait SECS] [--moves-max N]";
/// The usage of `rebalance`.
pub const REBALANCE_USAGE: &str =
    "[--dry-run] [--wait SECS] [--moves-max N] | status | pause | resume";

/// Parses `node ...` and `rebalance ...`; `None` for any other command.
pub fn parse(name: &str, args: &[&str]) -> Option<Result<BalanceCommand, ParseError>> {
    let usage = |cmd: &str, synopsis: &str| ParseError::Usage(format!("{cmd} {synopsis}"));
    let parsed = match (name, args) {
        ("node", ["drain", n, flags @ ..]) => node_id(n)
            .zip(drive_flags(flags, false))
            .map(|(node, (drive, _))| BalanceCommand::Drain { node, drive })
            .ok_or_else(|| usage("node", NODE_USAGE)),
        ("node", ["remove", n, flags @ ..]) => match (node_id(n), drive_flags(flags, true)) {
            (Some(node), Some((drive, true))) => Ok(BalanceCommand::RemoveDead { node, drive }),
            (Some(node), Some((_, false))) => Err(ParseError::Usage(format!(
                "node remove {} --dead: remove is for a node that will not come back (its replicas are rebuilt from the others); to empty a node that still runs, use node drain {}",
                node.0, node.0
            ))),
            _ => Err(usage("node", NODE_USAGE)),
        },
        // `node list` is a plain command (command.rs).
        ("node", ["list"]) => return None,
        ("node", _) => Err(usage("node", NODE_USAGE)),
        ("rebalance", ["pause"]) => Ok(BalanceCommand::Pause(true)),
        ("rebalance", ["resume"]) => Ok(BalanceCommand::Pause(false)),
        ("rebalance", ["status"]) => Ok(BalanceCommand::Status {
            moves_max: MOVES_MAX_DEFAULT,
        }),
        ("rebalance", ["status", "--moves-max", n]) => match n.parse() {
            Ok(moves_max) if moves_max > 0 => Ok(BalanceCommand::Status { moves_max }),
            _ => Err(usage("rebalance", REBALANCE_USAGE)),
        },
        ("rebalance", flags) => {
            let dry_run = flags.contains(&"--dry-run");
            let rest: Vec<&str> = flags.iter().copied().filter(|f| *f != "--dry-run").collect();
            drive_flags(&rest, false)
                .map(|(drive, _)| BalanceCommand::Rebalance { dry_run, drive })
                .ok_or_else(|| usage("rebalance", REBALANCE_USAGE))
        }
        _ => return None,
    };
    Some(parsed)
}

fn node_id(word: &str) -> Option<NodeId> {
    word.parse().ok().filter(|n| *n > 0).map(NodeId)
}

/// `--wait SECS`, `--moves-max N` and (if `dead_allowed`) `--dead`, in any order, each at
/// most once; returns the options and whether `--dead` was given.
fn drive_flags(flags: &[&str], dead_allowed: bool) -> Option<(DriveOptions, bool)> {
    let mut drive = DriveOptions {
        wait_s: BALANCE_WAIT_DEFAULT_S,
        moves_max: MOVES_MAX_DEFAULT,
    };
    let (mut dead, mut wait_seen, mut max_seen) = (false, false, false);
    let mut rest = flags;
    loop {
        rest = match rest {
            [] => return Some((drive, dead)),
            ["--dead", tail @ ..] if dead_allowed && !dead => {
                dead = true;
                tail
            }
            ["--wait", secs, tail @ ..] if !wait_seen => {
                drive.wait_s = secs.parse().ok()?;
                wait_seen = true;
                tail
            }
            ["--moves-max", n, tail @ ..] if !max_seen => {
                drive.moves_max = n.parse().ok().filter(|n| *n > 0)?;
                max_seen = true;
                tail
            }
            _ => return None,
        };
    }
}

/// The cluster as the status replies show it, for the planner.
struct View {
    status: ClusterStatus,
    /// The newest node registry any node answered with.
    registry: Option<Registry>,
    cluster: Cluster,
}

impl View {
    /// The registry's state of `node` (`None`: not registered, or no registry heard).
    fn registered(&self, node: NodeId) -> Option<registry::NodeState> {
        self.registry.as_ref().and_then(|r| r.state_of(node))
    }
}

/// The newest node registry in `reports`.
pub(crate) fn newest_registry(reports: &[crate::client::NodeReport]) -> Option<Registry> {
    reports
        .iter()
        .filter_map(|r| r.result.as_ref().ok())
        .filter_map(|(s, _)| s.registry.as_deref())
        .max_by_key(|r| r.version)
        .cloned()
}

/// The replication factor the shards show: the most common voter count (a shard in the
/// middle of a move briefly has one more voter).
fn replication_of(status: &ClusterStatus) -> usize {
    let mut counts: BTreeMap<usize, usize> = BTreeMap::new();
    for s in &status.shards {
        *counts.entry(s.voters.len()).or_default() += 1;
    }
    counts
        .into_iter()
        .max_by_key(|(voters, shards)| (*shards, *voters))
        .map_or(0, |(voters, _)| voters)
}

/// Reads every node's status, waiting `grace` for the others once one answered (at most
/// the status timeout); each node's state comes from the registry and whether it answers
/// ([`balance::node_state`]), except `marked`, whose state is given. `avoid` lists, per
/// shard, nodes it must not move to.
async fn read_view(
    client: &Client,
    grace: Duration,
    marked: Option<(NodeId, NodeState)>,
    avoid: &BTreeMap<ShardId, Vec<NodeId>>,
) -> Result<View, Error> {
    let started = Instant::now();
    let reports = client.collect_status(STATUS_TIMEOUT, grace).await;
    if reports.iter().all(|r| r.result.is_err()) {
        return Err(crate::run::no_node_answered(started, &reports));
    }
    let status = combine_status(&reports, client.shard_count().unwrap_or(0));
    let registry = newest_registry(&reports);
    let mut cluster = planner_view(&status, registry.as_ref(), marked, &|_| false, avoid);
    cluster.leaders = client.options().leaders;
    Ok(View {
        cluster,
        status,
        registry,
    })
}

/// The planner's view of a combined status and the newest registry: each node's state
/// from its registry state, whether it answered, and `silent_too_long` (the balancer's
/// down timer; kvcli keeps none), except `marked`, whose state is given. `avoid` lists,
/// per shard, nodes it must not move to.
pub fn planner_view(
    status: &ClusterStatus,
    registry: Option<&Registry>,
    marked: Option<(NodeId, NodeState)>,
    silent_too_long: &dyn Fn(NodeId) -> bool,
    avoid: &BTreeMap<ShardId, Vec<NodeId>>,
) -> Cluster {
    let registered = |id| registry.and_then(|r| r.state_of(id));
    let mut nodes: Vec<NodeInfo> = status
        .nodes
        .iter()
        .filter_map(|row| {
            let id = row.node.id?;
            let state = match marked {
                Some((m, state)) if m == id => state,
                _ => balance::node_state(registered(id), row.rtt_us.is_some(), silent_too_long(id)),
            };
            Some(NodeInfo { id, state })
        })
        .collect();
    // A removed node no status lists may still hold replicas: they are to be rebuilt.
    for r in registry.iter().flat_map(|r| &r.nodes) {
        if !nodes.iter().any(|n| n.id == r.id) {
            let state = balance::node_state(Some(r.state), false, silent_too_long(r.id));
            nodes.push(NodeInfo { id: r.id, state });
        }
    }
    let metadata = status
        .metadata
        .iter()
        .map(|r| (r.shard, &r.voters, &r.learners, r.leader));
    let shards = (status.shards.iter())
        .map(|row| (row.shard, &row.voters, &row.learners, row.leader))
        // The metadata group moves like a shard: off draining and dead nodes, and spread.
        .chain(metadata)
        .map(|(shard, voters, learners, leader)| ShardInfo {
            shard,
            voters: voters.clone(),
            learners: learners.clone(),
            leader,
            avoid: avoid.get(&shard).cloned().unwrap_or_default(),
        })
        .collect();
    Cluster {
        nodes,
        shards,
        replication: replication_of(status),
        // The view carries no policy: callers that know the cluster file's set it.
        leaders: kv_shared::config::LeaderPolicy::Spread,
    }
}

/// Status rounds a refusal that rests on silence takes: a node that misses one round's
/// answer (a lost datagram, a node busy for a second) is not yet taken for down.
const VIEW_ROUNDS_BEFORE_REFUSAL: u32 = 3;

/// `view`, or a newer one, that passes `check`: while it does not, the status is read
/// again, for at most [`VIEW_ROUNDS_BEFORE_REFUSAL`] rounds in all; the last round's
/// refusal otherwise.
async fn recheck(
    client: &Client,
    marked: Option<(NodeId, NodeState)>,
    mut view: View,
    check: impl Fn(&View) -> Result<(), String>,
) -> Result<View, Error> {
    let mut round = 1;
    loop {
        match check(&view) {
            Ok(()) => return Ok(view),
            Err(why) if round == VIEW_ROUNDS_BEFORE_REFUSAL => return Err(refused(why)),
            Err(_) => round += 1,
        }
        view = read_view(client, STATUS_TIMEOUT, marked, &BTreeMap::new()).await?;
    }
}

/// Runs a parsed command.
pub async fn execute(client: &Client, cmd: BalanceCommand) -> Result<BalanceOutput, Error> {
    match cmd {
        BalanceCommand::Drain { node, drive } => {
            let marked = Some((node, NodeState::Draining));
            let view = read_view(client, STATUS_TIMEOUT, marked, &BTreeMap::new()).await?;
            let view = recheck(client, marked, view, |view| {
                check_node(view, node)?;
                check_not_removed(view, node)?;
                if !answers(view, node) {
                    return Err(format!(
                        "node {} does not answer: draining moves replicas off a node that runs; for a node that will not come back, use `node remove {} --dead`",
                        node.0, node.0
                    ));
                }
                check_room(&view.cluster, node, "drain")
            })
            .await?;
            set_node_state(client, node, registry::NodeState::Draining).await?;
            crate::note!("node {} is draining: it receives no replica", node.0);
            let goal = Goal::Empty(node, NodeState::Draining);
            let out = if balancer_runs(&view) {
                watch_until(client, goal, drive).await?
            } else {
                drive_to(client, goal, drive).await?
            };
            set_node_state(client, node, registry::NodeState::Removed).await?;
            Ok(out)
        }
        BalanceCommand::RemoveDead { node, drive } => {
            let marked = Some((node, NodeState::Dead));
            let view = read_view(client, STATUS_TIMEOUT, marked, &BTreeMap::new()).await?;
            check_node(&view, node).map_err(refused)?;
            if answers(&view, node) && view.registered(node) != Some(registry::NodeState::Removed) {
                return Err(refused(format!(
                    "node {} answers, so it is not dead: a replica rebuilt elsewhere while it runs would leave it serving stale copies until its removal reaches it; drain it with `node drain {}`, or stop it for good first",
                    node.0, node.0
                )));
            }
            let view = recheck(client, marked, view, |view| {
                check_room(&view.cluster, node, "remove")
            })
            .await?;
            // Removed first: its datagrams are refused from now on, and nothing it
            // still holds counts.
            set_node_state(client, node, registry::NodeState::Removed).await?;
            crate::note!(
                "node {} is removed: its replicas are rebuilt elsewhere",
                node.0
            );
            let goal = Goal::Empty(node, NodeState::Dead);
            if balancer_runs(&view) {
                watch_until(client, goal, drive).await
            } else {
                drive_to(client, goal, drive).await
            }
        }
        BalanceCommand::Rebalance {
            dry_run: true,
            drive,
        } => {
            let view = read_view(client, STATUS_TIMEOUT, None, &BTreeMap::new()).await?;
            let rounds = balance::simulate(&view.cluster, drive.moves_max, DRY_RUN_ROUNDS_MAX);
            let mut end = view.cluster.clone();
            for r in &rounds {
                end.apply(r);
            }
            let stuck = balance::plan(&end, &[], drive.moves_max).stuck;
            Ok(BalanceOutput::DryRun {
                rounds,
                stuck,
                after: balance::assess(&end),
            })
        }
        BalanceCommand::Rebalance {
            dry_run: false,
            drive,
        } => {
            let view = read_view(client, STATUS_TIMEOUT, None, &BTreeMap::new()).await?;
            if balancer_runs(&view) {
                watch_until(client, Goal::Balanced, drive).await
            } else {
                drive_to(client, Goal::Balanced, drive).await
            }
        }
        BalanceCommand::Pause(paused) => {
            client
                .session()
                .execute(Op::PauseBalancer { paused })
                .await?;
            Ok(BalanceOutput::Paused(paused))
        }
        BalanceCommand::Status { moves_max } => {
            let view = read_view(client, STATUS_TIMEOUT, None, &BTreeMap::new()).await?;
            Ok(BalanceOutput::Status {
                balancer: balancer_status(&view),
                assessment: balance::assess(&view.cluster),
                replication: view.cluster.replication,
                next: balance::plan(&view.cluster, &[], moves_max),
            })
        }
    }
}

/// The value of `raftkv_<name>` (a gauge) or `raftkv_<name>_total` (a counter) among a
/// node's counters.
fn series(counters: &[(String, u64)], name: &str) -> Option<u64> {
    let gauge = format!("raftkv_{name}");
    let counter = format!("raftkv_{name}_total");
    counters
        .iter()
        .find(|(n, _)| *n == gauge || *n == counter)
        .map(|(_, v)| *v)
}

/// The balancer as the status replies show it (`None`: no node reports its series).
fn balancer_status(view: &View) -> Option<BalancerStatus> {
    let rows: Vec<_> = view
        .status
        .nodes
        .iter()
        .filter(|r| series(&r.counters, "balancer_enabled").is_some())
        .collect();
    if rows.is_empty() {
        return None;
    }
    let mut b = BalancerStatus {
        enabled: rows
            .iter()
            .any(|r| series(&r.counters, "balancer_enabled") == Some(1)),
        paused: view.registry.as_ref().is_some_and(|r| r.balancer_paused),
        ..BalancerStatus::default()
    };
    if let Some(row) = rows
        .iter()
        .find(|r| series(&r.counters, "balancer_active") == Some(1))
    {
        let get = |name| series(&row.counters, name).unwrap_or(0);
        b.active_on = row.node.id;
        b.moves_in_flight = get("balancer_moves_in_flight");
        b.rounds = get("balancer_rounds");
        b.moves_started = get("balancer_moves_started");
        b.moves_done = get("balancer_moves_done");
        b.moves_failed = get("balancer_moves_failed");
        b.last_round = (
            get("balancer_last_round_moves"),
            get("balancer_last_round_transfers"),
            get("balancer_last_round_stuck"),
        );
    }
    Some(b)
}

/// The balancer is enabled and not paused: the commands watch it work instead of
/// driving moves themselves.
fn balancer_runs(view: &View) -> bool {
    balancer_status(view).is_some_and(|b| b.enabled && !b.paused)
}

/// `node` answered the status request.
fn answers(view: &View, node: NodeId) -> bool {
    view.status
        .nodes
        .iter()
        .any(|n| n.node.id == Some(node) && n.rtt_us.is_some())
}

fn refused(message: String) -> Error {
    Error::Balance {
        kind: "balance-refused",
        message,
    }
}

/// Marks `node` in the node registry (through the metadata group, exactly once under a
/// session of its own).
async fn set_node_state(
    client: &Client,
    node: NodeId,
    state: registry::NodeState,
) -> Result<(), Error> {
    client
        .session()
        .execute(Op::SetNodeState { node, state })
        .await
        .map(|_| ())
}

/// A removed node cannot be drained (else the refusal).
fn check_not_removed(view: &View, node: NodeId) -> Result<(), String> {
    match view.registered(node) {
        Some(registry::NodeState::Removed) => Err(format!(
            "node {} was removed from the cluster; removal is final",
            node.0
        )),
        _ => Ok(()),
    }
}

/// `node` must be a node of the cluster (else the refusal).
fn check_node(view: &View, node: NodeId) -> Result<(), String> {
    let known: Vec<String> = view
        .status
        .nodes
        .iter()
        .filter_map(|n| n.node.id)
        .map(|id| id.0.to_string())
        .collect();
    let registered = view.registered(node).is_some();
    if registered || view.status.nodes.iter().any(|n| n.node.id == Some(node)) {
        Ok(())
    } else {
        Err(format!(
            "node {} is not a node of this cluster (nodes: {})",
            node.0,
            known.join(", ")
        ))
    }
}

/// The live nodes other than `node` must be able to hold R replicas of every shard (else
/// the refusal).
fn check_room(cluster: &Cluster, node: NodeId, what: &str) -> Result<(), String> {
    let r = cluster.replication;
    let others: Vec<String> = cluster
        .nodes
        .iter()
        .filter(|n| n.id != node && n.state == NodeState::Live)
        .map(|n| n.id.0.to_string())
        .collect();
    if others.len() >= r {
        return Ok(());
    }
    let joining: Vec<String> = cluster
        .nodes
        .iter()
        .filter(|n| n.id != node && n.state == NodeState::Joining)
        .map(|n| n.id.0.to_string())
        .collect();
    if others.len() + joining.len() >= r {
        return Err(format!(
            "cannot {what} node {} yet: node(s) {} are still joining (not yet known to every node), so they cannot take replicas; retry once `kvcli node list` shows them active",
            node.0,
            joining.join(", ")
        ));
    }
    Err(format!(
        "cannot {what} node {}: the other live nodes ({}) cannot hold {r} replicas of every shard (each replica of a shard needs its own node)",
        node.0,
        if others.is_empty() {
            "none".to_string()
        } else {
            others.join(", ")
        }
    ))
}

/// `shard 3's replica on node 5: no live node ...`.
pub fn describe_stuck(s: &balance::Stuck) -> String {
    let shard = shard_name(s.shard, false);
    match s.node {
        Some(n) => format!("{shard}'s replica on node {}: {}", n.0, s.reason),
        None => format!("{shard}: {}", s.reason),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(line: &str) -> Result<BalanceCommand, ParseError> {
        let words = crate::command::split_words(line).unwrap();
        let args: Vec<&str> = words[1..].iter().map(String::as_str).collect();
        parse(&words[0], &args).expect("a balance command")
    }

    const DEFAULTS: DriveOptions = DriveOptions {
        wait_s: BALANCE_WAIT_DEFAULT_S,
        moves_max: MOVES_MAX_DEFAULT,
    };

    #[test]
    fn commands_and_flags_parse() {
        assert_eq!(
            p("node drain 5").unwrap(),
            BalanceCommand::Drain {
                node: NodeId(5),
                drive: DEFAULTS
            }
        );
        assert_eq!(
            p("node drain 5 --moves-max 2 --wait 30").unwrap(),
            BalanceCommand::Drain {
                node: NodeId(5),
                drive: DriveOptions {
                    wait_s: 30,
                    moves_max: 2
                }
            }
        );
        assert_eq!(
            p("node remove 4 --wait 60 --dead").unwrap(),
            BalanceCommand::RemoveDead {
                node: NodeId(4),
                drive: DriveOptions {
                    wait_s: 60,
                    moves_max: MOVES_MAX_DEFAULT
                }
            }
        );
        assert_eq!(
            p("rebalance --dry-run").unwrap(),
            BalanceCommand::Rebalance {
                dry_run: true,
                drive: DEFAULTS
            }
        );
        assert_eq!(
            p("rebalance").unwrap(),
            BalanceCommand::Rebalance {
                dry_run: false,
                drive: DEFAULTS
            }
        );
        assert_eq!(
            p("rebalance status").unwrap(),
            BalanceCommand::Status {
                moves_max: MOVES_MAX_DEFAULT
            }
        );
        assert_eq!(p("rebalance pause").unwrap(), BalanceCommand::Pause(true));
        assert_eq!(p("rebalance resume").unwrap(), BalanceCommand::Pause(false));
        assert!(parse("get", &["k"]).is_none());
    }

    #[test]
    fn room_counts_live_nodes_and_names_the_ones_still_joining() {
        let cluster = |states: &[NodeState]| Cluster {
            nodes: (1..)
                .zip(states)
                .map(|(id, &state)| NodeInfo {
                    id: NodeId(id),
                    state,
                })
                .collect(),
            shards: Vec::new(),
            replication: 3,
            leaders: Default::default(),
        };
        use NodeState::{Down, Joining, Live};
        assert_eq!(
            check_room(
                &cluster(&[Live, Live, Live, Live, Live]),
                NodeId(5),
                "drain"
            ),
            Ok(())
        );
        let e = check_room(
            &cluster(&[Joining, Joining, Live, Joining, Live]),
            NodeId(5),
            "drain",
        )
        .unwrap_err();
        assert!(
            e.starts_with("cannot drain node 5 yet: node(s) 1, 2, 4 are still joining"),
            "{e}"
        );
        let e = check_room(
            &cluster(&[Live, Down, Live, Down, Live]),
            NodeId(5),
            "remove",
        )
        .unwrap_err();
        assert!(
            e.starts_with("cannot remove node 5: the other live nodes (1, 3) cannot hold 3"),
            "{e}"
        );
    }

    #[test]
    fn mistakes_say_what_to_type() {
        for bad in [
            "node",
            "node drain",
            "node drain x",
            "node drain 0",
            "node drain 5 --wait",
            "node drain 5 --wait soon",
            "node drain 5 --moves-max 0",
            "node drain 5 --dead",
            "node drain 5 --wait 1 --wait 2",
            "node remove 4 --dead --dead",
            "rebalance --wait",
            "rebalance status --dry-run",
            "rebalance pause now",
            "node list-all",
        ] {
            assert!(p(bad).is_err(), "{bad}");
        }
        let e = p("node remove 4").unwrap_err().to_string();
        assert!(e.contains("--dead") && e.contains("node drain 4"), "{e}");
        assert!(p("node drain x")
            .unwrap_err()
            .to_string()
            .starts_with("usage: node list | drain NODE"));
    }
}
