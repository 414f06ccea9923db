//! The chaos steps of the Mixed and Churn profiles: partitions, crashes, pauses, slow
//! disks and hits on leaders, drawn from the seed during the safety phase.

use super::{is_leader, Ev, FaultMix, FaultProfile, Phase, Sim, TICK_NS};
use kv_shared::ShardId;
use rand::Rng;

impl Sim {
    /// One chaos step of the safety phase, aimed by the run's profile; schedules the next.
    pub(super) fn chaos(&mut self) {
        if self.phase != Phase::Safety {
            return;
        }
        match self.profile {
            FaultProfile::Churn => return self.chaos_churn(),
            FaultProfile::Figure8 => return self.figure8_step(),
            FaultProfile::Mixed | FaultProfile::Moves => {}
        }
        let next = self.now + self.rng.gen_range(5..=30) * TICK_NS;
        self.at(next, Ev::Chaos);
        let all = self.opts.faults == FaultMix::All;
        let n = self.nodes.len();
        let roll = self.rng.gen_range(0..100);
        match roll {
            0..=24 if self.blocked.is_empty() => {
                self.stats.partitions += 1;
                let kind = self.rng.gen_range(0..3);
                let desc = match kind {
                    0 => {
                        let x = self.rng.gen_range(0..n);
                        for j in 0..n {
                            if j != x {
                                self.blocked.insert((x, j));
                                self.blocked.insert((j, x));
                            }
                        }
                        format!("isolate {}", self.ids[x])
                    }
                    1 => {
                        let side: Vec<bool> = (0..n).map(|_| self.rng.gen_bool(0.5)).collect();
                        for a in 0..n {
                            for b in 0..n {
                                if side[a] != side[b] {
                                    self.blocked.insert((a, b));
                                }
                            }
                        }
                        format!("split {side:?}")
                    }
                    _ => {
                        for a in 0..n {
                            for b in 0..n {
                                if a != b && self.rng.gen_bool(0.3) {
                                    self.blocked.insert((a, b));
                                }
                            }
                        }
                        format!("one-way cuts {:?}", self.blocked)
                    }
                };
                self.trace.log(self.now, format!("PARTITION {desc}"));
                let heal = self.now + self.rng.gen_range(20..=200) * TICK_NS;
                self.at(heal, Ev::Heal);
            }
            25..=39 if all => {
                let x = self.rng.gen_range(0..n);
                if self.nodes[x].run.is_some() {
                    self.crash(x);
                    let back = self.now + self.rng.gen_range(5..=100) * TICK_NS;
                    self.at(back, Ev::Restart(x));
                }
            }
            40..=47 if all => {
                let x = self.rng.gen_range(0..n);
                if self.nodes[x].run.is_some() && !self.nodes[x].paused {
                    self.nodes[x].paused = true;
                    self.trace.log(self.now, format!("{} PAUSES", self.ids[x]));
                    let back = self.now + self.rng.gen_range(5..=60) * TICK_NS;
                    self.at(back, Ev::Unpause(x));
                }
            }
            48..=57 if all => {
                let x = self.rng.gen_range(0..n);
                self.nodes[x].disk_slow = true;
                self.trace
                    .log(self.now, format!("{} disk slow", self.ids[x]));
                let back = self.now + self.rng.gen_range(20..=100) * TICK_NS;
                self.at(back, Ev::DiskFast(x));
            }
            58..=72 => {
                // Leader churn: the faults that matter most hit leaders.
                let s = self.rng.gen_range(0..self.shards);
                let Some(x) = (0..n).find(|&j| {
                    self.nodes[j]
                        .run
                        .as_ref()
                        .is_some_and(|r| is_leader(r.core.group_view(ShardId(s))))
                }) else {
                    return;
                };
                if all && self.rng.gen_bool(0.5) {
                    self.trace.log(
                        self.now,
                        format!("leader {} of shard {s} is hit", self.ids[x]),
                    );
                    self.crash(x);
                    let back = self.now + self.rng.gen_range(3..=30) * TICK_NS;
                    self.at(back, Ev::Restart(x));
                } else if self.blocked.is_empty() {
                    self.stats.partitions += 1;
                    for j in 0..n {
                        if j != x {
                            self.blocked.insert((x, j));
                            self.blocked.insert((j, x));
                        }
                    }
                    self.trace.log(
                        self.now,
                        format!("PARTITION isolate leader {} of shard {s}", self.ids[x]),
                    );
                    let heal = self.now + self.rng.gen_range(15..=60) * TICK_NS;
                    self.at(heal, Ev::Heal);
                }
            }
            _ => {}
        }
    }

    /// The leader of `shard` among running nodes, if any.
    fn leader_of(&self, shard: u32) -> Option<usize> {
        (0..self.nodes.len()).find(|&j| {
            self.nodes[j]
                .run
                .as_ref()
                .is_some_and(|r| is_leader(r.core.group_view(ShardId(shard))))
        })
    }

    pub(super) fn crash_for(&mut self, x: usize, ticks: std::ops::RangeInclusive<u64>) {
        if self.nodes[x].run.is_some() {
            self.crash(x);
            let back = self.now + self.rng.gen_range(ticks) * TICK_NS;
            self.at(back, Ev::Restart(x));
        }
    }

    fn isolate_for(&mut self, x: usize, ticks: std::ops::RangeInclusive<u64>, why: &str) {
        if !self.blocked.is_empty() {
            return;
        }
        self.stats.partitions += 1;
        for j in 0..self.nodes.len() {
            if j != x {
                self.blocked.insert((x, j));
                self.blocked.insert((j, x));
            }
        }
        self.trace
            .log(self.now, format!("PARTITION isolate {why}{}", self.ids[x]));
        let heal = self.now + self.rng.gen_range(ticks) * TICK_NS;
        self.at(heal, Ev::Heal);
    }

    /// The Churn profile's chaos step: frequent, aimed at leaders and at unsynced writes.
    fn chaos_churn(&mut self) {
        let next = self.now + self.rng.gen_range(3..=12) * TICK_NS;
        self.at(next, Ev::Chaos);
        let n = self.nodes.len();
        let s = self.rng.gen_range(0..self.shards);
        let leader = self.leader_of(s);
        let roll = self.rng.gen_range(0..100);
        match (roll, leader) {
            (0..=29, Some(x)) => {
                self.trace.log(
                    self.now,
                    format!("leader {} of shard {s} is hit", self.ids[x]),
                );
                if self.rng.gen_bool(0.5) {
                    self.crash_for(x, 2..=25);
                } else {
                    self.isolate_for(x, 5..=40, "leader ");
                }
            }
            (30..=44, _) => {
                let x = self.rng.gen_range(0..n);
                self.crash_for(x, 2..=25);
            }
            (45..=54, _) => {
                self.trace.log(self.now, "POWER LOSS: every node".into());
                for x in 0..n {
                    self.crash_for(x, 1..=20);
                }
            }
            (55..=64, Some(x)) => {
                let y = (x + self.rng.gen_range(1..n)) % n;
                self.trace.log(
                    self.now,
                    format!(
                        "leader {} of shard {s} and {} are hit",
                        self.ids[x], self.ids[y]
                    ),
                );
                self.crash_for(x, 2..=25);
                self.crash_for(y, 1..=15);
            }
            (65..=74, _) => {
                let x = self.rng.gen_range(0..n);
                self.isolate_for(x, 5..=40, "");
            }
            (75..=84, _) => {
                let x = self.rng.gen_range(0..n);
                self.nodes[x].disk_slow = true;
                self.trace
                    .log(self.now, format!("{} disk slow", self.ids[x]));
                let back = self.now + self.rng.gen_range(20..=60) * TICK_NS;
                self.at(back, Ev::DiskFast(x));
            }
            _ => {}
        }
    }
}
