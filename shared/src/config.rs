//! The static cluster file (TOML, in `configs/`): who the nodes are, where they listen, how
//! many shards there are and on how many nodes each shard lives. Parsed once at the
//! boundary into a validated [`ClusterConfig`].

use crate::auth::Protection;
use crate::ids::NodeId;
use crate::limits::{CLIENT_KEYS_MAX, NODES_MAX, SHARDS_MAX, TIMING_VALUE_MAX};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
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
    /// TCP address of the node's Redis-protocol front end [default: `addr`'s IP, port
    /// + [`REDIS_PORT_OFFSET`]].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis_addr: Option<SocketAddr>,
    /// TCP address of the node's HTTP endpoint (`/metrics`, `/health`) [default: `addr`'s
    /// IP if it is a loopback address, else the loopback address of its family; `addr`'s
    /// port + [`HTTP_PORT_OFFSET`]]. The
    /// endpoint has no authentication, so only an address listed here exposes it beyond
    /// the node's own machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_addr: Option<SocketAddr>,
}

/// The Redis front end's default port is the node's UDP port plus this (7101 -> 8101).
pub const REDIS_PORT_OFFSET: u16 = 1000;
/// The HTTP endpoint's default port is the node's UDP port plus this (7101 -> 9101).
pub const HTTP_PORT_OFFSET: u16 = 2000;

impl NodeEntry {
    /// The Redis front end's address: as listed, else derived from `addr`.
    pub fn redis_addr(&self) -> Option<SocketAddr> {
        self.redis_addr
            .or_else(|| offset(self.addr, REDIS_PORT_OFFSET))
    }

    /// The HTTP endpoint's address: as listed, else on loopback with a port derived from
    /// `addr`'s (unauthenticated metrics stay on the node's machine unless listed).
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr.or_else(|| {
            // A node already on a loopback address keeps it, so nodes on 127.0.0.2,
            // 127.0.0.3, ... with the same port do not collide on 127.0.0.1.
            let loopback: IpAddr = match self.addr {
                a if a.ip().is_loopback() => a.ip(),
                SocketAddr::V4(_) => Ipv4Addr::LOCALHOST.into(),
                SocketAddr::V6(_) => Ipv6Addr::LOCALHOST.into(),
            };
            offset(
                SocketAddr::new(loopback, self.addr.port()),
                HTTP_PORT_OFFSET,
            )
        })
    }
}

/// `addr` with its port moved up by `by`, if the port stays valid.
fn offset(addr: SocketAddr, by: u16) -> Option<SocketAddr> {
    Some(SocketAddr::new(addr.ip(), addr.port().checked_add(by)?))
}

mod balancer;
pub use balancer::{BalancerConfig, BALANCER_MOVES_MAX, BALANCER_TRANSFERS_MAX};
mod placement;
pub use placement::{LeaderPolicy, PlacementConfig};

/// Timing knobs. One tick is `tick_ms` of wall time; Raft counts in ticks.
///
/// A field the cluster file leaves out takes its value from [`TimingConfig::default`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TimingConfig {
    /// Wall-clock length of one tick.
    pub tick_ms: u64,
    /// Ticks between leader heartbeats.
    pub heartbeat_ticks: u32,
    /// Lower bound (inclusive) of the randomized election timeout, in ticks.
    pub election_ticks_min: u32,
    /// Upper bound (exclusive) of the randomized election timeout, in ticks.
    pub election_ticks_max: u32,
    /// Leader lease reads: a shard leader that a quorum confirmed within the last
    /// election timeout (less a margin) answers a linearizable read without a heartbeat
    /// round. Only where the nodes' monotonic clocks run at the same rate and count all
    /// real time (docs/RAFT.md, "Lease reads"); off by default.
    pub lease_reads: bool,
}

impl Default for TimingConfig {
    fn default() -> Self {
        TimingConfig {
            tick_ms: 10,
            heartbeat_ticks: 5,
            election_ticks_min: 30,
            election_ticks_max: 60,
            lease_reads: false,
        }
    }
}

impl TimingConfig {
    /// Refuses every timing the node core and Raft would assert on (or overflow with),
    /// naming the fields concerned. kvserver runs with quiescence on, whose failure
    /// detector needs an election timeout longer than two heartbeat periods (a follower
    /// of a quiesced group must not time out while its leader's node keeps it alive).
    pub fn validate(&self) -> Result<(), String> {
        let values = [
            ("tick_ms", self.tick_ms),
            ("heartbeat_ticks", u64::from(self.heartbeat_ticks)),
            ("election_ticks_min", u64::from(self.election_ticks_min)),
            ("election_ticks_max", u64::from(self.election_ticks_max)),
        ];
        for (name, value) in values {
            if value == 0 || value > u64::from(TIMING_VALUE_MAX) {
                return Err(format!(
                    "timing.{name} = {value} is outside 1..={TIMING_VALUE_MAX} (TIMING_VALUE_MAX)"
                ));
            }
        }
        let (hb, min, max) = (
            self.heartbeat_ticks,
            self.election_ticks_min,
            self.election_ticks_max,
        );
        if min <= 2 * hb + 1 {
            return Err(format!(
                "timing.election_ticks_min ({min}) must exceed 2 * timing.heartbeat_ticks + 1 ({}): \
                 followers of an idle (quiesced) group would time out between heartbeats",
                2 * hb + 1
            ));
        }
        if max <= min {
            return Err(format!(
                "timing.election_ticks_max ({max}) must exceed timing.election_ticks_min ({min}): \
                 the election timeout is drawn from min..max"
            ));
        }
        Ok(())
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
    #[serde(default)]
    balancer: BalancerConfig,
    #[serde(default)]
    placement: PlacementConfig,
    #[serde(default)]
    key_file: Option<PathBuf>,
    #[serde(default)]
    key_files: Option<Vec<PathBuf>>,
    #[serde(default)]
    protection: Protection,
    #[serde(default)]
    client_key_files: Vec<PathBuf>,
    #[serde(default)]
    client_key_file: Option<PathBuf>,
    #[serde(default)]
    redis_default_client: Option<String>,
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
    /// The balancer on the metadata group's leader (`[balancer]`).
    pub balancer: BalancerConfig,
    /// Where shard leaderships go (`[placement]`).
    pub placement: PlacementConfig,
    /// Cluster key files (`key_file`, or `key_files` during a rotation): peers seal
    /// under the first and accept any. Empty if the file names none (kvserver refuses
    /// to start then; kvcli does not need them).
    pub key_files: Vec<PathBuf>,
    /// How nodes (and kvcli) protect what they send: a MAC, or encryption as well.
    pub protection: Protection,
    /// The client key files a node accepts (name, permission, key each).
    pub client_key_files: Vec<PathBuf>,
    /// The client key file kvcli uses when given no `--key-file`.
    pub client_key_file: Option<PathBuf>,
    /// The client (by the name in its key file) that a Redis-protocol connection acts as
    /// before it sends AUTH; `None`: such a connection must AUTH first.
    pub redis_default_client: Option<String>,
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
            if n.redis_addr().is_none() || n.http_addr().is_none() {
                return invalid(format!(
                    "node {}: port {} + {HTTP_PORT_OFFSET} leaves the port range; \
                     list redis_addr and http_addr explicitly",
                    n.id,
                    n.addr.port()
                ));
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
        raw.timing.validate().map_err(ConfigError::Invalid)?;
        raw.balancer.validate().map_err(ConfigError::Invalid)?;
        let key_files = match (raw.key_file, raw.key_files) {
            (Some(_), Some(_)) => {
                return invalid("name the cluster key in key_file or key_files, not both".into())
            }
            (_, Some(files)) if files.is_empty() => {
                return invalid("key_files is empty; list the key to send under first".into())
            }
            (Some(file), None) => vec![file],
            (None, Some(files)) => files,
            (None, None) => Vec::new(),
        };
        if raw.protection == Protection::Unauthenticated {
            // Unauthenticated traffic is safe only where no one else can send: a cluster
            // that lives on one host. Listing any other address makes the file invalid.
            if let Some(n) = raw.nodes.iter().find(|n| !n.addr.ip().is_loopback()) {
                return invalid(format!(
                    "protection = \"none\" is allowed only when every node address is \
                     loopback (it is for measuring what authentication costs); node {} \
                     listens on {}",
                    n.id, n.addr
                ));
            }
        }
        if raw.client_key_files.len() > CLIENT_KEYS_MAX {
            return invalid(format!(
                "{} client_key_files listed; the limit CLIENT_KEYS_MAX is {CLIENT_KEYS_MAX}",
                raw.client_key_files.len()
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
            balancer: raw.balancer,
            placement: raw.placement,
            key_files,
            protection: raw.protection,
            client_key_files: raw.client_key_files,
            client_key_file: raw.client_key_file,
            redis_default_client: raw.redis_default_client,
            nodes,
        })
    }

    /// Reads and validates a cluster file from disk. Relative key file paths are taken
    /// relative to the cluster file's directory (the file and its keys travel together);
    /// `data_dir` stays relative to the working directory.
    pub fn load(path: &std::path::Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::Invalid(format!("cannot read {}: {e}", path.display())))?;
        let mut config = Self::from_toml(&text)?;
        if let Some(dir) = path.parent() {
            config.resolve_key_paths(dir);
        }
        Ok(config)
    }

    /// Makes relative key file paths relative to `dir`.
    pub fn resolve_key_paths(&mut self, dir: &std::path::Path) {
        let resolve = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = dir.join(&*p);
            }
        };
        self.key_files.iter_mut().for_each(resolve);
        self.client_key_files.iter_mut().for_each(resolve);
        self.client_key_file.iter_mut().for_each(resolve);
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
    fn front_end_addresses_default_to_offsets_of_the_udp_port() {
        let c = ClusterConfig::local_3();
        assert_eq!(
            c.nodes[0].redis_addr(),
            Some("127.0.0.1:8101".parse().unwrap())
        );
        assert_eq!(
            c.nodes[0].http_addr(),
            Some("127.0.0.1:9101".parse().unwrap())
        );
        let listed = "cluster_id = 1\nshards = 1\n[[nodes]]\nid = 1\naddr = \"127.0.0.1:1\"\n\
                      redis_addr = \"127.0.0.1:6379\"\nhttp_addr = \"127.0.0.1:9000\"\n";
        let c = ClusterConfig::from_toml(listed).unwrap();
        assert_eq!(
            c.nodes[0].redis_addr(),
            Some("127.0.0.1:6379".parse().unwrap())
        );
        assert_eq!(
            c.nodes[0].http_addr(),
            Some("127.0.0.1:9000".parse().unwrap())
        );
        let public = "cluster_id = 1\nshards = 1\n[[nodes]]\nid = 1\naddr = \"10.1.2.3:7101\"\n";
        let c = ClusterConfig::from_toml(public).unwrap();
        assert_eq!(
            c.nodes[0].redis_addr(),
            Some("10.1.2.3:8101".parse().unwrap()),
            "RESP (authenticated) follows the node's address"
        );
        assert_eq!(
            c.nodes[0].http_addr(),
            Some("127.0.0.1:9101".parse().unwrap()),
            "the unauthenticated HTTP endpoint defaults to loopback"
        );
        let v6 = "cluster_id = 1\nshards = 1\n[[nodes]]\nid = 1\naddr = \"[2001:db8::1]:7101\"\n";
        let c = ClusterConfig::from_toml(v6).unwrap();
        assert_eq!(c.nodes[0].http_addr(), Some("[::1]:9101".parse().unwrap()));
        let second_loopback =
            "cluster_id = 1\nshards = 1\n[[nodes]]\nid = 1\naddr = \"127.0.0.2:7101\"\n";
        let c = ClusterConfig::from_toml(second_loopback).unwrap();
        assert_eq!(
            c.nodes[0].http_addr(),
            Some("127.0.0.2:9101".parse().unwrap()),
            "nodes on 127.0.0.x sharing a port must not collide on 127.0.0.1"
        );
        let high = "cluster_id = 1\nshards = 1\n[[nodes]]\nid = 1\naddr = \"127.0.0.1:65000\"\n";
        let e = ClusterConfig::from_toml(high).unwrap_err().to_string();
        assert!(e.contains("redis_addr and http_addr"), "{e}");
    }

    #[test]
    fn embedded_default_is_three_nodes_eight_shards() {
        let c = ClusterConfig::local_3();
        assert_eq!(c.shards, 8);
        assert_eq!(c.node_ids(), vec![NodeId(1), NodeId(2), NodeId(3)]);
        assert_eq!(
            c.placement.leaders,
            LeaderPolicy::Pack,
            "one machine: packed leaders"
        );
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

    fn with_timing(timing: &str) -> Result<ClusterConfig, ConfigError> {
        let t = format!(
            "cluster_id = 1\nshards = 2\n[timing]\n{timing}\n[[nodes]]\nid = 1\naddr = \"127.0.0.1:1\"\n"
        );
        ClusterConfig::from_toml(&t)
    }

    /// Regression: heartbeat 5 and election minimum 10 passed validation, then the node
    /// core's quiescence assertion (`election_ticks_min > 2 * heartbeat_ticks + 1`) fired.
    #[test]
    fn rejects_election_minimum_within_two_heartbeats() {
        let e =
            with_timing("heartbeat_ticks = 5\nelection_ticks_min = 10\nelection_ticks_max = 20")
                .unwrap_err()
                .to_string();
        assert!(
            e.contains("timing.election_ticks_min (10)") && e.contains("timing.heartbeat_ticks"),
            "{e}"
        );
        assert!(with_timing(
            "heartbeat_ticks = 5\nelection_ticks_min = 12\nelection_ticks_max = 20"
        )
        .is_ok());
    }

    #[test]
    fn rejects_an_empty_election_range() {
        let e = with_timing("election_ticks_min = 30\nelection_ticks_max = 30")
            .unwrap_err()
            .to_string();
        assert!(e.contains("timing.election_ticks_max (30)"), "{e}");
    }

    #[test]
    fn timing_fields_left_out_take_their_defaults() {
        let t = with_timing("tick_ms = 5").unwrap().timing;
        assert_eq!(
            (
                t.tick_ms,
                t.heartbeat_ticks,
                t.election_ticks_min,
                t.election_ticks_max
            ),
            (5, 5, 30, 60)
        );
        assert_eq!(with_timing("").unwrap().timing, TimingConfig::default());
    }

    #[test]
    fn rejects_zero_and_huge_timing_values() {
        for (field, value) in [
            ("tick_ms", 0u64),
            ("heartbeat_ticks", 0),
            ("tick_ms", u64::from(TIMING_VALUE_MAX) + 1),
            ("election_ticks_max", u64::from(u32::MAX)),
        ] {
            let e = with_timing(&format!("{field} = {value}"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(&format!("timing.{field} = {value}")), "{e}");
        }
    }

    #[test]
    fn key_files_resolve_beside_the_cluster_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "cluster_id = 1\nshards = 2\nkey_files = [\"new.key\", \"/abs/old.key\"]\n\
             protection = \"encrypt\"\nclient_key_files = [\"keys/a.key\"]\n\
             [[nodes]]\nid = 1\naddr = \"127.0.0.1:1\"\n",
        )
        .unwrap();
        let c = ClusterConfig::load(&path).unwrap();
        assert_eq!(
            c.key_files,
            vec![dir.path().join("new.key"), PathBuf::from("/abs/old.key")]
        );
        assert_eq!(c.client_key_files, vec![dir.path().join("keys/a.key")]);
        assert_eq!(c.protection, Protection::Encrypt);
        assert_eq!(c.client_key_file, None);
        let both = "cluster_id = 1\nshards = 2\nkey_file = \"a\"\nkey_files = [\"b\"]\n\
                    [[nodes]]\nid = 1\naddr = \"127.0.0.1:1\"\n";
        let e = ClusterConfig::from_toml(both).unwrap_err().to_string();
        assert!(e.contains("not both"), "{e}");
    }

    #[test]
    fn protection_none_is_accepted_only_when_every_node_is_loopback() {
        let file = |addrs: &[&str]| {
            let mut t = "cluster_id = 1\nshards = 2\nprotection = \"none\"\n".to_string();
            for (i, a) in addrs.iter().enumerate() {
                t += &format!("[[nodes]]\nid = {}\naddr = \"{a}\"\n", i + 1);
            }
            ClusterConfig::from_toml(&t)
        };
        let ok = file(&["127.0.0.1:7101", "127.0.0.2:7102", "[::1]:7103"]).unwrap();
        assert_eq!(ok.protection, Protection::Unauthenticated);
        for addrs in [
            &["127.0.0.1:7101", "10.0.0.2:7102"][..],
            &["0.0.0.0:7101"][..],
            &["[::]:7101"][..],
            &["192.168.1.5:7101"][..],
        ] {
            let e = file(addrs).unwrap_err().to_string();
            assert!(
                e.contains("protection = \"none\"") && e.contains("loopback"),
                "{e}"
            );
        }
    }

    #[test]
    fn the_balancer_section_is_optional_and_checked() {
        assert_eq!(ClusterConfig::local_3().balancer, BalancerConfig::default());
        let file = |section: &str| {
            format!("cluster_id = 1\nshards = 2\n{section}\n[[nodes]]\nid = 1\naddr = \"127.0.0.1:1\"\n")
        };
        let c =
            ClusterConfig::from_toml(&file("[balancer]\nenabled = false\ndown_after_ms = 3000"))
                .unwrap();
        assert!(!c.balancer.enabled);
        assert_eq!((c.balancer.down_after_ms, c.balancer.moves_max), (3000, 4));
        let e = ClusterConfig::from_toml(&file("[balancer]\nmoves_max = 100")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "cluster file: balancer.moves_max = 100 is outside 1..=64"
        );
        let e = ClusterConfig::from_toml(&file("[balancer]\ndown_after = 3")).unwrap_err();
        assert!(e.to_string().contains("unknown field `down_after`"), "{e}");
    }

    #[test]
    fn the_placement_section_is_optional_and_its_policy_checked() {
        let file = |section: &str| {
            format!("cluster_id = 1\nshards = 2\n{section}\n[[nodes]]\nid = 1\naddr = \"127.0.0.1:1\"\n")
        };
        let c = ClusterConfig::from_toml(&file("")).unwrap();
        assert_eq!(c.placement.leaders, LeaderPolicy::Spread);
        let c = ClusterConfig::from_toml(&file("[placement]\nleaders = \"pack\"")).unwrap();
        assert_eq!(c.placement.leaders, LeaderPolicy::Pack);
        let e = ClusterConfig::from_toml(&file("[placement]\nleaders = \"one\""))
            .unwrap_err()
            .to_string();
        assert!(e.contains("placement.leaders = \"one\""), "{e}");
        let e = ClusterConfig::from_toml(&file("[placement]\nleader = \"pack\""))
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `leader`"), "{e}");
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
