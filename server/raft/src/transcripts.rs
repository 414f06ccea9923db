//! Transcript tests: each `testdata/*.txt` file is a script of commands, each followed by
//! `----` and the output it must produce (etcd's datadriven style, through the
//! `datadriven` crate). A changed transcript is reviewed like code. Regenerate the
//! outputs with `REWRITE=1 cargo test -p kv-raft transcripts`; `RUN=name.txt` runs one
//! file. Only this test module reads files; the crate itself touches none.
//!
//! Commands (`id` is a node number; `ids` a node number, a list `(1,2)` or `all`):
//! - `cluster n=3 [learners=(4,5)] [prevote=false] [checkquorum=false] [append-bytes=N]
//!   [inflight=N] [chunk=N] [snap-window=N] [seed=N] [lease=true] [suppress=true]
//!   [suppress-strict=true] [bcast-commit=false] [retransmit=N] [backoff-max=N] [vote-resend=N]
//!   [hb-resend=N] [silent=N] [reads-max=N] [heartbeat=N] [follower-reads=false]` : a fresh
//!   cluster (options as in `Config`; timing is election 10..20, heartbeat 2 unless given).
//! - `set-log id=N term=T entries=(1,1,2)` : restart node `id` with that durable log
//!   (entry terms) and term.
//! - `tick ids=.. [n=K]`, `campaign id=N` (tick until it leaves the follower role),
//!   `elect id=N` (campaign then stabilize).
//! - `deliver [n=K]` one (or K) rounds, `stabilize`, `drop`: discard messages in flight,
//!   `drop-first` with a line of text as input: discard the first message in flight
//!   whose line contains that text; `stash` likewise takes it out of the network and
//!   keeps it, `unstash` puts every stashed message back in flight (a late delivery).
//! - `partition a=.. b=..` (cut links between the groups), `cut from=N to=M` (one
//!   direction only), `isolate id=N`, `heal`.
//! - `hold ids=..` (keep writes pending), `persist id=N [n=K]`, `crash id=N`,
//!   `restart id=N`.
//! - `propose id=N data=WORD`, `read id=N ctx=(5,6)`, `transfer id=N to=M`,
//!   `conf id=N add-learner=M|promote=M|remove=M`, `compact id=N`, `add-node id=N`
//!   (empty disk), `ask-for-leader id=N nodes=(..)`, `resend-votes id=N` (the
//!   caller-timed vote resend), `hb-resend id=N [ticks=K]` (switch heartbeat resends
//!   at run time; without `ticks`, off), `suppress id=N on=true|false` (switch
//!   heartbeat suppression at run time).
//! - `status [ids=..]`, `log ids=..`.

use crate::display::Entries;
use crate::testing::{test_config, Cluster, Disk};
use crate::types::{ConfChange, Entry, EntryKind, HardState};
use crate::Config;
use bytes::Bytes;
use datadriven::TestCase;
use kv_shared::NodeId;

/// What a command that printed nothing shows, so that every command has an output.
const NO_OUTPUT: &str = "ok\n";

/// The directory of the transcripts, relative to the crate (where `cargo test` runs).
const TESTDATA_DIR: &str = "testdata";
/// The transcripts with a bug planted; run only with the `planted-bugs` feature.
#[cfg(feature = "planted-bugs")]
const PLANTED_DIR: &str = "testdata/planted";

/// The value of a required argument (the first, for a list).
fn arg(case: &TestCase, name: &str) -> String {
    opt(case, name).unwrap_or_else(|| panic!("{}: missing {name}=", case.directive))
}

/// The value of an optional argument (the first, for a list).
fn opt(case: &TestCase, name: &str) -> Option<String> {
    case.args.get(name).and_then(|v| v.first()).cloned()
}

fn num(s: &str) -> u64 {
    s.parse().unwrap_or_else(|_| panic!("not a number: {s}"))
}

/// The numbers of a list argument (`x=3` or `x=(3,4)`), empty when it is absent.
fn nums(case: &TestCase, name: &str) -> Vec<u64> {
    case.args
        .get(name)
        .map_or(Vec::new(), |v| v.iter().map(|s| num(s)).collect())
}

/// Node ids of a list argument; `all` names every node.
fn ids(c: &Cluster, case: &TestCase, name: &str) -> Vec<u64> {
    if opt(case, name).as_deref() == Some("all") {
        return c.nodes.keys().copied().collect();
    }
    nums(case, name)
}

fn run_cmd(c: &mut Option<Cluster>, case: &TestCase) -> String {
    if case.directive == "cluster" {
        let b = |k: &str, d: bool| opt(case, k).map_or(d, |v| v == "true");
        let u = |k: &str, d: usize| opt(case, k).map_or(d, |v| num(&v) as usize);
        let d = test_config();
        let opts = Config {
            pre_vote: b("prevote", d.pre_vote),
            check_quorum: b("checkquorum", d.check_quorum),
            append_bytes_max: u("append-bytes", d.append_bytes_max),
            inflight_appends_max: u("inflight", d.inflight_appends_max),
            snapshot_chunk_bytes_max: u("chunk", d.snapshot_chunk_bytes_max),
            snapshot_inflight_bytes_max: u("snap-window", d.snapshot_inflight_bytes_max),
            seed: u("seed", 0) as u64,
            lease_reads: b("lease", d.lease_reads),
            heartbeat_suppression: b("suppress", d.heartbeat_suppression),
            heartbeat_suppression_strict: b("suppress-strict", d.heartbeat_suppression_strict),
            broadcast_commit: b("bcast-commit", d.broadcast_commit),
            retransmit_ticks: opt(case, "retransmit").map(|v| num(&v) as u32),
            retransmit_backoff_ticks_max: opt(case, "backoff-max").map(|v| num(&v) as u32),
            vote_resend_ticks: opt(case, "vote-resend").map(|v| num(&v) as u32),
            heartbeat_resend_ticks: opt(case, "hb-resend").map(|v| num(&v) as u32),
            silent_follower_ticks: opt(case, "silent").map(|v| num(&v) as u32),
            heartbeat_ticks: u("heartbeat", d.heartbeat_ticks as usize) as u32,
            pending_reads_max: u("reads-max", d.pending_reads_max),
            follower_reads: b("follower-reads", d.follower_reads),
            ..d
        };
        *c = Some(Cluster::new(
            num(&arg(case, "n")),
            &nums(case, "learners"),
            opts,
        ));
        return NO_OUTPUT.into();
    }
    let c = c.as_mut().expect("no cluster yet");
    c.out.clear();
    let id = || num(&arg(case, "id"));
    let count = |d: u64| opt(case, "n").map_or(d, |v| num(&v));
    match case.directive.as_str() {
        "set-log" => {
            let entries = nums(case, "entries")
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
                term: num(&arg(case, "term")),
                vote: NodeId::NONE,
                commit: 0,
            };
            c.add_node(
                id(),
                Disk {
                    hs,
                    snapshot: None,
                    entries,
                },
            );
        }
        "tick" => {
            for _ in 0..count(1) {
                for id in ids(c, case, "ids") {
                    c.tick(id);
                }
            }
        }
        "campaign" | "elect" => {
            let id = id();
            for _ in 0..1000 {
                if c.nodes[&id].raft.role_now() != crate::Role::Follower {
                    break;
                }
                c.tick(id);
            }
            if case.directive == "elect" {
                c.stabilize();
            }
        }
        "deliver" => {
            for _ in 0..count(1) {
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
            let pat = case.input.trim();
            let pos = c.net.iter().position(|m| m.to_string().contains(pat));
            let m = c
                .net
                .remove(pos.expect("no such message in flight"))
                .expect("present");
            c.line(format!("{m} DROPPED"));
        }
        "stash" => {
            let pat = case.input.trim();
            let pos = c.net.iter().position(|m| m.to_string().contains(pat));
            let m = c
                .net
                .remove(pos.expect("no such message in flight"))
                .expect("present");
            c.line(format!("{m} STASHED"));
            c.stashed.push(m);
        }
        "unstash" => {
            let stashed = std::mem::take(&mut c.stashed);
            c.net.extend(stashed);
        }
        "partition" => {
            let (a, b) = (ids(c, case, "a"), ids(c, case, "b"));
            for x in &a {
                for y in &b {
                    c.cut.insert((*x, *y));
                    c.cut.insert((*y, *x));
                }
            }
        }
        "cut" => {
            let (from, to) = (num(&arg(case, "from")), num(&arg(case, "to")));
            c.cut.insert((from, to));
        }
        "isolate" => {
            let id = id();
            for other in c.nodes.keys().copied().collect::<Vec<_>>() {
                c.cut.insert((id, other));
                c.cut.insert((other, id));
            }
        }
        "heal" => c.cut.clear(),
        "hold" => {
            for id in ids(c, case, "ids") {
                c.nodes.get_mut(&id).expect("node").auto_persist = false;
            }
        }
        "persist" => {
            let id = id();
            c.persist(id, count(u64::MAX) as usize);
            c.nodes.get_mut(&id).expect("node").auto_persist = !case.args.contains_key("n");
            c.process(id);
        }
        #[cfg(feature = "planted-bugs")]
        "plant" => {
            let bug = match arg(case, "bug").as_str() {
                "GrantSecondVote" => crate::PlantedBug::GrantSecondVote,
                "CommitPriorTermByCount" => crate::PlantedBug::CommitPriorTermByCount,
                "AckBeforePersist" => crate::PlantedBug::AckBeforePersist,
                "FollowerReadsOwnCommit" => crate::PlantedBug::FollowerReadsOwnCommit,
                other => panic!("unknown bug {other}"),
            };
            c.planted.push(bug);
            c.plant_all();
        }
        "crash" => c.crash(id()),
        "restart" => {
            let id = id();
            c.restart(id);
            c.process(id);
        }
        "add-node" => c.add_node(id(), Disk::default()),
        "propose" => {
            let (id, data) = (id(), arg(case, "data"));
            let r = c
                .nodes
                .get_mut(&id)
                .expect("node")
                .raft
                .propose(Bytes::from(data.clone()));
            c.line(format!("n{id} propose {data} -> {r:?}"));
            c.process(id);
        }
        "read" => {
            // Several contexts in one command are issued before the next `ready()`.
            let id = id();
            for ctx in nums(case, "ctx") {
                if let Err(e) = c.read(id, ctx) {
                    c.line(format!("n{id} read {ctx} -> {e:?}"));
                }
            }
            c.process(id);
        }
        "transfer" => {
            let id = id();
            c.nodes
                .get_mut(&id)
                .expect("node")
                .raft
                .transfer_leadership(NodeId(num(&arg(case, "to"))));
            c.process(id);
        }
        "conf" => {
            let id = id();
            let node = |name: &str| opt(case, name).map(|v| NodeId(num(&v)));
            let change = if let Some(n) = node("add-learner") {
                ConfChange::AddLearner(n)
            } else if let Some(n) = node("promote") {
                ConfChange::PromoteLearner(n)
            } else if let Some(n) = node("remove") {
                ConfChange::RemoveNode(n)
            } else {
                panic!("conf: expected add-learner=, promote= or remove=")
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
        "resend-votes" => {
            let id = id();
            c.nodes
                .get_mut(&id)
                .expect("node")
                .raft
                .resend_vote_requests();
            c.process(id);
        }
        "hb-resend" => {
            let id = id();
            let ticks = opt(case, "ticks").map(|v| num(&v) as u32);
            c.nodes
                .get_mut(&id)
                .expect("node")
                .raft
                .set_heartbeat_resend_ticks(ticks);
        }
        "suppress" => {
            let id = id();
            let on = arg(case, "on") == "true";
            c.nodes
                .get_mut(&id)
                .expect("node")
                .raft
                .set_heartbeat_suppression(on);
        }
        "ask-for-leader" => {
            let id = id();
            let nodes: Vec<NodeId> = nums(case, "nodes").into_iter().map(NodeId).collect();
            c.nodes
                .get_mut(&id)
                .expect("node")
                .raft
                .ask_for_leader(&nodes);
            c.process(id);
        }
        "compact" => {
            let id = id();
            c.compact(id);
            c.line(format!(
                "n{id} compacted to {}",
                c.nodes[&id].raft.log.snap_index
            ));
        }
        "status" => {
            let ids = if case.args.contains_key("ids") {
                ids(c, case, "ids")
            } else {
                c.nodes.keys().copied().collect()
            };
            for id in ids {
                let s = c.status(id);
                c.line(s);
            }
        }
        "log" => {
            for id in ids(c, case, "ids") {
                let log = &c.nodes[&id].raft.log;
                let s = format!(
                    "n{id} log snap={}/{} {}",
                    log.snap_index,
                    log.snap_term,
                    Entries(log.range(log.first_index(), log.last_index()))
                );
                c.line(s);
            }
        }
        other => panic!("unknown command {other}"),
    }
    c.check_log_matching();
    let out = std::mem::take(&mut c.out);
    if out.is_empty() {
        NO_OUTPUT.into()
    } else {
        out
    }
}

/// Every transcript in `testdata/`: each command's output must match the one recorded.
#[test]
fn transcripts() {
    let planted = |file: &datadriven::TestFile| file.filename.contains("/planted/");
    datadriven::walk_exclusive(
        TESTDATA_DIR,
        |file| {
            let mut cluster = None;
            file.run(|case| run_cmd(&mut cluster, case));
        },
        planted,
    );
}

/// Transcripts with a bug planted (`plant bug=NAME`): each ends where a safety check
/// fires, and the check's message is the last output, so a check that stops firing
/// changes the transcript.
#[cfg(feature = "planted-bugs")]
#[test]
fn planted_bugs_are_caught() {
    use std::panic::{catch_unwind, AssertUnwindSafe};
    datadriven::walk(PLANTED_DIR, |file| {
        let mut cluster = None;
        file.run(|case| {
            catch_unwind(AssertUnwindSafe(|| run_cmd(&mut cluster, case))).unwrap_or_else(|panic| {
                let message = panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| panic.downcast_ref::<&str>().copied())
                    .unwrap_or("(no message)");
                format!("safety check: {message}\n")
            })
        });
    });
}
