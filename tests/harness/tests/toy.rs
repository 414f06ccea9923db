//! End-to-end runs of kvharness against the toy replica: a correct toy passes, each bug is caught.
//!
//! Each run lasts 2-3 s of real time. The default `cargo test` runs three of
//! them; the rest are `#[ignore]`d as slow: `cargo test -p kv-harness -- --ignored`.

use kv_harness::scenario::{Benchmarks, Event, EventKind, Tests};
use kv_harness::sim::StopReason;
use kv_harness::{run_blocking, LateDatagrams, Report, RunOptions, Scenario, Tier};

const TOY: &str = env!("CARGO_BIN_EXE_toy_replica");

/// 5 replicas, `requests` operations over 1.5 s starting at 0.5 s, 0.5 s tail.
fn short(requests: usize, mix: f64, drops: f64, events: Vec<Event>) -> Scenario {
    let s = Scenario {
        lifetime: 1.5,
        replicas: 5,
        requests,
        mix,
        drops,
        wait: 0.5,
        end_wait: 0.5,
        seed: None,
        clients: 8,
        max_packets: 20_000,
        events,
        tests: Tests {
            maximum_get_fail_fraction: 0.5,
            maximum_put_fail_fraction: 0.5,
            // Few requests per client: the first ops of each client make this noisy.
            maximum_get_generation_fail_fraction: 0.5,
            minimum_total_msgs_fraction: 0.5,
            maximum_appends_batched_fraction: None,
            benchmarks: Benchmarks {
                total_msgs: [100.0, 1000.0, 2000.0],
                failures: [0.0, 1.0, 2.0],
                duplicates: [0.0, 1.0, 2.0],
                median_latency: [0.01, 0.05, 0.5],
            },
        },
    };
    s.validate().expect("test scenario is valid");
    s
}

fn run(scenario: &Scenario, bug: &str, seed: u64) -> Report {
    run_with(scenario, bug, seed, LateDatagrams::Drop)
}

fn run_with(scenario: &Scenario, bug: &str, seed: u64, late: LateDatagrams) -> Report {
    let mut opts = RunOptions::new(TOY, seed);
    opts.env = vec![("TOY_BUG".into(), bug.into())];
    opts.late_datagrams = late;
    let data = run_blocking(scenario, &opts).expect("run completes");
    let report = Report::new(scenario, bug, "test", seed, 1, TOY, data);
    eprintln!("{}", report.render());
    report
}

fn failed(report: &Report) -> Vec<u8> {
    report.failed_checks().map(|c| c.number).collect()
}

#[test]
fn correct_toy_passes_every_check_and_is_scored() {
    let report = run(&short(80, 0.5, 0.0, vec![]), "", 11);
    assert!(report.passed, "{:?}", failed(&report));
    let d = &report.data;
    assert_eq!(d.stop, StopReason::Lifetime);
    assert_eq!(d.work.ops, 80);
    assert!(d.work.gets > 10 && d.work.puts > 10);
    assert_eq!(d.work.gets_acked + d.work.puts_acked, 80);
    // One dummy broadcast per put, N-1 copies each.
    assert_eq!(d.net.total_msgs, 4 * d.work.puts);
    let m = |name| report.metric(name).unwrap();
    assert_eq!(m("total_msgs").value, Some(4.0 * d.work.puts as f64));
    assert_eq!(m("failures").value, Some(0.0));
    assert_eq!(m("failures").tier, Tier::Full);
    assert_eq!(m("duplicates").value, Some(0.0));
    let latency = m("median_latency").value.expect("answered MIDs");
    assert!(latency > 0.0 && latency < 0.05, "median latency {latency}");
    assert_eq!(d.latencies.len() as u64, d.work.requests_sent);
}

#[test]
fn wrong_get_value_fails_check_1() {
    let report = run(&short(80, 0.5, 0.0, vec![]), "wrong-value", 12);
    assert_eq!(failed(&report), vec![1]);
    assert!(report.checks[0].detail.contains("incorrect get reply"));
}

/// 40 requests, then kill_leader after the last of them (the toy has no failover).
fn kill_leader_after_requests() -> Scenario {
    // Requests end at 2.0 s; the kill comes at 2.1 s.
    let events = vec![Event {
        kind: EventKind::KillLeader,
        time: 1.6,
    }];
    let mut s = short(40, 0.2, 0.0, events);
    s.end_wait = 1.2; // room for the exit to be seen on a loaded machine
    s
}

#[test]
fn kill_leader_terminates_the_named_leader() {
    let report = run(&kill_leader_after_requests(), "", 13);
    assert!(report.passed, "{:?}", failed(&report));
    let d = &report.data;
    assert_eq!(d.events[0].outcome, "killed 0000");
    let exit = d
        .exits
        .iter()
        .find(|x| x.replica == "0000")
        .expect("0000 exited");
    assert_eq!(exit.status, "signal 15");
    assert!(exit.time >= 2.1 && exit.time < 3.2, "exit at {}", exit.time);
    assert_eq!(d.exits.len(), 1, "no other replica exited during the run");
}

/// The killed leader's one broadcast on SIGTERM is the run's only late datagram.
fn last_words(late: LateDatagrams) -> Report {
    let report = run_with(&kill_leader_after_requests(), "last-words", 24, late);
    assert!(report.passed, "{:?}", failed(&report));
    let d = &report.data;
    assert_eq!(d.events[0].outcome, "killed 0000");
    let exit = d.exits.iter().find(|x| x.replica == "0000");
    assert_eq!(exit.map(|x| x.status.as_str()), Some("exit code 143"));
    report
}

#[test]
fn a_killed_leaders_last_words_are_delivered_under_deliver() {
    let report = last_words(LateDatagrams::Deliver);
    let d = &report.data;
    assert_eq!((d.late.delivered, d.late.ignored), (1, 0));
    // One dummy broadcast per put, plus the last words to the 4 others.
    assert_eq!(d.net.total_msgs, 4 * d.work.puts + 4);
    assert_eq!(d.net.delivered, d.net.total_msgs);
}

#[test]
#[ignore = "slow: 3.2 s of real time"]
fn a_killed_leaders_last_words_are_ignored_under_drop() {
    let report = last_words(LateDatagrams::Drop);
    let d = &report.data;
    assert_eq!((d.late.delivered, d.late.ignored), (0, 1));
    assert_eq!(d.net.total_msgs, 4 * d.work.puts);
}

#[test]
#[ignore = "slow: 2.5 s of real time"]
fn duplicate_oks_are_scored_not_errors() {
    let report = run(&short(40, 0.2, 0.0, vec![]), "dup-ok", 14);
    assert!(report.passed, "{:?}", failed(&report));
    let d = &report.data;
    assert_eq!(d.work.duplicates, d.work.puts_acked);
    assert_eq!(report.metric("duplicates").unwrap().tier, Tier::None);
}

#[test]
#[ignore = "slow: 2.5 s of real time"]
fn a_reply_after_a_redirect_fails_check_1() {
    let report = run(&short(40, 0.2, 0.0, vec![]), "redirect-then-ok", 15);
    assert_eq!(failed(&report), vec![1]);
    assert!(report.checks[0].detail.contains("second reply"));
}

#[test]
#[ignore = "slow: 2.5 s of real time"]
fn a_leader_field_naming_no_replica_is_malformed() {
    let report = run(&short(40, 0.2, 0.0, vec![]), "bad-leader", 16);
    let f = failed(&report);
    assert!(f.contains(&1) && f.contains(&2), "{f:?}");
    assert!(report.checks[0]
        .detail
        .contains("neither FFFF nor a replica id"));
}

#[test]
#[ignore = "slow: 2.5 s of real time"]
fn a_leader_that_does_not_replicate_fails_check_6() {
    let report = run(&short(40, 0.2, 0.0, vec![]), "no-replicate", 17);
    assert_eq!(failed(&report), vec![6]);
}

#[test]
#[ignore = "slow: 2.5 s of real time"]
fn a_replica_that_exits_on_its_own_fails_check_2() {
    let report = run(&short(40, 0.2, 0.0, vec![]), "die", 18);
    assert_eq!(failed(&report), vec![2]);
    assert!(report.checks[1].detail.contains("0001"));
    assert!(report.checks[1].detail.contains("exit code 3"));
}

#[test]
#[ignore = "slow: 2.5 s of real time"]
fn traffic_before_hello_marks_the_replica_dead() {
    let report = run(&short(40, 0.2, 0.0, vec![]), "late-hello", 19);
    assert!(failed(&report).contains(&2));
    assert!(report.checks[1].detail.contains("0002"));
    assert!(report.checks[1].detail.contains("before its hello"));
}

#[test]
#[ignore = "slow: 2.5 s of real time"]
fn an_empty_datagram_is_malformed_and_kills_its_sender() {
    let report = run(&short(40, 0.2, 0.0, vec![]), "empty", 20);
    let f = failed(&report);
    assert!(f.contains(&1) && f.contains(&2), "{f:?}");
    assert!(report.checks[0].detail.contains("empty datagram"));
}

#[test]
#[ignore = "slow: 2.5 s of real time"]
fn drops_hit_replica_copies_at_the_configured_rate_and_never_clients() {
    let report = run(&short(200, 0.0, 0.3, vec![]), "", 21);
    assert!(report.passed, "{:?}", failed(&report));
    let n = &report.data.net;
    let rate = n.dropped as f64 / n.total_msgs as f64;
    assert!(n.total_msgs >= 700, "{} copies", n.total_msgs);
    assert!((0.22..0.38).contains(&rate), "drop rate {rate}");
    assert_eq!(report.metric("failures").unwrap().value, Some(0.0));
}

#[test]
#[ignore = "slow: up to 2.5 s of real time"]
fn a_packet_storm_stops_the_run_early() {
    let mut s = short(100, 0.0, 0.0, vec![]);
    s.max_packets = 3000;
    let report = run(&s, "storm", 22);
    let d = &report.data;
    assert_eq!(d.stop, StopReason::PacketStorm);
    assert_eq!(d.net.total_msgs, 3000);
    assert!(d.ended_at < 2.4, "stopped at {}", d.ended_at);
    assert!(
        report.verdict().starts_with("FAIL"),
        "most requests never sent"
    );
}

#[test]
#[ignore = "slow: 2.5 s of real time"]
fn partitions_block_cross_side_copies() {
    let events = vec![
        Event {
            kind: EventKind::PartHard,
            time: 0.0,
        },
        Event {
            kind: EventKind::PartEnd,
            time: 0.75,
        },
    ];
    let report = run(&short(80, 0.2, 0.0, events), "", 23);
    assert!(report.passed, "{:?}", failed(&report));
    let n = &report.data.net;
    assert!(n.blocked > 0 && n.delivered > 0);
    assert_eq!(n.blocked + n.delivered, n.total_msgs);
}
