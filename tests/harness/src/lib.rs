//! kv-harness: our own re-implementation of the course's key-value-store test harness.
//!
//! It launches N replica processes (`./3700kvstore <port> <id> <peers...>`),
//! routes every datagram between them through one UDP socket with the course's
//! drops, partitions and kills, plays 8 clients, and scores the run with the
//! course's six correctness checks and four tiered metrics. The facts it
//! follows are in the project's COURSE_HARNESS notes; docs/COURSE_HARNESS_SIM.md
//! describes this simulator.
//!
//! Layout, inside out:
//! - [`id`]: 4-hex node ids.
//! - [`scenario`]: the JSON scenario format, validated on load.
//! - [`network`]: addresses, liveness, partitions, drops, total_msgs.
//! - [`workload`]: the clients, MIDs and per-reply checks.
//! - [`sim`]: the sans-I/O core tying them together.
//! - [`score`]: checks and metric tiers; [`report`]: text, summary, JSON.
//! - [`procs`] and [`run`]: processes, socket and clock.

pub mod id;
pub mod network;
pub mod procs;
pub mod report;
pub mod run;
pub mod scenario;
pub mod score;
pub mod sim;
pub mod workload;

pub use report::{summary_table, Report};
pub use run::{run_blocking, run_scenario, RunOptions};
pub use scenario::Scenario;
pub use score::Tier;
pub use sim::LateDatagrams;
