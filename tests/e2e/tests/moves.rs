//! Replica moves between real kvserver processes under load: 4 nodes, 3 replicas per
//! shard, `kvcli shard move` moves a follower's replica, a leader's replica, and a third
//! one during which the shard's leader is kill -9'd and restarted, all while a
//! `kvcli bench --check` load and a writer of unique keys run. The bench history must be
//! linearizable, every acknowledged write must read back, and `kvcli status` must show
//! each moved shard's new replica set at a newer epoch.

use kv_e2e::cli;
use kv_e2e::cluster::{Cluster, Spec};
use kv_e2e::load::{
    assert_acked_read_back, assert_bench_linearizable, start_checked_bench, AckedWriter,
};
use kv_shared::proto::ShardRoute;
use kv_shared::{NodeId, ShardId};
use serde_json::Value;
use std::time::{Duration, Instant};

const SHARDS: u32 = 4;
const LEADERS_TIMEOUT: Duration = Duration::from_secs(20);
/// One `kvcli shard move` (learner catch-up, promotion, leader hand-over, removal).
const MOVE_TIMEOUT: Duration = Duration::from_secs(60);
/// The whole move during which the leader is killed and restarted, retries included.
const MOVE_WITH_KILL_TIMEOUT: Duration = Duration::from_secs(90);
const BENCH_SECONDS: u64 = 40;

/// The newest replica set of every shard any running node reports.
fn routes(c: &Cluster, client: &mut kv_e2e::client::Client) -> Vec<ShardRoute> {
    let mut best: Vec<Option<ShardRoute>> = vec![None; SHARDS as usize];
    for id in c.ids() {
        if !c.is_running(id) {
            continue;
        }
        let Some(st) = client.status(id) else {
            continue;
        };
        for r in st.routes {
            let slot = &mut best[r.shard.0 as usize];
            let newer = slot
                .as_ref()
                .is_none_or(|b| (r.epoch, r.leader.is_some()) > (b.epoch, b.leader.is_some()));
            if newer {
                *slot = Some(r);
            }
        }
    }
    best.into_iter()
        .map(|r| r.expect("some node reports every shard"))
        .collect()
}

/// The one node outside `route`'s replica set (4 nodes, 3 replicas).
fn outsider(route: &ShardRoute, ids: &[NodeId]) -> NodeId {
    let out: Vec<NodeId> = ids
        .iter()
        .copied()
        .filter(|n| !route.voters.contains(n) && !route.learners.contains(n))
        .collect();
    assert_eq!(out.len(), 1, "one node outside {route:?}");
    out[0]
}

/// `kvcli shard move S --from A --to B`.
fn shard_move(
    config: &str,
    shard: ShardId,
    from: NodeId,
    to: NodeId,
    timeout: Duration,
) -> cli::Run {
    let (s, f, t) = (shard.0.to_string(), from.0.to_string(), to.0.to_string());
    cli::with_cluster(
        config,
        &["shard", "move", &s, "--from", &f, "--to", &t],
        timeout,
    )
}

/// True once `route` holds `to` and not `from` among exactly 3 voters, no learners.
fn moved(route: &ShardRoute, from: NodeId, to: NodeId) -> bool {
    route.voters.len() == 3
        && route.learners.is_empty()
        && route.voters.contains(&to)
        && !route.voters.contains(&from)
}

#[test]
fn replicas_move_under_load_and_a_kill_mid_move_loses_no_write() {
    let mut c = Cluster::start(Spec {
        nodes: 4,
        shards: SHARDS,
        replication: Some(3),
        // Small, so that new replicas catch up from a snapshot, not only from the log.
        snapshot_threshold: Some(200),
    });
    let mut client = c.client();
    c.wait_for_leaders(&mut client, LEADERS_TIMEOUT);
    let ids = c.ids();
    let config = c.config_path().to_str().expect("utf-8 path").to_string();

    let bench = start_checked_bench(&config, BENCH_SECONDS);
    // A writer of unique keys: every put kvcli answers OK must read back at the end.
    let writer = AckedWriter::start(&config, "mv");
    std::thread::sleep(Duration::from_secs(3));

    // 1. A follower's replica of shard 0 moves to the node outside its set.
    let before = routes(&c, &mut client);
    let r0 = &before[0];
    let leader0 = r0.leader.expect("shard 0 has a leader");
    let from0 = *r0.voters.iter().find(|v| **v != leader0).expect("3 voters");
    let to0 = outsider(r0, &ids);
    let run = shard_move(&config, ShardId(0), from0, to0, MOVE_TIMEOUT);
    assert_eq!(run.code, Some(0), "move shard 0 {from0} -> {to0}: {run:?}");

    // 2. The leader's replica of shard 1 moves: leadership has to go first.
    let r1 = &before[1];
    let from1 = r1.leader.expect("shard 1 has a leader");
    let to1 = outsider(r1, &ids);
    let run = shard_move(&config, ShardId(1), from1, to1, MOVE_TIMEOUT);
    assert_eq!(run.code, Some(0), "move shard 1 {from1} -> {to1}: {run:?}");

    // 3. Shard 2's leader is kill -9'd while it drives a move, and restarted. The move is
    // asked again until the shard holds the new replica: an interrupted move either
    // finishes under the next leader or is undone and can be asked again.
    let r2 = &before[2];
    let leader2 = r2.leader.expect("shard 2 has a leader");
    let from2 = *r2.voters.iter().find(|v| **v != leader2).expect("3 voters");
    let to2 = outsider(r2, &ids);
    let mover = {
        let config = config.clone();
        std::thread::spawn(move || shard_move(&config, ShardId(2), from2, to2, MOVE_TIMEOUT))
    };
    std::thread::sleep(Duration::from_millis(150));
    c.kill9(leader2);
    std::thread::sleep(Duration::from_secs(2));
    c.spawn(leader2);
    let first = mover.join().expect("mover thread");
    eprintln!(
        "the move during the kill ended with {:?}: {}{}",
        first.code, first.stdout, first.stderr
    );
    let deadline = Instant::now() + MOVE_WITH_KILL_TIMEOUT;
    loop {
        let now = routes(&c, &mut client);
        if moved(&now[2], from2, to2) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "shard 2 never got {to2} in place of {from2}: {:?}",
            now[2]
        );
        if now[2].learners.is_empty() && now[2].voters.len() == 3 {
            let run = shard_move(&config, ShardId(2), from2, to2, MOVE_TIMEOUT);
            eprintln!(
                "move shard 2 again: {:?} {}{}",
                run.code, run.stdout, run.stderr
            );
        } else {
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    let acked = writer.finish();
    assert_bench_linearizable(bench);
    assert_acked_read_back(&config, &acked);

    // `kvcli status` shows each moved shard's new replica set at a newer epoch.
    let run = cli::with_cluster(&config, &["--json", "status"], Duration::from_secs(30));
    let status: Value = serde_json::from_str(run.stdout.trim())
        .unwrap_or_else(|e| panic!("status --json: {e}: {run:?}"));
    let shards = status["shards"].as_array().expect("shards");
    for (shard, from, to) in [(0, from0, to0), (1, from1, to1), (2, from2, to2)] {
        let row = shards
            .iter()
            .find(|r| r["shard"] == shard)
            .unwrap_or_else(|| panic!("status lists shard {shard}: {status}"));
        let voters: Vec<u64> = row["voters"]
            .as_array()
            .expect("voters")
            .iter()
            .map(|v| v.as_u64().expect("node id"))
            .collect();
        assert!(
            voters.contains(&to.0) && !voters.contains(&from.0) && voters.len() == 3,
            "shard {shard}: {to} in place of {from}: {row}"
        );
        let epoch = row["epoch"].as_u64().expect("epoch");
        assert!(
            epoch > before[shard as usize].epoch,
            "shard {shard}: epoch {epoch} after the move, {} before",
            before[shard as usize].epoch
        );
    }
    for id in ids {
        c.assert_alive(id);
    }
}
