//! `kvcli bench`: a closed-loop load generator. Many logical clients (sessions) share one
//! client socket on one thread, so the generator stays cheap next to the servers it loads;
//! it measures its own CPU use to prove it. Optionally it records the history and checks it
//! for linearizability with the shared checker.

use crate::arena::Arena;
use crate::client::{Client, Response, Session};
use crate::error::Error;
use crate::history::{Asked, Record};
use crate::session::{Prepared, Timing};
use bytes::{Bytes, BytesMut};
use hdrhistogram::Histogram;
use kv_shared::linearizability::{self, CheckBudget, Operation, Verdict};
use kv_shared::proto::Op;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Largest latency the histogram tracks; slower operations are clamped to it.
const LATENCY_US_MAX: u64 = 60_000_000;
/// Most keys `--dist zipf` precomputes a distribution for (8 bytes each).
pub const ZIPF_KEYS_MAX: u64 = 10_000_000;
/// The zipf exponent: the classic YCSB skew.
const ZIPF_EXPONENT: f64 = 0.99;

/// How keys are picked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Dist {
    /// Every key equally likely.
    Uniform,
    /// A few hot keys (zipf, exponent 0.99).
    Zipf,
}

/// What to run.
#[derive(Clone, Debug, Serialize)]
pub struct BenchOptions {
    /// Logical clients, each with one request outstanding.
    pub clients: usize,
    /// Stop after this long (if set).
    pub duration: Option<Duration>,
    /// Stop after this many operations (if set).
    pub ops: Option<u64>,
    /// Fraction of operations that are reads, 0..=1.
    pub read_fraction: f64,
    /// Size of the key space.
    pub keys: u64,
    /// Key length in bytes (at least what the key number needs).
    pub key_size: usize,
    /// Value length in bytes (at least what makes every written value unique).
    pub value_size: usize,
    /// Key popularity.
    pub dist: Dist,
    /// Reads are stale (served by any replica).
    pub stale_reads: bool,
    /// Record the history (for `--check` or `--history`).
    pub record: bool,
    /// Seed of the key and operation choices.
    pub seed: u64,
    /// Write every key of the key space once, in key order, then stop: no reads, and
    /// `ops`, `read_fraction` and `dist` do not apply (a data set for later runs).
    pub preload: bool,
    /// Name the keys with this instead of a tag of the run's own, so that a run reads
    /// what an earlier one wrote (`None`: a fresh tag, every key starts absent).
    pub key_set: Option<String>,
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions {
            clients: 64,
            duration: Some(Duration::from_secs(10)),
            ops: None,
            read_fraction: 0.5,
            keys: 1000,
            key_size: 16,
            value_size: 64,
            dist: Dist::Uniform,
            stale_reads: false,
            record: false,
            seed: 1,
            preload: false,
            key_set: None,
        }
    }
}

/// A snapshot of the run so far, for the live progress line.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Progress {
    /// Time since the start.
    pub elapsed: Duration,
    /// Operations that succeeded in the last interval, per second.
    pub ops_per_s: f64,
    /// Operations that succeeded so far.
    pub ops: u64,
    /// p99 latency so far, in microseconds.
    pub p99_us: u64,
    /// Errors so far.
    pub errors: u64,
}

impl Progress {
    /// The progress line: `[3.0s] 12345 ops/s  p99 2.10 ms  errors 0  (total 30000)`.
    pub fn line(&self) -> String {
        format!(
            "[{:>5.1}s] {:>8.0} ops/s  p99 {:>8} ms  errors {}  (total {})",
            self.elapsed.as_secs_f64(),
            self.ops_per_s,
            format!("{:.2}", self.p99_us as f64 / 1000.0),
            self.errors,
            self.ops
        )
    }
}

/// Latency percentiles in microseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Latency {
    /// Median.
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// Slowest.
    pub max_us: u64,
    /// Mean.
    pub mean_us: u64,
}

impl Latency {
    /// Percentiles of a histogram of microseconds.
    pub fn of(h: &Histogram<u64>) -> Latency {
        if h.is_empty() {
            return Latency::default();
        }
        Latency {
            p50_us: h.value_at_quantile(0.50),
            p90_us: h.value_at_quantile(0.90),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
            mean_us: h.mean().round() as u64,
        }
    }
}

/// The load generator's own CPU use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct CpuUse {
    /// User-mode CPU seconds.
    pub user_s: f64,
    /// Kernel-mode CPU seconds.
    pub system_s: f64,
    /// (user + system) / wall time, in percent of one core.
    pub percent_of_one_core: f64,
}

impl CpuUse {
    /// This process's CPU use since `before` (a [`process_cpu_s`] reading), over
    /// `elapsed` wall time; zero if either reading is unavailable.
    pub fn since(before: Option<(f64, f64)>, elapsed: Duration) -> CpuUse {
        match (before, process_cpu_s()) {
            (Some((u0, s0)), Some((u1, s1))) => CpuUse {
                user_s: u1 - u0,
                system_s: s1 - s0,
                percent_of_one_core: 100.0 * ((u1 - u0) + (s1 - s0)) / elapsed.as_secs_f64(),
            },
            _ => CpuUse::default(),
        }
    }
}

/// The final report.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// What was run.
    pub options: BenchOptions,
    /// Wall time of the load phase.
    pub elapsed_s: f64,
    /// Operations that succeeded (a refused or failed one is an error, not throughput).
    pub ops: u64,
    /// Successful operations per second.
    pub ops_per_s: f64,
    /// Reads that succeeded.
    pub reads: u64,
    /// Writes that succeeded.
    pub writes: u64,
    /// Reads that found no value.
    pub not_found: u64,
    /// Latency of successful operations.
    pub latency: Latency,
    /// Operations that ended in an error.
    pub errors: u64,
    /// Errors by kind (see `Error::kind`).
    pub errors_by_kind: BTreeMap<String, u64>,
    /// Successful operations per shard, index = shard number.
    pub ops_per_shard: Vec<u64>,
    /// The generator's CPU use during the load phase.
    pub cpu: CpuUse,
    /// The client's own counters (datagrams, retries, redirects).
    pub client: crate::client::Metrics,
}

/// A finished run: the report, and the history if it was recorded.
pub struct BenchRun {
    /// Numbers.
    pub report: Report,
    /// One record per operation, in completion order (empty unless recording).
    pub history: Vec<Record>,
}

/// Picks keys by number.
enum KeyPicker {
    Uniform(u64),
    /// Cumulative probabilities, ascending; key i has weight 1/(i+1)^s.
    Zipf(Vec<f64>),
}

impl KeyPicker {
    fn new(dist: Dist, keys: u64) -> KeyPicker {
        assert!(keys > 0, "the key space is not empty");
        match dist {
            Dist::Uniform => KeyPicker::Uniform(keys),
            Dist::Zipf => {
                let n = keys.min(ZIPF_KEYS_MAX);
                let mut cdf = Vec::with_capacity(n as usize);
                let mut sum = 0.0;
                for i in 0..n {
                    sum += 1.0 / ((i + 1) as f64).powf(ZIPF_EXPONENT);
                    cdf.push(sum);
                }
                for c in &mut cdf {
                    *c /= sum;
                }
                KeyPicker::Zipf(cdf)
            }
        }
    }

    fn pick(&self, rng: &mut SmallRng) -> u64 {
        match self {
            KeyPicker::Uniform(n) => rng.gen_range(0..*n),
            KeyPicker::Zipf(cdf) => {
                let u: f64 = rng.gen();
                (cdf.partition_point(|&c| c < u) as u64).min(cdf.len() as u64 - 1)
            }
        }
    }
}

/// Characters of a run's key tag after its `b`: base 36, so about 2.2 billion tags.
const RUN_TAG_CHARS: usize = 6;

/// A tag unique to this run, from OS randomness (not from `--seed`: two runs with one
/// seed must not share keys). The checker assumes every key starts absent, which holds
/// only for keys no earlier run wrote: a second `bench --check` on the same cluster would
/// otherwise read the first run's values and report a false violation.
fn run_tag() -> String {
    use std::hash::BuildHasher;
    let mut bits = std::collections::hash_map::RandomState::new()
        .hash_one((std::process::id(), std::time::SystemTime::now()));
    let mut tag = String::from("b");
    for _ in 0..RUN_TAG_CHARS {
        let digit = (bits % 36) as u32;
        bits /= 36;
        tag.push(char::from_digit(digit, 36).expect("a base-36 digit"));
    }
    tag
}

/// The load generator's keys and values, written into an [`Arena`]: otherwise each put
/// pays allocations and frees of its own (a key, a value, and the shared handle a cloned
/// `Bytes` of a `Vec` takes) on the one thread that also drives every session.
impl Arena {
    /// Key number `i` of this run: the run's tag, then the number, zero-padded to
    /// `key_size` bytes. Written digit by digit: `format!`'s machinery would be paid per key
    /// by the load generator, which shares the cores with the servers it measures.
    pub(crate) fn key(&mut self, tag: &str, i: u64, key_size: usize) -> Bytes {
        self.take(key_len_max(tag, key_size), |k| {
            push_key(k, tag, i, key_size)
        })
    }

    /// A value unique to (client, seq), padded to `value_size` bytes, so that a read names
    /// the write it saw: the client id in 16 hex digits, `-`, the sequence number in
    /// decimal, then dots. Written digit by digit, as [`Arena::key`].
    pub(crate) fn value(&mut self, prefix: &ValuePrefix, n: u64, value_size: usize) -> Bytes {
        let len_max = value_size.max(prefix.0.len() + DECIMAL_DIGITS_MAX);
        self.take(len_max, |v| {
            let start = v.len();
            v.extend_from_slice(&prefix.0);
            push_decimal(v, n, 0);
            if v.len() - start < value_size {
                v.resize(start + value_size, b'.');
            }
        })
    }
}

/// The most bytes [`push_key`] appends.
fn key_len_max(tag: &str, key_size: usize) -> usize {
    key_size.max(tag.len() + 1 + DECIMAL_DIGITS_MAX)
}

/// Appends key number `i`: the run's tag, `-`, then the number, zero-padded so that the
/// key has `key_size` bytes (longer if the number needs more digits).
fn push_key(k: &mut BytesMut, tag: &str, i: u64, key_size: usize) {
    let width = key_size.saturating_sub(tag.len() + 1);
    k.extend_from_slice(tag.as_bytes());
    k.extend_from_slice(b"-");
    push_decimal(k, i, width);
}

/// Most keys whose names a run writes ahead ([`KeyNames`]): 16 MiB of 16 B keys.
const KEY_NAMES_MAX: u64 = 1 << 20;

/// Every key name of a run, written once, before the load, into one buffer: a request
/// then takes its key as a slice of it (a reference count) rather than writing the key
/// digit by digit, a fifth of the load generator's own work per put before.
struct KeyNames {
    all: Bytes,
    /// Where key i starts in `all`; key i ends where key i + 1 starts.
    starts: Vec<u32>,
}

impl KeyNames {
    /// The names of keys `0..keys`, or `None` if there are more than [`KEY_NAMES_MAX`]
    /// (each request then writes its own).
    fn new(tag: &str, keys: u64, key_size: usize) -> Option<KeyNames> {
        if keys > KEY_NAMES_MAX {
            return None;
        }
        let mut all = BytesMut::with_capacity(keys as usize * key_len_max(tag, key_size));
        let mut starts = Vec::with_capacity(keys as usize + 1);
        for i in 0..keys {
            starts.push(u32::try_from(all.len()).ok()?);
            push_key(&mut all, tag, i, key_size);
        }
        starts.push(u32::try_from(all.len()).ok()?);
        Some(KeyNames {
            all: all.freeze(),
            starts,
        })
    }

    /// Key number `i`.
    fn key(&self, i: u64) -> Bytes {
        let i = i as usize;
        self.all
            .slice(self.starts[i] as usize..self.starts[i + 1] as usize)
    }
}

/// What every value a client writes starts with: its id in 16 hex digits and `-`,
/// written once per client rather than once per value.
pub(crate) struct ValuePrefix([u8; 17]);

impl ValuePrefix {
    pub(crate) fn new(client: u64) -> ValuePrefix {
        let mut p = [b'-'; 17];
        hex::encode_to_slice(client.to_be_bytes(), &mut p[..16])
            .expect("16 hex digits for 8 bytes");
        ValuePrefix(p)
    }
}

/// Digits of `u64::MAX` in decimal.
const DECIMAL_DIGITS_MAX: usize = 20;

/// Appends `n` in decimal, zero-padded on the left to at least `width` digits.
fn push_decimal(out: &mut BytesMut, n: u64, width: usize) {
    let mut buf = itoa::Buffer::new();
    let digits = buf.format(n).as_bytes();
    // A value's number is not padded: no resize to the same length for each.
    let zeros = width.saturating_sub(digits.len());
    if zeros > 0 {
        out.resize(out.len() + zeros, b'0');
    }
    out.extend_from_slice(digits);
}

/// CPU seconds (user, system) used by this process so far, from /proc/self/stat.
/// `None` where /proc is missing.
pub fn process_cpu_s() -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    parse_proc_stat_cpu(&stat)
}

/// utime and stime (fields 14 and 15) of a /proc/<pid>/stat line, in seconds. The clock
/// tick is USER_HZ, which Linux fixes at 100 for user space on every architecture.
fn parse_proc_stat_cpu(stat: &str) -> Option<(f64, f64)> {
    const USER_HZ: f64 = 100.0;
    // The command name (field 2) may contain spaces; fields after it are plain.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3, so field N is at index N - 3.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime / USER_HZ, stime / USER_HZ))
}

/// What the clients count, under one lock (taken once per operation).
struct Tally {
    /// Latency of successful operations, in microseconds.
    latency: Histogram<u64>,
    ops: u64,
    reads: u64,
    writes: u64,
    not_found: u64,
    errors: u64,
    errors_by_kind: BTreeMap<String, u64>,
    per_shard: Vec<u64>,
    history: Vec<Record>,
}

impl Default for Tally {
    fn default() -> Tally {
        Tally {
            latency: Histogram::new_with_bounds(1, LATENCY_US_MAX, 3)
                .expect("valid histogram bounds"),
            ops: 0,
            reads: 0,
            writes: 0,
            not_found: 0,
            errors: 0,
            errors_by_kind: BTreeMap::new(),
            per_shard: Vec::new(),
            history: Vec::new(),
        }
    }
}

struct State {
    tally: Mutex<Tally>,
    /// Operations started so far; with `preload`, also the next key number.
    started: AtomicU64,
    stop: AtomicBool,
}

/// Runs the load. `on_progress` is called about once a second with the numbers so far.
pub async fn run(
    client: &Client,
    options: BenchOptions,
    mut on_progress: impl FnMut(Progress),
) -> BenchRun {
    assert!(options.clients > 0, "at least one client");
    assert!(
        (0.0..=1.0).contains(&options.read_fraction),
        "read fraction in 0..=1"
    );
    let shard_count = client
        .shard_count()
        .expect("a connected client knows the shard count");
    // Borrowed by the clients until the end; `options` itself goes into the report.
    let client_options = options.clone();
    let mut seeder = SmallRng::seed_from_u64(options.seed);
    let tag = options.key_set.clone().unwrap_or_else(run_tag);
    // A preload takes keys in order, so no distribution is worth precomputing.
    let dist = if options.preload {
        Dist::Uniform
    } else {
        options.dist
    };
    let picker = Arc::new(KeyPicker::new(dist, options.keys));
    // A preload writes each key once: nothing to gain from writing the names ahead.
    let names = Arc::new(if options.preload {
        None
    } else {
        KeyNames::new(&tag, options.keys, options.key_size)
    });
    let state = Arc::new(State {
        tally: Mutex::new(Tally {
            per_shard: vec![0; shard_count as usize],
            ..Tally::default()
        }),
        started: AtomicU64::new(0),
        stop: AtomicBool::new(false),
    });
    let cpu_before = process_cpu_s();
    let metrics_before = client.metrics();
    let start = Instant::now();
    // The clients run on this task (`drive`), not as tokio tasks of their own: a reply
    // wakes its client without a task schedule and poll each.
    let mut clients = Vec::with_capacity(options.clients);
    for _ in 0..options.clients {
        let session = client.session();
        let rng = SmallRng::seed_from_u64(seeder.gen());
        let (state, picker, names, options, tag) =
            (&*state, &*picker, &*names, &client_options, &tag);
        clients.push(async move {
            client_loop(
                session,
                rng,
                state,
                picker,
                names,
                options,
                tag,
                start,
                shard_count,
            )
            .await
        });
    }
    let deadline = options.duration.map(|d| start + d);
    let mut ticker = tokio::time::interval_at(
        (start + Duration::from_secs(1)).into(),
        Duration::from_secs(1),
    );
    let mut last_ops = 0u64;
    let mut last_tick = start;
    let all_done = crate::drive::drive(clients);
    tokio::pin!(all_done);
    loop {
        let stop_at = deadline.unwrap_or(start + Duration::from_secs(u32::MAX as u64));
        tokio::select! {
            _ = &mut all_done => break,
            _ = tokio::time::sleep_until(stop_at.into()), if !state.stop.load(Ordering::Relaxed) => {
                state.stop.store(true, Ordering::Relaxed);
            }
            _ = ticker.tick() => {
                let now = Instant::now();
                let (ops, errors, p99_us) = {
                    let t = state.tally.lock().expect("tally lock");
                    (t.ops, t.errors, t.latency.value_at_quantile(0.99))
                };
                on_progress(Progress {
                    elapsed: now - start,
                    ops_per_s: (ops - last_ops) as f64 / (now - last_tick).as_secs_f64(),
                    ops,
                    p99_us,
                    errors,
                });
                last_ops = ops;
                last_tick = now;
            }
        }
    }
    let elapsed = start.elapsed();
    let cpu = CpuUse::since(cpu_before, elapsed);
    let metrics_after = client.metrics();
    let mut tally = std::mem::take(&mut *state.tally.lock().expect("tally lock"));
    let latency = Latency::of(&tally.latency);
    let report = Report {
        elapsed_s: elapsed.as_secs_f64(),
        ops: tally.ops,
        ops_per_s: tally.ops as f64 / elapsed.as_secs_f64(),
        reads: tally.reads,
        writes: tally.writes,
        not_found: tally.not_found,
        latency,
        errors: tally.errors,
        errors_by_kind: std::mem::take(&mut tally.errors_by_kind),
        ops_per_shard: std::mem::take(&mut tally.per_shard),
        cpu,
        client: crate::client::Metrics {
            datagrams_sent: metrics_after.datagrams_sent - metrics_before.datagrams_sent,
            requests_sent: metrics_after.requests_sent - metrics_before.requests_sent,
            retries: metrics_after.retries - metrics_before.retries,
            redirects: metrics_after.redirects - metrics_before.redirects,
            replies_received: metrics_after.replies_received - metrics_before.replies_received,
            reply_datagrams_received: metrics_after.reply_datagrams_received
                - metrics_before.reply_datagrams_received,
            datagrams_dropped: metrics_after.datagrams_dropped - metrics_before.datagrams_dropped,
        },
        options,
    };
    BenchRun {
        report,
        history: tally.history,
    }
}

#[allow(clippy::too_many_arguments)]
async fn client_loop(
    mut session: Session,
    mut rng: SmallRng,
    state: &State,
    picker: &KeyPicker,
    names: &Option<KeyNames>,
    options: &BenchOptions,
    tag: &str,
    start: Instant,
    shard_count: u32,
) {
    let client_id = session.id().0;
    let mut writes = 0u64;
    let mut arena = Arena::default();
    let value_prefix = ValuePrefix::new(client_id);
    loop {
        if state.stop.load(Ordering::Relaxed) {
            return;
        }
        let key_number = if options.preload {
            let next = state.started.fetch_add(1, Ordering::Relaxed);
            if next >= options.keys {
                return;
            }
            next
        } else {
            if let Some(limit) = options.ops {
                if state.started.fetch_add(1, Ordering::Relaxed) >= limit {
                    return;
                }
            }
            picker.pick(&mut rng)
        };
        let key = match names {
            Some(names) => names.key(key_number),
            None => arena.key(tag, key_number, options.key_size),
        };
        let is_read = !options.preload && rng.gen_bool(options.read_fraction);
        // The value is kept for the history only when one is recorded.
        let (op, written) = if is_read {
            let op = Op::Get {
                key: key.clone(),
                stale: options.stale_reads,
            };
            (op, None)
        } else {
            writes += 1;
            let value = arena.value(&value_prefix, writes, options.value_size);
            let written = options.record.then(|| value.clone());
            let op = Op::Put {
                key: key.clone(),
                value,
            };
            (op, written)
        };
        let invoke = Instant::now();
        let mut timing = Timing {
            invoked: Some(invoke),
            ..Timing::default()
        };
        // A request of a session already open on its shard (all but a session's first
        // write to each shard) runs its attempts without `execute`'s own async layer.
        let result: Result<Response, Error> = match session.prepare(&op) {
            Ok(Prepared::Ready { seq, shard }) => {
                session
                    .execute_once(op, seq, false, shard, &mut timing)
                    .await
            }
            Ok(Prepared::OpenFirst(_)) => session.execute_waiting(op, &mut timing).await,
            Err(limit) => Err(Error::Limit(limit)),
        };
        // An answer's arrival is read once per reply datagram, for all its replies.
        let complete = timing.answered.unwrap_or_else(Instant::now);
        let latency_us = (complete - invoke)
            .as_micros()
            .clamp(1, LATENCY_US_MAX as u128) as u64;
        let shard = match session.last_shard.take() {
            Some(shard) => shard,
            None => kv_shared::shard::shard_for_key(&key, shard_count),
        };
        let mut t = state.tally.lock().expect("tally lock");
        match &result {
            Ok(response) => {
                t.latency.saturating_record(latency_us);
                t.ops += 1;
                if is_read {
                    t.reads += 1;
                } else {
                    t.writes += 1;
                }
                t.per_shard[shard.0 as usize] += 1;
                if *response == Response::Value(None) {
                    t.not_found += 1;
                }
            }
            Err(e) => {
                t.errors += 1;
                *t.errors_by_kind.entry(e.kind().into_owned()).or_default() += 1;
            }
        }
        if options.record {
            let ns = |i: Instant| (i - start).as_nanos() as u64;
            let asked = match written {
                Some(value) => Asked::Put(value),
                None => Asked::Get {
                    stale: options.stale_reads,
                },
            };
            let record = Record::new(client_id, &key, &asked, &result, ns(invoke), ns(complete));
            t.history.push(record);
        }
    }
}

/// The checker's verdict on a recorded history, with what was left out.
pub struct CheckOutcome {
    /// The verdict.
    pub verdict: Verdict,
    /// Operations given to the checker.
    pub checked: usize,
    /// Operations left out (failed, or stale reads).
    pub skipped: usize,
}

/// Checks a recorded history with the shared linearizability checker.
pub fn check_history(history: &[Record], budget: CheckBudget) -> Result<CheckOutcome, String> {
    let mut ops: Vec<Operation> = Vec::with_capacity(history.len());
    for r in history {
        if let Some(op) = r.to_operation()? {
            ops.push(op);
        }
    }
    let checked = ops.len();
    let verdict = linearizability::check(&ops, budget);
    Ok(CheckOutcome {
        verdict,
        checked,
        skipped: history.len() - checked,
    })
}

/// The JSON form of a check outcome.
pub fn check_json(c: &CheckOutcome) -> serde_json::Value {
    use serde_json::json;
    let (verdict, key, history, explanation) = match &c.verdict {
        Verdict::Linearizable => ("linearizable", None, Vec::new(), None),
        Verdict::Timeout { key } => (
            "inconclusive",
            Some(crate::value::display_value(key)),
            Vec::new(),
            None,
        ),
        Verdict::NotLinearizable {
            key,
            minimal_history,
            explanation,
        } => (
            "not-linearizable",
            Some(crate::value::display_value(key)),
            minimal_history.iter().map(|o| o.to_string()).collect(),
            Some(explanation.clone()),
        ),
    };
    json!({
        "verdict": verdict,
        "checked": c.checked,
        "skipped": c.skipped,
        "key": key,
        "minimal_history": history,
        "explanation": explanation,
    })
}

/// The human form of a report: aligned, one fact per line.
pub fn render_report(r: &Report) -> String {
    let ms = |us: u64| format!("{:.2} ms", us as f64 / 1000.0);
    let mut out = String::new();
    let o = &r.options;
    out.push_str(&format!(
        "bench: {} clients, {:.1} s, read fraction {:.2}, {} keys ({}), key {} B, value {} B{}\n",
        o.clients,
        r.elapsed_s,
        if o.preload { 0.0 } else { o.read_fraction },
        o.keys,
        match (o.preload, o.dist) {
            (true, _) => "preload: each written once, in order",
            (false, Dist::Uniform) => "uniform",
            (false, Dist::Zipf) => "zipf",
        },
        o.key_size,
        o.value_size,
        if o.stale_reads { ", stale reads" } else { "" }
    ));
    out.push_str(&format!(
        "  throughput   {:.0} ops/s ({} ops succeeded: {} reads, {} writes; {} reads found nothing)\n",
        r.ops_per_s, r.ops, r.reads, r.writes, r.not_found
    ));
    let l = &r.latency;
    out.push_str(&format!(
        "  latency      p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  (mean {})\n",
        ms(l.p50_us),
        ms(l.p90_us),
        ms(l.p99_us),
        ms(l.p999_us),
        ms(l.max_us),
        ms(l.mean_us)
    ));
    if r.errors == 0 {
        out.push_str("  errors       none\n");
    } else {
        let kinds: Vec<String> = r
            .errors_by_kind
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        out.push_str(&format!(
            "  errors       {} ({})\n",
            r.errors,
            kinds.join(", ")
        ));
    }
    let shards: Vec<String> = r
        .ops_per_shard
        .iter()
        .enumerate()
        .map(|(i, n)| format!("s{i} {n}"))
        .collect();
    out.push_str(&format!("  per shard    {}\n", shards.join("  ")));
    out.push_str(&format!(
        "  client       {} datagrams sent ({:.1} requests each), {} received ({:.1} replies each), {} retries, {} redirects\n",
        r.client.datagrams_sent,
        r.client.requests_sent as f64 / r.client.datagrams_sent.max(1) as f64,
        r.client.reply_datagrams_received,
        r.client.replies_received as f64 / r.client.reply_datagrams_received.max(1) as f64,
        r.client.retries,
        r.client.redirects
    ));
    out.push_str(&format!(
        "  kvcli cpu    {:.1}% of one core (user {:.2} s, system {:.2} s)\n",
        r.cpu.percent_of_one_core, r.cpu.user_s, r.cpu.system_s
    ));
    out
}

/// The human form of a check outcome.
pub fn render_check(c: &CheckOutcome) -> String {
    let head = format!(
        "check: {} operations checked, {} left out (failed or stale reads)",
        c.checked, c.skipped
    );
    match &c.verdict {
        Verdict::Linearizable => format!("{head}\ncheck: linearizable\n"),
        Verdict::Timeout { key } => format!(
            "{head}\ncheck: inconclusive: the search budget ran out on key {}\n",
            crate::value::display_value(key)
        ),
        Verdict::NotLinearizable {
            key,
            minimal_history,
            explanation,
        } => {
            let mut s = format!(
                "{head}\ncheck: NOT linearizable on key {}; smallest failing history ({} operations):\n",
                crate::value::display_value(key),
                minimal_history.len()
            );
            for op in minimal_history {
                s.push_str(&format!("  {op}\n"));
            }
            s.push_str(explanation);
            if !s.ends_with('\n') {
                s.push('\n');
            }
            s
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_name(tag: &str, i: u64, key_size: usize) -> Bytes {
        Arena::default().key(tag, i, key_size)
    }

    fn value_for(client: u64, n: u64, value_size: usize) -> Bytes {
        Arena::default().value(&ValuePrefix::new(client), n, value_size)
    }

    #[test]
    fn keys_are_padded_and_distinct() {
        let k = key_name("b00abcd", 42, 16);
        assert_eq!(k.len(), 16);
        assert_eq!(&k[..], b"b00abcd-00000042");
        assert_eq!(
            &key_name("b00abcd", 123456, 4)[..],
            b"b00abcd-123456",
            "never truncated"
        );
        assert_ne!(value_for(1, 1, 8), value_for(1, 2, 8));
        assert_eq!(value_for(1, 1, 100).len(), 100);
    }

    #[test]
    fn keys_and_values_are_what_format_would_write() {
        let tag = "b00abcd";
        for i in [0, 7, 10, 99_999_999, 100_000_000, 123_456_789_012, u64::MAX] {
            for key_size in [0usize, 8, 16, 40] {
                let width = key_size.saturating_sub(tag.len() + 1);
                assert_eq!(
                    key_name(tag, i, key_size),
                    format!("{tag}-{i:0width$}").as_bytes(),
                    "key {i} at {key_size} bytes"
                );
            }
        }
        for (client, n) in [(0, 0), (0xdead_beef, 1), (u64::MAX, u64::MAX), (42, 1_000)] {
            for value_size in [0, 10, 100] {
                let mut want = format!("{client:016x}-{n}").into_bytes();
                if want.len() < value_size {
                    want.resize(value_size, b'.');
                }
                assert_eq!(value_for(client, n, value_size), want, "{client} {n}");
            }
        }
    }

    #[test]
    fn key_names_written_ahead_are_the_keys_an_arena_writes() {
        for (keys, key_size) in [(1u64, 16usize), (1000, 16), (1000, 9), (150, 0)] {
            let names = KeyNames::new("b00abcd", keys, key_size).expect("a small key space");
            for i in 0..keys {
                assert_eq!(names.key(i), key_name("b00abcd", i, key_size), "key {i}");
            }
        }
        let names = KeyNames::new("b00abcd", 3, 16).unwrap();
        assert_eq!(
            names.key(1).as_ptr(),
            names.key(0).as_ptr().wrapping_add(16),
            "one buffer"
        );
        assert!(KeyNames::new("b00abcd", KEY_NAMES_MAX + 1, 16).is_none());
    }

    #[test]
    fn an_arena_writes_keys_and_values_side_by_side_until_full() {
        let mut arena = Arena::default();
        let first = arena.key("b00abcd", 1, 16);
        let value = arena.value(&ValuePrefix::new(7), 1, 100);
        // The value follows the key in the same buffer: no allocation of its own.
        assert_eq!(value.as_ptr(), first.as_ptr().wrapping_add(first.len()));
        let mut kept = vec![(1u64, first), (0, value)];
        for i in 2..3000u64 {
            kept.push((i, arena.key("b00abcd", i, 16)));
        }
        let buffers = kept
            .windows(2)
            .filter(|w| w[1].1.as_ptr() != w[0].1.as_ptr().wrapping_add(w[0].1.len()))
            .count();
        // 2,999 keys of 16 bytes and a value of 100: 48,084 bytes, in three buffers.
        assert_eq!(buffers, 2, "buffers after the first");
        // Slices of a full buffer keep their bytes after the arena moved on.
        assert_eq!(&kept[0].1[..], b"b00abcd-00000001");
        assert_eq!(kept[1].1, value_for(7, 1, 100));
        assert_eq!(&kept[2999].1[..], b"b00abcd-00002999");
        let big = arena.value(&ValuePrefix::new(1), 1, crate::arena::ARENA_BYTES + 5);
        assert_eq!(
            big.len(),
            crate::arena::ARENA_BYTES + 5,
            "a value larger than a buffer"
        );
    }

    #[test]
    fn run_tags_differ_between_runs_and_keep_their_length() {
        let tags: std::collections::BTreeSet<String> = (0..100).map(|_| run_tag()).collect();
        assert_eq!(tags.len(), 100);
        assert!(tags.iter().all(|t| t.len() == 1 + RUN_TAG_CHARS));
    }

    #[test]
    fn zipf_prefers_low_numbers_and_uniform_does_not() {
        let mut rng = SmallRng::seed_from_u64(7);
        let zipf = KeyPicker::new(Dist::Zipf, 1000);
        let uni = KeyPicker::new(Dist::Uniform, 1000);
        let n = 20_000;
        let hot = |p: &KeyPicker, rng: &mut SmallRng| (0..n).filter(|_| p.pick(rng) < 10).count();
        let zipf_hot = hot(&zipf, &mut rng);
        let uni_hot = hot(&uni, &mut rng);
        // Zipf(0.99) over 1000 keys puts ~39% of picks on the 10 hottest; uniform ~1%.
        assert!(zipf_hot > n * 30 / 100, "zipf hot share {zipf_hot}");
        assert!(uni_hot < n * 3 / 100, "uniform hot share {uni_hot}");
        assert!((0..n).all(|_| zipf.pick(&mut rng) < 1000));
    }

    #[test]
    fn percentiles_of_a_known_distribution() {
        let mut h = Histogram::<u64>::new_with_bounds(1, LATENCY_US_MAX, 3).unwrap();
        for us in 1..=1000 {
            h.record(us).unwrap();
        }
        let l = Latency::of(&h);
        assert_eq!(
            (l.p50_us, l.p90_us, l.p99_us, l.p999_us, l.max_us),
            (500, 900, 990, 999, 1000)
        );
        assert_eq!(l.mean_us, 501);
        assert_eq!(Latency::of(&Histogram::new(3).unwrap()), Latency::default());
    }

    #[test]
    fn proc_stat_parsing_handles_spaces_in_the_name() {
        let line = "1234 (my prog) S 1 2 3 4 5 6 7 8 9 10 250 75 0 0 20 0 1 0 100 0 0";
        assert_eq!(parse_proc_stat_cpu(line), Some((2.5, 0.75)));
        assert!(
            process_cpu_s().is_some(),
            "/proc/self/stat is readable on Linux"
        );
    }

    #[test]
    fn report_renders_every_section() {
        let r = Report {
            options: BenchOptions::default(),
            elapsed_s: 2.0,
            ops: 10,
            ops_per_s: 5.0,
            reads: 6,
            writes: 4,
            not_found: 1,
            latency: Latency {
                p50_us: 1500,
                ..Latency::default()
            },
            errors: 2,
            errors_by_kind: [("no-leader".to_string(), 2)].into_iter().collect(),
            ops_per_shard: vec![3, 7],
            cpu: CpuUse {
                user_s: 0.1,
                system_s: 0.1,
                percent_of_one_core: 10.0,
            },
            client: Default::default(),
        };
        let text = render_report(&r);
        for want in [
            "5 ops/s",
            "p50 1.50 ms",
            "errors       2 (no-leader 2)",
            "s0 3  s1 7",
            "10.0% of one core",
        ] {
            assert!(text.contains(want), "{want:?} missing from:\n{text}");
        }
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["latency"]["p50_us"], 1500);
        assert_eq!(json["ops_per_shard"][1], 7);
        assert_eq!(json["options"]["dist"], "uniform");
    }
}
