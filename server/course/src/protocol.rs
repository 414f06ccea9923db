//! The course's JSON-over-UDP protocol: parsing what arrives, formatting what leaves.
//!
//! Every datagram we send is one JSON object with `src`, `dst`, `leader` and `type`
//! (the harness rejects anything else), never empty and never over
//! [`DATAGRAM_BYTES_MAX`]. Inbound bytes become a typed [`Inbound`] here, once; anything
//! malformed is [`Inbound::Ignored`] or a [`Inbound::Malformed`] request that still has a
//! client and an MID to answer, never a panic.

use crate::handoff::SideInfo;
use crate::ids::CourseId;
use crate::report::Report;
use kv_shared::limits::DATAGRAM_BYTES_MAX;
use serde::{Deserialize, Serialize};

/// The `type` of our replica-to-replica datagrams (any type is free between replicas).
pub const PEER_TYPE: &str = "raft";

/// A parsed inbound datagram.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Inbound {
    /// A client's get.
    Get {
        /// The client.
        client: CourseId,
        /// Its message id, answered exactly once.
        mid: String,
        /// The key.
        key: String,
    },
    /// A client's put.
    Put {
        /// The client.
        client: CourseId,
        /// Its message id, answered exactly once.
        mid: String,
        /// The key.
        key: String,
        /// The value.
        value: String,
    },
    /// A client request we cannot serve (missing key, unknown type) but whose MID can be
    /// answered: it gets a `fail`.
    Malformed {
        /// The client.
        client: CourseId,
        /// Its message id.
        mid: String,
    },
    /// Traffic from another replica: Raft messages, a commit notice, or both.
    Peer {
        /// The sending replica (not yet checked against the roster).
        src: CourseId,
        /// The encoded batch, decoded by [`crate::peer`]; a bare commit notice has none.
        payload: Option<String>,
        /// Who the puts in the carried entries belong to (see [`crate::handoff`]).
        side: Vec<SideInfo>,
        /// What the sender says was answered (see [`crate::report`]); nothing if not
        /// carried.
        report: Report,
        /// The sender's number for this datagram to us (see [`crate::loss`]); 0 if not
        /// carried.
        seq: u64,
        /// The sender, as leader, may hold a stalled commit back for the next put
        /// (`StallTimer::defers_first_release`).
        holds_back: bool,
    },
    /// Not for us, not parseable, or nothing to answer.
    Ignored,
}

#[derive(Deserialize)]
struct RawInbound {
    src: Option<String>,
    dst: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    #[serde(rename = "MID")]
    mid: Option<String>,
    key: Option<String>,
    value: Option<String>,
    #[serde(rename = "m")]
    payload: Option<String>,
    #[serde(rename = "i")]
    side: Option<Vec<(u64, String, String)>>,
    #[serde(rename = "c")]
    answered: Option<u64>,
    #[serde(rename = "o")]
    owed: Option<Vec<u64>>,
    #[serde(rename = "s")]
    seq: Option<u64>,
    #[serde(rename = "w")]
    holds_back: Option<bool>,
}

/// Parses one datagram addressed to `me`. Never panics, whatever the bytes.
pub fn parse_inbound(bytes: &[u8], me: CourseId) -> Inbound {
    let Ok(raw) = serde_json::from_slice::<RawInbound>(bytes) else {
        return Inbound::Ignored;
    };
    let (Some(src), Some(kind)) = (
        raw.src.as_deref().and_then(CourseId::parse),
        raw.kind.as_deref(),
    ) else {
        return Inbound::Ignored;
    };
    let dst = raw.dst.as_deref().and_then(CourseId::parse);
    if dst != Some(me) && dst != Some(CourseId::BROADCAST) {
        return Inbound::Ignored;
    }
    if kind == PEER_TYPE {
        let side = raw
            .side
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(session, client, mid)| {
                Some(SideInfo {
                    session,
                    client: CourseId::parse(&client)?,
                    mid,
                })
            })
            .collect();
        return match (raw.payload, raw.answered) {
            (None, None) => Inbound::Ignored,
            (payload, answered) => Inbound::Peer {
                src,
                payload,
                side,
                report: Report::new(answered.unwrap_or(0), raw.owed.unwrap_or_default()),
                seq: raw.seq.unwrap_or(0),
                holds_back: raw.holds_back.unwrap_or(false),
            },
        };
    }
    // Everything else is treated as a client request; without an MID there is nothing
    // we may answer.
    let Some(mid) = raw.mid else {
        return Inbound::Ignored;
    };
    if src == CourseId::BROADCAST {
        return Inbound::Ignored;
    }
    match (kind, raw.key, raw.value) {
        ("get", Some(key), _) => Inbound::Get {
            client: src,
            mid,
            key,
        },
        ("put", Some(key), Some(value)) => Inbound::Put {
            client: src,
            mid,
            key,
            value,
        },
        _ => Inbound::Malformed { client: src, mid },
    }
}

/// How one client request is finally answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// `ok`; a get carries its value (`""` for a key never written).
    Ok {
        /// The value read, for gets.
        value: Option<String>,
    },
    /// `redirect`: the client retries (new MID) at the `leader` we name.
    Redirect,
    /// `fail`: counted against us; only for requests we cannot understand.
    Fail,
}

#[derive(Serialize)]
struct Envelope<'a> {
    src: CourseId,
    dst: CourseId,
    leader: CourseId,
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(rename = "MID", skip_serializing_if = "Option::is_none")]
    mid: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<&'a str>,
    #[serde(rename = "m", skip_serializing_if = "Option::is_none")]
    payload: Option<&'a str>,
    #[serde(rename = "i", skip_serializing_if = "Vec::is_empty")]
    side: Vec<(u64, CourseId, &'a str)>,
    #[serde(rename = "c", skip_serializing_if = "is_zero")]
    answered: u64,
    #[serde(rename = "o", skip_serializing_if = "is_empty")]
    owed: &'a [u64],
    #[serde(rename = "s", skip_serializing_if = "is_zero")]
    seq: u64,
    #[serde(rename = "w", skip_serializing_if = "is_false")]
    holds_back: bool,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn is_empty(v: &&[u64]) -> bool {
    v.is_empty()
}

fn is_false(b: &bool) -> bool {
    !b
}

impl Envelope<'_> {
    fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("an envelope of strings always serializes")
    }
}

/// The hello every replica must send first: it is how the harness learns our port.
pub fn hello(me: CourseId) -> Vec<u8> {
    Envelope {
        src: me,
        dst: CourseId::BROADCAST,
        leader: CourseId::BROADCAST,
        kind: "hello",
        mid: None,
        value: None,
        payload: None,
        side: Vec::new(),
        answered: 0,
        owed: &[],
        seq: 0,
        holds_back: false,
    }
    .encode()
}

/// A reply to a client. `leader` is our current belief (a member id or `FFFF`).
/// Returns None only if the value is too large to fit one datagram (then the caller
/// answers `fail` instead, which always fits).
pub fn reply(
    me: CourseId,
    client: CourseId,
    leader: CourseId,
    mid: &str,
    answer: &Answer,
) -> Option<Vec<u8>> {
    let (kind, value) = match answer {
        Answer::Ok { value } => ("ok", value.as_deref()),
        Answer::Redirect => ("redirect", None),
        Answer::Fail => ("fail", None),
    };
    let bytes = Envelope {
        src: me,
        dst: client,
        leader,
        kind,
        mid: Some(mid),
        value,
        payload: None,
        side: Vec::new(),
        answered: 0,
        owed: &[],
        seq: 0,
        holds_back: false,
    }
    .encode();
    (bytes.len() <= DATAGRAM_BYTES_MAX).then_some(bytes)
}

/// Bytes of a peer datagram around its payload and side info (src, dst, leader, type,
/// field names, the report: its index and up to [`crate::report::OWED_LISTED_MAX`] owed
/// ones).
pub const PEER_ENVELOPE_BYTES: usize = 160 + crate::report::OWED_LISTED_MAX * 21;
/// Most bytes of side info in one datagram: each triple is a u64, a 4-char id and an MID
/// (32 hex digits in the course; longer ones are not attached).
pub const SIDE_INFO_BYTES_MAX: usize =
    crate::handoff::SIDE_INFO_PER_DATAGRAM_MAX * (SIDE_INFO_MID_CHARS_MAX + 40);
/// Longest MID attached as side info.
pub const SIDE_INFO_MID_CHARS_MAX: usize = 64;

/// What every peer datagram says besides its payload and side info.
#[derive(Clone, Copy, Debug)]
pub struct Stamp<'a> {
    /// What the sender says was answered (see [`crate::report`]).
    pub report: &'a Report,
    /// The datagram's number to this destination (see [`crate::loss`]).
    pub seq: u64,
    /// The sender, as leader, may hold a stalled commit back for the next put.
    pub holds_back: bool,
}

/// A peer datagram carrying an already encoded batch (see [`crate::peer`]) and the side
/// info of the puts in its entries.
pub fn peer(
    me: CourseId,
    dst: CourseId,
    leader: CourseId,
    payload: &str,
    side: &[SideInfo],
    stamp: Stamp,
) -> Vec<u8> {
    peer_envelope(me, dst, leader, Some(payload), side, stamp)
}

/// A commit notice: a peer datagram with no Raft messages, only the sender's stamp (see
/// [`crate::handoff::CommitNotice`]). Nobody answers it.
pub fn commit_notice(me: CourseId, dst: CourseId, leader: CourseId, stamp: Stamp) -> Vec<u8> {
    peer_envelope(me, dst, leader, None, &[], stamp)
}

fn peer_envelope(
    me: CourseId,
    dst: CourseId,
    leader: CourseId,
    payload: Option<&str>,
    side: &[SideInfo],
    stamp: Stamp,
) -> Vec<u8> {
    Envelope {
        src: me,
        dst,
        leader,
        kind: PEER_TYPE,
        mid: None,
        value: None,
        payload,
        side: side
            .iter()
            .filter(|i| i.mid.len() <= SIDE_INFO_MID_CHARS_MAX)
            .take(crate::handoff::SIDE_INFO_PER_DATAGRAM_MAX)
            .map(|i| (i.session, i.client, i.mid.as_str()))
            .collect(),
        answered: stamp.report.through,
        owed: &stamp.report.owed,
        seq: stamp.seq,
        holds_back: stamp.holds_back,
    }
    .encode()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    const ME: CourseId = CourseId(2);

    fn stamp(report: &Report, seq: u64) -> Stamp<'_> {
        Stamp {
            report,
            seq,
            holds_back: false,
        }
    }

    fn fields(bytes: &[u8]) -> Value {
        let v: Value = serde_json::from_slice(bytes).unwrap();
        for f in ["src", "dst", "leader", "type"] {
            assert!(v.get(f).is_some(), "missing {f} in {v}");
        }
        for f in ["src", "dst", "leader"] {
            let s = v[f].as_str().unwrap();
            assert_eq!(
                CourseId::parse(s).map(|c| c.to_string()).as_deref(),
                Some(s)
            );
        }
        v
    }

    #[test]
    fn hello_is_exactly_the_expected_object() {
        let v = fields(&hello(ME));
        assert_eq!(
            v,
            serde_json::json!({"src": "0002", "dst": "FFFF", "leader": "FFFF", "type": "hello"})
        );
    }

    #[test]
    fn parses_client_requests() {
        let get = br#"{"src": "001A", "dst": "0002", "leader": "FFFF", "type": "get", "MID": "m1", "key": "k"}"#;
        assert_eq!(
            parse_inbound(get, ME),
            Inbound::Get {
                client: CourseId(0x1A),
                mid: "m1".into(),
                key: "k".into()
            }
        );
        let put = br#"{"src": "001A", "dst": "0002", "leader": "0001", "type": "put", "MID": "m2", "key": "k", "value": "v"}"#;
        assert_eq!(
            parse_inbound(put, ME),
            Inbound::Put {
                client: CourseId(0x1A),
                mid: "m2".into(),
                key: "k".into(),
                value: "v".into()
            }
        );
        let no_value = br#"{"src": "001A", "dst": "0002", "leader": "0001", "type": "put", "MID": "m3", "key": "k"}"#;
        assert_eq!(
            parse_inbound(no_value, ME),
            Inbound::Malformed {
                client: CourseId(0x1A),
                mid: "m3".into()
            }
        );
    }

    #[test]
    fn garbage_is_ignored_not_fatal() {
        let cases: [&[u8]; 9] = [
            b"",
            b"\xff\xfe",
            b"null",
            b"[1,2]",
            br#"{"src": 5, "dst": "0002", "type": "get", "MID": "x", "key": "k"}"#,
            br#"{"src": "001A", "dst": "0003", "type": "get", "MID": "x", "key": "k"}"#,
            br#"{"src": "001A", "dst": "0002", "type": "get", "key": "k"}"#,
            br#"{"src": "0001", "dst": "0002", "leader": "FFFF", "type": "raft"}"#,
            br#"{"src": "FFFF", "dst": "0002", "type": "get", "MID": "x", "key": "k"}"#,
        ];
        for c in cases {
            assert_eq!(
                parse_inbound(c, ME),
                Inbound::Ignored,
                "{:?}",
                String::from_utf8_lossy(c)
            );
        }
    }

    #[test]
    fn replies_carry_every_required_field() {
        let ok = reply(
            ME,
            CourseId(0x15),
            ME,
            "m",
            &Answer::Ok {
                value: Some("".into()),
            },
        )
        .unwrap();
        let v = fields(&ok);
        assert_eq!(v["type"], "ok");
        assert_eq!(v["value"], "");
        assert_eq!(v["MID"], "m");
        assert_eq!(v["dst"], "0015");
        let put_ok =
            fields(&reply(ME, CourseId(0x15), ME, "m", &Answer::Ok { value: None }).unwrap());
        assert!(put_ok.get("value").is_none());
        let r = fields(
            &reply(
                ME,
                CourseId(0x15),
                CourseId::BROADCAST,
                "m",
                &Answer::Redirect,
            )
            .unwrap(),
        );
        assert_eq!(r["type"], "redirect");
        assert_eq!(r["leader"], "FFFF");
        let f = fields(&reply(ME, CourseId(0x15), CourseId(4), "m", &Answer::Fail).unwrap());
        assert_eq!(f["type"], "fail");
        assert_eq!(f["leader"], "0004");
    }

    #[test]
    fn an_oversized_reply_is_refused() {
        let huge = "a".repeat(DATAGRAM_BYTES_MAX);
        assert!(reply(
            ME,
            CourseId(0x15),
            ME,
            "m",
            &Answer::Ok { value: Some(huge) }
        )
        .is_none());
    }

    #[test]
    fn peer_envelope_estimate_holds() {
        let bytes = peer(
            CourseId(0xFFFE),
            CourseId(0xFFFE),
            CourseId::BROADCAST,
            "",
            &[],
            Stamp {
                report: &Report::new(
                    u64::MAX,
                    (0..crate::report::OWED_LISTED_MAX as u64).map(|i| u64::MAX - 1 - i),
                ),
                seq: u64::MAX,
                holds_back: true,
            },
        );
        assert!(bytes.len() <= PEER_ENVELOPE_BYTES, "{}", bytes.len());
        let v = fields(&bytes);
        assert_eq!(v["type"], PEER_TYPE);
        assert_eq!(
            parse_inbound(
                &peer(
                    CourseId(1),
                    ME,
                    ME,
                    "abc",
                    &[],
                    stamp(&Report::default(), 9)
                ),
                ME
            ),
            Inbound::Peer {
                src: CourseId(1),
                payload: Some("abc".into()),
                side: vec![],
                report: Report::default(),
                seq: 9,
                holds_back: false,
            }
        );
        let side: Vec<SideInfo> = (0..200)
            .map(|i| SideInfo {
                session: u64::MAX - i,
                client: CourseId(0x15),
                mid: "f".repeat(SIDE_INFO_MID_CHARS_MAX),
            })
            .collect();
        let full = peer(
            CourseId(1),
            ME,
            ME,
            "abc",
            &side,
            stamp(&Report::new(7, []), 8),
        );
        assert!(full.len() <= PEER_ENVELOPE_BYTES + 3 + SIDE_INFO_BYTES_MAX);
        let Inbound::Peer { side: back, .. } = parse_inbound(&full, ME) else {
            panic!("not a peer datagram");
        };
        assert_eq!(back, side[..crate::handoff::SIDE_INFO_PER_DATAGRAM_MAX]);
    }

    #[test]
    fn a_commit_notice_carries_only_the_report() {
        let bytes = commit_notice(CourseId(1), ME, CourseId(1), stamp(&Report::new(42, []), 3));
        let v = fields(&bytes);
        assert_eq!(v["c"], 42);
        assert_eq!(v["s"], 3);
        assert!(v.get("m").is_none());
        assert!(v.get("o").is_none(), "nothing owed, nothing listed");
        assert_eq!(
            parse_inbound(&bytes, ME),
            Inbound::Peer {
                src: CourseId(1),
                payload: None,
                side: vec![],
                report: Report::new(42, []),
                seq: 3,
                holds_back: false,
            }
        );
        let owing = commit_notice(
            CourseId(1),
            ME,
            CourseId(1),
            Stamp {
                holds_back: true,
                ..stamp(&Report::new(42, [7, 9]), 4)
            },
        );
        assert_eq!(fields(&owing)["o"], serde_json::json!([7, 9]));
        assert_eq!(fields(&owing)["w"], true);
        let Inbound::Peer {
            report, holds_back, ..
        } = parse_inbound(&owing, ME)
        else {
            panic!("not a peer datagram");
        };
        assert_eq!((report, holds_back), (Report::new(42, [7, 9]), true));
        // A hostile list is trimmed to what a report may say (ascending, at or below its
        // index, at most OWED_LISTED_MAX).
        let hostile =
            br#"{"src":"0001","dst":"0002","leader":"FFFF","type":"raft","c":10,"o":[50,3,3,1]}"#;
        let Inbound::Peer { report, .. } = parse_inbound(hostile, ME) else {
            panic!("not a peer datagram");
        };
        assert_eq!(report, Report::new(10, [1, 3]));
        // A peer datagram with neither messages nor a notice is nothing.
        let empty = br#"{"src":"0001","dst":"0002","leader":"FFFF","type":"raft"}"#;
        assert_eq!(parse_inbound(empty, ME), Inbound::Ignored);
    }
}
