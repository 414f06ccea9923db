//! What the elastic-cluster tests share: nodes joining on other loopback addresses, and
//! whether `kvcli --json status` shows the cluster balanced, judged here from the shard
//! rows (replica sets, leaders, reachable nodes), not from kvcli's own verdict.

use crate::cli;
use crate::cluster::Cluster;
use kv_shared::NodeId;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// How long a node may take to register and be listed active and reachable.
pub const JOIN_TIMEOUT: Duration = Duration::from_secs(30);
/// One kvcli `status` or `node list`.
const CLI_TIMEOUT: Duration = Duration::from_secs(30);

/// `kvcli --json status` (exit 0 or 1: a shard may be between leaders).
pub fn status(config: &str) -> Value {
    let run = cli::with_cluster(config, &["--json", "status"], CLI_TIMEOUT);
    assert!(matches!(run.code, Some(0 | 1)), "status: {run:?}");
    cli::json_of(&run)
}

/// The nodes `status` found reachable.
pub fn reachable(status: &Value) -> BTreeSet<u64> {
    status["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .filter(|n| n["reachable"] == true)
        .map(|n| n["node"].as_u64().expect("node id"))
        .collect()
}

/// Replicas (voters and learners) and leaderships per node, counted from the shard rows.
pub fn shares(status: &Value) -> (BTreeMap<u64, usize>, BTreeMap<u64, usize>) {
    let (mut replicas, mut leaders) = (BTreeMap::new(), BTreeMap::new());
    for row in status["shards"].as_array().expect("shards") {
        for n in cli::node_ids(&row["voters"])
            .into_iter()
            .chain(cli::node_ids(&row["learners"]))
        {
            *replicas.entry(n).or_default() += 1;
        }
        if let Some(l) = row["leader"].as_u64() {
            *leaders.entry(l).or_default() += 1;
        }
    }
    (replicas, leaders)
}

/// Why `status` is not balanced over exactly the nodes `live`, if it is not: `shards`
/// rows, each with `replication` voters, all live, no learner and a leader among its
/// voters; replicas and leaders per live node within one of the mean (strictly less
/// than 1 away, as the planner means it).
pub fn unbalanced(
    status: &Value,
    live: &BTreeSet<u64>,
    shards: u32,
    replication: usize,
) -> Option<String> {
    let answering = reachable(status);
    if &answering != live {
        return Some(format!("reachable nodes {answering:?}, expected {live:?}"));
    }
    let rows = status["shards"].as_array().expect("shards");
    if rows.len() != shards as usize {
        return Some(format!("{} shard rows, expected {shards}", rows.len()));
    }
    for row in rows {
        let voters = cli::node_ids(&row["voters"]);
        let leader = row["leader"].as_u64();
        let ok = voters.len() == replication
            && voters.iter().all(|v| live.contains(v))
            && cli::node_ids(&row["learners"]).is_empty()
            && leader.is_some_and(|l| voters.contains(&l));
        if !ok {
            return Some(format!("shard row {row}"));
        }
    }
    let (replicas, leaders) = shares(status);
    for (what, counts) in [("replicas", &replicas), ("leaders", &leaders)] {
        let total: usize = counts.values().sum();
        let mean = total as f64 / live.len() as f64;
        for n in live {
            let got = counts.get(n).copied().unwrap_or(0);
            if (got as f64 - mean).abs() >= 1.0 {
                return Some(format!(
                    "node {n} holds {got} {what}, mean {mean:.2}: {counts:?}"
                ));
            }
        }
    }
    None
}

/// A free UDP address on loopback address `ip` (127.0.0.2 and 127.0.0.3 need no setup on
/// Linux: the whole of 127.0.0.0/8 is loopback).
pub fn free_udp(ip: &str) -> SocketAddr {
    let ip: IpAddr = ip.parse().expect("a loopback IP address");
    crate::ports::free_addr(ip)
}

/// `kvcli --json node list`'s row of node `id`, if it lists it.
pub fn listed(config: &str, id: u64) -> Option<Value> {
    let run = cli::with_cluster(config, &["--json", "node", "list"], CLI_TIMEOUT);
    let list = cli::json_of(&run);
    list["nodes"]
        .as_array()?
        .iter()
        .find(|n| n["id"] == id)
        .cloned()
}

/// Waits until the registry lists every node of `ids` active and reachable: a cluster
/// just started lists its nodes `joining` until each knows every other, and kvcli counts
/// only active nodes as room for replicas.
pub fn wait_active(config: &str, ids: impl IntoIterator<Item = u64> + Clone) {
    crate::wait_for("every node active", JOIN_TIMEOUT, || {
        ids.clone()
            .into_iter()
            .all(|id| {
                listed(config, id).is_some_and(|r| r["state"] == "active" && r["reachable"] == true)
            })
            .then_some(())
    });
}

/// Starts node `id` with `--join` on a free port of `ip`, asking `seeds`, and waits until
/// the registry lists it active and reachable at that address.
pub fn join(c: &mut Cluster, config: &str, id: u64, ip: &str, seeds: &[SocketAddr]) {
    let listen = free_udp(ip);
    c.spawn_joining(NodeId(id), listen, seeds);
    let row = crate::wait_for(&format!("node {id} to join"), JOIN_TIMEOUT, || {
        listed(config, id).filter(|r| r["state"] == "active" && r["reachable"] == true)
    });
    assert_eq!(row["addr"], listen.to_string(), "{row}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn row(shard: u32, voters: &[u64], learners: &[u64], leader: Option<u64>) -> Value {
        json!({"shard": shard, "voters": voters, "learners": learners, "leader": leader})
    }

    fn view(nodes: &[u64], rows: Vec<Value>) -> Value {
        let nodes: Vec<Value> = nodes
            .iter()
            .map(|n| json!({"node": n, "reachable": true}))
            .collect();
        json!({"nodes": nodes, "shards": rows})
    }

    /// 4 shards, R = 2 on 4 nodes: 2 replicas and 1 leader each.
    fn balanced_rows() -> Vec<Value> {
        vec![
            row(0, &[1, 2], &[], Some(1)),
            row(1, &[2, 3], &[], Some(2)),
            row(2, &[3, 4], &[], Some(3)),
            row(3, &[4, 1], &[], Some(4)),
        ]
    }

    #[test]
    fn an_even_spread_is_balanced() {
        let live: BTreeSet<u64> = (1..=4).collect();
        let st = view(&[1, 2, 3, 4], balanced_rows());
        assert_eq!(unbalanced(&st, &live, 4, 2), None);
    }

    #[test]
    fn each_way_off_balance_is_named() {
        let live: BTreeSet<u64> = (1..=4).collect();
        let all = [1, 2, 3, 4];
        // Node 4 holds no replica: replicas 3/3/2/0 against a mean of 2.
        let mut rows = balanced_rows();
        rows[2] = row(2, &[3, 1], &[], Some(3));
        rows[3] = row(3, &[2, 1], &[], Some(2));
        let why = unbalanced(&view(&all, rows), &live, 4, 2).expect("unbalanced");
        assert!(why.contains("node 1 holds 3 replicas"), "{why}");
        // Replicas even, leaders 2/0/1/1.
        let mut rows = balanced_rows();
        rows[1] = row(1, &[2, 3], &[], Some(3));
        rows[0] = row(0, &[1, 2], &[], Some(1));
        rows[2] = row(2, &[3, 4], &[], Some(4));
        rows[3] = row(3, &[4, 1], &[], Some(1));
        let why = unbalanced(&view(&all, rows), &live, 4, 2).expect("unbalanced");
        assert!(why.contains("leaders"), "{why}");
        // A learner (a move in flight), a leaderless shard, a missing node, a short row set.
        let mut rows = balanced_rows();
        rows[0] = row(0, &[1, 2], &[3], Some(1));
        assert!(unbalanced(&view(&all, rows), &live, 4, 2).is_some());
        let mut rows = balanced_rows();
        rows[0] = row(0, &[1, 2], &[], None);
        assert!(unbalanced(&view(&all, rows), &live, 4, 2).is_some());
        let why = unbalanced(&view(&[1, 2, 3], balanced_rows()), &live, 4, 2);
        assert!(why.is_some_and(|w| w.contains("reachable")));
        let why = unbalanced(&view(&all, balanced_rows()), &live, 5, 2);
        assert!(why.is_some_and(|w| w.contains("shard rows")));
    }
}
