//! kv-course: raftkv's single-group mode, run as a replica under the course's key-value
//! store harness (`./3700kvstore <UDP port> <id> <peer ids...>`). The same node core
//! (kv-node) and Raft core (kv-raft) as kvserver, with one group and in-memory storage,
//! speaking the course's JSON-over-UDP protocol. See docs/COURSE_MODE.md.
//!
//! Layout:
//! - [`ids`]: course ids and the replica <-> node id mapping; the `leader` field.
//! - [`protocol`]: parsing inbound JSON, formatting hello, replies and peer datagrams.
//! - [`peer`]: the node core's group messages inside peer datagrams (split to fit).
//! - [`handoff`]: who answers a put across a leader change (side info, orphans).
//! - [`doubt`]: a new leader's answers to a previous leader's puts, held until it knows
//!   whether that leader sent them, or deferred until a reply would show them.
//! - [`report`]: what a replica says was answered, carried on every peer datagram.
//! - [`requests`]: the MID table (each MID answered once), sessions, outcome -> answer.
//! - [`loss`]: the drop rate, from sequence numbers on peer datagrams.
//! - [`stall`]: when a leader releases a stalled commit and whether it sends wide (the
//!   timing of kv-raft's lazy followers).
//! - [`vote_resend`]: when to ask kv-raft to resend unanswered vote requests.
//! - [`settings`]: this mode's timing and traffic settings.
//! - [`core_config`]: the node core's configuration built from them.
//! - [`runtime`]: the socket loop.

pub mod core_config;
pub mod doubt;
pub mod handoff;
pub mod ids;
pub mod loss;
pub mod peer;
pub mod protocol;
pub mod report;
pub mod requests;
pub mod runtime;
pub mod settings;
pub mod stall;
pub mod vote_resend;
