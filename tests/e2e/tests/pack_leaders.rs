//! `[placement] leaders = "pack"` with real kvserver processes: on 3 nodes (R = 3) every
//! shard's leadership settles on node 1, kvcli's `rebalance status` calls that balanced,
//! and when node 1 dies (kill -9) the balancer hands every leadership to node 2, the next
//! node in the order, while writes go on being acknowledged.

use kv_e2e::cli;
use kv_e2e::cluster::{Cluster, Spec};
use kv_shared::proto::{NodeStatus, Role};
use kv_shared::NodeId;
use std::time::Duration;

const SHARDS: u32 = 4;
/// The `[balancer]` section's keys (rounds every 300 ms; the balancer still waits for a
/// newer status round, every 2 s), then the section under test.
const SECTIONS: &str = "enabled = true\ninterval_ms = 300\n\n[placement]\nleaders = \"pack\"";
const LEADERS_TIMEOUT: Duration = Duration::from_secs(20);
/// Node 1 takes each leadership once caught up, at most once every few election
/// timeouts per shard.
const PACK_TIMEOUT: Duration = Duration::from_secs(40);
/// After the kill: the shards elect leaders among nodes 2 and 3, the metadata group
/// elects a balancer, it sees node 1 silent in a status round and asks for the
/// transfers off node 3, two per node at a time; a debug build on a loaded machine.
const FAILOVER_TIMEOUT: Duration = Duration::from_secs(60);
const RUN_TIMEOUT: Duration = Duration::from_secs(60);
/// Nodes are listed active in the registry a few status rounds (2 s each) after start.
const BALANCED_TIMEOUT: Duration = Duration::from_secs(30);

/// The node each shard's row on `node` names as leader, if it leads every shard itself.
fn leads_every_shard(st: &NodeStatus) -> bool {
    st.shards.len() == SHARDS as usize
        && st
            .shards
            .iter()
            .all(|r| r.role == Role::Leader && r.leader == Some(st.node))
}

#[test]
fn packed_leaders_sit_on_node_1_and_move_to_node_2_when_node_1_is_killed() {
    let (mut c, mut client) = Cluster::started_with_balancer(
        Spec {
            nodes: 3,
            shards: SHARDS,
            ..Spec::default()
        },
        SECTIONS,
        LEADERS_TIMEOUT,
    );
    let (n1, n2, n3) = (NodeId(1), NodeId(2), NodeId(3));
    kv_e2e::wait_for("node 1 leading every shard", PACK_TIMEOUT, || {
        leads_every_shard(&client.status(n1)?).then_some(())
    });
    for n in [n2, n3] {
        let st = client.status(n).expect("the node answers");
        assert!(
            st.shards.iter().all(|r| r.role != Role::Leader),
            "{n} leads a shard: {st:?}"
        );
    }
    let config = c.config_path().to_str().expect("utf-8 path").to_string();
    // Every node is `joining` until the registry shows it active everywhere.
    let mut status = serde_json::Value::Null;
    kv_e2e::wait_for(
        "kvcli calling the packed cluster balanced",
        BALANCED_TIMEOUT,
        || {
            status = cli::json_of(&cli::with_cluster(
                &config,
                &["--json", "rebalance", "status"],
                RUN_TIMEOUT,
            ));
            (status["balance"]["balanced"] == serde_json::json!(true)).then_some(())
        },
    );
    assert_eq!(
        status["balance"]["leaders_misplaced"],
        serde_json::json!(0),
        "{status}"
    );
    let leads: Vec<u64> = (status["balance"]["nodes"].as_array().expect("nodes").iter())
        .map(|n| n["leads"].as_u64().expect("leads"))
        .collect();
    assert_eq!(leads, [u64::from(SHARDS), 0, 0], "{status}");

    let keys: Vec<String> = (0..32).map(|i| format!("packed-{i}")).collect();
    let shards_touched: std::collections::BTreeSet<_> = keys
        .iter()
        .map(|k| kv_shared::shard::shard_for_key(k.as_bytes(), SHARDS))
        .collect();
    assert_eq!(
        shards_touched.len(),
        SHARDS as usize,
        "the keys cover every shard"
    );
    for k in &keys {
        client.put(k, "before");
    }

    c.kill9(n1);
    kv_e2e::wait_for(
        "node 2 leading every shard after node 1's kill",
        FAILOVER_TIMEOUT,
        || {
            let st2 = client.status(n2)?;
            let st3 = client.status(n3)?;
            let agreed = st3
                .shards
                .iter()
                .all(|r| r.role != Role::Leader && r.leader == Some(n2));
            (leads_every_shard(&st2) && agreed).then_some(())
        },
    );
    for k in &keys {
        client.put(k, "after");
    }
    for k in &keys {
        assert_eq!(client.get(k).as_deref(), Some("after"), "{k}");
    }
    c.assert_alive(n2);
    c.assert_alive(n3);
}
