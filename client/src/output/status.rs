//! `kvcli status`: the nodes' status replies combined into one cluster view (each
//! replica's applied index as it reports it, what is wrong), and that view as tables or JSON.

use super::{paint, table, Style};
use crate::client::{NodeAddr, NodeReport};
use kv_shared::proto::{NodeStatus, Role, ShardRoute, ShardStatus};
use kv_shared::registry::NodeState;
use kv_shared::{NodeId, ShardId};
use serde_json::{json, Value};

/// One shard's row of the status table, combined from every node's report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardRow {
    /// The shard.
    pub shard: ShardId,
    /// The node that reports leading it with the highest term.
    pub leader: Option<NodeId>,
    /// Highest term reported.
    pub term: u64,
    /// The leader's commit index (else the highest reported).
    pub commit: u64,
    /// The leader's applied index (else the highest reported).
    pub applied: u64,
    /// Keys in the leader's state machine.
    pub keys: u64,
    /// Epoch of the newest replica set any node reported.
    pub epoch: u64,
    /// Voting replicas of that set.
    pub voters: Vec<NodeId>,
    /// Replicas being added (a move in flight).
    pub learners: Vec<NodeId>,
    /// Each replica (voters, then learners) and its applied index as that replica itself
    /// reports it; `None`: the replica did not answer, or holds no copy yet.
    pub replicas: Vec<(NodeId, Option<u64>)>,
    /// A majority of the voters answered.
    pub quorum: bool,
}

impl ShardRow {
    /// Fewer voters answered than the replica set has (a replica is down or lost).
    pub fn under_replicated(&self) -> bool {
        self.voters
            .iter()
            .any(|v| self.replicas.iter().any(|(r, a)| r == v && a.is_none()))
    }
}

/// One node's row: reachable or not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeRow {
    /// The node.
    pub node: NodeAddr,
    /// Round trip of the status request, if it answered.
    pub rtt_us: Option<u64>,
    /// Shards it leads.
    pub leads: usize,
    /// Peers and ms since last heard; or why it did not answer.
    pub detail: String,
    /// Datagrams (or requests) it dropped since it started, by reason.
    pub drops: Vec<(String, u64)>,
    /// Its counters and gauges as its `/metrics` names them (`NodeStatus::counters`).
    pub counters: Vec<(String, u64)>,
    /// The newest node registry any node answered with marks it removed (drained, or
    /// removed as dead): its silence is expected, not a node down.
    pub removed: bool,
}

/// The combined cluster status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterStatus {
    /// One row per shard.
    pub shards: Vec<ShardRow>,
    /// One row per node.
    pub nodes: Vec<NodeRow>,
    /// The metadata group's newest replica set any node reported (highest epoch; at
    /// equal epochs, one naming a leader), `None`: no node runs one.
    pub metadata: Option<ShardRoute>,
}

impl ClusterStatus {
    /// True if every shard has a leader and a quorum of answering voters.
    pub fn serving(&self) -> bool {
        self.shards.iter().all(|s| s.leader.is_some() && s.quorum)
    }

    /// Nodes that did not answer, removed ones aside.
    pub fn nodes_down(&self) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|n| n.rtt_us.is_none() && !n.removed)
            .map(|n| match n.node.id {
                Some(id) => id.to_string(),
                None => n.node.addr.to_string(),
            })
            .collect()
    }

    /// What is wrong, one line per kind of problem (empty when all is well).
    pub fn problems(&self) -> Vec<String> {
        let shards = |pick: &dyn Fn(&ShardRow) -> bool| -> String {
            self.shards
                .iter()
                .filter(|s| pick(s))
                .map(|s| format!("s{}", s.shard.0))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let lines = [
            ("nodes down", self.nodes_down().join(", ")),
            ("shards without quorum", shards(&|s| !s.quorum)),
            (
                "shards without a leader",
                shards(&|s| s.quorum && s.leader.is_none()),
            ),
            (
                "under-replicated shards",
                shards(&ShardRow::under_replicated),
            ),
            ("moves in flight", shards(&|s| !s.learners.is_empty())),
        ];
        lines
            .into_iter()
            .filter(|(_, list)| !list.is_empty())
            .map(|(what, list)| format!("{what}: {list}"))
            .collect()
    }
}

/// Combines the nodes' status replies into one table. A shard's replica set is the newest
/// (highest epoch) any node reported; each replica's applied index is the one it reported
/// itself, never another node's belief about it.
pub fn combine_status(reports: &[NodeReport], shard_count: u32) -> ClusterStatus {
    let answered: Vec<&NodeStatus> = reports
        .iter()
        .filter_map(|r| r.result.as_ref().ok().map(|(s, _)| s))
        .collect();
    let all_ids: Vec<NodeId> = reports
        .iter()
        .filter_map(|r| {
            r.node
                .id
                .or_else(|| r.result.as_ref().ok().map(|(s, _)| s.node))
        })
        .collect();
    let registry = answered
        .iter()
        .filter_map(|n| n.registry.as_deref())
        .max_by_key(|r| r.version);
    let removed = |id: Option<NodeId>| {
        id.and_then(|id| registry?.get(id))
            .is_some_and(|r| r.state == NodeState::Removed)
    };
    let mut shards = Vec::new();
    for shard in (0..shard_count).map(ShardId) {
        let views: Vec<(NodeId, &ShardStatus)> = answered
            .iter()
            .flat_map(|n| {
                n.shards
                    .iter()
                    .filter(|s| s.shard == shard)
                    .map(move |s| (n.node, s))
            })
            .collect();
        let route = answered
            .iter()
            .filter_map(|n| n.routes.iter().find(|r| r.shard == shard))
            .max_by_key(|r| r.epoch);
        let (epoch, voters, learners) = match route {
            Some(r) => (r.epoch, r.voters.clone(), r.learners.clone()),
            None => (0, all_ids.clone(), Vec::new()),
        };
        let own_applied = |id: &NodeId| views.iter().find(|(n, _)| n == id).map(|(_, s)| s.applied);
        let replicas: Vec<(NodeId, Option<u64>)> = voters
            .iter()
            .chain(&learners)
            .map(|id| (*id, own_applied(id)))
            .collect();
        let answering_voters = voters.iter().filter(|v| own_applied(v).is_some()).count();
        let quorum = answering_voters > voters.len() / 2;
        let leader_view = views
            .iter()
            .filter(|(_, s)| s.role == Role::Leader)
            .max_by_key(|(_, s)| s.term);
        let term = views.iter().map(|(_, s)| s.term).max().unwrap_or(0);
        let max_of = |f: fn(&ShardStatus) -> u64| views.iter().map(|(_, s)| f(s)).max();
        let (leader, commit, applied, keys) = match leader_view {
            Some((leader, lv)) => (Some(*leader), lv.commit, lv.applied, lv.keys),
            None => (
                None,
                max_of(|s| s.commit).unwrap_or(0),
                max_of(|s| s.applied).unwrap_or(0),
                max_of(|s| s.keys).unwrap_or(0),
            ),
        };
        shards.push(ShardRow {
            shard,
            leader,
            term,
            commit,
            applied,
            keys,
            epoch,
            voters,
            learners,
            replicas,
            quorum,
        });
    }
    let nodes = reports
        .iter()
        .map(|r| match &r.result {
            Ok((s, rtt)) => NodeRow {
                node: NodeAddr {
                    id: Some(s.node),
                    addr: r.node.addr,
                },
                rtt_us: Some(rtt.as_micros() as u64),
                leads: s.shards.iter().filter(|x| x.role == Role::Leader).count(),
                detail: s
                    .peers
                    .iter()
                    .map(|(p, ms)| match ms {
                        Some(ms) => format!("n{} {ms} ms", p.0),
                        None => format!("n{} never", p.0),
                    })
                    .chain(
                        s.refused
                            .iter()
                            .filter(|(_, n)| *n > 0)
                            .map(|(reason, n)| format!("refused {reason} {n}")),
                    )
                    .collect::<Vec<_>>()
                    .join(", "),
                drops: s.drops.clone(),
                counters: s.counters.clone(),
                removed: removed(Some(s.node)),
            },
            Err(why) => NodeRow {
                node: r.node,
                rtt_us: None,
                leads: 0,
                detail: why.clone(),
                drops: Vec::new(),
                counters: Vec::new(),
                removed: removed(r.node.id),
            },
        })
        .collect();
    let metadata = answered
        .iter()
        .filter_map(|n| n.metadata.as_deref())
        .max_by_key(|r| (r.epoch, r.leader.is_some()))
        .cloned();
    ClusterStatus {
        shards,
        nodes,
        metadata,
    }
}

/// The nonzero counts as `name=count`, space-separated, each name shown by `show`.
fn nonzero_counts(counts: &[(String, u64)], show: impl Fn(&str) -> String) -> String {
    counts
        .iter()
        .filter(|(_, c)| *c > 0)
        .map(|(name, c)| format!("{}={c}", show(name)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A per-node row: the node's id ("?" when it did not say) and one cell.
fn node_row(n: &NodeRow, cell: String) -> Vec<String> {
    vec![
        n.node.id.map_or_else(|| "?".into(), |i| i.to_string()),
        cell,
    ]
}

/// The metadata group's line under the shard table: its voters (the node registry
/// survives fewer than half of them failing), learners, leader and epoch.
fn metadata_line(m: &ShardRoute) -> String {
    let ids = |v: &[NodeId]| {
        v.iter()
            .map(|n| n.to_string())
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut line = format!("metadata group: voters {}", ids(&m.voters));
    if !m.learners.is_empty() {
        line.push_str(&format!(" +learners {}", ids(&m.learners)));
    }
    let leader = m.leader.map_or_else(|| "none".into(), |l| l.to_string());
    line.push_str(&format!(", leader {leader}, epoch {}", m.epoch));
    line
}

/// A node's STATE cell: `removed` for a node the registry removed (answering or not:
/// a drained node stops itself once it hears it was removed), else whether it answered.
fn node_state(n: &NodeRow) -> &'static str {
    match (n.removed, n.rtt_us.is_some()) {
        (true, _) => "removed",
        (false, true) => "up",
        (false, false) => "unreachable",
    }
}

/// The status tables, shards (and the metadata group's line) then nodes.
pub fn render_status(s: &ClusterStatus, style: Style) -> String {
    let shard_rows: Vec<Vec<String>> = s
        .shards
        .iter()
        .map(|r| {
            vec![
                format!("s{}", r.shard.0),
                r.leader
                    .map(|l| l.to_string())
                    .unwrap_or_else(|| "none".into()),
                r.term.to_string(),
                format!("{}/{}", r.commit, r.applied),
                r.keys.to_string(),
                r.epoch.to_string(),
                r.replicas
                    .iter()
                    .map(|(id, applied)| {
                        let learner = if r.learners.contains(id) { "+" } else { "" };
                        let applied = applied.map_or_else(|| "unknown".into(), |a| a.to_string());
                        format!("{learner}{id}:{applied}")
                    })
                    .collect::<Vec<_>>()
                    .join(" "),
            ]
        })
        .collect();
    let shards = table(
        &[
            "SHARD",
            "LEADER",
            "TERM",
            "COMMIT/APPLIED",
            "KEYS",
            "EPOCH",
            "REPLICAS (applied, as each reports it; +learner)",
        ],
        &shard_rows,
        |col, raw, padded| {
            if col == 1 && raw == "none" {
                paint(style, "31", &padded)
            } else {
                padded
            }
        },
    );
    let node_rows: Vec<Vec<String>> = s
        .nodes
        .iter()
        .map(|n| {
            vec![
                n.node
                    .id
                    .map(|i| i.to_string())
                    .unwrap_or_else(|| "?".into()),
                n.node.addr.to_string(),
                node_state(n).into(),
                n.rtt_us
                    .map(|us| format!("{:.1} ms", us as f64 / 1000.0))
                    .unwrap_or_else(|| "-".into()),
                if n.rtt_us.is_some() {
                    n.leads.to_string()
                } else {
                    "-".into()
                },
                n.detail.clone(),
            ]
        })
        .collect();
    let nodes = table(
        &[
            "NODE",
            "ADDRESS",
            "STATE",
            "RTT",
            "LEADS",
            "PEERS (last heard) / PROBLEM",
        ],
        &node_rows,
        |col, raw, padded| match (col, raw) {
            (2, "up") => paint(style, "32", &padded),
            (2, "unreachable") => paint(style, "31", &padded),
            _ => padded,
        },
    );
    // Only nodes that answered, and only the reasons that counted something.
    let drop_rows: Vec<Vec<String>> = s
        .nodes
        .iter()
        .filter(|n| n.rtt_us.is_some())
        .map(|n| {
            let counted = nonzero_counts(&n.drops, |reason| reason.to_string());
            node_row(
                n,
                if counted.is_empty() {
                    "none".into()
                } else {
                    counted
                },
            )
        })
        .collect();
    let mut out = shards;
    if let Some(m) = &s.metadata {
        out.push('\n');
        out.push_str(&metadata_line(m));
    }
    out.push_str("\n\n");
    out.push_str(&nodes);
    for p in s.problems() {
        out.push('\n');
        out.push_str(&paint(style, "31", &p));
    }
    if !drop_rows.is_empty() {
        let drops = table(
            &["NODE", "DROPPED SINCE START (by reason)"],
            &drop_rows,
            |_, _, padded| padded,
        );
        out.push_str("\n\n");
        out.push_str(&drops);
    }
    let counter_rows: Vec<Vec<String>> = s
        .nodes
        .iter()
        .filter(|n| !n.counters.is_empty())
        .map(|n| node_row(n, nonzero_counts(&n.counters, short_counter_name)))
        .collect();
    if !counter_rows.is_empty() {
        let counters = table(
            &["NODE", "COUNTERS SINCE START (as /metrics names them, raftkv_ and _total cut; zeros left out)"],
            &counter_rows,
            |_, _, padded| padded,
        );
        out.push_str("\n\n");
        out.push_str(&counters);
    }
    out
}

/// A `/metrics` series name made short for the status table: without the `raftkv_`
/// prefix and the `_total` suffix, label values only (`requests{resp,get,ok}`).
fn short_counter_name(series: &str) -> String {
    let (name, labels) = series.split_once('{').unwrap_or((series, ""));
    let name = name.strip_prefix("raftkv_").unwrap_or(name);
    let name = name.strip_suffix("_total").unwrap_or(name);
    let values: Vec<&str> = labels
        .trim_end_matches('}')
        .split(',')
        .filter_map(|pair| pair.split_once('=').map(|(_, v)| v.trim_matches('"')))
        .collect();
    if values.is_empty() {
        name.to_string()
    } else {
        format!("{name}{{{}}}", values.join(","))
    }
}

pub(super) fn status_json(s: &ClusterStatus) -> Value {
    json!({
        "result": "ok",
        "shards": s.shards.iter().map(|r| json!({
            "shard": r.shard.0,
            "leader": r.leader.map(|l| l.0),
            "term": r.term,
            "commit": r.commit,
            "applied": r.applied,
            "keys": r.keys,
            "epoch": r.epoch,
            "voters": r.voters.iter().map(|v| v.0).collect::<Vec<_>>(),
            "learners": r.learners.iter().map(|v| v.0).collect::<Vec<_>>(),
            "replicas": r.replicas.iter().map(|(id, a)| json!({"node": id.0, "applied": a})).collect::<Vec<_>>(),
            "quorum": r.quorum,
            "under_replicated": r.under_replicated(),
        })).collect::<Vec<_>>(),
        "serving": s.serving(),
        "problems": s.problems(),
        // The metadata group (node registry) moves like a shard; null: none runs.
        "metadata": s.metadata.as_ref().map(|m| json!({
            "leader": m.leader.map(|l| l.0),
            "epoch": m.epoch,
            "voters": m.voters.iter().map(|v| v.0).collect::<Vec<_>>(),
            "learners": m.learners.iter().map(|v| v.0).collect::<Vec<_>>(),
        })),
        "nodes": s.nodes.iter().map(|n| json!({
            "node": n.node.id.map(|i| i.0),
            "addr": n.node.addr.to_string(),
            "reachable": n.rtt_us.is_some(),
            "removed": n.removed,
            "rtt_us": n.rtt_us,
            "leads": n.leads,
            "detail": n.detail,
            "drops": n.drops.iter().map(|(reason, c)| (reason.clone(), json!(c))).collect::<serde_json::Map<_, _>>(),
            "counters": n.counters.iter().map(|(name, c)| (name.clone(), json!(c))).collect::<serde_json::Map<_, _>>(),
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::tests::{JSON, PLAIN};
    use crate::output::{render, CmdOutput};
    use std::time::Duration;

    fn shard_status(
        shard: u32,
        role: Role,
        term: u64,
        leader: u64,
        commit: u64,
        replicas: Vec<(NodeId, u64)>,
    ) -> ShardStatus {
        ShardStatus {
            shard: ShardId(shard),
            role,
            term,
            leader: Some(NodeId(leader)),
            commit,
            applied: commit,
            log_entries: commit,
            snapshot_index: 0,
            keys: 5,
            epoch: 0,
            replicas,
        }
    }

    fn route(shard: u32, epoch: u64, voters: &[u64], learners: &[u64]) -> ShardRoute {
        ShardRoute {
            shard: ShardId(shard),
            epoch,
            voters: voters.iter().copied().map(NodeId).collect(),
            learners: learners.iter().copied().map(NodeId).collect(),
            leader: None,
        }
    }

    fn addr(id: u64) -> NodeAddr {
        NodeAddr {
            id: Some(NodeId(id)),
            addr: format!("127.0.0.1:710{id}").parse().unwrap(),
        }
    }

    /// n1 leads s0 and believes every follower caught up; n2 answers with its own
    /// (lower) applied index; n3 is down; s1 moves to n4 (a learner that has not
    /// answered), and n1 holds an older view of s1's replica set than n2.
    fn reports() -> Vec<NodeReport> {
        let n1 = NodeStatus {
            node: NodeId(1),
            shard_count: 2,
            shards: vec![
                shard_status(
                    0,
                    Role::Leader,
                    3,
                    1,
                    100,
                    vec![(NodeId(1), 100), (NodeId(2), 100), (NodeId(3), 100)],
                ),
                shard_status(1, Role::Follower, 2, 2, 40, vec![]),
            ],
            peers: vec![(NodeId(2), Some(12)), (NodeId(3), None)],
            refused: vec![],
            drops: vec![("bad_tag".into(), 3), ("replayed".into(), 0)],
            counters: vec![
                (
                    "raftkv_requests_total{front_end=\"resp\",op=\"get\",result=\"ok\"}".into(),
                    12,
                ),
                ("raftkv_snapshots_sent_total".into(), 0),
                ("raftkv_pending_requests".into(), 2),
            ],
            nodes: vec![],
            routes: vec![route(0, 0, &[1, 2, 3], &[]), route(1, 0, &[1, 2, 3], &[])],
            registry: None,
            metadata: None,
        };
        let mut n2 = n1.clone();
        n2.node = NodeId(2);
        n2.shards = vec![
            shard_status(0, Role::Follower, 3, 1, 90, vec![]),
            shard_status(1, Role::Follower, 2, 2, 38, vec![]),
        ];
        n2.peers = vec![(NodeId(1), Some(3)), (NodeId(3), None)];
        n2.routes = vec![route(0, 0, &[1, 2, 3], &[]), route(1, 7, &[1, 2, 3], &[4])];
        vec![
            NodeReport {
                node: addr(1),
                result: Ok((n1, Duration::from_micros(400))),
            },
            NodeReport {
                node: addr(2),
                result: Ok((n2, Duration::from_micros(600))),
            },
            NodeReport {
                node: addr(3),
                result: Err("no answer in 1000 ms".into()),
            },
        ]
    }

    #[test]
    fn status_names_the_metadata_groups_voters_under_the_shards() {
        let mut m = route(u32::MAX, 12, &[1, 2, 3, 4, 5], &[]);
        m.leader = Some(NodeId(2));
        let line = "metadata group: voters n1 n2 n3 n4 n5, leader n2, epoch 12";
        assert_eq!(metadata_line(&m), line);
        let mut s = combine_status(&reports(), 2);
        s.metadata = Some(m);
        let text = render_status(&s, PLAIN);
        assert!(
            text.contains(&format!("+n4:unknown\n{line}\n\nNODE")),
            "{text}"
        );
        let learning = route(u32::MAX, 13, &[1, 2, 3], &[4]);
        assert_eq!(
            metadata_line(&learning),
            "metadata group: voters n1 n2 n3 +learners n4, leader none, epoch 13"
        );
    }

    #[test]
    fn status_shows_each_replicas_own_applied_index_and_what_is_wrong() {
        let s = combine_status(&reports(), 2);
        assert_eq!(s.shards[0].leader, Some(NodeId(1)));
        assert_eq!(
            s.shards[0].replicas,
            vec![
                (NodeId(1), Some(100)),
                (NodeId(2), Some(90)),
                (NodeId(3), None)
            ],
            "applied as each replica reports it, not the leader's belief"
        );
        assert!(s.shards[0].quorum && s.shards[0].under_replicated());
        assert_eq!(s.shards[1].leader, None, "no node claims to lead s1");
        assert_eq!(s.shards[1].epoch, 7, "the newest replica set wins");
        assert_eq!(s.shards[1].learners, vec![NodeId(4)]);
        assert!(!s.serving());
        let text = render_status(&s, PLAIN);
        let expected = "\
SHARD  LEADER  TERM  COMMIT/APPLIED  KEYS  EPOCH  REPLICAS (applied, as each reports it; +learner)
s0     n1      3     100/100         5     0      n1:100 n2:90 n3:unknown
s1     none    2     40/40           5     7      n1:40 n2:38 n3:unknown +n4:unknown

NODE  ADDRESS         STATE        RTT     LEADS  PEERS (last heard) / PROBLEM
n1    127.0.0.1:7101  up           0.4 ms  1      n2 12 ms, n3 never
n2    127.0.0.1:7102  up           0.6 ms  0      n1 3 ms, n3 never
n3    127.0.0.1:7103  unreachable  -       -      no answer in 1000 ms
nodes down: n3
shards without a leader: s1
under-replicated shards: s0, s1
moves in flight: s1

NODE  DROPPED SINCE START (by reason)
n1    bad_tag=3
n2    bad_tag=3

NODE  COUNTERS SINCE START (as /metrics names them, raftkv_ and _total cut; zeros left out)
n1    requests{resp,get,ok}=12 pending_requests=2
n2    requests{resp,get,ok}=12 pending_requests=2";
        assert_eq!(text, expected);
        let coloured = render_status(
            &s,
            Style {
                json: false,
                colour: true,
            },
        );
        assert!(coloured.contains("\x1b[31mnone  \x1b[0m"), "{coloured}");
        assert_eq!(CmdOutput::Status(s.clone()).exit_code(), 1);
        let j = render(&CmdOutput::Status(s), JSON);
        let v: Value = serde_json::from_str(&j).unwrap();
        assert_eq!(v["nodes"][0]["drops"]["bad_tag"], 3);
        assert_eq!(v["nodes"][0]["drops"]["replayed"], 0);
        assert_eq!(
            v["nodes"][0]["counters"]
                ["raftkv_requests_total{front_end=\"resp\",op=\"get\",result=\"ok\"}"],
            12
        );
        assert_eq!(v["nodes"][0]["counters"]["raftkv_snapshots_sent_total"], 0);
        assert_eq!(v["nodes"][2]["reachable"], false);
        assert_eq!(v["shards"][0]["replicas"][1]["applied"], 90);
        assert_eq!(v["shards"][0]["replicas"][2]["applied"], Value::Null);
        assert_eq!(v["shards"][1]["learners"][0], 4);
        assert_eq!(v["serving"], false);
        assert_eq!(v["problems"][0], "nodes down: n3");
    }

    /// Two of three nodes down: the survivor still calls itself leader, but the shard
    /// has no quorum, and status says so and exits 1.
    #[test]
    fn a_lone_survivor_is_no_quorum() {
        let mut r = reports();
        r[1].result = Err("no answer in 1000 ms".into());
        let s = combine_status(&r, 2);
        assert_eq!(s.shards[0].leader, Some(NodeId(1)));
        assert!(!s.shards[0].quorum);
        assert_eq!(s.problems()[1], "shards without quorum: s0, s1");
        assert_eq!(CmdOutput::Status(s).exit_code(), 1);
    }

    /// A node the registry marks removed (drained, or removed as dead) is silent by
    /// design: status shows it `removed` and not among the nodes down, by the newest
    /// registry any node answered with.
    #[test]
    fn a_removed_node_is_not_a_node_down() {
        use kv_shared::registry::{NodeRecord, Registry};
        let registry = |version, n3: NodeState| Registry {
            version,
            nodes: (1..=3)
                .map(|id| NodeRecord {
                    id: NodeId(id),
                    addr: addr(id).addr,
                    state: if id == 3 { n3 } else { NodeState::Active },
                    identity: id,
                })
                .collect(),
            balancer_paused: false,
        };
        let mut r = reports();
        if let Ok((s, _)) = &mut r[0].result {
            s.registry = Some(Box::new(registry(4, NodeState::Active)));
        }
        assert_eq!(combine_status(&r, 2).nodes_down(), vec!["n3".to_string()]);
        if let Ok((s, _)) = &mut r[1].result {
            s.registry = Some(Box::new(registry(9, NodeState::Removed)));
        }
        let s = combine_status(&r, 2);
        assert!(s.nodes[2].removed && !s.nodes[0].removed);
        assert!(s.nodes_down().is_empty(), "{:?}", s.nodes_down());
        let text = render_status(&s, PLAIN);
        assert!(
            text.contains("n3    127.0.0.1:7103  removed  -       -      no answer in 1000 ms\n"),
            "{text}"
        );
        assert!(!text.contains("nodes down"), "{text}");
        let v: Value = serde_json::from_str(&render(&CmdOutput::Status(s), JSON)).unwrap();
        assert_eq!(v["nodes"][2]["removed"], true);
        assert_eq!(v["nodes"][0]["removed"], false);
    }
}
