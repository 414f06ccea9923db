//! The simulated network: per-run loss, duplication, delay and a long tail drawn from the
//! seed; partitions as a set of blocked (from, to) links; datagrams encoded and decoded
//! with the node's real peer codec.

use super::{Ev, Sim, CLUSTER_ID, TICK_NS};
use crate::invariants::Violation;
use kv_node::codec::{decode_peer, encode_peer, open_peer_datagram, PeerBatch};
use kv_node::GroupMessage;
use kv_shared::proto::ClientRequest;
use kv_shared::wire::WireError;
use kv_shared::NodeId;
use rand::Rng;
use std::fmt::Write as _;

/// Network behaviour; the safety phase draws it from the seed, liveness makes it quiet.
#[derive(Clone, Copy, Debug)]
pub(super) struct NetParams {
    pub(super) loss: f64,
    pub(super) dup: f64,
    pub(super) delay_ns_min: u64,
    pub(super) delay_ns_max: u64,
    pub(super) long_delay: f64,
}

impl NetParams {
    pub(super) fn quiet() -> NetParams {
        NetParams {
            loss: 0.0,
            dup: 0.0,
            delay_ns_min: 200_000,
            delay_ns_max: 2_000_000,
            long_delay: 0.0,
        }
    }
}

/// Messages a trace line shows per datagram; the rest are counted.
const TRACE_MESSAGES_PER_DATAGRAM_MAX: usize = 6;

impl Sim {
    /// Arrival times of one message: none if lost, two if duplicated.
    pub(super) fn net_delays(&mut self) -> Vec<u64> {
        let p = self.net;
        if p.loss > 0.0 && self.rng.gen_bool(p.loss) {
            return Vec::new();
        }
        let copies = if p.dup > 0.0 && self.rng.gen_bool(p.dup) {
            2
        } else {
            1
        };
        (0..copies)
            .map(|_| {
                let mut d = self.rng.gen_range(p.delay_ns_min..=p.delay_ns_max);
                if p.long_delay > 0.0 && self.rng.gen_bool(p.long_delay) {
                    d += self.rng.gen_range(1..=30) * TICK_NS;
                }
                self.now + d
            })
            .collect()
    }

    /// Sends a client's (or the admin's) request to `node` over the lossy network.
    pub(super) fn send_request(&mut self, node: NodeId, req: &ClientRequest) {
        let node = node.0 as usize - 1;
        for at in self.net_delays() {
            let req = req.clone();
            self.at(at, Ev::ToNode { node, req });
        }
    }

    /// Puts node `i`'s outgoing datagrams on the wire, unless a partition cuts the link.
    pub(super) fn send_datagrams(&mut self, i: usize, datagrams: Vec<(NodeId, PeerBatch)>) {
        let id = self.ids[i];
        for (to, batch) in datagrams {
            let t = to.0 as usize - 1;
            if self.blocked.contains(&(i, t)) {
                continue;
            }
            let bytes = encode_peer(CLUSTER_ID, id, to, &batch);
            for at in self.net_delays() {
                self.at(
                    at,
                    Ev::Deliver {
                        to: t,
                        bytes: bytes.clone(),
                    },
                );
            }
        }
    }

    /// A datagram arrives at node `to` (dropped if it is down or paused, or if a partition
    /// came up while the datagram was in flight).
    pub(super) fn deliver(&mut self, to: usize, bytes: &[u8]) {
        if self.nodes[to].paused || self.nodes[to].run.is_none() {
            return;
        }
        let codec_failed = |e: WireError| Violation {
            invariant: "codec",
            detail: format!("a datagram the node core encoded does not decode: {e}"),
        };
        let (from, payload) = match open_peer_datagram(bytes, CLUSTER_ID) {
            Ok(x) => x,
            Err(e) => return self.fail(codec_failed(e)),
        };
        let f = from.0 as usize - 1;
        if self.blocked.contains(&(f, to)) {
            return;
        }
        self.stats.datagrams += 1;
        if self.trace.wants_detail() {
            let s = match decode_peer(from, payload) {
                Ok(msgs) => summarize(&msgs),
                Err(e) => return self.fail(codec_failed(e)),
            };
            self.trace
                .log(self.now, format!("{from}->{} {s}", self.ids[to]));
        }
        let now_ms = self.now / 1_000_000;
        let r = self.nodes[to].run.as_mut().expect("running");
        r.core.note_peer_heard(from, now_ms);
        if let Err(e) = r.core.on_peer_payload(from, payload) {
            return self.fail(codec_failed(e));
        }
        self.after_input(to);
    }
}

/// One datagram's messages for the trace: shard, term and kv-raft's short form of each.
fn summarize(msgs: &[GroupMessage]) -> String {
    let mut s = String::new();
    for (i, gm) in msgs.iter().enumerate() {
        if i == TRACE_MESSAGES_PER_DATAGRAM_MAX {
            let _ = write!(s, " +{}", msgs.len() - i);
            break;
        }
        let _ = write!(s, " s{}:t{} {:#}", gm.shard.0, gm.msg.term, gm.msg.body);
    }
    s
}
