//! 3700kvstore: raftkv single-group mode for the course harness (being written).
fn main() {}
