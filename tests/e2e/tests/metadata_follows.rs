//! The metadata group follows the cluster (issue 11): every bootstrap node of a 3-node
//! cluster is replaced one by one between real kvserver processes (node 4 joins on
//! 127.0.0.2 and node 1 drains; node 5 joins on 127.0.0.3 and node 2 drains; node 6 joins
//! and node 3 drains), with the balancer running and `kvcli bench --check` back to back.
//! Each drain must complete, the metadata group's replica included; at the end the
//! metadata group lives on nodes 4-6, a node 7 registers through it knowing only node 4,
//! writes work, and every history is linearizable.
//!
//! kvcli is pointed at the nodes that run through a client copy of the cluster file,
//! rewritten after each step: the bootstrap nodes the real file names are gone at the end.

use kv_e2e::cli;
use kv_e2e::cluster::{Cluster, Spec};
use kv_e2e::elastic::free_udp;
use kv_e2e::load::CheckedBenchLoop;
use kv_shared::NodeId;
use serde_json::Value;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

const SHARDS: u32 = 8;
const LEADERS_TIMEOUT: Duration = Duration::from_secs(20);
/// One `node drain`, as kvcli is told (`--wait`).
const DRAIN_WAIT_S: u64 = 90;
const BENCH_RUN_SECONDS: u64 = 5;
const JOIN_TIMEOUT: Duration = Duration::from_secs(30);
const CLI_TIMEOUT: Duration = Duration::from_secs(30);

/// Writes kvcli's copy of the cluster file naming `nodes` (the ones that run), replacing
/// the old copy at once so that a bench starting meanwhile reads a whole file.
fn write_client_view(cluster_file: &Path, view: &Path, nodes: &[(u64, SocketAddr)]) {
    let text = std::fs::read_to_string(cluster_file).expect("cluster file");
    let head = &text[..text.find("\n[[nodes]]").expect("a [[nodes]] table")];
    let mut out = head.to_string();
    for (id, addr) in nodes {
        out.push_str(&format!("\n[[nodes]]\nid = {id}\naddr = \"{addr}\"\n"));
    }
    let tmp = view.with_extension("tmp");
    std::fs::write(&tmp, out).expect("write the client view");
    std::fs::rename(&tmp, view).expect("replace the client view");
}

fn status(view: &str) -> Value {
    let run = cli::with_cluster(view, &["--json", "status"], CLI_TIMEOUT);
    assert!(matches!(run.code, Some(0 | 1)), "status: {run:?}");
    cli::json_of(&run)
}

/// `kvcli --json node list`'s row of `id`.
fn listed(view: &str, id: u64) -> Option<Value> {
    let run = cli::with_cluster(view, &["--json", "node", "list"], CLI_TIMEOUT);
    let list = cli::json_of(&run);
    list["nodes"]
        .as_array()?
        .iter()
        .find(|n| n["id"] == id)
        .cloned()
}

/// Starts node `id` with `--join` and waits until the registry lists it active.
fn join(c: &mut Cluster, view: &str, id: u64, ip: &str, seeds: &[SocketAddr]) -> SocketAddr {
    let listen = free_udp(ip);
    c.spawn_joining(NodeId(id), listen, seeds);
    kv_e2e::wait_for(&format!("node {id} to join"), JOIN_TIMEOUT, || {
        listed(view, id).filter(|r| r["state"] == "active" && r["reachable"] == true)
    });
    listen
}

#[test]
fn every_bootstrap_node_is_replaced_and_the_metadata_group_follows_under_checked_load() {
    let (mut c, _client) = Cluster::started_with_balancer(
        Spec {
            nodes: 3,
            shards: SHARDS,
            replication: Some(3),
            snapshot_threshold: Some(200),
        },
        "enabled = true\ninterval_ms = 500\ndown_after_ms = 60000",
        LEADERS_TIMEOUT,
    );
    let cluster_file = c.config_path().to_path_buf();
    let view_path: PathBuf = c.dir().join("client-view.toml");
    let view = view_path.to_str().expect("utf-8 path").to_string();
    let mut live: Vec<(u64, SocketAddr)> = (1..=3).map(|i| (i, c.addr(NodeId(i)))).collect();
    write_client_view(&cluster_file, &view_path, &live);
    let st = status(&view);
    let bootstrap: BTreeSet<u64> = cli::node_ids(&st["metadata"]["voters"])
        .into_iter()
        .collect();
    assert_eq!(bootstrap, [1, 2, 3].into(), "{st}");
    let load = CheckedBenchLoop::start(&view, BENCH_RUN_SECONDS);

    for (new, old, ip) in [
        (4, 1, "127.0.0.2"),
        (5, 2, "127.0.0.3"),
        (6, 3, "127.0.0.2"),
    ] {
        let seeds: Vec<SocketAddr> = live.iter().map(|(_, a)| *a).collect();
        let addr = join(&mut c, &view, new, ip, &seeds);
        live.push((new, addr));
        write_client_view(&cluster_file, &view_path, &live);
        let wait = DRAIN_WAIT_S.to_string();
        let old_s = old.to_string();
        let run = cli::with_cluster(
            &view,
            &["--json", "node", "drain", &old_s, "--wait", &wait],
            Duration::from_secs(DRAIN_WAIT_S + 30),
        );
        assert_eq!(run.code, Some(0), "node drain {old}: {run:?}");
        let st = status(&view);
        let metadata = cli::node_ids(&st["metadata"]["voters"]);
        assert!(
            !metadata.contains(&old) && metadata.len() == 3,
            "node {old} drained holds no metadata voter: {st}"
        );
        for row in st["shards"].as_array().expect("shards") {
            assert!(!cli::node_ids(&row["voters"]).contains(&old), "{row}");
        }
        eprintln!("node {old} drained; metadata voters {metadata:?}");
        c.terminate(NodeId(old), Duration::from_secs(10));
        live.retain(|(id, _)| *id != old);
        write_client_view(&cluster_file, &view_path, &live);
    }

    // Only nodes 4-6 run: the metadata group, the registry and the routes live there.
    let st = kv_e2e::wait_for("a metadata leader on nodes 4-6", LEADERS_TIMEOUT, || {
        let st = status(&view);
        st["metadata"]["leader"].is_u64().then_some(st)
    });
    let replaced: BTreeSet<u64> = [4, 5, 6].into();
    let metadata: BTreeSet<u64> = cli::node_ids(&st["metadata"]["voters"])
        .into_iter()
        .collect();
    assert_eq!(metadata, replaced, "{st}");
    for row in st["shards"].as_array().expect("shards") {
        let voters: BTreeSet<u64> = cli::node_ids(&row["voters"]).into_iter().collect();
        assert_eq!(voters, replaced, "{row}");
    }
    for old in 1..=3 {
        let row = listed(&view, old).expect("a removed node stays listed");
        assert_eq!(row["state"], "removed", "{row}");
    }
    // A new node registers through the moved metadata group, knowing only node 4.
    let n4 = live.iter().find(|(id, _)| *id == 4).expect("node 4 runs").1;
    join(&mut c, &view, 7, "127.0.0.3", &[n4]);
    let put = cli::with_cluster(&view, &["put", "after-replace", "yes"], CLI_TIMEOUT);
    assert_eq!(put.code, Some(0), "{put:?}");
    let get = cli::with_cluster(&view, &["get", "after-replace"], CLI_TIMEOUT);
    assert!(get.stdout.contains("yes"), "{get:?}");
    let runs = load.finish();
    for id in [4, 5, 6, 7] {
        c.assert_alive(NodeId(id));
    }
    eprintln!("{} checked bench runs, all linearizable", runs.len());
}
