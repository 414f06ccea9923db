//! postcard's encoding read and written one field at a time, for the hand-written codecs
//! of the hot messages (peer Appends and their answers, client gets and puts and their
//! replies): each read takes exactly what postcard takes for that type and each write
//! writes what postcard writes, so a message handled by hand and one left to postcard
//! (`Reader::postcard`, `Writer::postcard`) can sit side by side in one payload.

use crate::varint;
use serde::{de::DeserializeOwned, Serialize};

/// A cursor over a payload being decoded. Every read returns `None` where postcard
/// would fail, and then leaves the cursor where it was.
#[derive(Clone, Copy, Debug)]
pub struct Reader<'a> {
    /// What is left to read.
    pub rest: &'a [u8],
}

impl<'a> Reader<'a> {
    /// A cursor at the start of `payload`.
    pub fn new(payload: &'a [u8]) -> Reader<'a> {
        Reader { rest: payload }
    }

    /// A `u64` (and what postcard encodes as one: a `usize` on 64-bit targets).
    #[inline]
    pub fn u64(&mut self) -> Option<u64> {
        varint::take(&mut self.rest)
    }

    /// A `u32`, and an enum's variant index.
    #[inline]
    pub fn u32(&mut self) -> Option<u32> {
        varint::take_u32(&mut self.rest)
    }

    /// A length (of a sequence or of bytes).
    #[inline]
    pub fn count(&mut self) -> Option<usize> {
        let mut after = *self;
        let n = usize::try_from(after.u64()?).ok()?;
        *self = after;
        Some(n)
    }

    /// A bool: one byte, 0 or 1.
    #[inline]
    pub fn bool(&mut self) -> Option<bool> {
        let (&b, rest) = self.rest.split_first()?;
        let value = match b {
            0 => false,
            1 => true,
            _ => return None,
        };
        self.rest = rest;
        Some(value)
    }

    /// Bytes (serde bytes, a `Bytes`): a length, then the bytes.
    #[inline]
    pub fn bytes(&mut self) -> Option<&'a [u8]> {
        let mut after = *self;
        let n = after.count()?;
        let (b, rest) = after.rest.split_at_checked(n)?;
        self.rest = rest;
        Some(b)
    }

    /// A value of any type, read by postcard.
    pub fn postcard<T: DeserializeOwned>(&mut self) -> Option<T> {
        let (value, rest) = postcard::take_from_bytes(self.rest).ok()?;
        self.rest = rest;
        Some(value)
    }

    /// How many items a sequence count of `count` can hold at most, given that each
    /// takes at least `item_bytes_min` of the bytes left: what a decoder may reserve
    /// without letting a count it has not checked make it allocate more than the payload.
    pub fn capacity_for(&self, count: usize, item_bytes_min: usize) -> usize {
        count.min(self.rest.len() / item_bytes_min.max(1))
    }
}

/// A cursor over an output buffer. Every write checks the room left and returns `None`
/// if the value does not fit (the buffer's content after `at` is then unspecified).
#[derive(Debug)]
pub struct Writer<'a> {
    buf: &'a mut [u8],
    /// Bytes written so far.
    pub at: usize,
}

impl<'a> Writer<'a> {
    /// A cursor at the start of `buf`.
    pub fn new(buf: &'a mut [u8]) -> Writer<'a> {
        Writer { buf, at: 0 }
    }

    /// Any integer postcard writes as a varint (`u64`, `u32`, `usize`, variant indexes).
    #[inline]
    pub fn varint(&mut self, n: u64) -> Option<()> {
        let rest = self.buf.get_mut(self.at..)?;
        if rest.len() >= varint::BYTES_MAX {
            self.at += varint::write(n, rest);
        } else {
            // The last few bytes of the buffer: write on the stack, copy what fits.
            let mut tmp = [0u8; varint::BYTES_MAX];
            let len = varint::write(n, &mut tmp);
            rest.get_mut(..len)?.copy_from_slice(&tmp[..len]);
            self.at += len;
        }
        Some(())
    }

    /// A bool: one byte, 0 or 1.
    #[inline]
    pub fn bool(&mut self, b: bool) -> Option<()> {
        *self.buf.get_mut(self.at)? = u8::from(b);
        self.at += 1;
        Some(())
    }

    /// Bytes: a length, then the bytes.
    #[inline]
    pub fn bytes(&mut self, b: &[u8]) -> Option<()> {
        self.varint(b.len() as u64)?;
        let end = self.at.checked_add(b.len())?;
        self.buf.get_mut(self.at..end)?.copy_from_slice(b);
        self.at = end;
        Some(())
    }

    /// A value of any type, written by postcard.
    pub fn postcard<T: Serialize + ?Sized>(&mut self, value: &T) -> Option<()> {
        let rest = self.buf.get_mut(self.at..)?;
        self.at += postcard::to_slice(value, rest).ok()?.len();
        Some(())
    }
}
