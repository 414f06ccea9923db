//! The interactive kvcli REPL on a pseudo-terminal, against a real 3-node cluster: typed
//! commands answer, TAB completes a command name, Ctrl-C cancels the line and keeps the
//! REPL, Ctrl-D leaves with exit code 0, the history file holds the commands, and a second
//! session recalls them with the Up arrow; Ctrl-C on a write already sent says its
//! outcome is unknown.

use kv_e2e::cluster::{Cluster, Spec};
use kv_e2e::pty::{PtyChild, CTRL_C, CTRL_D, ENTER, KEY_UP, TAB};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const LEADERS_TIMEOUT: Duration = Duration::from_secs(15);
/// How long one answer may take to show: generous, the machine may be busy.
const WAIT: Duration = Duration::from_secs(20);
const PROMPT: &str = "kvcli> ";

/// Starts the REPL on a pty, connected to `c`, keeping history in `history`.
fn repl(c: &Cluster, history: &Path) -> PtyChild {
    let mut cmd = Command::new(kv_e2e::bin::kvcli());
    cmd.arg("--cluster")
        .arg(c.config_path())
        .arg("--history-file")
        .arg(history)
        .env_remove("KVCLI_HISTORY");
    let mut p = PtyChild::spawn(cmd);
    p.expect(
        "kvcli: connected to 3 node(s), 8 shards. Type help for commands, Ctrl-D to leave.",
        WAIT,
    );
    p
}

/// A fresh cluster with every shard led, and a temp dir for the REPL's history (removed
/// when the returned handle drops).
fn led_cluster_and_history_dir() -> (Cluster, tempfile::TempDir) {
    let mut c = Cluster::start(Spec::default());
    let mut client = c.client();
    c.wait_for_leaders(&mut client, LEADERS_TIMEOUT);
    let dir = tempfile::Builder::new()
        .prefix("kv-e2e-repl-")
        .tempdir()
        .expect("temp dir");
    (c, dir)
}

/// Waits for a fresh prompt, types `line` and waits until the line editor shows it.
fn type_at_prompt(p: &mut PtyChild, line: &str) {
    p.expect_prompt(PROMPT, WAIT);
    p.send(line);
    p.expect_input(&format!("{PROMPT}{line}"), WAIT);
}

/// Types `line` at the prompt and presses Enter.
fn enter(p: &mut PtyChild, line: &str) {
    type_at_prompt(p, line);
    p.send(ENTER);
}

#[test]
fn the_repl_answers_completes_cancels_leaves_and_keeps_history() {
    let (c, dir) = led_cluster_and_history_dir();
    let history = dir.path().join("history");

    let mut p = repl(&c, &history);
    enter(&mut p, "put greeting \"hello world\"");
    p.expect_line("OK", WAIT);
    enter(&mut p, "get greeting");
    p.expect_line("\"hello world\"", WAIT);

    // Enter alone does not take the inline hint: `sta` is not a command...
    enter(&mut p, "sta");
    p.expect_line(
        "error: unknown command \"sta\"; type help for the list",
        WAIT,
    );
    // ...but TAB completes it to `status`, which then runs.
    type_at_prompt(&mut p, "sta");
    p.send(TAB);
    p.expect_input(&format!("{PROMPT}status "), WAIT);
    p.send(ENTER);
    p.expect(
        "SHARD  LEADER  TERM  COMMIT/APPLIED  KEYS  EPOCH  REPLICAS (applied, as each reports it; +learner)",
        WAIT,
    );
    p.expect("NODE  ADDRESS", WAIT);

    // Ctrl-C drops the typed line (the put never runs) and the REPL goes on.
    type_at_prompt(&mut p, "put cancelled x");
    p.send(CTRL_C);
    enter(&mut p, "get cancelled");
    p.expect_line("(not found)", WAIT);

    enter(&mut p, "get greeting");
    p.expect_line("\"hello world\"", WAIT);
    p.expect_prompt(PROMPT, WAIT);
    p.send(CTRL_D);
    let code = p.wait_exit(WAIT);
    assert_eq!(code, 0, "Ctrl-D leaves with 0");

    // Every command that ran, as typed (with the space TAB completion added); not the
    // cancelled line.
    let saved = std::fs::read_to_string(&history).expect("the history file exists");
    let entries: Vec<&str> = saved.lines().filter(|l| !l.starts_with("#V")).collect();
    assert_eq!(
        entries,
        [
            "put greeting \"hello world\"",
            "get greeting",
            "sta",
            "status ",
            "get cancelled",
            "get greeting",
        ],
        "history file:\n{saved}"
    );

    // A second session starts from that history: Up recalls the last command, Up again
    // the one before.
    let mut p = repl(&c, &history);
    p.expect_prompt(PROMPT, WAIT);
    p.send(KEY_UP);
    p.expect_input(&format!("{PROMPT}get greeting"), WAIT);
    p.send(ENTER);
    p.expect_line("\"hello world\"", WAIT);
    p.expect_prompt(PROMPT, WAIT);
    p.send(KEY_UP);
    p.send(KEY_UP);
    p.expect_input(&format!("{PROMPT}get cancelled"), WAIT);
    p.send(ENTER);
    p.expect_line("(not found)", WAIT);
    enter(&mut p, "quit");
    let code = p.wait_exit(WAIT);
    assert_eq!(code, 0, "quit leaves with 0");
}

/// Lines pasted at once, or typed while a command runs, are queued and run in order, as
/// in redis-cli: none is lost.
#[test]
fn lines_pasted_or_typed_ahead_all_run_in_order() {
    let (c, dir) = led_cluster_and_history_dir();
    let mut p = repl(&c, &dir.path().join("history"));
    p.expect_prompt(PROMPT, WAIT);
    // One write: the way a terminal delivers a paste without bracketed-paste mode.
    p.send("put ta 1\rincr n\rincr n\rget ta\r");
    p.expect_line("OK", WAIT);
    p.expect_line("1", WAIT);
    p.expect_line("2", WAIT);
    p.expect_line("1", WAIT);
    // Typed ahead while `status` (which waits for every node) runs.
    p.expect_prompt(PROMPT, WAIT);
    p.send("status\r");
    p.send("incr n\r");
    p.expect("NODE  ADDRESS", WAIT);
    p.expect_line("3", WAIT);
    enter(&mut p, "quit");
    let code = p.wait_exit(WAIT);
    assert_eq!(code, 0, "quit leaves with 0");
}

/// Ctrl-C while a write waits for a frozen cluster stops the waiting, not the write: the
/// datagram is in the nodes' socket buffers, and once they resume it applies. So the
/// REPL must say the outcome is unknown, not merely "cancelled".
#[test]
fn ctrl_c_on_a_sent_write_says_its_outcome_is_unknown() {
    use rustix::process::Signal;
    let (mut c, dir) = led_cluster_and_history_dir();
    let mut p = repl(&c, &dir.path().join("history"));
    // Learns the key's leader and a ticket from every node it talks to.
    enter(&mut p, "put frozen before");
    p.expect_line("OK", WAIT);
    for id in c.ids() {
        c.signal(id, Signal::STOP);
    }
    enter(&mut p, "put frozen after");
    // Well under --unavailable-after (5 s): the put is still waiting.
    std::thread::sleep(Duration::from_millis(500));
    p.send(CTRL_C);
    // The terminal echoes ^C at the start of the row.
    p.expect(
        "error: cancelled: kvcli stopped waiting, but the request was sent and may still take effect (its outcome is unknown)",
        WAIT,
    );
    for id in c.ids() {
        c.signal(id, Signal::CONT);
    }
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let out = Command::new(kv_e2e::bin::kvcli())
            .arg("--cluster")
            .arg(c.config_path())
            .args(["get", "frozen"])
            .output()
            .expect("run kvcli get");
        let value = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if value == "after" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the cancelled put never applied: frozen = {value:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    enter(&mut p, "quit");
    assert_eq!(p.wait_exit(WAIT), 0, "quit leaves with 0");
}
