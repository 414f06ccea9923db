//! Admin operations need an admin key, between real kvserver processes: a read-write
//! client (mallory) may write but is refused `rebalance pause` and `shard leader` with a
//! message naming the client and the operation (kvcli exits 2), each refusal counted as
//! `permission_denied`; the admin key `keygen --config` made runs them. The nodes
//! themselves registered under that admin key (the registry lists all three). A node
//! whose cluster file gives it a read-write key says so at start, says once that it
//! cannot register (instead of retrying in silence), and serves.

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

#[test]
fn a_node_given_a_read_write_key_says_once_it_cannot_register_and_serves() {
    let mut c = Cluster::prepare(Spec {
        nodes: 1,
        shards: 1,
        replication: Some(1),
        snapshot_threshold: None,
    });
    let text = std::fs::read_to_string(c.config_path()).expect("cluster file");
    let admin = "client_key_file = \"keys/admin.key\"";
    assert!(text.contains(admin), "{text}");
    let with_mallory = c.dir().join("mallory.toml");
    std::fs::write(
        &with_mallory,
        text.replace(admin, "client_key_file = \"keys/mallory.key\""),
    )
    .expect("write cluster file");
    c.spawn_with_config(kv_shared::NodeId(1), &with_mallory);
    let mut client = c.client();
    c.wait_for_leaders(&mut client, Duration::from_secs(20));
    client.put("k", "v");
    assert_eq!(client.get("k").as_deref(), Some("v"));
    let refusal = "node 1 cannot register in the node registry: ";
    kv_e2e::wait_for(
        "the registration refusal in the log",
        Duration::from_secs(20),
        || c.log(kv_shared::NodeId(1)).contains(refusal).then_some(()),
    );
    // A node that asked again (every half second) would log again within two seconds.
    std::thread::sleep(Duration::from_secs(2));
    let log = c.log(kv_shared::NodeId(1));
    let line = log.lines().find(|l| l.contains(refusal)).expect("logged");
    assert!(
        line.contains("mallory is read-write") && line.contains("admin client key"),
        "{line}"
    );
    assert_eq!(log.matches(refusal).count(), 1, "{log}");
    assert!(
        log.contains("client key `mallory` is read-write: this node registers itself"),
        "{log}"
    );
    c.assert_alive(kv_shared::NodeId(1));
}
