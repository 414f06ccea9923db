//! The per-shard key-value state machine and its client sessions: the deterministic
//! function every replica applies committed entries with, so replicas that applied the
//! same prefix hold the same map (and answer retried writes the same way).

use bytes::Bytes;
use hashbrown::hash_table::{Entry, HashTable};
use kv_shared::hashing::SeededState;
use kv_shared::limits::SESSIONS_MAX;
use kv_shared::limits::VALUE_BYTES_MAX;
use kv_shared::proto::{ClientError, MoveRefusal, Outcome};
use kv_shared::registry::Registry;
use kv_shared::{ClientId, NodeId, ShardId};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use xxhash_rust::xxh64::Xxh64;

pub(crate) mod command;
#[cfg(test)]
mod tests;

pub use command::{CommandBatch, WriteCommand, WriteOp};

/// What a session remembers: the latest applied sequence number and its outcome.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Session {
    seq: u64,
    outcome: Outcome,
    /// LRU stamp (the state machine's use counter when last touched).
    stamp: u64,
}

/// Client sessions of one shard, bounded: past `max` the least recently used is evicted.
/// Eviction order depends only on the applied commands, so it is the same on every replica.
///
/// Recency is a stamp in each session plus a queue of (stamp, client) in stamp order, one
/// per touch. A touch only pushes to the queue; the superseded pair stays behind and is
/// skipped when it reaches the front (its stamp no longer matches the session's). That
/// keeps a write to one hash lookup and a push instead of two ordered-set updates; the
/// queue is rebuilt from the live pairs when stale ones outnumber them, so it stays
/// within a constant factor of the table.
#[derive(Clone, Debug)]
pub struct Sessions {
    /// Keyed by session ids that clients' names and declared ids decide: seeded.
    by_client: HashMap<ClientId, Session, SeededState>,
    /// (stamp, client) in ascending stamp order; live where the stamp is the session's.
    recency: VecDeque<(u64, ClientId)>,
    clock: u64,
    max: usize,
}

/// Equal tables hold the same sessions; the recency queue's stale pairs are bookkeeping.
impl PartialEq for Sessions {
    fn eq(&self, other: &Sessions) -> bool {
        self.by_client == other.by_client && self.clock == other.clock && self.max == other.max
    }
}

impl Eq for Sessions {}

/// What the session table says about a write before it is applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionCheck {
    /// The client has no session here: never opened, or evicted (the table cannot tell).
    Unknown,
    /// A new sequence number: apply it.
    Fresh,
    /// A retry of the latest applied write: its saved outcome.
    Duplicate(Outcome),
    /// Older than the latest applied write: a late duplicate.
    Stale {
        /// The session's latest applied sequence number.
        latest: u64,
    },
}

impl Sessions {
    /// An empty table holding at most `max` sessions.
    pub fn new(max: usize) -> Sessions {
        assert!(max > 0, "a session table must hold at least one session");
        Sessions {
            by_client: HashMap::default(),
            recency: VecDeque::new(),
            clock: 0,
            max,
        }
    }

    /// Number of sessions held.
    pub fn len(&self) -> usize {
        self.by_client.len()
    }

    /// True if no session is held.
    pub fn is_empty(&self) -> bool {
        self.by_client.is_empty()
    }

    /// Classifies `(client, seq)` and marks the session used.
    pub fn check(&mut self, client: ClientId, seq: u64) -> SessionCheck {
        let verdict = self.check_unqueued(client, seq);
        if verdict != SessionCheck::Unknown {
            self.push_recency(client);
        }
        verdict
    }

    /// [`Sessions::check`] for a write that [`Sessions::record`] records next if it is
    /// `Fresh`: the use is queued by that record (at its later stamp), not here as well,
    /// where it would go stale at once. Stamps, clock and evictions are those of `check`
    /// and `record`; the queue only holds one pair less per write (and so is compacted
    /// half as often).
    fn check_before_record(&mut self, client: ClientId, seq: u64) -> SessionCheck {
        let verdict = self.check_unqueued(client, seq);
        if matches!(
            verdict,
            SessionCheck::Duplicate(_) | SessionCheck::Stale { .. }
        ) {
            self.push_recency(client);
        }
        verdict
    }

    /// Classifies `(client, seq)` and stamps the session used; the caller queues it.
    fn check_unqueued(&mut self, client: ClientId, seq: u64) -> SessionCheck {
        let Some(s) = self.by_client.get_mut(&client) else {
            return SessionCheck::Unknown;
        };
        let verdict = if seq > s.seq {
            SessionCheck::Fresh
        } else if seq == s.seq {
            SessionCheck::Duplicate(s.outcome.clone())
        } else {
            SessionCheck::Stale { latest: s.seq }
        };
        self.clock += 1;
        s.stamp = self.clock;
        verdict
    }

    /// Replaces the saved outcome of `(client, seq)` if that is still the session's
    /// latest write (a retry then gets the new one); recency is left alone.
    fn amend(&mut self, client: ClientId, seq: u64, outcome: Outcome) {
        if let Some(s) = self.by_client.get_mut(&client).filter(|s| s.seq == seq) {
            s.outcome = outcome;
        }
    }

    /// Records the outcome of a freshly applied write.
    pub fn record(&mut self, client: ClientId, seq: u64, outcome: Outcome) {
        self.clock += 1;
        let stamp = self.clock;
        // Most writes come from a client with a session: update it in place rather than
        // move a whole new session in and drop the old one.
        match self.by_client.get_mut(&client) {
            Some(s) => {
                s.seq = seq;
                s.outcome = outcome;
                s.stamp = stamp;
            }
            None => {
                self.by_client.insert(
                    client,
                    Session {
                        seq,
                        outcome,
                        stamp,
                    },
                );
            }
        }
        self.push_recency(client);
        while self.by_client.len() > self.max {
            let (stamp, evict) = self
                .recency
                .pop_front()
                .expect("the recency queue holds a live pair for every session");
            if self.by_client.get(&evict).map(|s| s.stamp) == Some(stamp) {
                self.by_client.remove(&evict);
            }
        }
    }

    /// Queues `client` at the current clock (its session's stamp) and drops stale pairs
    /// once they make up most of the queue.
    fn push_recency(&mut self, client: ClientId) {
        debug_assert_eq!(self.by_client[&client].stamp, self.clock);
        self.recency.push_back((self.clock, client));
        if self.recency.len() > 2 * self.by_client.len() + 64 {
            let by_client = &self.by_client;
            self.recency
                .retain(|(stamp, c)| by_client.get(c).map(|s| s.stamp) == Some(*stamp));
            debug_assert_eq!(self.recency.len(), self.by_client.len());
        }
    }

    /// Rebuilds a table from its sessions (in any order) and clock.
    fn from_parts(max: usize, clock: u64, sessions: Vec<(ClientId, Session)>) -> Sessions {
        assert!(max > 0, "a session table must hold at least one session");
        let mut recency: Vec<(u64, ClientId)> =
            sessions.iter().map(|(c, s)| (s.stamp, *c)).collect();
        recency.sort_unstable();
        Sessions {
            by_client: sessions.into_iter().collect(),
            recency: recency.into(),
            clock,
            max,
        }
    }

    /// The sessions sorted by client, the order images and digests use.
    fn sorted(&self) -> Vec<(&ClientId, &Session)> {
        let mut v: Vec<_> = self.by_client.iter().collect();
        v.sort_unstable_by_key(|(c, _)| **c);
        v
    }
}

/// A byte string that serializes like a `Bytes` (serde bytes), so images keep their
/// encoding while the map holds its keys and values in [`Pair`]s.
struct Raw<'a>(&'a [u8]);

impl Serialize for Raw<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.0)
    }
}

/// The serialized form of a shard (snapshot image), as written: borrowed from the map,
/// so building an image copies no key or value. Encodes exactly like [`Image`].
#[derive(Serialize)]
struct ImageRef<'a> {
    data: Vec<(Raw<'a>, Raw<'a>)>,
    sessions: Vec<(&'a ClientId, &'a Session)>,
    clock: u64,
    applied_index: u64,
    applied_term: u64,
    membership_epoch: u64,
    preferred_leader: Option<NodeId>,
    move_in_flight: Option<MoveInFlight>,
    registry: &'a Option<Registry>,
}

/// The serialized form of a shard (snapshot image), as read: keys and values borrowed
/// from the image, because each is copied once into its [`Pair`] anyway.
#[derive(Deserialize)]
struct Image<'a> {
    #[serde(borrow)]
    data: Vec<(&'a [u8], &'a [u8])>,
    sessions: Vec<(ClientId, Session)>,
    clock: u64,
    applied_index: u64,
    applied_term: u64,
    membership_epoch: u64,
    preferred_leader: Option<NodeId>,
    move_in_flight: Option<MoveInFlight>,
    registry: Option<Registry>,
}

/// One key and its value in a single heap block: the key's length (u32, little endian),
/// the key, the value. One allocation per key instead of two `Bytes` (each a block of its
/// own plus, once cloned out of a decoded entry, a shared refcount block), and a 16-byte
/// slot in the table instead of two 32-byte handles.
#[derive(Clone, PartialEq, Eq)]
struct Pair(Box<[u8]>);

const PAIR_KEY_LEN_BYTES: usize = 4;

impl Pair {
    fn new(key: &[u8], value: &[u8]) -> Pair {
        let key_len = u32::try_from(key.len()).expect("a key shorter than 4 GiB");
        let mut block = Vec::with_capacity(PAIR_KEY_LEN_BYTES + key.len() + value.len());
        block.extend_from_slice(&key_len.to_le_bytes());
        block.extend_from_slice(key);
        block.extend_from_slice(value);
        Pair(block.into_boxed_slice())
    }

    fn key_end(&self) -> usize {
        let len: [u8; PAIR_KEY_LEN_BYTES] = self.0[..PAIR_KEY_LEN_BYTES]
            .try_into()
            .expect("a pair starts with its key length");
        PAIR_KEY_LEN_BYTES + u32::from_le_bytes(len) as usize
    }

    fn key(&self) -> &[u8] {
        &self.0[PAIR_KEY_LEN_BYTES..self.key_end()]
    }

    fn value(&self) -> &[u8] {
        &self.0[self.key_end()..]
    }

    fn value_mut(&mut self) -> &mut [u8] {
        let end = self.key_end();
        &mut self.0[end..]
    }
}

/// A key's first 16 bytes, zero-padded, big-endian: comparing two of these orders the
/// keys as comparing the keys would, except that equal prefixes need the keys.
/// `text` as an i64 if it is exactly how that number prints.
fn parse_canonical_i64(text: &[u8]) -> Option<i64> {
    let n: i64 = std::str::from_utf8(text).ok()?.parse().ok()?;
    (n.to_string().as_bytes() == text).then_some(n)
}

fn key_prefix(key: &[u8]) -> u128 {
    let mut b = [0u8; 16];
    let n = key.len().min(16);
    b[..n].copy_from_slice(&key[..n]);
    u128::from_be_bytes(b)
}

impl std::fmt::Debug for Pair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Pair")
            .field(&Bytes::copy_from_slice(self.key()))
            .field(&Bytes::copy_from_slice(self.value()))
            .finish()
    }
}

/// The key-value map of one shard plus its sessions and applied position.
#[derive(Clone, Debug)]
pub struct StateMachine {
    /// Hashed, not ordered: a write costs one hash and about one key comparison, where a
    /// B-tree compared keys through pointers about log2(keys) times. Only snapshot images
    /// and digests need an order, and they sort.
    data: HashTable<Pair>,
    /// Seeded from the OS ([`SeededState`]), so clients cannot aim keys at one bucket;
    /// nothing depends on the table's order.
    hasher: SeededState,
    sessions: Sessions,
    applied_index: u64,
    applied_term: u64,
    /// Index of the last membership change applied (0: the initial replica set): the
    /// shard's epoch, kept here so that it survives in snapshots with the rest.
    membership_epoch: u64,
    /// Set by `WriteOp::PreferLeader`: replicated, so a new leader honours it too.
    preferred_leader: Option<NodeId>,
    /// Set by `WriteOp::BeginMove`, cleared by `WriteOp::EndMove`: replicated, so a new
    /// leader finishes (or undoes) the move its predecessor started.
    move_in_flight: Option<MoveInFlight>,
    /// The node registry: `Some` only in the metadata group's state machine, the one
    /// place registry changes apply.
    registry: Option<Registry>,
}

/// A replica move recorded in a shard's state machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MoveInFlight {
    /// The shard.
    pub shard: ShardId,
    /// The node whose replica goes.
    pub from: NodeId,
    /// The node that receives one.
    pub to: NodeId,
    /// Session of the admin request that began it (answered when it ends).
    pub client: ClientId,
    /// Its sequence number.
    pub seq: u64,
}

/// Equal shards hold the same keys and values, sessions and position (whatever their
/// tables' order or capacity).
impl PartialEq for StateMachine {
    fn eq(&self, other: &StateMachine) -> bool {
        self.data.len() == other.data.len()
            && self
                .data
                .iter()
                .all(|p| other.value_of(p.key()) == Some(p.value()))
            && self.sessions == other.sessions
            && self.applied_index == other.applied_index
            && self.applied_term == other.applied_term
            && self.membership_epoch == other.membership_epoch
            && self.preferred_leader == other.preferred_leader
            && self.move_in_flight == other.move_in_flight
            && self.registry == other.registry
    }
}

impl Eq for StateMachine {}

/// kv-raft's [`kv_raft::Config::snapshot_image_check`] for kv-node: a snapshot from a
/// leader is persisted only if its image restores at the snapshot's index and term.
pub fn snapshot_image_restorable(snapshot: &kv_raft::Snapshot) -> bool {
    let meta = &snapshot.meta;
    StateMachine::check_image(&snapshot.data, SESSIONS_MAX, meta.index, meta.term).is_ok()
}

/// A snapshot image that does not decode.
#[derive(Debug, thiserror::Error)]
#[error("snapshot image does not decode: {0}")]
pub struct ImageError(String);

/// Highest session clock an image may carry. The clock counts session uses (one or two per
/// applied write), so no shard reaches it; an image beyond it is forged or corrupt, and
/// would overflow the clock at the next write.
const SESSION_CLOCK_MAX: u64 = u64::MAX / 2;

/// Decodes an image and checks what `to_image` guarantees and restoring relies on: keys
/// and session clients strictly ascending (no repeats), at most `sessions_max` sessions,
/// no session stamp beyond the clock, the clock far from overflow.
fn decode_image(bytes: &[u8], sessions_max: usize) -> Result<Image<'_>, ImageError> {
    let image: Image = postcard::from_bytes(bytes).map_err(|e| ImageError(e.to_string()))?;
    if !image.data.windows(2).all(|w| w[0].0 < w[1].0) {
        return Err(ImageError("keys are not strictly ascending".into()));
    }
    if !image.sessions.windows(2).all(|w| w[0].0 < w[1].0) {
        return Err(ImageError("sessions are not strictly ascending".into()));
    }
    if image.sessions.len() > sessions_max {
        return Err(ImageError(format!(
            "{} sessions; a shard keeps at most {sessions_max}",
            image.sessions.len()
        )));
    }
    if image.clock > SESSION_CLOCK_MAX {
        return Err(ImageError(format!(
            "session clock {} above SESSION_CLOCK_MAX ({SESSION_CLOCK_MAX})",
            image.clock
        )));
    }
    if let Some((c, s)) = image.sessions.iter().find(|(_, s)| s.stamp > image.clock) {
        return Err(ImageError(format!(
            "session of client {} stamped {} after the clock {}",
            c.0, s.stamp, image.clock
        )));
    }
    if image.registry.as_ref().is_some_and(|r| !r.is_well_formed()) {
        return Err(ImageError("registry ids are not strictly ascending".into()));
    }
    Ok(image)
}

impl StateMachine {
    /// An empty shard.
    pub fn new(sessions_max: usize) -> StateMachine {
        StateMachine {
            data: HashTable::new(),
            hasher: SeededState::new(),
            sessions: Sessions::new(sessions_max),
            applied_index: 0,
            applied_term: 0,
            membership_epoch: 0,
            preferred_leader: None,
            move_in_flight: None,
            registry: None,
        }
    }

    /// The empty state machine of the metadata group: it holds the node registry.
    pub fn new_metadata(sessions_max: usize) -> StateMachine {
        StateMachine {
            registry: Some(Registry::default()),
            ..StateMachine::new(sessions_max)
        }
    }

    /// The node registry (`None` in a data shard).
    pub fn registry(&self) -> Option<&Registry> {
        self.registry.as_ref()
    }

    /// Current value of `key` (a copy: the map keeps its own).
    pub fn get(&self, key: &[u8]) -> Option<Bytes> {
        self.value_of(key).map(Bytes::copy_from_slice)
    }

    fn value_of(&self, key: &[u8]) -> Option<&[u8]> {
        self.data
            .find(self.hasher.hash_one(key), |p| p.key() == key)
            .map(Pair::value)
    }

    fn insert(&mut self, key: &[u8], value: &[u8]) {
        let hasher = &self.hasher;
        let entry = self.data.entry(
            hasher.hash_one(key),
            |p| p.key() == key,
            |p| hasher.hash_one(p.key()),
        );
        match entry {
            // Same length (the common overwrite): reuse the block, no free and malloc.
            Entry::Occupied(mut e) if e.get().value().len() == value.len() => {
                e.get_mut().value_mut().copy_from_slice(value);
            }
            Entry::Occupied(mut e) => *e.get_mut() = Pair::new(key, value),
            Entry::Vacant(e) => {
                e.insert(Pair::new(key, value));
            }
        }
    }

    fn remove(&mut self, key: &[u8]) {
        if let Ok(e) = self
            .data
            .find_entry(self.hasher.hash_one(key), |p| p.key() == key)
        {
            e.remove();
        }
    }

    /// Number of keys.
    pub fn keys(&self) -> usize {
        self.data.len()
    }

    /// Number of sessions.
    pub fn sessions(&self) -> usize {
        self.sessions.len()
    }

    /// Index of the last applied entry.
    pub fn applied_index(&self) -> u64 {
        self.applied_index
    }

    /// Term of the last applied entry.
    pub fn applied_term(&self) -> u64 {
        self.applied_term
    }

    /// The epoch of the replica set: index of the last membership change applied.
    pub fn membership_epoch(&self) -> u64 {
        self.membership_epoch
    }

    /// The leader an admin asked for (`WriteOp::PreferLeader`), if any.
    pub fn preferred_leader(&self) -> Option<NodeId> {
        self.preferred_leader
    }

    /// The outcome saved for `(client, seq)`, if that is its session's latest write.
    pub fn saved_outcome(&self, client: ClientId, seq: u64) -> Option<Outcome> {
        self.sessions
            .by_client
            .get(&client)
            .filter(|s| s.seq == seq)
            .map(|s| s.outcome.clone())
    }

    /// The replica move in flight, if any.
    pub fn move_in_flight(&self) -> Option<MoveInFlight> {
        self.move_in_flight
    }

    /// Marks a no-op entry applied.
    pub fn apply_empty(&mut self, index: u64, term: u64) {
        self.advance(index, term);
    }

    /// Marks a membership change applied: its index becomes the shard's epoch.
    pub fn apply_membership_change(&mut self, index: u64, term: u64) {
        self.advance(index, term);
        self.membership_epoch = index;
    }

    /// Applies a command entry; returns one outcome per write. An entry that does not
    /// decode (impossible unless a replica is corrupt) applies as nothing, the same on
    /// every replica, and yields no outcomes.
    pub fn apply_entry(&mut self, index: u64, term: u64, data: &[u8]) -> Vec<Outcome> {
        let mut outcomes = Vec::new();
        self.apply_entry_into(index, term, data, &mut outcomes);
        outcomes
    }

    /// [`StateMachine::apply_entry`], appending the outcomes to `out` (a buffer the
    /// caller reuses from entry to entry) instead of returning a new vector.
    pub fn apply_entry_into(&mut self, index: u64, term: u64, data: &[u8], out: &mut Vec<Outcome>) {
        self.advance(index, term);
        if let Some(puts) = command::puts_only(data) {
            out.extend(puts.map(|w| self.apply_command(&w)));
        } else if let Ok(batch) = CommandBatch::decode_borrowed(data) {
            out.extend(batch.writes.iter().map(|w| self.apply_command(w)));
        }
    }

    fn advance(&mut self, index: u64, term: u64) {
        assert!(
            index == self.applied_index + 1,
            "entries apply in order: applied {}, got {index}",
            self.applied_index
        );
        self.applied_index = index;
        self.applied_term = term;
    }

    /// Applies one write under its session: exactly once per (client, seq).
    ///
    /// A client without a session (never opened, or evicted: the bounded table cannot
    /// tell) may only open one, with `OpenSession` (which changes no data, so applying
    /// it again is harmless) or implicitly with a write at sequence number 1 (one-shot
    /// sessions). Any other write from it is refused as `SessionExpired`: it may be the
    /// retry of a write applied before its session was evicted, and applying it again
    /// would break exactly-once. The verdict depends only on applied commands, so every
    /// replica gives the same.
    pub fn apply_write(&mut self, w: &WriteCommand) -> Outcome {
        self.apply_command(w)
    }

    /// [`StateMachine::apply_write`] of a write however it holds its byte strings (owned,
    /// or borrowed from the entry being applied).
    fn apply_command<B: AsRef<[u8]>>(&mut self, w: &WriteCommand<B>) -> Outcome {
        if let WriteOp::EndMove {
            client,
            seq,
            refusal,
        } = &w.op
        {
            self.end_move(*client, *seq, refusal);
            return Outcome::Done;
        }
        match self.sessions.check_before_record(w.client, w.seq) {
            SessionCheck::Duplicate(outcome) => return outcome,
            SessionCheck::Stale { latest } => {
                return Outcome::Error(ClientError::StaleSequence { seq: w.seq, latest })
            }
            SessionCheck::Unknown if w.seq != 1 && !matches!(w.op, WriteOp::OpenSession) => {
                return Outcome::Error(ClientError::SessionExpired)
            }
            SessionCheck::Unknown | SessionCheck::Fresh => {}
        }
        let outcome = match &w.op {
            WriteOp::OpenSession => Outcome::Done,
            WriteOp::Put { key, value } => {
                self.insert(key.as_ref(), value.as_ref());
                Outcome::Done
            }
            WriteOp::Delete { key } => {
                self.remove(key.as_ref());
                Outcome::Done
            }
            WriteOp::Cas { key, expected, new } => {
                let current = self.value_of(key.as_ref());
                if current == expected.as_ref().map(AsRef::as_ref) {
                    self.insert(key.as_ref(), new.as_ref());
                    Outcome::CasOk
                } else {
                    Outcome::CasMismatch {
                        current: current.map(Bytes::copy_from_slice),
                    }
                }
            }
            WriteOp::Incr { key, delta } => self.increment(key.as_ref(), *delta),
            WriteOp::Append { key, value } => self.append(key.as_ref(), value.as_ref()),
            WriteOp::Swap { key, new } => {
                let old = self.get(key.as_ref());
                match new {
                    Some(v) => self.insert(key.as_ref(), v.as_ref()),
                    None => self.remove(key.as_ref()),
                }
                Outcome::Value(old)
            }
            WriteOp::PreferLeader { node } => {
                self.preferred_leader = Some(*node);
                Outcome::Done
            }
            WriteOp::BeginMove { shard, from, to } => match self.move_in_flight {
                Some(m) => Outcome::Error(ClientError::MoveRefused {
                    shard: *shard,
                    from: *from,
                    to: *to,
                    reason: MoveRefusal::MoveInFlight {
                        from: m.from,
                        to: m.to,
                    },
                }),
                None => {
                    self.move_in_flight = Some(MoveInFlight {
                        shard: *shard,
                        from: *from,
                        to: *to,
                        client: w.client,
                        seq: w.seq,
                    });
                    // Never answered while the move is in flight (the node core holds
                    // the request); `EndMove` replaces it with the final outcome.
                    Outcome::Done
                }
            },
            WriteOp::RegisterNode {
                node,
                addr,
                identity,
            } => match &mut self.registry {
                None => Outcome::Error(ClientError::Malformed(
                    "node registrations go to the metadata group, not to a data shard".into(),
                )),
                Some(r) => match r.register(self.applied_index, *node, *addr, *identity) {
                    Ok(()) => Outcome::Done,
                    Err(e) => Outcome::Error(ClientError::RegisterRefused(e)),
                },
            },
            WriteOp::SetNodeState { node, state } => match &mut self.registry {
                None => Outcome::Error(ClientError::Malformed(
                    "node states go to the metadata group, not to a data shard".into(),
                )),
                Some(r) => match r.set_state(self.applied_index, *node, *state) {
                    Ok(()) => Outcome::Done,
                    Err(e) => Outcome::Error(ClientError::NodeStateRefused(e)),
                },
            },
            WriteOp::PauseBalancer { paused } => match &mut self.registry {
                None => Outcome::Error(ClientError::Malformed(
                    "the balancer's pause goes to the metadata group, not to a data shard".into(),
                )),
                Some(r) => {
                    r.set_balancer_paused(self.applied_index, *paused);
                    Outcome::Done
                }
            },
            WriteOp::EndMove { .. } => unreachable!("handled above, outside sessions"),
        };
        self.sessions.record(w.client, w.seq, outcome.clone());
        outcome
    }

    /// Clears the move begun by `(client, seq)` and saves its final outcome in the
    /// admin's session. A late duplicate (the move already ended) changes nothing.
    fn end_move(&mut self, client: ClientId, seq: u64, refusal: &Option<MoveRefusal>) {
        let Some(m) = self
            .move_in_flight
            .filter(|m| m.client == client && m.seq == seq)
        else {
            return;
        };
        self.move_in_flight = None;
        let outcome = match refusal {
            None => Outcome::Done,
            Some(reason) => Outcome::Error(ClientError::MoveRefused {
                shard: m.shard,
                from: m.from,
                to: m.to,
                reason: reason.clone(),
            }),
        };
        self.sessions.amend(client, seq, outcome);
    }

    /// Adds `delta` to the integer `key` holds. Only the canonical decimal form counts as
    /// an integer (no sign `+`, no leading zeros or spaces), as Redis's INCRBY requires,
    /// so the stored text always reads back as the number it means.
    fn increment(&mut self, key: &[u8], delta: i64) -> Outcome {
        let current = match self.value_of(key) {
            None => 0,
            Some(v) => match parse_canonical_i64(v) {
                Some(n) => n,
                None => return Outcome::Error(ClientError::NotAnInteger),
            },
        };
        let Some(sum) = current.checked_add(delta) else {
            return Outcome::Error(ClientError::Overflow);
        };
        self.insert(key, sum.to_string().as_bytes());
        Outcome::Integer(sum)
    }

    /// Appends `suffix` unless the result would pass the value limit (then writes nothing).
    fn append(&mut self, key: &[u8], suffix: &[u8]) -> Outcome {
        let mut value = self.value_of(key).map(<[u8]>::to_vec).unwrap_or_default();
        let len = value.len() + suffix.len();
        if len > VALUE_BYTES_MAX {
            return Outcome::Error(ClientError::ValueTooLarge {
                len,
                max: VALUE_BYTES_MAX,
            });
        }
        value.extend_from_slice(suffix);
        self.insert(key, &value);
        Outcome::Integer(len as i64)
    }

    /// Serializes map, sessions and applied position (the snapshot image).
    pub fn to_image(&self) -> Bytes {
        let image = ImageRef {
            data: self
                .sorted_data()
                .into_iter()
                .map(|p| (Raw(p.key()), Raw(p.value())))
                .collect(),
            sessions: self.sessions.sorted(),
            clock: self.sessions.clock,
            applied_index: self.applied_index,
            applied_term: self.applied_term,
            membership_epoch: self.membership_epoch,
            preferred_leader: self.preferred_leader,
            move_in_flight: self.move_in_flight,
            registry: &self.registry,
        };
        Bytes::from(kv_shared::pack::encode_exact(&image))
    }

    /// Rebuilds a shard from a snapshot image.
    pub fn from_image(bytes: &[u8], sessions_max: usize) -> Result<StateMachine, ImageError> {
        let image = decode_image(bytes, sessions_max)?;
        let mut sm = StateMachine {
            // Sized once for the image's keys: no doubling (and no table twice the size
            // it needs) while a large shard is restored.
            data: HashTable::with_capacity(image.data.len()),
            hasher: SeededState::new(),
            sessions: Sessions::from_parts(sessions_max, image.clock, image.sessions),
            applied_index: image.applied_index,
            applied_term: image.applied_term,
            membership_epoch: image.membership_epoch,
            preferred_leader: image.preferred_leader,
            move_in_flight: image.move_in_flight,
            registry: image.registry,
        };
        for (key, value) in image.data {
            sm.insert(key, value);
        }
        Ok(sm)
    }

    /// Checks that `bytes` is an image [`StateMachine::from_image`] restores, at `index`
    /// and `term`, without building the map: a snapshot from a leader is checked before
    /// it is persisted, so that a bad one never fails a restart.
    pub fn check_image(
        bytes: &[u8],
        sessions_max: usize,
        index: u64,
        term: u64,
    ) -> Result<(), ImageError> {
        let image = decode_image(bytes, sessions_max)?;
        if (image.applied_index, image.applied_term) != (index, term) {
            return Err(ImageError(format!(
                "image is at index {} term {}, its metadata says index {index} term {term}",
                image.applied_index, image.applied_term
            )));
        }
        Ok(())
    }

    /// The map sorted by key: images and digests must not depend on hash order.
    ///
    /// Sorted on each key's first 16 bytes held next to its pointer, so that most
    /// comparisons touch no pair: chasing two pointers per comparison costs two cache
    /// misses each time, on the event loop, while a lagging follower waits for the image. Zero-padded prefixes order like the keys, and ties go to the keys.
    fn sorted_data(&self) -> Vec<&Pair> {
        let mut v: Vec<(u128, &Pair)> =
            self.data.iter().map(|p| (key_prefix(p.key()), p)).collect();
        v.sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.key().cmp(b.1.key())));
        v.into_iter().map(|(_, p)| p).collect()
    }

    /// A digest of map and sessions, equal on replicas that applied the same prefix.
    pub fn digest(&self) -> u64 {
        let mut h = Xxh64::new(0);
        for p in self.sorted_data() {
            let (k, v) = (p.key(), p.value());
            h.update(&(k.len() as u64).to_le_bytes());
            h.update(k);
            h.update(&(v.len() as u64).to_le_bytes());
            h.update(v);
        }
        for (c, s) in self.sessions.sorted() {
            h.update(&c.0.to_le_bytes());
            h.update(&s.seq.to_le_bytes());
        }
        if let Some(r) = &self.registry {
            h.update(&postcard::to_stdvec(r).expect("a registry encodes"));
        }
        h.digest()
    }
}
