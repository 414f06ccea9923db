//! The socket boundary: which client address a `ClientToken` stands for, and the
//! counters (with rate-limited warnings) for datagrams that were dropped. Bytes become
//! validated values in `kv_shared::wire` and `kv_node::codec`; this module only keeps
//! the books about what was refused.

use crate::auth::ClientRefusal;
use crate::ratelimit::RateLimit;
use kv_node::ClientToken;
use kv_shared::auth::{AuthError, Protection, ReplayError};
use kv_shared::limits::CLIENT_V6_ADDRS_MAX;
use kv_shared::wire::WireError;
use std::collections::{HashMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

/// Tag bit of tokens that index the IPv6 table (IPv4 tokens use the low 60 bits only).
const V6_TAG: u64 = 1 << 63;
/// IPv4 tokens: the address and port in bits 0..48, the route above them.
const V4_ROUTE_SHIFT: u32 = 48;

/// Where replies to one client go besides its address: which client key seals them, and
/// how they are protected (as the request was).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ClientRoute {
    /// Index of the client key ([`crate::auth::NodeKeys::client_index`]).
    pub key_index: u16,
    /// How the replies are sealed.
    pub protection: Protection,
}

impl ClientRoute {
    /// 12 bits: 10 for the key index (CLIENT_KEYS_MAX is 1024), 2 for the protection.
    fn bits(self) -> u64 {
        let protection = match self.protection {
            Protection::Mac => 0,
            Protection::Encrypt => 1,
            Protection::Unauthenticated => 2,
        };
        u64::from(self.key_index) << 2 | protection
    }

    fn from_bits(b: u64) -> ClientRoute {
        let protection = match b & 3 {
            0 => Protection::Mac,
            1 => Protection::Encrypt,
            _ => Protection::Unauthenticated,
        };
        ClientRoute {
            key_index: (b >> 2) as u16,
            protection,
        }
    }
}

const _: () = assert!(kv_shared::limits::CLIENT_KEYS_MAX <= 1 << 10);

/// Maps authenticated clients (address and route) to the opaque tokens the node core
/// carries, and back.
///
/// An IPv4 address, port and route fit in 59 bits, so such a token IS the client: no
/// table, no allocation, nothing to expire. IPv6 clients get numbered slots in a bounded
/// table.
#[derive(Debug, Default)]
pub struct ClientAddrs {
    v6_by_addr: HashMap<(SocketAddr, ClientRoute), u64>,
    v6_by_token: HashMap<u64, (SocketAddr, ClientRoute)>,
    v6_order: VecDeque<u64>,
    v6_next: u64,
}

impl ClientAddrs {
    /// The token for an authenticated client at `addr`, creating one if needed.
    pub fn token_for(&mut self, addr: SocketAddr, route: ClientRoute) -> ClientToken {
        if let SocketAddr::V4(v4) = addr {
            return ClientToken(
                route.bits() << V4_ROUTE_SHIFT
                    | u64::from(u32::from(*v4.ip())) << 16
                    | u64::from(v4.port()),
            );
        }
        if let Some(&t) = self.v6_by_addr.get(&(addr, route)) {
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
        self.v6_by_addr.insert((addr, route), t);
        self.v6_by_token.insert(t, (addr, route));
        self.v6_order.push_back(t);
        ClientToken(t)
    }

    /// The client behind `token`, or `None` if it was forgotten.
    pub fn client_of(&self, token: ClientToken) -> Option<(SocketAddr, ClientRoute)> {
        if token.0 & V6_TAG == 0 {
            let ip = Ipv4Addr::from((token.0 >> 16) as u32);
            let addr = SocketAddr::V4(SocketAddrV4::new(ip, token.0 as u16));
            return Some((addr, ClientRoute::from_bits(token.0 >> V4_ROUTE_SHIFT)));
        }
        self.v6_by_token.get(&token.0).copied()
    }
}

/// Why an incoming datagram (or request) was dropped (one counter each).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// Truncated, bad magic, version, kind, flags or length.
    BadHeader,
    /// Checksum mismatch.
    BadChecksum,
    /// Another cluster's datagram.
    WrongCluster,
    /// The payload has no room for a stamp and a tag, or it says it was sent
    /// unauthenticated (`protection = "none"`) to a node not set to accept that.
    Unsealed,
    /// The tag does not verify: forged, or sealed under a key this node does not hold.
    BadTag,
    /// A verified datagram seen before, or older than the replay window.
    Replayed,
    /// A verified datagram from an older incarnation of its sender (a replay from before
    /// the sender's restart).
    OldIncarnation,
    /// A verified peer datagram meant for another incarnation of this node: recorded
    /// before it restarted, or sent by a peer that had not heard from it yet (a few at
    /// every start, each answered with this node's stamp).
    WrongIncarnation,
    /// A verified client request that echoes no ticket: the first request of a client
    /// process to this node (one per kvcli process and node), or a replay of one.
    /// Answered with a hello carrying the ticket, never executed.
    NoTicket,
    /// A verified client request that echoes a ticket this node does not hold for that
    /// client process: issued before this node restarted or forgot the process, or by
    /// another node (a replay). Answered with a hello carrying the ticket, never executed.
    StaleTicket,
    /// The header is fine and the tag verified but the payload does not decode.
    BadPayload,
    /// A peer datagram from a node id that is not a member (or is this node).
    UnknownSender,
    /// A client request under a key id this node does not know.
    UnknownClient,
    /// More requests in one datagram than CLIENT_REQUESTS_PER_DATAGRAM_MAX.
    TooManyRequests,
    /// A write from a read-only client (answered "permission denied", counted here).
    PermissionDenied,
    /// A kind a server never receives (client replies).
    UnexpectedKind,
    /// A reply whose client address was forgotten, or a send that failed.
    SendFailed,
}

const DROP_KINDS: usize = 17;

impl DropReason {
    fn index(self) -> usize {
        self as usize
    }

    /// The counter's name in log lines and in the status reply.
    pub fn name(self) -> &'static str {
        match self {
            DropReason::BadHeader => "bad_header",
            DropReason::BadChecksum => "bad_checksum",
            DropReason::WrongCluster => "wrong_cluster",
            DropReason::Unsealed => "unsealed",
            DropReason::BadTag => "bad_tag",
            DropReason::Replayed => "replayed",
            DropReason::OldIncarnation => "old_incarnation",
            DropReason::WrongIncarnation => "wrong_incarnation",
            DropReason::NoTicket => "no_ticket",
            DropReason::StaleTicket => "stale_ticket",
            DropReason::BadPayload => "bad_payload",
            DropReason::UnknownSender => "unknown_sender",
            DropReason::UnknownClient => "unknown_client",
            DropReason::TooManyRequests => "too_many_requests",
            DropReason::PermissionDenied => "permission_denied",
            DropReason::UnexpectedKind => "unexpected_kind",
            DropReason::SendFailed => "send_failed",
        }
    }

    /// Every reason, in counter order.
    pub const ALL: [DropReason; DROP_KINDS] = [
        DropReason::BadHeader,
        DropReason::BadChecksum,
        DropReason::WrongCluster,
        DropReason::Unsealed,
        DropReason::BadTag,
        DropReason::Replayed,
        DropReason::OldIncarnation,
        DropReason::WrongIncarnation,
        DropReason::NoTicket,
        DropReason::StaleTicket,
        DropReason::BadPayload,
        DropReason::UnknownSender,
        DropReason::UnknownClient,
        DropReason::TooManyRequests,
        DropReason::PermissionDenied,
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
            | WireError::BadFlags(_)
            | WireError::BadLength { .. } => DropReason::BadHeader,
        }
    }

    /// The counter a failed open belongs to.
    pub fn of_auth_error(e: &AuthError) -> DropReason {
        match e {
            AuthError::Unsealed(_) | AuthError::Unauthenticated => DropReason::Unsealed,
            AuthError::BadTag => DropReason::BadTag,
        }
    }

    /// The counter a refused stamp belongs to.
    pub fn of_replay_error(e: &ReplayError) -> DropReason {
        match e {
            ReplayError::OldIncarnation { .. } => DropReason::OldIncarnation,
            ReplayError::TooOld { .. } | ReplayError::Duplicate(_) => DropReason::Replayed,
            ReplayError::WrongIncarnation { .. } => DropReason::WrongIncarnation,
        }
    }

    /// The counter a refused client request belongs to.
    pub fn of_client_refusal(e: &ClientRefusal) -> DropReason {
        match e {
            ClientRefusal::Replay(e) => DropReason::of_replay_error(e),
            ClientRefusal::NoTicket { .. } => DropReason::NoTicket,
            ClientRefusal::StaleTicket { .. } => DropReason::StaleTicket,
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
    /// Of `datagrams_out`, those sent to peer nodes.
    pub peer_datagrams_out: u64,
    /// Event-loop turns by what woke the loop (`raftkv_loop_turns_total`): with the
    /// datagrams, disk writes and WAL syncs, the turn structure a benchmark divides by
    /// its operations (bench/syscalls.py).
    pub turns: std::collections::BTreeMap<&'static str, u64>,
    /// DiskWrites made (at most one per flush), by the disk thread or the loop itself.
    pub disk_writes: u64,
    /// Of `disk_writes`, those the loop wrote and synced itself (the thread was idle).
    pub disk_writes_here: u64,
    /// WAL group commits (one fsync each), the disk thread's and the loop's.
    pub wal_syncs: u64,
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
            peer_datagrams_out: 0,
            turns: std::collections::BTreeMap::new(),
            disk_writes: 0,
            disk_writes_here: 0,
            wal_syncs: 0,
            drops: [0; DROP_KINDS],
            warn: std::array::from_fn(|_| RateLimit::new(DROP_WARN_INTERVAL)),
        }
    }
}

impl Counters {
    /// Counts a dropped datagram and logs a warning (a debug line for a first contact)
    /// unless one of this kind was logged within [`DROP_WARN_INTERVAL`].
    pub fn dropped(&mut self, kind: DropReason, from: SocketAddr, why: &dyn std::fmt::Display) {
        self.drops[kind.index()] += 1;
        let total = self.drops[kind.index()];
        if let Some(suppressed) = self.warn[kind.index()].check(Instant::now()) {
            let counter = kind.name();
            if kind == DropReason::NoTicket {
                // Every client process's first request to this node: routine, not a warning.
                tracing::debug!(counter, %from, suppressed, total, "dropped datagram: {why}");
            } else {
                tracing::warn!(counter, %from, suppressed, total, "dropped datagram: {why}");
            }
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

    /// `(name, count)` for every drop kind, for the status reply.
    pub fn drops_by_reason(&self) -> Vec<(String, u64)> {
        DropReason::ALL
            .iter()
            .map(|d| (d.name().to_string(), self.drops[d.index()]))
            .collect()
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

    const ROUTE: ClientRoute = ClientRoute {
        key_index: 1023,
        protection: Protection::Encrypt,
    };

    #[test]
    fn ipv4_tokens_are_the_client_itself() {
        let mut m = ClientAddrs::default();
        for a in [
            "127.0.0.1:1",
            "10.1.2.3:65535",
            "255.255.255.255:0",
            "0.0.0.0:7101",
        ] {
            let a: SocketAddr = a.parse().unwrap();
            for route in [
                ROUTE,
                ClientRoute {
                    key_index: 0,
                    protection: Protection::Mac,
                },
                ClientRoute {
                    key_index: 1023,
                    protection: Protection::Unauthenticated,
                },
            ] {
                let t = m.token_for(a, route);
                assert_eq!(t.0 & V6_TAG, 0);
                assert_eq!(m.client_of(t), Some((a, route)));
            }
        }
        assert!(m.v6_by_addr.is_empty());
    }

    #[test]
    fn ipv6_tokens_are_bounded_and_forget_the_oldest() {
        let mut m = ClientAddrs::default();
        let addr = |i: usize| -> SocketAddr { format!("[::1]:{}", 1000 + i).parse().unwrap() };
        let first = m.token_for(addr(0), ROUTE);
        assert_eq!(
            m.token_for(addr(0), ROUTE),
            first,
            "same client, same token"
        );
        for i in 1..=CLIENT_V6_ADDRS_MAX {
            let t = m.token_for(addr(i), ROUTE);
            assert_eq!(m.client_of(t), Some((addr(i), ROUTE)));
        }
        assert_eq!(m.client_of(first), None, "the oldest was forgotten");
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
