//! The simulated network between replicas: who is reachable, partitions, drops, message counts.

use std::collections::HashMap;
use std::net::SocketAddr;

use rand::rngs::SmallRng;
use rand::Rng;
use serde::Serialize;

use crate::id::NodeId;

/// What the harness believes about one replica process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplicaState {
    /// Running, as far as the harness knows (its hello may not have arrived yet).
    Up,
    /// Killed by a scheduled event; never comes back.
    Killed,
    /// Marked dead by the harness (a protocol violation); ignored from then on.
    Dead,
    /// The process exited without being killed.
    Exited,
}

/// Counters of replica-bound traffic; `total_msgs` is the scored metric.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct NetCounts {
    /// Replica-bound copies, counted before any fault (the course's total_msgs).
    pub total_msgs: u64,
    /// Copies handed to the target's socket.
    pub delivered: u64,
    /// Copies lost to the drop probability.
    pub dropped: u64,
    /// Copies stopped by a partition.
    pub blocked: u64,
    /// Copies addressed to a killed, dead or exited replica.
    pub to_dead: u64,
}

/// What became of one replica-bound copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CopyFate {
    /// Send it to this address.
    Deliver(SocketAddr),
    /// The target is not running (or marked dead); nothing is sent.
    TargetDown,
    /// The target has not said hello: the caller must mark it dead.
    BeforeHello,
    /// The partition keeps source and target apart.
    Blocked,
    /// Lost to the drop probability.
    Dropped,
}

/// Addresses, liveness and faults of the replicas; pure apart from its seeded RNG.
#[derive(Debug)]
pub struct Network {
    addrs: Vec<Option<SocketAddr>>,
    states: Vec<ReplicaState>,
    by_addr: HashMap<SocketAddr, usize>,
    /// Per replica: on the majority side of the current partition?
    partition: Option<Vec<bool>>,
    drops: f64,
    rng: SmallRng,
    /// The replica most recently named in any message's `leader` field.
    pub last_leader: Option<NodeId>,
    /// Traffic counters.
    pub counts: NetCounts,
}

impl Network {
    /// A network of `replicas` replicas, none heard from yet.
    pub fn new(replicas: usize, drops: f64, rng: SmallRng) -> Network {
        Network {
            addrs: vec![None; replicas],
            states: vec![ReplicaState::Up; replicas],
            by_addr: HashMap::new(),
            partition: None,
            drops,
            rng,
            last_leader: None,
            counts: NetCounts::default(),
        }
    }

    /// Number of replicas.
    pub fn len(&self) -> usize {
        self.states.len()
    }

    /// True for a network without replicas (never built by a valid scenario).
    pub fn is_empty(&self) -> bool {
        self.states.is_empty()
    }

    /// Index of replica `id`, if it is one.
    pub fn index_of(&self, id: NodeId) -> Option<usize> {
        let index = usize::from(id.0);
        (index < self.len()).then_some(index)
    }

    /// The replica whose hello came from `addr`.
    pub fn replica_at(&self, addr: SocketAddr) -> Option<usize> {
        self.by_addr.get(&addr).copied()
    }

    /// The address replica `index` said hello from.
    pub fn addr(&self, index: usize) -> Option<SocketAddr> {
        self.addrs[index]
    }

    /// Records a hello; later hellos from the same address change nothing.
    pub fn learn(&mut self, index: usize, addr: SocketAddr) {
        if let Some(old) = self.addrs[index].replace(addr) {
            self.by_addr.remove(&old);
        }
        self.by_addr.insert(addr, index);
    }

    /// What the harness believes about replica `index`.
    pub fn state(&self, index: usize) -> &ReplicaState {
        &self.states[index]
    }

    /// Changes what the harness believes about replica `index`.
    pub fn set_state(&mut self, index: usize, state: ReplicaState) {
        self.states[index] = state;
    }

    /// Running as far as the harness knows: a valid target for clients.
    pub fn is_up(&self, index: usize) -> bool {
        self.states[index] == ReplicaState::Up
    }

    /// Indexes of the replicas that are up.
    pub fn up_replicas(&self) -> Vec<usize> {
        (0..self.len()).filter(|&i| self.is_up(i)).collect()
    }

    /// Installs a partition (`Some(majority side flags)`) or heals it (`None`).
    pub fn set_partition(&mut self, majority: Option<Vec<bool>>) {
        if let Some(side) = &majority {
            assert_eq!(side.len(), self.len(), "partition must cover every replica");
        }
        self.partition = majority;
    }

    /// The current partition's majority side, if any.
    pub fn partition(&self) -> Option<&[bool]> {
        self.partition.as_deref()
    }

    /// Decides the fate of one replica-bound copy from `src` to `dst`, counting
    /// it in total_msgs first: the course counts copies to dead replicas too.
    pub fn route_copy(&mut self, src: usize, dst: usize) -> CopyFate {
        self.counts.total_msgs += 1;
        if !self.is_up(dst) {
            self.counts.to_dead += 1;
            return CopyFate::TargetDown;
        }
        let Some(addr) = self.addrs[dst] else {
            self.counts.to_dead += 1;
            return CopyFate::BeforeHello;
        };
        if let Some(side) = &self.partition {
            if side[src] != side[dst] {
                self.counts.blocked += 1;
                return CopyFate::Blocked;
            }
        }
        if self.drops > 0.0 && self.rng.gen_bool(self.drops) {
            self.counts.dropped += 1;
            return CopyFate::Dropped;
        }
        self.counts.delivered += 1;
        CopyFate::Deliver(addr)
    }
}

/// Picks `floor(n/2) + 1` replicas, all ids eligible (dead ones too), that
/// include `must` when given: part_easy passes the leader, part_hard nothing.
pub fn choose_majority(n: usize, must: Option<usize>, rng: &mut SmallRng) -> Vec<bool> {
    let size = n / 2 + 1;
    let mut side = vec![false; n];
    let mut chosen = 0;
    if let Some(m) = must {
        side[m] = true;
        chosen = 1;
    }
    while chosen < size {
        let pick = rng.gen_range(0..n);
        if !side[pick] {
            side[pick] = true;
            chosen += 1;
        }
    }
    side
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn counts_every_copy_before_deciding_its_fate() {
        let mut net = Network::new(3, 0.0, SmallRng::seed_from_u64(1));
        net.learn(0, addr(1000));
        net.learn(1, addr(1001));
        assert_eq!(net.route_copy(0, 1), CopyFate::Deliver(addr(1001)));
        assert_eq!(net.route_copy(0, 2), CopyFate::BeforeHello);
        net.set_state(1, ReplicaState::Killed);
        assert_eq!(net.route_copy(0, 1), CopyFate::TargetDown);
        assert_eq!(net.counts.total_msgs, 3);
        assert_eq!(net.counts.delivered, 1);
        assert_eq!(net.replica_at(addr(1000)), Some(0));
    }

    #[test]
    fn partition_blocks_only_across_sides() {
        let mut net = Network::new(3, 0.0, SmallRng::seed_from_u64(1));
        for i in 0..3 {
            net.learn(i, addr(1000 + i as u16));
        }
        net.set_partition(Some(vec![true, true, false]));
        assert_eq!(net.route_copy(0, 1), CopyFate::Deliver(addr(1001)));
        assert_eq!(net.route_copy(0, 2), CopyFate::Blocked);
        assert_eq!(net.route_copy(2, 2), CopyFate::Deliver(addr(1002)));
        net.set_partition(None);
        assert_eq!(net.route_copy(0, 2), CopyFate::Deliver(addr(1002)));
    }

    #[test]
    fn drop_probability_is_roughly_honoured() {
        let mut net = Network::new(2, 0.3, SmallRng::seed_from_u64(7));
        net.learn(0, addr(1000));
        net.learn(1, addr(1001));
        for _ in 0..10_000 {
            net.route_copy(0, 1);
        }
        let rate = net.counts.dropped as f64 / 10_000.0;
        assert!((0.27..0.33).contains(&rate), "drop rate {rate}");
    }

    #[test]
    fn majorities_have_the_right_size_and_keep_the_leader() {
        let mut rng = SmallRng::seed_from_u64(3);
        for n in 1..=9 {
            for must in 0..n {
                let side = choose_majority(n, Some(must), &mut rng);
                assert!(side[must]);
                assert_eq!(side.iter().filter(|&&s| s).count(), n / 2 + 1);
            }
            let side = choose_majority(n, None, &mut rng);
            assert_eq!(side.iter().filter(|&&s| s).count(), n / 2 + 1);
        }
    }
}
