//! `RealDisk`: the [`Disk`] trait over one directory of the real file system, used by
//! kvserver.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::disk::{assert_plain_name, Disk};
use crate::error::StorageError;

/// A directory on the real file system.
///
/// Keeps the file it last wrote to open, because the WAL writes to one segment many
/// times between fsyncs and reopening it for every record would double the system
/// calls on the hot path.
#[derive(Debug)]
pub struct RealDisk {
    dir: PathBuf,
    append_handle: Option<(String, File)>,
}

impl RealDisk {
    /// Opens `dir` as a disk, creating it (and its parents) if needed.
    pub fn open(dir: &Path) -> Result<RealDisk, StorageError> {
        fs::create_dir_all(dir)
            .map_err(|e| StorageError::from_io(&dir.display().to_string(), e))?;
        Ok(RealDisk {
            dir: dir.to_path_buf(),
            append_handle: None,
        })
    }

    /// The directory this disk lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, name: &str) -> PathBuf {
        assert_plain_name(name);
        self.dir.join(name)
    }

    fn err(&self, name: &str, e: std::io::Error) -> StorageError {
        StorageError::from_io(&self.dir.join(name).display().to_string(), e)
    }

    /// Drops the cached handle if it refers to `name`, so that a rename or remove
    /// cannot leave later appends going to an unlinked inode.
    fn forget(&mut self, name: &str) {
        if self.append_handle.as_ref().is_some_and(|(n, _)| n == name) {
            self.append_handle = None;
        }
    }

    fn handle(&mut self, name: &str) -> Result<&mut File, StorageError> {
        let cached = matches!(&self.append_handle, Some((n, _)) if n == name);
        if !cached {
            // Not O_APPEND: Linux would then put every positioned write at the end.
            let file = OpenOptions::new()
                .write(true)
                .open(self.path(name))
                .map_err(|e| self.err(name, e))?;
            self.append_handle = Some((name.to_string(), file));
        }
        Ok(&mut self.append_handle.as_mut().expect("handle was just set").1)
    }
}

impl Disk for RealDisk {
    fn create(&mut self, name: &str) -> Result<(), StorageError> {
        self.forget(name);
        File::create(self.path(name)).map_err(|e| self.err(name, e))?;
        Ok(())
    }

    fn append(&mut self, name: &str, data: &[u8]) -> Result<(), StorageError> {
        let file = self.handle(name)?;
        let result = file
            .seek(SeekFrom::End(0))
            .and_then(|_| file.write_all(data));
        result.map_err(|e| self.err(name, e))
    }

    fn write_at(&mut self, name: &str, offset: u64, data: &[u8]) -> Result<(), StorageError> {
        let result = self.handle(name)?.write_all_at(data, offset);
        result.map_err(|e| self.err(name, e))
    }

    fn read(&mut self, name: &str) -> Result<Vec<u8>, StorageError> {
        let mut data = Vec::new();
        File::open(self.path(name))
            .and_then(|mut f| f.read_to_end(&mut data))
            .map_err(|e| self.err(name, e))?;
        Ok(data)
    }

    fn sync_file(&mut self, name: &str) -> Result<(), StorageError> {
        // fdatasync also flushes the file length, the only metadata a write changes
        // that reading the data back needs.
        let result = match &self.append_handle {
            Some((n, file)) if n == name => file.sync_data(),
            _ => File::open(self.path(name)).and_then(|f| f.sync_data()),
        };
        result.map_err(|e| self.err(name, e))
    }

    fn rename(&mut self, from: &str, to: &str) -> Result<(), StorageError> {
        self.forget(from);
        self.forget(to);
        fs::rename(self.path(from), self.path(to)).map_err(|e| self.err(from, e))
    }

    fn remove(&mut self, name: &str) -> Result<(), StorageError> {
        self.forget(name);
        fs::remove_file(self.path(name)).map_err(|e| self.err(name, e))
    }

    fn list(&mut self) -> Result<Vec<String>, StorageError> {
        let mut names = Vec::new();
        let entries = fs::read_dir(&self.dir).map_err(|e| self.err(".", e))?;
        for entry in entries {
            let entry = entry.map_err(|e| self.err(".", e))?;
            let is_file = entry.file_type().map_err(|e| self.err(".", e))?.is_file();
            // A name that is not UTF-8 was not written by kv-storage; skipping it is the
            // same as skipping any other foreign file.
            if let (true, Some(name)) = (is_file, entry.file_name().to_str()) {
                names.push(name.to_string());
            }
        }
        Ok(names)
    }

    fn sync_dir(&mut self) -> Result<(), StorageError> {
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| self.err(".", e))
    }

    fn len(&mut self, name: &str) -> Result<u64, StorageError> {
        fs::metadata(self.path(name))
            .map(|m| m.len())
            .map_err(|e| self.err(name, e))
    }

    fn truncate(&mut self, name: &str, len: u64) -> Result<(), StorageError> {
        let result = self.handle(name)?.set_len(len);
        result.map_err(|e| self.err(name, e))
    }
}
