//! Small byte strings written into one shared buffer instead of a heap allocation each:
//! the load generator's keys and values and every session's encoded requests, so that a
//! request costs no `malloc` and `free` of its own on the client's one thread.

use bytes::{Bytes, BytesMut};

/// Bytes of one buffer: about a hundred and forty 16 B keys with 100 B values, or a
/// hundred and twenty encoded puts of them.
pub(crate) const ARENA_BYTES: usize = 16 * 1024;

/// Hands out `Bytes` slices of a buffer (cloned and dropped by a reference count) until
/// the buffer is full and the next one is allocated; a buffer is freed when the last
/// slice of it goes.
#[derive(Default)]
pub(crate) struct Arena {
    buf: BytesMut,
}

impl Arena {
    /// What `write` appends, at most `len_max` bytes, as a slice of the arena.
    pub(crate) fn take(&mut self, len_max: usize, write: impl FnOnce(&mut BytesMut)) -> Bytes {
        if self.buf.capacity() - self.buf.len() < len_max {
            self.buf = BytesMut::with_capacity(ARENA_BYTES.max(len_max));
        }
        write(&mut self.buf);
        debug_assert!(self.buf.len() <= len_max, "wrote more than announced");
        self.buf.split().freeze()
    }
}
