//! The writes as they travel through the log: [`WriteOp`], one client's [`WriteCommand`]
//! and the [`CommandBatch`] one entry carries. Split from sm.rs to keep that file readable.

use bytes::Bytes;
use kv_shared::proto::{MoveRefusal, Op};
use kv_shared::registry::NodeState;
use kv_shared::varint;
use kv_shared::{ClientId, NodeId, ShardId};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

/// A state-changing operation, as it travels through the log.
///
/// Generic over how it holds its byte strings: owned [`Bytes`] where writes are built
/// (proposals), borrowed `&[u8]` where an entry is applied
/// ([`CommandBatch::decode_borrowed`]): both encode alike (serde bytes), and applying
/// reads the keys and values straight out of the entry instead of copying each into a
/// heap block of its own first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WriteOp<B = Bytes> {
    /// Set `key` to `value`.
    Put {
        /// The key.
        key: B,
        /// The new value.
        value: B,
    },
    /// Remove `key`.
    Delete {
        /// The key.
        key: B,
    },
    /// Set `key` to `new` if it holds `expected` (`None`: absent).
    Cas {
        /// The key.
        key: B,
        /// Required current value.
        expected: Option<B>,
        /// Value written on a match.
        new: B,
    },
    /// Open the client's session (changes no data).
    OpenSession,
    /// Add `delta` to the decimal i64 held by `key` (absent: 0).
    Incr {
        /// The key.
        key: B,
        /// The addend.
        delta: i64,
    },
    /// Append `value` to `key`'s value (absent: empty).
    Append {
        /// The key.
        key: B,
        /// The suffix.
        value: B,
    },
    /// Replace `key`'s value with `new` (`None`: remove it), answering the old one.
    Swap {
        /// The key.
        key: B,
        /// The replacement, or `None` to remove.
        new: Option<B>,
    },
    /// Make `node` the shard's preferred leader (admin).
    PreferLeader {
        /// The node.
        node: NodeId,
    },
    /// Record a replica move as in flight (admin), unless one already is: the leader's
    /// move driver (`crate::moves`) then takes it through its membership changes.
    BeginMove {
        /// The shard (named in the refusal when another move is in flight).
        shard: ShardId,
        /// The node whose replica goes.
        from: NodeId,
        /// The node that receives one.
        to: NodeId,
    },
    /// End the move in flight started by `(client, seq)`, done (`refusal: None`) or
    /// undone: proposed by the leader's move driver outside any session, it changes the
    /// saved outcome of the admin's request to the final one.
    EndMove {
        /// Session of the admin request that began the move.
        client: ClientId,
        /// Its sequence number.
        seq: u64,
        /// `None`: the move is done; else why it was undone.
        refusal: Option<MoveRefusal>,
    },
    /// Register a node in the node registry: applies only in the metadata group's state
    /// machine (a data shard refuses it, changing nothing).
    RegisterNode {
        /// The node.
        node: NodeId,
        /// Where it is reached.
        addr: SocketAddr,
        /// Its data directory's identity.
        identity: u64,
    },
    /// Mark a node draining or removed in the node registry (metadata group only).
    SetNodeState {
        /// The node.
        node: NodeId,
        /// Its new state.
        state: NodeState,
    },
    /// Pause or resume the balancer (metadata group only).
    PauseBalancer {
        /// Paused or running.
        paused: bool,
    },
}

impl WriteOp {
    /// The write part of a client op (`None` for gets and status).
    pub fn from_op(op: &Op) -> Option<WriteOp> {
        WriteOp::of_op(op, Bytes::clone)
    }
}

impl<'a> WriteOp<&'a Bytes> {
    /// [`WriteOp::from_op`] borrowing the op's byte strings: what a leader encodes into
    /// an entry, without cloning each key and value (a clone of a `Bytes` that owns its
    /// buffer allocates a shared header, freed again once the entry is encoded).
    pub fn borrowed(op: &'a Op) -> Option<WriteOp<&'a Bytes>> {
        WriteOp::of_op(op, |b| b)
    }
}

impl<B> WriteOp<B> {
    /// The write part of a client op, its byte strings made by `bytes`.
    fn of_op<'a>(op: &'a Op, bytes: impl Fn(&'a Bytes) -> B) -> Option<WriteOp<B>> {
        let op = match op {
            Op::Put { key, value } => WriteOp::Put {
                key: bytes(key),
                value: bytes(value),
            },
            Op::Delete { key } => WriteOp::Delete { key: bytes(key) },
            Op::Cas { key, expected, new } => WriteOp::Cas {
                key: bytes(key),
                expected: expected.as_ref().map(&bytes),
                new: bytes(new),
            },
            Op::OpenSession { .. } => WriteOp::OpenSession,
            Op::Incr { key, delta } => WriteOp::Incr {
                key: bytes(key),
                delta: *delta,
            },
            Op::Append { key, value } => WriteOp::Append {
                key: bytes(key),
                value: bytes(value),
            },
            Op::Swap { key, new } => WriteOp::Swap {
                key: bytes(key),
                new: new.as_ref().map(&bytes),
            },
            Op::ShardLeader { node, .. } => WriteOp::PreferLeader { node: *node },
            Op::MoveReplica { shard, from, to } => WriteOp::BeginMove {
                shard: *shard,
                from: *from,
                to: *to,
            },
            Op::RegisterNode {
                node,
                addr,
                identity,
            } => WriteOp::RegisterNode {
                node: *node,
                addr: *addr,
                identity: *identity,
            },
            Op::SetNodeState { node, state } => WriteOp::SetNodeState {
                node: *node,
                state: *state,
            },
            Op::PauseBalancer { paused } => WriteOp::PauseBalancer { paused: *paused },
            Op::Get { .. } | Op::Status => return None,
        };
        Some(op)
    }
}

/// One client write under its session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteCommand<B = Bytes> {
    /// Session.
    pub client: ClientId,
    /// Sequence number within the session.
    pub seq: u64,
    /// The write.
    pub op: WriteOp<B>,
}

/// The payload of one Raft entry: every write proposed to one shard in one round.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandBatch<B = Bytes> {
    /// The writes, applied in this order.
    pub writes: Vec<WriteCommand<B>>,
}

impl<B: Serialize> CommandBatch<B> {
    /// Encodes for a log entry.
    pub fn encode(&self) -> Bytes {
        Bytes::from(kv_shared::pack::encode_exact(self))
    }
}

impl CommandBatch {
    /// Decodes a log entry payload.
    pub fn decode(data: &[u8]) -> Result<CommandBatch, postcard::Error> {
        postcard::from_bytes(data)
    }

    /// Decodes a log entry payload, its keys and values borrowed from `data`.
    pub fn decode_borrowed(data: &[u8]) -> Result<CommandBatch<&[u8]>, postcard::Error> {
        postcard::from_bytes(data)
    }
}

/// The writes of an entry payload that holds only `Put`s and `OpenSession`s, read by
/// hand: the common entry, decoded on every replica (a client opens its session on each
/// shard with its first write there, so with many shards the first rounds' entries mix
/// the two). Through serde, postcard pays visitor calls, a varint call
/// per integer and a vector for the batch on every write; this reads the same bytes
/// directly. `None` for anything else (another op, a malformed
/// varint, a short or trailing byte): the caller then decodes with postcard, which
/// decides. Whatever this accepts, postcard decodes to the same writes (tested).
pub(crate) fn puts_only(data: &[u8]) -> Option<Puts<'_>> {
    let mut rest = data;
    let count = varint::take(&mut rest)?;
    // Each write takes at least three bytes: the check pass cannot be made to loop long.
    if count > rest.len() as u64 {
        return None;
    }
    let mut check = rest;
    for _ in 0..count {
        skip_put(&mut check)?;
    }
    check.is_empty().then_some(Puts { rest, count })
}

/// Bytes of postcard's encoding of `write`: a `Put` or an `OpenSession` counted by hand
/// (a leader sizes every write it proposes), any other write by postcard.
pub(crate) fn write_bytes(write: &WriteCommand<&Bytes>) -> usize {
    let head = varint::len(write.client.0) + varint::len(write.seq) + 1;
    match &write.op {
        WriteOp::Put { key, value } => {
            head + varint::len(key.len() as u64)
                + key.len()
                + varint::len(value.len() as u64)
                + value.len()
        }
        WriteOp::OpenSession => head,
        _ => postcard::experimental::serialized_size(write).expect("a write encodes"),
    }
}

/// Appends postcard's encoding of `write` to `out`: a `Put` or an `OpenSession` written
/// by hand (the layout [`take_put`] reads), any other write by postcard.
pub(crate) fn extend_with_write(write: &WriteCommand<&Bytes>, out: &mut Vec<u8>) {
    let mut head = [0u8; 3 * varint::BYTES_MAX];
    let mut n = varint::write(write.client.0, &mut head);
    n += varint::write(write.seq, &mut head[n..]);
    match &write.op {
        WriteOp::Put { key, value } => {
            head[n] = PUT;
            n += 1;
            n += varint::write(key.len() as u64, &mut head[n..]);
            out.extend_from_slice(&head[..n]);
            out.extend_from_slice(key);
            let mut len = [0u8; varint::BYTES_MAX];
            let l = varint::write(value.len() as u64, &mut len);
            out.extend_from_slice(&len[..l]);
            out.extend_from_slice(value);
        }
        WriteOp::OpenSession => {
            head[n] = OPEN_SESSION;
            out.extend_from_slice(&head[..n + 1]);
        }
        _ => {
            let taken = std::mem::take(out);
            *out = postcard::to_extend(write, taken).expect("a write encodes");
        }
    }
}

/// The writes [`puts_only`] checked, decoded again one at a time as they are applied, so
/// that no vector holds them.
pub(crate) struct Puts<'a> {
    rest: &'a [u8],
    count: u64,
}

impl<'a> Iterator for Puts<'a> {
    type Item = WriteCommand<&'a [u8]>;

    fn next(&mut self) -> Option<WriteCommand<&'a [u8]>> {
        if self.count == 0 {
            return None;
        }
        self.count -= 1;
        Some(take_put(&mut self.rest).expect("checked by puts_only"))
    }
}

/// postcard's variant indices of the two `WriteOp`s read by hand (the tests fail if the
/// declarations move).
const PUT: u8 = 0;
const OPEN_SESSION: u8 = 3;

/// One `WriteCommand` holding a `Put` or an `OpenSession`, as postcard lays it out:
/// client and seq (varints), the variant index (one byte), and for a `Put` key and value
/// (each a varint length and the bytes).
#[inline]
fn take_put<'a>(rest: &mut &'a [u8]) -> Option<WriteCommand<&'a [u8]>> {
    let client = ClientId(varint::take(rest)?);
    let seq = varint::take(rest)?;
    let (&variant, after) = rest.split_first()?;
    *rest = after;
    let op = match variant {
        PUT => {
            let key = take_bytes(rest)?;
            let value = take_bytes(rest)?;
            WriteOp::Put { key, value }
        }
        OPEN_SESSION => WriteOp::OpenSession,
        _ => return None,
    };
    Some(WriteCommand { client, seq, op })
}

/// [`take_put`] without building the write: the check pass needs only where each
/// write ends, and so skips the session id and sequence number (a session id usually
/// takes all ten varint bytes) instead of assembling their values.
#[inline]
fn skip_put(rest: &mut &[u8]) -> Option<()> {
    varint::skip(rest)?;
    varint::skip(rest)?;
    let (&variant, after) = rest.split_first()?;
    *rest = after;
    match variant {
        PUT => {
            take_bytes(rest)?;
            take_bytes(rest)?;
        }
        OPEN_SESSION => {}
        _ => return None,
    }
    Some(())
}

#[inline]
fn take_bytes<'a>(rest: &mut &'a [u8]) -> Option<&'a [u8]> {
    let len = usize::try_from(varint::take(rest)?).ok()?;
    if len > rest.len() {
        return None;
    }
    let (bytes, after) = rest.split_at(len);
    *rest = after;
    Some(bytes)
}
