//! Scenario files: the course harness's JSON config format, parsed and validated at the edge.

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Most replicas a scenario may ask for; ids stay below the client ids (`0015`..).
pub const REPLICAS_MAX: usize = 16;
/// Most requests a scenario may ask for.
pub const REQUESTS_MAX: usize = 100_000;
/// Longest run (wait + lifetime + end_wait) a scenario may ask for, in seconds.
pub const RUN_SECS_MAX: f64 = 3600.0;
/// The course harness's packet-storm cutoff (replica-bound messages).
pub const PACKET_STORM_MSGS: u64 = 20_000;

/// What can be wrong with a scenario file.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a scenario in the expected format.
    #[error("{path}: {source}")]
    Parse {
        /// The file.
        path: String,
        /// Why.
        source: serde_json::Error,
    },
    /// The scenario parses but asks for something impossible.
    #[error("{path}: {reason}")]
    Invalid {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
}

/// A fault injected at a fixed time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// SIGTERM the replica the harness last saw named as leader.
    KillLeader,
    /// SIGTERM a random live replica other than the last-named leader.
    KillNonLeader,
    /// Split into a majority holding the current leader and the rest.
    PartEasy,
    /// Split into a random majority and the rest.
    PartHard,
    /// Heal the partition.
    PartEnd,
}

/// One scheduled fault.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Event {
    /// What happens.
    #[serde(rename = "type")]
    pub kind: EventKind,
    /// Seconds after the first request (the course table's convention).
    pub time: f64,
}

/// Three thresholds `[a, b, c]`: v < a bonus, v < b full, v < c partial, else none.
pub type Tiers = [f64; 3];

/// The four scored metrics' thresholds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Benchmarks {
    /// Replica-bound messages.
    pub total_msgs: Tiers,
    /// Fail replies plus requests unanswered at the end.
    pub failures: Tiers,
    /// Extra ok replies to an already-answered MID.
    pub duplicates: Tiers,
    /// Median seconds from a MID's send to its first reply.
    pub median_latency: Tiers,
}

/// The correctness thresholds and the scoring tiers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tests {
    /// Check 4: most gets that may be unanswered at the end (fraction of gets).
    #[serde(default = "half")]
    pub maximum_get_fail_fraction: f64,
    /// Check 4: most puts that may be unanswered at the end (fraction of puts).
    #[serde(default = "half")]
    pub maximum_put_fail_fraction: f64,
    /// Check 5: most intended gets that may fail to be generated.
    #[serde(default = "tenth")]
    pub maximum_get_generation_fail_fraction: f64,
    /// Check 6: total_msgs must reach requests x replicas x (1 - mix) x this.
    #[serde(default = "half")]
    pub minimum_total_msgs_fraction: f64,
    /// Accepted so that course-style files load; not checked, because what
    /// it measures is not among the facts this harness follows.
    #[serde(default)]
    pub maximum_appends_batched_fraction: Option<f64>,
    /// Scoring thresholds.
    pub benchmarks: Benchmarks,
}

fn half() -> f64 {
    0.5
}
fn tenth() -> f64 {
    0.1
}
fn default_wait() -> f64 {
    5.0
}
fn default_end_wait() -> f64 {
    2.0
}
fn default_mix() -> f64 {
    0.8
}
fn default_clients() -> usize {
    8
}
fn default_max_packets() -> u64 {
    PACKET_STORM_MSGS
}

/// A scenario as written in the file (the course's config keys, plus
/// `clients` and `max_packets`, which the course fixes at 8 and 20,000).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Seconds over which the requests are evenly spaced (30 in the course).
    pub lifetime: f64,
    /// Number of replicas (ids `0000`..).
    pub replicas: usize,
    /// Client operations generated over `lifetime`.
    pub requests: usize,
    /// Probability that an operation is a get.
    #[serde(default = "default_mix")]
    pub mix: f64,
    /// Probability that each replica-bound copy is dropped.
    #[serde(default)]
    pub drops: f64,
    /// Seconds from launch to the first request.
    #[serde(default = "default_wait")]
    pub wait: f64,
    /// Seconds after the last request before the run ends and is measured.
    #[serde(default = "default_end_wait")]
    pub end_wait: f64,
    /// Seed used when none is given on the command line.
    #[serde(default)]
    pub seed: Option<u64>,
    /// Number of clients (8 in the course).
    #[serde(default = "default_clients")]
    pub clients: usize,
    /// Replica-bound messages at which the run stops as a packet storm.
    #[serde(default = "default_max_packets")]
    pub max_packets: u64,
    /// Scheduled faults.
    #[serde(default)]
    pub events: Vec<Event>,
    /// Correctness thresholds and scoring tiers.
    pub tests: Tests,
}

impl Scenario {
    /// Reads and validates a scenario file.
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
            path: shown.clone(),
            source,
        })?;
        Scenario::parse(&shown, &text)
    }

    /// Parses and validates scenario text; `origin` names it in errors.
    pub fn parse(origin: &str, text: &str) -> Result<Scenario, ScenarioError> {
        let scenario: Scenario =
            serde_json::from_str(text).map_err(|source| ScenarioError::Parse {
                path: origin.to_string(),
                source,
            })?;
        scenario
            .validate()
            .map_err(|reason| ScenarioError::Invalid {
                path: origin.to_string(),
                reason,
            })?;
        Ok(scenario)
    }

    /// Checks every limit; the error says which one is broken.
    pub fn validate(&self) -> Result<(), String> {
        let in_unit = |v: f64| (0.0..=1.0).contains(&v);
        if !(1..=REPLICAS_MAX).contains(&self.replicas) {
            return Err(format!("replicas must be 1..={REPLICAS_MAX}"));
        }
        if !(1..=REQUESTS_MAX).contains(&self.requests) {
            return Err(format!("requests must be 1..={REQUESTS_MAX}"));
        }
        if !(1..=64).contains(&self.clients) {
            return Err("clients must be 1..=64".into());
        }
        if !in_unit(self.mix) {
            return Err("mix must be in [0, 1]".into());
        }
        if !in_unit(self.drops) {
            return Err("drops must be in [0, 1]".into());
        }
        if !(self.lifetime > 0.0 && self.wait >= 0.0 && self.end_wait >= 0.0) {
            return Err("lifetime must be > 0, wait and end_wait >= 0".into());
        }
        if self.wait + self.lifetime + self.end_wait > RUN_SECS_MAX {
            return Err(format!(
                "wait + lifetime + end_wait must be <= {RUN_SECS_MAX} s"
            ));
        }
        if self.max_packets == 0 {
            return Err("max_packets must be > 0".into());
        }
        for event in &self.events {
            if !(event.time >= 0.0 && event.time < self.lifetime + self.end_wait) {
                return Err(format!(
                    "event {:?} at {} s falls outside the run (times count from the first request)",
                    event.kind, event.time
                ));
            }
        }
        let t = &self.tests;
        for (name, v) in [
            ("maximum_get_fail_fraction", t.maximum_get_fail_fraction),
            ("maximum_put_fail_fraction", t.maximum_put_fail_fraction),
            (
                "maximum_get_generation_fail_fraction",
                t.maximum_get_generation_fail_fraction,
            ),
            ("minimum_total_msgs_fraction", t.minimum_total_msgs_fraction),
        ] {
            if !in_unit(v) {
                return Err(format!("tests.{name} must be in [0, 1]"));
            }
        }
        let b = &t.benchmarks;
        for (name, tiers) in [
            ("total_msgs", b.total_msgs),
            ("failures", b.failures),
            ("duplicates", b.duplicates),
            ("median_latency", b.median_latency),
        ] {
            let ordered = tiers[0] >= 0.0 && tiers[0] <= tiers[1] && tiers[1] <= tiers[2];
            if !ordered {
                return Err(format!(
                    "tests.benchmarks.{name} must be [a, b, c] with 0 <= a <= b <= c"
                ));
            }
        }
        Ok(())
    }

    /// Launch-relative time of request `index` (evenly spaced from `wait`).
    pub fn request_time(&self, index: usize) -> Duration {
        let spacing = self.lifetime / self.requests as f64;
        Duration::from_secs_f64(self.wait + spacing * index as f64)
    }

    /// Launch-relative time of an event.
    pub fn event_time(&self, event: &Event) -> Duration {
        Duration::from_secs_f64(self.wait + event.time)
    }

    /// Launch-relative end of the run: wait + lifetime + end_wait.
    pub fn end_time(&self) -> Duration {
        Duration::from_secs_f64(self.wait + self.lifetime + self.end_wait)
    }

    /// Check 6's floor: requests x replicas x (1 - mix) x fraction.
    pub fn minimum_total_msgs(&self) -> f64 {
        self.requests as f64
            * self.replicas as f64
            * (1.0 - self.mix)
            * self.tests.minimum_total_msgs_fraction
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"{
        "lifetime": 30, "replicas": 5, "requests": 500, "mix": 0.8, "drops": 0,
        "tests": { "benchmarks": {
            "total_msgs": [1200, 3000, 5000], "failures": [0, 1, 2],
            "duplicates": [0, 2, 5], "median_latency": [0.0004, 0.002, 0.05] } }
    }"#;

    #[test]
    fn defaults_follow_the_course_facts() {
        let s = Scenario::parse("minimal", MINIMAL).unwrap();
        assert_eq!(s.wait, 5.0);
        assert_eq!(s.end_wait, 2.0);
        assert_eq!(s.end_time(), Duration::from_secs(37));
        assert_eq!(s.clients, 8);
        assert_eq!(s.max_packets, 20_000);
        assert_eq!(s.tests.maximum_get_fail_fraction, 0.5);
        assert_eq!(s.tests.maximum_get_generation_fail_fraction, 0.1);
        assert_eq!(s.request_time(0), Duration::from_secs(5));
        assert_eq!(s.request_time(250), Duration::from_secs(20));
        assert!((s.minimum_total_msgs() - 250.0).abs() < 1e-9);
    }

    #[test]
    fn loads_a_course_style_file() {
        let text = r#"{
          "lifetime": 30, "replicas": 5, "requests": 300, "mix": 0.2, "drops": 0.15, "end_wait": 5,
          "seed": 12, "events": [{"type": "kill_leader", "time": 8}, {"type": "kill_leader", "time": 16}],
          "tests": { "maximum_appends_batched_fraction": 0.5, "benchmarks": {
            "total_msgs": [1000, 3000, 4000], "failures": [1, 10, 100],
            "duplicates": [0, 2, 10], "median_latency": [0.00015, 0.005, 0.05] } }
        }"#;
        let s = Scenario::parse("course", text).unwrap();
        assert_eq!(s.end_time(), Duration::from_secs(40));
        assert_eq!(s.event_time(&s.events[1]), Duration::from_secs(21));
        assert_eq!(s.seed, Some(12));
    }

    #[test]
    fn rejects_bad_values_and_unknown_fields() {
        let bad = |from: &str, to: &str| {
            let text = MINIMAL.replacen(from, to, 1);
            assert_ne!(text, MINIMAL, "replacement {from} not applied");
            Scenario::parse("bad", &text).unwrap_err().to_string()
        };
        assert!(bad("\"mix\": 0.8", "\"mix\": 1.5").contains("mix"));
        assert!(bad("\"replicas\": 5", "\"replicas\": 0").contains("replicas"));
        assert!(bad("\"lifetime\": 30", "\"lifetime\": 0").contains("lifetime"));
        assert!(bad("[0, 2, 5]", "[3, 2, 5]").contains("duplicates"));
        assert!(bad("\"drops\": 0", "\"drops\": 0, \"drop\": 1").contains("unknown field"));
        let late = bad(
            "\"drops\": 0",
            "\"drops\": 0, \"events\": [{\"type\": \"kill_leader\", \"time\": 36}]",
        );
        assert!(late.contains("outside the run"));
        let typo = bad(
            "\"drops\": 0",
            "\"drops\": 0, \"events\": [{\"type\": \"kill_leaders\", \"time\": 3}]",
        );
        assert!(typo.contains("unknown variant"));
    }
}
