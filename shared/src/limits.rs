//! Every limit of the system in one place (TigerBeetle style): a limit has a name, a unit
//! in its name, and one definition that server and client both read.

/// Largest key a client may write.
pub const KEY_BYTES_MAX: usize = 1024;
/// Largest value a client may write.
pub const VALUE_BYTES_MAX: usize = 32 * 1024;
/// Largest UDP datagram raftkv sends or accepts. Well under the 65,507-byte UDP limit so
/// that headers of any encapsulation still fit.
pub const DATAGRAM_BYTES_MAX: usize = 60_000;
/// Largest single snapshot chunk sent in one InstallSnapshot message.
pub const SNAPSHOT_CHUNK_BYTES_MAX: usize = 32 * 1024;
/// Most snapshot bytes sent and not yet acknowledged to one follower of one group. A
/// follower catching up takes every group's window at once into one socket buffer: at
/// 64 chunks (2 MiB) per group, 8 groups overflowed even kvserver's 8 MiB buffer (up
/// to 3,469 drops per 1,000,000-key catch-up; 0 with this window, docs/PERFORMANCE.md).
pub const SNAPSHOT_INFLIGHT_BYTES_MAX: usize = 256 * 1024;
/// Largest total payload of entries in one append message.
pub const APPEND_BYTES_MAX: usize = 48 * 1024;
/// Most bytes of client writes batched into one log entry (a single larger write still
/// gets an entry of its own). Keeps every entry, with its Append envelope, inside one
/// datagram: a key of KEY_BYTES_MAX plus a value of VALUE_BYTES_MAX stays below it too.
pub const ENTRY_BYTES_MAX: usize = 40 * 1024;
/// Most append messages in flight (unacknowledged) to one follower of one group.
pub const INFLIGHT_APPENDS_MAX: usize = 64;
/// Most client sessions a shard remembers; the least recently used is evicted past this.
pub const SESSIONS_MAX: usize = 10_000;
/// Most shards a cluster may have.
pub const SHARDS_MAX: u32 = 1024;
/// Most nodes a cluster may have.
pub const NODES_MAX: usize = 16;
/// Most client requests one node holds pending (proposed, not yet answered).
pub const PENDING_REQUESTS_MAX: usize = 100_000;

/// Most client requests one datagram may carry; a datagram with more is dropped whole
/// (and counted) before any of it is decoded, so one datagram cannot buy a large burst of
/// work or of replies. kvcli splits its batches at this count.
pub const CLIENT_REQUESTS_PER_DATAGRAM_MAX: usize = 256;
/// Most named client keys a node accepts.
pub const CLIENT_KEYS_MAX: usize = 1024;
/// Most client incarnations (kvcli processes) whose replay windows a node remembers; the
/// least recently heard is forgotten past this.
pub const CLIENT_REPLAY_WINDOWS_MAX: usize = 65_536;

// The limits above must agree with each other; checked at compile time.
const _: () = assert!(KEY_BYTES_MAX + VALUE_BYTES_MAX + 256 <= ENTRY_BYTES_MAX);
const _: () = assert!(ENTRY_BYTES_MAX + 1024 <= DATAGRAM_BYTES_MAX - 32);
