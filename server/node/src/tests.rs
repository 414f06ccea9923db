//! Whole-node tests: a few NodeCores wired together in memory (instant network, instant
//! disk), to check routing, batching, redirects and recovery through the public inputs.

use crate::codec::PeerBatch;
use crate::wal::ReplicaRecord;
use crate::{
    AppliedEntry, ClientToken, DiskOp, EventKind, GroupMessage, NodeConfig, NodeCore, NodeEvent,
    Output, ProposedRequest, WriteRefusal,
};
use bytes::Bytes;
use kv_shared::config::LeaderPolicy;
use kv_shared::proto::{ClientError, ClientReply, ClientRequest, Op, Outcome, Role};
use kv_shared::{ClientId, NodeId, ShardId};
use kv_storage::{Record, Recovered};
use std::collections::VecDeque;

mod deferred_applies;
mod follower_reads;
mod lease_reads;
mod metadata;
mod metadata_moves;
mod move_steps;
mod pack_leaders;
mod quiet_groups;
mod rejoin;
mod tombstones;

/// Node `from`'s datagrams with their frames' records as the messages they stand for.
fn whole(from: NodeId, datagrams: Vec<(NodeId, PeerBatch)>) -> Vec<(NodeId, Vec<GroupMessage>)> {
    datagrams
        .into_iter()
        .map(|(to, batch)| (to, batch.into_messages(from, to)))
        .collect()
}

/// The payload of a datagram carrying `batch` to `to`.
fn payload(to: NodeId, batch: &PeerBatch) -> Vec<u8> {
    let mut out = vec![0; crate::codec::payload_len(to, batch)];
    crate::codec::encode_peer_body(to, batch, &mut out).expect("a batch of the core fits");
    out
}

struct Cluster {
    nodes: Vec<NodeCore>,
    /// Every record each node was asked to append (its "disk").
    disks: Vec<Vec<Record>>,
    snapshots: Vec<Vec<(u32, u64, Bytes)>>,
    /// Datagram payloads in flight: (from, to, payload).
    net: VecDeque<(NodeId, NodeId, Vec<u8>)>,
    replies: Vec<(usize, ClientToken, ClientReply)>,
    datagrams: usize,
    /// Raft messages carried by those datagrams.
    messages: usize,
    /// Nodes that are neither ticked nor reached (crashed or cut off).
    down: Vec<bool>,
    /// Every event each node reported, in order.
    events: Vec<(usize, NodeEvent)>,
    /// Raft messages that reached a node not hosting their shard.
    misdirected: usize,
    /// Every entry each node reported applied, in order.
    applied: Vec<(usize, AppliedEntry)>,
    /// Every request each node reported proposed.
    proposed: Vec<(usize, ProposedRequest)>,
    /// (node index, shard): that node's messages of that shard are lost on the way to
    /// it, its other traffic arrives (so its peers' nodes look alive).
    cut_shards: Vec<(usize, ShardId)>,
}

fn ids(n: u64) -> Vec<NodeId> {
    (1..=n).map(NodeId).collect()
}

impl Cluster {
    fn new(n: u64, shards: u32) -> Cluster {
        Cluster::with(n, shards, |_| {})
    }

    fn with(n: u64, shards: u32, tweak: impl Fn(&mut NodeConfig)) -> Cluster {
        let nodes = ids(n)
            .into_iter()
            .map(|id| {
                let mut config = NodeConfig::for_test(id, ids(n), shards);
                tweak(&mut config);
                NodeCore::new(config, Recovered::default()).unwrap()
            })
            .collect();
        Cluster {
            nodes,
            disks: vec![Vec::new(); n as usize],
            snapshots: vec![Vec::new(); n as usize],
            net: VecDeque::new(),
            replies: Vec::new(),
            datagrams: 0,
            messages: 0,
            down: vec![false; n as usize],
            events: Vec::new(),
            misdirected: 0,
            applied: Vec::new(),
            proposed: Vec::new(),
            cut_shards: Vec::new(),
        }
    }

    fn absorb(&mut self, i: usize, out: Output) {
        let me = NodeId(i as u64 + 1);
        for (to, batch) in out.datagrams {
            // Through the real codec.
            let d = crate::codec::encode_peer(7, me, to, &batch);
            let (from, payload) = crate::codec::open_peer_datagram(&d, 7).unwrap();
            let back = crate::codec::decode_peer(from, payload).unwrap();
            assert_eq!(back, batch.into_messages(me, to));
            self.datagrams += 1;
            self.messages += back.len();
            self.net.push_back((from, to, payload.to_vec()));
        }
        for (t, r) in out.replies {
            self.replies.push((i, t, r));
        }
        self.events.extend(out.events.into_iter().map(|e| (i, e)));
        self.applied.extend(out.applied.into_iter().map(|a| (i, a)));
        self.proposed
            .extend(out.proposed.into_iter().map(|p| (i, p)));
        for w in out.disk_writes {
            for op in w.ops {
                match op {
                    DiskOp::Append(r) => self.disks[i].push(r),
                    DiskOp::SaveSnapshot { shard, index, data } => {
                        self.snapshots[i].retain(|s| s.0 != shard);
                        self.snapshots[i].push((shard, index, data));
                    }
                    DiskOp::Compact { .. } => {}
                    DiskOp::RemoveGroup { shard } | DiskOp::TakeBackGroup { shard } => {
                        self.snapshots[i].retain(|s| s.0 != shard);
                    }
                }
            }
            self.nodes[i].on_disk_done(w.id);
            let out = self.nodes[i].take_output();
            self.absorb(i, out);
        }
    }

    fn settle(&mut self) {
        while let Some((from, to, payload)) = self.net.pop_front() {
            let i = to.0 as usize - 1;
            if self.down[i] || self.down[from.0 as usize - 1] {
                continue;
            }
            let mut msgs = crate::codec::decode_peer(from, &payload).unwrap();
            let node = &self.nodes[i];
            self.misdirected += msgs.iter().filter(|m| !node.hosts(m.shard)).count();
            let cut = |m: &GroupMessage| self.cut_shards.contains(&(i, m.shard));
            if msgs.iter().any(cut) {
                msgs.retain(|m| !cut(m));
                self.nodes[i].on_peer_messages(from, msgs);
            } else {
                // As the runtime takes it: the frame's records straight into the groups.
                self.nodes[i].on_peer_payload(from, &payload).unwrap();
            }
            let out = self.nodes[i].take_output();
            self.absorb(i, out);
        }
    }

    fn tick(&mut self, n: usize) {
        for _ in 0..n {
            for i in 0..self.nodes.len() {
                if self.down[i] {
                    continue;
                }
                self.nodes[i].tick();
                let out = self.nodes[i].take_output();
                self.absorb(i, out);
            }
            self.settle();
        }
    }

    fn leader(&self, shard: ShardId) -> usize {
        (0..self.nodes.len())
            .find(|&i| {
                self.nodes[i].hosts(shard) && self.nodes[i].raft_status(shard).role == Role::Leader
            })
            .expect("a leader")
    }

    fn request(&mut self, i: usize, token: u64, req: ClientRequest) {
        self.nodes[i].on_client_request(ClientToken(token), req);
    }

    fn flush(&mut self, i: usize) {
        let out = self.nodes[i].take_output();
        self.absorb(i, out);
        self.settle();
    }

    fn reply_to(&self, token: u64) -> Vec<Outcome> {
        self.replies
            .iter()
            .filter(|(_, t, _)| t.0 == token)
            .map(|(_, _, r)| r.outcome.clone())
            .collect()
    }
}

fn put(client: u64, seq: u64, k: &str, v: &str) -> ClientRequest {
    ClientRequest {
        client: ClientId(client),
        seq,
        epoch: 0,
        op: Op::Put {
            key: Bytes::copy_from_slice(k.as_bytes()),
            value: Bytes::copy_from_slice(v.as_bytes()),
        },
    }
}

fn get(client: u64, seq: u64, k: &str) -> ClientRequest {
    ClientRequest {
        client: ClientId(client),
        seq,
        epoch: 0,
        op: Op::Get {
            key: Bytes::copy_from_slice(k.as_bytes()),
            stale: false,
        },
    }
}

#[test]
fn writes_of_one_round_share_one_entry_and_reads_see_them() {
    let mut c = Cluster::new(3, 1);
    c.tick(60);
    let l = c.leader(ShardId(0));
    let before = c.nodes[l].raft_status(ShardId(0)).last_index;
    for k in 0..5 {
        c.request(l, k, put(k + 1, 1, &format!("k{k}"), "v"));
    }
    c.flush(l);
    assert_eq!(
        c.nodes[l].raft_status(ShardId(0)).last_index,
        before + 1,
        "five writes, one entry"
    );
    c.tick(3);
    for k in 0..5 {
        assert_eq!(c.reply_to(k), vec![Outcome::Done]);
    }
    c.request(l, 100, get(9, 1, "k3"));
    c.flush(l);
    c.tick(3);
    assert_eq!(
        c.reply_to(100),
        vec![Outcome::Value(Some(Bytes::from_static(b"v")))]
    );
}

/// A round's Appends of a small entry travel as records of the frame, those of a large
/// entry as messages (their data copied once), and both commit.
#[test]
fn small_appends_travel_as_frame_records_and_large_ones_as_messages() {
    let mut c = Cluster::new(3, 1);
    c.tick(60);
    let l = c.leader(ShardId(0));
    let large = crate::codec::frame::RECORD_DATA_BYTES_MAX;
    for (token, value_bytes, as_records) in [(1, 100, true), (2, large, false)] {
        let value = "v".repeat(value_bytes);
        c.request(l, token, put(token, 1, &format!("k{token}"), &value));
        let out = c.nodes[l].take_output();
        let is_append =
            |gm: &&GroupMessage| matches!(gm.msg.body, kv_raft::MessageBody::Append { .. });
        let messages = (out.datagrams.iter())
            .flat_map(|(_, b)| &b.msgs)
            .filter(is_append)
            .count();
        let framed = (out.datagrams.iter())
            .filter(|(_, b)| !b.frame.is_empty())
            .count();
        let expected = if as_records { (2, 0) } else { (0, 2) };
        assert_eq!((framed, messages), expected, "{value_bytes} bytes");
        c.absorb(l, out);
        c.settle();
        c.tick(3);
        assert_eq!(c.reply_to(token), vec![Outcome::Done]);
    }
}

#[test]
fn large_writes_of_one_round_are_split_so_every_entry_fits_a_datagram() {
    // Regression: a round of many large writes used to become one entry bigger than a
    // datagram, and the codec's size assertion panicked in take_output.
    let mut c = Cluster::new(3, 1);
    c.tick(60);
    let l = c.leader(ShardId(0));
    let before = c.nodes[l].raft_status(ShardId(0)).last_index;
    let value = "v".repeat(kv_shared::limits::VALUE_BYTES_MAX);
    for k in 0..8 {
        c.request(l, k, put(k + 1, 1, &format!("k{k}"), &value));
    }
    c.flush(l);
    let entries = c.nodes[l].raft_status(ShardId(0)).last_index - before;
    assert_eq!(entries, 8, "32 KiB values: one write per entry");
    c.tick(3);
    for k in 0..8 {
        assert_eq!(c.reply_to(k), vec![Outcome::Done]);
    }
}

#[test]
fn follower_redirects_to_the_leader_and_retry_applies_once() {
    let mut c = Cluster::new(3, 2);
    c.tick(60);
    let l = c.leader(ShardId(0));
    let key = (0..)
        .map(|i| format!("key{i}"))
        .find(|k| kv_shared::shard::shard_for_key(k.as_bytes(), 2) == ShardId(0))
        .unwrap();
    let f = (l + 1) % 3;
    c.request(f, 1, put(5, 1, &key, "a"));
    c.flush(f);
    assert_eq!(
        c.reply_to(1),
        vec![Outcome::Error(ClientError::NotLeader {
            shard: ShardId(0),
            leader: Some(NodeId(l as u64 + 1))
        })]
    );
    c.request(l, 2, put(5, 1, &key, "a"));
    c.flush(l);
    c.tick(3);
    c.request(l, 3, put(6, 1, &key, "b"));
    c.flush(l);
    c.tick(3);
    // A late retry of client 5's write must not overwrite client 6's.
    c.request(l, 4, put(5, 1, &key, "a"));
    c.flush(l);
    c.tick(3);
    assert_eq!(c.reply_to(4), vec![Outcome::Done]);
    c.request(l, 5, get(7, 1, &key));
    c.flush(l);
    c.tick(3);
    assert_eq!(
        c.reply_to(5),
        vec![Outcome::Value(Some(Bytes::from_static(b"b")))]
    );
}

#[test]
fn requests_without_a_leader_time_out_exactly_once() {
    let mut c = Cluster::new(3, 1);
    // No ticks yet: no leader is known. Isolate node 1 so none becomes known to it.
    c.request(0, 1, put(1, 1, "x", "y"));
    c.flush(0);
    for _ in 0..60 {
        c.nodes[0].tick();
        let out = c.nodes[0].take_output();
        assert!(out.replies.len() <= 1);
        c.replies
            .extend(out.replies.into_iter().map(|(t, r)| (0, t, r)));
    }
    assert_eq!(
        c.reply_to(1),
        vec![Outcome::Error(ClientError::Timeout { shard: ShardId(0) })]
    );
    assert_eq!(c.nodes[0].pending_requests(), 0);
}

/// Answered requests stay in the deadline queue until `tick` reaches them: one answered
/// before its deadline must not time out as well, and a later one, held behind it, must.
#[test]
fn an_answered_request_never_times_out_and_a_later_one_still_does() {
    // Not quiescing: an idle leader keeps ticking, so CheckQuorum steps it down below.
    let mut c = Cluster::with(3, 1, |config| config.quiesce = false);
    c.tick(60);
    let l = c.leader(ShardId(0));
    c.request(l, 1, put(1, 1, "x", "y"));
    c.flush(l);
    c.tick(2);
    assert_eq!(c.reply_to(1), vec![Outcome::Done]);
    // Cut the leader off: it steps down (CheckQuorum) and, knowing no leader, holds the
    // next request until its deadline.
    for i in (0..3).filter(|&i| i != l) {
        c.down[i] = true;
    }
    c.tick(200);
    assert_ne!(c.nodes[l].raft_status(ShardId(0)).role, Role::Leader);
    c.request(l, 2, put(1, 2, "x", "z"));
    c.flush(l);
    c.tick(60);
    assert_eq!(
        c.reply_to(1),
        vec![Outcome::Done],
        "answered once, never timed out"
    );
    assert_eq!(
        c.reply_to(2),
        vec![Outcome::Error(ClientError::Timeout { shard: ShardId(0) })]
    );
    assert_eq!(c.nodes[l].pending_requests(), 0);
}

#[test]
fn restart_from_records_keeps_the_data() {
    let mut c = Cluster::new(3, 2);
    c.tick(60);
    for (t, k) in ["a", "b", "c", "d"].iter().enumerate() {
        let shard = kv_shared::shard::shard_for_key(k.as_bytes(), 2);
        let l = c.leader(shard);
        c.request(l, t as u64, put(t as u64 + 1, 1, k, "v"));
        c.flush(l);
        c.tick(3);
    }
    // Restart every node from what it appended; the data must come back.
    for i in 0..3 {
        let rec = Recovered {
            records: c.disks[i].clone(),
            snapshots: c.snapshots[i].clone(),
            truncated_tail: None,
        };
        c.nodes[i] =
            NodeCore::new(NodeConfig::for_test(NodeId(i as u64 + 1), ids(3), 2), rec).unwrap();
    }
    c.tick(80);
    for (t, k) in ["a", "b", "c", "d"].iter().enumerate() {
        let shard = kv_shared::shard::shard_for_key(k.as_bytes(), 2);
        let l = c.leader(shard);
        c.request(l, 100 + t as u64, get(2, 1, k));
        c.flush(l);
        c.tick(3);
        assert_eq!(
            c.reply_to(100 + t as u64),
            vec![Outcome::Value(Some(Bytes::from_static(b"v")))],
            "key {k}"
        );
    }
}

/// Puts to every shard one node leads, routed in one round, make one WAL record on that
/// node: a round record with a part per shard (its entries and commit index), and no
/// hard-state record, since no term or vote changed.
#[test]
fn a_round_over_many_shards_writes_one_record() {
    let shards = 8;
    let mut c = Cluster::with(3, shards, |cfg| cfg.quiesce = false);
    c.tick(80);
    let l = c.leader(ShardId(0));
    let led: Vec<ShardId> = (0..shards)
        .map(ShardId)
        .filter(|&s| c.leader(s) == l)
        .collect();
    for (n, &shard) in led.iter().enumerate() {
        let key = (0..)
            .map(|k| format!("k{k}"))
            .find(|k| kv_shared::shard::shard_for_key(k.as_bytes(), shards) == shard)
            .unwrap();
        c.request(l, n as u64, put(n as u64 + 1, 1, &key, "v"));
    }
    let out = c.nodes[l].take_output();
    let records: Vec<&kv_storage::Record> = out
        .disk_writes
        .iter()
        .flat_map(|w| &w.ops)
        .filter_map(|op| match op {
            DiskOp::Append(r) => Some(r),
            _ => None,
        })
        .collect();
    assert_eq!(records.len(), 1, "{records:?}");
    let crate::wal::WalRecord::Round(parts) = crate::wal::decode(records[0]).unwrap() else {
        panic!("not a round record: {:?}", records[0]);
    };
    let written: Vec<ShardId> = parts
        .iter()
        .filter(|p| !p.entries.is_empty())
        .map(|p| ShardId(p.shard))
        .collect();
    assert_eq!(written, led);
    c.absorb(l, out);
    c.settle();
    for n in 0..led.len() as u64 {
        assert_eq!(c.reply_to(n), vec![Outcome::Done], "put {n}");
    }
}

#[test]
fn snapshots_compact_and_restore() {
    let mut c = Cluster::with(3, 1, |config| config.snapshot_threshold_entries = 5);
    c.tick(60);
    let l = c.leader(ShardId(0));
    for s in 1..=30u64 {
        c.request(l, s, put(1, s, &format!("k{}", s % 4), &format!("v{s}")));
        c.flush(l);
        c.tick(1);
    }
    c.tick(5);
    let st = c.nodes[l].raft_status(ShardId(0));
    assert!(st.snapshot_index > 0, "a snapshot was taken: {st:?}");
    assert!(!c.snapshots[l].is_empty());
    // Digests agree across replicas that applied the same prefix.
    let d: Vec<_> = (0..3)
        .map(|i| c.nodes[i].state_digest(ShardId(0)).unwrap())
        .collect();
    assert!(d.iter().all(|x| *x == d[0]), "{d:?}");
    // A restart from snapshot + records gives the same state.
    let rec = Recovered {
        records: c.disks[l].clone(),
        snapshots: c.snapshots[l].clone(),
        truncated_tail: None,
    };
    let back = NodeCore::new(NodeConfig::for_test(NodeId(l as u64 + 1), ids(3), 1), rec).unwrap();
    assert!(back.state_digest(ShardId(0)).unwrap().0 >= st.snapshot_index);
}

#[test]
fn datagrams_batch_all_groups_per_destination() {
    let mut c = Cluster::with(3, 8, |cfg| cfg.quiesce = false);
    c.tick(80);
    let before = c.datagrams;
    c.tick(1);
    // Heartbeats of up to eight groups per node pair travel in one datagram each way.
    assert!(
        c.datagrams - before <= 3 * 2 * 2,
        "{} datagrams for one tick",
        c.datagrams - before
    );
}

/// Raft messages and datagrams the cluster sends over `ticks` ticks.
fn traffic(c: &mut Cluster, ticks: usize) -> (usize, usize) {
    let (m, d) = (c.messages, c.datagrams);
    c.tick(ticks);
    (c.messages - m, c.datagrams - d)
}

#[test]
fn idle_groups_quiesce_and_a_request_wakes_them() {
    let mut c = Cluster::new(3, 8);
    c.tick(80);
    let (messages, datagrams) = traffic(&mut c, 50);
    assert_eq!(messages, 0, "idle groups send no Raft message");
    // What is left is one keepalive per node pair and direction per heartbeat period.
    assert!(datagrams <= 50 * 3 * 2, "{datagrams} datagrams in 50 ticks");

    // The same cluster without quiescence keeps heartbeating: the check above can fail.
    let mut busy = Cluster::with(3, 8, |cfg| cfg.quiesce = false);
    busy.tick(80);
    assert!(traffic(&mut busy, 50).0 > 8 * 2 * 40);

    let l = c.leader(ShardId(0));
    let key = (0..)
        .map(|i| format!("k{i}"))
        .find(|k| kv_shared::shard::shard_for_key(k.as_bytes(), 8) == ShardId(0))
        .unwrap();
    c.request(l, 1, put(1, 1, &key, "v"));
    c.flush(l);
    c.tick(3);
    assert_eq!(c.reply_to(1), vec![Outcome::Done]);
    c.request(l, 2, get(2, 1, &key));
    c.flush(l);
    c.tick(3);
    assert_eq!(
        c.reply_to(2),
        vec![Outcome::Value(Some(Bytes::from_static(b"v")))]
    );
    // Every follower applied it and the group quiesces again.
    c.tick(20);
    for n in &c.nodes {
        assert_eq!(
            n.raft_status(ShardId(0)).applied,
            c.nodes[l].raft_status(ShardId(0)).applied
        );
    }
    assert_eq!(traffic(&mut c, 20).0, 0, "quiet again");
}

#[test]
fn followers_of_a_silent_leader_node_wake_and_elect() {
    let mut c = Cluster::new(3, 4);
    c.tick(80);
    assert_eq!(traffic(&mut c, 10).0, 0, "quiesced");
    let l = c.leader(ShardId(0));
    let led: Vec<ShardId> = (0..4).map(ShardId).filter(|&s| c.leader(s) == l).collect();
    let term = c.nodes[l].raft_status(ShardId(0)).hard.term;
    c.down[l] = true;
    // Silence is noticed after an election timeout (10 ticks here), then an election
    // timeout of 10..20 ticks passes, then PreVote and Vote rounds.
    c.tick(60);
    for s in led {
        let new = (0..3)
            .filter(|&i| !c.down[i])
            .find(|&i| c.nodes[i].raft_status(s).role == Role::Leader);
        let new = new.unwrap_or_else(|| panic!("no new leader for shard {}", s.0));
        assert!(c.nodes[new].raft_status(s).hard.term > term);
    }
}

/// Lease reads with quiescence: a leader that keeps heartbeating answers a read with no
/// Raft message at all, and steady reads keep it awake; a quiesced leader woken by a read
/// first earns a new lease, so its paused clock never stretches the old one.
#[test]
fn lease_reads_skip_the_round_and_a_woken_leader_earns_a_new_lease() {
    let mut c = Cluster::with(3, 1, |cfg| cfg.raft.lease_reads = true);
    c.tick(80);
    let l = c.leader(ShardId(0));
    let value = || vec![Outcome::Value(Some(Bytes::from_static(b"v")))];
    c.request(l, 1, put(1, 1, "k", "v"));
    c.flush(l);
    c.tick(3);
    assert_eq!(c.reply_to(1), vec![Outcome::Done]);
    // The first read may find the group quiesced; it wakes it and takes a round.
    c.request(l, 2, get(2, 1, "k"));
    c.flush(l);
    assert_eq!(c.reply_to(2), value());
    for seq in 2..12 {
        c.tick(1);
        let before = c.messages;
        c.request(l, 3, get(3, seq, "k"));
        c.flush(l);
        assert_eq!(c.messages, before, "read {seq}: answered from the lease");
        assert_eq!(c.reply_to(3).len() as u64, seq - 1);
    }
    // Idle again: the group quiesces, its clock stops.
    c.tick(30);
    assert_eq!(traffic(&mut c, 10).0, 0, "quiesced");
    let before = c.messages;
    c.request(l, 4, get(4, 1, "k"));
    c.flush(l);
    assert_eq!(c.reply_to(4), value());
    assert!(
        c.messages > before,
        "a woken leader must not answer from the lease its paused clock kept"
    );
}

/// `NodeCore::expire_leases` (the runtime saw its ticks lag real time): the next read
/// takes a heartbeat round.
#[test]
fn expired_leases_make_the_next_read_take_a_round() {
    let mut c = Cluster::with(3, 1, |cfg| cfg.raft.lease_reads = true);
    c.tick(80);
    let l = c.leader(ShardId(0));
    c.request(l, 1, put(1, 1, "k", "v"));
    c.flush(l);
    c.tick(3);
    // A tick heartbeats (every tick here), and its echoes renew the lease: read between
    // ticks.
    let read = |c: &mut Cluster, seq: u64| {
        let before = c.messages;
        c.request(l, 2, get(2, seq, "k"));
        c.flush(l);
        assert_eq!(c.reply_to(2).len() as u64, seq);
        c.messages - before
    };
    read(&mut c, 1);
    c.tick(1);
    assert_eq!(read(&mut c, 2), 0, "answered from the lease");
    c.nodes[l].expire_leases();
    assert!(read(&mut c, 3) > 0, "expired: a heartbeat round");
    assert_eq!(read(&mut c, 4), 0, "the round's echoes are a new lease");
}

#[test]
fn a_shard_snapshots_after_enough_log_bytes_whatever_its_entry_count() {
    let mut c = Cluster::with(3, 1, |config| {
        config.snapshot_threshold_entries = 1_000_000;
    });
    c.tick(60);
    let l = c.leader(ShardId(0));
    let value = "x".repeat(30_000);
    // 300 puts of 30 kB: over 8 MiB of entry payloads in far fewer entries than the
    // entry threshold.
    for s in 1..=300u64 {
        c.request(l, s, put(1, s, "k", &value));
        c.flush(l);
        c.tick(1);
    }
    c.tick(5);
    let st = c.nodes[l].raft_status(ShardId(0));
    assert!(st.snapshot_index > 0, "a snapshot was taken: {st:?}");
    assert!(
        st.snapshot_index < 300,
        "only once the bytes added up: {st:?}"
    );
}

/// Raft drops a snapshot image no live follower needs and asks for it again
/// (`snapshot_wanted`) when a follower comes back behind the compacted log. The core
/// answers with an image of the shard's applied state, written nowhere, whether or not
/// the shard applied past its last snapshot, and the follower catches up by installing it.
fn follower_back_after_compaction_gets_a_snapshot(puts_after_snapshot: u64) {
    let mut c = Cluster::with(3, 1, |config| config.snapshot_threshold_entries = 5);
    c.tick(60);
    let shard = ShardId(0);
    let l = c.leader(shard);
    let f = (l + 1) % 3;
    c.down[f] = true;
    let mut seq = 0;
    let mut put_one = |c: &mut Cluster| {
        seq += 1;
        c.request(
            l,
            seq,
            put(1, seq, &format!("k{}", seq % 4), &format!("v{seq}")),
        );
        c.flush(l);
        c.tick(1);
    };
    // Down for longer than an election timeout (at most 20 ticks of the busy leader: an
    // idle one does not tick) before the snapshot that counts: a leader compacting keeps
    // the log a follower heard lately still lacks.
    for _ in 0..25 {
        put_one(&mut c);
    }
    // Until a snapshot lands exactly at the applied index.
    for _ in 0..100 {
        put_one(&mut c);
        let st = c.nodes[l].raft_status(shard);
        if st.snapshot_index > 0 && st.snapshot_index == st.applied {
            break;
        }
    }
    for _ in 0..puts_after_snapshot {
        put_one(&mut c);
    }
    // Past 10 election timeouts (of at most 20 ticks) Raft holds no image for `f`.
    c.tick(210);
    let before = c.nodes[l].raft_status(shard);
    assert!(before.snapshot_index > 0, "{before:?}");
    assert_eq!(before.applied - before.snapshot_index, puts_after_snapshot);
    c.down[f] = false;
    c.tick(60);
    let after = c.nodes[l].raft_status(shard);
    assert_eq!(
        after.snapshot_index, before.snapshot_index,
        "no snapshot written on the way"
    );
    let back = c.nodes[f].raft_status(shard);
    assert_eq!(
        back.snapshot_index, before.applied,
        "installed the image of the applied state: {back:?}"
    );
    assert_eq!(
        c.nodes[f].state_digest(shard).unwrap(),
        c.nodes[l].state_digest(shard).unwrap()
    );
    let reported = |node: usize, want: &dyn Fn(&EventKind) -> bool| {
        c.events
            .iter()
            .any(|(i, e)| *i == node && e.shard == shard && want(&e.kind))
    };
    assert!(reported(l, &|k| matches!(
        k,
        EventKind::SnapshotSendStarted { to, .. } if *to == NodeId(f as u64 + 1)
    )));
    assert!(reported(f, &|k| matches!(
        k,
        EventKind::SnapshotInstalled { index } if *index == before.applied
    )));
}

/// The runtime logs and counts what the core reports; a leader's crash must show up as
/// elections, role changes and leader changes on the survivors, with the new term.
#[test]
fn elections_and_leader_changes_are_reported_as_events() {
    let mut c = Cluster::new(3, 1);
    c.tick(60);
    let shard = ShardId(0);
    let l = c.leader(shard);
    let old_term = c.nodes[l].raft_status(shard).hard.term;
    assert!(c.events.iter().any(|(i, e)| *i == l
        && e.kind
            == EventKind::RoleChanged {
                from: Role::Candidate,
                to: Role::Leader
            }));
    c.events.clear();
    c.down[l] = true;
    c.tick(60);
    let new = c.leader(shard);
    let new_term = c.nodes[new].raft_status(shard).hard.term;
    assert!(new_term > old_term);
    let of = |i: usize| -> Vec<&NodeEvent> {
        c.events
            .iter()
            .filter(|(n, _)| *n == i)
            .map(|(_, e)| e)
            .collect()
    };
    assert!(of(new).iter().any(|e| e.term == new_term
        && matches!(
            e.kind,
            EventKind::ElectionStarted {
                pre_vote: false,
                ..
            }
        )));
    for i in (0..3).filter(|&i| i != l) {
        assert!(
            of(i).iter().any(|e| e.kind
                == EventKind::LeaderChanged {
                    from: None,
                    to: Some(NodeId(new as u64 + 1))
                }),
            "node {} saw the new leader: {:?}",
            i + 1,
            of(i)
        );
    }
    assert!(of(l).is_empty(), "a crashed node reports nothing");
}

#[test]
fn follower_back_after_compaction_gets_a_snapshot_at_the_compacted_index() {
    follower_back_after_compaction_gets_a_snapshot(0);
}

#[test]
fn follower_back_after_compaction_gets_a_snapshot_past_the_compacted_index() {
    follower_back_after_compaction_gets_a_snapshot(2);
}

// ---- remote input the node must refuse without panicking or growing (issue 12) ----

fn refused(node: &NodeCore, reason: &str) -> u64 {
    node.refusals()
        .into_iter()
        .find(|(r, _)| *r == reason)
        .map_or_else(|| panic!("no counter named {reason}"), |(_, n)| n)
}

/// A snapshot chunk from `from` to `to` for `shard`, as a leader of `term` would send it.
fn snapshot_chunk(
    shard: u32,
    from: NodeId,
    to: NodeId,
    term: u64,
    index: u64,
    total_len: u64,
    chunk: &[u8],
) -> GroupMessage {
    GroupMessage {
        shard: ShardId(shard),
        msg: kv_raft::Message {
            from,
            to,
            term,
            body: kv_raft::MessageBody::InstallSnapshot {
                meta: kv_raft::SnapshotMeta {
                    index,
                    term,
                    membership: kv_raft::Membership {
                        voters: ids(3),
                        learners: vec![],
                    },
                },
                offset: 0,
                total_len,
                chunk: Bytes::copy_from_slice(chunk),
            },
        },
    }
}

/// Regression: a snapshot whose image does not decode panicked the node when restored,
/// and since it was persisted first, the node then exited on every restart.
#[test]
fn forged_snapshot_image_is_refused_before_it_is_persisted() {
    let mut c = Cluster::new(3, 1);
    c.tick(60);
    let l = c.leader(ShardId(0));
    let f = (l + 1) % 3;
    let term = c.nodes[f].raft_status(ShardId(0)).hard.term;
    let image = b"\xffnot an image";
    let forged = snapshot_chunk(
        0,
        NodeId(l as u64 + 1),
        NodeId(f as u64 + 1),
        term,
        1000,
        image.len() as u64,
        image,
    );
    c.nodes[f].on_peer_messages(NodeId(l as u64 + 1), vec![forged]);
    let out = c.nodes[f].take_output();
    c.absorb(f, out);
    assert!(c.snapshots[f].is_empty(), "the image reached the disk");
    assert_eq!(refused(&c.nodes[f], "snapshot_image_invalid"), 1);
    assert!(c.nodes[f].raft_status(ShardId(0)).hard.commit < 1000);
    let rec = Recovered {
        records: c.disks[f].clone(),
        snapshots: c.snapshots[f].clone(),
        truncated_tail: None,
    };
    let config = NodeConfig::for_test(NodeId(f as u64 + 1), ids(3), 1);
    assert!(NodeCore::new(config, rec).is_ok(), "the node restarts");
}

/// Regression: any sender id was remembered (a map entry per forged id) and reached the
/// groups; now only members are heard.
#[test]
fn datagrams_from_non_members_are_refused_and_not_remembered() {
    let mut c = Cluster::new(3, 1);
    c.tick(60);
    let stranger = NodeId(99);
    let heartbeat = leader_heartbeat(ShardId(0), stranger.0, 1, 1_000);
    let term = c.nodes[0].raft_status(ShardId(0)).hard.term;
    c.nodes[0].note_peer_heard(stranger, 5);
    c.nodes[0].on_peer_messages(stranger, vec![heartbeat.clone()]);
    assert_eq!(refused(&c.nodes[0], "unknown_sender"), 1);
    assert_eq!(c.nodes[0].raft_status(ShardId(0)).hard.term, term);
    assert!(c.nodes[0]
        .status()
        .peers
        .iter()
        .all(|(p, _)| *p != stranger));
    // A member naming another sender inside its datagram, or an unknown shard.
    c.nodes[0].on_peer_messages(NodeId(2), vec![heartbeat.clone()]);
    assert_eq!(refused(&c.nodes[0], "misaddressed"), 1);
    let mut elsewhere = heartbeat;
    elsewhere.shard = ShardId(7);
    elsewhere.msg.from = NodeId(2);
    c.nodes[0].on_peer_messages(NodeId(2), vec![elsewhere]);
    assert_eq!(refused(&c.nodes[0], "unknown_shard"), 1);
    let status = c.nodes[0].status();
    assert!(status
        .refused
        .iter()
        .any(|(r, n)| r == "unknown_sender" && *n == 1));
}

/// A frame names its receiver once: a datagram's frame for another node is refused
/// record by record, and nothing of it reaches a group; the same payload at its
/// receiver is taken.
#[test]
fn a_frame_for_another_node_is_refused_record_by_record() {
    let mut c = Cluster::with(3, 4, |cfg| {
        cfg.spread_leaders = true;
        cfg.leaders = LeaderPolicy::Pack;
    });
    c.tick(600);
    for shard in 0..4u32 {
        assert_eq!(c.leader(ShardId(shard)), 0, "node 1 leads shard {shard}");
        let key = (0..)
            .map(|i| format!("k{i}"))
            .find(|k| kv_shared::shard::shard_for_key(k.as_bytes(), 4) == ShardId(shard))
            .expect("some key hashes to every shard");
        c.request(0, shard.into(), put(shard.into(), 1, &key, "v"));
    }
    // Node 1's Appends to node 2, delivered to node 3 as though node 1 sent them there.
    let out = c.nodes[0].take_output();
    let (to, batch) = (out.datagrams.iter())
        .find(|(to, b)| *to == NodeId(2) && !b.frame.is_empty())
        .expect("node 1 leads a shard and sent node 2 records")
        .clone();
    let records = batch.clone().into_messages(NodeId(1), to).len() - batch.msgs.len();
    assert!(records > 0);
    let third = c.nodes[2].raft_status(ShardId(0)).last_index;
    c.nodes[2]
        .on_peer_payload(NodeId(1), &payload(to, &batch))
        .unwrap();
    assert_eq!(refused(&c.nodes[2], "misaddressed"), records as u64);
    assert_eq!(c.nodes[2].raft_status(ShardId(0)).last_index, third);
    c.nodes[1]
        .on_peer_payload(NodeId(1), &payload(to, &batch))
        .unwrap();
    assert_eq!(refused(&c.nodes[1], "misaddressed"), 0);
}

/// Regression: pending requests were bounded by count only (100,000 of up to 32 KiB).
#[test]
fn pending_requests_are_bounded_in_bytes() {
    use kv_shared::limits::{PENDING_REQUEST_BYTES_MAX, VALUE_BYTES_MAX};
    let mut c = Cluster::new(3, 1);
    c.tick(60);
    let l = c.leader(ShardId(0));
    // One shared buffer: the node counts each request's bytes, the test holds them once.
    let value = Bytes::from(vec![7u8; VALUE_BYTES_MAX]);
    let mut accepted = 0u64;
    let limit_hit = loop {
        let seq = accepted + 1;
        c.nodes[l].on_client_request(
            ClientToken(seq),
            ClientRequest {
                client: ClientId(seq),
                seq: 1,
                epoch: 0,
                op: Op::Put {
                    key: Bytes::from_static(b"k"),
                    value: value.clone(),
                },
            },
        );
        if c.nodes[l].pending_requests() as u64 == accepted {
            break seq;
        }
        accepted += 1;
        assert!(c.nodes[l].pending_request_bytes() <= PENDING_REQUEST_BYTES_MAX);
    };
    assert!(accepted > 0);
    assert!(
        c.nodes[l].pending_request_bytes() + VALUE_BYTES_MAX > PENDING_REQUEST_BYTES_MAX - 4096
    );
    let out = c.nodes[l].take_output();
    let refusal = out
        .replies
        .iter()
        .find(|(t, _)| t.0 == limit_hit)
        .map(|(_, r)| r.outcome.clone());
    assert!(
        matches!(
            refusal,
            Some(Outcome::Error(ClientError::OverloadedBytes { .. }))
        ),
        "{refusal:?}"
    );
    assert_eq!(refused(&c.nodes[l], "pending_bytes_full"), 1);
    c.absorb(l, out);
    c.settle();
    c.tick(5);
    assert_eq!(
        c.nodes[l].pending_request_bytes(),
        0,
        "answered requests release bytes"
    );
}

/// Snapshot reassembly is bounded per group (the announced size, `SNAPSHOT_IMAGE_BYTES_MAX`)
/// and over the node (`SNAPSHOT_RECEIVE_BYTES_MAX`).
#[test]
fn snapshot_transfers_beyond_the_receive_limits_are_refused() {
    use kv_shared::limits::{SNAPSHOT_IMAGE_BYTES_MAX, SNAPSHOT_RECEIVE_BYTES_MAX};
    let mut c = Cluster::new(3, 8);
    c.tick(80);
    // The node leading the fewest shards receives; a leader does not take snapshots.
    let fi = (0..3)
        .min_by_key(|&i| (0..8).filter(|&s| c.leader(ShardId(s)) == i).count())
        .unwrap();
    let f = NodeId(fi as u64 + 1);
    let leader_of = |c: &Cluster, s: u32| NodeId(c.leader(ShardId(s)) as u64 + 1);
    let shard = (0..8).find(|&s| leader_of(&c, s) != f).unwrap();
    let l = leader_of(&c, shard);
    let term = c.nodes[fi].raft_status(ShardId(shard)).hard.term;
    let too_big = snapshot_chunk(shard, l, f, term, 1000, SNAPSHOT_IMAGE_BYTES_MAX + 1, b"x");
    c.nodes[fi].on_peer_messages(l, vec![too_big]);
    assert_eq!(refused(&c.nodes[fi], "snapshot_size_invalid"), 1);
    let mut started = 0u64;
    let mut s = 0u32;
    let mut refused_total = 0u64;
    for shard in 0..8u32 {
        let l = leader_of(&c, shard);
        if l == f {
            continue;
        }
        s += 1;
        let term = c.nodes[fi].raft_status(ShardId(shard)).hard.term;
        let chunk = snapshot_chunk(shard, l, f, term, 1000, SNAPSHOT_IMAGE_BYTES_MAX, b"x");
        c.nodes[fi].on_peer_messages(l, vec![chunk]);
        let _ = c.nodes[fi].take_output();
        if started + SNAPSHOT_IMAGE_BYTES_MAX <= SNAPSHOT_RECEIVE_BYTES_MAX {
            started += SNAPSHOT_IMAGE_BYTES_MAX;
        } else {
            refused_total += 1;
        }
        assert_eq!(
            refused(&c.nodes[fi], "snapshot_receive_full"),
            refused_total
        );
    }
    assert!(
        s >= 3 && refused_total >= 1,
        "the test needs three transfers ({s})"
    );
}

/// Every timing the cluster file accepts builds a node core and runs it (no assertion in
/// kv-node or kv-raft fires), and the one from issue 12 is refused.
#[test]
fn every_timing_the_cluster_file_accepts_builds_a_node() {
    let mut accepted = 0;
    for hb in 1..=6u32 {
        for min in 1..=16u32 {
            for max in 1..=20u32 {
                let toml = format!(
                    "cluster_id = 1\nshards = 1\n[timing]\nheartbeat_ticks = {hb}\n\
                     election_ticks_min = {min}\nelection_ticks_max = {max}\n\
                     [[nodes]]\nid = 1\naddr = \"127.0.0.1:1\"\n\
                     [[nodes]]\nid = 2\naddr = \"127.0.0.1:2\"\n"
                );
                let Ok(cluster) = kv_shared::config::ClusterConfig::from_toml(&toml) else {
                    continue;
                };
                accepted += 1;
                let config = NodeConfig::from_cluster(&cluster, NodeId(1));
                let mut node = NodeCore::new(config, Recovered::default()).unwrap();
                for _ in 0..2 * max {
                    node.tick();
                    let _ = node.take_output();
                }
            }
        }
    }
    assert!(accepted > 100, "only {accepted} timings accepted");
    let issue = "cluster_id = 1\nshards = 1\n[timing]\nheartbeat_ticks = 5\n\
                 election_ticks_min = 10\nelection_ticks_max = 20\n\
                 [[nodes]]\nid = 1\naddr = \"127.0.0.1:1\"\n";
    assert!(kv_shared::config::ClusterConfig::from_toml(issue).is_err());
}

/// Found by the peer_datagram fuzz target: a member's InstallSnapshot whose image does
/// not match its metadata (here an empty shard at applied index 0, claimed at index 5)
/// was persisted, then panicked the node at restore (and would again at every restart).
/// It must be dropped before it is persisted.
#[test]
fn a_snapshot_image_that_disagrees_with_its_metadata_is_dropped_before_it_is_persisted() {
    use kv_raft::{Membership, Message, MessageBody, SnapshotMeta};
    let mut c = Cluster::new(3, 1);
    let image = crate::sm::StateMachine::new(4).to_image();
    let forged = GroupMessage {
        shard: ShardId(0),
        msg: Message {
            from: NodeId(2),
            to: NodeId(1),
            term: 7,
            body: MessageBody::InstallSnapshot {
                meta: SnapshotMeta {
                    index: 5,
                    term: 7,
                    membership: Membership {
                        voters: ids(3),
                        learners: vec![],
                    },
                },
                offset: 0,
                total_len: image.len() as u64,
                chunk: image,
            },
        },
    };
    c.nodes[0].on_peer_messages(NodeId(2), vec![forged]);
    c.flush(0);
    assert!(c.snapshots[0].is_empty(), "the forged image was persisted");
    assert_eq!(c.nodes[0].raft_status(ShardId(0)).hard.commit, 0);
    // The cluster goes on: a leader is elected and serves. Node 1 follows the forger,
    // whose node stays alive, so it quiesces trusting it and leaves its peers' PreVotes
    // unanswered until it rechecks that leader (`QUIESCED_FOLLOWER_RECHECK_ELECTIONS`
    // election timeouts of at most 20 ticks): that long, not one election timeout.
    c.tick(30 * 20 + 60);
    let l = c.leader(ShardId(0));
    c.request(l, 1, put(1, 1, "k", "v"));
    c.flush(l);
    c.tick(5);
    assert_eq!(c.reply_to(1), vec![Outcome::Done]);
}

/// Five nodes, each shard on three of them, leaders handed over as `leaders` says.
fn five_nodes_three_replicas(shards: u32, leaders: LeaderPolicy) -> Cluster {
    Cluster::with(5, shards, |cfg| {
        cfg.replication = 3;
        cfg.spread_leaders = true;
        cfg.leaders = leaders;
    })
}

/// With R < N each node hosts only the shards placement gives it: every shard elects a
/// leader among its own replicas, no Raft message goes to a node without the shard, and
/// with leader spreading each node ends up leading its share.
#[test]
fn five_nodes_with_three_replicas_host_only_their_shards() {
    let shards = 10;
    let mut c = five_nodes_three_replicas(shards, LeaderPolicy::Spread);
    let placement = c.nodes[0].config().placement();
    for (i, n) in c.nodes.iter().enumerate() {
        let me = NodeId(i as u64 + 1);
        let expected: Vec<ShardId> = crate::placement::shards_of(&placement, me);
        assert_eq!(n.hosted_shards(), expected, "node {me}");
        assert_eq!(expected.len(), 6, "10 shards x 3 replicas over 5 nodes");
    }
    c.tick(400);
    let mut led = [0usize; 5];
    for s in (0..shards).map(ShardId) {
        let l = c.leader(s);
        assert!(placement[s.0 as usize]
            .replicas
            .contains(&NodeId(l as u64 + 1)));
        led[l] += 1;
    }
    assert_eq!(led, [2; 5], "leaders spread to the preferred replicas");
    assert_eq!(c.misdirected, 0);
    for (token, s) in (0..shards).map(ShardId).enumerate() {
        let key = (0..)
            .map(|k| format!("k{k}"))
            .find(|k| kv_shared::shard::shard_for_key(k.as_bytes(), shards) == s)
            .unwrap();
        let l = c.leader(s);
        // A client per shard, each one's first write: no session to open first.
        c.request(l, token as u64, put(token as u64 + 1, 1, &key, "v"));
        c.flush(l);
        c.tick(2);
        assert_eq!(c.reply_to(token as u64), vec![Outcome::Done], "shard {s}");
    }
}

/// A node that holds no replica of the key's shard answers at once with the replica set
/// it knows, so the client re-routes instead of waiting for a leader that never comes.
#[test]
fn a_node_without_the_shard_answers_with_its_replica_set() {
    let shards = 4;
    let mut c = Cluster::with(4, shards, |cfg| cfg.replication = 2);
    let (key, shard) = (0..)
        .map(|k| format!("k{k}"))
        .map(|k| {
            let s = kv_shared::shard::shard_for_key(k.as_bytes(), shards);
            (k, s)
        })
        .find(|(_, s)| !c.nodes[0].hosts(*s))
        .unwrap();
    let replicas = c.nodes[0].config().placement()[shard.0 as usize]
        .replicas
        .clone();
    c.request(0, 9, get(1, 1, &key));
    c.flush(0);
    match &c.reply_to(9)[..] {
        [Outcome::Error(ClientError::StaleRoute { node, route })] => {
            assert_eq!(*node, NodeId(1));
            assert_eq!(route.shard, shard);
            assert_eq!(route.voters, replicas);
            assert_eq!(route.epoch, 0);
        }
        other => panic!("expected StaleRoute, got {other:?}"),
    }
    let status = c.nodes[0].status();
    assert_eq!(status.routes.len(), shards as usize);
    assert_eq!(status.routes[shard.0 as usize].voters, replicas);
    assert!(status.shards.iter().all(|row| row.shard != shard));
}

/// A membership change bumps the shard's epoch to its entry's index on every replica; a
/// follower answers a request routed by the older epoch with the new replica set (so the
/// client learns it), and serves a get routed by the current epoch itself (a follower
/// read) while it redirects a put.
#[test]
fn a_membership_change_bumps_the_epoch_and_stale_routes_get_the_new_set() {
    let shard = ShardId(0);
    let mut c = Cluster::with(4, 1, |cfg| cfg.replication = 3);
    assert!(
        !c.nodes[3].hosts(shard),
        "node 4 holds no replica of the only shard"
    );
    c.tick(60);
    let l = c.leader(shard);
    // A move to node 4 while node 4 is cut off: its first step, AddLearner(4), commits
    // and the move then waits for the learner.
    c.down[3] = true;
    let from = (0..3).find(|&i| i != l).unwrap() as u64 + 1;
    c.request(l, 99, move_req(50, from, 4));
    c.flush(l);
    c.tick(5);
    let index = c.nodes[l].shard_route(shard).epoch;
    assert!(index > 0);
    for i in 0..3 {
        let route = c.nodes[i].shard_route(shard);
        assert_eq!(route.epoch, index, "node {}", i + 1);
        assert_eq!(route.voters, ids(3));
        assert_eq!(route.learners, vec![NodeId(4)]);
        assert_eq!(c.nodes[i].status().shards[0].epoch, index);
    }
    let f = (0..3).find(|&i| i != l).unwrap();
    c.request(f, 1, get(1, 1, "k"));
    c.flush(f);
    match &c.reply_to(1)[..] {
        [Outcome::Error(ClientError::StaleRoute { route, .. })] => {
            assert_eq!(
                (route.epoch, route.learners.clone()),
                (index, vec![NodeId(4)])
            );
            assert_eq!(route.leader, Some(NodeId(l as u64 + 1)));
        }
        other => panic!("expected StaleRoute, got {other:?}"),
    }
    let mut current = get(1, 2, "k");
    current.epoch = index;
    c.request(f, 2, current);
    c.flush(f);
    assert_eq!(c.reply_to(2), vec![Outcome::Value(None)]);
    let mut current = put(1, 3, "k", "v");
    current.epoch = index;
    c.request(f, 3, current);
    c.flush(f);
    assert_eq!(
        c.reply_to(3),
        vec![Outcome::Error(ClientError::NotLeader {
            shard,
            leader: Some(NodeId(l as u64 + 1))
        })]
    );
}

/// The status reply (one row per hosted shard plus a route per shard) must fit one
/// datagram for the largest cluster the limits allow with the default replication.
#[test]
fn status_of_the_largest_cluster_fits_one_datagram() {
    use kv_shared::limits::{NODES_MAX, SHARDS_MAX};
    use kv_shared::proto::ClientReply;
    let members: Vec<NodeId> = (1..=NODES_MAX as u64).map(NodeId).collect();
    let mut config = NodeConfig::for_test(NodeId(1), members, SHARDS_MAX);
    config.replication = 3;
    config.addrs = (1..=NODES_MAX as u64)
        .map(|i| (NodeId(i), format!("[2001:db8::{i}]:65535").parse().unwrap()))
        .collect();
    let node = NodeCore::new(config, Recovered::default()).unwrap();
    let reply = vec![ClientReply {
        client: kv_shared::ClientId(u64::MAX),
        seq: u64::MAX,
        outcome: Outcome::Status(node.status()),
    }];
    let bytes = postcard::to_stdvec(&reply).unwrap().len();
    assert!(
        bytes <= kv_shared::wire::PAYLOAD_BYTES_MAX,
        "a status reply of {bytes} bytes"
    );
}

/// `ShardLeader` records the preferred leader in the shard's log; leadership moves there
/// and stays (a later leader honours the same replicated preference), while a node that
/// is not a voter, or a shard that does not exist, is refused.
#[test]
fn an_admin_preferred_leader_takes_over_and_keeps_the_shard() {
    let shard = ShardId(0);
    let mut c = Cluster::with(3, 1, |cfg| cfg.spread_leaders = true);
    c.tick(300);
    assert_eq!(
        c.leader(shard),
        0,
        "the placement prefers node 1 for shard 0"
    );
    // Each admin request is its client's first write (a one-request session).
    let admin = |n: u64, s: u32, node: u64| ClientRequest {
        client: ClientId(77 + n),
        seq: 1,
        epoch: 0,
        op: Op::ShardLeader {
            shard: ShardId(s),
            node: NodeId(node),
        },
    };
    c.request(0, 1, admin(1, 0, 9));
    c.request(0, 2, admin(2, 4, 3));
    c.flush(0);
    c.tick(2);
    let refusal = |outcomes: Vec<Outcome>| match &outcomes[..] {
        [Outcome::Error(ClientError::Malformed(m))] => m.clone(),
        other => panic!("expected a refusal, got {other:?}"),
    };
    assert_eq!(
        refusal(c.reply_to(1)),
        "n9 is not a voter of shard 0 (voters: n1, n2, n3)"
    );
    assert_eq!(
        refusal(c.reply_to(2)),
        "shard 4 does not exist; the cluster has 1 shards"
    );
    c.request(0, 3, admin(3, 0, 3));
    c.flush(0);
    c.tick(2);
    assert_eq!(c.reply_to(3), vec![Outcome::Done]);
    c.tick(300);
    assert_eq!(c.leader(shard), 2, "node 3 leads once caught up");
    c.tick(600);
    assert_eq!(
        c.leader(shard),
        2,
        "and keeps leading: no node spreads it back"
    );
}

#[test]
fn writes_are_refused_while_the_disk_is_full_and_reads_still_served() {
    let mut c = Cluster::new(3, 1);
    c.tick(60);
    let l = c.leader(ShardId(0));
    c.request(l, 1, put(1, 1, "k", "before"));
    c.flush(l);
    c.tick(3);
    assert_eq!(c.reply_to(1), vec![Outcome::Done]);

    c.nodes[l].refuse_writes(Some(WriteRefusal::DiskFull));
    c.request(l, 2, put(1, 2, "k", "during"));
    c.request(l, 3, get(2, 1, "k"));
    c.flush(l);
    c.tick(3);
    assert_eq!(
        c.reply_to(2),
        vec![Outcome::Error(ClientError::Unavailable {
            node: NodeId(l as u64 + 1),
            reason: "disk full".into(),
        })]
    );
    assert_eq!(
        c.reply_to(3),
        vec![Outcome::Value(Some(Bytes::from_static(b"before")))]
    );

    c.nodes[l].refuse_writes(None);
    c.request(l, 4, put(1, 3, "k", "after"));
    c.flush(l);
    c.tick(3);
    assert_eq!(c.reply_to(4), vec![Outcome::Done]);
}

// ---- moving a replica (Op::MoveReplica) ----

/// An admin's move request: client `client`, sequence number 1 (a one-request session).
fn move_req(client: u64, from: u64, to: u64) -> ClientRequest {
    ClientRequest {
        client: ClientId(client),
        seq: 1,
        epoch: 0,
        op: Op::MoveReplica {
            shard: ShardId(0),
            from: NodeId(from),
            to: NodeId(to),
        },
    }
}

impl Cluster {
    /// Sends `req` to the shard's leader as a client would: again (same session and
    /// sequence number) after a timeout or redirect, until an answer other than those
    /// comes or `ticks_max` ticks pass. Ticks `per_try` between tries.
    fn until_answered(&mut self, token: u64, req: ClientRequest, ticks_max: usize) -> Outcome {
        let shard = ShardId(0);
        for _ in 0..ticks_max / 10 {
            let before = self.reply_to(token).len();
            let l = (0..self.nodes.len()).find(|&i| {
                !self.down[i]
                    && self.nodes[i].hosts(shard)
                    && self.nodes[i].raft_status(shard).role == Role::Leader
            });
            if let Some(l) = l {
                self.request(l, token, req.clone());
                self.flush(l);
            }
            for _ in 0..10 {
                self.tick(1);
                if self.reply_to(token).len() > before {
                    break;
                }
            }
            let replies = self.reply_to(token);
            if replies.len() > before {
                let last = replies.last().unwrap().clone();
                match &last {
                    Outcome::Error(ClientError::Timeout { .. })
                    | Outcome::Error(ClientError::NotLeader { .. }) => {}
                    _ => return last,
                }
            }
        }
        panic!("no answer to request {token} within {ticks_max} ticks");
    }

    fn voters(&self, i: usize, shard: ShardId) -> Vec<NodeId> {
        self.nodes[i].raft_status(shard).membership.voters
    }

    /// Restarts node `i` from what it appended, with `config`.
    fn restart(&mut self, i: usize, config: NodeConfig) {
        let rec = Recovered {
            records: self.disks[i].clone(),
            snapshots: self.snapshots[i].clone(),
            truncated_tail: None,
        };
        self.nodes[i] = NodeCore::new(config, rec).unwrap();
    }
}

fn four_nodes_one_shard_on_three() -> Cluster {
    let mut c = Cluster::with(4, 1, |cfg| {
        cfg.replication = 3;
        cfg.snapshot_threshold_entries = 20;
    });
    c.tick(60);
    c
}

/// A follower's replica moves to a node that held none while writes keep coming: node 4
/// gets the shard by snapshot, becomes a voter, node 3 is removed and drops the shard,
/// every acknowledged write is on the new replica set, and the epoch grew three times.
#[test]
fn a_replica_moves_under_writes_and_loses_no_acknowledged_write() {
    let shard = ShardId(0);
    let mut c = four_nodes_one_shard_on_three();
    let l = c.leader(shard);
    let from = (0..3).find(|&i| i != l).unwrap() as u64 + 1;
    let mut acked = Vec::new();
    for s in 1..=40u64 {
        let l = c.leader(shard);
        c.request(l, 1000 + s, put(1, s, &format!("k{s}"), &format!("v{s}")));
        c.flush(l);
        c.tick(1);
    }
    c.request(c.leader(shard), 1, move_req(50, from, 4));
    c.flush(c.leader(shard));
    for s in 41..=80u64 {
        let l = c.leader(shard);
        c.request(l, 1000 + s, put(1, s, &format!("k{s}"), &format!("v{s}")));
        c.flush(l);
        c.tick(1);
    }
    let done = c.until_answered(1, move_req(50, from, 4), 2000);
    assert_eq!(done, Outcome::Done);
    for s in 1..=80u64 {
        if c.reply_to(1000 + s).contains(&Outcome::Done) {
            acked.push(s);
        }
    }
    assert!(
        acked.len() >= 70,
        "most writes were acknowledged: {}",
        acked.len()
    );
    c.tick(20);
    let l = c.leader(shard);
    let mut expected: Vec<NodeId> = (1..=4).filter(|n| *n != from).map(NodeId).collect();
    expected.sort();
    assert_eq!(c.voters(l, shard), expected);
    assert!(
        !c.nodes[from as usize - 1].hosts(shard),
        "node {from} dropped the shard"
    );
    assert!(c.nodes[3].hosts(shard));
    assert_eq!(
        c.nodes[3].state_digest(shard),
        c.nodes[l].state_digest(shard),
        "the new replica holds what the leader holds"
    );
    let epoch = c.nodes[l].shard_route(shard).epoch;
    assert!(epoch > 0);
    for s in acked {
        let l = c.leader(shard);
        c.request(l, 5000 + s, get(9, 1, &format!("k{s}")));
        c.flush(l);
        c.tick(2);
        assert_eq!(
            c.reply_to(5000 + s),
            vec![Outcome::Value(Some(Bytes::from(format!("v{s}"))))],
            "acknowledged write k{s}"
        );
    }
    // The removed node answers for the shard with the new replica set.
    let f = from as usize - 1;
    let mut stale = get(9, 2, "k1");
    stale.op = Op::Get {
        key: Bytes::from_static(b"k1"),
        stale: true,
    };
    c.request(f, 9000, stale);
    c.flush(f);
    match &c.reply_to(9000)[..] {
        [Outcome::Error(ClientError::StaleRoute { route, .. })] => {
            assert!(!route.voters.contains(&NodeId(from)), "{route:?}");
            assert!(route.voters.contains(&NodeId(4)), "{route:?}");
        }
        other => panic!("expected StaleRoute, got {other:?}"),
    }
}

/// Moving the leader's own replica: it hands leadership to another voter before it is
/// removed, and the move still ends Done.
#[test]
fn moving_the_leaders_own_replica_hands_leadership_over_first() {
    let shard = ShardId(0);
    let mut c = four_nodes_one_shard_on_three();
    let l = c.leader(shard);
    let from = l as u64 + 1;
    c.request(l, 1, put(1, 1, "a", "1"));
    c.flush(l);
    c.tick(3);
    let done = c.until_answered(2, move_req(50, from, 4), 2000);
    assert_eq!(done, Outcome::Done);
    c.tick(20);
    let now = c.leader(shard);
    assert_ne!(now, l, "the old leader no longer leads");
    assert!(!c.voters(now, shard).contains(&NodeId(from)));
    assert!(!c.nodes[l].hosts(shard));
    c.request(now, 3, get(9, 1, "a"));
    c.flush(now);
    c.tick(2);
    assert_eq!(
        c.reply_to(3),
        vec![Outcome::Value(Some(Bytes::from_static(b"1")))]
    );
}

/// A second move while one is in flight is refused with the move named; a retry of the
/// first (same session and sequence number) waits for it and gets its outcome; and bad
/// requests get typed refusals.
#[test]
fn a_second_move_is_refused_while_one_is_in_flight_and_a_retry_waits() {
    let shard = ShardId(0);
    let mut c = four_nodes_one_shard_on_three();
    let l = c.leader(shard);
    let from = (0..3).find(|&i| i != l).unwrap() as u64 + 1;
    // Cut node 4 off so the first move stays in flight (its learner cannot catch up).
    c.down[3] = true;
    c.request(l, 1, move_req(50, from, 4));
    c.flush(l);
    c.tick(5);
    assert!(c.reply_to(1).is_empty(), "held while the move is in flight");
    let other = (0..3).find(|&i| i != l && i as u64 + 1 != from).unwrap() as u64 + 1;
    c.request(l, 2, move_req(51, other, 4));
    c.request(l, 3, move_req(52, from, 9));
    c.request(l, 4, move_req(53, from, from));
    c.flush(l);
    c.tick(2);
    let refusal = |c: &Cluster, t| match &c.reply_to(t)[..] {
        [Outcome::Error(ClientError::MoveRefused { reason, .. })] => reason.clone(),
        other => panic!("expected a move refusal, got {other:?}"),
    };
    assert_eq!(
        refusal(&c, 2),
        kv_shared::proto::MoveRefusal::MoveInFlight {
            from: NodeId(from),
            to: NodeId(4)
        }
    );
    assert_eq!(
        refusal(&c, 3),
        kv_shared::proto::MoveRefusal::UnknownNode { node: NodeId(9) }
    );
    assert_eq!(refusal(&c, 4), kv_shared::proto::MoveRefusal::SameNode);
    let e = ClientError::MoveRefused {
        shard,
        from: NodeId(other),
        to: NodeId(4),
        reason: refusal(&c, 2),
    };
    assert!(
        e.to_string().contains(&format!(
            "the move of its replica from node n{from} to node n4 is in flight"
        )),
        "{e}"
    );
    c.down[3] = false;
    let done = c.until_answered(5, move_req(50, from, 4), 2000);
    assert_eq!(done, Outcome::Done, "the retry gets the move's outcome");
    // Once done, a late retry gets the same answer; a move of a non-member is refused.
    let again = c.until_answered(6, move_req(50, from, 4), 200);
    assert_eq!(again, Outcome::Done);
    let not_voter = c.until_answered(7, move_req(54, from, 3 - (from % 3)), 200);
    assert!(
        matches!(
            not_voter,
            Outcome::Error(ClientError::MoveRefused {
                reason: kv_shared::proto::MoveRefusal::NotAVoter { .. }
                    | kv_shared::proto::MoveRefusal::AlreadyMember { .. },
                ..
            })
        ),
        "{not_voter:?}"
    );
}

/// The new replica's node restarts mid-move: it recovers the replica it created (from
/// its WAL) and the move finishes.
#[test]
fn a_learner_restarted_mid_move_recovers_its_replica_and_the_move_finishes() {
    let shard = ShardId(0);
    let mut c = four_nodes_one_shard_on_three();
    let l = c.leader(shard);
    let from = (0..3).find(|&i| i != l).unwrap() as u64 + 1;
    for s in 1..=30u64 {
        c.request(l, 100 + s, put(1, s, &format!("k{s}"), "v"));
        c.flush(l);
        c.tick(1);
    }
    c.request(l, 1, move_req(50, from, 4));
    c.flush(l);
    // Until node 4 holds the shard, then crash it before the move ends.
    for _ in 0..200 {
        if c.nodes[3].hosts(shard) {
            break;
        }
        c.tick(1);
    }
    assert!(c.nodes[3].hosts(shard), "node 4 created its replica");
    c.down[3] = true;
    c.tick(30);
    let config = c.nodes[3].config().clone();
    c.restart(3, config);
    assert!(
        c.nodes[3].hosts(shard),
        "a restart recovers the created replica"
    );
    c.down[3] = false;
    let done = c.until_answered(2, move_req(50, from, 4), 3000);
    assert_eq!(done, Outcome::Done);
    c.tick(20);
    let l = c.leader(shard);
    assert_eq!(
        c.nodes[3].state_digest(shard),
        c.nodes[l].state_digest(shard)
    );
}

/// A removed node restarts: its tombstone keeps it out of the shard (no replica, no
/// replay of the shard's records), and it answers requests for the shard with
/// `StaleRoute`.
#[test]
fn a_removed_node_restarted_stays_removed_and_answers_stale_route() {
    let shard = ShardId(0);
    let mut c = four_nodes_one_shard_on_three();
    let l = c.leader(shard);
    let from = (0..3).find(|&i| i != l).unwrap() as u64 + 1;
    let f = from as usize - 1;
    c.request(l, 1, put(1, 1, "a", "1"));
    c.flush(l);
    c.tick(3);
    assert_eq!(
        c.until_answered(2, move_req(50, from, 4), 2000),
        Outcome::Done
    );
    c.tick(10);
    assert!(!c.nodes[f].hosts(shard));
    let config = c.nodes[f].config().clone();
    c.restart(f, config);
    assert!(
        !c.nodes[f].hosts(shard),
        "the tombstone outlives the restart"
    );
    let ops: Vec<DiskOp> = c.nodes[f]
        .take_output()
        .disk_writes
        .into_iter()
        .flat_map(|w| w.ops)
        .collect();
    assert_eq!(
        ops,
        vec![DiskOp::RemoveGroup { shard: shard.0 }],
        "files a crash kept are deleted at start"
    );
    c.tick(100);
    assert!(
        !c.nodes[f].hosts(shard),
        "and no leader message brings it back"
    );
    c.request(f, 3, get(9, 1, "a"));
    c.flush(f);
    assert!(
        matches!(
            &c.reply_to(3)[..],
            [Outcome::Error(ClientError::StaleRoute { .. })]
        ),
        "{:?}",
        c.reply_to(3)
    );
}

/// A replica created for a move answers no stale read before the leader's snapshot
/// makes it a member: its empty state is not the shard's.
#[test]
fn a_created_replica_refuses_stale_reads_until_it_is_a_member() {
    let shard = ShardId(0);
    let mut c = Cluster::with(4, 1, |cfg| cfg.replication = 3);
    let heartbeat = leader_heartbeat(shard, 1, 4, 3);
    c.nodes[3].on_peer_messages(NodeId(1), vec![heartbeat]);
    c.flush(3);
    assert!(c.nodes[3].hosts(shard));
    let mut stale = get(9, 1, "a");
    stale.op = Op::Get {
        key: Bytes::from_static(b"a"),
        stale: true,
    };
    c.request(3, 1, stale);
    c.flush(3);
    assert!(
        matches!(
            &c.reply_to(1)[..],
            [Outcome::Error(ClientError::StaleRoute { .. })]
        ),
        "{:?}",
        c.reply_to(1)
    );
}

/// The leader dies mid-move (after the learner joined): the next leader reads the move
/// from the replicated state and finishes it.
#[test]
fn a_new_leader_elected_mid_move_finishes_it() {
    let shard = ShardId(0);
    let mut c = four_nodes_one_shard_on_three();
    let l = c.leader(shard);
    let from = (0..3).find(|&i| i != l).unwrap() as u64 + 1;
    c.request(l, 1, put(1, 1, "a", "1"));
    c.flush(l);
    c.tick(3);
    c.request(l, 2, move_req(50, from, 4));
    c.flush(l);
    for _ in 0..200 {
        if c.nodes[l].shard_route(shard).learners.contains(&NodeId(4))
            || c.voters(l, shard).contains(&NodeId(4))
        {
            break;
        }
        c.tick(1);
    }
    assert!(c.nodes[l].shard_route(shard).epoch > 0, "the move began");
    c.down[l] = true;
    let done = c.until_answered(3, move_req(50, from, 4), 3000);
    assert_eq!(done, Outcome::Done);
    let now = c.leader(shard);
    assert_ne!(now, l);
    let voters = c.voters(now, shard);
    assert!(
        voters.contains(&NodeId(4)) && !voters.contains(&NodeId(from)),
        "{voters:?}"
    );
}

/// A replica created for a move starts with an empty membership: until the leader's
/// snapshot arrives it knows no voters, so it never campaigns (the planted bug
/// `CreatedReplicaWithBootstrapMembership` gives it the bootstrap placement's instead).
#[test]
fn a_created_replica_knows_no_membership_until_the_snapshot() {
    let shard = ShardId(0);
    let mut c = Cluster::with(4, 1, |cfg| cfg.replication = 3);
    let heartbeat = leader_heartbeat(shard, 1, 4, 3);
    // A vote request (a candidate, not a leader) creates nothing.
    let mut vote = heartbeat.clone();
    vote.msg.body = kv_raft::MessageBody::PreVote {
        last_index: 5,
        last_term: 3,
    };
    c.nodes[3].on_peer_messages(NodeId(1), vec![vote]);
    assert!(!c.nodes[3].hosts(shard));
    c.nodes[3].on_peer_messages(NodeId(1), vec![heartbeat]);
    let out = c.nodes[3].take_output();
    assert!(c.nodes[3].hosts(shard));
    let created = out.disk_writes.iter().flat_map(|w| &w.ops).any(|op| {
        matches!(op, DiskOp::Append(r) if crate::wal::decode_replica(r).ok().flatten()
            == Some(crate::wal::ReplicaRecord::Created))
    });
    assert!(created, "the creation is persisted");
    assert_eq!(
        c.nodes[3].raft_status(shard).membership,
        kv_raft::Membership::default()
    );
    // Fewer ticks than the silence after which it is forgotten (the next test).
    for _ in 0..150 {
        c.nodes[3].tick();
        let out = c.nodes[3].take_output();
        assert!(
            out.datagrams
                .iter()
                .all(|(_, b)| *b == PeerBatch::default()),
            "it never campaigns"
        );
    }
    assert_eq!(c.nodes[3].raft_status(shard).role, Role::Follower);
}

/// A heartbeat of shard `shard` from its leader, node `from`, to node `to`.
fn leader_heartbeat(shard: ShardId, from: u64, to: u64, term: u64) -> GroupMessage {
    group_message(
        shard,
        from,
        to,
        term,
        kv_raft::MessageBody::Heartbeat {
            commit: 0,
            read_round: 0,
        },
    )
}

/// A message of shard `shard` from node `from` to node `to`, as a peer's datagram
/// carries it.
fn group_message(
    shard: ShardId,
    from: u64,
    to: u64,
    term: u64,
    body: kv_raft::MessageBody,
) -> GroupMessage {
    GroupMessage {
        shard,
        msg: kv_raft::Message {
            from: NodeId(from),
            to: NodeId(to),
            term,
            body,
        },
    }
}

/// True if node `i` appended a `ReplicaRecord` `record` for `shard`.
fn appended_replica_record(c: &Cluster, i: usize, shard: ShardId, record: ReplicaRecord) -> bool {
    c.disks[i]
        .iter()
        .any(|r| r.group == shard.0 && crate::wal::decode_replica(r).ok().flatten() == Some(record))
}

/// A replica created by a move that was undone before the leader's snapshot reached it
/// knows no voters, so it neither asks for a leader nor learns it was dropped: it is
/// forgotten (no tombstone) once it has heard no leader for
/// `CREATED_REPLICA_SILENT_ELECTIONS_MAX` election timeouts, stays forgotten after a
/// restart, and a later leader's message creates it again, at the term it had.
#[test]
fn a_created_replica_the_leader_never_reached_again_is_forgotten_after_its_silence() {
    let shard = ShardId(0);
    let mut c = Cluster::with(4, 1, |cfg| cfg.replication = 3);
    c.nodes[3].on_peer_messages(NodeId(1), vec![leader_heartbeat(shard, 1, 4, 3)]);
    c.flush(3);
    assert!(c.nodes[3].hosts(shard));
    let silence = crate::moves::CREATED_REPLICA_SILENT_ELECTIONS_MAX
        * u64::from(c.nodes[3].config().raft.election_ticks_max);
    for _ in 0..silence - 1 {
        c.nodes[3].tick();
        c.flush(3);
    }
    assert!(c.nodes[3].hosts(shard), "not before its silence is over");
    c.nodes[3].tick();
    c.flush(3);
    assert!(!c.nodes[3].hosts(shard));
    assert!(appended_replica_record(
        &c,
        3,
        shard,
        ReplicaRecord::Forgotten { term: 3 }
    ));
    let config = c.nodes[3].config().clone();
    c.restart(3, config);
    assert!(!c.nodes[3].hosts(shard), "forgotten across a restart");
    c.nodes[3].on_peer_messages(NodeId(1), vec![leader_heartbeat(shard, 1, 4, 2)]);
    c.flush(3);
    assert!(c.nodes[3].hosts(shard), "no tombstone: created again");
    assert_eq!(
        c.nodes[3].raft_status(shard).hard.term,
        3,
        "at the term it had"
    );
}

/// A replica created by a move received the leader's snapshot
/// from before its addition (which does not list it), and was removed before it got the
/// entry adding it. A snapshot that does not list a replica never listed is no removal
/// (a new learner gets one legitimately), so it held the shard and kept asking for a
/// leader, which replicated to it again each time. Once it holds the commit index a
/// leader told it and its log still names it nowhere, it is forgotten, and the leader,
/// holding its acknowledgement of that commit, stops sending to it.
#[test]
fn a_created_replica_removed_before_its_addition_reached_it_is_forgotten() {
    let shard = ShardId(0);
    let mut c = four_nodes_one_shard_on_three();
    let l = c.leader(shard);
    for k in 0..30 {
        c.request(l, 100 + k, put(1, k + 1, &format!("k{k}"), "v"));
        c.flush(l);
        c.tick(1);
    }
    let (_, index, data) = c.snapshots[l]
        .iter()
        .find(|s| s.0 == shard.0)
        .cloned()
        .expect("the leader took a snapshot");
    let snap = crate::wal::decode_snapshot(shard.0, index, &data).unwrap();
    assert!(!snap.meta.membership.voters.contains(&NodeId(4)));
    let image = snap.data.clone();
    let term = c.nodes[l].raft_status(shard).hard.term;
    let chunk = group_message(
        shard,
        l as u64 + 1,
        4,
        term,
        kv_raft::MessageBody::InstallSnapshot {
            meta: snap.meta.clone(),
            offset: 0,
            total_len: image.len() as u64,
            chunk: image,
        },
    );
    c.nodes[3].on_peer_messages(NodeId(l as u64 + 1), vec![chunk]);
    c.flush(3);
    assert!(c.nodes[3].hosts(shard));
    let silence = crate::moves::CREATED_REPLICA_SILENT_ELECTIONS_MAX as usize
        * c.nodes[3].config().raft.election_ticks_max as usize;
    let mut forgotten_at = None;
    for t in 0..silence / 2 {
        c.tick(1);
        if !c.nodes[3].hosts(shard) {
            forgotten_at = Some(t);
            break;
        }
    }
    assert!(forgotten_at.is_some(), "node 4 still holds the shard");
    assert!(appended_replica_record(
        &c,
        3,
        shard,
        ReplicaRecord::Forgotten { term }
    ));
    c.tick(100);
    assert!(!c.nodes[3].hosts(shard), "the leader stopped sending to it");
    let progress = c.nodes[c.leader(shard)].raft_status(shard).progress;
    assert!(
        progress.iter().all(|(n, _)| *n != NodeId(4)),
        "{progress:?}"
    );
}

/// The planted bug `RemovedReplicaServesReads` is live: with it, the removed node keeps
/// the shard and answers a stale read routed by the newer epoch (the correct path, a
/// `StaleRoute`, is checked in `a_replica_moves_under_writes_and_loses_no_acknowledged_write`).
#[cfg(feature = "planted-bugs")]
#[test]
fn with_the_planted_bug_a_removed_replica_still_answers_reads() {
    let shard = ShardId(0);
    let mut c = four_nodes_one_shard_on_three();
    let l = c.leader(shard);
    let from = (0..3).find(|&i| i != l).unwrap() as u64 + 1;
    let f = from as usize - 1;
    c.nodes[f].plant_bug(crate::PlantedBug::RemovedReplicaServesReads);
    c.request(l, 1, put(1, 1, "a", "1"));
    c.flush(l);
    c.tick(3);
    assert_eq!(
        c.until_answered(2, move_req(50, from, 4), 2000),
        Outcome::Done
    );
    c.tick(10);
    assert!(c.nodes[f].hosts(shard), "the bug keeps the removed replica");
    let mut stale = get(9, 1, "a");
    stale.op = Op::Get {
        key: Bytes::from_static(b"a"),
        stale: true,
    };
    stale.epoch = c.nodes[c.leader(shard)].shard_route(shard).epoch;
    c.request(f, 3, stale);
    c.flush(f);
    assert_eq!(
        c.reply_to(3),
        vec![Outcome::Value(Some(Bytes::from_static(b"1")))]
    );
}

#[test]
fn the_output_reports_where_writes_were_proposed_and_every_entry_applied() {
    let mut c = Cluster::new(3, 1);
    c.tick(60);
    let l = c.leader(ShardId(0));
    let next = c.nodes[l].raft_status(ShardId(0)).last_index + 1;
    c.request(l, 1, put(1, 1, "a", "v"));
    c.request(l, 2, put(2, 1, "b", "v"));
    c.request(l, 3, get(3, 1, "a"));
    assert_eq!(c.nodes[l].pending_gets(), 1);
    c.flush(l);
    let proposed: Vec<(usize, u64, u64)> = c
        .proposed
        .iter()
        .map(|(i, p)| (*i, p.token.0, p.index))
        .collect();
    assert_eq!(
        proposed,
        vec![(l, 1, next), (l, 2, next)],
        "one entry, both writes"
    );
    c.tick(3);
    assert_eq!(c.reply_to(3).len(), 1);
    assert_eq!(c.nodes[l].pending_gets(), 0);
    let last = c.nodes[l].raft_status(ShardId(0)).last_index;
    let leaders: Vec<AppliedEntry> = c
        .applied
        .iter()
        .filter(|(i, _)| *i == l)
        .map(|(_, a)| *a)
        .collect();
    for i in 0..3 {
        let applied: Vec<AppliedEntry> = c
            .applied
            .iter()
            .filter(|(n, _)| *n == i)
            .map(|(_, a)| *a)
            .collect();
        assert_eq!(
            applied.iter().map(|a| a.index).collect::<Vec<_>>(),
            (1..=last).collect::<Vec<_>>(),
            "node {i} applied every entry once, in order"
        );
        assert_eq!(applied, leaders, "node {i} applied the same entries");
    }
}

#[test]
fn a_node_with_applied_reports_off_applies_the_same_entries_and_lists_none() {
    let mut c = Cluster::new(3, 1);
    c.nodes[0].set_applied_reports(false);
    c.tick(60);
    let l = c.leader(ShardId(0));
    c.request(l, 1, put(1, 1, "a", "v"));
    c.flush(l);
    c.tick(3);
    assert_eq!(c.reply_to(1), vec![Outcome::Done]);
    let last = c.nodes[l].raft_status(ShardId(0)).last_index;
    assert_eq!(c.nodes[0].raft_status(ShardId(0)).applied, last);
    assert!(
        c.applied.iter().all(|(i, _)| *i != 0),
        "node 0 listed entries"
    );
    for i in 1..3 {
        let listed = c.applied.iter().filter(|(n, _)| *n == i).count() as u64;
        assert_eq!(listed, last, "node {i} lists every entry it applied");
    }
}

#[test]
fn a_leader_with_applied_reports_off_lists_no_proposals_and_still_answers() {
    let mut c = Cluster::new(3, 1);
    c.tick(60);
    let l = c.leader(ShardId(0));
    c.request(l, 1, put(1, 1, "a", "v"));
    c.flush(l);
    c.tick(3);
    assert!(
        c.proposed.iter().any(|(i, _)| *i == l),
        "reports on: the leader lists its proposal"
    );
    c.proposed.clear();
    c.nodes[l].set_applied_reports(false);
    c.request(l, 2, put(2, 1, "b", "w"));
    c.flush(l);
    c.tick(3);
    assert_eq!(c.reply_to(2), vec![Outcome::Done]);
    assert!(c.proposed.is_empty(), "reports off: no proposal listed");
}

/// A member cut off from its shard's traffic (its node still heard
/// from) missed its removal; the leader, hearing nothing from it, stopped replicating to
/// it, and its group, quiesced on a leader whose node is alive, never timed out to ask.
/// A quiesced follower that heard nothing for its group for
/// `QUIESCED_FOLLOWER_RECHECK_ELECTIONS` election timeouts wakes, campaigns, is sent its
/// removal and drops the shard.
#[test]
fn a_quiesced_member_its_leader_stopped_sending_to_wakes_and_learns_its_removal() {
    let shard = ShardId(0);
    let mut c = four_nodes_one_shard_on_three();
    let l = c.leader(shard);
    let f = (0..3).find(|&i| i != l).unwrap();
    c.cut_shards.push((f, shard));
    assert_eq!(
        c.until_answered(2, move_req(50, f as u64 + 1, 4), 3000),
        Outcome::Done
    );
    // Long enough for the leader to give up on the silent departing member.
    c.tick(100);
    assert!(c.nodes[f].hosts(shard), "it missed its removal");
    c.cut_shards.clear();
    c.tick(900);
    assert!(!c.nodes[f].hosts(shard), "it still holds the shard");
}

#[test]
fn entry_hash_tells_apart_entries_that_differ_in_any_field() {
    use kv_raft::{ConfChange, Entry, EntryKind};
    let base = Entry {
        term: 3,
        index: 7,
        kind: EntryKind::Command,
        data: Bytes::from_static(b"put a 1"),
    };
    let h = crate::entry_hash(&base);
    assert_eq!(h, crate::entry_hash(&base.clone()));
    let variants = [
        Entry {
            term: 4,
            ..base.clone()
        },
        Entry {
            index: 8,
            ..base.clone()
        },
        Entry {
            kind: EntryKind::Noop,
            ..base.clone()
        },
        Entry {
            kind: EntryKind::ConfChange(ConfChange::AddLearner(NodeId(4))),
            ..base.clone()
        },
        Entry {
            data: Bytes::from_static(b"put a 2"),
            ..base.clone()
        },
    ];
    for v in &variants {
        assert_ne!(crate::entry_hash(v), h, "{v:?}");
    }
}
