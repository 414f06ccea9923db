//! The stable fuzz driver CI runs: every target gets its checked-in regression inputs
//! (`fuzz/regressions/<target>/`, each a crash found once), then a bounded stream of
//! mutated inputs from one seed. A failing input is written to
//! `target/fuzz-failures/<target>/` and named in the panic message, ready to be checked
//! in as a regression once fixed.
//!
//! `KV_FUZZ_INPUTS` sets the inputs per target (default [`INPUTS_PER_TARGET`]),
//! `KV_FUZZ_SEED` the mutator's seed (default [`DRIVER_SEED`]).

use kv_fuzz::mutate::Mutator;
use kv_fuzz::{Target, TARGETS};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

/// Mutated inputs per target in CI, sized for a budget of about a minute for all targets
/// together on a 2-core machine in the dev profile.
const INPUTS_PER_TARGET: u64 = 500_000;
/// The default mutator seed, so that CI runs the same inputs every time.
const DRIVER_SEED: u64 = 0x6675_7a7a;

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        Err(_) => default,
    }
}

fn workspace_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn regressions(target: &Target) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = workspace_dir().join("fuzz/regressions").join(target.name);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries.map(|e| e.expect("readable dir").path()).collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let data = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p, data)
        })
        .collect()
}

/// Runs one input; on a panic, saves it and fails naming the file.
fn run_one(target: &Target, data: &[u8], what: &str) {
    if catch_unwind(AssertUnwindSafe(|| (target.run)(data))).is_ok() {
        return;
    }
    let dir = workspace_dir()
        .join("target/fuzz-failures")
        .join(target.name);
    std::fs::create_dir_all(&dir).expect("create the failure dir");
    let file = dir.join(format!("{:016x}", fnv1a(data)));
    std::fs::write(&file, data).expect("save the failing input");
    panic!(
        "fuzz target {} failed on {what}; input saved to {} (reproduce: cargo +nightly fuzz run {} {})",
        target.name,
        file.display(),
        target.name,
        file.display()
    );
}

/// A stable name for a failing input (FNV-1a).
fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn drive(target: &Target) {
    let inputs = env_u64("KV_FUZZ_INPUTS", INPUTS_PER_TARGET);
    let seed = env_u64("KV_FUZZ_SEED", DRIVER_SEED);
    let regressions = regressions(target);
    for (path, data) in &regressions {
        run_one(target, data, &format!("regression {}", path.display()));
    }
    let mut pool = (target.seeds)();
    for seed_input in pool.clone() {
        run_one(target, &seed_input, "a seed input");
    }
    pool.extend(regressions.into_iter().map(|(_, d)| d));
    let mut mutator = Mutator::new(seed ^ fnv1a(target.name.as_bytes()), pool);
    for i in 0..inputs {
        let data = mutator.next_input();
        run_one(
            target,
            &data,
            &format!("mutated input {i} of seed {seed:#x}"),
        );
    }
}

#[test]
fn every_target_is_driven() {
    let names: Vec<_> = TARGETS.iter().map(|t| t.name).collect();
    let bins = std::fs::read_dir(workspace_dir().join("fuzz/fuzz_targets"))
        .expect("fuzz/fuzz_targets exists");
    let mut bins: Vec<String> = bins
        .map(|e| {
            let p = e.expect("readable dir").path();
            p.file_stem()
                .expect("a file")
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    bins.sort();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(
        bins, sorted,
        "each target has one cargo-fuzz binary and no other exists"
    );
}

macro_rules! fuzz_test {
    ($name:ident) => {
        #[test]
        fn $name() {
            let target = kv_fuzz::targets::by_name(stringify!($name)).expect("a target");
            drive(target);
        }
    };
}

fuzz_test!(wire_header);
fuzz_test!(peer_datagram);
fuzz_test!(client_requests);
fuzz_test!(course_protocol);
fuzz_test!(wal_recovery);
fuzz_test!(snapshot_image);
fuzz_test!(raft_step);
