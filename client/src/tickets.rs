//! The tickets the nodes issued to this client process, and the requests sent to a node
//! before its ticket was known. A node executes only requests that echo the ticket it
//! gave this process (docs/SECURITY.md, replay protection): the first request to a node
//! echoes 0 and is answered with a hello carrying the ticket, and the requests sent
//! without one go again at once under it, so a first contact costs one more round trip
//! and no timeout.

use bytes::Bytes;
use kv_shared::limits::CLIENT_REQUESTS_PER_DATAGRAM_MAX;
use std::collections::HashMap;
use std::net::SocketAddr;

/// Most requests kept per node for the resend once its ticket arrives; further ones are
/// retried by their sessions' own timeouts.
const WAITING_PER_NODE_MAX: usize = CLIENT_REQUESTS_PER_DATAGRAM_MAX;

/// Tickets by node address (a hello comes from the address requests went to).
#[derive(Debug, Default)]
pub(crate) struct Tickets {
    by_addr: HashMap<SocketAddr, u64>,
    /// Encoded requests sent to a node without a ticket, oldest first.
    waiting: HashMap<SocketAddr, Vec<Bytes>>,
}

impl Tickets {
    /// What requests to `to` echo now: its ticket, or 0 before it is known, in which case
    /// copies of the encoded `requests` are kept to go again when the ticket arrives.
    pub(crate) fn echo_for<'a>(
        &mut self,
        to: SocketAddr,
        requests: impl Iterator<Item = &'a [u8]>,
    ) -> u64 {
        if let Some(&ticket) = self.by_addr.get(&to) {
            return ticket;
        }
        let waiting = self.waiting.entry(to).or_default();
        let room = WAITING_PER_NODE_MAX.saturating_sub(waiting.len());
        waiting.extend(requests.take(room).map(Bytes::copy_from_slice));
        0
    }

    /// Records the ticket of a hello from `from` (a reply whose stamp echoes nonzero) and
    /// returns the requests to send it again: those sent without a ticket. A hello that
    /// repeats the known ticket (an answer to a second request sent without one) changes
    /// nothing; a new ticket (the node restarted or forgot this process) replaces it.
    pub(crate) fn learn(&mut self, from: SocketAddr, ticket: u64) -> Vec<Bytes> {
        debug_assert_ne!(ticket, 0, "0 is no ticket");
        if self.by_addr.insert(from, ticket) == Some(ticket) {
            return Vec::new();
        }
        self.waiting.remove(&from).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_sent_before_the_ticket_go_again_once_under_it() {
        let node: SocketAddr = "127.0.0.1:7001".parse().unwrap();
        let other: SocketAddr = "127.0.0.1:7002".parse().unwrap();
        let mut t = Tickets::default();
        assert_eq!(t.echo_for(node, [&b"status"[..]].into_iter()), 0);
        assert_eq!(t.echo_for(node, [&b"get a"[..]].into_iter()), 0);
        assert_eq!(t.echo_for(other, [&b"get b"[..]].into_iter()), 0);
        assert_eq!(
            t.learn(node, 42),
            vec![Bytes::from_static(b"status"), Bytes::from_static(b"get a")]
        );
        assert_eq!(t.echo_for(node, [&b"get c"[..]].into_iter()), 42);
        // The hello answering the second request repeats the ticket: nothing goes again.
        assert!(t.learn(node, 42).is_empty());
        // A restarted node's ticket replaces the old one; the other node still waits.
        assert!(t.learn(node, 43).is_empty());
        assert_eq!(t.echo_for(node, std::iter::empty()), 43);
        assert_eq!(t.learn(other, 7), vec![Bytes::from_static(b"get b")]);
    }

    #[test]
    fn the_requests_kept_for_a_node_are_bounded() {
        let node: SocketAddr = "127.0.0.1:7001".parse().unwrap();
        let mut t = Tickets::default();
        let many = vec![[0u8; 4]; WAITING_PER_NODE_MAX + 10];
        t.echo_for(node, many.iter().map(|r| &r[..]));
        t.echo_for(node, many.iter().map(|r| &r[..]));
        assert_eq!(t.learn(node, 1).len(), WAITING_PER_NODE_MAX);
    }
}
