//! The limits that more than one crate reads, and every limit on what the network can
//! make a node hold or send, in one place (TigerBeetle style): a limit has a name, a unit
//! in its name, and one definition that server and client both read. Any other limit
//! only one crate reads is a named constant beside its use, named the same way.

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
/// follower catching up takes every group's window at once into one socket buffer, so
/// the windows of all its groups together must fit in kvserver's receive buffer: at 64
/// chunks (2 MiB) per group, 8 groups would overflow its 8 MiB and drop chunks.
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
/// Most bytes of keys and values one node holds in pending client requests: the count
/// limit alone let 100,000 requests of up to 32 KiB each hold about 3 GB.
pub const PENDING_REQUEST_BYTES_MAX: usize = 256 * 1024 * 1024;
/// Largest snapshot image (one shard's state machine) a replica accepts from a leader:
/// chunks announcing a larger total are refused, so the reassembly buffer never exceeds
/// it. 64 KiB under kv-storage's 1 GiB snapshot file limit, which also holds the
/// snapshot's metadata (kv-node checks the two agree).
pub const SNAPSHOT_IMAGE_BYTES_MAX: u64 = 1024 * 1024 * 1024 - 64 * 1024;
/// Most snapshot bytes one node reassembles at once over all its groups (announced
/// totals of the transfers in progress): a new transfer beyond it is refused until
/// others finish.
pub const SNAPSHOT_RECEIVE_BYTES_MAX: u64 = 2 * SNAPSHOT_IMAGE_BYTES_MAX;
/// Highest Raft term a replica accepts. Far beyond any term honest elections reach (one
/// election per millisecond for 8,900 years), and low enough that `term + 1` never
/// overflows: a message claiming more is forged or corrupt and is dropped.
pub const RAFT_TERM_MAX: u64 = 1 << 48;
/// Highest log index (or snapshot byte offset) a replica accepts in a message, so that
/// index arithmetic on it never overflows.
pub const RAFT_INDEX_MAX: u64 = 1 << 62;
/// Largest timing value (ticks or milliseconds) a cluster file may set: far beyond any
/// useful timeout, and small enough that the arithmetic on it cannot overflow.
pub const TIMING_VALUE_MAX: u32 = 1_000_000;

/// Most client requests one datagram may carry; a datagram with more is dropped whole
/// (and counted) before any of it is decoded, so one datagram cannot buy a large burst of
/// work or of replies. kvcli splits its batches at this count.
pub const CLIENT_REQUESTS_PER_DATAGRAM_MAX: usize = 256;
/// Most named client keys a node accepts.
pub const CLIENT_KEYS_MAX: usize = 1024;
/// Most client incarnations (kvcli processes) whose replay windows and tickets a node
/// remembers; the least recently heard is forgotten past this (its next request gets a
/// new ticket, so nothing recorded before is executed).
pub const CLIENT_REPLAY_WINDOWS_MAX: usize = 65_536;
/// Most IPv6 client addresses a node remembers at once; the oldest is forgotten past
/// this (a reply to a forgotten address is dropped and the client retries). Only requests
/// whose tag verified create entries, so unauthenticated traffic cannot flush real
/// clients out.
pub const CLIENT_V6_ADDRS_MAX: usize = 4096;
/// Most clients a node tells their ticket (a hello: an empty reply to a request that
/// echoed no ticket or another one) per flush; past it the client's retry is refused
/// again and answered later. Bounds the replies one burst of replays can draw.
pub const CLIENT_HELLOS_PER_FLUSH_MAX: usize = 256;
/// Most session ids a node keeps bound (client name and declared id to the id it uses,
/// `kv_shared::auth::session_id`), so that a request of a known session costs a table
/// lookup, not a hash; the table is emptied when full. Only requests whose tag verified
/// add entries.
pub const SESSION_BINDINGS_MAX: usize = 65_536;

// The limits above must agree with each other; checked at compile time.
const _: () = assert!(KEY_BYTES_MAX + VALUE_BYTES_MAX + 256 <= ENTRY_BYTES_MAX);
const _: () = assert!(ENTRY_BYTES_MAX + 1024 <= DATAGRAM_BYTES_MAX - 32);
const _: () = assert!(SNAPSHOT_RECEIVE_BYTES_MAX >= SNAPSHOT_IMAGE_BYTES_MAX);
