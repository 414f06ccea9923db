//! kv-shared: the vocabulary that the raftkv server and kvcli share, so that both
//! sides agree by construction (one shard hash, one set of limits, one wire format).
//!
//! Layout:
//! - [`ids`]: node, shard and client identifiers.
//! - [`limits`]: every size and count limit, in one place, units in the names.
//! - [`shard`]: key -> shard, xxhash64 modulo the shard count.
//! - [`hashing`]: the seeded hasher of tables keyed by what clients choose.
//! - [`config`]: the static cluster file (TOML) in `configs/`.
//! - [`proto`]: client requests and replies.
//! - [`wire`]: the datagram header every raftkv UDP datagram starts with.
//! - [`registry`]: the node registry the metadata group holds, and that group's shard id.
//! - [`cursor`]: postcard's encoding read and written field by field (hand-written codecs).
//! - [`pack`]: items packed into batches that fit one datagram payload.
//! - [`balance`]: the balance planner (replica moves and leader transfers; pure).
//! - [`auth`]: keys, key files, sealed (authenticated) datagrams, the replay window.
//! - [`splitmix`]: SplitMix64, the small deterministic generator whose seeds replay forever.
//! - [`linearizability`]: the per-key Wing-Gong checker used by kvsim and `kvcli bench --check`.

pub mod auth;
pub mod balance;
pub mod config;
pub mod cursor;
pub mod hashing;
pub mod ids;
pub mod limits;
pub mod linearizability;
pub mod pack;
pub mod proto;
pub mod registry;
pub mod shard;
pub mod splitmix;
pub mod varint;
pub mod wire;

pub use ids::{ClientId, NodeId, ShardId};
