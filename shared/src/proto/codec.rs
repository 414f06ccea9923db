//! The client protocol's postcard layout in one place, both directions and both sides:
//! kvcli encodes requests and decodes replies, kvserver decodes requests and encodes
//! replies. The messages a load spends its time on (gets and puts, and their `Value` and
//! `Done` answers) are read and written by hand over [`crate::cursor`], byte for byte as
//! postcard does: serde's generic walk over every field was a large part of what a request
//! cost the server and a reply cost the load generator. Every other operation and outcome
//! goes through postcard, field by field beside the hand-written ones; the tests hold all
//! four halves to postcard.
//!
//! The layout: a payload is a sequence (a varint count, then the items); a struct is its
//! fields in order; integers are LEB128 varints ([`crate::varint`]); an enum is its
//! variant index as a varint, then its fields; bytes are a varint length and the bytes; a
//! bool is one byte, 0 or 1; an `Option` is a bool, then the value if 1.

use super::{ClientReply, ClientRequest, Op, Outcome};
use crate::cursor::{Reader, Writer};
use crate::varint;
use crate::wire::{self, WireError};
use crate::ClientId;
use bytes::Bytes;

// postcard writes an enum's variant as its index in declaration order: `Op`'s and
// `Outcome`'s (the tests fail if the declarations move).
const GET: u32 = 0;
const PUT: u32 = 1;
const VALUE: u32 = 0;
const DONE: u32 = 1;

/// The smallest request: client, seq, epoch and variant, a byte each (`Status`).
const REQUEST_BYTES_MIN: usize = 4;

// ------------------------------------------------------------------ requests

/// Appends `request` as postcard encodes it to `out` (kvcli: straight into its outbox,
/// without postcard's sizing pass, serializer and exact-length `Vec` for a get or put).
/// A datagram's payload is a count ([`crate::pack::count_prefix_bytes`]) and then
/// requests encoded so.
pub fn encode_request(request: &ClientRequest, out: &mut Vec<u8>) {
    let (variant, key, value, stale) = match &request.op {
        Op::Get { key, stale } => (GET, key, None, Some(*stale)),
        Op::Put { key, value } => (PUT, key, Some(value), None),
        _ => return out.extend_from_slice(&crate::pack::encode_exact(request)),
    };
    // The varints around the key are written on the stack and copied in one piece each:
    // a `Vec`'s byte-at-a-time pushes check its capacity each.
    let mut head = [0u8; 5 * varint::BYTES_MAX];
    let mut tail = [0u8; varint::BYTES_MAX];
    let (head_len, tail_len) = (|| {
        let mut w = Writer::new(&mut head);
        w.varint(request.client.0)?;
        w.varint(request.seq)?;
        w.varint(request.epoch)?;
        w.varint(u64::from(variant))?;
        w.varint(key.len() as u64)?;
        let head_len = w.at;
        let mut w = Writer::new(&mut tail);
        if let Some(value) = value {
            w.varint(value.len() as u64)?;
        }
        if let Some(stale) = stale {
            w.bool(stale)?;
        }
        Some((head_len, w.at))
    })()
    .expect("room for five varints before the key and one after");
    out.reserve(head_len + key.len() + tail_len + value.map_or(0, |v| v.len()));
    out.extend_from_slice(&head[..head_len]);
    out.extend_from_slice(key);
    out.extend_from_slice(&tail[..tail_len]);
    if let Some(value) = value {
        out.extend_from_slice(value);
    }
}

/// Decodes the payload of a client request datagram, a postcard `Vec<ClientRequest>`
/// (kvserver): gets and puts by hand, everything else, and any payload the hand-written
/// reader declines, by postcard, so the result is postcard's.
pub fn decode_requests(payload: &[u8]) -> Result<Vec<ClientRequest>, WireError> {
    match decode_requests_by_hand(payload) {
        Some(reqs) => Ok(reqs),
        None => wire::decode_value(payload),
    }
}

fn decode_requests_by_hand(payload: &[u8]) -> Option<Vec<ClientRequest>> {
    let mut r = Reader::new(payload);
    let count = r.count()?;
    let mut reqs = Vec::with_capacity(r.capacity_for(count, REQUEST_BYTES_MIN));
    for _ in 0..count {
        let client = ClientId(r.u64()?);
        let seq = r.u64()?;
        let epoch = r.u64()?;
        let before_variant = r;
        let op = match r.u32()? {
            GET => {
                let key = r.bytes()?;
                Op::Get {
                    stale: r.bool()?,
                    key: Bytes::copy_from_slice(key),
                }
            }
            PUT => {
                let key = r.bytes()?;
                let value = r.bytes()?;
                Op::Put {
                    key: Bytes::copy_from_slice(key),
                    value: Bytes::copy_from_slice(value),
                }
            }
            _ => {
                r = before_variant;
                r.postcard()?
            }
        };
        reqs.push(ClientRequest {
            client,
            seq,
            epoch,
            op,
        });
    }
    Some(reqs)
}

// ------------------------------------------------------------------- replies

/// Bytes of `reply`'s postcard encoding; `Value` and `Done` replies counted by hand
/// (kvserver packs its replies into datagrams by these).
pub fn reply_bytes(reply: &ClientReply) -> usize {
    let head = varint::len(reply.client.0) + varint::len(reply.seq);
    head + match &reply.outcome {
        Outcome::Done => 1,
        Outcome::Value(None) => 2,
        Outcome::Value(Some(v)) => 2 + varint::len(v.len() as u64) + v.len(),
        outcome => crate::pack::encoded_bytes(outcome),
    }
}

/// Writes postcard's encoding of `replies` (as a `Vec<ClientReply>`) at the start of
/// `out` and returns its length, or `None` if it does not fit (kvserver); `Value` and
/// `Done` replies are written by hand.
pub fn encode_replies(replies: &[&ClientReply], out: &mut [u8]) -> Option<usize> {
    let mut w = Writer::new(out);
    w.varint(replies.len() as u64)?;
    for reply in replies {
        w.varint(reply.client.0)?;
        w.varint(reply.seq)?;
        match &reply.outcome {
            Outcome::Done => w.varint(u64::from(DONE))?,
            Outcome::Value(value) => {
                w.varint(u64::from(VALUE))?;
                match value {
                    None => w.bool(false)?,
                    Some(v) => {
                        w.bool(true)?;
                        w.bytes(v)?;
                    }
                }
            }
            outcome => w.postcard(outcome)?,
        }
    }
    Some(w.at)
}

/// A reply as [`decode_replies`] hands it over: session, sequence number, and the
/// outcome in the form the caller keeps it in (kvcli's boxes its rare large outcomes).
pub type DecodedReply<T> = (ClientId, u64, T);

/// Decodes a reply datagram's body, a postcard `Vec<ClientReply>`, into `out` (emptied
/// first), each reply's outcome turned into a `T` the moment it is decoded (kvcli);
/// `None` if the body is not such a `Vec`, as [`wire::decode_value`] would say. The
/// values of `Value` replies are slices of `body`, not copies.
pub fn decode_replies<T: From<Outcome>>(
    body: &Bytes,
    out: &mut Vec<DecodedReply<T>>,
) -> Option<()> {
    out.clear();
    let mut r = Reader::new(body);
    let count = r.count()?;
    for _ in 0..count {
        let before = r;
        let reply = match take_common_reply(body, &mut r) {
            Some(reply) => reply,
            None => {
                r = before;
                let reply: ClientReply = r.postcard()?;
                (reply.client, reply.seq, reply.outcome.into())
            }
        };
        out.push(reply);
    }
    Some(())
}

/// A reply of the outcomes a load sees most (done, a value, no value) from `r` (a reader
/// over a part of `body`), decoded as postcard decodes a `ClientReply`; `None` for any
/// other outcome or anything unusual (`r` then somewhere inside the reply), which
/// postcard then decodes (or refuses) itself.
#[inline]
fn take_common_reply<T: From<Outcome>>(
    body: &Bytes,
    r: &mut Reader<'_>,
) -> Option<DecodedReply<T>> {
    let client = ClientId(r.u64()?);
    let seq = r.u64()?;
    let outcome = match r.u32()? {
        DONE => Outcome::Done,
        VALUE if r.bool()? => Outcome::Value(Some(body.slice_ref(r.bytes()?))),
        VALUE => Outcome::Value(None),
        _ => return None,
    };
    Some((client, seq, outcome.into()))
}

#[cfg(test)]
mod tests;
