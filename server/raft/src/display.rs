//! How Raft messages and entries read in a transcript or a simulator trace: one formatter,
//! so kv-raft's transcript tests and kv-sim print the same words for the same message.
//!
//! `{}` prints everything, entry payloads included (as lossy UTF-8: the transcripts'
//! commands are text). `{:#}` prints an Append's entries as a count, for traces whose
//! entries carry large encoded commands.

use crate::types::{Entry, EntryKind, Message, MessageBody};
use std::fmt;

impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.term)?;
        match &self.kind {
            EntryKind::Noop => Ok(()),
            EntryKind::Command => write!(f, ":{}", String::from_utf8_lossy(&self.data)),
            EntryKind::ConfChange(c) => write!(f, ":{c:?}"),
        }
    }
}

/// Displays a run of entries as `[index/term[:payload] ...]`.
pub struct Entries<'a>(pub &'a [Entry]);

impl fmt::Display for Entries<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{e}")?;
        }
        f.write_str("]")
    }
}

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "n{}->n{} t{} ", self.from.0, self.to.0, self.term)?;
        fmt::Display::fmt(&self.body, f)
    }
}

impl fmt::Display for MessageBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MessageBody::PreVote {
                last_index,
                last_term,
            } => write!(f, "PreVote last={last_index}/{last_term}"),
            MessageBody::PreVoteResp { reject } => write!(f, "PreVoteResp{}", verdict(*reject)),
            MessageBody::Vote {
                last_index,
                last_term,
                transfer,
            } => write!(
                f,
                "Vote last={last_index}/{last_term}{}",
                if *transfer { " transfer" } else { "" }
            ),
            MessageBody::VoteResp { reject } => write!(f, "VoteResp{}", verdict(*reject)),
            MessageBody::Append {
                prev_index,
                prev_term,
                entries,
                commit,
            } => {
                write!(f, "Append prev={prev_index}/{prev_term} commit={commit} ")?;
                if f.alternate() {
                    write!(f, "entries={}", entries.len())
                } else {
                    write!(f, "{}", Entries(entries))
                }
            }
            MessageBody::AppendResp {
                reject: false,
                index,
                ..
            } => write!(f, "AppendResp ok index={index}"),
            MessageBody::AppendResp {
                reject: true,
                index,
                hint_index,
                hint_term,
            } => write!(
                f,
                "AppendResp REJECT index={index} hint={hint_index}/{hint_term}"
            ),
            MessageBody::Heartbeat { commit, read_round } => {
                write!(f, "Heartbeat commit={commit} round={read_round}")
            }
            MessageBody::HeartbeatResp { read_round } => {
                write!(f, "HeartbeatResp round={read_round}")
            }
            MessageBody::InstallSnapshot {
                meta,
                offset,
                total_len,
                chunk,
            } => write!(
                f,
                "InstallSnapshot snap@{}/{} off={offset} len={} total={total_len}",
                meta.index,
                meta.term,
                chunk.len()
            ),
            MessageBody::InstallSnapshotResp {
                snapshot_index,
                received,
                done,
            } => write!(
                f,
                "InstallSnapshotResp snap@{snapshot_index} received={received}{}",
                if *done { " done" } else { "" }
            ),
            MessageBody::TimeoutNow => f.write_str("TimeoutNow"),
            MessageBody::Committed { index, log_term } => {
                write!(f, "Committed {index}/{log_term}")
            }
            MessageBody::ReadIndex { request } => write!(f, "ReadIndex req={request}"),
            MessageBody::ReadIndexResp {
                request,
                reject: true,
                ..
            } => write!(f, "ReadIndexResp req={request} REJECT"),
            MessageBody::ReadIndexResp {
                request,
                index,
                reject: false,
            } => write!(f, "ReadIndexResp req={request} index={index}"),
        }
    }
}

fn verdict(reject: bool) -> &'static str {
    if reject {
        " REJECT"
    } else {
        " ok"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use kv_shared::NodeId;

    fn append() -> Message {
        Message {
            from: NodeId(1),
            to: NodeId(2),
            term: 3,
            body: MessageBody::Append {
                prev_index: 5,
                prev_term: 2,
                entries: vec![
                    Entry {
                        term: 3,
                        index: 6,
                        kind: EntryKind::Noop,
                        data: Bytes::new(),
                    },
                    Entry {
                        term: 3,
                        index: 7,
                        kind: EntryKind::Command,
                        data: Bytes::from_static(b"x=1"),
                    },
                ],
                commit: 4,
            },
        }
    }

    #[test]
    fn plain_form_prints_entries_and_alternate_form_counts_them() {
        let m = append();
        assert_eq!(
            m.to_string(),
            "n1->n2 t3 Append prev=5/2 commit=4 [6/3 7/3:x=1]"
        );
        assert_eq!(
            format!("{m:#}"),
            "n1->n2 t3 Append prev=5/2 commit=4 entries=2"
        );
    }
}
