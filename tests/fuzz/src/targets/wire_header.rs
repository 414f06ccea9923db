//! `kv_shared::wire::decode` and `kv_shared::auth::open`: the header every datagram starts
//! with, and the seal after it. Whatever the header check accepts re-encodes (flags
//! included) to a datagram that decodes to the same header and payload; whatever opens
//! under the target's key, sealed in any protection, re-seals to the very same bytes.

use kv_shared::auth::{self, Key, Protection, Sealer, Stamp};
use kv_shared::wire::{self, Kind};

/// The cluster id the target's datagrams are checked against.
const CLUSTER_ID: u64 = 7001;
/// The node the target's datagrams are addressed to (the key is derived per pair).
const RECEIVER: u64 = 1;
/// The sender of the sealed seeds.
const SENDER: u64 = 2;

/// Opens and seals what `sender` sends to [`RECEIVER`]; set to accept every protection,
/// `none` included, so that all three opening paths are fuzzed.
fn sealer(sender: u64) -> Sealer {
    Sealer::peer(&Key::from_bytes([7; 32]), sender, RECEIVER)
        .receiving_as(Protection::Unauthenticated)
}

pub fn run(data: &[u8]) {
    let Ok((header, payload)) = wire::decode(data, CLUSTER_ID) else {
        return;
    };
    assert_eq!(header.cluster_id, CLUSTER_ID, "accepted another cluster");
    assert_eq!(payload.len() + wire::HEADER_BYTES, data.len());
    let mut again = Vec::new();
    wire::encode_with_flags(
        header.kind,
        header.flags,
        header.cluster_id,
        header.sender,
        payload,
        &mut again,
    );
    let (header_again, payload_again) =
        wire::decode(&again, CLUSTER_ID).expect("a re-encoded datagram decodes");
    assert_eq!((header_again, payload_again), (header, payload));

    let sealer = sealer(header.sender);
    let mut datagram = data.to_vec();
    let Ok(opened) = auth::open(&mut datagram, &header, std::slice::from_ref(&sealer)) else {
        return;
    };
    let (stamp, body) = (opened.stamp, opened.body.to_vec());
    let mut resealed = Vec::new();
    sealer.seal(
        header.kind,
        CLUSTER_ID,
        header.sender,
        stamp,
        Protection::of_flags(header.flags),
        &body,
        &mut resealed,
    );
    assert_eq!(resealed, data, "an opened datagram re-seals to itself");
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
    let stamp = Stamp {
        incarnation: 1,
        counter: 2,
        echo: 3,
    };
    for protection in [
        Protection::Mac,
        Protection::Encrypt,
        Protection::Unauthenticated,
    ] {
        let mut d = Vec::new();
        sealer(SENDER).seal(
            Kind::Peer,
            CLUSTER_ID,
            SENDER,
            stamp,
            protection,
            b"raft messages",
            &mut d,
        );
        seeds.push(d);
    }
    seeds
}
