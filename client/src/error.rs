//! What can go wrong for a kvcli request, each said in one line that names the shard, the
//! node or the limit involved, and whether a write may have been applied anyway.

use kv_shared::proto::ClientError;
use kv_shared::{NodeId, ShardId};
use std::borrow::Cow;
use std::net::SocketAddr;

/// A request kvcli could not complete.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// No node led the key's shard (or none answered) for longer than the deadline.
    #[error("unavailable: shard {} has no leader (waited {waited_ms} ms; last: {last})", shard.0)]
    NoLeader {
        /// The key's shard.
        shard: ShardId,
        /// How long kvcli kept trying.
        waited_ms: u64,
        /// The last thing that went wrong, naming the node.
        last: String,
        /// True if a write may have been applied (an attempt went unanswered).
        outcome_unknown: bool,
    },
    /// A leader was found but kept failing the request (timeouts, lost quorum, overload)
    /// until the deadline.
    #[error("unavailable: shard {} did not complete the request in {waited_ms} ms (last: {last}){}", shard.0, if *outcome_unknown { "; the outcome is unknown" } else { "" })]
    GaveUp {
        /// The key's shard.
        shard: ShardId,
        /// How long kvcli kept trying.
        waited_ms: u64,
        /// The last error, naming the node.
        last: String,
        /// True if a write may have been applied.
        outcome_unknown: bool,
    },
    /// A node refused the request for a reason retrying cannot fix.
    #[error("{}: {error}", node_name(*node, *addr))]
    Refused {
        /// The node that answered, if its id is known.
        node: Option<NodeId>,
        /// Its address.
        addr: SocketAddr,
        /// Its answer.
        error: ClientError,
        /// True if an earlier attempt of this write may have been applied.
        outcome_unknown: bool,
    },
    /// Refused before sending: a key or value over its limit.
    #[error("{0}")]
    Limit(ClientError),
    /// No node answered anything: neither the first Status request (so the shard count
    /// is unknown) nor, later, any attempt of a request. Nodes answer nothing sealed under
    /// a key they do not accept (no reflection), so a wrong key looks the same from here.
    #[error("no node answered within {waited_ms} ms (tried {tried}); is the cluster running, is --cluster-id right, and do the nodes list this client's key file in client_key_files? (they answer nothing sealed under a key they do not accept)")]
    NoNodeAnswered {
        /// How long kvcli waited.
        waited_ms: u64,
        /// The addresses asked.
        tried: String,
        /// True if a write was sent: a node may have applied it and its reply been lost.
        outcome_unknown: bool,
    },
    /// The local socket failed.
    #[error("socket: {0}")]
    Io(String),
    /// An elastic-cluster command (`node drain`, `rebalance`, ...) refused what was asked,
    /// or could not finish it; the message names the node or shard.
    #[error("{message}")]
    Balance {
        /// A short, stable name (`balance-refused`, `stuck`, `gave-up`).
        kind: &'static str,
        /// One line.
        message: String,
    },
}

/// `n2 (127.0.0.1:7102)`, or just the address while the id is unknown.
pub fn node_name(node: Option<NodeId>, addr: SocketAddr) -> String {
    match node {
        Some(id) => format!("node {} ({addr})", id.0),
        None => format!("node at {addr}"),
    }
}

impl Error {
    /// True when the request was a write that may have been applied despite the error:
    /// a history must record it as "unknown", not "failed".
    pub fn outcome_unknown(&self) -> bool {
        match self {
            Error::NoLeader {
                outcome_unknown, ..
            }
            | Error::GaveUp {
                outcome_unknown, ..
            }
            | Error::Refused {
                outcome_unknown, ..
            }
            | Error::NoNodeAnswered {
                outcome_unknown, ..
            } => *outcome_unknown,
            Error::Limit(_) | Error::Io(_) | Error::Balance { .. } => false,
        }
    }

    /// A short, stable name for counting errors by kind (bench reports, JSON output). A
    /// node that refuses writes names its reason, and the kind is that reason (`disk-full`),
    /// so a report says what the node said.
    pub fn kind(&self) -> Cow<'static, str> {
        let name = match self {
            Error::NoLeader { .. } => "no-leader",
            Error::GaveUp { .. } => "gave-up",
            Error::Refused { error, .. } => match error {
                ClientError::NotLeader { .. } => "not-leader",
                ClientError::StaleRoute { .. } => "stale-route",
                ClientError::NoQuorum { .. } => "no-quorum",
                ClientError::Timeout { .. } => "timeout",
                ClientError::KeyTooLarge { .. } | ClientError::ValueTooLarge { .. } => "limit",
                ClientError::StaleSequence { .. } => "stale-sequence",
                ClientError::SessionExpired => "session-expired",
                ClientError::Unavailable { reason, .. } => {
                    return match kind_of_reason(reason) {
                        Some(kind) => Cow::Owned(kind),
                        None => Cow::Borrowed("node-unavailable"),
                    };
                }
                ClientError::Overloaded { .. } | ClientError::OverloadedBytes { .. } => {
                    "overloaded"
                }
                ClientError::NotAnInteger | ClientError::Overflow => "not-an-integer",
                ClientError::Malformed(_) => "malformed",
                ClientError::PermissionDenied { .. } => "permission-denied",
                ClientError::MoveRefused { .. } => "move-refused",
                ClientError::RegisterRefused(_) => "register-refused",
                ClientError::NodeStateRefused(_) => "node-state-refused",
            },
            Error::Limit(_) => "limit",
            Error::NoNodeAnswered { .. } => "no-node-answered",
            Error::Io(_) => "io",
            Error::Balance { kind, .. } => *kind,
        };
        Cow::Borrowed(name)
    }
}

/// Most characters of an error kind made from a node's free-text reason (a node may say
/// anything; a report's table of kinds stays readable).
const REASON_KIND_CHARS_MAX: usize = 32;

/// A node's reason as an error kind: lowercase words joined by `-` (`disk full` ->
/// `disk-full`), at most [`REASON_KIND_CHARS_MAX`] characters; `None` if it has no word.
fn kind_of_reason(reason: &str) -> Option<String> {
    let words: Vec<String> = reason
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_ascii_lowercase)
        .collect();
    let mut kind = words.join("-");
    kind.truncate(REASON_KIND_CHARS_MAX);
    let kind = kind.trim_end_matches('-').to_string();
    (!kind.is_empty()).then_some(kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(reason: &str) -> Error {
        Error::Refused {
            node: Some(NodeId(2)),
            addr: "127.0.0.1:1".parse().unwrap(),
            error: ClientError::Unavailable {
                node: NodeId(2),
                reason: reason.to_string(),
            },
            outcome_unknown: false,
        }
    }

    #[test]
    fn a_refusal_is_counted_under_the_reason_the_node_gave() {
        assert_eq!(refused("disk full").kind(), "disk-full");
        assert_eq!(refused("  Disk FULL (ENOSPC)!").kind(), "disk-full-enospc");
        assert_eq!(refused("...").kind(), "node-unavailable");
        assert_eq!(
            refused(&"x ".repeat(100)).kind().len(),
            REASON_KIND_CHARS_MAX - 1
        );
    }
}
