//! Postcard's varints (LEB128, at most ten bytes for a `u64`) read and written without
//! postcard's serializer, for the hot paths that handle the common messages by hand (the
//! state machine's all-put entries, the client's requests and replies); each of them
//! accepts and writes exactly what postcard does, and the tests hold them to it.

/// Bytes of the longest varint postcard reads for a `u64`.
pub const BYTES_MAX: usize = 10;

/// Bytes of `n` as a varint.
pub fn len(n: u64) -> usize {
    let bits = u64::BITS - (n | 1).leading_zeros();
    bits.div_ceil(7) as usize
}

/// Writes `n` as a varint at the start of `out` (which must have room for
/// [`BYTES_MAX`]) and returns how many bytes it took. The bytes of `out` after those,
/// up to [`BYTES_MAX`], may be overwritten: a long varint is written a word at a time.
#[inline]
pub fn write(n: u64, out: &mut [u8]) -> usize {
    if n < 0x80 {
        out[0] = n as u8;
        return 1;
    }
    // Log indexes and lengths past 127: two, as `take` reads them first.
    if n < 0x4000 {
        out[0] = n as u8 | 0x80;
        out[1] = (n >> 7) as u8;
        return 2;
    }
    write_long(n, out)
}

fn write_long(n: u64, out: &mut [u8]) -> usize {
    let out: &mut [u8; BYTES_MAX] = (&mut out[..BYTES_MAX])
        .try_into()
        .expect("a slice of BYTES_MAX bytes");
    let len = len(n);
    // The low 56 bits spread over eight bytes of seven bits each (the inverse of
    // `pack_7bit_groups`), then the continuation bit of every byte before the last.
    let word = spread_7bit_groups(n & ((1 << 56) - 1));
    let continued = if len > 8 {
        0x8080_8080_8080_8080
    } else {
        0x8080_8080_8080_8080 >> (8 * (9 - len))
    };
    out[..8].copy_from_slice(&(word | continued).to_le_bytes());
    if len > 8 {
        out[8] = (n >> 56) as u8 & 0x7f | if len == BYTES_MAX { 0x80 } else { 0 };
        out[9] = (n >> 63) as u8;
    }
    len
}

/// The low 56 bits of `x` spread out seven to a byte over its eight bytes.
#[inline]
fn spread_7bit_groups(x: u64) -> u64 {
    let x = (x & 0x0000_0000_0fff_ffff) | ((x & 0x00ff_ffff_f000_0000) << 4);
    let x = (x & 0x0000_3fff_0000_3fff) | ((x & 0x0fff_c000_0fff_c000) << 2);
    (x & 0x007f_007f_007f_007f) | ((x & 0x3f80_3f80_3f80_3f80) << 1)
}

/// A LEB128 varint as postcard reads a `u64` (and a `usize` on 64-bit targets): at most
/// ten bytes, the tenth holding only the top bit. Session ids are random 64-bit numbers,
/// so half of them take all ten.
#[inline]
pub fn take(rest: &mut &[u8]) -> Option<u64> {
    let bytes: &[u8] = rest;
    match *bytes {
        // Lengths and sequence numbers: mostly one byte.
        [byte, ref after @ ..] if byte < 0x80 => {
            *rest = after;
            Some(u64::from(byte))
        }
        // Log indexes and lengths past 127: two.
        [low, high, ref after @ ..] if high < 0x80 => {
            *rest = after;
            Some(u64::from(low & 0x7f) | u64::from(high) << 7)
        }
        _ => take_long(rest),
    }
}

fn take_long(rest: &mut &[u8]) -> Option<u64> {
    let Some(word) = rest.first_chunk::<8>() else {
        return take_bytewise(rest);
    };
    // The first eight bytes as one word: find the last byte, then pack the 7-bit groups
    // of the bytes up to it in three steps (a session id is ten bytes long).
    let word = u64::from_le_bytes(*word);
    let ends = !word & 0x8080_8080_8080_8080;
    let (len, value) = if ends != 0 {
        let len = ends.trailing_zeros() as usize / 8 + 1;
        let kept = if len == 8 {
            !0
        } else {
            (1u64 << (8 * len)) - 1
        };
        (len, pack_7bit_groups(word & kept))
    } else {
        let low = pack_7bit_groups(word);
        match (rest.get(8), rest.get(9)) {
            (Some(&b8), _) if b8 < 0x80 => (9, low | u64::from(b8) << 56),
            (Some(&b8), Some(&b9)) if b9 <= 1 => (
                BYTES_MAX,
                low | u64::from(b8 & 0x7f) << 56 | u64::from(b9) << 63,
            ),
            _ => return None,
        }
    };
    *rest = &rest[len..];
    Some(value)
}

/// The low seven bits of each byte of `word`, packed into its low 56 bits.
#[inline]
fn pack_7bit_groups(word: u64) -> u64 {
    let x = word & 0x7f7f_7f7f_7f7f_7f7f;
    let x = (x & 0x007f_007f_007f_007f) | ((x & 0x7f00_7f00_7f00_7f00) >> 1);
    let x = (x & 0x0000_3fff_0000_3fff) | ((x & 0x3fff_0000_3fff_0000) >> 2);
    (x & 0x0000_0000_0fff_ffff) | ((x & 0x0fff_ffff_0000_0000) >> 4)
}

fn take_bytewise(rest: &mut &[u8]) -> Option<u64> {
    let bytes = *rest;
    let mut value = 0u64;
    for i in 0..BYTES_MAX {
        let byte = *bytes.get(i)?;
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte < 0x80 {
            if i == BYTES_MAX - 1 && byte > 1 {
                return None;
            }
            *rest = &bytes[i + 1..];
            return Some(value);
        }
    }
    None
}

/// Passes over a varint [`take`] accepts, exactly when it accepts it. The first
/// eight bytes are looked at as one word: a session id is ten bytes long.
#[inline]
pub fn skip(rest: &mut &[u8]) -> Option<()> {
    let Some(word) = rest.first_chunk::<8>() else {
        return take_long(rest).map(drop);
    };
    let ends = !u64::from_le_bytes(*word) & 0x8080_8080_8080_8080;
    let len = if ends != 0 {
        ends.trailing_zeros() as usize / 8 + 1
    } else {
        match (rest.get(8), rest.get(9)) {
            (Some(&b8), _) if b8 < 0x80 => 9,
            (Some(_), Some(&b9)) if b9 <= 1 => BYTES_MAX,
            _ => return None,
        }
    };
    *rest = &rest[len..];
    Some(())
}

/// Bytes of the longest varint postcard reads for a `u32` (a shard id, an enum's variant
/// index).
pub const U32_BYTES_MAX: usize = 5;

/// A varint as postcard reads a `u32`: at most five bytes, the fifth holding only the
/// top four bits, which are exactly the varints [`take`] reads in at most five bytes
/// whose value fits.
#[inline]
pub fn take_u32(rest: &mut &[u8]) -> Option<u32> {
    let mut after = *rest;
    let n = take(&mut after)?;
    if rest.len() - after.len() > U32_BYTES_MAX {
        return None;
    }
    let n = u32::try_from(n).ok()?;
    *rest = after;
    Some(n)
}

/// Appends `n` as a varint to `out`: the hand-written encoders of the WAL's round parts
/// and of the peer frames' records write field after field this way, most of them one
/// byte long.
#[inline]
pub fn push(n: u64, out: &mut Vec<u8>) {
    if n < 0x80 {
        out.push(n as u8);
        return;
    }
    let mut bytes = [0u8; BYTES_MAX];
    let len = write(n, &mut bytes);
    out.extend_from_slice(&bytes[..len]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// `bytes` read, and skipped, exactly as postcard reads a `u64`.
    fn check_read(bytes: &[u8]) {
        let (mut a, mut b) = (bytes, bytes);
        let read = take(&mut a);
        let skipped = skip(&mut b);
        assert_eq!(read.is_some(), skipped.is_some(), "{bytes:x?}");
        assert_eq!(a, b, "{bytes:x?}");
        let postcard: Result<(u64, &[u8]), _> = postcard::take_from_bytes(bytes);
        assert_eq!(read, postcard.as_ref().ok().map(|p| p.0), "{bytes:x?}");
        if let Ok((_, rest)) = postcard {
            assert_eq!(a, rest, "{bytes:x?}");
        }
    }

    /// `bytes` read as postcard reads a `u32`, leaving the rest as postcard does.
    fn check_read_u32(bytes: &[u8]) {
        let mut a = bytes;
        let read = take_u32(&mut a);
        let postcard: Result<(u32, &[u8]), _> = postcard::take_from_bytes(bytes);
        assert_eq!(read, postcard.as_ref().ok().map(|p| p.0), "{bytes:x?}");
        match postcard {
            Ok((_, rest)) => assert_eq!(a, rest, "{bytes:x?}"),
            Err(_) => assert_eq!(a, bytes, "{bytes:x?}: a refused varint is not consumed"),
        }
    }

    /// `n` written and sized exactly as postcard writes it.
    fn check_write(n: u64) {
        let mut out = [0u8; BYTES_MAX];
        let written = write(n, &mut out);
        assert_eq!(out[..written], postcard::to_stdvec(&n).unwrap()[..], "{n}");
        assert_eq!(len(n), written, "{n}");
    }

    #[test]
    fn edge_varints_are_read_skipped_and_written_as_postcard_does() {
        for bytes in [
            &[0x00][..],
            &[0x7f],
            &[0x80, 0x01],
            &[0x80, 0x00],
            &[0xff; 9],
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02],
            &[0xff; 11],
            &[],
        ] {
            check_read(bytes);
        }
        for bytes in [
            &[0x80, 0x80, 0x80, 0x80, 0x00][..],
            &[0xff, 0xff, 0xff, 0xff, 0x0f],
            &[0xff, 0xff, 0xff, 0xff, 0x10],
            &[0x80, 0x80, 0x80, 0x80, 0x80, 0x00],
            &[0x80],
        ] {
            check_read_u32(bytes);
        }
        for n in [0, 1, 0x7f, 0x80, 0x3fff, 0x4000, u64::MAX / 2, u64::MAX] {
            check_write(n);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(20_000))]

        #[test]
        fn varints_are_read_and_skipped_as_postcard_reads_them(
            // Mostly continuation bytes, so that long varints are common.
            body in proptest::collection::vec(prop_oneof![3 => 0x80u8.., 1 => any::<u8>()], 0..11),
            last: u8,
        ) {
            let mut bytes = body;
            bytes.push(last);
            check_read(&bytes);
            check_read_u32(&bytes);
        }

        #[test]
        fn varints_are_written_and_sized_as_postcard_writes_them(n: u64, shift in 0u32..64) {
            check_write(n >> shift);
        }

        #[test]
        fn varints_pushed_in_a_row_are_postcard_s_encoding_of_them(
            ns in proptest::array::uniform4((any::<u64>(), 0u32..64)),
        ) {
            let ns = ns.map(|(n, shift)| n >> shift);
            let mut out = vec![7];
            for n in ns {
                push(n, &mut out);
            }
            prop_assert_eq!(&out[1..], &postcard::to_stdvec(&ns).unwrap()[..]);
        }
    }
}
