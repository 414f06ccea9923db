//! `kvcli node list`: the cluster's nodes as the node registry lists them (the newest
//! registry any node answered with), with what each node holds and leads as the nodes
//! report it, and whether it answered.

use crate::client::NodeReport;
use kv_shared::proto::Role;
use kv_shared::registry::{NodeState, Registry};
use kv_shared::{NodeId, ShardId};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::net::SocketAddr;

/// One node of the list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeListRow {
    /// The node.
    pub id: NodeId,
    /// Its address (the registry's, else the one it was reached at).
    pub addr: Option<SocketAddr>,
    /// Its registry state (`None`: not registered, or no registry heard).
    pub state: Option<NodeState>,
    /// Its data directory's identity as registered.
    pub identity: Option<u64>,
    /// Shards whose newest known replica set lists it (voter or learner).
    pub replicas: usize,
    /// Shards it leads, as it reports them itself (0 when it did not answer).
    pub leaders: usize,
    /// It answered the status request.
    pub reachable: bool,
}

/// The node list: every node any answer or the registry names, ascending by id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeList {
    /// The version of the registry shown (`None`: no node knew one).
    pub registry_version: Option<u64>,
    /// The nodes.
    pub rows: Vec<NodeListRow>,
}

/// Builds the node list from one round of status replies.
pub fn node_list(reports: &[NodeReport]) -> NodeList {
    let answers: Vec<_> = reports
        .iter()
        .filter_map(|r| r.result.as_ref().ok().map(|(s, _)| (r.node.addr, s)))
        .collect();
    let registry: Option<&Registry> = answers
        .iter()
        .filter_map(|(_, s)| s.registry.as_deref())
        .max_by_key(|r| r.version);
    let mut rows: BTreeMap<NodeId, NodeListRow> = BTreeMap::new();
    for r in registry.iter().flat_map(|r| &r.nodes) {
        let row = row(&mut rows, r.id);
        row.addr = Some(r.addr);
        row.state = Some(r.state);
        row.identity = Some(r.identity);
    }
    for report in reports {
        if let Some(id) = report.node.id {
            row(&mut rows, id).addr.get_or_insert(report.node.addr);
        }
    }
    // Each shard's newest replica set, by epoch, over every answer.
    let mut routes: BTreeMap<ShardId, &kv_shared::proto::ShardRoute> = BTreeMap::new();
    for (addr, status) in &answers {
        let answering = row(&mut rows, status.node);
        answering.reachable = true;
        answering.addr.get_or_insert(*addr);
        answering.leaders = status
            .shards
            .iter()
            .filter(|s| s.role == Role::Leader)
            .count();
        for route in &status.routes {
            let newer = routes
                .get(&route.shard)
                .is_none_or(|have| route.epoch > have.epoch);
            if newer {
                routes.insert(route.shard, route);
            }
        }
    }
    for route in routes.values() {
        for id in route.voters.iter().chain(&route.learners) {
            row(&mut rows, *id).replicas += 1;
        }
    }
    NodeList {
        registry_version: registry.map(|r| r.version),
        rows: rows.into_values().collect(),
    }
}

/// The row of `id`, made empty if missing.
fn row(rows: &mut BTreeMap<NodeId, NodeListRow>, id: NodeId) -> &mut NodeListRow {
    rows.entry(id).or_insert(NodeListRow {
        id,
        addr: None,
        state: None,
        identity: None,
        replicas: 0,
        leaders: 0,
        reachable: false,
    })
}

/// The node list as a table.
pub fn render_node_list(list: &NodeList, paint_unreachable: impl Fn(&str) -> String) -> String {
    let rows: Vec<Vec<String>> = list
        .rows
        .iter()
        .map(|r| {
            vec![
                r.id.0.to_string(),
                r.addr.map_or_else(|| "?".into(), |a| a.to_string()),
                r.state
                    .map_or_else(|| "unregistered".into(), |s| s.name().to_string()),
                r.identity
                    .map_or_else(|| "-".into(), |i| format!("{i:016x}")),
                r.replicas.to_string(),
                r.leaders.to_string(),
                if r.reachable { "yes" } else { "no" }.to_string(),
            ]
        })
        .collect();
    let headers = [
        "node",
        "address",
        "state",
        "identity",
        "replicas",
        "leaders",
        "reachable",
    ];
    let mut out = crate::output::table(&headers, &rows, |col, raw, padded| {
        if col == 6 && raw == "no" {
            paint_unreachable(&padded)
        } else {
            padded
        }
    });
    out.push('\n');
    out.push_str(&match list.registry_version {
        Some(v) => format!("registry version {v}"),
        None => "no node knows a registry yet (the metadata group has registered nobody)".into(),
    });
    out
}

/// The node list as JSON.
pub fn node_list_json(list: &NodeList) -> Value {
    let nodes: Vec<Value> = list
        .rows
        .iter()
        .map(|r| {
            json!({
                "id": r.id.0,
                "addr": r.addr.map(|a| a.to_string()),
                "state": r.state.map(NodeState::name),
                "identity": r.identity.map(|i| format!("{i:016x}")),
                "replicas": r.replicas,
                "leaders": r.leaders,
                "reachable": r.reachable,
            })
        })
        .collect();
    json!({"result": "ok", "registry_version": list.registry_version, "nodes": nodes})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::NodeAddr;
    use kv_shared::proto::{NodeStatus, ShardRoute, ShardStatus};
    use kv_shared::registry::NodeRecord;
    use std::time::Duration;

    fn addr(n: u64) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 7100 + n as u16))
    }

    fn route(shard: u32, epoch: u64, voters: &[u64], learners: &[u64]) -> ShardRoute {
        ShardRoute {
            shard: ShardId(shard),
            epoch,
            voters: voters.iter().map(|&v| NodeId(v)).collect(),
            learners: learners.iter().map(|&v| NodeId(v)).collect(),
            leader: None,
        }
    }

    fn leader_row(shard: u32) -> ShardStatus {
        ShardStatus {
            shard: ShardId(shard),
            role: Role::Leader,
            term: 2,
            leader: None,
            commit: 5,
            applied: 5,
            log_entries: 5,
            snapshot_index: 0,
            keys: 0,
            epoch: 0,
            replicas: Vec::new(),
        }
    }

    fn registry(version: u64, ids: &[u64]) -> Registry {
        Registry {
            version,
            nodes: ids
                .iter()
                .map(|&id| NodeRecord {
                    id: NodeId(id),
                    addr: addr(id),
                    state: NodeState::Active,
                    identity: 0xa0 + id,
                })
                .collect(),
            balancer_paused: false,
        }
    }

    fn answer(node: u64, shards_led: &[u32], reg: Option<Registry>) -> NodeReport {
        NodeReport {
            node: NodeAddr {
                id: Some(NodeId(node)),
                addr: addr(node),
            },
            result: Ok((
                NodeStatus {
                    node: NodeId(node),
                    shard_count: 2,
                    shards: shards_led.iter().map(|&s| leader_row(s)).collect(),
                    peers: Vec::new(),
                    refused: Vec::new(),
                    drops: Vec::new(),
                    counters: Vec::new(),
                    nodes: Vec::new(),
                    routes: vec![route(0, 0, &[1, 2, 3], &[]), route(1, 9, &[1, 2, 4], &[3])],
                    registry: reg.map(Box::new),
                    metadata: None,
                },
                Duration::from_millis(1),
            )),
        }
    }

    #[test]
    fn the_list_shows_the_newest_registry_holdings_leaders_and_reachability() {
        let silent = NodeReport {
            node: NodeAddr {
                id: Some(NodeId(3)),
                addr: addr(3),
            },
            result: Err("no answer in 1000 ms".into()),
        };
        let reports = [
            answer(1, &[0], Some(registry(4, &[1, 2, 3]))),
            answer(2, &[], Some(registry(7, &[1, 2, 3, 4]))),
            answer(4, &[1], None),
            silent,
        ];
        let list = node_list(&reports);
        assert_eq!(list.registry_version, Some(7));
        let summary: Vec<(u64, Option<NodeState>, usize, usize, bool)> = list
            .rows
            .iter()
            .map(|r| (r.id.0, r.state, r.replicas, r.leaders, r.reachable))
            .collect();
        let active = Some(NodeState::Active);
        assert_eq!(
            summary,
            [
                (1, active, 2, 1, true),
                (2, active, 2, 0, true),
                (3, active, 2, 0, false),
                (4, active, 1, 1, true),
            ]
        );
        let text = render_node_list(&list, |s| format!("<{s}>"));
        assert!(
            text.lines().next().unwrap().starts_with("node  address"),
            "{text}"
        );
        assert!(text.contains("<no>"), "{text}");
        assert!(text.contains("00000000000000a4"), "{text}");
        assert!(text.ends_with("registry version 7"), "{text}");
        let j = node_list_json(&list);
        assert_eq!(j["registry_version"], 7);
        assert_eq!(j["nodes"][3]["id"], 4);
        assert_eq!(j["nodes"][3]["state"], "active");
        assert_eq!(j["nodes"][2]["reachable"], false);
    }

    #[test]
    fn without_a_registry_nodes_show_unregistered() {
        let list = node_list(&[answer(1, &[], None)]);
        assert_eq!(list.registry_version, None);
        assert_eq!(list.rows[0].state, None);
        let text = render_node_list(&list, str::to_string);
        assert!(text.contains("unregistered") && text.contains("no node knows a registry"));
    }
}
