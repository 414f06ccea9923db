//! Initial placement: which R of the N nodes of the cluster file hold each shard, and
//! which of them should lead it under spread leaders. A pure function of (nodes, shard
//! count, R), so every node computes the same bootstrap replica sets without talking to
//! the others; after bootstrap a shard's replica set is Raft state (conf changes), not
//! this function. Packed leaders need no placement: the node core derives them from each
//! shard's current voters.

use kv_shared::{NodeId, ShardId};

/// Where one shard starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardPlacement {
    /// The nodes holding a replica, ascending.
    pub replicas: Vec<NodeId>,
    /// The replica that should lead when everyone is up, under `[placement] leaders =
    /// "spread"` (the only policy that reads it).
    pub preferred_leader: NodeId,
}

/// Bootstrap placement of shards `0..shard_count` over `nodes` with `replication` replicas
/// each: every node holds within one of the mean number of replicas, and is the preferred
/// leader of within one of the mean number of shards.
///
/// Replicas: the shards' replica slots, taken in order, go round-robin over the sorted
/// nodes, so shard `s` holds the R consecutive nodes (mod N) starting at `s * R`.
/// Leaders: with g = gcd(R, N), the starts `s * R mod N` cycle through the multiples of
/// g every N / g shards; the k-th such period leads at offset `k mod g` into the run,
/// so any N consecutive shards (from shard 0 on) have N distinct leaders. With R = N this
/// is the classic `nodes[s mod N]`. (Taking the replica that leads fewest so far does
/// not balance: 5 nodes, R = 3, 5 shards leaves one node leading two.)
///
/// # Panics
/// If `nodes` is empty or `replication` is not in `1..=nodes.len()` (the cluster file is
/// validated before this is called).
pub fn initial_placement(
    nodes: &[NodeId],
    shard_count: u32,
    replication: usize,
) -> Vec<ShardPlacement> {
    let mut sorted = nodes.to_vec();
    sorted.sort();
    sorted.dedup();
    let n = sorted.len();
    assert!(
        (1..=n).contains(&replication),
        "replication {replication} outside 1..={n}"
    );
    let period = n / gcd(replication, n);
    let offsets = n / period;
    (0..shard_count as usize)
        .map(|s| {
            let start = s * replication;
            let mut replicas: Vec<NodeId> =
                (0..replication).map(|i| sorted[(start + i) % n]).collect();
            replicas.sort();
            ShardPlacement {
                replicas,
                preferred_leader: sorted[(start + (s / period) % offsets) % n],
            }
        })
        .collect()
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Shards whose initial replica set includes `node`.
pub fn shards_of(placement: &[ShardPlacement], node: NodeId) -> Vec<ShardId> {
    placement
        .iter()
        .enumerate()
        .filter(|(_, p)| p.replicas.contains(&node))
        .map(|(s, _)| ShardId(s as u32))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kv_shared::limits::NODES_MAX;

    fn ids(n: usize) -> Vec<NodeId> {
        (1..=n as u64).map(NodeId).collect()
    }

    /// Every count within one of the mean `total / n`.
    fn within_one_of_mean(counts: &[usize], total: usize) -> bool {
        let n = counts.len();
        let (lo, hi) = (total / n, total.div_ceil(n));
        counts.iter().all(|&c| lo <= c && c <= hi)
    }

    #[test]
    fn replicas_and_leaders_are_spread_within_one_of_the_mean() {
        for n in 1..=NODES_MAX {
            for r in 1..=n {
                for shards in 1..=70u32 {
                    let p = initial_placement(&ids(n), shards, r);
                    assert_eq!(p.len(), shards as usize);
                    let mut held = vec![0usize; n];
                    let mut led = vec![0usize; n];
                    for sp in &p {
                        assert_eq!(sp.replicas.len(), r, "n={n} r={r}: distinct replicas");
                        assert!(sp.replicas.windows(2).all(|w| w[0] < w[1]));
                        assert!(sp.replicas.contains(&sp.preferred_leader));
                        for x in &sp.replicas {
                            held[x.0 as usize - 1] += 1;
                        }
                        led[sp.preferred_leader.0 as usize - 1] += 1;
                    }
                    let ctx = format!("n={n} r={r} shards={shards}: held {held:?} led {led:?}");
                    assert!(within_one_of_mean(&held, shards as usize * r), "{ctx}");
                    assert!(within_one_of_mean(&led, shards as usize), "{ctx}");
                }
            }
        }
    }

    #[test]
    fn every_node_holding_every_shard_keeps_the_classic_leader_order() {
        let p = initial_placement(&ids(3), 8, 3);
        for (s, sp) in p.iter().enumerate() {
            assert_eq!(sp.replicas, ids(3));
            assert_eq!(sp.preferred_leader, NodeId(s as u64 % 3 + 1));
        }
    }

    #[test]
    fn placement_ignores_the_order_nodes_are_listed_in() {
        let shuffled = vec![NodeId(4), NodeId(2), NodeId(9), NodeId(1)];
        let mut sorted = shuffled.clone();
        sorted.sort();
        assert_eq!(
            initial_placement(&shuffled, 16, 3),
            initial_placement(&sorted, 16, 3)
        );
        let p = initial_placement(&shuffled, 16, 3);
        assert_eq!(shards_of(&p, NodeId(9)).len(), 12);
    }
}
