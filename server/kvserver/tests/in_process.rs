//! The runtime run in-process through its library entry points (`run`, `run_with_store`)
//! on a port-0 socket: a clean shutdown keeps what was acknowledged, a full disk makes
//! the node refuse writes while it keeps serving reads, until space frees up, a kvcli
//! client follows its node across a restart, and a write the Redis gateway hands to its
//! node's core and then retries through its cluster client is applied once.

use kv_e2e::client::{CallError, Client};
use kv_node::DiskOp;
use kv_server::auth::NodeKeys;
use kv_server::disk::{LogStore, StoreError};
use kv_server::{run, run_with_store, ServerError, ServerOptions};
use kv_shared::auth::{ClientKey, Key, Permission, Protection};
use kv_shared::config::ClusterConfig;
use kv_shared::proto::Op;
use kv_shared::NodeId;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::sync::oneshot;

const CLUSTER_ID: u64 = 4242;
const SHARDS: u32 = 4;

/// A one-node cluster on a socket bound to port 0.
fn one_node(rt: &tokio::runtime::Runtime, data_dir: &Path) -> (UdpSocket, ServerOptions) {
    one_node_at(rt, data_dir, "127.0.0.1:0".parse().expect("address"))
}

/// A one-node cluster on a socket bound to `bind`.
fn one_node_at(
    rt: &tokio::runtime::Runtime,
    data_dir: &Path,
    bind: SocketAddr,
) -> (UdpSocket, ServerOptions) {
    let socket = rt.block_on(UdpSocket::bind(bind)).expect("bind");
    let addr = socket.local_addr().expect("local addr");
    let toml = format!(
        "cluster_id = {CLUSTER_ID}\nshards = {SHARDS}\n[[nodes]]\nid = 1\naddr = \"{addr}\"\n"
    );
    let keys = NodeKeys::from_keys(
        vec![Key::from_bytes([1; 32])],
        Protection::Mac,
        vec![("tester.key".into(), tester())],
    )
    .expect("keys");
    let opts = ServerOptions {
        cluster: ClusterConfig::from_toml(&toml).expect("valid cluster file"),
        keys,
        node: NodeId(1),
        data_dir: data_dir.to_path_buf(),
        snapshot_threshold_entries: None,
        seed: 7,
        redis_addr: None,
        http_addr: None,
        join: None,
    };
    (socket, opts)
}

/// The one client the node accepts.
fn tester() -> ClientKey {
    ClientKey {
        name: "tester".into(),
        permission: Permission::ReadWrite,
        key: Key::from_bytes([2; 32]),
    }
}

fn client(addr: SocketAddr) -> Client {
    Client::new(CLUSTER_ID, vec![(NodeId(1), addr)], SHARDS, tester())
}

fn shutdown_pair() -> (oneshot::Sender<()>, impl Future<Output = ()>) {
    let (tx, rx) = oneshot::channel::<()>();
    (tx, async move {
        let _ = rx.await;
    })
}

/// Stops a node whose task waits on `stop`'s [`shutdown_pair`] future, and checks that it
/// shut down cleanly.
fn stop_node(
    rt: &tokio::runtime::Runtime,
    stop: oneshot::Sender<()>,
    node: tokio::task::JoinHandle<Result<(), ServerError>>,
) {
    stop.send(()).expect("node still running");
    rt.block_on(node)
        .expect("node task")
        .expect("clean shutdown returns Ok");
}

#[test]
fn a_clean_shutdown_keeps_acknowledged_writes_for_the_next_run() {
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    for round in 0..2 {
        let (socket, opts) = one_node(&rt, dir.path());
        let addr = socket.local_addr().unwrap();
        let (stop, shutdown) = shutdown_pair();
        let node = rt.spawn(run(socket, opts, shutdown));
        let mut c = client(addr);
        if round == 0 {
            for i in 0..20 {
                c.put(&format!("k{i}"), &format!("v{i}"));
            }
        } else {
            for i in 0..20 {
                assert_eq!(
                    c.get(&format!("k{i}")),
                    Some(format!("v{i}")),
                    "after restart"
                );
            }
        }
        stop_node(&rt, stop, node);
    }
}

/// Real storage whose disk can be made to look full.
struct Fillable {
    inner: kv_storage::Storage<kv_storage::RealDisk>,
    full: Arc<AtomicBool>,
}

fn simulated_full() -> kv_storage::StorageError {
    kv_storage::StorageError::DiskFull {
        file: "wal-test (simulated)".into(),
    }
}

impl LogStore for Fillable {
    fn execute(&mut self, op: &DiskOp) -> Result<(), StoreError> {
        if self.full.load(Ordering::SeqCst) {
            return Err(StoreError::Full(simulated_full()));
        }
        self.inner.execute(op)
    }

    fn append_all(&mut self, records: &[&kv_storage::Record]) -> Result<(), (usize, StoreError)> {
        if self.full.load(Ordering::SeqCst) {
            return Err((0, StoreError::Full(simulated_full())));
        }
        LogStore::append_all(&mut self.inner, records)
    }

    fn sync(&mut self) -> Result<(), StoreError> {
        LogStore::sync(&mut self.inner)
    }
}

#[test]
fn a_full_disk_refuses_writes_serves_reads_and_recovers_when_space_frees_up() {
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let (socket, opts) = one_node(&rt, dir.path());
    let addr = socket.local_addr().unwrap();
    let (inner, recovered) = kv_server::server::open_storage(opts.data_dir.clone()).expect("open");
    let full = Arc::new(AtomicBool::new(false));
    let store = Fillable {
        inner,
        full: full.clone(),
    };
    let (stop, shutdown) = shutdown_pair();
    let node = rt.spawn(run_with_store(socket, opts, store, recovered, shutdown));
    let mut c = client(addr);
    c.put("before", "1");

    full.store(true, Ordering::SeqCst);
    let refused = c.call_within(
        Op::Put {
            key: "during".into(),
            value: "2".into(),
        },
        Duration::from_secs(4),
    );
    match refused {
        Err(CallError::GaveUp(last)) => assert!(last.contains("disk full"), "{last}"),
        other => panic!("a write on a full disk must not succeed: {other:?}"),
    }
    assert_eq!(c.get("before"), Some("1".into()), "reads are still served");

    full.store(false, Ordering::SeqCst);
    // The stalled write is retried within DISK_FULL_RETRY; then writes are accepted.
    c.put("after", "3");
    assert_eq!(c.get("after"), Some("3".into()));
    stop_node(&rt, stop, node);
}

/// The restarted node (same address, same data, a new incarnation) knows nothing of the
/// client: it refuses the client's next requests, which echo the ticket the node issued
/// before, and answers them with a hello carrying a new ticket; the client's retries echo
/// the new one and are served.
#[test]
fn a_kvcli_client_follows_its_node_across_a_restart() {
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let (socket, opts) = one_node(&rt, dir.path());
    let addr = socket.local_addr().unwrap();
    let cluster = opts.cluster.clone();
    let (stop, shutdown) = shutdown_pair();
    let node = rt.spawn(run(socket, opts, shutdown));
    let options = kvcli::ClientOptions::from_config(&cluster, tester());
    let client = rt
        .block_on(kvcli::Client::connect(options))
        .expect("connect");
    let mut session = client.session();
    rt.block_on(session.put("k", "before")).expect("put");
    stop_node(&rt, stop, node);

    let (socket, opts) = one_node_at(&rt, dir.path(), addr);
    let (stop, shutdown) = shutdown_pair();
    let node = rt.spawn(run(socket, opts, shutdown));
    rt.block_on(session.put("k", "after"))
        .expect("put after the restart");
    let got = rt.block_on(session.get("k")).expect("get");
    assert_eq!(got.as_deref(), Some(&b"after"[..]));
    let reports = rt.block_on(client.status(Duration::from_secs(5)));
    let (status, _) = reports[0].result.as_ref().expect("status");
    let refused = status
        .drops
        .iter()
        .find(|(reason, _)| reason == "stale_ticket")
        .map(|(_, n)| *n);
    assert!(
        refused >= Some(1),
        "the first request after the restart echoed the old ticket: {:?}",
        status.drops
    );
    stop_node(&rt, stop, node);
}

/// A kvcli process's first request to a node echoes no ticket: the node answers it with
/// a hello and executes nothing, and the client sends it again under the ticket at once,
/// not after its resend period (250 ms for status requests).
#[test]
fn a_kvcli_first_contact_costs_a_hello_not_a_timeout() {
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let (socket, opts) = one_node(&rt, dir.path());
    let cluster = opts.cluster.clone();
    let (stop, shutdown) = shutdown_pair();
    let node = rt.spawn(run(socket, opts, shutdown));
    let options = kvcli::ClientOptions::from_config(&cluster, tester());
    let started = std::time::Instant::now();
    let client = rt
        .block_on(kvcli::Client::connect(options))
        .expect("connect");
    let connected = started.elapsed();
    let reports = rt.block_on(client.status(Duration::from_secs(5)));
    let (status, _) = reports[0].result.as_ref().expect("status");
    let first_contacts = status
        .drops
        .iter()
        .find(|(reason, _)| reason == "no_ticket")
        .map(|(_, n)| *n);
    assert_eq!(first_contacts, Some(1), "{:?}", status.drops);
    assert!(
        connected < Duration::from_millis(250),
        "discovery waited {connected:?}: the status request did not go again on the hello"
    );
    stop_node(&rt, stop, node);
}

/// The Redis gateway's local write path (`resp::local`) against a real node, with the test
/// standing in for the event loop's end of the channel: the write arrives under the
/// session's bound id and a reserved sequence number, and whatever the core answers short
/// of "applied", the write is retried through the cluster client under that same number.
/// So a write the core applied but answered as not applied (it proposed the write, then
/// lost its leadership, and the entry committed anyway) is applied once; one the core
/// refused is applied by the retry; and one the event loop dropped too.
#[test]
fn a_local_write_retried_through_the_client_is_applied_once() {
    use kv_server::resp::answer::Slots;
    use kv_server::resp::local;
    use kv_shared::proto::{ClientError, Outcome};
    use kvcli::Response;

    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let (socket, opts) = one_node(&rt, dir.path());
    let addr = socket.local_addr().unwrap();
    let cluster = opts.cluster.clone();
    let (stop, shutdown) = shutdown_pair();
    let node = rt.spawn(run(socket, opts, shutdown));
    let options = kvcli::ClientOptions::from_config(&cluster, tester());
    rt.block_on(async {
        let cluster_client = kvcli::Client::connect(options).await.expect("connect");
        let mut session = cluster_client.session();
        let incr = Op::Incr {
            key: "n".into(),
            delta: 1,
        };
        assert!(
            session.reserve(&incr).is_none(),
            "a session not yet open on the shard sets no number aside"
        );
        // The first write opens the session on the key's shard.
        session
            .execute(Op::Put {
                key: "n".into(),
                value: "0".into(),
            })
            .await
            .expect("put");
        let declared = session.id();
        let (tx, mut inbox) = local::channel();
        // Two pools of answer slots: the closure holds the one it hands out from.
        let (mut slots, mut settled) = (Slots::default(), Slots::default());
        let mut send = |mut session: kvcli::Session, op: &Op| {
            let reserved = session
                .reserve(op)
                .expect("an open session sets a number aside");
            local::send_write(&tx, &mut slots, session, reserved, op.clone(), 0)
        };

        // 1. Applied by the core (here: sent to the node under the same session and
        //    sequence number), answered as not applied.
        let write = send(session, &incr);
        let handed = inbox.next().await;
        assert_eq!(handed.request.op, incr);
        let (seq, op) = (handed.request.seq, incr.clone());
        let (bound, applied) = tokio::task::spawn_blocking(move || {
            let mut c = client(addr);
            c.spoof_session(declared, seq - 1);
            (c.bound_id(), c.call_at(NodeId(1), op))
        })
        .await
        .expect("applier");
        assert_eq!(handed.request.client, bound, "the session's own bound id");
        assert_eq!(applied, Some(Outcome::Integer(1)));
        let lost_leadership = ClientError::NotLeader {
            shard: kv_shared::shard::shard_for_key(b"n", SHARDS),
            leader: None,
        };
        handed.answer.send(Outcome::Error(lost_leadership));
        let (session, r) = write.finish(&mut settled).await;
        assert_eq!(
            r.expect("the retry completes"),
            Response::Integer(1),
            "the retry is answered from the session table, not applied again"
        );

        // 2. Refused by the core before anything was proposed: the retry applies it.
        let write = send(session, &incr);
        let handed = inbox.next().await;
        assert_eq!(handed.request.seq, seq + 1);
        handed.answer.send(Outcome::Error(ClientError::Overloaded {
            node: NodeId(1),
            pending: 0,
        }));
        let (session, r) = write.finish(&mut settled).await;
        assert_eq!(r.expect("the retry completes"), Response::Integer(2));

        // 3. Dropped unanswered (the event loop stopped): the retry applies it.
        let write = send(session, &incr);
        drop(inbox.next().await);
        let (mut session, r) = write.finish(&mut settled).await;
        assert_eq!(r.expect("the retry completes"), Response::Integer(3));
        assert_eq!(
            session.get("n").await.expect("get"),
            Some(bytes::Bytes::from_static(b"3"))
        );
    });
    stop_node(&rt, stop, node);
}
