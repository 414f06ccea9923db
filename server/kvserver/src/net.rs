//! The socket boundary: which client address a `ClientToken` stands for, and the
//! counters (with rate-limited warnings) for datagrams that were dropped. Bytes become
//! validated values in `kv_shared::wire` and `kv_node::codec`; this module only keeps
//! the books about what was refused.

use crate::ratelimit::RateLimit;
use kv_node::ClientToken;
use kv_shared::wire::WireError;
use std::collections::{HashMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

/// Most IPv6 client addresses remembered at once; the oldest is forgotten past this (a
/// reply to a forgotten address is dropped and the client retries).
pub const CLIENT_V6_ADDRS_MAX: usize = 4096;

/// Tag bit of tokens that index the IPv6 table (IPv4 tokens use the low 48 bits only).
const V6_TAG: u64 = 1 << 63;

/// Maps client addresses to the opaque tokens the node core carries, and back.
///
/// An IPv4 address and port fit in 48 bits, so such a token IS the address: no table,
/// no allocation, nothing to expire. IPv6 addresses get numbered slots in a bounded table.
#[derive(Debug, Default)]
pub struct ClientAddrs {
    v6_by_addr: HashMap<SocketAddr, u64>,
    v6_by_token: HashMap<u64, SocketAddr>,
    v6_order: VecDeque<u64>,
    v6_next: u64,
}

impl ClientAddrs {
    /// The token for `addr`, creating one if needed.
    pub fn token_for(&mut self, addr: SocketAddr) -> ClientToken {
        if let SocketAddr::V4(v4) = addr {
            return ClientToken(u64::from(u32::from(*v4.ip())) << 16 | u64::from(v4.port()));
        }
        if let Some(&t) = self.v6_by_addr.get(&addr) {
            return ClientToken(t);
        }
        if self.v6_order.len() >= CLIENT_V6_ADDRS_MAX {
            if let Some(old) = self.v6_order.pop_front() {
                if let Some(a) = self.v6_by_token.remove(&old) {
                    self.v6_by_addr.remove(&a);
                }
            }
        }
        let t = V6_TAG | self.v6_next;
        self.v6_next += 1;
        self.v6_by_addr.insert(addr, t);
        self.v6_by_token.insert(t, addr);
        self.v6_order.push_back(t);
        ClientToken(t)
    }

    /// The address behind `token`, or `None` if it was forgotten.
    pub fn addr_of(&self, token: ClientToken) -> Option<SocketAddr> {
        if token.0 & V6_TAG == 0 {
            let ip = Ipv4Addr::from((token.0 >> 16) as u32);
            return Some(SocketAddr::V4(SocketAddrV4::new(ip, token.0 as u16)));
        }
        self.v6_by_token.get(&token.0).copied()
    }
}

/// Why an incoming datagram was dropped (one counter each).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// Truncated, bad magic, version, kind or length.
    BadHeader,
    /// Checksum mismatch.
    BadChecksum,
    /// Another cluster's datagram.
    WrongCluster,
    /// The header is fine but the payload does not decode.
    BadPayload,
    /// A peer datagram from a node id that is not a member (or is this node).
    UnknownSender,
    /// A kind a server never receives (client replies).
    UnexpectedKind,
    /// A reply whose client address was forgotten, or a send that failed.
    SendFailed,
}

const DROP_KINDS: usize = 7;

impl DropReason {
    fn index(self) -> usize {
        self as usize
    }

    /// The counter's name in log lines.
    pub fn name(self) -> &'static str {
        match self {
            DropReason::BadHeader => "bad_header",
            DropReason::BadChecksum => "bad_checksum",
            DropReason::WrongCluster => "wrong_cluster",
            DropReason::BadPayload => "bad_payload",
            DropReason::UnknownSender => "unknown_sender",
            DropReason::UnexpectedKind => "unexpected_kind",
            DropReason::SendFailed => "send_failed",
        }
    }

    /// Every reason, in counter order.
    pub const ALL: [DropReason; DROP_KINDS] = [
        DropReason::BadHeader,
        DropReason::BadChecksum,
        DropReason::WrongCluster,
        DropReason::BadPayload,
        DropReason::UnknownSender,
        DropReason::UnexpectedKind,
        DropReason::SendFailed,
    ];

    /// The counter a header error belongs to.
    pub fn of_wire_error(e: &WireError) -> DropReason {
        match e {
            WireError::BadChecksum => DropReason::BadChecksum,
            WireError::WrongCluster { .. } => DropReason::WrongCluster,
            WireError::BadPayload(_) => DropReason::BadPayload,
            WireError::Truncated { .. }
            | WireError::BadMagic(_)
            | WireError::BadVersion(_)
            | WireError::BadKind(_)
            | WireError::BadLength { .. } => DropReason::BadHeader,
        }
    }
}

/// Traffic counters since start, and a warning limiter per drop kind.
#[derive(Debug)]
pub struct Counters {
    /// Datagrams received (valid or not).
    pub datagrams_in: u64,
    /// Datagrams sent.
    pub datagrams_out: u64,
    /// Client requests handed to the core (or answered by the runtime).
    pub client_requests: u64,
    drops: [u64; DROP_KINDS],
    warn: [RateLimit; DROP_KINDS],
}

/// At most one warning line per drop kind per this interval.
pub const DROP_WARN_INTERVAL: Duration = Duration::from_secs(1);

impl Default for Counters {
    fn default() -> Self {
        Counters {
            datagrams_in: 0,
            datagrams_out: 0,
            client_requests: 0,
            drops: [0; DROP_KINDS],
            warn: std::array::from_fn(|_| RateLimit::new(DROP_WARN_INTERVAL)),
        }
    }
}

impl Counters {
    /// Counts a dropped datagram and logs a warning unless one of this kind was logged
    /// within [`DROP_WARN_INTERVAL`].
    pub fn dropped(&mut self, kind: DropReason, from: SocketAddr, why: &dyn std::fmt::Display) {
        self.drops[kind.index()] += 1;
        if let Some(suppressed) = self.warn[kind.index()].check(Instant::now()) {
            tracing::warn!(
                counter = kind.name(),
                %from,
                suppressed,
                total = self.drops[kind.index()],
                "dropped datagram: {why}"
            );
        }
    }

    /// Total drops of one kind.
    pub fn drops(&self, kind: DropReason) -> u64 {
        self.drops[kind.index()]
    }

    /// Total drops of all kinds.
    pub fn drops_total(&self) -> u64 {
        self.drops.iter().sum()
    }

    /// `name=count` for every drop kind, for the metrics log line.
    pub fn drops_summary(&self) -> String {
        let mut s = String::new();
        for d in DropReason::ALL {
            if !s.is_empty() {
                s.push(' ');
            }
            s.push_str(d.name());
            s.push('=');
            s.push_str(&self.drops[d.index()].to_string());
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_tokens_are_the_address_itself() {
        let mut m = ClientAddrs::default();
        for a in [
            "127.0.0.1:1",
            "10.1.2.3:65535",
            "255.255.255.255:0",
            "0.0.0.0:7101",
        ] {
            let a: SocketAddr = a.parse().unwrap();
            let t = m.token_for(a);
            assert_eq!(m.addr_of(t), Some(a));
        }
        assert!(m.v6_by_addr.is_empty());
    }

    #[test]
    fn ipv6_tokens_are_bounded_and_forget_the_oldest() {
        let mut m = ClientAddrs::default();
        let addr = |i: usize| -> SocketAddr { format!("[::1]:{}", 1000 + i).parse().unwrap() };
        let first = m.token_for(addr(0));
        assert_eq!(m.token_for(addr(0)), first, "same address, same token");
        for i in 1..=CLIENT_V6_ADDRS_MAX {
            let t = m.token_for(addr(i));
            assert_eq!(m.addr_of(t), Some(addr(i)));
        }
        assert_eq!(m.addr_of(first), None, "the oldest was forgotten");
        assert_eq!(m.v6_by_addr.len(), CLIENT_V6_ADDRS_MAX);
        assert_eq!(m.v6_by_token.len(), CLIENT_V6_ADDRS_MAX);
    }

    #[test]
    fn drops_are_counted_per_kind() {
        let mut c = Counters::default();
        let from: SocketAddr = "127.0.0.1:9".parse().unwrap();
        for _ in 0..3 {
            c.dropped(
                DropReason::of_wire_error(&WireError::BadChecksum),
                from,
                &"x",
            );
        }
        c.dropped(
            DropReason::of_wire_error(&WireError::WrongCluster { got: 1, want: 2 }),
            from,
            &"y",
        );
        assert_eq!(c.drops(DropReason::BadChecksum), 3);
        assert_eq!(c.drops(DropReason::WrongCluster), 1);
        assert_eq!(c.drops_total(), 4);
        assert!(c.drops_summary().contains("bad_checksum=3"));
    }
}
