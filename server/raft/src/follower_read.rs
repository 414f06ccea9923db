//! ReadIndex at a follower (thesis 6.4): a follower serves linearizable reads from its
//! own state machine once its leader confirms, for a whole batch at once, the commit
//! index a read must see. Reads issued between two `ready()` calls share one request to
//! the leader; the leader confirms it like its own reads (a heartbeat round, or its
//! lease) and answers with the commit index it had when the request arrived.
//!
//! Nothing here waits forever: a request unanswered for `retransmit_ticks` is sent again
//! (the leader may answer twice; the first answer wins), one unanswered for
//! `election_ticks_max` fails, and a change of term or leader fails every request in
//! flight, so that an answer from a deposed leader is never taken.

use crate::node::{Raft, RoleState};
use crate::read_index::Reader;
use crate::types::{Index, MessageBody, ReadState, Term};
use crate::ProposeError;
use kv_shared::NodeId;
use std::collections::BTreeMap;

/// One request to the leader: the reads it confirms, and whom it asked when.
#[derive(Debug)]
struct Request {
    leader: NodeId,
    term: Term,
    ctxs: Vec<u64>,
    /// Tick of the first send: the request fails `election_ticks_max` ticks later.
    first_sent: u64,
    /// Tick of the latest send: resent `retransmit_ticks` later.
    last_sent: u64,
}

/// What a tick decided about the requests in flight.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Due {
    /// (leader, request id) to send again.
    pub resend: Vec<(NodeId, u64)>,
    /// Contexts of reads given up on.
    pub failed: Vec<u64>,
}

/// The follower reads of one replica (only a follower holds any).
#[derive(Debug)]
pub(crate) struct FollowerReads {
    /// Reads issued since the last request went out.
    queued: Vec<u64>,
    /// Requests sent and not yet answered, by id.
    inflight: BTreeMap<u64, Request>,
    /// Where this life's request ids start (`Config::boot_nonce`, mixed).
    id_base: u64,
    /// Requests made so far in this life.
    made: u64,
}

impl FollowerReads {
    /// Request ids of this life start at a point derived from `boot_nonce`: lives with
    /// different nonces use ranges that overlap with negligible odds.
    pub fn new(boot_nonce: u64) -> FollowerReads {
        FollowerReads {
            queued: Vec::new(),
            inflight: BTreeMap::new(),
            id_base: mix(boot_nonce),
            made: 0,
        }
    }

    /// Reads held (queued or in a request).
    pub fn len(&self) -> usize {
        self.queued.len() + self.inflight.values().map(|r| r.ctxs.len()).sum::<usize>()
    }

    /// True if reads wait for the next request.
    #[inline]
    pub fn has_queued(&self) -> bool {
        !self.queued.is_empty()
    }

    /// Holds read `ctx` until the next request goes out.
    pub fn queue(&mut self, ctx: u64) {
        self.queued.push(ctx);
    }

    /// Puts every queued read into one new request to `leader` in `term`, sent at tick
    /// `now`; returns its id, or `None` if nothing is queued.
    pub fn take_queued(&mut self, leader: NodeId, term: Term, now: u64) -> Option<u64> {
        if self.queued.is_empty() {
            return None;
        }
        let id = self.id_base.wrapping_add(self.made);
        self.made += 1;
        let ctxs = std::mem::take(&mut self.queued);
        self.inflight.insert(
            id,
            Request {
                leader,
                term,
                ctxs,
                first_sent: now,
                last_sent: now,
            },
        );
        Some(id)
    }

    /// `from` answered `request` in `term`. Returns the reads it releases (at `index`),
    /// or, for a refusal, their contexts to fail. An answer that matches no request
    /// (a duplicate, one of an earlier life, or from another leader or term) is ignored.
    pub fn answer(
        &mut self,
        from: NodeId,
        term: Term,
        request: u64,
        index: Index,
        reject: bool,
    ) -> Answer {
        let matches = self
            .inflight
            .get(&request)
            .is_some_and(|r| r.leader == from && r.term == term);
        if !matches {
            return Answer::Ignored;
        }
        let r = self.inflight.remove(&request).expect("present");
        if reject {
            return Answer::Refused(r.ctxs);
        }
        Answer::Confirmed(
            r.ctxs
                .into_iter()
                .map(|ctx| ReadState { ctx, index })
                .collect(),
        )
    }

    /// At tick `now`: requests to resend (last sent `resend_ticks` ago or more) and
    /// reads to fail (first sent `give_up_ticks` ago or more).
    pub fn due(&mut self, now: u64, resend_ticks: u64, give_up_ticks: u64) -> Due {
        let mut due = Due::default();
        let expired: Vec<u64> = self
            .inflight
            .iter()
            .filter(|(_, r)| now.saturating_sub(r.first_sent) >= give_up_ticks)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            let r = self.inflight.remove(&id).expect("present");
            due.failed.extend(r.ctxs);
        }
        for (id, r) in self.inflight.iter_mut() {
            if now.saturating_sub(r.last_sent) >= resend_ticks {
                r.last_sent = now;
                due.resend.push((r.leader, *id));
            }
        }
        due
    }

    /// Every read held, for failing them when the term or the leader changes.
    pub fn take_all(&mut self) -> Vec<u64> {
        let mut out = std::mem::take(&mut self.queued);
        for r in std::mem::take(&mut self.inflight).into_values() {
            out.extend(r.ctxs);
        }
        out
    }
}

/// What an answer from the leader does.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Answer {
    /// The batch may be served once `index` is applied.
    Confirmed(Vec<ReadState>),
    /// The leader refused: fail these reads.
    Refused(Vec<u64>),
    /// Matches no request in flight.
    Ignored,
}

/// SplitMix64's finalizer: spreads nearby nonces (1, 2, 3...) far apart.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

// ------------------------------------------------------------ the replica's side

impl Raft {
    /// `read_index` on a replica that does not lead: queue the read for the next request
    /// to the leader. Only a follower that knows its leader takes reads, and only with
    /// `Config::follower_reads`.
    pub(crate) fn read_index_at_follower(&mut self, ctx: u64) -> Result<(), ProposeError> {
        let follows = matches!(self.role, RoleState::Follower) && self.leader.is_some();
        if !self.cfg.follower_reads || !follows {
            return Err(ProposeError::NotLeader {
                leader: self.leader,
            });
        }
        let limit = self.cfg.pending_reads_max;
        if self.follower_reads.len() >= limit {
            return Err(ProposeError::TooManyPendingReads { limit });
        }
        if crate::node::planted!(self, FollowerReadsOwnCommit) {
            let index = self.log.commit;
            self.reads_ready.push(ReadState { ctx, index });
            return Ok(());
        }
        self.follower_reads.queue(ctx);
        Ok(())
    }

    /// Sends the reads queued since the last `ready()` to the leader, in one request.
    #[inline]
    pub(crate) fn flush_follower_reads(&mut self) {
        // Asked at every `has_ready` and `ready` of every group: the usual answer (no
        // read queued) without a call.
        if self.follower_reads.has_queued() {
            self.flush_follower_reads_now();
        }
    }

    #[inline(never)]
    fn flush_follower_reads_now(&mut self) {
        let leader = match (&self.role, self.leader) {
            (RoleState::Follower, Some(l)) => l,
            _ => return,
        };
        if let Some(request) = self.follower_reads.take_queued(leader, self.term, self.now) {
            self.send(leader, MessageBody::ReadIndex { request });
        }
    }

    /// Resends unanswered requests and gives up on those unanswered for an election
    /// timeout (a leader silent that long is being replaced anyway).
    pub(crate) fn tick_follower_reads(&mut self) {
        let resend = u64::from(self.cfg.retransmit_ticks());
        let give_up = u64::from(self.cfg.election_ticks_max);
        let due = self.follower_reads.due(self.now, resend, give_up);
        self.failed_reads.extend(due.failed);
        for (leader, request) in due.resend {
            // A change of leader or term failed every request: `leader` is current.
            self.send(leader, MessageBody::ReadIndex { request });
        }
    }

    /// The leader answered a request of this follower.
    pub(crate) fn on_read_index_resp(
        &mut self,
        from: NodeId,
        request: u64,
        index: Index,
        reject: bool,
    ) {
        match self
            .follower_reads
            .answer(from, self.term, request, index, reject)
        {
            Answer::Confirmed(reads) => self.reads_ready.extend(reads),
            Answer::Refused(ctxs) => self.failed_reads.extend(ctxs),
            Answer::Ignored => {}
        }
    }

    /// Fails every follower read: the term or the leader changed, so an answer still on
    /// its way may come from a deposed leader and must not count.
    pub(crate) fn fail_follower_reads(&mut self) {
        let failed = self.follower_reads.take_all();
        self.failed_reads.extend(failed);
    }

    // -------------------------------------------------------- the leader's side

    /// A linearizable read on the leader, its own (`read_index`) or a follower's request:
    /// answered at once by a lone voter or a valid lease, otherwise in the next heartbeat
    /// round (after the first commit of the term, thesis 6.4 step 1).
    pub(crate) fn leader_read(&mut self, reader: Reader) -> Result<(), ProposeError> {
        let me = self.cfg.id;
        let commit = self.log.commit;
        let single = self.membership.voters == [me];
        let limit = self.cfg.pending_reads_max;
        let lease = self.lease_valid();
        let RoleState::Leader(ls) = &mut self.role else {
            return Err(ProposeError::NotLeader {
                leader: self.leader,
            });
        };
        if ls.reads.len() >= limit {
            // A limit on everything: a leader whose followers do not answer must not
            // grow without bound; the caller retries or fails the request.
            return Err(ProposeError::TooManyPendingReads { limit });
        }
        if commit < ls.term_start {
            // The commit index is only known current once an entry of this term is
            // committed.
            ls.reads.wait_for_term_commit(reader);
        } else if single || lease {
            self.release_read(reader, commit);
        } else {
            let next = &mut self.next_read_round;
            ls.reads.add(reader, commit, me, || {
                *next += 1;
                *next - 1
            });
        }
        Ok(())
    }

    /// A follower's ReadIndex request reached this replica. A replica outside the
    /// membership (removed, still being sent its removal) is refused: it never serves.
    pub(crate) fn on_read_index(&mut self, from: NodeId, request: u64) {
        let m = &self.membership;
        let member = m.voters.contains(&from) || m.learners.contains(&from);
        if !member || self.leader_read(Reader::Remote { from, request }).is_err() {
            self.refuse_remote_read(from, request);
        }
    }

    /// A confirmed read: the leader's own becomes a `ReadState`, a follower's request is
    /// answered.
    pub(crate) fn release_read(&mut self, reader: Reader, index: Index) {
        match reader {
            Reader::Local(ctx) => self.reads_ready.push(ReadState { ctx, index }),
            Reader::Remote { from, request } => self.send(
                from,
                MessageBody::ReadIndexResp {
                    request,
                    index,
                    reject: false,
                },
            ),
        }
    }

    /// A read that can no longer be confirmed: the leader's own fails, a follower is told
    /// so that it fails its batch at once rather than at its timeout.
    pub(crate) fn fail_read(&mut self, reader: Reader) {
        match reader {
            Reader::Local(ctx) => self.failed_reads.push(ctx),
            Reader::Remote { from, request } => self.refuse_remote_read(from, request),
        }
    }

    pub(crate) fn refuse_remote_read(&mut self, from: NodeId, request: u64) {
        self.send(
            from,
            MessageBody::ReadIndexResp {
                request,
                index: 0,
                reject: true,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_queued_together_share_one_request_and_its_answer() {
        let mut f = FollowerReads::new(0);
        f.queue(1);
        f.queue(2);
        let id = f.take_queued(NodeId(1), 3, 10).expect("queued");
        assert_eq!(f.take_queued(NodeId(1), 3, 10), None, "nothing left");
        assert_eq!(f.len(), 2);
        assert_eq!(
            f.answer(NodeId(1), 3, id, 7, false),
            Answer::Confirmed(vec![
                ReadState { ctx: 1, index: 7 },
                ReadState { ctx: 2, index: 7 }
            ])
        );
        assert_eq!(f.answer(NodeId(1), 3, id, 8, false), Answer::Ignored);
        assert_eq!(f.len(), 0);
    }

    #[test]
    fn answers_from_another_leader_term_or_life_are_ignored() {
        let mut old_life = FollowerReads::new(1);
        old_life.queue(1);
        let old_id = old_life.take_queued(NodeId(1), 3, 0).expect("queued");
        let mut f = FollowerReads::new(2);
        f.queue(1);
        let id = f.take_queued(NodeId(1), 3, 0).expect("queued");
        assert_ne!(id, old_id, "lives with different nonces use different ids");
        assert_eq!(f.answer(NodeId(1), 3, old_id, 5, false), Answer::Ignored);
        assert_eq!(f.answer(NodeId(2), 3, id, 5, false), Answer::Ignored);
        assert_eq!(f.answer(NodeId(1), 4, id, 5, false), Answer::Ignored);
        assert_eq!(
            f.answer(NodeId(1), 3, id, 5, true),
            Answer::Refused(vec![1])
        );
    }

    #[test]
    fn unanswered_requests_are_resent_then_failed() {
        let mut f = FollowerReads::new(0);
        f.queue(1);
        let id = f.take_queued(NodeId(1), 3, 10).expect("queued");
        assert_eq!(f.due(11, 2, 20), Due::default());
        let d = f.due(12, 2, 20);
        assert_eq!(d.resend, vec![(NodeId(1), id)]);
        assert!(d.failed.is_empty());
        assert_eq!(f.due(13, 2, 20), Due::default(), "resent at 12");
        let d = f.due(30, 2, 20);
        assert_eq!(d.failed, vec![1]);
        assert!(d.resend.is_empty(), "a failed request is not resent");
        assert_eq!(f.len(), 0);
    }

    #[test]
    fn take_all_fails_queued_and_inflight_reads() {
        let mut f = FollowerReads::new(0);
        f.queue(1);
        f.take_queued(NodeId(1), 3, 0);
        f.queue(2);
        assert_eq!(f.take_all(), vec![2, 1]);
        assert_eq!(f.len(), 0);
    }
}
