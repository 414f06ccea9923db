//! Durable storage for a raftkv node: one write-ahead log shared by all groups, snapshot files, and a simulated disk with crash faults for tests.
//!
//! Layout:
//! - [`disk`]: the [`Disk`] trait, the few file operations storage needs.
//! - [`real_disk`]: [`RealDisk`], a directory of the real file system (kvserver).
//! - [`sim_disk`]: [`SimDisk`], in memory, deterministic, with power loss, a full disk
//!   and corruption (the simulator and the tests).
//! - `format`: the byte layout of segments, records and snapshot files.
//! - [`storage`]: [`Storage`], the WAL and snapshots over any [`Disk`].
//! - [`error`]: [`StorageError`]; every message names the file (and offset).
//!
//! The contract in one paragraph: [`Storage::append`] writes a [`Record`]
//! ([`Storage::append_all`] many, in one write);
//! [`Storage::sync`] makes every append since the last sync durable with one fsync
//! (group commit across all groups); [`Storage::save_snapshot`] is durable on return;
//! [`Storage::compact`] deletes segments that snapshots made unnecessary;
//! [`Storage::open`] returns what survived as [`Recovered`]. docs/STORAGE.md has the
//! on-disk format, the recovery rules and the fsync ordering.

pub mod disk;
pub mod error;
mod format;
pub mod real_disk;
pub mod sim_disk;
pub mod storage;

pub use disk::Disk;
pub use error::StorageError;
pub use format::{
    push_covers, split_covers, Covers, Record, MANY_GROUPS, RECORD_PAYLOAD_BYTES_MAX,
    SNAPSHOT_BYTES_MAX,
};
pub use real_disk::RealDisk;
pub use sim_disk::{SimDisk, SimDiskStats};
pub use storage::{PartialAppend, Recovered, Storage, TruncatedTail, WalOptions};
