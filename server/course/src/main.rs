//! 3700kvstore: `./3700kvstore <UDP port> <own id> <peer id> ...`, a raftkv replica under
//! the course harness. Thin glue: parse arguments, bind, run (see the kv_course crate).

use anyhow::Context;
use kv_course::ids::Roster;
use kv_course::runtime::Runtime;
use kv_course::settings::Settings;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("3700kvstore: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 2 {
        anyhow::bail!("usage: 3700kvstore <UDP port> <own id> <peer id> ...");
    }
    let port: u16 = args[0]
        .parse()
        .with_context(|| format!("{:?} is not a UDP port", args[0]))?;
    let roster = Roster::new(&args[1], &args[2..])?;
    let mut settings = Settings::default()
        .with_env(std::env::vars())
        .map_err(anyhow::Error::msg)?;
    // Election jitter must differ between replicas and between runs.
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    settings.seed = nanos ^ u64::from(std::process::id()).rotate_left(32);
    let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).context("binding a UDP socket")?;
    let harness = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    Runtime::start(socket, harness, roster, settings)?.run()
}
