//! kv-fuzz: one function per fuzz target, fed raw bytes, so that the same code runs under
//! libFuzzer (the cargo-fuzz crate in `fuzz/`, nightly) and under the seeded stable
//! driver (`tests/driver.rs`, part of `cargo test` and so of CI).
//!
//! A target panics only on a bug: a decoder may refuse any input, but it must not panic,
//! and what it accepts must survive a round trip; the stateful targets also check the
//! invariants of the component they drive. docs/FUZZING.md lists the targets and how to
//! run them.
//!
//! Layout: [`input`] (a byte cursor that turns fuzz bytes into structured choices),
//! [`targets`] (the targets and their seed inputs), [`mutate`] (the stable driver's
//! mutator).

pub mod input;
pub mod mutate;
pub mod targets;

pub use targets::{Target, TARGETS};
