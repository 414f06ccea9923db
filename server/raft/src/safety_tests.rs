//! Randomized safety test: many seeds, each a cluster under random ticks, proposals,
//! reads, drops, duplicates, reordering, partitions, held disks, crashes that lose
//! unsynced writes, compactions and membership changes. The harness checks election
//! safety, state machine safety, leader completeness and log structure after every step
//! and log matching every few steps; at the end the faults heal and the cluster must
//! commit again (liveness). A failure prints its seed.

use crate::testing::{test_config, Cluster};
use crate::types::ConfChange;
use crate::Config;
use bytes::Bytes;
use kv_shared::NodeId;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

#[cfg(feature = "planted-bugs")]
pub(crate) type Bug = crate::PlantedBug;
#[cfg(not(feature = "planted-bugs"))]
pub(crate) type Bug = ();

fn run_seed(seed: u64, steps: usize, bugs: &[Bug]) {
    let mut rng = SmallRng::seed_from_u64(seed);
    let n = if rng.gen_bool(0.5) { 3 } else { 5 };
    let mut opts = Config {
        pre_vote: rng.gen_bool(0.7),
        check_quorum: rng.gen_bool(0.7),
        append_bytes_max: rng.gen_range(1..64),
        inflight_appends_max: rng.gen_range(1..5),
        snapshot_chunk_bytes_max: rng.gen_range(1..32),
        seed,
        // The optional behaviours, each on in about half the seeds.
        heartbeat_suppression: rng.gen_bool(0.5),
        broadcast_commit: rng.gen_bool(0.5),
        retransmit_ticks: Some(rng.gen_range(1..=3)),
        lease_reads: {
            let lease_reads = rng.gen_bool(0.4);
            // The draws of the removed quorum-first knob (`eager_followers`) stay, so
            // that a regression seed keeps every later draw.
            if rng.gen_bool(0.4) {
                rng.gen_range(1..n as usize);
            }
            lease_reads
        },
        ..test_config()
    };
    if opts.lease_reads {
        opts.check_quorum = true;
    }
    // From the seed, not the RNG, so that every other draw of a regression seed stays.
    opts.snapshot_inflight_bytes_max = 1 + seed as usize % 48;
    opts.retransmit_backoff_ticks_max = seed.is_multiple_of(3).then(|| 4 * opts.retransmit_ticks());
    opts.vote_resend_ticks = seed.is_multiple_of(2).then_some(1);
    opts.lazy_followers = seed % 4 == 1;
    opts.lazy_grace_ticks = (seed % 3) as u32;
    opts.entries_by_reference = seed % 5 >= 2;
    // Leases assume clocks that advance at the same rate: then every tick step ticks
    // every node once; otherwise nodes tick at random (arbitrary drift).
    let lockstep = opts.lease_reads;
    let mut c = Cluster::new(n, &[], opts);
    c.quiet = true;
    c.planted = bugs.to_vec();
    c.plant_all();
    let ids: Vec<u64> = (1..=n).collect();
    let mut proposals = 0u64;
    for step in 0..steps {
        let id = ids[rng.gen_range(0..ids.len())];
        match rng.gen_range(0..100) {
            0..=24 if lockstep => {
                for i in &ids {
                    c.tick(*i);
                }
            }
            0..=24 => c.tick(id),
            25..=64 => {
                if !c.net.is_empty() {
                    // Reorder: deliver a random message in flight.
                    let i = rng.gen_range(0..c.net.len());
                    let m = c.net.remove(i).expect("index in range");
                    if rng.gen_bool(0.05) {
                        c.net.push_back(m.clone()); // duplicate
                    }
                    c.deliver_one(m);
                }
            }
            65..=67 => {
                if !c.net.is_empty() {
                    let i = rng.gen_range(0..c.net.len());
                    c.net.remove(i);
                }
            }
            68..=82 => {
                proposals += 1;
                let id = c.leader().filter(|_| rng.gen_bool(0.8)).unwrap_or(id);
                let up = c.nodes[&id].up;
                if up
                    && c.nodes
                        .get_mut(&id)
                        .expect("node")
                        .raft
                        .propose(Bytes::from(format!("p{proposals}")))
                        .is_ok()
                {
                    c.process(id);
                }
            }
            83..=85 => {
                let up = c.nodes[&id].up;
                if up {
                    let _ = c.read(id, step as u64);
                    c.process(id);
                }
            }
            86..=87 => {
                let n = c.nodes.get_mut(&id).expect("node");
                n.auto_persist = !n.auto_persist;
                if n.up && n.auto_persist {
                    c.process(id);
                }
            }
            88..=90 => {
                if c.nodes[&id].up && !c.nodes[&id].pending.is_empty() {
                    c.persist(id, 1);
                    c.process(id);
                }
            }
            91 => {
                if c.nodes[&id].up {
                    c.crash(id);
                } else {
                    c.restart(id);
                    c.process(id);
                }
            }
            92..=93 => {
                c.cut.clear();
                let cut = ids[rng.gen_range(0..ids.len())];
                if rng.gen_bool(0.5) {
                    for o in &ids {
                        c.cut.insert((cut, *o));
                        if rng.gen_bool(0.8) {
                            c.cut.insert((*o, cut)); // sometimes asymmetric
                        }
                    }
                }
            }
            94..=96 => {
                let node = &c.nodes[&id];
                if node.up && node.applied > node.raft.log.snap_index + 3 {
                    c.compact(id);
                }
            }
            _ => {
                // Remove a voter or re-add it as learner, then promote.
                let up = c.nodes[&id].up;
                if up {
                    let target = NodeId(ids[rng.gen_range(0..ids.len())]);
                    let m = c.nodes[&id].raft.membership.clone();
                    let change = if m.learners.contains(&target) {
                        ConfChange::PromoteLearner(target)
                    } else if m.voters.contains(&target) {
                        if m.voters.len() <= 3 {
                            continue;
                        }
                        ConfChange::RemoveNode(target)
                    } else {
                        ConfChange::AddLearner(target)
                    };
                    if c.nodes
                        .get_mut(&id)
                        .expect("node")
                        .raft
                        .propose_conf_change(change)
                        .is_ok()
                    {
                        c.process(id);
                    }
                }
            }
        }
        if step % 16 == 0 {
            c.check_log_matching();
        }
    }
    // Liveness: heal everything, then the cluster must commit a new entry everywhere.
    c.cut.clear();
    for id in &ids {
        if !c.nodes[id].up {
            c.restart(*id);
        }
        c.nodes.get_mut(id).expect("node").auto_persist = true;
        c.process(*id);
    }
    let mut committed = false;
    for _ in 0..400 {
        for id in &ids {
            c.tick(*id);
        }
        c.stabilize();
        if let Some(l) = c.leader() {
            let (index, term) = match c
                .nodes
                .get_mut(&l)
                .expect("node")
                .raft
                .propose(Bytes::from_static(b"final"))
            {
                Ok(x) => x,
                Err(_) => continue,
            };
            c.process(l);
            for _ in 0..60 {
                for id in &ids {
                    c.tick(*id);
                }
                c.stabilize();
            }
            let members = c.nodes[&l].raft.membership.voters.clone();
            committed = members.iter().all(|v| {
                let r = &c.nodes[&v.0].raft;
                r.log.applied >= index && r.log.term(index).is_none_or(|t| t == term)
            });
            if committed {
                break;
            }
        }
    }
    c.check_log_matching();
    assert!(
        committed,
        "seed {seed}: no progress after healing ({:?})",
        c.opts
    );
}

#[test]
fn random_faults_keep_raft_safe_and_live() {
    let base: u64 = std::env::var("RAFT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let seeds: u64 = std::env::var("RAFT_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(150);
    for seed in base..base + seeds {
        let r = std::panic::catch_unwind(|| run_seed(seed, 3000, &[]));
        if r.is_err() {
            panic!("randomized safety test failed: RAFT_SEED={seed} RAFT_SEEDS=1 reproduces");
        }
    }
}

/// Regression: a snapshot transfer with a one-chunk window livelocked after a rewind,
/// because the leader ignored the follower reporting more than it had just re-sent.
/// (Seed numbers are tied to the order of the random draws in `run_seed`.)
#[test]
fn regression_seed_353_snapshot_resume_after_rewind() {
    run_seed(353, 3000, &[]);
}

/// An old leader isolated with a lease, while the majority elects a new leader and
/// commits a write. With clocks in step the lease has run out by then and the old leader's
/// read needs a heartbeat round it cannot win; with the old leader's clock stopped (the
/// drift the lease assumes away) it answers from its lease and the read oracle must flag
/// the stale read. `before_read` runs on the old leader just before its read (what its
/// caller does on noticing the stopped clock). Returns the panic message, if any.
fn isolated_lease_holder_reads(
    clock_stopped: bool,
    before_read: fn(&mut crate::Raft),
) -> Option<String> {
    let r = std::panic::catch_unwind(|| {
        let opts = Config {
            lease_reads: true,
            ..test_config()
        };
        let mut c = Cluster::new(3, &[], opts);
        c.quiet = true;
        for _ in 0..10 {
            c.tick(2);
            c.tick(3);
        }
        while c.nodes[&1].raft.role_now() == crate::Role::Follower {
            c.tick(1);
        }
        c.stabilize();
        c.read(1, 1).expect("leader");
        c.process(1);
        c.stabilize();
        for o in [2, 3] {
            c.cut.insert((1, o));
            c.cut.insert((o, 1));
        }
        let mut new_leader = None;
        for _ in 0..100 {
            if !clock_stopped {
                c.tick(1);
            }
            c.tick(2);
            c.tick(3);
            c.stabilize();
            new_leader = [2, 3].into_iter().find(|i| {
                matches!(c.nodes[i].raft.role, crate::node::RoleState::Leader(_))
                    && c.nodes[i].raft.log.commit >= c.nodes[i].raft.log.last_index()
            });
            if new_leader.is_some() {
                break;
            }
        }
        let l = new_leader.expect("the majority elects a leader");
        c.nodes
            .get_mut(&l)
            .expect("node")
            .raft
            .propose(Bytes::from_static(b"w"))
            .expect("leader");
        c.process(l);
        for _ in 0..4 {
            c.tick(l);
            c.stabilize();
        }
        before_read(&mut c.nodes.get_mut(&1).expect("node").raft);
        let _ = c.read(1, 2);
        c.process(1);
        c.stabilize();
    });
    r.err().map(|e| {
        e.downcast_ref::<String>()
            .cloned()
            .unwrap_or_else(|| "non-string panic".into())
    })
}

#[test]
fn lease_reads_are_safe_only_while_clocks_keep_pace() {
    assert_eq!(isolated_lease_holder_reads(false, |_| {}), None);
    let caught = isolated_lease_holder_reads(true, |_| {}).expect("a stale lease read is caught");
    assert!(caught.contains("stale read"), "{caught}");
}

/// The caller's remedy for a clock that fell behind: `expire_lease` (a stalled process)
/// or `wake` (a paused, quiesced group) before the read makes the old leader take a
/// heartbeat round it cannot win, so the stale read of the stopped clock is gone.
#[test]
fn an_expired_or_woken_lease_serves_no_stale_read_after_the_clock_stopped() {
    assert_eq!(
        isolated_lease_holder_reads(true, |r| r.expire_lease()),
        None
    );
    assert_eq!(isolated_lease_holder_reads(true, |r| r.wake()), None);
}

/// A planted vote, persistence or follower-read bug must really break safety: some seed of the same
/// randomized run catches it (this is what proves the checks above can fail). The
/// Figure 8 bug needs a precise schedule; `transcripts::figure8_planted_bug_is_caught`
/// covers it.
#[cfg(feature = "planted-bugs")]
#[test]
fn planted_bugs_are_caught() {
    use crate::PlantedBug::*;
    for bug in [GrantSecondVote, AckBeforePersist, FollowerReadsOwnCommit] {
        let caught =
            (0..400).any(|seed| std::panic::catch_unwind(|| run_seed(seed, 3000, &[bug])).is_err());
        assert!(caught, "{bug:?} was never caught");
    }
}
