//! A follower that defers its applying (`NodeCore::set_defer_follower_applies`, as
//! kvserver runs it) sends its acknowledgement before applying what the leader reported
//! committed, applies it on `apply_deferred`, and serves no read before that.

use super::*;

/// The indexes each of a follower's three outputs reported applied: the flush that
/// takes in the leader's Append (carrying the commit of a first put), the flush after
/// that Append's write is durable (its ack), and the one after `apply_deferred`.
/// Returns them with the cluster, the follower's index and the first put's log index.
fn follower_outputs(defer: bool) -> ([Vec<u64>; 3], Cluster, usize, u64) {
    let mut c = Cluster::new(3, 1);
    c.tick(60);
    let l = c.leader(ShardId(0));
    let f = (0..3).find(|&i| i != l).expect("a follower");
    c.nodes[f].set_defer_follower_applies(defer);
    c.request(l, 1, put(1, 1, "k", "v1"));
    c.flush(l);
    assert_eq!(c.reply_to(1), vec![Outcome::Done]);
    let first = c.nodes[l].raft_status(ShardId(0)).hard.commit;
    assert!(c.nodes[f].group_view(ShardId(0)).unwrap().applied < first);

    c.request(l, 2, put(1, 2, "k", "v2"));
    let mut out = c.nodes[l].take_output();
    let to_f = NodeId(f as u64 + 1);
    let at = out.datagrams.iter().position(|(to, _)| *to == to_f);
    let (_, append) = out.datagrams.remove(at.expect("an Append to the follower"));
    c.absorb(l, out);
    let indexes = |out: &Output| out.applied.iter().map(|a| a.index).collect::<Vec<_>>();

    let from_l = NodeId(l as u64 + 1);
    c.nodes[f]
        .on_peer_payload(from_l, &payload(to_f, &append))
        .unwrap();
    let taken_in = c.nodes[f].take_output();
    assert!(taken_in.datagrams.is_empty(), "the ack waits for the write");
    let [write] = &taken_in.disk_writes[..] else {
        panic!("one write: {:?}", taken_in.disk_writes.len())
    };
    c.nodes[f].on_disk_done(write.id);
    let acked = c.nodes[f].take_output();
    let ack = whole(to_f, acked.datagrams.clone())
        .into_iter()
        .flat_map(|(_, m)| m)
        .find(|m| matches!(m.msg.body, kv_raft::MessageBody::AppendResp { .. }));
    assert!(ack.is_some(), "the ack leaves once the write is durable");
    let released = c.nodes[f].apply_deferred();
    assert_eq!(
        released, defer,
        "apply_deferred has work only when deferring"
    );
    let after = c.nodes[f].take_output();
    let applied = [indexes(&taken_in), indexes(&acked), indexes(&after)];
    (applied, c, f, first)
}

#[test]
fn a_deferring_follower_acknowledges_first_and_applies_on_apply_deferred() {
    let (applied, c, f, first) = follower_outputs(true);
    assert_eq!(applied, [vec![], vec![], vec![first]]);
    assert_eq!(c.nodes[f].group_view(ShardId(0)).unwrap().applied, first);
}

#[test]
fn without_deferring_a_follower_applies_as_it_takes_the_append_in() {
    let (applied, _, _, first) = follower_outputs(false);
    assert_eq!(applied, [vec![first], vec![], vec![]]);
}

#[test]
fn a_follower_read_waits_for_the_deferred_applies() {
    let mut c = Cluster::new(3, 1);
    c.tick(60);
    let l = c.leader(ShardId(0));
    let f = (0..3).find(|&i| i != l).expect("a follower");
    c.nodes[f].set_defer_follower_applies(true);
    c.request(l, 1, put(1, 1, "k", "v1"));
    c.flush(l);
    c.request(l, 2, put(1, 2, "k", "v2"));
    c.flush(l);
    assert_eq!(c.reply_to(2), vec![Outcome::Done]);
    // The second put's Append carried the first's commit: deferred, not applied.
    let view = c.nodes[f].group_view(ShardId(0)).unwrap();
    assert!(view.applied < c.nodes[l].raft_status(ShardId(0)).hard.commit);

    c.request(f, 3, get(2, 1, "k"));
    c.flush(f);
    assert_eq!(c.reply_to(3), vec![], "not served before the applies");
    assert!(c.nodes[f].apply_deferred());
    c.flush(f);
    let served = c.reply_to(3);
    assert!(
        served == vec![Outcome::Value(Some(Bytes::from_static(b"v1")))]
            || served == vec![Outcome::Value(Some(Bytes::from_static(b"v2")))],
        "{served:?}"
    );
}

#[test]
fn a_follower_that_comes_to_lead_applies_what_it_deferred_before_its_own_entries() {
    let mut c = Cluster::new(3, 1);
    c.tick(60);
    let l = c.leader(ShardId(0));
    let f = (0..3).find(|&i| i != l).expect("a follower");
    c.nodes[f].set_defer_follower_applies(true);
    for seq in 1..=3 {
        c.request(l, seq, put(1, seq, "k", &format!("v{seq}")));
        c.flush(l);
    }
    assert!(
        c.nodes[f].group_view(ShardId(0)).unwrap().applied
            < c.nodes[l].raft_status(ShardId(0)).hard.commit
    );
    c.down[l] = true;
    // Never told to apply (no apply_deferred): its election and its first entry as
    // leader apply what it deferred first, in log order.
    c.tick(200);
    let new = c.leader(ShardId(0));
    assert_ne!(new, l);
    c.request(new, 10, get(2, 1, "k"));
    c.flush(new);
    c.tick(5);
    assert_eq!(
        c.reply_to(10),
        vec![Outcome::Value(Some(Bytes::from_static(b"v3")))]
    );
    let mut by_f: Vec<u64> = c
        .applied
        .iter()
        .filter(|(i, _)| *i == f)
        .map(|(_, a)| a.index)
        .collect();
    let sorted = {
        let mut s = by_f.clone();
        s.sort_unstable();
        s
    };
    assert_eq!(by_f, sorted, "applied in log order");
    by_f.dedup();
    assert_eq!(by_f.len(), sorted.len(), "each entry applied once");
}
