//! kv-raft: Raft consensus for ONE group, as a pure state machine.
//!
//! The core does no I/O. The caller feeds it inputs and executes its outputs:
//!
//! ```text
//!   tick() / step(msg) / propose(cmd) / read_index(ctx) / on_persisted(write_id)
//!                               |
//!                               v
//!                         ready() -> Ready
//!   1. persist `ready.write` (hard state, snapshot, entries); when durable, call
//!      `on_persisted(write.id)`. Messages that depend on it (vote grants, append
//!      acknowledgements) are held inside the core until then: the caller cannot send
//!      them early, because it does not have them.
//!   2. send `ready.messages` (always safe to send at once; the leader's own appends go out
//!      before its fsync and it counts itself only after `on_persisted`, thesis 10.2.1).
//!   3. restore `ready.apply_snapshot` if any, then apply `ready.committed` in order
//!      (durable on this node too, except on a leader, which may put off the fsync of
//!      a `Write` marked `deferrable` and applies what its followers made durable).
//!   4. serve `ready.reads` once the state machine has applied their index.
//! ```
//!
//! Randomness (election jitter) comes from a seeded RNG in [`Config::seed`]; time comes
//! only from `tick()`. So a cluster of these, driven by a seeded simulator, replays
//! byte for byte. docs/RAFT.md describes each feature.
//!
//! Every message is checked by [`check_message`] before the protocol sees it; refused
//! ones are dropped and counted ([`Raft::refusals`]), so no remote input reaches an
//! assertion or an overflow.
//!
//! Layout: `node` (public API, dispatch), `config` (the settings), `ready` (what the
//! caller gets and gives back), `persist` (writes and what waits for them), `check`,
//! `display` (the one text form of messages and entries, for transcripts and traces),
//! `election`, `replication` (with heartbeats and ReadIndex rounds), `heartbeat_resend`,
//! `lazy` (lazy followers),
//! `follower_read` (ReadIndex asked of the leader by a follower), `snapshot`,
//! `membership`, and the small pure pieces `log`, `progress`, `quorum`, `read_index`,
//! `lease`.

pub mod types;

mod answers;
mod check;
mod config;
mod display;
mod ready;

pub use check::{check_message, Refusal, Refusals};
pub use display::Entries;
pub use types::*;

#[cfg(test)]
mod byzantine_tests;
#[cfg(test)]
mod commit_piggyback_tests;
mod election;
mod events;
mod follower_read;
mod heartbeat_resend;
mod lazy;
mod lease;
mod log;
mod membership;
mod node;
mod persist;
mod progress;
mod quorum;
mod read_index;
#[cfg(test)]
mod ready_tests;
mod replication;
#[cfg(test)]
mod safety_tests;
#[cfg(test)]
mod slow_disk_tests;
mod snapshot;
mod step;
#[cfg(test)]
mod testing;
#[cfg(test)]
mod transcripts;
#[cfg(test)]
mod transfer_tests;

pub use answers::{ProposeError, Status};
pub use config::{Config, ImageCheck, COMMITTED_BYTES_PER_READY_MAX};
pub use events::Event;
#[cfg(feature = "planted-bugs")]
pub use node::PlantedBug;
pub use node::Raft;
pub use ready::{AppendRef, Ready, Restored, SoftState, Write, WriteId};
