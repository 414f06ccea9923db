//! End to end: a leader killed right after answering a put says its last words, so its
//! successor does not answer that put a second time. Needs a harness that forwards what a
//! replica sends after its SIGTERM (kv-harness's `LateDatagrams::Deliver`).

mod common;

use kv_harness::LateDatagrams;

/// No loss, a put every 75 ms (only puts: too few requests for every client to have a
/// key to get), and the leader killed 25 ms after a request: by then it has answered the
/// put (about a millisecond after it arrives), but its next datagram to the followers
/// would only leave with the next put. The end wait covers the election and the
/// successor's hold on the killed leader's last puts (up to 4 s, doubt.rs), after which
/// an unreported put is answered again.
fn scenario() -> String {
    common::LeaderKill {
        requests: 80,
        mix: 0.0,
        drops: 0.0,
        end_wait: 8.0,
        kill_at: 3.025,
        failures: [0, 2, 5],
    }
    .json()
}

#[test]
fn a_killed_leaders_last_words_spare_its_successor_a_duplicate() {
    let report = common::run_inline(
        "last-words",
        &scenario(),
        0x1A57_0BD5,
        LateDatagrams::Deliver,
    );
    assert!(report.passed, "{}", report.render());
    assert_eq!(report.data.work.duplicates, 0, "{}", report.render());
    assert_eq!(
        report.data.unanswered_puts + report.data.unanswered_gets,
        0,
        "{}",
        report.render()
    );
}
