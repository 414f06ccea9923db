//! 3700kvstore: `./3700kvstore <UDP port> <own id> <peer id> ...`, a raftkv replica under
//! the course harness. Thin glue: parse arguments, handle SIGTERM, bind, run (see the
//! kv_course crate).

use anyhow::Context;
use clap::Parser;
use kv_course::ids::Roster;
use kv_course::runtime::Runtime;
use kv_course::settings::{Overrides, Settings};
use signal_hook::consts::SIGTERM;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// A raftkv replica under the course harness (course mode).
#[derive(Parser)]
#[command(name = "3700kvstore")]
struct Args {
    /// The harness's UDP port on localhost.
    port: u16,
    /// This replica's id (4 hex digits).
    own_id: String,
    /// The other replicas' ids.
    peer_ids: Vec<String>,
    /// Tuning overrides; the harness passes none.
    #[command(flatten)]
    overrides: Overrides,
}

fn main() -> ExitCode {
    // clap exits with 2 on a usage error, as the errors below do.
    let args = Args::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("3700kvstore: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let roster = Roster::new(&args.own_id, &args.peer_ids)?;
    Overrides::check_env_names(std::env::vars()).map_err(anyhow::Error::msg)?;
    let mut settings = args
        .overrides
        .apply(Settings::default())
        .map_err(anyhow::Error::msg)?;
    // Election jitter must differ between replicas and between runs.
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    settings.seed = nanos ^ u64::from(std::process::id()).rotate_left(32);
    // The harness ends a replica with SIGTERM: the first one lets the runtime say its
    // last words (`Runtime::run`), a second ends the process at once.
    let terminate = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register_conditional_shutdown(SIGTERM, 1, Arc::clone(&terminate))
        .and_then(|_| signal_hook::flag::register(SIGTERM, Arc::clone(&terminate)))
        .context("handling SIGTERM")?;
    let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).context("binding a UDP socket")?;
    let harness = SocketAddr::from((Ipv4Addr::LOCALHOST, args.port));
    Runtime::start(socket, harness, roster, settings)?.run(&terminate)
}
