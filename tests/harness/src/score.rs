//! The six correctness checks and the four tiered metrics of the course harness.

use serde::Serialize;

use crate::scenario::{Scenario, Tiers};
use crate::sim::{RunData, StopReason};

/// A metric's grade.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    /// v >= c (or no value at all).
    None,
    /// v < c.
    Partial,
    /// v < b.
    Full,
    /// v < a.
    Bonus,
}

impl Tier {
    /// Grades `value` against `[a, b, c]`; strict `<` as the course states it,
    /// so a threshold of 0 cannot be beaten.
    pub fn grade(value: Option<f64>, tiers: &Tiers) -> Tier {
        match value {
            Some(v) if v < tiers[0] => Tier::Bonus,
            Some(v) if v < tiers[1] => Tier::Full,
            Some(v) if v < tiers[2] => Tier::Partial,
            _ => Tier::None,
        }
    }

    /// Lowercase name.
    pub fn name(self) -> &'static str {
        match self {
            Tier::None => "none",
            Tier::Partial => "partial",
            Tier::Full => "full",
            Tier::Bonus => "bonus",
        }
    }
}

/// One correctness check's result.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Check {
    /// 1..=6 as numbered in the course facts; 7 is the packet-storm verdict.
    pub number: u8,
    /// Short name.
    pub name: &'static str,
    /// Held?
    pub passed: bool,
    /// The numbers behind the verdict.
    pub detail: String,
}

/// One scored metric.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Metric {
    /// total_msgs, failures, duplicates or median_latency.
    pub name: &'static str,
    /// The value; `None` when nothing was measured (no answered MID).
    pub value: Option<f64>,
    /// `[a, b, c]`.
    pub thresholds: Tiers,
    /// The grade.
    pub tier: Tier,
}

/// The 10th, 20th ... 90th percentile (nearest rank below), empty for no values.
pub fn deciles(values: &[f64]) -> Vec<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    if sorted.is_empty() {
        return Vec::new();
    }
    (1..10).map(|k| sorted[sorted.len() * k / 10]).collect()
}

/// Median as Python's `statistics.median`: the mean of the two middle values for even counts.
pub fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    Some(if sorted.len() % 2 == 1 {
        sorted[mid]
    } else {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    })
}

fn fraction(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

/// The six course checks in order, then a seventh of ours: the run was not
/// cut short by a packet storm (the course's facts say it stops, not how it
/// scores; a run that stopped early has not tested the rest of the scenario).
pub fn checks(scenario: &Scenario, data: &RunData) -> Vec<Check> {
    let t = &scenario.tests;
    let w = &data.work;
    let mut first_error = data.errors.first().cloned().unwrap_or_default();
    if data.error_count > 1 {
        first_error = format!("{} errors; first: {first_error}", data.error_count);
    }
    let deaths: Vec<String> = data
        .deaths
        .iter()
        .map(|d| format!("{} at {:.3}s: {}", d.replica, d.time, d.reason))
        .collect();
    let get_unanswered = fraction(data.unanswered_gets, w.gets);
    let put_unanswered = fraction(data.unanswered_puts, w.puts);
    let not_generated = fraction(w.gets_not_generated, w.intended_gets);
    let floor = scenario.minimum_total_msgs();
    vec![
        Check {
            number: 1,
            name: "no incorrect reply or malformed message",
            passed: data.error_count == 0,
            detail: if data.error_count == 0 {
                "none".into()
            } else {
                first_error
            },
        },
        Check {
            number: 2,
            name: "no replica died unless killed",
            passed: data.deaths.is_empty(),
            detail: if deaths.is_empty() {
                "none".into()
            } else {
                deaths.join("; ")
            },
        },
        Check {
            number: 3,
            name: "at least one put acknowledged",
            passed: w.puts_acked >= 1,
            detail: format!("{} puts acknowledged", w.puts_acked),
        },
        Check {
            number: 4,
            name: "unanswered gets and puts within limits",
            passed: get_unanswered <= t.maximum_get_fail_fraction
                && put_unanswered <= t.maximum_put_fail_fraction,
            detail: format!(
                "gets {}/{} = {:.3} (max {}), puts {}/{} = {:.3} (max {})",
                data.unanswered_gets,
                w.gets,
                get_unanswered,
                t.maximum_get_fail_fraction,
                data.unanswered_puts,
                w.puts,
                put_unanswered,
                t.maximum_put_fail_fraction
            ),
        },
        Check {
            number: 5,
            name: "intended gets generated",
            passed: not_generated <= t.maximum_get_generation_fail_fraction,
            detail: format!(
                "{}/{} = {:.3} not generated (max {})",
                w.gets_not_generated,
                w.intended_gets,
                not_generated,
                t.maximum_get_generation_fail_fraction
            ),
        },
        Check {
            number: 6,
            name: "enough replica traffic (no lone leader)",
            passed: data.net.total_msgs as f64 >= floor,
            detail: format!("total_msgs {} (min {floor:.0})", data.net.total_msgs),
        },
        Check {
            number: 7,
            name: "no packet storm",
            passed: data.stop != StopReason::PacketStorm,
            detail: match data.stop {
                StopReason::PacketStorm => format!(
                    "stopped at {:.3}s after {} replica-bound messages",
                    data.ended_at, data.net.total_msgs
                ),
                StopReason::Lifetime => "ran to the end".into(),
            },
        },
    ]
}

/// The four metrics with their tiers.
pub fn metrics(scenario: &Scenario, data: &RunData) -> Vec<Metric> {
    let b = &scenario.tests.benchmarks;
    let failures = data.work.fail_replies + data.unanswered_gets + data.unanswered_puts;
    [
        ("total_msgs", Some(data.net.total_msgs as f64), b.total_msgs),
        ("failures", Some(failures as f64), b.failures),
        (
            "duplicates",
            Some(data.work.duplicates as f64),
            b.duplicates,
        ),
        ("median_latency", median(&data.latencies), b.median_latency),
    ]
    .into_iter()
    .map(|(name, value, thresholds)| Metric {
        name,
        value,
        thresholds,
        tier: Tier::grade(value, &thresholds),
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiers_use_strict_less_than() {
        let t = [0.0, 1.0, 2.0];
        assert_eq!(Tier::grade(Some(0.0), &t), Tier::Full);
        assert_eq!(Tier::grade(Some(1.0), &t), Tier::Partial);
        assert_eq!(Tier::grade(Some(2.0), &t), Tier::None);
        assert_eq!(Tier::grade(Some(-1.0), &t), Tier::Bonus);
        assert_eq!(Tier::grade(None, &t), Tier::None);
        assert!(Tier::Bonus > Tier::Full && Tier::Full > Tier::Partial);
    }

    #[test]
    fn deciles_pick_ranks() {
        assert!(deciles(&[]).is_empty());
        let v: Vec<f64> = (0..20).rev().map(f64::from).collect();
        assert_eq!(
            deciles(&v),
            vec![2.0, 4.0, 6.0, 8.0, 10.0, 12.0, 14.0, 16.0, 18.0]
        );
    }

    #[test]
    fn median_matches_python_statistics() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
    }
}
