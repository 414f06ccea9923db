//! The one error type of kv-storage, so that every failure names the file (and, for
//! corruption, the byte offset) an operator has to look at.

use std::io;

/// Why a storage operation failed. Every variant names the file involved.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The operating system refused an operation for a reason other than a full disk.
    #[error("I/O error on {file}: {source}")]
    Io {
        /// File (or directory) the operation was on.
        file: String,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },
    /// Bytes on disk are not what kv-storage wrote: refuse to start rather than lose data.
    #[error("{file} is corrupt at offset {offset}: {reason}")]
    Corrupt {
        /// File holding the bad bytes.
        file: String,
        /// Byte offset of the first bad record or header in `file`.
        offset: u64,
        /// What check failed.
        reason: String,
    },
    /// The disk has no room: the write did not happen and the log is as before it.
    #[error("disk full while writing {file}")]
    DiskFull {
        /// File the failed write was to.
        file: String,
    },
    /// A record payload is larger than the limit `RECORD_PAYLOAD_BYTES_MAX`.
    #[error(
        "record payload of {len} bytes exceeds the limit RECORD_PAYLOAD_BYTES_MAX ({max} bytes)"
    )]
    RecordTooLarge {
        /// Payload length asked for.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// A snapshot is larger than the limit `SNAPSHOT_BYTES_MAX`.
    #[error("snapshot of {len} bytes exceeds the limit SNAPSHOT_BYTES_MAX ({max} bytes)")]
    SnapshotTooLarge {
        /// Snapshot length asked for.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// An earlier write or fsync of `file` failed in a way that leaves its state on disk
    /// unknown; every later write is refused until the storage is reopened (recovery then
    /// decides from what is really on disk).
    #[error("storage refuses writes after an earlier failure on {file} ({reason}); reopen it to recover")]
    Poisoned {
        /// File whose state became unknown.
        file: String,
        /// The original failure.
        reason: String,
    },
}

impl StorageError {
    /// Wraps an OS error for `file`, recognising a full disk (ENOSPC, EDQUOT) so that
    /// callers can tell "no room" from "broken".
    pub fn from_io(file: &str, source: io::Error) -> StorageError {
        // ENOSPC is 28 and EDQUOT 122 on Linux; ErrorKind::StorageFull/QuotaExceeded
        // need Rust 1.83, newer than the workspace's rust-version.
        const ENOSPC: i32 = 28;
        const EDQUOT: i32 = 122;
        match source.raw_os_error() {
            Some(ENOSPC) | Some(EDQUOT) => StorageError::DiskFull {
                file: file.to_string(),
            },
            _ => StorageError::Io {
                file: file.to_string(),
                source,
            },
        }
    }
}
