//! The metadata group grows with the cluster (issue 11): a 3-node cluster whose nodes 4
//! and 5 join ends with 5 metadata voters, placed by the balancer alone, so that kill -9
//! of two of the original nodes leaves the node registry writable. Each joined node is
//! listed `joining` or `active`, never anything else, and ends `active`.

use kv_e2e::cli;
use kv_e2e::cluster::{Cluster, Spec};
use kv_e2e::elastic::free_udp;
use kv_shared::NodeId;
use serde_json::Value;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

const LEADERS_TIMEOUT: Duration = Duration::from_secs(20);
const JOIN_TIMEOUT: Duration = Duration::from_secs(30);
/// The balancer adds one voter at a time, each a learner caught up and promoted.
const GROW_TIMEOUT: Duration = Duration::from_secs(30);
const CLI_TIMEOUT: Duration = Duration::from_secs(30);

fn metadata_voters(config: &str) -> BTreeSet<u64> {
    let run = cli::with_cluster(config, &["--json", "status"], CLI_TIMEOUT);
    assert!(matches!(run.code, Some(0 | 1)), "status: {run:?}");
    let st: Value = cli::json_of(&run);
    cli::node_ids(&st["metadata"]["voters"])
        .into_iter()
        .collect()
}

/// `kvcli --json node list`'s state of `id` (`None`: not listed, or no answer).
fn state_of(config: &str, id: u64) -> Option<String> {
    let run = cli::with_cluster(config, &["--json", "node", "list"], CLI_TIMEOUT);
    if run.code != Some(0) {
        return None;
    }
    let list = cli::json_of(&run);
    let row = list["nodes"].as_array()?.iter().find(|n| n["id"] == id)?;
    row["state"].as_str().map(str::to_string)
}

/// Starts node `id` with `--join` and waits until it is listed active; returns every
/// state it was listed in meanwhile.
fn join(c: &mut Cluster, config: &str, id: u64, ip: &str, seeds: &[SocketAddr]) -> Vec<String> {
    c.spawn_joining(NodeId(id), free_udp(ip), seeds);
    let mut seen: Vec<String> = Vec::new();
    kv_e2e::wait_for(&format!("node {id} to be active"), JOIN_TIMEOUT, || {
        let state = state_of(config, id)?;
        if seen.last() != Some(&state) {
            seen.push(state.clone());
        }
        (state == "active").then_some(())
    });
    seen
}

#[test]
fn nodes_4_and_5_joining_grow_the_metadata_group_to_5_which_survives_two_kills() {
    let (mut c, _client) = Cluster::started_with_balancer(
        Spec {
            nodes: 3,
            shards: 4,
            replication: Some(3),
            snapshot_threshold: Some(200),
        },
        "enabled = true\ninterval_ms = 300\ndown_after_ms = 60000",
        LEADERS_TIMEOUT,
    );
    let config = c.config_path().to_str().expect("utf-8 path").to_string();
    kv_e2e::wait_for("the bootstrap nodes active", JOIN_TIMEOUT, || {
        (1..=3)
            .all(|id| state_of(&config, id).as_deref() == Some("active"))
            .then_some(())
    });
    assert_eq!(metadata_voters(&config), [1, 2, 3].into());
    let seeds: Vec<SocketAddr> = (1..=3).map(|i| c.addr(NodeId(i))).collect();
    for (id, ip) in [(4, "127.0.0.2"), (5, "127.0.0.3")] {
        let seen = join(&mut c, &config, id, ip, &seeds);
        eprintln!("node {id} listed as {seen:?}");
        assert!(
            seen.iter().all(|s| s == "joining" || s == "active"),
            "node {id}: {seen:?}"
        );
    }
    kv_e2e::wait_for("5 metadata voters", GROW_TIMEOUT, || {
        (metadata_voters(&config).len() == 5).then_some(())
    });
    assert_eq!(metadata_voters(&config), (1..=5).collect());
    // Two of the original nodes die at once: 3 of 5 voters are left, a majority, so the
    // registry still takes writes (the balancer's pause is one) and is still listed.
    c.kill9(NodeId(1));
    c.kill9(NodeId(2));
    let paused = kv_e2e::wait_for("a registry write after two kills", LEADERS_TIMEOUT, || {
        let run = cli::with_cluster(&config, &["rebalance", "pause"], CLI_TIMEOUT);
        (run.code == Some(0)).then_some(run)
    });
    eprintln!("rebalance pause: {}", paused.stdout.trim());
    let list = cli::with_cluster(&config, &["--json", "node", "list"], CLI_TIMEOUT);
    assert_eq!(list.code, Some(0), "node list: {list:?}");
    let rows = cli::json_of(&list)["nodes"]
        .as_array()
        .expect("node rows")
        .len();
    assert_eq!(rows, 5, "{list:?}");
    for id in [3, 4, 5] {
        c.assert_alive(NodeId(id));
    }
}
