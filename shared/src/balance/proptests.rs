//! Property tests of the balance planner: random clusters, rounds of plans whose moves
//! complete in a random order, every round checked against the planner's promises, and
//! the end state balanced within a bounded number of rounds.

use super::*;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::{subsequence, Index};

/// A random cluster and the randomness that decides which moves complete each round.
#[derive(Clone, Debug)]
struct Case {
    cluster: Cluster,
    moves_max: usize,
    /// Round r: bit i set means the i-th move started in round r completes at once
    /// (otherwise it completes one round later).
    completions: Vec<u64>,
}

/// `with_down`: some nodes are down (then shards may lack a quorum, and only the
/// per-round promises are checked, not the end state).
fn case(with_down: bool) -> impl Strategy<Value = Case> {
    (3usize..=8, 1usize..=3, 1usize..=24, 1usize..=6).prop_flat_map(move |(n, r, s, cap)| {
        let ids: Vec<u64> = (1..=n as u64).collect();
        (
            vec(subsequence(ids, r), s),
            vec(any::<Index>(), s),
            vec(0u8..12, n),
            vec(any::<u64>(), 400),
            any::<bool>(),
        )
            .prop_map(move |(placement, leaders, codes, completions, pack)| {
                let dead_max = (r - 1) / 2;
                let mut dead = 0;
                let mut states: Vec<NodeState> = codes
                    .iter()
                    .map(|c| match c {
                        0 | 1 => NodeState::Draining,
                        2 if dead < dead_max => {
                            dead += 1;
                            NodeState::Dead
                        }
                        3 if with_down => NodeState::Down,
                        _ => NodeState::Live,
                    })
                    .collect();
                // Enough live nodes to hold R replicas of every shard.
                let mut live = states.iter().filter(|s| **s == NodeState::Live).count();
                for st in states.iter_mut() {
                    if live >= r {
                        break;
                    }
                    if *st != NodeState::Live {
                        *st = NodeState::Live;
                        live += 1;
                    }
                }
                let nodes: Vec<NodeInfo> = states
                    .iter()
                    .enumerate()
                    .map(|(i, st)| NodeInfo {
                        id: NodeId(i as u64 + 1),
                        state: *st,
                    })
                    .collect();
                let shards = placement
                    .into_iter()
                    .zip(leaders)
                    .enumerate()
                    .map(|(i, (voters, leader))| {
                        let voters: Vec<NodeId> = voters.into_iter().map(NodeId).collect();
                        let answers = |v: &NodeId| states[v.0 as usize - 1].answers();
                        let picked = *leader.get(&voters);
                        let leader = if answers(&picked) {
                            Some(picked)
                        } else {
                            voters.iter().copied().find(answers)
                        };
                        ShardInfo {
                            shard: ShardId(i as u32),
                            voters,
                            learners: vec![],
                            leader,
                            avoid: vec![],
                        }
                    })
                    .collect();
                Case {
                    cluster: Cluster {
                        nodes,
                        shards,
                        replication: r,
                        leaders: if pack {
                            LeaderPolicy::Pack
                        } else {
                            LeaderPolicy::Spread
                        },
                    },
                    moves_max: cap,
                    completions,
                }
            })
    })
}

/// The shard's answering voters.
fn answering(c: &Cluster, voters: &[NodeId]) -> usize {
    voters.iter().filter(|v| c.state_of(**v).answers()).count()
}

/// Checks one round's plan against the planner's promises.
fn check_round(c: &Cluster, in_flight: &[Move], cap: usize, p: &Plan) -> Result<(), TestCaseError> {
    prop_assert!(p.moves.len() + in_flight.len() <= cap.max(in_flight.len()));
    let mut shards = BTreeSet::new();
    for m in in_flight {
        shards.insert(m.shard);
    }
    let mut seen_balance = false;
    for m in &p.moves {
        prop_assert!(shards.insert(m.shard), "two moves of {} at once", m.shard);
        let s = &c.shards[m.shard.0 as usize];
        prop_assert!(s.voters.contains(&m.from));
        prop_assert_eq!(c.state_of(m.to), NodeState::Live);
        prop_assert!(!s.voters.contains(&m.to) && !s.learners.contains(&m.to));
        prop_assert!(!s.avoid.contains(&m.to));
        let from = c.state_of(m.from);
        match m.reason {
            MoveReason::Evacuate => {
                prop_assert!(from.evacuated());
                prop_assert!(!seen_balance, "an evacuation after a balance move");
            }
            MoveReason::Balance => {
                prop_assert_eq!(from, NodeState::Live);
                seen_balance = true;
            }
            MoveReason::GrowMetadata | MoveReason::ShrinkMetadata => {
                prop_assert!(false, "these clusters list no metadata group: {m:?}");
            }
        }
        // A majority answers now, with both replicas voting, and after the old one goes.
        let n = s.voters.len();
        let live = answering(c, &s.voters);
        prop_assert!(live >= majority(n));
        prop_assert!(live + 1 >= majority(n + 1));
        let after: Vec<NodeId> = s
            .voters
            .iter()
            .copied()
            .filter(|v| *v != m.from)
            .chain([m.to])
            .collect();
        prop_assert!(answering(c, &after) >= majority(n));
    }
    if seen_balance {
        for s in &c.shards {
            let evacuable = s.voters.iter().find(|v| c.state_of(**v).evacuated());
            if let (Some(v), false) = (evacuable, shards.contains(&s.shard)) {
                prop_assert!(
                    p.stuck
                        .iter()
                        .any(|x| x.shard == s.shard && x.node == Some(*v)),
                    "a balance move while {}'s replica on {} waits",
                    s.shard,
                    v
                );
            }
        }
    }
    if !p.leader_transfers.is_empty() {
        prop_assert!(p.moves.is_empty() && in_flight.is_empty());
    }
    let mut moved_leaders = BTreeSet::new();
    for t in &p.leader_transfers {
        prop_assert!(moved_leaders.insert(t.shard));
        let s = &c.shards[t.shard.0 as usize];
        prop_assert_eq!(s.leader, Some(t.from));
        prop_assert!(s.voters.contains(&t.to));
        prop_assert_eq!(c.state_of(t.to), NodeState::Live);
        if c.leaders == LeaderPolicy::Pack {
            prop_assert_eq!(Some(t.to), packed_leader(c, s));
        }
    }
    let mut shuffled = c.clone();
    shuffled.shards.reverse();
    shuffled.nodes.reverse();
    prop_assert_eq!(
        p,
        &plan(&shuffled, in_flight, cap),
        "the plan depends on input order"
    );
    Ok(())
}

/// Completes move `m` in `c`: the new replica votes, the old one is gone, and a moved
/// leader's leadership went to the new replica.
fn complete(c: &mut Cluster, m: &Move) {
    c.apply(&Plan {
        moves: vec![*m],
        ..Plan::default()
    });
}

/// Runs rounds until the plan is empty and nothing is in flight; returns the rounds taken.
fn run(case: &Case) -> Result<(Cluster, usize), TestCaseError> {
    let mut c = case.cluster.clone();
    let mut in_flight: Vec<Move> = Vec::new();
    for (round, mask) in case.completions.iter().enumerate() {
        let p = plan(&c, &in_flight, case.moves_max);
        check_round(&c, &in_flight, case.moves_max, &p)?;
        if p.is_empty() && in_flight.is_empty() {
            return Ok((c, round));
        }
        c.apply(&Plan {
            leader_transfers: p.leader_transfers.clone(),
            ..Plan::default()
        });
        // Moves started a round ago complete now; new ones now or next round.
        for m in in_flight.drain(..) {
            complete(&mut c, &m);
        }
        for (i, m) in p.moves.iter().enumerate() {
            if (*mask >> (i % 64)) & 1 == 1 {
                complete(&mut c, m);
            } else {
                in_flight.push(*m);
            }
        }
    }
    Err(TestCaseError::fail(format!(
        "not balanced after {} rounds",
        case.completions.len()
    )))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    /// Draining and dead nodes empty out, replicas spread within one of the mean and
    /// leaders go where the policy puts them, every round keeps its promises, within a
    /// bounded number of rounds.
    #[test]
    fn random_clusters_converge_to_balanced(case in case(false)) {
        let (end, rounds) = run(&case)?;
        let a = assess(&end);
        prop_assert!(a.balanced(), "{:?}", a);
        let replicas = end.shards.len() * end.replication;
        let bound = 2 * replicas.div_ceil(case.moves_max) + 2 * end.shards.len() + 4;
        prop_assert!(rounds <= bound, "{} rounds, bound {}", rounds, bound);
    }

    /// With nodes down, shards may lack a quorum: every round still keeps its promises,
    /// and nothing moves to or from a down node.
    #[test]
    fn rounds_with_nodes_down_keep_their_promises(case in case(true)) {
        let mut c = case.cluster.clone();
        for _ in 0..20 {
            let p = plan(&c, &[], case.moves_max);
            check_round(&c, &[], case.moves_max, &p)?;
            for m in &p.moves {
                prop_assert_ne!(c.state_of(m.from), NodeState::Down);
            }
            if p.is_empty() {
                break;
            }
            c.apply(&p);
        }
    }
}
