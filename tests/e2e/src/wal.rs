//! Reading and damaging a node's WAL segments from the outside, for the recovery
//! tests. Knows only the framing of docs/STORAGE.md (a 20-byte segment header, then
//! records of `body_len u32 | crc u32 | body`), never what the records mean.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Bytes of the segment header.
pub const SEGMENT_HEADER_BYTES: u64 = 20;
/// Bytes of a record before its body (body length and CRC).
pub const RECORD_PREFIX_BYTES: u64 = 8;

/// The WAL segments in `data_dir`, oldest first.
pub fn segments(data_dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(data_dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", data_dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            name.starts_with("wal-") && name.ends_with(".log")
        })
        .collect();
    v.sort();
    v
}

/// A record's place in its segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordSpan {
    /// Offset of the record's first byte.
    pub offset: u64,
    /// Length of the whole record (prefix and body).
    pub len: u64,
}

/// The records of a segment, by framing alone: stops at the first record that does not
/// fit in the file, or at preallocated space (zeros: a record's body is never empty).
pub fn records(segment: &Path) -> Vec<RecordSpan> {
    let mut data = Vec::new();
    std::fs::File::open(segment)
        .and_then(|mut f| f.read_to_end(&mut data))
        .unwrap_or_else(|e| panic!("read {}: {e}", segment.display()));
    let mut out = Vec::new();
    let mut at = SEGMENT_HEADER_BYTES;
    while at + RECORD_PREFIX_BYTES <= data.len() as u64 {
        let i = at as usize;
        let body = u64::from(u32::from_le_bytes(
            data[i..i + 4].try_into().expect("4 bytes"),
        ));
        let len = RECORD_PREFIX_BYTES + body;
        if body == 0 || at + len > data.len() as u64 {
            break;
        }
        out.push(RecordSpan { offset: at, len });
        at += len;
    }
    out
}

/// XORs the byte at `offset` of `path` with 0xFF.
pub fn flip_byte(path: &Path, offset: u64) {
    let mut f = crate::cluster::open_rw(path);
    let mut b = [0u8; 1];
    f.seek(SeekFrom::Start(offset)).expect("seek");
    f.read_exact(&mut b).expect("read byte");
    b[0] ^= 0xFF;
    f.seek(SeekFrom::Start(offset)).expect("seek");
    f.write_all(&b).expect("write byte");
    f.sync_all().expect("sync");
}

/// Copies `len` bytes of `path` from offset `from` to offset `to` (over what is there,
/// or past the end).
pub fn copy_within(path: &Path, from: u64, len: u64, to: u64) {
    let mut f = crate::cluster::open_rw(path);
    let mut b = vec![0u8; len as usize];
    f.seek(SeekFrom::Start(from)).expect("seek");
    f.read_exact(&mut b).expect("read");
    f.seek(SeekFrom::Start(to)).expect("seek");
    f.write_all(&b).expect("write");
    f.sync_all().expect("sync");
}

/// Cuts `path` to `len` bytes.
pub fn truncate(path: &Path, len: u64) {
    let f = crate::cluster::open_rw(path);
    f.set_len(len).expect("truncate");
    f.sync_all().expect("sync");
}
