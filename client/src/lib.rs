//! kvcli as a library: the async raftkv client, and the pieces of the `kvcli` binary
//! (command language, output, bench, REPL) so that they can be tested without a terminal.
//!
//! Layout:
//! - [`client`]: [`Client`] (one UDP socket, leader cache, batching).
//! - [`session`]: [`Session`] (one logical client: routing, redirects, retries under one
//!   sequence number).
//! - `arena`: one buffer for many small byte strings (the bench's keys and values).
//! - `drive`: the bench's clients polled by one task rather than a tokio task each.
//! - `inbox`: a session's replies and expiry notices, handed over under one lock.
//! - `outbox`: the requests ready to send, encoded by their sessions into one buffer.
//! - `receive`: the receive task, which opens the nodes' datagrams and hands each reply
//!   to its session.
//! - `sender`: the send task, which packs the requests ready for one node into as few
//!   datagrams as fit.
//! - `tickets`: the tickets nodes issued to this process, without which they execute
//!   nothing.
//! - [`error`]: [`Error`], one line that names the shard, node or limit.
//! - [`value`]: plain / `hex:` / `b64:` forms of keys and values.
//! - [`command`]: the command language (quoting, usage, help).
//! - [`output`]: human and JSON rendering of results and of the status table.
//! - [`nodes`]: `node list`, the node registry with what each node holds.
//! - [`run`]: executing commands: one-shot, script and REPL.
//! - [`balance_cmd`]: `node drain`, `node remove --dead`, `rebalance`: the balance
//!   planner driven through replica moves and leader transfers ([`balance_output`]
//!   renders their results).
//! - [`history`]: the recorded history of a bench run, as JSON lines.
//! - [`bench`]: the closed-loop load generator and its report.
//! - [`local`]: `--local`, a 3-node cluster of kvserver processes for the quick start.

mod arena;
pub mod balance_cmd;
pub mod balance_output;
pub mod bench;
pub mod client;
pub mod command;
mod drive;
pub mod error;
pub mod history;
mod inbox;
pub mod local;
pub mod nodes;
mod outbox;
pub mod output;
mod receive;
pub mod run;
mod sender;
pub mod session;
mod tickets;
pub mod value;
mod watchdog;

pub use client::{CachedShard, Client, ClientOptions, NodeAddr, NodeReport, Response, Session};
pub use error::Error;
pub use session::Reserved;
