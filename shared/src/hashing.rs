//! [`SeededState`]: the hasher of the tables keyed by what clients choose (keys, session
//! ids, request ids), fast where std's SipHash-1-3 cost a few percent of a put, and
//! seeded from the operating system's randomness so a client cannot aim its inputs at
//! one bucket (HashDoS).

use foldhash::fast::SeedableRandomState;
use foldhash::SharedSeed;
use std::hash::BuildHasher;
use std::sync::OnceLock;

/// A [`BuildHasher`] of foldhash (fast variant) under a per-process seed and a
/// per-table seed, both drawn from the OS's randomness (`getrandom`), not from
/// foldhash's own global seed (addresses and the clock, which it does not claim to be
/// HashDoS-resistant). Iteration order differs between processes and tables, as with
/// std's `HashMap`: use it only where nothing depends on that order.
#[derive(Clone, Debug)]
pub struct SeededState(SeedableRandomState);

impl SeededState {
    /// A state with fresh random seeds.
    pub fn new() -> SeededState {
        static SHARED: OnceLock<SharedSeed> = OnceLock::new();
        let shared = SHARED.get_or_init(|| SharedSeed::from_u64(random_u64()));
        SeededState(SeedableRandomState::with_seed(random_u64(), shared))
    }
}

impl Default for SeededState {
    fn default() -> Self {
        SeededState::new()
    }
}

impl BuildHasher for SeededState {
    type Hasher = <SeedableRandomState as BuildHasher>::Hasher;

    fn build_hasher(&self) -> Self::Hasher {
        self.0.build_hasher()
    }
}

/// 64 bits of the operating system's randomness.
fn random_u64() -> u64 {
    let mut bytes = [0u8; 8];
    getrandom::getrandom(&mut bytes).expect("the operating system provides randomness");
    u64::from_le_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn equal_keys_hash_alike_within_a_table_and_apart_across_tables() {
        let a = SeededState::new();
        let key: &[u8] = b"a key sixteen b.";
        assert_eq!(a.hash_one(key), a.hash_one(key));
        assert_eq!(a.hash_one(key), a.clone().hash_one(key));
        // Two tables' seeds differ: the same keys hash apart (2^-64 chance otherwise,
        // for each of the keys).
        let b = SeededState::new();
        let same = (0u64..8).filter(|k| a.hash_one(k) == b.hash_one(k)).count();
        assert_eq!(same, 0);
    }

    #[test]
    fn a_map_under_it_finds_what_it_holds() {
        let mut m: HashMap<u64, u64, SeededState> = HashMap::default();
        for k in 0..1000 {
            m.insert(k * 7919, k);
        }
        assert!((0..1000).all(|k| m[&(k * 7919)] == k));
        assert_eq!(m.get(&1), None);
    }
}
