//! Draining a node and replacing a dead one between real kvserver processes under load:
//! 5 nodes, 3 replicas per shard, 8 shards. `kvcli node drain 5` must leave node 5
//! without a replica and every shard with 3 voters; after kill -9 of node 4,
//! `kvcli node remove 4 --dead` must bring the under-replicated shards back to 0. A
//! `kvcli bench --check` load and a writer of unique keys run throughout: the history
//! must be linearizable and every acknowledged write must read back. Both commands leave
//! their node `removed` in the node registry, and node 5, removed while it runs, stops by
//! itself. Last, with too few nodes left, kvcli must refuse to drain, and refuse to treat
//! a running node as dead. The balancer is off: kvcli makes the moves (the balancer's own
//! test is tests/balancer.rs).

use kv_e2e::cli;
use kv_e2e::cluster::{Cluster, Spec};
use kv_e2e::load::{
    assert_acked_read_back, assert_bench_linearizable, start_checked_bench, AckedWriter,
};
use kv_shared::NodeId;
use serde_json::Value;
use std::time::{Duration, Instant};

const SHARDS: u32 = 8;
const LEADERS_TIMEOUT: Duration = Duration::from_secs(20);
/// One `node drain` or `node remove --dead`, as kvcli is told (`--wait`) and as the test
/// waits for the process.
const DRIVE_WAIT_S: u64 = 60;
const BENCH_SECONDS: u64 = 45;

/// Node `id`'s state in `kvcli --json node list`.
fn registry_state(config: &str, id: u64) -> Value {
    let run = cli::with_cluster(config, &["--json", "node", "list"], Duration::from_secs(30));
    let list = cli::json_of(&run);
    let nodes = list["nodes"].as_array().expect("nodes");
    let row = nodes.iter().find(|n| n["id"] == id);
    row.map_or(Value::Null, |r| r["state"].clone())
}

/// Every shard has 3 voters, none of them in `gone`, and no learner.
fn assert_three_voters_without(rows: &[Value], gone: &[u64]) {
    assert_eq!(rows.len(), SHARDS as usize);
    for row in rows {
        let voters = cli::node_ids(&row["voters"]);
        assert_eq!(voters.len(), 3, "3 voters: {row}");
        assert!(
            voters.iter().all(|v| !gone.contains(v)),
            "none of {gone:?}: {row}"
        );
        assert!(
            cli::node_ids(&row["learners"]).is_empty(),
            "no learner: {row}"
        );
    }
}

#[test]
fn a_drained_node_ends_empty_and_a_dead_ones_replicas_are_rebuilt_under_load() {
    let mut c = Cluster::start(Spec {
        nodes: 5,
        shards: SHARDS,
        replication: Some(3),
        // Small, so that new replicas catch up from a snapshot, not only from the log.
        snapshot_threshold: Some(200),
    });
    let mut client = c.client();
    c.wait_for_leaders(&mut client, LEADERS_TIMEOUT);
    let config = c.config_path().to_str().expect("utf-8 path").to_string();
    // Draining needs room on 3 other active nodes; a node is active only once every
    // other node knows it.
    kv_e2e::elastic::wait_active(&config, 1..=5);
    let bench = start_checked_bench(&config, BENCH_SECONDS);
    let writer = AckedWriter::start(&config, "dr");
    std::thread::sleep(Duration::from_secs(2));

    // 1. Drain node 5.
    let wait = DRIVE_WAIT_S.to_string();
    let timeout = Duration::from_secs(DRIVE_WAIT_S + 30);
    let run = cli::with_cluster(
        &config,
        &["--json", "node", "drain", "5", "--wait", &wait],
        timeout,
    );
    assert_eq!(run.code, Some(0), "node drain 5: {run:?}");
    let drained = cli::json_of(&run);
    assert_eq!(drained["node"], 5, "{drained}");
    let moves = drained["moves"].as_array().expect("moves");
    assert!(!moves.is_empty(), "node 5 held replicas: {drained}");
    assert!(moves.iter().all(|m| m["from"] == 5), "{drained}");
    assert!(
        run.stderr.contains("moving shard") && run.stderr.contains("node 5 is draining"),
        "progress: {}",
        run.stderr
    );
    assert_eq!(drained["registry_state"], "removed", "{drained}");
    let rows = cli::shard_rows(&config, Duration::from_secs(30));
    assert_three_voters_without(&rows, &[5]);
    assert_eq!(registry_state(&config, 5), "removed");
    // Removed, node 5 hears so from the registry and stops: its id is never used again.
    let exited = c.wait_exit(NodeId(5), Duration::from_secs(15));
    assert!(
        exited.is_some_and(|s| s.code() == Some(2)),
        "node 5 exits 2 once removed: {exited:?}; log:\n{}",
        c.log(NodeId(5))
    );
    assert!(
        c.log(NodeId(5))
            .contains("node n5 was removed from the cluster"),
        "{}",
        c.log(NodeId(5))
    );

    // 2. kill -9 node 4, then rebuild its replicas on the live nodes.
    let on_4 = rows
        .iter()
        .filter(|r| cli::node_ids(&r["voters"]).contains(&4))
        .count();
    assert!(on_4 > 0, "node 4 holds replicas: {rows:?}");
    c.kill9(NodeId(4));
    let killed = Instant::now();
    let rows = cli::shard_rows(&config, Duration::from_secs(30));
    let under = rows
        .iter()
        .filter(|r| r["under_replicated"] == true)
        .count();
    assert_eq!(
        under, on_4,
        "node 4's shards are under-replicated: {rows:?}"
    );
    let run = cli::with_cluster(
        &config,
        &["--json", "node", "remove", "4", "--dead", "--wait", &wait],
        timeout,
    );
    assert_eq!(run.code, Some(0), "node remove 4 --dead: {run:?}");
    let removed = cli::json_of(&run);
    assert_eq!(removed["node_state"], "dead", "{removed}");
    assert_eq!(registry_state(&config, 4), "removed");
    let rows = cli::shard_rows(&config, Duration::from_secs(30));
    let under = rows
        .iter()
        .filter(|r| r["under_replicated"] == true)
        .count();
    eprintln!(
        "node remove 4 --dead: {on_4} shards rebuilt, under-replicated shards 0 {} ms after kill -9 ({} ms of it in the command)",
        killed.elapsed().as_millis(),
        removed["elapsed_ms"]
    );
    assert_eq!(under, 0, "no shard under-replicated: {rows:?}");
    assert_three_voters_without(&rows, &[4, 5]);
    assert!(
        rows.iter().all(|r| r["leader"].is_u64()),
        "every shard has a leader: {rows:?}"
    );

    // 3. The load saw no lost write and a linearizable history.
    let acked = writer.finish();
    assert_bench_linearizable(bench);
    assert_acked_read_back(&config, &acked);
    for id in [1, 2, 3] {
        c.assert_alive(NodeId(id));
    }

    // 4. Nodes 1-3 hold every shard: none can be drained, and a node that answers is not
    // dead.
    let run = cli::with_cluster(&config, &["node", "drain", "1"], timeout);
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(
        run.stderr.contains(
            "cannot drain node 1: the other live nodes (2, 3) cannot hold 3 replicas of every shard"
        ),
        "{}",
        run.stderr
    );
    let run = cli::with_cluster(&config, &["node", "remove", "2", "--dead"], timeout);
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(
        run.stderr.contains("node 2 answers, so it is not dead"),
        "{}",
        run.stderr
    );
}
