//! Unit tests of the state machine and its sessions, in their own file to keep sm.rs readable.

use super::*;
use kv_shared::splitmix::SplitMix64;
use std::net::SocketAddr;

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn put(client: u64, seq: u64, k: &str, v: &str) -> WriteCommand {
    WriteCommand {
        client: ClientId(client),
        seq,
        op: WriteOp::Put {
            key: b(k),
            value: b(v),
        },
    }
}

fn open(client: u64, seq: u64) -> WriteCommand {
    WriteCommand {
        client: ClientId(client),
        seq,
        op: WriteOp::OpenSession,
    }
}

fn entry(writes: Vec<WriteCommand>) -> Bytes {
    CommandBatch { writes }.encode()
}

#[test]
fn put_get_delete_cas() {
    let mut sm = StateMachine::new(10);
    let out = sm.apply_entry(1, 1, &entry(vec![put(1, 1, "a", "x")]));
    assert_eq!(out, vec![Outcome::Done]);
    assert_eq!(sm.get(b"a"), Some(b("x")));
    let cas = |seq, expected: Option<&str>, new: &str| WriteCommand {
        client: ClientId(1),
        seq,
        op: WriteOp::Cas {
            key: b("a"),
            expected: expected.map(b),
            new: b(new),
        },
    };
    let out = sm.apply_entry(2, 1, &entry(vec![cas(2, Some("y"), "z")]));
    assert_eq!(
        out,
        vec![Outcome::CasMismatch {
            current: Some(b("x"))
        }]
    );
    let out = sm.apply_entry(3, 1, &entry(vec![cas(3, Some("x"), "z")]));
    assert_eq!(out, vec![Outcome::CasOk]);
    assert_eq!(sm.get(b"a"), Some(b("z")));
    let del = WriteCommand {
        client: ClientId(1),
        seq: 4,
        op: WriteOp::Delete { key: b("a") },
    };
    assert_eq!(sm.apply_entry(4, 2, &entry(vec![del])), vec![Outcome::Done]);
    assert_eq!(sm.get(b"a"), None);
    let out = sm.apply_entry(5, 2, &entry(vec![cas(5, None, "new")]));
    assert_eq!(out, vec![Outcome::CasOk]);
    assert_eq!((sm.applied_index(), sm.applied_term()), (5, 2));
}

#[test]
fn incr_append_swap_read_and_write_in_one_step() {
    let mut sm = StateMachine::new(10);
    let w = |seq, op| WriteCommand {
        client: ClientId(1),
        seq,
        op,
    };
    let incr = |delta| WriteOp::Incr { key: b("n"), delta };
    let mut index = 0;
    let mut apply = |sm: &mut StateMachine, seq, op| {
        index += 1;
        sm.apply_entry(index, 1, &entry(vec![w(seq, op)]))
    };
    assert_eq!(apply(&mut sm, 1, incr(5)), vec![Outcome::Integer(5)]);
    assert_eq!(apply(&mut sm, 2, incr(-7)), vec![Outcome::Integer(-2)]);
    assert_eq!(sm.get(b"n"), Some(b("-2")));
    // A retry of seq 2 answers the recorded sum, it does not add again.
    assert_eq!(apply(&mut sm, 2, incr(-7)), vec![Outcome::Integer(-2)]);
    assert_eq!(
        apply(&mut sm, 3, incr(i64::MIN)),
        vec![Outcome::Error(ClientError::Overflow)]
    );
    assert_eq!(sm.get(b"n"), Some(b("-2")), "an overflow writes nothing");
    for (seq, text) in [(4, "x"), (6, "+1"), (8, "01"), (10, " 1")] {
        let put = WriteOp::Put {
            key: b("n"),
            value: b(text),
        };
        apply(&mut sm, seq, put);
        assert_eq!(
            apply(&mut sm, seq + 1, incr(1)),
            vec![Outcome::Error(ClientError::NotAnInteger)],
            "{text:?} is no integer"
        );
    }
    let append = |v: &str| WriteOp::Append {
        key: b("s"),
        value: b(v),
    };
    assert_eq!(apply(&mut sm, 12, append("ab")), vec![Outcome::Integer(2)]);
    assert_eq!(apply(&mut sm, 13, append("c")), vec![Outcome::Integer(3)]);
    let big = "x".repeat(VALUE_BYTES_MAX);
    assert_eq!(
        apply(&mut sm, 14, append(&big)),
        vec![Outcome::Error(ClientError::ValueTooLarge {
            len: VALUE_BYTES_MAX + 3,
            max: VALUE_BYTES_MAX
        })]
    );
    assert_eq!(sm.get(b"s"), Some(b("abc")));
    let swap = |new: Option<&str>| WriteOp::Swap {
        key: b("s"),
        new: new.map(b),
    };
    assert_eq!(
        apply(&mut sm, 15, swap(Some("z"))),
        vec![Outcome::Value(Some(b("abc")))]
    );
    assert_eq!(
        apply(&mut sm, 16, swap(None)),
        vec![Outcome::Value(Some(b("z")))]
    );
    assert_eq!(sm.get(b"s"), None);
    assert_eq!(apply(&mut sm, 17, swap(None)), vec![Outcome::Value(None)]);
}

#[test]
fn retry_applies_once_and_stale_seq_is_refused() {
    let mut sm = StateMachine::new(10);
    let cas = WriteCommand {
        client: ClientId(7),
        seq: 3,
        op: WriteOp::Cas {
            key: b("k"),
            expected: None,
            new: b("v1"),
        },
    };
    // The same write twice in one batch and again later: applied once, same answer.
    let out = sm.apply_entry(1, 1, &entry(vec![open(7, 2), cas.clone(), cas.clone()]));
    assert_eq!(out, vec![Outcome::Done, Outcome::CasOk, Outcome::CasOk]);
    sm.apply_entry(2, 1, &entry(vec![put(8, 1, "k", "other")]));
    let out = sm.apply_entry(3, 1, &entry(vec![cas.clone()]));
    assert_eq!(
        out,
        vec![Outcome::CasOk],
        "the saved outcome, not a mismatch"
    );
    assert_eq!(sm.get(b"k"), Some(b("other")), "not re-applied");
    let old = WriteCommand { seq: 2, ..cas };
    assert_eq!(
        sm.apply_entry(4, 1, &entry(vec![old])),
        vec![Outcome::Error(ClientError::StaleSequence {
            seq: 2,
            latest: 3
        })]
    );
}

/// Regression (issue 12): an evicted session counted as new, so a retry of a write
/// applied before the eviction was applied a second time.
#[test]
fn retry_after_eviction_is_refused_not_applied_twice() {
    let mut sm = StateMachine::new(2);
    let first = put(1, 2, "k", "from-1");
    let out = sm.apply_entry(1, 1, &entry(vec![open(1, 1), first.clone()]));
    assert_eq!(out, vec![Outcome::Done, Outcome::Done]);
    // Another client writes the key; two more push client 1 out of the table.
    sm.apply_entry(2, 1, &entry(vec![put(2, 1, "k", "from-2")]));
    sm.apply_entry(3, 1, &entry(vec![put(3, 1, "x", "_"), put(4, 1, "y", "_")]));
    assert_eq!(sm.sessions(), 2);
    // Client 1 never saw its answer and retries: refused, and the key keeps the
    // later write.
    let out = sm.apply_entry(4, 1, &entry(vec![first]));
    assert_eq!(out, vec![Outcome::Error(ClientError::SessionExpired)]);
    assert_eq!(sm.get(b"k"), Some(b("from-2")));
    // Reopening is always safe, and later writes apply.
    let out = sm.apply_entry(5, 1, &entry(vec![open(1, 3), put(1, 4, "k", "again")]));
    assert_eq!(out, vec![Outcome::Done, Outcome::Done]);
    assert_eq!(sm.get(b"k"), Some(b("again")));
}

#[test]
fn sessions_evict_least_recently_used() {
    let mut s = Sessions::new(2);
    s.record(ClientId(1), 1, Outcome::Done);
    s.record(ClientId(2), 1, Outcome::Done);
    // Touch client 1 so client 2 is the least recently used.
    assert_eq!(
        s.check(ClientId(1), 1),
        SessionCheck::Duplicate(Outcome::Done)
    );
    s.record(ClientId(3), 1, Outcome::Done);
    assert_eq!(s.len(), 2);
    assert_eq!(s.check(ClientId(2), 1), SessionCheck::Unknown, "evicted");
    assert_eq!(
        s.check(ClientId(1), 1),
        SessionCheck::Duplicate(Outcome::Done)
    );
}

/// The table before hashing: an ordered map plus an ordered (stamp, client) set. The
/// lazy recency queue must evict exactly what it evicted.
#[test]
fn sessions_evict_like_an_ordered_lru_and_stay_bounded() {
    use std::collections::{BTreeMap, BTreeSet};
    let max = 8;
    let mut s = Sessions::new(max);
    let mut model: BTreeMap<ClientId, u64> = BTreeMap::new();
    let mut lru: BTreeSet<(u64, ClientId)> = BTreeSet::new();
    let mut clock = 0u64;
    let mut touch = |model: &mut BTreeMap<ClientId, u64>, lru: &mut BTreeSet<_>, c| {
        clock += 1;
        if let Some(old) = model.insert(c, clock) {
            lru.remove(&(old, c));
        }
        lru.insert((clock, c));
    };
    let mut x = 12345u64;
    for step in 0..20_000u64 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let c = ClientId((x >> 33) % 13);
        // A third of the steps look a client up, a third record a write, a third check
        // a write and record it, as applying one does.
        let kind = (x >> 20) % 3;
        if kind == 2 {
            let known = model.contains_key(&c);
            let seq = step + 1;
            let verdict = s.check_before_record(c, seq);
            assert_eq!(verdict == SessionCheck::Fresh, known, "step {step}");
            if known {
                touch(&mut model, &mut lru, c);
            }
            s.record(c, seq, Outcome::Done);
            touch(&mut model, &mut lru, c);
            while model.len() > max {
                let (_, evict) = lru.pop_first().unwrap();
                model.remove(&evict);
            }
        } else if kind == 0 {
            let expect_known = model.contains_key(&c);
            let known = s.check(c, 0) != SessionCheck::Unknown;
            assert_eq!(known, expect_known, "step {step}");
            if known {
                touch(&mut model, &mut lru, c);
            }
        } else {
            s.record(c, step + 1, Outcome::Done);
            touch(&mut model, &mut lru, c);
            while model.len() > max {
                let (_, evict) = lru.pop_first().unwrap();
                model.remove(&evict);
            }
        }
        let mut held: Vec<ClientId> = s.by_client.keys().copied().collect();
        held.sort();
        assert_eq!(
            held,
            model.keys().copied().collect::<Vec<_>>(),
            "step {step}"
        );
        assert!(
            s.recency.len() <= 2 * max + 65,
            "recency queue grew to {}",
            s.recency.len()
        );
    }
    let back = Sessions::from_parts(max, s.clock, s.by_client.clone().into_iter().collect());
    assert_eq!(back, s);
}

/// A write checks its session and records it: two uses on the clock (the stamps images
/// keep), but one pair in the recency queue, the record's.
#[test]
fn a_write_queues_its_session_once_and_stamps_it_twice() {
    let mut sm = StateMachine::new(10);
    sm.apply_entry(1, 1, &entry(vec![open(1, 1)]));
    assert_eq!((sm.sessions.clock, sm.sessions.recency.len()), (1, 1));
    for seq in 2..=11 {
        sm.apply_entry(seq, 1, &entry(vec![put(1, seq, "k", "v")]));
    }
    assert_eq!(sm.sessions.clock, 21, "check and record each count a use");
    assert_eq!(sm.sessions.by_client[&ClientId(1)].stamp, 21);
    assert_eq!(sm.sessions.recency.len(), 11, "one pair per write");
    // A retry is answered from the session, and queued as a use.
    assert_eq!(
        sm.apply_entry(12, 1, &entry(vec![put(1, 11, "k", "v")])),
        vec![Outcome::Done]
    );
    assert_eq!((sm.sessions.clock, sm.sessions.recency.len()), (22, 12));
}

#[test]
fn image_and_digest_do_not_depend_on_insertion_order() {
    let writes: Vec<WriteCommand> = (0..200u64)
        .map(|i| {
            // Every write opens a session of its own (seq 1); sessions get evicted.
            put(
                i + 1,
                1,
                &format!("key{}", (i * 37) % 101),
                &format!("v{i}"),
            )
        })
        .collect();
    let mut one = StateMachine::new(5);
    let mut other = StateMachine::new(5);
    for w in &writes {
        one.apply_write(w);
    }
    // The same final map and sessions, reached with the keys first written in
    // reverse order (then the real writes, so values and sessions agree).
    for (i, w) in writes.iter().rev().enumerate() {
        let WriteOp::Put { key, .. } = &w.op else {
            unreachable!()
        };
        other.apply_write(&WriteCommand {
            client: ClientId(1000 + i as u64),
            seq: 1,
            op: WriteOp::Put {
                key: key.clone(),
                value: b("first"),
            },
        });
    }
    let mut other = StateMachine::from_image(&other.to_image(), 5).unwrap();
    other.sessions = Sessions::new(5);
    for w in &writes {
        other.apply_write(w);
    }
    assert_eq!(one, other);
    assert_eq!(one.to_image(), other.to_image());
    assert_eq!(one.digest(), other.digest());
}

#[test]
fn image_round_trip_keeps_map_sessions_and_position() {
    let mut sm = StateMachine::new(10);
    sm.apply_entry(1, 1, &entry(vec![put(1, 1, "a", "x"), put(2, 1, "b", "y")]));
    sm.apply_empty(2, 2);
    let back = StateMachine::from_image(&sm.to_image(), 10).unwrap();
    assert_eq!(back, sm);
    assert_eq!(back.digest(), sm.digest());
    let mut back = back;
    assert_eq!(
        back.apply_entry(3, 2, &entry(vec![put(2, 1, "b", "again")])),
        vec![Outcome::Done]
    );
    assert_eq!(back.get(b"b"), Some(b("y")), "session survived the image");
    assert!(StateMachine::from_image(b"\xff\xff", 10).is_err());
}

/// Puts (same and other value lengths), deletes and CAS over a small key space, checked
/// after every write against an ordered map: the packed pairs must keep every key and
/// value intact through overwrites in place, reallocations and removals.
#[test]
fn map_agrees_with_a_model_through_overwrites_and_deletes() {
    use std::collections::BTreeMap;
    let mut sm = StateMachine::new(4);
    let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    let mut x = 99u64;
    for seq in 1..=5_000u64 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        // Keys of 0 to 3 bytes (the empty key included), values of 0 to 5 bytes.
        let key: Vec<u8> = (0..(x >> 60) % 4)
            .map(|i| b'a' + ((x >> (8 * i)) % 3) as u8)
            .collect();
        let value: Vec<u8> = vec![(seq % 251) as u8; ((x >> 40) % 6) as usize];
        let op = match (x >> 20) % 4 {
            0 => WriteOp::Delete {
                key: Bytes::from(key.clone()),
            },
            1 => WriteOp::Cas {
                key: Bytes::from(key.clone()),
                expected: model.get(&key).map(|v| Bytes::from(v.clone())),
                new: Bytes::from(value.clone()),
            },
            _ => WriteOp::Put {
                key: Bytes::from(key.clone()),
                value: Bytes::from(value.clone()),
            },
        };
        sm.apply_write(&WriteCommand {
            client: ClientId(1),
            seq,
            op: op.clone(),
        });
        match op {
            WriteOp::Delete { .. } => {
                model.remove(&key);
            }
            _ => {
                model.insert(key.clone(), value);
            }
        }
        assert_eq!(sm.keys(), model.len(), "write {seq}");
        for (k, v) in &model {
            assert_eq!(sm.get(k).as_deref(), Some(&v[..]), "write {seq}, key {k:?}");
        }
    }
    let back = StateMachine::from_image(&sm.to_image(), 4).unwrap();
    assert_eq!(back, sm);
    assert!(back.get(b"zz").is_none());
}

/// Snapshot images are on disk and cross the network: the packed map must encode them
/// byte for byte as the `Bytes` map before it did.
#[test]
fn image_encoding_is_unchanged() {
    #[derive(Serialize)]
    struct OwnedImage {
        data: Vec<(Bytes, Bytes)>,
        sessions: Vec<(ClientId, Session)>,
        clock: u64,
        applied_index: u64,
        applied_term: u64,
        membership_epoch: u64,
        preferred_leader: Option<NodeId>,
        move_in_flight: Option<MoveInFlight>,
        registry: Option<Registry>,
    }
    let mut sm = StateMachine::new(10);
    sm.apply_entry(
        1,
        1,
        &entry(vec![put(2, 1, "kb", "long value"), put(1, 1, "ka", "")]),
    );
    let expected = OwnedImage {
        data: vec![(b("ka"), b("")), (b("kb"), b("long value"))],
        sessions: vec![
            (
                ClientId(1),
                Session {
                    seq: 1,
                    outcome: Outcome::Done,
                    stamp: 2,
                },
            ),
            (
                ClientId(2),
                Session {
                    seq: 1,
                    outcome: Outcome::Done,
                    stamp: 1,
                },
            ),
        ],
        clock: 2,
        applied_index: 2,
        applied_term: 1,
        membership_epoch: 2,
        preferred_leader: None,
        move_in_flight: None,
        registry: None,
    };
    sm.apply_membership_change(2, 1);
    assert_eq!(
        &sm.to_image()[..],
        &postcard::to_stdvec(&expected).unwrap()[..]
    );
}

/// Images list keys in byte order, also where the sort's 16-byte prefixes tie or a
/// key is a zero-padded prefix of another.
#[test]
fn images_list_keys_in_byte_order() {
    let keys: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b"a".to_vec(),
        b"a\0".to_vec(),
        b"a\0\0b".to_vec(),
        b"a\x01".to_vec(),
        b"b".to_vec(),
        [&[7u8; 16][..], b"z"].concat(),
        [&[7u8; 16][..], b"a"].concat(),
        [7u8; 16].to_vec(),
        vec![0xff; 3],
    ];
    let mut sm = StateMachine::new(4);
    for (i, k) in keys.iter().enumerate() {
        sm.apply_write(&WriteCommand {
            client: ClientId(1),
            seq: i as u64 + 1,
            op: WriteOp::Put {
                key: Bytes::from(k.clone()),
                value: b("v"),
            },
        });
    }
    let mut expected = keys.clone();
    expected.sort();
    let listed: Vec<Vec<u8>> = sm.sorted_data().iter().map(|p| p.key().to_vec()).collect();
    assert_eq!(listed, expected);
}

#[test]
fn undecodable_entry_applies_as_nothing() {
    let mut sm = StateMachine::new(10);
    assert!(sm.apply_entry(1, 1, b"\xff\xff\xff").is_empty());
    assert_eq!(sm.applied_index(), 1);
}

/// An image with the given session clock and sessions, as `to_image` lays it out.
fn image_with_sessions(clock: u64, sessions: &[(u64, u64)]) -> Vec<u8> {
    let sessions: Vec<(ClientId, Session)> = sessions
        .iter()
        .map(|&(client, stamp)| {
            let session = Session {
                seq: 1,
                outcome: Outcome::Done,
                stamp,
            };
            (ClientId(client), session)
        })
        .collect();
    let image = ImageRef {
        data: vec![],
        sessions: sessions.iter().map(|(c, s)| (c, s)).collect(),
        clock,
        applied_index: 3,
        applied_term: 1,
        membership_epoch: 0,
        preferred_leader: None,
        move_in_flight: None,
        registry: &None,
    };
    postcard::to_stdvec(&image).unwrap()
}

/// Found by the snapshot_image fuzz target: an image whose session clock is u64::MAX
/// restored, and the next write overflowed the clock (a panic with overflow checks);
/// stamps after the clock or two sessions of one client break eviction alike. Such an
/// image is refused, also by the check a follower runs before persisting a snapshot.
#[test]
fn an_image_whose_session_clock_would_overflow_is_refused() {
    let meta = kv_raft::SnapshotMeta {
        index: 3,
        term: 1,
        ..Default::default()
    };
    for bad in [
        image_with_sessions(u64::MAX, &[(1, 5)]),
        image_with_sessions(10, &[(1, 11)]),
        image_with_sessions(10, &[(1, 4), (1, 4)]),
    ] {
        assert!(StateMachine::from_image(&bad, 8).is_err());
        assert!(StateMachine::check_image(&bad, 8, meta.index, meta.term).is_err());
    }
    let good = image_with_sessions(10, &[(1, 4), (2, 10)]);
    let mut sm = StateMachine::from_image(&good, 8).unwrap();
    assert!(StateMachine::check_image(&good, 8, meta.index, meta.term).is_ok());
    sm.apply_write(&put(3, 1, "k", "v"));
    assert_eq!(sm.sessions(), 3);
}

fn register(client: u64, seq: u64, node: u64, identity: u64) -> WriteCommand {
    WriteCommand {
        client: ClientId(client),
        seq,
        op: WriteOp::RegisterNode {
            node: NodeId(node),
            addr: SocketAddr::from(([127, 0, 0, 1], 7000 + node as u16)),
            identity,
        },
    }
}

#[test]
fn a_data_shard_refuses_registrations_and_the_metadata_group_applies_them_once() {
    let mut data = StateMachine::new(10);
    let out = data.apply_entry(1, 1, &entry(vec![register(1, 1, 4, 0xaa)]));
    assert!(
        matches!(&out[..], [Outcome::Error(ClientError::Malformed(m))] if m.contains("metadata group")),
        "{out:?}"
    );
    assert_eq!(data.registry(), None);

    let mut meta = StateMachine::new_metadata(10);
    let out = meta.apply_entry(1, 1, &entry(vec![register(1, 1, 4, 0xaa)]));
    assert_eq!(out, vec![Outcome::Done]);
    // The retry of the same request is answered from the session, not re-applied.
    let out = meta.apply_entry(2, 1, &entry(vec![register(1, 1, 4, 0xaa)]));
    assert_eq!(out, vec![Outcome::Done]);
    let registry = meta.registry().unwrap();
    assert_eq!((registry.version, registry.nodes.len()), (1, 1));
    // Another identity under the same id is refused, naming the id.
    let out = meta.apply_entry(3, 1, &entry(vec![register(2, 1, 4, 0xbb)]));
    assert!(
        matches!(&out[..], [Outcome::Error(ClientError::RegisterRefused(e))] if e.to_string().contains("node n4")),
        "{out:?}"
    );
    assert_eq!(meta.registry().unwrap().version, 1);
    // The registry travels in the snapshot image.
    let back = StateMachine::from_image(&meta.to_image(), 10).unwrap();
    assert_eq!(back, meta);
    assert_eq!(
        back.registry().unwrap().get(NodeId(4)).unwrap().identity,
        0xaa
    );
    assert_eq!(back.digest(), meta.digest());
}

/// `apply_entry` reads its writes borrowed from the entry: every kind of write must read
/// back as the owned decoding does, and apply to the same state and outcomes.
#[test]
fn borrowed_decoding_reads_and_applies_every_write_as_the_owned_one() {
    let w = |seq, op| WriteCommand {
        client: ClientId(3),
        seq,
        op,
    };
    let writes = vec![
        w(1, WriteOp::OpenSession),
        w(
            2,
            WriteOp::Put {
                key: b("k"),
                value: b("v1"),
            },
        ),
        w(
            3,
            WriteOp::Cas {
                key: b("k"),
                expected: Some(b("v1")),
                new: b("v2"),
            },
        ),
        w(
            4,
            WriteOp::Cas {
                key: b("k"),
                expected: None,
                new: b("no"),
            },
        ),
        w(
            5,
            WriteOp::Incr {
                key: b("n"),
                delta: -3,
            },
        ),
        w(
            6,
            WriteOp::Append {
                key: b("k"),
                value: b("+"),
            },
        ),
        w(
            7,
            WriteOp::Swap {
                key: b("k"),
                new: Some(b("s")),
            },
        ),
        w(
            8,
            WriteOp::Swap {
                key: b("n"),
                new: None,
            },
        ),
        w(9, WriteOp::Delete { key: b("k") }),
        w(10, WriteOp::PreferLeader { node: NodeId(2) }),
        w(
            11,
            WriteOp::BeginMove {
                shard: ShardId(0),
                from: NodeId(1),
                to: NodeId(4),
            },
        ),
        w(
            12,
            WriteOp::EndMove {
                client: ClientId(3),
                seq: 11,
                refusal: None,
            },
        ),
        w(13, WriteOp::PauseBalancer { paused: true }),
    ];
    let data = entry(writes.clone());
    let borrowed = CommandBatch::decode_borrowed(&data).unwrap();
    assert_eq!(borrowed.writes.len(), writes.len());
    // A byte string encodes the same borrowed or owned, so a borrowed batch that read
    // every field right encodes to the entry it came from.
    assert_eq!(postcard::to_stdvec(&borrowed).unwrap(), &data[..]);
    let mut by_entry = StateMachine::new(10);
    let mut by_write = StateMachine::new(10);
    by_write.advance(1, 1);
    let outcomes: Vec<Outcome> = writes.iter().map(|w| by_write.apply_write(w)).collect();
    assert_eq!(by_entry.apply_entry(1, 1, &data), outcomes);
    assert!(by_entry == by_write, "the same writes leave the same state");
    assert_eq!(by_entry.get(b"n"), None);
    assert_eq!(by_entry.preferred_leader(), Some(NodeId(2)));
}

/// A leader encodes its entries from the requests' ops borrowed: every op must encode
/// as the owned write the log carried before, and gets and status are no writes.
#[test]
fn a_write_borrowed_from_its_op_encodes_as_the_owned_one() {
    use kv_shared::proto::Op;
    use kv_shared::registry::NodeState;
    let ops = vec![
        Op::Put {
            key: b("k"),
            value: b("v"),
        },
        Op::Delete { key: b("k") },
        Op::Cas {
            key: b("k"),
            expected: Some(b("e")),
            new: b("n"),
        },
        Op::Cas {
            key: b("k"),
            expected: None,
            new: b("n"),
        },
        Op::OpenSession { key: b("k") },
        Op::Incr {
            key: b("k"),
            delta: 9,
        },
        Op::Append {
            key: b("k"),
            value: b("+"),
        },
        Op::Swap {
            key: b("k"),
            new: Some(b("s")),
        },
        Op::Swap {
            key: b("k"),
            new: None,
        },
        Op::ShardLeader {
            shard: ShardId(1),
            node: NodeId(2),
        },
        Op::MoveReplica {
            shard: ShardId(1),
            from: NodeId(2),
            to: NodeId(3),
        },
        Op::RegisterNode {
            node: NodeId(4),
            addr: "127.0.0.1:9".parse().unwrap(),
            identity: 5,
        },
        Op::SetNodeState {
            node: NodeId(4),
            state: NodeState::Draining,
        },
        Op::PauseBalancer { paused: true },
    ];
    for op in &ops {
        let owned = WriteOp::from_op(op).expect("a write");
        let borrowed = WriteOp::borrowed(op).expect("a write");
        assert_eq!(
            postcard::to_stdvec(&borrowed).unwrap(),
            postcard::to_stdvec(&owned).unwrap(),
            "{op:?}"
        );
    }
    let get = Op::Get {
        key: b("k"),
        stale: false,
    };
    assert!(WriteOp::borrowed(&get).is_none() && WriteOp::borrowed(&Op::Status).is_none());
}

fn postcard_writes(data: &[u8]) -> Option<Vec<WriteCommand<&[u8]>>> {
    CommandBatch::decode_borrowed(data).ok().map(|b| b.writes)
}

/// `max_len` bytes at most, drawn from `rng`.
fn random_bytes(rng: &mut SplitMix64, max_len: u64) -> Bytes {
    let len = rng.upto(max_len);
    (0..len).map(|_| rng.next_u64() as u8).collect()
}

/// The hand-read path of entries of `Put`s and `OpenSession`s must agree with postcard
/// on every payload it accepts, and accept the payloads leaders write.
#[test]
fn puts_only_reads_what_postcard_reads() {
    let mut rng = SplitMix64::new(14);
    for round in 0..3000 {
        let n = rng.below(6);
        let writes: Vec<WriteCommand> = (0..n)
            .map(|_| {
                // Integers of every varint length, up to u64::MAX (ten bytes).
                let client = rng.next_u64() >> rng.below(64);
                let seq = rng.next_u64() >> rng.below(64);
                let op = if rng.below(4) == 0 {
                    WriteOp::OpenSession
                } else {
                    WriteOp::Put {
                        key: random_bytes(&mut rng, 40),
                        value: random_bytes(&mut rng, 300),
                    }
                };
                WriteCommand {
                    client: ClientId(client),
                    seq,
                    op,
                }
            })
            .collect();
        let mut batch = CommandBatch { writes }.encode().to_vec();
        let fast: Option<Vec<_>> = command::puts_only(&batch).map(Iterator::collect);
        assert!(
            fast.is_some(),
            "round {round}: a leader's batch of puts and opens"
        );
        assert_eq!(fast, postcard_writes(&batch), "round {round}");
        if batch.len() < 2 {
            continue;
        }
        // Damaged: cut short, a byte flipped, a byte added. Whatever the hand-read path
        // still accepts, postcard reads the same.
        let cut = rng.below(batch.len() as u64) as usize;
        let mut damaged = vec![batch[..cut].to_vec()];
        let i = rng.below(batch.len() as u64) as usize;
        batch[i] ^= 1 << rng.below(8);
        damaged.push(batch.clone());
        batch.push(rng.next_u64() as u8);
        damaged.push(batch);
        for d in damaged {
            if let Some(fast) = command::puts_only(&d).map(Iterator::collect::<Vec<_>>) {
                assert_eq!(Some(fast), postcard_writes(&d), "round {round}");
            }
        }
    }
}

#[test]
fn puts_only_leaves_other_ops_and_odd_encodings_to_postcard() {
    let opens = entry(vec![put(1, 1, "a", "x"), open(2, 1)]);
    let fast: Vec<_> = command::puts_only(&opens)
        .expect("puts and opens are read by hand")
        .collect();
    assert_eq!(Some(fast), postcard_writes(&opens));
    let delete = WriteCommand {
        client: ClientId(2),
        seq: 2,
        op: WriteOp::Delete { key: b("a") },
    };
    let mixed = entry(vec![put(3, 1, "b", "y"), delete]);
    assert!(command::puts_only(&mixed).is_none());
    let mut sm = StateMachine::new(10);
    assert_eq!(
        sm.apply_entry(1, 1, &opens),
        vec![Outcome::Done, Outcome::Done]
    );
    // Applied through postcard all the same.
    assert_eq!(
        sm.apply_entry(2, 1, &mixed),
        vec![Outcome::Done, Outcome::Done]
    );
    assert_eq!(sm.get(b"a"), None);
    // A count of 1 written in two bytes (0x81 0x00): postcard takes it, and so does
    // the hand-read path, with the same write.
    let one = entry(vec![put(1, 2, "k", "v")]);
    let mut long = vec![0x81, 0x00];
    long.extend_from_slice(&one[1..]);
    let fast: Vec<_> = command::puts_only(&long)
        .expect("a long varint of 2 bytes")
        .collect();
    assert_eq!(
        Some(fast),
        CommandBatch::decode_borrowed(&long).ok().map(|b| b.writes)
    );
    // The tenth byte of a varint holds one bit: 2 there overflows, and both refuse it.
    let mut overflow = vec![
        0x01, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02,
    ];
    overflow.extend_from_slice(&one[2..]);
    assert!(CommandBatch::decode_borrowed(&overflow).is_err());
    assert!(command::puts_only(&overflow).is_none());
    overflow[10] = 0x01;
    let fast: Vec<_> = command::puts_only(&overflow).expect("u64::MAX").collect();
    assert_eq!(fast[0].client, ClientId(u64::MAX));
    assert_eq!(
        Some(fast),
        CommandBatch::decode_borrowed(&overflow)
            .ok()
            .map(|b| b.writes)
    );
    // Trailing bytes: postcard ignores them; the hand-read path declines, and the entry
    // still applies (via postcard).
    let mut trailing = one.to_vec();
    trailing.push(7);
    assert!(command::puts_only(&trailing).is_none());
    assert_eq!(sm.apply_entry(3, 1, &trailing), vec![Outcome::Done]);
    assert_eq!(sm.get(b"k"), Some(b("v")));
}

/// A leader sizes and writes the writes it proposes by hand (`Put` and `OpenSession`;
/// postcard for the rest): byte for byte postcard's encoding, at every varint length.
#[test]
fn proposed_writes_are_sized_and_written_as_postcard_does() {
    let mut rng = SplitMix64::new(15);
    for round in 0..5000 {
        let client = ClientId(rng.next_u64() >> rng.below(64));
        let seq = rng.next_u64() >> rng.below(64);
        let key = random_bytes(&mut rng, 200);
        // Lengths across the one-, two- and three-byte varints.
        let value_max = [100, 300, 20_000][rng.below(3) as usize];
        let value = random_bytes(&mut rng, value_max);
        let op = match rng.below(3) {
            0 => WriteOp::Put {
                key: &key,
                value: &value,
            },
            1 => WriteOp::OpenSession,
            _ => WriteOp::Delete { key: &key },
        };
        let write = WriteCommand { client, seq, op };
        let want = postcard::to_stdvec(&write).unwrap();
        let mut out = vec![7u8; rng.below(3) as usize];
        let before = out.clone();
        command::extend_with_write(&write, &mut out);
        assert_eq!(
            out[..before.len()],
            before[..],
            "round {round}: prefix kept"
        );
        assert_eq!(out[before.len()..], want[..], "round {round}: {write:?}");
        assert_eq!(command::write_bytes(&write), want.len(), "round {round}");
    }
}
