//! Who may speak to a node, and proof that they did: keys and key files, the sealing of
//! datagrams (a tag under a key, or authenticated encryption), and the replay window.
//!
//! Every datagram kvserver accepts carries, after the [`crate::wire`] header, a stamp
//! (`incarnation u64 | counter u64 | echo u64`), the body, and a 16-byte tag (keyed
//! BLAKE3, or XChaCha20-Poly1305 when encrypted).
//! Peers seal under the cluster key; clients under their own named key. The tag covers
//! the whole header (kind, flags, cluster id, sender, length), the stamp and the body;
//! it is checked before a byte of the body is decoded. The stamp feeds a
//! [`ReplayWindow`] per sender, so a captured datagram is accepted at most once, and its
//! echo binds it to what the receiver issued: between nodes the receiver's incarnation
//! ([`check_echo`]), so a datagram captured before the receiver restarted is not
//! processed after; from a client the ticket the node gave that client incarnation
//! (kvserver's `auth::ClientWindows`).
//! docs/SECURITY.md states the trust model these pieces implement.

mod keys;
mod replay;
mod seal;

pub use keys::{
    client_key_id, create_missing_key_files, generate_key, random_u64, read_client_key,
    read_cluster_key, session_id, write_client_key, write_cluster_key, ClientKey, Key,
    KeyFileError, Permission, KEY_BYTES,
};
pub use replay::{check_echo, ReplayError, ReplayWindow, REPLAY_WINDOW_COUNTERS};
pub use seal::{
    open, AuthError, Opened, Protection, Sealer, Stamp, AUTH_OVERHEAD_BYTES, BODY_BYTES_MAX,
    BODY_OFFSET, STAMP_BYTES, TAG_BYTES,
};
