//! The kvharness binary: flags, summary output, JSON output and exit codes.

use std::path::PathBuf;
use std::process::Command;

const KVHARNESS: &str = env!("CARGO_BIN_EXE_kvharness");
const TOY: &str = env!("CARGO_BIN_EXE_toy_replica");

const SHORT: &str = r#"{
  "lifetime": 1.0, "replicas": 3, "requests": 30, "mix": 0.2, "drops": 0.0,
  "wait": 0.5, "end_wait": 0.5,
  "tests": { "maximum_get_generation_fail_fraction": 0.5, "benchmarks": {
    "total_msgs": [10, 1000, 2000], "failures": [0, 1, 2],
    "duplicates": [0, 1, 2], "median_latency": [0.01, 0.05, 0.5] } }
}"#;

/// SHORT cut to 0.7 s, for tests about flags rather than scores.
fn tiny() -> String {
    SHORT
        .replace("\"lifetime\": 1.0", "\"lifetime\": 0.3")
        .replace("\"requests\": 30", "\"requests\": 10")
        .replace("fail_fraction\": 0.5", "fail_fraction\": 1.0")
        .replace(
            "\"wait\": 0.5, \"end_wait\": 0.5",
            "\"wait\": 0.2, \"end_wait\": 0.2",
        )
}

fn scenario_file(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let path = dir.join(format!("{name}.json"));
    std::fs::write(&path, SHORT).unwrap();
    path
}

#[test]
fn quiet_run_prints_a_summary_line_and_exit_code_follows_the_checks() {
    let path = scenario_file("cli-short");
    let out = Command::new(KVHARNESS)
        .args(["--replica", TOY, "--seed", "5", "--quiet"])
        .arg(&path)
        .env("TOY_BUG", "wrong-value")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let line = stdout
        .lines()
        .find(|l| l.starts_with("cli-short"))
        .expect(&stdout);
    assert!(line.contains("FAIL(1)"), "{line}");
    assert!(line.contains(" 5 "), "seed shown: {line}");
    assert!(stdout.contains("scenarios: 0 passed, 1 failed"), "{stdout}");
}

#[test]
#[ignore = "slow: 2 s of real time"]
fn json_output_and_required_tier() {
    let path = scenario_file("cli-json");
    let out = Command::new(KVHARNESS)
        .args([
            "--replica",
            TOY,
            "--seed",
            "6",
            "--json",
            "--require-tier",
            "bonus",
        ])
        .arg(&path)
        .env_remove("TOY_BUG")
        .output()
        .unwrap();
    let reports: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(reports[0]["passed"], true);
    assert_eq!(reports[0]["seed"], 6);
    // failures can never be below a bonus threshold of 0, so bonus is not met.
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn bad_scenario_is_a_setup_error() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let path = dir.join("cli-bad.json");
    std::fs::write(&path, SHORT.replace("\"mix\": 0.2", "\"mix\": 2")).unwrap();
    let out = Command::new(KVHARNESS)
        .args(["--replica", TOY])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("mix"));
}

#[test]
fn all_expands_the_configs_directory_and_runs_repeat_with_consecutive_seeds() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cli-all");
    std::fs::create_dir_all(&dir).unwrap();
    let tiny = tiny();
    for name in ["b-second", "a-first"] {
        std::fs::write(dir.join(format!("{name}.json")), &tiny).unwrap();
    }
    std::fs::write(dir.join("notes.txt"), "not a scenario").unwrap();
    let out = Command::new(KVHARNESS)
        .args([
            "--replica",
            TOY,
            "--seed",
            "40",
            "--runs",
            "2",
            "--quiet",
            "all",
        ])
        .arg("--configs")
        .arg(&dir)
        .env_remove("TOY_BUG")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let rows: Vec<Vec<&str>> = stdout
        .lines()
        .skip(1)
        .filter(|l| !l.starts_with("scenarios:"))
        .map(|l| l.split_whitespace().take(3).collect())
        .collect();
    let expected = [
        ["a-first", "1", "40"],
        ["a-first", "2", "41"],
        ["b-second", "1", "40"],
        ["b-second", "2", "41"],
    ];
    assert_eq!(rows, expected.map(|r| r.to_vec()).to_vec(), "{stdout}");
    assert_eq!(out.status.code(), Some(0), "{stdout}");
}

#[test]
fn late_datagrams_policy_reaches_the_report() {
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cli-late.json");
    std::fs::write(&path, tiny()).unwrap();
    let run = |extra: &[&str]| {
        let out = Command::new(KVHARNESS)
            .args(["--replica", TOY, "--seed", "9"])
            .args(extra)
            .arg(&path)
            .env_remove("TOY_BUG")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let text = run(&["--late-datagrams", "deliver"]);
    assert!(
        text.contains(
            "late datagrams of killed replicas (--late-datagrams deliver): delivered 0, ignored 0"
        ),
        "{text}"
    );
    let json: serde_json::Value = serde_json::from_str(&run(&["--json"])).unwrap();
    let late = &json[0]["data"]["late"];
    assert_eq!(late["policy"], "drop", "the default: {late}");
    assert_eq!(late["ignored"], 0);
}

#[test]
fn late_datagrams_flag_takes_drop_or_deliver_only() {
    let out = Command::new(KVHARNESS)
        .args(["--replica", TOY, "--late-datagrams", "keep", "x.json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("[possible values: drop, deliver]"),
        "{stderr}"
    );
    let help = Command::new(KVHARNESS).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("--late-datagrams <POLICY>"), "{help}");
    assert!(help.contains("last words after SIGTERM"), "{help}");
}
