//! kv-sim: the deterministic simulator. One u64 seed decides the cluster shape, the
//! faults (network loss, duplication, delay, partitions; crashes losing unsynced writes;
//! pauses; slow disks) and the client workload. The REAL `kv_node::NodeCore` and
//! `kv_storage::Storage<SimDisk>` of every node run in one thread on a simulated clock;
//! invariants are checked after every step and the client history is checked for
//! linearizability at the end. A failing seed replays exactly: `kvsim --seed N --trace`.
//!
//! Layout:
//! - [`options`]: what a run is asked to do and what it reports.
//! - [`sim`]: [`run`]: the event loop, network and disk models, fault injection, phases
//!   and final checks, one module each.
//! - [`invariants`]: election safety, log matching, leader completeness, state machine
//!   safety, monotonic commit/applied.
//! - [`workload`]: clients with sessions, redirects, retries and give-up.
//! - [`trace`]: the event trace (tail on failure, whole with `--trace`).
//!
//! See docs/SIMULATOR.md.

pub mod invariants;
pub mod options;
pub mod sim;
pub mod trace;
pub mod workload;

pub use options::{
    AdminCounts, Failure, FaultMix, FaultProfile, NodeHook, Report, SimOptions, Stats,
};
pub use sim::{run, TICK_NS};
