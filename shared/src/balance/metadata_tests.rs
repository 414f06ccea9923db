//! Planner tests of the metadata group listed among the shards: it follows the cluster
//! (off draining and dead nodes, spread) without being held to R or to the leader spread,
//! and grows to 5 voters and shrinks to 3 with the number of live nodes.

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
        leaders: LeaderPolicy::Spread,
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

/// The plan's changes of the metadata group's voter count, and its evacuations.
fn metadata_moves(p: &Plan) -> Vec<Move> {
    p.moves
        .iter()
        .copied()
        .filter(|m| m.shard == METADATA_SHARD && m.reason != MoveReason::Balance)
        .collect()
}

fn add_live(c: &mut Cluster, ids: std::ops::RangeInclusive<u64>) {
    for id in ids {
        set_state(c, id, NodeState::Live);
    }
}

#[test]
fn three_then_five_then_seven_nodes_grow_the_group_to_five_and_stop() {
    let mut c = three_nodes();
    settle(&mut c);
    assert_eq!(metadata_voters(&c).len(), 3);
    add_live(&mut c, 4..=4);
    // Four live nodes: still 3 voters (an even count buys nothing).
    let p = plan(&c, &[], 4);
    assert!(metadata_moves(&p).is_empty(), "{p:?}");
    add_live(&mut c, 5..=5);
    let p = plan(&c, &[], 4);
    let grow = metadata_moves(&p);
    assert_eq!(grow.len(), 1, "one change at a time: {p:?}");
    assert_eq!(grow[0].reason, MoveReason::GrowMetadata);
    assert!(grow[0].from.is_none() && [n(4), n(5)].contains(&grow[0].to));
    // While that voter is being added, nothing else touches the group.
    let again = plan(&c, &grow, 4);
    assert!(metadata_moves(&again).is_empty(), "{again:?}");
    settle(&mut c);
    assert_eq!(metadata_voters(&c), (1..=5).map(n).collect::<Vec<_>>());
    assert!(assess(&c).balanced(), "{:?}", assess(&c));
    add_live(&mut c, 6..=7);
    settle(&mut c);
    assert_eq!(metadata_voters(&c).len(), 5, "five is the most: {c:?}");
    assert!(assess(&c).balanced(), "{:?}", assess(&c));
}

#[test]
fn a_drain_from_five_nodes_to_four_shrinks_the_group_to_three() {
    let mut c = three_nodes();
    add_live(&mut c, 4..=5);
    settle(&mut c);
    assert_eq!(metadata_voters(&c).len(), 5);
    set_state(&mut c, 5, NodeState::Draining);
    let p = plan(&c, &[], 4);
    let shrink = metadata_moves(&p);
    assert_eq!(
        shrink,
        vec![Move {
            shard: METADATA_SHARD,
            from: n(5),
            to: NodeId::NONE,
            reason: MoveReason::ShrinkMetadata,
        }],
        "the draining voter goes first: {p:?}"
    );
    assert!(p.stuck.iter().all(|s| s.shard != METADATA_SHARD), "{p:?}");
    settle(&mut c);
    let voters = metadata_voters(&c);
    assert_eq!(voters.len(), 3, "{c:?}");
    assert!(!voters.contains(&n(5)));
    let leader = c
        .shards
        .iter()
        .find(|s| s.shard == METADATA_SHARD)
        .unwrap()
        .leader;
    assert!(voters.contains(&leader.unwrap()), "the leader stays: {c:?}");
    assert_eq!(assess(&c).nodes[4].replicas, 0, "node 5 drained: {c:?}");
}

#[test]
fn a_shrink_never_removes_the_leader_while_another_voter_can_go() {
    let mut c = three_nodes();
    add_live(&mut c, 4..=5);
    for s in &mut c.shards {
        if s.shard == METADATA_SHARD {
            s.voters = (1..=5).map(n).collect();
            s.leader = Some(n(2));
        }
    }
    c.nodes.retain(|x| x.id != n(5));
    set_state(&mut c, 4, NodeState::Dead);
    // Nodes 1-3 live, 4 dead, 5 not listed (so down and not counted): 3 voters wanted.
    let mut removed = Vec::new();
    for _ in 0..2 {
        let m = metadata_moves(&plan(&c, &[], 4));
        assert_eq!(m.len(), 1, "{c:?}");
        assert_ne!(m[0].from, n(2), "not the leader");
        removed.push(m[0].from);
        c.apply(&Plan {
            moves: m,
            ..Plan::default()
        });
    }
    assert_eq!(removed, vec![n(4), n(5)], "dead, then down");
    assert!(metadata_moves(&plan(&c, &[], 4)).is_empty());
}

#[test]
fn a_dead_metadata_voter_is_replaced_and_no_change_drops_below_a_majority() {
    let mut c = three_nodes();
    add_live(&mut c, 4..=6);
    for s in &mut c.shards {
        if s.shard == METADATA_SHARD {
            s.voters = (1..=5).map(n).collect();
        }
    }
    set_state(&mut c, 3, NodeState::Dead);
    let m = metadata_moves(&plan(&c, &[], 10));
    assert_eq!(
        m,
        vec![Move {
            shard: METADATA_SHARD,
            from: n(3),
            to: n(6),
            reason: MoveReason::Evacuate,
        }]
    );
    // Three of five voters silent: the group can commit nothing, so nothing is asked.
    for id in [2, 4] {
        c.nodes.retain(|x| x.id != n(id));
    }
    assert!(metadata_moves(&plan(&c, &[], 10)).is_empty());
    // Three voters, two silent (down), four live nodes outside: no add either (the
    // fourth voter would make a majority of three, and only two answer).
    let mut c = three_nodes();
    add_live(&mut c, 4..=7);
    c.nodes.retain(|x| x.id != n(2) && x.id != n(3));
    assert!(metadata_moves(&plan(&c, &[], 4)).is_empty(), "{c:?}");
}

#[test]
fn a_joining_node_receives_nothing_and_does_not_count_toward_the_group() {
    let mut c = three_nodes();
    add_live(&mut c, 4..=4);
    set_state(&mut c, 5, NodeState::Joining);
    settle(&mut c);
    let a = assess(&c);
    let node5 = a.nodes.iter().find(|x| x.id == n(5)).unwrap();
    assert_eq!(node5.replicas, 0, "{c:?}");
    assert_eq!(metadata_voters(&c).len(), 3);
    set_state(&mut c, 5, NodeState::Live);
    settle(&mut c);
    assert_eq!(metadata_voters(&c).len(), 5);
}
