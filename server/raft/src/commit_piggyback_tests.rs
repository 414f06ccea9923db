//! Commit piggybacking as kv-raft's own: with `broadcast_commit` off, a leader sends an
//! Append without entries only where `Config::broadcast_commit` says it must. Course
//! mode counts every datagram and relies on this instead of holding such Appends itself;
//! a randomized lossy cluster with course mode's options (lazy followers on and off) pins it.

use crate::testing::{test_config, Cluster};
use crate::types::MessageBody;
use crate::Config;
use bytes::Bytes;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// Outcome of one randomized run.
struct Run {
    /// Appends without entries that left a leader (each taken out of the network).
    entryless: usize,
    /// Entries committed on the last leader seen.
    committed: u64,
}

/// Takes the Appends without entries out of the network; returns how many there were.
/// Every message a step sends is in the network when this runs, so each is seen.
fn take_entryless(c: &mut Cluster) -> usize {
    let before = c.net.len();
    c.net
        .retain(|m| !matches!(&m.body, MessageBody::Append { entries, .. } if entries.is_empty()));
    before - c.net.len()
}

/// A 5-replica cluster under drops, duplicates, reordering, partitions, crashes,
/// compaction, proposals and (follower) reads, without membership changes or leadership
/// transfers, with course mode's options. Entry-less Appends are counted and dropped.
/// With `lazy`, lazy followers too, and stall releases asked for at random.
fn run(seed: u64, broadcast_commit: bool, lazy: bool, steps: usize) -> Run {
    let mut rng = SmallRng::seed_from_u64(seed);
    let opts = Config {
        seed,
        broadcast_commit,
        lease_reads: true,
        heartbeat_suppression: true,
        heartbeat_suppression_strict: true,
        heartbeat_resend_ticks: Some(1),
        silent_follower_ticks: Some(30),
        vote_resend_ticks: Some(1),
        retransmit_ticks: Some(rng.gen_range(1..=3)),
        lazy_followers: lazy,
        lazy_grace_ticks: 2,
        ..test_config()
    };
    let mut c = Cluster::new(5, &[], opts);
    c.quiet = true;
    let ids: Vec<u64> = (1..=5).collect();
    let mut out = Run {
        entryless: 0,
        committed: 0,
    };
    for step in 0..steps {
        let id = ids[rng.gen_range(0..ids.len())];
        match rng.gen_range(0..100) {
            // Lockstep: leases assume clocks that keep pace.
            0..=7 => ids.iter().for_each(|i| c.tick(*i)),
            // Reordered: a few messages in flight, picked at random, some duplicated.
            8..=71 => {
                for _ in 0..4 {
                    if c.net.is_empty() {
                        break;
                    }
                    let m = c
                        .net
                        .remove(rng.gen_range(0..c.net.len()))
                        .expect("in range");
                    if rng.gen_bool(0.05) {
                        c.net.push_back(m.clone());
                    }
                    c.deliver_one(m);
                    // Before the next pick, which could deliver what this one caused.
                    out.entryless += take_entryless(&mut c);
                }
            }
            72..=75 if !c.net.is_empty() => {
                c.net.remove(rng.gen_range(0..c.net.len()));
            }
            76..=85 => {
                let l = c.leader().unwrap_or(id);
                let data = Bytes::from(format!("p{step}"));
                if c.nodes[&l].up
                    && c.nodes
                        .get_mut(&l)
                        .expect("node")
                        .raft
                        .propose(data)
                        .is_ok()
                {
                    c.process(l);
                }
            }
            86..=89 if c.nodes[&id].up => {
                let _ = c.read(id, step as u64);
                c.process(id);
            }
            // One replica down at a time, so that a quorum can commit.
            90 if c.nodes.values().all(|n| n.up) => c.crash(id),
            90 => {
                let down: Vec<u64> = ids.iter().copied().filter(|i| !c.nodes[i].up).collect();
                for d in down {
                    c.restart(d);
                    c.process(d);
                }
            }
            91 => {
                c.cut.clear();
                for o in &ids {
                    c.cut.insert((id, *o));
                    c.cut.insert((*o, id));
                }
            }
            92..=93
                if c.nodes[&id].up
                    && c.nodes[&id].applied > c.nodes[&id].raft.log.snap_index + 3 =>
            {
                c.compact(id)
            }
            94 if lazy => {
                if let Some(l) = c.leader() {
                    let targeted = rng.gen_bool(0.5);
                    let raft = &mut c.nodes.get_mut(&l).expect("node").raft;
                    raft.note_stall();
                    raft.release_stalled(targeted);
                    c.process(l);
                }
            }
            94..=99 => c.cut.clear(),
            _ => {}
        }
        out.entryless += take_entryless(&mut c);
        if let Some(l) = c.leader() {
            out.committed = out.committed.max(c.nodes[&l].raft.log.commit);
        }
    }
    out
}

/// 150 seeds without commit broadcasts: none sends an entry-less Append, and each
/// commits at least 20 entries.
fn assert_no_entryless_appends(lazy: bool) {
    for seed in 0..150 {
        let r = run(seed, false, lazy, 2000);
        assert_eq!(r.entryless, 0, "seed {seed}: entry-less Appends sent");
        assert!(
            r.committed >= 20,
            "seed {seed}: only {} committed",
            r.committed
        );
    }
}

#[test]
fn without_commit_broadcasts_a_leader_sends_no_entryless_append() {
    assert_no_entryless_appends(false);
}

#[test]
fn with_commit_broadcasts_the_same_runs_send_entryless_appends() {
    // The detector of the test above sees them when they are sent.
    let sent: usize = (0..20)
        .map(|seed| run(seed, true, false, 2000).entryless)
        .sum();
    assert!(
        sent > 100,
        "only {sent} entry-less Appends with broadcasts on"
    );
}

#[test]
fn with_lazy_followers_the_same_runs_stay_safe_send_no_entryless_append_and_commit() {
    assert_no_entryless_appends(true);
}
