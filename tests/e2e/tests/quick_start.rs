//! The quick start, `kvcli --local`: it starts three kvserver processes (found beside the
//! kvcli binary) from the embedded config, waits for leaders, runs what it was given, and
//! leaves no node behind; a second run finds the data of the first.
//!
//! The embedded config fixes the ports (127.0.0.1:7101-7103), so this test takes a lock
//! that every test process on the machine respects, and skips, saying why, when another
//! program holds one of those ports.

use kv_e2e::cli;
use kv_e2e::procs::{kill_with_arg_containing, pids_with_arg_containing, MachineLock};
use kv_shared::config::ClusterConfig;
use std::net::UdpSocket;
use std::time::Duration;

/// Starting three nodes, electing eight leaders and running a short script.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// Kills, when dropped (also while the test panics), every process whose command line
/// names the test's directory: kvcli and the nodes it started, which a killed kvcli would
/// otherwise leave running.
struct Reaper<'a>(&'a str);

impl Drop for Reaper<'_> {
    fn drop(&mut self) {
        let killed = kill_with_arg_containing(self.0);
        if !killed.is_empty() {
            eprintln!("quick_start: killed leftover processes {killed:?}");
        }
    }
}

/// The first port of the embedded config that something else holds, if any.
fn busy_port(config: &ClusterConfig) -> Option<std::net::SocketAddr> {
    config
        .nodes
        .iter()
        .find(|n| UdpSocket::bind(n.addr).is_err())
        .map(|n| n.addr)
}

#[test]
fn kvcli_local_starts_a_cluster_serves_a_script_and_leaves_no_node_behind() {
    let Some(_lock) = MachineLock::acquire("kv-e2e-quick-start", RUN_TIMEOUT) else {
        eprintln!("SKIPPED quick start: another test process held its lock for {RUN_TIMEOUT:?}");
        return;
    };
    let config = ClusterConfig::local_3();
    if let Some(addr) = busy_port(&config) {
        eprintln!("SKIPPED quick start: {addr} (a port of the embedded config) is in use");
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("kv-e2e-quick-start-")
        .tempdir()
        .expect("temp dir");
    let local_dir = dir.path().to_str().expect("utf-8 temp path").to_string();
    let _reaper = Reaper(&local_dir);

    let run = cli::run(
        &["--local", "--local-dir", &local_dir],
        "put quick start\nget quick\nstatus\n",
        RUN_TIMEOUT,
    );
    if run.code == Some(2) && run.stderr.contains("is another cluster running?") {
        // Taken between our check and kvcli's own: not a failure of kvcli.
        eprintln!("SKIPPED quick start: {}", run.stderr.trim_end());
        return;
    }
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(
        run.stderr.contains(&format!(
            "started a local cluster: 3 kvserver nodes, data and logs in {local_dir}"
        )) && run.stderr.contains("all 8 shards have a leader"),
        "{}",
        run.stderr
    );
    let lines = run.lines();
    assert_eq!(lines[..2], ["OK", "start"], "{run:?}");
    assert!(
        lines[2].starts_with("SHARD  LEADER"),
        "the status table: {run:?}"
    );
    for (i, row) in lines[3..3 + config.shards as usize].iter().enumerate() {
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(cells[0], format!("s{i}"), "{row}");
        assert!(["n1", "n2", "n3"].contains(&cells[1]), "a leader: {row}");
    }
    let ups = lines
        .iter()
        .filter(|l| l.split_whitespace().nth(2) == Some("up"))
        .count();
    assert_eq!(ups, 3, "three nodes up: {run:?}");

    // kvcli stopped its nodes before it exited: none is left, the ports are free.
    assert_eq!(pids_with_arg_containing(&local_dir), Vec::<u32>::new());
    assert_eq!(busy_port(&config), None, "the ports are free again");
    for n in 1..=3 {
        let node_dir = dir.path().join(format!("node-{n}"));
        assert!(
            node_dir.is_dir(),
            "{} holds node {n}'s data",
            node_dir.display()
        );
        let log = dir.path().join(format!("node-{n}.log"));
        assert!(log.is_file(), "{} is node {n}'s log", log.display());
    }

    // Again on the same directory: the nodes recover the data and serve it.
    let run = cli::run(
        &["--local", "--local-dir", &local_dir, "get", "quick"],
        "",
        RUN_TIMEOUT,
    );
    assert_eq!(
        (run.code, run.stdout.as_str()),
        (Some(0), "start\n"),
        "{run:?}"
    );
    assert_eq!(pids_with_arg_containing(&local_dir), Vec::<u32>::new());
    assert_eq!(busy_port(&config), None, "the ports are free again");
}
