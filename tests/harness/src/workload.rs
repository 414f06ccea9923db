//! The harness's clients: request generation, MID bookkeeping and the per-reply checks.

use std::collections::HashMap;
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::Rng;
use serde::Serialize;

use crate::id::NodeId;

/// Length of keys, values and MIDs, as in the course.
pub const TOKEN_CHARS: usize = 32;

/// A get or a put.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OpKind {
    /// Read a key the client has had acknowledged.
    Get,
    /// Write a key.
    Put,
}

/// The three reply types a client accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplyKind {
    /// Done; a get's ok carries `value`.
    Ok,
    /// Try the replica named in `leader`.
    Redirect,
    /// Failed; try again.
    Fail,
}

impl ReplyKind {
    /// Parses a reply's `type`.
    pub fn parse(text: &str) -> Option<ReplyKind> {
        match text {
            "ok" => Some(ReplyKind::Ok),
            "redirect" => Some(ReplyKind::Redirect),
            "fail" => Some(ReplyKind::Fail),
            _ => None,
        }
    }
}

/// One client operation, retried under new MIDs until it gets an ok.
#[derive(Clone, Debug)]
pub struct Op {
    /// Index of the client that issued it.
    pub client: usize,
    /// Get or put.
    pub kind: OpKind,
    /// The key.
    pub key: String,
    /// The value written (puts only).
    pub value: Option<String>,
    /// Answered ok.
    pub done: bool,
}

#[derive(Clone, Debug)]
struct MidRecord {
    op: usize,
    client: usize,
    sent: Duration,
    first_reply: Option<ReplyKind>,
}

#[derive(Clone, Debug)]
struct Client {
    id: NodeId,
    /// The replica this client sends to next.
    leader: NodeId,
    /// Last acknowledged value per key.
    acked: HashMap<String, String>,
    /// Keys in `acked`, in acknowledgement order, for seeded choices.
    acked_keys: Vec<String>,
    /// Operations generated for this client so far.
    ops: u64,
}

/// Counters of client traffic.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct WorkCounts {
    /// Operations generated.
    pub ops: u64,
    /// Gets generated.
    pub gets: u64,
    /// Puts generated (including gets that could not be generated).
    pub puts: u64,
    /// Operations that rolled "get".
    pub intended_gets: u64,
    /// Intended gets that became puts: the client had no acknowledged key.
    pub gets_not_generated: u64,
    /// Of those, the ones drawn as the client's first operation: the workload's draw,
    /// which no replica can help (the rest waited on a put not yet acknowledged).
    pub gets_not_generated_first: u64,
    /// Gets answered ok.
    pub gets_acked: u64,
    /// Puts answered ok.
    pub puts_acked: u64,
    /// Request datagrams sent (first tries and retries).
    pub requests_sent: u64,
    /// Redirect replies.
    pub redirects: u64,
    /// Fail replies.
    pub fail_replies: u64,
    /// Extra replies to an MID that was already answered ok.
    pub duplicates: u64,
    /// Of those, redirect/fail replies after an ok (see docs/COURSE_HARNESS_SIM.md).
    pub non_ok_after_ok: u64,
}

/// What a reply means to the client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplyOutcome {
    /// The operation is done.
    Done,
    /// Re-send operation `op` at once under a new MID.
    Retry {
        /// The operation.
        op: usize,
    },
    /// An extra reply to an MID already answered ok (scored, not an error).
    Duplicate,
    /// A correctness error (check 1), described.
    Error(String),
}

/// All clients, their operations and every MID ever sent.
#[derive(Debug)]
pub struct Workload {
    clients: Vec<Client>,
    ops: Vec<Op>,
    mids: HashMap<String, MidRecord>,
    rng: SmallRng,
    mix: f64,
    /// Seconds from each answered MID's send to its first reply.
    pub latencies: Vec<f64>,
    /// Counters.
    pub counts: WorkCounts,
}

impl Workload {
    /// Clients `client_ids`, each starting with a random replica as its leader.
    pub fn new(client_ids: &[NodeId], replicas: usize, mix: f64, mut rng: SmallRng) -> Workload {
        let clients = client_ids
            .iter()
            .map(|&id| Client {
                id,
                leader: NodeId(rng.gen_range(0..replicas) as u16),
                acked: HashMap::new(),
                acked_keys: Vec::new(),
                ops: 0,
            })
            .collect();
        Workload {
            clients,
            ops: Vec::new(),
            mids: HashMap::new(),
            rng,
            mix,
            latencies: Vec::new(),
            counts: WorkCounts::default(),
        }
    }

    /// Index of the client with id `id`.
    pub fn client_index(&self, id: NodeId) -> Option<usize> {
        self.clients.iter().position(|c| c.id == id)
    }

    /// The replica client `client` believes is leader.
    pub fn leader_of(&self, client: usize) -> NodeId {
        self.clients[client].leader
    }

    /// Changes the replica client `client` sends to.
    pub fn set_leader(&mut self, client: usize, leader: NodeId) {
        self.clients[client].leader = leader;
    }

    /// The operations generated so far.
    pub fn ops(&self) -> &[Op] {
        &self.ops
    }

    /// Generates the next operation for a random client: a get with
    /// probability `mix` on a key that client has had acknowledged, else a put.
    pub fn generate(&mut self) -> usize {
        let client = self.rng.gen_range(0..self.clients.len());
        let wants_get = self.rng.gen_bool(self.mix);
        self.counts.ops += 1;
        let known = self.clients[client].acked_keys.len();
        let first_op = self.clients[client].ops == 0;
        self.clients[client].ops += 1;
        let op = if wants_get && known > 0 {
            self.counts.intended_gets += 1;
            self.counts.gets += 1;
            let key = self.clients[client].acked_keys[self.rng.gen_range(0..known)].clone();
            Op {
                client,
                kind: OpKind::Get,
                key,
                value: None,
                done: false,
            }
        } else {
            if wants_get {
                self.counts.intended_gets += 1;
                self.counts.gets_not_generated += 1;
                if first_op {
                    self.counts.gets_not_generated_first += 1;
                }
            }
            self.counts.puts += 1;
            // Half the puts overwrite a known key so that gets can catch stale reads.
            let key = if known > 0 && self.rng.gen_bool(0.5) {
                self.clients[client].acked_keys[self.rng.gen_range(0..known)].clone()
            } else {
                random_token(
                    &mut self.rng,
                    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
                )
            };
            let value = random_token(&mut self.rng, b"0123456789abcdef");
            Op {
                client,
                kind: OpKind::Put,
                key,
                value: Some(value),
                done: false,
            }
        };
        self.ops.push(op);
        self.ops.len() - 1
    }

    /// Registers a new MID for `op` sent now to `dst` and returns the request datagram.
    pub fn issue(&mut self, op: usize, dst: NodeId, now: Duration) -> Vec<u8> {
        let mid = loop {
            let mid = random_token(&mut self.rng, b"0123456789abcdef");
            if !self.mids.contains_key(&mid) {
                break mid;
            }
        };
        let o = &self.ops[op];
        let client = &self.clients[o.client];
        let mut msg = serde_json::json!({
            "src": client.id.to_string(),
            "dst": dst.to_string(),
            "leader": client.leader.to_string(),
            "type": match o.kind { OpKind::Get => "get", OpKind::Put => "put" },
            "MID": mid,
            "key": o.key,
        });
        if let Some(value) = &o.value {
            msg["value"] = serde_json::Value::String(value.clone());
        }
        self.mids.insert(
            mid,
            MidRecord {
                op,
                client: o.client,
                sent: now,
                first_reply: None,
            },
        );
        self.counts.requests_sent += 1;
        msg.to_string().into_bytes()
    }

    /// Handles a reply of `kind` to client `client` for `mid`, arriving `now`.
    pub fn on_reply(
        &mut self,
        now: Duration,
        client: usize,
        kind: ReplyKind,
        mid: &str,
        value: Option<&str>,
    ) -> ReplyOutcome {
        let Some(record) = self.mids.get_mut(mid).filter(|r| r.client == client) else {
            return ReplyOutcome::Error(format!("reply to unknown MID {mid}"));
        };
        match (record.first_reply, kind) {
            (None, _) => {}
            (Some(ReplyKind::Ok), ReplyKind::Ok) => {
                self.counts.duplicates += 1;
                return ReplyOutcome::Duplicate;
            }
            (Some(ReplyKind::Ok), _) => {
                self.counts.duplicates += 1;
                self.counts.non_ok_after_ok += 1;
                return ReplyOutcome::Duplicate;
            }
            (Some(first), _) => {
                return ReplyOutcome::Error(format!(
                    "second reply ({kind:?}) to MID {mid}, which already got {first:?}"
                ));
            }
        }
        record.first_reply = Some(kind);
        self.latencies
            .push(now.saturating_sub(record.sent).as_secs_f64());
        let op = record.op;
        match kind {
            ReplyKind::Redirect => {
                self.counts.redirects += 1;
                ReplyOutcome::Retry { op }
            }
            ReplyKind::Fail => {
                self.counts.fail_replies += 1;
                ReplyOutcome::Retry { op }
            }
            ReplyKind::Ok => self.on_ok(op, mid, value),
        }
    }

    fn on_ok(&mut self, op: usize, mid: &str, value: Option<&str>) -> ReplyOutcome {
        let o = &mut self.ops[op];
        o.done = true;
        let client = &mut self.clients[o.client];
        match o.kind {
            OpKind::Put => {
                self.counts.puts_acked += 1;
                let value = o.value.clone().unwrap_or_default();
                if client.acked.insert(o.key.clone(), value).is_none() {
                    client.acked_keys.push(o.key.clone());
                }
                ReplyOutcome::Done
            }
            OpKind::Get => {
                self.counts.gets_acked += 1;
                let expected = client.acked.get(&o.key).map(String::as_str);
                match value {
                    None => ReplyOutcome::Error(format!("ok to get MID {mid} without a value")),
                    Some(got) if Some(got) != expected => ReplyOutcome::Error(format!(
                        "incorrect get reply for MID {mid}, key {}: got {got:?}, last acknowledged put was {:?}",
                        o.key,
                        expected.unwrap_or("")
                    )),
                    Some(_) => ReplyOutcome::Done,
                }
            }
        }
    }

    /// Unanswered (gets, puts) right now.
    pub fn unanswered(&self) -> (u64, u64) {
        let mut gets = 0;
        let mut puts = 0;
        for op in self.ops.iter().filter(|o| !o.done) {
            match op.kind {
                OpKind::Get => gets += 1,
                OpKind::Put => puts += 1,
            }
        }
        (gets, puts)
    }
}

fn random_token(rng: &mut SmallRng, alphabet: &[u8]) -> String {
    (0..TOKEN_CHARS)
        .map(|_| char::from(alphabet[rng.gen_range(0..alphabet.len())]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn mid_of(datagram: &[u8]) -> String {
        let v: serde_json::Value = serde_json::from_slice(datagram).unwrap();
        v["MID"].as_str().unwrap().to_string()
    }

    fn one_client(mix: f64) -> Workload {
        Workload::new(&[NodeId(0x15)], 5, mix, SmallRng::seed_from_u64(9))
    }

    #[test]
    fn gets_need_an_acknowledged_key() {
        let mut w = one_client(1.0);
        let op = w.generate();
        assert_eq!(w.ops()[op].kind, OpKind::Put);
        assert_eq!(w.counts.gets_not_generated, 1);
        assert_eq!(w.counts.gets_not_generated_first, 1);
        // A get drawn while the first put waits for its ok is missed too, but that one
        // a faster replica would have saved.
        let waiting = w.generate();
        assert_eq!(w.ops()[waiting].kind, OpKind::Put);
        assert_eq!(
            (
                w.counts.gets_not_generated,
                w.counts.gets_not_generated_first
            ),
            (2, 1)
        );
        let mid = mid_of(&w.issue(op, NodeId(0), Duration::ZERO));
        assert_eq!(
            w.on_reply(Duration::ZERO, 0, ReplyKind::Ok, &mid, None),
            ReplyOutcome::Done
        );
        let get = w.generate();
        assert_eq!(w.ops()[get].kind, OpKind::Get);
        assert_eq!(w.ops()[get].key, w.ops()[op].key);
        assert_eq!(w.counts.intended_gets, 3);
    }

    #[test]
    fn request_has_the_course_fields() {
        let mut w = one_client(0.0);
        let op = w.generate();
        let v: serde_json::Value =
            serde_json::from_slice(&w.issue(op, NodeId(3), Duration::ZERO)).unwrap();
        assert_eq!(v["src"], "0015");
        assert_eq!(v["dst"], "0003");
        assert_eq!(v["type"], "put");
        assert_eq!(v["key"].as_str().unwrap().len(), 32);
        assert_eq!(v["value"].as_str().unwrap().len(), 32);
        assert_eq!(v["MID"].as_str().unwrap().len(), 32);
    }

    #[test]
    fn get_value_is_checked_against_the_last_acknowledged_put() {
        let mut w = one_client(0.0);
        let put = w.generate();
        let put_mid = mid_of(&w.issue(put, NodeId(0), Duration::ZERO));
        w.on_reply(Duration::ZERO, 0, ReplyKind::Ok, &put_mid, None);
        w.mix = 1.0;
        let get = w.generate();
        let get_mid = mid_of(&w.issue(get, NodeId(0), Duration::ZERO));
        let out = w.on_reply(Duration::ZERO, 0, ReplyKind::Ok, &get_mid, Some("stale"));
        assert!(matches!(out, ReplyOutcome::Error(e) if e.contains("incorrect")));
        let get2 = w.generate();
        let good = w.ops()[put].value.clone().unwrap();
        let get2_mid = mid_of(&w.issue(get2, NodeId(0), Duration::ZERO));
        let out = w.on_reply(Duration::ZERO, 0, ReplyKind::Ok, &get2_mid, Some(&good));
        assert_eq!(out, ReplyOutcome::Done);
    }

    #[test]
    fn mid_rules_unknown_second_reply_and_duplicates() {
        let mut w = one_client(0.0);
        let op = w.generate();
        let mid = mid_of(&w.issue(op, NodeId(0), Duration::ZERO));
        let t = Duration::from_millis(2);
        assert!(matches!(
            w.on_reply(t, 0, ReplyKind::Ok, "nope", None),
            ReplyOutcome::Error(e) if e.contains("unknown MID")
        ));
        assert_eq!(
            w.on_reply(t, 0, ReplyKind::Redirect, &mid, None),
            ReplyOutcome::Retry { op }
        );
        assert!(matches!(
            w.on_reply(t, 0, ReplyKind::Ok, &mid, None),
            ReplyOutcome::Error(e) if e.contains("second reply")
        ));
        let mid2 = mid_of(&w.issue(op, NodeId(1), t));
        assert_ne!(mid, mid2);
        assert_eq!(
            w.on_reply(t, 0, ReplyKind::Ok, &mid2, None),
            ReplyOutcome::Done
        );
        assert_eq!(
            w.on_reply(t, 0, ReplyKind::Ok, &mid2, None),
            ReplyOutcome::Duplicate
        );
        assert_eq!(w.counts.duplicates, 1);
        assert_eq!(w.counts.redirects, 1);
        assert_eq!(w.latencies, vec![0.002, 0.0]);
        assert_eq!(w.unanswered(), (0, 0));
    }
}
