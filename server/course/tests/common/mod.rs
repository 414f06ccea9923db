//! What the end-to-end tests share: one run of an inline scenario against the real
//! 3700kvstore under kv-harness.

use kv_harness::{run_blocking, LateDatagrams, Report, RunOptions, Scenario};

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
