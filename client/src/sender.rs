//! The client's send task: every request that is ready when it runs leaves in as few
//! datagrams per node as the payload and count limits allow, whatever its shard, so that
//! a node sees one burst per wake-up of this client rather than one per session.

use crate::client::{bump, Shared};
use bytes::Bytes;
use kv_shared::auth::{Stamp, BODY_BYTES_MAX, BODY_OFFSET, TAG_BYTES};
use kv_shared::limits::CLIENT_REQUESTS_PER_DATAGRAM_MAX;
use kv_shared::pack::{fits_alone, pack_ranges, PackLimit};
use kv_shared::wire::Kind;
use std::net::SocketAddr;

/// A batch of requests pulled from the outbox at once; bounds the sender's work per wakeup.
const OUTBOX_BATCH_MAX: usize = 4096;

/// What a batch of ready requests holds: (destination, encoded request), in the order the
/// sessions queued them.
pub(crate) type Outgoing = (SocketAddr, Bytes);

pub(crate) async fn send_loop(
    shared: std::sync::Weak<Shared>,
    mut rx: crate::inbox::Receiver<Outgoing>,
    incarnation: u64,
) {
    let mut ready = Vec::new();
    let mut datagram = Vec::new();
    let mut counter = 0u64;
    // Kept between wake-ups with their capacity: grown from empty for each burst of
    // requests, they would be reallocated on every lock-step round.
    let mut by_dest = ByDestination::default();
    let mut batches = Vec::new();
    loop {
        if rx.recv_many(&mut ready, OUTBOX_BATCH_MAX).await == 0 {
            return;
        }
        let Some(s) = shared.upgrade() else { return };
        let limit = PackLimit {
            payload_bytes_max: BODY_BYTES_MAX,
            items_max: CLIENT_REQUESTS_PER_DATAGRAM_MAX,
        };
        by_dest.fill(ready.drain(..));
        for (to, reqs) in &mut by_dest.groups {
            let echo = s.tickets.lock().expect("tickets lock").echo_for(*to, reqs);
            // `execute` refused every request too large for a datagram of its own.
            reqs.retain(|r| fits_alone(r.len(), limit));
            pack_ranges(reqs.iter().map(Bytes::len), limit, &mut batches);
            for batch in batches.drain(..) {
                let stamp = Stamp {
                    incarnation,
                    counter,
                    echo,
                };
                counter += 1;
                send_datagram(&s, *to, &reqs[batch], stamp, &mut datagram).await;
            }
        }
    }
}

/// The requests of one wake-up grouped by destination, each destination's requests in
/// their order, the destinations in the order of their first request.
#[derive(Default)]
struct ByDestination {
    groups: Vec<(SocketAddr, Vec<Bytes>)>,
    /// The emptied `Vec`s of earlier wake-ups, for the next groups.
    spare: Vec<Vec<Bytes>>,
}

impl ByDestination {
    fn fill(&mut self, ready: impl Iterator<Item = Outgoing>) {
        for (_, mut v) in self.groups.drain(..) {
            v.clear();
            self.spare.push(v);
        }
        for (to, req) in ready {
            match self.groups.iter_mut().find(|(a, _)| *a == to) {
                Some((_, v)) => v.push(req),
                None => {
                    let mut v = self.spare.pop().unwrap_or_default();
                    v.push(req);
                    self.groups.push((to, v));
                }
            }
        }
    }
}

async fn send_datagram(
    s: &Shared,
    to: SocketAddr,
    batch: &[Bytes],
    stamp: Stamp,
    datagram: &mut Vec<u8>,
) {
    // The body is encoded where the sealed datagram carries it, and sealed there: no
    // payload buffer to grow and copy for each datagram of up to BODY_BYTES_MAX.
    datagram.clear();
    datagram.resize(BODY_OFFSET, 0);
    encode_encoded(batch, datagram);
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

/// Appends the postcard encoding of a `Vec` whose items are postcard-encoded already
/// (as `kv_shared::pack::encode_encoded` does for `Vec<u8>` items): the count, then the
/// items.
fn encode_encoded(items: &[Bytes], out: &mut Vec<u8>) {
    *out = postcard::to_extend(&items.len(), std::mem::take(out)).expect("a usize always encodes");
    for item in items {
        out.extend_from_slice(item);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_grouped_by_node_in_their_order() {
        let a: SocketAddr = "127.0.0.1:7001".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:7002".parse().unwrap();
        let ready = vec![
            (a, Bytes::from_static(&[1])),
            (b, Bytes::from_static(&[2])),
            (a, Bytes::from_static(&[3])),
            (b, Bytes::from_static(&[4])),
            (a, Bytes::from_static(&[5])),
        ];
        let mut by_dest = ByDestination::default();
        by_dest.fill(vec![(b, Bytes::from_static(&[9]))].into_iter());
        by_dest.fill(ready.into_iter());
        assert_eq!(
            by_dest.groups,
            vec![
                (
                    a,
                    vec![
                        Bytes::from_static(&[1]),
                        Bytes::from_static(&[3]),
                        Bytes::from_static(&[5])
                    ]
                ),
                (b, vec![Bytes::from_static(&[2]), Bytes::from_static(&[4])])
            ]
        );
    }

    #[test]
    fn encoded_items_make_the_encoding_of_their_vec() {
        let items: Vec<u64> = (0..200).map(|i| i * 1000).collect();
        let encoded: Vec<Bytes> = items
            .iter()
            .map(|i| Bytes::from(postcard::to_stdvec(i).unwrap()))
            .collect();
        let mut out = vec![9u8];
        encode_encoded(&encoded, &mut out);
        assert_eq!(out[0], 9, "appended after what the buffer held");
        assert_eq!(out[1..], postcard::to_stdvec(&items).unwrap()[..]);
    }
}
