//! A node takes back a shard it was removed from: only for an addition newer than its
//! tombstone, starting empty at the earlier life's term and vote, catching up by
//! snapshot, and surviving restarts on the way.

use super::*;
use crate::wal::{self, WalRecord};
use kv_raft::{HardState, Message, MessageBody, SnapshotMeta};

/// Node `from` (0-based `f`), a follower of shard 0 on nodes 1-3, moved to node 4: its
/// tombstone's epoch, and its hard state just before it left.
fn remove_a_follower(c: &mut Cluster) -> (usize, u64, HardState) {
    let shard = ShardId(0);
    let l = c.leader(shard);
    let f = (0..3).find(|&i| i != l).unwrap();
    let from = f as u64 + 1;
    c.request(l, 1, put(1, 1, "a", "1"));
    c.flush(l);
    c.tick(3);
    let hard = c.nodes[f].raft_status(shard).hard;
    assert_eq!(
        c.until_answered(2, move_req(50, from, 4), 2000),
        Outcome::Done
    );
    c.tick(10);
    assert!(!c.nodes[f].hosts(shard));
    let epoch = super::tombstones::removal_epoch(c, f, shard);
    (f, epoch, hard)
}

/// A snapshot chunk of shard 0 from `leader` to `to` (an incomplete transfer: only the
/// metadata matters to whether it creates a replica).
fn snapshot_chunk(leader: u64, to: u64, term: u64, index: u64, voters: &[u64]) -> GroupMessage {
    GroupMessage {
        shard: ShardId(0),
        msg: Message {
            from: NodeId(leader),
            to: NodeId(to),
            term,
            body: MessageBody::InstallSnapshot {
                meta: SnapshotMeta {
                    index,
                    term,
                    membership: kv_raft::Membership {
                        voters: voters.iter().map(|v| NodeId(*v)).collect(),
                        learners: Vec::new(),
                    },
                },
                offset: 0,
                total_len: 1000,
                chunk: Bytes::from_static(b"0123456789"),
            },
        },
    }
}

fn vote_request(from: u64, to: u64, term: u64) -> GroupMessage {
    GroupMessage {
        shard: ShardId(0),
        msg: Message {
            from: NodeId(from),
            to: NodeId(to),
            term,
            body: MessageBody::Vote {
                last_index: 0,
                last_term: 0,
                transfer: false,
            },
        },
    }
}

/// What node `i` answers `msgs` from `from` with, as (to, body).
fn answers(c: &mut Cluster, i: usize, from: u64, msgs: Vec<GroupMessage>) -> Vec<MessageBody> {
    c.nodes[i].on_peer_messages(NodeId(from), msgs);
    let out = c.nodes[i].take_output();
    for w in &out.disk_writes {
        for op in &w.ops {
            if let DiskOp::Append(r) = op {
                c.disks[i].push(r.clone());
            }
        }
        c.nodes[i].on_disk_done(w.id);
    }
    let me = NodeId(i as u64 + 1);
    let mut datagrams = out.datagrams;
    datagrams.extend(c.nodes[i].take_output().datagrams);
    whole(me, datagrams)
        .into_iter()
        .flat_map(|(_, m)| m)
        .map(|gm| gm.msg.body)
        .collect()
}

/// The last hard state node `i` wrote for shard 0.
fn last_hard_state(c: &Cluster, i: usize) -> Option<HardState> {
    c.disks[i].iter().rev().find_map(|r| match wal::decode(r) {
        Ok(WalRecord::HardState {
            shard: 0,
            hard_state,
        }) => Some(hard_state),
        _ => None,
    })
}

/// Nothing a stale leader, a departing member's leader or an old snapshot sends brings a
/// removed replica back; a snapshot past the removal that lists the node does, sealed:
/// its tombstone still answers votes, and the log from index 1 is dropped.
#[test]
fn a_stale_add_cannot_resurrect_a_removed_replica() {
    let shard = ShardId(0);
    let mut c = four_nodes_one_shard_on_three();
    let (f, epoch, _) = remove_a_follower(&mut c);
    let me = f as u64 + 1;
    let l = c.leader(shard) as u64 + 1;
    let term = c.nodes[l as usize - 1].raft_status(shard).hard.term;
    let others: Vec<u64> = (1..=4).filter(|&n| n != me).collect();
    let mut with_me = [others[0], others[1], me];
    with_me.sort();
    let log_from_start = GroupMessage {
        shard,
        msg: Message {
            from: NodeId(l),
            to: NodeId(me),
            term,
            body: MessageBody::Append {
                prev_index: 0,
                prev_term: 0,
                entries: vec![kv_raft::Entry {
                    term: 1,
                    index: 1,
                    kind: kv_raft::EntryKind::Noop,
                    data: Bytes::new(),
                }],
                commit: 0,
            },
        },
    };
    let stale = [
        super::leader_heartbeat(shard, l, me, term),
        log_from_start.clone(),
        // The membership before the removal lists it, at the removal or before.
        snapshot_chunk(l, me, term, epoch, &with_me),
        snapshot_chunk(l, me, term, epoch - 1, &with_me),
        // A departing member is sent snapshots past its removal that do not list it.
        snapshot_chunk(l, me, term, epoch + 5, &others[..3]),
    ];
    for msg in stale {
        let what = format!("{:?}", msg.msg.body);
        answers(&mut c, f, l, vec![msg]);
        assert!(!c.nodes[f].hosts(shard), "recreated by {what}");
    }
    answers(
        &mut c,
        f,
        l,
        vec![snapshot_chunk(l, me, term, epoch + 5, &with_me)],
    );
    assert!(
        c.nodes[f].hosts(shard),
        "a snapshot past the removal lists it"
    );
    let sealed_answers = |c: &mut Cluster| {
        let bodies = answers(c, f, others[0], vec![vote_request(others[0], me, term + 1)]);
        assert_eq!(
            bodies,
            vec![MessageBody::Committed {
                index: epoch,
                log_term: term
            }],
            "the tombstone answers for the sealed replica"
        );
        let last = c.nodes[f].raft_status(shard).last_index;
        answers(c, f, l, vec![log_from_start.clone()]);
        assert_eq!(c.nodes[f].raft_status(shard).last_index, last);
    };
    sealed_answers(&mut c);
    let config = c.nodes[f].config().clone();
    c.restart(f, config);
    assert!(c.nodes[f].hosts(shard), "the recreation outlives a restart");
    sealed_answers(&mut c);
}

/// A follower moved away and then back: its node creates the replica again from the
/// leader's snapshot (the leader's log still holds the removal, so it never sends the
/// log from index 1), it becomes a voter, holds every write, and keeps them across a
/// restart.
#[test]
fn a_replica_moved_back_to_the_node_it_left_catches_up_and_survives_a_restart() {
    let shard = ShardId(0);
    let mut c = four_nodes_one_shard_on_three();
    let (f, epoch, _) = remove_a_follower(&mut c);
    let me = f as u64 + 1;
    for s in 2..=6u64 {
        let l = c.leader(shard);
        c.request(l, 100 + s, put(1, s, &format!("k{s}"), "v"));
        c.flush(l);
        c.tick(2);
    }
    let l = c.leader(shard);
    let back = (0..4).find(|&i| i != f && i != l).unwrap() as u64 + 1;
    assert!(
        c.nodes[l].raft_status(shard).snapshot_index < epoch,
        "the leader's log holds the removal"
    );
    assert_eq!(
        c.until_answered(3, move_req(51, back, me), 3000),
        Outcome::Done
    );
    c.tick(20);
    assert!(c.nodes[f].hosts(shard));
    assert!(c.voters(c.leader(shard), shard).contains(&NodeId(me)));
    assert!(c.events.iter().any(|(i, e)| *i == f
        && matches!(e.kind, EventKind::ReplicaRecreated { removed_at, .. } if removed_at == epoch)));
    let epoch_term = c.disks[f]
        .iter()
        .find_map(|r| match wal::decode_replica(r) {
            Ok(Some(ReplicaRecord::Departed { epoch_term, .. })) => Some(epoch_term),
            _ => None,
        });
    assert!(
        epoch_term.is_some(),
        "the tombstone knew its removal's term"
    );
    assert!(appended_replica_record(
        &c,
        f,
        shard,
        ReplicaRecord::Rejoined { epoch, epoch_term }
    ));
    assert!(c.nodes[f].raft_status(shard).snapshot_index > epoch);
    c.request(c.leader(shard), 200, put(1, 7, "k7", "after"));
    c.flush(c.leader(shard));
    c.tick(10);
    let l = c.leader(shard);
    assert_eq!(
        c.nodes[f].state_digest(shard),
        c.nodes[l].state_digest(shard)
    );
    let config = c.nodes[f].config().clone();
    c.restart(f, config);
    c.tick(20);
    assert!(
        c.nodes[f].hosts(shard),
        "the recreated replica outlives a restart"
    );
    let l = c.leader(shard);
    assert_eq!(
        c.nodes[f].state_digest(shard),
        c.nodes[l].state_digest(shard)
    );
}

/// The recreated replica starts at the term and vote its earlier life left with (kept
/// by the tombstone, also across a restart), so that it cannot vote again in that term.
#[test]
fn a_recreated_replica_keeps_its_earlier_lifes_vote() {
    let shard = ShardId(0);
    let mut c = four_nodes_one_shard_on_three();
    let (f, epoch, before) = remove_a_follower(&mut c);
    assert!(!before.vote.is_none(), "it voted in the first election");
    let me = f as u64 + 1;
    let l = c.leader(shard) as u64 + 1;
    let config = c.nodes[f].config().clone();
    c.restart(f, config);
    let _ = c.nodes[f].take_output();
    let mut with_me = [l, me];
    with_me.sort();
    answers(
        &mut c,
        f,
        l,
        vec![snapshot_chunk(l, me, before.term, epoch + 5, &with_me)],
    );
    assert!(c.nodes[f].hosts(shard));
    let hard = c.nodes[f].raft_status(shard).hard;
    assert_eq!((hard.term, hard.vote), (before.term, before.vote));
    let config = c.nodes[f].config().clone();
    c.restart(f, config);
    let hard = c.nodes[f].raft_status(shard).hard;
    assert_eq!((hard.term, hard.vote), (before.term, before.vote));
    assert_eq!(
        last_hard_state(&c, f).map(|h| (h.term, h.vote)),
        Some((before.term, before.vote))
    );
}
