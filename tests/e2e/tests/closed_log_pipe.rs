//! A node whose stderr is a pipe nobody reads any more (`kvserver ... 2>&1 | tee log`
//! after tee died) keeps serving: a log line it cannot write is dropped, not a reason to
//! stop.

use kv_e2e::cli::KillOnDrop;
use kv_e2e::cluster::{Cluster, Spec};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn a_node_whose_log_pipe_closed_keeps_serving() {
    // Written but not started: this test starts the one node itself.
    let c = Cluster::prepare(Spec {
        nodes: 1,
        shards: 2,
        ..Spec::default()
    });
    let mut node = KillOnDrop(
        Command::new(kv_e2e::bin::kvserver())
            .arg("--config")
            .arg(c.config_path())
            .args(["--node", "1", "--log-level", "info"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .env("RUST_BACKTRACE", "0")
            .spawn()
            .expect("spawn kvserver"),
    );
    // The reader goes away at once: the node's start-up lines and every later one (its
    // shards' elections, registration) meet a closed pipe.
    drop(node.0.stderr.take());
    let config = c.config_path().to_str().expect("utf-8 path").to_string();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        assert_eq!(
            node.0.try_wait().expect("poll the node"),
            None,
            "the node exited once its log pipe closed"
        );
        let put = kv_e2e::cli::with_cluster(&config, &["put", "k", "v"], Duration::from_secs(10));
        if put.code == Some(0) {
            break;
        }
        assert!(Instant::now() < deadline, "the node never served: {put:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let get = kv_e2e::cli::with_cluster(&config, &["get", "k"], Duration::from_secs(10));
    assert_eq!((get.code, get.stdout.trim()), (Some(0), "v"), "{get:?}");
    assert_eq!(node.0.try_wait().expect("poll the node"), None);
}
