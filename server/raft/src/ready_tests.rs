//! The `Ready` contract seen from the caller: what one `ready()` hands out and when
//! `has_ready()` says more waits.

use crate::{
    AppendHeader, Config, Entry, EntryKind, Membership, Message, MessageBody, Raft, Ready,
    Restored, Role, Snapshot,
};
use bytes::Bytes;
use kv_shared::NodeId;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

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

/// One replica of three driven by a seeded stream of inputs (ticks, proposals, votes
/// and acks of its peers, persists, compactions, and a leader of a higher term cutting
/// its log); every `Ready` it hands out, with its Appends as messages in the order
/// they were sent, apart from the rest.
fn readies_with_appends_apart(seed: u64, by_reference: bool) -> Vec<(Ready, Vec<Message>)> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let me = NodeId(1);
    let config = Config {
        pre_vote: false,
        append_bytes_max: 16,
        inflight_appends_max: 3,
        entries_by_reference: by_reference,
        ..Config::new(me, seed)
    };
    let voters = vec![me, NodeId(2), NodeId(3)];
    let mut raft = Raft::new(
        config,
        Restored {
            initial_membership: Membership {
                voters,
                learners: Vec::new(),
            },
            ..Restored::default()
        },
    );
    let mut readies = Vec::new();
    let mut unpersisted = None;
    for step in 0..400u32 {
        let (term, last, commit) = (raft.term, raft.log.last_index(), raft.log.commit);
        match rng.gen_range(0..100) {
            0..=19 => raft.tick(),
            20..=34 => {
                let data = vec![step as u8; rng.gen_range(0..12)];
                let _ = raft.propose(Bytes::from(data));
            }
            35..=54 => {
                let body = match rng.gen_range(0..4) {
                    0 => MessageBody::VoteResp { reject: false },
                    1 => MessageBody::AppendResp {
                        reject: true,
                        index: rng.gen_range(0..=last),
                        hint_index: rng.gen_range(0..=last),
                        hint_term: rng.gen_range(0..=term),
                    },
                    _ => MessageBody::AppendResp {
                        reject: false,
                        index: rng.gen_range(0..=last),
                        hint_index: 0,
                        hint_term: 0,
                    },
                };
                let from = NodeId(rng.gen_range(2..=3));
                raft.step(Message {
                    from,
                    to: me,
                    term,
                    body,
                });
            }
            55..=64 => {
                if let Some(id) = unpersisted.take() {
                    raft.on_persisted(id);
                }
            }
            65..=69 => {
                let applied = raft.log.applied;
                if applied > raft.log.snap_index {
                    let meta = raft.snapshot_meta(applied);
                    raft.compact(Snapshot {
                        meta,
                        data: Bytes::new(),
                    });
                }
            }
            70..=72 => {
                // A leader of the next term replaces everything past the commit index.
                let prev_term = raft.log.term(commit).expect("the commit index is held");
                let entries = vec![Entry {
                    term: term + 1,
                    index: commit + 1,
                    kind: EntryKind::Noop,
                    data: Bytes::new(),
                }];
                raft.step(Message {
                    from: NodeId(2),
                    to: me,
                    term: term + 1,
                    body: MessageBody::Append {
                        prev_index: commit,
                        prev_term,
                        entries,
                        commit,
                    },
                });
            }
            _ => {
                let mut rd = raft.ready();
                if let Some(w) = &mut rd.write {
                    unpersisted = Some(w.id);
                    w.entries = raft.write_entries(w).to_vec();
                    w.entries_in_log = None;
                }
                // Appends settled into messages (before a compaction or a step-down)
                // were sent before those still by reference.
                let is_append = |m: &Message| matches!(m.body, MessageBody::Append { .. });
                let mut appends: Vec<Message> = rd
                    .messages
                    .iter()
                    .filter(|m| is_append(m))
                    .cloned()
                    .collect();
                appends.extend(rd.appends.iter().map(|a| raft.append_message(a)));
                rd.messages.retain(|m| !is_append(m));
                rd.appends.clear();
                readies.push((rd, appends));
            }
        }
    }
    readies
}

#[test]
fn entries_by_reference_are_the_appends_and_writes_by_value() {
    let mut appends = 0;
    for seed in 0..200 {
        let by_value = readies_with_appends_apart(seed, false);
        let by_reference = readies_with_appends_apart(seed, true);
        assert_eq!(by_value, by_reference, "seed {seed}");
        appends += by_value.iter().map(|(_, a)| a.len()).sum::<usize>();
    }
    assert!(
        appends > 1000,
        "the inputs make a leader that sends: {appends} Appends"
    );
}

#[test]
fn step_append_leaves_the_entries_vector_empty_with_its_room() {
    let me = NodeId(2);
    let mut raft = Raft::new(
        Config::new(me, 3),
        Restored {
            initial_membership: Membership {
                voters: vec![NodeId(1), me, NodeId(3)],
                learners: Vec::new(),
            },
            ..Restored::default()
        },
    );
    let entry = |index, term| Entry {
        term,
        index,
        kind: EntryKind::Command,
        data: Bytes::from_static(b"x"),
    };
    let header = |term, prev_index, prev_term| AppendHeader {
        from: NodeId(1),
        to: me,
        term,
        prev_index,
        prev_term,
        commit: 0,
    };
    let mut entries = Vec::with_capacity(8);
    // Taken, refused as malformed (a gap), from a stale leader, and one that does not
    // match: each leaves the vector empty, its room kept.
    for (h, batch) in [
        (header(2, 0, 0), vec![entry(1, 2), entry(2, 2)]),
        (header(2, 2, 2), vec![entry(4, 2)]),
        (header(1, 2, 2), vec![entry(3, 1)]),
        (header(2, 5, 2), vec![entry(6, 2)]),
    ] {
        entries.extend(batch);
        raft.step_append(h, &mut entries);
        assert!(entries.is_empty());
        assert_eq!(entries.capacity(), 8);
    }
    assert_eq!(raft.log.last_index(), 2, "only the first was appended");
    assert_eq!(
        raft.refusals().get(crate::Refusal::EntriesMalformed),
        1,
        "the gap was refused"
    );
}

#[test]
fn take_messages_hands_out_the_ready_s_messages_alone() {
    let me = NodeId(2);
    let follower = || {
        Raft::new(
            Config::new(me, 3),
            Restored {
                initial_membership: Membership {
                    voters: vec![NodeId(1), me, NodeId(3)],
                    learners: Vec::new(),
                },
                ..Restored::default()
            },
        )
    };
    let (mut taken, mut readied) = (follower(), follower());
    for raft in [&mut taken, &mut readied] {
        let entries = vec![Entry {
            term: 1,
            index: 1,
            kind: EntryKind::Command,
            data: Bytes::from_static(b"x"),
        }];
        raft.step(Message {
            from: NodeId(1),
            to: me,
            term: 1,
            body: MessageBody::Append {
                prev_index: 0,
                prev_term: 0,
                entries,
                commit: 0,
            },
        });
        let write = raft.ready().write.expect("the entry to write");
        raft.on_persisted(write.id);
    }
    let mut out = Vec::new();
    taken.take_messages(&mut out);
    let rd = readied.ready();
    assert_eq!(out, rd.messages, "the ack the write released");
    assert!(matches!(
        out[..],
        [Message {
            body: MessageBody::AppendResp {
                reject: false,
                index: 1,
                ..
            },
            ..
        }]
    ));
    assert!(
        !taken.has_ready(),
        "the ack (and the leader heard) was all there was"
    );
    taken.take_messages(&mut out);
    assert_eq!(out.len(), 1, "nothing is taken twice");
}

#[test]
fn an_ack_by_its_fields_is_refused_as_its_message_would_be() {
    use kv_shared::limits::{RAFT_INDEX_MAX, RAFT_TERM_MAX};
    for (term, index) in [
        (RAFT_TERM_MAX + 1, 1),
        (1, RAFT_INDEX_MAX + 1),
        (u64::MAX, u64::MAX),
    ] {
        let body = MessageBody::AppendResp {
            reject: false,
            index,
            hint_index: 0,
            hint_term: 0,
        };
        let msg = Message {
            from: NodeId(2),
            to: NodeId(1),
            term,
            body,
        };
        let reason = crate::check_message(&msg).expect_err("out of range");
        let mut raft = lone_leader(Config::new(NodeId(1), 7));
        raft.step_ack(NodeId(2), NodeId(1), term, index);
        assert_eq!(raft.refusals().get(reason), 1, "{reason:?}");
        assert_eq!(raft.refusals().total(), 1);
    }
}
