//! How the elastic-cluster commands' results look (`node drain`, `node remove --dead`,
//! `rebalance`, `rebalance --dry-run`, `rebalance status`): text for people, one JSON
//! object for machines. Pure, so its tests need no cluster.

use crate::balance_cmd::describe_stuck;
use crate::output::{Style, EXIT_NOT_FOUND_OR_MISMATCH, EXIT_OK};
use kv_shared::balance::{Assessment, LeaderTransfer, Move, MoveReason, NodeState, Plan, Stuck};
use kv_shared::registry::METADATA_SHARD;
use kv_shared::{NodeId, ShardId};
use serde_json::{json, Value};
use std::time::Duration;

/// A move that ended done.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DoneMove {
    /// The move.
    pub mv: Move,
    /// How long it took, from asking to the leader's answer.
    pub took: Duration,
}

/// A move that failed (and was planned again, or given up on).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FailedMove {
    /// The move.
    pub mv: Move,
    /// Why, one line.
    pub error: String,
}

/// The balancer as the nodes' status replies show it (its series, `raftkv_balancer_*`,
/// and the registry's pause flag).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BalancerStatus {
    /// Some node's cluster file enables it.
    pub enabled: bool,
    /// The registry says paused.
    pub paused: bool,
    /// The node whose balancer plans now (the metadata leader's, when not paused).
    pub active_on: Option<NodeId>,
    /// That balancer's moves not yet ended.
    pub moves_in_flight: u64,
    /// Its rounds so far, and the moves it asked for, done and failed.
    pub rounds: u64,
    /// See `rounds`.
    pub moves_started: u64,
    /// See `rounds`.
    pub moves_done: u64,
    /// See `rounds`.
    pub moves_failed: u64,
    /// Its last round: moves started, leader transfers, stuck replicas or shards.
    pub last_round: (u64, u64, u64),
}

impl BalancerStatus {
    /// `running`, `paused` or `disabled`.
    pub fn mode(&self) -> &'static str {
        match (self.enabled, self.paused) {
            (false, _) => "disabled",
            (true, true) => "paused",
            (true, false) => "running",
        }
    }

    fn text(&self) -> String {
        let mut out = format!("balancer: {}", self.mode());
        if let Some(n) = self.active_on {
            let (moves, transfers, stuck) = self.last_round;
            out.push_str(&format!(
                " on node {} (the metadata leader); moves in flight: {}; {} rounds, {} moves asked for ({} done, {} failed); last round: {moves} moves, {transfers} leader transfers, {stuck} stuck",
                n.0, self.moves_in_flight, self.rounds, self.moves_started, self.moves_done, self.moves_failed
            ));
        }
        out
    }

    fn json(&self) -> Value {
        json!({
            "mode": self.mode(),
            "active_on": self.active_on.map(|n| n.0),
            "moves_in_flight": self.moves_in_flight,
            "rounds": self.rounds,
            "moves_started": self.moves_started,
            "moves_done": self.moves_done,
            "moves_failed": self.moves_failed,
            "last_round": {
                "moves": self.last_round.0,
                "leader_transfers": self.last_round.1,
                "stuck": self.last_round.2,
            },
        })
    }
}

/// How `node drain`, `node remove --dead` or `rebalance` finished.
#[derive(Clone, Debug, PartialEq)]
pub struct Driven {
    /// The node emptied and how it was taken (draining or dead); `None`: rebalance.
    pub goal: Option<(NodeId, NodeState)>,
    /// The balancer made the moves (kvcli watched); else kvcli drove them.
    pub by_balancer: bool,
    /// From the first status read to the end.
    pub elapsed: Duration,
    /// Moves done, in the order they ended.
    pub moves: Vec<DoneMove>,
    /// Moves that failed on the way.
    pub failed: Vec<FailedMove>,
    /// Leader transfers asked for.
    pub leader_transfers: Vec<LeaderTransfer>,
    /// What the planner could not do at the end.
    pub stuck: Vec<Stuck>,
    /// The cluster at the end.
    pub assessment: Assessment,
}

impl Driven {
    fn text(&self) -> String {
        let done = if self.by_balancer {
            format!(
                "the balancer moved them, in {:.1} s",
                self.elapsed.as_secs_f64()
            )
        } else {
            format!(
                "{} moves, {} leader transfers, {} failed moves retried, in {:.1} s",
                self.moves.len(),
                self.leader_transfers.len(),
                self.failed.len(),
                self.elapsed.as_secs_f64()
            )
        };
        let mut out = match self.goal {
            Some((node, NodeState::Dead)) => format!(
                "OK: node {} is removed and its replicas were rebuilt on live nodes; it holds none ({done})",
                node.0
            ),
            Some((node, _)) => format!(
                "OK: node {} holds no replica and leads nothing, and is removed from the cluster; stop it ({done})",
                node.0
            ),
            None if self.assessment.balanced() => format!("OK: balanced ({done})"),
            None => format!("not balanced: nothing more can be moved ({done})"),
        };
        for m in &self.moves {
            out.push_str(&format!(
                "\n  {}: node {} -> node {} ({:.1} s)",
                shard_name(m.mv.shard, false),
                m.mv.from.0,
                m.mv.to.0,
                m.took.as_secs_f64()
            ));
        }
        for t in &self.leader_transfers {
            out.push_str(&format!("\n  {}", transfer_text(t)));
        }
        for f in &self.failed {
            out.push_str(&format!("\n  failed, {}: {}", move_text(&f.mv), f.error));
        }
        out.push_str(&stuck_lines(&self.stuck, "  "));
        out.push('\n');
        out.push_str(&assessment_text(&self.assessment));
        out
    }

    fn json(&self) -> Value {
        json!({
            "result": "ok",
            "by": if self.by_balancer { "balancer" } else { "kvcli" },
            "node": self.goal.map(|(n, _)| n.0),
            "node_state": self.goal.map(|(_, s)| s.name()),
            // Both commands end with the node removed in the node registry.
            "registry_state": self.goal.map(|_| "removed"),
            "elapsed_ms": self.elapsed.as_millis() as u64,
            "moves": self.moves.iter().map(|m| {
                let mut v = move_json(&m.mv);
                v["ms"] = json!(m.took.as_millis() as u64);
                v
            }).collect::<Vec<_>>(),
            "failed": self.failed.iter().map(|f| {
                let mut v = move_json(&f.mv);
                v["error"] = json!(f.error);
                v
            }).collect::<Vec<_>>(),
            "leader_transfers": self.leader_transfers.iter().map(transfer_json).collect::<Vec<_>>(),
            "stuck": self.stuck.iter().map(stuck_json).collect::<Vec<_>>(),
            "balance": assessment_json(&self.assessment),
        })
    }
}

/// What an elastic-cluster command produced.
#[derive(Clone, Debug, PartialEq)]
pub enum BalanceOutput {
    /// `node drain`, `node remove --dead` or `rebalance` finished.
    Driven(Driven),
    /// `rebalance --dry-run`: the rounds, if every move and transfer completes.
    DryRun {
        /// The rounds.
        rounds: Vec<Plan>,
        /// What would remain stuck.
        stuck: Vec<Stuck>,
        /// The cluster after the last round.
        after: Assessment,
    },
    /// `rebalance pause` or `rebalance resume` was recorded.
    Paused(bool),
    /// `rebalance status`.
    Status {
        /// The balancer (`None`: no node reports one).
        balancer: Option<BalancerStatus>,
        /// The cluster now.
        assessment: Assessment,
        /// The replication factor the shards show.
        replication: usize,
        /// The next round.
        next: Plan,
    },
}

impl BalanceOutput {
    /// 1 for a rebalance that ended (or a status that shows a cluster) not balanced, 0
    /// otherwise.
    pub fn exit_code(&self) -> i32 {
        let balanced = match self {
            BalanceOutput::Driven(d) => d.goal.is_some() || d.assessment.balanced(),
            BalanceOutput::Paused(_) => true,
            BalanceOutput::DryRun { after, .. } => after.balanced(),
            BalanceOutput::Status { assessment, .. } => assessment.balanced(),
        };
        if balanced {
            EXIT_OK
        } else {
            EXIT_NOT_FOUND_OR_MISMATCH
        }
    }

    /// The result, as text or as one JSON object (no trailing newline).
    pub fn render(&self, style: Style) -> String {
        if style.json {
            self.json().to_string()
        } else {
            self.text()
        }
    }

    fn text(&self) -> String {
        match self {
            BalanceOutput::Driven(d) => d.text(),
            BalanceOutput::DryRun {
                rounds,
                stuck,
                after,
            } => {
                let mut out = if rounds.is_empty() {
                    "nothing to do".to_string()
                } else {
                    format!(
                        "{} rounds, if every move and transfer completes:",
                        rounds.len()
                    )
                };
                for (i, r) in rounds.iter().enumerate() {
                    out.push_str(&format!("\nround {}:", i + 1));
                    out.push_str(&plan_lines(r));
                }
                out.push_str(&stuck_lines(stuck, ""));
                out.push_str("\nafterwards:\n");
                out.push_str(&assessment_text(after));
                out
            }
            BalanceOutput::Paused(paused) => format!(
                "OK: the balancer is {}",
                if *paused {
                    "paused: it starts no move or leader transfer until `rebalance resume` (moves in flight finish)"
                } else {
                    "running"
                }
            ),
            BalanceOutput::Status {
                balancer,
                assessment,
                replication,
                next,
            } => {
                let mut out = match balancer {
                    Some(b) => format!("{}\n", b.text()),
                    None => "balancer: no node reports one\n".to_string(),
                };
                out.push_str(&format!(
                    "replication factor (from the shards): {replication}\n"
                ));
                out.push_str(&assessment_text(assessment));
                if next.is_empty() {
                    out.push_str("\nnext round: nothing to do");
                } else {
                    out.push_str(&format!(
                        "\nnext round: {} moves, {} leader transfers",
                        next.moves.len(),
                        next.leader_transfers.len()
                    ));
                    out.push_str(&plan_lines(next));
                }
                out.push_str(&stuck_lines(&next.stuck, ""));
                out
            }
        }
    }

    /// The result as one JSON object.
    pub fn json(&self) -> Value {
        match self {
            BalanceOutput::Driven(d) => d.json(),
            BalanceOutput::DryRun {
                rounds,
                stuck,
                after,
            } => json!({
                "result": "ok",
                "rounds": rounds.iter().map(plan_json).collect::<Vec<_>>(),
                "stuck": stuck.iter().map(stuck_json).collect::<Vec<_>>(),
                "after": assessment_json(after),
            }),
            BalanceOutput::Paused(paused) => json!({
                "result": "ok",
                "balancer": if *paused { "paused" } else { "running" },
            }),
            BalanceOutput::Status {
                balancer,
                assessment,
                replication,
                next,
            } => json!({
                "result": "ok",
                "balancer": balancer.as_ref().map(BalancerStatus::json),
                "replication": replication,
                "balance": assessment_json(assessment),
                "next": plan_json(next),
            }),
        }
    }
}

/// A shard as the admin commands' text names it: `shard 3` (`s3` in lists), or `the
/// metadata group` for the group that holds the node registry (it moves like a shard,
/// under the id `u32::MAX`, which means nothing to a reader).
pub(crate) fn shard_name(shard: ShardId, in_list: bool) -> String {
    match (shard == METADATA_SHARD, in_list) {
        (true, _) => "the metadata group".into(),
        (false, true) => shard.to_string(),
        (false, false) => format!("shard {}", shard.0),
    }
}

fn move_text(m: &Move) -> String {
    match m.reason {
        MoveReason::GrowMetadata => format!("add node {} as a metadata voter", m.to.0),
        MoveReason::ShrinkMetadata => format!("remove node {}'s metadata voter", m.from.0),
        _ => format!(
            "move {}'s replica from node {} to node {} ({})",
            shard_name(m.shard, false),
            m.from.0,
            m.to.0,
            reason_name(m.reason)
        ),
    }
}

fn transfer_text(t: &LeaderTransfer) -> String {
    format!(
        "{}: leadership from node {} to node {}",
        shard_name(t.shard, false),
        t.from.0,
        t.to.0
    )
}

fn reason_name(r: MoveReason) -> &'static str {
    match r {
        MoveReason::Evacuate => "evacuate",
        MoveReason::Balance => "balance",
        MoveReason::GrowMetadata => "grow_metadata",
        MoveReason::ShrinkMetadata => "shrink_metadata",
    }
}

/// One line per shard the plan cannot place, each after a newline and `indent`.
fn stuck_lines(stuck: &[Stuck], indent: &str) -> String {
    stuck
        .iter()
        .map(|s| format!("\n{indent}stuck: {}", describe_stuck(s)))
        .collect()
}

fn plan_lines(p: &Plan) -> String {
    let mut out = String::new();
    for m in &p.moves {
        out.push_str(&format!("\n  {}", move_text(m)));
    }
    for t in &p.leader_transfers {
        out.push_str(&format!("\n  {}", transfer_text(t)));
    }
    out
}

/// The per-node table and one line of verdict.
fn assessment_text(a: &Assessment) -> String {
    let mut out = format!("{:<6}{:<10}{:<10}{}", "NODE", "STATE", "REPLICAS", "LEADS");
    for n in &a.nodes {
        out.push_str(&format!(
            "\n{:<6}{:<10}{:<10}{}",
            n.id.0,
            n.state.name(),
            n.replicas,
            n.leaders
        ));
    }
    out.push_str(&format!(
        "\nper live node: replicas {:.2} on average, leaderships {:.2}",
        a.replicas_mean, a.leaders_mean
    ));
    if a.balanced() {
        out.push_str("\nbalanced: every shard has its voters on live nodes; replicas and leaders per live node are within one of the mean");
        return out;
    }
    let shards = |list: &[ShardId]| {
        list.iter()
            .map(|&s| shard_name(s, true))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut why = Vec::new();
    if a.replicas_not_live > 0 {
        why.push(format!(
            "{} replicas on nodes not live",
            a.replicas_not_live
        ));
    }
    if a.replicas_over > 0 {
        why.push(format!(
            "{} replicas above the mean's ceiling",
            a.replicas_over
        ));
    }
    if a.leaders_over > 0 {
        why.push(format!(
            "{} leaderships above the mean's ceiling",
            a.leaders_over
        ));
    }
    if a.leaders_misplaced > 0 {
        why.push(format!(
            "{} shards not led by their first live voter (leaders = \"pack\")",
            a.leaders_misplaced
        ));
    }
    if !a.short_shards.is_empty() {
        why.push(format!(
            "shards short of live voters: {}",
            shards(&a.short_shards)
        ));
    }
    if !a.miscounted_shards.is_empty() {
        why.push(format!(
            "shards with another voter count than the replication factor: {}",
            shards(&a.miscounted_shards)
        ));
    }
    if !a.moving_shards.is_empty() {
        why.push(format!("moves in flight: {}", shards(&a.moving_shards)));
    }
    if why.is_empty() {
        why.push("replicas or leaders per live node more than one from the mean".into());
    }
    out.push_str(&format!("\nnot balanced: {}", why.join("; ")));
    out
}

fn move_json(m: &Move) -> Value {
    json!({
        "shard": m.shard.0,
        "from": m.from.0,
        "to": m.to.0,
        "reason": reason_name(m.reason),
    })
}

fn transfer_json(t: &LeaderTransfer) -> Value {
    json!({"shard": t.shard.0, "from": t.from.0, "to": t.to.0})
}

fn stuck_json(s: &Stuck) -> Value {
    json!({
        "shard": s.shard.0,
        "node": s.node.map(|n| n.0),
        "reason": s.reason.to_string(),
    })
}

fn plan_json(p: &Plan) -> Value {
    json!({
        "moves": p.moves.iter().map(move_json).collect::<Vec<_>>(),
        "leader_transfers": p.leader_transfers.iter().map(transfer_json).collect::<Vec<_>>(),
        "stuck": p.stuck.iter().map(stuck_json).collect::<Vec<_>>(),
    })
}

fn assessment_json(a: &Assessment) -> Value {
    let ids = |list: &[kv_shared::ShardId]| list.iter().map(|s| s.0).collect::<Vec<_>>();
    json!({
        "balanced": a.balanced(),
        "nodes": a.nodes.iter().map(|n| json!({
            "node": n.id.0,
            "state": n.state.name(),
            "replicas": n.replicas,
            "leads": n.leaders,
        })).collect::<Vec<_>>(),
        "replicas_mean": a.replicas_mean,
        "leaders_mean": a.leaders_mean,
        "replicas_not_live": a.replicas_not_live,
        "replicas_over": a.replicas_over,
        "leaders_over": a.leaders_over,
        "leaders_misplaced": a.leaders_misplaced,
        "short_shards": ids(&a.short_shards),
        "miscounted_shards": ids(&a.miscounted_shards),
        "moving_shards": ids(&a.moving_shards),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::tests::{JSON, PLAIN};
    use kv_shared::balance::{assess, plan, Cluster, NodeInfo, ShardInfo};

    /// 4 nodes, R = 3, 4 shards all on nodes 1-3 and led by node 1; node 3 draining.
    fn cluster() -> Cluster {
        let state = |id| {
            if id == 3 {
                NodeState::Draining
            } else {
                NodeState::Live
            }
        };
        Cluster {
            nodes: (1..=4)
                .map(|id| NodeInfo {
                    id: NodeId(id),
                    state: state(id),
                })
                .collect(),
            shards: (0..4)
                .map(|s| ShardInfo {
                    shard: ShardId(s),
                    voters: vec![NodeId(1), NodeId(2), NodeId(3)],
                    learners: vec![],
                    leader: Some(NodeId(1)),
                    avoid: vec![],
                })
                .collect(),
            replication: 3,
            leaders: kv_shared::config::LeaderPolicy::Spread,
        }
    }

    #[test]
    fn status_shows_each_node_the_verdict_and_the_next_round() {
        let c = cluster();
        let out = BalanceOutput::Status {
            balancer: Some(BalancerStatus {
                enabled: true,
                active_on: Some(NodeId(2)),
                moves_in_flight: 2,
                rounds: 7,
                last_round: (2, 0, 0),
                ..BalancerStatus::default()
            }),
            assessment: assess(&c),
            replication: 3,
            next: plan(&c, &[], 2),
        };
        let text = out.render(PLAIN);
        assert!(
            text.starts_with(
                "balancer: running on node 2 (the metadata leader); moves in flight: 2; 7 rounds"
            ),
            "{text}"
        );
        assert!(text.contains("3     draining  4         0"), "{text}");
        assert!(
            text.contains("not balanced: 4 replicas on nodes not live"),
            "{text}"
        );
        assert!(
            text.contains("next round: 2 moves, 0 leader transfers"),
            "{text}"
        );
        assert!(
            text.contains("move shard 0's replica from node 3 to node 4 (evacuate)"),
            "{text}"
        );
        assert_eq!(out.exit_code(), EXIT_NOT_FOUND_OR_MISMATCH);
        let v: Value = serde_json::from_str(&out.render(JSON)).unwrap();
        assert_eq!(v["balance"]["balanced"], false);
        assert_eq!(v["balance"]["replicas_not_live"], 4);
        assert_eq!(v["next"]["moves"][0]["from"], 3);
        assert_eq!(v["next"]["moves"][0]["reason"], "evacuate");
        assert_eq!(v["balancer"]["mode"], "running");
        assert_eq!(v["balancer"]["moves_in_flight"], 2);
        let paused = BalanceOutput::Paused(true).render(JSON);
        assert_eq!(paused, r#"{"balancer":"paused","result":"ok"}"#);
    }

    /// The metadata group moves like a shard under the id `u32::MAX`; the text names it.
    #[test]
    fn the_metadata_group_is_named_not_numbered() {
        let mut c = cluster();
        c.shards = vec![ShardInfo {
            shard: METADATA_SHARD,
            voters: vec![NodeId(1), NodeId(2), NodeId(3)],
            learners: vec![],
            leader: Some(NodeId(1)),
            avoid: vec![],
        }];
        let next = plan(&c, &[], 8);
        assert!(
            next.moves.iter().any(|m| m.shard == METADATA_SHARD),
            "{next:?}"
        );
        let out = BalanceOutput::Status {
            balancer: None,
            assessment: assess(&c),
            replication: 3,
            next,
        };
        let text = out.render(PLAIN);
        assert!(
            text.contains("move the metadata group's replica from node 3 to node 4 (evacuate)"),
            "{text}"
        );
        assert!(!text.contains(&u32::MAX.to_string()), "{text}");
        assert!(
            text.contains("shards short of live voters: the metadata group"),
            "{text}"
        );
        let t = LeaderTransfer {
            shard: METADATA_SHARD,
            from: NodeId(1),
            to: NodeId(4),
        };
        assert_eq!(
            transfer_text(&t),
            "the metadata group: leadership from node 1 to node 4"
        );
        assert_eq!(
            (shard_name(ShardId(3), false), shard_name(ShardId(3), true)),
            ("shard 3".to_string(), "s3".to_string())
        );
    }

    #[test]
    fn a_drain_reports_its_moves_and_exits_0() {
        let mut c = cluster();
        let rounds = kv_shared::balance::simulate(&c, 4, 10);
        for r in &rounds {
            c.apply(r);
        }
        let out = BalanceOutput::Driven(Driven {
            goal: Some((NodeId(3), NodeState::Draining)),
            by_balancer: false,
            elapsed: Duration::from_millis(2500),
            moves: vec![DoneMove {
                mv: rounds[0].moves[0],
                took: Duration::from_millis(1200),
            }],
            failed: vec![],
            leader_transfers: vec![],
            stuck: vec![],
            assessment: assess(&c),
        });
        let text = out.render(PLAIN);
        assert!(
            text.starts_with("OK: node 3 holds no replica and leads nothing, and is removed from the cluster; stop it (1 moves, 0 leader transfers, 0 failed moves retried, in 2.5 s)"),
            "{text}"
        );
        assert!(text.contains("shard 0: node 3 -> node 4 (1.2 s)"), "{text}");
        assert_eq!(out.exit_code(), EXIT_OK);
        let v: Value = serde_json::from_str(&out.render(JSON)).unwrap();
        assert_eq!(v["node"], 3);
        assert_eq!(v["node_state"], "draining");
        assert_eq!(
            (&v["registry_state"], &v["by"]),
            (&json!("removed"), &json!("kvcli"))
        );
        assert_eq!(v["moves"][0]["ms"], 1200);
    }

    #[test]
    fn a_dry_run_lists_rounds_until_balanced() {
        let c = cluster();
        let rounds = kv_shared::balance::simulate(&c, 2, 10);
        let mut end = c.clone();
        for r in &rounds {
            end.apply(r);
        }
        let out = BalanceOutput::DryRun {
            stuck: plan(&end, &[], 2).stuck,
            after: assess(&end),
            rounds,
        };
        let text = out.render(PLAIN);
        assert!(
            text.contains("round 1:") && text.contains("round 2:"),
            "{text}"
        );
        assert!(text.contains("leadership from node 1 to node"), "{text}");
        // Node 3 still counts as draining in the simulation: it ends empty.
        assert!(text.contains("3     draining  0         0"), "{text}");
        let v: Value = serde_json::from_str(&out.render(JSON)).unwrap();
        assert!(v["rounds"].as_array().unwrap().len() >= 2);
    }
}
