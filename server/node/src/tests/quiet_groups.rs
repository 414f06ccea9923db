//! Idle groups at kvserver's timing: quiescence must not cost elections. The metadata
//! group is idle most of the time, and every change of its leader restarts the balancer.

use super::*;
use crate::config::kvserver_raft_config;
use crate::events::EventKind;

/// kvserver's default timing: heartbeat 5 ticks, elections in 30..60 ticks.
fn idle_cluster_at_kvserver_timing() -> Cluster {
    let mut c = Cluster::with(3, 2, |cfg| {
        cfg.raft = kvserver_raft_config(cfg.node, 5, 30, 60);
    });
    c.tick(300);
    c
}

/// A tick leaves a quiesced group's Raft alone, so it does not mark the group touched:
/// the flush after it asks no quiesced group for a Ready. A group the tick reaches (one
/// not quiesced, as every group before its first leader) is marked.
#[test]
fn a_tick_marks_only_the_groups_it_ticks() {
    let mut c = Cluster::new(3, 8);
    c.nodes[0].tick();
    assert_eq!(c.nodes[0].take_touched().len(), 8, "no group quiesced yet");
    let out = c.nodes[0].take_output();
    c.absorb(0, out);
    c.settle();
    // As `idle_groups_quiesce_and_a_request_wakes_them`: idle, every group quiesces.
    c.tick(80);
    for i in 0..3 {
        let _ = c.nodes[i].take_output();
        assert_eq!(c.nodes[i].take_touched(), Vec::<ShardId>::new());
        c.nodes[i].tick();
        assert_eq!(
            c.nodes[i].take_touched(),
            Vec::<ShardId>::new(),
            "node {}: an idle cluster's groups are quiesced, and the tick left them alone",
            i + 1
        );
        let out = c.nodes[i].take_output();
        c.absorb(i, out);
    }
    c.settle();
}

/// A quiesced follower that heard nothing for its group for
/// `QUIESCED_FOLLOWER_RECHECK_ELECTIONS` election timeouts wakes for two, and its PreVote
/// wakes the leader, which refuses it. The leader, idle again, quiesced after one
/// heartbeat period, while the follower stayed awake for its two election timeouts:
/// its timer ran out again, and this time the other follower, quiesced and so hearing
/// no leader either, granted its PreVote. Every recheck elected a new leader (the
/// metadata group changed leaders 6 times in 4 idle minutes). A follower that hears its
/// leader has the recheck's answer and may quiesce again. (A quiesced leader rechecks
/// on the same period with a heartbeat round, which usually comes first.)
#[test]
fn an_idle_group_keeps_its_leader_through_its_followers_rechecks() {
    let mut c = idle_cluster_at_kvserver_timing();
    let leaders: Vec<usize> = (0..2).map(|s| c.leader(ShardId(s))).collect();
    let terms: Vec<u64> = (0..2)
        .map(|s| {
            c.nodes[leaders[s as usize]]
                .raft_status(ShardId(s))
                .hard
                .term
        })
        .collect();
    c.events.clear();
    let messages_before = c.messages;
    // Past three rechecks (30 election timeouts of at most 60 ticks each).
    c.tick(3 * 30 * 60 + 300);
    let elections: Vec<_> = c
        .events
        .iter()
        .filter(|(_, e)| {
            matches!(
                e.kind,
                EventKind::ElectionStarted {
                    pre_vote: false,
                    ..
                }
            )
        })
        .collect();
    assert!(elections.is_empty(), "idle groups elected: {elections:?}");
    for s in 0..2u32 {
        assert_eq!(c.leader(ShardId(s)), leaders[s as usize], "shard {s}");
        let l = leaders[s as usize];
        assert_eq!(
            c.nodes[l].raft_status(ShardId(s)).hard.term,
            terms[s as usize]
        );
    }
    // The rechecks happened (this is not a cluster that never woke): whichever comes
    // first, the leader's heartbeat round or a follower's PreVote, Raft messages flowed.
    assert!(
        c.messages > messages_before,
        "no group woke to recheck its leader"
    );
}
