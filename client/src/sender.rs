//! The client's send task: every request that is ready when it runs leaves in as few
//! datagrams per node as the payload and count limits allow, whatever its shard, so that
//! a node sees one burst per wake-up of this client rather than one per session.

use crate::client::{bump, Shared};
use crate::outbox::{Batch, Receiver};
use kv_shared::auth::{Stamp, BODY_BYTES_MAX, BODY_OFFSET, TAG_BYTES};
use kv_shared::limits::CLIENT_REQUESTS_PER_DATAGRAM_MAX;
use kv_shared::pack::{fits_alone, pack_ranges, PackLimit};
use kv_shared::wire::Kind;
use std::net::SocketAddr;

pub(crate) async fn send_loop(shared: std::sync::Weak<Shared>, mut rx: Receiver, incarnation: u64) {
    let mut datagram = Vec::new();
    let mut counter = 0u64;
    // Kept between wake-ups with their capacity: grown from empty for each burst of
    // requests, they would be reallocated on every lock-step round.
    let mut ready = Batch::default();
    let mut by_dest = ByDestination::default();
    let mut batches = Vec::new();
    loop {
        if !rx.take(&mut ready).await {
            return;
        }
        let Some(s) = shared.upgrade() else { return };
        let limit = PackLimit {
            payload_bytes_max: BODY_BYTES_MAX,
            items_max: CLIENT_REQUESTS_PER_DATAGRAM_MAX,
        };
        by_dest.fill(&ready.requests);
        for (to, reqs) in &mut by_dest.groups {
            let echo = s
                .tickets
                .lock()
                .expect("tickets lock")
                .echo_for(*to, reqs.iter().map(|&i| ready.request(i)));
            // `execute` refused every request too large for a datagram of its own.
            reqs.retain(|&i| fits_alone(ready.requests[i].1.len(), limit));
            pack_ranges(
                reqs.iter().map(|&i| ready.requests[i].1.len()),
                limit,
                &mut batches,
            );
            for batch in batches.drain(..) {
                let stamp = Stamp {
                    incarnation,
                    counter,
                    echo,
                };
                counter += 1;
                send_datagram(&s, *to, &ready, &reqs[batch], stamp, &mut datagram).await;
            }
        }
    }
}

/// The requests of one wake-up grouped by destination (as indices into the batch's
/// requests), each destination's requests in their order, the destinations in the order
/// of their first request.
#[derive(Default)]
struct ByDestination {
    groups: Vec<(SocketAddr, Vec<usize>)>,
    /// The emptied `Vec`s of earlier wake-ups, for the next groups.
    spare: Vec<Vec<usize>>,
}

impl ByDestination {
    fn fill(&mut self, ready: &[(SocketAddr, std::ops::Range<usize>)]) {
        for (_, mut v) in self.groups.drain(..) {
            v.clear();
            self.spare.push(v);
        }
        for (i, (to, _)) in ready.iter().enumerate() {
            match self.groups.iter_mut().find(|(a, _)| a == to) {
                Some((_, v)) => v.push(i),
                None => {
                    let mut v = self.spare.pop().unwrap_or_default();
                    v.push(i);
                    self.groups.push((*to, v));
                }
            }
        }
    }
}

async fn send_datagram(
    s: &Shared,
    to: SocketAddr,
    ready: &Batch,
    batch: &[usize],
    stamp: Stamp,
    datagram: &mut Vec<u8>,
) {
    // The body is encoded where the sealed datagram carries it, and sealed there: no
    // payload buffer to grow and copy for each datagram of up to BODY_BYTES_MAX.
    datagram.clear();
    datagram.resize(BODY_OFFSET, 0);
    encode_encoded(ready, batch, datagram);
    datagram.resize(datagram.len() + TAG_BYTES, 0);
    s.requests.seal_in_place(
        Kind::ClientRequests,
        s.cluster_id,
        s.key_id,
        stamp,
        s.options.protection,
        datagram,
    );
    bump(&s.counters.datagrams_sent);
    // A lost datagram is a timeout for its requests, retried by their sessions.
    let _ = s.socket.send_to(datagram, to).await;
}

/// Appends the postcard encoding of a `Vec` whose items, requests `items` of `ready`, are
/// postcard-encoded already (as `kv_shared::pack::encode_encoded` does for `Vec<u8>`
/// items): the count, then the items.
fn encode_encoded(ready: &Batch, items: &[usize], out: &mut Vec<u8>) {
    *out = postcard::to_extend(&items.len(), std::mem::take(out)).expect("a usize always encodes");
    for &i in items {
        out.extend_from_slice(ready.request(i));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_grouped_by_node_in_their_order() {
        let a: SocketAddr = "127.0.0.1:7001".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:7002".parse().unwrap();
        let ready = vec![(a, 0..1), (b, 1..2), (a, 2..3), (b, 3..4), (a, 4..5)];
        let mut by_dest = ByDestination::default();
        by_dest.fill(&[(b, 0..9)]);
        by_dest.fill(&ready);
        assert_eq!(by_dest.groups, vec![(a, vec![0, 2, 4]), (b, vec![1, 3])]);
    }

    #[test]
    fn encoded_items_make_the_encoding_of_their_vec() {
        let items: Vec<u64> = (0..200).map(|i| i * 1000).collect();
        let mut ready = Batch::default();
        let to: SocketAddr = "127.0.0.1:7001".parse().unwrap();
        // A request for another node between each: only the items named are encoded.
        for i in &items {
            for value in [*i, 7] {
                let start = ready.bytes.len();
                ready
                    .bytes
                    .extend_from_slice(&postcard::to_stdvec(&value).unwrap());
                ready.requests.push((to, start..ready.bytes.len()));
            }
        }
        let named: Vec<usize> = (0..items.len()).map(|i| 2 * i).collect();
        let mut out = vec![9u8];
        encode_encoded(&ready, &named, &mut out);
        assert_eq!(out[0], 9, "appended after what the buffer held");
        assert_eq!(out[1..], postcard::to_stdvec(&items).unwrap()[..]);
    }
}
