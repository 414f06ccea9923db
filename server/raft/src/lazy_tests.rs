//! Unit tests of lazy followers (`Config::lazy_followers`) on a scripted 5-replica
//! cluster: who is sent new entries at once, how the others catch up, and what a
//! caller-timed release sends.

use crate::node::RoleState;
use crate::testing::{test_config, Cluster};
use crate::types::{Index, Message, MessageBody};
use crate::{Config, Raft};
use bytes::Bytes;
use kv_shared::NodeId;

fn raft(c: &mut Cluster, id: u64) -> &mut Raft {
    &mut c.nodes.get_mut(&id).expect("node").raft
}

/// Course mode's options, with a grace period of `grace` ticks.
fn lazy_config(grace: u32) -> Config {
    Config {
        lazy_followers: true,
        lazy_grace_ticks: grace,
        broadcast_commit: false,
        heartbeat_suppression: true,
        heartbeat_suppression_strict: true,
        ..test_config()
    }
}

/// Node 1 elected in a 5-replica cluster, its first entry committed everywhere.
fn cluster(opts: Config) -> Cluster {
    let mut c = Cluster::new(5, &[], opts);
    c.quiet = true;
    for _ in 0..30 {
        c.tick(1);
        c.stabilize();
        if c.leader() == Some(1) {
            break;
        }
    }
    assert_eq!(c.leader(), Some(1), "node 1 leads");
    propose(&mut c);
    c.stabilize();
    c
}

/// Proposes one entry on the leader, node 1, and runs its `ready()`.
fn propose(c: &mut Cluster) -> Index {
    let (index, _) = raft(c, 1).propose(Bytes::from_static(b"x")).expect("leads");
    c.process(1);
    index
}

/// The followers that Appends with entries in flight go to, in order.
fn appended_to(c: &Cluster) -> Vec<u64> {
    let mut to: Vec<u64> = c
        .net
        .iter()
        .filter(|m| matches!(&m.body, MessageBody::Append { entries, .. } if !entries.is_empty()))
        .map(|m| m.to.0)
        .collect();
    to.sort();
    to.dedup();
    to
}

/// Removes the messages in flight to `to` and returns them.
fn take_to(c: &mut Cluster, to: u64) -> Vec<Message> {
    let (taken, kept) = std::mem::take(&mut c.net)
        .into_iter()
        .partition(|m| m.to.0 == to);
    c.net = kept;
    taken.into()
}

fn last_index(c: &Cluster, id: u64) -> Index {
    c.nodes[&id].raft.log.last_index()
}

fn fast_set(c: &Cluster) -> Vec<NodeId> {
    let mut fast = match &c.nodes[&1].raft.role {
        RoleState::Leader(ls) => ls.lazy.fast.clone(),
        _ => panic!("node 1 does not lead"),
    };
    fast.sort();
    fast
}

/// Answers arrive in the order 2, 3, 4, 5: the two latest, 4 and 5, are fast (not the
/// two lowest ids, the tie-break).
fn answers_in_order(c: &mut Cluster) {
    // Wide for one entry, so that every follower is sent it and answers.
    raft(c, 1).set_send_wide(true);
    propose(c);
    raft(c, 1).set_send_wide(false);
    let mut msgs: Vec<Message> = c.net.drain(..).collect();
    msgs.sort_by_key(|m| m.to.0);
    for m in msgs {
        let to = m.to.0;
        c.deliver_one(m);
        // The follower's answer goes back before the next follower hears anything.
        for answer in take_to(c, 1) {
            c.deliver_one(answer);
        }
        assert!(c.net.iter().all(|m| m.to.0 != to));
    }
    c.stabilize();
}

#[test]
fn new_entries_go_at_once_only_to_the_fast_followers() {
    let mut c = cluster(lazy_config(0));
    answers_in_order(&mut c);
    propose(&mut c);
    assert_eq!(appended_to(&c), vec![4, 5], "the two that answered last");
    c.stabilize();
    assert_eq!(c.nodes[&1].raft.log.commit, last_index(&c, 1), "committed");
    assert!(
        last_index(&c, 2) < last_index(&c, 1),
        "2 waits for its heartbeat"
    );
}

#[test]
fn without_lazy_followers_every_follower_gets_new_entries_at_once() {
    let mut c = cluster(Config {
        lazy_followers: false,
        ..lazy_config(0)
    });
    answers_in_order(&mut c);
    propose(&mut c);
    assert_eq!(appended_to(&c), vec![2, 3, 4, 5]);
}

#[test]
fn a_new_leader_sends_to_everyone_during_its_grace_period() {
    let mut c = cluster(lazy_config(5));
    propose(&mut c);
    assert_eq!(appended_to(&c), vec![2, 3, 4, 5]);
    c.stabilize();
    for _ in 0..5 {
        c.tick(1);
    }
    c.stabilize();
    propose(&mut c);
    assert_eq!(
        appended_to(&c).len(),
        2,
        "lazy once the grace period is over"
    );
}

#[test]
fn held_entries_ride_with_the_next_heartbeat() {
    let mut c = cluster(lazy_config(0));
    answers_in_order(&mut c);
    propose(&mut c);
    propose(&mut c);
    c.stabilize();
    let last = last_index(&c, 1);
    assert!(last_index(&c, 2) < last && last_index(&c, 3) < last);
    for _ in 0..test_config().heartbeat_ticks {
        c.tick(1);
    }
    for lazy in [2, 3] {
        let kinds: Vec<&MessageBody> = c
            .net
            .iter()
            .filter(|m| m.to.0 == lazy)
            .map(|m| &m.body)
            .collect();
        assert!(
            matches!(
                kinds.as_slice(),
                [MessageBody::Append { .. }, MessageBody::Heartbeat { .. }]
            ),
            "to {lazy}: {kinds:?}"
        );
    }
    c.stabilize();
    assert_eq!(last_index(&c, 2), last);
    assert_eq!(last_index(&c, 3), last);
    // What rode with the heartbeat was no contact of its own: the next heartbeat goes.
    for _ in 0..test_config().heartbeat_ticks {
        c.tick(1);
    }
    for lazy in [2, 3] {
        assert!(
            c.net
                .iter()
                .any(|m| m.to.0 == lazy && matches!(m.body, MessageBody::Heartbeat { .. })),
            "no heartbeat to {lazy}"
        );
    }
}

#[test]
fn every_append_carries_what_the_follower_has_not_acknowledged() {
    let mut c = cluster(lazy_config(0));
    answers_in_order(&mut c);
    let first = propose(&mut c);
    // The Appends of `first` are lost.
    c.net.clear();
    let second = propose(&mut c);
    for m in c.net.iter().filter(|m| m.to.0 == 4) {
        if let MessageBody::Append {
            prev_index,
            entries,
            ..
        } = &m.body
        {
            assert_eq!(*prev_index, first - 1, "starts after the match index");
            assert_eq!(entries.last().map(|e| e.index), Some(second));
        }
    }
    let refusals = |c: &Cluster| {
        c.net
            .iter()
            .filter(|m| matches!(m.body, MessageBody::AppendResp { reject: true, .. }))
            .count()
    };
    c.deliver();
    assert_eq!(refusals(&c), 0, "no follower lacks the previous entry");
    c.stabilize();
    assert_eq!(c.nodes[&1].raft.log.commit, second);
}

#[test]
fn a_targeted_release_goes_to_as_many_followers_as_the_commit_lacks() {
    let mut c = cluster(lazy_config(0));
    answers_in_order(&mut c);
    let index = propose(&mut c);
    // Fast follower 5 is gone; 4 answers.
    c.crash(5);
    c.deliver();
    c.stabilize();
    assert!(c.nodes[&1].raft.log.commit < index, "stalled");
    raft(&mut c, 1).release_stalled(true);
    c.process(1);
    // One acknowledgement is missing: one follower, one with held entries (3 answered
    // more recently than 2).
    assert_eq!(appended_to(&c), vec![3]);
    c.stabilize();
    assert_eq!(
        c.nodes[&1].raft.log.commit, index,
        "the release committed it"
    );
    // 5 left an Append unanswered at the stall: 3 replaces it.
    propose(&mut c);
    assert_eq!(appended_to(&c), vec![3, 4]);
    assert_eq!(fast_set(&c), vec![NodeId(3), NodeId(4)]);
}

#[test]
fn an_untargeted_release_goes_to_every_follower_that_lacks_entries() {
    let mut c = cluster(lazy_config(0));
    answers_in_order(&mut c);
    let index = propose(&mut c);
    c.net.clear();
    raft(&mut c, 1).release_stalled(false);
    c.process(1);
    assert_eq!(appended_to(&c), vec![2, 3, 4, 5]);
    c.stabilize();
    assert_eq!(c.nodes[&1].raft.log.commit, index);
}

#[test]
fn a_release_skips_silent_followers() {
    let mut c = cluster(Config {
        silent_follower_ticks: Some(5),
        ..lazy_config(0)
    });
    answers_in_order(&mut c);
    c.crash(5);
    // Heartbeats at ticks 2 (skipped: all were just sent Appends), 4 and 6.
    for _ in 0..6 {
        c.tick(1);
        c.stabilize();
    }
    propose(&mut c);
    c.net.clear();
    raft(&mut c, 1).release_stalled(false);
    c.process(1);
    assert_eq!(
        appended_to(&c),
        vec![2, 3, 4],
        "5 has not answered for 6 ticks"
    );
}

#[test]
fn a_stall_noted_replaces_a_fast_follower_that_did_not_answer() {
    let mut c = cluster(lazy_config(0));
    answers_in_order(&mut c);
    propose(&mut c);
    // 5's Append is lost; 4 answers; the commit waits.
    take_to(&mut c, 5);
    c.stabilize();
    raft(&mut c, 1).note_stall();
    let next = propose(&mut c);
    assert_eq!(appended_to(&c), vec![3, 4], "3 answered after 2");
    // 3 was lazy: its Append carries everything it lacks.
    c.stabilize();
    assert_eq!(c.nodes[&1].raft.log.commit, next);
    assert_eq!(last_index(&c, 3), next);
}

#[test]
fn sending_wide_makes_every_follower_fast() {
    let mut c = cluster(lazy_config(0));
    answers_in_order(&mut c);
    raft(&mut c, 1).set_send_wide(true);
    propose(&mut c);
    assert_eq!(appended_to(&c), vec![2, 3, 4, 5]);
    c.stabilize();
    raft(&mut c, 1).set_send_wide(false);
    propose(&mut c);
    assert_eq!(appended_to(&c).len(), 2);
}

#[test]
fn a_follower_far_behind_is_not_held() {
    let mut c = cluster(lazy_config(0));
    answers_in_order(&mut c);
    let held = crate::lazy::LAZY_HELD_ENTRIES_MAX;
    for _ in 0..held {
        raft(&mut c, 1)
            .propose(Bytes::from_static(b"x"))
            .expect("leads");
    }
    c.process(1);
    // 4 and 5 now lack `held` entries: they are sent them rather than held further.
    let to = appended_to(&c);
    assert_eq!(to, vec![2, 3, 4, 5], "{to:?}");
}

/// A transfer's target may be a lazy follower: the Append before its TimeoutNow (which
/// tells it the commit index, see `Raft::send_timeout_now`) is not held back.
#[test]
fn a_transfer_target_outside_the_fast_set_is_told_the_commit_before_its_timeout_now() {
    let mut c = cluster(lazy_config(0));
    answers_in_order(&mut c);
    // 2 gets the entry with its heartbeat, before the entry commits; it commits by 4
    // and 5 later, and no later message tells 2.
    propose(&mut c);
    assert_eq!(fast_set(&c), vec![NodeId(4), NodeId(5)]);
    let early = [2, 3].map(|lazy| take_to(&mut c, lazy));
    for _ in 0..test_config().heartbeat_ticks {
        c.tick(1);
    }
    let to_2: Vec<Message> = take_to(&mut c, 2);
    assert!(
        to_2.iter()
            .any(|m| matches!(&m.body, MessageBody::Append { entries, .. } if !entries.is_empty())),
        "2 gets the entry with its heartbeat: {to_2:?}"
    );
    assert!(
        early.iter().all(|m| m.is_empty()),
        "2 and 3 were held: {early:?}"
    );
    for m in to_2 {
        c.deliver_one(m);
    }
    c.stabilize();
    let commit = c.nodes[&1].raft.log.commit;
    assert_eq!(last_index(&c, 2), last_index(&c, 1));
    assert!(
        c.nodes[&2].raft.log.commit < commit,
        "2 was not told the commit"
    );
    raft(&mut c, 1).transfer_leadership(NodeId(2));
    c.process(1);
    let kinds: Vec<&MessageBody> = c
        .net
        .iter()
        .filter(|m| m.to.0 == 2)
        .map(|m| &m.body)
        .collect();
    assert!(
        matches!(
            kinds.as_slice(),
            [MessageBody::Append { commit: told, .. }, MessageBody::TimeoutNow] if *told == commit
        ),
        "to 2: {kinds:?}"
    );
    c.stabilize();
    assert_eq!(c.leader(), Some(2));
}
