//! A replica fed arbitrary messages from members of its group (a faulty or forged peer),
//! interleaved with ticks, proposals, reads, persistence and restarts from its own disk:
//! nothing may panic, and the replica's own invariants must hold. Log matching across
//! replicas cannot be asked of a byzantine peer, so only what one replica promises by
//! itself is checked.

use crate::node::RoleState;
use crate::testing::Disk;
use crate::types::*;
use crate::{Config, Raft, Restored};
use bytes::Bytes;
use kv_shared::limits::{RAFT_INDEX_MAX, RAFT_TERM_MAX};
use kv_shared::NodeId;
use proptest::prelude::*;
use std::collections::BTreeMap;

const ME: NodeId = NodeId(1);

/// Terms and indexes near the small values a real group uses, plus the edges.
fn number() -> impl Strategy<Value = u64> {
    prop_oneof![
        8 => 0u64..8,
        1 => Just(u64::MAX),
        1 => Just(RAFT_TERM_MAX),
        1 => Just(RAFT_INDEX_MAX),
        1 => any::<u64>(),
    ]
}

fn node() -> impl Strategy<Value = NodeId> {
    prop_oneof![
        Just(NodeId(0)),
        Just(NodeId(1)),
        Just(NodeId(2)),
        Just(NodeId(3)),
        Just(NodeId(4))
    ]
}

fn membership() -> impl Strategy<Value = Membership> {
    (
        proptest::collection::vec(node(), 0..4),
        proptest::collection::vec(node(), 0..2),
    )
        .prop_map(|(voters, learners)| Membership { voters, learners })
}

fn entry() -> impl Strategy<Value = Entry> {
    let kind = prop_oneof![
        4 => Just(EntryKind::Command),
        1 => Just(EntryKind::Noop),
        1 => node().prop_map(|n| EntryKind::ConfChange(ConfChange::AddLearner(n))),
        1 => node().prop_map(|n| EntryKind::ConfChange(ConfChange::PromoteLearner(n))),
        1 => node().prop_map(|n| EntryKind::ConfChange(ConfChange::RemoveNode(n))),
    ];
    (
        number(),
        number(),
        kind,
        proptest::collection::vec(any::<u8>(), 0..3),
    )
        .prop_map(|(term, index, kind, data)| Entry {
            term,
            index,
            kind,
            data: Bytes::from(data),
        })
}

/// Entries that mostly continue `prev_index`, so that appends get past the checks.
fn entries_after(prev_index: u64, term: u64) -> impl Strategy<Value = Vec<Entry>> {
    prop_oneof![
        3 => (0usize..4, any::<bool>()).prop_map(move |(n, command)| {
            (0..n as u64)
                .map(|i| Entry {
                    term,
                    index: prev_index.saturating_add(1 + i),
                    kind: if command { EntryKind::Command } else { EntryKind::Noop },
                    data: if command { Bytes::from_static(b"c") } else { Bytes::new() },
                })
                .collect()
        }),
        1 => proptest::collection::vec(entry(), 0..3),
    ]
}

fn body() -> impl Strategy<Value = MessageBody> {
    prop_oneof![
        (number(), number()).prop_map(|(last_index, last_term)| MessageBody::PreVote {
            last_index,
            last_term
        }),
        any::<bool>().prop_map(|reject| MessageBody::PreVoteResp { reject }),
        (number(), number(), any::<bool>()).prop_map(|(last_index, last_term, transfer)| {
            MessageBody::Vote {
                last_index,
                last_term,
                transfer,
            }
        }),
        any::<bool>().prop_map(|reject| MessageBody::VoteResp { reject }),
        (number(), number(), number()).prop_flat_map(|(prev_index, prev_term, commit)| {
            entries_after(prev_index, prev_term.max(1)).prop_map(move |entries| {
                MessageBody::Append {
                    prev_index,
                    prev_term,
                    entries,
                    commit,
                }
            })
        }),
        (any::<bool>(), number(), number(), number()).prop_map(
            |(reject, index, hint_index, hint_term)| MessageBody::AppendResp {
                reject,
                index,
                hint_index,
                hint_term,
            }
        ),
        (number(), number())
            .prop_map(|(commit, read_round)| MessageBody::Heartbeat { commit, read_round }),
        number().prop_map(|read_round| MessageBody::HeartbeatResp { read_round }),
        number().prop_map(|request| MessageBody::ReadIndex { request }),
        (number(), number(), any::<bool>()).prop_map(|(request, index, reject)| {
            MessageBody::ReadIndexResp {
                request,
                index,
                reject,
            }
        }),
        (
            number(),
            number(),
            membership(),
            0u64..6,
            prop_oneof![Just(0u64), 1u64..8, number()],
            proptest::collection::vec(any::<u8>(), 0..6),
        )
            .prop_map(|(index, term, membership, offset, total_len, chunk)| {
                MessageBody::InstallSnapshot {
                    meta: SnapshotMeta {
                        index,
                        term,
                        membership,
                    },
                    offset,
                    total_len,
                    chunk: Bytes::from(chunk),
                }
            }),
        (number(), number(), any::<bool>()).prop_map(|(snapshot_index, received, done)| {
            MessageBody::InstallSnapshotResp {
                snapshot_index,
                received,
                done,
            }
        }),
        Just(MessageBody::TimeoutNow),
        (number(), number())
            .prop_map(|(index, log_term)| MessageBody::Committed { index, log_term }),
    ]
}

#[derive(Clone, Debug)]
enum Action {
    Step(Message),
    /// A message built from the replica's current state (`Subject::plausible`), so that
    /// runs get past elections, commits and snapshot installs instead of being refused.
    Plausible(Plausible, NodeId, u64),
    Tick(u8),
    Persist,
    Propose,
    ReadIndex,
    Compact,
    Restart,
}

/// The kinds of state-aware messages.
#[derive(Clone, Copy, Debug)]
enum Plausible {
    /// A pre-vote or vote grant for the current campaign.
    Grant,
    /// An Append from a leader of the current (or next) term, near the log's end.
    Append,
    /// A one-chunk snapshot past the commit index (its image sometimes refused).
    Snapshot,
    /// A follower's acknowledgement or rejection near the leader's last index.
    AppendResp,
}

fn action() -> impl Strategy<Value = Action> {
    let from = || prop_oneof![Just(NodeId(2)), Just(NodeId(3))];
    let plausible = prop_oneof![
        Just(Plausible::Grant),
        Just(Plausible::Append),
        Just(Plausible::Snapshot),
        Just(Plausible::AppendResp),
    ];
    prop_oneof![
        6 => (from(), number(), body()).prop_map(|(from, term, body)| Action::Step(Message {
            from,
            to: ME,
            term,
            body,
        })),
        6 => (plausible, from(), any::<u64>()).prop_map(|(k, from, r)| Action::Plausible(k, from, r)),
        4 => (1u8..30).prop_map(Action::Tick),
        4 => Just(Action::Persist),
        1 => Just(Action::Propose),
        1 => Just(Action::ReadIndex),
        1 => Just(Action::Compact),
        1 => Just(Action::Restart),
    ]
}

/// Images the caller "cannot restore" in this test: the check must keep them off disk.
fn image_ok(s: &Snapshot) -> bool {
    s.data.first() != Some(&0xff)
}

fn config() -> Config {
    Config {
        snapshot_chunk_bytes_max: 4,
        snapshot_image_check: Some(image_ok),
        ..Config::new(ME, 7)
    }
}

fn initial_membership() -> Membership {
    Membership {
        voters: vec![NodeId(1), NodeId(2), NodeId(3)],
        learners: vec![],
    }
}

/// One replica, its disk, and what it promised so far.
struct Subject {
    raft: Raft,
    disk: Disk,
    pending: Vec<crate::Write>,
    /// Entries handed out for applying, by index (the state machine's history).
    applied: BTreeMap<Index, Entry>,
    applied_index: Index,
    last_term: Term,
    last_commit: Index,
    /// The durable vote of each term: a replica never votes twice in one term.
    votes: BTreeMap<Term, NodeId>,
}

impl Subject {
    fn new() -> Subject {
        let raft = Raft::new(
            config(),
            Restored {
                initial_membership: initial_membership(),
                ..Restored::default()
            },
        );
        Subject {
            raft,
            disk: Disk::default(),
            pending: Vec::new(),
            applied: BTreeMap::new(),
            applied_index: 0,
            last_term: 0,
            last_commit: 0,
            votes: BTreeMap::new(),
        }
    }

    fn act(&mut self, a: Action) {
        match a {
            Action::Step(m) => self.raft.step(m),
            Action::Plausible(kind, from, r) => {
                let m = self.plausible(kind, from, r);
                self.raft.step(m);
            }
            Action::Tick(n) => {
                for _ in 0..n {
                    self.raft.tick();
                    self.drain();
                }
            }
            Action::Persist => {
                for w in std::mem::take(&mut self.pending) {
                    self.disk.apply(&w);
                    let hs = self.disk.hs;
                    if !hs.vote.is_none() {
                        let v = *self.votes.entry(hs.term).or_insert(hs.vote);
                        assert_eq!(v, hs.vote, "voted twice in term {}", hs.term);
                    }
                    self.raft.on_persisted(w.id);
                }
            }
            Action::Propose => {
                let _ = self.raft.propose(Bytes::from_static(b"p"));
            }
            Action::ReadIndex => {
                let _ = self.raft.read_index(1);
            }
            Action::Compact => {
                let applied = self.raft.log.applied;
                if applied > self.raft.log.snap_index {
                    // As kv-node does: the snapshot is durable, then Raft compacts.
                    let snap = Snapshot {
                        meta: self.raft.snapshot_meta(applied),
                        data: Bytes::from_static(b"image"),
                    };
                    self.disk.snapshot = Some(snap.clone());
                    self.disk.entries.retain(|e| e.index > applied);
                    self.raft.compact(snap);
                }
            }
            Action::Restart => {
                // Unsynced writes are lost; the replica restarts from its disk.
                self.pending.clear();
                let restored = Restored {
                    hard_state: self.disk.hs,
                    snapshot: self.disk.snapshot.clone(),
                    entries: self.disk.entries.clone(),
                    initial_membership: initial_membership(),
                };
                // What a replica applied above its durable commit index (persisting it is
                // optional) is settled only by its peers, which may be byzantine here: a
                // replica vouches only for what it knows durably committed.
                let durable = self
                    .disk
                    .hs
                    .commit
                    .max(self.disk.snapshot.as_ref().map_or(0, |s| s.meta.index));
                self.applied.retain(|i, _| *i <= durable);
                self.raft = Raft::new(config(), restored);
                self.applied_index = self.raft.log.applied;
                // Only the durable term and commit index survive (persisting the commit
                // index is optional; a term not durable promised nothing).
                self.last_commit = self.raft.log.commit;
                self.last_term = self.raft.term;
            }
        }
        self.drain();
    }

    /// A message of `kind` from `from` that fits the replica's state; `r` picks the
    /// details.
    fn plausible(&self, kind: Plausible, from: NodeId, r: u64) -> Message {
        let raft = &self.raft;
        let term = raft.term;
        let last = raft.log.last_index();
        let body = match kind {
            Plausible::Grant => match raft.role {
                RoleState::PreCandidate { .. } => {
                    return Message {
                        from,
                        to: ME,
                        term: term + 1,
                        body: MessageBody::PreVoteResp { reject: false },
                    }
                }
                _ => MessageBody::VoteResp {
                    reject: r.is_multiple_of(5),
                },
            },
            Plausible::Append => {
                let term = term.max(1) + r % 2;
                let prev_index = last.saturating_sub(r % 3).max(raft.log.snap_index);
                let prev_term = raft.log.term(prev_index).unwrap_or(0);
                let n = (r >> 8) % 3;
                let entries = (1..=n)
                    .map(|i| Entry {
                        term,
                        index: prev_index + i,
                        kind: EntryKind::Command,
                        data: Bytes::from_static(b"e"),
                    })
                    .collect();
                return Message {
                    from,
                    to: ME,
                    term,
                    body: MessageBody::Append {
                        prev_index,
                        prev_term,
                        entries,
                        commit: prev_index + (r >> 16) % (n + 1),
                    },
                };
            }
            Plausible::Snapshot => {
                let term = term.max(1);
                let image: &[u8] = if r.is_multiple_of(4) {
                    b"\xffbad"
                } else {
                    b"image"
                };
                return Message {
                    from,
                    to: ME,
                    term,
                    body: MessageBody::InstallSnapshot {
                        meta: SnapshotMeta {
                            index: raft.log.commit + 1 + r % 4,
                            term,
                            membership: initial_membership(),
                        },
                        offset: 0,
                        total_len: image.len() as u64,
                        chunk: Bytes::from_static(image),
                    },
                };
            }
            Plausible::AppendResp => MessageBody::AppendResp {
                reject: r.is_multiple_of(3),
                index: last.saturating_sub(r % 3),
                hint_index: last.saturating_sub((r >> 8) % 4),
                hint_term: (r >> 16) % (term + 1),
            },
        };
        Message {
            from,
            to: ME,
            term,
            body,
        }
    }

    fn drain(&mut self) {
        while self.raft.has_ready() {
            let rd = self.raft.ready();
            if let Some(w) = rd.write {
                if let Some(s) = &w.snapshot {
                    assert!(image_ok(s), "a refused image reached a write");
                }
                self.pending.push(w);
            }
            if let Some(s) = rd.apply_snapshot {
                assert!(s.meta.index > self.applied_index, "snapshot moves back");
                self.applied_index = s.meta.index;
            }
            for e in rd.committed {
                assert_eq!(e.index, self.applied_index + 1, "applies out of order");
                assert!(
                    e.index < self.raft.log.unstable_from,
                    "applies an entry no write holds"
                );
                assert!(
                    e.index <= self.raft.log.commit,
                    "applies an uncommitted entry"
                );
                if let Some(before) = self.applied.get(&e.index) {
                    assert_eq!(before, &e, "index {} applied twice, differently", e.index);
                }
                self.applied.insert(e.index, e.clone());
                self.applied_index = e.index;
            }
        }
        self.check();
    }

    fn check(&mut self) {
        let r = &self.raft;
        r.log.assert_invariants();
        assert!(r.log.persisted <= r.log.last_index());
        assert!(
            r.term <= RAFT_TERM_MAX,
            "term {} beyond any accepted",
            r.term
        );
        assert!(r.term >= self.last_term, "term regressed");
        assert!(r.log.commit >= self.last_commit, "commit regressed");
        self.last_term = r.term;
        self.last_commit = r.log.commit;
        if let RoleState::Leader(_) = r.role {
            // Two grants from others win a 3-voter election before the candidate's own
            // vote is durable (as in etcd); the vote must still be its own.
            assert_eq!(
                r.vote, ME,
                "leads term {} without voting for itself",
                r.term
            );
        }
        assert!(
            r.membership.voters.len() + r.membership.learners.len() <= kv_shared::limits::NODES_MAX
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_peer_messages_never_panic_or_break_own_invariants(
        actions in proptest::collection::vec(action(), 1..200)
    ) {
        let mut s = Subject::new();
        for a in actions {
            s.act(a);
        }
    }
}

/// Regression: a term of u64::MAX used to be adopted, and the next campaign overflowed
/// `term + 1` (election.rs).
#[test]
fn term_u64_max_is_refused_and_campaigns_do_not_overflow() {
    let mut s = Subject::new();
    s.act(Action::Step(Message {
        from: NodeId(2),
        to: ME,
        term: u64::MAX,
        body: MessageBody::Heartbeat {
            commit: 0,
            read_round: 0,
        },
    }));
    assert_eq!(s.raft.term, 0);
    assert_eq!(s.raft.refusals().get(crate::Refusal::TermOutOfRange), 1);
    s.act(Action::Tick(60));
    assert!(
        matches!(s.raft.role, RoleState::PreCandidate { .. }),
        "it campaigns for term 1 as if nothing had arrived"
    );
}

/// Regression: a committed conf change that does not apply (from a forged leader) made
/// `Raft::new` panic on every restart, and `snapshot_meta` panic when compacting.
#[test]
fn committed_conf_change_that_does_not_apply_is_skipped_at_restart_and_compaction() {
    let mut s = Subject::new();
    let bad = Entry {
        term: 1,
        index: 1,
        kind: EntryKind::ConfChange(ConfChange::PromoteLearner(NodeId(9))),
        data: Bytes::new(),
    };
    s.act(Action::Step(Message {
        from: NodeId(2),
        to: ME,
        term: 1,
        body: MessageBody::Append {
            prev_index: 0,
            prev_term: 0,
            entries: vec![bad],
            commit: 1,
        },
    }));
    s.act(Action::Persist);
    assert_eq!(s.raft.log.commit, 1);
    s.act(Action::Compact);
    assert_eq!(s.raft.log.snap_index, 1);
    s.act(Action::Restart);
    assert_eq!(s.raft.membership, initial_membership());
}

/// Regression: an AppendResp hint of u64::MAX overflowed `hint + 1` in a probing
/// leader's backtracking.
#[test]
fn append_resp_hint_of_u64_max_is_refused() {
    let mut s = Subject::new();
    s.act(Action::Tick(60));
    assert!(matches!(s.raft.role, RoleState::PreCandidate { .. }));
    let grant = |s: &mut Subject, term, body| {
        s.act(Action::Step(Message {
            from: NodeId(2),
            to: ME,
            term,
            body,
        }))
    };
    grant(&mut s, 1, MessageBody::PreVoteResp { reject: false });
    s.act(Action::Persist);
    grant(&mut s, 1, MessageBody::VoteResp { reject: false });
    s.act(Action::Persist);
    assert!(matches!(s.raft.role, RoleState::Leader(_)));
    s.act(Action::Step(Message {
        from: NodeId(2),
        to: ME,
        term: s.raft.term,
        body: MessageBody::AppendResp {
            reject: true,
            index: 0,
            hint_index: u64::MAX,
            hint_term: 0,
        },
    }));
    assert_eq!(s.raft.refusals().get(crate::Refusal::IndexOutOfRange), 1);
}

/// A peer repeating one Append while this replica's write is not yet durable gets one
/// held acknowledgement, not one per copy (memory a remote peer could otherwise grow).
#[test]
fn repeated_appends_during_a_slow_write_hold_one_ack() {
    let mut s = Subject::new();
    let append = Message {
        from: NodeId(2),
        to: ME,
        term: 1,
        body: MessageBody::Append {
            prev_index: 0,
            prev_term: 0,
            entries: vec![Entry {
                term: 1,
                index: 1,
                kind: EntryKind::Noop,
                data: Bytes::new(),
            }],
            commit: 0,
        },
    };
    for _ in 0..1000 {
        s.act(Action::Step(append.clone()));
    }
    assert_eq!(s.raft.held.len(), 1);
    s.act(Action::Persist);
    assert!(s.raft.held.is_empty());
}
