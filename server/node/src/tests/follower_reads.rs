//! Linearizable gets served by followers (kv-raft's ReadIndex asked of the leader): a
//! follower answers from its own state machine once it has applied the index the leader
//! confirmed, and redirects whatever it must not serve.

use super::*;

/// Puts acknowledged by the leader whose commit the followers have not heard yet
/// (kvserver's Raft settings: no commit broadcast), then gets at a follower.
fn cluster_with_an_unannounced_write() -> (Cluster, usize, usize) {
    let mut c = Cluster::new(3, 1);
    c.tick(60);
    let l = c.leader(ShardId(0));
    let f = (0..3).find(|&i| i != l).expect("a follower");
    c.request(l, 1, put(1, 1, "k", "v"));
    c.flush(l);
    assert_eq!(c.reply_to(1), vec![Outcome::Done]);
    (c, l, f)
}

#[test]
fn a_follower_serves_a_get_with_every_write_acknowledged_before_it() {
    let (mut c, l, f) = cluster_with_an_unannounced_write();
    let leader_commit = c.nodes[l].raft_status(ShardId(0)).hard.commit;
    let follower = c.nodes[f].raft_status(ShardId(0));
    assert!(
        follower.applied < leader_commit,
        "the follower has not applied the write yet (applied {}, leader commit {leader_commit})",
        follower.applied
    );
    c.request(f, 2, get(2, 1, "k"));
    c.flush(f);
    let served_by: Vec<usize> = c
        .replies
        .iter()
        .filter(|(_, t, _)| t.0 == 2)
        .map(|(i, _, _)| *i)
        .collect();
    assert_eq!(served_by, vec![f], "answered by the follower itself");
    assert_eq!(
        c.reply_to(2),
        vec![Outcome::Value(Some(Bytes::from_static(b"v")))]
    );
}

#[test]
fn gets_of_one_round_at_a_follower_share_one_request_to_the_leader() {
    let (mut c, l, f) = cluster_with_an_unannounced_write();
    let leader = NodeId(l as u64 + 1);
    for token in 10..20 {
        c.request(f, token, get(token, 1, "k"));
    }
    let out = c.nodes[f].take_output();
    let read_requests: usize = out
        .datagrams
        .iter()
        .filter(|(to, _)| *to == leader)
        .flat_map(|(_, batch)| &batch.msgs)
        .filter(|m| matches!(m.msg.body, kv_raft::MessageBody::ReadIndex { .. }))
        .count();
    assert_eq!(read_requests, 1, "ten gets, one ReadIndex");
    c.absorb(f, out);
    c.settle();
    for token in 10..20 {
        assert_eq!(
            c.reply_to(token),
            vec![Outcome::Value(Some(Bytes::from_static(b"v")))]
        );
    }
}

#[test]
fn a_follower_cut_off_from_its_leader_answers_not_leader_rather_than_wait() {
    let (mut c, l, f) = cluster_with_an_unannounced_write();
    c.down[l] = true;
    c.request(f, 2, get(2, 1, "k"));
    c.flush(f);
    // Raft gives the request up after election_ticks_max (or when the follower starts an
    // election), well before the request timeout.
    c.tick(25);
    match &c.reply_to(2)[..] {
        [Outcome::Error(ClientError::NotLeader { .. })] => {}
        other => panic!("expected NotLeader, got {other:?}"),
    }
}

#[test]
fn without_follower_reads_a_follower_redirects_gets() {
    let mut c = Cluster::with(3, 1, |cfg| cfg.raft.follower_reads = false);
    c.tick(60);
    let l = c.leader(ShardId(0));
    let f = (0..3).find(|&i| i != l).expect("a follower");
    c.request(f, 1, get(1, 1, "k"));
    c.flush(f);
    assert_eq!(
        c.reply_to(1),
        vec![Outcome::Error(ClientError::NotLeader {
            shard: ShardId(0),
            leader: Some(NodeId(l as u64 + 1))
        })]
    );
}
