//! kvcli: the raftkv client, an interactive REPL and a scripted, load-generating tool.
//! Thin glue: flags are parsed here, then the library does the work.

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use kv_shared::auth::ClientKey;
use kv_shared::config::ClusterConfig;
use kvcli::bench::{self, BenchOptions, Dist};
use kvcli::client::{Client, ClientOptions, NodeAddr};
use kvcli::output::{print_stdout, render_error, Style, EXIT_ERROR, EXIT_OK};
use std::io::IsTerminal;
use std::net::ToSocketAddrs;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const EXAMPLES: &str = "\
Examples:
  kvcli --local                                  start a local 3-node cluster and open the REPL
  kvcli                                          REPL against the embedded default (127.0.0.1:7101-7103)
  kvcli --cluster configs/local-3.toml get user:1
  kvcli --nodes 127.0.0.1:7101,127.0.0.1:7102 put greeting \"hello world\"
  kvcli put blob hex:00ff10                      binary values: hex:... or b64:...
  kvcli cas counter 41 42                        exit 1 if counter is not 41
  kvcli cas lock --absent me                     write only if the key is absent
  kvcli incr visits 5                            add 5 atomically on the server; prints the sum
  kvcli --json status                            the cluster table as JSON
  kvcli node list                                nodes: address, state, identity, replicas, leaders
  kvcli node drain 5                             move every replica off node 5
  kvcli node remove 4 --dead                     rebuild a lost node's replicas elsewhere
  kvcli rebalance --dry-run                      the moves that would balance the cluster
  kvcli rebalance pause                          the balancer starts no move until resume
  printf 'put a 1\\nget a\\n' | kvcli              a script: one result per line
  kvcli bench --clients 64 --duration 10s --mix 0.9 --check

Commands (REPL, script or one-shot):
  get KEY [--stale]     put KEY VALUE     del KEY
  cas KEY EXPECTED NEW  cas KEY --absent NEW  incr KEY [DELTA]
  status                shard KEY         node list        help [COMMAND]   quit
  shard leader|move ... node drain|remove ...  rebalance [status|pause|resume|--dry-run]

Exit codes: 0 ok; 1 key not found or cas mismatch; 2 error.
Full reference: docs/KVCLI.md.";

/// kvcli: talk to a raftkv cluster.
///
/// With a command (`kvcli get K`) it runs it and exits. Without one, it reads commands
/// from stdin when stdin is not a terminal (a script), or opens the interactive REPL.
#[derive(Parser, Debug)]
#[command(name = "kvcli", version, after_long_help = EXAMPLES, after_help = "Run `kvcli --help` for examples.")]
// `kvcli help cas` is kvcli's own help command, as in the REPL, not clap's.
#[command(disable_help_subcommand = true)]
struct Cli {
    #[command(flatten)]
    conn: ConnArgs,

    /// Print results as JSON objects, one per line.
    #[arg(long, global = true)]
    json: bool,

    /// Never colour the output (colour is used only on a terminal anyway).
    #[arg(long, global = true)]
    no_color: bool,

    /// In script mode, run every line even after an error (exit 2 at the end if any failed).
    #[arg(long)]
    keep_going: bool,

    /// REPL history file [default: $KVCLI_HISTORY, else ~/.kvcli_history].
    #[arg(long, value_name = "FILE")]
    history_file: Option<PathBuf>,

    #[command(subcommand)]
    command: Option<Sub>,
}

#[derive(Args, Debug)]
struct ConnArgs {
    /// Cluster file (TOML, like configs/local-3.toml) [default: the embedded local-3 config].
    #[arg(long, value_name = "FILE", global = true, conflicts_with = "nodes")]
    cluster: Option<PathBuf>,

    /// Node addresses, comma-separated (host:port,...); ids and shard count are asked from the nodes.
    #[arg(long, value_name = "ADDRS", global = true, value_delimiter = ',')]
    nodes: Vec<String>,

    /// Cluster id for --nodes [default: the embedded config's].
    #[arg(long, value_name = "ID", global = true)]
    cluster_id: Option<u64>,

    /// Client key file (name, permission, key; `kvserver keygen --out FILE --client NAME`
    /// makes one) [default: the cluster file's client_key_file].
    #[arg(long, value_name = "FILE", global = true)]
    key_file: Option<PathBuf>,

    /// Start a local 3-node cluster of kvserver processes (the embedded config), and stop it on exit.
    #[arg(long, global = true, conflicts_with_all = ["cluster", "nodes"])]
    local: bool,

    /// Data directory for --local (node N keeps its data in DIR/node-N).
    #[arg(long, value_name = "DIR", default_value = "data/local", global = true)]
    local_dir: PathBuf,

    /// Report a shard as unavailable after this long without a working leader.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_nonzero_duration, global = true)]
    unavailable_after: Duration,

    /// How long one attempt waits for a reply before retrying (same request id).
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_nonzero_duration, global = true)]
    attempt_timeout: Duration,
}

#[derive(Subcommand, Debug)]
enum Sub {
    /// Closed-loop load from many logical clients, with a latency report.
    #[command(after_long_help = "Examples:
  kvcli bench --clients 64 --duration 10s
  kvcli bench --clients 256 --ops 100000 --mix 0.95 --dist zipf --json
  kvcli bench --clients 16 --duration 5s --check --history run.jsonl
  kvcli bench --clients 256 --preload --keys 1000000 --value-size 100")]
    Bench(BenchArgs),
    /// A command: get, put, del, cas, incr, status, shard, node, rebalance, help (see Examples in --help).
    #[command(external_subcommand)]
    Command(Vec<String>),
}

#[derive(Args, Debug)]
struct BenchArgs {
    /// Concurrent logical clients (sessions), each with one request outstanding.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Run for this long (e.g. 10s, 500ms, 2m) [default: 10s unless --ops is given].
    #[arg(long, value_parser = parse_nonzero_duration)]
    duration: Option<Duration>,
    /// Stop after this many operations.
    #[arg(long)]
    ops: Option<u64>,
    /// Fraction of operations that are reads (0..=1).
    #[arg(long, default_value_t = 0.5)]
    mix: f64,
    /// Number of distinct keys.
    #[arg(long, default_value_t = 1000)]
    keys: u64,
    /// Key length in bytes.
    #[arg(long, default_value_t = 16)]
    key_size: usize,
    /// Value length in bytes.
    #[arg(long, default_value_t = 64)]
    value_size: usize,
    /// Key popularity.
    #[arg(long, value_enum, default_value_t = Dist::Uniform)]
    dist: Dist,
    /// Reads are stale (any replica answers from its own state; not linearizable).
    #[arg(long)]
    stale_reads: bool,
    /// Record the history and check it for linearizability (exit 2 if it is not).
    #[arg(long)]
    check: bool,
    /// Write the history as JSON lines to FILE (format: docs/KVCLI.md).
    #[arg(long, value_name = "FILE")]
    history: Option<PathBuf>,
    /// Seed of the key and operation choices.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Write each of the --keys keys once, in order, then stop (no reads): a data set of
    /// --keys values of --value-size bytes, e.g. before measuring moves on a full store.
    #[arg(long, conflicts_with_all = ["ops", "mix", "dist", "stale_reads"])]
    preload: bool,
    /// Name the keys NAME-<number> instead of with a fresh tag of this run's own, so a run
    /// reads what an earlier run wrote: `--preload --key-set s1`, then `--mix 1 --key-set
    /// s1` measures gets that find their values. Not with --check, which assumes every key
    /// starts absent. NAME: 1 to 16 ASCII letters and digits.
    #[arg(long, value_name = "NAME", value_parser = parse_key_set, conflicts_with = "check")]
    key_set: Option<String>,
}

/// Most characters of a `--key-set` name. A key is the name, a dash and the key number
/// padded to `--key-size`; a longer name makes longer keys, still far below
/// `KEY_BYTES_MAX`.
const KEY_SET_CHARS_MAX: usize = 16;

fn parse_key_set(s: &str) -> Result<String, String> {
    if s.is_empty() || s.len() > KEY_SET_CHARS_MAX || !s.bytes().all(|b| b.is_ascii_alphanumeric())
    {
        return Err(format!(
            "{s:?} is not a key set name: 1 to {KEY_SET_CHARS_MAX} ASCII letters and digits"
        ));
    }
    Ok(s.to_string())
}

/// Parses `10s`, `500ms`, `2m`, `1.5s` or a bare number of seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 10s, 500ms or 2m"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("unknown unit {unit:?} in {s:?}; use ms, s, m or h")),
    };
    if !(0.0..1e9).contains(&secs) {
        return Err(format!("{s:?} is out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// [`parse_duration`] for the waits and the bench run, where zero is a mistake:
/// `--unavailable-after 0` would report a shard that has a leader as having none.
fn parse_nonzero_duration(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d.is_zero() {
        return Err(format!(
            "{s:?} is zero; give a duration above 0, like 500ms or 5s"
        ));
    }
    Ok(d)
}

fn main() {
    let cli = Cli::parse();
    let style = Style {
        json: cli.json,
        colour: !cli.no_color && !cli.json && std::io::stdout().is_terminal(),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime starts");
    let code = match runtime.block_on(run(cli, style)) {
        Ok(code) => code,
        Err(e) => {
            kvcli::note!(
                "{}",
                render_error(
                    &format!("{e:#}"),
                    "setup",
                    Style {
                        json: false,
                        ..style
                    }
                )
            );
            EXIT_ERROR
        }
    };
    drop(runtime);
    std::process::exit(code);
}

async fn run(cli: Cli, style: Style) -> anyhow::Result<i32> {
    // `kvcli help [COMMAND]` answers as the REPL's help does, without a key or a cluster.
    if let Some(Sub::Command(words)) = &cli.command {
        match kvcli::command::parse_words(words) {
            Ok(kvcli::command::Command::Help { topic }) => {
                let text =
                    kvcli::output::CmdOutput::Text(kvcli::command::help_text(topic.as_deref()));
                print_stdout(&format!("{}\n", kvcli::output::render(&text, style)));
                return Ok(EXIT_OK);
            }
            Err(e) if matches!(words[0].to_ascii_lowercase().as_str(), "help" | "?") => {
                kvcli::note!("{}", render_error(&e.to_string(), "usage", style));
                return Ok(EXIT_ERROR);
            }
            _ => {}
        }
    }
    let mut local = None;
    let key_file = cli.conn.key_file.clone();
    let key_for = |config: Option<&ClusterConfig>| -> anyhow::Result<ClientKey> {
        let path = key_file
            .clone()
            .or_else(|| config.and_then(|c| c.client_key_file.clone()))
            .context(
                "no client key: pass --key-file FILE (`kvserver keygen --out FILE --client NAME` \
                 makes one), or name client_key_file in the cluster file",
            )?;
        Ok(kv_shared::auth::read_client_key(&path)?)
    };
    let mut options = if cli.conn.local {
        let kvserver = kvcli::local::kvserver_beside_me()?;
        let cluster = kvcli::local::LocalCluster::start(&kvserver, &cli.conn.local_dir)?;
        kvcli::note!(
            "started a local cluster: 3 kvserver nodes, data and logs in {}",
            cluster.dir.display()
        );
        let o = ClientOptions::from_config(&cluster.config, key_for(Some(&cluster.config))?);
        local = Some(cluster);
        o
    } else if let Some(path) = &cli.conn.cluster {
        let config = ClusterConfig::load(path)?;
        ClientOptions::from_config(&config, key_for(Some(&config))?)
    } else if !cli.conn.nodes.is_empty() {
        let mut nodes = Vec::new();
        for n in &cli.conn.nodes {
            let addr = n
                .to_socket_addrs()
                .with_context(|| format!("--nodes: cannot resolve {n:?} (want host:port)"))?
                .next()
                .with_context(|| format!("--nodes: {n:?} resolves to no address"))?;
            nodes.push(NodeAddr { id: None, addr });
        }
        let id = cli
            .conn
            .cluster_id
            .unwrap_or_else(|| ClusterConfig::local_3().cluster_id);
        ClientOptions::from_addrs(id, nodes, key_for(None)?)
    } else {
        // The embedded config is what `--local` runs, and `--local` keeps its keys in
        // its directory: a second kvcli on the same cluster finds them there.
        let mut config = ClusterConfig::local_3();
        config.resolve_key_paths(&cli.conn.local_dir);
        ClientOptions::from_config(&config, key_for(Some(&config))?)
    };
    if options.protection == kv_shared::auth::Protection::Unauthenticated {
        kvcli::note!(
            "warning: the cluster file says protection = \"none\": nothing authenticates \
             this cluster's traffic (allowed on loopback only, for measuring what \
             authentication costs)"
        );
    }
    options.unavailable_after = cli.conn.unavailable_after;
    options.attempt_timeout = cli.conn.attempt_timeout;
    if local.is_some() {
        options.discovery_timeout = Duration::from_secs(10);
    }
    let client = Client::connect(options).await?;
    if let Some(cluster) = &mut local {
        wait_for_leaders(&client, cluster).await?;
    }
    let code = match cli.command {
        Some(Sub::Bench(args)) => bench_main(&client, args, style).await?,
        Some(Sub::Command(words)) => {
            kvcli::run::one_shot(
                &client,
                &words,
                style,
                &mut std::io::stdout(),
                &mut std::io::stderr(),
            )
            .await
        }
        None if !std::io::stdin().is_terminal() => {
            let stdin = std::io::stdin();
            kvcli::run::script(
                &client,
                stdin.lock(),
                style,
                cli.keep_going,
                &mut std::io::stdout(),
                &mut std::io::stderr(),
            )
            .await
        }
        None => {
            kvcli::run::repl(&client, style, kvcli::run::history_path(cli.history_file)).await?
        }
    };
    drop(local);
    Ok(code)
}

/// Waits (up to 15 s) until every shard of a freshly started local cluster has a leader.
async fn wait_for_leaders(
    client: &Client,
    cluster: &mut kvcli::local::LocalCluster,
) -> anyhow::Result<()> {
    let start = Instant::now();
    let shards = client.shard_count().unwrap_or(0);
    loop {
        cluster.check_alive()?;
        let reports = client.status(Duration::from_millis(500)).await;
        let status = kvcli::output::combine_status(&reports, shards);
        let led = status.shards.iter().filter(|s| s.leader.is_some()).count();
        if led == shards as usize {
            kvcli::note!(
                "all {shards} shards have a leader ({} ms)",
                start.elapsed().as_millis()
            );
            return Ok(());
        }
        if start.elapsed() > Duration::from_secs(15) {
            anyhow::bail!(
                "after 15 s only {led} of {shards} shards have a leader; see the logs in {}",
                cluster.dir.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn bench_main(client: &Client, a: BenchArgs, style: Style) -> anyhow::Result<i32> {
    anyhow::ensure!(a.clients > 0, "--clients must be at least 1");
    anyhow::ensure!(
        (0.0..=1.0).contains(&a.mix),
        "--mix is the read fraction, between 0 and 1"
    );
    anyhow::ensure!(a.keys > 0, "--keys must be at least 1");
    anyhow::ensure!(
        a.value_size <= kv_shared::limits::VALUE_BYTES_MAX
            && a.key_size <= kv_shared::limits::KEY_BYTES_MAX,
        "--key-size is limited to KEY_BYTES_MAX = {} and --value-size to VALUE_BYTES_MAX = {}",
        kv_shared::limits::KEY_BYTES_MAX,
        kv_shared::limits::VALUE_BYTES_MAX
    );
    if a.check && a.stale_reads {
        kvcli::note!("note: stale reads are not linearizable by design; --check leaves them out");
    }
    let options = BenchOptions {
        clients: a.clients,
        duration: a.duration.or(if a.ops.is_some() || a.preload {
            None
        } else {
            Some(Duration::from_secs(10))
        }),
        ops: a.ops,
        read_fraction: a.mix,
        keys: a.keys,
        key_size: a.key_size,
        value_size: a.value_size,
        dist: a.dist,
        stale_reads: a.stale_reads,
        record: a.check || a.history.is_some(),
        seed: a.seed,
        preload: a.preload,
        key_set: a.key_set,
    };
    let tty = std::io::stderr().is_terminal();
    let run = bench::run(client, options, |p| {
        if tty {
            use std::io::Write as _;
            let _ = write!(std::io::stderr(), "\r\x1b[2K{}", p.line());
        } else {
            kvcli::note!("{}", p.line());
        }
    })
    .await;
    if tty {
        kvcli::note!();
    }
    if let Some(path) = &a.history {
        let file = std::fs::File::create(path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        let mut w = std::io::BufWriter::new(file);
        kvcli::history::write_jsonl(&run.history, &mut w)
            .with_context(|| format!("cannot write {}", path.display()))?;
        std::io::Write::flush(&mut w)?;
        kvcli::note!(
            "history: {} operations written to {}",
            run.history.len(),
            path.display()
        );
    }
    let check = if a.check {
        Some(bench::check_history(&run.history, Default::default()).map_err(anyhow::Error::msg)?)
    } else {
        None
    };
    let check_failed = check.as_ref().is_some_and(|c| !c.verdict.is_linearizable());
    if style.json {
        let mut v = serde_json::to_value(&run.report)?;
        if let Some(c) = &check {
            v["check"] = bench::check_json(c);
        }
        print_stdout(&format!("{v}\n"));
    } else {
        print_stdout(&bench::render_report(&run.report));
        if let Some(c) = &check {
            print_stdout(&bench::render_check(c));
        }
    }
    Ok(if check_failed { EXIT_ERROR } else { EXIT_OK })
}
