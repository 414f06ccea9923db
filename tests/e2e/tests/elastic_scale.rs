//! The whole elastic life of a cluster between real kvserver processes, under checked load
//! (issue 11, item 9): 3 nodes from the cluster file on 127.0.0.1 (R = 3, 8 shards); nodes
//! 4 and 5 join with `kvserver --join` on 127.0.0.2 and 127.0.0.3 and serve the Redis
//! protocol and HTTP; `kvcli rebalance` spreads replicas and leaders within one of the
//! mean; `kvcli node drain 5` empties node 5 right away (nodes 1-3 take back replicas of
//! shards the rebalance moved off them); node 4 is kill -9'd, node 6 joins in its place
//! and `kvcli node remove 4 --dead` rebuilds its replicas; nodes 4 and 5 restarted on empty
//! data directories under their old ids are refused (exit 2, naming the id); node 7 joins
//! and `rebalance` spreads the load again over nodes 1, 2, 3, 6 and 7. `kvcli bench --check` runs back to back
//! and a writer of unique keys runs the whole time: every history must be linearizable and
//! every acknowledged write must read back.
//!
//! Balance is judged here from `kvcli --json status` (replica sets, leaders, reachable
//! nodes), not from kvcli's own verdict.

use kv_e2e::cli;
use kv_e2e::cluster::{Cluster, Spec};
use kv_e2e::elastic::{free_udp, join, listed, shares, status};
use kv_e2e::load::{assert_acked_read_back, AckedWriter, CheckedBenchLoop};
use kv_shared::NodeId;
use serde_json::Value;
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

const SHARDS: u32 = 8;
const REPLICATION: usize = 3;
const LEADERS_TIMEOUT: Duration = Duration::from_secs(20);
/// One `rebalance`, `node drain` or `node remove --dead`, as kvcli is told (`--wait`).
const DRIVE_WAIT_S: u64 = 60;
/// The whole of reaching balance: rebalance runs, and the leader transfers settling.
const BALANCE_TIMEOUT: Duration = Duration::from_secs(120);
/// Each `kvcli bench --check` run of the load.
const BENCH_RUN_SECONDS: u64 = 10;
/// How long a node may take to register, or to be refused.
const JOIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `kvcli rebalance` until `status` shows the cluster balanced over `live`; returns
/// the balanced status.
fn rebalance_until_balanced(config: &str, live: &BTreeSet<u64>) -> Value {
    let started = Instant::now();
    let wait = DRIVE_WAIT_S.to_string();
    loop {
        let run = cli::with_cluster(
            config,
            &["--json", "rebalance", "--wait", &wait],
            Duration::from_secs(DRIVE_WAIT_S + 30),
        );
        assert!(matches!(run.code, Some(0 | 1)), "rebalance: {run:?}");
        // Leader transfers take effect shortly after kvcli saw them asked for.
        let settle = Instant::now() + Duration::from_secs(5);
        let mut why = String::new();
        while Instant::now() < settle {
            let st = status(config);
            match kv_e2e::elastic::unbalanced(&st, live, SHARDS, REPLICATION) {
                None => {
                    eprintln!(
                        "balanced over {live:?} {} ms after the first rebalance: {:?}",
                        started.elapsed().as_millis(),
                        shares(&st)
                    );
                    return st;
                }
                Some(w) => why = w,
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        assert!(
            started.elapsed() < BALANCE_TIMEOUT,
            "not balanced over {live:?} after {BALANCE_TIMEOUT:?}: {why}; last rebalance: {run:?}"
        );
        eprintln!(
            "rebalance ended with exit {:?}, not yet balanced: {why}",
            run.code
        );
    }
}

/// Node `id` restarted on an empty data directory must exit 2 with a message naming it.
fn assert_refused(c: &mut Cluster, id: u64) {
    let status = c
        .wait_exit(NodeId(id), JOIN_TIMEOUT)
        .unwrap_or_else(|| panic!("node {id} kept running on an empty data dir"));
    let log = c.log(NodeId(id));
    assert_eq!(status.code(), Some(2), "node {id}: {log}");
    let refusal = log
        .lines()
        .rev()
        .find(|l| l.starts_with("kvserver: refusing to start"));
    assert!(
        refusal.is_some_and(|l| l.contains(&format!("node n{id}")) && l.contains("new id")),
        "node {id}'s refusal names it and says what to do: {log}"
    );
}

/// `GET path` over HTTP/1.1; returns the status code.
fn http_status(addr: SocketAddr, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    text.get(9..12)?.parse().ok()
}

/// A joined node's front ends answer: `/health` 200 (each shard it holds has a leader),
/// and a write and read through its Redis gateway, as the client "admin".
fn assert_front_ends_serve(c: &Cluster, id: u64) {
    let node = NodeId(id);
    kv_e2e::wait_for(&format!("node {id}'s /health"), JOIN_TIMEOUT, || {
        (http_status(c.http_addr(node), "/health") == Some(200)).then_some(())
    });
    let key = std::fs::read_to_string(c.key_path("admin")).expect("admin key file");
    let secret = key
        .lines()
        .find_map(|l| l.strip_prefix("key = \"")?.strip_suffix('"'))
        .expect("a key line");
    let url = format!("redis://admin:{secret}@{}/", c.redis_addr(node));
    let client = redis::Client::open(url).expect("redis url");
    let mut con = kv_e2e::wait_for(&format!("node {id}'s RESP gateway"), JOIN_TIMEOUT, || {
        client.get_connection().ok()
    });
    let k = format!("via-node-{id}");
    let _: () = redis::cmd("SET")
        .arg(&k)
        .arg("joined")
        .query(&mut con)
        .expect("SET through the joined node");
    let got: String = redis::cmd("GET").arg(&k).query(&mut con).expect("GET");
    assert_eq!(got, "joined");
}

/// `kvcli node drain` or `node remove --dead`, which must succeed.
fn drive(config: &str, args: &[&str]) -> Value {
    let wait = DRIVE_WAIT_S.to_string();
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--wait", &wait]);
    let run = cli::with_cluster(config, &all, Duration::from_secs(DRIVE_WAIT_S + 30));
    assert_eq!(run.code, Some(0), "{args:?}: {run:?}");
    cli::json_of(&run)
}

#[test]
fn three_nodes_grow_to_five_drain_lose_one_and_replace_it_under_checked_load() {
    let started = Instant::now();
    let mut c = Cluster::start(Spec {
        nodes: 3,
        shards: SHARDS,
        replication: Some(REPLICATION as u32),
        // Small, so that new replicas catch up from a snapshot, not only from the log.
        snapshot_threshold: Some(200),
    });
    let mut client = c.client();
    c.wait_for_leaders(&mut client, LEADERS_TIMEOUT);
    let config = c.config_path().to_str().expect("utf-8 path").to_string();
    let (n1, n2, n3) = (c.addr(NodeId(1)), c.addr(NodeId(2)), c.addr(NodeId(3)));
    let load = CheckedBenchLoop::start(&config, BENCH_RUN_SECONDS);
    let writer = AckedWriter::start(&config, "es");
    std::thread::sleep(Duration::from_secs(1));

    // 1. Nodes 4 and 5 join on other loopback addresses; rebalance spreads the shards.
    join(&mut c, &config, 4, "127.0.0.2", &[n1]);
    join(&mut c, &config, 5, "127.0.0.3", &[n2, n3]);
    let five: BTreeSet<u64> = (1..=5).collect();
    let st = rebalance_until_balanced(&config, &five);
    let (replicas, _) = shares(&st);
    assert!(
        replicas[&4] >= 4 && replicas[&5] >= 4,
        "24 replicas over 5 nodes: {replicas:?}"
    );
    for id in [4, 5] {
        assert_front_ends_serve(&c, id);
    }

    // 2. Node 5 drains to nothing, and is stopped. No fresh node joins first: after the
    // rebalance a shard on nodes 4 and 5 has only nodes it was moved off (1-3) to take
    // node 5's replica, and they take it back (docs/ELASTIC.md, Moving a replica).
    let drained = drive(&config, &["node", "drain", "5"]);
    assert_eq!(drained["node"], 5, "{drained}");
    let st = status(&config);
    let (replicas, leaders) = shares(&st);
    assert_eq!(replicas.get(&5), None, "node 5 holds no replica: {st}");
    assert_eq!(leaders.get(&5), None, "node 5 leads nothing: {st}");
    let row = listed(&config, 5).expect("node 5 listed");
    assert_eq!(row["replicas"], 0, "{row}");
    c.terminate(NodeId(5), Duration::from_secs(10));

    // 3. Node 4 is kill -9'd. As docs/RUNTIME.md's replace-a-node procedure says, node 6
    // joins under a new id on an empty data directory, then `node remove 4 --dead`
    // rebuilds node 4's replicas on the live nodes.
    assert!(replicas.get(&4).is_some_and(|n| *n > 0), "{replicas:?}");
    c.kill9(NodeId(4));
    let killed = Instant::now();
    assert!(!c.data_dir(NodeId(6)).exists());
    join(&mut c, &config, 6, "127.0.0.3", &[n2]);
    let removed = drive(&config, &["node", "remove", "4", "--dead"]);
    assert_eq!(removed["node_state"], "dead", "{removed}");
    let st = status(&config);
    let rows = st["shards"].as_array().expect("shards");
    assert!(
        rows.iter().all(|r| r["under_replicated"] == false
            && cli::node_ids(&r["voters"]).len() == REPLICATION
            && !cli::node_ids(&r["voters"]).contains(&4)
            && !cli::node_ids(&r["voters"]).contains(&5)),
        "every shard has 3 voters on live nodes: {st}"
    );
    eprintln!(
        "node 4's replicas rebuilt {} ms after kill -9",
        killed.elapsed().as_millis()
    );

    // 4. The old ids come back on empty data directories: refused, naming the id.
    std::fs::remove_dir_all(c.data_dir(NodeId(4))).expect("wipe node 4's data dir");
    c.spawn_joining(NodeId(4), free_udp("127.0.0.2"), &[n1, n3]);
    assert_refused(&mut c, 4);
    std::fs::remove_dir_all(c.data_dir(NodeId(5))).expect("wipe node 5's data dir");
    c.spawn_joining(NodeId(5), free_udp("127.0.0.3"), &[n2]);
    assert_refused(&mut c, 5);

    // 5. Node 7 joins and the load spreads again over five nodes (with four, the planner
    // counts the metadata group's replicas, and 5 and 7 data replicas count as balanced).
    join(&mut c, &config, 7, "127.0.0.2", &[n1]);
    let live: BTreeSet<u64> = [1, 2, 3, 6, 7].into();
    rebalance_until_balanced(&config, &live);
    for id in [6, 7] {
        assert_front_ends_serve(&c, id);
    }

    // 6. Nothing acknowledged was lost and every history is linearizable.
    let acked = writer.finish();
    let runs = load.finish();
    assert_acked_read_back(&config, &acked);
    for id in live {
        c.assert_alive(NodeId(id));
    }
    eprintln!(
        "{} checked bench runs and {} acknowledged unique writes in {} s",
        runs.len(),
        acked.len(),
        started.elapsed().as_secs()
    );
}
