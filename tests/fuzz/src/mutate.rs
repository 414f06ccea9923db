//! The stable driver's mutator: libFuzzer's coverage guidance is nightly-only, so CI
//! mutates each target's seeds (and its regression inputs) the way libFuzzer's simplest
//! strategies do, from one seeded RNG so that every run is reproducible.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// Largest input the mutator builds.
pub const INPUT_BYTES_MAX: usize = 4096;

/// Makes inputs from a pool of valid ones.
pub struct Mutator {
    rng: SmallRng,
    pool: Vec<Vec<u8>>,
}

impl Mutator {
    /// A mutator over `pool` (seeds and regressions), drawing from `seed`.
    pub fn new(seed: u64, pool: Vec<Vec<u8>>) -> Mutator {
        Mutator {
            rng: SmallRng::seed_from_u64(seed),
            pool,
        }
    }

    /// The next input: mostly a pool entry with a few mutations, sometimes random bytes.
    pub fn next_input(&mut self) -> Vec<u8> {
        if self.pool.is_empty() || self.rng.gen_ratio(1, 16) {
            let len = self.rng.gen_range(0..256);
            return (0..len).map(|_| self.rng.gen()).collect();
        }
        let mut data = self.pool[self.rng.gen_range(0..self.pool.len())].clone();
        for _ in 0..self.rng.gen_range(1..=4) {
            self.mutate(&mut data);
        }
        data.truncate(INPUT_BYTES_MAX);
        data
    }

    fn mutate(&mut self, data: &mut Vec<u8>) {
        let len = data.len();
        match self.rng.gen_range(0..8) {
            0 if len > 0 => {
                let at = self.rng.gen_range(0..len);
                data[at] ^= 1 << self.rng.gen_range(0..8);
            }
            1 if len > 0 => {
                let at = self.rng.gen_range(0..len);
                data[at] = self.interesting_byte();
            }
            2 => {
                let at = self.rng.gen_range(0..=len);
                let n = self.rng.gen_range(1..=8);
                let bytes: Vec<u8> = (0..n).map(|_| self.interesting_byte()).collect();
                data.splice(at..at, bytes);
            }
            3 if len > 0 => {
                let at = self.rng.gen_range(0..len);
                let end = (at + self.rng.gen_range(1..=16)).min(len);
                data.drain(at..end);
            }
            4 if len > 0 => {
                data.truncate(self.rng.gen_range(0..len));
            }
            5 if len > 0 => {
                // Copy a chunk of the input elsewhere in it (repeats an operation).
                let from = self.rng.gen_range(0..len);
                let end = (from + self.rng.gen_range(1..=32)).min(len);
                let chunk = data[from..end].to_vec();
                let at = self.rng.gen_range(0..=len);
                data.splice(at..at, chunk);
            }
            6 if !self.pool.is_empty() => {
                // Splice: the head of this input, the tail of another.
                let other = &self.pool[self.rng.gen_range(0..self.pool.len())];
                let cut = self.rng.gen_range(0..=len);
                let from = self.rng.gen_range(0..=other.len());
                data.truncate(cut);
                data.extend_from_slice(&other[from..]);
            }
            _ if len >= 8 => {
                // Overwrite a little-endian u64 with a boundary value.
                let at = self.rng.gen_range(0..=len - 8);
                let v = [0, 1, u64::MAX, u64::MAX - 1, 1 << 32, 1 << 63][self.rng.gen_range(0..6)];
                data[at..at + 8].copy_from_slice(&v.to_le_bytes());
            }
            _ => data.push(self.rng.gen()),
        }
    }

    fn interesting_byte(&mut self) -> u8 {
        [0, 1, 0x7f, 0x80, 0xff, self.rng.gen()][self.rng.gen_range(0..6)]
    }
}
