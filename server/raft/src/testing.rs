//! In-memory test harness: N replicas, a scriptable lossy network, a disk per node whose
//! writes can be held back, and a transcript of every delivered message and state change.
//! Invariants (election safety, state machine safety, log structure) are checked after
//! every step. Used by the transcript tests (`testdata/*.txt`) and the randomized test.

use crate::display::Entries;
use crate::node::RoleState;
use crate::types::*;
use crate::{Config, Raft, Restored, Write};
use bytes::Bytes;
use kv_shared::NodeId;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Write as _;

/// What survived on one node's disk.
#[derive(Clone, Debug, Default)]
pub(crate) struct Disk {
    pub hs: HardState,
    pub snapshot: Option<Snapshot>,
    pub entries: Vec<Entry>,
}

impl Disk {
    pub(crate) fn apply(&mut self, w: &Write) {
        if let Some(s) = &w.snapshot {
            self.snapshot = Some(s.clone());
            self.entries.clear();
        }
        let base = self.snapshot.as_ref().map_or(0, |s| s.meta.index);
        // A write handed out before a snapshot this model stored at once (`compact`) may
        // hold entries the snapshot covers: applied before they were durable here.
        let entries = match w.entries.iter().position(|e| e.index > base) {
            Some(from) => &w.entries[from..],
            None => &[][..],
        };
        if let Some(first) = entries.first() {
            self.entries.truncate((first.index - base - 1) as usize);
            assert_eq!(
                self.entries.len() as u64 + base + 1,
                first.index,
                "write leaves a hole"
            );
            self.entries.extend(entries.iter().cloned());
        }
        if let Some(hs) = w.hard_state {
            self.hs = hs;
        }
    }
}

/// One simulated node.
pub(crate) struct Node {
    pub raft: Raft,
    pub disk: Disk,
    /// Writes handed out, not yet durable.
    pub pending: VecDeque<Write>,
    /// Persist writes as soon as they appear.
    pub auto_persist: bool,
    /// The state machine: applied command payloads, and the applied index.
    pub sm: Vec<String>,
    pub applied: Index,
    pub up: bool,
    last_commit: Index,
}

/// Settings shared by the nodes of a test cluster (each node's id and seed are its own):
/// small byte limits and windows so that short scripts reach them.
pub(crate) fn test_config() -> Config {
    Config {
        append_bytes_max: 1024,
        inflight_appends_max: 4,
        snapshot_chunk_bytes_max: 8,
        pending_reads_max: 1000,
        follower_reads: true,
        // Cut at the snapshot, so that a follower a few entries behind takes the
        // snapshot path these tests are about; `snapshot::tests` turns keeping on.
        compact_keep_bytes_max: 0,
        ..Config::new(NodeId(0), 0)
    }
}

/// A cluster of replicas with a network and a transcript.
pub(crate) struct Cluster {
    pub nodes: BTreeMap<u64, Node>,
    pub net: VecDeque<Message>,
    /// Messages taken out of the network to be delivered later (`stash`, `unstash`).
    pub stashed: Vec<Message>,
    /// Starts of each node so far: its `boot_nonce`, new on every restart.
    boots: BTreeMap<u64, u64>,
    /// Directed links that drop everything.
    pub cut: BTreeSet<(u64, u64)>,
    pub out: String,
    pub quiet: bool,
    /// Bugs planted in every node, also after restarts.
    #[cfg_attr(not(feature = "planted-bugs"), allow(dead_code))]
    pub planted: Vec<crate::safety_tests::Bug>,
    pub initial: Membership,
    pub opts: Config,
    /// Safety oracles.
    leaders: BTreeMap<Term, NodeId>,
    applied: BTreeMap<Index, (Term, Bytes)>,
    /// Reads issued through `read`: the highest index committed anywhere when each was
    /// issued. A read answered below it would miss a committed write (linearizability).
    read_floor: BTreeMap<(u64, u64), Index>,
}

pub(crate) fn ids(v: &[u64]) -> Vec<NodeId> {
    v.iter().map(|i| NodeId(*i)).collect()
}

impl Cluster {
    /// Voters `1..=n` and the given learners, all bootstrapped with that membership.
    pub fn new(n: u64, learners: &[u64], opts: Config) -> Cluster {
        let initial = Membership {
            voters: ids(&(1..=n).collect::<Vec<_>>()),
            learners: ids(learners),
        };
        let mut c = Cluster {
            nodes: BTreeMap::new(),
            net: VecDeque::new(),
            stashed: Vec::new(),
            boots: BTreeMap::new(),
            cut: BTreeSet::new(),
            out: String::new(),
            quiet: false,
            planted: Vec::new(),
            initial,
            opts,
            leaders: BTreeMap::new(),
            applied: BTreeMap::new(),
            read_floor: BTreeMap::new(),
        };
        for id in (1..=n).chain(learners.iter().copied()) {
            c.add_node(id, Disk::default());
        }
        c
    }

    pub fn config(&self, id: u64) -> Config {
        Config {
            id: NodeId(id),
            seed: self.opts.seed.wrapping_mul(1000).wrapping_add(id),
            ..self.opts.clone()
        }
    }

    /// Starts (or replaces) node `id` from `disk`.
    pub fn add_node(&mut self, id: u64, disk: Disk) {
        let boot = self.boots.entry(id).or_insert(0);
        *boot += 1;
        let cfg = Config {
            boot_nonce: *boot,
            ..self.config(id)
        };
        let restored = Restored {
            hard_state: disk.hs,
            snapshot: disk.snapshot.clone(),
            entries: disk.entries.clone(),
            initial_membership: self.initial.clone(),
        };
        let raft = Raft::new(cfg, restored);
        let (sm, applied) = match &disk.snapshot {
            Some(s) => (decode_sm(&s.data), s.meta.index),
            None => (Vec::new(), 0),
        };
        #[cfg_attr(not(feature = "planted-bugs"), allow(unused_mut))]
        let mut raft = raft;
        #[cfg(feature = "planted-bugs")]
        for b in &self.planted {
            raft.plant_bug(*b);
        }
        let last_commit = raft.log.commit;
        self.nodes.insert(
            id,
            Node {
                raft,
                disk,
                pending: VecDeque::new(),
                auto_persist: true,
                sm,
                applied,
                up: true,
                last_commit,
            },
        );
    }

    /// Plants `self.planted` in every running node.
    #[cfg_attr(not(feature = "planted-bugs"), allow(clippy::unused_self))]
    pub fn plant_all(&mut self) {
        #[cfg(feature = "planted-bugs")]
        for n in self.nodes.values_mut() {
            for b in &self.planted {
                n.raft.plant_bug(*b);
            }
        }
    }

    pub fn line(&mut self, s: impl AsRef<str>) {
        if !self.quiet {
            self.out.push_str(s.as_ref());
            self.out.push('\n');
        }
    }

    /// Drains node `id`'s Ready until it has none, persisting if allowed.
    pub fn process(&mut self, id: u64) {
        for _ in 0..100 {
            let n = self.nodes.get_mut(&id).expect("node");
            if !n.up {
                return;
            }
            if !n.raft.has_ready() {
                // has_ready() and ready() must agree both ways.
                let rd = n.raft.ready();
                assert!(
                    rd.is_empty(),
                    "n{id}: has_ready() false but ready() = {rd:?}"
                );
                if n.auto_persist && !n.pending.is_empty() {
                    self.persist(id, usize::MAX);
                    continue;
                }
                return;
            }
            let rd = n.raft.ready();
            assert!(
                !rd.is_empty(),
                "n{id}: has_ready() true but ready() is empty"
            );
            self.handle_ready(id, rd);
            let n = self.nodes.get_mut(&id).expect("node");
            if n.auto_persist && !n.pending.is_empty() {
                self.persist(id, usize::MAX);
            }
        }
        panic!("node {id} never stops producing Ready");
    }

    fn handle_ready(&mut self, id: u64, mut rd: crate::Ready) {
        // A caller of `entries_by_reference` reads the write's entries from the log at
        // once; this one keeps writes pending, so it copies them.
        if let Some(w) = &mut rd.write {
            if w.entries_in_log.is_some() {
                w.entries = self.nodes[&id].raft.write_entries(w).to_vec();
                w.entries_in_log = None;
            }
        }
        if let Some(ss) = rd.soft_state {
            let lead = ss.leader.map_or("-".into(), |l| l.to_string());
            self.line(format!("n{id} {:?} t{} lead={lead}", ss.role, ss.term));
            if ss.role == Role::Leader {
                let prev = self.leaders.insert(ss.term, NodeId(id));
                assert!(
                    prev.is_none() || prev == Some(NodeId(id)),
                    "two leaders in term {}: {prev:?} and n{id}",
                    ss.term
                );
                self.check_leader_completeness(id);
            }
        }
        if let Some(w) = &rd.write {
            let mut s = format!("n{id} write w{}:", w.id.0);
            if let Some(hs) = w.hard_state {
                let _ = write!(s, " hs(t{} v{} c{})", hs.term, hs.vote.0, hs.commit);
            }
            if let Some(sn) = &w.snapshot {
                let _ = write!(s, " snap@{}/{}", sn.meta.index, sn.meta.term);
            }
            if !w.entries.is_empty() {
                let _ = write!(s, " {}", Entries(&w.entries));
            }
            if w.deferrable {
                s.push_str(" deferrable");
            }
            self.line(s);
        }
        // A caller of `entries_by_reference` encodes each Append from the log at once.
        for a in &rd.appends {
            let m = self.nodes[&id].raft.append_message(a);
            self.net.push_back(m);
        }
        for m in rd.messages {
            self.net.push_back(m);
        }
        if let Some(w) = rd.write {
            self.nodes.get_mut(&id).expect("node").pending.push_back(w);
        }
        if rd.snapshot_wanted {
            self.line(format!("n{id} snapshot wanted"));
            self.resnapshot(id);
        }
        if let Some(s) = rd.apply_snapshot {
            self.line(format!(
                "n{id} restore snap@{}/{} {:?}",
                s.meta.index,
                s.meta.term,
                decode_sm(&s.data)
            ));
            let n = self.nodes.get_mut(&id).expect("node");
            n.sm = decode_sm(&s.data);
            n.applied = s.meta.index;
        }
        if !rd.committed.is_empty() {
            self.line(format!("n{id} apply {}", Entries(&rd.committed)));
        }
        for e in rd.committed {
            let n = self.nodes.get_mut(&id).expect("node");
            assert_eq!(e.index, n.applied + 1, "n{id} applies out of order");
            n.applied = e.index;
            if e.kind == EntryKind::Command {
                n.sm.push(String::from_utf8_lossy(&e.data).into_owned());
            }
            let prev = self.applied.insert(e.index, (e.term, e.data.clone()));
            if let Some(p) = prev {
                assert_eq!(
                    p,
                    (e.term, e.data),
                    "state machine safety: n{id} applied a different entry at {}",
                    e.index
                );
            }
        }
        for r in rd.reads {
            self.line(format!("n{id} read ctx={} index={}", r.ctx, r.index));
            if let Some(floor) = self.read_floor.remove(&(id, r.ctx)) {
                assert!(
                    r.index >= floor,
                    "stale read: n{id} ctx={} at index {} but {floor} was committed before it was issued",
                    r.ctx,
                    r.index
                );
            }
        }
        for ctx in rd.failed_reads {
            self.line(format!("n{id} read-failed ctx={ctx}"));
        }
        self.check_node(id);
    }

    /// Issues a linearizable read on `id` and remembers what it must observe.
    pub fn read(&mut self, id: u64, ctx: u64) -> Result<(), crate::ProposeError> {
        let floor = self
            .nodes
            .values()
            .map(|n| n.raft.log.commit)
            .max()
            .unwrap_or(0);
        let raft = &mut self.nodes.get_mut(&id).expect("node").raft;
        // Every read checks `lease_read_index` against what `read_index` confirms at once:
        // a caller serves at that index without asking `read_index` at all.
        let at_once = raft.lease_read_index();
        let before = raft.reads_ready.len();
        let r = raft.read_index(ctx);
        let leading = matches!(raft.role, crate::node::RoleState::Leader(_));
        let released = raft.reads_ready[before..]
            .iter()
            .find(|rs| rs.ctx == ctx)
            .map(|rs| rs.index);
        assert_eq!(
            at_once,
            released.filter(|_| leading),
            "n{id}: lease_read_index disagrees with what read_index confirmed at once"
        );
        if r.is_ok() {
            self.read_floor.insert((id, ctx), floor);
        }
        r
    }

    /// Makes up to `count` pending writes of `id` durable, reporting the last one.
    pub fn persist(&mut self, id: u64, count: usize) {
        let n = self.nodes.get_mut(&id).expect("node");
        let mut last = None;
        for _ in 0..count {
            let Some(w) = n.pending.pop_front() else {
                break;
            };
            n.disk.apply(&w);
            last = Some(w.id);
        }
        if let Some(w) = last {
            n.raft.on_persisted(w);
            self.line(format!("n{id} persisted w{}", w.0));
        }
    }

    /// Delivers (or drops) every message in flight now; new ones wait.
    pub fn deliver(&mut self) {
        let batch: Vec<Message> = self.net.drain(..).collect();
        for m in batch {
            self.deliver_one(m);
        }
    }

    pub fn deliver_one(&mut self, m: Message) {
        let (from, to) = (m.from.0, m.to.0);
        let up = self.nodes.get(&to).is_some_and(|n| n.up);
        if self.cut.contains(&(from, to)) || !up {
            self.line(format!("{m} DROPPED"));
            return;
        }
        self.line(m.to_string());
        self.nodes.get_mut(&to).expect("node").raft.step(m);
        self.process(to);
    }

    /// Processes and delivers until nothing moves.
    pub fn stabilize(&mut self) {
        for _ in 0..1000 {
            let ids: Vec<u64> = self.nodes.keys().copied().collect();
            for id in &ids {
                self.process(*id);
            }
            if self.net.is_empty() {
                return;
            }
            self.deliver();
        }
        panic!("cluster does not stabilize");
    }

    pub fn tick(&mut self, id: u64) {
        let n = self.nodes.get_mut(&id).expect("node");
        if n.up {
            n.raft.tick();
            self.process(id);
        }
    }

    /// Crash: unpersisted writes are lost, messages to it are dropped.
    pub fn crash(&mut self, id: u64) {
        let n = self.nodes.get_mut(&id).expect("node");
        n.up = false;
        n.pending.clear();
    }

    pub fn restart(&mut self, id: u64) {
        let disk = self.nodes[&id].disk.clone();
        let auto = self.nodes[&id].auto_persist;
        self.add_node(id, disk);
        self.nodes.get_mut(&id).expect("node").auto_persist = auto;
    }

    /// Takes a snapshot of `id`'s state machine at its applied index and compacts.
    pub fn compact(&mut self, id: u64) {
        let n = self.nodes.get_mut(&id).expect("node");
        let index = n.applied;
        let meta = n.raft.snapshot_meta(index);
        let snap = Snapshot {
            meta,
            data: Bytes::from(n.sm.join(",")),
        };
        n.disk.entries.retain(|e| e.index > index);
        n.disk.snapshot = Some(snap.clone());
        n.raft.compact(snap);
    }

    /// Answers `Ready::snapshot_wanted` with an image of the state machine at its
    /// applied index, written nowhere.
    fn resnapshot(&mut self, id: u64) {
        let n = self.nodes.get_mut(&id).expect("node");
        let snap = Snapshot {
            meta: n.raft.snapshot_meta(n.applied),
            data: Bytes::from(n.sm.join(",")),
        };
        n.raft.provide_snapshot(snap);
    }

    pub fn leader(&self) -> Option<u64> {
        self.nodes
            .iter()
            .find(|(_, n)| n.up && matches!(n.raft.role, RoleState::Leader(_)))
            .map(|(id, _)| *id)
    }

    fn check_node(&mut self, id: u64) {
        let n = &mut self.nodes.get_mut(&id).expect("node");
        n.raft.log.assert_invariants();
        assert!(
            n.raft.log.commit >= n.last_commit,
            "n{id} commit went backwards"
        );
        n.last_commit = n.raft.log.commit;
        let r = &n.raft;
        let restoring = r.snapshot_unwritten.is_some()
            || r.snapshot_in_write.is_some()
            || r.snapshot_ready.is_some();
        assert!(
            restoring || r.log.applied >= r.log.snap_index,
            "n{id} applied below its snapshot"
        );
        // Applied entries are committed (the log's invariants) and each is in a write
        // handed out already, though not necessarily durable here yet.
        assert!(
            n.raft.log.applied < n.raft.log.unstable_from.max(n.raft.log.snap_index + 1),
            "n{id} applied entries no write holds"
        );
    }

    /// A new leader holds every entry any node applied (leader completeness).
    fn check_leader_completeness(&self, id: u64) {
        let log = &self.nodes[&id].raft.log;
        for (i, (t, _)) in self.applied.range(log.first_index()..) {
            assert_eq!(
                log.term(*i),
                Some(*t),
                "leader n{id} lacks committed entry {i}"
            );
        }
    }

    /// Log matching: two logs holding an entry with the same index and term hold equal
    /// entries up to it.
    pub fn check_log_matching(&self) {
        let nodes: Vec<&Node> = self.nodes.values().collect();
        for (a, na) in nodes.iter().enumerate() {
            for nb in &nodes[a + 1..] {
                let (la, lb) = (&na.raft.log, &nb.raft.log);
                let lo = la.first_index().max(lb.first_index());
                let hi = la.last_index().min(lb.last_index());
                let top = (lo..=hi)
                    .rev()
                    .find(|i| la.term(*i).is_some() && la.term(*i) == lb.term(*i));
                if let Some(top) = top {
                    assert_eq!(
                        la.range(lo, top),
                        lb.range(lo, top),
                        "log matching violated below {top}"
                    );
                }
            }
        }
    }

    /// One status line per node.
    pub fn status(&self, id: u64) -> String {
        let n = &self.nodes[&id];
        let s = n.raft.status();
        let lead = s.leader.map_or("-".into(), |l| l.to_string());
        let mut out = format!(
            "n{id} {:?} t{} vote={} lead={lead} commit={} applied={} last={} persisted={} snap={} voters={:?} learners={:?}",
            s.role,
            s.hard.term,
            s.hard.vote.0,
            s.hard.commit,
            s.applied,
            s.last_index,
            s.persisted,
            s.snapshot_index,
            s.membership.voters.iter().map(|v| v.0).collect::<Vec<_>>(),
            s.membership.learners.iter().map(|v| v.0).collect::<Vec<_>>(),
        );
        if !s.progress.is_empty() {
            let p: Vec<String> = s
                .progress
                .iter()
                .map(|(i, m)| format!("{}:{m}", i.0))
                .collect();
            let _ = write!(out, " match=[{}]", p.join(" "));
        }
        if !n.up {
            out.push_str(" DOWN");
        }
        out
    }
}

fn decode_sm(data: &[u8]) -> Vec<String> {
    if data.is_empty() {
        return Vec::new();
    }
    String::from_utf8_lossy(data)
        .split(',')
        .map(str::to_owned)
        .collect()
}
