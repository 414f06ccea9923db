//! Tests of the balancer's memory across metadata leader changes and of its leader
//! transfer pacing (the planner itself is tested in `kv_shared::balance`).

use super::memory::{moving_shards, State};
use super::pacing::{caught_up, pace, PacingInput, TRANSFERS_PER_NODE_MAX};
use super::{step_down, MoveResult};
use kv_shared::balance::{
    Cluster, LeaderTransfer, Move, MoveReason, NodeInfo, NodeState, ShardInfo,
};
use kv_shared::config::BalancerConfig;
use kv_shared::{NodeId, ShardId};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use tokio::task::JoinSet;

fn n(id: u64) -> NodeId {
    NodeId(id)
}

fn state(down_after_ms: u64, started: Instant) -> State {
    let config = BalancerConfig {
        down_after_ms,
        ..BalancerConfig::default()
    };
    State::new(config, 3, started)
}

#[tokio::test]
async fn losing_the_metadata_leadership_cancels_the_move_tasks_at_once() {
    let mut s = state(60_000, Instant::now());
    s.leading = true;
    let m = Move {
        shard: ShardId(3),
        from: n(1),
        to: n(4),
        reason: MoveReason::Balance,
    };
    s.in_flight.push(m);
    let mut running: JoinSet<MoveResult> = JoinSet::new();
    running.spawn(async move {
        // A move whose answer would take the whole MOVE_WAIT.
        std::future::pending::<()>().await;
        unreachable!("the task is cancelled")
    });
    step_down(&mut s, &mut running);
    let joined = tokio::time::timeout(Duration::from_secs(1), running.join_next())
        .await
        .expect("the move task ends at once");
    assert!(joined.expect("one task").unwrap_err().is_cancelled());
    assert!(running.is_empty());
    assert!(s.in_flight.is_empty() && !s.leading);
}

#[test]
fn the_down_timer_outlives_a_change_of_metadata_leader() {
    let t0 = Instant::now();
    let mut s = state(3_000, t0);
    let at = |ms| t0 + Duration::from_millis(ms);
    // Heard while another node led: node 2 last answered at 1 s.
    s.hear_nodes(at(1_000), [n(1), n(2)].into_iter());
    s.hear_nodes(at(3_500), [n(1)].into_iter());
    s.leading = true;
    s.stop_leading();
    s.leading = true;
    // Leading from 3.5 s on: node 2 is down too long at 4 s, not 3 s after this lead began.
    assert!(s.silent_too_long(n(2), at(4_000)));
    assert!(!s.silent_too_long(n(1), at(4_000)));
    // A node never heard is timed from the balancer's start.
    assert!(!s.silent_too_long(n(3), at(2_999)));
    assert!(s.silent_too_long(n(3), at(3_000)));
}

fn shard(id: u32, voters: &[u64], learners: &[u64]) -> ShardInfo {
    ShardInfo {
        shard: ShardId(id),
        voters: voters.iter().map(|v| n(*v)).collect(),
        learners: learners.iter().map(|v| n(*v)).collect(),
        leader: Some(n(voters[0])),
        avoid: vec![],
    }
}

#[test]
fn shards_shown_moving_are_the_ones_with_learners_or_an_extra_voter() {
    let cluster = Cluster {
        nodes: (1..=4)
            .map(|id| NodeInfo {
                id: n(id),
                state: NodeState::Live,
            })
            .collect(),
        shards: vec![
            shard(0, &[1, 2, 3], &[]),
            shard(1, &[1, 2, 3], &[4]),
            shard(2, &[1, 2, 3, 4], &[]),
            shard(3, &[1, 2, 3], &[]),
        ],
        replication: 3,
        leaders: kv_shared::config::LeaderPolicy::Spread,
    };
    let own = Move {
        shard: ShardId(3),
        from: n(1),
        to: n(4),
        reason: MoveReason::Balance,
    };
    let moving = moving_shards(&cluster, &[own]);
    assert_eq!(moving, [1, 2, 3].map(ShardId).into_iter().collect());
}

fn t(shard: u32, from: u64, to: u64) -> LeaderTransfer {
    LeaderTransfer {
        shard: ShardId(shard),
        from: n(from),
        to: n(to),
    }
}

#[test]
fn leader_transfers_are_paced() {
    // 3 -> 5 nodes: 24 transfers from nodes 1-3 to nodes 4 and 5, planned in one round.
    let planned: Vec<LeaderTransfer> = (0..24u32)
        .map(|s| t(s, u64::from(s % 3) + 1, u64::from(s % 2) + 4))
        .collect();
    let lagging = |shard: ShardId, _| shard != ShardId(1);
    let moving: BTreeSet<ShardId> = [ShardId(0)].into_iter().collect();
    let input = PacingInput {
        settling: &[],
        moving: &moving,
        transfers_max: 4,
        caught_up: &lagging,
    };
    let now = pace(&planned, &input);
    assert_eq!(now.len(), 4, "{now:?}");
    assert!(now.iter().all(|x| x.shard != ShardId(0)), "a moving shard");
    assert!(
        now.iter().all(|x| x.shard != ShardId(1)),
        "a lagging target"
    );
    for node in 1..=5 {
        let part = now.iter().filter(|x| x.from == n(node) || x.to == n(node));
        assert!(
            part.count() <= TRANSFERS_PER_NODE_MAX,
            "node {node}: {now:?}"
        );
    }
    // With those settling, nothing more until they show; shards settling are skipped.
    let settling = now.clone();
    let input = PacingInput {
        settling: &settling,
        ..input
    };
    assert!(pace(&planned, &input).is_empty());
    let two = &settling[..2];
    let input = PacingInput {
        settling: two,
        ..input
    };
    let more = pace(&planned, &input);
    assert_eq!(more.len(), 2, "{more:?}");
    assert!(more.iter().all(|x| !two.iter().any(|y| y.shard == x.shard)));
}

#[test]
fn a_target_is_caught_up_only_when_it_reported_an_index_near_the_leaders() {
    assert!(caught_up(Some(1_000), 1_000));
    assert!(caught_up(Some(900), 1_000));
    assert!(!caught_up(Some(10), 1_000));
    assert!(!caught_up(None, 0));
}
