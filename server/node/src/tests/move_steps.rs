//! Moves whose steps race each other: a leader must take a move's next step only once
//! the previous one took effect, whatever a late learner or a lost leadership does.

use super::*;

/// Ticks until the leader `l` lists node 4 as a learner of shard 0.
fn until_learner(c: &mut Cluster, l: usize) {
    for _ in 0..200 {
        if c.nodes[l]
            .shard_route(ShardId(0))
            .learners
            .contains(&NodeId(4))
        {
            return;
        }
        c.tick(1);
    }
    panic!("node 4 never became a learner");
}

/// A learner silent for too long makes its leader propose the move's end (undone); if the
/// learner catches up while that end is not yet committed, the leader must not promote
/// it too: both would commit, and the shard would keep four voters with no move in
/// flight to remove the fourth (kvsim moves seeds 1217, 1479, 1713).
#[test]
fn a_learner_catching_up_after_its_leader_undid_the_move_is_not_promoted() {
    let shard = ShardId(0);
    let mut c = four_nodes_one_shard_on_three();
    let l = c.leader(shard);
    let followers: Vec<usize> = (0..3).filter(|&i| i != l).collect();
    let from = followers[0] as u64 + 1;
    // The learner hears nothing of the shard: it stays silent.
    c.cut_shards.push((3, shard));
    c.request(l, 2, move_req(50, from, 4));
    c.flush(l);
    until_learner(&mut c, l);
    let silence_ticks = crate::moves::MOVE_LEARNER_SILENT_ELECTIONS_MAX as usize
        * c.nodes[0].config().raft.election_ticks_max as usize;
    c.tick(silence_ticks - 3);
    // The followers hear nothing either (for less than an election timeout): the move's
    // end, proposed at the silence limit, is not committed.
    c.cut_shards.extend(followers.iter().map(|&f| (f, shard)));
    c.tick(5);
    // Now the learner hears its leader and catches up with the stuck commit index.
    c.cut_shards.retain(|&(i, _)| i != 3);
    c.tick(3);
    c.cut_shards.clear();
    assert_eq!(c.leader(shard), l, "the leader kept its leadership");
    c.tick(60);
    let route = c.nodes[c.leader(shard)].shard_route(shard);
    assert!(
        route.voters.len() == 3 && route.learners.is_empty(),
        "the undone move left {route:?}"
    );
    assert!(
        !route.voters.contains(&NodeId(4)) && route.voters.contains(&NodeId(from)),
        "{route:?}"
    );
    // The first attempt timed out long ago; a retry gets the outcome the session holds.
    let answered = c.until_answered(3, move_req(50, from, 4), 200);
    assert!(
        matches!(
            answered,
            Outcome::Error(ClientError::MoveRefused {
                reason: kv_shared::proto::MoveRefusal::CatchUpTimedOut { .. },
                ..
            })
        ),
        "{answered:?}"
    );
}

/// The leader moves its own replica, and the new voter dies right after its promotion:
/// the leader's transfers to it never take, so it hands over to another voter, which
/// removes it and ends the move. Handing over to the dead voter alone left the shard
/// with four voters and its move in flight for good.
#[test]
fn a_leader_moving_its_own_replica_to_a_voter_that_died_hands_over_to_another() {
    let shard = ShardId(0);
    let mut c = four_nodes_one_shard_on_three();
    let l = c.leader(shard);
    let from = NodeId(l as u64 + 1);
    c.request(l, 1, move_req(50, from.0, 4));
    c.flush(l);
    for _ in 0..2000 {
        if c.voters(l, shard).contains(&NodeId(4)) {
            break;
        }
        c.tick(1);
    }
    assert!(c.voters(l, shard).contains(&NodeId(4)), "node 4 promoted");
    assert_eq!(c.leader(shard), l, "no transfer yet");
    c.down[3] = true;
    let done = c.until_answered(2, move_req(50, from.0, 4), 3000);
    assert_eq!(done, Outcome::Done);
    let now = c.leader(shard);
    assert_ne!(now, l, "the old leader handed over");
    let mut expected: Vec<NodeId> = (1..=4).map(NodeId).filter(|n| *n != from).collect();
    expected.sort();
    assert_eq!(c.voters(now, shard), expected);
}

/// A member's Raft commits its own removal from a leader's Append before the entries are
/// durable, so the node has not applied it; then the leader's snapshot past the removal
/// overtakes them. The snapshot does not list the member: it is its removal, although
/// the membership Raft already showed before the snapshot did not list it either. The
/// replica kept the shard, outside the voters, for good.
#[test]
fn a_snapshot_overtaking_a_removal_committed_but_not_yet_applied_removes_the_replica() {
    use kv_raft::{ConfChange, Entry, EntryKind, Membership, Message, MessageBody, SnapshotMeta};
    let shard = ShardId(0);
    let mut c = Cluster::new(3, 1);
    let (leader, me) = (NodeId(2), NodeId(3));
    let entry = |index, kind| Entry {
        term: 1,
        index,
        kind,
        data: Bytes::new(),
    };
    let append = GroupMessage {
        shard,
        msg: Message {
            from: leader,
            to: me,
            term: 1,
            body: MessageBody::Append {
                prev_index: 0,
                prev_term: 0,
                entries: vec![
                    entry(1, EntryKind::Noop),
                    entry(2, EntryKind::ConfChange(ConfChange::AddLearner(NodeId(4)))),
                    entry(
                        3,
                        EntryKind::ConfChange(ConfChange::PromoteLearner(NodeId(4))),
                    ),
                    entry(4, EntryKind::ConfChange(ConfChange::RemoveNode(me))),
                ],
                commit: 4,
            },
        },
    };
    c.nodes[2].on_peer_messages(leader, vec![append]);
    let mut held = c.nodes[2].take_output();
    assert!(
        !c.voters(2, shard).contains(&me),
        "Raft committed the removal"
    );
    assert!(
        c.nodes[2].hosts(shard),
        "not applied: the entries are not durable"
    );
    let mut sm = crate::sm::StateMachine::new(c.nodes[2].config().sessions_max());
    for index in 1..=10 {
        sm.apply_empty(index, 1);
    }
    let image = sm.to_image();
    let snapshot = GroupMessage {
        shard,
        msg: Message {
            from: leader,
            to: me,
            term: 1,
            body: MessageBody::InstallSnapshot {
                meta: SnapshotMeta {
                    index: 10,
                    term: 1,
                    membership: Membership {
                        voters: vec![NodeId(1), NodeId(2), NodeId(4)],
                        learners: vec![],
                    },
                },
                offset: 0,
                total_len: image.len() as u64,
                chunk: image,
            },
        },
    };
    c.nodes[2].on_peer_messages(leader, vec![snapshot]);
    let later = c.nodes[2].take_output();
    held.disk_writes.extend(later.disk_writes);
    held.datagrams.extend(later.datagrams);
    c.absorb(2, held);
    for _ in 0..5 {
        let out = c.nodes[2].take_output();
        c.absorb(2, out);
    }
    assert!(!c.nodes[2].hosts(shard), "node 3 still holds the shard");
    assert!(c.disks[2].iter().any(|r| r.group == shard.0
        && matches!(
            crate::wal::decode_replica(r).ok().flatten(),
            Some(ReplicaRecord::Departed { .. })
        )));
}
