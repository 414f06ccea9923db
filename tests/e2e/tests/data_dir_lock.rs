//! One kvserver per data directory: a second process on a directory in use exits 2 and
//! names the directory and the holder; the lock dies with its holder, even by kill -9.

use kv_e2e::cluster::{Cluster, Spec};
use kv_e2e::wait_for;
use kv_shared::NodeId;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long a refused kvserver may take to exit (it does before binding its socket).
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(20);

fn lock_holder(c: &Cluster) -> Option<u32> {
    std::fs::read_to_string(c.data_dir(NodeId(1)).join("LOCK"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

#[test]
fn a_second_kvserver_on_a_data_dir_in_use_exits_2_naming_the_dir_and_the_holder() {
    let mut c = Cluster::prepare(Spec {
        nodes: 2,
        shards: 1,
        snapshot_threshold: None,
        replication: None,
    });
    c.spawn(NodeId(1));
    let holder = wait_for(
        "node 1 to lock its data dir",
        Duration::from_secs(20),
        || lock_holder(&c),
    );
    let data_dir = c.data_dir(NodeId(1));

    // Node 2's address is free, so only the lock can stop it.
    let mut second = Command::new(kv_e2e::bin::kvserver())
        .arg("--config")
        .arg(c.config_path())
        .arg("--node")
        .arg("2")
        .arg("--data-dir")
        .arg(&data_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the second kvserver");
    let deadline = Instant::now() + REFUSAL_TIMEOUT;
    let status = loop {
        if let Some(status) = second.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() >= deadline {
            second.kill().expect("kill the second kvserver");
            second.wait().expect("reap it");
            panic!("a second kvserver ran on a data dir in use");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut second.stderr.take().expect("piped"), &mut stderr)
        .expect("read stderr");
    assert_eq!(status.code(), Some(2), "stderr: {stderr}");
    assert!(
        stderr.contains(&data_dir.display().to_string())
            && stderr.contains(&format!("pid {holder}")),
        "the message names neither the dir nor the holder: {stderr}"
    );
    c.assert_alive(NodeId(1));

    // kill -9 leaves no stale lock: node 1 restarts on its directory.
    c.kill9(NodeId(1));
    c.spawn(NodeId(1));
    wait_for(
        "the restarted node 1 to lock its data dir",
        Duration::from_secs(20),
        || lock_holder(&c).filter(|pid| *pid != holder),
    );
    c.assert_alive(NodeId(1));
}
