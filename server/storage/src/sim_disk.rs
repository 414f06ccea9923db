//! `SimDisk`: an in-memory [`Disk`] for the deterministic simulator and the tests, which
//! keeps apart what was written from what was made durable, so that a simulated power
//! loss can throw away exactly what a real one may.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io;
use std::rc::Rc;

use crate::disk::{assert_plain_name, Disk};
use crate::error::StorageError;
use kv_shared::splitmix::SplitMix64;

/// An in-memory disk with power loss, a full-disk switch and byte corruption.
///
/// Clones share one disk, so a test (or the simulator) keeps a handle while the
/// storage owns another. Everything random comes from the seed: the same seed and the
/// same operations give the same files, byte for byte.
///
/// What survives [`SimDisk::crash`] (the POSIX minimum, nothing more):
/// - a file's bytes as of its last [`Disk::sync_file`]; of what was written after it
///   (appended, or written over bytes already there), nothing, everything, or the part
///   below a seeded offset (a torn write: writes reach the medium in offset order, so
///   above that offset the file keeps its synced bytes);
/// - a file that was cut below its synced length since: either its synced bytes or
///   its current bytes, chosen by the seed;
/// - the directory as of its last [`Disk::sync_dir`]: later creates, renames and
///   removes are undone (a file whose name did not survive is gone).
#[derive(Clone, Debug)]
pub struct SimDisk {
    state: Rc<RefCell<SimState>>,
}

/// Counters of what a [`SimDisk`] was asked to do, for tests of fsync batching.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SimDiskStats {
    /// Calls of [`Disk::sync_file`].
    pub file_syncs: u64,
    /// Calls of [`Disk::sync_dir`].
    pub dir_syncs: u64,
    /// Bytes written by appends and positioned writes (including the written prefix of
    /// failed ones).
    pub bytes_written: u64,
    /// Calls of [`SimDisk::crash`].
    pub crashes: u64,
}

#[derive(Debug)]
struct SimState {
    rng: SplitMix64,
    next_inode: u64,
    inodes: BTreeMap<u64, Inode>,
    /// The directory as the running program sees it.
    names: BTreeMap<String, u64>,
    /// The directory as a crash would leave it.
    durable_names: BTreeMap<String, u64>,
    full: bool,
    syncs_fail: bool,
    stats: SimDiskStats,
}

#[derive(Debug, Default)]
struct Inode {
    data: Vec<u8>,
    /// Contents as of the last fsync.
    durable: Vec<u8>,
    /// Lowest offset written since the last fsync (`usize::MAX`: none): below it `data`
    /// and `durable` agree.
    dirty_from: usize,
    /// Cut below its durable length since the last fsync: a crash keeps either version
    /// whole.
    cut: bool,
}

impl Inode {
    fn new() -> Inode {
        Inode {
            dirty_from: usize::MAX,
            ..Inode::default()
        }
    }

    /// Where `data` may first differ from `durable`.
    fn clean_up_to(&self) -> usize {
        self.dirty_from.min(self.durable.len()).min(self.data.len())
    }

    /// Writes `bytes` at `at` (at most the current length).
    fn write(&mut self, at: usize, bytes: &[u8]) {
        assert!(at <= self.data.len(), "writes leave no holes");
        let end = at + bytes.len();
        if end > self.data.len() {
            self.data.resize(end, 0);
        }
        self.data[at..end].copy_from_slice(bytes);
        self.dirty_from = self.dirty_from.min(at);
    }
}

fn sync_failed(name: &str) -> StorageError {
    StorageError::Io {
        file: name.to_string(),
        source: io::Error::other("simulated fsync failure"),
    }
}

fn not_found(name: &str) -> StorageError {
    StorageError::Io {
        file: name.to_string(),
        source: io::Error::new(
            io::ErrorKind::NotFound,
            "no such file on the simulated disk",
        ),
    }
}

impl SimState {
    fn inode_mut(&mut self, name: &str) -> Result<&mut Inode, StorageError> {
        let id = *self.names.get(name).ok_or_else(|| not_found(name))?;
        Ok(self
            .inodes
            .get_mut(&id)
            .expect("every name points to an inode"))
    }

    /// Drops inodes that no directory (current or durable) names any more.
    fn collect_garbage(&mut self) {
        let names = &self.names;
        let durable = &self.durable_names;
        self.inodes
            .retain(|id, _| names.values().any(|v| v == id) || durable.values().any(|v| v == id));
    }
}

impl SimDisk {
    /// An empty disk whose fault choices all derive from `seed`.
    pub fn new(seed: u64) -> SimDisk {
        SimDisk {
            state: Rc::new(RefCell::new(SimState {
                rng: SplitMix64::new(seed),
                next_inode: 1,
                inodes: BTreeMap::new(),
                names: BTreeMap::new(),
                durable_names: BTreeMap::new(),
                full: false,
                syncs_fail: false,
                stats: SimDiskStats::default(),
            })),
        }
    }

    /// Power loss: keeps what was made durable and, per file, a seeded choice of what was
    /// not (see the type's documentation). Afterwards the surviving state is the durable
    /// state. The storage using this disk must be dropped and reopened, as a real
    /// process would be restarted.
    pub fn crash(&self) {
        let mut s = self.state.borrow_mut();
        let s = &mut *s;
        s.stats.crashes += 1;
        s.names = s.durable_names.clone();
        s.collect_garbage();
        for inode in s.inodes.values_mut() {
            if !inode.cut {
                let clean = inode.clean_up_to();
                let unsynced = (inode.data.len() - clean) as u64;
                let kept = match s.rng.upto(2) {
                    0 => 0,
                    1 => unsynced,
                    _ => s.rng.upto(unsynced),
                };
                let reached = clean + kept as usize;
                // Above the offset the writes reached, the synced bytes stay (none past
                // the synced length, which only appends had grown).
                if reached < inode.durable.len() {
                    let rest = inode.durable[reached..].to_vec();
                    inode.data.truncate(reached);
                    inode.data.extend_from_slice(&rest);
                } else {
                    inode.data.truncate(reached);
                }
            } else if s.rng.upto(1) == 0 {
                inode.data = inode.durable.clone();
            }
            inode.durable = inode.data.clone();
            inode.dirty_from = usize::MAX;
            inode.cut = false;
        }
    }

    /// While `full`, every append and positioned write fails with
    /// [`StorageError::DiskFull`] after writing a seeded prefix of its bytes (as a real
    /// `write` may; a write over blocks already there fails too, which is stricter than
    /// a real file system). Creates, renames, removes and truncates still succeed: they
    /// need no data blocks.
    pub fn set_full(&self, full: bool) {
        self.state.borrow_mut().full = full;
    }

    /// While `fail`, every [`Disk::sync_file`] and [`Disk::sync_dir`] fails with an I/O
    /// error and makes nothing durable (a dying device, or fsync reporting a lost
    /// write-back).
    pub fn set_syncs_fail(&self, fail: bool) {
        self.state.borrow_mut().syncs_fail = fail;
    }

    /// Corrupts one byte of `file` (in the written and in the durable contents, as a bad
    /// sector would). Panics if the file or the offset does not exist: that is a broken
    /// test, not a disk fault.
    pub fn flip_byte(&self, file: &str, offset: u64) {
        let mut s = self.state.borrow_mut();
        let inode = s
            .inode_mut(file)
            .unwrap_or_else(|_| panic!("flip_byte: no file {file}"));
        let at = usize::try_from(offset).expect("offset fits in memory");
        assert!(
            at < inode.data.len(),
            "flip_byte: {file} has {} bytes, offset {offset}",
            inode.data.len()
        );
        inode.data[at] ^= 0xFF;
        if at < inode.durable.len() {
            inode.durable[at] ^= 0xFF;
        }
    }

    /// Every file with its current length, sorted by name.
    pub fn files(&self) -> Vec<(String, u64)> {
        let s = self.state.borrow();
        s.names
            .iter()
            .map(|(name, id)| (name.clone(), s.inodes[id].data.len() as u64))
            .collect()
    }

    /// Counters of the operations so far.
    pub fn stats(&self) -> SimDiskStats {
        self.state.borrow().stats
    }
}

impl Disk for SimDisk {
    fn create(&mut self, name: &str) -> Result<(), StorageError> {
        assert_plain_name(name);
        let mut s = self.state.borrow_mut();
        let id = s.next_inode;
        s.next_inode += 1;
        s.inodes.insert(id, Inode::new());
        s.names.insert(name.to_string(), id);
        s.collect_garbage();
        Ok(())
    }

    fn append(&mut self, name: &str, data: &[u8]) -> Result<(), StorageError> {
        let at = self.state.borrow_mut().inode_mut(name)?.data.len() as u64;
        self.write_at(name, at, data)
    }

    fn write_at(&mut self, name: &str, offset: u64, data: &[u8]) -> Result<(), StorageError> {
        let mut s = self.state.borrow_mut();
        let s = &mut *s;
        let full = s.full;
        let written = if full {
            s.rng.upto(data.len() as u64) as usize
        } else {
            data.len()
        };
        s.stats.bytes_written += written as u64;
        let at = usize::try_from(offset).expect("offset fits in memory");
        s.inode_mut(name)?.write(at, &data[..written]);
        if full {
            return Err(StorageError::DiskFull {
                file: name.to_string(),
            });
        }
        Ok(())
    }

    fn read(&mut self, name: &str) -> Result<Vec<u8>, StorageError> {
        Ok(self.state.borrow_mut().inode_mut(name)?.data.clone())
    }

    fn sync_file(&mut self, name: &str) -> Result<(), StorageError> {
        let mut s = self.state.borrow_mut();
        s.stats.file_syncs += 1;
        if s.syncs_fail {
            return Err(sync_failed(name));
        }
        let inode = s.inode_mut(name)?;
        if inode.cut {
            inode.durable = inode.data.clone();
        } else {
            let clean = inode.clean_up_to();
            inode.durable.truncate(clean);
            inode.durable.extend_from_slice(&inode.data[clean..]);
        }
        inode.dirty_from = usize::MAX;
        inode.cut = false;
        Ok(())
    }

    fn rename(&mut self, from: &str, to: &str) -> Result<(), StorageError> {
        assert_plain_name(to);
        let mut s = self.state.borrow_mut();
        let id = s.names.remove(from).ok_or_else(|| not_found(from))?;
        s.names.insert(to.to_string(), id);
        s.collect_garbage();
        Ok(())
    }

    fn remove(&mut self, name: &str) -> Result<(), StorageError> {
        let mut s = self.state.borrow_mut();
        s.names.remove(name).ok_or_else(|| not_found(name))?;
        s.collect_garbage();
        Ok(())
    }

    fn list(&mut self) -> Result<Vec<String>, StorageError> {
        Ok(self.state.borrow().names.keys().cloned().collect())
    }

    fn sync_dir(&mut self) -> Result<(), StorageError> {
        let mut s = self.state.borrow_mut();
        s.stats.dir_syncs += 1;
        if s.syncs_fail {
            return Err(sync_failed("."));
        }
        s.durable_names = s.names.clone();
        s.collect_garbage();
        Ok(())
    }

    fn len(&mut self, name: &str) -> Result<u64, StorageError> {
        Ok(self.state.borrow_mut().inode_mut(name)?.data.len() as u64)
    }

    fn truncate(&mut self, name: &str, len: u64) -> Result<(), StorageError> {
        let mut s = self.state.borrow_mut();
        let inode = s.inode_mut(name)?;
        let len = usize::try_from(len).expect("length fits in memory");
        assert!(len <= inode.data.len(), "truncate only shrinks {name}");
        inode.data.truncate(len);
        if len < inode.durable.len() {
            inode.cut = true;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crash_keeps_synced_bytes_and_a_prefix_of_the_rest() {
        for seed in 0..50 {
            let mut disk = SimDisk::new(seed);
            disk.create("f").unwrap();
            disk.sync_dir().unwrap();
            disk.append("f", b"durable").unwrap();
            disk.sync_file("f").unwrap();
            disk.append("f", b"-maybe").unwrap();
            disk.crash();
            let data = disk.read("f").unwrap();
            assert!(data.starts_with(b"durable"), "seed {seed}: {data:?}");
            assert!(b"durable-maybe".starts_with(&data), "seed {seed}: {data:?}");
        }
    }

    #[test]
    fn crash_keeps_an_overwrite_whole_torn_or_not_at_all() {
        let mut outcomes = std::collections::BTreeSet::new();
        for seed in 0..200 {
            let mut disk = SimDisk::new(seed);
            disk.create("f").unwrap();
            disk.sync_dir().unwrap();
            disk.append("f", b"head....").unwrap();
            disk.sync_file("f").unwrap();
            disk.write_at("f", 4, b"NEW!").unwrap();
            disk.crash();
            let data = disk.read("f").unwrap();
            let kept = (4..=8).find(|&k| data == [&b"headNEW!"[..k], &b"head...."[k..]].concat());
            assert!(kept.is_some(), "seed {seed}: {data:?}");
            outcomes.insert(kept);
        }
        assert_eq!(outcomes.len(), 5, "every tear point turns up: {outcomes:?}");
    }

    #[test]
    fn crash_undoes_directory_changes_not_synced() {
        let mut disk = SimDisk::new(7);
        disk.create("kept").unwrap();
        disk.sync_dir().unwrap();
        disk.create("lost").unwrap();
        disk.sync_file("lost").unwrap();
        disk.rename("kept", "renamed").unwrap();
        disk.crash();
        assert_eq!(disk.files(), vec![("kept".to_string(), 0)]);
    }

    #[test]
    fn removed_then_crashed_file_comes_back_with_its_durable_bytes() {
        let mut disk = SimDisk::new(3);
        disk.create("f").unwrap();
        disk.append("f", b"abc").unwrap();
        disk.sync_file("f").unwrap();
        disk.sync_dir().unwrap();
        disk.remove("f").unwrap();
        assert!(disk.files().is_empty());
        disk.crash();
        assert_eq!(disk.read("f").unwrap(), b"abc");
    }

    #[test]
    fn full_disk_fails_appends_but_allows_truncate() {
        let mut disk = SimDisk::new(11);
        disk.create("f").unwrap();
        disk.append("f", b"ok").unwrap();
        disk.set_full(true);
        let err = disk.append("f", b"no room here").unwrap_err();
        assert!(
            matches!(err, StorageError::DiskFull { ref file } if file == "f"),
            "{err}"
        );
        disk.truncate("f", 2).unwrap();
        disk.set_full(false);
        disk.append("f", b"!").unwrap();
        assert_eq!(disk.read("f").unwrap(), b"ok!");
    }
}
