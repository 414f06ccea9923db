//! Small byte strings written into one shared buffer instead of a heap allocation each:
//! the load generator's keys and values, so that a request costs no `malloc` and `free`
//! of its own on the client's one thread.

use bytes::{Bytes, BytesMut};

/// Bytes of one buffer of the load generator's keys and values: about a hundred and
/// forty 16 B keys with 100 B values.
pub(crate) const ARENA_BYTES: usize = 16 * 1024;

/// Hands out `Bytes` slices of a buffer (cloned and dropped by a reference count) until
/// the buffer is full and the next one is allocated; a buffer is freed when the last
/// slice of it goes.
pub(crate) struct Arena {
    buf: BytesMut,
    /// Bytes of each new buffer (more for a string that needs more).
    chunk_bytes: usize,
}

impl Default for Arena {
    fn default() -> Arena {
        Arena::with_chunk(ARENA_BYTES)
    }
}

impl Arena {
    /// An arena of buffers of `chunk_bytes`, none allocated yet.
    pub(crate) fn with_chunk(chunk_bytes: usize) -> Arena {
        Arena {
            buf: BytesMut::new(),
            chunk_bytes,
        }
    }

    /// What `write` appends, at most `len_max` bytes, as a slice of the arena.
    pub(crate) fn take(&mut self, len_max: usize, write: impl FnOnce(&mut BytesMut)) -> Bytes {
        if self.buf.capacity() - self.buf.len() < len_max {
            self.buf = BytesMut::with_capacity(self.chunk_bytes.max(len_max));
        }
        write(&mut self.buf);
        debug_assert!(self.buf.len() <= len_max, "wrote more than announced");
        self.buf.split().freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_holds_chunk_bytes_and_a_larger_string_gets_its_own() {
        let mut arena = Arena::with_chunk(100);
        let slices: Vec<Bytes> = (0..10u8)
            .map(|i| arena.take(30, |b| b.extend_from_slice(&[i; 30])))
            .collect();
        // Three slices of 30 bytes fit in 100; the fourth starts a new buffer.
        let new_buffers = slices
            .windows(2)
            .filter(|w| w[1].as_ptr() != w[0].as_ptr().wrapping_add(30))
            .count();
        assert_eq!(new_buffers, 3);
        assert!(slices
            .iter()
            .enumerate()
            .all(|(i, s)| s[..] == [i as u8; 30]));
        let big = arena.take(500, |b| b.extend_from_slice(&[7; 500]));
        assert_eq!(big.len(), 500);
    }
}
