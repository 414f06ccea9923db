//! "Persist before you promise" through the real runtime: three in-process nodes whose
//! stores record when a write holding a marked value became durable, and a client put of
//! that value must not be answered before a majority's fsync of it returned. The
//! followers' fsyncs are made slow, so an acknowledgement sent ahead of its fsync (by the
//! disk thread's path or by a write the event loop makes itself) shows as an answer that
//! came early with fewer than two durable copies.

use kv_e2e::client::Client;
use kv_node::DiskOp;
use kv_server::auth::NodeKeys;
use kv_server::disk::{LogStore, StoreError};
use kv_server::{run_with_store, ServerError, ServerOptions};
use kv_shared::auth::{ClientKey, Key, Permission, Protection};
use kv_shared::config::ClusterConfig;
use kv_shared::proto::Role;
use kv_shared::{NodeId, ShardId};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;
use tokio::sync::oneshot;

const CLUSTER_ID: u64 = 4343;
/// The value whose durability the stores watch for.
const MARKER: &str = "durability-marker-5b2e9c0d41a7";
/// How long a follower's fsync takes once the test has found the leader.
const SLOW_SYNC: Duration = Duration::from_millis(300);

/// What one node's store saw of the marked value.
#[derive(Default)]
struct Seen {
    /// Appended (not yet durable until the next sync returns).
    written: AtomicBool,
    /// A sync that began after the append returned.
    durable: AtomicBool,
    /// Milliseconds each sync sleeps before syncing.
    slow_ms: AtomicU64,
}

/// Real storage that notes when the marked value became durable.
struct Ledger {
    inner: kv_storage::Storage<kv_storage::RealDisk>,
    seen: Arc<Seen>,
}

impl LogStore for Ledger {
    fn execute(&mut self, op: &DiskOp) -> Result<(), StoreError> {
        if let DiskOp::Append(r) = op {
            self.note(r);
        }
        self.inner.execute(op)
    }

    fn append_all(&mut self, records: &[&kv_storage::Record]) -> Result<(), (usize, StoreError)> {
        records.iter().for_each(|r| self.note(r));
        LogStore::append_all(&mut self.inner, records)
    }

    fn sync(&mut self) -> Result<(), StoreError> {
        let written = self.seen.written.load(Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(
            self.seen.slow_ms.load(Ordering::SeqCst),
        ));
        LogStore::sync(&mut self.inner)?;
        if written {
            self.seen.durable.store(true, Ordering::SeqCst);
        }
        Ok(())
    }
}

impl Ledger {
    fn note(&self, record: &kv_storage::Record) {
        let marker = MARKER.as_bytes();
        if record.payload.windows(marker.len()).any(|w| w == marker) {
            self.seen.written.store(true, Ordering::SeqCst);
        }
    }
}

fn tester() -> ClientKey {
    ClientKey {
        name: "tester".into(),
        permission: Permission::ReadWrite,
        key: Key::from_bytes([2; 32]),
    }
}

struct Node {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), ServerError>>,
    seen: Arc<Seen>,
}

#[test]
fn a_put_is_answered_only_after_a_majority_synced_it() {
    // Worker threads enough that a node blocked in a slow fsync holds up no other.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(6)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let sockets: Vec<UdpSocket> = (0..3)
        .map(|_| rt.block_on(UdpSocket::bind("127.0.0.1:0")).expect("bind"))
        .collect();
    let addrs: Vec<_> = sockets.iter().map(|s| s.local_addr().unwrap()).collect();
    let mut toml = format!("cluster_id = {CLUSTER_ID}\nshards = 1\n");
    for (i, addr) in addrs.iter().enumerate() {
        toml += &format!("[[nodes]]\nid = {}\naddr = \"{addr}\"\n", i + 1);
    }
    let cluster = ClusterConfig::from_toml(&toml).expect("valid cluster file");
    let mut nodes = Vec::new();
    for (i, socket) in sockets.into_iter().enumerate() {
        let data_dir = dir.path().join(format!("node-{}", i + 1));
        let opts = ServerOptions {
            cluster: cluster.clone(),
            keys: NodeKeys::from_keys(
                vec![Key::from_bytes([1; 32])],
                Protection::Mac,
                vec![("tester.key".into(), tester())],
            )
            .expect("keys"),
            node: NodeId(i as u64 + 1),
            data_dir: data_dir.clone(),
            snapshot_threshold_entries: None,
            seed: 11 + i as u64,
            redis_addr: None,
            http_addr: None,
            join: None,
        };
        let (inner, recovered) = kv_server::server::open_storage(data_dir).expect("open");
        let seen = Arc::new(Seen::default());
        let store = Ledger {
            inner,
            seen: seen.clone(),
        };
        let (stop, shutdown) = oneshot::channel::<()>();
        let task = rt.spawn(run_with_store(socket, opts, store, recovered, async move {
            let _ = shutdown.await;
        }));
        nodes.push(Node { stop, task, seen });
    }
    let ids: Vec<_> = (1..=3).map(NodeId).zip(addrs.iter().copied()).collect();
    let mut client = Client::new(CLUSTER_ID, ids, 1, tester());
    client.put("warm-up", "elects a leader and opens the session");
    let leads = |client: &mut Client, n: u64| {
        client.status(NodeId(n)).is_some_and(|s| {
            s.shards
                .iter()
                .any(|r| r.shard == ShardId(0) && r.role == Role::Leader)
        })
    };
    let leader = (1..=3)
        .find(|&n| leads(&mut client, n))
        .expect("shard 0 has a leader");
    for (i, node) in nodes.iter().enumerate() {
        if i as u64 + 1 != leader {
            let ms = SLOW_SYNC.as_millis() as u64;
            node.seen.slow_ms.store(ms, Ordering::SeqCst);
        }
    }

    let started = Instant::now();
    client.put("k", MARKER);
    let durable = nodes
        .iter()
        .filter(|n| n.seen.durable.load(Ordering::SeqCst))
        .count();
    let took = started.elapsed();
    assert!(
        durable >= 2,
        "the put was answered after {took:?} with the value durable on {durable} of 3 nodes: \
         an acknowledgement left before the fsync it depends on"
    );
    assert!(
        took >= SLOW_SYNC,
        "answered after {took:?}, before any follower's fsync ended"
    );

    // The followers' writes were made by their event loops (their disk threads were
    // idle), so that path is the one checked above. Syncs are fast again first: a loop
    // asleep in a 300 ms sync misses a status request's single 300 ms attempt.
    for node in &nodes {
        node.seen.slow_ms.store(0, Ordering::SeqCst);
    }
    for n in (1..=3).filter(|&n| n != leader) {
        let status = (0..20)
            .find_map(|_| client.status(NodeId(n)))
            .expect("follower status within 20 attempts");
        let here = status
            .counters
            .iter()
            .find(|(name, _)| name == "raftkv_disk_writes_here_total")
            .map(|(_, v)| *v);
        assert!(here > Some(0), "node {n} wrote nothing itself: {here:?}");
    }
    for node in nodes {
        node.stop.send(()).expect("node still running");
        rt.block_on(node.task)
            .expect("node task")
            .expect("clean shutdown returns Ok");
    }
}
