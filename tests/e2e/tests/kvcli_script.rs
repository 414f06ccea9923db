//! The real kvcli binary against a real 3-node kvserver cluster, without a terminal: a
//! script on stdin prints exactly one result per line (human and `--json`), stops at the
//! first error unless `--keep-going`, and one-shot commands exit 0, 1 or 2.

use kv_e2e::cli::{self, Run};
use kv_e2e::cluster::{Cluster, Spec};
use kv_shared::config::ClusterConfig;
use kv_shared::limits::{KEY_BYTES_MAX, VALUE_BYTES_MAX};
use serde_json::{json, Value};
use std::time::Duration;

const LEADERS_TIMEOUT: Duration = Duration::from_secs(15);
/// Generous: a run is a handful of requests, but the machine may be busy.
const RUN_TIMEOUT: Duration = Duration::from_secs(30);

/// A started cluster with a leader on every shard, and its cluster file's contents.
fn ready_cluster() -> (Cluster, ClusterConfig) {
    let mut c = Cluster::start(Spec::default());
    let mut client = c.client();
    c.wait_for_leaders(&mut client, LEADERS_TIMEOUT);
    let config = ClusterConfig::load(c.config_path()).expect("the cluster file loads");
    (c, config)
}

/// `kvcli --cluster FILE args...` with `stdin`.
fn kvcli(c: &Cluster, args: &[&str], stdin: &str) -> Run {
    let file = c.config_path().to_str().expect("utf-8 temp path");
    let mut all = vec!["--cluster", file];
    all.extend_from_slice(args);
    cli::run(&all, stdin, RUN_TIMEOUT)
}

/// Every command kind, on keys named `{p}...`; it leaves exactly two keys behind.
fn script(p: &str) -> String {
    format!(
        "# a comment, then a blank line: neither prints anything\n\
         \n\
         put {p}greeting \"hello world\"\n\
         get {p}greeting\n\
         cas {p}greeting \"hello world\" bye\n\
         cas {p}greeting \"hello world\" again\n\
         get {p}greeting\n\
         cas {p}fresh --absent first\n\
         cas {p}fresh --absent second\n\
         put '{p}key with spaces' hex:00ff10\n\
         get '{p}key with spaces'\n\
         del {p}greeting\n\
         get {p}greeting\n\
         get {p}never-written\n\
         shard {p}fresh\n\
         status\n"
    )
}

/// The lines `script` prints before `shard` (human output).
const SCRIPT_RESULTS: &[&str] = &[
    "OK",
    "\"hello world\"",
    "OK",
    "cas mismatch: the current value is bye",
    "bye",
    "OK",
    "cas mismatch: the current value is first",
    "OK",
    "hex:00ff10",
    "OK",
    "(not found)",
    "(not found)",
];

/// `node N (ADDR)` of each node in the cluster file, by id.
fn node_names(config: &ClusterConfig) -> Vec<(u64, String)> {
    config
        .nodes
        .iter()
        .map(|n| (n.id, format!("node {} ({})", n.id, n.addr)))
        .collect()
}

#[test]
fn a_script_prints_one_exact_result_per_line_in_text_and_json() {
    let (c, config) = ready_cluster();

    // Text output.
    let run = kvcli(&c, &[], &script(""));
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(run.stderr, "", "no errors, no noise on stderr");
    let lines = run.lines();
    assert_eq!(&lines[..SCRIPT_RESULTS.len()], SCRIPT_RESULTS, "{run:?}");

    // `shard`: the shard kv-shared computes and a leader from the cluster file.
    let shard = kv_shared::shard::shard_for_key(b"fresh", config.shards).0;
    let shard_line = lines[SCRIPT_RESULTS.len()];
    let leader = shard_line
        .strip_prefix(&format!("key fresh -> shard {shard}; leader "))
        .unwrap_or_else(|| panic!("shard line: {shard_line:?}"));
    assert!(
        node_names(&config).iter().any(|(_, n)| n == leader),
        "the cached leader {leader:?} is a node of the cluster file"
    );

    // `status`: a shard table, the metadata group's line, a blank line, a node table, a
    // blank line, the drop table (one row per node), a blank line, the counter table (one
    // row per node); nothing after it.
    let status = &lines[SCRIPT_RESULTS.len() + 1..];
    assert_eq!(
        status[0],
        "SHARD  LEADER  TERM  COMMIT/APPLIED  KEYS  EPOCH  REPLICAS (applied, as each reports it; +learner)"
    );
    let shard_rows = &status[1..=config.shards as usize];
    let mut keys = 0;
    for (i, row) in shard_rows.iter().enumerate() {
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(cells[0], format!("s{i}"), "{row}");
        assert!(["n1", "n2", "n3"].contains(&cells[1]), "a leader: {row}");
        keys += cells[4].parse::<u64>().expect("KEYS is a number");
    }
    assert_eq!(keys, 2, "the script leaves two keys: {status:#?}");
    let metadata = status[config.shards as usize + 1];
    assert!(
        metadata.starts_with("metadata group: voters n1 n2 n3, leader n"),
        "{status:#?}"
    );
    assert_eq!(status[config.shards as usize + 2], "");
    let node_table =
        &status[config.shards as usize + 3..config.shards as usize + 4 + config.nodes.len()];
    assert!(
        node_table[0].starts_with("NODE  ADDRESS"),
        "{node_table:#?}"
    );
    let drops_start = config.shards as usize + 5 + config.nodes.len();
    let drop_table = &status[drops_start..drops_start + 1 + config.nodes.len()];
    assert_eq!(
        drop_table[0], "NODE  DROPPED SINCE START (by reason)",
        "{status:#?}"
    );
    assert_eq!(drop_table.len(), 1 + config.nodes.len(), "{drop_table:#?}");
    let counter_table = &status[drops_start + 2 + config.nodes.len()..];
    assert!(
        counter_table[0].starts_with("NODE  COUNTERS SINCE START"),
        "{status:#?}"
    );
    assert_eq!(
        counter_table.len(),
        1 + config.nodes.len(),
        "{counter_table:#?}"
    );
    for row in &counter_table[1..] {
        assert!(row.contains("requests{udp,status,ok}="), "{row}");
    }
    assert_eq!(node_table.len(), 1 + config.nodes.len(), "{node_table:#?}");
    let mut leads = 0;
    for (row, node) in node_table[1..].iter().zip(&config.nodes) {
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(
            cells[..3],
            [&format!("n{}", node.id), &node.addr.to_string(), "up"]
        );
        leads += cells[5].parse::<u32>().expect("LEADS is a number");
    }
    assert_eq!(
        leads, config.shards,
        "every shard is led once: {node_table:#?}"
    );

    // JSON output: the same script on fresh keys; every line is one JSON object.
    let run = kvcli(&c, &["--json"], &script("j-"));
    assert_eq!(run.code, Some(0), "{run:?}");
    let results: Vec<Value> = run
        .lines()
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?} is not JSON: {e}")))
        .collect();
    let ok = json!({"result": "ok"});
    let expected = [
        ok.clone(),
        json!({"result": "ok", "value": "hello world"}),
        ok.clone(),
        json!({"result": "cas-mismatch", "current": "bye"}),
        json!({"result": "ok", "value": "bye"}),
        ok.clone(),
        json!({"result": "cas-mismatch", "current": "first"}),
        ok.clone(),
        json!({"result": "ok", "value": "hex:00ff10"}),
        ok,
        json!({"result": "not-found", "value": null}),
        json!({"result": "not-found", "value": null}),
    ];
    assert_eq!(results.len(), expected.len() + 2, "{run:?}");
    assert_eq!(results[..expected.len()], expected);
    let shard_json = &results[expected.len()];
    assert_eq!(shard_json["key"], "j-fresh");
    assert_eq!(
        shard_json["shard"],
        kv_shared::shard::shard_for_key(b"j-fresh", config.shards).0
    );
    let leader = shard_json["leader"].as_u64().expect("a cached leader");
    let addr = &config
        .nodes
        .iter()
        .find(|n| n.id == leader)
        .expect("a node")
        .addr;
    assert_eq!(shard_json["leader_addr"], addr.to_string());
    let status = &results[expected.len() + 1];
    assert_eq!(status["result"], "ok");
    let shards = status["shards"].as_array().expect("shards");
    assert_eq!(shards.len(), config.shards as usize);
    assert!(shards.iter().all(|s| s["leader"].is_u64()), "{status}");
    let keys: u64 = shards
        .iter()
        .map(|s| s["keys"].as_u64().expect("keys"))
        .sum();
    assert_eq!(keys, 4, "two keys from each run: {status}");
    let nodes = status["nodes"].as_array().expect("nodes");
    assert_eq!(nodes.len(), config.nodes.len());
    assert!(nodes.iter().all(|n| n["reachable"] == true), "{status}");
}

#[test]
fn a_script_stops_at_the_first_error_unless_keep_going_and_one_shots_exit_0_1_2() {
    let (c, _config) = ready_cluster();
    let long_key = "k".repeat(KEY_BYTES_MAX + 1);
    let key_error = format!(
        "error: key is {} bytes; the limit KEY_BYTES_MAX is {KEY_BYTES_MAX}\n",
        KEY_BYTES_MAX + 1
    );
    let script = format!("put e-a 1\nget {long_key}\nput e-b 2\nget e-b\n");
    // In a script, every error names its line.
    let script_error = format!("error: line 2: {}", &key_error["error: ".len()..]);

    // Stop at the first error: the lines after it do not run.
    let run = kvcli(&c, &[], &script);
    assert_eq!(
        (run.code, run.stdout.as_str()),
        (Some(2), "OK\n"),
        "{run:?}"
    );
    assert_eq!(run.stderr, script_error);
    let run = kvcli(&c, &["get", "e-b"], "");
    assert_eq!(
        (run.code, run.stdout.as_str()),
        (Some(1), "(not found)\n"),
        "the line after the error did not run: {run:?}"
    );

    // --keep-going: every line runs, the exit code still reports the failure.
    let run = kvcli(&c, &["--keep-going"], &script);
    assert_eq!(
        (run.code, run.stdout.as_str()),
        (Some(2), "OK\nOK\n2\n"),
        "{run:?}"
    );
    assert_eq!(run.stderr, script_error);

    // With --json the error is a result line of its own, on stdout.
    let run = kvcli(&c, &["--json", "--keep-going"], &script);
    assert_eq!(run.code, Some(2), "{run:?}");
    let results: Vec<Value> = run
        .lines()
        .iter()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect();
    assert_eq!(
        results,
        [
            json!({"result": "ok"}),
            json!({"result": "error", "kind": "limit", "error": script_error["error: ".len()..].trim_end()}),
            json!({"result": "ok"}),
            json!({"result": "ok", "value": "2"}),
        ]
    );

    // One-shot commands: 0 found, 1 not found or cas mismatch, 2 an error naming the limit.
    let run = kvcli(&c, &["get", "e-a"], "");
    assert_eq!((run.code, run.stdout.as_str()), (Some(0), "1\n"), "{run:?}");
    let run = kvcli(&c, &["get", "e-missing"], "");
    assert_eq!(
        (run.code, run.stdout.as_str()),
        (Some(1), "(not found)\n"),
        "{run:?}"
    );
    let run = kvcli(&c, &["cas", "e-a", "5", "6"], "");
    assert_eq!(
        (run.code, run.stdout.as_str()),
        (Some(1), "cas mismatch: the current value is 1\n"),
        "{run:?}"
    );
    let run = kvcli(&c, &["get", &long_key], "");
    assert_eq!(
        (run.code, run.stdout.as_str(), run.stderr.as_str()),
        (Some(2), "", key_error.as_str())
    );
    let long_value = "v".repeat(VALUE_BYTES_MAX + 1);
    let run = kvcli(&c, &["put", "e-c", &long_value], "");
    assert_eq!(
        (run.code, run.stderr),
        (
            Some(2),
            format!(
                "error: value is {} bytes; the limit VALUE_BYTES_MAX is {VALUE_BYTES_MAX}\n",
                VALUE_BYTES_MAX + 1
            )
        )
    );
    // A usage error is an error too.
    let run = kvcli(&c, &["put", "e-d"], "");
    assert_eq!(
        (run.code, run.stderr.as_str()),
        (Some(2), "error: usage: put KEY VALUE\n")
    );
    // In a script, usage errors and unknown commands name their line as well.
    let run = kvcli(
        &c,
        &["--keep-going"],
        "get e-a\n\nput e-d\nfrobnicate x\nput e-d \"unclosed\n",
    );
    assert_eq!(run.code, Some(2), "{run:?}");
    assert_eq!(run.stdout, "1\n", "{run:?}");
    let errors: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(errors.len(), 3, "{run:?}");
    assert_eq!(errors[0], "error: line 3: usage: put KEY VALUE");
    assert!(errors[1].starts_with("error: line 4: "), "{run:?}");
    assert!(errors[2].starts_with("error: line 5: "), "{run:?}");
}

/// `kvcli bench --check` twice in a row on one cluster, same seed: the checker assumes
/// every key starts absent, so the second run must not use the first run's keys.
#[test]
fn bench_check_twice_on_one_cluster_passes_both_times() {
    let (c, _) = ready_cluster();
    for run in 1..=2 {
        let r = kvcli(
            &c,
            &[
                "bench",
                "--ops",
                "300",
                "--clients",
                "8",
                "--keys",
                "10",
                "--check",
                "--seed",
                "5",
            ],
            "",
        );
        assert_eq!(r.code, Some(0), "run {run}: {}\n{}", r.stdout, r.stderr);
        assert!(
            r.stdout.contains("check: linearizable"),
            "run {run}: {}",
            r.stdout
        );
    }
}

/// `kvcli help cas` one-shot answers as the REPL's `help cas` does, and needs neither a
/// client key nor a running cluster (the cluster file here names key files that do not
/// exist and nodes nobody serves).
#[test]
fn help_works_one_shot_without_a_key_or_a_cluster() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("cluster.toml");
    std::fs::write(
        &file,
        "cluster_id = 1\nshards = 1\nkey_file = \"missing/cluster.key\"\n\
         client_key_files = [\"missing/admin.key\"]\n\
         [[nodes]]\nid = 1\naddr = \"127.0.0.1:9\"\n",
    )
    .expect("write the cluster file");
    let file = file.to_str().expect("utf-8 temp path");
    let run = cli::run(&["--cluster", file, "help", "cas"], "", RUN_TIMEOUT);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(run.stdout.contains("cas"), "{run:?}");
    assert_eq!(run.stderr, "", "{run:?}");
    let all = cli::run(&["--cluster", file, "help"], "", RUN_TIMEOUT);
    assert_eq!(all.code, Some(0), "{all:?}");
    assert!(
        all.stdout.contains("get") && all.stdout.contains("put"),
        "{all:?}"
    );
}
