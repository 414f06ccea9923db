//! The node's side of authentication: the keys it holds (loaded once from the files the
//! cluster file names), its incarnation (persisted in the data directory so it only ever
//! grows), and the replay windows of the clients it has heard from.

use kv_shared::auth::{
    self, client_key_id, ClientKey, Key, KeyFileError, Permission, Protection, ReplayError,
    ReplayWindow, Sealer,
};
use kv_shared::config::ClusterConfig;
use kv_shared::limits::CLIENT_REPLAY_WINDOWS_MAX;
use kv_shared::NodeId;
use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// The file in the data directory holding the node's latest incarnation.
pub const INCARNATION_FILE: &str = "incarnation";

/// A client key as the node uses it.
#[derive(Debug)]
pub struct ClientEntry {
    /// The authenticated name, to which its sessions are bound.
    pub name: String,
    /// What it may do.
    pub permission: Permission,
    /// Opens its requests.
    pub requests: Sealer,
    /// Seals the replies to it.
    pub replies: Sealer,
}

/// Every key a node holds.
#[derive(Debug)]
pub struct NodeKeys {
    /// Cluster keys: seal under the first, accept any (the old one during a rotation).
    pub cluster: Vec<Key>,
    /// How this node protects what it sends.
    pub protection: Protection,
    /// The clients it accepts, indexed by [`NodeKeys::client_index`].
    pub clients: Vec<ClientEntry>,
    by_id: HashMap<u64, usize>,
}

/// Why the keys could not be loaded. Each message names the file or the setting.
#[derive(Debug, thiserror::Error)]
pub enum KeySetupError {
    /// The cluster file names no cluster key.
    #[error("the cluster file names no key_file: peers must authenticate (create one with `kvserver keygen --config <cluster file>`)")]
    NoClusterKey,
    /// A key file is missing, unreadable or malformed.
    #[error("{0}")]
    File(#[from] KeyFileError),
    /// Two client key files hold the same name (or names with one id).
    #[error("client key files {} and {} both name client {name:?}", first.display(), second.display())]
    DuplicateClient {
        /// The name.
        name: String,
        /// The first file naming it.
        first: PathBuf,
        /// The second.
        second: PathBuf,
    },
}

impl NodeKeys {
    /// Reads every key file the cluster file names.
    pub fn load(cluster: &ClusterConfig) -> Result<NodeKeys, KeySetupError> {
        if cluster.key_files.is_empty() {
            return Err(KeySetupError::NoClusterKey);
        }
        let peer = cluster
            .key_files
            .iter()
            .map(|p| auth::read_cluster_key(p))
            .collect::<Result<Vec<_>, _>>()?;
        let mut clients = Vec::new();
        for path in &cluster.client_key_files {
            clients.push((path.clone(), auth::read_client_key(path)?));
        }
        if cluster.protection == Protection::Unauthenticated {
            tracing::warn!(
                "protection = \"none\": this node sends and accepts datagrams that nothing \
                 authenticates; the cluster file allows it only on loopback addresses, for \
                 measuring what authentication costs. Never run a cluster you rely on this way"
            );
        }
        Self::from_keys(peer, cluster.protection, clients)
    }

    /// Builds the key set from keys already read (tests build them in memory).
    pub fn from_keys(
        peer: Vec<Key>,
        protection: Protection,
        clients: Vec<(PathBuf, ClientKey)>,
    ) -> Result<NodeKeys, KeySetupError> {
        if peer.is_empty() {
            return Err(KeySetupError::NoClusterKey);
        }
        let mut by_id = HashMap::new();
        let mut files: Vec<PathBuf> = Vec::new();
        let mut entries = Vec::new();
        for (path, c) in clients {
            if let Some(&i) = by_id.get(&c.id()) {
                return Err(KeySetupError::DuplicateClient {
                    name: c.name,
                    first: files.swap_remove(i),
                    second: path,
                });
            }
            by_id.insert(c.id(), entries.len());
            files.push(path);
            entries.push(ClientEntry {
                requests: Sealer::client_requests(&c.key).receiving_as(protection),
                replies: Sealer::client_replies(&c.key),
                name: c.name,
                permission: c.permission,
            });
        }
        Ok(NodeKeys {
            cluster: peer,
            protection,
            clients: entries,
            by_id,
        })
    }

    /// Seals what `me` sends to `peer` (under the first cluster key).
    pub fn peer_sender(&self, me: NodeId, peer: NodeId) -> Sealer {
        Sealer::peer(&self.cluster[0], me.0, peer.0)
    }

    /// Opens what `peer` sends to `me`, under each cluster key in turn.
    pub fn peer_receivers(&self, me: NodeId, peer: NodeId) -> Vec<Sealer> {
        self.cluster
            .iter()
            .map(|k| Sealer::peer(k, peer.0, me.0).receiving_as(self.protection))
            .collect()
    }

    /// The index of the client whose key id a request datagram carries.
    pub fn client_index(&self, key_id: u64) -> Option<usize> {
        self.by_id.get(&key_id).copied()
    }

    /// The client at `index` (from [`NodeKeys::client_index`]).
    pub fn client(&self, index: usize) -> &ClientEntry {
        &self.clients[index]
    }

    /// The key id of the client at `index` (tests and logs).
    pub fn client_key_id(&self, index: usize) -> u64 {
        client_key_id(&self.clients[index].name)
    }
}

/// This start's incarnation: one more than the last one recorded in `data_dir`, and at
/// least the wall clock in milliseconds since 1970, written (and fsynced) before the node
/// sends anything. The stored value makes it grow even if the clock steps back; the clock
/// makes it grow even if the data directory was lost (peers remember the incarnations they
/// saw, and refuse traffic from older ones as replays).
pub fn next_incarnation(data_dir: &Path, now_unix_ms: u64) -> std::io::Result<u64> {
    let path = data_dir.join(INCARNATION_FILE);
    let stored = match std::fs::read_to_string(&path) {
        Ok(text) => Some(text.trim().parse::<u64>().map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{} does not hold a number: {e}", path.display()),
            )
        })?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    let next = stored.map_or(0, |s| s.saturating_add(1)).max(now_unix_ms);
    let tmp = data_dir.join(format!("{INCARNATION_FILE}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    writeln!(f, "{next}")?;
    f.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    std::fs::File::open(data_dir)?.sync_all()?;
    Ok(next)
}

/// The replay windows of the client incarnations heard from, bounded: past
/// [`CLIENT_REPLAY_WINDOWS_MAX`] the least recently heard is forgotten. Only requests
/// whose tag verified create or touch an entry, so a flood of forgeries cannot evict.
#[derive(Debug, Default)]
pub struct ClientWindows {
    windows: HashMap<(u64, u64), (ReplayWindow, u64)>,
    clock: u64,
}

impl ClientWindows {
    /// Accepts a verified request's stamp of client `key_id`, or says why it is a replay.
    pub fn accept(&mut self, key_id: u64, stamp: auth::Stamp) -> Result<(), ReplayError> {
        self.clock += 1;
        let slot = (key_id, stamp.incarnation);
        if !self.windows.contains_key(&slot) && self.windows.len() >= CLIENT_REPLAY_WINDOWS_MAX {
            // A linear scan, paid only when a new incarnation arrives at a full table.
            if let Some(oldest) = self
                .windows
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| *k)
            {
                self.windows.remove(&oldest);
            }
        }
        let (window, used) = self
            .windows
            .entry(slot)
            .or_insert_with(|| (ReplayWindow::default(), 0));
        *used = self.clock;
        window.accept(stamp.incarnation, stamp.counter)
    }

    /// Incarnations remembered.
    pub fn len(&self) -> usize {
        self.windows.len()
    }

    /// True when none is remembered.
    pub fn is_empty(&self) -> bool {
        self.windows.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kv_shared::auth::{generate_key, Stamp};

    #[test]
    fn incarnations_grow_across_restarts_even_if_the_clock_steps_back() {
        let dir = tempfile::tempdir().unwrap();
        let first = next_incarnation(dir.path(), 1_000).unwrap();
        assert_eq!(first, 1_000);
        assert_eq!(next_incarnation(dir.path(), 500).unwrap(), 1_001);
        assert_eq!(next_incarnation(dir.path(), 5_000).unwrap(), 5_000);
        std::fs::write(dir.path().join(INCARNATION_FILE), "garbage").unwrap();
        let e = next_incarnation(dir.path(), 1).unwrap_err().to_string();
        assert!(e.contains(INCARNATION_FILE), "{e}");
    }

    #[test]
    fn client_windows_refuse_replays_per_incarnation() {
        let mut w = ClientWindows::default();
        let s = |incarnation, counter| Stamp {
            incarnation,
            counter,
            echo: 0,
        };
        assert_eq!(w.accept(1, s(10, 0)), Ok(()));
        assert_eq!(w.accept(1, s(10, 0)), Err(ReplayError::Duplicate(0)));
        // Another process under the same key has its own window.
        assert_eq!(w.accept(1, s(11, 0)), Ok(()));
        assert_eq!(w.accept(2, s(10, 0)), Ok(()));
        assert_eq!(w.len(), 3);
    }

    #[test]
    fn client_windows_are_bounded_and_forget_the_least_recently_heard() {
        let mut w = ClientWindows::default();
        let s = |incarnation| Stamp {
            incarnation,
            counter: 0,
            echo: 0,
        };
        for i in 0..CLIENT_REPLAY_WINDOWS_MAX as u64 {
            assert_eq!(w.accept(1, s(i)), Ok(()));
        }
        // Incarnation 0 is heard again (refused as a replay, but recently heard).
        assert_eq!(w.accept(1, s(0)), Err(ReplayError::Duplicate(0)));
        assert_eq!(w.accept(1, s(u64::MAX)), Ok(()));
        assert_eq!(w.len(), CLIENT_REPLAY_WINDOWS_MAX);
        // Incarnation 1 was the least recently heard: forgotten, so its replay is new again.
        assert_eq!(w.accept(1, s(1)), Ok(()));
        assert_eq!(w.accept(1, s(0)), Err(ReplayError::Duplicate(0)));
    }

    #[test]
    fn duplicate_client_names_are_refused() {
        let c = ClientKey {
            name: "a".into(),
            permission: Permission::ReadOnly,
            key: generate_key().unwrap(),
        };
        let peer = vec![generate_key().unwrap()];
        let e = NodeKeys::from_keys(
            peer,
            Protection::Mac,
            vec![("x.key".into(), c.clone()), ("y.key".into(), c)],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("x.key") && e.contains("y.key"), "{e}");
    }
}
