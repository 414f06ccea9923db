//! redis-cli typed into on a pseudo-terminal, as an operator uses it against `make local`:
//! `redis-cli -p <port>` with no flags (the cluster file names `redis_default_client`, as
//! configs/local-3.toml does), SET, GET, DEL, a key of another node's shard, errors for an
//! unknown command and a wrong arity, then `quit`. Matches what the terminal shows.
//! Skipped with a note where redis-cli is not installed (.ci/run installs redis-tools).

use kv_e2e::cluster::{Cluster, Spec};
use kv_e2e::pty::{PtyChild, ENTER};
use kv_shared::NodeId;
use std::process::Command;
use std::time::Duration;

const LEADERS_TIMEOUT: Duration = Duration::from_secs(20);
/// How long one answer may take to show: generous, the machine may be busy.
const WAIT: Duration = Duration::from_secs(20);

/// Waits for `prompt`, types `line`, waits until the line editor shows it, presses Enter.
fn enter(p: &mut PtyChild, prompt: &str, line: &str) {
    p.expect_prompt(prompt, WAIT);
    p.send(line);
    p.expect_input(&format!("{prompt}{line}"), WAIT);
    p.send(ENTER);
}

#[test]
fn redis_cli_works_interactively_against_a_cluster() {
    if Command::new("redis-cli").arg("--version").output().is_err() {
        eprintln!("redis-cli is not installed (apt-get install redis-tools); skipping");
        return;
    }
    let mut cluster = Cluster::prepare(Spec::default());
    let path = cluster.config_path().to_path_buf();
    let text = std::fs::read_to_string(&path).expect("cluster file");
    // As configs/local-3.toml: a connection that never AUTHs acts as "admin".
    std::fs::write(&path, format!("redis_default_client = \"admin\"\n{text}"))
        .expect("cluster file");
    for id in cluster.ids() {
        cluster.spawn(id);
    }
    let mut client = cluster.client();
    cluster.wait_for_leaders(&mut client, LEADERS_TIMEOUT);

    let addr = cluster.redis_addr(NodeId(1));
    // redis-cli keeps a history file in $HOME unless told where.
    let home = tempfile::Builder::new()
        .prefix("kv-e2e-redis-cli-")
        .tempdir()
        .expect("temp dir");
    let mut cmd = Command::new("redis-cli");
    cmd.args(["-h", &addr.ip().to_string(), "-p", &addr.port().to_string()])
        .env("HOME", home.path())
        .env("REDISCLI_HISTFILE", home.path().join("history"));
    let mut p = PtyChild::spawn(cmd);
    let prompt = format!("{addr}> ");

    // The gateway may still be connecting to the cluster: PING until it answers.
    enter(&mut p, &prompt, "ping");
    p.expect_line("PONG", WAIT);
    enter(&mut p, &prompt, "set greeting \"hello world\"");
    p.expect_line("OK", WAIT);
    enter(&mut p, &prompt, "get greeting");
    p.expect_line("\"hello world\"", WAIT);
    // Keys spread over every shard, so some are led by other nodes than the one typed to.
    for i in 0..8 {
        enter(&mut p, &prompt, &format!("set k{i} v{i}"));
        p.expect_line("OK", WAIT);
    }
    enter(&mut p, &prompt, "mget k0 k5 nothing");
    p.expect_line("1) \"v0\"", WAIT);
    p.expect_line("2) \"v5\"", WAIT);
    p.expect_line("3) (nil)", WAIT);
    enter(&mut p, &prompt, "incrby visits 5");
    p.expect_line("(integer) 5", WAIT);
    enter(&mut p, &prompt, "del greeting k0 nothing");
    p.expect_line("(integer) 2", WAIT);
    enter(&mut p, &prompt, "get greeting");
    p.expect_line("(nil)", WAIT);
    enter(&mut p, &prompt, "nosuch a b");
    p.expect_line(
        "(error) ERR unknown command 'nosuch', with args beginning with: 'a' 'b'",
        WAIT,
    );
    enter(&mut p, &prompt, "set onlykey");
    p.expect_line(
        "(error) ERR wrong number of arguments for 'set' command",
        WAIT,
    );
    enter(&mut p, &prompt, "set big x EX 10");
    p.expect("(error) ERR raftkv keys have no TTL", WAIT);
    // The connection still serves after the errors.
    enter(&mut p, &prompt, "get k5");
    p.expect_line("\"v5\"", WAIT);
    enter(&mut p, &prompt, "quit");
    assert_eq!(p.wait_exit(WAIT), 0, "redis-cli leaves with exit code 0");
}
