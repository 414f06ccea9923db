//! Load that runs beside a test's faults and moves, and what it must show afterwards: a
//! writer of unique keys whose every acknowledged put must read back, and a
//! `kvcli bench --check` run whose history must be linearizable.

use crate::cli;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Puts per kvcli script run of the writer.
pub const WRITER_BATCH_KEYS: usize = 25;

/// A thread writing unique keys (`{prefix}-{batch}-{i}`) through kvcli scripts until
/// stopped, keeping each put that kvcli answered `OK`. Dropping it stops the thread too
/// (also while a test panics).
pub struct AckedWriter {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<(String, String)>>>,
    thread: Option<JoinHandle<()>>,
}

impl AckedWriter {
    /// Starts writing to the cluster of `config` (a cluster file).
    pub fn start(config: &str, prefix: &str) -> AckedWriter {
        let stop = Arc::new(AtomicBool::new(false));
        let acked: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
        let thread = {
            let (config, prefix) = (config.to_string(), prefix.to_string());
            let (stop, acked) = (stop.clone(), acked.clone());
            std::thread::spawn(move || {
                let mut batch = 0;
                while !stop.load(Ordering::Relaxed) {
                    let pairs: Vec<(String, String)> = (0..WRITER_BATCH_KEYS)
                        .map(|i| (format!("{prefix}-{batch}-{i}"), format!("v{batch}.{i}")))
                        .collect();
                    let script: String = pairs
                        .iter()
                        .map(|(k, v)| format!("put {k} {v}\n"))
                        .collect();
                    let run = cli::run(
                        &["--cluster", &config, "--keep-going"],
                        &script,
                        Duration::from_secs(120),
                    );
                    let lines = run.lines();
                    let mut acked = acked.lock().expect("writer lock");
                    for (i, pair) in pairs.into_iter().enumerate() {
                        if lines.get(i) == Some(&"OK") {
                            acked.push(pair);
                        }
                    }
                    batch += 1;
                }
            })
        };
        AckedWriter {
            stop,
            acked,
            thread: Some(thread),
        }
    }

    /// Stops the writer and returns the acknowledged puts.
    pub fn finish(mut self) -> Vec<(String, String)> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().expect("writer thread");
        }
        self.acked.lock().expect("writer lock").clone()
    }
}

impl Drop for AckedWriter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Reads every acknowledged put back through kvcli and panics naming the ones lost.
/// At least one batch must have been acknowledged (else the writer tested nothing).
pub fn assert_acked_read_back(config: &str, acked: &[(String, String)]) {
    assert!(
        acked.len() >= WRITER_BATCH_KEYS,
        "the writer got few acks: {}",
        acked.len()
    );
    let script: String = acked.iter().map(|(k, _)| format!("get {k}\n")).collect();
    let run = cli::run(&["--cluster", config], &script, Duration::from_secs(120));
    assert_eq!(run.code, Some(0), "read-back: {run:?}");
    let lost: Vec<String> = acked
        .iter()
        .zip(run.lines())
        .filter(|((_, v), got)| v != got)
        .map(|((k, v), got)| format!("{k}: wrote {v}, read {got}"))
        .collect();
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
    assert_eq!(run.lines().len(), acked.len());
}

/// Starts `kvcli bench --check` (8 clients, 64 keys) for `seconds` on its own thread.
pub fn start_checked_bench(config: &str, seconds: u64) -> JoinHandle<cli::Run> {
    let config = config.to_string();
    std::thread::spawn(move || {
        let duration = format!("{seconds}s");
        cli::run(
            &[
                "--cluster",
                &config,
                "bench",
                "--clients",
                "8",
                "--keys",
                "64",
                "--duration",
                &duration,
                "--check",
            ],
            "",
            Duration::from_secs(seconds + 120),
        )
    })
}

/// Waits for a bench from [`start_checked_bench`] and asserts its history linearizable.
pub fn assert_bench_linearizable(bench: JoinHandle<cli::Run>) {
    let run = bench.join().expect("bench thread");
    assert_eq!(run.code, Some(0), "bench --check: {run:?}");
    assert!(
        run.stdout.contains("check: linearizable"),
        "bench --check: {}",
        run.stdout
    );
}

/// `kvcli bench --check` runs back to back on their own thread until stopped: checked load
/// for a test whose phases take as long as they take. Each run has its own keys (kvcli
/// tags them per run), so each history is checked on its own. Dropping it stops the loop
/// after the current run (also while a test panics).
pub struct CheckedBenchLoop {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Vec<cli::Run>>>,
}

impl CheckedBenchLoop {
    /// Starts runs of `seconds` each (8 clients, 64 keys) against the cluster of `config`.
    pub fn start(config: &str, seconds: u64) -> CheckedBenchLoop {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (config, stop) = (config.to_string(), stop.clone());
            std::thread::spawn(move || {
                let mut runs = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    runs.push(start_checked_bench(&config, seconds).join().expect("bench"));
                }
                runs
            })
        };
        CheckedBenchLoop {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops after the current run; asserts that every run exited 0 with a linearizable
    /// history, and returns the runs (their reports name errors and latencies).
    pub fn finish(mut self) -> Vec<cli::Run> {
        self.stop.store(true, Ordering::Relaxed);
        let runs = self
            .thread
            .take()
            .expect("not finished yet")
            .join()
            .expect("bench loop thread");
        assert!(!runs.is_empty(), "no bench ran");
        for (i, run) in runs.iter().enumerate() {
            assert_eq!(run.code, Some(0), "bench --check run {i}: {run:?}");
            assert!(
                run.stdout.contains("check: linearizable"),
                "bench --check run {i}: {}",
                run.stdout
            );
        }
        runs
    }
}

impl Drop for CheckedBenchLoop {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
