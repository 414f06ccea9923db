//! kvharness: our own simulator of the course harness protocol, to test 3700kvstore.
fn main() {}
