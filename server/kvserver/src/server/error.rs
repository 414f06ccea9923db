//! Why a node stops with an error, and the exit code each reason ends the process with.

use kv_shared::NodeId;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Why a node stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A node joining with `--join` whose id the cluster file lists.
    #[error("node {node} is listed in the cluster file: start it without --join (--join is for a node the file does not list)")]
    JoinListed {
        /// The id asked for.
        node: NodeId,
    },
    /// The node id is not listed in the cluster file.
    #[error("node {node} is not listed in the cluster file (members: {members}); a node the file does not list joins with --join")]
    NotAMember {
        /// The id asked for.
        node: NodeId,
        /// The ids listed.
        members: String,
    },
    /// The data directory could not be created or opened, or its WAL is corrupt.
    #[error("cannot open the data directory {}: {source}", dir.display())]
    Storage {
        /// The data directory.
        dir: PathBuf,
        /// What kv-storage said (file and offset for corruption).
        #[source]
        source: kv_storage::StorageError,
    },
    /// The data directory could not be created.
    #[error("cannot create the data directory {}: {source}", dir.display())]
    DataDir {
        /// The data directory.
        dir: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The node core refused what storage recovered.
    #[error("recovery from {} failed: {source}", dir.display())]
    Recovery {
        /// The data directory.
        dir: PathBuf,
        /// What the core said.
        #[source]
        source: kv_node::RecoveryError,
    },
    /// A front end's TCP address could not be bound.
    #[error("cannot bind the {what} address {addr}: {source}")]
    Bind {
        /// Which front end.
        what: &'static str,
        /// The address from the cluster file (or its default).
        addr: SocketAddr,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The Redis gateway's client key file is missing, unreadable or malformed.
    #[error("the Redis gateway's client key: {0}")]
    GatewayKey(#[source] kv_shared::auth::KeyFileError),
    /// The Redis front end's users could not be set up from the cluster file.
    #[error("the Redis front end's users: {0}")]
    RespUsers(#[source] crate::resp::users::UsersError),
    /// The socket (or the disk thread's creation) failed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// Storage failed while running (other than a full disk); the node cannot continue.
    #[error("storage failed: {0}")]
    Disk(#[source] kv_storage::StorageError),
    /// The disk thread stopped without saying why (it panicked); nothing more becomes
    /// durable, so the node cannot continue.
    #[error("the disk thread stopped")]
    DiskThreadStopped,
    /// The node registry refuses this node with this data directory.
    #[error("refusing to start: {0}")]
    Refused(#[source] kv_shared::registry::RegisterRefusal),
    /// The data directory's identity file could not be read or written.
    #[error("cannot read or make the identity of the data directory {}: {source}", dir.display())]
    DataDirIdentity {
        /// The data directory.
        dir: PathBuf,
        /// What the OS said (or why the file is malformed).
        #[source]
        source: std::io::Error,
    },
    /// The incarnation file in the data directory could not be read or written.
    #[error("cannot record this start's incarnation in {}: {source}", dir.display())]
    Incarnation {
        /// The data directory.
        dir: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
}

impl ServerError {
    /// The process exit code for this error: 3 when the data on disk is refused (a
    /// corrupt WAL or a recovery error: an operator must look), 2 for a configuration
    /// mistake, 1 for anything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            ServerError::Storage { .. } | ServerError::Recovery { .. } => 3,
            ServerError::NotAMember { .. }
            | ServerError::JoinListed { .. }
            | ServerError::Refused(_)
            | ServerError::GatewayKey(_)
            | ServerError::RespUsers(_) => 2,
            ServerError::DataDir { .. }
            | ServerError::Bind { .. }
            | ServerError::Io(_)
            | ServerError::Disk(_)
            | ServerError::DiskThreadStopped
            | ServerError::DataDirIdentity { .. }
            | ServerError::Incarnation { .. } => 1,
        }
    }
}
