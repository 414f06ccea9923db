//! The `Ready` contract seen from the caller: what one `ready()` hands out and when
//! `has_ready()` says more waits.

use crate::{Config, EntryKind, Membership, Raft, Restored, Role};
use bytes::Bytes;
use kv_shared::NodeId;

/// A single-voter replica elected leader, its election's writes persisted and applied.
fn lone_leader(config: Config) -> Raft {
    let me = config.id;
    let mut raft = Raft::new(
        config,
        Restored {
            initial_membership: Membership {
                voters: vec![me],
                learners: Vec::new(),
            },
            ..Restored::default()
        },
    );
    for _ in 0..100 {
        raft.tick();
        drain(&mut raft);
        if raft.status().role == Role::Leader {
            return raft;
        }
    }
    panic!("a lone voter did not elect itself");
}

/// Persists and applies everything; returns the command payloads applied per `Ready`.
fn drain(raft: &mut Raft) -> Vec<Vec<Bytes>> {
    let mut applied = Vec::new();
    while raft.has_ready() {
        let rd = raft.ready();
        if let Some(w) = rd.write {
            raft.on_persisted(w.id);
        }
        let commands: Vec<Bytes> = rd
            .committed
            .into_iter()
            .filter(|e| e.kind == EntryKind::Command)
            .map(|e| e.data)
            .collect();
        if !commands.is_empty() {
            applied.push(commands);
        }
    }
    applied
}

/// A lone leader handing out at most `bytes_max` committed bytes per Ready, with
/// `count` proposals of 100 bytes each (the i-th filled with byte i).
fn lone_leader_proposing(bytes_max: usize, count: u8) -> Raft {
    let config = Config {
        committed_bytes_per_ready_max: bytes_max,
        ..Config::new(NodeId(1), 7)
    };
    let mut raft = lone_leader(config);
    for i in 0..count {
        raft.propose(Bytes::from(vec![i; 100])).expect("leader");
    }
    raft
}

#[test]
fn committed_entries_are_handed_out_within_the_byte_limit_per_ready() {
    let mut raft = lone_leader_proposing(250, 7);
    // A 300-byte entry alone exceeds the limit and still gets a Ready of its own.
    raft.propose(Bytes::from(vec![9; 300])).expect("leader");
    let sizes: Vec<Vec<usize>> = drain(&mut raft)
        .iter()
        .map(|batch| batch.iter().map(Bytes::len).collect())
        .collect();
    assert_eq!(
        sizes,
        vec![
            vec![100, 100],
            vec![100, 100],
            vec![100, 100],
            vec![100],
            vec![300]
        ]
    );
    assert_eq!(raft.status().applied, raft.status().hard.commit);
}

/// A leader computes its quorum commit again only once what it depends on moved (here
/// its own durable index), not at every `has_ready`, which a node calls many times a
/// round; and the commit then moves as before.
#[test]
fn the_quorum_commit_is_computed_only_when_an_index_it_counts_moved() {
    let mut raft = lone_leader(Config::new(NodeId(1), 7));
    raft.propose(Bytes::from_static(b"x")).expect("leader");
    assert!(raft.has_ready());
    let rd = raft.ready();
    let w = rd.write.expect("the entry is written");
    let before = raft.quorum_computations;
    for _ in 0..5 {
        raft.has_ready();
    }
    assert_eq!(raft.quorum_computations, before, "nothing it counts moved");
    let commit = raft.status().hard.commit;
    raft.on_persisted(w.id);
    assert_eq!(raft.quorum_computations, before + 1);
    assert_eq!(raft.status().hard.commit, commit + 1, "the entry commits");
    assert_eq!(drain(&mut raft), vec![vec![Bytes::from_static(b"x")]]);
}

/// `ready_into` a `Ready` the caller keeps hands out exactly what `ready` does, and
/// refills the kept vectors in place rather than replacing them (what saves a node of
/// many groups an allocation per group per round).
#[test]
fn ready_into_a_kept_ready_hands_out_what_ready_does_in_the_same_vectors() {
    let make = || {
        Raft::new(
            Config::new(NodeId(1), 7),
            Restored {
                initial_membership: Membership {
                    voters: vec![NodeId(1), NodeId(2), NodeId(3)],
                    learners: Vec::new(),
                },
                ..Restored::default()
            },
        )
    };
    let (mut fresh, mut kept_by) = (make(), make());
    let mut kept = crate::Ready::default();
    let mut reused = 0;
    for _ in 0..200 {
        fresh.tick();
        kept_by.tick();
        while fresh.has_ready() {
            assert!(kept_by.has_ready());
            let rd = fresh.ready();
            let before = kept.messages.as_ptr();
            let room = kept.messages.capacity();
            kept_by.ready_into(&mut kept);
            assert_eq!(rd, kept);
            if room >= kept.messages.len() && !kept.messages.is_empty() {
                assert_eq!(
                    kept.messages.as_ptr(),
                    before,
                    "the kept vector is refilled"
                );
                reused += 1;
            }
            if let Some(w) = &rd.write {
                fresh.on_persisted(w.id);
                kept_by.on_persisted(w.id);
            }
        }
        assert!(!kept_by.has_ready());
    }
    assert!(
        reused > 1,
        "campaigns sent messages through the kept vector"
    );
}

#[test]
fn has_ready_after_an_emptying_ready_is_false_until_the_next_input() {
    let mut raft = lone_leader(Config::new(NodeId(1), 7));
    raft.propose(Bytes::from_static(b"x")).expect("leader");
    assert!(raft.has_ready());
    let rd = raft.ready();
    assert!(!raft.has_ready(), "the lone leader's write is all it had");
    assert!(raft.drained, "answered without walking the state");
    raft.on_persisted(rd.write.expect("the entry").id);
    assert!(!raft.drained, "an input clears it");
    assert!(
        raft.has_ready(),
        "the entry committed and waits to be applied"
    );
    let rd = raft.ready();
    assert_eq!(rd.committed.len(), 1);
    assert!(!raft.has_ready());
    raft.tick();
    assert!(!raft.drained, "a tick is an input");
}

#[test]
fn a_ready_cut_short_by_the_byte_limit_leaves_has_ready_true() {
    let mut raft = lone_leader_proposing(100, 3);
    let rd = raft.ready();
    raft.on_persisted(rd.write.expect("the entries").id);
    let rd = raft.ready();
    assert_eq!(rd.committed.len(), 1, "one 100-byte entry per Ready");
    assert!(!raft.drained, "two committed entries are still to hand out");
    assert!(raft.has_ready());
}
