//! Leader spreading under `[placement] leaders = "pack"`: every shard's leadership goes to
//! its voter with the lowest id, and an admin's preference still wins over the policy.

use super::*;
use kv_shared::config::LeaderPolicy;

#[test]
fn packed_leaders_go_to_the_lowest_voter_and_an_admins_choice_still_wins() {
    let shards = 6;
    let mut c = Cluster::with(3, shards, |cfg| {
        cfg.spread_leaders = true;
        cfg.leaders = LeaderPolicy::Pack;
    });
    c.tick(600);
    for s in (0..shards).map(ShardId) {
        assert_eq!(c.leader(s), 0, "node 1 leads shard {s}");
    }
    let admin = ClientRequest {
        client: ClientId(77),
        seq: 1,
        epoch: 0,
        op: Op::ShardLeader {
            shard: ShardId(4),
            node: NodeId(3),
        },
    };
    c.request(0, 1, admin);
    c.flush(0);
    c.tick(2);
    assert_eq!(c.reply_to(1), vec![Outcome::Done]);
    c.tick(600);
    assert_eq!(c.leader(ShardId(4)), 2, "the admin's node 3 leads shard 4");
    for s in (0..shards).map(ShardId).filter(|s| s.0 != 4) {
        assert_eq!(c.leader(s), 0, "node 1 still leads shard {s}");
    }
}

/// With R < N each shard's leadership goes to its own lowest replica.
#[test]
fn packed_leaders_with_three_replicas_of_five_sit_on_each_shards_lowest_replica() {
    let shards = 10;
    let mut c = five_nodes_three_replicas(shards, LeaderPolicy::Pack);
    let placement = c.nodes[0].config().placement();
    let mut spread = c.nodes[0].config().clone();
    spread.leaders = LeaderPolicy::Spread;
    assert_eq!(
        placement,
        spread.placement(),
        "the policy places no replica"
    );
    c.tick(800);
    for s in (0..shards).map(ShardId) {
        let lowest = placement[s.0 as usize].replicas[0];
        assert_eq!(NodeId(c.leader(s) as u64 + 1), lowest, "shard {s}");
    }
}
