//! Gets a leader serves from its lease: answered in the turn they arrive without a
//! Ready to drain in their groups, and still only at a state that holds every write
//! committed before them.

use super::*;

const SHARDS: u32 = 8;

/// A key of `shard`.
fn key_of(shard: u32) -> String {
    (0..)
        .map(|i| format!("k{i}"))
        .find(|k| kv_shared::shard::shard_for_key(k.as_bytes(), SHARDS) == ShardId(shard))
        .expect("some key hashes to every shard")
}

/// Node 1 leads every shard and every shard holds `key_of(shard) = v`. Not quiescing,
/// so that every tick heartbeats and the echoes renew the leases.
fn packed(lease_reads: bool) -> Cluster {
    let mut c = Cluster::with(3, SHARDS, |cfg| {
        cfg.spread_leaders = true;
        cfg.leaders = LeaderPolicy::Pack;
        cfg.quiesce = false;
        cfg.raft.lease_reads = lease_reads;
    });
    c.tick(600);
    for s in 0..SHARDS {
        assert_eq!(c.leader(ShardId(s)), 0, "node 1 leads shard {s}");
        c.request(0, u64::from(s), put(10 + u64::from(s), 1, &key_of(s), "v"));
    }
    c.flush(0);
    c.tick(3);
    for s in 0..SHARDS {
        assert_eq!(c.reply_to(u64::from(s)), vec![Outcome::Done]);
    }
    c.tick(1);
    c
}

fn value(v: &'static str) -> Outcome {
    Outcome::Value(Some(Bytes::from_static(v.as_bytes())))
}

/// Sends one get of every shard's key to node 1.
fn request_every_shard(c: &mut Cluster, token0: u64) {
    for s in 0..SHARDS {
        c.request(
            0,
            token0 + u64::from(s),
            get(2, token0 + u64::from(s), &key_of(s)),
        );
    }
}

/// Sends one get of every shard's key to node 1 and takes its output once.
fn get_every_shard(c: &mut Cluster, token0: u64) -> Output {
    request_every_shard(c, token0);
    c.nodes[0].take_output()
}

#[test]
fn gets_served_from_the_lease_leave_in_the_same_turn_and_drain_no_group() {
    let mut c = packed(true);
    let drained = c.nodes[0].routed_drained();
    let _ = c.nodes[0].take_output();
    request_every_shard(&mut c, 100);
    // Queuing requests is no Raft input: the next take_output asks no group for a
    // Ready before routing them.
    assert_eq!(c.nodes[0].take_touched(), Vec::<ShardId>::new());
    let out = c.nodes[0].take_output();
    assert_eq!(
        out.replies.len(),
        SHARDS as usize,
        "every get answered at once"
    );
    assert!(out.replies.iter().all(|(_, r)| r.outcome == value("v")));
    assert!(out.datagrams.is_empty(), "no message for a lease read");
    assert_eq!(c.nodes[0].routed_drained(), drained, "no group drained");

    // A put next to the gets: only its own group has a Ready to drain.
    c.request(0, 200, put(3, 1, &key_of(5), "w"));
    let out = get_every_shard(&mut c, 300);
    assert_eq!(out.replies.len(), SHARDS as usize);
    assert_eq!(
        c.nodes[0].routed_drained(),
        drained + 1,
        "the put's group only"
    );
    c.absorb(0, out);
    c.settle();
    assert_eq!(c.reply_to(200), vec![Outcome::Done]);
}

/// Without lease reads every get takes a heartbeat round: each group is drained, and
/// the answers come once the followers echo. (This is what the test above tells apart.)
#[test]
fn read_index_gets_drain_their_groups_and_wait_for_the_echoes() {
    let mut c = packed(false);
    let drained = c.nodes[0].routed_drained();
    let _ = c.nodes[0].take_output();
    request_every_shard(&mut c, 100);
    assert_eq!(
        c.nodes[0].take_touched(),
        Vec::<ShardId>::new(),
        "queuing a request is no Raft input"
    );
    let out = c.nodes[0].take_output();
    assert!(out.replies.is_empty(), "nothing confirmed yet");
    assert!(!out.datagrams.is_empty(), "the heartbeat round");
    assert_eq!(c.nodes[0].routed_drained(), drained + u64::from(SHARDS));
    c.absorb(0, out);
    c.settle();
    for s in 0..SHARDS {
        assert_eq!(c.reply_to(100 + u64::from(s)), vec![value("v")]);
    }
}

/// A leader whose followers made a write durable and committed it before the leader's
/// own disk did: it applies the write at once (its own write may wait, `deferrable`),
/// answers the put, and a get arriving then is served from the lease with the written
/// value, while the leader's write is still not reported durable.
#[test]
fn a_leader_applies_what_its_followers_committed_before_its_own_disk() {
    let mut c = packed(true);
    let shard = ShardId(2);
    let key = key_of(2);
    c.request(0, 1, put(4, 1, &key, "w"));
    let out = c.nodes[0].take_output();
    assert!(
        !out.disk_writes.is_empty(),
        "the put's entry is to be written"
    );
    assert!(
        out.disk_writes.iter().all(|w| w.deferrable),
        "a leader's own log write, its followers answering: deferrable"
    );
    // The followers store the entry and acknowledge it; node 1's disk is slow.
    followers_acknowledge(&mut c, out.datagrams);
    let after = c.nodes[0].take_output();
    let st = c.nodes[0].raft_status(shard);
    assert!(
        st.hard.commit == st.applied && st.applied > st.persisted,
        "applied on the followers' acks alone (commit {}, applied {}, persisted here {})",
        st.hard.commit,
        st.applied,
        st.persisted
    );
    let replies: Vec<(u64, Outcome)> = after
        .replies
        .into_iter()
        .map(|(t, r)| (t.0, r.outcome))
        .collect();
    assert!(replies.contains(&(1, Outcome::Done)), "{replies:?}");
    c.request(0, 2, get(5, 1, &key));
    let out = c.nodes[0].take_output();
    let replies: Vec<(u64, Outcome)> = out
        .replies
        .into_iter()
        .map(|(t, r)| (t.0, r.outcome))
        .collect();
    assert!(replies.contains(&(2, value("w"))), "{replies:?}");
}

/// Delivers node 1's `datagrams` to the followers, makes their writes durable at once,
/// and hands their answers to node 1 (without taking its output).
fn followers_acknowledge(c: &mut Cluster, datagrams: Vec<(NodeId, PeerBatch)>) {
    let mut acks = Vec::new();
    for (to, batch) in datagrams {
        let f = to.0 as usize - 1;
        c.nodes[f]
            .on_peer_payload(NodeId(1), &payload(to, &batch))
            .unwrap();
        let mut pending = vec![c.nodes[f].take_output()];
        while let Some(o) = pending.pop() {
            acks.extend(
                o.datagrams
                    .into_iter()
                    .map(|(to, m)| (NodeId(f as u64 + 1), to, m)),
            );
            for w in o.disk_writes {
                assert!(!w.deferrable, "a follower's write holds its acks");
                c.nodes[f].on_disk_done(w.id);
                pending.push(c.nodes[f].take_output());
            }
        }
    }
    for (from, to, batch) in acks {
        assert_eq!(to, NodeId(1));
        c.nodes[0]
            .on_peer_payload(from, &payload(to, &batch))
            .unwrap();
    }
}

/// A get arriving while the leader's commit index is ahead of its applied one is not
/// served on arrival; the flush that applies the write serves it from the lease while
/// routing (no `read_index`, no group drained after routing), with the write.
#[test]
fn a_get_queued_behind_an_unapplied_commit_is_served_from_the_lease_by_the_flush_that_applies_it() {
    let mut c = packed(true);
    let shard = ShardId(6);
    let key = key_of(6);
    c.request(0, 1, put(4, 1, &key, "w"));
    let out = c.nodes[0].take_output();
    for w in out.disk_writes {
        c.nodes[0].on_disk_done(w.id);
    }
    followers_acknowledge(&mut c, out.datagrams);
    let st = c.nodes[0].raft_status(shard);
    c.request(0, 2, get(5, 1, &key));
    assert!(
        st.hard.commit > st.applied,
        "committed, not applied yet (commit {}, applied {})",
        st.hard.commit,
        st.applied
    );
    let drained = c.nodes[0].routed_drained();
    let out = c.nodes[0].take_output();
    let replies: Vec<(u64, Outcome)> = out
        .replies
        .into_iter()
        .map(|(t, r)| (t.0, r.outcome))
        .collect();
    assert_eq!(replies, vec![(1, Outcome::Done), (2, value("w"))]);
    assert_eq!(c.nodes[0].routed_drained(), drained, "served while routing");
}

/// Node 1 proposes a put of `key_of(2) = w`, the followers acknowledge it, and a get of
/// that key arrives before node 1 takes the acknowledgements in; then it takes them in
/// and flushes once. Returns what the get was answered and what the put was.
fn get_racing_a_put(reads_on_arrival: bool) -> (Vec<Outcome>, Vec<Outcome>) {
    let mut c = packed(true);
    c.nodes[0].set_reads_on_arrival(reads_on_arrival);
    c.request(0, 500, put(3, 1, &key_of(2), "w"));
    let out = c.nodes[0].take_output();
    c.absorb(0, out);
    let mut to_leader = Vec::new();
    while let Some((from, to, payload)) = c.net.pop_front() {
        if to == NodeId(1) {
            to_leader.push((from, payload));
            continue;
        }
        let i = to.0 as usize - 1;
        c.nodes[i].on_peer_payload(from, &payload).unwrap();
        let out = c.nodes[i].take_output();
        c.absorb(i, out);
    }
    c.request(0, 501, get(4, 1, &key_of(2)));
    for (from, payload) in to_leader {
        c.nodes[0].on_peer_payload(from, &payload).unwrap();
    }
    let out = c.nodes[0].take_output();
    c.absorb(0, out);
    (c.reply_to(501), c.reply_to(500))
}

/// Served on arrival, the get reads the state before the put that the same flush
/// answers; served in the flush (course mode's setting), it reads the put. Both are
/// linearizable; only the second passes a client that checks a get against the last
/// write acknowledged when the get's reply arrives.
#[test]
fn gets_served_in_the_flush_see_the_writes_that_flush_answers() {
    let (get, put) = get_racing_a_put(false);
    assert_eq!(put, vec![Outcome::Done]);
    assert_eq!(get, vec![value("w")]);
    let (get, put) = get_racing_a_put(true);
    assert_eq!(put, vec![Outcome::Done]);
    assert_eq!(
        get,
        vec![value("v")],
        "read on arrival, before the put applied"
    );
}

/// A group drained until it had no Ready is not asked again by the next flush unless
/// something touched it since: the take_output that routes a put drains its group, and
/// leaves nothing marked for the next one to ask.
#[test]
fn a_group_drained_by_its_flush_is_not_asked_again_by_the_next() {
    let mut c = packed(true);
    let _ = c.nodes[0].take_output();
    assert_eq!(c.nodes[0].take_touched(), Vec::<ShardId>::new());
    c.request(0, 200, put(3, 1, &key_of(5), "w"));
    let out = c.nodes[0].take_output();
    assert!(!out.datagrams.is_empty(), "the put's Appends");
    assert_eq!(
        c.nodes[0].take_touched(),
        Vec::<ShardId>::new(),
        "the put's group was drained by the flush that proposed it"
    );
    c.absorb(0, out);
    c.settle();
    assert_eq!(c.reply_to(200), vec![Outcome::Done]);
}
