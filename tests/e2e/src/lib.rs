//! End-to-end tests that start real kvserver and kvcli processes on loopback.
//!
//! This library is the tests' support: it builds (or finds) the `kvserver` binary, runs a
//! cluster of real processes on free loopback ports with temp data directories, kills
//! them all on drop even when a test panics, and talks to them with a small blocking
//! client. The tests themselves live in `tests/`.
//!
//! - [`bin`]: locating and building `kvserver` and `kvcli`.
//! - [`cluster`]: [`cluster::Cluster`], the processes, their files and their logs.
//! - [`client`]: [`client::Client`], requests with leader redirects and retries.
//! - [`wal`]: finding and damaging WAL segments for the recovery tests.
//! - [`cli`]: running the real `kvcli` binary with a script on stdin, under a deadline.
//! - [`elastic`]: joining nodes on other loopback addresses, and judging from `kvcli
//!   status` whether replicas and leaders are spread within one of the mean.
//! - [`load`]: load beside a test (a writer of unique keys, `kvcli bench --check`) and
//!   the checks of what it saw.
//! - [`ports`]: free ports below the kernel's ephemeral range, each handed out once.
//! - [`pty`]: [`pty::PtyChild`], a program on a pseudo-terminal, for the REPL tests.
//! - [`procs`]: finding and killing processes by their command line, and a cross-process
//!   lock, for the quick-start test whose `kvcli --local` starts nodes of its own.

pub mod bin;
pub mod cli;
pub mod client;
pub mod cluster;
pub mod elastic;
pub mod load;
pub mod ports;
pub mod procs;
pub mod pty;
pub mod wal;

use std::time::{Duration, Instant};

/// Polls `f` every 50 ms until it returns `Some`, or panics with `what` after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `per_shard` keys (named `{prefix}-N`) for each of `shards` shards, in shard order.
pub fn keys_on_every_shard(prefix: &str, shards: u32, per_shard: usize) -> Vec<String> {
    let mut by_shard: Vec<Vec<String>> = vec![Vec::new(); shards as usize];
    let mut i = 0u64;
    while by_shard.iter().any(|k| k.len() < per_shard) {
        let key = format!("{prefix}-{i}");
        let s = kv_shared::shard::shard_for_key(key.as_bytes(), shards).0 as usize;
        if by_shard[s].len() < per_shard {
            by_shard[s].push(key);
        }
        i += 1;
    }
    by_shard.into_iter().flatten().collect()
}
