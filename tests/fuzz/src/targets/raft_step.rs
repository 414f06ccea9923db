//! `Raft::step` fed arbitrary messages from the members of its group, interleaved with
//! ticks, proposals, reads, compactions and restarts, while two cooperative peers answer
//! what the replica sends (so that it gets elected and replicates, and the arbitrary
//! messages meet a replica in every role). The caller side is done by the book: writes
//! are persisted in order to an in-memory disk before `on_persisted`, committed entries
//! are applied in order.
//!
//! Checked after every step: term never goes back, nor commit except to its durable
//! value at a restart; committed entries come in
//! index order, with no gap, and never below a restored snapshot; writes never leave a
//! hole in the stored log.

use crate::input::{push_chunk, Input};
use crate::targets::agreeable_reply;
use bytes::Bytes;
use kv_raft::{
    Config, Entry, EntryKind, HardState, Membership, Message, MessageBody, Raft, Ready, Restored,
    Snapshot, Write,
};
use kv_shared::NodeId;

/// The replica under test.
const ME: NodeId = NodeId(1);
/// The other voters; arbitrary messages claim to come from one of them.
const PEERS: [NodeId; 2] = [NodeId(2), NodeId(3)];
/// Most operations one input runs (bounds the time of one input).
const OPS_MAX: usize = 256;
/// Most ticks one tick operation runs.
const TICKS_PER_OP_MAX: u8 = 32;

/// What survived on the replica's disk.
#[derive(Clone, Debug, Default)]
struct Disk {
    hard_state: HardState,
    snapshot: Option<Snapshot>,
    entries: Vec<Entry>,
}

impl Disk {
    fn persist(&mut self, w: &Write) {
        if let Some(s) = &w.snapshot {
            self.snapshot = Some(s.clone());
            self.entries.clear();
        }
        if let Some(first) = w.entries.first() {
            let base = self.snapshot.as_ref().map_or(0, |s| s.meta.index);
            assert!(first.index > base, "write below the stored snapshot");
            let keep = usize::try_from(first.index - base - 1).expect("index fits memory");
            assert!(keep <= self.entries.len(), "write leaves a hole in the log");
            self.entries.truncate(keep);
            self.entries.extend(w.entries.iter().cloned());
        }
        if let Some(hs) = w.hard_state {
            self.hard_state = hs;
        }
    }

    fn restored(&self) -> Restored {
        Restored {
            hard_state: self.hard_state,
            snapshot: self.snapshot.clone(),
            entries: self.entries.clone(),
            initial_membership: membership(),
        }
    }
}

fn membership() -> Membership {
    Membership {
        voters: vec![ME, PEERS[0], PEERS[1]],
        learners: vec![],
    }
}

fn config() -> Config {
    Config::new(ME, 0x5eed)
}

/// The replica, its disk, and what the checks remember between steps.
struct Harness {
    raft: Raft,
    disk: Disk,
    /// Index of the last applied entry (or restored snapshot).
    applied: u64,
    term: u64,
    commit: u64,
    /// Messages the replica sent, for the cooperative peers to answer.
    outbox: Vec<Message>,
}

impl Harness {
    fn new() -> Harness {
        Harness {
            raft: Raft::new(
                config(),
                Restored {
                    initial_membership: membership(),
                    ..Restored::default()
                },
            ),
            disk: Disk::default(),
            applied: 0,
            term: 0,
            commit: 0,
            outbox: Vec::new(),
        }
    }

    /// Runs the caller's side of every `Ready` until there is none.
    fn drain(&mut self) {
        while self.raft.has_ready() {
            let ready = self.raft.ready();
            self.handle(ready);
        }
        self.check();
    }

    fn handle(&mut self, ready: Ready) {
        if let Some(w) = &ready.write {
            self.disk.persist(w);
            self.raft.on_persisted(w.id);
        }
        if let Some(s) = &ready.apply_snapshot {
            self.applied = s.meta.index;
        }
        for e in &ready.committed {
            assert_eq!(
                e.index,
                self.applied + 1,
                "committed entries skip or repeat"
            );
            self.applied = e.index;
        }
        if ready.snapshot_wanted {
            let meta = self.raft.snapshot_meta(self.raft.status().applied);
            self.raft.provide_snapshot(Snapshot {
                meta,
                data: Bytes::from_static(b"image"),
            });
        }
        self.outbox.extend(ready.messages);
    }

    fn check(&mut self) {
        let st = self.raft.status();
        assert!(st.hard.term >= self.term, "term went back");
        assert!(st.hard.commit >= self.commit, "commit went back");
        assert!(st.applied <= st.hard.commit, "applied beyond commit");
        self.term = st.hard.term;
        self.commit = st.hard.commit;
    }

    /// Answers the messages sent so far as live, agreeable peers would.
    fn answer(&mut self) {
        for m in std::mem::take(&mut self.outbox) {
            if let Some(reply) = agreeable_reply(&m) {
                self.raft.step(reply);
            }
        }
    }

    fn restart(&mut self) {
        self.raft = Raft::new(config(), self.disk.restored());
        self.applied = self.disk.snapshot.as_ref().map_or(0, |s| s.meta.index);
        // The commit index is durable only as far as a hard state carried it.
        self.commit = self.raft.status().hard.commit;
        self.outbox.clear();
    }
}

/// Turns arbitrary bytes into a message from a member: sender and receiver are fixed up,
/// and the term is usually made relative to the replica's so that most messages are
/// not simply dropped as stale.
fn member_message(input: &mut Input, term_now: u64) -> Option<Message> {
    let from = PEERS[usize::from(input.u8() % 2)];
    let term_mode = input.u8();
    let mut msg: Message = postcard::from_bytes(input.chunk()).ok()?;
    msg.from = from;
    msg.to = ME;
    if term_mode < 192 {
        msg.term = term_now.saturating_add(u64::from(term_mode % 3));
    }
    Some(msg)
}

pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let mut h = Harness::new();
    for _ in 0..OPS_MAX {
        if input.is_empty() {
            break;
        }
        match input.u8() % 8 {
            0 | 1 => {
                if let Some(msg) = member_message(&mut input, h.raft.status().hard.term) {
                    h.raft.step(msg);
                }
            }
            2 => {
                for _ in 0..(input.u8() % TICKS_PER_OP_MAX + 1) {
                    h.raft.tick();
                    h.drain();
                }
            }
            3 => h.answer(),
            4 => {
                let _ = h.raft.propose(Bytes::copy_from_slice(input.chunk()));
            }
            5 => {
                let _ = h.raft.read_index(input.u64());
            }
            6 => {
                let applied = h.raft.status().applied;
                if applied > 0 {
                    let snapshot = Snapshot {
                        meta: h.raft.snapshot_meta(applied),
                        data: Bytes::from_static(b"image"),
                    };
                    h.disk.snapshot = Some(snapshot.clone());
                    h.disk.entries.retain(|e| e.index > applied);
                    h.raft.compact(snapshot);
                }
            }
            _ => h.restart(),
        }
        h.drain();
    }
}

/// Appends the operations that deliver `msg` from `from` at a term `term_delta` above the
/// replica's.
fn push_message(out: &mut Vec<u8>, from: u8, term_delta: u8, body: MessageBody) {
    out.extend_from_slice(&[0, from, term_delta]);
    let msg = Message {
        from: NodeId(2),
        to: ME,
        term: 0,
        body,
    };
    push_chunk(out, &postcard::to_stdvec(&msg).expect("a message encodes"));
}

pub fn seeds() -> Vec<Vec<u8>> {
    let mut elected = Vec::new();
    // Time out, then let the peers grant the pre-vote and the vote.
    elected.extend_from_slice(&[2, 31, 3, 3, 3]);
    elected.extend_from_slice(&[4, 3, 0, b'a', b'b', b'c', 3, 3, 5, 9, 0, 0, 0, 0, 0, 0, 0]);
    elected.extend_from_slice(&[2, 4, 3, 6, 3]);
    push_message(
        &mut elected,
        0,
        1,
        MessageBody::Heartbeat {
            commit: 1,
            read_round: 0,
        },
    );

    let mut follower = Vec::new();
    let entries = |from: u64, n: u64, term: u64| -> Vec<Entry> {
        (from..from + n)
            .map(|index| Entry {
                term,
                index,
                kind: if index == from + 1 {
                    EntryKind::ConfChange(kv_raft::ConfChange::AddLearner(NodeId(4)))
                } else {
                    EntryKind::Command
                },
                data: Bytes::from_static(b"cmd"),
            })
            .collect()
    };
    push_message(
        &mut follower,
        0,
        1,
        MessageBody::Append {
            prev_index: 0,
            prev_term: 0,
            entries: entries(1, 4, 1),
            commit: 3,
        },
    );
    follower.extend_from_slice(&[2, 3, 6, 7]);
    push_message(
        &mut follower,
        1,
        1,
        MessageBody::Append {
            prev_index: 2,
            prev_term: 1,
            entries: entries(3, 3, 2),
            commit: 5,
        },
    );
    push_message(
        &mut follower,
        1,
        0,
        MessageBody::InstallSnapshot {
            meta: kv_raft::SnapshotMeta {
                index: 9,
                term: 2,
                membership: membership(),
            },
            offset: 0,
            total_len: 5,
            chunk: Bytes::from_static(b"image"),
        },
    );
    follower.extend_from_slice(&[2, 40, 7]);
    vec![elected, follower]
}
