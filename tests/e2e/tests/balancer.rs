//! The balancer on the metadata group's leader, between real kvserver processes: 4 nodes,
//! 3 replicas per shard, 8 shards, `down_after_ms = 3000`. With the balancer paused, a
//! node killed with kill -9 leaves its shards under-replicated and no move starts, well
//! past the down timer; resumed, the balancer alone (no kvcli drive) rebuilds them on the
//! live nodes, under-replicated shards back to 0 within 30 s, while a writer of unique
//! keys runs, every acknowledged write reading back.

use kv_e2e::cli;
use kv_e2e::cluster::{Cluster, Spec};
use kv_e2e::load::{assert_acked_read_back, AckedWriter};
use kv_shared::NodeId;
use serde_json::Value;
use std::time::{Duration, Instant};

const SHARDS: u32 = 8;
const LEADERS_TIMEOUT: Duration = Duration::from_secs(20);
const DOWN_AFTER_MS: u64 = 3_000;
/// What the issue asks: under-replicated shards back to 0 within this after the balancer
/// may act.
const REBUILD_MAX: Duration = Duration::from_secs(30);
const CLI_TIMEOUT: Duration = Duration::from_secs(30);

/// Shards that list `node` as a voter, and shards with a learner (a move in flight).
fn on_node_and_moving(rows: &[Value], node: u64) -> (usize, usize) {
    let on = rows
        .iter()
        .filter(|r| cli::node_ids(&r["voters"]).contains(&node))
        .count();
    let moving = rows
        .iter()
        .filter(|r| !cli::node_ids(&r["learners"]).is_empty())
        .count();
    (on, moving)
}

fn under_replicated(rows: &[Value]) -> usize {
    rows.iter()
        .filter(|r| r["under_replicated"] == true)
        .count()
}

fn rebalance_status(config: &str) -> Value {
    let run = cli::with_cluster(config, &["--json", "rebalance", "status"], CLI_TIMEOUT);
    cli::json_of(&run)
}

#[test]
fn the_balancer_alone_rebuilds_a_dead_nodes_replicas_and_starts_nothing_while_paused() {
    let section = format!("enabled = true\ninterval_ms = 500\ndown_after_ms = {DOWN_AFTER_MS}");
    let (mut c, _client) = Cluster::started_with_balancer(
        Spec {
            nodes: 4,
            shards: SHARDS,
            replication: Some(3),
            snapshot_threshold: Some(200),
        },
        &section,
        LEADERS_TIMEOUT,
    );
    let config = c.config_path().to_str().expect("utf-8 path").to_string();
    let writer = AckedWriter::start(&config, "bal");

    // 1. The balancer runs on the metadata leader; pause it (replicated state).
    let deadline = Instant::now() + LEADERS_TIMEOUT;
    let running = loop {
        let status = rebalance_status(&config);
        if status["balancer"]["mode"] == "running" && status["balancer"]["active_on"].is_u64() {
            break status;
        }
        assert!(Instant::now() < deadline, "no balancer runs: {status}");
        std::thread::sleep(Duration::from_millis(500));
    };
    eprintln!("balancer before the pause: {}", running["balancer"]);
    let run = cli::with_cluster(&config, &["--json", "rebalance", "pause"], CLI_TIMEOUT);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(cli::json_of(&run)["balancer"], "paused");
    let status = rebalance_status(&config);
    assert_eq!(status["balancer"]["mode"], "paused", "{status}");

    // 2. kill -9 node 4 while paused: its shards stay under-replicated, no move starts.
    let rows = cli::shard_rows(&config, CLI_TIMEOUT);
    let (on_4, moving) = on_node_and_moving(&rows, 4);
    assert!(on_4 > 0, "node 4 holds replicas: {rows:?}");
    assert_eq!(moving, 0, "{rows:?}");
    c.kill9(NodeId(4));
    let killed = Instant::now();
    std::thread::sleep(Duration::from_millis(3 * DOWN_AFTER_MS));
    let rows = cli::shard_rows(&config, CLI_TIMEOUT);
    assert_eq!(
        on_node_and_moving(&rows, 4),
        (on_4, 0),
        "paused: node 4 keeps its replicas {} ms after kill -9, no learner: {rows:?}",
        killed.elapsed().as_millis()
    );
    assert_eq!(under_replicated(&rows), on_4, "{rows:?}");

    // 3. Resumed, the balancer alone rebuilds node 4's replicas on nodes 1-3.
    let run = cli::with_cluster(&config, &["rebalance", "resume"], CLI_TIMEOUT);
    assert_eq!(run.code, Some(0), "{run:?}");
    let resumed = Instant::now();
    let rows = loop {
        let rows = cli::shard_rows(&config, CLI_TIMEOUT);
        let done = under_replicated(&rows) == 0 && on_node_and_moving(&rows, 4) == (0, 0);
        if done {
            break rows;
        }
        assert!(
            resumed.elapsed() < REBUILD_MAX,
            "under-replicated shards not back to 0 within {REBUILD_MAX:?} of resume: {rows:?}"
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    eprintln!(
        "balancer: {on_4} shards rebuilt, under-replicated shards 0 {} ms after resume",
        resumed.elapsed().as_millis()
    );
    for row in &rows {
        let voters = cli::node_ids(&row["voters"]);
        assert_eq!(voters.len(), 3, "{row}");
        assert!(!voters.contains(&4), "{row}");
    }
    let status = rebalance_status(&config);
    let balancer = &status["balancer"];
    assert_eq!(balancer["mode"], "running", "{status}");
    assert!(
        balancer["moves_done"].as_u64() >= Some(on_4 as u64),
        "the balancer made the moves: {status}"
    );

    // 4. No acknowledged write was lost.
    let acked = writer.finish();
    assert_acked_read_back(&config, &acked);
    for id in [1, 2, 3] {
        c.assert_alive(NodeId(id));
    }
}
