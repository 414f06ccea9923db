//! The Figure8 profile: a partition script that reacts to who leads shard 0 and drives
//! Raft's Figure 8 (paper 5.4.2) on purpose (see [`crate::FaultProfile::Figure8`]).

use super::{Ev, Phase, Sim, TICK_NS};
use kv_shared::proto::Role;
use kv_shared::{NodeId, ShardId};
use rand::Rng;
use std::collections::BTreeMap;

/// Where the Figure 8 script stands (see [`crate::FaultProfile::Figure8`]).
#[derive(Clone, Copy, Debug)]
pub(super) enum Fig8 {
    /// All links up; cut the leader off at `start_ns`.
    Idle { start_ns: u64 },
    /// `old`, leader in `term`, is alone; waiting for a leader among the others.
    OldCut {
        old: usize,
        term: u64,
        give_up_ns: u64,
    },
    /// `mid` won and was cut off too: every node alone until `rejoin_ns`.
    AllCut { mid: usize, rejoin_ns: u64 },
    /// Everyone but `mid` (leader in `term`) reconnected; waiting for their leader.
    Rejoined {
        mid: usize,
        term: u64,
        give_up_ns: u64,
    },
    /// Their leader will be cut off by an `Ev::Fig8Cut`.
    Racing,
    /// The cut leader is alone, `mid` rejoined the rest; heal everything at `heal_ns`.
    Final { heal_ns: u64 },
}

impl Sim {
    /// Cuts every link between nodes on different sides (`side[node]`).
    fn split(&mut self, side: &[usize]) {
        self.blocked.clear();
        let n = self.nodes.len();
        for a in 0..n {
            for b in 0..n {
                if side[a] != side[b] {
                    self.blocked.insert((a, b));
                }
            }
        }
        self.stats.partitions += 1;
        let mut groups: BTreeMap<usize, Vec<NodeId>> = BTreeMap::new();
        for (j, &s) in side.iter().enumerate() {
            groups.entry(s).or_default().push(self.ids[j]);
        }
        let groups: Vec<_> = groups.into_values().collect();
        self.trace
            .log(self.now, format!("PARTITION figure8 {groups:?}"));
    }

    /// Heals every link and waits a little before the script's next round.
    fn figure8_restart(&mut self) {
        if !self.blocked.is_empty() {
            self.trace.log(self.now, "heal partitions".into());
            self.blocked.clear();
        }
        let start_ns = self.now + self.rng.gen_range(10..=40) * TICK_NS;
        self.fig8 = Fig8::Idle { start_ns };
    }

    /// The Figure 8 script's timed steps, every tick of the safety phase.
    pub(super) fn figure8_step(&mut self) {
        self.at(self.now + TICK_NS, Ev::Chaos);
        match self.fig8 {
            Fig8::Idle { start_ns } if self.now >= start_ns => {
                // The newest leader: a cut-off one without CheckQuorum may still think
                // it leads an older term.
                let Some((term, old)) = (0..self.nodes.len())
                    .filter_map(|j| Some((self.leader_term(j)?, j)))
                    .max()
                else {
                    return;
                };
                let side: Vec<usize> = (0..self.nodes.len())
                    .map(|j| usize::from(j == old))
                    .collect();
                self.split(&side);
                let give_up_ns = self.now + 150 * TICK_NS;
                self.fig8 = Fig8::OldCut {
                    old,
                    term,
                    give_up_ns,
                };
            }
            Fig8::OldCut { give_up_ns, .. } | Fig8::Rejoined { give_up_ns, .. }
                if self.now >= give_up_ns =>
            {
                self.figure8_restart()
            }
            Fig8::AllCut { mid, rejoin_ns } if self.now >= rejoin_ns => {
                let term = self.term_of(mid);
                let side: Vec<usize> = (0..self.nodes.len())
                    .map(|j| usize::from(j == mid))
                    .collect();
                self.split(&side);
                let give_up_ns = self.now + 150 * TICK_NS;
                self.fig8 = Fig8::Rejoined {
                    mid,
                    term,
                    give_up_ns,
                };
            }
            Fig8::Final { heal_ns } if self.now >= heal_ns => self.figure8_restart(),
            _ => {}
        }
    }

    /// The Figure 8 script's reactions to a new leader (node `i`, just elected).
    pub(super) fn figure8_elected(&mut self, i: usize) {
        if self.phase != Phase::Safety {
            return;
        }
        let Some(term) = self.leader_term(i) else {
            return;
        };
        match self.fig8 {
            Fig8::OldCut { old, term: t, .. } if i != old && term > t => {
                // Before its first Appends land: its no-op stays in its own log only.
                let side: Vec<usize> = (0..self.nodes.len())
                    .map(|j| {
                        if j == old {
                            0
                        } else if j == i {
                            1
                        } else {
                            2
                        }
                    })
                    .collect();
                self.split(&side);
                let rejoin_ns = self.now + self.rng.gen_range(3..=10) * TICK_NS;
                self.fig8 = Fig8::AllCut { mid: i, rejoin_ns };
            }
            Fig8::Rejoined { mid, term: t, .. } if i != mid && term > t => {
                // A few network round trips and disk writes: the new leader is catching
                // the others up, one entry per Append.
                let window_ns = 4 * self.net.delay_ns_max + 2 * self.disk_latency_ns_max;
                let at = self.now + self.rng.gen_range(0..=window_ns);
                self.at(at, Ev::Fig8Cut(i));
                self.fig8 = Fig8::Racing;
            }
            _ => {}
        }
    }

    /// Cuts off the leader the reconnected nodes elected (crashing it half the time) and
    /// reconnects everyone else, the earlier cut-off leader included.
    pub(super) fn figure8_cut(&mut self, x: usize) {
        if self.phase != Phase::Safety || !matches!(self.fig8, Fig8::Racing) {
            return;
        }
        let side: Vec<usize> = (0..self.nodes.len()).map(|j| usize::from(j == x)).collect();
        self.split(&side);
        if self.rng.gen_bool(0.5) {
            self.crash_for(x, 20..=60);
        }
        let heal_ns = self.now + self.rng.gen_range(60..=120) * TICK_NS;
        self.fig8 = Fig8::Final { heal_ns };
    }

    /// `x`'s current term in shard 0 (0 if it is down).
    fn term_of(&self, x: usize) -> u64 {
        self.nodes[x]
            .run
            .as_ref()
            .and_then(|r| r.core.group_view(ShardId(0)))
            .map_or(0, |v| v.term)
    }

    /// `x`'s term if it runs and leads shard 0.
    fn leader_term(&self, x: usize) -> Option<u64> {
        let v = self.nodes[x].run.as_ref()?.core.group_view(ShardId(0))?;
        (v.role == Role::Leader).then_some(v.term)
    }
}
