//! A [`NodeCore`] with an instant in-memory disk, as the two node targets drive it: every
//! disk write is kept (so the node can be restarted from it) and completed at once,
//! every outgoing batch goes through the real peer codec, and two agreeable peers can be
//! asked to answer what the node sent.

use crate::targets::agreeable_reply;
use bytes::Bytes;
use kv_node::codec::{decode_peer_datagram, encode_peer};
use kv_node::{ClientToken, DiskOp, GroupMessage, NodeConfig, NodeCore, Output};
use kv_shared::proto::ClientReply;
use kv_shared::NodeId;
use kv_storage::{Record, Recovered};

/// The node under test.
pub const ME: NodeId = NodeId(1);
/// Cluster id of the datagrams the codec round trip checks.
const CLUSTER_ID: u64 = 7001;
/// Shards the node hosts: more than one, so batches mix groups.
const SHARDS: u32 = 2;

/// The node, its disk and what it answered.
pub struct NodeHarness {
    core: NodeCore,
    config: NodeConfig,
    records: Vec<Record>,
    snapshots: Vec<(u32, u64, Bytes)>,
    /// Messages the node sent, for the agreeable peers to answer.
    outbox: Vec<(NodeId, Vec<GroupMessage>)>,
    /// Every reply, in order.
    pub replies: Vec<(ClientToken, ClientReply)>,
}

impl NodeHarness {
    /// A fresh node among `members` (which include [`ME`]), with the test timing
    /// changed by `tune`.
    pub fn new(members: u64, tune: impl FnOnce(&mut NodeConfig)) -> NodeHarness {
        let mut config = NodeConfig::for_test(ME, (1..=members).map(NodeId).collect(), SHARDS);
        tune(&mut config);
        let core =
            NodeCore::new(config.clone(), Recovered::default()).expect("an empty disk recovers");
        NodeHarness {
            core,
            config,
            records: Vec::new(),
            snapshots: Vec::new(),
            outbox: Vec::new(),
            replies: Vec::new(),
        }
    }

    /// The node core, for inputs the harness does not wrap.
    pub fn core(&mut self) -> &mut NodeCore {
        &mut self.core
    }

    /// Takes the node's output and completes its disk writes, until it has none.
    pub fn pump(&mut self) {
        loop {
            let Output {
                datagrams,
                disk_writes,
                replies,
                ..
            } = self.core.take_output();
            for (to, batch) in datagrams {
                // Every batch must fit one datagram and survive the codec.
                let d = encode_peer(CLUSTER_ID, ME, to, &batch);
                let (from, back) =
                    decode_peer_datagram(&d, CLUSTER_ID).expect("the node's datagram decodes");
                let msgs = batch.into_messages(ME, to);
                assert_eq!((from, &back), (ME, &msgs), "peer codec round trip");
                self.outbox.push((to, msgs));
            }
            self.replies.extend(replies);
            if disk_writes.is_empty() {
                return;
            }
            for w in disk_writes {
                for op in w.ops {
                    match op {
                        DiskOp::Append(r) => self.records.push(r),
                        DiskOp::SaveSnapshot { shard, index, data } => {
                            self.snapshots.retain(|s| s.0 != shard);
                            self.snapshots.push((shard, index, data));
                        }
                        DiskOp::Compact { .. } => {}
                        DiskOp::RemoveGroup { shard } | DiskOp::TakeBackGroup { shard } => {
                            self.snapshots.retain(|s| s.0 != shard);
                        }
                    }
                }
                self.core.on_disk_done(w.id);
            }
        }
    }

    /// `n` ticks, pumping after each.
    pub fn tick(&mut self, n: u32) {
        for _ in 0..n {
            self.core.tick();
            self.pump();
        }
    }

    /// Delivers a batch from `from`, then pumps.
    pub fn deliver(&mut self, from: NodeId, msgs: Vec<GroupMessage>) {
        self.core.on_peer_messages(from, msgs);
        self.pump();
    }

    /// Delivers a datagram's payload from `from` as the runtime does, then pumps.
    pub fn deliver_payload(&mut self, from: NodeId, payload: &[u8]) {
        let _ = self.core.on_peer_payload(from, payload);
        self.pump();
    }

    /// The agreeable peers answer everything the node sent so far.
    pub fn answer(&mut self) {
        for (to, msgs) in std::mem::take(&mut self.outbox) {
            let replies: Vec<GroupMessage> = msgs
                .iter()
                .filter_map(|gm| {
                    agreeable_reply(&gm.msg).map(|msg| GroupMessage {
                        shard: gm.shard,
                        msg,
                    })
                })
                .collect();
            if !replies.is_empty() {
                self.deliver(to, replies);
            }
        }
    }

    /// Restarts the node from what it wrote: recovering its own writes must succeed,
    /// whatever its peers sent it.
    pub fn restart(&mut self) {
        let mut snapshots = self.snapshots.clone();
        snapshots.sort_by_key(|s| s.0);
        let recovered = Recovered {
            records: self.records.clone(),
            snapshots,
            truncated_tail: None,
        };
        self.core = NodeCore::new(self.config.clone(), recovered)
            .unwrap_or_else(|e| panic!("the node cannot recover what it wrote: {e}"));
        self.outbox.clear();
        self.pump();
    }
}
