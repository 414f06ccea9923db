//! kv-node: the sans-I/O node core. It hosts one Raft replica (kv-raft) per shard, the
//! key-value state machine of each shard with its client sessions, and batches outgoing
//! messages per destination node. No sockets, files, clocks, threads or OS randomness:
//! the kvserver runtime and the deterministic simulator drive the same code.
//!
//! Layout:
//! - [`core`]: [`NodeCore`], its inputs (`tick`, `on_peer_messages`, `on_client_request`,
//!   `on_disk_done`) and its [`Output`] (datagrams, disk writes, client replies, and
//!   what was applied and proposed: `core/progress.rs`). Its parts: `core/group.rs` (one
//!   shard's replica, state machine and durability), `core/requests.rs` (client requests:
//!   routing, proposing, reads, replies), `core/ready.rs` (each group's Ready: persist,
//!   apply, snapshots), `core/views.rs` (status and read-only views for the runtime),
//!   `core/metadata.rs` (the metadata group).
//! - [`config`]: the [`NodeConfig`] settings.
//! - [`sm`]: the per-shard state machine and sessions (exactly-once writes); the log's
//!   command types are in `sm/command.rs`.
//! - [`moves`]: moving a shard's replica between nodes (checks and the leader's next
//!   step); `core/moving.rs` holds the node core's side (driving, creating, dropping).
//! - [`wal`]: Raft state as kv-storage records, and recovery from them.
//! - [`codec`]: peer datagrams (encode, decode, split to fit).
//! - [`write_refusal`]: client writes refused for a while (disk full), an input of the core.
//!
//! See docs/NODE.md for the contract with the runtime.

pub mod codec;
pub mod config;
pub mod core;
pub mod events;
pub mod moves;
pub mod placement;
pub mod sm;
pub mod wal;
pub mod write_refusal;

#[cfg(test)]
mod tests;

pub use crate::codec::GroupMessage;
pub use crate::config::{kvserver_raft_config, NodeConfig};
#[cfg(feature = "planted-bugs")]
pub use crate::core::PlantedBug;
pub use crate::core::{
    entry_hash, AppliedEntry, BoundaryRefusal, ClientToken, DiskOp, DiskWrite, GroupView, NodeCore,
    Output, ProposedRequest,
};
pub use crate::events::{EventKind, NodeEvent};
pub use crate::wal::RecoveryError;
pub use crate::write_refusal::WriteRefusal;
