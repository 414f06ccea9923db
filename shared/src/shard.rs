//! Key -> shard placement. Defined once here, so the server and kvcli can never disagree.

use crate::ids::ShardId;
use xxhash_rust::xxh64::xxh64;

/// The seed of the shard hash. Changing it re-partitions every cluster: never change it.
const SHARD_HASH_SEED: u64 = 0;

/// The shard that owns `key`: xxhash64(key) modulo `shard_count`.
///
/// # Panics
/// If `shard_count` is zero (a config error caught at load time).
pub fn shard_for_key(key: &[u8], shard_count: u32) -> ShardId {
    assert!(shard_count > 0, "shard_count must be positive");
    ShardId((xxh64(key, SHARD_HASH_SEED) % u64::from(shard_count)) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values_are_stable() {
        // Pinned so that a change of hash or seed (which would re-partition data) fails here.
        assert_eq!(xxh64(b"", 0), 0xef46db3751d8e999);
        assert_eq!(
            shard_for_key(b"", 8),
            ShardId((0xef46db3751d8e999u64 % 8) as u32)
        );
    }

    #[test]
    fn spreads_keys_over_all_shards() {
        let mut counts = [0u32; 8];
        for i in 0..8000 {
            counts[shard_for_key(format!("key-{i}").as_bytes(), 8).0 as usize] += 1;
        }
        for c in counts {
            assert!((800..1200).contains(&c), "uneven spread: {counts:?}");
        }
    }
}
