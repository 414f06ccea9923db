//! `Storage`: the node's one write-ahead log (shared by all Raft groups, so one fsync
//! commits every group's writes) and its per-group snapshot files, over any [`Disk`].

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;

use crate::disk::Disk;
use crate::error::StorageError;
use crate::format::{
    check_segment_header, decode_record, decode_snapshot, encode_record, encode_segment_header,
    encode_snapshot, parse_segment_name, parse_snapshot_name, record_seed, segment_name,
    snapshot_name, split_covers, valid_record_after, zeros_from, Record, MANY_GROUPS,
    RECORD_PAYLOAD_BYTES_MAX, SEGMENT_HEADER_BYTES, SNAPSHOT_BYTES_MAX, TEMP_SUFFIX,
};

/// A batch append ([`Storage::append_all`]) that stopped at a failure.
#[derive(Debug, thiserror::Error)]
#[error("{error} (after appending {appended} records of the batch)")]
pub struct PartialAppend {
    /// How many records, from the start of the batch, are in the log.
    pub appended: usize,
    /// Why the next one is not.
    #[source]
    pub error: StorageError,
}

/// Tuning of the write-ahead log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WalOptions {
    /// A segment that would grow past this many bytes is closed and a new one started
    /// (a single record larger than this still gets a segment of its own).
    pub segment_bytes_max: u64,
}

impl Default for WalOptions {
    fn default() -> WalOptions {
        WalOptions {
            segment_bytes_max: 64 * 1024 * 1024,
        }
    }
}

/// What [`Storage::open`] found on disk.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovered {
    /// Every surviving record, in append order, from the segments that still exist.
    /// A sticky record may appear several times (its copies at segment heads); the
    /// last one of each (group, kind) is the latest. Records that a group's snapshot
    /// covers may or may not be among them: the node ignores those.
    pub records: Vec<Record>,
    /// The latest durable snapshot of each group that has one: (group, index, data),
    /// sorted by group.
    pub snapshots: Vec<(u32, u64, Bytes)>,
    /// The torn tail recovery cut off, if there was one; the node logs it.
    pub truncated_tail: Option<TruncatedTail>,
}

/// A torn WAL tail that recovery cut off: the end of an append a crash interrupted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TruncatedTail {
    /// The segment file.
    pub file: String,
    /// Offset the file was cut at (0: the segment had only part of its header and was
    /// removed).
    pub offset: u64,
    /// Bytes cut off: the rest of the file, preallocated zeros after the torn record
    /// included (the whole file when it was removed).
    pub bytes_cut: u64,
}

/// A WAL segment that exists on disk.
#[derive(Debug)]
struct Segment {
    seq: u64,
    name: String,
    /// What the segment's record CRCs start from (see `format::record_seed`).
    seed: u32,
    /// For each group with records in the segment, its highest `last_index` there, by
    /// group: every record notes each group it holds (a round record many), and a
    /// binary search over a few dozen groups costs less than a BTreeMap's entry.
    last_index_max: Vec<(u32, u64)>,
}

impl Segment {
    fn new(seq: u64, seed: u32) -> Segment {
        Segment {
            seq,
            name: segment_name(seq),
            seed,
            last_index_max: Vec::new(),
        }
    }

    fn note(&mut self, record: &Record) {
        if record.group == MANY_GROUPS {
            let (_, covers) =
                split_covers(&record.payload).expect("checked when encoded or decoded");
            for (group, index) in covers.iter() {
                self.note_index(group, index);
            }
        } else {
            self.note_index(record.group, record.last_index);
        }
    }

    fn note_index(&mut self, group: u32, index: u64) {
        match self
            .last_index_max
            .binary_search_by_key(&group, |&(g, _)| g)
        {
            Ok(i) => {
                let max = &mut self.last_index_max[i].1;
                *max = (*max).max(index);
            }
            Err(i) => self.last_index_max.insert(i, (group, index)),
        }
    }
}

/// The durable state of one node: one WAL for all groups plus snapshot files.
///
/// Writes go straight to the disk ([`Storage::append`]) and become durable together at
/// the next [`Storage::sync`]. Records are written at the end of the log, which is
/// inside the active segment's file when space was preallocated there
/// ([`Storage::preallocate`]): an fsync then finds no file size to change. A failed
/// append leaves nothing behind: the segment is truncated back to its last good
/// length. If that rollback, or any fsync, fails, the
/// state on disk is unknown and the storage refuses every further write
/// ([`StorageError::Poisoned`]) until it is reopened, when recovery decides from what is
/// really on disk.
#[derive(Debug)]
pub struct Storage<D: Disk> {
    disk: D,
    options: WalOptions,
    /// Segments on disk, oldest first; the last is the one being appended to.
    segments: Vec<Segment>,
    /// Length of the active segment up to its last complete record: the end of the log.
    active_len: u64,
    /// Length of the active segment's file: `active_len` plus the zeros written ahead of
    /// the records (preallocated space).
    active_file_len: u64,
    /// Length of the active segment's header and sticky copies: a segment holding
    /// nothing more is never closed, so one huge record cannot roll segments forever.
    active_head_len: u64,
    /// Bytes appended to the active segment since its last fsync.
    active_dirty: bool,
    /// A segment was created since the last directory fsync.
    dir_dirty: bool,
    /// The latest sticky record of each (group, kind).
    sticky: BTreeMap<(u32, u8), Record>,
    /// Highest snapshot index of each group, as told by [`Storage::compact`] or found in
    /// snapshot files at open.
    snapshot_index: BTreeMap<u32, u64>,
    /// Indexes of the snapshot files of each group that exist on disk.
    snapshot_files: BTreeMap<u32, BTreeSet<u64>>,
    /// (file, reason) of the failure that left the disk state unknown.
    poisoned: Option<(String, String)>,
    /// Reused encoding buffer, so appends do not allocate.
    scratch: Vec<u8>,
}

impl<D: Disk> Storage<D> {
    /// Opens the storage on `disk`, recovering what is there (an empty disk is a fresh
    /// node). Deletes leftover temporary snapshot files and snapshots older than each
    /// group's latest, cuts off a torn WAL tail, and refuses to start
    /// ([`StorageError::Corrupt`]) on any other damage.
    pub fn open(mut disk: D, options: WalOptions) -> Result<(Storage<D>, Recovered), StorageError> {
        assert!(
            options.segment_bytes_max > SEGMENT_HEADER_BYTES as u64,
            "segment_bytes_max {} leaves no room for records",
            options.segment_bytes_max
        );
        let mut names = disk.list()?;
        names.sort();
        let mut segment_seqs = Vec::new();
        let mut snapshot_files: BTreeMap<u32, BTreeSet<u64>> = BTreeMap::new();
        for name in &names {
            if let Some(seq) = parse_segment_name(name) {
                segment_seqs.push(seq);
            } else if let Some((group, index)) = parse_snapshot_name(name) {
                snapshot_files.entry(group).or_default().insert(index);
            } else if name.ends_with(TEMP_SUFFIX)
                && parse_snapshot_name(&name[..name.len() - TEMP_SUFFIX.len()]).is_some()
            {
                // A save that crashed before its rename: never complete, never read.
                disk.remove(name)?;
            }
        }

        let mut recovered = Recovered::default();
        let mut snapshot_index = BTreeMap::new();
        for (&group, indexes) in &mut snapshot_files {
            let latest = *indexes.last().expect("a group is listed only with a file");
            let name = snapshot_name(group, latest);
            let data = decode_snapshot(&name, group, latest, &disk.read(&name)?)?;
            recovered.snapshots.push((group, latest, data));
            snapshot_index.insert(group, latest);
            // Older ones are superseded; a save that crashed before removing them left them.
            for &old in indexes.iter().filter(|&&i| i != latest) {
                disk.remove(&snapshot_name(group, old))?;
            }
            indexes.retain(|&i| i == latest);
        }

        let mut storage = Storage {
            disk,
            options,
            segments: Vec::new(),
            active_len: 0,
            active_file_len: 0,
            active_head_len: 0,
            active_dirty: false,
            dir_dirty: false,
            sticky: BTreeMap::new(),
            snapshot_index,
            snapshot_files,
            poisoned: None,
            scratch: Vec::new(),
        };
        let next_seq = segment_seqs.last().map_or(1, |&s| s + 1);
        let mut active_sticky_keys = BTreeSet::new();
        for (i, &seq) in segment_seqs.iter().enumerate() {
            let is_last = i + 1 == segment_seqs.len();
            if let Some(keys) = storage.recover_segment(seq, is_last, &mut recovered)? {
                active_sticky_keys = keys;
            }
        }
        // What was read may have come from the page cache of a process that crashed
        // before its fsync: make it durable before the node acts on it (a vote it
        // recovers must survive a later power loss), along with every name read above
        // and the removals done here.
        if let Some(last) = storage.segments.last() {
            storage.disk.sync_file(&last.name)?;
        }
        storage.disk.sync_dir()?;
        // Appending goes on in the last segment only if it holds the latest copy of
        // every sticky record: a crash may have torn off the copies at its head, and
        // compaction deletes older segments trusting the active one to have them all.
        let complete = storage
            .sticky
            .keys()
            .all(|k| active_sticky_keys.contains(k));
        if storage.segments.is_empty() || !complete {
            storage.start_segment(next_seq)?;
            storage.sync()?;
        }
        Ok((storage, recovered))
    }

    /// Replays segment `seq` into `recovered`. Returns the (group, kind) of the sticky
    /// records in it, or `None` if it removed the file (a last segment with a torn
    /// header).
    fn recover_segment(
        &mut self,
        seq: u64,
        is_last: bool,
        recovered: &mut Recovered,
    ) -> Result<Option<BTreeSet<(u32, u8)>>, StorageError> {
        let name = segment_name(seq);
        let data = self.disk.read(&name)?;
        let corrupt = |offset: usize, reason: String| StorageError::Corrupt {
            file: name.clone(),
            offset: offset as u64,
            reason,
        };
        if data.len() < SEGMENT_HEADER_BYTES {
            let reason = format!(
                "segment header incomplete ({} of {SEGMENT_HEADER_BYTES} bytes)",
                data.len()
            );
            if !is_last {
                return Err(corrupt(
                    0,
                    format!("{reason} in a segment that is not the last"),
                ));
            }
            self.disk.remove(&name)?;
            recovered.truncated_tail = Some(TruncatedTail {
                file: name,
                offset: 0,
                bytes_cut: data.len() as u64,
            });
            return Ok(None);
        }
        let seed = check_segment_header(seq, &data).map_err(|reason| corrupt(0, reason))?;
        let mut segment = Segment::new(seq, seed);
        let mut sticky_keys = BTreeSet::new();
        let mut at = SEGMENT_HEADER_BYTES;
        let mut file_len = data.len();
        while at < data.len() {
            match decode_record(&data, at, seed) {
                Ok((record, next)) => {
                    segment.note(&record);
                    if record.sticky {
                        sticky_keys.insert((record.group, record.kind));
                        self.sticky
                            .insert((record.group, record.kind), record.clone());
                    }
                    recovered.records.push(record);
                    at = next;
                }
                // Preallocated space the records had not reached: the clean end.
                Err(_) if zeros_from(&data, at) => break,
                Err(reason) if !is_last => {
                    return Err(corrupt(
                        at,
                        format!("{reason} in a segment that is not the last"),
                    ));
                }
                Err(reason) => {
                    if let Some(valid) = valid_record_after(&data, at, seed) {
                        return Err(corrupt(
                            at,
                            format!("{reason}; a valid record follows at offset {valid}"),
                        ));
                    }
                    // Nothing valid after it: the tail of an append the crash tore.
                    // (`open` fsyncs the cut file with the rest of what it read.)
                    // Cutting the zeros after it too leaves no torn byte for a later
                    // record to be written next to.
                    self.disk.truncate(&name, at as u64)?;
                    recovered.truncated_tail = Some(TruncatedTail {
                        file: name.clone(),
                        offset: at as u64,
                        bytes_cut: (data.len() - at) as u64,
                    });
                    file_len = at;
                    break;
                }
            }
        }
        self.segments.push(segment);
        self.active_len = at as u64;
        self.active_file_len = file_len as u64;
        self.active_head_len = SEGMENT_HEADER_BYTES as u64;
        Ok(Some(sticky_keys))
    }

    /// Appends `record` to the log. On return it is written but not yet durable; see
    /// [`Storage::sync`]. On error nothing of it is in the log.
    pub fn append(&mut self, record: &Record) -> Result<(), StorageError> {
        self.append_all(&[record]).map_err(|partial| partial.error)
    }

    /// Appends `records` in order with one write per segment they land in (a round of
    /// many groups then costs one system call, not one per record). The bytes on disk
    /// are exactly those of appending them one by one, segment rolls included. On error
    /// the first [`PartialAppend::appended`] records are in the log and none of the rest.
    pub fn append_all(&mut self, records: &[&Record]) -> Result<(), PartialAppend> {
        let mut buf = std::mem::take(&mut self.scratch);
        buf.clear();
        let result = self.append_all_with(records, &mut buf);
        self.scratch = buf;
        result
    }

    fn append_all_with(
        &mut self,
        records: &[&Record],
        buf: &mut Vec<u8>,
    ) -> Result<(), PartialAppend> {
        let stop = |appended: usize| move |error| PartialAppend { appended, error };
        self.check_poisoned().map_err(stop(0))?;
        // records[first..i] are encoded in `buf` and not yet written.
        let mut first = 0;
        for (i, record) in records.iter().enumerate() {
            let len = record.payload.len() as u64;
            if len > RECORD_PAYLOAD_BYTES_MAX {
                self.write_encoded(&records[first..i], buf)
                    .map_err(stop(first))?;
                return Err(stop(i)(StorageError::RecordTooLarge {
                    len,
                    max: RECORD_PAYLOAD_BYTES_MAX,
                }));
            }
            let start = buf.len();
            encode_record(record, self.active().seed, buf);
            // The segment's length if the records before this one were written.
            let held = self.active_len + start as u64;
            let would_be = held + (buf.len() - start) as u64;
            if would_be > self.options.segment_bytes_max && held > self.active_head_len {
                buf.truncate(start);
                self.write_encoded(&records[first..i], buf)
                    .map_err(stop(first))?;
                let next = self.active().seq + 1;
                self.roll(next).map_err(stop(i))?;
                // Encoded again: its CRC is seeded with the segment it now goes to.
                encode_record(record, self.active().seed, buf);
                first = i;
            }
        }
        self.write_encoded(&records[first..], buf)
            .map_err(stop(first))
    }

    /// Writes `encoded`, the encodings of `records`, to the active segment in one write
    /// and empties it.
    fn write_encoded(
        &mut self,
        records: &[&Record],
        encoded: &mut Vec<u8>,
    ) -> Result<(), StorageError> {
        if records.is_empty() {
            return Ok(());
        }
        let name = self.active().name.clone();
        self.write_or_roll_back(&name, encoded)?;
        self.active_len += encoded.len() as u64;
        self.active_dirty = true;
        encoded.clear();
        let segment = self
            .segments
            .last_mut()
            .expect("there is always an active segment");
        for record in records {
            segment.note(record);
        }
        for record in records.iter().filter(|r| r.sticky) {
            self.sticky
                .insert((record.group, record.kind), (*record).clone());
        }
        Ok(())
    }

    /// Writes `bytes` at the end of the log (into preallocated space as far as there is
    /// some); on failure cuts the segment back to its last good length so no half
    /// record stays for a later append to follow (preallocated space goes with it).
    fn write_or_roll_back(&mut self, name: &str, bytes: &[u8]) -> Result<(), StorageError> {
        let Err(err) = self.disk.write_at(name, self.active_len, bytes) else {
            let end = self.active_len + bytes.len() as u64;
            self.active_file_len = self.active_file_len.max(end);
            return Ok(());
        };
        self.active_file_len = self.active_len;
        if let Err(rollback) = self.disk.truncate(name, self.active_len) {
            self.poison(
                name,
                format!(
                    "{err}; then rolling back to {} bytes failed: {rollback}",
                    self.active_len
                ),
            );
        }
        Err(err)
    }

    /// Closes the active segment and starts segment `seq`.
    fn roll(&mut self, seq: u64) -> Result<(), StorageError> {
        // The old segment is made durable before any byte of the new one can be: after a
        // crash the surviving records are then always a prefix of what was appended,
        // and only the last segment can have a torn tail.
        self.sync_active()?;
        self.start_segment(seq)
    }

    /// Creates segment `seq` with its header and a copy of every sticky record, and
    /// makes it the active one. On failure the new file is removed again.
    fn start_segment(&mut self, seq: u64) -> Result<(), StorageError> {
        let mut segment = Segment::new(seq, record_seed(seq));
        let mut head = Vec::new();
        encode_segment_header(seq, &mut head);
        for record in self.sticky.values() {
            encode_record(record, segment.seed, &mut head);
            segment.note(record);
        }
        self.disk.create(&segment.name)?;
        if let Err(err) = self.disk.append(&segment.name, &head) {
            if let Err(cleanup) = self.disk.remove(&segment.name) {
                self.poison(
                    &segment.name,
                    format!("{err}; then removing the half-made segment failed: {cleanup}"),
                );
            }
            return Err(err);
        }
        self.segments.push(segment);
        self.active_len = head.len() as u64;
        self.active_file_len = head.len() as u64;
        self.active_head_len = head.len() as u64;
        self.active_dirty = true;
        self.dir_dirty = true;
        Ok(())
    }

    /// Makes every append since the last sync durable: one fsync of the active segment
    /// (plus one of the directory if a segment was started since). On error the
    /// storage is poisoned: after a failed fsync the kernel may have dropped the dirty
    /// pages, so nothing written since the last good sync may be counted on.
    pub fn sync(&mut self) -> Result<(), StorageError> {
        self.check_poisoned()?;
        self.sync_active()?;
        if self.dir_dirty {
            if let Err(err) = self.disk.sync_dir() {
                self.poison(".", err.to_string());
                return Err(err);
            }
            self.dir_dirty = false;
        }
        Ok(())
    }

    fn sync_active(&mut self) -> Result<(), StorageError> {
        if !self.active_dirty {
            return Ok(());
        }
        let name = self.active().name.clone();
        if let Err(err) = self.disk.sync_file(&name) {
            self.poison(&name, err.to_string());
            return Err(err);
        }
        self.active_dirty = false;
        Ok(())
    }

    /// Whether fewer than `low` bytes of preallocated space follow the end of the log in
    /// the active segment while it could still have more (see [`Storage::preallocate`]).
    pub fn needs_preallocation(&self, low: u64) -> bool {
        self.active_file_len - self.active_len < low
            && self.active_file_len < self.options.segment_bytes_max
    }

    /// Makes sure `ahead` bytes of space (or what is left of the segment's
    /// `segment_bytes_max`) follow the end of the log in the active segment, written
    /// with zeros and synced, so that the records later written there change no file
    /// size and their fsync has no metadata to commit. Returns whether it wrote
    /// anything. Housekeeping for an idle moment: it costs a write and an fsync.
    ///
    /// The zeros are never read as records (a record's length is never 0), so recovery
    /// finds the end of the log where they start. On a full disk the file is cut back
    /// and the error returned; the log goes on without preallocated space.
    pub fn preallocate(&mut self, ahead: u64) -> Result<bool, StorageError> {
        self.check_poisoned()?;
        let target = (self.active_len + ahead).min(self.options.segment_bytes_max);
        if target <= self.active_file_len {
            return Ok(false);
        }
        let name = self.active().name.clone();
        let zeros = vec![0; (target - self.active_file_len) as usize];
        if let Err(err) = self.disk.write_at(&name, self.active_file_len, &zeros) {
            if let Err(rollback) = self.disk.truncate(&name, self.active_file_len) {
                self.poison(
                    &name,
                    format!(
                        "{err}; then cutting the preallocated space back to {} bytes failed: {rollback}",
                        self.active_file_len
                    ),
                );
            }
            return Err(err);
        }
        self.active_file_len = target;
        // Makes the records written so far durable too, which a sync() may count on.
        self.active_dirty = true;
        self.sync_active()?;
        Ok(true)
    }

    /// Saves the snapshot of `group` at `index`, durably on return (temp file, fsync,
    /// rename, directory fsync), then removes the group's other snapshot files. If the
    /// group already has a snapshot at a higher index, that one stays the latest and
    /// this one is removed. On error the snapshot must be treated as not saved.
    pub fn save_snapshot(
        &mut self,
        group: u32,
        index: u64,
        data: &[u8],
    ) -> Result<(), StorageError> {
        self.check_poisoned()?;
        let len = data.len() as u64;
        if len > SNAPSHOT_BYTES_MAX {
            return Err(StorageError::SnapshotTooLarge {
                len,
                max: SNAPSHOT_BYTES_MAX,
            });
        }
        let name = snapshot_name(group, index);
        let temp = format!("{name}{TEMP_SUFFIX}");
        self.disk.create(&temp)?;
        let written = self
            .disk
            .append(&temp, &encode_snapshot(group, index, data))
            .and_then(|()| self.disk.sync_file(&temp));
        if let Err(err) = written {
            // Best effort: a temp file left behind is deleted at the next open anyway.
            let _ = self.disk.remove(&temp);
            return Err(err);
        }
        self.disk.rename(&temp, &name)?;
        if let Err(err) = self.disk.sync_dir() {
            self.poison(".", err.to_string());
            return Err(err);
        }
        let files = self.snapshot_files.entry(group).or_default();
        files.insert(index);
        let latest = *files.last().expect("just inserted");
        let stale: Vec<u64> = files.iter().copied().filter(|&i| i != latest).collect();
        for old in stale {
            self.disk.remove(&snapshot_name(group, old))?;
            self.snapshot_files
                .get_mut(&group)
                .expect("group exists")
                .remove(&old);
        }
        Ok(())
    }

    /// Records that a snapshot of `group` covers everything up to `snapshot_index`, and
    /// deletes every closed segment no group needs any more.
    ///
    /// Segment S is deleted when, for every group G with records in S, G's highest
    /// `last_index` in S *and in every older segment still on disk* is at most G's
    /// snapshot index. The "older segments" part is stricter than looking at S alone
    /// and is needed: S may hold entries that overwrote (truncated) entries of an
    /// older segment; deleting S while keeping that older segment would resurrect the
    /// overwritten entries past the snapshot. The active segment is never deleted, so
    /// the latest sticky records always survive.
    pub fn compact(&mut self, group: u32, snapshot_index: u64) -> Result<(), StorageError> {
        self.check_poisoned()?;
        let covered = self.snapshot_index.entry(group).or_insert(0);
        *covered = (*covered).max(snapshot_index);
        let mut seen_max: BTreeMap<u32, u64> = BTreeMap::new();
        let mut doomed = Vec::new();
        let closed = self.segments.len() - 1;
        for segment in &self.segments[..closed] {
            for &(g, max) in &segment.last_index_max {
                let seen = seen_max.entry(g).or_insert(0);
                *seen = (*seen).max(max);
            }
            let needed = segment
                .last_index_max
                .iter()
                .any(|(g, _)| seen_max[g] > self.snapshot_index.get(g).copied().unwrap_or(0));
            if !needed {
                doomed.push(segment.seq);
            }
        }
        if doomed.is_empty() {
            return Ok(());
        }
        // The older segments hold copies of sticky records that the active segment
        // repeats at its head; those repeats must be durable before the originals go.
        self.sync()?;
        // Removals need no directory fsync: a segment that reappears after a crash
        // holds only records its groups' durable snapshots cover.
        for seq in doomed {
            let pos = self
                .segments
                .iter()
                .position(|s| s.seq == seq)
                .expect("doomed segments exist");
            self.disk.remove(&self.segments[pos].name)?;
            self.segments.remove(pos);
        }
        Ok(())
    }

    /// Forgets `group` (its replica left this node): deletes its snapshot files and lets
    /// compaction delete every closed segment that only its records kept. Its sticky
    /// records stay (the caller's record that the group left is one of them). Calling it
    /// again, also after a restart, does the same and is harmless.
    pub fn remove_group(&mut self, group: u32) -> Result<(), StorageError> {
        self.check_poisoned()?;
        for index in self.snapshot_files.remove(&group).unwrap_or_default() {
            self.disk.remove(&snapshot_name(group, index))?;
        }
        self.compact(group, u64::MAX)
    }

    /// Hosts `group` again after [`Storage::remove_group`] (a replica of it is created
    /// anew here): call it before appending the new life's first record. It makes the log
    /// durable first (the record that the group left is in it: no crash may then bring
    /// back the earlier life without its snapshot), deletes every snapshot file an
    /// earlier life left and makes those deletions durable (so that none reappears after
    /// a power loss to be read as the new life's), and drops the group's compaction
    /// point, so that its new records pin their segments until a new snapshot covers
    /// them. Harmless for a group that was never removed.
    pub fn take_back_group(&mut self, group: u32) -> Result<(), StorageError> {
        self.sync()?;
        for index in self.snapshot_files.remove(&group).unwrap_or_default() {
            self.disk.remove(&snapshot_name(group, index))?;
        }
        if let Err(err) = self.disk.sync_dir() {
            self.poison(".", err.to_string());
            return Err(err);
        }
        self.snapshot_index.remove(&group);
        Ok(())
    }

    /// Names of the WAL segments on disk, oldest first (for tests and diagnostics).
    pub fn segment_names(&self) -> Vec<String> {
        self.segments.iter().map(|s| s.name.clone()).collect()
    }

    /// The disk, for inspection.
    pub fn disk(&self) -> &D {
        &self.disk
    }

    /// Gives the disk back (e.g. to reopen it after a simulated crash).
    pub fn into_disk(self) -> D {
        self.disk
    }

    fn active(&self) -> &Segment {
        self.segments
            .last()
            .expect("there is always an active segment")
    }

    fn poison(&mut self, file: &str, reason: String) {
        if self.poisoned.is_none() {
            self.poisoned = Some((file.to_string(), reason));
        }
    }

    fn check_poisoned(&self) -> Result<(), StorageError> {
        match &self.poisoned {
            None => Ok(()),
            Some((file, reason)) => Err(StorageError::Poisoned {
                file: file.clone(),
                reason: reason.clone(),
            }),
        }
    }
}
