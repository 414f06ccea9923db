//! The node core's client requests: admitting them (`on_client_request`), routing them
//! each round to a proposal, a ReadIndex read or a redirect, and answering them exactly
//! once (`reply`). Split from core.rs to keep that file readable.

use super::{is_listed, BoundaryRefusal, ClientToken, NodeCore, Request};
use crate::moves;
use crate::sm::{command, WriteCommand, WriteOp};
use crate::write_refusal;
use bytes::{Bytes, BytesMut};
use kv_raft::{ProposeError, Role};
use kv_shared::limits::{ENTRY_BYTES_MAX, PENDING_REQUESTS_MAX, PENDING_REQUEST_BYTES_MAX};
use kv_shared::pack::count_prefix_bytes;
use kv_shared::proto::{ClientError, ClientReply, ClientRequest, Op, Outcome};
use kv_shared::registry::METADATA_SHARD;
use kv_shared::shard::shard_for_key;
use kv_shared::{varint, NodeId, ShardId};

/// What a pending request counts against `PENDING_REQUEST_BYTES_MAX`: its keys and values
/// (the bulk of what it holds) plus a fixed share for the rest of the request.
fn request_bytes(op: &Op) -> usize {
    const REQUEST_OVERHEAD_BYTES: usize = 128;
    let payload = match op {
        Op::Put { key, value } | Op::Append { key, value } => key.len() + value.len(),
        Op::Swap { key, new } => key.len() + new.as_ref().map_or(0, |v| v.len()),
        Op::Incr { key, .. } => key.len() + 8,
        Op::Cas { key, expected, new } => {
            key.len() + expected.as_ref().map_or(0, |e| e.len()) + new.len()
        }
        Op::Get { key, .. } | Op::Delete { key } | Op::OpenSession { key } => key.len(),
        Op::Status
        | Op::ShardLeader { .. }
        | Op::MoveReplica { .. }
        | Op::RegisterNode { .. }
        | Op::SetNodeState { .. }
        | Op::PauseBalancer { .. } => 0,
    };
    REQUEST_OVERHEAD_BYTES + payload
}

/// The encoded write of request `r` (routed as a write), its keys and values borrowed.
fn write_of(r: &Request) -> WriteCommand<&Bytes> {
    WriteCommand {
        client: r.req.client,
        seq: r.req.seq,
        op: WriteOp::borrowed(&r.req.op).expect("routed as a write"),
    }
}

/// The [`CommandBatch`] of `count` writes, whose encodings add up to `writes_bytes`,
/// encoded. Written straight from the writes: postcard encodes a sequence as its length
/// and then its items, so no vector of the (borrowed) writes is built first.
fn encode_entry<'a>(
    count: usize,
    writes: impl Iterator<Item = WriteCommand<&'a Bytes>>,
    writes_bytes: usize,
    out: &mut Vec<u8>,
) {
    let len = count_prefix_bytes(count) + writes_bytes;
    out.clear();
    out.reserve(len);
    let mut prefix = [0u8; varint::BYTES_MAX];
    let n = varint::write(count as u64, &mut prefix);
    out.extend_from_slice(&prefix[..n]);
    for write in writes {
        command::extend_with_write(&write, out);
    }
    debug_assert_eq!(out.len(), len, "the counted length is the encoding's");
}

/// Bytes of the blocks a leader's entry payloads are carved from ([`EntryArena`]): a
/// round's entries at 64 shards, a few times over.
const ENTRY_ARENA_BLOCK_BYTES: usize = 16 * 1024;

/// A payload of this many bytes or more keeps the vector it was encoded into: copying
/// it into a block would cost more than the allocations a block saves (a round's one
/// entry at one shard is about 8 KiB).
const ENTRY_ARENA_PAYLOAD_BYTES_MAX: usize = ENTRY_ARENA_BLOCK_BYTES / 4;

/// Where a leader's small entry payloads are copied to, one after another in shared
/// blocks: a payload of its own cost an allocation, and its first clone another for the
/// shared handle, per entry, so per group and round at many shards. A block
/// lives as long as any of its entries (in the log, until the group's next snapshot),
/// as the follower's entries keep their datagram's copy alive.
#[derive(Debug, Default)]
pub(super) struct EntryArena {
    block: BytesMut,
}

impl EntryArena {
    /// The payload encoded in `encoded`: a copy in the current block (or a new one if
    /// it does not fit), or, from [`ENTRY_ARENA_PAYLOAD_BYTES_MAX`] bytes on, the vector
    /// itself (leaving `encoded` empty).
    pub(super) fn carve(&mut self, encoded: &mut Vec<u8>) -> Bytes {
        if encoded.len() >= ENTRY_ARENA_PAYLOAD_BYTES_MAX {
            return Bytes::from(std::mem::take(encoded));
        }
        if self.block.capacity() < encoded.len() {
            self.block = BytesMut::with_capacity(ENTRY_ARENA_BLOCK_BYTES);
        }
        self.block.extend_from_slice(encoded);
        self.block.split().freeze()
    }
}

/// Most `Vec<u64>` of request ids kept for reuse ([`NodeCore::ids_vec`]): a round's
/// proposed batches, one per group that got writes.
pub(super) const IDS_POOL_MAX: usize = 1024;

impl NodeCore {
    /// A client request. Answered (exactly once) in some later `Output`, or in the next.
    pub fn on_client_request(&mut self, token: ClientToken, req: ClientRequest) {
        let reply_now = |core: &mut NodeCore, outcome| {
            core.out.replies.push((
                token,
                ClientReply {
                    client: req.client,
                    seq: req.seq,
                    outcome,
                },
            ));
        };
        if let Err(e) = req.op.check_limits() {
            return reply_now(self, Outcome::Error(e));
        }
        if let Some(e) = write_refusal::refused(self.write_refusal, self.config.node, &req.op) {
            return reply_now(self, Outcome::Error(e));
        }
        let shard_count = self.config.shard_count;
        let shard = match &req.op {
            Op::Status => {
                let s = self.status();
                return reply_now(self, Outcome::Status(s));
            }
            op => match op.admin_shard() {
                Some(METADATA_SHARD)
                    if matches!(
                        op,
                        Op::RegisterNode { .. }
                            | Op::SetNodeState { .. }
                            | Op::PauseBalancer { .. }
                            | Op::MoveReplica { .. }
                    ) && self.config.is_group(METADATA_SHARD) =>
                {
                    METADATA_SHARD
                }
                Some(shard) if shard.0 >= shard_count => {
                    let e = ClientError::Malformed(format!(
                        "shard {} does not exist; the cluster has {shard_count} shards",
                        shard.0
                    ));
                    return reply_now(self, Outcome::Error(e));
                }
                Some(shard) => shard,
                None => shard_for_key(op.key().expect("keyed op"), shard_count),
            },
        };
        if !self.groups.contains(shard) {
            return reply_now(self, Outcome::Error(self.stale_route(shard)));
        }
        if let Op::Get { stale: true, key } = &req.op {
            let g = &self.groups[shard];
            #[cfg(feature = "planted-bugs")]
            let removal_checked = !self.removed_replica_serves_reads;
            #[cfg(not(feature = "planted-bugs"))]
            let removal_checked = true;
            let outside = !is_listed(g.raft.membership(), self.config.node);
            if removal_checked && (outside || req.epoch > g.sm.membership_epoch()) {
                // The client knows a newer replica set: this replica may have been
                // removed and not know it yet, so its state may be arbitrarily old. A
                // replica outside its own membership was created by a move and has not
                // had the leader's snapshot yet, or has just applied its removal.
                return reply_now(self, Outcome::Error(self.stale_route(shard)));
            }
            let v = g.sm.get(key);
            return reply_now(self, Outcome::Value(v));
        }
        if let Op::Get { stale: false, key } = &req.op {
            if let Some(v) = self
                .reads_on_arrival
                .then(|| self.lease_get(shard, key))
                .flatten()
            {
                return reply_now(self, Outcome::Value(v));
            }
        }
        if self.requests.len() >= PENDING_REQUESTS_MAX {
            self.refuse(BoundaryRefusal::PendingRequestsFull);
            let e = ClientError::Overloaded {
                node: self.config.node,
                pending: self.requests.len(),
            };
            return reply_now(self, Outcome::Error(e));
        }
        let bytes = request_bytes(&req.op);
        if self.pending_request_bytes + bytes > PENDING_REQUEST_BYTES_MAX {
            self.refuse(BoundaryRefusal::PendingBytesFull);
            let e = ClientError::OverloadedBytes {
                node: self.config.node,
                pending_bytes: self.pending_request_bytes,
            };
            return reply_now(self, Outcome::Error(e));
        }
        self.pending_request_bytes += bytes;
        let id = self.next_request_id;
        self.next_request_id += 1;
        let deadline_tick = self.tick_count + u64::from(self.config.request_timeout_ticks);
        self.requests.insert(
            id,
            Request {
                token,
                req,
                shard,
                bytes,
            },
        );
        debug_assert!(self
            .deadlines
            .back()
            .is_none_or(|&(d, _)| d <= deadline_tick));
        self.deadlines.push_back((deadline_tick, id));
        let lease_reads = self.config.raft.lease_reads;
        // Waking a quiesced group is Raft input, so that group is marked touched (asked
        // for a Ready by the next `drive`). Queuing a request is none: routing gives the
        // input and drains what it gave, so the group is reached unmarked, and a round
        // of gets served from the lease never asks it for a Ready at all.
        let g = if self.groups[shard].quiesced {
            &mut self.groups[shard]
        } else {
            self.groups.peek_mut(shard).expect("hosted: checked above")
        };
        g.wake();
        if g.waiting.is_empty() {
            self.to_route.push(shard);
        }
        g.waiting.push(id);
        if lease_reads {
            // Activity: quiescence waits for a heartbeat period without requests, so
            // steady reads keep the lease renewed (`NodeCore::tick`).
            g.idle_ticks = 0;
        }
    }

    /// A linearizable get of `key` that the leader of `shard` serves on arrival: Raft
    /// would confirm a `read_index` now at once (`kv_raft::Raft::lease_read_index`), and
    /// the state machine has applied that index, so this is the read `route` would
    /// serve, at its arrival rather than at the next flush. It then never becomes a
    /// pending request: no admission, deadline, routing or reply lookup. `None` if the
    /// group cannot serve it so (also while quiesced: a paused clock does not count
    /// against the lease until the group wakes and forgets it).
    fn lease_get(&mut self, shard: ShardId, key: &[u8]) -> Option<Option<Bytes>> {
        #[cfg(feature = "planted-bugs")]
        if self.read_without_read_index {
            return None;
        }
        let lease_reads = self.config.raft.lease_reads;
        // Unmarked: reading gives Raft no input (see `on_client_request`).
        let g = self.groups.peek_mut(shard)?;
        if g.quiesced || g.soft.role != Role::Leader {
            return None;
        }
        let index = g.raft.lease_read_index()?;
        if index > g.sm.applied_index() {
            return None;
        }
        if lease_reads {
            // Activity, as for a queued request: steady reads keep the lease renewed.
            g.idle_ticks = 0;
        }
        Some(g.sm.get(key))
    }

    // Inline for the check: every Ready of every group asks, and most have none.
    #[inline]
    pub(super) fn serve_confirmed_reads(&mut self, g: ShardId) {
        if !self.groups[g].confirmed_reads.is_empty() {
            self.serve_confirmed_reads_now(g);
        }
    }

    #[inline(never)]
    fn serve_confirmed_reads_now(&mut self, g: ShardId) {
        #[cfg_attr(not(feature = "planted-bugs"), allow(unused_mut))]
        let mut applied = self.groups[g].sm.applied_index();
        #[cfg(feature = "planted-bugs")]
        if self.follower_read_before_apply && self.groups[g].soft.role != Role::Leader {
            applied = u64::MAX;
        }
        let (ready, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.groups[g].confirmed_reads)
            .into_iter()
            .partition(|(index, _)| *index <= applied);
        self.groups[g].confirmed_reads = later;
        // A follower's read index can cover its own removal (the client routed by the
        // replica set it knew; so did this replica when it took the read): applied, that
        // removal leaves it no member, and a replica outside the shard's set serves
        // nothing of it, even a read its old leader confirmed.
        let group = &self.groups[g];
        let removed = group.soft.role != Role::Leader
            && !group.raft.membership().voters.contains(&self.config.node);
        let shard = group.shard;
        for (_, ids) in ready {
            for id in ids {
                if removed {
                    self.reply(id, Outcome::Error(self.stale_route(shard)));
                } else {
                    self.serve_get(g, id);
                }
            }
        }
    }

    fn serve_get(&mut self, g: ShardId, id: u64) {
        // Taken out first: the reply needs it out anyway, and one lookup is half the
        // cost of two.
        let Some(r) = self.requests.remove(&id) else {
            return;
        };
        let key = r.req.op.key().expect("gets have keys");
        let v = self.groups[g].sm.get(key);
        self.answer(r, Outcome::Value(v));
    }

    /// Leadership ended: nothing pending on it can be promised any more.
    pub(super) fn fail_leader_requests(&mut self, g: ShardId, leader: Option<NodeId>) {
        let group = &mut self.groups[g];
        let shard = group.shard;
        let mut ids: Vec<u64> = (group.proposed.take_all().into_iter())
            .flat_map(|(_, _, ids)| ids)
            .collect();
        ids.extend(std::mem::take(&mut group.reads).into_values().flatten());
        ids.append(&mut group.move_waiters);
        group.catch_up_since = None;
        group.move_end_proposed = None;
        for id in ids {
            self.reply(id, Outcome::Error(ClientError::NotLeader { shard, leader }));
        }
    }

    /// Sends this round's requests of group `g` where they belong: proposals and reads
    /// on a leader, redirects elsewhere; held while no leader is known. True if it gave
    /// the group's Raft input (a proposal or a `read_index`), so that it has a Ready to
    /// drain; a round of gets served from the lease gives none.
    pub(super) fn route(&mut self, g: ShardId) -> bool {
        if self.groups[g].waiting.is_empty() {
            return false;
        }
        // The group's list trades places with a kept empty one, so that neither this
        // round nor the group's next request allocates.
        let mut ids = std::mem::take(&mut self.route_ids);
        // Unmarked, as queuing them was (`on_client_request`): what gives Raft input
        // below marks the group.
        let group = self.groups.peek_mut(g).expect("routed groups are hosted");
        std::mem::swap(&mut ids, &mut group.waiting);
        let me = self.config.node;
        let shard = self.groups[g].shard;
        let soft = self.groups[g].soft;
        // Writes to propose, by request id: each is encoded from its request's op.
        let mut writes = std::mem::take(&mut self.route_writes);
        let mut reads = std::mem::take(&mut self.route_read_ids);
        let mut refused: Vec<(u64, NodeId)> = Vec::new();
        let mut moves_refused: Vec<(u64, ClientError)> = Vec::new();
        for id in ids.drain(..) {
            let Some(r) = self.requests.get(&id) else {
                continue;
            };
            if soft.role == Role::Leader {
                match WriteOp::borrowed(&r.req.op) {
                    Some(WriteOp::PreferLeader { node }) if !self.is_voter(g, node) => {
                        refused.push((id, node));
                    }
                    Some(WriteOp::BeginMove { from, to, .. }) => {
                        let sm = &self.groups[g].sm;
                        let in_flight = sm.move_in_flight();
                        let session = (r.req.client, r.req.seq);
                        if in_flight.is_some_and(|m| (m.client, m.seq) == session) {
                            // A retry of the move in flight: answered when it ends.
                            self.groups[g].move_waiters.push(id);
                            continue;
                        }
                        let route = self.shard_route(shard);
                        // A retry of a move that ended is answered from its session.
                        let checked = match sm.saved_outcome(session.0, session.1) {
                            Some(_) => Ok(()),
                            None => {
                                let nodes = self.cluster_nodes();
                                let to_state = self.node_state(to);
                                moves::check_move(from, to, &nodes, to_state, &route, in_flight)
                            }
                        };
                        match checked {
                            // The op names this group's shard: requests are routed by it.
                            Ok(()) => writes.push(id),
                            Err(reason) => moves_refused.push((
                                id,
                                ClientError::MoveRefused {
                                    shard,
                                    from,
                                    to,
                                    reason,
                                },
                            )),
                        }
                    }
                    Some(_) => writes.push(id),
                    None => reads.push(id),
                }
            } else if self.serves_follower_read(g, &r.req) {
                reads.push(id);
            } else {
                self.redirect_or_hold(g, id, soft.leader.filter(|l| *l != me), shard);
            }
        }
        for (id, e) in moves_refused {
            self.reply(id, Outcome::Error(e));
        }
        for (id, node) in refused {
            let voters: Vec<String> = (self.groups[g].raft.status().membership.voters)
                .iter()
                .map(|v| v.to_string())
                .collect();
            let e = ClientError::Malformed(format!(
                "{node} is not a voter of shard {} (voters: {})",
                shard.0,
                voters.join(", ")
            ));
            self.reply(id, Outcome::Error(e));
        }
        self.route_ids = ids;
        let proposed = !writes.is_empty();
        self.propose_writes(g, &writes);
        writes.clear();
        self.route_writes = writes;
        let read_index = !reads.is_empty() && self.route_reads(g, soft.role, &reads);
        reads.clear();
        self.route_read_ids = reads;
        proposed || read_index
    }

    /// Serves or starts the gets `ids` of group `g` (whose role the node core last saw
    /// is `role`). True if that took a `read_index`, which is Raft input.
    fn route_reads(&mut self, g: ShardId, role: Role, ids: &[u64]) -> bool {
        #[cfg(feature = "planted-bugs")]
        if self.read_without_read_index {
            for &id in ids {
                self.serve_get(g, id);
            }
            return false;
        }
        if role == Role::Leader && self.serve_from_lease(g, ids) {
            return false;
        }
        let ctx = self.next_read_ctx;
        self.next_read_ctx += 1;
        match self.groups[g].raft.read_index(ctx) {
            Ok(()) => {
                self.groups[g].reads.insert(ctx, ids.to_vec());
            }
            Err(e) => self.refused(g, ids.to_vec(), e),
        }
        true
    }

    /// Serves the leader's gets `ids` at once if Raft would confirm their read index at
    /// once (`kv_raft::Raft::lease_read_index`) and the state machine has applied it:
    /// the same read at the same index as through `read_index`, without a `ReadState`,
    /// a `Ready` to drain or a read map entry per group and round. False (nothing done)
    /// otherwise: the reads take `read_index`, which also waits for the apply.
    fn serve_from_lease(&mut self, g: ShardId, ids: &[u64]) -> bool {
        let group = &self.groups[g];
        let Some(index) = group.raft.lease_read_index() else {
            return false;
        };
        if index > group.sm.applied_index() {
            return false;
        }
        for &id in ids {
            self.serve_get(g, id);
        }
        true
    }

    /// Proposes the writes of requests `ids`, in order: one entry per ENTRY_BYTES_MAX of
    /// writes (an entry must fit one Append datagram), each remembered with the ids of
    /// its writes.
    fn propose_writes(&mut self, g: ShardId, ids: &[u64]) {
        let mut start = 0;
        while start < ids.len() {
            let mut end = start;
            let mut bytes = 0usize;
            while end < ids.len() {
                let write = write_of(&self.requests[&ids[end]]);
                let b = command::write_bytes(&write);
                if end > start && bytes + b > ENTRY_BYTES_MAX {
                    break;
                }
                bytes += b;
                end += 1;
            }
            let data = self.encode_entry(&ids[start..end], bytes);
            let mut batch_ids = self.ids_vec();
            batch_ids.extend_from_slice(&ids[start..end]);
            self.propose_batch(g, batch_ids, data);
            start = end;
        }
    }

    /// The entry payload of the writes of requests `ids`, whose encodings add up to
    /// `writes_bytes` (counted as they were sized against ENTRY_BYTES_MAX).
    fn encode_entry(&mut self, ids: &[u64], writes_bytes: usize) -> Bytes {
        let writes = ids.iter().map(|id| write_of(&self.requests[id]));
        encode_entry(ids.len(), writes, writes_bytes, &mut self.entry_buf);
        self.entry_arena.carve(&mut self.entry_buf)
    }

    /// An empty id list, from those kept for reuse if any.
    pub(super) fn ids_vec(&mut self) -> Vec<u64> {
        self.ids_pool.pop().unwrap_or_default()
    }

    /// Keeps `ids` (emptied) for [`NodeCore::ids_vec`].
    pub(super) fn recycle_ids(&mut self, mut ids: Vec<u64>) {
        if self.ids_pool.len() < IDS_POOL_MAX && ids.capacity() > 0 {
            ids.clear();
            self.ids_pool.push(ids);
        }
    }

    fn propose_batch(&mut self, g: ShardId, ids: Vec<u64>, data: Bytes) {
        let count = ids.len() as u64;
        match self.groups[g].raft.propose(data) {
            Ok((index, term)) => {
                self.report_proposed(self.groups[g].shard, index, &ids);
                self.groups[g].proposed_writes += count;
                self.groups[g].proposed.insert(index, term, ids);
            }
            Err(e) => self.refused(g, ids, e),
        }
    }

    fn refused(&mut self, g: ShardId, ids: Vec<u64>, e: ProposeError) {
        let shard = self.groups[g].shard;
        let me = self.config.node;
        let leader = match e {
            ProposeError::NotLeader { leader } => leader.filter(|l| *l != me),
            // A transfer (or anything transient) ends soon: try again next round.
            _ => None,
        };
        for id in ids {
            self.redirect_or_hold(g, id, leader, shard);
        }
    }

    /// Redirects request `id` to `leader`, or holds it while no leader is known. A client
    /// that routed by an older replica set gets the current one with the hint.
    fn redirect_or_hold(&mut self, g: ShardId, id: u64, leader: Option<NodeId>, shard: ShardId) {
        let Some(l) = leader else {
            let waiting = &mut self.groups.peek_mut(g).expect("hosted").waiting;
            if waiting.is_empty() {
                self.to_route.push(g);
            }
            waiting.push(id);
            return;
        };
        let routed_by = self.requests.get(&id).map_or(0, |r| r.req.epoch);
        let e = if routed_by < self.groups[g].sm.membership_epoch() {
            self.stale_route(shard)
        } else {
            ClientError::NotLeader {
                shard,
                leader: Some(l),
            }
        };
        self.reply(id, Outcome::Error(e));
    }

    /// True if this replica serves linearizable get `req` as a follower, its leader
    /// confirming the read index (`kv_raft::Config::follower_reads`): it follows a known
    /// leader as a voter of its own membership (a learner may be a move's target still
    /// catching up; a replica outside its membership was removed or not yet added), and
    /// the client routed by the replica set this replica knows: by an older one it gets
    /// `StaleRoute` with the current set, as from any follower; by a newer one this
    /// replica may have been removed without knowing. Anything else is redirected as
    /// before.
    fn serves_follower_read(&self, g: ShardId, req: &ClientRequest) -> bool {
        let me = self.config.node;
        let group = &self.groups[g];
        self.config.raft.follower_reads
            && matches!(req.op, Op::Get { stale: false, .. })
            && group.soft.role == Role::Follower
            && group.soft.leader.is_some_and(|l| l != me)
            && group.raft.membership().voters.contains(&me)
            && req.epoch == group.sm.membership_epoch()
    }

    /// How many routed groups `take_output` drained after routing since the start.
    #[cfg(test)]
    pub(crate) fn routed_drained(&self) -> u64 {
        self.routed_drained
    }

    /// The groups marked touched since the last `take_output` (the next one would ask
    /// them for a Ready), unmarking them.
    #[cfg(test)]
    pub(crate) fn take_touched(&mut self) -> Vec<ShardId> {
        self.groups.take_touched()
    }

    fn is_voter(&self, g: ShardId, node: NodeId) -> bool {
        self.groups[g]
            .raft
            .status()
            .membership
            .voters
            .contains(&node)
    }

    /// Answers request `id` unless it was answered already.
    pub(super) fn reply(&mut self, id: u64, outcome: Outcome) {
        if let Some(r) = self.requests.remove(&id) {
            self.answer(r, outcome);
        }
    }

    /// Answers pending request `r`, just taken out of `requests`: the one place pending
    /// requests are answered.
    fn answer(&mut self, r: Request, outcome: Outcome) {
        self.pending_request_bytes -= r.bytes;
        self.out.replies.push((
            r.token,
            ClientReply {
                client: r.req.client,
                seq: r.req.seq,
                outcome,
            },
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sm::CommandBatch;
    use kv_shared::ids::ClientId;

    /// Payloads carved one after another share a block until it is full; each is its
    /// bytes, whatever came before or after it.
    #[test]
    fn entry_payloads_share_blocks_and_keep_their_bytes() {
        let mut arena = EntryArena::default();
        let payload = |i: usize| vec![i as u8; 1000 + i];
        let carved: Vec<Bytes> = (0..40).map(|i| arena.carve(&mut payload(i))).collect();
        for (i, b) in carved.iter().enumerate() {
            assert_eq!(b[..], payload(i)[..]);
        }
        let adjacent = |a: &Bytes, b: &Bytes| a.as_ptr() as usize + a.len() == b.as_ptr() as usize;
        let shared = carved.windows(2).filter(|w| adjacent(&w[0], &w[1])).count();
        // 40,780 bytes: sixteen payloads to a block of 16 KiB, none split.
        assert_eq!(40 - shared, 3, "blocks");
        let mut big = vec![9; ENTRY_ARENA_PAYLOAD_BYTES_MAX];
        let at = big.as_ptr();
        let carved = arena.carve(&mut big);
        assert_eq!(
            (carved.len(), carved.as_ptr()),
            (ENTRY_ARENA_PAYLOAD_BYTES_MAX, at)
        );
        assert!(big.is_empty(), "a large payload keeps its vector");
    }

    #[test]
    fn an_entry_written_write_by_write_is_the_batch_encoding() {
        let key = Bytes::from_static(b"0123456789abcdef");
        let value = Bytes::from(vec![7u8; 100]);
        for count in [0usize, 1, 2, 127, 128, 300] {
            let writes: Vec<WriteCommand<&Bytes>> = (0..count)
                .map(|i| WriteCommand {
                    client: ClientId(i as u64 * 0x1_0000_0001),
                    seq: i as u64 * 1000,
                    op: if i % 2 == 0 {
                        WriteOp::Put {
                            key: &key,
                            value: &value,
                        }
                    } else {
                        WriteOp::Delete { key: &key }
                    },
                })
                .collect();
            let bytes: usize = writes
                .iter()
                .map(|w| postcard::experimental::serialized_size(w).unwrap())
                .sum();
            let mut streamed = Vec::new();
            encode_entry(count, writes.iter().cloned(), bytes, &mut streamed);
            let batch = CommandBatch { writes }.encode();
            assert_eq!(streamed, batch, "{count} writes");
            assert_eq!(CommandBatch::decode(&streamed).unwrap().writes.len(), count);
        }
    }
}
