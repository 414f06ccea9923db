//! `kvserver --redis HOST:0 --http HOST:0`: the kernel picks the ports, and the start-up
//! log names the ports it picked (not `:0`), so an operator or a script can reach them.

use kv_e2e::cli::KillOnDrop;
use kv_e2e::cluster::{Cluster, Spec};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The `addr=` of the first log line containing `what`, once the log has one.
fn logged_addr(log: &std::path::Path, what: &str) -> Option<SocketAddr> {
    let text = std::fs::read_to_string(log).ok()?;
    let line = text.lines().find(|l| l.contains(what))?;
    let addr = line.split("addr=").nth(1)?.split_whitespace().next()?;
    Some(addr.parse().expect("the logged address parses"))
}

/// Sends `request` on a fresh connection and returns what comes back first.
fn ask(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).expect("connect to the logged address");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(request).unwrap();
    let mut buf = [0u8; 256];
    let n = s.read(&mut buf).expect("an answer");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn ports_the_kernel_picked_are_the_ones_logged() {
    // Written but not started: this test starts the one node itself, with port 0.
    let c = Cluster::prepare(Spec {
        nodes: 1,
        shards: 1,
        ..Spec::default()
    });
    let log = c.dir().join("node-1.log");
    let stderr = std::fs::File::create(&log).expect("create the log");
    let _node = KillOnDrop(
        Command::new(kv_e2e::bin::kvserver())
            .arg("--config")
            .arg(c.config_path())
            .args(["--node", "1", "--log-level", "info"])
            .args(["--redis", "127.0.0.1:0", "--http", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn kvserver"),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let (redis, http) = loop {
        let redis = logged_addr(&log, "serving the Redis protocol");
        let http = logged_addr(&log, "serving /metrics and /health");
        if let (Some(r), Some(h)) = (redis, http) {
            break (r, h);
        }
        assert!(
            Instant::now() < deadline,
            "no serving lines in:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(redis.port() != 0 && http.port() != 0, "{redis} {http}");
    assert_eq!(ask(redis, b"PING\r\n"), "+PONG\r\n");
    let health = ask(
        http,
        b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(health.starts_with("HTTP/1.1 "), "{health}");
}
