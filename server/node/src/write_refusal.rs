//! Client writes a node refuses for a while (its disk is full): an input of the node
//! core, so that every reply to a client leaves through the core's output and the runtime
//! answers no request itself.

use kv_shared::proto::{ClientError, Op};
use kv_shared::NodeId;

/// Why a node refuses client writes now (set with `NodeCore::refuse_writes`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteRefusal {
    /// The runtime's disk has no room: a write would stall behind the WAL.
    DiskFull,
}

impl WriteRefusal {
    /// The reason clients are given.
    pub fn reason(self) -> &'static str {
        match self {
            WriteRefusal::DiskFull => "disk full",
        }
    }
}

/// The error a request with `op` gets from `node` while `refusal` holds: writes are
/// refused, reads and status go through.
pub(crate) fn refused(refusal: Option<WriteRefusal>, node: NodeId, op: &Op) -> Option<ClientError> {
    let refusal = refusal?;
    op.is_write().then(|| ClientError::Unavailable {
        node,
        reason: refusal.reason().into(),
    })
}
