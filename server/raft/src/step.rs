//! How a message enters a replica: addressing and well-formedness checks, the term
//! rule (a higher term makes it a follower, a lower one is answered or ignored), and
//! the dispatch by role; Appends have a path of their own (`step_append`) for callers
//! that decode them without building messages.

use crate::check::check_message;
use crate::node::{Raft, RoleState};
use crate::types::*;
use kv_shared::NodeId;

impl Raft {
    /// Handles a message from a peer of this group. Messages for another replica are
    /// ignored; malformed ones (see [`check_message`]) are dropped and counted in
    /// [`Raft::refusals`].
    pub fn step(&mut self, msg: Message) {
        if let MessageBody::Append {
            prev_index,
            prev_term,
            mut entries,
            commit,
        } = msg.body
        {
            let header = AppendHeader {
                from: msg.from,
                to: msg.to,
                term: msg.term,
                prev_index,
                prev_term,
                commit,
            };
            return self.step_append(header, &mut entries);
        }
        if let MessageBody::AppendResp {
            reject: false,
            index,
            hint_index: 0,
            hint_term: 0,
        } = msg.body
        {
            return self.step_ack(msg.from, msg.to, msg.term, index);
        }
        self.drained = false;
        if !self.addressed_here(msg.from, msg.to) {
            return;
        }
        if let Err(reason) = check_message(&msg) {
            self.refuse(reason);
            return;
        }
        if let MessageBody::Committed { index, log_term } = msg.body {
            // Carries a fact about the log, not a term: whatever this replica's term.
            self.learn_committed(index, log_term);
            return;
        }
        self.replicate_to_removed_campaigner(&msg);
        if msg.term > self.term {
            if let MessageBody::Vote { .. } | MessageBody::PreVote { .. } = msg.body {
                let transfer = matches!(msg.body, MessageBody::Vote { transfer: true, .. });
                if self.in_lease() && !transfer {
                    // CheckQuorum stickiness: a live leader exists, ignore the disruptor.
                    return;
                }
            }
            match msg.body {
                MessageBody::PreVote { .. } | MessageBody::PreVoteResp { reject: false } => {}
                MessageBody::Heartbeat { .. } | MessageBody::InstallSnapshot { .. } => {
                    self.become_follower(msg.term, Some(msg.from))
                }
                _ => self.become_follower(msg.term, None),
            }
        } else if msg.term < self.term {
            match msg.body {
                MessageBody::Heartbeat { .. } => self.answer_stale_leader(msg.from),
                MessageBody::PreVote { .. } => {
                    self.send(msg.from, MessageBody::PreVoteResp { reject: true })
                }
                // Refused with our term, which the candidate takes (Raft's "reply with
                // currentTerm"). Ignored, a candidate whose log is newest but whose term
                // lags can only catch up by campaigning faster than the voter whose term
                // leads, while that voter cannot win without it.
                MessageBody::Vote { .. } => {
                    self.send(msg.from, MessageBody::VoteResp { reject: true })
                }
                _ => {}
            }
            return;
        }
        match msg.body {
            MessageBody::PreVote { .. } | MessageBody::Vote { .. } => self.handle_vote_request(msg),
            _ => match self.role {
                RoleState::Leader(_) => self.step_leader(&msg),
                RoleState::Candidate { .. } | RoleState::PreCandidate { .. } => {
                    self.step_candidate(msg)
                }
                RoleState::Follower => self.step_follower(msg),
            },
        }
    }

    /// [`Raft::step`] of the Append `header` with `entries`, which it takes out of the
    /// vector and leaves empty (with its room): a caller that decodes every group's
    /// Appends into one vector allocates nothing per Append. `step` hands its Appends here.
    pub fn step_append(&mut self, header: AppendHeader, entries: &mut Vec<Entry>) {
        self.drained = false;
        let h = header;
        if !self.addressed_here(h.from, h.to) {
            entries.clear();
            return;
        }
        if let Err(reason) = crate::check::check_append(&h, entries) {
            self.refuse(reason);
            entries.clear();
            return;
        }
        // Neither `Committed` nor a vote request: nothing else of `step` applies before
        // the terms are compared.
        if h.term > self.term {
            self.become_follower(h.term, Some(h.from));
        } else if h.term < self.term {
            self.answer_stale_leader(h.from);
            entries.clear();
            return;
        }
        match self.role {
            RoleState::Leader(_) => {
                // Another leader of this term cannot exist; `step_leader` only notes
                // that the sender was heard, as for any message.
                let body = MessageBody::Append {
                    prev_index: h.prev_index,
                    prev_term: h.prev_term,
                    entries: std::mem::take(entries),
                    commit: h.commit,
                };
                let msg = Message {
                    from: h.from,
                    to: h.to,
                    term: h.term,
                    body,
                };
                self.step_leader(&msg);
            }
            RoleState::Candidate { .. } | RoleState::PreCandidate { .. } => {
                // A leader of our term exists.
                self.become_follower(h.term, Some(h.from));
                self.follow_append(&h, entries);
            }
            RoleState::Follower => self.follow_append(&h, entries),
        }
        entries.clear();
    }

    /// A follower takes an Append of its term: the leader is heard.
    fn follow_append(&mut self, h: &AppendHeader, entries: &mut Vec<Entry>) {
        self.heard_from_leader(h.from);
        self.handle_append(h.from, h.prev_index, h.prev_term, entries, h.commit);
    }

    /// False for a message not for this replica: to another, from itself or from nobody.
    pub(crate) fn addressed_here(&self, from: NodeId, to: NodeId) -> bool {
        to == self.cfg.id && from != self.cfg.id && !from.is_none()
    }

    /// A stale leader may never hear the new term otherwise: cut off by
    /// PreVote/CheckQuorum, or removed from the group while it was away, so that no
    /// current member sends it anything. The reply carries this replica's term and makes
    /// it step down (Raft's "reply with currentTerm"; etcd answers only with PreVote or
    /// CheckQuorum on).
    fn answer_stale_leader(&mut self, to: NodeId) {
        self.send(to, MessageBody::HeartbeatResp { read_round: 0 });
    }

    /// A message of this term from the leader (an Append, a heartbeat, a snapshot chunk).
    fn heard_from_leader(&mut self, from: NodeId) {
        self.election_elapsed = 0;
        self.leader = Some(from);
        self.heard_leader();
    }

    fn step_follower(&mut self, msg: Message) {
        match msg.body {
            MessageBody::Heartbeat { .. } | MessageBody::InstallSnapshot { .. } => {
                self.heard_from_leader(msg.from);
                match msg.body {
                    MessageBody::Heartbeat { commit, read_round } => {
                        let c = commit.min(self.log.last_index());
                        if c > self.log.commit {
                            self.commit_to(c);
                        }
                        self.send(msg.from, MessageBody::HeartbeatResp { read_round });
                    }
                    MessageBody::InstallSnapshot {
                        meta,
                        offset,
                        total_len,
                        chunk,
                    } => self.handle_snapshot_chunk(msg.from, meta, offset, total_len, chunk),
                    _ => unreachable!(),
                }
            }
            MessageBody::TimeoutNow if self.promotable() => self.campaign(true),
            MessageBody::ReadIndex { request } => self.refuse_remote_read(msg.from, request),
            MessageBody::ReadIndexResp {
                request,
                index,
                reject,
            } => self.on_read_index_resp(msg.from, request, index, reject),
            _ => {}
        }
    }

    fn step_candidate(&mut self, msg: Message) {
        match msg.body {
            MessageBody::Heartbeat { .. } | MessageBody::InstallSnapshot { .. } => {
                // A leader of our term exists.
                self.become_follower(msg.term, Some(msg.from));
                self.step_follower(msg);
            }
            MessageBody::PreVoteResp { reject } => {
                self.record_vote(msg.from, msg.term, true, !reject)
            }
            MessageBody::VoteResp { reject } => {
                self.record_vote(msg.from, msg.term, false, !reject)
            }
            MessageBody::ReadIndex { request } => self.refuse_remote_read(msg.from, request),
            _ => {}
        }
    }
}
