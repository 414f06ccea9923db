//! Liveness when fsyncs are slower than the election timeout: elections back off until
//! two durable writes in a row fit in one, and a leader whose followers hold their acks
//! behind a slow disk is not deposed by CheckQuorum.

use crate::node::RoleState;
use crate::testing::{test_config, Cluster};
use crate::types::MessageBody;
use crate::Config;
use std::collections::BTreeMap;

/// Ticks between the PreVote rounds an isolated replica starts.
fn prevote_round_gaps(c: &mut Cluster, id: u64, rounds: usize) -> Vec<u64> {
    let mut starts = Vec::new();
    let mut t = 0u64;
    while starts.len() <= rounds {
        t += 1;
        assert!(t < 10_000, "n{id} stopped campaigning");
        c.tick(id);
        let pre_votes = c
            .net
            .iter()
            .filter(|m| m.from.0 == id && matches!(m.body, MessageBody::PreVote { .. }))
            .count();
        if pre_votes > 0 {
            starts.push(t);
        }
        c.net.clear();
    }
    starts.windows(2).map(|w| w[1] - w[0]).collect()
}

#[test]
fn election_timeouts_double_while_leaderless_and_reset_once_a_leader_is_heard() {
    let mut c = Cluster::new(3, &[], test_config());
    c.quiet = true;
    // Timeouts are drawn from 10..20 ticks; after k leaderless ones, from 10..20 << k, up
    // to 8x.
    let gaps = prevote_round_gaps(&mut c, 1, 6);
    for (k, gap) in gaps.iter().enumerate() {
        let doublings = (k + 1).min(3);
        let (lo, hi) = (10u64 << doublings, 20u64 << doublings);
        assert!(
            (lo..hi).contains(gap),
            "round {k}: gap {gap} not in {lo}..{hi} (gaps {gaps:?})"
        );
    }
    // n2 leads; its heartbeat reaches n1, whose timeout is back to the base range.
    for _ in 0..30 {
        c.tick(2);
        c.stabilize();
    }
    assert_eq!(c.leader(), Some(2), "n2 should have been elected");
    let n1 = &c.nodes[&1].raft;
    assert_eq!(n1.leader, Some(kv_shared::NodeId(2)));
    assert_eq!(n1.leaderless_timeouts, 0);
    assert!(
        (10..20).contains(&n1.randomized_timeout),
        "timeout {} after hearing the leader",
        n1.randomized_timeout
    );
}

/// Each node's disk syncs in rounds of `fsync_ticks`, back to back while writes wait:
/// a round makes durable the writes pending when it started (group commit, as the
/// runtime's disk thread does), so acks arrive in bursts one fsync apart.
struct SlowDisks {
    fsync_ticks: u64,
    /// Per node: the running round's end and how many writes it covers.
    rounds: BTreeMap<u64, (u64, usize)>,
}

impl SlowDisks {
    fn step(&mut self, c: &mut Cluster, now: u64) {
        let ids: Vec<u64> = c.nodes.keys().copied().collect();
        for id in ids {
            if let Some(&(end, count)) = self.rounds.get(&id) {
                if now < end {
                    continue;
                }
                c.persist(id, count);
                self.rounds.remove(&id);
            }
            let pending = c.nodes[&id].pending.len();
            if pending > 0 {
                self.rounds.insert(id, (now + self.fsync_ticks, pending));
            }
        }
    }
}

#[test]
fn fsyncs_longer_than_the_election_timeout_still_elect_a_leader_that_stays() {
    let opts = Config {
        heartbeat_suppression: true,
        ..test_config()
    };
    let mut c = Cluster::new(3, &[], opts);
    c.quiet = true;
    for n in c.nodes.values_mut() {
        n.auto_persist = false;
    }
    // Two and a half minimum election timeouts per fsync: without the back-off no
    // election finishes (each needs two fsyncs in a row); without the heartbeat to silent
    // followers, CheckQuorum deposes each leader while its followers' acks wait.
    let mut disks = SlowDisks {
        fsync_ticks: 25,
        rounds: BTreeMap::new(),
    };
    let mut leaders = Vec::new();
    let mut committed = 0;
    for now in 0..3000u64 {
        for id in 1..=3 {
            c.tick(id);
        }
        disks.step(&mut c, now);
        c.stabilize();
        if let Some(l) = c.leader() {
            let term = c.nodes[&l].raft.term;
            if leaders.last() != Some(&(l, term)) {
                leaders.push((l, term));
            }
            // A proposal every tick: each heartbeat period sees Appends to every follower.
            {
                let raft = &mut c.nodes.get_mut(&l).expect("leader").raft;
                // Refused only while a transfer runs; none does here.
                let _ = raft.propose(bytes::Bytes::from(format!("p{now}")));
                c.process(l);
            }
            committed = committed.max(c.nodes[&l].raft.log.commit);
        }
    }
    let first = leaders.first().expect("no leader was ever elected");
    assert!(
        leaders.len() <= 3,
        "leadership changed {} times with every node up: {leaders:?}",
        leaders.len() - 1
    );
    assert!(
        committed > 100,
        "only {committed} entries committed under {first:?}"
    );
    assert!(matches!(
        c.nodes[&leaders.last().expect("a leader").0].raft.role,
        RoleState::Leader(_)
    ));
}
