//! The course-mode runtime: one UDP socket to the harness, one [`NodeCore`] with one
//! group and in-memory storage, and a single-threaded loop that feeds the core and sends
//! what it produces at once (latency is scored, so nothing waits for a tick).
//!
//! Order of each turn: receive (one datagram, then whatever else is already queued), run
//! due ticks, release parked requests, then flush: complete the core's disk writes at once
//! (memory is the storage here: the harness never restarts a replica), ask kv-raft for
//! what the [`StallTimer`] says is due, answer clients, then send the peer messages.

use crate::core_config::{node_config, HEARTBEAT_RESEND_TICKS};
use crate::doubt::{Doubts, Now, Touch};
use crate::handoff::{self, CommitNotice, Duty, Handoff, Owed, SideInfo};
use crate::ids::{CourseId, Roster};
use crate::loss::{LossMeter, SendCounter};
use crate::peer;
use crate::protocol::{self, Answer, Inbound, Stamp};
use crate::report::Report;
use crate::requests::{disposition, Disposition, MidTable};
use crate::settings::Settings;
use crate::stall::{self, StallAction, StallTimer, View};
use crate::vote_resend::VoteResends;
use bytes::Bytes;
use kv_node::codec::PeerBatch;
use kv_node::{ClientToken, GroupMessage, NodeCore};
use kv_raft::{MessageBody, Role, Term};
use kv_shared::proto::{ClientReply, Op, Outcome};
use kv_shared::{NodeId, ShardId};
use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::io::Errno;
use std::collections::HashMap;
use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The only group in course mode.
const SHARD: ShardId = ShardId(0);
/// Datagrams handled per turn before flushing (the rest wait for the next turn).
const DRAIN_DATAGRAMS_MAX: usize = 64;
/// Receive buffer: larger than any datagram the harness forwards.
const RECV_BYTES_MAX: usize = 65_536;
/// The shortest receive timeout (a zero timeout is an error for the socket).
const WAIT_MIN: Duration = Duration::from_micros(50);
/// One replica under the harness.
pub struct Runtime {
    socket: UdpSocket,
    harness: SocketAddr,
    roster: Roster,
    settings: Settings,
    core: NodeCore,
    mids: MidTable,
    stalls: StallTimer,
    started: Instant,
    next_tick: Instant,
    /// Requests held because the leader we would redirect to seems gone: token -> since.
    parked: HashMap<u64, Instant>,
    /// When each request still unanswered was first parked (bounds the total wait).
    park_started: HashMap<u64, Instant>,
    /// Last datagram from each peer.
    heard: HashMap<NodeId, Instant>,
    /// The last redirect sent to each client: the leader named, and when.
    redirected: HashMap<CourseId, (NodeId, Instant)>,
    /// A leader a client bounced back from (see [`Runtime::suspect`]), and when.
    bounce: Option<(NodeId, Instant)>,
    /// Who answers puts across leader changes.
    handoff: Handoff,
    /// When a leader tells a follower its commit index in a datagram of its own.
    notice: CommitNotice,
    /// Answers to a previous leader's puts held until we know whether it sent them, and
    /// our own answers about the same keys, waiting behind them.
    doubts: Doubts<(ClientToken, ClientReply)>,
    /// The last view traced (role and term changes are traced).
    traced_view: Option<View>,
    /// Numbers our peer datagrams, per destination.
    sent: SendCounter,
    /// The drop rate, from the numbers on datagrams we receive.
    loss: LossMeter,
    /// When kv-raft is asked to resend unanswered vote requests.
    vote_resends: VoteResends,
    /// Whether kv-raft's heartbeat resends are on (they start on).
    heartbeat_resends: bool,
    /// Whether kv-raft's heartbeat suppression is on (it starts as the settings say).
    heartbeat_suppression: bool,
    /// Whether kv-raft's lazy followers are all fast (`set_send_wide`; starts off).
    send_wide: bool,
}

impl Runtime {
    /// Sends the hello at once, then builds the replica. `socket` must be bound (port 0 is
    /// fine); `harness` is where every datagram goes.
    pub fn start(
        socket: UdpSocket,
        harness: SocketAddr,
        roster: Roster,
        settings: Settings,
    ) -> anyhow::Result<Runtime> {
        socket.send_to(&protocol::hello(roster.me()), harness)?;
        let started = Instant::now();
        let mut core = NodeCore::new(node_config(&settings, &roster), Default::default())
            .map_err(|e| anyhow::anyhow!("empty in-memory state failed to load: {e}"))?;
        // The harness checks a get against the put acknowledged last when the get's
        // reply arrives, so gets are served in the flush, after its writes' replies.
        core.set_reads_on_arrival(false);
        let stalls = StallTimer::new(settings.clone());
        let settings_suppress = settings.suppress_heartbeats;
        let handoff = Handoff::new(roster.me_node());
        let notice = CommitNotice::new(
            settings.commit_notice_idle,
            settings.commit_notice_idle_sparse,
        );
        let doubts = Doubts::new(settings.doubt_max, settings.defer_doubts);
        Ok(Runtime {
            socket,
            harness,
            roster,
            next_tick: started + settings.tick,
            settings,
            core,
            mids: MidTable::default(),
            stalls,
            started,
            parked: HashMap::new(),
            park_started: HashMap::new(),
            heard: HashMap::new(),
            redirected: HashMap::new(),
            bounce: None,
            handoff,
            notice,
            doubts,
            traced_view: None,
            sent: SendCounter::default(),
            loss: LossMeter::default(),
            vote_resends: VoteResends::default(),
            heartbeat_resends: true,
            heartbeat_suppression: settings_suppress,
            send_wide: false,
        })
    }

    /// Runs until `terminate` is set (the harness ends replicas with SIGTERM, and the
    /// binary's handler sets it), then says its last words. A signal interrupts the
    /// socket wait (a wait with a timeout is never restarted), so the turn it ends is the
    /// last.
    pub fn run(mut self, terminate: &AtomicBool) -> anyhow::Result<()> {
        let mut buf = vec![0u8; RECV_BYTES_MAX];
        while !terminate.load(Ordering::Relaxed) {
            self.turn(&mut buf)?;
        }
        self.last_words();
        Ok(())
    }

    /// A leader killed after answering puts but before its next datagram leaves its
    /// successor unable to tell those puts from unanswered ones: it answers them again
    /// once its hold runs out (doubt.rs), a duplicate. So a leader that is told to stop
    /// first tells every live peer what it answered through. Whether the harness still
    /// forwards a datagram a replica sends after its SIGTERM is up to the harness; if it
    /// does not, nothing is lost.
    fn last_words(&mut self) {
        if self.view().role != Role::Leader {
            return;
        }
        let report = self.handoff.report();
        let me = self.roster.me_node();
        let now = Instant::now();
        let live: Vec<NodeId> = self
            .heard
            .iter()
            .filter(|&(&n, &at)| n != me && self.heard_lately(at, now))
            .map(|(&n, _)| n)
            .collect();
        for node in live {
            self.send_commit_notice_to(node, &report);
        }
    }

    fn turn(&mut self, buf: &mut [u8]) -> anyhow::Result<()> {
        let now = Instant::now();
        let mut deadline = self.next_tick;
        if let Some(d) = self.stalls.next_deadline() {
            deadline = deadline.min(d);
        }
        if let Some(d) = self.park_deadline() {
            deadline = deadline.min(d);
        }
        if let Some(d) = self.notice.deadline() {
            deadline = deadline.min(d);
        }
        if let Some(d) = self.doubts.deadline() {
            deadline = deadline.min(d);
        }
        if let Some(d) = self.vote_resends.deadline() {
            deadline = deadline.min(d);
        }
        let wait = deadline.saturating_duration_since(now).max(WAIT_MIN);
        // The socket's receive timeout counts scheduler ticks (4 ms here): a 1 ms stall
        // release would leave 4-9 ms late. Under heavy loss that lateness is the median
        // latency, so the stall timer asks for a precise wait there; under light loss the
        // coarse one sends fewer needless releases (docs/COURSE_MODE.md, "Timing").
        let (waited, drain) = if self.stalls.precise_timing() {
            self.wait_precisely(wait)?;
            (true, DRAIN_DATAGRAMS_MAX)
        } else {
            self.socket.set_read_timeout(Some(wait))?;
            (self.receive_one(buf)?, DRAIN_DATAGRAMS_MAX - 1)
        };
        if waited {
            self.socket.set_nonblocking(true)?;
            for _ in 0..drain {
                if !self.receive_one(buf)? {
                    break;
                }
            }
            self.socket.set_nonblocking(false)?;
        }
        let now = Instant::now();
        self.run_due_ticks(now);
        self.release_parked(now);
        self.flush(now);
        Ok(())
    }

    /// Waits until a datagram is waiting or `wait` has passed, to within the kernel's
    /// timer slack (microseconds), not its scheduler tick.
    fn wait_precisely(&self, wait: Duration) -> std::io::Result<()> {
        let timeout = Timespec {
            tv_sec: wait.as_secs().try_into().unwrap_or(i64::MAX),
            tv_nsec: wait.subsec_nanos().into(),
        };
        let mut fds = [PollFd::new(&self.socket, PollFlags::IN)];
        match poll(&mut fds, Some(&timeout)) {
            Ok(_) | Err(Errno::INTR) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Runs every tick due by `now`, however late. The lease is counted in ticks: a
    /// leader that skipped ticks would think less time had passed than did, and a
    /// follower must run the ticks that fell due before a message arrived before it
    /// handles the message (run after it, they would eat into the vote-refusal window
    /// the message started).
    fn run_due_ticks(&mut self, now: Instant) {
        while now >= self.next_tick {
            self.core.tick();
            self.next_tick += self.settings.tick;
        }
    }

    /// Receives and handles one datagram; false if none was waiting.
    fn receive_one(&mut self, buf: &mut [u8]) -> anyhow::Result<bool> {
        match self.socket.recv_from(buf) {
            Ok((n, from)) => {
                if from == self.harness {
                    let now = Instant::now();
                    self.run_due_ticks(now);
                    self.handle(&buf[..n], now);
                }
                Ok(true)
            }
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) =>
            {
                Ok(false)
            }
            // ICMP "port unreachable" echoes and the like: nothing to do but go on.
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => Ok(true),
            Err(e) => Err(e.into()),
        }
    }

    fn handle(&mut self, bytes: &[u8], now: Instant) {
        match protocol::parse_inbound(bytes, self.roster.me()) {
            Inbound::Get { client, mid, key } => {
                self.note_client(client, now);
                let op = Op::Get {
                    key: Bytes::from(key.into_bytes()),
                    stale: false,
                };
                if let Some(token) = self.mids.admit(self.roster.me_node(), client, mid, op) {
                    self.trace_admission(token);
                    self.submit(token);
                }
            }
            Inbound::Put {
                client,
                mid,
                key,
                value,
            } => {
                self.note_client(client, now);
                let op = Op::Put {
                    key: Bytes::from(key.into_bytes()),
                    value: Bytes::from(value.into_bytes()),
                };
                if let Some(token) = self.mids.admit(self.roster.me_node(), client, mid, op) {
                    self.trace_admission(token);
                    let p = self.mids.get(token).expect("just admitted");
                    self.handoff.learn(SideInfo {
                        session: p.request.client.0,
                        client: p.client,
                        mid: p.mid.clone(),
                    });
                    self.submit(token);
                }
            }
            Inbound::Malformed { client, mid } => {
                if self.mids.first_sight(client, &mid) {
                    self.send_reply(client, &mid, &Answer::Fail, self.belief());
                }
            }
            Inbound::Peer {
                src,
                payload,
                side,
                report,
                seq,
                holds_back,
            } => {
                let Some(from) = self.roster.peer_node(src) else {
                    return;
                };
                self.loss.on_datagram(from, seq);
                let msgs = match payload.as_deref().map(peer::decode) {
                    Some(Ok(msgs)) => msgs,
                    Some(Err(_)) => return,
                    None => Vec::new(),
                };
                self.heard.insert(from, now);
                if self.settings.trace && report.through > self.handoff.report().through {
                    self.trace(format_args!("report {report:?} from {src}"));
                }
                self.handoff.hear_report(&report);
                if msgs.is_empty() {
                    return; // a commit notice
                }
                for info in side {
                    self.handoff.learn(info);
                }
                for gm in &msgs {
                    if matches!(
                        gm.msg.body,
                        MessageBody::Append { .. } | MessageBody::Heartbeat { .. }
                    ) {
                        self.doubts.note_leader(gm.msg.term, from, holds_back);
                    }
                }
                self.note_entries(&msgs);
                self.core.on_peer_messages(from, msgs);
            }
            Inbound::Ignored => {}
        }
    }

    /// A diagnostic line on stderr when tracing is on (see [`Settings::trace`]).
    fn trace(&self, what: std::fmt::Arguments) {
        if self.settings.trace {
            let ms = self.started.elapsed().as_secs_f64() * 1000.0;
            eprintln!("{ms:10.3} {} {what}", self.roster.me());
        }
    }

    fn trace_admission(&self, token: ClientToken) {
        if let Some(p) = self.mids.get(token).filter(|_| self.settings.trace) {
            self.trace(format_args!(
                "request {} {} token {} session {} {:?}",
                p.client, p.mid, token.0, p.request.client.0, p.request.op
            ));
        }
    }

    fn view(&self) -> View {
        let st = self.core.raft_status(SHARD);
        View {
            role: st.role,
            term: st.hard.term,
            commit: st.hard.commit,
            last_index: st.last_index,
            leader: st.leader,
        }
    }

    /// Hands a pending request to the core. A get goes through ReadIndex, which a leader
    /// holding its lease answers at once (kv-raft's `lease_reads`).
    fn submit(&mut self, token: ClientToken) {
        let Some(p) = self.mids.get(token) else {
            return;
        };
        let request = p.request.clone();
        self.core.on_client_request(token, request);
    }

    fn belief(&self) -> Option<NodeId> {
        self.core.leader_of(SHARD)
    }

    /// Whether a peer last heard `at` counts as live: heard within an election timeout
    /// (killed replicas stay destinations, so telling one tells nobody).
    fn heard_lately(&self, at: Instant, now: Instant) -> bool {
        now.saturating_duration_since(at) < self.settings.tick * self.settings.election_ticks_min
    }

    /// A request from a client we recently redirected to the leader we still believe in
    /// means the client could not use that leader: the harness saw it dead (killed
    /// replicas never answer, and the client then picks a random live replica) or it
    /// sent the client back. Redirecting again would only make the client spin.
    fn note_client(&mut self, client: CourseId, now: Instant) {
        if let Some(&(leader, at)) = self.redirected.get(&client) {
            if now.saturating_duration_since(at) < self.settings.bounce_window
                && self.belief() == Some(leader)
            {
                self.bounce = Some((leader, now));
            }
        }
    }

    /// True if redirecting to `hint` is pointless: no leader is known, or a client bounced
    /// back from it and we have not heard from it since.
    fn suspect(&self, hint: Option<NodeId>) -> bool {
        let Some(leader) = hint else {
            return true;
        };
        match self.bounce {
            Some((bounced, at)) if bounced == leader => {
                !matches!(self.heard.get(&leader), Some(&h) if h > at)
            }
            _ => false,
        }
    }

    fn park_deadline(&self) -> Option<Instant> {
        // Parked requests are re-checked every turn; the oldest bounds the wait.
        self.parked
            .values()
            .min()
            .map(|&t| t + self.settings.park_max)
    }

    /// Re-submits parked requests once the leader looks alive again, a new one is known,
    /// or they have waited `park_max`.
    fn release_parked(&mut self, now: Instant) {
        if self.parked.is_empty() {
            return;
        }
        let leader_ok = self.view().role == Role::Leader || !self.suspect(self.belief());
        let due: Vec<u64> = self
            .parked
            .iter()
            .filter(|(_, &since)| {
                leader_ok || now.saturating_duration_since(since) >= self.settings.park_max
            })
            .map(|(&t, _)| t)
            .collect();
        for t in due {
            // Out of the waiting list first: the core now owns the request again (it may
            // even propose it, if this replica leads) until it answers.
            self.parked.remove(&t);
            self.submit(ClientToken(t));
        }
    }

    fn flush(&mut self, now: Instant) {
        let mut replies = Vec::new();
        let mut datagrams = Vec::new();
        let mut applied = Vec::new();
        let mut proposed = Vec::new();
        let mut votes_resent = false;
        let mut stall_checked = false;
        loop {
            let out = self.core.take_output();
            replies.extend(out.replies);
            // The harness's peer payloads carry whole messages (`peer.rs`).
            let me = self.core.config().node;
            let whole = |(to, batch): (NodeId, PeerBatch)| (to, batch.into_messages(me, to));
            datagrams.extend(out.datagrams.into_iter().map(whole));
            applied.extend(out.applied);
            proposed.extend(out.proposed);
            if out.disk_writes.is_empty() {
                if !votes_resent && self.vote_resend_due(&datagrams, now) {
                    votes_resent = true;
                    self.core.resend_vote_requests();
                    continue;
                }
                if !stall_checked {
                    stall_checked = true;
                    if self.release_if_stalled(now) {
                        continue;
                    }
                }
                break;
            }
            // In memory, "durable" is now.
            for w in out.disk_writes {
                self.core.on_disk_done(w.id);
            }
        }
        let view = self.view();
        if self.settings.trace {
            let before = self.traced_view.replace(view);
            if before.map(|b| (b.role, b.term)) != Some((view.role, view.term)) {
                self.trace(format_args!("view {view:?} loss {:?}", self.loss.loss()));
            }
        }
        let resends = stall::wants_heartbeat_resends(self.loss.loss());
        if resends != self.heartbeat_resends {
            self.heartbeat_resends = resends;
            self.core
                .set_heartbeat_resend_ticks(resends.then_some(HEARTBEAT_RESEND_TICKS));
        }
        // Sending wide (heavy loss), every heartbeat goes: the lease needs their echoes,
        // and no lazy follower is left to give them.
        let suppress = self.settings.suppress_heartbeats && !self.stalls.sending_wide();
        if suppress != self.heartbeat_suppression {
            self.heartbeat_suppression = suppress;
            self.core.set_heartbeat_suppression(suppress);
        }
        // Before this round's answers: a put proposed and then answered "not leader" in
        // the same round may still commit, so it becomes an orphan (handoff.rs).
        for p in proposed {
            if let Some(pending) = self.mids.get(p.token) {
                self.handoff.proposed(pending.request.client.0, p.index);
            }
        }
        // Answers leave in log order, and gets last. The harness checks a get's value
        // against the client's last acknowledged put of the key when the reply arrives,
        // so a put's `ok` must never overtake the `ok` of an earlier put of the same key
        // (a new leader answers its predecessors' puts, and its own orphans, in the turn
        // it applies them, next to its own new puts), and must leave before a get that
        // observes it. A get answered this turn was served after this turn's applies (a
        // leader commits only on acknowledgements, all taken in the first pass above).
        let (get_replies, put_replies): (Vec<_>, Vec<_>) =
            replies.into_iter().partition(|(t, _)| {
                self.mids
                    .get(*t)
                    .is_some_and(|p| matches!(p.request.op, Op::Get { .. }))
            });
        let mut applied_puts = HashMap::new();
        for (token, reply) in put_replies {
            if matches!(reply.outcome, kv_shared::proto::Outcome::Done) {
                applied_puts.insert(reply.client.0, (token, reply));
            } else {
                self.answer(token, reply, now);
            }
        }
        for applied in applied {
            let keys = self.handoff.keys_at(applied.index, applied.term);
            if view.role == Role::Leader {
                self.notice.applied(applied.index, keys.len());
            }
            let duties = self.handoff.on_applied(applied.index, applied.term);
            self.trace(format_args!(
                "applied {} term {} duties {duties:?}",
                applied.index, applied.term
            ));
            // A previous leader's puts wait for what we learn of its answers (doubt.rs),
            // held before this entry's own answers, which may be about the same keys.
            let (held, duties): (Vec<_>, Vec<_>) = duties
                .into_iter()
                .partition(|(d, _)| matches!(d, Duty::OkFor(..) | Duty::OkOwn(_)));
            let owed = Owed {
                term: applied.term,
                duties: held,
                keys,
            };
            self.hold_or_defer(applied.index, owed, now);
            for (duty, _) in duties {
                match duty {
                    Duty::CoreAnswers(session) => {
                        if let Some((token, reply)) = applied_puts.remove(&session) {
                            self.answer_in_order(token, reply, now);
                        }
                    }
                    duty => self.perform(duty),
                }
            }
        }
        // Not expected (every applied entry was seen in an append), but never unanswered.
        for (_, (token, reply)) in applied_puts {
            self.answer_in_order(token, reply, now);
        }
        for (token, reply) in get_replies {
            self.answer_in_order(token, reply, now);
        }
        let leader = view.role == Role::Leader;
        if self.handoff.observe(leader, view.term) {
            for (index, owed) in self.handoff.take_unsure() {
                self.hold_or_defer(index, owed, now);
            }
        }
        self.settle_doubts(leader, view.term, now);
        if leader {
            let floor = self.doubts.floor().map(|f| f - 1);
            self.handoff
                .note_answered(floor.map_or(view.commit, |f| f.min(view.commit)));
        }
        self.handoff.note_deferred(self.doubts.deferred_indexes());
        for (_, msgs) in &datagrams {
            self.note_entries(msgs);
        }
        if now.saturating_duration_since(self.started) < self.settings.quiet {
            return;
        }
        // Every answer of this turn has left: what we report is answered through.
        let report = self.handoff.report();
        for (dst, msgs) in datagrams {
            self.send_peer(dst, msgs, &report, now);
        }
        let eager = handoff::eager_notice(self.stalls.defers_first_release(), self.loss.loss());
        if self.notice.due(leader, report.through, eager, now) {
            self.send_commit_notice(&report);
        }
    }

    /// Holds the answers an applied entry owes to a previous leader's clients, or defers
    /// them at once if a report lists the entry as owed (a leader before us presumed it
    /// answered, doubt.rs).
    fn hold_or_defer(&mut self, index: kv_raft::Index, owed: Owed, now: Instant) {
        if self.handoff.report().owes(index) {
            self.doubts.defer(index, owed, now);
        } else {
            self.doubts.hold(index, owed, now);
        }
    }

    /// Sends the held answers that are due and drops those a report says were sent
    /// (doubt.rs), then the answers that waited behind them.
    fn settle_doubts(&mut self, leader: bool, term: Term, now: Instant) {
        let settled = self.doubts.settle(Now {
            reported: self.handoff.reported(),
            leader,
            term,
            heard: &self.heard,
            at: now,
        });
        if settled.dropped > 0 || settled.deferred > 0 || !settled.answer.is_empty() {
            self.trace(format_args!(
                "doubts: {} dropped (report {:?}), {} deferred, answering {:?}",
                settled.dropped,
                self.handoff.reported(),
                settled.deferred,
                settled.answer
            ));
        }
        for duty in settled.answer {
            self.perform(duty);
        }
        for (token, reply) in settled.release {
            self.answer(token, reply, now);
        }
    }

    /// Answers a request of ours, unless an answer about its key is held (doubt.rs): then
    /// it waits behind that one. A deferred answer of the key that it would show goes
    /// first.
    fn answer_in_order(&mut self, token: ClientToken, reply: ClientReply, now: Instant) {
        let touched = self.mids.get(token).and_then(|p| match &p.request.op {
            Op::Get { key, .. } => Some((key.clone(), Touch::Shows)),
            Op::Put { key, .. } => Some((key.clone(), Touch::Overwrites)),
            _ => None,
        });
        let pass = match touched {
            Some((key, touch)) => {
                let ok = matches!(
                    (touch, &reply.outcome),
                    (Touch::Shows, Outcome::Value(_)) | (Touch::Overwrites, Outcome::Done)
                );
                let touch = if ok { touch } else { Touch::Neither };
                self.doubts.wait_or_pass(&key, touch, (token, reply))
            }
            None => Some((Vec::new(), (token, reply))),
        };
        if let Some((first, (token, reply))) = pass {
            if !first.is_empty() {
                self.trace(format_args!("deferred answers first: {first:?}"));
            }
            for duty in first {
                self.perform(duty);
            }
            self.answer(token, reply, now);
        }
    }

    /// Tells the follower heard from last (live, as far as we know) this leader's
    /// answered-through index. With nobody to tell, the notice is dropped like a lost
    /// datagram.
    fn send_commit_notice(&mut self, report: &Report) {
        self.notice.told(report.through);
        let me = self.roster.me_node();
        if let Some(&node) = self
            .heard
            .iter()
            .filter(|(n, _)| **n != me)
            .max_by_key(|(_, at)| **at)
            .map(|(n, _)| n)
        {
            self.send_commit_notice_to(node, report);
        }
    }

    /// Tells peer `dst_node` this leader's answered-through index in a datagram of its
    /// own.
    fn send_commit_notice_to(&mut self, dst_node: NodeId, report: &Report) {
        let Some(dst) = self.roster.member_id(dst_node) else {
            return;
        };
        let leader = self.roster.leader_field(self.belief());
        let stamp = Stamp {
            report,
            seq: self.sent.next(dst_node),
            holds_back: self.stalls.defers_first_release(),
        };
        let bytes = protocol::commit_notice(self.roster.me(), dst, leader, stamp);
        let _ = self.socket.send_to(&bytes, self.harness);
    }

    /// Brings the stall timer up to date with this turn's state (the view after every
    /// input, the loss estimate) and asks kv-raft for what it says is due: wide sending
    /// switched, a stall noted, a stalled commit released. True if kv-raft was asked for
    /// a release (its messages wait in the core's output). Nothing is released in the
    /// quiet period, when no peer datagram leaves anyway.
    fn release_if_stalled(&mut self, now: Instant) -> bool {
        self.stalls.set_loss(self.loss.loss());
        self.stalls.observe(self.view(), now);
        let wide = self.stalls.sending_wide();
        if wide != self.send_wide {
            self.send_wide = wide;
            self.core.set_send_wide(wide);
        }
        if now.saturating_duration_since(self.started) < self.settings.quiet {
            return false;
        }
        match self.stalls.due(now) {
            StallAction::Wait => false,
            StallAction::Note => {
                self.core.note_stall();
                false
            }
            StallAction::Release { targeted } => {
                self.core.release_stalled(targeted);
                true
            }
        }
    }

    /// Follows the (pre-)vote rounds in the core's output (a round's requests start its
    /// resend schedule) and says whether kv-raft should resend the unanswered ones now.
    /// Checked after this turn's inputs: answers that came in are no longer unanswered,
    /// and a round whose requests leave in this turn needs no resend yet.
    fn vote_resend_due(&mut self, datagrams: &[(NodeId, Vec<GroupMessage>)], now: Instant) -> bool {
        let round_sent = datagrams.iter().flat_map(|(_, msgs)| msgs).any(|gm| {
            matches!(
                gm.msg.body,
                MessageBody::PreVote { .. } | MessageBody::Vote { .. }
            )
        });
        if !round_sent && self.vote_resends.deadline().is_none() {
            return false;
        }
        let role = self.core.raft_status(SHARD).role;
        if !matches!(role, Role::PreCandidate | Role::Candidate) {
            self.vote_resends.ended();
            return false;
        }
        if round_sent {
            self.vote_resends.round_started(now);
            return false;
        }
        self.vote_resends.take_due(now)
    }

    fn note_entries(&mut self, msgs: &[GroupMessage]) {
        for gm in msgs {
            if let MessageBody::Append { entries, .. } = &gm.msg.body {
                self.handoff.note_entries(entries);
            }
        }
    }

    /// Sends an answer the handoff bookkeeping made due ([`Duty::CoreAnswers`] is the
    /// caller's: the answer is the node core's).
    fn perform(&mut self, duty: Duty) {
        let belief = self.belief();
        match duty {
            Duty::OkFor(client, mid) => {
                self.send_reply(client, &mid, &Answer::Ok { value: None }, belief);
            }
            Duty::OkOwn(token) | Duty::RedirectOwn(token) => {
                let answer = match duty {
                    Duty::OkOwn(_) => Answer::Ok { value: None },
                    _ => Answer::Redirect,
                };
                if let Some(p) = self.mids.take(ClientToken(token)) {
                    self.send_reply(p.client, &p.mid, &answer, belief);
                }
            }
            Duty::CoreAnswers(_) => {}
        }
    }

    fn answer(&mut self, token: ClientToken, reply: ClientReply, now: Instant) {
        let belief = self.belief();
        let is_put = self
            .mids
            .get(token)
            .is_some_and(|p| matches!(p.request.op, Op::Put { .. }));
        if is_put {
            let ok = matches!(reply.outcome, kv_shared::proto::Outcome::Done);
            if !self.handoff.on_core_answer(reply.client.0, ok) {
                self.trace(format_args!(
                    "orphan token {} session {}",
                    token.0, reply.client.0
                ));
                return; // an orphan: answered when its fate is known (handoff.rs)
            }
        }
        let (answer, leader) = match disposition(reply.outcome) {
            Disposition::Answer(a) => (a, belief),
            Disposition::NotLeader(hint) => {
                let hint = hint.or(belief);
                let since = *self.park_started.entry(token.0).or_insert(now);
                if self.suspect(hint)
                    && now.saturating_duration_since(since) < self.settings.park_max
                {
                    self.parked.insert(token.0, since);
                    return;
                }
                (Answer::Redirect, hint)
            }
        };
        self.parked.remove(&token.0);
        self.park_started.remove(&token.0);
        if let Some(p) = self.mids.take(token) {
            if let (Answer::Redirect, Some(l)) = (&answer, leader) {
                self.redirected.insert(p.client, (l, now));
            }
            self.send_reply(p.client, &p.mid, &answer, leader);
        }
    }

    fn send_reply(&self, client: CourseId, mid: &str, answer: &Answer, leader: Option<NodeId>) {
        self.trace(format_args!("reply {client} {mid} {answer:?}"));
        let leader = self.roster.leader_field(leader);
        let me = self.roster.me();
        let bytes = protocol::reply(me, client, leader, mid, answer)
            .or_else(|| protocol::reply(me, client, leader, mid, &Answer::Fail))
            .expect("a fail reply always fits");
        // A send error (buffer full) is a lost datagram, which UDP allows.
        let _ = self.socket.send_to(&bytes, self.harness);
    }

    /// Sends `msgs` to `dst_node` with the side info of their entries and this turn's
    /// answered-through index.
    fn send_peer(
        &mut self,
        dst_node: NodeId,
        msgs: Vec<GroupMessage>,
        report: &Report,
        now: Instant,
    ) {
        let Some(dst) = self.roster.member_id(dst_node) else {
            return;
        };
        let leader = self.roster.leader_field(self.belief());
        let entries: Vec<&kv_raft::Entry> = msgs
            .iter()
            .filter_map(|gm| match &gm.msg.body {
                MessageBody::Append { entries, .. } => Some(entries.iter()),
                _ => None,
            })
            .flatten()
            .collect();
        let side = self.handoff.side_info_for(&entries);
        // Telling a peer that may be dead tells nobody.
        let live = self
            .heard
            .get(&dst_node)
            .is_some_and(|&at| self.heard_lately(at, now));
        let (payloads, _dropped) = peer::encode(msgs);
        for payload in payloads {
            let seq = self.sent.next(dst_node);
            let stamp = Stamp {
                report,
                seq,
                holds_back: self.stalls.defers_first_release(),
            };
            let bytes = protocol::peer(self.roster.me(), dst, leader, &payload, &side, stamp);
            let _ = self.socket.send_to(&bytes, self.harness);
            if live {
                self.notice.told(report.through);
            }
        }
    }
}
