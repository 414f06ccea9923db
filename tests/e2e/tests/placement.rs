//! Real kvserver processes with each shard on R of N nodes: every node holds only its
//! share of the replicas, leaders spread over the nodes, kvcli given one node's address
//! learns the others and reaches every shard, and `kvcli shard leader` moves a shard's
//! leadership for good.

use kv_e2e::cli;
use kv_e2e::cluster::{Cluster, Spec};
use kv_shared::config::ClusterConfig;
use kv_shared::proto::{NodeStatus, Role};
use std::collections::BTreeMap;
use std::time::Duration;

const LEADERS_TIMEOUT: Duration = Duration::from_secs(20);
/// Leader spreading hands a shard over at most once every few election timeouts.
const SPREAD_TIMEOUT: Duration = Duration::from_secs(40);
const RUN_TIMEOUT: Duration = Duration::from_secs(60);

#[test]
fn four_nodes_with_three_replicas_serve_every_shard_through_one_address_and_move_a_leader() {
    let shards = 8;
    let mut c = Cluster::start(Spec {
        nodes: 4,
        shards,
        replication: Some(3),
        ..Spec::default()
    });
    let mut client = c.client();
    c.wait_for_leaders(&mut client, LEADERS_TIMEOUT);
    let ids = c.ids();
    let statuses = |client: &mut kv_e2e::client::Client| -> Option<Vec<NodeStatus>> {
        ids.iter().map(|&id| client.status(id)).collect()
    };
    for st in statuses(&mut client).expect("every node answers") {
        assert_eq!(
            st.shards.len(),
            6,
            "{}: 8 shards x 3 replicas / 4 nodes",
            st.node
        );
        assert_eq!(st.routes.len(), shards as usize);
        assert_eq!(st.nodes.len(), 4, "{} names every node", st.node);
        for row in &st.shards {
            assert!(st.routes[row.shard.0 as usize].voters.contains(&st.node));
        }
    }
    kv_e2e::wait_for(
        "every node leading 2 of the 8 shards",
        SPREAD_TIMEOUT,
        || {
            let mut led: BTreeMap<_, usize> = BTreeMap::new();
            for st in statuses(&mut client)? {
                let n = st.shards.iter().filter(|r| r.role == Role::Leader).count();
                led.insert(st.node, n);
            }
            led.values().all(|&n| n == 2).then_some(())
        },
    );

    let config = ClusterConfig::load(c.config_path()).expect("the cluster file loads");
    let first = config.nodes[0].addr.to_string();
    let cluster_id = config.cluster_id.to_string();
    let key_file = c.key_path("admin").display().to_string();
    // kvcli given one node only: it must learn the others from that node.
    let one_node = [
        "--nodes",
        first.as_str(),
        "--cluster-id",
        cluster_id.as_str(),
        "--key-file",
        key_file.as_str(),
    ];
    let keys: Vec<String> = (0..40).map(|i| format!("placed-{i}")).collect();
    let mut script: String = keys.iter().map(|k| format!("put {k} v-{k}\n")).collect();
    script.extend(keys.iter().map(|k| format!("get {k}\n")));
    let run = cli::run(&one_node, &script, RUN_TIMEOUT);
    assert_eq!(run.code, Some(0), "kvcli failed: {run:?}");
    let mut expected = vec!["OK".to_string(); keys.len()];
    expected.extend(keys.iter().map(|k| format!("v-{k}")));
    assert_eq!(run.lines(), expected);
    let touched: std::collections::BTreeSet<_> = keys
        .iter()
        .map(|k| kv_shared::shard::shard_for_key(k.as_bytes(), shards))
        .collect();
    assert_eq!(touched.len(), shards as usize, "the keys cover every shard");

    // `shard leader`: a voter that does not lead shard 0 takes it over and keeps it.
    let st0 = statuses(&mut client).expect("every node answers");
    let route = &st0[0].routes[0];
    let leader = route.leader.expect("shard 0 has a leader");
    let target = *route
        .voters
        .iter()
        .find(|v| **v != leader)
        .expect("3 voters");
    let target_arg = target.0.to_string();
    let args: Vec<&str> = one_node
        .iter()
        .copied()
        .chain(["shard", "leader", "0", target_arg.as_str()])
        .collect();
    let run = cli::run(&args, "", RUN_TIMEOUT);
    assert_eq!(
        (run.code, run.stdout.as_str()),
        (Some(0), "OK\n"),
        "{run:?}"
    );
    let leads_shard_0 = |client: &mut kv_e2e::client::Client| {
        let st = client.status(target)?;
        st.shards
            .iter()
            .any(|r| r.shard.0 == 0 && r.role == Role::Leader)
            .then_some(())
    };
    kv_e2e::wait_for("the chosen node leading shard 0", SPREAD_TIMEOUT, || {
        leads_shard_0(&mut client)
    });
    // Several spreading periods later it still leads: every replica holds the preference.
    std::thread::sleep(Duration::from_secs(5));
    assert!(
        leads_shard_0(&mut client).is_some(),
        "{target} kept shard 0"
    );
}
