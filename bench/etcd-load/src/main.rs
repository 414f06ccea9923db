//! etcd-load: the etcd side of the raftkv/etcd comparison. N closed-loop clients put and
//! get against an etcd cluster over gRPC and print the report `kvcli bench --json` prints
//! (same field names), so bench/run.py reads both systems' numbers with one parser.
//!
//! Linearizable gets are etcd's default range requests (serializable=false), which go
//! through etcd's ReadIndex, as raftkv's default gets do.

use anyhow::{bail, Context, Result};
use clap::Parser;
use etcd_client::{Client, ConnectOptions, KvClient};
use hdrhistogram::Histogram;
use kvcli::bench::{process_cpu_s, CpuUse, Latency};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Largest latency the histogram tracks; slower operations are clamped to it.
const LATENCY_US_MAX: u64 = 60_000_000;
/// A request that has not finished after this long counts as an error, so a run always ends.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections opened when `--conns` is not given: enough HTTP/2 connections that one
/// connection's framing is not the bottleneck, few enough to stay cheap on 2 cores.
const CONNS_DEFAULT_MAX: usize = 8;

/// Command line.
#[derive(Parser, Debug)]
#[command(
    version,
    about = "Closed-loop etcd load generator with kvcli bench's report"
)]
struct Args {
    /// etcd client URLs, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "http://127.0.0.1:2379")]
    endpoints: Vec<String>,
    /// Logical clients, each with one request outstanding.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// gRPC connections the clients share (default: min(clients, 8)).
    #[arg(long)]
    conns: Option<usize>,
    /// Length of the measured phase, e.g. 15s.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Fraction of operations that are (linearizable) gets, 0..=1.
    #[arg(long, default_value_t = 0.5)]
    mix: f64,
    /// Size of the key space.
    #[arg(long, default_value_t = 10_000)]
    keys: u64,
    /// Key length in bytes.
    #[arg(long, default_value_t = 16)]
    key_size: usize,
    /// Value length in bytes.
    #[arg(long, default_value_t = 100)]
    value_size: usize,
    /// Write every key once before the measured phase, so that gets find values.
    #[arg(long)]
    preload: bool,
    /// Spread connections over all endpoints instead of only the leader's (followers
    /// forward puts to the leader, which costs a hop).
    #[arg(long)]
    all_endpoints: bool,
    /// Seed of the key and operation choices.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print the report as one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// The run's parameters, named as in kvcli's `BenchOptions`.
#[derive(Serialize, Debug, Clone)]
struct Options {
    clients: usize,
    conns: usize,
    duration: Duration,
    read_fraction: f64,
    keys: u64,
    key_size: usize,
    value_size: usize,
    dist: &'static str,
    stale_reads: bool,
    seed: u64,
    endpoints: Vec<String>,
}

/// The final report: the fields of kvcli's `Report` (etcd has one "shard").
#[derive(Serialize, Debug)]
struct Report {
    system: &'static str,
    options: Options,
    elapsed_s: f64,
    ops: u64,
    ops_per_s: f64,
    reads: u64,
    writes: u64,
    not_found: u64,
    latency: Latency,
    errors: u64,
    errors_by_kind: BTreeMap<String, u64>,
    ops_per_shard: Vec<u64>,
    cpu: CpuUse,
    preloaded_keys: u64,
}

/// What one closed-loop client counted; merged at the end so the hot loop takes no lock.
struct Tally {
    latency: Histogram<u64>,
    reads: u64,
    writes: u64,
    not_found: u64,
    errors_by_kind: BTreeMap<String, u64>,
}

impl Tally {
    fn new() -> Tally {
        Tally {
            latency: Histogram::new_with_bounds(1, LATENCY_US_MAX, 3)
                .expect("valid histogram bounds"),
            reads: 0,
            writes: 0,
            not_found: 0,
            errors_by_kind: BTreeMap::new(),
        }
    }

    fn merge(&mut self, other: Tally) {
        self.latency
            .add(&other.latency)
            .expect("histograms with equal bounds");
        self.reads += other.reads;
        self.writes += other.writes;
        self.not_found += other.not_found;
        for (k, n) in other.errors_by_kind {
            *self.errors_by_kind.entry(k).or_default() += n;
        }
    }
}

/// Key number `i`, zero-padded to `key_size` bytes (never truncated).
fn key_name(i: u64, key_size: usize) -> Vec<u8> {
    let width = key_size.saturating_sub(1);
    format!("k{i:0width$}").into_bytes()
}

/// A value unique to (client, n), padded to `value_size` bytes, as kvcli writes them.
fn value_for(client: u64, n: u64, value_size: usize) -> Vec<u8> {
    let mut v = format!("{client:016x}-{n}").into_bytes();
    if v.len() < value_size {
        v.resize(value_size, b'.');
    }
    v
}

/// A short name for an error, for `errors_by_kind`.
fn error_kind(e: &etcd_client::Error) -> String {
    match e {
        etcd_client::Error::GRpcStatus(s) => format!("grpc-{:?}", s.code()).to_lowercase(),
        etcd_client::Error::TransportError(_) => "transport".into(),
        _ => "other".into(),
    }
}

async fn connect(endpoint: &str) -> Result<Client> {
    let options = ConnectOptions::new()
        .with_timeout(REQUEST_TIMEOUT)
        .with_connect_timeout(Duration::from_secs(3));
    Client::connect([endpoint], Some(options))
        .await
        .with_context(|| format!("connecting to {endpoint}"))
}

/// The endpoints to load: the leader's alone (where clients of a tuned deployment would
/// send writes), or all of them.
async fn pick_endpoints(args: &Args) -> Result<Vec<String>> {
    if args.all_endpoints {
        return Ok(args.endpoints.clone());
    }
    for ep in &args.endpoints {
        let Ok(mut c) = connect(ep).await else {
            continue;
        };
        let Ok(s) = c.status().await else { continue };
        let member = s.header().map(|h| h.member_id());
        if member == Some(s.leader()) {
            return Ok(vec![ep.clone()]);
        }
    }
    bail!(
        "no endpoint of {:?} reports itself as the leader",
        args.endpoints
    )
}

/// Writes keys 0..keys once each, `workers` at a time.
async fn preload(
    kvs: &[KvClient],
    keys: u64,
    key_size: usize,
    value_size: usize,
    workers: usize,
) -> Result<()> {
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for w in 0..workers {
        let mut kv = kvs[w % kvs.len()].clone();
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= keys {
                    return Ok::<(), etcd_client::Error>(());
                }
                kv.put(
                    key_name(i, key_size),
                    value_for(u64::MAX, i, value_size),
                    None,
                )
                .await?;
            }
        }));
    }
    for t in tasks {
        t.await.context("preload task")?.context("preload put")?;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn client_loop(
    mut kv: KvClient,
    client_id: u64,
    mut rng: SmallRng,
    stop: Arc<AtomicBool>,
    read_fraction: f64,
    keys: u64,
    key_size: usize,
    value_size: usize,
) -> Tally {
    let mut tally = Tally::new();
    let mut writes = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let key = key_name(rng.gen_range(0..keys), key_size);
        let is_read = rng.gen_bool(read_fraction);
        let invoke = Instant::now();
        let outcome = if is_read {
            kv.get(key, None).await.map(|r| r.kvs().is_empty())
        } else {
            writes += 1;
            kv.put(key, value_for(client_id, writes, value_size), None)
                .await
                .map(|_| false)
        };
        let latency_us = invoke
            .elapsed()
            .as_micros()
            .clamp(1, LATENCY_US_MAX as u128) as u64;
        if is_read {
            tally.reads += 1;
        } else {
            tally.writes += 1;
        }
        match outcome {
            Ok(absent) => {
                tally.latency.saturating_record(latency_us);
                tally.not_found += u64::from(absent);
            }
            Err(e) => *tally.errors_by_kind.entry(error_kind(&e)).or_default() += 1,
        }
    }
    tally
}

async fn run(args: Args) -> Result<Report> {
    if !(0.0..=1.0).contains(&args.mix) {
        bail!("--mix is a read fraction in 0..=1, not {}", args.mix);
    }
    if args.clients == 0 || args.keys == 0 {
        bail!("--clients and --keys must be at least 1");
    }
    let endpoints = pick_endpoints(&args).await?;
    let conns = args
        .conns
        .unwrap_or(args.clients.min(CONNS_DEFAULT_MAX))
        .max(1);
    let mut kvs = Vec::with_capacity(conns);
    for c in 0..conns {
        kvs.push(connect(&endpoints[c % endpoints.len()]).await?.kv_client());
    }
    let preloaded_keys = if args.preload {
        preload(
            &kvs,
            args.keys,
            args.key_size,
            args.value_size,
            args.clients.max(16),
        )
        .await?;
        args.keys
    } else {
        0
    };

    let stop = Arc::new(AtomicBool::new(false));
    let mut seeder = SmallRng::seed_from_u64(args.seed);
    let cpu_before = process_cpu_s();
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(args.clients);
    for c in 0..args.clients {
        let rng = SmallRng::seed_from_u64(seeder.gen());
        tasks.push(tokio::spawn(client_loop(
            kvs[c % conns].clone(),
            c as u64,
            rng,
            stop.clone(),
            args.mix,
            args.keys,
            args.key_size,
            args.value_size,
        )));
    }
    tokio::time::sleep(args.duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut total = Tally::new();
    for t in tasks {
        total.merge(t.await.context("client task")?);
    }
    let elapsed = start.elapsed();
    let cpu = CpuUse::since(cpu_before, elapsed);
    let ops = total.reads + total.writes;
    let errors = total.errors_by_kind.values().sum();
    Ok(Report {
        system: "etcd",
        options: Options {
            clients: args.clients,
            conns,
            duration: args.duration,
            read_fraction: args.mix,
            keys: args.keys,
            key_size: args.key_size,
            value_size: args.value_size,
            dist: "uniform",
            stale_reads: false,
            seed: args.seed,
            endpoints,
        },
        elapsed_s: elapsed.as_secs_f64(),
        ops,
        ops_per_s: ops as f64 / elapsed.as_secs_f64(),
        reads: total.reads,
        writes: total.writes,
        not_found: total.not_found,
        latency: Latency::of(&total.latency),
        errors,
        errors_by_kind: total.errors_by_kind,
        ops_per_shard: vec![ops],
        cpu,
        preloaded_keys,
    })
}

fn render(r: &Report) -> String {
    let ms = |us: u64| format!("{:.2} ms", us as f64 / 1000.0);
    let l = &r.latency;
    format!(
        "etcd-load: {} clients over {} conns to {:?}, {:.1} s, read fraction {:.2}, {} keys, key {} B, value {} B\n  \
         throughput   {:.0} ops/s ({} ops: {} reads, {} writes; {} reads found nothing)\n  \
         latency      p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  (mean {})\n  \
         errors       {} {:?}\n  \
         cpu          {:.1}% of one core\n",
        r.options.clients,
        r.options.conns,
        r.options.endpoints,
        r.elapsed_s,
        r.options.read_fraction,
        r.options.keys,
        r.options.key_size,
        r.options.value_size,
        r.ops_per_s,
        r.ops,
        r.reads,
        r.writes,
        r.not_found,
        ms(l.p50_us),
        ms(l.p90_us),
        ms(l.p99_us),
        ms(l.p999_us),
        ms(l.max_us),
        ms(l.mean_us),
        r.errors,
        r.errors_by_kind,
        r.cpu.percent_of_one_core,
    )
}

fn main() -> Result<()> {
    let args = Args::parse();
    let json = args.json;
    // One thread, as kvcli bench uses, so both generators take the same share of the cores.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(run(args))?;
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", render(&report));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_values_have_the_asked_sizes() {
        assert_eq!(key_name(42, 16), b"k000000000000042");
        assert_eq!(key_name(123_456, 4), b"k123456", "never truncated");
        assert_eq!(value_for(1, 1, 100).len(), 100);
        assert_ne!(value_for(1, 1, 100), value_for(1, 2, 100));
    }

    #[test]
    fn tallies_merge() {
        let mut a = Tally::new();
        a.latency.record(100).unwrap();
        a.reads = 1;
        a.errors_by_kind.insert("transport".into(), 2);
        let mut b = Tally::new();
        b.latency.record(300).unwrap();
        b.writes = 1;
        b.errors_by_kind.insert("transport".into(), 1);
        a.merge(b);
        assert_eq!((a.reads, a.writes, a.latency.len()), (1, 1, 2));
        assert_eq!(a.errors_by_kind["transport"], 3);
        assert_eq!(Latency::of(&a.latency).max_us, 300);
    }
}
