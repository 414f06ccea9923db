//! toy_replica: a deliberately simple replica used only by kvharness's own tests.
//!
//! Replica 0000 is a fixed leader that answers from memory and broadcasts one
//! dummy message per put (so check 6 holds); the others redirect to it. No
//! consensus, no failover. `TOY_BUG` selects a deliberate bug that a specific
//! harness check must catch:
//! `wrong-value`, `dup-ok`, `redirect-then-ok`, `bad-leader`, `no-replicate`,
//! `die` (0001 exits), `late-hello` (0002 says hello late), `empty`
//! (0000 sends an empty datagram), `storm` (200 broadcasts per put),
//! `last-words` (0000 broadcasts one datagram on SIGTERM, then exits 143):
//! not a bug but a replica whose last words the harness may or may not deliver.

use std::collections::HashMap;
use std::net::UdpSocket;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const LEADER: &str = "0000";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let (Some(port), Some(me)) = (args.get(1).and_then(|p| p.parse::<u16>().ok()), args.get(2))
    else {
        eprintln!("usage: toy_replica <port> <id> <peer ids...>");
        return ExitCode::from(2);
    };
    let bug = std::env::var("TOY_BUG").unwrap_or_default();
    match serve(port, me, &bug) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("toy_replica {me}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn serve(port: u16, me: &str, bug: &str) -> std::io::Result<ExitCode> {
    let socket = UdpSocket::bind("127.0.0.1:0")?;
    socket.connect(("127.0.0.1", port))?;
    let start = Instant::now();
    if bug == "late-hello" && me == "0002" {
        std::thread::sleep(Duration::from_millis(1000));
    }
    let send = |msg: Value| socket.send(msg.to_string().as_bytes()).map(|_| ());
    send(json!({"src": me, "dst": "FFFF", "leader": "FFFF", "type": "hello"}))?;
    if bug == "empty" && me == LEADER {
        socket.send(b"")?;
    }
    if bug == "last-words" && me == LEADER {
        last_words_on_sigterm(socket.try_clone()?, me)?;
    }
    socket.set_read_timeout(Some(Duration::from_millis(50)))?;
    let leader_field = if bug == "bad-leader" { "0BAD" } else { LEADER };
    let mut store: HashMap<String, String> = HashMap::new();
    let mut tricked = false;
    let mut buf = vec![0u8; 65_536];
    loop {
        if bug == "die" && me == "0001" && start.elapsed() > Duration::from_millis(300) {
            return Ok(ExitCode::from(3));
        }
        let len = match socket.recv(&mut buf) {
            Ok(len) => len,
            Err(e)
                // Interrupted: a signal (SIGTERM under `last-words`) hit a recv with a timeout.
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) =>
            {
                continue
            }
            Err(e) => return Err(e),
        };
        let Ok(msg) = serde_json::from_slice::<Value>(&buf[..len]) else {
            continue;
        };
        let text = |name: &str| msg[name].as_str().unwrap_or_default().to_string();
        let kind = text("type");
        if kind != "get" && kind != "put" {
            continue; // peer traffic: the toy replicates nothing
        }
        let reply = |kind: &str| json!({"src": me, "dst": text("src"), "leader": leader_field, "type": kind, "MID": text("MID")});
        if me != LEADER {
            send(reply("redirect"))?;
            continue;
        }
        if kind == "get" {
            let mut ok = reply("ok");
            let value = store.get(&text("key")).cloned().unwrap_or_default();
            ok["value"] = json!(if bug == "wrong-value" {
                "0".repeat(32)
            } else {
                value
            });
            send(ok)?;
            continue;
        }
        store.insert(text("key"), text("value"));
        if bug == "redirect-then-ok" && !tricked {
            tricked = true;
            send(reply("redirect"))?;
        }
        send(reply("ok"))?;
        if bug == "dup-ok" {
            send(reply("ok"))?;
        }
        let copies = match bug {
            "no-replicate" => 0,
            "storm" => 200,
            _ => 1,
        };
        for _ in 0..copies {
            send(json!({"src": me, "dst": "FFFF", "leader": leader_field, "type": "dummy"}))?;
        }
    }
}

/// Exit code of a replica that exits on SIGTERM itself: 128 + 15, as a shell reports it.
const EXIT_ON_SIGTERM: u8 = 143;

/// Installs a SIGTERM handler before returning, so no kill meets the default action;
/// on SIGTERM a thread broadcasts one datagram naming `me` leader, then exits.
fn last_words_on_sigterm(socket: UdpSocket, me: &str) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    let mut term = runtime.block_on(async {
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    })?;
    let words = json!({"src": me, "dst": "FFFF", "leader": me, "type": "last-words"}).to_string();
    std::thread::spawn(move || {
        runtime.block_on(term.recv());
        // Exiting is what matters now; a lost datagram is what the test would catch.
        let _ = socket.send(words.as_bytes());
        std::process::exit(i32::from(EXIT_ON_SIGTERM));
    });
    Ok(())
}
