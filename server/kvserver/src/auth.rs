//! The node's side of authentication: the keys it holds (loaded once from the files the
//! cluster file names), its incarnation (persisted in the data directory so it only ever
//! grows), and the replay windows of the clients it has heard from.

use kv_shared::auth::{
    self, client_key_id, ClientKey, Key, KeyFileError, Permission, Protection, ReplayError,
    ReplayWindow, Sealer,
};
use kv_shared::config::ClusterConfig;
use kv_shared::hashing::SeededState;
use kv_shared::limits::{CLIENT_REPLAY_WINDOWS_MAX, SESSION_BINDINGS_MAX};
use kv_shared::{ClientId, NodeId};
use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// What a client under `permission` asked for and may not do with `op`, if anything: a
/// write under a read-only key, an admin operation under a key that is not admin. Both
/// front ends (UDP and RESP) refuse by it, so that they agree.
pub fn denied(permission: Permission, op: &kv_shared::proto::Op) -> Option<&'static str> {
    let allowed = if op.is_admin() {
        permission.may_administer()
    } else {
        !op.is_write() || permission.may_write()
    };
    (!allowed).then(|| op.permission_name())
}

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

/// The replay windows of the client incarnations heard from, each with the ticket this
/// node issued to it, bounded: past [`CLIENT_REPLAY_WINDOWS_MAX`] the least recently
/// heard is forgotten. Only requests whose tag verified create or touch an entry, so a
/// flood of forgeries cannot evict.
///
/// A request is executed only if it echoes the ticket of its client incarnation's entry.
/// The first request of an incarnation (echo 0), or one that echoes anything else,
/// creates the entry if needed and is answered with a hello carrying the ticket instead;
/// the client resends under it. So a request recorded before its client had this node's
/// ticket (on its way to another node, or a first contact), before this node restarted
/// (the entries are in memory), or before this node forgot its client incarnation (a new
/// entry gets a new ticket) is never executed here.
#[derive(Debug)]
pub struct ClientWindows {
    windows: HashMap<(u64, u64), ClientEntryState>,
    clock: u64,
    /// The next ticket issued. Tickets need only never repeat for one client incarnation
    /// at one node: a recorded datagram carries the ticket it was sealed with under its
    /// tag, so knowing the tickets to come gains an attacker nothing. Counting from a
    /// random start (one per node start) keeps them apart across restarts and nodes.
    next_ticket: u64,
}

#[derive(Debug)]
struct ClientEntryState {
    window: ReplayWindow,
    ticket: u64,
    last_heard: u64,
}

/// Why a verified client request is not executed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ClientRefusal {
    /// Seen before, or older than the window.
    #[error("{0}")]
    Replay(ReplayError),
    /// Echoes no ticket: the client incarnation's first contact with this node (or a
    /// replay of one). Answered with a hello carrying `ticket`.
    #[error("echoes no ticket (first contact): answered with ticket {ticket:#x}")]
    NoTicket {
        /// The ticket the hello carries.
        ticket: u64,
    },
    /// Echoes a ticket this node does not hold for the client incarnation: issued before
    /// this node restarted or forgot the incarnation, or by another node. Answered with
    /// a hello carrying `ticket`.
    #[error("echoes ticket {echo:#x}, not the one this node holds ({ticket:#x})")]
    StaleTicket {
        /// The ticket the request echoes.
        echo: u64,
        /// The ticket the hello carries.
        ticket: u64,
    },
}

impl ClientRefusal {
    /// The ticket to tell the client in a hello, if the refusal calls for one.
    pub fn ticket(&self) -> Option<u64> {
        match *self {
            ClientRefusal::Replay(_) => None,
            ClientRefusal::NoTicket { ticket } | ClientRefusal::StaleTicket { ticket, .. } => {
                Some(ticket)
            }
        }
    }
}

impl ClientWindows {
    /// An empty table whose tickets count from `first_ticket` (random in kvserver).
    pub fn new(first_ticket: u64) -> ClientWindows {
        ClientWindows {
            windows: HashMap::new(),
            clock: 0,
            next_ticket: first_ticket,
        }
    }

    /// Admits a verified request's stamp of client `key_id` for execution, or says why
    /// not (see the type's documentation).
    pub fn admit(&mut self, key_id: u64, stamp: auth::Stamp) -> Result<(), ClientRefusal> {
        self.clock += 1;
        let slot = (key_id, stamp.incarnation);
        if !self.windows.contains_key(&slot) && self.windows.len() >= CLIENT_REPLAY_WINDOWS_MAX {
            // A linear scan, paid only when a new incarnation arrives at a full table.
            if let Some(oldest) = self
                .windows
                .iter()
                .min_by_key(|(_, e)| e.last_heard)
                .map(|(k, _)| *k)
            {
                self.windows.remove(&oldest);
            }
        }
        let entry = match self.windows.entry(slot) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                // 0 means "no ticket" on the wire: never issue it.
                let ticket = self.next_ticket.max(1);
                self.next_ticket = ticket.wrapping_add(1);
                e.insert(ClientEntryState {
                    window: ReplayWindow::default(),
                    ticket,
                    last_heard: 0,
                })
            }
        };
        entry.last_heard = self.clock;
        entry
            .window
            .accept(stamp.incarnation, stamp.counter)
            .map_err(ClientRefusal::Replay)?;
        match stamp.echo {
            echo if echo == entry.ticket => Ok(()),
            0 => Err(ClientRefusal::NoTicket {
                ticket: entry.ticket,
            }),
            echo => Err(ClientRefusal::StaleTicket {
                echo,
                ticket: entry.ticket,
            }),
        }
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

/// The session ids of the sessions clients declared, as bound to their client's name
/// ([`auth::session_id`]), remembered: computing one hashes the name and the id (a BLAKE3
/// key derivation, a few percent of a node's instructions when done for every request),
/// while a session sends many requests. Bounded by [`SESSION_BINDINGS_MAX`]: emptied when
/// full, so a client that declares ever new ids costs a hash per request, as without it.
#[derive(Debug, Default)]
pub struct SessionBindings {
    /// Keyed by ids clients declare: seeded.
    bound: HashMap<(usize, ClientId), ClientId, SeededState>,
}

impl SessionBindings {
    /// The session id the node uses for `declared` from the client at `index` of `keys`
    /// (the same as [`auth::session_id`] of its name).
    pub fn bind(&mut self, keys: &NodeKeys, index: usize, declared: ClientId) -> ClientId {
        if let Some(&bound) = self.bound.get(&(index, declared)) {
            return bound;
        }
        if self.bound.len() >= SESSION_BINDINGS_MAX {
            self.bound.clear();
        }
        let bound = auth::session_id(&keys.client(index).name, declared);
        self.bound.insert((index, declared), bound);
        bound
    }

    /// Bindings remembered.
    pub fn len(&self) -> usize {
        self.bound.len()
    }

    /// True when none is remembered.
    pub fn is_empty(&self) -> bool {
        self.bound.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kv_shared::auth::{generate_key, Stamp};

    #[test]
    fn admin_operations_need_the_admin_permission_and_writes_a_writer() {
        use kv_shared::proto::Op;
        use kv_shared::registry::NodeState;
        let key = bytes::Bytes::from_static(b"k");
        let put = Op::Put {
            key: key.clone(),
            value: key.clone(),
        };
        let get = Op::Get {
            key: key.clone(),
            stale: false,
        };
        let admin_ops = [
            Op::MoveReplica {
                shard: kv_shared::ShardId(0),
                from: NodeId(1),
                to: NodeId(2),
            },
            Op::ShardLeader {
                shard: kv_shared::ShardId(0),
                node: NodeId(1),
            },
            Op::RegisterNode {
                node: NodeId(4),
                addr: "127.0.0.1:1".parse().unwrap(),
                identity: 1,
            },
            Op::SetNodeState {
                node: NodeId(4),
                state: NodeState::Draining,
            },
            Op::PauseBalancer { paused: true },
        ];
        for op in &admin_ops {
            assert!(op.is_admin(), "{op:?}");
            assert_eq!(denied(Permission::Admin, op), None, "{op:?}");
            let refused = denied(Permission::ReadWrite, op).expect("refused to a writer");
            assert!(refused.ends_with("(admin only)"), "{refused}");
            assert!(denied(Permission::ReadOnly, op).is_some(), "{op:?}");
        }
        assert_eq!(denied(Permission::ReadOnly, &put), Some("write"));
        for p in [Permission::ReadWrite, Permission::Admin] {
            assert_eq!(denied(p, &put), None);
        }
        for p in [
            Permission::ReadOnly,
            Permission::ReadWrite,
            Permission::Admin,
        ] {
            assert_eq!(denied(p, &get), None);
            assert_eq!(denied(p, &Op::Status), None);
        }
        let e = kv_shared::proto::ClientError::PermissionDenied {
            client: "app".into(),
            permission: Permission::ReadWrite.name().into(),
            operation: denied(Permission::ReadWrite, &admin_ops[0]).unwrap().into(),
        };
        assert_eq!(
            e.to_string(),
            "permission denied: client app is read-write and cannot move a replica (admin only)"
        );
    }

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

    fn stamp(incarnation: u64, counter: u64, echo: u64) -> Stamp {
        Stamp {
            incarnation,
            counter,
            echo,
        }
    }

    /// A client's handshake with one node: the ticket from the hello, then requests
    /// that echo it.
    fn handshake(w: &mut ClientWindows, key_id: u64, incarnation: u64) -> u64 {
        match w.admit(key_id, stamp(incarnation, 0, 0)) {
            Err(ClientRefusal::NoTicket { ticket }) => ticket,
            other => panic!("a first contact must be answered with a ticket: {other:?}"),
        }
    }

    #[test]
    fn a_first_contact_is_never_executed_only_requests_echoing_its_ticket_are() {
        let mut w = ClientWindows::new(100);
        let ticket = handshake(&mut w, 1, 10);
        assert_ne!(ticket, 0);
        assert_eq!(w.admit(1, stamp(10, 1, ticket)), Ok(()));
        assert_eq!(
            w.admit(1, stamp(10, 1, ticket)),
            Err(ClientRefusal::Replay(ReplayError::Duplicate(1)))
        );
        // A retry after a lost hello echoes 0 again: the same ticket, still not executed.
        assert_eq!(
            w.admit(1, stamp(10, 2, 0)),
            Err(ClientRefusal::NoTicket { ticket })
        );
        // Another process under the same key, or another key, has its own entry.
        let other = handshake(&mut w, 1, 11);
        assert_ne!(other, ticket);
        assert_eq!(
            w.admit(1, stamp(11, 1, ticket)).unwrap_err().ticket(),
            Some(other)
        );
        assert_eq!(w.admit(1, stamp(11, 2, other)), Ok(()));
        handshake(&mut w, 2, 10);
        assert_eq!(w.len(), 3);
    }

    /// A client's requests recorded on their way to node A, replayed at node B: the first
    /// contact (echo 0) and the requests under A's ticket are refused there alike.
    #[test]
    fn requests_recorded_on_their_way_to_another_node_are_not_executed() {
        let mut a = ClientWindows::new(100);
        let mut b = ClientWindows::new(900);
        let first = stamp(10, 0, 0);
        let ticket_a = match a.admit(1, first) {
            Err(ClientRefusal::NoTicket { ticket }) => ticket,
            other => panic!("{other:?}"),
        };
        let under_a = stamp(10, 1, ticket_a);
        assert_eq!(a.admit(1, under_a), Ok(()));
        let ticket_b = match b.admit(1, first) {
            Err(ClientRefusal::NoTicket { ticket }) => ticket,
            other => panic!("the recorded first contact at B: {other:?}"),
        };
        assert_eq!(
            b.admit(1, under_a),
            Err(ClientRefusal::StaleTicket {
                echo: ticket_a,
                ticket: ticket_b
            })
        );
    }

    #[test]
    fn tickets_of_a_previous_start_are_stale() {
        let mut before = ClientWindows::new(100);
        let ticket = handshake(&mut before, 1, 10);
        assert_eq!(before.admit(1, stamp(10, 1, ticket)), Ok(()));
        // The restarted node knows nothing of the client: the recorded request (and the
        // live client's next one) gets a hello with a new ticket.
        let mut after = ClientWindows::new(7_000);
        let new = after.admit(1, stamp(10, 1, ticket)).unwrap_err();
        assert!(matches!(new, ClientRefusal::StaleTicket { .. }), "{new:?}");
        assert_ne!(new.ticket(), Some(ticket));
        assert_eq!(after.admit(1, stamp(10, 2, new.ticket().unwrap())), Ok(()));
    }

    #[test]
    fn a_forgotten_client_incarnation_gets_a_new_ticket_so_its_recordings_stay_refused() {
        let mut w = ClientWindows::new(1);
        let ticket = handshake(&mut w, 1, 0);
        let recorded: Vec<Stamp> = (1..=5).map(|c| stamp(0, c, ticket)).collect();
        assert_eq!(w.admit(1, recorded[0]), Ok(()));
        // Every other incarnation is heard after it: incarnation 0 is forgotten.
        for i in 1..=CLIENT_REPLAY_WINDOWS_MAX as u64 {
            handshake(&mut w, 1, i);
        }
        assert_eq!(w.len(), CLIENT_REPLAY_WINDOWS_MAX);
        // Its recordings, replayed (the counter window is new, so they pass it), are
        // refused by the ticket, the one replayed first included.
        let refused = w.admit(1, recorded[0]).unwrap_err();
        let fresh = refused.ticket().expect("answered with a hello");
        assert_ne!(fresh, ticket);
        for s in &recorded[1..] {
            assert_eq!(
                w.admit(1, *s),
                Err(ClientRefusal::StaleTicket {
                    echo: ticket,
                    ticket: fresh
                })
            );
        }
        // The client itself, still running, resends under the new ticket.
        assert_eq!(w.admit(1, stamp(0, 6, fresh)), Ok(()));
    }

    #[test]
    fn client_windows_are_bounded_and_forget_the_least_recently_heard() {
        let mut w = ClientWindows::new(1);
        let tickets: Vec<u64> = (0..CLIENT_REPLAY_WINDOWS_MAX as u64)
            .map(|i| handshake(&mut w, 1, i))
            .collect();
        // Incarnation 0 is heard again (a replay, refused, but recently heard).
        assert!(w.admit(1, stamp(0, 0, 0)).is_err());
        handshake(&mut w, 1, u64::MAX);
        assert_eq!(w.len(), CLIENT_REPLAY_WINDOWS_MAX);
        // Incarnation 1 was the least recently heard: forgotten; 0 was not.
        assert!(matches!(
            w.admit(1, stamp(1, 1, tickets[1])),
            Err(ClientRefusal::StaleTicket { .. })
        ));
        assert_eq!(w.admit(1, stamp(0, 1, tickets[0])), Ok(()));
    }

    fn two_clients() -> NodeKeys {
        let client = |name: &str| {
            let key = ClientKey {
                name: name.into(),
                permission: Permission::ReadWrite,
                key: generate_key().unwrap(),
            };
            (PathBuf::from(format!("{name}.key")), key)
        };
        let clients = vec![client("alice"), client("bob")];
        NodeKeys::from_keys(vec![generate_key().unwrap()], Protection::Mac, clients).unwrap()
    }

    /// A remembered binding is the binding: the same id as computed afresh, per name, so
    /// one client declaring another's id still lands in a session of its own.
    #[test]
    fn remembered_session_bindings_equal_the_computed_ones_per_client() {
        let keys = two_clients();
        let mut bindings = SessionBindings::default();
        let declared = ClientId(42);
        for _ in 0..2 {
            assert_eq!(
                bindings.bind(&keys, 0, declared),
                auth::session_id("alice", declared)
            );
            assert_eq!(
                bindings.bind(&keys, 1, declared),
                auth::session_id("bob", declared)
            );
        }
        assert_ne!(
            bindings.bind(&keys, 0, declared),
            bindings.bind(&keys, 1, declared)
        );
        assert_eq!(bindings.len(), 2);
    }

    #[test]
    fn session_bindings_are_bounded() {
        let keys = two_clients();
        let mut bindings = SessionBindings::default();
        for id in 0..SESSION_BINDINGS_MAX as u64 + 10 {
            let bound = bindings.bind(&keys, (id % 2) as usize, ClientId(id));
            assert!(bindings.len() <= SESSION_BINDINGS_MAX);
            assert_eq!(bound, bindings.bind(&keys, (id % 2) as usize, ClientId(id)));
        }
        // Emptied once when full, then refilled by the ids after.
        assert_eq!(bindings.len(), 10);
        assert_eq!(
            bindings.bind(&keys, 1, ClientId(1)),
            auth::session_id("bob", ClientId(1))
        );
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
