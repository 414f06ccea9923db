//! `kvserver`: runs one raftkv node. Thin glue: parse and validate the command line,
//! set up logging, bind the node's UDP address, and hand over to `kv_server::run`.

use clap::{Parser, Subcommand};
use kv_server::auth::NodeKeys;
use kv_server::dir_lock::{DirLock, DirLockError};
use kv_server::server::JoinOptions;
use kv_server::{logging, signals, ServerOptions};
use kv_shared::auth::{self, ClientKey, Permission};
use kv_shared::config::{ClusterConfig, NodeEntry};
use kv_shared::NodeId;
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

/// Exit code for a bad command line or cluster file (clap uses the same for its errors).
const EXIT_USAGE: u8 = 2;
/// Exit code when the data directory is in use by another kvserver (a usage mistake).
const EXIT_DIR_LOCKED: u8 = 2;
/// Exit code when the runtime could not even start (socket, tokio, the lock file).
const EXIT_RUNTIME: u8 = 1;

/// Run one node of a raftkv cluster.
///
/// The node listens on the UDP address the cluster file gives it (or --listen, for a node
/// that joins with --join), for peers and clients alike. It hosts the replicas the
/// cluster places on it (each shard lives on `replication` of the nodes, and replicas
/// move as nodes join, drain and leave) and keeps its write-ahead log and snapshots in
/// its data directory. SIGTERM or SIGINT stops it cleanly (exit 0).
///
/// Every datagram is authenticated: the cluster file names the cluster key (key_file)
/// and the client keys the node accepts (client_key_files); `kvserver keygen` makes them.
///
/// Exit codes: 0 clean shutdown; 1 runtime failure (socket, storage error while
/// running); 2 bad command line, cluster file or key file, or the data directory is in
/// use by another kvserver, or the node registry refuses this data directory under this
/// id (an empty or foreign directory for an id the cluster knows); 3 the data directory
/// was refused (for example a corrupt WAL: the message names the file and byte offset).
#[derive(Debug, Parser)]
#[command(name = "kvserver", version, verbatim_doc_comment)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
#[command(
    after_help = "Example, a local 3-node cluster (one terminal each, keys made once):\n  \
    kvserver keygen --config configs/local-3.toml\n  \
    kvserver --config configs/local-3.toml --node 1\n  \
    kvserver --config configs/local-3.toml --node 2\n  \
    kvserver --config configs/local-3.toml --node 3"
)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,

    /// Cluster file (TOML): cluster id, shard count, nodes and their addresses, timing.
    /// Without it, the embedded configs/local-3.toml (3 nodes on 127.0.0.1, 8 shards).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,

    /// This node's id: as listed in the cluster file, or with --join a new id no node of
    /// the cluster ever had (ids are never reused).
    #[arg(long, value_name = "N", required = true)]
    node: Option<u64>,

    /// Join a running cluster as a node the cluster file does not list: ask these of its
    /// nodes (any one will do) and register in the node registry. The node then holds no
    /// shard until `kvcli shard move S --from A --to N` gives it one. Needs --listen; the
    /// cluster file still gives the keys, shard count and timing.
    #[arg(
        long,
        value_name = "HOST:PORT[,HOST:PORT]",
        value_delimiter = ',',
        requires = "listen"
    )]
    join: Vec<SocketAddr>,

    /// With --join: the UDP address this node listens on for peers and clients.
    #[arg(long, value_name = "HOST:PORT", requires = "join")]
    listen: Option<SocketAddr>,

    /// TCP address of the Redis-protocol gateway [default: the cluster file's redis_addr
    /// for this node, else the UDP address (--listen with --join) with its port + 1000].
    #[arg(long, value_name = "HOST:PORT")]
    redis: Option<SocketAddr>,

    /// TCP address of the HTTP endpoint, /metrics and /health, which has no
    /// authentication [default: the cluster file's http_addr for this node, else loopback
    /// (127.0.0.1, or ::1 for an IPv6 node) with the UDP address's port (--listen with
    /// --join) + 2000]. Give an address here or in the cluster file to let a Prometheus on
    /// another machine scrape it.
    #[arg(long, value_name = "HOST:PORT")]
    http: Option<SocketAddr>,

    /// Where this node keeps its WAL and snapshots [default: <data_dir of the cluster
    /// file>/node-N, relative to the working directory].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,

    /// Log filter, e.g. `info`, `debug`, `warn,kv_node=debug` [default: $RUST_LOG, else
    /// info]. Logs go to stderr; no line per request below `debug`.
    #[arg(long, value_name = "FILTER")]
    log_level: Option<String>,

    /// Take a shard snapshot (and compact its log) once its log holds more than this
    /// many entries [default: the node core's].
    #[arg(long, value_name = "ENTRIES")]
    snapshot_threshold: Option<u64>,

    /// Seed of the election jitter [default: random]. Only for reproducing a run.
    #[arg(long, value_name = "SEED")]
    seed: Option<u64>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write new key files (mode 0600); an existing file is never overwritten.
    ///
    /// With --config: every key file the cluster file names that does not exist yet (the
    /// cluster key, and each client key named after its file: admin.key with the admin
    /// permission, any other read-write). With --out: one cluster key, or with --client
    /// one client key.
    #[command(verbatim_doc_comment)]
    Keygen(KeygenArgs),
}

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["config", "out"])))]
struct KeygenArgs {
    /// Create the missing key files this cluster file names.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Write one key file here (refused if it exists).
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// With --out: a client key for this name instead of a cluster key.
    #[arg(long, value_name = "NAME", requires = "out")]
    client: Option<String>,
    /// With --client: the client may only read.
    #[arg(long, requires = "client", conflicts_with = "admin")]
    read_only: bool,
    /// With --client: the client may also run admin operations (register nodes, drain
    /// and remove them, move replicas and leaders, pause the balancer), as kvcli's
    /// `node` and `shard` commands and the nodes' own registration need.
    #[arg(long, requires = "client")]
    admin: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(Command::Keygen(k)) = &args.command {
        return match keygen(k) {
            Ok(()) => ExitCode::SUCCESS,
            Err(msg) => {
                eprintln!("kvserver keygen: {msg}");
                ExitCode::from(EXIT_USAGE)
            }
        };
    }
    if let Err(e) = logging::init(args.log_level.as_deref()) {
        eprintln!("kvserver: {e}");
        return ExitCode::from(EXIT_USAGE);
    }
    let opts = match options(args) {
        Ok(o) => o,
        Err(msg) => {
            eprintln!("kvserver: {msg}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    // Held until the process exits.
    let _lock = match DirLock::acquire(&opts.data_dir) {
        Ok(lock) => lock,
        Err(e @ DirLockError::Held { .. }) => {
            eprintln!("kvserver: {e}");
            return ExitCode::from(EXIT_DIR_LOCKED);
        }
        Err(e) => {
            eprintln!("kvserver: {e}");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("kvserver: cannot start the tokio runtime: {e}");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    runtime.block_on(async move {
        let addr = opts.listen_addr().expect("options() checked membership");
        let socket = match tokio::net::UdpSocket::bind(addr).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!(
                    "kvserver: cannot bind UDP {addr} for node {}: {e}",
                    opts.node.0
                );
                return ExitCode::from(EXIT_RUNTIME);
            }
        };
        let shutdown = match signals::shutdown_signal() {
            Ok(s) => s,
            Err(e) => {
                eprintln!("kvserver: cannot install signal handlers: {e}");
                return ExitCode::from(EXIT_RUNTIME);
            }
        };
        match kv_server::run(socket, opts, shutdown).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("kvserver: {e}");
                ExitCode::from(e.exit_code())
            }
        }
    })
}

/// `kvserver keygen`.
fn keygen(k: &KeygenArgs) -> Result<(), String> {
    let fresh = || auth::generate_key().map_err(|e| format!("no OS randomness: {e}"));
    if let Some(out) = &k.out {
        match &k.client {
            Some(name) => {
                let permission = if k.read_only {
                    Permission::ReadOnly
                } else if k.admin {
                    Permission::Admin
                } else {
                    Permission::ReadWrite
                };
                let client = ClientKey {
                    name: name.clone(),
                    permission,
                    key: fresh()?,
                };
                auth::write_client_key(out, &client).map_err(|e| e.to_string())?;
                println!(
                    "wrote client key {:?} ({}) to {}",
                    name,
                    permission.name(),
                    out.display()
                );
            }
            None => {
                auth::write_cluster_key(out, &fresh()?).map_err(|e| e.to_string())?;
                println!("wrote cluster key to {}", out.display());
            }
        }
        return Ok(());
    }
    let path = k.config.as_ref().expect("clap requires --config or --out");
    let cluster = ClusterConfig::load(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if cluster.key_files.is_empty() {
        return Err(format!("{} names no key_file", path.display()));
    }
    let created = auth::create_missing_key_files(&cluster).map_err(|e| e.to_string())?;
    for file in cluster.key_files.iter().chain(&cluster.client_key_files) {
        let verb = if created.contains(file) {
            "wrote"
        } else {
            "kept (exists)"
        };
        println!("{verb} {}", file.display());
    }
    Ok(())
}

/// Validates the command line against the cluster file, and reads the keys it names.
fn options(args: Args) -> Result<ServerOptions, String> {
    let cluster = match &args.config {
        Some(path) => ClusterConfig::load(path).map_err(|e| format!("{}: {e}", path.display()))?,
        None => ClusterConfig::local_3(),
    };
    let node = NodeId(
        args.node
            .expect("clap requires --node without a subcommand"),
    );
    let entry = cluster.nodes.iter().find(|n| n.id == node.0).cloned();
    let join = match (args.listen, &entry) {
        (Some(listen), None) => Some(JoinOptions {
            seeds: args.join.clone(),
            listen,
        }),
        (Some(_), Some(_)) => {
            return Err(format!(
                "--node {} is in the cluster file: start it without --join and --listen",
                node.0
            ))
        }
        (None, Some(_)) => None,
        (None, None) => {
            let ids: Vec<String> = cluster.nodes.iter().map(|n| n.id.to_string()).collect();
            return Err(format!(
                "--node {} is not in the cluster file (its nodes: {}); a node outside it, new or joined before and now restarting, starts with --join HOST:PORT --listen HOST:PORT",
                node.0,
                ids.join(", ")
            ));
        }
    };
    if node.0 == 0 {
        return Err("--node 0 is not a node id (ids start at 1)".into());
    }
    let keys = NodeKeys::load(&cluster).map_err(|e| e.to_string())?;
    let data_dir = args
        .data_dir
        .unwrap_or_else(|| cluster.data_dir.join(format!("node-{}", node.0)));
    let seed = args.seed.unwrap_or_else(|| {
        // RandomState is seeded from the OS: a fresh seed per process without a new crate.
        std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish()
    });
    let (redis_addr, http_addr) =
        front_end_addrs(entry.as_ref(), args.listen, args.redis, args.http);
    Ok(ServerOptions {
        cluster,
        keys,
        node,
        data_dir,
        snapshot_threshold_entries: args.snapshot_threshold,
        seed,
        redis_addr,
        http_addr,
        join,
    })
}

/// The node's Redis and HTTP addresses: the flags', else as a cluster-file node's would be
/// derived (the entry's own, else its UDP port + 1000 and + 2000). A node the file does
/// not list derives them from its `--listen` address, so a joined node serves both front
/// ends as the file's nodes do.
fn front_end_addrs(
    entry: Option<&NodeEntry>,
    listen: Option<SocketAddr>,
    redis: Option<SocketAddr>,
    http: Option<SocketAddr>,
) -> (Option<SocketAddr>, Option<SocketAddr>) {
    let derived = entry.cloned().or_else(|| {
        listen.map(|addr| NodeEntry {
            id: 0,
            addr,
            redis_addr: None,
            http_addr: None,
        })
    });
    (
        redis.or_else(|| derived.as_ref().and_then(NodeEntry::redis_addr)),
        http.or_else(|| derived.as_ref().and_then(NodeEntry::http_addr)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_joined_node_derives_its_front_ends_from_its_listen_address() {
        assert_eq!(
            front_end_addrs(None, Some(addr("127.0.0.2:7104")), None, None),
            (Some(addr("127.0.0.2:8104")), Some(addr("127.0.0.2:9104")))
        );
        assert_eq!(
            front_end_addrs(
                None,
                Some(addr("127.0.0.2:7104")),
                Some(addr("127.0.0.2:6379")),
                Some(addr("127.0.0.3:9000"))
            ),
            (Some(addr("127.0.0.2:6379")), Some(addr("127.0.0.3:9000")))
        );
        // A port that would overflow has no derived front end.
        assert_eq!(
            front_end_addrs(None, Some(addr("127.0.0.2:65000")), None, None),
            (None, None)
        );
    }

    /// A joined node restarts with --join as it first started: the refusal of a bare
    /// `--node N` must say so, not only speak of new nodes.
    #[test]
    fn a_node_outside_the_file_is_told_to_start_with_join() {
        let args = Args::try_parse_from(["kvserver", "--node", "9"]).unwrap();
        let e = options(args).unwrap_err();
        assert_eq!(
            e,
            "--node 9 is not in the cluster file (its nodes: 1, 2, 3); a node outside it, new or joined before and now restarting, starts with --join HOST:PORT --listen HOST:PORT"
        );
    }

    #[test]
    fn a_file_node_keeps_the_files_addresses_unless_a_flag_overrides_them() {
        let entry = NodeEntry {
            id: 1,
            addr: addr("127.0.0.1:7101"),
            redis_addr: Some(addr("127.0.0.1:6000")),
            http_addr: None,
        };
        assert_eq!(
            front_end_addrs(Some(&entry), None, None, None),
            (Some(addr("127.0.0.1:6000")), Some(addr("127.0.0.1:9101")))
        );
        assert_eq!(
            front_end_addrs(Some(&entry), None, None, Some(addr("127.0.0.1:9999"))),
            (Some(addr("127.0.0.1:6000")), Some(addr("127.0.0.1:9999")))
        );
    }
}
