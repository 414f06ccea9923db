//! The raftkv server binaries: kvserver (tokio runtime over the node core) and 3700kvstore (course single-group mode).
fn main() {}
