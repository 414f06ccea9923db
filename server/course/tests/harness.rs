//! End to end: five real 3700kvstore processes under our course harness (kv-harness) on a
//! short scenario with drops and a leader kill; every correctness check must pass.

mod common;

use kv_harness::LateDatagrams;

/// Short enough for CI (~16 s), with the faults that exercise redirects, re-election and
/// retransmission: 5% drops and a kill of the leader while clients are active. The end wait
/// covers an election plus the doubt hold (up to 4 s, `doubt.rs`): answers a new leader
/// owes for the killed leader's last puts may come that late, and the course's own kill
/// scenarios leave more than that after the kill.
fn scenario() -> String {
    common::LeaderKill {
        requests: 120,
        mix: 0.5,
        drops: 0.05,
        end_wait: 7.0,
        kill_at: 3.0,
        failures: [1, 5, 20],
    }
    .json()
}

#[test]
fn short_scenario_with_a_leader_kill_passes_every_check() {
    let report = common::run_inline("course-e2e", &scenario(), 0xC0DE_5EED, LateDatagrams::Drop);
    assert!(report.passed, "{}", report.render());
    assert!(
        report.data.unanswered_puts + report.data.unanswered_gets <= 2,
        "{}",
        report.render()
    );
}
