//! Transcript tests: each `testdata/*.txt` file is a script of commands, each followed by
//! `----` and the output it must produce (etcd's datadriven style). A changed transcript
//! is reviewed like code. Regenerate with `python3 server/raft/testdata/rewrite.py`.
//! The files are compiled in (`include_str!`), so this crate touches no file system and
//! prints nothing even in its tests: the ignored test `rewrite_transcripts` fails with
//! every regenerated transcript in its panic message, between markers, and the script
//! writes those back.
//!
//! Commands (ids are node numbers; `ids` is a comma list or `all`):
//! - `cluster n=3 [learners=4,5] [prevote=false] [checkquorum=false] [append-bytes=N]
//!   [inflight=N] [chunk=N] [snap-window=N] [seed=N] [lease=true] [suppress=true]
//!   [bcast-commit=false] [retransmit=N] [eager=K] [reads-max=N]` : a fresh cluster
//!   (options as in `Config`; timing is election 10..20, heartbeat 2).
//! - `set-log id term=T entries=1,1,2` : restart node `id` with that durable log (entry
//!   terms) and term.
//! - `tick ids [n=K]`, `campaign id` (tick until it leaves the follower role),
//!   `elect id` (campaign then stabilize).
//! - `deliver [n=K]` one (or K) rounds, `stabilize`, `drop`: discard messages in flight,
//!   `drop-first text`: discard the first message in flight whose line contains `text`.
//! - `partition 1,2 3` (cut links between the groups), `isolate id`, `heal`.
//! - `hold ids` (keep writes pending), `persist id [n=K]`, `crash id`, `restart id`.
//! - `propose id data`, `read id ctx[,ctx...]`, `transfer id to`,
//!   `conf id add-learner|promote|remove n`, `compact id`, `add-node id` (empty disk).
//! - `status [ids]`, `log ids`.

use crate::testing::{fmt_entries, Cluster, Disk, Opts};
use crate::types::{ConfChange, Entry, EntryKind, HardState};
use bytes::Bytes;
use kv_shared::NodeId;
use std::collections::BTreeMap;

struct Cmd {
    name: String,
    /// Everything after the name, as written.
    raw: String,
    pos: Vec<String>,
    kv: BTreeMap<String, String>,
}

fn parse(line: &str) -> Cmd {
    let mut it = line.split_whitespace();
    let name = it.next().unwrap_or_default().to_string();
    let (mut pos, mut kv) = (Vec::new(), BTreeMap::new());
    for w in it {
        match w.split_once('=') {
            Some((k, v)) => {
                kv.insert(k.to_string(), v.to_string());
            }
            None => pos.push(w.to_string()),
        }
    }
    let raw = line
        .trim()
        .strip_prefix(name.as_str())
        .unwrap_or("")
        .trim()
        .to_string();
    Cmd { name, raw, pos, kv }
}

fn list(c: &Cluster, s: &str) -> Vec<u64> {
    if s == "all" {
        return c.nodes.keys().copied().collect();
    }
    s.split(',').map(|x| x.parse().expect("node id")).collect()
}

fn num(s: &str) -> u64 {
    s.parse().unwrap_or_else(|_| panic!("not a number: {s}"))
}

fn run_cmd(c: &mut Option<Cluster>, cmd: &Cmd) -> String {
    if cmd.name == "cluster" {
        let b = |k: &str, d: bool| cmd.kv.get(k).map_or(d, |v| v == "true");
        let u = |k: &str, d: usize| cmd.kv.get(k).map_or(d, |v| num(v) as usize);
        let d = Opts::default();
        let opts = Opts {
            pre_vote: b("prevote", d.pre_vote),
            check_quorum: b("checkquorum", d.check_quorum),
            append_bytes_max: u("append-bytes", d.append_bytes_max),
            inflight_appends_max: u("inflight", d.inflight_appends_max),
            snapshot_chunk_bytes_max: u("chunk", d.snapshot_chunk_bytes_max),
            snapshot_inflight_bytes_max: u("snap-window", d.snapshot_inflight_bytes_max),
            seed: u("seed", 0) as u64,
            lease_reads: b("lease", d.lease_reads),
            heartbeat_suppression: b("suppress", d.heartbeat_suppression),
            broadcast_commit: b("bcast-commit", d.broadcast_commit),
            retransmit_ticks: u("retransmit", d.retransmit_ticks as usize) as u32,
            eager_followers: cmd.kv.get("eager").map(|v| num(v) as usize),
            pending_reads_max: u("reads-max", d.pending_reads_max),
        };
        let learners = cmd
            .kv
            .get("learners")
            .map_or(Vec::new(), |l| l.split(',').map(num).collect());
        *c = Some(Cluster::new(num(&cmd.kv["n"]), &learners, opts));
        return String::new();
    }
    let c = c.as_mut().expect("no cluster yet");
    c.out.clear();
    let p = |i: usize| {
        cmd.pos
            .get(i)
            .unwrap_or_else(|| panic!("{}: missing argument {i}", cmd.name))
            .clone()
    };
    match cmd.name.as_str() {
        "set-log" => {
            let id = num(&p(0));
            let terms: Vec<u64> = cmd
                .kv
                .get("entries")
                .map_or(Vec::new(), |e| e.split(',').map(num).collect());
            let entries = terms
                .iter()
                .enumerate()
                .map(|(i, t)| Entry {
                    term: *t,
                    index: i as u64 + 1,
                    kind: EntryKind::Command,
                    data: Bytes::from(format!("e{}", i + 1)),
                })
                .collect();
            let hs = HardState {
                term: num(&cmd.kv["term"]),
                vote: NodeId::NONE,
                commit: 0,
            };
            c.add_node(
                id,
                Disk {
                    hs,
                    snapshot: None,
                    entries,
                },
            );
        }
        "tick" => {
            let n = cmd.kv.get("n").map_or(1, |v| num(v));
            for _ in 0..n {
                for id in list(c, &p(0)) {
                    c.tick(id);
                }
            }
        }
        "campaign" | "elect" => {
            let id = num(&p(0));
            for _ in 0..1000 {
                if c.nodes[&id].raft.role_now() != crate::Role::Follower {
                    break;
                }
                c.tick(id);
            }
            if cmd.name == "elect" {
                c.stabilize();
            }
        }
        "deliver" => {
            for _ in 0..cmd.kv.get("n").map_or(1, |v| num(v)) {
                c.deliver();
            }
        }
        "stabilize" => c.stabilize(),
        "drop" => {
            let n = c.net.len();
            c.net.clear();
            c.line(format!("dropped {n} messages in flight"));
        }
        "drop-first" => {
            let pat = cmd.raw.as_str();
            let pos = c
                .net
                .iter()
                .position(|m| crate::testing::fmt_msg(m).contains(pat));
            let m = c
                .net
                .remove(pos.expect("no such message in flight"))
                .expect("present");
            c.line(format!("{} DROPPED", crate::testing::fmt_msg(&m)));
        }
        "partition" => {
            let (a, b) = (list(c, &p(0)), list(c, &p(1)));
            for x in &a {
                for y in &b {
                    c.cut.insert((*x, *y));
                    c.cut.insert((*y, *x));
                }
            }
        }
        "isolate" => {
            let id = num(&p(0));
            for other in c.nodes.keys().copied().collect::<Vec<_>>() {
                c.cut.insert((id, other));
                c.cut.insert((other, id));
            }
        }
        "heal" => c.cut.clear(),
        "hold" => {
            for id in list(c, &p(0)) {
                c.nodes.get_mut(&id).expect("node").auto_persist = false;
            }
        }
        "persist" => {
            let id = num(&p(0));
            let n = cmd.kv.get("n").map_or(usize::MAX, |v| num(v) as usize);
            c.persist(id, n);
            c.nodes.get_mut(&id).expect("node").auto_persist = !cmd.kv.contains_key("n");
            c.process(id);
        }
        #[cfg(feature = "planted-bugs")]
        "plant" => {
            let bug = match p(0).as_str() {
                "GrantSecondVote" => crate::PlantedBug::GrantSecondVote,
                "CommitPriorTermByCount" => crate::PlantedBug::CommitPriorTermByCount,
                "AckBeforePersist" => crate::PlantedBug::AckBeforePersist,
                other => panic!("unknown bug {other}"),
            };
            c.planted.push(bug);
            c.plant_all();
        }
        "crash" => c.crash(num(&p(0))),
        "restart" => {
            let id = num(&p(0));
            c.restart(id);
            c.process(id);
        }
        "add-node" => {
            let id = num(&p(0));
            c.add_node(id, Disk::default());
        }
        "propose" => {
            let id = num(&p(0));
            let r = c
                .nodes
                .get_mut(&id)
                .expect("node")
                .raft
                .propose(Bytes::from(p(1)));
            c.line(format!("n{id} propose {} -> {r:?}", p(1)));
            c.process(id);
        }
        "read" => {
            // Several contexts in one command are issued before the next `ready()`.
            let id = num(&p(0));
            for ctx in p(1).split(',').map(num) {
                if let Err(e) = c.read(id, ctx) {
                    c.line(format!("n{id} read {ctx} -> {e:?}"));
                }
            }
            c.process(id);
        }
        "transfer" => {
            let id = num(&p(0));
            c.nodes
                .get_mut(&id)
                .expect("node")
                .raft
                .transfer_leadership(NodeId(num(&p(1))));
            c.process(id);
        }
        "conf" => {
            let id = num(&p(0));
            let n = NodeId(num(&p(2)));
            let change = match p(1).as_str() {
                "add-learner" => ConfChange::AddLearner(n),
                "promote" => ConfChange::PromoteLearner(n),
                "remove" => ConfChange::RemoveNode(n),
                other => panic!("unknown change {other}"),
            };
            let r = c
                .nodes
                .get_mut(&id)
                .expect("node")
                .raft
                .propose_conf_change(change.clone());
            c.line(format!("n{id} conf {change:?} -> {r:?}"));
            c.process(id);
        }
        "compact" => {
            let id = num(&p(0));
            c.compact(id);
            c.line(format!(
                "n{id} compacted to {}",
                c.nodes[&id].raft.log.snap_index
            ));
        }
        "status" => {
            let ids = cmd
                .pos
                .first()
                .map_or_else(|| list(c, "all"), |s| list(c, s));
            for id in ids {
                let s = c.status(id);
                c.line(s);
            }
        }
        "log" => {
            for id in list(c, &p(0)) {
                let log = &c.nodes[&id].raft.log;
                let s = format!(
                    "n{id} log snap={}/{} {}",
                    log.snap_index,
                    log.snap_term,
                    fmt_entries(log.range(log.first_index(), log.last_index()))
                );
                c.line(s);
            }
        }
        other => panic!("unknown command {other}"),
    }
    c.check_log_matching();
    std::mem::take(&mut c.out)
}

/// The text of `testdata/<name>.txt`, compiled in.
macro_rules! transcript_text {
    ($name:expr) => {
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/testdata/",
            $name,
            ".txt"
        ))
    };
}

/// Runs one transcript: the differences from its expected outputs (one message per
/// command), and the transcript with the outputs this code produces.
fn run_file(name: &str, text: &str) -> (Vec<String>, String) {
    let path = format!("testdata/{name}.txt");
    let mut cluster = None;
    let mut rewritten = String::new();
    let mut lines = text.lines().peekable();
    let mut failures = Vec::new();
    while let Some(line) = lines.next() {
        if line.trim().is_empty() || line.starts_with('#') {
            rewritten.push_str(line);
            rewritten.push('\n');
            continue;
        }
        rewritten.push_str(line);
        rewritten.push('\n');
        assert_eq!(
            lines.next(),
            Some("----"),
            "{path}: expected ---- after `{line}`"
        );
        let mut expected = String::new();
        while let Some(l) = lines.peek() {
            if l.is_empty() {
                break;
            }
            expected.push_str(l);
            expected.push('\n');
            lines.next();
        }
        let mut got = run_cmd(&mut cluster, &parse(line));
        if got.is_empty() {
            got = "ok\n".into();
        }
        if got != expected {
            failures.push(format!(
                "{path}: `{line}`\n--- expected\n{expected}--- got\n{got}"
            ));
        }
        rewritten.push_str("----\n");
        rewritten.push_str(&got);
    }
    (failures, rewritten)
}

/// The Figure 8 script with the prior-term commit bug planted must trip the state machine
/// safety check: n1 applies entry 2 of term 2, then n5 overwrites it.
#[cfg(feature = "planted-bugs")]
#[test]
fn figure8_planted_bug_is_caught() {
    let text = transcript_text!("figure8");
    let mut cmds: Vec<&str> = Vec::new();
    let mut lines = text.lines().peekable();
    while let Some(l) = lines.next() {
        if lines.peek() == Some(&"----") {
            cmds.push(l);
        }
    }
    let at = cmds
        .iter()
        .position(|l| l.starts_with("campaign"))
        .expect("campaign step");
    cmds.insert(at, "plant CommitPriorTermByCount");
    let r = std::panic::catch_unwind(|| {
        let mut c = None;
        for l in &cmds {
            run_cmd(&mut c, &parse(l));
        }
    });
    assert!(r.is_err(), "the planted Figure 8 bug went unnoticed");
}

macro_rules! transcripts {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                let name = stringify!($name);
                let (failures, _) = run_file(name, transcript_text!(stringify!($name)));
                assert!(
                    failures.is_empty(),
                    "{} command(s) differ (server/raft/testdata/rewrite.py regenerates):\n{}",
                    failures.len(),
                    failures.join("\n")
                );
            }
        )*

        /// Not a check: fails on purpose with every transcript as this code would write it,
        /// between `=== transcript NAME` and `=== end NAME` lines, for testdata/rewrite.py.
        #[test]
        #[ignore = "run by server/raft/testdata/rewrite.py"]
        fn rewrite_transcripts() {
            let mut all = String::new();
            $(
                let name = stringify!($name);
                let (_, rewritten) = run_file(name, transcript_text!(stringify!($name)));
                all.push_str(&format!("\n=== transcript {name}\n{rewritten}=== end {name}\n"));
            )*
            panic!("{all}");
        }
    };
}

transcripts!(
    election,
    prevote_checkquorum,
    partition,
    log_conflict,
    leader_change_uncommitted,
    figure8,
    snapshot,
    read_index,
    transfer,
    membership,
    persist_before_send,
    read_limits,
    persist_commit,
    quiet_leader,
    lease_read,
    eager_followers,
    vote_request_after_persist,
);
