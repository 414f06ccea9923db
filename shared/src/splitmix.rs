//! SplitMix64, the one small deterministic generator the crates share (the simulated
//! disk's fault choices, seeded tests, seeds spread apart): tiny, and fixed forever, so a
//! seed replays the same run on every build (unlike a library RNG whose algorithm may
//! change between versions).

/// SplitMix64's increment: the golden ratio as a 64-bit fraction.
const GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

/// SplitMix64's output function: spreads nearby inputs (1, 2, 3...) far apart.
pub fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The generator; its state is the seed advanced once per draw.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// The generator seeded with `seed`.
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(GAMMA);
        mix(self.0)
    }

    /// Uniform in `0..n` (`n` > 0; the modulo bias is irrelevant for tests and fault
    /// choices).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Uniform in `0..=max`.
    pub fn upto(&mut self, max: u64) -> u64 {
        match max.checked_add(1) {
            Some(n) => self.below(n),
            None => self.next_u64(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sequence_is_splitmix64s() {
        // SplitMix64's reference outputs from seed 0 pin the generator: a recorded kvsim
        // seed replays the same run only while the generator stays this one.
        let mut rng = SplitMix64::new(0);
        let first: Vec<u64> = (0..3).map(|_| rng.next_u64()).collect();
        assert_eq!(
            first,
            [
                0xe220_a839_7b1d_cdaf,
                0x6e78_9e6a_a1b9_65f4,
                0x06c4_5d18_8009_454f
            ]
        );
    }

    #[test]
    fn bounded_draws_stay_in_bounds_and_reach_both_ends() {
        let mut rng = SplitMix64::new(7);
        let draws: Vec<u64> = (0..200).map(|_| rng.upto(3)).collect();
        assert!(draws.iter().all(|&d| d <= 3));
        assert!(draws.contains(&0) && draws.contains(&3));
        let below: Vec<u64> = (0..200).map(|_| rng.below(2)).collect();
        assert!(below.iter().all(|&d| d < 2) && below.contains(&1));
        // The whole range: no overflow on `max + 1`.
        let mut a = SplitMix64::new(9);
        let mut b = SplitMix64::new(9);
        assert_eq!(a.upto(u64::MAX), b.next_u64());
    }
}
