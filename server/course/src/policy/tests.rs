//! Tests of the send policy, with time passed in as arguments.

use super::*;
use bytes::Bytes;
use kv_raft::{Entry, EntryKind, Message};
use kv_shared::ShardId;

const ME: NodeId = NodeId(1);

fn members() -> Vec<NodeId> {
    (1..=5).map(NodeId).collect()
}

fn policy() -> SendPolicy {
    SendPolicy::new(Settings::default(), ME, &members())
}

fn gm(from: NodeId, to: NodeId, term: u64, body: MessageBody) -> GroupMessage {
    GroupMessage {
        shard: ShardId(0),
        msg: Message {
            from,
            to,
            term,
            body,
        },
    }
}

fn append(to: NodeId, index: u64) -> GroupMessage {
    gm(
        ME,
        to,
        2,
        MessageBody::Append {
            prev_index: index - 1,
            prev_term: 2,
            entries: vec![Entry {
                term: 2,
                index,
                kind: EntryKind::Command,
                data: Bytes::from_static(b"x"),
            }],
            commit: index - 1,
        },
    )
}

fn heartbeat(to: NodeId, read_round: u64) -> GroupMessage {
    gm(
        ME,
        to,
        2,
        MessageBody::Heartbeat {
            commit: 1,
            read_round,
        },
    )
}

fn ack(from: NodeId, term: u64) -> GroupMessage {
    gm(
        from,
        ME,
        term,
        MessageBody::AppendResp {
            reject: false,
            index: 1,
            hint_index: 0,
            hint_term: 0,
        },
    )
}

fn leader(commit: u64, last_index: u64) -> View {
    View {
        role: Role::Leader,
        term: 2,
        commit,
        last_index,
        leader: Some(ME),
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// The default settings with `stall_defer` set (zero: no deferral).
fn deferral(stall_defer: Duration) -> Settings {
    Settings {
        stall_defer,
        ..Settings::default()
    }
}

/// A leader past its grace period, with followers 2 and 3 having acknowledged last.
fn settled(t0: Instant) -> (SendPolicy, Instant) {
    settled_with(Settings::default(), t0)
}

fn settled_with(settings: Settings, t0: Instant) -> (SendPolicy, Instant) {
    let mut p = SendPolicy::new(settings, ME, &members());
    p.observe(leader(1, 1), t0);
    let now = t0 + LEADER_GRACE;
    for (i, f) in [5, 4, 3, 2].into_iter().enumerate() {
        p.on_inbound(NodeId(f), &[ack(NodeId(f), 2)], now + ms(i as u64));
    }
    (p, now + ms(10))
}

#[test]
fn a_new_leader_sends_to_everyone() {
    let t0 = Instant::now();
    let mut p = policy();
    p.observe(leader(0, 1), t0);
    for f in 2..=5 {
        assert_eq!(p.route(NodeId(f), vec![append(NodeId(f), 1)], t0).len(), 1);
    }
}

#[test]
fn appends_go_at_once_to_a_quorum_and_wait_for_the_rest() {
    let t0 = Instant::now();
    let (mut p, now) = settled(t0);
    p.observe(leader(1, 2), now);
    let sent: Vec<usize> = (2..=5)
        .map(|f| p.route(NodeId(f), vec![append(NodeId(f), 2)], now).len())
        .collect();
    assert_eq!(
        sent,
        vec![1, 1, 0, 0],
        "the two most recent ackers are fast"
    );
    // The next heartbeat to a lazy follower carries what it missed.
    let out = p.route(NodeId(4), vec![heartbeat(NodeId(4), 0)], now + ms(1));
    assert_eq!(out.len(), 2);
    assert!(matches!(out[0].msg.body, MessageBody::Append { .. }));
}

#[test]
fn a_stalled_commit_releases_held_appends_and_replaces_the_silent_follower() {
    let t0 = Instant::now();
    let (mut p, now) = settled(t0);
    p.observe(leader(1, 2), now);
    append_to_all(&mut p, 2, now);
    let stall = Settings::default().stall;
    assert_eq!(p.next_deadline(), Some(now + stall));
    assert!(p.release_if_stalled(now + stall / 2).is_empty(), "not yet");
    // Follower 3 answers, follower 2 does not: the commit stalls.
    p.on_inbound(NodeId(3), &[ack(NodeId(3), 2)], now + stall / 2);
    let later = now + stall;
    let ids =
        |r: Vec<(NodeId, Vec<GroupMessage>)>| r.into_iter().map(|(id, _)| id).collect::<Vec<_>>();
    assert_eq!(
        ids(p.release_if_stalled(later)),
        vec![NodeId(4)],
        "one acknowledgement is missing: the lazy follower heard last gets what was held"
    );
    assert!(
        p.release_if_stalled(later).is_empty(),
        "once per stall period"
    );
    // 4 answers; the next append skips the silent 2.
    p.on_inbound(NodeId(4), &[ack(NodeId(4), 2)], later + stall / 4);
    p.observe(leader(2, 3), later + stall / 4);
    let sent: Vec<usize> = (2..=5)
        .map(|f| {
            p.route(NodeId(f), vec![append(NodeId(f), 3)], later + stall / 2)
                .len()
        })
        .collect();
    assert_eq!(sent, vec![0, 1, 1, 0]);
}

fn entry_ranges(msgs: &[GroupMessage]) -> Vec<(u64, u64)> {
    msgs.iter()
        .filter_map(|gm| match &gm.msg.body {
            MessageBody::Append {
                prev_index,
                entries,
                ..
            } => Some((prev_index + 1, prev_index + entries.len() as u64)),
            _ => None,
        })
        .collect()
}

#[test]
fn an_unanswered_append_rides_with_the_next_heartbeat() {
    let t0 = Instant::now();
    let (mut p, now) = settled(t0);
    p.observe(leader(1, 2), now);
    append_to_all(&mut p, 2, now);
    // 3 answers, 2 does not (its append or its acknowledgement was lost) and is
    // replaced by 4 once 4 has the entry too.
    p.on_inbound(NodeId(3), &[ack(NodeId(3), 2)], now + ms(1));
    p.on_inbound(NodeId(4), &[ack(NodeId(4), 2)], now + ms(5));
    p.observe(leader(2, 3), now + ms(60));
    let sent: Vec<bool> = (2..=5)
        .map(|f| {
            !p.route(NodeId(f), vec![append(NodeId(f), 3)], now + ms(60))
                .is_empty()
        })
        .collect();
    assert_eq!(sent, vec![false, true, true, false]);
    let out = p.route(NodeId(2), vec![heartbeat(NodeId(2), 0)], now + ms(900));
    assert_eq!(
        entry_ranges(&out),
        vec![(2, 2), (3, 3)],
        "without entry 2, 2 would refuse entry 3"
    );
    // Once 2 has answered, nothing is carried again.
    p.on_inbound(NodeId(2), &[ack(NodeId(2), 2)], now + ms(901));
    let out = p.route(NodeId(2), vec![heartbeat(NodeId(2), 0)], now + ms(1900));
    assert_eq!(entry_ranges(&out), Vec::<(u64, u64)>::new());
}

#[test]
fn a_release_sends_in_log_order() {
    let t0 = Instant::now();
    let (mut p, now) = settled(t0);
    // Fast follower 2 leaves entry 2 unanswered and is replaced; entry 3 is held for it.
    p.observe(leader(1, 2), now);
    append_to_all(&mut p, 2, now);
    let stall = Settings::default().stall;
    for f in [3, 4, 5] {
        p.on_inbound(NodeId(f), &[ack(NodeId(f), 2)], now + stall / 2);
    }
    p.observe(leader(2, 3), now + stall / 2);
    let later = now + stall * 2;
    append_to_all(&mut p, 3, later);
    let released = p.release_if_stalled(later + stall * 4);
    let to_2 = released
        .iter()
        .find(|(id, _)| *id == NodeId(2))
        .expect("2 owes answers");
    assert_eq!(entry_ranges(&to_2.1), vec![(2, 2), (3, 3)]);
}

/// The leader's append of entry `index` to each of followers 2..=5, routed at `now`.
/// Stalls the commit of every entry in `indexes`: each is released (asserted), then
/// acknowledged by every follower. Returns the time after the last.
fn stall_every_commit(
    p: &mut SendPolicy,
    indexes: std::ops::Range<u64>,
    mut now: Instant,
) -> Instant {
    for i in indexes {
        p.observe(leader(i - 1, i), now);
        append_to_all(p, i, now);
        now = p.next_deadline().unwrap();
        assert!(!p.release_if_stalled(now).is_empty(), "released at {i}");
        for f in 2..=5 {
            p.on_inbound(NodeId(f), &[ack(NodeId(f), 2)], now);
        }
    }
    now
}

/// The followers a release due at `at` goes to.
fn released_to(p: &mut SendPolicy, at: Instant) -> Vec<NodeId> {
    p.release_if_stalled(at)
        .into_iter()
        .map(|(id, _)| id)
        .collect()
}

fn append_to_all(p: &mut SendPolicy, index: u64, now: Instant) {
    for f in 2..=5 {
        p.route(NodeId(f), vec![append(NodeId(f), index)], now);
    }
}

/// Commits `n` puts, each acknowledged by the fast followers at once.
fn commit_quickly(p: &mut SendPolicy, first: u64, n: u64, mut now: Instant) -> Instant {
    for i in first..first + n {
        p.observe(leader(i - 1, i), now);
        append_to_all(p, i, now);
        for f in [2, 3] {
            p.on_inbound(NodeId(f), &[ack(NodeId(f), 2)], now + ms(1) / 2);
        }
        now += ms(60);
        p.observe(leader(i, i), now);
    }
    now
}

#[test]
fn under_light_loss_the_next_put_carries_a_stalled_one() {
    let t0 = Instant::now();
    let settings = deferral(ms(150));
    let (mut p, now) = settled_with(settings.clone(), t0);
    let now = commit_quickly(&mut p, 2, 20, now);
    let stall = settings.stall;
    // Entry 22: 2 answers, 3 does not.
    p.observe(leader(21, 22), now);
    append_to_all(&mut p, 22, now);
    p.on_inbound(NodeId(2), &[ack(NodeId(2), 2)], now + stall / 2);
    assert_eq!(p.next_deadline(), Some(now + stall), "the stall is noted");
    assert!(
        p.release_if_stalled(now + stall).is_empty(),
        "no release: the next put will carry entry 22"
    );
    assert_eq!(p.next_deadline(), Some(now + settings.stall_defer));
    // The next put, 60 ms later: the silent 3 is replaced by 4, which gets 22 with 23.
    let next = now + ms(60);
    p.observe(leader(21, 23), next);
    let out: Vec<Vec<(u64, u64)>> = (2..=5)
        .map(|f| entry_ranges(&p.route(NodeId(f), vec![append(NodeId(f), 23)], next)))
        .collect();
    assert_eq!(out[0], vec![(23, 23)]);
    assert!(out[1].is_empty() && out[3].is_empty());
    assert!(
        out[2].ends_with(&[(22, 22), (23, 23)]),
        "4 was lazy: it gets all it lacks"
    );
    // Without a next put, the release comes after `stall_defer`.
    let quiet = next + settings.stall_defer;
    assert!(!p.release_if_stalled(quiet).is_empty());
}

#[test]
fn measured_light_loss_defers_however_many_commits_stalled() {
    let t0 = Instant::now();
    let settings = deferral(ms(150));
    let (mut p, mut now) = settled_with(settings.clone(), t0);
    p.set_loss(Some(0.10));
    // Every commit stalls (slow acknowledgements count as stalls too).
    for i in 2..40 {
        p.observe(leader(i - 1, i), now);
        append_to_all(&mut p, i, now);
        now = p.next_deadline().unwrap();
        assert!(p.release_if_stalled(now).is_empty(), "deferred at {i}");
        for f in 2..=5 {
            p.on_inbound(NodeId(f), &[ack(NodeId(f), 2)], now);
        }
        p.observe(leader(i, i), now);
        now += ms(60);
    }
    p.observe(leader(39, 40), now);
    append_to_all(&mut p, 40, now);
    assert!(p.release_if_stalled(now + settings.stall).is_empty());
    assert_eq!(p.next_deadline(), Some(now + settings.stall_defer));
}

#[test]
fn after_a_leader_change_a_stall_is_released_without_deferral() {
    let t0 = Instant::now();
    let settings = deferral(ms(150));
    let (mut p, now) = settled_with(settings.clone(), t0);
    let now = commit_quickly(&mut p, 2, 20, now);
    // Deposed, then elected again: this replica has seen the leader change.
    let follower = View {
        role: Role::Follower,
        leader: Some(NodeId(3)),
        ..leader(21, 21)
    };
    p.observe(follower, now);
    p.observe(leader(21, 22), now);
    append_to_all(&mut p, 22, now);
    p.on_inbound(NodeId(2), &[ack(NodeId(2), 2)], now);
    assert_eq!(p.next_deadline(), Some(now + settings.stall));
    assert!(!p.release_if_stalled(now + settings.stall).is_empty());
}

#[test]
fn without_deferral_a_stalled_commit_is_released_after_the_stall_time() {
    let t0 = Instant::now();
    let settings = deferral(Duration::ZERO);
    let (mut p, now) = settled_with(settings.clone(), t0);
    let now = commit_quickly(&mut p, 2, 20, now);
    p.observe(leader(21, 22), now);
    append_to_all(&mut p, 22, now);
    assert!(!p.release_if_stalled(now + settings.stall).is_empty());
}

#[test]
fn a_second_release_without_progress_goes_to_everyone() {
    let t0 = Instant::now();
    let (mut p, now) = settled(t0);
    p.observe(leader(1, 2), now);
    append_to_all(&mut p, 2, now);
    let first = p.next_deadline().unwrap();
    assert_eq!(
        p.release_if_stalled(first).len(),
        2,
        "two acknowledgements missing"
    );
    let second = p.next_deadline().unwrap();
    assert_eq!(
        released_to(&mut p, second),
        vec![NodeId(2), NodeId(3), NodeId(4), NodeId(5)]
    );
}

#[test]
fn a_silent_follower_gets_only_its_heartbeat_until_it_answers() {
    let t0 = Instant::now();
    let (mut p, mut now) = settled(t0);
    p.set_loss(Some(0.3));
    // Follower 5 answers nothing for SILENT_AFTER; the others answer everything.
    let mut index = 2;
    let end = now + SILENT_AFTER + ms(100);
    while now < end {
        p.observe(leader(index - 1, index), now);
        append_to_all(&mut p, index, now);
        for f in 2..=4 {
            p.on_inbound(NodeId(f), &[ack(NodeId(f), 2)], now);
        }
        p.observe(leader(index, index), now);
        index += 1;
        now += ms(50);
    }
    p.observe(leader(index - 1, index), now);
    let sent: Vec<usize> = (2..=5)
        .map(|f| {
            p.route(NodeId(f), vec![append(NodeId(f), index)], now)
                .len()
        })
        .collect();
    assert_eq!(
        sent,
        vec![1, 1, 1, 0],
        "wide, but not to the silent follower"
    );
    // A stalled commit is released to the answering followers only.
    let due = p.next_deadline().unwrap();
    let released = released_to(&mut p, due);
    assert!(!released.contains(&NodeId(5)), "{released:?}");
    // Its heartbeat carries what it lacks; once it answers it is fast again.
    let beat = p.route(NodeId(5), vec![heartbeat(NodeId(5), 0)], due);
    assert!(beat.len() > 1, "held appends ride with the heartbeat");
    p.on_inbound(NodeId(5), &[ack(NodeId(5), 2)], due);
    let next = p.route(NodeId(5), vec![append(NodeId(5), index + 1)], due);
    assert_eq!(next.len(), 1);
}

#[test]
fn heartbeats_are_resent_while_loss_is_unknown_or_heavy() {
    assert!(
        wants_heartbeat_resends(None),
        "unknown: the first seconds of a run"
    );
    assert!(!wants_heartbeat_resends(Some(0.0)));
    assert!(
        !wants_heartbeat_resends(Some(0.05)),
        "light loss: not worth a datagram"
    );
    assert!(wants_heartbeat_resends(Some(WIDE_ENTER_LOSS)));
    assert!(wants_heartbeat_resends(Some(0.3)));
}

#[test]
fn heavy_loss_makes_every_follower_fast() {
    let t0 = Instant::now();
    let (mut p, now) = settled(t0);
    // Every commit needs a release.
    let now = stall_every_commit(&mut p, 2..40, now);
    p.observe(leader(39, 40), now);
    let sent: Vec<usize> = (2..=5)
        .map(|f| p.route(NodeId(f), vec![append(NodeId(f), 40)], now).len())
        .collect();
    assert_eq!(sent, vec![1, 1, 1, 1]);
}

#[test]
fn measured_loss_alone_decides_wide_sending_and_precise_timing() {
    let t0 = Instant::now();
    // Without deferral, so that every stall below is released at once.
    let settings = deferral(Duration::ZERO);
    let (mut p, now) = settled_with(settings, t0);
    let fanout = |p: &mut SendPolicy, loss: f64, index: u64| {
        p.set_loss(Some(loss));
        p.observe(leader(index - 1, index), now);
        let sent: usize = (2..=5)
            .map(|f| {
                let out = p.route(NodeId(f), vec![append(NodeId(f), index)], now);
                usize::from(!out.is_empty())
            })
            .sum();
        for f in 2..=5 {
            p.on_inbound(NodeId(f), &[ack(NodeId(f), 2)], now);
        }
        (sent, p.precise_timing())
    };
    assert_eq!(fanout(&mut p, 0.10, 2), (2, false));
    assert_eq!(fanout(&mut p, 0.15, 3), (4, true));
    // Between the two bounds the mode stays as it was.
    assert_eq!(fanout(&mut p, 0.12, 4), (4, true));
    assert_eq!(fanout(&mut p, 0.10, 5), (2, false));
    assert_eq!(fanout(&mut p, 0.12, 6), (2, false));
    // Once loss is measured, stalls no longer switch the mode: every commit stalls
    // here, which without a measurement sends wide (see the test above).
    stall_every_commit(&mut p, 7..40, now);
    assert!(!p.precise_timing());
}

#[test]
fn a_leader_without_a_quorum_backs_off() {
    let t0 = Instant::now();
    let (mut p, now) = settled(t0);
    p.observe(leader(1, 2), now);
    append_to_all(&mut p, 2, now);
    let mut at = now;
    let mut gaps = Vec::new();
    for _ in 0..10 {
        let next = p.next_deadline().expect("still stalled");
        gaps.push(next.saturating_duration_since(at));
        assert!(!p.release_if_stalled(next).is_empty());
        at = next;
    }
    assert_eq!(gaps[0], Settings::default().stall);
    assert!(gaps.windows(2).all(|w| w[1] >= w[0]), "{gaps:?}");
    assert_eq!(*gaps.last().unwrap(), STALL_WAIT_MAX);
    // Progress resets the back-off.
    p.on_inbound(NodeId(2), &[ack(NodeId(2), 2)], at);
    p.observe(leader(2, 3), at);
    assert_eq!(
        p.next_deadline().map(|d| d.saturating_duration_since(at)),
        Some(Settings::default().stall),
        "3..5 still owe an answer, but the wait is short again"
    );
}

fn commit_spread(to: NodeId, commit: u64) -> GroupMessage {
    gm(
        ME,
        to,
        2,
        MessageBody::Append {
            prev_index: commit,
            prev_term: 2,
            entries: vec![],
            commit,
        },
    )
}

#[test]
fn a_fast_follower_gets_an_append_without_entries_at_once_and_a_lazy_one_waits() {
    // kv-raft sends one only where the follower must learn the commit now
    // (`broadcast_commit` off): the policy does not hold it back from a fast follower.
    let t0 = Instant::now();
    let (mut p, now) = settled(t0);
    p.observe(leader(2, 2), now);
    assert_eq!(
        p.route(NodeId(2), vec![commit_spread(NodeId(2), 2)], now),
        vec![commit_spread(NodeId(2), 2)]
    );
    assert!(p
        .route(NodeId(5), vec![commit_spread(NodeId(5), 2)], now)
        .is_empty());
    let out = p.route(NodeId(5), vec![heartbeat(NodeId(5), 0)], now + ms(50));
    assert_eq!(out[0], commit_spread(NodeId(5), 2), "with its heartbeat");
}

fn vote_request(to: NodeId) -> GroupMessage {
    gm(
        ME,
        to,
        3,
        MessageBody::Vote {
            last_index: 1,
            last_term: 2,
            transfer: false,
        },
    )
}

#[test]
fn vote_requests_pass_through_and_the_policy_never_holds_them() {
    // kv-raft resends them, on the runtime's timer (vote_resend.rs).
    let t0 = Instant::now();
    let mut p = policy();
    let candidate = View {
        role: Role::Candidate,
        term: 3,
        commit: 1,
        last_index: 1,
        leader: None,
    };
    p.observe(candidate, t0);
    for f in 2..=5 {
        assert_eq!(
            p.route(NodeId(f), vec![vote_request(NodeId(f))], t0),
            vec![vote_request(NodeId(f))]
        );
    }
    assert_eq!(p.next_deadline(), None);
}

#[test]
fn losing_leadership_drops_held_messages() {
    let t0 = Instant::now();
    let (mut p, now) = settled(t0);
    p.observe(leader(1, 2), now);
    assert!(p
        .route(NodeId(5), vec![append(NodeId(5), 2)], now)
        .is_empty());
    p.observe(
        View {
            role: Role::Follower,
            term: 3,
            commit: 1,
            last_index: 2,
            leader: Some(NodeId(3)),
        },
        now + ms(1),
    );
    assert_eq!(p.next_deadline(), None);
    assert!(p.release_if_stalled(now + ms(100)).is_empty());
    // As a follower everything goes out unchanged.
    assert_eq!(
        p.route(NodeId(5), vec![heartbeat(NodeId(5), 0)], now).len(),
        1
    );
}
