//! What a run tells its reader: the per-scenario report, the one-line summary, and JSON.

use std::fmt::Write as _;

use clap::ValueEnum;
use serde::Serialize;

use crate::scenario::Scenario;
use crate::score::{checks, metrics, Check, Metric, Tier};
use crate::sim::{LateDatagrams, RunData, StopReason};

/// The verdict of one run of one scenario.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Scenario name (file stem).
    pub scenario: String,
    /// Scenario file.
    pub path: String,
    /// Seed of this run; rerun with `--seed` to repeat its random choices.
    pub seed: u64,
    /// 1-based run number (`--runs`).
    pub run: usize,
    /// The replica program.
    pub replica: String,
    /// Every correctness check held.
    pub passed: bool,
    /// The six checks.
    pub checks: Vec<Check>,
    /// The four metrics.
    pub metrics: Vec<Metric>,
    /// The raw measurements.
    pub data: RunData,
}

impl Report {
    /// Scores `data` against `scenario`.
    pub fn new(
        scenario: &Scenario,
        name: &str,
        path: &str,
        seed: u64,
        run: usize,
        replica: &str,
        data: RunData,
    ) -> Report {
        let checks = checks(scenario, &data);
        Report {
            scenario: name.to_string(),
            path: path.to_string(),
            seed,
            run,
            replica: replica.to_string(),
            passed: checks.iter().all(|c| c.passed),
            metrics: metrics(scenario, &data),
            checks,
            data,
        }
    }

    /// The checks that failed.
    pub fn failed_checks(&self) -> impl Iterator<Item = &Check> {
        self.checks.iter().filter(|c| !c.passed)
    }

    /// Passed, and every metric reached at least `tier`.
    pub fn meets(&self, tier: Tier) -> bool {
        self.passed && self.metrics.iter().all(|m| m.tier >= tier)
    }

    /// The metric named `name`.
    pub fn metric(&self, name: &str) -> Option<&Metric> {
        self.metrics.iter().find(|m| m.name == name)
    }

    /// `PASS`, or `FAIL(1,4)` naming the failed checks.
    pub fn verdict(&self) -> String {
        if self.passed {
            return "PASS".into();
        }
        let failed: Vec<String> = self.failed_checks().map(|c| c.number.to_string()).collect();
        format!("FAIL({})", failed.join(","))
    }

    /// The full multi-line report.
    pub fn render(&self) -> String {
        let d = &self.data;
        let w = &d.work;
        let n = &d.net;
        let mut s = String::new();
        let storm = match d.stop {
            StopReason::PacketStorm => "  ** PACKET STORM: stopped early **",
            StopReason::Lifetime => "",
        };
        let _ = writeln!(
            s,
            "== {} (run {}, seed {}) {}: {}  [ended at {:.2}s]{storm}",
            self.scenario,
            self.run,
            self.seed,
            self.path,
            self.verdict(),
            d.ended_at
        );
        let _ = writeln!(
            s,
            "   ops {} (gets {}, puts {}), acked gets {} puts {}, unanswered gets {} puts {}",
            w.ops, w.gets, w.puts, w.gets_acked, w.puts_acked, d.unanswered_gets, d.unanswered_puts
        );
        let _ = writeln!(
            s,
            "   requests sent {}, redirects {}, fail replies {}, duplicates {}; intended gets {} ({} not generated, {} of them a client's first draw)",
            w.requests_sent,
            w.redirects,
            w.fail_replies,
            w.duplicates,
            w.intended_gets,
            w.gets_not_generated,
            w.gets_not_generated_first
        );
        let _ = writeln!(
            s,
            "   replica-bound copies {}: delivered {}, dropped {}, blocked by partition {}, to down replicas {}",
            n.total_msgs, n.delivered, n.dropped, n.blocked, n.to_dead
        );
        let _ = writeln!(
            s,
            "   late datagrams of killed replicas ({}): delivered {}, ignored {}",
            late_flag(d.late.policy),
            d.late.delivered,
            d.late.ignored
        );
        for e in &d.events {
            let _ = writeln!(s, "   event {:>7.3}s {:?}: {}", e.time, e.kind, e.outcome);
        }
        for x in &d.exits {
            let _ = writeln!(s, "   exit  {:>7.3}s {} ({})", x.time, x.replica, x.status);
        }
        let _ = writeln!(
            s,
            "   last named leader: {}",
            d.last_leader.as_deref().unwrap_or("none")
        );
        for c in &self.checks {
            let mark = if c.passed { "ok  " } else { "FAIL" };
            let _ = writeln!(s, "   [{mark}] {}. {}: {}", c.number, c.name, c.detail);
        }
        for m in &self.metrics {
            let _ = writeln!(
                s,
                "   {:<15} {:>12}  {:<8} (bonus < {}, full < {}, partial < {})",
                m.name,
                format_value(m),
                m.tier.name(),
                m.thresholds[0],
                m.thresholds[1],
                m.thresholds[2]
            );
        }
        if d.error_count > d.errors.len() as u64 {
            let _ = writeln!(
                s,
                "   {} errors, first {} shown:",
                d.error_count,
                d.errors.len()
            );
        }
        for e in &d.errors {
            let _ = writeln!(s, "   error: {e}");
        }
        for note in &d.notes {
            let _ = writeln!(s, "   note: {note}");
        }
        s
    }
}

/// The `--late-datagrams` setting that gives `policy`.
fn late_flag(policy: LateDatagrams) -> String {
    let value = policy
        .to_possible_value()
        .map(|v| v.get_name().to_string())
        .unwrap_or_default();
    format!("--late-datagrams {value}")
}

fn format_value(m: &Metric) -> String {
    match (m.name, m.value) {
        (_, None) => "-".into(),
        ("median_latency", Some(v)) => format!("{v:.6}"),
        (_, Some(v)) => format!("{v:.0}"),
    }
}

/// One line per report: scenario, run, verdict, each metric with its tier.
pub fn summary_table(reports: &[Report]) -> String {
    let row = |cells: [&str; 8]| {
        let line = format!(
            "{:<22} {:>3} {:>20}  {:<10} {:<18} {:<14} {:<14} {}",
            cells[0], cells[1], cells[2], cells[3], cells[4], cells[5], cells[6], cells[7]
        );
        line.trim_end().to_string()
    };
    let mut s = row([
        "scenario",
        "run",
        "seed",
        "result",
        "total_msgs",
        "failures",
        "duplicates",
        "median_latency",
    ]);
    s.push('\n');
    for r in reports {
        let cell = |name: &str| {
            r.metric(name)
                .map(|m| format!("{} ({})", format_value(m), m.tier.name()))
                .unwrap_or_default()
        };
        let storm = if r.data.stop == StopReason::PacketStorm {
            " storm"
        } else {
            ""
        };
        let latency = format!("{}{storm}", cell("median_latency"));
        s.push_str(&row([
            &r.scenario,
            &r.run.to_string(),
            &r.seed.to_string(),
            &r.verdict(),
            &cell("total_msgs"),
            &cell("failures"),
            &cell("duplicates"),
            &latency,
        ]));
        s.push('\n');
    }
    let passed = reports.iter().filter(|r| r.passed).count();
    let _ = writeln!(
        s,
        "scenarios: {passed} passed, {} failed",
        reports.len() - passed
    );
    s
}
