//! What a node does with the shards it left: its tombstones answer the vote requests of
//! voters that missed the removal, so that a leader that removed itself cannot leave its
//! shard without a leader.

use super::*;
use crate::events::EventKind;

/// A PreVote of shard `shard` from node `from` to node `to`.
fn pre_vote(shard: ShardId, from: u64, to: u64, term: u64) -> GroupMessage {
    group_message(
        shard,
        from,
        to,
        term,
        kv_raft::MessageBody::PreVote {
            last_index: 1,
            last_term: 1,
        },
    )
}

/// The `Committed` answers node `i` sends in `out`, as (to, index, log_term).
fn committed_answers(out: &Output) -> Vec<(NodeId, u64, u64)> {
    out.datagrams
        .iter()
        .flat_map(|(to, batch)| batch.msgs.iter().map(move |gm| (*to, gm)))
        .filter_map(|(to, gm)| match gm.msg.body {
            kv_raft::MessageBody::Committed { index, log_term } => Some((to, index, log_term)),
            _ => None,
        })
        .collect()
}

/// Churn seeds 1927 and 4886: a leader committed its own removal and stepped down, and
/// its node dropped the replica; a voter that missed the commit kept counting it, and
/// with one more voter gone for good no election succeeded. The removed replica's
/// tombstone keeps the removal's index and term (also across a restart) and answers a
/// vote request for the shard with them; other messages get no such answer.
#[test]
fn a_tombstone_answers_vote_requests_with_the_removal_it_committed() {
    let shard = ShardId(0);
    let mut c = four_nodes_one_shard_on_three();
    let l = c.leader(shard);
    let term = c.nodes[l].raft_status(shard).hard.term;
    let from = (0..3).find(|&i| i != l).unwrap() as u64 + 1;
    let f = from as usize - 1;
    assert_eq!(
        c.until_answered(2, move_req(50, from, 4), 2000),
        Outcome::Done
    );
    c.tick(10);
    assert!(!c.nodes[f].hosts(shard));
    assert_eq!(c.leader(shard), l, "no election meanwhile");
    let epoch = removal_epoch(&c, f, shard);
    assert!(appended_replica_record(
        &c,
        f,
        shard,
        ReplicaRecord::Departed {
            epoch,
            epoch_term: term
        }
    ));
    let config = c.nodes[f].config().clone();
    c.restart(f, config);
    let _ = c.nodes[f].take_output();
    let asker = (0..3).find(|&i| i != l && i != f).unwrap() as u64 + 1;
    c.nodes[f].on_peer_messages(NodeId(asker), vec![pre_vote(shard, asker, from, term + 1)]);
    c.nodes[f].tick();
    let out = c.nodes[f].take_output();
    assert_eq!(
        committed_answers(&out),
        vec![(NodeId(asker), epoch, term)],
        "{:?}",
        out.datagrams
    );
    let heartbeat = leader_heartbeat(shard, l as u64 + 1, from, term);
    c.nodes[f].on_peer_messages(NodeId(l as u64 + 1), vec![heartbeat]);
    c.nodes[f].tick();
    let out = c.nodes[f].take_output();
    assert!(
        committed_answers(&out).is_empty(),
        "only votes are answered"
    );
    assert!(
        !c.nodes[f].hosts(shard),
        "and nothing recreates the replica"
    );
}

/// A member that installed its leader's snapshot past its own removal and crashed before
/// that snapshot's durability was reported, so its removal never took effect, restarted
/// from that snapshot, no longer knew it had been a member and held the shard outside
/// the voters for good, installing snapshot after snapshot. A replica
/// of the bootstrap placement whose recovered snapshot does not list it is removed at
/// that snapshot, with a tombstone.
#[test]
fn a_replica_restarted_from_a_snapshot_past_its_removal_drops_the_shard() {
    let shard = ShardId(0);
    let mut c = four_nodes_one_shard_on_three();
    let l = c.leader(shard);
    let from = (0..3).find(|&i| i != l).unwrap() as u64 + 1;
    let f = from as usize - 1;
    let records_before = c.disks[f].clone();
    assert_eq!(
        c.until_answered(2, move_req(50, from, 4), 2000),
        Outcome::Done
    );
    for seq in 1..=30 {
        c.request(l, 100 + seq, put(1, seq, "k", "v"));
        c.flush(l);
        c.tick(1);
    }
    c.tick(10);
    let snapshot = c.snapshots[l]
        .iter()
        .find(|s| s.0 == shard.0)
        .cloned()
        .expect("the leader snapshotted past the removal");
    c.disks[f] = records_before;
    c.snapshots[f] = vec![snapshot.clone()];
    let config = c.nodes[f].config().clone();
    c.restart(f, config);
    c.tick(5);
    assert!(!c.nodes[f].hosts(shard), "removed at the snapshot");
    assert!(c.disks[f].iter().any(|r| r.group == shard.0
        && matches!(
            crate::wal::decode_replica(r).ok().flatten(),
            Some(ReplicaRecord::Departed { epoch, .. }) if epoch == snapshot.1
        )));
}

/// The epoch at which node index `f` reported its replica of `shard` removed.
pub(super) fn removal_epoch(c: &Cluster, f: usize, shard: ShardId) -> u64 {
    c.events
        .iter()
        .find_map(|(i, e)| match e.kind {
            EventKind::ReplicaRemoved { epoch } if *i == f && e.shard == shard => Some(epoch),
            _ => None,
        })
        .expect("the removal was reported")
}
