//! Client requests: the MID table that answers every MID exactly once, the session scheme,
//! and how a node-core outcome becomes a course answer.
//!
//! The harness fails a run on a second reply to an MID that got `redirect` or `fail`, or a
//! reply to an MID it never sent, so every answer goes through [`MidTable::take`], which
//! hands out each pending MID once and never again.
//!
//! Sessions: the course client retries a redirected or failed operation under a NEW MID,
//! so a session per course client with one sequence number per MID would need numbers
//! that agree across replicas (which we cannot assign). Instead each MID gets its own
//! session, `(replica << 40) | token` with seq 1: unique across replicas by construction,
//! proposed at most once, so the node core's dedup never merges two different MIDs. A put
//! whose first attempt was redirected may then apply twice (first attempt, then the
//! retry); both carry the same key and value and apply in log order, and the first attempt
//! always precedes the retry in the log (it was proposed in an earlier term, or earlier in
//! the same term), so a later put of the same key is never undone by it.

use crate::ids::CourseId;
use crate::protocol::Answer;
use kv_node::ClientToken;
use kv_shared::proto::{ClientError, ClientRequest, Op, Outcome};
use kv_shared::{ClientId, NodeId};
use std::collections::{HashMap, HashSet, VecDeque};

/// Most MIDs remembered to spot a repeated request (the harness never repeats one; this
/// bounds memory if something does).
pub const SEEN_MIDS_MAX: usize = 200_000;

/// A request that has been admitted and not yet answered.
#[derive(Clone, Debug)]
pub struct Pending {
    /// The client to answer.
    pub client: CourseId,
    /// Its MID.
    pub mid: String,
    /// The request as handed to the node core (kept so a parked request can be re-sent).
    pub request: ClientRequest,
}

/// Every admitted MID, until answered.
#[derive(Debug, Default)]
pub struct MidTable {
    next_token: u64,
    pending: HashMap<u64, Pending>,
    seen: HashSet<(CourseId, String)>,
    seen_order: VecDeque<(CourseId, String)>,
}

impl MidTable {
    /// Admits a new (client, MID) and returns its token; `None` if this MID was seen
    /// before (a repeat is ignored: answering it could answer the MID twice).
    pub fn admit(
        &mut self,
        me: NodeId,
        client: CourseId,
        mid: String,
        op: Op,
    ) -> Option<ClientToken> {
        if !self.first_sight(client, &mid) {
            return None;
        }
        let key = (client, mid);
        self.next_token += 1;
        let token = self.next_token;
        let request = ClientRequest {
            client: session_for(me, token),
            seq: 1,
            epoch: 0,
            op,
        };
        self.pending.insert(
            token,
            Pending {
                client: key.0,
                mid: key.1,
                request,
            },
        );
        Some(ClientToken(token))
    }

    /// Records (client, MID) as seen; false if it was seen before. Requests that are
    /// answered without being admitted (malformed ones) go through this too.
    pub fn first_sight(&mut self, client: CourseId, mid: &str) -> bool {
        let key = (client, mid.to_string());
        if self.seen.contains(&key) {
            return false;
        }
        if self.seen_order.len() >= SEEN_MIDS_MAX {
            if let Some(old) = self.seen_order.pop_front() {
                self.seen.remove(&old);
            }
        }
        self.seen.insert(key.clone());
        self.seen_order.push_back(key);
        true
    }

    /// The pending request of a token.
    pub fn get(&self, token: ClientToken) -> Option<&Pending> {
        self.pending.get(&token.0)
    }

    /// Takes a token's request for answering. `None` if it was already answered (or never
    /// existed): the caller must then send nothing.
    pub fn take(&mut self, token: ClientToken) -> Option<Pending> {
        self.pending.remove(&token.0)
    }

    /// Requests not yet answered.
    pub fn pending_count(&self) -> usize {
        self.pending.len()
    }
}

/// The session of one MID: unique per (replica, token), see the module docs.
pub fn session_for(me: NodeId, token: u64) -> ClientId {
    debug_assert!(token < 1 << 40 && me.0 < 1 << 24);
    ClientId((me.0 << 40) | token)
}

/// What to do with a node-core outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Disposition {
    /// Answer now.
    Answer(Answer),
    /// The node core says another replica leads (or none is known): answer `redirect`
    /// naming this hint, unless the runtime decides to hold the request a little.
    NotLeader(Option<NodeId>),
}

/// Maps an outcome onto the course's three answers. Anything whose outcome is unknown
/// becomes a redirect, never a `fail`: fails are scored, redirects are not, and a retried
/// put is safe (module docs).
pub fn disposition(outcome: Outcome) -> Disposition {
    match outcome {
        Outcome::Value(v) => Disposition::Answer(Answer::Ok {
            value: Some(
                v.map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_default(),
            ),
        }),
        Outcome::Done | Outcome::CasOk => Disposition::Answer(Answer::Ok { value: None }),
        Outcome::Error(ClientError::NotLeader { leader, .. }) => Disposition::NotLeader(leader),
        // Course mode puts its one group on every replica; a newer replica set still names
        // the leader to redirect to.
        Outcome::Error(ClientError::StaleRoute { route, .. }) => {
            Disposition::NotLeader(route.leader)
        }
        Outcome::Error(
            ClientError::NoQuorum { .. }
            | ClientError::Timeout { .. }
            | ClientError::Overloaded { .. }
            | ClientError::OverloadedBytes { .. }
            | ClientError::Unavailable { .. }
            | ClientError::StaleSequence { .. }
            | ClientError::SessionExpired,
        ) => Disposition::Answer(Answer::Redirect),
        Outcome::Error(
            ClientError::KeyTooLarge { .. }
            | ClientError::ValueTooLarge { .. }
            | ClientError::NotAnInteger
            | ClientError::Overflow
            | ClientError::Malformed(_)
            // Course mode has no client keys; the runtime never produces it there.
            | ClientError::PermissionDenied { .. }
            | ClientError::MoveRefused { .. }
            // Course mode runs no metadata group.
            | ClientError::RegisterRefused(_)
            | ClientError::NodeStateRefused(_),
        )
        | Outcome::CasMismatch { .. }
        | Outcome::Integer(_)
        | Outcome::Status(_) => Disposition::Answer(Answer::Fail),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use kv_shared::ShardId;

    fn get() -> Op {
        Op::Get {
            key: Bytes::from_static(b"k"),
            stale: false,
        }
    }

    #[test]
    fn each_mid_is_answered_once() {
        let mut t = MidTable::default();
        let me = NodeId(3);
        let a = t.admit(me, CourseId(0x15), "m1".into(), get()).unwrap();
        let b = t.admit(me, CourseId(0x15), "m2".into(), get()).unwrap();
        assert_ne!(a, b);
        assert_eq!(t.pending_count(), 2);
        let p = t.take(a).unwrap();
        assert_eq!((p.client, p.mid.as_str()), (CourseId(0x15), "m1"));
        assert!(t.take(a).is_none(), "a second answer finds nothing");
        assert!(
            t.take(ClientToken(999)).is_none(),
            "unknown tokens find nothing"
        );
        assert_eq!(t.pending_count(), 1);
    }

    #[test]
    fn a_repeated_mid_is_not_admitted_even_after_its_answer() {
        let mut t = MidTable::default();
        let a = t
            .admit(NodeId(1), CourseId(0x15), "m".into(), get())
            .unwrap();
        assert!(t
            .admit(NodeId(1), CourseId(0x15), "m".into(), get())
            .is_none());
        t.take(a).unwrap();
        assert!(t
            .admit(NodeId(1), CourseId(0x15), "m".into(), get())
            .is_none());
        // The same MID string from another client is another request.
        assert!(t
            .admit(NodeId(1), CourseId(0x16), "m".into(), get())
            .is_some());
    }

    #[test]
    fn sessions_differ_per_mid_and_per_replica() {
        let mut t = MidTable::default();
        let a = t
            .admit(NodeId(1), CourseId(0x15), "m1".into(), get())
            .unwrap();
        let b = t
            .admit(NodeId(1), CourseId(0x15), "m2".into(), get())
            .unwrap();
        let sa = t.get(a).unwrap().request.client;
        let sb = t.get(b).unwrap().request.client;
        assert_ne!(sa, sb);
        assert_ne!(session_for(NodeId(1), 1), session_for(NodeId(2), 1));
        assert_eq!(t.get(a).unwrap().request.seq, 1);
    }

    #[test]
    fn outcomes_map_to_answers() {
        let d = |o| disposition(o);
        assert_eq!(
            d(Outcome::Value(None)),
            Disposition::Answer(Answer::Ok {
                value: Some(String::new())
            }),
            "a never-written key reads as the empty string"
        );
        assert_eq!(
            d(Outcome::Value(Some(Bytes::from_static(b"v1")))),
            Disposition::Answer(Answer::Ok {
                value: Some("v1".into())
            })
        );
        assert_eq!(
            d(Outcome::Done),
            Disposition::Answer(Answer::Ok { value: None })
        );
        assert_eq!(
            d(Outcome::Error(ClientError::NotLeader {
                shard: ShardId(0),
                leader: Some(NodeId(2))
            })),
            Disposition::NotLeader(Some(NodeId(2)))
        );
        for unknown in [
            ClientError::Timeout { shard: ShardId(0) },
            ClientError::NoQuorum { shard: ShardId(0) },
        ] {
            assert_eq!(
                d(Outcome::Error(unknown)),
                Disposition::Answer(Answer::Redirect),
                "unknown outcomes are redirected, not failed"
            );
        }
        assert_eq!(
            d(Outcome::Error(ClientError::KeyTooLarge { len: 9, max: 1 })),
            Disposition::Answer(Answer::Fail)
        );
    }
}
