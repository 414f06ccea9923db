//! Leader election: randomized timeouts, PreVote (thesis 9.6), the CheckQuorum lease,
//! votes that count only once durable, and the role transitions.

use crate::node::{planted, Held, LeaderState, Raft, RoleState};
use crate::progress::Progress;
use crate::quorum::{self, VoteResult};
use crate::read_index::ReadRounds;
use crate::types::{EntryKind, Index, Message, MessageBody, Term};
use kv_shared::NodeId;
use std::collections::BTreeMap;

/// Most doublings of the election timeout after timeouts without a leader (x8). An
/// election needs two durable writes in a row (the candidate's term, then each voter's
/// grant) plus a round trip: with fsyncs as long as the minimum timeout, elections at the
/// base timeout can time out before their votes are durable, again and again, and each
/// failed one starts the next term. Doubling lets the timeout outgrow the disk; hearing a
/// leader resets it.
pub(crate) const ELECTION_BACKOFF_DOUBLINGS_MAX: u32 = 3;

/// Most resends of one election's vote requests (`Config::vote_resend_ticks`).
pub(crate) const VOTE_RESENDS_MAX: u32 = 3;

/// True if `elapsed` ticks into an election the unanswered vote requests are due again:
/// after `period` ticks, then 2 and 4 periods later ([`VOTE_RESENDS_MAX`] times).
fn vote_resend_due(elapsed: u32, period: u32) -> bool {
    (1..=VOTE_RESENDS_MAX).any(|n| elapsed == period.saturating_mul((1 << n) - 1))
}

impl Raft {
    /// Follower/candidate clock: start an election when the randomized timeout expires.
    pub(crate) fn tick_election(&mut self) {
        self.election_elapsed = self.election_elapsed.saturating_add(1);
        if self.election_elapsed < self.randomized_timeout {
            if let Some(period) = self.cfg.vote_resend_ticks {
                if vote_resend_due(self.election_elapsed, period) {
                    self.resend_vote_requests();
                }
            }
            return;
        }
        if self.promotable() {
            self.election_elapsed = 0;
            self.leaderless_timeouts = self.leaderless_timeouts.saturating_add(1);
            self.hup();
        } else if !self.membership.voters.is_empty() {
            // No leader heard for an election timeout: it is forgotten, so that its lease
            // no longer makes this replica ignore (pre-)votes. A candidate's membership
            // may be newer than ours and count us as a voter (a promotion not yet
            // applied here), and with another voter gone nobody may win without our
            // vote. Voting while not a voter is what etcd's learners do too.
            let term = self.term;
            self.become_follower(term, None);
            self.learner_asks_for_a_leader();
        }
    }

    /// A learner (or a replica its membership does not list yet) that heard no leader for
    /// an election timeout may have been removed by a leader that then lost its
    /// leadership: no later leader knows it holds a replica.
    /// It sends the voters a PreVote it never acts on (it cannot become a candidate), so
    /// that the leader among them sends it the log, its removal included
    /// (`replicate_to_removed_campaigner`); a learner still a member is replicated to anyway.
    fn learner_asks_for_a_leader(&mut self) {
        let voters = self.other_voters();
        self.send_leader_probes(&voters);
    }

    /// A PreVote for the next term to each of `to`: a pre-candidate's campaign, or a probe
    /// this replica never acts on (`learner_asks_for_a_leader`, `Raft::ask_for_leader`).
    pub(crate) fn send_leader_probes(&mut self, to: &[NodeId]) {
        let (last_index, last_term) = (self.log.last_index(), self.log.last_term());
        for &v in to {
            self.msgs.push(Message {
                from: self.cfg.id,
                to: v,
                term: self.term + 1,
                body: MessageBody::PreVote {
                    last_index,
                    last_term,
                },
            });
        }
    }

    /// A (pre-)candidate asks the voters that have not answered again: one lost request or
    /// answer otherwise costs a whole election timeout. Asking again is harmless: a PreVote
    /// changes nothing, and a voter grants a Vote again to the candidate it voted for in
    /// that term. A candidate asks again only once its own vote counts, that is once its
    /// term is durable (the first requests waited for that too). Any other role: nothing.
    /// `vote_resend_ticks` calls it on ticks; a caller that needs resends finer than its
    /// tick calls it on its own timer (course mode, `testdata/vote_resend_on_call.txt`).
    pub fn resend_vote_requests(&mut self) {
        self.drained = false;
        let unanswered = |votes: &BTreeMap<NodeId, bool>, voters: Vec<NodeId>| -> Vec<NodeId> {
            voters
                .into_iter()
                .filter(|v| !votes.contains_key(v))
                .collect()
        };
        let voters = self.other_voters();
        match &self.role {
            RoleState::PreCandidate { votes } => {
                let to = unanswered(votes, voters);
                self.send_leader_probes(&to);
            }
            RoleState::Candidate { votes, transfer } if votes.contains_key(&self.cfg.id) => {
                let transfer = *transfer;
                let (last_index, last_term) = (self.log.last_index(), self.log.last_term());
                for to in unanswered(votes, voters) {
                    self.msgs.push(Message {
                        from: self.cfg.id,
                        to,
                        term: self.term,
                        body: MessageBody::Vote {
                            last_index,
                            last_term,
                            transfer,
                        },
                    });
                }
            }
            _ => {}
        }
    }

    /// A leader of the current term exists: elections are back to the base timeout.
    pub(crate) fn heard_leader(&mut self) {
        if self.leaderless_timeouts > 0 {
            self.leaderless_timeouts = 0;
            self.reset_randomized_timeout();
        }
    }

    /// Starts an election: PreVote first if enabled. Never past `RAFT_TERM_MAX`: peers
    /// refuse higher terms, and only a forged message can have brought the term there.
    pub(crate) fn hup(&mut self) {
        if matches!(self.role, RoleState::Leader(_))
            || !self.promotable()
            || self.term >= kv_shared::limits::RAFT_TERM_MAX
        {
            return;
        }
        if self.cfg.pre_vote {
            self.become_pre_candidate();
        } else {
            self.campaign(false);
        }
    }

    fn become_pre_candidate(&mut self) {
        // Term and vote stay: a failed pre-vote disturbs nobody (thesis 9.6).
        self.fail_reads_if_leader();
        self.fail_follower_reads();
        self.role = RoleState::PreCandidate {
            votes: BTreeMap::new(),
        };
        self.leader = None;
        self.reset_randomized_timeout();
        self.events.push(crate::Event::ElectionStarted {
            term: self.term + 1,
            pre_vote: true,
            transfer: false,
        });
        self.record_vote(self.cfg.id, self.term + 1, true, true);
        if !matches!(self.role, RoleState::PreCandidate { .. }) {
            return; // a single voter wins at once
        }
        let voters = self.other_voters();
        self.send_leader_probes(&voters);
    }

    /// Becomes a candidate in a new term. `transfer` marks a campaign started by
    /// TimeoutNow, which overrides the voters' leader lease.
    pub(crate) fn campaign(&mut self, transfer: bool) {
        if self.term >= kv_shared::limits::RAFT_TERM_MAX {
            return; // see `hup`
        }
        self.fail_reads_if_leader();
        self.fail_follower_reads();
        self.term += 1;
        self.vote = self.cfg.id;
        self.leader = None;
        self.role = RoleState::Candidate {
            votes: BTreeMap::new(),
            transfer,
        };
        self.election_elapsed = 0;
        self.reset_randomized_timeout();
        self.events.push(crate::Event::ElectionStarted {
            term: self.term,
            pre_vote: false,
            transfer,
        });
        // Our own vote counts only once the (term, vote) write is durable, like anyone
        // else's grant (etcd: the self-vote goes through msgsAfterAppend).
        let dep = self
            .write_dependency()
            .expect("a new term always needs a write");
        self.held.push((dep, Held::SelfVote(self.term)));
        // The vote requests wait for the same write: were they sent before the new term
        // is durable, a crash could lose the term after two peers granted it, and the
        // restarted node could win the same term again and write different entries at
        // the same (index, term) (kvsim's churn profile found this).
        let (last_index, last_term) = (self.log.last_index(), self.log.last_term());
        for v in self.other_voters() {
            let request = Message {
                from: self.cfg.id,
                to: v,
                term: self.term,
                body: MessageBody::Vote {
                    last_index,
                    last_term,
                    transfer,
                },
            };
            self.held.push((dep, Held::Send(request)));
        }
    }

    /// The durable self-vote of `term` is in.
    pub(crate) fn count_self_vote(&mut self, term: Term) {
        if term == self.term && matches!(self.role, RoleState::Candidate { .. }) {
            self.record_vote(self.cfg.id, term, false, true);
        }
    }

    /// Records a (pre-)vote answer and acts on the outcome.
    pub(crate) fn record_vote(&mut self, from: NodeId, term: Term, pre: bool, granted: bool) {
        let votes = match &mut self.role {
            RoleState::PreCandidate { votes } if pre => {
                // Grants name the term we would campaign in; refusals carry the voter's own
                // term, which is ours (higher ones already made us follow).
                let expected = if granted { self.term + 1 } else { self.term };
                if term != expected {
                    return;
                }
                votes
            }
            RoleState::Candidate { votes, .. } if !pre && term == self.term => votes,
            _ => return,
        };
        votes.entry(from).or_insert(granted);
        let votes = votes.clone();
        match quorum::vote_result(&self.membership.voters, |v| votes.get(&v).copied()) {
            VoteResult::Won if pre => self.campaign(false),
            VoteResult::Won => self.become_leader(),
            VoteResult::Lost => {
                let term = self.term;
                self.become_follower(term, None);
            }
            VoteResult::Pending => {}
        }
    }

    /// Answers a Vote or PreVote (the term was already reconciled by `step`).
    pub(crate) fn handle_vote_request(&mut self, m: Message) {
        let (last_index, last_term, pre) = match m.body {
            MessageBody::PreVote {
                last_index,
                last_term,
            } => (last_index, last_term, true),
            MessageBody::Vote {
                last_index,
                last_term,
                ..
            } => (last_index, last_term, false),
            _ => return,
        };
        self.tell_commit_to_newer_member(m.from, last_index, last_term);
        let can_vote = self.vote == m.from
            || (self.vote.is_none() && self.leader.is_none())
            || (pre && m.term > self.term)
            || (!pre && planted!(self, GrantSecondVote));
        if can_vote && self.log.is_up_to_date(last_index, last_term) {
            if pre {
                // A pre-vote grant promises nothing, so it needs no write.
                self.msgs.push(Message {
                    from: self.cfg.id,
                    to: m.from,
                    term: m.term,
                    body: MessageBody::PreVoteResp { reject: false },
                });
            } else {
                self.election_elapsed = 0;
                self.vote = m.from;
                self.send_after_persist(m.from, MessageBody::VoteResp { reject: false });
            }
        } else if pre {
            self.send(m.from, MessageBody::PreVoteResp { reject: true });
        } else {
            self.send(m.from, MessageBody::VoteResp { reject: true });
        }
    }

    /// A member whose log is newer than ours, asking for a vote while we know no leader,
    /// may hold entries it does not know are committed: a crash can keep a write's
    /// entries and lose its commit index. Its membership, applied only up to its own
    /// commit, may then still list it as a learner, so it never campaigns, while nobody
    /// else can win without its vote (its log is newer). Our commit index lets it apply
    /// the membership that made it a voter (`learn_committed` takes it only if it holds
    /// that entry). Logs of equal age, the usual election, cost no extra message.
    fn tell_commit_to_newer_member(&mut self, from: NodeId, last_index: Index, last_term: Term) {
        let member =
            self.membership.voters.contains(&from) || self.membership.learners.contains(&from);
        let commit = self.log.commit;
        if !member || self.leader.is_some() || commit == 0 || last_index < commit {
            return;
        }
        let newer = last_term > self.log.last_term()
            || (last_term == self.log.last_term() && last_index > self.log.last_index());
        if !newer {
            return;
        }
        if let Some(log_term) = self.log.term(commit) {
            self.msgs.push(Message {
                from: self.cfg.id,
                to: from,
                term: log_term,
                body: MessageBody::Committed {
                    index: commit,
                    log_term,
                },
            });
        }
    }

    /// Follows `leader` (if known) in `term`; a higher term clears the vote.
    pub(crate) fn become_follower(&mut self, term: Term, leader: Option<NodeId>) {
        self.settle_appends();
        self.fail_reads_if_leader();
        if term > self.term || leader != self.leader {
            self.fail_follower_reads();
        }
        if term > self.term {
            self.term = term;
            self.vote = NodeId::NONE;
        }
        self.role = RoleState::Follower;
        self.leader = leader;
        self.election_elapsed = 0;
        self.reset_randomized_timeout();
    }

    pub(crate) fn become_leader(&mut self) {
        let me = self.cfg.id;
        let last = self.log.last_index();
        let progress = self
            .membership
            .voters
            .iter()
            .chain(self.membership.learners.iter())
            .filter(|id| **id != me)
            .map(|id| (*id, Progress::new(last + 1)))
            .collect();
        self.role = RoleState::Leader(Box::new(LeaderState {
            progress,
            // Conservative: anything in the log may be an unapplied change.
            pending_conf_index: last,
            term_start: last + 1,
            transfer: None,
            reads: ReadRounds::default(),
            lease: crate::lease::Lease::default(),
            bcast_pending: true,
            since: self.now,
            lazy: Default::default(),
        }));
        self.leader = Some(me);
        self.leaderless_timeouts = 0;
        self.quorum_moved = true;
        self.election_elapsed = 0;
        self.heartbeat_elapsed = 0;
        self.retransmit_elapsed = 0;
        // The no-op commits this term's first entry, which commits everything before it
        // (thesis 3.6.2) and unblocks ReadIndex (6.4) and membership changes.
        self.append_as_leader(EntryKind::Noop, bytes::Bytes::new());
        self.replicate_to_removed_campaigners();
    }

    /// Leadership lost (or abandoned): pending reads can no longer be confirmed.
    pub(crate) fn fail_reads_if_leader(&mut self) {
        if let RoleState::Leader(ls) = &mut self.role {
            for reader in ls.reads.take_all() {
                self.fail_read(reader);
            }
        }
    }

    pub(crate) fn other_voters(&self) -> Vec<NodeId> {
        self.membership
            .voters
            .iter()
            .copied()
            .filter(|v| *v != self.cfg.id)
            .collect()
    }
}
