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
