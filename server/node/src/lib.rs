//! The sans-I/O node core: hosts many Raft groups, the KV state machine, client sessions, batching per destination.
