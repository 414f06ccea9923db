//! kvharness: runs course-harness scenarios against a replica binary and scores them.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Parser, ValueEnum};
use kv_harness::procs::ReplicaOutput;
use kv_harness::{run_scenario, summary_table, LateDatagrams, Report, RunOptions, Scenario, Tier};

/// Exit code when a correctness check (or a required tier) fails.
const EXIT_FAILED: u8 = 1;
/// Exit code for bad flags, unreadable scenarios or a replica that cannot start.
const EXIT_SETUP: u8 = 2;
/// Exit code after Ctrl-C or SIGTERM.
const EXIT_INTERRUPTED: u8 = 130;

/// Run course-harness scenarios against a replica program and score them.
#[derive(Debug, Parser)]
#[command(name = "kvharness", version)]
struct Args {
    /// Scenario files (JSON), or `all` for every *.json in --configs.
    #[arg(required = true)]
    scenarios: Vec<String>,
    /// The replica program, started as `<replica> <port> <id> <peer ids...>`.
    #[arg(long, default_value = "./3700kvstore")]
    replica: PathBuf,
    /// Seed for drops, partitions, kills and the workload (timing stays real);
    /// run k of each scenario uses seed + k - 1. Default: the scenario's
    /// `seed`, else a fresh one (printed in every report).
    #[arg(long)]
    seed: Option<u64>,
    /// Runs per scenario.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=1000))]
    runs: u64,
    /// Print every report as one JSON array on stdout (progress goes to stderr).
    #[arg(long)]
    json: bool,
    /// Print only the summary table.
    #[arg(long)]
    quiet: bool,
    /// Also fail (exit 1) unless every metric of every run reaches this tier.
    #[arg(long, value_enum)]
    require_tier: Option<RequiredTier>,
    /// Directory that `all` expands to.
    #[arg(long, default_value = "configs/course")]
    configs: PathBuf,
    /// Write each replica's stdout and stderr to DIR/<scenario>-<run>-<id>.log.
    #[arg(long, value_name = "DIR", conflicts_with = "show_replica_output")]
    replica_logs: Option<PathBuf>,
    /// Let replica output through to this terminal.
    #[arg(long)]
    show_replica_output: bool,
    /// Harness UDP port on 127.0.0.1 (0: any free port).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// What to do with a killed replica's datagrams that arrive after the kill.
    ///
    /// A late datagram is one a replica sent but the harness reads only after
    /// a kill_leader or kill_non_leader event has sent SIGTERM to that
    /// replica: one already on its way, or one the replica sent while
    /// shutting down. The course's harness is not known to do either.
    /// `drop` ignores them; `deliver` handles them like any other datagram of
    /// that replica (routed, counted in total_msgs, checked, and a client reply
    /// scored), so a replica's last words after SIGTERM, such as a leader
    /// telling its followers what it has answered, can be tested. Either way
    /// they are counted in the report, and they never change the last named
    /// leader. Datagrams of a replica marked dead or that exited on its own
    /// are always ignored.
    #[arg(long, value_enum, value_name = "POLICY", default_value_t = LateDatagrams::Drop)]
    late_datagrams: LateDatagrams,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum RequiredTier {
    Partial,
    Full,
    Bonus,
}

impl From<RequiredTier> for Tier {
    fn from(t: RequiredTier) -> Tier {
        match t {
            RequiredTier::Partial => Tier::Partial,
            RequiredTier::Full => Tier::Full,
            RequiredTier::Bonus => Tier::Bonus,
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kvharness: cannot start the runtime: {e}");
            return ExitCode::from(EXIT_SETUP);
        }
    };
    runtime.block_on(async {
        tokio::select! {
            code = run(&args) => match code {
                Ok(code) => code,
                Err(e) => {
                    eprintln!("kvharness: {e:#}");
                    ExitCode::from(EXIT_SETUP)
                }
            },
            // Dropping `run` terminates the replicas of the scenario in progress.
            signal = interrupted() => {
                eprintln!("kvharness: {signal}; replicas terminated");
                ExitCode::from(EXIT_INTERRUPTED)
            }
        }
    })
}

/// Resolves on Ctrl-C or SIGTERM (a CI timeout), naming which.
async fn interrupted() -> &'static str {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut stream) => {
                stream.recv().await;
            }
            // Without a SIGTERM handler only Ctrl-C is watched.
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "interrupted",
        _ = terminate => "terminated",
    }
}

/// Expands `all` and loads every scenario before running any.
fn load_scenarios(args: &Args) -> anyhow::Result<Vec<(String, PathBuf, Scenario)>> {
    let mut paths = Vec::new();
    for arg in &args.scenarios {
        if arg == "all" {
            let mut found: Vec<PathBuf> = std::fs::read_dir(&args.configs)
                .with_context(|| format!("cannot list {}", args.configs.display()))?
                .filter_map(|entry| entry.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "json"))
                .collect();
            if found.is_empty() {
                bail!("no *.json scenarios in {}", args.configs.display());
            }
            found.sort();
            paths.extend(found);
        } else {
            paths.push(PathBuf::from(arg));
        }
    }
    paths
        .into_iter()
        .map(|path| {
            let scenario = Scenario::load(&path)?;
            Ok((scenario_name(&path), path, scenario))
        })
        .collect()
}

/// A seed that differs between invocations; printed in every report so a run can be repeated.
fn fresh_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ (u64::from(std::process::id()) << 32)
}

fn scenario_name(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

async fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let scenarios = load_scenarios(args)?;
    let fresh = fresh_seed();
    let output = match (&args.replica_logs, args.show_replica_output) {
        (Some(dir), _) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            ReplicaOutput::Dir(dir.clone())
        }
        (None, true) => ReplicaOutput::Inherit,
        (None, false) => ReplicaOutput::Null,
    };
    let mut reports = Vec::new();
    for (name, path, scenario) in &scenarios {
        let seed = args.seed.or(scenario.seed).unwrap_or(fresh);
        for run in 1..=args.runs {
            let run_seed = seed.wrapping_add(run - 1);
            if !args.quiet {
                eprintln!(
                    "kvharness: {name} run {run}/{} seed {run_seed} ({} s)",
                    args.runs,
                    scenario.end_time().as_secs_f64()
                );
            }
            let opts = RunOptions {
                port: args.port,
                output: output.clone(),
                log_prefix: format!("{name}-{run}"),
                late_datagrams: args.late_datagrams,
                ..RunOptions::new(&args.replica, run_seed)
            };
            let data = run_scenario(scenario, &opts).await?;
            let report = Report::new(
                scenario,
                name,
                &path.display().to_string(),
                run_seed,
                run as usize,
                &args.replica.display().to_string(),
                data,
            );
            if !args.quiet && !args.json {
                println!("{}", report.render());
            }
            reports.push(report);
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
    } else if args.quiet || reports.len() > 1 {
        print!("{}", summary_table(&reports));
    }
    let ok = reports.iter().all(|r| match args.require_tier {
        Some(tier) => r.meets(tier.into()),
        None => r.passed,
    });
    Ok(ExitCode::from(if ok { 0 } else { EXIT_FAILED }))
}
