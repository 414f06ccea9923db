//! The cluster file's `[placement]` section: where shard leaderships go. One policy read by
//! the node core (bootstrap preferred leaders, leader spreading) and by the balance planner
//! (leader transfers), so that the two never pull leaderships in different directions.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Where each shard's leadership should sit while its voters are up.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum LeaderPolicy {
    /// Leaderships spread over the nodes, each within one of the mean: every node runs
    /// commit rounds, so the leaders' CPU, disk and network work is shared. The better
    /// choice when nodes are separate machines whose CPU or NIC is the limit.
    #[default]
    Spread,
    /// Each shard's leader is its live voter that comes first in one cluster-wide order
    /// (lowest node id first): with R = N every leadership sits on one node, so one
    /// node's commit rounds, request batches and WAL syncs serve every shard, and a client
    /// that talks to that node is answered without a hop. When that node is down or
    /// draining, the next one in the order takes them.
    Pack,
}

impl LeaderPolicy {
    /// The word the cluster file uses.
    pub fn name(self) -> &'static str {
        match self {
            LeaderPolicy::Spread => "spread",
            LeaderPolicy::Pack => "pack",
        }
    }

    /// The policy a cluster-file word names.
    pub fn from_name(name: &str) -> Option<LeaderPolicy> {
        [LeaderPolicy::Spread, LeaderPolicy::Pack]
            .into_iter()
            .find(|p| p.name() == name)
    }
}

impl Serialize for LeaderPolicy {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for LeaderPolicy {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let word = String::deserialize(d)?;
        LeaderPolicy::from_name(&word).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "placement.leaders = {word:?} is not \"spread\" or \"pack\""
            ))
        })
    }
}

/// The `[placement]` section. A field the cluster file leaves out takes its value from
/// [`PlacementConfig::default`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PlacementConfig {
    /// Where shard leaderships go (default `"spread"`).
    pub leaders: LeaderPolicy,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_words_name_the_key() {
        for p in [LeaderPolicy::Spread, LeaderPolicy::Pack] {
            assert_eq!(LeaderPolicy::from_name(p.name()), Some(p));
        }
        let c: PlacementConfig = toml::from_str("leaders = \"pack\"").unwrap();
        assert_eq!(c.leaders, LeaderPolicy::Pack);
        let c: PlacementConfig = toml::from_str("").unwrap();
        assert_eq!(c.leaders, LeaderPolicy::Spread);
        let e = toml::from_str::<PlacementConfig>("leaders = \"packed\"")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("placement.leaders = \"packed\" is not \"spread\" or \"pack\""),
            "{e}"
        );
    }
}
