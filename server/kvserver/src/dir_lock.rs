//! The data directory's lock: two kvservers on one directory would interleave their WAL
//! appends and each trust its own view of the log, so a second one must refuse to start.
//! An advisory `flock` on a `LOCK` file in the directory, held for the life of the
//! process (the kernel drops it when the process dies, even by kill -9, so a crash never
//! leaves a stale lock); the file holds the holder's pid for the error message.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

/// Name of the lock file in the data directory (kv-storage ignores files it does not
/// recognise).
pub const LOCK_FILE_NAME: &str = "LOCK";

/// A held lock on a data directory; dropping it releases the lock.
#[derive(Debug)]
pub struct DirLock {
    _file: File,
}

/// Why the lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum DirLockError {
    /// Another process holds it.
    #[error("data directory {} is in use by another kvserver{}; stop it or pick another --data-dir",
        dir.display(),
        holder.map(|pid| format!(" (pid {pid})")).unwrap_or_default())]
    Held {
        /// The data directory.
        dir: PathBuf,
        /// The holder's pid, as it wrote it in the lock file (if readable).
        holder: Option<u32>,
    },
    /// The directory or its lock file could not be created or locked.
    #[error("cannot lock the data directory {}: {source}", dir.display())]
    Io {
        /// The data directory.
        dir: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
}

impl DirLock {
    /// Creates `dir` if needed and locks it for this process.
    pub fn acquire(dir: &Path) -> Result<DirLock, DirLockError> {
        let io = |source| DirLockError::Io {
            dir: dir.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join(LOCK_FILE_NAME))
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut text = String::new();
                let holder = file
                    .read_to_string(&mut text)
                    .ok()
                    .and_then(|_| text.trim().parse().ok());
                return Err(DirLockError::Held {
                    dir: dir.to_path_buf(),
                    holder,
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        }
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        Ok(DirLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_in_the_same_process_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("node-1");
        let first = DirLock::acquire(&data).unwrap();
        match DirLock::acquire(&data) {
            Err(DirLockError::Held { dir, holder }) => {
                assert_eq!(dir, data);
                assert_eq!(holder, Some(std::process::id()));
            }
            other => panic!("expected Held, got {other:?}"),
        }
        drop(first);
        DirLock::acquire(&data).expect("free again once dropped");
    }
}
