//! Test harnesses that give the storage suite the same handles (a disk, a way to corrupt
//! it, a way to fill it) over the real file system and over `SimDisk`, so that one suite
//! checks both.

#![allow(dead_code)] // each test binary uses its own part of the harness

use std::cell::Cell;
use std::path::Path;
use std::rc::Rc;

use bytes::Bytes;
use kv_storage::{
    push_covers, Disk, RealDisk, Record, Recovered, SimDisk, Storage, StorageError, WalOptions,
    MANY_GROUPS,
};

/// Access to one disk for the suite: fresh handles to it and fault switches.
pub trait Harness {
    /// The disk type the storage runs on.
    type D: Disk + std::fmt::Debug;
    /// A new handle to the same disk (as a restarted process would open it).
    fn disk(&self) -> Self::D;
    /// Corrupts one byte of `file`.
    fn flip_byte(&self, file: &str, offset: u64);
    /// Makes every later append or positioned write fail with `DiskFull`.
    fn set_full(&self, full: bool);
    /// Makes every later fsync fail.
    fn set_syncs_fail(&self, fail: bool);
}

/// The real file system in a temporary directory, with full-disk and fsync faults
/// injected by a wrapper (a real full disk cannot be had on demand in a test).
pub struct RealHarness {
    dir: tempfile::TempDir,
    faults: Rc<Faults>,
}

#[derive(Debug, Default)]
struct Faults {
    full: Cell<bool>,
    syncs_fail: Cell<bool>,
}

impl RealHarness {
    pub fn new() -> RealHarness {
        RealHarness {
            dir: tempfile::tempdir().expect("temp dir"),
            faults: Rc::default(),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// `RealDisk` plus injected faults. A full disk writes half of the bytes first, as a
/// real `write` that runs out of room part-way does.
#[derive(Debug)]
pub struct FaultyRealDisk {
    inner: RealDisk,
    faults: Rc<Faults>,
}

impl Disk for FaultyRealDisk {
    fn create(&mut self, name: &str) -> Result<(), StorageError> {
        self.inner.create(name)
    }
    fn append(&mut self, name: &str, data: &[u8]) -> Result<(), StorageError> {
        if self.faults.full.get() {
            self.inner.append(name, &data[..data.len() / 2])?;
            return Err(StorageError::DiskFull {
                file: name.to_string(),
            });
        }
        self.inner.append(name, data)
    }
    fn write_at(&mut self, name: &str, offset: u64, data: &[u8]) -> Result<(), StorageError> {
        if self.faults.full.get() {
            self.inner.write_at(name, offset, &data[..data.len() / 2])?;
            return Err(StorageError::DiskFull {
                file: name.to_string(),
            });
        }
        self.inner.write_at(name, offset, data)
    }
    fn read(&mut self, name: &str) -> Result<Vec<u8>, StorageError> {
        self.inner.read(name)
    }
    fn sync_file(&mut self, name: &str) -> Result<(), StorageError> {
        if self.faults.syncs_fail.get() {
            return Err(StorageError::Io {
                file: name.to_string(),
                source: std::io::Error::other("injected fsync failure"),
            });
        }
        self.inner.sync_file(name)
    }
    fn rename(&mut self, from: &str, to: &str) -> Result<(), StorageError> {
        self.inner.rename(from, to)
    }
    fn remove(&mut self, name: &str) -> Result<(), StorageError> {
        self.inner.remove(name)
    }
    fn list(&mut self) -> Result<Vec<String>, StorageError> {
        self.inner.list()
    }
    fn sync_dir(&mut self) -> Result<(), StorageError> {
        if self.faults.syncs_fail.get() {
            return Err(StorageError::Io {
                file: ".".to_string(),
                source: std::io::Error::other("injected fsync failure"),
            });
        }
        self.inner.sync_dir()
    }
    fn len(&mut self, name: &str) -> Result<u64, StorageError> {
        self.inner.len(name)
    }
    fn truncate(&mut self, name: &str, len: u64) -> Result<(), StorageError> {
        self.inner.truncate(name, len)
    }
}

impl Harness for RealHarness {
    type D = FaultyRealDisk;
    fn disk(&self) -> FaultyRealDisk {
        FaultyRealDisk {
            inner: RealDisk::open(self.dir.path()).expect("open real disk"),
            faults: self.faults.clone(),
        }
    }
    fn flip_byte(&self, file: &str, offset: u64) {
        let path = self.dir.path().join(file);
        let mut data = std::fs::read(&path).expect("read file to corrupt");
        data[offset as usize] ^= 0xFF;
        std::fs::write(&path, data).expect("write corrupted file");
    }
    fn set_full(&self, full: bool) {
        self.faults.full.set(full);
    }
    fn set_syncs_fail(&self, fail: bool) {
        self.faults.syncs_fail.set(fail);
    }
}

/// The simulated disk, with its own fault switches.
pub struct SimHarness {
    pub disk: SimDisk,
}

impl SimHarness {
    pub fn new(seed: u64) -> SimHarness {
        SimHarness {
            disk: SimDisk::new(seed),
        }
    }
}

impl Harness for SimHarness {
    type D = SimDisk;
    fn disk(&self) -> SimDisk {
        self.disk.clone()
    }
    fn flip_byte(&self, file: &str, offset: u64) {
        self.disk.flip_byte(file, offset);
    }
    fn set_full(&self, full: bool) {
        self.disk.set_full(full);
    }
    fn set_syncs_fail(&self, fail: bool) {
        self.disk.set_syncs_fail(fail);
    }
}

/// Opens storage on a fresh handle of the harness's disk.
pub fn open<H: Harness>(
    h: &H,
    options: WalOptions,
) -> Result<(Storage<H::D>, Recovered), StorageError> {
    Storage::open(h.disk(), options)
}

/// A non-sticky record whose payload names it, so tests can tell records apart.
pub fn entry(group: u32, last_index: u64, payload_len: usize) -> Record {
    let mut payload = format!("g{group}i{last_index}:").into_bytes();
    payload.resize(payload_len.max(payload.len()), b'.');
    Record {
        group,
        kind: 1,
        sticky: false,
        last_index,
        payload: Bytes::from(payload),
    }
}

/// A [`MANY_GROUPS`] record (think: the node's round record) holding records of the
/// groups in `covers` up to their index there, with `body_len` bytes of its own.
pub fn many(covers: &[(u32, u64)], body_len: usize) -> Record {
    let mut payload = format!("many{covers:?}").into_bytes();
    payload.resize(body_len.max(payload.len()), b'.');
    push_covers(&mut payload, covers);
    Record {
        group: MANY_GROUPS,
        kind: 4,
        sticky: false,
        last_index: 0,
        payload: Bytes::from(payload),
    }
}

/// A sticky record (think: hard state) with `text` as payload.
pub fn sticky(group: u32, text: &str) -> Record {
    Record {
        group,
        kind: 2,
        sticky: true,
        last_index: 0,
        payload: Bytes::copy_from_slice(text.as_bytes()),
    }
}

/// The records without the copies of sticky records that segment heads repeat.
pub fn without_repeats(records: &[Record]) -> Vec<Record> {
    let mut out: Vec<Record> = Vec::new();
    for r in records {
        if !(r.sticky && out.contains(r)) {
            out.push(r.clone());
        }
    }
    out
}
