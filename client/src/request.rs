//! A client request's encoding, written by hand for the two operations a session sends
//! most (get and put) straight into the outbox's buffer (`outbox`), byte for byte what
//! postcard writes, without postcard's sizing pass, serializer and exact-length `Vec` on
//! every request. Every other operation goes through postcard.

use kv_shared::proto::{ClientRequest, Op};
use kv_shared::varint;

/// Appends `request` as postcard encodes it to `out`.
pub(crate) fn encode(request: &ClientRequest, out: &mut Vec<u8>) {
    // postcard: a struct is its fields in order, integers are LEB128 varints, an enum is
    // its variant index as a varint and then its fields, bytes are a varint length and
    // the bytes, a bool is one byte. The varints are written on the stack and copied in
    // one piece: a `Vec`'s byte-at-a-time pushes check its capacity each.
    let (variant, key, value, stale) = match &request.op {
        Op::Get { key, stale } => (0, key, None, Some(*stale)),
        Op::Put { key, value } => (1, key, Some(value), None),
        _ => return out.extend_from_slice(&kv_shared::pack::encode_exact(request)),
    };
    let mut head = Varints::default();
    head.put(request.client.0);
    head.put(request.seq);
    head.put(request.epoch);
    head.put(variant);
    head.put(key.len() as u64);
    let mut tail = Varints::default();
    if let Some(value) = value {
        tail.put(value.len() as u64);
    }
    if let Some(stale) = stale {
        tail.bytes[tail.len] = u8::from(stale);
        tail.len += 1;
    }
    out.reserve(head.len + key.len() + tail.len + value.map_or(0, |v| v.len()));
    out.extend_from_slice(head.as_slice());
    out.extend_from_slice(key);
    out.extend_from_slice(tail.as_slice());
    if let Some(value) = value {
        out.extend_from_slice(value);
    }
}

/// Up to five varints, written on the stack.
struct Varints {
    bytes: [u8; 5 * varint::BYTES_MAX],
    len: usize,
}

impl Default for Varints {
    fn default() -> Varints {
        Varints {
            bytes: [0; 5 * varint::BYTES_MAX],
            len: 0,
        }
    }
}

impl Varints {
    fn put(&mut self, n: u64) {
        self.len += varint::write(n, &mut self.bytes[self.len..]);
    }

    fn as_slice(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kv_shared::ClientId;
    use proptest::prelude::*;

    fn request(client: u64, seq: u64, epoch: u64, op: Op) -> ClientRequest {
        ClientRequest {
            client: ClientId(client),
            seq,
            epoch,
            op,
        }
    }

    fn edge_u64() -> impl Strategy<Value = u64> {
        prop_oneof![
            Just(0u64),
            Just(0x7f),
            Just(0x80),
            Just(0x3fff),
            Just(0x4000),
            Just(u64::MAX),
            any::<u64>()
        ]
    }

    proptest! {
        #[test]
        fn gets_and_puts_encode_as_postcard_does(
            client in edge_u64(),
            seq in edge_u64(),
            epoch in edge_u64(),
            key in proptest::collection::vec(any::<u8>(), 0..300),
            value in proptest::collection::vec(any::<u8>(), 0..20_000),
            stale: bool,
        ) {
            // Appended after what the buffer holds.
            let mut out = vec![9u8];
            let get = request(client, seq, epoch, Op::Get { key: key.clone().into(), stale });
            encode(&get, &mut out);
            prop_assert_eq!(&out[1..], &postcard::to_stdvec(&get).unwrap()[..]);
            let mut out = vec![9u8];
            let put = request(client, seq, epoch, Op::Put { key: key.into(), value: value.into() });
            encode(&put, &mut out);
            prop_assert_eq!(out[0], 9);
            prop_assert_eq!(&out[1..], &postcard::to_stdvec(&put).unwrap()[..]);
        }
    }

    #[test]
    fn other_operations_encode_as_postcard_does() {
        for op in [
            Op::Delete { key: "k".into() },
            Op::Cas {
                key: "k".into(),
                expected: None,
                new: "v".into(),
            },
            Op::Status,
        ] {
            let r = request(3, 300, 2, op);
            let mut out = vec![9u8];
            encode(&r, &mut out);
            assert_eq!(out[1..], postcard::to_stdvec(&r).unwrap());
        }
    }
}
