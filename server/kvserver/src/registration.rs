//! A node's place in the node registry: the identity of its data directory, the check a
//! node with a new data directory passes before it takes part in Raft, its registration
//! through the metadata group, and the registry it then keeps hearing for its core (its
//! status polls also feed the balancer, `crate::balancer`). A node registers `joining`
//! and marks itself `active` once every node that answers its poll lists it: before
//! that, some node would refuse its datagrams, so it must not receive replicas yet.
//!
//! A brand-new cluster and a known id with a wiped data directory look the same from the
//! directory (no identity yet); the cluster tells them apart. A node with a new data
//! directory asks every other node of the cluster file for the registry it knows, and
//! takes part only once all of them answered and none lists its id: in a brand-new
//! cluster nobody knows anyone yet (or only the nodes that registered first), while a
//! wiped node's id is in the registry every metadata replica holds, under the identity
//! of the directory it lost. A node that voted before must not vote again with an empty
//! log, so it waits for every node rather than a majority.

use crate::balancer::StatusRound;
use kv_shared::proto::{ClientError, NodeStatus, Op, ShardRoute};
use kv_shared::registry::{NodeState, RegisterRefusal, Registry};
use kv_shared::NodeId;
use kvcli::{Client, ClientOptions, Error};
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedSender;
use tokio::sync::watch;

/// The file in the data directory that holds its identity (16 hex digits). Not the
/// incarnation file: that one changes at every start (replay windows); this one is made
/// with the directory and never changes.
pub const DATA_DIR_IDENTITY_FILE: &str = "data-dir-identity";

/// How long one round of status requests waits for answers.
const STATUS_WAIT: Duration = Duration::from_secs(1);
/// Pause between rounds of the first-start check, and between registration attempts.
const RETRY_PAUSE: Duration = Duration::from_millis(500);
/// How long one registration attempt waits for the metadata group.
const REGISTER_WAIT: Duration = Duration::from_secs(10);
/// How often a registered node asks the others for the registry they know (a node that
/// holds no metadata replica learns it only this way).
const REGISTRY_POLL: Duration = Duration::from_secs(2);

/// The identity of a data directory, and whether it was made by this start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataDirIdentity {
    /// The random 64-bit identity.
    pub identity: u64,
    /// Made now: the directory held no identity and no data.
    pub new: bool,
}

/// Reads the data directory's identity, or makes one (written and fsynced before the
/// node sends anything) when the directory has none. `holds_data`: the storage recovered
/// records or snapshots, so the directory is not new even without an identity (made by
/// an older kvserver).
pub fn data_dir_identity(dir: &Path, holds_data: bool) -> std::io::Result<DataDirIdentity> {
    let path = dir.join(DATA_DIR_IDENTITY_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let identity = u64::from_str_radix(text.trim(), 16).map_err(|e| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{} does not hold 16 hex digits: {e}", path.display()),
                )
            })?;
            return Ok(DataDirIdentity {
                identity,
                new: false,
            });
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let identity = kv_shared::auth::random_u64()?;
    let tmp = dir.join(format!("{DATA_DIR_IDENTITY_FILE}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    writeln!(f, "{identity:016x}")?;
    f.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(DataDirIdentity {
        identity,
        new: !holds_data,
    })
}

/// What the registration task tells the event loop.
#[derive(Debug)]
pub enum RegistrationEvent {
    /// A registry another node answered with (for the core's cache).
    Heard(Registry),
    /// The metadata group's route another node answered with (for the core's cache: a
    /// node holding no metadata replica routes admin operations by it once the group
    /// moved off the bootstrap nodes).
    HeardMetadataRoute(ShardRoute),
    /// The first-start check passed: this node may take part in Raft.
    Cleared,
    /// The metadata group registered this node (or already had it).
    Registered,
    /// The registry refuses this node under this data directory: it must stop.
    Refused(RegisterRefusal),
}

/// Who this node is, for its registration.
#[derive(Clone, Debug)]
pub struct Registration {
    /// This node.
    pub node: NodeId,
    /// Where peers and clients reach it.
    pub addr: SocketAddr,
    /// Its data directory's identity.
    pub identity: DataDirIdentity,
    /// The other nodes a new data directory must hear from first.
    pub others: Vec<NodeId>,
    /// A new data directory must also hear a registry first (a node joining a running
    /// cluster: the registry exists, and is what knows whether its id was used).
    pub needs_registry: bool,
}

/// Runs the registration (see the module docs) until the node stops; events go to
/// `events`, and each round of status replies heard once registered to `rounds`.
/// Nothing here decides anything the metadata group does not.
pub async fn run(
    reg: Registration,
    options: ClientOptions,
    events: UnboundedSender<RegistrationEvent>,
    rounds: watch::Sender<Option<Arc<StatusRound>>>,
) {
    // The node's own event loop answers too, so connect only once it runs.
    let client = loop {
        match Client::connect(options.clone()).await {
            Ok(c) => break c,
            Err(e) => {
                tracing::debug!("registration: cannot reach the cluster yet: {e}");
                tokio::time::sleep(RETRY_PAUSE).await;
            }
        }
    };
    if reg.identity.new {
        if let Err(refusal) = first_start_check(&reg, &client, &events).await {
            let _ = events.send(RegistrationEvent::Refused(refusal));
            return;
        }
        let _ = events.send(RegistrationEvent::Cleared);
    }
    loop {
        let mut session = client.session();
        let op = Op::RegisterNode {
            node: reg.node,
            addr: reg.addr,
            identity: reg.identity.identity,
        };
        match session.execute_within(op, REGISTER_WAIT).await {
            Ok(_) => {
                let _ = events.send(RegistrationEvent::Registered);
                break;
            }
            Err(Error::Refused {
                error: ClientError::RegisterRefused(refusal),
                ..
            }) => {
                let _ = events.send(RegistrationEvent::Refused(refusal));
                return;
            }
            // The key's permission is read from the cluster file at start: asking again
            // cannot succeed. The node serves unregistered and still hears the registry.
            Err(
                e @ Error::Refused {
                    error: ClientError::PermissionDenied { .. },
                    ..
                },
            ) => {
                tracing::error!(
                    "node {} cannot register in the node registry: {e} (registering needs \
                     an admin client key: client_key_file, docs/SECURITY.md)",
                    reg.node.0
                );
                break;
            }
            Err(e) => {
                tracing::debug!("registration of node {} not done yet: {e}", reg.node.0);
                tokio::time::sleep(RETRY_PAUSE).await;
            }
        }
    }
    loop {
        match hear_registry(&reg, &client, &events, &rounds).await {
            Err(refusal) => {
                let _ = events.send(RegistrationEvent::Refused(refusal));
                return;
            }
            Ok(true) => activate(&reg, &client).await,
            Ok(false) => {}
        }
        tokio::time::sleep(REGISTRY_POLL).await;
    }
}

/// Marks this joining node active (`Op::SetNodeState`); a refusal (it was drained or
/// removed meanwhile) or a failure is logged, and the next poll decides again.
async fn activate(reg: &Registration, client: &Client) {
    let op = Op::SetNodeState {
        node: reg.node,
        state: NodeState::Active,
    };
    match client.session().execute_within(op, REGISTER_WAIT).await {
        Ok(_) => tracing::info!(
            "node {}: every node answering knows it; marked active",
            reg.node.0
        ),
        Err(e) => tracing::info!("node {}: not marked active yet: {e}", reg.node.0),
    }
}

/// Whether node `me`, as the newest of `registries` shows it, is joining and every one
/// of them (one per node that answered) lists it, so that it may be marked active.
pub fn ready_to_activate(me: NodeId, registries: &[Option<&Registry>]) -> bool {
    let newest = registries.iter().flatten().max_by_key(|r| r.version);
    let joining = newest.is_some_and(|r| r.state_of(me) == Some(NodeState::Joining));
    let heard: Option<Vec<&Registry>> = registries.iter().copied().collect();
    joining && heard.is_some_and(|h| Registry::known_to_all(me, &h))
}

/// Asks every node for its registry until every node of `reg.others` answered; refuses
/// as soon as one registry lists this id under another identity (or removed).
async fn first_start_check(
    reg: &Registration,
    client: &Client,
    events: &UnboundedSender<RegistrationEvent>,
) -> Result<(), RegisterRefusal> {
    let mut answered: Vec<NodeId> = Vec::new();
    let mut heard_registry = false;
    loop {
        for report in client.status(STATUS_WAIT).await {
            let Ok((status, _)) = &report.result else {
                continue;
            };
            if status.registry.is_some() {
                heard_registry = true;
            }
            pass_on(reg, status, events)?;
            if !answered.contains(&status.node) {
                answered.push(status.node);
            }
        }
        let waiting: Vec<String> = (reg.others.iter())
            .filter(|n| !answered.contains(n))
            .map(|n| n.0.to_string())
            .collect();
        if waiting.is_empty() && (heard_registry || !reg.needs_registry) {
            return Ok(());
        }
        if waiting.is_empty() {
            tracing::info!(
                "new data directory: waiting to hear the node registry from a node of the \
                 cluster before taking part"
            );
        } else {
            tracing::info!(
                "new data directory: waiting for nodes {} to answer before taking part \
                 (a node whose id the cluster knows must not start with an empty directory)",
                waiting.join(", ")
            );
        }
        tokio::time::sleep(RETRY_PAUSE).await;
    }
}

/// One round of status requests: hands the registries heard to the core and the round to
/// the balancer, and refuses if one of the registries no longer accepts this node. True
/// if this node may now be marked active ([`ready_to_activate`]).
async fn hear_registry(
    reg: &Registration,
    client: &Client,
    events: &UnboundedSender<RegistrationEvent>,
    rounds: &watch::Sender<Option<Arc<StatusRound>>>,
) -> Result<bool, RegisterRefusal> {
    let reports = client.status(STATUS_WAIT).await;
    let mut registries = Vec::new();
    for report in &reports {
        if let Ok((status, _)) = &report.result {
            pass_on(reg, status, events)?;
            registries.push(status.registry.as_deref());
        }
    }
    let ready = ready_to_activate(reg.node, &registries);
    rounds.send_replace(Some(Arc::new(StatusRound {
        at: Instant::now(),
        reports,
    })));
    Ok(ready)
}

/// Hands what `status` knows of the registry and the metadata group to the core; refuses
/// if its registry no longer accepts this node.
fn pass_on(
    reg: &Registration,
    status: &NodeStatus,
    events: &UnboundedSender<RegistrationEvent>,
) -> Result<(), RegisterRefusal> {
    if let Some(registry) = &status.registry {
        registry.check(reg.node, reg.identity.identity)?;
        let _ = events.send(RegistrationEvent::Heard(*registry.clone()));
    }
    if let Some(route) = &status.metadata {
        let _ = events.send(RegistrationEvent::HeardMetadataRoute((**route).clone()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_joining_node_is_ready_once_every_answering_node_lists_it() {
        let addr = SocketAddr::from(([127, 0, 0, 1], 7000));
        let mut old = Registry::default();
        old.register(1, NodeId(1), addr, 1).unwrap();
        let mut new = old.clone();
        new.register(2, NodeId(4), addr, 4).unwrap();
        let me = NodeId(4);
        assert!(!ready_to_activate(me, &[Some(&new), Some(&old)]));
        assert!(
            !ready_to_activate(me, &[Some(&new), None]),
            "one knows none"
        );
        assert!(ready_to_activate(me, &[Some(&new), Some(&new)]));
        new.set_state(3, me, NodeState::Active).unwrap();
        assert!(!ready_to_activate(me, &[Some(&new), Some(&new)]), "active");
        assert!(!ready_to_activate(me, &[]));
    }

    #[test]
    fn an_identity_is_made_once_with_the_directory_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let first = data_dir_identity(dir.path(), false).unwrap();
        assert!(first.new);
        let again = data_dir_identity(dir.path(), false).unwrap();
        assert_eq!(
            again,
            DataDirIdentity {
                identity: first.identity,
                new: false
            }
        );
        let other = tempfile::tempdir().unwrap();
        let made_by_older = data_dir_identity(other.path(), true).unwrap();
        assert!(!made_by_older.new, "a directory holding data is not new");
        assert_ne!(made_by_older.identity, first.identity);
        std::fs::write(other.path().join(DATA_DIR_IDENTITY_FILE), "zz\n").unwrap();
        let e = data_dir_identity(other.path(), true).unwrap_err();
        assert!(e.to_string().contains(DATA_DIR_IDENTITY_FILE), "{e}");
    }
}
