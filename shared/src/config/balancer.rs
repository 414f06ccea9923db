//! The cluster file's `[balancer]` section: whether the metadata leader's balancer runs,
//! how often it plans, how many moves, repairs and leader transfers it keeps running, and how long
//! a node may be silent before its replicas are rebuilt elsewhere.

use serde::{Deserialize, Serialize};

/// Most replica moves the balancer may keep running at once (each new replica catches
/// up by a snapshot: more than this would starve client traffic of disk and network).
pub const BALANCER_MOVES_MAX: u32 = 64;
/// Bounds of `interval_ms`: often enough to react, not so often that planning costs.
const INTERVAL_MS_MIN: u64 = 100;
const INTERVAL_MS_MAX: u64 = 3_600_000;
/// Bounds of `down_after_ms`. Nodes are polled every 2 s, so a shorter timer would call
/// a node down between two polls it answers.
const DOWN_AFTER_MS_MIN: u64 = 2_000;
const DOWN_AFTER_MS_MAX: u64 = 7 * 24 * 3_600_000;
/// Most leader transfers the balancer may keep in flight at once. Each is an election in
/// its shard, during which the shard serves no write: many at once on a loaded node stall
/// clients for seconds.
pub const BALANCER_TRANSFERS_MAX: u32 = 64;

/// The balancer's settings. A field the cluster file leaves out takes its value from
/// [`BalancerConfig::default`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BalancerConfig {
    /// The metadata group's leader runs the balancer (default true). Off, only kvcli's
    /// `node drain`, `node remove --dead` and `rebalance` move replicas.
    pub enabled: bool,
    /// Time between two planning rounds (default 2000 ms).
    pub interval_ms: u64,
    /// Replica moves running at once, at most (default 4): off draining nodes, and
    /// spreading.
    pub moves_max: u32,
    /// Repairs running at once, at most (default 16): moves of replicas off dead nodes,
    /// apart from `moves_max`. Each such shard runs a replica short until its move ends.
    pub repairs_max: u32,
    /// Leader transfers in flight at once, at most (default 4); besides, the balancer
    /// keeps each node in at most two at a time.
    pub transfers_max: u32,
    /// A node silent this long counts as down for good: its replicas are rebuilt on the
    /// other nodes (default 60000 ms).
    pub down_after_ms: u64,
}

impl Default for BalancerConfig {
    fn default() -> Self {
        BalancerConfig {
            enabled: true,
            interval_ms: 2_000,
            moves_max: 4,
            repairs_max: 16,
            transfers_max: 4,
            down_after_ms: 60_000,
        }
    }
}

impl BalancerConfig {
    /// Refuses settings outside their bounds, naming the field and the bound.
    pub fn validate(&self) -> Result<(), String> {
        let ranges = [
            (
                "interval_ms",
                self.interval_ms,
                INTERVAL_MS_MIN,
                INTERVAL_MS_MAX,
            ),
            (
                "moves_max",
                u64::from(self.moves_max),
                1,
                u64::from(BALANCER_MOVES_MAX),
            ),
            (
                "repairs_max",
                u64::from(self.repairs_max),
                1,
                u64::from(BALANCER_MOVES_MAX),
            ),
            (
                "transfers_max",
                u64::from(self.transfers_max),
                1,
                u64::from(BALANCER_TRANSFERS_MAX),
            ),
            (
                "down_after_ms",
                self.down_after_ms,
                DOWN_AFTER_MS_MIN,
                DOWN_AFTER_MS_MAX,
            ),
        ];
        for (name, value, min, max) in ranges {
            if !(min..=max).contains(&value) {
                return Err(format!(
                    "balancer.{name} = {value} is outside {min}..={max}"
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_each_bound_is_named() {
        assert_eq!(BalancerConfig::default().validate(), Ok(()));
        let bad = |c: BalancerConfig| c.validate().unwrap_err();
        let d = BalancerConfig::default;
        assert_eq!(
            bad(BalancerConfig {
                moves_max: 0,
                ..d()
            }),
            "balancer.moves_max = 0 is outside 1..=64"
        );
        assert_eq!(
            bad(BalancerConfig {
                repairs_max: 0,
                ..d()
            }),
            "balancer.repairs_max = 0 is outside 1..=64"
        );
        assert_eq!(
            bad(BalancerConfig {
                transfers_max: 65,
                ..d()
            }),
            "balancer.transfers_max = 65 is outside 1..=64"
        );
        assert_eq!(
            bad(BalancerConfig {
                interval_ms: 5,
                ..d()
            }),
            "balancer.interval_ms = 5 is outside 100..=3600000"
        );
        assert_eq!(
            bad(BalancerConfig {
                down_after_ms: 500,
                ..d()
            }),
            "balancer.down_after_ms = 500 is outside 2000..=604800000"
        );
    }
}
