//! Unit tests of the balance planner: one scenario each, built by hand.

use super::*;

fn n(id: u64) -> NodeId {
    NodeId(id)
}

fn nodes(states: &[(u64, NodeState)]) -> Vec<NodeInfo> {
    states
        .iter()
        .map(|(id, state)| NodeInfo {
            id: n(*id),
            state: *state,
        })
        .collect()
}

fn live(ids: std::ops::RangeInclusive<u64>) -> Vec<NodeInfo> {
    ids.map(|id| NodeInfo {
        id: n(id),
        state: NodeState::Live,
    })
    .collect()
}

fn shard(id: u32, voters: &[u64], leader: u64) -> ShardInfo {
    ShardInfo {
        shard: ShardId(id),
        voters: voters.iter().map(|v| n(*v)).collect(),
        learners: vec![],
        leader: (leader != 0).then_some(n(leader)),
        avoid: vec![],
    }
}

/// 5 nodes, R = 3, 10 shards: shard s on nodes s, s+1, s+2 (wrapping), led by the first.
fn five_nodes() -> Cluster {
    let shards = (0..10u32)
        .map(|s| {
            let v: Vec<u64> = (0..3).map(|k| (u64::from(s) + k) % 5 + 1).collect();
            let mut sorted = v.clone();
            sorted.sort();
            shard(s, &sorted, v[0])
        })
        .collect();
    Cluster {
        nodes: live(1..=5),
        shards,
        replication: 3,
        leaders: LeaderPolicy::Spread,
    }
}

fn with_state(mut c: Cluster, id: u64, state: NodeState) -> Cluster {
    c.nodes.iter_mut().find(|x| x.id == n(id)).unwrap().state = state;
    c
}

#[test]
fn a_balanced_cluster_needs_nothing() {
    let c = five_nodes();
    assert!(assess(&c).balanced(), "{:?}", assess(&c));
    assert_eq!(plan(&c, &[], 4), Plan::default());
}

#[test]
fn a_draining_nodes_replicas_go_to_the_emptiest_live_nodes_within_the_cap() {
    let c = with_state(five_nodes(), 5, NodeState::Draining);
    let p = plan(&c, &[], 4);
    assert_eq!(p.moves.len(), 4, "{p:?}");
    assert!(p.leader_transfers.is_empty());
    let mut shards = BTreeSet::new();
    for m in &p.moves {
        assert_eq!((m.from, m.reason), (n(5), MoveReason::Evacuate));
        assert!(shards.insert(m.shard), "two moves of {}", m.shard);
        assert!(!c.shards[m.shard.0 as usize].voters.contains(&m.to));
    }
    let rounds = simulate(&c, 4, 20);
    let mut end = c.clone();
    for r in &rounds {
        end.apply(r);
    }
    let a = assess(&end);
    assert!(a.balanced(), "{a:?}");
    assert_eq!(a.nodes.iter().find(|x| x.id == n(5)).unwrap().replicas, 0);
    let live_loads: Vec<usize> = a.nodes.iter().take(4).map(|x| x.replicas).collect();
    assert!(live_loads.iter().all(|l| (7..=8).contains(l)), "{a:?}");
}

#[test]
fn a_dead_nodes_replicas_move_before_a_draining_nodes() {
    let c = with_state(
        with_state(five_nodes(), 5, NodeState::Draining),
        4,
        NodeState::Dead,
    );
    let p = plan(&c, &[], 1);
    assert_eq!(p.moves.len(), 1);
    assert_eq!(p.moves[0].from, n(4));
    assert_eq!(p.moves[0].reason, MoveReason::Evacuate);
    let p = plan(&c, &[], 20);
    let firsts: Vec<NodeId> = p.moves.iter().map(|m| m.from).collect();
    let dead = firsts.iter().take_while(|f| **f == n(4)).count();
    assert_eq!(dead, 6, "node 4's six replicas first: {firsts:?}");
}

#[test]
fn repairs_have_a_limit_of_their_own_when_one_is_set() {
    let c = with_state(
        with_state(five_nodes(), 5, NodeState::Draining),
        4,
        NodeState::Dead,
    );
    let limits = MoveLimits {
        moves_max: 1,
        repairs_max: Some(3),
    };
    let from = |p: &Plan| p.moves.iter().map(|m| m.from.0).collect::<Vec<_>>();
    let p = plan_within(&c, &[], limits);
    assert_eq!(from(&p), [4, 4, 4, 5], "three repairs and one drain move");
    // Repairs running use up the repair limit only: the drain still gets its move.
    let repairs: Vec<Move> = p.moves[..3].to_vec();
    let p = plan_within(&c, &repairs, limits);
    assert_eq!(from(&p), [5]);
    // Without a limit of their own, repairs and the drain share one.
    assert_eq!(from(&plan(&c, &[], 4)), [4, 4, 4, 4]);
}

#[test]
fn a_shard_without_a_live_majority_is_stuck_and_down_nodes_are_left_alone() {
    let c = Cluster {
        nodes: nodes(&[
            (1, NodeState::Live),
            (2, NodeState::Down),
            (3, NodeState::Dead),
            (4, NodeState::Live),
            (5, NodeState::Live),
        ]),
        shards: vec![shard(0, &[1, 2, 3], 1), shard(1, &[1, 4, 3], 1)],
        replication: 3,
        leaders: LeaderPolicy::Spread,
    };
    let p = plan(&c, &[], 4);
    assert_eq!(
        p.stuck,
        vec![Stuck {
            shard: ShardId(0),
            node: Some(n(3)),
            reason: StuckReason::NoQuorum
        }]
    );
    assert_eq!(
        p.moves,
        vec![Move {
            shard: ShardId(1),
            from: n(3),
            to: n(5),
            reason: MoveReason::Evacuate
        }]
    );
    let a = assess(&c);
    assert!(!a.balanced());
    assert_eq!(a.short_shards, vec![ShardId(0), ShardId(1)]);
}

#[test]
fn too_few_live_nodes_leave_a_replica_without_a_target() {
    let c = Cluster {
        nodes: nodes(&[
            (1, NodeState::Live),
            (2, NodeState::Live),
            (3, NodeState::Draining),
        ]),
        shards: vec![shard(0, &[1, 2, 3], 3)],
        replication: 3,
        leaders: LeaderPolicy::Spread,
    };
    let p = plan(&c, &[], 4);
    assert!(p.moves.is_empty());
    assert_eq!(
        p.stuck,
        vec![Stuck {
            shard: ShardId(0),
            node: Some(n(3)),
            reason: StuckReason::NoTarget
        }]
    );
}

#[test]
fn a_node_the_shard_avoids_never_receives_it() {
    let mut c = with_state(five_nodes(), 5, NodeState::Draining);
    // Shard 3 is on 4, 5, 1: nodes 2 and 3 could take it; 2 is avoided.
    c.shards[3].avoid = vec![n(2)];
    let p = plan(&c, &[], 10);
    let m = p.moves.iter().find(|m| m.shard == ShardId(3)).unwrap();
    assert_eq!(m.to, n(3));
    c.shards[3].avoid = vec![n(2), n(3)];
    let p = plan(&c, &[], 10);
    assert!(p.moves.iter().all(|m| m.shard != ShardId(3)));
    assert!(p.stuck.contains(&Stuck {
        shard: ShardId(3),
        node: Some(n(5)),
        reason: StuckReason::NoTarget
    }));
}

#[test]
fn moves_in_flight_count_against_the_cap_and_freeze_their_shard() {
    let c = with_state(five_nodes(), 5, NodeState::Draining);
    let running = plan(&c, &[], 2).moves;
    assert_eq!(running.len(), 2);
    let p = plan(&c, &running, 3);
    assert_eq!(p.moves.len(), 1);
    assert!(running.iter().all(|r| r.shard != p.moves[0].shard));
    assert!(plan(&c, &running, 2).moves.is_empty());
    // Learners mean a move the planner did not start: that shard is left alone too.
    let mut c2 = c.clone();
    for s in &mut c2.shards {
        if s.voters.contains(&n(5)) {
            s.learners = vec![n(2)];
        }
    }
    let p2 = plan(&c2, &[], 10);
    assert!(
        p2.moves
            .iter()
            .all(|m| !c2.shards[m.shard.0 as usize].voters.contains(&n(5))),
        "{p2:?}"
    );
    assert!(p2.moves.iter().all(|m| m.reason == MoveReason::Balance));
}

#[test]
fn moves_the_cluster_shows_count_against_the_cap_like_the_callers_own() {
    // A new metadata leader's balancer lists no move of its own, while its predecessor's
    // show as learners or as a shard with one voter too many (promoted, old one not yet
    // removed): they take the cap's places, and their shards are left alone.
    let c = with_state(five_nodes(), 5, NodeState::Draining);
    let mut c2 = c.clone();
    c2.shards[0].learners = vec![n(9)];
    c2.shards[1].voters.push(n(9));
    c2.shards[1].voters.sort();
    let p = plan(&c2, &[], 4);
    assert_eq!(p.moves.len(), 2, "{p:?}");
    assert!(p.moves.iter().all(|m| m.shard.0 > 1), "{p:?}");
    assert!(plan(&c2, &[], 2).moves.is_empty());
    assert!(
        p.stuck.iter().all(|s| s.shard.0 > 1),
        "a shard mid-move is not stuck: {p:?}"
    );
    // Counted once when the caller lists it too.
    let own = Move {
        shard: ShardId(0),
        from: n(1),
        to: n(9),
        reason: MoveReason::Balance,
    };
    assert_eq!(plan(&c2, &[own], 4).moves.len(), 2);
}

#[test]
fn replicas_spread_to_a_new_empty_node() {
    let mut c = five_nodes();
    c.nodes.push(NodeInfo {
        id: n(6),
        state: NodeState::Live,
    });
    let p = plan(&c, &[], 100);
    assert!(p.moves.iter().all(|m| m.to == n(6)), "{p:?}");
    assert!(p.moves.iter().all(|m| m.reason == MoveReason::Balance));
    // 30 replicas over 6 nodes: 5 each, so node 6 gets 5 and each other node gives one.
    assert_eq!(p.moves.len(), 5);
    let from: BTreeSet<NodeId> = p.moves.iter().map(|m| m.from).collect();
    assert_eq!(from.len(), 5);
    // Followers' replicas move, not leaders'.
    for m in &p.moves {
        assert_ne!(c.shards[m.shard.0 as usize].leader, Some(m.from), "{m:?}");
    }
}

#[test]
fn leaders_spread_after_the_replicas_and_never_while_a_move_runs() {
    let mut c = Cluster {
        nodes: live(1..=3),
        shards: (0..6).map(|s| shard(s, &[1, 2, 3], 1)).collect(),
        replication: 3,
        leaders: LeaderPolicy::Spread,
    };
    let p = plan(&c, &[], 4);
    assert!(p.moves.is_empty());
    assert_eq!(p.leader_transfers.len(), 4, "{p:?}");
    c.apply(&p);
    let a = assess(&c);
    assert!(a.balanced(), "{a:?}");
    assert!(a.nodes.iter().all(|x| x.leaders == 2));
    let mut skewed = Cluster {
        nodes: live(1..=3),
        shards: (0..6).map(|s| shard(s, &[1, 2, 3], 1)).collect(),
        replication: 3,
        leaders: LeaderPolicy::Spread,
    };
    skewed.shards[0].learners = vec![n(4)];
    assert!(plan(&skewed, &[], 4).leader_transfers.is_empty());
}

#[test]
fn a_leader_goes_along_a_chain_when_no_single_transfer_helps() {
    // Node 1 leads two shards, node 4 none; 4 is a voter of no shard 1 leads.
    let mut c = Cluster {
        nodes: live(1..=4),
        shards: vec![
            shard(0, &[1, 2], 1),
            shard(1, &[1, 3], 1),
            shard(2, &[2, 4], 2),
            shard(3, &[3, 4], 3),
        ],
        replication: 2,
        leaders: LeaderPolicy::Spread,
    };
    let p = plan(&c, &[], 4);
    assert_eq!(
        p.leader_transfers,
        vec![
            LeaderTransfer {
                shard: ShardId(0),
                from: n(1),
                to: n(2)
            },
            LeaderTransfer {
                shard: ShardId(2),
                from: n(2),
                to: n(4)
            },
        ]
    );
    c.apply(&p);
    assert!(assess(&c).balanced());
}

#[test]
fn a_draining_leader_hands_over_even_when_its_replica_cannot_move() {
    let c = Cluster {
        nodes: nodes(&[
            (1, NodeState::Live),
            (2, NodeState::Live),
            (3, NodeState::Draining),
        ]),
        shards: vec![shard(0, &[1, 2, 3], 3)],
        replication: 3,
        leaders: LeaderPolicy::Spread,
    };
    let p = plan(&c, &[], 4);
    assert_eq!(
        p.leader_transfers,
        vec![LeaderTransfer {
            shard: ShardId(0),
            from: n(3),
            to: n(1)
        }]
    );
}

#[test]
fn a_shard_with_the_wrong_voter_count_is_reported() {
    let c = Cluster {
        nodes: live(1..=4),
        shards: vec![shard(0, &[1, 2], 1), shard(1, &[1, 2, 3], 2)],
        replication: 3,
        leaders: LeaderPolicy::Spread,
    };
    let p = plan(&c, &[], 4);
    assert_eq!(
        p.stuck,
        vec![Stuck {
            shard: ShardId(0),
            node: None,
            reason: StuckReason::WrongReplicaCount(2)
        }]
    );
    assert_eq!(assess(&c).miscounted_shards, vec![ShardId(0)]);
}

#[test]
fn the_same_input_gives_the_same_plan_whatever_the_order() {
    let c = with_state(five_nodes(), 2, NodeState::Dead);
    let mut shuffled = c.clone();
    shuffled.shards.reverse();
    shuffled.nodes.reverse();
    assert_eq!(plan(&c, &[], 3), plan(&shuffled, &[], 3));
}

#[test]
fn the_registry_and_the_down_timer_decide_a_nodes_state() {
    use crate::registry::NodeState as R;
    assert_eq!(node_state(Some(R::Removed), true, false), NodeState::Dead);
    assert_eq!(
        node_state(Some(R::Draining), true, false),
        NodeState::Draining
    );
    assert_eq!(node_state(Some(R::Draining), false, false), NodeState::Down);
    assert_eq!(node_state(Some(R::Draining), false, true), NodeState::Dead);
    assert_eq!(node_state(Some(R::Active), true, true), NodeState::Live);
    assert_eq!(node_state(None, true, false), NodeState::Live);
    assert_eq!(node_state(Some(R::Active), false, false), NodeState::Down);
    assert_eq!(node_state(None, false, true), NodeState::Dead);
}

/// Three nodes, R = 3, six shards led two per node: balanced for spread leaders.
fn three_nodes_spread(leaders: LeaderPolicy) -> Cluster {
    Cluster {
        nodes: live(1..=3),
        shards: (0..6u32)
            .map(|s| shard(s, &[1, 2, 3], u64::from(s) % 3 + 1))
            .collect(),
        replication: 3,
        leaders,
    }
}

#[test]
fn packed_leaders_go_to_each_shards_first_live_voter_and_spread_ones_stay_even() {
    let spread = three_nodes_spread(LeaderPolicy::Spread);
    assert!(assess(&spread).balanced());
    assert_eq!(plan(&spread, &[], 4), Plan::default());

    let mut packed = three_nodes_spread(LeaderPolicy::Pack);
    // The metadata group keeps whoever it elects under either policy.
    packed.shards.push(shard(METADATA_SHARD.0, &[1, 2, 3], 3));
    let a = assess(&packed);
    assert!(!a.balanced());
    assert_eq!((a.leaders_misplaced, a.leaders_over), (4, 0), "{a:?}");
    let p = plan(&packed, &[], 4);
    assert!(p.moves.is_empty());
    let to_one: Vec<(u32, u64, u64)> = p
        .leader_transfers
        .iter()
        .map(|t| (t.shard.0, t.from.0, t.to.0))
        .collect();
    assert_eq!(
        to_one,
        [(1, 2, 1), (2, 3, 1), (4, 2, 1), (5, 3, 1)],
        "every leadership to node 1, counts not evened out"
    );
    let mut end = packed.clone();
    end.apply(&p);
    let a = assess(&end);
    assert!(a.balanced(), "{a:?}");
    assert_eq!(a.nodes[0].leaders, 6);
    assert_eq!(plan(&end, &[], 4), Plan::default());
    // The spread policy undoes a packed cluster: the two policies pull apart.
    end.leaders = LeaderPolicy::Spread;
    assert!(!assess(&end).balanced());
    assert_eq!(plan(&end, &[], 4).leader_transfers.len(), 4);
}

#[test]
fn packed_leaders_pass_over_nodes_that_are_not_live_to_the_next_in_the_order() {
    let mut c = three_nodes_spread(LeaderPolicy::Pack);
    for s in &mut c.shards {
        s.leader = Some(n(1));
    }
    assert!(assess(&c).balanced());
    for state in [NodeState::Down, NodeState::Draining, NodeState::Joining] {
        // Node 1 is gone: its shards elected 2 or 3; every one goes to 2.
        let mut gone = with_state(c.clone(), 1, state);
        for s in &mut gone.shards {
            s.leader = Some(n(s.shard.0 as u64 % 2 + 2));
        }
        let p = plan(&gone, &[], 4);
        assert!(
            p.leader_transfers
                .iter()
                .all(|t| (t.from, t.to) == (n(3), n(2))),
            "{state:?}: {p:?}"
        );
        assert_eq!(p.leader_transfers.len(), 3, "{state:?}: {p:?}");
        let mut end = gone.clone();
        end.apply(&p);
        assert_eq!(assess(&end).leaders_misplaced, 0, "{state:?}");
        // A shard still led by the node that is gone hands over too.
        let mut stale = gone.clone();
        stale.shards[0].leader = Some(n(1));
        let p = plan(&stale, &[], 4);
        assert!(p.leader_transfers.contains(&LeaderTransfer {
            shard: ShardId(0),
            from: n(1),
            to: n(2)
        }));
    }
    // Node 1 back: the leaderships return to it.
    let mut back = c.clone();
    for s in &mut back.shards {
        s.leader = Some(n(2));
    }
    let p = plan(&back, &[], 4);
    assert_eq!(p.leader_transfers.len(), 6);
    assert!(p.leader_transfers.iter().all(|t| t.to == n(1)));
    // No live voter: nothing to hand over to.
    let mut none = c.clone();
    for id in 1..=3 {
        none = with_state(none, id, NodeState::Down);
    }
    assert!(plan(&none, &[], 4).leader_transfers.is_empty());
}

#[test]
fn packed_leaders_with_r_below_n_take_each_shards_lowest_live_voter() {
    let mut c = five_nodes();
    c.leaders = LeaderPolicy::Pack;
    let p = plan(&c, &[], 4);
    let mut end = c.clone();
    end.apply(&p);
    for s in &end.shards {
        assert_eq!(s.leader, s.voters.first().copied(), "{s:?}");
    }
    assert!(assess(&end).balanced());
    // No transfer while a move runs, as with spread leaders.
    let draining = with_state(end.clone(), 1, NodeState::Draining);
    let p = plan(&draining, &[], 4);
    assert!(
        !p.moves.is_empty() && p.leader_transfers.is_empty(),
        "{p:?}"
    );
}
