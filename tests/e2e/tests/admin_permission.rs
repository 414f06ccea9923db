//! Admin operations need an admin key, between real kvserver processes: a read-write
//! client (mallory) may write but is refused `rebalance pause` and `shard leader` with a
//! message naming the client and the operation (kvcli exits 2), each refusal counted as
//! `permission_denied`; the admin key `keygen --config` made runs them. The nodes
//! themselves registered under that admin key (the registry lists all three).

use kv_e2e::cli;
use kv_e2e::cluster::{Cluster, Spec};
use std::time::Duration;

const CLI_TIMEOUT: Duration = Duration::from_secs(30);

fn permission_denied_total(config: &str) -> u64 {
    let run = cli::with_cluster(config, &["--json", "status"], CLI_TIMEOUT);
    let st = cli::json_of(&run);
    st["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .filter_map(|n| n["drops"]["permission_denied"].as_u64())
        .sum()
}

#[test]
fn a_read_write_key_is_refused_admin_operations_and_the_admin_key_runs_them() {
    let mut c = Cluster::start(Spec {
        nodes: 3,
        shards: 2,
        replication: Some(3),
        snapshot_threshold: None,
    });
    let mut client = c.client();
    c.wait_for_leaders(&mut client, Duration::from_secs(20));
    let config = c.config_path().to_str().expect("utf-8 path").to_string();
    let mallory = c.key_path("mallory");
    let mallory = mallory.to_str().expect("utf-8 path");
    let as_mallory = |args: &[&str]| {
        let mut all = vec!["--key-file", mallory];
        all.extend_from_slice(args);
        cli::with_cluster(&config, &all, CLI_TIMEOUT)
    };
    let put = as_mallory(&["put", "k", "v"]);
    assert_eq!(put.code, Some(0), "a read-write key writes: {put:?}");
    let before = permission_denied_total(&config);
    for (args, operation) in [
        (
            &["rebalance", "pause"][..],
            "pause or resume the balancer (admin only)",
        ),
        (
            &["shard", "leader", "0", "2"][..],
            "move a shard's leadership (admin only)",
        ),
    ] {
        let run = as_mallory(args);
        assert_eq!(run.code, Some(2), "{args:?}: {run:?}");
        let want =
            format!("permission denied: client mallory is read-write and cannot {operation}");
        assert!(run.stderr.contains(&want), "{args:?}: {run:?}");
    }
    let after = permission_denied_total(&config);
    assert!(after >= before + 2, "refusals counted: {before} -> {after}");
    for args in [["rebalance", "pause"], ["rebalance", "resume"]] {
        let run = cli::with_cluster(&config, &args, CLI_TIMEOUT);
        assert_eq!(run.code, Some(0), "the admin key: {args:?}: {run:?}");
    }
    let run = cli::with_cluster(&config, &["--json", "node", "list"], CLI_TIMEOUT);
    let list = cli::json_of(&run);
    let active = list["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .filter(|n| n["state"] == "active" || n["state"] == "joining")
        .count();
    assert_eq!(
        active, 3,
        "every node registered under the admin key: {list}"
    );
}
