//! What the end-to-end tests share: the shape of their scenarios, and one run of an
//! inline scenario against the real 3700kvstore under kv-harness.

use kv_harness::{run_blocking, LateDatagrams, Report, RunOptions, Scenario};

/// A scenario of five replicas living 6 s, the leader killed once, under the course's
/// correctness limits and benchmark tiers; what the tests set is here, the rest they share.
pub struct LeaderKill {
    pub requests: u32,
    /// Share of gets among the requests.
    pub mix: f64,
    pub drops: f64,
    /// Seconds after the lifetime that answers may still come.
    pub end_wait: f64,
    /// Seconds into the run that the leader is killed.
    pub kill_at: f64,
    /// The failures benchmark's tiers (full, partial, none).
    pub failures: [u32; 3],
}

impl LeaderKill {
    /// The scenario as kv-harness reads it.
    pub fn json(&self) -> String {
        serde_json::json!({
            "lifetime": 6,
            "replicas": 5,
            "requests": self.requests,
            "mix": self.mix,
            "drops": self.drops,
            "wait": 4,
            "end_wait": self.end_wait,
            "events": [{"type": "kill_leader", "time": self.kill_at}],
            "tests": {
                "maximum_get_fail_fraction": 0.5,
                "maximum_put_fail_fraction": 0.5,
                "maximum_get_generation_fail_fraction": 0.1,
                "minimum_total_msgs_fraction": 0.5,
                "benchmarks": {
                    "total_msgs": [1000, 2000, 4000],
                    "failures": self.failures,
                    "duplicates": [0, 2, 5],
                    "median_latency": [0.0005, 0.005, 0.05]
                }
            }
        })
        .to_string()
    }
}

/// Runs scenario `json` (named `name`) once with `seed`, the harness treating a killed
/// replica's late datagrams as `late` says.
pub fn run_inline(name: &str, json: &str, seed: u64, late: LateDatagrams) -> Report {
    let scenario = Scenario::parse(name, json).expect("valid scenario");
    let replica = env!("CARGO_BIN_EXE_3700kvstore");
    let mut options = RunOptions::new(replica, seed);
    options.late_datagrams = late;
    let data = run_blocking(&scenario, &options).expect("harness ran");
    Report::new(&scenario, name, "(inline)", seed, 1, replica, data)
}
