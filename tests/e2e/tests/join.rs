//! The elastic cluster with real kvserver processes: a node the cluster file does not
//! list joins on another loopback address (127.0.0.2) with `kvserver --join`, `kvcli node
//! list` shows it active, and it receives a replica by `kvcli shard move` under a
//! `kvcli bench --check` load (history linearizable); then node 1 is stopped, its data
//! directory wiped, and its restart is refused: exit 2, naming the id and what to do.

use kv_e2e::cli;
use kv_e2e::cluster::{Cluster, Spec};
use kv_shared::proto::ShardRoute;
use kv_shared::{NodeId, ShardId};
use serde_json::Value;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

const SHARDS: u32 = 4;
const JOINED: NodeId = NodeId(4);
const BENCH_SECONDS: u64 = 20;

/// `kvcli --json node list`, parsed.
fn node_list(config: &str) -> Value {
    let run = cli::with_cluster(config, &["--json", "node", "list"], Duration::from_secs(30));
    serde_json::from_str(run.stdout.trim())
        .unwrap_or_else(|e| panic!("node list --json: {e}: {run:?}"))
}

/// The row of `id` in a node list, if listed.
fn row(list: &Value, id: NodeId) -> Option<Value> {
    list["nodes"]
        .as_array()?
        .iter()
        .find(|n| n["id"] == id.0)
        .cloned()
}

/// Shard 0's newest replica set as the file's nodes report it.
fn route0(c: &Cluster, client: &mut kv_e2e::client::Client) -> ShardRoute {
    let routes = c.ids().into_iter().filter_map(|id| client.status(id));
    let mut routes: Vec<ShardRoute> = routes
        .filter_map(|st| st.routes.into_iter().find(|r| r.shard == ShardId(0)))
        .collect();
    routes.sort_by_key(|r| (r.epoch, r.leader.is_some()));
    routes.pop().expect("a node answers")
}

#[test]
fn a_node_joins_receives_a_replica_and_a_wiped_node_is_refused() {
    let mut c = Cluster::start(Spec {
        nodes: 3,
        shards: SHARDS,
        replication: Some(3),
        snapshot_threshold: Some(200),
    });
    let mut client = c.client();
    c.wait_for_leaders(&mut client, Duration::from_secs(20));
    let config = c.config_path().to_str().expect("utf-8 path").to_string();

    // Node 4 on another loopback address, not in the cluster file.
    let listen: SocketAddr = {
        let probe = UdpSocket::bind("127.0.0.2:0").expect("127.0.0.2 is loopback on Linux");
        probe.local_addr().expect("local addr")
    };
    c.spawn_joining(JOINED, listen, &[c.addr(NodeId(1))]);
    let deadline = Instant::now() + Duration::from_secs(20);
    let joined = loop {
        let list = node_list(&config);
        if let Some(r) = row(&list, JOINED) {
            if r["state"] == "active" && r["reachable"] == true {
                break r;
            }
        }
        assert!(
            Instant::now() < deadline,
            "node 4 never listed active: {list}"
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    assert_eq!(joined["addr"], listen.to_string());
    assert_eq!(
        joined["replicas"], 0,
        "a joined node holds no shard: {joined}"
    );
    assert!(joined["identity"].as_str().is_some_and(|i| i.len() == 16));

    // Under load, a follower's replica of shard 0 moves to node 4.
    let bench = {
        let config = config.clone();
        std::thread::spawn(move || {
            let duration = format!("{BENCH_SECONDS}s");
            let args = [
                "bench",
                "--clients",
                "8",
                "--keys",
                "64",
                "--duration",
                &duration,
                "--check",
            ];
            cli::with_cluster(&config, &args, Duration::from_secs(BENCH_SECONDS + 60))
        })
    };
    std::thread::sleep(Duration::from_secs(2));
    let before = route0(&c, &mut client);
    let leader = before.leader.expect("shard 0 has a leader");
    let from = *before
        .voters
        .iter()
        .find(|v| **v != leader)
        .expect("3 voters");
    let run = cli::with_cluster(
        &config,
        &[
            "shard",
            "move",
            "0",
            "--from",
            &from.0.to_string(),
            "--to",
            "4",
        ],
        Duration::from_secs(60),
    );
    assert_eq!(run.code, Some(0), "move shard 0 {from} -> n4: {run:?}");
    let run = bench.join().expect("bench thread");
    assert_eq!(run.code, Some(0), "bench --check: {run:?}");
    assert!(run.stdout.contains("check: linearizable"), "{}", run.stdout);
    let after = route0(&c, &mut client);
    assert!(
        after.voters.contains(&JOINED) && !after.voters.contains(&from),
        "{after:?}"
    );
    let list = node_list(&config);
    let joined = row(&list, JOINED).expect("node 4 listed");
    assert_eq!(joined["replicas"], 1, "{list}");
    c.assert_alive(JOINED);

    // Node 1 loses its disk: restarted on an empty data directory under its old id, it
    // is refused, and says what to do instead.
    c.terminate(NodeId(1), Duration::from_secs(10));
    std::fs::remove_dir_all(c.data_dir(NodeId(1))).expect("wipe node 1's data dir");
    c.spawn(NodeId(1));
    let status = c
        .wait_exit(NodeId(1), Duration::from_secs(20))
        .unwrap_or_else(|| panic!("node 1 kept running on a wiped dir:\n{}", c.log(NodeId(1))));
    assert_eq!(status.code(), Some(2), "{}", c.log(NodeId(1)));
    let log = c.log(NodeId(1));
    let refusal = log
        .lines()
        .find(|l| l.starts_with("kvserver: refusing to start"));
    assert!(
        refusal
            .is_some_and(|l| l.contains("node n1") && l.contains("--join") && l.contains("new id")),
        "{log}"
    );
}
