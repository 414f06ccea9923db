//! kv-server: the tokio runtime shell that moves bytes between the operating system and
//! the sans-I/O node core (kv-node). It owns no protocol logic: sockets, the clock, the
//! disk thread and signals live here, decisions live in the core.
//!
//! Layout (the pieces a second binary, such as the course-mode replica, can reuse are
//! marked *reusable*):
//! - [`server`]: the `kvserver` event loop, [`server::run`] takes its socket, so tests
//!   can bind port 0 and run a node in-process.
//! - [`dir_lock`]: the data directory's lock (one kvserver per directory).
//! - [`registration`]: the data directory's identity, the check a new directory passes
//!   before the node takes part, and the node's registration in the node registry.
//! - [`balancer`]: on the metadata group's leader, the balance planner run every interval
//!   and its moves and leader transfers asked for.
//! - [`auth`]: the node's keys, its incarnation (persisted so it only grows) and the
//!   replay windows of clients.
//! - [`disk`] (*reusable*): the dedicated disk thread with group commit (many
//!   `DiskWrite`s, one fsync) and the disk-full stall-and-retry.
//! - [`net`]: drop counters by reason (with rate-limited warnings) and the
//!   authenticated client <-> `ClientToken` map.
//! - [`signals`] (*reusable*): SIGTERM/SIGINT as a shutdown future.
//! - [`logging`] (*reusable*): tracing setup from `--log-level` or `RUST_LOG`.
//! - [`ratelimit`] (*reusable*): at most one warning line per interval per kind.
//! - [`core_events`]: the node core's events as info log lines and metrics.
//! - [`front_ends`]: binds and starts the TCP front ends next to the UDP loop.
//! - [`resp`]: the Redis-protocol gateway (RESP2/RESP3): a cluster client in-process per
//!   RESP user (the client keys), and a channel into this node's core for the reads it
//!   can answer.
//! - [`http`]: `/metrics` (OpenMetrics) and `/health`.
//! - [`metrics`]: the Prometheus registry and what fills it.
//!
//! docs/RUNTIME.md describes the event loop, group commit, signals and how to run nodes.

pub mod auth;
pub mod balancer;
pub mod core_events;
pub mod dir_lock;
pub mod disk;
pub mod front_ends;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod net;
pub mod ratelimit;
pub mod registration;
pub mod resp;
pub mod server;
pub mod signals;

pub use server::{run, run_with_store, ServerError, ServerOptions};
