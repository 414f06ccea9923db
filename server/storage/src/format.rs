//! The on-disk byte format of WAL segments and snapshot files, as pure functions: bytes
//! become validated records here, once, at the boundary (docs/STORAGE.md describes
//! the layout field by field).

use bytes::Bytes;

use crate::error::StorageError;

/// One WAL record. Storage treats the payload as opaque; the node layer encodes Raft
/// entries, hard state and the like into it and picks the `kind` numbers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Raft group (shard) the record belongs to.
    pub group: u32,
    /// What the payload is; chosen by the node layer.
    pub kind: u8,
    /// Only the latest record of each (group, kind) matters (e.g. a group's hard
    /// state). It is rewritten at the head of every new segment, so deleting old
    /// segments never loses it.
    pub sticky: bool,
    /// Highest Raft index the record covers, 0 if none. Decides when the segment
    /// holding it may be deleted (see [`crate::Storage::compact`]).
    pub last_index: u64,
    /// Opaque bytes, at most [`crate::RECORD_PAYLOAD_BYTES_MAX`].
    pub payload: Bytes,
}

/// The `group` of a record holding records of many groups (the node's one record per
/// round for all of them): its payload ends with a cover table ([`push_covers`]) naming
/// each group it holds entries of and the highest index of each, which compaction reads
/// as if each were a record of that group. Never a shard id: shards are numbered below
/// `kv_shared::limits::SHARDS_MAX` and the metadata group is `u32::MAX`. Such a record
/// is never sticky.
pub const MANY_GROUPS: u32 = u32::MAX - 1;
/// Bytes of one cover table row: group (u32), highest index (u64).
const COVER_ROW_BYTES: usize = 12;

/// Appends the cover table of a [`MANY_GROUPS`] record to the end of its payload: a row
/// (group, highest index) per group, then the row count (u32). A group may have several
/// rows; the highest index counts.
pub fn push_covers(payload: &mut Vec<u8>, covers: &[(u32, u64)]) {
    payload.reserve(covers.len() * COVER_ROW_BYTES + 4);
    for &(group, index) in covers {
        payload.extend_from_slice(&group.to_le_bytes());
        payload.extend_from_slice(&index.to_le_bytes());
    }
    payload.extend_from_slice(&(covers.len() as u32).to_le_bytes());
}

/// Splits the payload of a [`MANY_GROUPS`] record into the node's bytes and the rows of
/// its cover table, or says why it has none.
pub fn split_covers(payload: &[u8]) -> Result<(&[u8], Covers<'_>), String> {
    let Some(count_at) = payload.len().checked_sub(4) else {
        return Err("many-groups record without a cover table".to_string());
    };
    let rows = le_u32(&payload[count_at..]) as usize;
    let table = rows
        .checked_mul(COVER_ROW_BYTES)
        .and_then(|n| count_at.checked_sub(n))
        .ok_or_else(|| format!("cover table of {rows} rows longer than the payload"))?;
    Ok((&payload[..table], Covers(&payload[table..count_at])))
}

/// The rows of a [`MANY_GROUPS`] record's cover table: (group, highest index).
#[derive(Clone, Copy, Debug)]
pub struct Covers<'a>(&'a [u8]);

impl Covers<'_> {
    /// Each row, in the order written.
    pub fn iter(&self) -> impl Iterator<Item = (u32, u64)> + '_ {
        self.0
            .chunks_exact(COVER_ROW_BYTES)
            .map(|row| (le_u32(&row[..4]), le_u64(&row[4..])))
    }
}

/// Largest payload of one WAL record. Far above one Raft append batch
/// (`APPEND_BYTES_MAX` is 48 KiB) so the node never meets it in normal operation, and
/// small enough that a corrupt length field cannot make recovery allocate gigabytes.
pub const RECORD_PAYLOAD_BYTES_MAX: u64 = 16 * 1024 * 1024;
/// Largest snapshot file body. Snapshots are read whole into memory at recovery.
pub const SNAPSHOT_BYTES_MAX: u64 = 1024 * 1024 * 1024;

/// Version of the snapshot file format; bumped on any incompatible change.
pub(crate) const FORMAT_VERSION: u16 = 1;
/// Version of the segment format this build writes. Version 2 seeds every record's CRC
/// with the segment's sequence number (so a record is valid only in the segment it was
/// written for) and lets a segment end in zeros (space preallocated for records).
/// Version 1 segments (CRC unseeded, no zero tail written) are still read.
pub(crate) const SEGMENT_FORMAT_VERSION: u16 = 2;
const SEGMENT_MAGIC: [u8; 4] = *b"RKVW";
const SNAPSHOT_MAGIC: [u8; 4] = *b"RKVS";

/// magic, version, reserved, sequence number, CRC32C of the preceding 16 bytes.
pub(crate) const SEGMENT_HEADER_BYTES: usize = 20;
/// The part of a record header before the body: body length and CRC.
const RECORD_PREFIX_BYTES: usize = 8;
/// kind, flags, reserved, group, last_index.
const RECORD_BODY_HEADER_BYTES: usize = 16;
/// Bytes of a record before its payload.
pub(crate) const RECORD_HEADER_BYTES: usize = RECORD_PREFIX_BYTES + RECORD_BODY_HEADER_BYTES;
/// magic, version, reserved, group, index, data length, CRC32C (of the header's first
/// 28 bytes and the data).
pub(crate) const SNAPSHOT_HEADER_BYTES: usize = 32;

const FLAG_STICKY: u8 = 1;

const SEGMENT_PREFIX: &str = "wal-";
const SEGMENT_SUFFIX: &str = ".log";
const SNAPSHOT_PREFIX: &str = "snap-";
const SNAPSHOT_SUFFIX: &str = ".snap";
/// Suffix of a snapshot being written; such a file is never read, only deleted.
pub(crate) const TEMP_SUFFIX: &str = ".tmp";

/// File name of WAL segment `seq`; zero-padded so names sort like numbers.
pub(crate) fn segment_name(seq: u64) -> String {
    format!("{SEGMENT_PREFIX}{seq:020}{SEGMENT_SUFFIX}")
}

/// The sequence number of a segment file name, or `None` for any other name.
pub(crate) fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name
        .strip_prefix(SEGMENT_PREFIX)?
        .strip_suffix(SEGMENT_SUFFIX)?;
    parse_padded(digits, 20)
}

/// File name of the snapshot of `group` at `index`.
pub(crate) fn snapshot_name(group: u32, index: u64) -> String {
    format!("{SNAPSHOT_PREFIX}{group:010}-{index:020}{SNAPSHOT_SUFFIX}")
}

/// The (group, index) of a snapshot file name, or `None` for any other name.
pub(crate) fn parse_snapshot_name(name: &str) -> Option<(u32, u64)> {
    let rest = name
        .strip_prefix(SNAPSHOT_PREFIX)?
        .strip_suffix(SNAPSHOT_SUFFIX)?;
    let (group, index) = rest.split_once('-')?;
    let group = u32::try_from(parse_padded(group, 10)?).ok()?;
    Some((group, parse_padded(index, 20)?))
}

fn parse_padded(digits: &str, width: usize) -> Option<u64> {
    if digits.len() != width || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Appends the header of segment `seq` to `out`.
pub(crate) fn encode_segment_header(seq: u64, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&SEGMENT_MAGIC);
    out.extend_from_slice(&SEGMENT_FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    let crc = crc32c::crc32c(&out[start..]);
    out.extend_from_slice(&crc.to_le_bytes());
    debug_assert_eq!(out.len() - start, SEGMENT_HEADER_BYTES);
}

/// The value every record CRC of segment `seq` starts from (version 2 segments).
pub(crate) fn record_seed(seq: u64) -> u32 {
    crc32c::crc32c(&seq.to_le_bytes())
}

/// Checks a complete segment header (`data` holds at least [`SEGMENT_HEADER_BYTES`]).
/// Returns the seed of the segment's record CRCs, or why the header is bad.
pub(crate) fn check_segment_header(seq: u64, data: &[u8]) -> Result<u32, String> {
    let header = &data[..SEGMENT_HEADER_BYTES];
    if header[0..4] != SEGMENT_MAGIC {
        return Err("bad segment magic".to_string());
    }
    if crc32c::crc32c(&header[..16]) != le_u32(&header[16..20]) {
        return Err("segment header CRC mismatch".to_string());
    }
    let version = le_u16(&header[4..6]);
    if !(1..=SEGMENT_FORMAT_VERSION).contains(&version) {
        return Err(format!(
            "unsupported segment format version {version} (this build reads 1..={SEGMENT_FORMAT_VERSION})"
        ));
    }
    let header_seq = le_u64(&header[8..16]);
    if header_seq != seq {
        return Err(format!(
            "header says segment {header_seq}, file name says {seq}"
        ));
    }
    Ok(if version == 1 { 0 } else { record_seed(seq) })
}

/// Appends the encoding of `record` to `out`, its CRC seeded with `seed` (the
/// [`record_seed`] of the segment it goes to). The caller has checked the payload limit.
pub(crate) fn encode_record(record: &Record, seed: u32, out: &mut Vec<u8>) {
    assert!(
        record.payload.len() as u64 <= RECORD_PAYLOAD_BYTES_MAX,
        "caller checks the limit"
    );
    assert!(
        record.group != MANY_GROUPS || (!record.sticky && split_covers(&record.payload).is_ok()),
        "a many-groups record is not sticky and ends with its cover table"
    );
    let start = out.len();
    let body_len = (RECORD_BODY_HEADER_BYTES + record.payload.len()) as u32;
    out.extend_from_slice(&body_len.to_le_bytes());
    out.extend_from_slice(&[0; 4]); // CRC, filled in below
    out.push(record.kind);
    out.push(if record.sticky { FLAG_STICKY } else { 0 });
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&record.group.to_le_bytes());
    out.extend_from_slice(&record.last_index.to_le_bytes());
    out.extend_from_slice(&record.payload);
    let crc = record_crc(
        seed,
        &out[start..start + 4],
        &out[start + RECORD_PREFIX_BYTES..],
    );
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// The CRC covers the length too, so a flipped length bit is caught rather than
/// misread as a shorter or longer record; the seed ties the record to its segment, so a
/// record left over from another segment's bytes is never read as one of this one.
fn record_crc(seed: u32, len_bytes: &[u8], body: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c_append(seed, len_bytes), body)
}

/// Decodes the record starting at `at` of a segment whose record CRCs start from `seed`.
/// Returns it and the offset just past it, or why no valid record starts there.
pub(crate) fn decode_record(data: &[u8], at: usize, seed: u32) -> Result<(Record, usize), String> {
    let rest = &data[at..];
    if rest.len() < RECORD_HEADER_BYTES {
        return Err(format!(
            "incomplete record header ({} of {RECORD_HEADER_BYTES} bytes)",
            rest.len()
        ));
    }
    let body_len = le_u32(&rest[0..4]) as usize;
    let body_len_max = RECORD_BODY_HEADER_BYTES + RECORD_PAYLOAD_BYTES_MAX as usize;
    if !(RECORD_BODY_HEADER_BYTES..=body_len_max).contains(&body_len) {
        return Err(format!(
            "record length {body_len} outside {RECORD_BODY_HEADER_BYTES}..={body_len_max}"
        ));
    }
    let end = RECORD_PREFIX_BYTES + body_len;
    if rest.len() < end {
        return Err(format!(
            "record of {end} bytes but only {} bytes left in the file",
            rest.len()
        ));
    }
    let body = &rest[RECORD_PREFIX_BYTES..end];
    if record_crc(seed, &rest[0..4], body) != le_u32(&rest[4..8]) {
        return Err("record CRC mismatch".to_string());
    }
    let flags = body[1];
    if flags & !FLAG_STICKY != 0 || le_u16(&body[2..4]) != 0 {
        return Err(format!(
            "unknown record flags {flags:#04x} or nonzero reserved bits"
        ));
    }
    let group = le_u32(&body[4..8]);
    let sticky = flags & FLAG_STICKY != 0;
    if group == MANY_GROUPS {
        if sticky {
            return Err("a many-groups record marked sticky".to_string());
        }
        split_covers(&body[RECORD_BODY_HEADER_BYTES..])?;
    }
    let record = Record {
        group,
        kind: body[0],
        sticky,
        last_index: le_u64(&body[8..16]),
        payload: Bytes::copy_from_slice(&body[RECORD_BODY_HEADER_BYTES..]),
    };
    Ok((record, at + end))
}

/// Whether a valid record starts anywhere after `bad`: the test that tells a torn tail
/// (garbage up to the end) from corruption in the middle of the log (valid data after).
/// A record starts with a nonzero length, so no start past the last nonzero byte is
/// tried (a preallocated zero tail of megabytes costs one backwards scan).
pub(crate) fn valid_record_after(data: &[u8], bad: usize, seed: u32) -> Option<usize> {
    let starts_end = data.iter().rposition(|&b| b != 0).map_or(0, |z| z + 1);
    (bad + 1..starts_end.min(data.len().saturating_sub(RECORD_HEADER_BYTES - 1)))
        .find(|&at| decode_record(data, at, seed).is_ok())
}

/// Whether every byte from `at` on is zero: the end of the records of a segment whose
/// space was preallocated (written with zeros) ahead of them. A record never starts with
/// four zero bytes (its length is at least 16), so zeros are never taken for one.
pub(crate) fn zeros_from(data: &[u8], at: usize) -> bool {
    data[at..].iter().all(|&b| b == 0)
}

/// Encodes a snapshot file: header then data.
pub(crate) fn encode_snapshot(group: u32, index: u64, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(SNAPSHOT_HEADER_BYTES + data.len());
    out.extend_from_slice(&SNAPSHOT_MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&group.to_le_bytes());
    out.extend_from_slice(&index.to_le_bytes());
    out.extend_from_slice(&(data.len() as u64).to_le_bytes());
    let crc = crc32c::crc32c_append(crc32c::crc32c(&out), data);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(data);
    out
}

/// Validates a snapshot file read from `name`, which names `group` and `index`.
pub(crate) fn decode_snapshot(
    name: &str,
    group: u32,
    index: u64,
    file: &[u8],
) -> Result<Bytes, StorageError> {
    let corrupt = |offset: u64, reason: String| StorageError::Corrupt {
        file: name.to_string(),
        offset,
        reason,
    };
    if file.len() < SNAPSHOT_HEADER_BYTES {
        return Err(corrupt(
            0,
            format!("snapshot header incomplete ({} bytes)", file.len()),
        ));
    }
    if file[0..4] != SNAPSHOT_MAGIC {
        return Err(corrupt(0, "bad snapshot magic".to_string()));
    }
    let version = le_u16(&file[4..6]);
    if version != FORMAT_VERSION {
        return Err(corrupt(
            4,
            format!("unsupported snapshot format version {version}"),
        ));
    }
    let (header_group, header_index) = (le_u32(&file[8..12]), le_u64(&file[12..20]));
    if (header_group, header_index) != (group, index) {
        return Err(corrupt(
            8,
            format!("header says group {header_group} index {header_index}, file name says group {group} index {index}"),
        ));
    }
    let data_len = le_u64(&file[20..28]);
    let data = &file[SNAPSHOT_HEADER_BYTES..];
    if data_len != data.len() as u64 {
        return Err(corrupt(
            20,
            format!("header says {data_len} data bytes, file has {}", data.len()),
        ));
    }
    let crc = crc32c::crc32c_append(crc32c::crc32c(&file[..28]), data);
    if crc != le_u32(&file[28..32]) {
        return Err(corrupt(28, "snapshot CRC mismatch".to_string()));
    }
    Ok(Bytes::copy_from_slice(data))
}

fn le_u16(b: &[u8]) -> u16 {
    u16::from_le_bytes(b.try_into().expect("2 bytes"))
}

fn le_u32(b: &[u8]) -> u32 {
    u32::from_le_bytes(b.try_into().expect("4 bytes"))
}

fn le_u64(b: &[u8]) -> u64 {
    u64::from_le_bytes(b.try_into().expect("8 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: u32 = 0x5eed;

    fn record(payload: &[u8]) -> Record {
        Record {
            group: 7,
            kind: 3,
            sticky: true,
            last_index: 42,
            payload: Bytes::copy_from_slice(payload),
        }
    }

    #[test]
    fn record_round_trips() {
        let mut buf = vec![0xAA; 5];
        encode_record(&record(b"hello"), SEED, &mut buf);
        assert_eq!(buf.len(), 5 + RECORD_HEADER_BYTES + 5);
        let (decoded, next) = decode_record(&buf, 5, SEED).unwrap();
        assert_eq!(decoded, record(b"hello"));
        assert_eq!(next, buf.len());
    }

    #[test]
    fn every_single_byte_flip_is_detected() {
        let mut clean = Vec::new();
        encode_record(&record(b"payload bytes"), SEED, &mut clean);
        for at in 0..clean.len() {
            let mut bad = clean.clone();
            bad[at] ^= 0x01;
            assert!(
                decode_record(&bad, 0, SEED).is_err(),
                "flip at {at} went unnoticed"
            );
        }
    }

    #[test]
    fn every_truncation_is_detected() {
        let mut clean = Vec::new();
        encode_record(&record(b"payload"), SEED, &mut clean);
        for len in 0..clean.len() {
            assert!(
                decode_record(&clean[..len], 0, SEED).is_err(),
                "prefix of {len} bytes accepted"
            );
        }
    }

    /// A many-groups record decodes with its cover table; one that is sticky or whose
    /// table does not fit its payload is refused even with a valid CRC.
    #[test]
    fn a_many_groups_record_carries_its_cover_table() {
        let mut payload = b"body".to_vec();
        push_covers(&mut payload, &[(3, 9), (1, 4)]);
        let many = Record {
            group: MANY_GROUPS,
            kind: 4,
            sticky: false,
            last_index: 0,
            payload: Bytes::from(payload),
        };
        let mut buf = Vec::new();
        encode_record(&many, SEED, &mut buf);
        let (decoded, _) = decode_record(&buf, 0, SEED).unwrap();
        assert_eq!(decoded, many);
        let (body, covers) = split_covers(&decoded.payload).unwrap();
        assert_eq!(body, b"body");
        assert_eq!(covers.iter().collect::<Vec<_>>(), vec![(3, 9), (1, 4)]);

        // Re-sealed with a valid CRC: as a plain record of group 7 turned many-groups
        // (its payload has no table), and as a sticky many-groups record.
        let reseal = |mut buf: Vec<u8>, group: u32, flags: u8| {
            buf[9] = flags;
            buf[12..16].copy_from_slice(&group.to_le_bytes());
            let crc = record_crc(SEED, &buf[0..4], &buf[RECORD_PREFIX_BYTES..]);
            buf[4..8].copy_from_slice(&crc.to_le_bytes());
            decode_record(&buf, 0, SEED)
        };
        let mut plain = Vec::new();
        encode_record(&record(b"no table"), SEED, &mut plain);
        assert!(
            reseal(plain.clone(), 7, FLAG_STICKY).is_ok(),
            "the reseal itself"
        );
        assert!(reseal(plain, MANY_GROUPS, 0).is_err(), "no cover table");
        assert!(reseal(buf, MANY_GROUPS, FLAG_STICKY).is_err(), "sticky");
    }

    #[test]
    fn valid_record_after_finds_the_next_record_only() {
        let mut buf = Vec::new();
        encode_record(&record(b"one"), SEED, &mut buf);
        let second = buf.len();
        encode_record(&record(b"two"), SEED, &mut buf);
        buf[10] ^= 0xFF;
        buf.resize(buf.len() + 1000, 0);
        assert_eq!(valid_record_after(&buf, 0, SEED), Some(second));
        assert_eq!(valid_record_after(&buf, second, SEED), None);
    }

    #[test]
    fn a_record_is_valid_only_in_the_segment_it_was_written_for() {
        let mut buf = Vec::new();
        encode_record(&record(b"old"), record_seed(3), &mut buf);
        assert!(decode_record(&buf, 0, record_seed(3)).is_ok());
        assert!(decode_record(&buf, 0, record_seed(4)).is_err());
        assert_eq!(valid_record_after(&buf, 0, record_seed(4)), None);
    }

    #[test]
    fn zeros_never_decode_and_end_the_records() {
        let zeros = vec![0u8; 4 * RECORD_HEADER_BYTES];
        assert!(decode_record(&zeros, 0, SEED).is_err());
        assert!(decode_record(&zeros, 0, 0).is_err());
        assert!(zeros_from(&zeros, 0));
        let mut buf = Vec::new();
        encode_record(&record(b"x"), SEED, &mut buf);
        let end = buf.len();
        buf.extend_from_slice(&zeros);
        assert!(zeros_from(&buf, end) && !zeros_from(&buf, end - 1));
    }

    #[test]
    fn names_round_trip_and_sort_numerically() {
        assert_eq!(parse_segment_name(&segment_name(12)), Some(12));
        assert!(segment_name(9) < segment_name(10));
        assert_eq!(parse_snapshot_name(&snapshot_name(5, 99)), Some((5, 99)));
        assert_eq!(parse_segment_name("wal-1.log"), None);
        assert_eq!(parse_snapshot_name("snap-x-1.snap"), None);
        let temp = format!("{}{TEMP_SUFFIX}", snapshot_name(1, 2));
        assert_eq!(parse_snapshot_name(&temp), None);
    }

    #[test]
    fn segment_header_checks_sequence_and_crc() {
        let mut header = Vec::new();
        encode_segment_header(4, &mut header);
        assert_eq!(check_segment_header(4, &header), Ok(record_seed(4)));
        assert!(check_segment_header(5, &header)
            .unwrap_err()
            .contains("file name says 5"));
        header[9] ^= 1;
        assert!(check_segment_header(4, &header)
            .unwrap_err()
            .contains("CRC"));
    }

    #[test]
    fn a_version_1_segment_has_unseeded_record_crcs() {
        let mut header = Vec::new();
        header.extend_from_slice(&SEGMENT_MAGIC);
        header.extend_from_slice(&1u16.to_le_bytes());
        header.extend_from_slice(&0u16.to_le_bytes());
        header.extend_from_slice(&4u64.to_le_bytes());
        let crc = crc32c::crc32c(&header);
        header.extend_from_slice(&crc.to_le_bytes());
        assert_eq!(check_segment_header(4, &header), Ok(0));
        // Seed 0 is the version 1 record CRC: CRC32C of the length, then the body.
        let mut buf = Vec::new();
        encode_record(&record(b"v1"), 0, &mut buf);
        let unseeded = crc32c::crc32c_append(crc32c::crc32c(&buf[0..4]), &buf[8..]);
        assert_eq!(le_u32(&buf[4..8]), unseeded);
    }

    #[test]
    fn snapshot_round_trips_and_rejects_flips() {
        let file = encode_snapshot(2, 10, b"state");
        let name = snapshot_name(2, 10);
        assert_eq!(&decode_snapshot(&name, 2, 10, &file).unwrap()[..], b"state");
        for at in 0..file.len() {
            let mut bad = file.clone();
            bad[at] ^= 0x80;
            assert!(
                decode_snapshot(&name, 2, 10, &bad).is_err(),
                "flip at {at} went unnoticed"
            );
        }
    }
}
