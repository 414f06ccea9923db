//! `kv_shared::wire::decode`: the header every datagram starts with. Whatever it accepts
//! re-encodes to a datagram that decodes to the same header and payload.

use kv_shared::wire::{self, Kind};

/// The cluster id the target's datagrams are checked against.
const CLUSTER_ID: u64 = 7001;

pub fn run(data: &[u8]) {
    let Ok((header, payload)) = wire::decode(data, CLUSTER_ID) else {
        return;
    };
    assert_eq!(header.cluster_id, CLUSTER_ID, "accepted another cluster");
    assert_eq!(payload.len() + wire::HEADER_BYTES, data.len());
    let mut again = Vec::new();
    wire::encode(
        header.kind,
        header.cluster_id,
        header.sender,
        payload,
        &mut again,
    );
    let (header_again, payload_again) =
        wire::decode(&again, CLUSTER_ID).expect("a re-encoded datagram decodes");
    assert_eq!((header_again, payload_again), (header, payload));
}

pub fn seeds() -> Vec<Vec<u8>> {
    let mut seeds = Vec::new();
    for (kind, payload) in [
        (Kind::Peer, &b"\x01\x00"[..]),
        (Kind::ClientRequests, b""),
        (Kind::ClientReplies, b"reply bytes"),
    ] {
        let mut d = Vec::new();
        wire::encode(kind, CLUSTER_ID, 2, payload, &mut d);
        seeds.push(d);
    }
    seeds
}
