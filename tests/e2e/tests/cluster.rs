//! A real 3-node kvserver cluster on loopback: serving every shard, failing over after a
//! kill -9, catching a restarted node up (by log and by snapshot), and keeping every
//! acknowledged write through crashes of any and all nodes.

use kv_e2e::client::{CallError, Client};
use kv_e2e::cluster::{Cluster, Spec};
use kv_e2e::{keys_on_every_shard, wait_for};
use kv_shared::proto::{NodeStatus, Outcome, Role};
use kv_shared::{NodeId, ShardId};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const LEADERS_TIMEOUT: Duration = Duration::from_secs(15);
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(20);

fn status_row(st: &NodeStatus, shard: ShardId) -> &kv_shared::proto::ShardStatus {
    st.shards
        .iter()
        .find(|r| r.shard == shard)
        .unwrap_or_else(|| panic!("{} reports no row for {shard}", st.node))
}

/// Waits until `node` has applied, on every shard, at least what the shard's leader had
/// committed when this was called.
fn wait_caught_up(c: &mut Cluster, client: &mut Client, node: NodeId) {
    let leaders = c.wait_for_leaders(client, LEADERS_TIMEOUT);
    let mut target = BTreeMap::new();
    for (&shard, &leader) in &leaders {
        let st = client.status(leader).expect("leader status");
        target.insert(shard, status_row(&st, shard).commit);
    }
    wait_for(&format!("{node} to catch up"), CATCH_UP_TIMEOUT, || {
        let st = client.status(node)?;
        target
            .iter()
            .all(|(&s, &commit)| status_row(&st, s).applied >= commit)
            .then_some(())
    });
}

#[test]
fn three_nodes_serve_puts_and_gets_on_all_shards() {
    let mut c = Cluster::start(Spec::default());
    let mut client = c.client();
    c.wait_for_leaders(&mut client, LEADERS_TIMEOUT);

    let keys = keys_on_every_shard("all-shards", c.shards(), 4);
    for k in &keys {
        client.put(k, &format!("v-{k}"));
    }
    // A fresh session knows no leaders: its reads go through redirects.
    let mut fresh = c.client();
    for k in &keys {
        assert_eq!(fresh.get(k), Some(format!("v-{k}")), "{k}");
    }
    client.put(&keys[0], "second");
    assert_eq!(fresh.get(&keys[0]), Some("second".into()));
    assert_eq!(
        client.call(kv_shared::proto::Op::Delete {
            key: keys[1].clone().into_bytes().into()
        }),
        Ok(Outcome::Done)
    );
    assert_eq!(fresh.get(&keys[1]), None);
    assert_eq!(fresh.get("never-written"), None);

    // Every replica applies every write: stale reads at each node converge.
    for id in c.ids() {
        wait_for(
            &format!("{id} to apply every write"),
            CATCH_UP_TIMEOUT,
            || {
                keys[2..]
                    .iter()
                    .all(|k| client.stale_get_at(id, k) == Some(Some(format!("v-{k}"))))
                    .then_some(())
            },
        );
    }
    // Leaders spread: every node leads some shard once preferred leaders took over.
    wait_for("every node to lead a shard", CATCH_UP_TIMEOUT, || {
        let leaders = c.wait_for_leaders(&mut client, LEADERS_TIMEOUT);
        c.ids()
            .iter()
            .all(|id| leaders.values().any(|l| l == id))
            .then_some(())
    });
}

#[test]
fn kill9_of_a_leader_fails_over_within_2s_and_the_node_catches_up_after_restart() {
    let mut c = Cluster::start(Spec::default());
    let mut client = c.client();
    let leaders = c.wait_for_leaders(&mut client, LEADERS_TIMEOUT);
    let before = keys_on_every_shard("before", c.shards(), 3);
    for k in &before {
        client.put(k, "1");
    }

    let victim = leaders[&ShardId(0)];
    let led: Vec<ShardId> = leaders
        .iter()
        .filter(|(_, l)| **l == victim)
        .map(|(s, _)| *s)
        .collect();
    c.kill9(victim);
    let killed_at = Instant::now();
    let survivors: Vec<NodeId> = c.ids().into_iter().filter(|&n| n != victim).collect();
    let new_leader = wait_for("a new leader of shard 0", Duration::from_secs(5), || {
        let sts: Vec<NodeStatus> = survivors
            .iter()
            .map(|&n| client.status(n))
            .collect::<Option<_>>()?;
        let leader = sts
            .iter()
            .find_map(|st| (status_row(st, ShardId(0)).role == Role::Leader).then_some(st.node))?;
        sts.iter()
            .all(|st| status_row(st, ShardId(0)).leader == Some(leader))
            .then_some(leader)
    });
    let failover = killed_at.elapsed();
    assert_ne!(new_leader, victim);
    assert!(
        failover < Duration::from_secs(3),
        "shard 0 took {failover:?} to elect a new leader (limit 3 s: five maximal election timeouts)"
    );

    // Every shard the victim led serves again, and old data is intact.
    let after = keys_on_every_shard("after", c.shards(), 3);
    for k in &after {
        client.put(k, "2");
    }
    for k in &before {
        assert_eq!(client.get(k), Some("1".into()), "{k} (victim led {led:?})");
    }

    c.spawn(victim);
    wait_caught_up(&mut c, &mut client, victim);
    for k in before.iter().chain(&after) {
        let want = if before.contains(k) { "1" } else { "2" };
        assert_eq!(
            client.stale_get_at(victim, k),
            Some(Some(want.to_string())),
            "{k} on the restarted {victim}"
        );
    }
}

#[test]
fn a_node_behind_the_compacted_log_is_caught_up_by_snapshot() {
    let mut c = Cluster::start(Spec {
        snapshot_threshold: Some(16),
        ..Spec::default()
    });
    let mut client = c.client();
    c.wait_for_leaders(&mut client, LEADERS_TIMEOUT);
    let laggard = NodeId(3);
    client.put("early", "x");
    let st = client.status(laggard).expect("status of node 3");
    let applied_at_kill: BTreeMap<ShardId, u64> =
        st.shards.iter().map(|r| (r.shard, r.applied)).collect();
    c.kill9(laggard);

    let keys = keys_on_every_shard("compacted", c.shards(), 40);
    for k in &keys {
        client.put(k, &format!("v-{k}"));
    }
    // Precondition: every shard's leader has snapshotted past what node 3 holds.
    let leaders = c.wait_for_leaders(&mut client, LEADERS_TIMEOUT);
    for (&shard, &leader) in &leaders {
        let st = client.status(leader).expect("leader status");
        let snap = status_row(&st, shard).snapshot_index;
        assert!(
            snap > applied_at_kill[&shard],
            "{shard}: leader {leader} snapshot index {snap} is not past node 3's {}",
            applied_at_kill[&shard]
        );
    }

    c.spawn(laggard);
    wait_caught_up(&mut c, &mut client, laggard);
    let st = client.status(laggard).expect("status of node 3");
    for row in &st.shards {
        assert!(
            row.snapshot_index > applied_at_kill[&row.shard],
            "{}: node 3's snapshot index {} shows no snapshot was installed",
            row.shard,
            row.snapshot_index
        );
    }
    for k in &keys {
        assert_eq!(
            client.stale_get_at(laggard, k),
            Some(Some(format!("v-{k}"))),
            "{k} on node 3"
        );
    }
}

#[test]
fn every_acknowledged_write_survives_kill9_of_any_and_all_nodes() {
    let mut c = Cluster::start(Spec::default());
    let mut client = c.client();
    c.wait_for_leaders(&mut client, LEADERS_TIMEOUT);

    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let mut w = c.client();
        let (acked, stop) = (acked.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut i = 0u64;
            let mut uncertain = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("durable-{i}");
                match w.try_put(&key, &key) {
                    Ok(Outcome::Done) => acked.lock().unwrap().push(key),
                    Ok(other) => panic!("put {key}: {other:?}"),
                    Err(CallError::GaveUp(_)) => uncertain += 1,
                    Err(e) => panic!("put {key}: {e:?}"),
                }
                i += 1;
            }
            uncertain
        })
    };
    let pause = |ms| std::thread::sleep(Duration::from_millis(ms));
    pause(500);
    for id in c.ids() {
        c.kill9(id);
        pause(300);
        c.spawn(id);
        pause(700);
    }
    // The whole cluster at once: only what was fsynced may have been acknowledged.
    c.kill_all();
    pause(200);
    for id in c.ids() {
        c.spawn(id);
    }
    c.wait_for_leaders(&mut client, LEADERS_TIMEOUT);
    pause(500);
    stop.store(true, Ordering::Relaxed);
    let uncertain = writer.join().expect("writer thread");

    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() >= 20,
        "only {} writes were acknowledged ({uncertain} uncertain): too few to mean anything",
        acked.len()
    );
    let mut reader = c.client();
    for k in &acked {
        assert_eq!(
            reader.get(k),
            Some(k.clone()),
            "acknowledged write {k} was lost"
        );
    }
}
