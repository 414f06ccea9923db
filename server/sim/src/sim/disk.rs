//! The simulated disk's timing: each write runs against the node's `SimDisk` at once and
//! becomes durable (sync, then `on_disk_done`) after a latency the seed draws, longer
//! while a disk is slow; with `slow_disk_ns` every fsync takes exactly that long and
//! writes that queue behind it share the next one (group commit).

use super::{Ev, Sim, TICK_NS};
use crate::invariants::Violation;
use kv_node::wal::{self, WalRecord};
use kv_node::{DiskOp, DiskWrite};
use rand::Rng;
use std::fmt::Write as _;

impl Sim {
    /// Executes one of node `i`'s disk writes, records the entries it writes with the
    /// checker, and schedules its completion.
    pub(super) fn write_to_disk(&mut self, i: usize, w: DiskWrite) -> Result<(), Violation> {
        let id = self.ids[i];
        if self.trace.wants_detail() {
            let line = describe_write(&w);
            self.trace
                .log(self.now, format!("{id} disk write {}:{line}", w.id));
        }
        let r = self.nodes[i].run.as_mut().expect("running");
        for op in w.ops {
            match op {
                DiskOp::Append(rec) => {
                    let logs = match wal::decode(&rec) {
                        Ok(WalRecord::Entries { shard, record }) => {
                            vec![(shard, record.first_index, record.entries)]
                        }
                        Ok(WalRecord::Round(parts)) => parts
                            .into_iter()
                            .filter(|p| p.first_index > 0)
                            .map(|p| (p.shard, p.first_index, p.entries))
                            .collect(),
                        _ => Vec::new(),
                    };
                    for (shard, first_index, entries) in logs {
                        let e: Vec<(u64, u64)> = entries
                            .iter()
                            .map(|e| (e.term, kv_node::entry_hash(e)))
                            .collect();
                        self.checker.wrote_entries(id, shard, first_index, &e)?;
                    }
                    r.storage.append(&rec).expect("sim disk append");
                }
                DiskOp::SaveSnapshot { shard, index, data } => {
                    self.checker.wrote_snapshot(id, shard, index);
                    r.storage
                        .save_snapshot(shard, index, &data)
                        .expect("sim disk snapshot");
                }
                DiskOp::Compact { shard, index } => {
                    r.storage.compact(shard, index).expect("sim disk compact");
                }
                DiskOp::RemoveGroup { shard } => {
                    r.storage
                        .remove_group(shard)
                        .expect("sim disk remove group");
                }
                DiskOp::TakeBackGroup { shard } => {
                    r.storage
                        .take_back_group(shard)
                        .expect("sim disk take back group");
                }
            }
        }
        let done = self.disk_done_at(i, w.deferrable);
        let inc = self.nodes[i].inc;
        self.at(
            done,
            Ev::DiskDone {
                node: i,
                inc,
                id: w.id,
            },
        );
        Ok(())
    }

    /// When a write node `i` issues now becomes durable.
    fn disk_done_at(&mut self, i: usize, deferrable: bool) -> u64 {
        let node = &mut self.nodes[i];
        let mut latency = if self.disk_latency_ns_max > 0 {
            self.rng.gen_range(0..=self.disk_latency_ns_max)
        } else {
            0
        };
        if deferrable && self.defer_sync_ns > 0 {
            latency += self.rng.gen_range(0..=self.defer_sync_ns);
        }
        if node.disk_slow {
            latency += self.rng.gen_range(1..=15) * TICK_NS;
        }
        let done = if self.opts.slow_disk_ns > 0 {
            // Group commit: join the fsync that has not started yet, or start one when
            // the running one ends.
            if node.disk_sync_start_ns <= self.now {
                node.disk_sync_start_ns = node.disk_free_ns.max(self.now);
                node.disk_free_ns = node.disk_sync_start_ns + self.opts.slow_disk_ns;
            }
            node.disk_free_ns
        } else {
            node.disk_free_ns.max(self.now) + latency
        };
        node.disk_free_ns = done;
        done
    }

    /// A write of node `node`'s incarnation `inc` is durable; a crash since voids it.
    pub(super) fn disk_done(&mut self, node: usize, inc: u64, id: u64) {
        if self.nodes[node].inc != inc {
            return;
        }
        let r = self.nodes[node]
            .run
            .as_mut()
            .expect("same incarnation runs");
        r.storage.sync().expect("sim disk sync");
        let ahead = self.wal_ahead_bytes;
        if ahead > 0 && r.storage.needs_preallocation(ahead / 2) {
            // As kvserver's disk thread: a full disk leaves the space out, nothing else.
            match r.storage.preallocate(ahead) {
                Ok(_) | Err(kv_storage::StorageError::DiskFull { .. }) => {}
                Err(e) => panic!("sim disk preallocate: {e}"),
            }
        }
        r.core.on_disk_done(id);
        self.after_input(node);
    }
}

/// One trace line for a disk write: what each record holds.
fn describe_write(w: &DiskWrite) -> String {
    let mut s = String::new();
    for op in &w.ops {
        let _ = match op {
            DiskOp::Append(rec) => match wal::decode(rec) {
                Ok(WalRecord::Entries { shard, record }) => {
                    let terms: Vec<u64> = record.entries.iter().map(|e| e.term).collect();
                    write!(
                        s,
                        " s{shard}:entries@{} terms {terms:?}",
                        record.first_index
                    )
                }
                Ok(WalRecord::Round(parts)) => {
                    for p in parts {
                        let terms: Vec<u64> = p.entries.iter().map(|e| e.term).collect();
                        let _ = write!(
                            s,
                            " s{}:entries@{} terms {terms:?} c{}",
                            p.shard, p.first_index, p.commit
                        );
                    }
                    Ok(())
                }
                Ok(WalRecord::HardState { shard, hard_state }) => write!(
                    s,
                    " s{shard}:hs(t{} v{} c{})",
                    hard_state.term, hard_state.vote.0, hard_state.commit
                ),
                Err(e) => write!(s, " undecodable record: {e}"),
            },
            DiskOp::SaveSnapshot { shard, index, .. } => write!(s, " s{shard}:snapshot@{index}"),
            DiskOp::Compact { shard, index } => write!(s, " s{shard}:compact@{index}"),
            DiskOp::RemoveGroup { shard } => write!(s, " s{shard}:remove"),
            DiskOp::TakeBackGroup { shard } => write!(s, " s{shard}:take-back"),
        };
    }
    s
}
