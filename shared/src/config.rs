//! The static cluster file (TOML, in `configs/`): who the nodes are, where they listen, how
//! many shards there are and on how many nodes each shard lives. Parsed once at the
//! boundary into a validated [`ClusterConfig`].

use crate::ids::NodeId;
use crate::limits::{NODES_MAX, SHARDS_MAX};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;

/// The embedded default cluster: 3 nodes on 127.0.0.1, 8 shards.
pub const LOCAL_3_TOML: &str = include_str!("../../configs/local-3.toml");

/// Replicas per shard when the cluster file does not say (fewer if fewer nodes are listed).
pub const REPLICATION_DEFAULT: u32 = 3;

/// One node of the cluster file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeEntry {
    /// Node id, unique, non-zero.
    pub id: u64,
    /// UDP address the node listens on, for peers and clients alike.
    pub addr: SocketAddr,
}

/// Timing knobs. One tick is `tick_ms` of wall time; Raft counts in ticks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimingConfig {
    /// Wall-clock length of one tick.
    #[serde(default = "default_tick_ms")]
    pub tick_ms: u64,
    /// Ticks between leader heartbeats.
    #[serde(default = "default_heartbeat_ticks")]
    pub heartbeat_ticks: u32,
    /// Lower bound (inclusive) of the randomized election timeout, in ticks.
    #[serde(default = "default_election_ticks_min")]
    pub election_ticks_min: u32,
    /// Upper bound (exclusive) of the randomized election timeout, in ticks.
    #[serde(default = "default_election_ticks_max")]
    pub election_ticks_max: u32,
}

fn default_tick_ms() -> u64 {
    10
}
fn default_heartbeat_ticks() -> u32 {
    5
}
fn default_election_ticks_min() -> u32 {
    30
}
fn default_election_ticks_max() -> u32 {
    60
}

impl Default for TimingConfig {
    fn default() -> Self {
        TimingConfig {
            tick_ms: default_tick_ms(),
            heartbeat_ticks: default_heartbeat_ticks(),
            election_ticks_min: default_election_ticks_min(),
            election_ticks_max: default_election_ticks_max(),
        }
    }
}

/// The cluster file as written on disk (before validation).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClusterConfig {
    cluster_id: u64,
    shards: u32,
    replication: Option<u32>,
    #[serde(default = "default_data_dir")]
    data_dir: PathBuf,
    #[serde(default)]
    timing: TimingConfig,
    nodes: Vec<NodeEntry>,
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("data")
}

/// A validated cluster configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterConfig {
    /// Datagrams carrying another cluster id are dropped.
    pub cluster_id: u64,
    /// Number of shards (Raft groups), `1..=SHARDS_MAX`.
    pub shards: u32,
    /// Replicas per shard, `1..=nodes.len()`: each shard lives on this many nodes.
    pub replication: u32,
    /// Base data directory; node N keeps its data under `data_dir/node-N`.
    pub data_dir: PathBuf,
    /// Timing knobs.
    pub timing: TimingConfig,
    /// The nodes, sorted by id.
    pub nodes: Vec<NodeEntry>,
}

/// Why a cluster file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Not valid TOML, or fields of the wrong type.
    #[error("cluster file is not valid: {0}")]
    Parse(#[from] toml::de::Error),
    /// A field is out of its allowed range.
    #[error("cluster file: {0}")]
    Invalid(String),
}

impl ClusterConfig {
    /// Parses and validates a cluster file.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let raw: RawClusterConfig = toml::from_str(text)?;
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        if raw.shards == 0 || raw.shards > SHARDS_MAX {
            return invalid(format!(
                "shards = {} is outside 1..={SHARDS_MAX}",
                raw.shards
            ));
        }
        if raw.nodes.is_empty() || raw.nodes.len() > NODES_MAX {
            return invalid(format!(
                "{} nodes listed; allowed 1..={NODES_MAX}",
                raw.nodes.len()
            ));
        }
        let mut ids = BTreeSet::new();
        let mut addrs = BTreeSet::new();
        for n in &raw.nodes {
            if n.id == 0 {
                return invalid("node id 0 is reserved; ids start at 1".into());
            }
            if !ids.insert(n.id) {
                return invalid(format!("node id {} is listed twice", n.id));
            }
            if !addrs.insert(n.addr) {
                return invalid(format!("address {} is listed twice", n.addr));
            }
        }
        let node_count = raw.nodes.len() as u32;
        let replication = match raw.replication {
            None => REPLICATION_DEFAULT.min(node_count),
            Some(r) if r == 0 || r > node_count => {
                return invalid(format!(
                    "replication = {r} is outside 1..={node_count} (the number of nodes listed)"
                ))
            }
            Some(r) => r,
        };
        let t = &raw.timing;
        if t.tick_ms == 0 || t.heartbeat_ticks == 0 {
            return invalid("timing.tick_ms and timing.heartbeat_ticks must be positive".into());
        }
        if t.election_ticks_min <= t.heartbeat_ticks || t.election_ticks_max <= t.election_ticks_min
        {
            return invalid(format!(
                "timing needs heartbeat_ticks ({}) < election_ticks_min ({}) < election_ticks_max ({})",
                t.heartbeat_ticks, t.election_ticks_min, t.election_ticks_max
            ));
        }
        let mut nodes = raw.nodes;
        nodes.sort_by_key(|n| n.id);
        Ok(ClusterConfig {
            cluster_id: raw.cluster_id,
            shards: raw.shards,
            replication,
            data_dir: raw.data_dir,
            timing: raw.timing,
            nodes,
        })
    }

    /// Reads and validates a cluster file from disk.
    pub fn load(path: &std::path::Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::Invalid(format!("cannot read {}: {e}", path.display())))?;
        Self::from_toml(&text)
    }

    /// The embedded default (`configs/local-3.toml`).
    pub fn local_3() -> Self {
        Self::from_toml(LOCAL_3_TOML).expect("embedded configs/local-3.toml is valid")
    }

    /// All node ids, ascending.
    pub fn node_ids(&self) -> Vec<NodeId> {
        self.nodes.iter().map(|n| NodeId(n.id)).collect()
    }

    /// The address of `id`, if it is a member.
    pub fn addr_of(&self, id: NodeId) -> Option<SocketAddr> {
        self.nodes.iter().find(|n| n.id == id.0).map(|n| n.addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_is_three_nodes_eight_shards() {
        let c = ClusterConfig::local_3();
        assert_eq!(c.shards, 8);
        assert_eq!(c.node_ids(), vec![NodeId(1), NodeId(2), NodeId(3)]);
    }

    #[test]
    fn rejects_duplicate_ids_and_zero_shards() {
        let dup = "cluster_id = 1\nshards = 2\n[[nodes]]\nid = 1\naddr = \"127.0.0.1:1\"\n[[nodes]]\nid = 1\naddr = \"127.0.0.1:2\"\n";
        let e = ClusterConfig::from_toml(dup).unwrap_err().to_string();
        assert!(e.contains("listed twice"), "{e}");
        let zero = "cluster_id = 1\nshards = 0\n[[nodes]]\nid = 1\naddr = \"127.0.0.1:1\"\n";
        let e = ClusterConfig::from_toml(zero).unwrap_err().to_string();
        assert!(e.contains("shards = 0"), "{e}");
    }

    #[test]
    fn replication_defaults_to_three_or_the_node_count() {
        assert_eq!(ClusterConfig::local_3().replication, 3);
        let one = "cluster_id = 1\nshards = 2\n[[nodes]]\nid = 1\naddr = \"127.0.0.1:1\"\n";
        assert_eq!(ClusterConfig::from_toml(one).unwrap().replication, 1);
    }

    #[test]
    fn rejects_replication_outside_one_to_the_node_count() {
        let file = |r: u32| {
            format!(
                "cluster_id = 1\nshards = 2\nreplication = {r}\n[[nodes]]\nid = 1\naddr = \"127.0.0.1:1\"\n[[nodes]]\nid = 2\naddr = \"127.0.0.1:2\"\n"
            )
        };
        for r in [0, 3] {
            let e = ClusterConfig::from_toml(&file(r)).unwrap_err().to_string();
            assert!(
                e.contains(&format!("replication = {r} is outside 1..=2")),
                "{e}"
            );
        }
        assert_eq!(ClusterConfig::from_toml(&file(2)).unwrap().replication, 2);
    }

    #[test]
    fn rejects_unknown_fields() {
        let t =
            "cluster_id = 1\nshards = 2\nshard = 3\n[[nodes]]\nid = 1\naddr = \"127.0.0.1:1\"\n";
        assert!(ClusterConfig::from_toml(t).is_err());
    }
}
