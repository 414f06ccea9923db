//! Tests of the stall timer, with time passed in as arguments.

use super::*;

const ME: NodeId = NodeId(1);

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

/// A leader that has committed entry 1.
fn settled(settings: Settings, now: Instant) -> StallTimer {
    let mut t = StallTimer::new(settings);
    t.observe(leader(1, 1), now);
    t
}

/// Commits `n` puts, each at once. Returns the time after the last.
fn commit_quickly(t: &mut StallTimer, first: u64, n: u64, mut now: Instant) -> Instant {
    for i in first..first + n {
        t.observe(leader(i - 1, i), now);
        assert_eq!(t.due(now + ms(1) / 2), StallAction::Wait);
        now += ms(60);
        t.observe(leader(i, i), now);
    }
    now
}

/// Stalls the commit of every entry in `indexes`: each is released (asserted), then
/// committed. Returns the time after the last.
fn stall_every_commit(
    t: &mut StallTimer,
    indexes: std::ops::Range<u64>,
    mut now: Instant,
) -> Instant {
    for i in indexes {
        t.observe(leader(i - 1, i), now);
        loop {
            now = t.next_deadline().expect("stalled");
            if matches!(t.due(now), StallAction::Release { .. }) {
                break;
            }
        }
        t.observe(leader(i, i), now);
    }
    now
}

#[test]
fn nothing_is_due_while_every_entry_is_committed() {
    let now = Instant::now();
    let mut t = settled(Settings::default(), now);
    assert_eq!(t.next_deadline(), None);
    assert_eq!(t.due(now + ms(1000)), StallAction::Wait);
}

#[test]
fn under_light_loss_the_first_release_is_deferred_and_the_stall_noted() {
    let t0 = Instant::now();
    let settings = deferral(ms(150));
    let mut t = settled(settings.clone(), t0);
    let now = commit_quickly(&mut t, 2, 20, t0);
    t.observe(leader(21, 22), now);
    assert_eq!(
        t.next_deadline(),
        Some(now + settings.stall),
        "the stall is noted"
    );
    assert_eq!(t.due(now + settings.stall), StallAction::Note);
    assert_eq!(t.due(now + settings.stall), StallAction::Wait, "noted once");
    assert_eq!(t.next_deadline(), Some(now + settings.stall_defer));
    assert_eq!(
        t.due(now + settings.stall_defer),
        StallAction::Release { targeted: true }
    );
}

#[test]
fn measured_light_loss_defers_however_many_commits_stalled() {
    let t0 = Instant::now();
    let settings = deferral(ms(150));
    let mut t = settled(settings.clone(), t0);
    t.set_loss(Some(0.10));
    let mut now = t0;
    // Every commit stalls (slow acknowledgements count as stalls too).
    for i in 2..40 {
        t.observe(leader(i - 1, i), now);
        now = t.next_deadline().expect("stalled");
        assert_eq!(t.due(now), StallAction::Note, "deferred at {i}");
        t.observe(leader(i, i), now);
        now += ms(60);
    }
    t.observe(leader(39, 40), now);
    assert_eq!(t.due(now + settings.stall), StallAction::Note);
    assert_eq!(t.next_deadline(), Some(now + settings.stall_defer));
}

#[test]
fn after_a_leader_change_a_stall_is_released_without_deferral() {
    let t0 = Instant::now();
    let settings = deferral(ms(150));
    let mut t = settled(settings.clone(), t0);
    let now = commit_quickly(&mut t, 2, 20, t0);
    // Deposed, then elected again: this replica has seen the leader change.
    let follower = View {
        role: Role::Follower,
        leader: Some(NodeId(3)),
        ..leader(21, 21)
    };
    t.observe(follower, now);
    t.observe(
        View {
            term: 3,
            ..leader(21, 22)
        },
        now,
    );
    assert_eq!(t.next_deadline(), Some(now + settings.stall));
    assert_eq!(
        t.due(now + settings.stall),
        StallAction::Release { targeted: true }
    );
}

#[test]
fn without_deferral_a_stalled_commit_is_released_after_the_stall_time() {
    let t0 = Instant::now();
    let settings = deferral(Duration::ZERO);
    let mut t = settled(settings.clone(), t0);
    let now = commit_quickly(&mut t, 2, 20, t0);
    t.observe(leader(21, 22), now);
    assert_eq!(t.due(now + settings.stall / 2), StallAction::Wait);
    assert_eq!(
        t.due(now + settings.stall),
        StallAction::Release { targeted: true }
    );
}

#[test]
fn a_second_release_without_progress_goes_to_everyone() {
    let t0 = Instant::now();
    let mut t = settled(deferral(Duration::ZERO), t0);
    t.observe(leader(1, 2), t0);
    let first = t.next_deadline().expect("stalled");
    assert_eq!(t.due(first), StallAction::Release { targeted: true });
    let second = t.next_deadline().expect("still stalled");
    assert_eq!(t.due(second), StallAction::Release { targeted: false });
}

#[test]
fn a_leader_without_a_quorum_backs_off() {
    let t0 = Instant::now();
    let settings = deferral(Duration::ZERO);
    let mut t = settled(settings.clone(), t0);
    t.observe(leader(1, 2), t0);
    let mut at = t0;
    let mut gaps = Vec::new();
    for _ in 0..10 {
        let next = t.next_deadline().expect("still stalled");
        gaps.push(next.saturating_duration_since(at));
        assert!(matches!(t.due(next), StallAction::Release { .. }));
        at = next;
    }
    assert_eq!(gaps[0], settings.stall);
    assert!(gaps.windows(2).all(|w| w[1] >= w[0]), "{gaps:?}");
    assert_eq!(*gaps.last().unwrap(), STALL_WAIT_MAX);
    // Progress resets the back-off.
    t.observe(leader(2, 3), at);
    assert_eq!(
        t.next_deadline().map(|d| d.saturating_duration_since(at)),
        Some(settings.stall),
        "the wait is short again"
    );
}

#[test]
fn a_follower_releases_nothing() {
    let now = Instant::now();
    let mut t = StallTimer::new(Settings::default());
    let follower = View {
        role: Role::Follower,
        leader: Some(NodeId(3)),
        ..leader(1, 2)
    };
    t.observe(follower, now);
    assert_eq!(t.next_deadline(), None);
    assert_eq!(t.due(now + ms(1000)), StallAction::Wait);
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
fn commits_that_keep_stalling_make_the_leader_send_wide() {
    let t0 = Instant::now();
    let mut t = settled(deferral(Duration::ZERO), t0);
    assert!(!t.sending_wide());
    let now = stall_every_commit(&mut t, 2..40, t0);
    assert!(t.sending_wide() && t.precise_timing());
    // Commits at once bring it back.
    commit_quickly(&mut t, 40, 40, now);
    assert!(!t.sending_wide());
}

#[test]
fn measured_loss_alone_decides_wide_sending_and_precise_timing() {
    let t0 = Instant::now();
    let mut t = settled(deferral(Duration::ZERO), t0);
    let mut wide_at = |loss: f64| {
        t.set_loss(Some(loss));
        (t.sending_wide(), t.precise_timing())
    };
    assert_eq!(wide_at(0.10), (false, false));
    assert_eq!(wide_at(0.15), (true, true));
    // Between the two bounds the mode stays as it was.
    assert_eq!(wide_at(0.12), (true, true));
    assert_eq!(wide_at(0.10), (false, false));
    assert_eq!(wide_at(0.12), (false, false));
    // Once loss is measured, stalls no longer switch the mode: every commit stalls
    // here, which without a measurement sends wide (see the test above).
    stall_every_commit(&mut t, 7..40, t0);
    assert!(!t.sending_wide());
}

#[test]
fn a_leader_says_it_holds_stalled_commits_back_only_while_it_would() {
    let t0 = Instant::now();
    let follower = View {
        role: Role::Follower,
        leader: Some(NodeId(3)),
        ..leader(1, 1)
    };
    // A follower of the first leader it knows: no leader change, but not leading.
    let mut f = StallTimer::new(deferral(ms(150)));
    f.set_loss(Some(0.05));
    f.observe(follower, t0);
    assert!(!f.defers_first_release(), "not leading");
    let mut t = settled(deferral(ms(150)), t0);
    t.set_loss(Some(0.05));
    assert!(t.defers_first_release(), "narrow, first leader");
    t.set_loss(Some(0.20));
    assert!(!t.defers_first_release(), "sending wide");
    t.set_loss(Some(0.05));
    assert!(t.defers_first_release(), "narrow again");
    t.observe(follower, t0);
    t.observe(
        View {
            term: 3,
            ..leader(1, 1)
        },
        t0,
    );
    assert!(!t.defers_first_release(), "leading after a leader change");
    let mut off = settled(deferral(Duration::ZERO), t0);
    off.set_loss(Some(0.05));
    assert!(!off.defers_first_release(), "deferral off");
}
