//! The balancer alone spreads a grown cluster (issue 11, item 5): 3 nodes from the
//! cluster file on 127.0.0.1 (R = 3, 8 shards, the balancer on with a short interval)
//! under checked load; nodes 4 and 5 join on 127.0.0.2 and 127.0.0.3 and nobody runs
//! `kvcli rebalance`. Within `BALANCE_MAX` of the second join, `kvcli --json status` must
//! show replicas and leaders per node within one of the mean, the balancer's own counters
//! must name the moves, no replica may move after that until the load ends, every
//! `kvcli bench --check` history must be linearizable and every acknowledged write must
//! read back. With the balancer disabled the same test fails: nothing moves to the new
//! nodes.

use kv_e2e::cli;
use kv_e2e::cluster::{Cluster, Spec};
use kv_e2e::elastic::{self, join, shares, unbalanced};
use kv_e2e::load::{assert_acked_read_back, AckedWriter, CheckedBenchLoop};
use kv_shared::NodeId;
use serde_json::Value;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

const SHARDS: u32 = 8;
const REPLICATION: usize = 3;
const LEADERS_TIMEOUT: Duration = Duration::from_secs(20);
/// Rounds every 300 ms (the balancer still waits for a newer status round, every 2 s).
const BALANCER: &str = "enabled = true\ninterval_ms = 300\nmoves_max = 4";
/// From node 5 listed active to balanced: 9 or 10 moves of small shards, 4 at a time,
/// then leader transfers, in a debug build on a loaded machine.
const BALANCE_MAX: Duration = Duration::from_secs(25);
/// Each `kvcli bench --check` run of the load: short, so the test ends soon after balance.
const BENCH_RUN_SECONDS: u64 = 4;

fn rebalance_status(config: &str) -> Value {
    let run = cli::with_cluster(
        config,
        &["--json", "rebalance", "status"],
        Duration::from_secs(30),
    );
    cli::json_of(&run)
}

#[test]
fn the_balancer_alone_spreads_replicas_and_leaders_onto_joined_nodes_under_checked_load() {
    let (mut c, _client) = Cluster::started_with_balancer(
        Spec {
            nodes: 3,
            shards: SHARDS,
            replication: Some(REPLICATION as u32),
            // Small, so that new replicas catch up from a snapshot, not only from the log.
            snapshot_threshold: Some(200),
        },
        BALANCER,
        LEADERS_TIMEOUT,
    );
    let config = c.config_path().to_str().expect("utf-8 path").to_string();
    let (n1, n2) = (c.addr(NodeId(1)), c.addr(NodeId(2)));
    let load = CheckedBenchLoop::start(&config, BENCH_RUN_SECONDS);
    let writer = AckedWriter::start(&config, "spread");
    std::thread::sleep(Duration::from_secs(1));

    // The balancer runs on the metadata leader; every node holds every shard, so it has
    // nothing to move yet.
    let before = kv_e2e::wait_for("the balancer to run", LEADERS_TIMEOUT, || {
        let status = rebalance_status(&config);
        let b = &status["balancer"];
        (b["mode"] == "running" && b["active_on"].is_u64()).then_some(status)
    });
    let moves_before = before["balancer"]["moves_done"].as_u64().unwrap_or(0);

    join(&mut c, &config, 4, "127.0.0.2", &[n1]);
    join(&mut c, &config, 5, "127.0.0.3", &[n2]);
    let joined = Instant::now();
    let five: BTreeSet<u64> = (1..=5).collect();
    let balanced = loop {
        let st = elastic::status(&config);
        let Some(why) = unbalanced(&st, &five, SHARDS, REPLICATION) else {
            break st;
        };
        assert!(
            joined.elapsed() < BALANCE_MAX,
            "the balancer did not spread onto nodes 4 and 5 within {BALANCE_MAX:?} of their \
             joins: {why}; balancer: {}",
            rebalance_status(&config)["balancer"]
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    let took = joined.elapsed();
    let (replicas, leaders) = shares(&balanced);
    eprintln!(
        "balanced {} ms after node 5 joined: replicas {replicas:?}, leaders {leaders:?}",
        took.as_millis()
    );
    // 24 replicas over 5 nodes: 4 or 5 each, so at least 8 moved onto nodes 4 and 5.
    let moved_in = replicas[&4] + replicas[&5];
    assert!(moved_in >= 8, "{replicas:?}");
    // The counters are the metadata leader's own: they name these moves if it still leads.
    let status = rebalance_status(&config);
    let moves_done = status["balancer"]["moves_done"].as_u64().unwrap_or(0);
    if status["balancer"]["active_on"] == before["balancer"]["active_on"] {
        assert!(
            moves_done >= moves_before + moved_in as u64,
            "the balancer made the moves ({moves_before} done before the joins): {status}"
        );
    }

    // The load ends; the replicas stay where they are (the balancer found nothing more to
    // move), nothing acknowledged was lost and every history is linearizable.
    let runs = load.finish();
    let acked = writer.finish();
    let st = elastic::status(&config);
    assert_eq!(shares(&st).0, replicas, "no move after balance: {st}");
    assert_acked_read_back(&config, &acked);
    for id in 1..=5 {
        c.assert_alive(NodeId(id));
    }
    eprintln!(
        "{} checked bench runs, {} acknowledged unique writes, {moves_done} balancer moves",
        runs.len(),
        acked.len()
    );
}
