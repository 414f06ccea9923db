//! The shipped scenario files load, and the course ones match the course table.

use std::path::PathBuf;

use kv_harness::scenario::EventKind;
use kv_harness::Scenario;

fn load(name: &str) -> Scenario {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../configs/course");
    Scenario::load(&dir.join(format!("{name}.json"))).unwrap()
}

#[test]
fn every_file_loads() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../configs/course");
    let mut count = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        Scenario::load(&path).unwrap_or_else(|e| panic!("{e}"));
        count += 1;
    }
    assert_eq!(count, 22, "17 course rows and 5 of our own");
}

#[test]
fn course_rows_match_the_table() {
    // (name, requests, mix, drops, events, total_msgs, failures, duplicates, latency)
    type Row = (
        &'static str,
        usize,
        f64,
        f64,
        &'static [(EventKind, f64)],
        [f64; 3],
        [f64; 3],
        [f64; 3],
        [f64; 3],
    );
    use EventKind::*;
    let rows: &[Row] = &[
        (
            "simple-1",
            500,
            0.8,
            0.0,
            &[],
            [1200.0, 3000.0, 5000.0],
            [0.0, 1.0, 2.0],
            [0.0, 2.0, 5.0],
            [0.0004, 0.002, 0.05],
        ),
        (
            "crash-4",
            300,
            0.2,
            0.0,
            &[(KillLeader, 8.0), (KillLeader, 16.0)],
            [1800.0, 4000.0, 5000.0],
            [1.0, 4.0, 10.0],
            [0.0, 2.0, 10.0],
            [0.00015, 0.005, 0.05],
        ),
        (
            "partition-2",
            300,
            0.2,
            0.0,
            &[
                (PartEasy, 5.0),
                (PartEnd, 10.0),
                (PartEasy, 18.0),
                (PartEnd, 23.0),
            ],
            [1800.0, 4000.0, 5000.0],
            [0.0, 1.0, 5.0],
            [0.0, 2.0, 5.0],
            [0.0002, 0.005, 0.05],
        ),
        (
            "advanced-4",
            300,
            0.2,
            0.1,
            &[
                (PartHard, 5.0),
                (PartEnd, 8.0),
                (PartHard, 12.0),
                (PartEnd, 15.0),
                (PartHard, 19.0),
                (PartEnd, 21.0),
                (KillLeader, 25.0),
            ],
            [1000.0, 4000.0, 5000.0],
            [1.0, 10.0, 100.0],
            [0.0, 6.0, 10.0],
            [0.0002, 0.005, 0.1],
        ),
    ];
    for (name, requests, mix, drops, events, tm, fa, du, la) in rows {
        let s = load(name);
        assert_eq!(
            (s.replicas, s.requests, s.mix, s.drops),
            (5, *requests, *mix, *drops),
            "{name}"
        );
        assert_eq!(
            (s.lifetime, s.wait, s.clients, s.max_packets),
            (30.0, 5.0, 8, 20_000),
            "{name}"
        );
        let got: Vec<(EventKind, f64)> = s.events.iter().map(|e| (e.kind, e.time)).collect();
        assert_eq!(got, events.to_vec(), "{name}");
        let b = &s.tests.benchmarks;
        assert_eq!(
            (b.total_msgs, b.failures, b.duplicates, b.median_latency),
            (*tm, *fa, *du, *la),
            "{name}"
        );
        let run_secs = s.end_time().as_secs_f64();
        assert!(
            (37.0..=45.0).contains(&run_secs),
            "{name} runs {run_secs} s"
        );
    }
    assert_eq!(load("hard-7-replicas").replicas, 7);
    assert_eq!(load("hard-drops-30").drops, 0.3);
}
