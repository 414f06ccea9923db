//! The fixed header every raftkv datagram starts with, and its checks. Bytes become a
//! validated [`Header`] here, once, at the boundary; anything malformed is a typed error
//! that the caller counts and drops (never a panic).
//!
//! Layout (little endian, 32 bytes):
//! `magic u32 | version u8 | kind u8 | flags u8 | reserved u8 | cluster_id u64 |
//!  sender u64 | payload_len u32 | crc32c u32`, then `payload_len` bytes of payload. The
//! CRC32C covers the header (with the crc field zeroed) and the payload. It catches
//! corruption only: kvserver and kvcli accept a datagram only once [`crate::auth`] has
//! verified the tag that its payload carries.

use crate::limits::DATAGRAM_BYTES_MAX;
use serde::{de::DeserializeOwned, Serialize};

/// "RKV1" as a little-endian u32.
pub const MAGIC: u32 = u32::from_le_bytes(*b"RKV1");
/// Current wire version (2: the flags byte, and authenticated payloads; 3: a peer
/// datagram's payload may end with the per-peer frame of Append and ack records, which a
/// version-2 node would skip without a word, so the two must not share a cluster).
pub const VERSION: u8 = 3;
/// Flag bit: the payload's body is encrypted (see [`crate::auth`]).
pub const FLAG_ENCRYPTED: u8 = 1;
/// Flag bit: the payload carries no tag that proves its sender (`protection = "none"`,
/// loopback clusters only; see [`crate::auth`]). Never set with [`FLAG_ENCRYPTED`].
pub const FLAG_UNAUTHENTICATED: u8 = 2;
/// Every flag bit this version knows; a datagram with another one is refused.
const FLAGS_KNOWN: u8 = FLAG_ENCRYPTED | FLAG_UNAUTHENTICATED;
/// Offset of the CRC32C field; the header bytes before it are what a MAC covers.
pub const CRC_OFFSET: usize = 28;
/// Header size in bytes.
pub const HEADER_BYTES: usize = 32;
/// Most payload bytes one datagram may carry.
pub const PAYLOAD_BYTES_MAX: usize = DATAGRAM_BYTES_MAX - HEADER_BYTES;

/// What the payload is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// Raft traffic between nodes (messages of one or more groups).
    Peer = 1,
    /// Client requests (kvcli -> node).
    ClientRequests = 2,
    /// Client replies (node -> kvcli).
    ClientReplies = 3,
}

impl Kind {
    fn from_u8(b: u8) -> Option<Kind> {
        match b {
            1 => Some(Kind::Peer),
            2 => Some(Kind::ClientRequests),
            3 => Some(Kind::ClientReplies),
            _ => None,
        }
    }
}

/// A validated header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Payload kind.
    pub kind: Kind,
    /// Flag bits ([`FLAG_ENCRYPTED`]).
    pub flags: u8,
    /// The sender's cluster.
    pub cluster_id: u64,
    /// Sending node id, or a client's key id ([`crate::auth::client_key_id`]).
    pub sender: u64,
}

/// Why a datagram was dropped.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Shorter than a header, or shorter than the header says.
    #[error("datagram truncated: {len} bytes")]
    Truncated {
        /// Bytes received.
        len: usize,
    },
    /// Not a raftkv datagram.
    #[error("bad magic {0:#x}")]
    BadMagic(u32),
    /// A version this build does not speak.
    #[error("wire version {0}, but this build speaks only version {VERSION}: every node and client of a cluster must run builds of one wire version")]
    BadVersion(u8),
    /// Unknown payload kind.
    #[error("unknown kind {0}")]
    BadKind(u8),
    /// Flag bits this version does not know.
    #[error("unknown flags {0:#x}")]
    BadFlags(u8),
    /// Longer than DATAGRAM_BYTES_MAX or than the header says.
    #[error("bad length: header says {declared}, datagram has {actual}")]
    BadLength {
        /// Payload length in the header.
        declared: usize,
        /// Payload bytes present.
        actual: usize,
    },
    /// Checksum mismatch.
    #[error("checksum mismatch")]
    BadChecksum,
    /// Another cluster's datagram.
    #[error("cluster id {got} is not ours ({want})")]
    WrongCluster {
        /// The datagram's cluster id.
        got: u64,
        /// Ours.
        want: u64,
    },
    /// The payload does not decode.
    #[error("payload does not decode: {0}")]
    BadPayload(String),
}

/// Appends a whole datagram (header + payload) to `out`, with no flags.
///
/// # Panics
/// If the payload exceeds [`PAYLOAD_BYTES_MAX`]: the encoder must split before this.
pub fn encode(kind: Kind, cluster_id: u64, sender: u64, payload: &[u8], out: &mut Vec<u8>) {
    encode_with_flags(kind, 0, cluster_id, sender, payload, out);
}

/// [`encode`] with flag bits (a sealed payload's, as [`crate::auth`] writes them).
///
/// # Panics
/// If the payload exceeds [`PAYLOAD_BYTES_MAX`].
pub fn encode_with_flags(
    kind: Kind,
    flags: u8,
    cluster_id: u64,
    sender: u64,
    payload: &[u8],
    out: &mut Vec<u8>,
) {
    let start = out.len();
    push_header(kind, flags, cluster_id, sender, payload.len(), out);
    out.extend_from_slice(payload);
    write_crc(&mut out[start..]);
}

/// Appends a header whose payload (of `payload_len` bytes, with a zero CRC for now) the
/// caller appends next; [`write_crc`] finishes the datagram.
///
/// # Panics
/// If `payload_len` exceeds [`PAYLOAD_BYTES_MAX`].
pub(crate) fn push_header(
    kind: Kind,
    flags: u8,
    cluster_id: u64,
    sender: u64,
    payload_len: usize,
    out: &mut Vec<u8>,
) {
    let start = out.len();
    out.resize(start + HEADER_BYTES, 0);
    write_header(
        kind,
        flags,
        cluster_id,
        sender,
        payload_len,
        &mut out[start..],
    );
}

/// Writes a header (with a zero CRC for now) into the first [`HEADER_BYTES`] of
/// `datagram`, whose payload of `payload_len` bytes the caller has written or writes
/// next; [`write_crc`] finishes the datagram.
///
/// # Panics
/// If `payload_len` exceeds [`PAYLOAD_BYTES_MAX`], or `datagram` is shorter than a header.
pub(crate) fn write_header(
    kind: Kind,
    flags: u8,
    cluster_id: u64,
    sender: u64,
    payload_len: usize,
    datagram: &mut [u8],
) {
    assert!(
        payload_len <= PAYLOAD_BYTES_MAX,
        "payload {payload_len} exceeds PAYLOAD_BYTES_MAX"
    );
    let header = &mut datagram[..HEADER_BYTES];
    header[..4].copy_from_slice(&MAGIC.to_le_bytes());
    header[4] = VERSION;
    header[5] = kind as u8;
    header[6] = flags;
    header[7] = 0;
    header[8..16].copy_from_slice(&cluster_id.to_le_bytes());
    header[16..24].copy_from_slice(&sender.to_le_bytes());
    header[24..28].copy_from_slice(&(payload_len as u32).to_le_bytes());
    header[CRC_OFFSET..].fill(0);
}

/// Fills in the CRC32C of a whole datagram (its crc field must be zero).
pub(crate) fn write_crc(datagram: &mut [u8]) {
    let crc = crc32c::crc32c(datagram);
    datagram[CRC_OFFSET..HEADER_BYTES].copy_from_slice(&crc.to_le_bytes());
}

/// Encodes a serde value as a whole datagram. Returns `None` if it does not fit.
pub fn encode_value<T: Serialize>(
    kind: Kind,
    cluster_id: u64,
    sender: u64,
    value: &T,
) -> Option<Vec<u8>> {
    let payload = postcard::to_stdvec(value).ok()?;
    if payload.len() > PAYLOAD_BYTES_MAX {
        return None;
    }
    let mut out = Vec::with_capacity(HEADER_BYTES + payload.len());
    encode(kind, cluster_id, sender, &payload, &mut out);
    Some(out)
}

/// Validates a datagram and returns its header and payload.
pub fn decode(datagram: &[u8], cluster_id: u64) -> Result<(Header, &[u8]), WireError> {
    if datagram.len() < HEADER_BYTES {
        return Err(WireError::Truncated {
            len: datagram.len(),
        });
    }
    let u32_at = |i: usize| u32::from_le_bytes(datagram[i..i + 4].try_into().expect("4 bytes"));
    let u64_at = |i: usize| u64::from_le_bytes(datagram[i..i + 8].try_into().expect("8 bytes"));
    let magic = u32_at(0);
    if magic != MAGIC {
        return Err(WireError::BadMagic(magic));
    }
    if datagram[4] != VERSION {
        return Err(WireError::BadVersion(datagram[4]));
    }
    let kind = Kind::from_u8(datagram[5]).ok_or(WireError::BadKind(datagram[5]))?;
    let flags = datagram[6];
    let contradictory = flags & FLAG_ENCRYPTED != 0 && flags & FLAG_UNAUTHENTICATED != 0;
    if flags & !FLAGS_KNOWN != 0 || contradictory || datagram[7] != 0 {
        return Err(WireError::BadFlags(flags));
    }
    let declared = u32_at(24) as usize;
    let actual = datagram.len() - HEADER_BYTES;
    if declared != actual || datagram.len() > DATAGRAM_BYTES_MAX {
        return Err(WireError::BadLength { declared, actual });
    }
    let want_crc = u32_at(CRC_OFFSET);
    let mut crc = crc32c::crc32c(&datagram[..CRC_OFFSET]);
    crc = crc32c::crc32c_append(crc, &[0, 0, 0, 0]);
    crc = crc32c::crc32c_append(crc, &datagram[HEADER_BYTES..]);
    if crc != want_crc {
        return Err(WireError::BadChecksum);
    }
    let got = u64_at(8);
    if got != cluster_id {
        return Err(WireError::WrongCluster {
            got,
            want: cluster_id,
        });
    }
    Ok((
        Header {
            kind,
            flags,
            cluster_id: got,
            sender: u64_at(16),
        },
        &datagram[HEADER_BYTES..],
    ))
}

/// Decodes a postcard payload.
pub fn decode_value<T: DeserializeOwned>(payload: &[u8]) -> Result<T, WireError> {
    postcard::from_bytes(payload).map_err(|e| WireError::BadPayload(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut out = Vec::new();
        encode(Kind::Peer, 9, 2, b"hello", &mut out);
        let (h, p) = decode(&out, 9).unwrap();
        assert_eq!(
            h,
            Header {
                kind: Kind::Peer,
                flags: 0,
                cluster_id: 9,
                sender: 2
            }
        );
        assert_eq!(p, b"hello");
    }

    #[test]
    fn every_single_bit_flip_is_caught() {
        let mut out = Vec::new();
        encode(Kind::ClientRequests, 9, 0, b"payload bytes", &mut out);
        for i in 0..out.len() * 8 {
            let mut bad = out.clone();
            bad[i / 8] ^= 1 << (i % 8);
            assert!(decode(&bad, 9).is_err(), "flip of bit {i} not caught");
        }
    }

    #[test]
    fn flags_round_trip_and_contradictory_or_unknown_ones_are_refused() {
        for flags in [0, FLAG_ENCRYPTED, FLAG_UNAUTHENTICATED] {
            let mut out = Vec::new();
            encode_with_flags(Kind::Peer, flags, 9, 2, b"x", &mut out);
            assert_eq!(decode(&out, 9).unwrap().0.flags, flags);
        }
        for flags in [FLAG_ENCRYPTED | FLAG_UNAUTHENTICATED, 4, 0x80] {
            let mut out = Vec::new();
            encode_with_flags(Kind::Peer, flags, 9, 2, b"x", &mut out);
            assert_eq!(decode(&out, 9).unwrap_err(), WireError::BadFlags(flags));
        }
    }

    #[test]
    fn a_datagram_of_the_version_before_the_frame_is_refused_by_name() {
        let mut out = Vec::new();
        encode(Kind::Peer, 9, 2, b"x", &mut out);
        out[4] = 2;
        let err = decode(&out, 9).unwrap_err();
        assert_eq!(err, WireError::BadVersion(2));
        assert!(
            err.to_string()
                .contains("wire version 2, but this build speaks only version 3"),
            "{err}"
        );
    }

    #[test]
    fn wrong_cluster_and_garbage_are_errors() {
        let mut out = Vec::new();
        encode(Kind::Peer, 9, 2, b"x", &mut out);
        assert_eq!(
            decode(&out, 10).unwrap_err(),
            WireError::WrongCluster { got: 9, want: 10 }
        );
        assert!(matches!(
            decode(b"short", 9),
            Err(WireError::Truncated { .. })
        ));
        assert!(matches!(decode(&[0u8; 40], 9), Err(WireError::BadMagic(0))));
    }
}
