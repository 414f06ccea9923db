//! kvcli: the raftkv client, an interactive REPL and a scripted, load-generating tool.
fn main() {}
