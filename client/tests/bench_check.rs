//! `bench` against the fake cluster: the report adds up, and `--check` passes on a correct
//! cluster but catches a planted stale read.

mod common;

use common::FakeCluster;
use kv_shared::linearizability::{KvOp, KvResult, Verdict};
use kvcli::bench::{check_history, run, BenchOptions, Dist};
use kvcli::Client;
use std::time::Duration;

fn options(ops: u64, keys: u64) -> BenchOptions {
    BenchOptions {
        clients: 8,
        duration: None,
        ops: Some(ops),
        read_fraction: 0.5,
        keys,
        key_size: 12,
        value_size: 24,
        dist: Dist::Uniform,
        stale_reads: false,
        record: true,
        seed: 3,
        preload: false,
        key_set: None,
    }
}

#[tokio::test]
async fn a_correct_cluster_passes_the_check_and_the_report_adds_up() {
    let fake = FakeCluster::start(3, 4, Some(2));
    let client = Client::connect(fake.options()).await.unwrap();
    let r = run(&client, options(1500, 10), |_| {}).await;
    let rep = &r.report;
    assert_eq!(rep.ops, 1500);
    assert_eq!(rep.reads + rep.writes, 1500);
    assert_eq!(rep.errors, 0);
    assert_eq!(rep.ops_per_shard.iter().sum::<u64>(), 1500);
    assert_eq!(rep.ops_per_shard.len(), 4);
    assert!(
        rep.latency.p50_us > 0
            && rep.latency.p50_us <= rep.latency.p99_us
            && rep.latency.p99_us <= rep.latency.max_us
    );
    assert!(rep.client.datagrams_sent <= rep.client.requests_sent);
    assert_eq!(r.history.len(), 1500);
    let writes_applied = fake.ctl().applied.len() as u64;
    assert_eq!(writes_applied, rep.writes);
    let outcome = check_history(&r.history, Default::default()).unwrap();
    assert_eq!(outcome.verdict, Verdict::Linearizable);
    assert_eq!(outcome.checked, 1500);
}

#[tokio::test]
async fn the_check_catches_a_planted_stale_read() {
    let fake = FakeCluster::start(1, 2, Some(1));
    let client = Client::connect(fake.options()).await.unwrap();
    fake.ctl().stale_reads = 1;
    // Few clients over few keys: a session often reads a key it wrote last, which is when
    // the fake plants its stale read (see `Ctl::prev`).
    let mut o = options(2000, 20);
    o.clients = 4;
    let r = run(&client, o, |_| {}).await;
    assert_eq!(
        fake.ctl().stale_served,
        1,
        "the fake had a chance to serve its stale read"
    );
    let outcome = check_history(&r.history, Default::default()).unwrap();
    let Verdict::NotLinearizable {
        minimal_history,
        explanation,
        ..
    } = &outcome.verdict
    else {
        panic!("a stale read went unnoticed: {:?}", outcome.verdict);
    };
    assert!(
        minimal_history
            .iter()
            .any(|op| op.op == KvOp::Get && matches!(op.result, KvResult::Value(_))),
        "the failing history names a read: {minimal_history:?}"
    );
    assert!(
        minimal_history.len() <= 4,
        "shrunk to a few operations: {minimal_history:?}"
    );
    let text = kvcli::bench::render_check(&outcome);
    assert!(text.contains("NOT linearizable"), "{text}");
    assert!(!explanation.is_empty());
}

#[tokio::test]
async fn errors_are_counted_by_kind_and_unknown_writes_recorded() {
    let fake = FakeCluster::start(1, 1, Some(1));
    let mut opts = fake.options();
    opts.unavailable_after = Duration::from_millis(150);
    let client = Client::connect(opts).await.unwrap();
    fake.ctl().silent = true;
    let mut o = options(4, 3);
    o.clients = 2;
    o.read_fraction = 0.0;
    let r = run(&client, o, |_| {}).await;
    assert_eq!(r.report.errors, 4);
    assert_eq!(r.report.errors_by_kind.get("no-node-answered"), Some(&4));
    assert!(r
        .history
        .iter()
        .all(|h| h.outcome == kvcli::history::Outcome::Unknown));
    // Unknown writes never make a history fail.
    assert!(check_history(&r.history, Default::default())
        .unwrap()
        .verdict
        .is_linearizable());
}

/// Two checked runs in a row on one cluster, with the same options and seed: the second
/// must not read the first one's values and take them for a violation.
#[tokio::test]
async fn bench_check_twice_on_one_cluster_is_linearizable_both_times() {
    let fake = FakeCluster::start(3, 4, Some(2));
    let client = Client::connect(fake.options()).await.unwrap();
    for run_number in 1..=2 {
        let r = run(&client, options(600, 10), |_| {}).await;
        assert_eq!(r.report.errors, 0);
        let outcome = check_history(&r.history, Default::default()).unwrap();
        assert_eq!(
            outcome.verdict,
            Verdict::Linearizable,
            "run {run_number} on a cluster that already holds data"
        );
    }
}

/// A node that refuses writes (kvserver on a full disk): the refusals are errors named
/// after the node's reason, and throughput counts only what succeeded.
#[tokio::test]
async fn refused_writes_are_errors_named_by_the_node_and_not_throughput() {
    let fake = FakeCluster::start(1, 2, Some(1));
    let client = Client::connect(fake.options()).await.unwrap();
    fake.ctl().refuse_writes = Some("disk full".into());
    let r = run(&client, options(400, 10), |_| {}).await;
    let rep = &r.report;
    assert!(rep.errors > 0, "some writes were refused");
    assert_eq!(rep.errors_by_kind.get("disk-full"), Some(&rep.errors));
    assert_eq!(rep.writes, 0, "no write succeeded");
    assert_eq!(rep.ops, rep.reads);
    assert_eq!(rep.ops + rep.errors, 400);
    assert_eq!(rep.ops_per_shard.iter().sum::<u64>(), rep.ops);
    let ops_per_s_of_successes = rep.ops as f64 / rep.elapsed_s;
    assert!(
        (rep.ops_per_s - ops_per_s_of_successes).abs() < 1e-6,
        "throughput {} counts more than the {} successes",
        rep.ops_per_s,
        rep.ops
    );
    let text = kvcli::bench::render_report(rep);
    assert!(text.contains("disk-full"), "{text}");
    assert!(fake.ctl().applied.is_empty());
}

/// `--preload` writes each key of the key space exactly once, with values of the asked
/// size, and stops there: no reads, whatever `ops` and the read fraction say.
#[tokio::test]
async fn a_preload_writes_every_key_once_and_stops() {
    let fake = FakeCluster::start(3, 4, Some(2));
    let client = Client::connect(fake.options()).await.unwrap();
    let mut o = options(10, 500);
    o.preload = true;
    o.value_size = 100;
    o.read_fraction = 0.9;
    let r = run(&client, o, |_| {}).await;
    let rep = &r.report;
    assert_eq!((rep.writes, rep.reads, rep.errors), (500, 0, 0));
    assert_eq!(rep.ops_per_shard.iter().sum::<u64>(), 500);
    let ctl = fake.ctl();
    assert_eq!(ctl.applied.len(), 500, "one write per key");
    assert_eq!(ctl.data.len(), 500, "every key of the space holds a value");
    assert!(ctl.data.values().all(|v| v.len() == 100));
    let mut numbers: Vec<u64> = ctl
        .data
        .keys()
        .map(|k| {
            let k = std::str::from_utf8(k).unwrap();
            k.rsplit_once('-').unwrap().1.parse().unwrap()
        })
        .collect();
    numbers.sort_unstable();
    assert_eq!(numbers, (0..500).collect::<Vec<u64>>());
    drop(ctl);
    let text = kvcli::bench::render_report(rep);
    assert!(text.contains("preload"), "{text}");
    assert!(check_history(&r.history, Default::default())
        .unwrap()
        .verdict
        .is_linearizable());
}

/// A run with `key_set` reads what an earlier run with the same set wrote (the sweep's
/// gets read the values its puts wrote); a run without one names its keys afresh and
/// finds nothing.
#[tokio::test]
async fn a_named_key_set_is_read_by_a_later_run_and_a_fresh_one_is_not() {
    let fake = FakeCluster::start(3, 4, Some(2));
    let client = Client::connect(fake.options()).await.unwrap();
    let mut preload = options(10, 200);
    preload.preload = true;
    preload.key_set = Some("s1".into());
    let r = run(&client, preload, |_| {}).await;
    assert_eq!((r.report.writes, r.report.errors), (200, 0));
    let reads = |key_set: Option<&str>| {
        let mut o = options(400, 200);
        o.read_fraction = 1.0;
        o.record = false;
        o.key_set = key_set.map(String::from);
        o
    };
    let named = run(&client, reads(Some("s1")), |_| {}).await.report;
    assert_eq!((named.reads, named.errors), (400, 0));
    assert_eq!(named.not_found, 0, "every key of the set was written");
    let fresh = run(&client, reads(None), |_| {}).await.report;
    assert_eq!(fresh.not_found, 400, "a fresh tag's keys are all absent");
}
