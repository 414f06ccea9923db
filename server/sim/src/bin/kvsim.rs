//! kvsim: runs the deterministic simulator over one seed (optionally printing its whole
//! trace) or a range of seeds in parallel, and exits non-zero if any seed fails.

use anyhow::{bail, Context, Result};
use clap::{Parser, ValueEnum};
use kv_sim::{run, AdminCounts, FaultMix, FaultProfile, Report, SimOptions};
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Faults {
    None,
    Net,
    All,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Profile {
    Mixed,
    Churn,
    Figure8,
    Moves,
}

#[cfg(feature = "planted-bugs")]
#[derive(Clone, Copy, Debug, ValueEnum)]
enum Plant {
    GrantSecondVote,
    CommitPriorTermByCount,
    AckBeforePersist,
    LeaderCountsDeferredWrite,
    ReadWithoutReadIndex,
    CreatedReplicaWithBootstrapMembership,
    RemovedReplicaServesReads,
    RemoveBeforeCatchUp,
    RecreateOnStaleAdd,
    FollowerReadBeforeApply,
}

/// Deterministic simulation of a raftkv cluster.
#[derive(Parser, Debug)]
#[command(name = "kvsim")]
struct Args {
    /// Run one seed.
    #[arg(long, conflicts_with = "seeds")]
    seed: Option<u64>,
    /// Run a range of seeds: A..B (B excluded) or A..=B.
    #[arg(long)]
    seeds: Option<String>,
    /// Print the whole trace of the run (with --seed).
    #[arg(long, requires = "seed")]
    trace: bool,
    /// Threads for a seed range.
    #[arg(long, default_value_t = 2)]
    jobs: usize,
    /// Cluster size (3..=7); seed-chosen by default.
    #[arg(long)]
    nodes: Option<usize>,
    /// Shards (1..=8); seed-chosen by default.
    #[arg(long)]
    shards: Option<u32>,
    /// Replicas per shard (1..=nodes); seed-chosen by default.
    #[arg(long)]
    replication: Option<usize>,
    /// Fault mix.
    #[arg(long, value_enum, default_value_t = Faults::All)]
    faults: Faults,
    /// How `--faults all` aims its faults; seed-chosen by default.
    #[arg(long, value_enum)]
    profile: Option<Profile>,
    /// Ticks of the safety phase (faults on).
    #[arg(long, alias = "duration-ticks")]
    steps: Option<u64>,
    /// Every fsync takes exactly this many milliseconds, faults or not (group commit, as
    /// the runtime's disk thread). Elections run 100..200 ms, heartbeats every 20 ms.
    #[arg(long, default_value_t = 0)]
    slow_disk_ms: u64,
    /// Plant a bug (needs the planted-bugs feature).
    #[cfg(feature = "planted-bugs")]
    #[arg(long, value_enum)]
    plant: Option<Plant>,
}

fn parse_range(s: &str) -> Result<(u64, u64)> {
    let (a, b, inclusive) = if let Some((a, b)) = s.split_once("..=") {
        (a, b, true)
    } else if let Some((a, b)) = s.split_once("..") {
        (a, b, false)
    } else {
        bail!("--seeds wants A..B or A..=B, got {s:?}");
    };
    let a: u64 = a
        .trim()
        .parse()
        .with_context(|| format!("bad range start {a:?}"))?;
    let b: u64 = b
        .trim()
        .parse()
        .with_context(|| format!("bad range end {b:?}"))?;
    let end = if inclusive {
        b.checked_add(1).context("range end overflows")?
    } else {
        b
    };
    if end <= a {
        bail!("--seeds {s} is empty");
    }
    Ok((a, end))
}

fn options(args: &Args, seed: u64) -> Result<SimOptions> {
    let mut o = SimOptions::new(seed);
    if let Some(n) = args.nodes {
        if !(3..=7).contains(&n) {
            bail!("--nodes must be in 3..=7");
        }
        o.nodes = Some(n);
    }
    if let Some(s) = args.shards {
        if !(1..=8).contains(&s) {
            bail!("--shards must be in 1..=8");
        }
        o.shards = Some(s);
    }
    if let Some(r) = args.replication {
        let nodes_max = args.nodes.unwrap_or(3);
        if r == 0 || r > nodes_max {
            bail!("--replication must be in 1..=nodes ({nodes_max}; give --nodes for more)");
        }
        o.replication = Some(r);
    }
    o.faults = match args.faults {
        Faults::None => FaultMix::None,
        Faults::Net => FaultMix::Net,
        Faults::All => FaultMix::All,
    };
    o.profile = args.profile.map(|p| match p {
        Profile::Mixed => FaultProfile::Mixed,
        Profile::Churn => FaultProfile::Churn,
        Profile::Figure8 => FaultProfile::Figure8,
        Profile::Moves => FaultProfile::Moves,
    });
    if let Some(t) = args.steps {
        o.safety_ticks = t;
    }
    o.trace = args.trace;
    o.slow_disk_ns = args.slow_disk_ms * 1_000_000;
    #[cfg(feature = "planted-bugs")]
    if let Some(p) = args.plant {
        use kv_node::PlantedBug as B;
        use kv_raft::PlantedBug as R;
        let bug = match p {
            Plant::GrantSecondVote => B::Raft(R::GrantSecondVote),
            Plant::CommitPriorTermByCount => B::Raft(R::CommitPriorTermByCount),
            Plant::AckBeforePersist => B::Raft(R::AckBeforePersist),
            Plant::LeaderCountsDeferredWrite => B::Raft(R::LeaderCountsDeferredWrite),
            Plant::ReadWithoutReadIndex => B::ReadWithoutReadIndex,
            Plant::CreatedReplicaWithBootstrapMembership => {
                B::CreatedReplicaWithBootstrapMembership
            }
            Plant::RemovedReplicaServesReads => B::RemovedReplicaServesReads,
            Plant::RemoveBeforeCatchUp => B::RemoveBeforeCatchUp,
            Plant::RecreateOnStaleAdd => B::RecreateOnStaleAdd,
            Plant::FollowerReadBeforeApply => B::FollowerReadBeforeApply,
        };
        o.node_hook = Some(std::sync::Arc::new(move |core: &mut kv_node::NodeCore| {
            core.plant_bug(bug)
        }));
    }
    Ok(o)
}

/// The admin's requests, for the Moves and Churn profiles' seeds (empty for the others).
fn admin_summary(a: &AdminCounts) -> String {
    if a.moves_done + a.leader_changes + a.refused + a.abandoned == 0 {
        return String::new();
    }
    let churn = if a.joins + a.drains + a.dead_removals == 0 {
        String::new()
    } else {
        format!(
            ", {} joins, {} drains, {} dead-node removals",
            a.joins, a.drains, a.dead_removals
        )
    };
    format!(
        ", {} moves, {} leader changes, {} admin requests refused, {} abandoned, {} replicas created again on a node the shard had left{churn}",
        a.moves_done, a.leader_changes, a.refused, a.abandoned, a.recreated
    )
}

fn print_failure(r: &Report, full: bool) {
    let f = r.failure.as_ref().expect("failed");
    let mut out = std::io::stdout().lock();
    if full {
        let _ = writeln!(out, "--- last {} events ---", f.trace_tail.len());
        for l in &f.trace_tail {
            let _ = writeln!(out, "{l}");
        }
    }
    let _ = writeln!(
        out,
        "seed {} FAILED: {}: {} (replay: kvsim --seed {} --trace)",
        r.seed, f.invariant, f.detail, r.seed
    );
}

fn main() -> Result<()> {
    let args = Args::parse();
    if let Some(seed) = args.seed {
        let mut o = options(&args, seed)?;
        o.detail = true;
        let r = run(&o);
        {
            let mut out = std::io::stdout().lock();
            for l in &r.trace {
                writeln!(out, "{l}")?;
            }
        }
        if r.passed() {
            println!(
                "seed {seed} passed: {} nodes, {} shards x {} replicas{}{}{}{}, {} events, {} ops ok, {} unknown, {} elections, {} crashes, {} partitions{}",
                r.stats.nodes,
                r.stats.shards,
                r.stats.replication,
                if r.stats.lazy_followers { " (lazy followers)" } else { "" },
                if r.stats.preallocated_wal { " (preallocated WAL)" } else { "" },
                if r.stats.deferred_syncs { " (deferred leader syncs)" } else { "" },
                if r.stats.packed_leaders { " (packed leaders)" } else { "" },
                r.stats.events,
                r.stats.ops_ok,
                r.stats.ops_unknown,
                r.stats.elections,
                r.stats.crashes,
                r.stats.partitions,
                admin_summary(&r.stats.admin)
            );
            return Ok(());
        }
        print_failure(&r, !args.trace);
        std::process::exit(1);
    }
    let Some(range) = &args.seeds else {
        bail!("give --seed N or --seeds A..B");
    };
    let (start, end) = parse_range(range)?;
    let next = AtomicU64::new(start);
    let packed = AtomicU64::new(0);
    let failed = Mutex::new(Vec::new());
    let began = Instant::now();
    let jobs = args.jobs.max(1);
    let mut template = Vec::new();
    for _ in 0..jobs {
        template.push(options(&args, 0)?);
    }
    std::thread::scope(|scope| {
        for mut o in template {
            let (next, failed, packed) = (&next, &failed, &packed);
            scope.spawn(move || loop {
                let seed = next.fetch_add(1, Ordering::Relaxed);
                if seed >= end {
                    break;
                }
                o.seed = seed;
                // A panic in the node core fails its seed, not the whole sweep.
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(&o)));
                if r.as_ref().is_ok_and(|r| r.stats.packed_leaders) {
                    packed.fetch_add(1, Ordering::Relaxed);
                }
                match r {
                    Ok(r) if r.passed() => continue,
                    Ok(r) => print_failure(&r, false),
                    Err(_) => println!(
                        "seed {seed} FAILED: panic (above) (replay: kvsim --seed {seed} --trace)"
                    ),
                }
                failed.lock().expect("no panics hold it").push(seed);
            });
        }
    });
    let failed = failed.into_inner().expect("threads done");
    let total = end - start;
    let secs = began.elapsed().as_secs_f64();
    eprintln!(
        "{total} seeds in {secs:.1}s ({:.0} seeds/minute with {jobs} jobs), {} with packed leaders",
        total as f64 / secs * 60.0,
        packed.into_inner()
    );
    println!(
        "{} passed, {} failed",
        total - failed.len() as u64,
        failed.len()
    );
    if !failed.is_empty() {
        std::process::exit(1);
    }
    Ok(())
}
