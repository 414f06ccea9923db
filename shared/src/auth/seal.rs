//! Sealing and opening datagrams (nothing here is hand-written cryptography). With
//! [`Protection::Mac`] the tag is BLAKE3 in keyed mode over the whole datagram, cut to
//! 16 bytes, compared in constant time (`subtle`); with [`Protection::Encrypt`] the body
//! is encrypted in place with XChaCha20-Poly1305 (RustCrypto), the header and stamp
//! being its associated data. Each mode has its own derived key.
//! [`Protection::Unauthenticated`] exists to measure what the other two cost: the same
//! layout with a zero tag, accepted only by a receiver set to it (which the cluster file
//! allows only when every node address is loopback).
//!
//! Payload layout after the wire header:
//! `incarnation u64 | counter u64 | echo u64 | body | tag[16]`.
//! The nonce is `sender | incarnation | counter`: a sender never repeats a (incarnation,
//! counter) pair, so a nonce never repeats under a key. Each direction has its own
//! derived key, so a node's replies and a client's requests never share a nonce space,
//! and each ordered pair of nodes has its own, so a datagram captured on its way to one
//! node does not verify at another.

use super::keys::Key;
use crate::wire::{
    self, Header, Kind, CRC_OFFSET, FLAG_ENCRYPTED, FLAG_UNAUTHENTICATED, HEADER_BYTES,
    PAYLOAD_BYTES_MAX,
};
use chacha20poly1305::aead::AeadInPlace;
use chacha20poly1305::{KeyInit, Tag, XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

/// Bytes of the stamp (incarnation, counter, echo) before the body.
pub const STAMP_BYTES: usize = 24;
/// Bytes of the tag after the body.
pub const TAG_BYTES: usize = 16;
/// What sealing adds to a body.
pub const AUTH_OVERHEAD_BYTES: usize = STAMP_BYTES + TAG_BYTES;
/// Largest body a sealed datagram carries.
pub const BODY_BYTES_MAX: usize = PAYLOAD_BYTES_MAX - AUTH_OVERHEAD_BYTES;
/// Where the body starts in a sealed datagram (after the header and the stamp): a sender
/// that encodes its body there seals it in place ([`Sealer::seal_in_place`]).
pub const BODY_OFFSET: usize = HEADER_BYTES + STAMP_BYTES;

/// How a sender protects its datagrams (the cluster file's `protection`). Receivers
/// accept both `mac` and `encrypt` (the flag is covered by the tag), so the setting can
/// change node by node; only a receiver set to `none` accepts unauthenticated datagrams.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protection {
    /// Authenticated, readable on the wire.
    #[default]
    Mac,
    /// Authenticated and encrypted.
    Encrypt,
    /// No proof of the sender at all (`none`): for measuring what authentication costs,
    /// on a cluster whose every node address is loopback (the cluster file refuses it
    /// otherwise). Such a receiver still verifies authenticated datagrams.
    #[serde(rename = "none")]
    Unauthenticated,
}

impl Protection {
    /// The header flag bits a datagram sealed this way carries.
    pub fn flags(self) -> u8 {
        match self {
            Protection::Mac => 0,
            Protection::Encrypt => FLAG_ENCRYPTED,
            Protection::Unauthenticated => FLAG_UNAUTHENTICATED,
        }
    }

    /// How the datagram whose header carries `flags` was sealed (`wire::decode` refused
    /// contradictory flags already); a reply goes back the way its request came.
    pub fn of_flags(flags: u8) -> Protection {
        if flags & FLAG_ENCRYPTED != 0 {
            Protection::Encrypt
        } else if flags & FLAG_UNAUTHENTICATED != 0 {
            Protection::Unauthenticated
        } else {
            Protection::Mac
        }
    }

    /// The cluster file's spelling.
    pub fn name(self) -> &'static str {
        match self {
            Protection::Mac => "mac",
            Protection::Encrypt => "encrypt",
            Protection::Unauthenticated => "none",
        }
    }
}

/// Orders one sender's datagrams and binds them to what the receiver expects: a
/// sender's incarnation only grows across restarts (a kvcli's is random, one per
/// process), its counter only grows within an incarnation, and the echo names what the
/// datagram is meant for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    /// The sender's incarnation.
    pub incarnation: u64,
    /// The datagram's number within the incarnation.
    pub counter: u64,
    /// Between nodes: the receiver's incarnation as the sender last heard it (from the
    /// receiver's own stamps), 0 if it has not heard it. A node processes a peer's
    /// datagram only if it echoes the node's current incarnation, so nothing recorded
    /// before the node restarted is processed after.
    ///
    /// From a client: the ticket the node issued to this client incarnation (0 before it
    /// has one); a node executes a request only if it echoes the ticket it holds for the
    /// client, so nothing recorded on its way to another node, to an earlier incarnation
    /// of this one, or before the node forgot the client, is executed. From a node to a
    /// client: 0 in replies, the client's ticket in a hello (an empty reply).
    pub echo: u64,
}

/// Seals and opens under one derived key (one for each mode).
#[derive(Clone)]
pub struct Sealer {
    aead: XChaCha20Poly1305,
    mac: [u8; 32],
    /// Whether [`open`] accepts a datagram sealed with [`Protection::Unauthenticated`]
    /// (only when the receiver itself is set to it: [`Sealer::receiving_as`]).
    accepts_unauthenticated: bool,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(..)")
    }
}

/// Why a datagram did not open.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The payload is too short to carry a stamp and a tag.
    #[error("payload of {0} bytes has no room for a stamp and a tag")]
    Unsealed(usize),
    /// No key verified the tag: forged, corrupted, or sealed under a key we do not hold.
    #[error("tag does not verify under any key held")]
    BadTag,
    /// Sent with `protection = "none"` to a receiver that is not set to it.
    #[error("sent unauthenticated (protection = \"none\"), which this receiver does not accept")]
    Unauthenticated,
}

/// A datagram whose tag verified.
#[derive(Debug)]
pub struct Opened<'a> {
    /// The sender's stamp (check it against its [`super::ReplayWindow`] next).
    pub stamp: Stamp,
    /// The body, decrypted if it was encrypted.
    pub body: &'a [u8],
    /// Which of the sealers given to [`open`] verified it (0: the first).
    pub key_index: usize,
}

impl Sealer {
    fn derived(context: &str, key: &Key, binding: &[u8]) -> Sealer {
        let derive = |mode: &[u8]| {
            *blake3::Hasher::new_derive_key(context)
                .update(&key.0)
                .update(binding)
                .update(mode)
                .finalize()
                .as_bytes()
        };
        Sealer {
            aead: XChaCha20Poly1305::new(&derive(b"encrypt").into()),
            mac: derive(b"mac"),
            accepts_unauthenticated: false,
        }
    }

    /// This sealer as used by a receiver whose own setting is `protection`: only a
    /// receiver set to [`Protection::Unauthenticated`] accepts unauthenticated datagrams.
    pub fn receiving_as(self, protection: Protection) -> Sealer {
        Sealer {
            accepts_unauthenticated: protection == Protection::Unauthenticated,
            ..self
        }
    }

    /// Traffic from node `from` to node `to` under the cluster key.
    pub fn peer(key: &Key, from: u64, to: u64) -> Sealer {
        let mut pair = [0u8; 16];
        pair[..8].copy_from_slice(&from.to_le_bytes());
        pair[8..].copy_from_slice(&to.to_le_bytes());
        Sealer::derived("raftkv 2026-12 peer datagrams", key, &pair)
    }

    /// Client requests under a client key.
    pub fn client_requests(key: &Key) -> Sealer {
        Sealer::derived("raftkv 2026-12 client requests", key, &[])
    }

    /// Node replies under a client key.
    pub fn client_replies(key: &Key) -> Sealer {
        Sealer::derived("raftkv 2026-12 client replies", key, &[])
    }

    /// Appends a whole sealed datagram to `out`: header, stamp, body, tag, CRC.
    ///
    /// # Panics
    /// If `body` exceeds [`BODY_BYTES_MAX`]: the encoder must split before this.
    #[allow(clippy::too_many_arguments)]
    pub fn seal(
        &self,
        kind: Kind,
        cluster_id: u64,
        sender: u64,
        stamp: Stamp,
        protection: Protection,
        body: &[u8],
        out: &mut Vec<u8>,
    ) {
        assert!(
            body.len() <= BODY_BYTES_MAX,
            "body {} exceeds BODY_BYTES_MAX",
            body.len()
        );
        let start = out.len();
        out.resize(start + BODY_OFFSET, 0);
        out.extend_from_slice(body);
        out.resize(out.len() + TAG_BYTES, 0);
        self.seal_in_place(
            kind,
            cluster_id,
            sender,
            stamp,
            protection,
            &mut out[start..],
        );
    }

    /// Seals the body that the caller encoded in place: `datagram` is the whole datagram,
    /// [`BODY_OFFSET`] bytes for the header and stamp, the body, and [`TAG_BYTES`] for the
    /// tag; this writes the header, stamp, tag and CRC around the body (encrypting it
    /// if `protection` says so), so the body is never copied.
    ///
    /// # Panics
    /// If `datagram` has no room for the header, stamp and tag, or its body exceeds
    /// [`BODY_BYTES_MAX`].
    pub fn seal_in_place(
        &self,
        kind: Kind,
        cluster_id: u64,
        sender: u64,
        stamp: Stamp,
        protection: Protection,
        datagram: &mut [u8],
    ) {
        let body_len = datagram
            .len()
            .checked_sub(BODY_OFFSET + TAG_BYTES)
            .expect("a sealed datagram has room for a header, a stamp and a tag");
        assert!(
            body_len <= BODY_BYTES_MAX,
            "body {body_len} exceeds BODY_BYTES_MAX"
        );
        wire::write_header(
            kind,
            protection.flags(),
            cluster_id,
            sender,
            AUTH_OVERHEAD_BYTES + body_len,
            datagram,
        );
        let stamp_bytes = &mut datagram[HEADER_BYTES..BODY_OFFSET];
        stamp_bytes[..8].copy_from_slice(&stamp.incarnation.to_le_bytes());
        stamp_bytes[8..16].copy_from_slice(&stamp.counter.to_le_bytes());
        stamp_bytes[16..].copy_from_slice(&stamp.echo.to_le_bytes());
        let tag_at = datagram.len() - TAG_BYTES;
        let (message, tag) = datagram.split_at_mut(tag_at);
        // The CRC field is still zero here, as `open` makes it before verifying.
        match protection {
            Protection::Mac => tag.copy_from_slice(&self.mac_tag(message)),
            Protection::Encrypt => {
                let (aad, body) = message.split_at_mut(BODY_OFFSET);
                let sealed = self
                    .aead
                    .encrypt_in_place_detached(&nonce(sender, stamp), aad, body)
                    .expect("a datagram is far below XChaCha20's length limit");
                tag.copy_from_slice(&sealed);
            }
            Protection::Unauthenticated => tag.fill(0),
        }
        wire::write_crc(datagram);
    }

    /// Verifies (and decrypts in place) `datagram`, whose header `wire::decode` checked.
    /// On failure the datagram is unchanged but for its CRC field (zeroed).
    fn open_in_place(&self, datagram: &mut [u8], nonce: &XNonce, protection: Protection) -> bool {
        let (message, tag) = datagram.split_at_mut(datagram.len() - TAG_BYTES);
        match protection {
            Protection::Encrypt => {
                let (aad, body) = message.split_at_mut(HEADER_BYTES + STAMP_BYTES);
                self.aead
                    .decrypt_in_place_detached(nonce, aad, body, Tag::from_slice(tag))
                    .is_ok()
            }
            Protection::Mac => self.mac_tag(message).ct_eq(tag).into(),
            // The zero tag is checked so that one datagram has one encoding.
            Protection::Unauthenticated => {
                self.accepts_unauthenticated && tag.iter().all(|&b| b == 0)
            }
        }
    }

    /// The MAC-mode tag of `message` (header with a zero CRC, stamp, body).
    fn mac_tag(&self, message: &[u8]) -> [u8; TAG_BYTES] {
        let full = blake3::keyed_hash(&self.mac, message);
        full.as_bytes()[..TAG_BYTES]
            .try_into()
            .expect("TAG_BYTES of 32")
    }
}

fn nonce(sender: u64, stamp: Stamp) -> XNonce {
    let mut n = [0u8; 24];
    n[..8].copy_from_slice(&sender.to_le_bytes());
    n[8..16].copy_from_slice(&stamp.incarnation.to_le_bytes());
    n[16..].copy_from_slice(&stamp.counter.to_le_bytes());
    n.into()
}

/// Verifies a datagram whose header [`wire::decode`] accepted, trying each sealer in
/// turn (the new key first during a rotation). Nothing of the body is read before the
/// tag verifies. Constant-time tag comparison is the crate's. An unauthenticated
/// datagram opens only under a sealer made with [`Sealer::receiving_as`]
/// `(Protection::Unauthenticated)`.
pub fn open<'a>(
    datagram: &'a mut [u8],
    header: &Header,
    sealers: &[Sealer],
) -> Result<Opened<'a>, AuthError> {
    let payload_len = datagram.len().saturating_sub(HEADER_BYTES);
    if payload_len < AUTH_OVERHEAD_BYTES {
        return Err(AuthError::Unsealed(payload_len));
    }
    let u64_at = |d: &[u8], i: usize| u64::from_le_bytes(d[i..i + 8].try_into().expect("8"));
    let stamp = Stamp {
        incarnation: u64_at(datagram, HEADER_BYTES),
        counter: u64_at(datagram, HEADER_BYTES + 8),
        echo: u64_at(datagram, HEADER_BYTES + 16),
    };
    let protection = Protection::of_flags(header.flags);
    if protection == Protection::Unauthenticated
        && !sealers.iter().any(|s| s.accepts_unauthenticated)
    {
        return Err(AuthError::Unauthenticated);
    }
    let nonce = nonce(header.sender, stamp);
    datagram[CRC_OFFSET..HEADER_BYTES].fill(0);
    let key_index = sealers
        .iter()
        .position(|s| s.open_in_place(datagram, &nonce, protection))
        .ok_or(AuthError::BadTag)?;
    let end = datagram.len() - TAG_BYTES;
    Ok(Opened {
        stamp,
        body: &datagram[HEADER_BYTES + STAMP_BYTES..end],
        key_index,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::keys::generate_key;

    const CLUSTER: u64 = 7001;

    fn sealed(s: &Sealer, protection: Protection, body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let stamp = Stamp {
            incarnation: 11,
            counter: 12,
            echo: 13,
        };
        s.seal(Kind::Peer, CLUSTER, 2, stamp, protection, body, &mut out);
        out
    }

    fn open_owned(d: &[u8], sealers: &[Sealer]) -> Result<(Stamp, Vec<u8>, usize), String> {
        let mut d = d.to_vec();
        let header = wire::decode(&d, CLUSTER).map_err(|e| e.to_string())?.0;
        let o = open(&mut d, &header, sealers).map_err(|e| e.to_string())?;
        Ok((o.stamp, o.body.to_vec(), o.key_index))
    }

    #[test]
    fn round_trip_in_every_protection() {
        for p in [
            Protection::Mac,
            Protection::Encrypt,
            Protection::Unauthenticated,
        ] {
            let s = Sealer::peer(&generate_key().unwrap(), 2, 1).receiving_as(p);
            let d = sealed(&s, p, b"raft messages");
            assert_eq!(Protection::of_flags(d[6]), p);
            let (stamp, body, i) = open_owned(&d, std::slice::from_ref(&s)).unwrap();
            assert_eq!(stamp.incarnation, 11);
            assert_eq!(stamp.counter, 12);
            assert_eq!(stamp.echo, 13);
            assert_eq!(body, b"raft messages");
            assert_eq!(i, 0);
            let on_wire = d.windows(13).any(|w| w == b"raft messages");
            assert_eq!(on_wire, p != Protection::Encrypt, "{p:?}");
        }
    }

    /// Every single-bit flip anywhere (header, stamp, body, tag) is refused. Flips in
    /// the CRC field are caught by the CRC; to show the tag itself covers everything,
    /// the CRC is recomputed after each flip, as a forger would.
    /// A body encoded where the datagram carries it seals to the very bytes `seal` makes.
    #[test]
    fn sealing_in_place_makes_the_same_datagram_as_sealing_a_copy() {
        let s = Sealer::peer(&generate_key().unwrap(), 2, 1);
        for p in [
            Protection::Mac,
            Protection::Encrypt,
            Protection::Unauthenticated,
        ] {
            for body in [&b""[..], b"raft messages", &[7; 1_400]] {
                let copied = sealed(&s, p, body);
                let mut in_place = vec![0xEE; BODY_OFFSET + body.len() + TAG_BYTES];
                in_place[BODY_OFFSET..BODY_OFFSET + body.len()].copy_from_slice(body);
                let stamp = Stamp {
                    incarnation: 11,
                    counter: 12,
                    echo: 13,
                };
                s.seal_in_place(Kind::Peer, CLUSTER, 2, stamp, p, &mut in_place);
                assert_eq!(in_place, copied, "{p:?}, {} bytes", body.len());
            }
        }
    }

    #[test]
    fn every_bit_flip_is_refused_even_with_a_valid_crc() {
        let s = Sealer::peer(&generate_key().unwrap(), 2, 1);
        for p in [Protection::Mac, Protection::Encrypt] {
            let d = sealed(&s, p, b"payload bytes");
            for i in 0..d.len() * 8 {
                if (CRC_OFFSET * 8..HEADER_BYTES * 8).contains(&i) {
                    continue;
                }
                let mut bad = d.clone();
                bad[i / 8] ^= 1 << (i % 8);
                bad[CRC_OFFSET..HEADER_BYTES].fill(0);
                wire::write_crc(&mut bad);
                assert!(
                    open_owned(&bad, std::slice::from_ref(&s)).is_err(),
                    "{p:?}: flip of bit {i}"
                );
            }
        }
    }

    #[test]
    fn wrong_key_and_unsealed_payloads_are_refused() {
        let k = generate_key().unwrap();
        let d = sealed(&Sealer::peer(&k, 2, 1), Protection::Mac, b"x");
        // Bound to the pair: the same key from 2 to 3, or from 1 to 2, is another key.
        assert!(open_owned(&d, &[Sealer::peer(&k, 2, 3)]).is_err());
        assert!(open_owned(&d, &[Sealer::peer(&k, 1, 2)]).is_err());
        let other = Sealer::peer(&generate_key().unwrap(), 2, 1);
        assert_eq!(
            open_owned(&d, std::slice::from_ref(&other)).unwrap_err(),
            AuthError::BadTag.to_string()
        );
        // The same key under another direction's derivation is another key.
        assert!(open_owned(&d, &[Sealer::client_requests(&k)]).is_err());
        let mut plain = Vec::new();
        wire::encode(Kind::Peer, CLUSTER, 2, b"short", &mut plain);
        assert_eq!(
            open_owned(&plain, std::slice::from_ref(&other)).unwrap_err(),
            AuthError::Unsealed(5).to_string()
        );
    }

    /// `none` is for a receiver that chose it: every other receiver refuses such a
    /// datagram before looking at its tag, including a genuine one stripped of its tag.
    #[test]
    fn unauthenticated_datagrams_open_only_at_a_receiver_set_to_none() {
        let k = generate_key().unwrap();
        let plain = sealed(&Sealer::peer(&k, 2, 1), Protection::Unauthenticated, b"x");
        for p in [Protection::Mac, Protection::Encrypt] {
            let receiver = Sealer::peer(&k, 2, 1).receiving_as(p);
            assert_eq!(
                open_owned(&plain, &[receiver]).unwrap_err(),
                AuthError::Unauthenticated.to_string()
            );
        }
        let none = Sealer::peer(&k, 2, 1).receiving_as(Protection::Unauthenticated);
        assert!(open_owned(&plain, std::slice::from_ref(&none)).is_ok());
        // Downgrading a genuine MAC datagram: flag set, tag zeroed, CRC fixed.
        let mut downgraded = sealed(&Sealer::peer(&k, 2, 1), Protection::Mac, b"x");
        downgraded[6] = FLAG_UNAUTHENTICATED;
        let tag_at = downgraded.len() - TAG_BYTES;
        downgraded[tag_at..].fill(0);
        downgraded[CRC_OFFSET..HEADER_BYTES].fill(0);
        wire::write_crc(&mut downgraded);
        assert!(open_owned(&downgraded, &[Sealer::peer(&k, 2, 1)]).is_err());
        // One encoding per datagram: a nonzero tag is refused even at a `none` receiver.
        let mut tagged = plain.clone();
        let last = tagged.len() - 1;
        tagged[last] = 1;
        tagged[CRC_OFFSET..HEADER_BYTES].fill(0);
        wire::write_crc(&mut tagged);
        assert_eq!(
            open_owned(&tagged, std::slice::from_ref(&none)).unwrap_err(),
            AuthError::BadTag.to_string()
        );
        // A `none` receiver still checks what claims to be authenticated.
        let forged = sealed(
            &Sealer::peer(&generate_key().unwrap(), 2, 1),
            Protection::Mac,
            b"x",
        );
        assert!(open_owned(&forged, std::slice::from_ref(&none)).is_err());
        let genuine = sealed(&Sealer::peer(&k, 2, 1), Protection::Mac, b"x");
        assert!(open_owned(&genuine, std::slice::from_ref(&none)).is_ok());
    }

    #[test]
    fn protection_is_spelled_none_in_the_cluster_file() {
        #[derive(serde::Deserialize)]
        struct F {
            protection: Protection,
        }
        let f: F = toml::from_str("protection = \"none\"").unwrap();
        assert_eq!(f.protection, Protection::Unauthenticated);
        assert_eq!(Protection::Unauthenticated.name(), "none");
    }

    #[test]
    fn rotation_accepts_old_and_new_and_says_which() {
        let keys = [
            Sealer::peer(&generate_key().unwrap(), 2, 1),
            Sealer::peer(&generate_key().unwrap(), 2, 1),
        ];
        let (new, old) = (&keys[0], &keys[1]);
        for p in [Protection::Mac, Protection::Encrypt] {
            let under_old = sealed(old, p, b"from a node not yet rotated");
            let (_, body, i) = open_owned(&under_old, &keys).unwrap();
            assert_eq!(
                (body.as_slice(), i),
                (&b"from a node not yet rotated"[..], 1)
            );
            let under_new = sealed(new, p, b"rotated");
            assert_eq!(open_owned(&under_new, &keys).unwrap().2, 0);
        }
    }
}
