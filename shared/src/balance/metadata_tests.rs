//! Planner tests of the metadata group listed among the shards: it follows the cluster
//! (off draining and dead nodes, spread) without being held to R or to the leader spread.

use super::*;

fn n(id: u64) -> NodeId {
    NodeId(id)
}

fn shard(id: ShardId, voters: &[u64], leader: u64) -> ShardInfo {
    ShardInfo {
        shard: id,
        voters: voters.iter().map(|v| n(*v)).collect(),
        learners: vec![],
        leader: Some(n(leader)),
        avoid: vec![],
    }
}

/// 3 nodes, R = 3, 4 data shards, the metadata group on all three, led by node 1.
fn three_nodes() -> Cluster {
    let mut shards: Vec<ShardInfo> = (0..4u32)
        .map(|s| shard(ShardId(s), &[1, 2, 3], u64::from(s % 3) + 1))
        .collect();
    shards.push(shard(METADATA_SHARD, &[1, 2, 3], 1));
    Cluster {
        nodes: (1..=3)
            .map(|id| NodeInfo {
                id: n(id),
                state: NodeState::Live,
            })
            .collect(),
        shards,
        replication: 3,
    }
}

fn set_state(c: &mut Cluster, id: u64, state: NodeState) {
    match c.nodes.iter_mut().find(|x| x.id == n(id)) {
        Some(node) => node.state = state,
        None => c.nodes.push(NodeInfo { id: n(id), state }),
    }
}

fn metadata_voters(c: &Cluster) -> Vec<NodeId> {
    let m = c.shards.iter().find(|s| s.shard == METADATA_SHARD);
    m.expect("the metadata group is listed").voters.clone()
}

/// Plans and applies rounds until nothing is left to do (every move completing).
fn settle(c: &mut Cluster) {
    for round in simulate(c, 2, 100) {
        c.apply(&round);
    }
    assert!(plan(c, &[], 2).is_empty(), "settled within 100 rounds");
}

#[test]
fn replacing_every_bootstrap_node_moves_the_metadata_group_onto_the_new_ones() {
    let mut c = three_nodes();
    for (new, old) in [(4, 1), (5, 2), (6, 3)] {
        set_state(&mut c, new, NodeState::Live);
        set_state(&mut c, old, NodeState::Draining);
        settle(&mut c);
        let a = assess(&c);
        let left = a
            .nodes
            .iter()
            .find(|x| x.id == n(old))
            .map_or(0, |x| x.replicas);
        assert_eq!(
            left, 0,
            "node {old} drained, the metadata group included: {c:?}"
        );
        assert!(!metadata_voters(&c).contains(&n(old)));
        set_state(&mut c, old, NodeState::Dead);
        c.nodes.retain(|x| x.id != n(old));
    }
    assert_eq!(metadata_voters(&c), vec![n(4), n(5), n(6)]);
    assert!(assess(&c).balanced(), "{:?}", assess(&c));
}

#[test]
fn the_metadata_replica_of_a_dead_node_is_rebuilt_first_pass_with_the_shards() {
    let mut c = three_nodes();
    set_state(&mut c, 4, NodeState::Live);
    set_state(&mut c, 1, NodeState::Dead);
    let p = plan(&c, &[], 10);
    let m = p.moves.iter().find(|m| m.shard == METADATA_SHARD);
    assert_eq!(
        m.copied(),
        Some(Move {
            shard: METADATA_SHARD,
            from: n(1),
            to: n(4),
            reason: MoveReason::Evacuate,
        })
    );
}

#[test]
fn the_metadata_group_keeps_its_voter_count_and_its_leader_is_not_spread() {
    // Five voters on a cluster of R = 3: not a shard with the wrong replica count.
    let mut c = three_nodes();
    for id in 4..=5 {
        set_state(&mut c, id, NodeState::Live);
    }
    for s in &mut c.shards {
        if s.shard == METADATA_SHARD {
            s.voters = (1..=5).map(n).collect();
        }
    }
    settle(&mut c);
    let p = plan(&c, &[], 2);
    assert!(p.stuck.iter().all(|s| s.shard != METADATA_SHARD), "{p:?}");
    let a = assess(&c);
    assert!(
        a.miscounted_shards.is_empty() && a.short_shards.is_empty(),
        "{a:?}"
    );
    assert_eq!(metadata_voters(&c).len(), 5);
    // Node 1 leads the metadata group on top of its shards; no transfer ever names it.
    for round in simulate(&three_nodes(), 2, 20) {
        assert!(round
            .leader_transfers
            .iter()
            .all(|t| t.shard != METADATA_SHARD));
    }
}

#[test]
fn moving_the_metadata_leaders_replica_counts_no_data_leadership() {
    // Node 1 leads the metadata group and no data shard: moving that replica off it
    // must not take a data leadership from it (the planner's counts would underflow).
    let mut c = three_nodes();
    for s in &mut c.shards {
        if s.shard != METADATA_SHARD {
            s.leader = Some(n(2));
        }
    }
    set_state(&mut c, 4, NodeState::Live);
    set_state(&mut c, 1, NodeState::Draining);
    let p = plan(&c, &[], 10);
    assert!(p
        .moves
        .iter()
        .any(|m| m.shard == METADATA_SHARD && m.from == n(1)));
}

#[test]
fn a_metadata_group_on_every_live_node_keeps_a_drained_replica_without_being_stuck() {
    // Five nodes, the metadata group on all five: nothing can take node 5's replica.
    let mut c = three_nodes();
    for id in 4..=5 {
        set_state(&mut c, id, NodeState::Live);
    }
    for s in &mut c.shards {
        if s.shard == METADATA_SHARD {
            s.voters = (1..=5).map(n).collect();
        }
    }
    set_state(&mut c, 5, NodeState::Draining);
    let p = plan(&c, &[], 10);
    assert!(p.stuck.iter().all(|s| s.shard != METADATA_SHARD), "{p:?}");
    assert!(p.moves.iter().all(|m| m.shard != METADATA_SHARD), "{p:?}");
}
