//! The `Disk` abstraction: the few file-system operations the WAL and snapshots need,
//! behind a trait so the same storage code runs on the real file system and on the
//! simulator's fault-injecting disk.

use crate::error::StorageError;

/// A flat directory of named files. Names are plain file names (no `/`).
///
/// Durability follows POSIX: bytes written to a file are durable only after
/// [`Disk::sync_file`] of that file; a create, rename or remove is durable only after
/// [`Disk::sync_dir`]. Implementations must not promise more than that, and
/// [`crate::SimDisk`] deliberately promises nothing more.
pub trait Disk {
    /// Creates `name` empty (truncating it if it exists).
    fn create(&mut self, name: &str) -> Result<(), StorageError>;
    /// Appends `data` at the end of `name`. On error a prefix of `data` may have been
    /// written; the caller restores the old length with [`Disk::truncate`].
    fn append(&mut self, name: &str, data: &[u8]) -> Result<(), StorageError>;
    /// Writes `data` into `name` at `offset` (at most its current length), over what is
    /// there and past its end if it reaches that far. On error a prefix of `data` may
    /// have been written.
    fn write_at(&mut self, name: &str, offset: u64, data: &[u8]) -> Result<(), StorageError>;
    /// Reads the whole of `name`.
    fn read(&mut self, name: &str) -> Result<Vec<u8>, StorageError>;
    /// Makes the current contents of `name` durable (fsync).
    fn sync_file(&mut self, name: &str) -> Result<(), StorageError>;
    /// Renames `from` to `to`, replacing `to` if it exists.
    fn rename(&mut self, from: &str, to: &str) -> Result<(), StorageError>;
    /// Removes `name`.
    fn remove(&mut self, name: &str) -> Result<(), StorageError>;
    /// Names of all files in the directory, in no particular order.
    fn list(&mut self) -> Result<Vec<String>, StorageError>;
    /// Makes every create, rename and remove so far durable (fsync of the directory).
    fn sync_dir(&mut self) -> Result<(), StorageError>;
    /// Current length of `name` in bytes.
    fn len(&mut self, name: &str) -> Result<u64, StorageError>;
    /// Cuts `name` down to `len` bytes (`len` is at most the current length).
    fn truncate(&mut self, name: &str, len: u64) -> Result<(), StorageError>;
}

/// Asserts the flat-directory contract at the boundary: a name with a separator or a
/// dot-dot would escape the data directory, which is a programmer error.
pub(crate) fn assert_plain_name(name: &str) {
    assert!(
        !name.is_empty()
            && !name.contains('/')
            && !name.contains('\\')
            && name != "."
            && name != "..",
        "disk file names are plain names, got {name:?}"
    );
}
