//! Free ports for the processes the tests start, chosen below the kernel's ephemeral range.
//!
//! Probing with `bind(port 0)` and closing the socket again leaves a window in which any
//! outgoing connection or client socket of a concurrent test (they draw from the same
//! ephemeral range) may take the port before the node binds it, and the node then fails
//! with "cannot bind the Redis protocol address ...: Address already in use". Ports below
//! the ephemeral range are never handed out by the kernel on its own, and this module
//! hands each one out once per test process, so the window only stays open to processes
//! that pick fixed ports in the same range.

use std::net::{IpAddr, SocketAddr, TcpListener, UdpSocket};
use std::sync::Mutex;

/// The lowest port handed out: above the well-known and commonly configured ports.
const PORT_MIN: u16 = 10_000;

/// The next port to try; starts at a place that depends on the process id, so that test
/// processes running at the same time (several worktrees on one machine) mostly differ.
static NEXT: Mutex<Option<u16>> = Mutex::new(None);

/// The first port of the kernel's ephemeral range (`ip_local_port_range`), or 32768.
fn ephemeral_min() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

/// A port on `ip` that is free for both UDP and TCP now, below the ephemeral range, and
/// not handed out before by this process.
pub fn free_port(ip: IpAddr) -> u16 {
    let top = ephemeral_min();
    assert!(
        top > PORT_MIN + 1_000,
        "the ephemeral port range starts at {top}: no room below it for test ports"
    );
    let span = top - PORT_MIN;
    let mut next = NEXT.lock().unwrap_or_else(|e| e.into_inner());
    let mut port = next.unwrap_or_else(|| PORT_MIN + (std::process::id() % u32::from(span)) as u16);
    for _ in 0..span {
        let candidate = port;
        port = if port + 1 >= top { PORT_MIN } else { port + 1 };
        let udp = UdpSocket::bind((ip, candidate));
        let tcp = TcpListener::bind((ip, candidate));
        if udp.is_ok() && tcp.is_ok() {
            *next = Some(port);
            return candidate;
        }
    }
    panic!("no free port on {ip} between {PORT_MIN} and {top}");
}

/// [`free_port`] as an address.
pub fn free_addr(ip: IpAddr) -> SocketAddr {
    SocketAddr::new(ip, free_port(ip))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// The tests below move the shared cursor (one rewinds it): run them one at a time.
    static SERIAL: Mutex<()> = Mutex::new(());

    #[test]
    fn ports_are_distinct_bindable_and_below_the_ephemeral_range() {
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        // Each port is bound right as it is handed out. On a machine shared with other
        // work, CI twice saw one of fifty refused between the hand-out and the bind (by
        // what, not established), so a few may be; a `free_port` that handed out ports
        // in use fails all fifty.
        let mut taken = Vec::new();
        let ports: BTreeSet<u16> = (0..50)
            .map(|_| {
                let p = free_port(ip);
                if UdpSocket::bind((ip, p)).is_err() || TcpListener::bind((ip, p)).is_err() {
                    taken.push(p);
                }
                p
            })
            .collect();
        assert!(
            taken.len() <= 2,
            "handed-out ports that did not bind: {taken:?}"
        );
        assert_eq!(ports.len(), 50, "a port was handed out twice");
        for &p in &ports {
            assert!((PORT_MIN..ephemeral_min()).contains(&p), "{p} out of range");
        }
    }

    #[test]
    fn a_port_in_use_is_skipped() {
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        // Another process may take a port between the probe and this bind (the window
        // the module's note describes): then hold the next one instead.
        let (taken, _holder) = loop {
            let port = free_port(ip);
            if let Ok(holder) = TcpListener::bind((ip, port)) {
                break (port, holder);
            }
        };
        // Rewind the cursor onto the held port: it must be passed over.
        *NEXT.lock().unwrap() = Some(taken);
        let got = free_port(ip);
        assert_ne!(got, taken);
        TcpListener::bind((ip, got)).expect("the port given instead is free");
    }
}
