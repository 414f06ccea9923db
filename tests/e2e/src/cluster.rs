//! A cluster of real `kvserver` processes on loopback: free ports, a temp cluster file,
//! a temp data directory and a log file per node. Dropping the [`Cluster`] kills every
//! process it started (also while a test panics, when it also prints the tail of each
//! node's log and keeps the temp directory for a post-mortem). Every cluster runs with
//! keys: a cluster key, read-write clients "admin" (kvcli's default) and "mallory", and
//! a read-only client "reader", under `<dir>/keys`. The balancer is off unless a test
//! asks for it ([`Cluster::started_with_balancer`]): the others move replicas themselves.

use crate::client::Client;
use crate::ports;
use kv_shared::auth::{self, ClientKey};
use kv_shared::proto::{NodeStatus, Role};
use kv_shared::{NodeId, ShardId};
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Set to a tracing filter (e.g. `debug`) to change the nodes' log level.
pub const LOG_ENV: &str = "KV_E2E_LOG";

/// What to start.
#[derive(Clone, Debug)]
pub struct Spec {
    /// Number of nodes (ids 1..=nodes).
    pub nodes: usize,
    /// Number of shards.
    pub shards: u32,
    /// `replication` in the cluster file, if set (else the file's default).
    pub replication: Option<u32>,
    /// `--snapshot-threshold` for every node, if set.
    pub snapshot_threshold: Option<u64>,
}

impl Default for Spec {
    fn default() -> Self {
        Spec {
            nodes: 3,
            shards: 8,
            replication: None,
            snapshot_threshold: None,
        }
    }
}

/// A running cluster.
#[derive(Debug)]
pub struct Cluster {
    dir: Option<tempfile::TempDir>,
    spec: Spec,
    cluster_id: u64,
    nodes: Vec<(NodeId, SocketAddr)>,
    /// Per node (same order as `nodes`): its Redis-protocol and HTTP addresses.
    front_ends: Vec<(SocketAddr, SocketAddr)>,
    /// Nodes started with `--join`, by id: their UDP, Redis-protocol and HTTP addresses.
    joined: BTreeMap<NodeId, (SocketAddr, SocketAddr, SocketAddr)>,
    children: BTreeMap<NodeId, Child>,
    config_path: PathBuf,
}

impl Cluster {
    /// Writes the cluster file and starts every node.
    pub fn start(spec: Spec) -> Cluster {
        let mut c = Cluster::prepare(spec);
        for (id, _) in c.nodes.clone() {
            c.spawn(id);
        }
        c
    }

    /// Writes the cluster file with `balancer` as its `[balancer]` section (the
    /// balancer runs), starts every node and waits (up to `leaders_timeout`) until every
    /// shard has a leader; returns the cluster and the admin client that saw them.
    pub fn started_with_balancer(
        spec: Spec,
        balancer: &str,
        leaders_timeout: Duration,
    ) -> (Cluster, Client) {
        let mut c = Cluster::prepare_with(spec, balancer);
        for (id, _) in c.nodes.clone() {
            c.spawn(id);
        }
        let mut client = c.client();
        c.wait_for_leaders(&mut client, leaders_timeout);
        (c, client)
    }

    /// Writes the cluster file (balancer off) but starts nothing.
    pub fn prepare(spec: Spec) -> Cluster {
        Cluster::prepare_with(spec, "enabled = false")
    }

    fn prepare_with(spec: Spec, balancer: &str) -> Cluster {
        let bin = crate::bin::kvserver();
        assert!(bin.exists());
        let dir = tempfile::Builder::new()
            .prefix("kv-e2e-")
            .tempdir()
            .expect("temp dir");
        let loopback: IpAddr = Ipv4Addr::LOCALHOST.into();
        let nodes: Vec<(NodeId, SocketAddr)> = (0..spec.nodes)
            .map(|i| (NodeId(i as u64 + 1), ports::free_addr(loopback)))
            .collect();
        // Explicit TCP ports: the defaults (UDP port + 1000, + 2000) might be taken.
        let front_ends: Vec<(SocketAddr, SocketAddr)> = (0..spec.nodes)
            .map(|_| (ports::free_addr(loopback), ports::free_addr(loopback)))
            .collect();
        let cluster_id = u64::from(std::process::id()) << 16 | u64::from(nodes[0].1.port());
        let replication = spec
            .replication
            .map(|r| format!("replication = {r}\n"))
            .unwrap_or_default();
        let mut toml = format!(
            "cluster_id = {cluster_id}\nshards = {}\n{replication}data_dir = \"{}\"\n\
             key_file = \"keys/cluster.key\"\n\
             client_key_files = [\"keys/admin.key\", \"keys/reader.key\", \"keys/mallory.key\"]\n\
             client_key_file = \"keys/admin.key\"\n\n[timing]\n\
             tick_ms = 10\nheartbeat_ticks = 5\nelection_ticks_min = 30\nelection_ticks_max = 60\n\n\
             [balancer]\n{balancer}\n",
            spec.shards,
            dir.path().display()
        );
        for ((id, addr), (redis, http)) in nodes.iter().zip(&front_ends) {
            toml.push_str(&format!(
                "\n[[nodes]]\nid = {}\naddr = \"{addr}\"\nredis_addr = \"{redis}\"\nhttp_addr = \"{http}\"\n",
                id.0
            ));
        }
        let config_path = dir.path().join("cluster.toml");
        std::fs::write(&config_path, toml).expect("write cluster file");
        let config = kv_shared::config::ClusterConfig::load(&config_path).expect("cluster file");
        auth::create_missing_key_files(&config).expect("create keys");
        let reader_path = dir.path().join("keys/reader.key");
        let mut reader = auth::read_client_key(&reader_path).expect("reader key");
        reader.permission = auth::Permission::ReadOnly;
        std::fs::remove_file(&reader_path).expect("replace the reader key");
        auth::write_client_key(&reader_path, &reader).expect("write reader key");
        Cluster {
            dir: Some(dir),
            spec,
            cluster_id,
            nodes,
            front_ends,
            joined: BTreeMap::new(),
            children: BTreeMap::new(),
            config_path,
        }
    }

    /// The node ids, ascending.
    pub fn ids(&self) -> Vec<NodeId> {
        self.nodes.iter().map(|(id, _)| *id).collect()
    }

    /// Node `id`'s address in the cluster file.
    pub fn addr(&self, id: NodeId) -> SocketAddr {
        self.nodes
            .iter()
            .find(|(n, _)| *n == id)
            .map(|(_, a)| *a)
            .unwrap_or_else(|| panic!("{id} is not a node of this cluster"))
    }

    /// Node `id`'s Redis-protocol (TCP) address (a joined node's too).
    pub fn redis_addr(&self, id: NodeId) -> SocketAddr {
        match self.joined.get(&id) {
            Some((_, redis, _)) => *redis,
            None => self.front_ends[self.index(id)].0,
        }
    }

    /// Node `id`'s HTTP address (`/metrics`, `/health`), a joined node's too.
    pub fn http_addr(&self, id: NodeId) -> SocketAddr {
        match self.joined.get(&id) {
            Some((_, _, http)) => *http,
            None => self.front_ends[self.index(id)].1,
        }
    }

    /// The UDP address node `id` was last started on with `--join`, if it was.
    pub fn joined_addr(&self, id: NodeId) -> Option<SocketAddr> {
        self.joined.get(&id).map(|(udp, _, _)| *udp)
    }

    fn index(&self, id: NodeId) -> usize {
        self.nodes
            .iter()
            .position(|(n, _)| *n == id)
            .unwrap_or_else(|| panic!("{id} is not a member"))
    }

    /// The shard count.
    pub fn shards(&self) -> u32 {
        self.spec.shards
    }

    /// The temp directory holding the cluster file, data directories and logs.
    pub fn dir(&self) -> &Path {
        self.dir.as_ref().expect("temp dir").path()
    }

    /// The cluster file (TOML), as `kvserver --config` and `kvcli --cluster` read it.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// Node `id`'s data directory (the kvserver default, `<data_dir>/node-N`).
    pub fn data_dir(&self, id: NodeId) -> PathBuf {
        self.dir().join(format!("node-{}", id.0))
    }

    /// Node `id`'s log file (stdout and stderr of every run, appended).
    pub fn log_path(&self, id: NodeId) -> PathBuf {
        self.dir().join(format!("node-{}.log", id.0))
    }

    /// Node `id`'s whole log so far.
    pub fn log(&self, id: NodeId) -> String {
        std::fs::read_to_string(self.log_path(id)).unwrap_or_default()
    }

    /// A fresh client session for this cluster, as the read-write client "admin".
    pub fn client(&self) -> Client {
        self.client_as(self.client_key("admin"))
    }

    /// A fresh client session under `key`.
    pub fn client_as(&self, key: ClientKey) -> Client {
        Client::new(self.cluster_id, self.nodes.clone(), self.spec.shards, key)
    }

    /// The client key `name` ("admin", "reader" or "mallory") from `<dir>/keys`.
    pub fn client_key(&self, name: &str) -> ClientKey {
        auth::read_client_key(&self.key_path(name)).expect("client key file")
    }

    /// `<dir>/keys/<name>.key`.
    pub fn key_path(&self, name: &str) -> PathBuf {
        self.dir().join("keys").join(format!("{name}.key"))
    }

    /// The cluster id in the cluster file.
    pub fn cluster_id(&self) -> u64 {
        self.cluster_id
    }

    /// True if node `id` was started and not yet killed or reaped.
    pub fn is_running(&self, id: NodeId) -> bool {
        self.children.contains_key(&id)
    }

    /// Starts node `id` (which must not be running).
    pub fn spawn(&mut self, id: NodeId) {
        let config = self.config_path.clone();
        self.spawn_with_config(id, &config);
    }

    /// Starts node `id` with another cluster file (for example one naming another key).
    pub fn spawn_with_config(&mut self, id: NodeId, config: &Path) {
        self.spawn_with_args(id, config, &[]);
    }

    /// Starts node `id`, which the cluster file does not list, as `kvserver --join`:
    /// listening on `listen`, asking `seeds` first, in `<dir>/node-N` like the others, with
    /// its Redis-protocol and HTTP front ends on free TCP ports of `listen`'s address
    /// (`--redis`, `--http`; [`Cluster::redis_addr`] and [`Cluster::http_addr`] name them).
    pub fn spawn_joining(&mut self, id: NodeId, listen: SocketAddr, seeds: &[SocketAddr]) {
        let seeds: Vec<String> = seeds.iter().map(|s| s.to_string()).collect();
        let (redis, http) = (ports::free_addr(listen.ip()), ports::free_addr(listen.ip()));
        self.joined.insert(id, (listen, redis, http));
        let args = [
            "--join".to_string(),
            seeds.join(","),
            "--listen".to_string(),
            listen.to_string(),
            "--data-dir".to_string(),
            self.data_dir(id).display().to_string(),
            "--redis".to_string(),
            redis.to_string(),
            "--http".to_string(),
            http.to_string(),
        ];
        let config = self.config_path.clone();
        self.spawn_with_args(id, &config, &args);
    }

    fn spawn_with_args(&mut self, id: NodeId, config: &Path, extra: &[String]) {
        assert!(!self.is_running(id), "{id} is already running");
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(id))
            .expect("open node log");
        writeln!(log, "==== kv-e2e: starting {id} ====").expect("write node log");
        let log_err = log.try_clone().expect("clone log handle");
        let mut cmd = Command::new(crate::bin::kvserver());
        cmd.arg("--config")
            .arg(config)
            .arg("--node")
            .arg(id.0.to_string())
            .arg("--log-level")
            .arg(std::env::var(LOG_ENV).unwrap_or_else(|_| "info".into()))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        if let Some(n) = self.spec.snapshot_threshold {
            cmd.arg("--snapshot-threshold").arg(n.to_string());
        }
        cmd.args(extra);
        let child = cmd.spawn().expect("spawn kvserver");
        self.children.insert(id, child);
    }

    /// kill -9 of node `id`, then reaps it.
    pub fn kill9(&mut self, id: NodeId) {
        let mut child = self.children.remove(&id).expect("node is running");
        child.kill().expect("SIGKILL");
        child.wait().expect("reap killed node");
    }

    /// Sends `signal` to node `id` (SIGSTOP freezes it with its socket open, SIGCONT
    /// resumes it; a frozen node is still killed on drop).
    pub fn signal(&mut self, id: NodeId, signal: rustix::process::Signal) {
        let child = self.children.get(&id).expect("node is running");
        let pid = rustix::process::Pid::from_raw(child.id() as i32).expect("child pid");
        rustix::process::kill_process(pid, signal).expect("signal the node");
    }

    /// SIGTERM to node `id`; waits up to `timeout` for it to exit and returns how.
    pub fn terminate(&mut self, id: NodeId, timeout: Duration) -> ExitStatus {
        let child = self.children.get(&id).expect("node is running");
        let pid = rustix::process::Pid::from_raw(child.id() as i32).expect("child pid");
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("SIGTERM");
        self.wait_exit(id, timeout)
            .unwrap_or_else(|| panic!("{id} did not exit within {timeout:?} of SIGTERM"))
    }

    /// Waits up to `timeout` for node `id` to exit on its own; reaps it if it did.
    pub fn wait_exit(&mut self, id: NodeId, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            let child = self.children.get_mut(&id).expect("node is running");
            if let Some(status) = child.try_wait().expect("try_wait") {
                self.children.remove(&id);
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Panics (with the node's log) if node `id` has exited.
    pub fn assert_alive(&mut self, id: NodeId) {
        let child = self.children.get_mut(&id).expect("node is running");
        if let Some(status) = child.try_wait().expect("try_wait") {
            panic!("{id} exited with {status}; log:\n{}", self.log(id));
        }
    }

    /// Polls the status of every running node until each shard has a leader that the
    /// leader itself and every running node holding the shard agree on; returns
    /// shard -> leader.
    pub fn wait_for_leaders(
        &mut self,
        client: &mut Client,
        timeout: Duration,
    ) -> BTreeMap<ShardId, NodeId> {
        let running: Vec<NodeId> = self.children.keys().copied().collect();
        let shards = self.spec.shards;
        let found = crate::wait_for("a leader for every shard", timeout, || {
            let statuses: Vec<NodeStatus> = running
                .iter()
                .map(|&n| client.status(n))
                .collect::<Option<_>>()?;
            let mut leaders = BTreeMap::new();
            for s in 0..shards {
                let shard = ShardId(s);
                let leader = statuses.iter().find_map(|st| {
                    let row = st.shards.iter().find(|r| r.shard == shard)?;
                    (row.role == Role::Leader).then_some(st.node)
                })?;
                let agreed = statuses.iter().all(|st| {
                    st.shards
                        .iter()
                        .all(|r| r.shard != shard || r.leader == Some(leader))
                });
                if !agreed {
                    return None;
                }
                leaders.insert(shard, leader);
            }
            Some(leaders)
        });
        for id in running {
            self.assert_alive(id);
        }
        found
    }

    /// Kills every node (used on drop; also handy to simulate a whole-cluster crash).
    pub fn kill_all(&mut self) {
        let ids: Vec<NodeId> = self.children.keys().copied().collect();
        for id in ids {
            self.kill9(id);
        }
    }

    fn print_logs(&self) {
        let ids = self
            .nodes
            .iter()
            .map(|(id, _)| id)
            .chain(self.joined.keys());
        for id in ids {
            let log = self.log(*id);
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(80)..];
            eprintln!("---- last {} lines of {id}'s log ----", tail.len());
            for l in tail {
                eprintln!("{l}");
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for (_, mut child) in std::mem::take(&mut self.children) {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            self.print_logs();
            if let Some(dir) = self.dir.take() {
                let kept = dir.keep();
                eprintln!("kv-e2e: kept the cluster's files in {}", kept.display());
            }
        }
    }
}

/// Opens `path` for reading and writing (for the WAL damage tests).
pub fn open_rw(path: &Path) -> File {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()))
}
