//! The kvcli binary against the fake cluster: one-shot exit codes, script mode (one result
//! per line, stop at the first error or keep going), JSON output, and bench's history file.

mod common;

use common::FakeCluster;
use std::io::Write;
use std::process::{Command, Output, Stdio};

/// Runs kvcli against `fake` with `args`, feeding `stdin`.
fn kvcli(fake: &FakeCluster, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kvcli"))
        .args([
            "--nodes",
            &fake.nodes_flag(),
            "--cluster-id",
            &fake.cluster_id.to_string(),
            "--key-file",
            fake.key_file().to_str().unwrap(),
        ])
        .args(["--attempt-timeout", "100ms", "--unavailable-after", "500ms"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kvcli starts");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn one_shot_commands_exit_0_1_or_2() {
    let fake = FakeCluster::start(3, 4, Some(1));
    let o = kvcli(&fake, &["put", "greeting", "hello world"], "");
    assert_eq!(
        (o.status.code(), text(&o.stdout)),
        (Some(0), "OK\n".into()),
        "{}",
        text(&o.stderr)
    );
    let o = kvcli(&fake, &["get", "greeting"], "");
    assert_eq!(
        (o.status.code(), text(&o.stdout)),
        (Some(0), "\"hello world\"\n".into())
    );
    let o = kvcli(&fake, &["get", "nope"], "");
    assert_eq!(
        (o.status.code(), text(&o.stdout)),
        (Some(1), "(not found)\n".into())
    );
    let o = kvcli(&fake, &["cas", "greeting", "bye", "x"], "");
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        text(&o.stdout),
        "cas mismatch: the current value is \"hello world\"\n"
    );
    let o = kvcli(&fake, &["cas", "lock", "--absent", "hex:00ff"], "");
    assert_eq!(o.status.code(), Some(0));
    let o = kvcli(&fake, &["--json", "get", "lock"], "");
    assert_eq!(
        text(&o.stdout),
        "{\"result\":\"ok\",\"value\":\"hex:00ff\"}\n"
    );
    let o = kvcli(&fake, &["put", "k"], "");
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(text(&o.stderr), "error: usage: put KEY VALUE\n");
    fake.ctl().leader = None;
    let o = kvcli(&fake, &["put", "k", "v"], "");
    assert_eq!(o.status.code(), Some(2));
    let err = text(&o.stderr);
    assert!(
        err.starts_with("error: unavailable: shard ") && err.contains("has no leader"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "one line: {err}");
}

#[test]
fn a_script_prints_one_result_per_line_and_stops_at_the_first_error() {
    let fake = FakeCluster::start(1, 2, Some(1));
    let script = "put a 1\n# a comment\n\nget a\nget \"no such\"\nbogus\nget a\n";
    let o = kvcli(&fake, &[], script);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(text(&o.stdout), "OK\n1\n(not found)\n");
    assert_eq!(
        text(&o.stderr),
        "error: line 6: unknown command \"bogus\"; type help for the list\n"
    );

    let o = kvcli(&fake, &["--keep-going"], script);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(text(&o.stdout), "OK\n1\n(not found)\n1\n");

    let o = kvcli(&fake, &["--json", "--keep-going"], script);
    let lines: Vec<serde_json::Value> = text(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let results: Vec<&str> = lines
        .iter()
        .map(|l| l["result"].as_str().unwrap())
        .collect();
    assert_eq!(results, ["ok", "ok", "not-found", "error", "ok"]);

    // A refused request names its line too, not only a parse error.
    let big = "v".repeat(32 * 1024 + 1);
    let o = kvcli(
        &fake,
        &["--keep-going"],
        &format!("put a 1\nput b {big}\nincr a\n"),
    );
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(text(&o.stdout), "OK\n2\n");
    let err = text(&o.stderr);
    assert!(
        err.starts_with("error: line 2: value is 32769 bytes; the limit VALUE_BYTES_MAX"),
        "{err}"
    );

    let o = kvcli(&fake, &[], "put x 1\ndel x\nget x\nquit\nget x\n");
    assert_eq!(
        (o.status.code(), text(&o.stdout)),
        (Some(0), "OK\nOK\n(not found)\n".into())
    );
}

/// A zero wait is refused up front: `--unavailable-after 0` would report a shard with a
/// leader as having none ("waited 0 ms").
#[test]
fn zero_durations_are_refused_naming_the_flag() {
    // Refused while parsing the command line, before any cluster is asked.
    let kvcli = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_kvcli"))
            .args(args)
            .output()
            .expect("kvcli runs")
    };
    for flag in ["--unavailable-after", "--attempt-timeout"] {
        let o = kvcli(&[flag, "0", "get", "k"]);
        assert_eq!(o.status.code(), Some(2), "{flag}: {}", text(&o.stderr));
        let err = text(&o.stderr);
        assert!(
            err.contains(flag) && err.contains("\"0\" is zero"),
            "{flag}: {err}"
        );
    }
    let o = kvcli(&["bench", "--duration", "0ms"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("\"0ms\" is zero"),
        "{}",
        text(&o.stderr)
    );
}

/// Runs `kvcli ARGS | READER` (with `2>&1` when `stderr_too`) where the reader closes its
/// end of the pipe at once, and kvcli starts only 300 ms later, so every write it makes
/// there meets a closed pipe. Returns kvcli's exit code and what else it wrote to stderr.
fn into_a_closed_pipe(args: &[&str], stderr_too: bool) -> (Option<i32>, String) {
    let kvcli = env!("CARGO_BIN_EXE_kvcli");
    let dir = tempfile::tempdir().unwrap();
    let code_file = dir.path().join("code");
    let quoted: Vec<String> = args.iter().map(|a| format!("'{a}'")).collect();
    let o = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "(sleep 0.3; '{kvcli}' {} {}; echo $? > '{}') | (exec 0<&-; sleep 1)",
            quoted.join(" "),
            if stderr_too { "2>&1" } else { "" },
            code_file.display()
        ))
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("sh runs");
    let code = std::fs::read_to_string(&code_file)
        .ok()
        .and_then(|c| c.trim().parse().ok());
    (code, text(&o.stderr))
}

/// `kvcli help | head -3`, `kvcli bench ... | head` and `kvcli bench ... 2>&1 | head`
/// must not panic when the reader goes away: the output is dropped and kvcli exits with
/// the command's own code.
#[test]
fn a_reader_that_closes_the_pipe_causes_no_panic() {
    let (code, err) = into_a_closed_pipe(&["help"], false);
    assert_eq!(code, Some(0), "{err}");
    let fake = FakeCluster::start(2, 2, Some(1));
    let nodes = fake.nodes_flag();
    let cluster_id = fake.cluster_id.to_string();
    let key = fake.key_file().to_str().unwrap().to_string();
    // 1.5 s: at least one progress line on stderr, then the report on stdout.
    let args = [
        "--nodes",
        &nodes,
        "--cluster-id",
        &cluster_id,
        "--key-file",
        &key,
        "bench",
        "--duration",
        "1500ms",
        "--clients",
        "2",
    ];
    for (json, stderr_too) in [(false, false), (true, false), (false, true)] {
        let args: Vec<&str> = args
            .iter()
            .copied()
            .chain(json.then_some("--json"))
            .collect();
        let (code, err) = into_a_closed_pipe(&args, stderr_too);
        assert_eq!(code, Some(0), "json {json}, stderr too {stderr_too}: {err}");
    }
}

/// `kvcli --help` lists every command of the command table under "Commands".
#[test]
fn the_help_flag_lists_every_command() {
    let o = Command::new(env!("CARGO_BIN_EXE_kvcli"))
        .arg("--help")
        .output()
        .expect("kvcli runs");
    let help = text(&o.stdout);
    let listed = help
        .split_once("Commands (REPL, script or one-shot):")
        .and_then(|(_, rest)| rest.split_once("Exit codes"))
        .map(|(list, _)| list)
        .unwrap_or_else(|| panic!("no command list in:\n{help}"));
    for (name, _, _) in kvcli::command::COMMANDS {
        assert!(listed.contains(name), "{name} missing from:\n{listed}");
    }
}

/// `kvcli help cas` is kvcli's help, as typed in the REPL, not clap's.
#[test]
fn help_for_one_command_works_one_shot() {
    let fake = FakeCluster::start(1, 2, Some(1));
    let o = kvcli(&fake, &["help", "cas"], "");
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(
        text(&o.stdout),
        "cas KEY EXPECTED NEW | KEY --absent NEW\n  write NEW only if KEY holds EXPECTED (or is absent)\n"
    );
    let o = kvcli(&fake, &["help"], "");
    assert!(text(&o.stdout).contains("incr KEY [DELTA]"));
    // The aliases the docs list have the help of their command.
    let o = kvcli(&fake, &["help", "set"], "");
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(
        text(&o.stdout).starts_with("put KEY VALUE\n"),
        "{}",
        text(&o.stdout)
    );
    // No such command: an error, exit 2, as for any mistyped command.
    let o = kvcli(&fake, &["help", "frob"], "");
    assert_eq!(
        (o.status.code(), text(&o.stderr)),
        (
            Some(2),
            "error: unknown command \"frob\"; type help for the list\n".into()
        )
    );
    assert!(o.stdout.is_empty());
}

#[test]
fn shard_leader_asks_the_shards_leader_and_checks_the_shard() {
    let fake = FakeCluster::start(3, 2, Some(2));
    let o = kvcli(&fake, &["shard", "leader", "1", "3"], "");
    assert_eq!(
        (o.status.code(), text(&o.stdout)),
        (Some(0), "OK\n".into()),
        "{}",
        text(&o.stderr)
    );
    assert_eq!(fake.ctl().preferred_leaders, vec![(1, 3)]);
    let o = kvcli(&fake, &["shard", "leader", "2", "3"], "");
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(
        text(&o.stderr),
        "error: malformed request: shard 2 does not exist; the cluster has 2 shards\n"
    );
}

#[test]
fn shard_move_asks_the_shards_leader_waits_and_reports_the_move() {
    let fake = FakeCluster::start(3, 2, Some(2));
    let o = kvcli(
        &fake,
        &["shard", "move", "1", "--from", "1", "--to", "3"],
        "",
    );
    assert_eq!(
        (o.status.code(), text(&o.stdout)),
        (
            Some(0),
            "OK: shard 1's replica moved from node 1 to node 3\n".into()
        ),
        "{}",
        text(&o.stderr)
    );
    assert!(
        text(&o.stderr)
            .contains("moving shard 1's replica from node 1 to node 3: waiting up to 600 s"),
        "{}",
        text(&o.stderr)
    );
    let moves = fake.ctl().moves.clone();
    assert_eq!(moves.len(), 1);
    assert_eq!(
        (moves[0].0, moves[0].1, moves[0].2, moves[0].4),
        (1, 1, 3, 1),
        "seq 1 of its own session"
    );
    let o = kvcli(
        &fake,
        &[
            "--json", "shard", "move", "0", "--from", "2", "--to", "3", "--wait", "5",
        ],
        "",
    );
    let v: serde_json::Value = serde_json::from_str(&text(&o.stdout)).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"result": "ok", "shard": 0, "from": 2, "to": 3})
    );
    let o = kvcli(
        &fake,
        &["shard", "move", "0", "--from", "2", "--to", "2"],
        "",
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o.stderr).ends_with(
            "shard s0: cannot move a replica from node n2 to node n2: from and to are the same node\n"
        ),
        "{}",
        text(&o.stderr)
    );
    let o = kvcli(
        &fake,
        &["--json", "shard", "move", "0", "--from", "2", "--to", "2"],
        "",
    );
    let v: serde_json::Value = serde_json::from_str(&text(&o.stdout)).unwrap();
    assert_eq!(v["kind"], "move-refused");
    let o = kvcli(
        &fake,
        &["shard", "move", "5", "--from", "1", "--to", "3"],
        "",
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o.stderr).contains("shard 5 does not exist"),
        "{}",
        text(&o.stderr)
    );
    let o = kvcli(&fake, &["shard", "move", "1", "--from", "1"], "");
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o.stderr).contains("usage: shard"),
        "{}",
        text(&o.stderr)
    );
}

#[test]
fn status_and_shard_show_the_leader() {
    let fake = FakeCluster::start(3, 2, Some(2));
    let o = kvcli(&fake, &["status"], "");
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    assert!(out.starts_with("SHARD  LEADER  TERM"), "{out}");
    assert!(out.contains("s1     n2"), "{out}");
    assert_eq!(out.matches(" up ").count(), 3, "{out}");
    let o = kvcli(&fake, &["--json", "shard", "k"], "");
    let v: serde_json::Value = serde_json::from_str(&text(&o.stdout)).unwrap();
    assert_eq!(v["leader"], 2);
}

#[test]
fn bench_writes_a_checkable_history_and_a_json_report() {
    let fake = FakeCluster::start(3, 4, Some(3));
    let dir = std::env::temp_dir().join(format!("kvcli-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let history = dir.join("run.jsonl");
    let o = kvcli(
        &fake,
        &[
            "--json",
            "bench",
            "--clients",
            "8",
            "--ops",
            "400",
            "--keys",
            "20",
            "--check",
            "--history",
            history.to_str().unwrap(),
        ],
        "",
    );
    let stderr = text(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&text(&o.stdout)).unwrap();
    assert_eq!(report["ops"], 400);
    assert_eq!(report["check"]["verdict"], "linearizable");
    assert!(report["cpu"]["percent_of_one_core"].as_f64().unwrap() >= 0.0);
    let lines = std::fs::read_to_string(&history).unwrap();
    let records = kvcli::history::read_jsonl(&lines).unwrap();
    assert_eq!(records.len(), 400);
    assert!(
        stderr.contains("history: 400 operations written"),
        "{stderr}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn node_drain_and_remove_refuse_what_cannot_work() {
    // Every shard on all 3 nodes (R = 3): no node can be spared.
    let fake = FakeCluster::start(3, 4, Some(1));
    let o = kvcli(&fake, &["node", "drain", "2"], "");
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(
        text(&o.stderr),
        "error: cannot drain node 2: the other live nodes (1, 3) cannot hold 3 replicas of every shard (each replica of a shard needs its own node)\n"
    );
    let o = kvcli(&fake, &["--json", "node", "drain", "2"], "");
    let v: serde_json::Value = serde_json::from_str(&text(&o.stdout)).unwrap();
    assert_eq!(v["kind"], "balance-refused", "{v}");
    let o = kvcli(&fake, &["node", "remove", "2", "--dead"], "");
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o.stderr).starts_with("error: node 2 answers, so it is not dead"),
        "{}",
        text(&o.stderr)
    );
    let o = kvcli(&fake, &["node", "drain", "9"], "");
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(
        text(&o.stderr),
        "error: node 9 is not a node of this cluster (nodes: 1, 2, 3)\n"
    );
    let o = kvcli(&fake, &["node", "remove", "2"], "");
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o.stderr).contains("use node drain 2"),
        "{}",
        text(&o.stderr)
    );
    assert!(fake.ctl().moves.is_empty(), "nothing was moved");
}

#[test]
fn rebalance_status_and_dry_run_show_the_plan_and_rebalance_asks_the_leader() {
    // Every shard on all 3 nodes, all led by node 1: only leaders are off balance.
    let fake = FakeCluster::start(3, 4, Some(1));
    let o = kvcli(&fake, &["rebalance", "status"], "");
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    assert!(out.contains("1     live      4         4"), "{out}");
    assert!(
        out.contains("not balanced: 2 leaderships above the mean's ceiling"),
        "{out}"
    );
    assert!(
        out.contains("next round: 0 moves, 2 leader transfers"),
        "{out}"
    );
    assert!(
        out.contains("shard 0: leadership from node 1 to node 2"),
        "{out}"
    );
    let o = kvcli(&fake, &["--json", "rebalance", "--dry-run"], "");
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let v: serde_json::Value = serde_json::from_str(&text(&o.stdout)).unwrap();
    assert_eq!(v["rounds"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["after"]["balanced"], true, "{v}");
    // The fake records preferences but its leader stays: rebalance asks, then gives up.
    let o = kvcli(&fake, &["--json", "rebalance", "--wait", "1"], "");
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
    let v: serde_json::Value = serde_json::from_str(&text(&o.stdout)).unwrap();
    assert_eq!(v["kind"], "gave-up", "{v}");
    assert_eq!(fake.ctl().preferred_leaders, vec![(0, 2), (1, 3)]);
}

#[test]
fn bench_refuses_a_bad_key_set_name_and_a_key_set_with_check() {
    let fake = FakeCluster::start(1, 1, Some(1));
    let bad = kvcli(&fake, &["bench", "--ops", "1", "--key-set", "a-b"], "");
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        text(&bad.stderr).contains("1 to 16 ASCII letters and digits"),
        "{}",
        text(&bad.stderr)
    );
    let checked = kvcli(
        &fake,
        &["bench", "--ops", "1", "--key-set", "s1", "--check"],
        "",
    );
    assert_eq!(checked.status.code(), Some(2));
    assert!(
        text(&checked.stderr).contains("--check"),
        "{}",
        text(&checked.stderr)
    );
}
