//! The fuzz targets: each takes arbitrary bytes and panics only on a bug. Each also has
//! seed inputs (valid encodings, scripted sessions) that mutation starts from, because
//! random bytes rarely get past a decoder's first check.

mod client_requests;
mod course_protocol;
mod node;
mod peer_datagram;
mod raft_step;
mod snapshot_image;
mod wal_recovery;
mod wire_header;

/// One fuzz target.
#[derive(Clone, Copy, Debug)]
pub struct Target {
    /// Its name: the cargo-fuzz binary, and the folder of its regression inputs under
    /// `fuzz/regressions/`.
    pub name: &'static str,
    /// Runs one input; panics on a bug.
    pub run: fn(&[u8]),
    /// Valid inputs to start mutating from.
    pub seeds: fn() -> Vec<Vec<u8>>,
}

/// Every target, in the order the driver runs them.
pub const TARGETS: &[Target] = &[
    Target {
        name: "wire_header",
        run: wire_header::run,
        seeds: wire_header::seeds,
    },
    Target {
        name: "peer_datagram",
        run: peer_datagram::run,
        seeds: peer_datagram::seeds,
    },
    Target {
        name: "client_requests",
        run: client_requests::run,
        seeds: client_requests::seeds,
    },
    Target {
        name: "course_protocol",
        run: course_protocol::run,
        seeds: course_protocol::seeds,
    },
    Target {
        name: "wal_recovery",
        run: wal_recovery::run,
        seeds: wal_recovery::seeds,
    },
    Target {
        name: "snapshot_image",
        run: snapshot_image::run,
        seeds: snapshot_image::seeds,
    },
    Target {
        name: "raft_step",
        run: raft_step::run,
        seeds: raft_step::seeds,
    },
];

/// The target called `name`.
pub fn by_name(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|t| t.name == name)
}

/// The answer a live peer that agrees with everything gives to `m` (grants votes,
/// acknowledges every append and snapshot chunk), or `None` for messages that need no
/// answer. The stateful targets use it so the replica under test gets elected and
/// replicates, and arbitrary messages meet it in every role.
pub(crate) fn agreeable_reply(m: &kv_raft::Message) -> Option<kv_raft::Message> {
    use kv_raft::MessageBody;
    let body = match &m.body {
        MessageBody::PreVote { .. } => MessageBody::PreVoteResp { reject: false },
        MessageBody::Vote { .. } => MessageBody::VoteResp { reject: false },
        MessageBody::Append {
            prev_index,
            entries,
            ..
        } => MessageBody::AppendResp {
            reject: false,
            index: prev_index + entries.len() as u64,
            hint_index: 0,
            hint_term: 0,
        },
        MessageBody::Heartbeat { read_round, .. } => MessageBody::HeartbeatResp {
            read_round: *read_round,
        },
        MessageBody::InstallSnapshot {
            meta,
            offset,
            chunk,
            total_len,
        } => {
            let received = offset + chunk.len() as u64;
            MessageBody::InstallSnapshotResp {
                snapshot_index: meta.index,
                received,
                done: received == *total_len,
            }
        }
        _ => return None,
    };
    Some(kv_raft::Message {
        from: m.to,
        to: m.from,
        term: m.term,
        body,
    })
}
