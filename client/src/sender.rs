//! The client's send task: every request that is ready when it runs leaves in as few
//! datagrams per node as the payload and count limits allow, whatever its shard, so that
//! a node sees one burst per wake-up of this client rather than one per session.

use crate::client::{bump, Shared};
use bytes::Bytes;
use kv_shared::auth::{Stamp, BODY_BYTES_MAX, BODY_OFFSET, TAG_BYTES};
use kv_shared::limits::CLIENT_REQUESTS_PER_DATAGRAM_MAX;
use kv_shared::pack::{pack_by, PackLimit};
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
    loop {
        if rx.recv_many(&mut ready, OUTBOX_BATCH_MAX).await == 0 {
            return;
        }
        let Some(s) = shared.upgrade() else { return };
        let limit = PackLimit {
            payload_bytes_max: BODY_BYTES_MAX,
            items_max: CLIENT_REQUESTS_PER_DATAGRAM_MAX,
        };
        for (to, reqs) in by_destination(ready.drain(..)) {
            let echo = s.tickets.lock().expect("tickets lock").echo_for(to, &reqs);
            // `execute` refused every request too large for a datagram of its own.
            for batch in pack_by(reqs, Bytes::len, limit).batches {
                let stamp = Stamp {
                    incarnation,
                    counter,
                    echo,
                };
                counter += 1;
                send_datagram(&s, to, &batch, stamp, &mut datagram).await;
            }
        }
    }
}

/// `ready` grouped by destination, each destination's requests in their order.
fn by_destination(ready: impl Iterator<Item = Outgoing>) -> Vec<(SocketAddr, Vec<Bytes>)> {
    let mut by_dest: Vec<(SocketAddr, Vec<Bytes>)> = Vec::new();
    for (to, req) in ready {
        match by_dest.iter_mut().find(|(a, _)| *a == to) {
            Some((_, v)) => v.push(req),
            None => by_dest.push((to, vec![req])),
        }
    }
    by_dest
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
        assert_eq!(
            by_destination(ready.into_iter()),
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
