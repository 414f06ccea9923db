//! The recorded history of a load run: one [`Record`] per operation, written as JSON lines
//! by `kvcli bench --history FILE` so that any checker can verify the same run, and turned
//! into the shared checker's operations by `--check`. The format is documented in
//! docs/KVCLI.md; the field names here are that format.

use crate::client::Response;
use crate::error::Error;
use crate::value::{display_value, parse_value};
use bytes::Bytes;
use kv_shared::linearizability::{KvOp, KvResult, Operation};
use serde::{Deserialize, Serialize};
use std::io::Write;

/// The kind of operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// A linearizable read.
    Get,
    /// A stale (local, any replica) read: not expected to be linearizable, never checked.
    StaleGet,
    /// A write.
    Put,
    /// A delete.
    Delete,
    /// A compare-and-set.
    Cas,
}

/// How an operation ended, as the client saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Completed: a value read, a write applied, a cas that matched.
    Ok,
    /// A get found no value.
    NotFound,
    /// A cas found another value (in `value`) and wrote nothing.
    CasMismatch,
    /// Definitely had no effect (refused before it could be applied).
    Failed,
    /// A write that may or may not have been applied (timed out, lost quorum).
    Unknown,
}

/// One operation of a history, one JSON line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The logical client (session) id.
    pub client: u64,
    /// What was asked.
    pub kind: Kind,
    /// The key (plain, `hex:` or `b64:`, as kvcli prints values).
    pub key: String,
    /// put: the value written; cas: the new value; get: the value read (null if not found
    /// or failed); delete: null.
    pub value: Option<String>,
    /// cas only: the value expected, null for "only if absent".
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub expected: Option<Option<String>>,
    /// cas-mismatch only: the value found, null if the key was absent.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub current: Option<Option<String>>,
    /// When the request was first sent, ns since the run started (one clock for all).
    pub invoke_ns: u64,
    /// When the answer arrived (or the client gave up), ns since the run started.
    pub complete_ns: u64,
    /// How it ended.
    pub outcome: Outcome,
    /// For failed and unknown outcomes: the error, one line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A field that may be missing (outer `None`) or null (inner `None`).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

/// What a bench client asked, before the answer is known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Asked {
    /// Read (stale or not).
    Get {
        /// Stale read.
        stale: bool,
    },
    /// Write this value.
    Put(Bytes),
    /// Delete.
    Delete,
    /// Compare-and-set.
    Cas {
        /// Expected value (`None`: absent).
        expected: Option<Bytes>,
        /// New value.
        new: Bytes,
    },
}

impl Record {
    /// Builds the record of one finished operation.
    pub fn new(
        client: u64,
        key: &[u8],
        asked: &Asked,
        result: &Result<Response, Error>,
        invoke_ns: u64,
        complete_ns: u64,
    ) -> Record {
        let show = |b: &Bytes| display_value(b);
        let (kind, mut value, expected) = match asked {
            Asked::Get { stale } => (if *stale { Kind::StaleGet } else { Kind::Get }, None, None),
            Asked::Put(v) => (Kind::Put, Some(show(v)), None),
            Asked::Delete => (Kind::Delete, None, None),
            Asked::Cas { expected, new } => (
                Kind::Cas,
                Some(show(new)),
                Some(expected.as_ref().map(show)),
            ),
        };
        let mut found = None;
        let (outcome, error) = match result {
            Ok(Response::Value(Some(v))) => {
                value = Some(show(v));
                (Outcome::Ok, None)
            }
            Ok(Response::Value(None)) => (Outcome::NotFound, None),
            Ok(Response::Done | Response::CasOk) => (Outcome::Ok, None),
            Ok(Response::Integer(n)) => {
                value = Some(n.to_string());
                (Outcome::Ok, None)
            }
            Ok(Response::CasMismatch { current }) => {
                found = Some(current.as_ref().map(show));
                (Outcome::CasMismatch, None)
            }
            Err(e) if e.outcome_unknown() && !matches!(asked, Asked::Get { .. }) => {
                (Outcome::Unknown, Some(e.to_string()))
            }
            Err(e) => (Outcome::Failed, Some(e.to_string())),
        };
        Record {
            client,
            kind,
            key: show(&Bytes::copy_from_slice(key)),
            value,
            expected,
            current: found,
            invoke_ns,
            complete_ns,
            outcome,
            error,
        }
    }

    /// The checker's view of this record, or `None` if it constrains nothing: failed
    /// operations (no effect), stale reads (not meant to be linearizable).
    pub fn to_operation(&self) -> Result<Option<Operation>, String> {
        let bytes = |s: &str| parse_value(s).map_err(|e| e.to_string());
        let opt = |s: &Option<String>| s.as_deref().map(bytes).transpose();
        if self.outcome == Outcome::Failed || self.kind == Kind::StaleGet {
            return Ok(None);
        }
        let op = match self.kind {
            Kind::Get | Kind::StaleGet => KvOp::Get,
            Kind::Put => KvOp::Put(opt(&self.value)?.ok_or("put without a value")?),
            Kind::Delete => KvOp::Delete,
            Kind::Cas => KvOp::Cas {
                expected: opt(self.expected.as_ref().ok_or("cas without expected")?)?,
                new: opt(&self.value)?.ok_or("cas without a new value")?,
            },
        };
        let result = match (self.kind, self.outcome) {
            (_, Outcome::Unknown) => KvResult::Unknown,
            (Kind::Get, Outcome::Ok) => {
                KvResult::Value(Some(opt(&self.value)?.ok_or("get ok without a value")?))
            }
            (Kind::Get, Outcome::NotFound) => KvResult::Value(None),
            (Kind::Put | Kind::Delete, Outcome::Ok) => KvResult::Done,
            (Kind::Cas, Outcome::Ok) => KvResult::CasOk,
            (Kind::Cas, Outcome::CasMismatch) => KvResult::CasMismatch {
                current: opt(self
                    .current
                    .as_ref()
                    .ok_or("cas-mismatch without current")?)?,
            },
            (k, o) => return Err(format!("outcome {o:?} does not fit a {k:?}")),
        };
        Ok(Some(Operation {
            client: self.client,
            key: bytes(&self.key)?,
            op,
            result,
            invoke_ns: self.invoke_ns,
            complete_ns: self.complete_ns,
        }))
    }
}

/// Writes records as JSON lines.
pub fn write_jsonl(records: &[Record], out: &mut impl Write) -> std::io::Result<()> {
    for r in records {
        serde_json::to_writer(&mut *out, r)?;
        out.write_all(b"\n")?;
    }
    Ok(())
}

/// Reads JSON lines back; the error names the line.
pub fn read_jsonl(text: &str) -> Result<Vec<Record>, String> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| serde_json::from_str(l).map_err(|e| format!("history line {}: {e}", i + 1)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kv_shared::proto::ClientError;
    use kv_shared::ShardId;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn json_lines_have_the_documented_fields() {
        let put = Record::new(7, b"k", &Asked::Put(b("v1")), &Ok(Response::Done), 10, 20);
        let line = serde_json::to_string(&put).unwrap();
        assert_eq!(
            line,
            r#"{"client":7,"kind":"put","key":"k","value":"v1","invoke_ns":10,"complete_ns":20,"outcome":"ok"}"#
        );
        let cas = Record::new(
            8,
            b"k",
            &Asked::Cas {
                expected: None,
                new: b("\x00"),
            },
            &Ok(Response::CasMismatch {
                current: Some(b("v1")),
            }),
            30,
            40,
        );
        let line = serde_json::to_string(&cas).unwrap();
        assert_eq!(
            line,
            r#"{"client":8,"kind":"cas","key":"k","value":"hex:00","expected":null,"current":"v1","invoke_ns":30,"complete_ns":40,"outcome":"cas-mismatch"}"#
        );
        let miss = Record::new(
            9,
            b"k",
            &Asked::Get { stale: false },
            &Ok(Response::Value(None)),
            1,
            2,
        );
        assert!(serde_json::to_string(&miss)
            .unwrap()
            .contains(r#""value":null,"#));
        assert_eq!(miss.outcome, Outcome::NotFound);
    }

    #[test]
    fn unknown_only_for_writes_that_may_have_applied() {
        let err = Error::GaveUp {
            shard: ShardId(1),
            waited_ms: 5,
            last: "x".into(),
            outcome_unknown: true,
        };
        let w = Record::new(1, b"k", &Asked::Put(b("v")), &Err(err.clone()), 1, 9);
        assert_eq!(w.outcome, Outcome::Unknown);
        assert!(w.error.as_deref().unwrap().contains("shard 1"));
        let r = Record::new(1, b"k", &Asked::Get { stale: false }, &Err(err), 1, 9);
        assert_eq!(r.outcome, Outcome::Failed);
        let refused = Error::Limit(ClientError::KeyTooLarge {
            len: 2000,
            max: 1024,
        });
        let w = Record::new(1, b"k", &Asked::Put(b("v")), &Err(refused), 1, 9);
        assert_eq!(w.outcome, Outcome::Failed);
        assert_eq!(w.to_operation().unwrap(), None);
    }

    #[test]
    fn round_trip_through_text_and_into_the_checker() {
        let recs = vec![
            Record::new(
                1,
                b"\x00k",
                &Asked::Put(b("a b")),
                &Ok(Response::Done),
                0,
                10,
            ),
            Record::new(
                2,
                b"\x00k",
                &Asked::Get { stale: false },
                &Ok(Response::Value(Some(b("a b")))),
                11,
                12,
            ),
            Record::new(
                3,
                b"\x00k",
                &Asked::Get { stale: true },
                &Ok(Response::Value(None)),
                13,
                14,
            ),
            Record::new(
                4,
                b"\x00k",
                &Asked::Cas {
                    expected: Some(b("a b")),
                    new: b("c"),
                },
                &Ok(Response::CasOk),
                15,
                16,
            ),
            Record::new(5, b"\x00k", &Asked::Delete, &Ok(Response::Done), 17, 18),
            Record::new(
                6,
                b"\x00k",
                &Asked::Cas {
                    expected: Some(b("c")),
                    new: b("d"),
                },
                &Ok(Response::CasMismatch { current: None }),
                19,
                20,
            ),
        ];
        let mut out = Vec::new();
        write_jsonl(&recs, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.lines().count(), 6);
        let back = read_jsonl(&text).unwrap();
        assert_eq!(back, recs);
        let ops: Vec<Operation> = back
            .iter()
            .filter_map(|r| r.to_operation().unwrap())
            .collect();
        assert_eq!(ops.len(), 5, "the stale read is left out");
        assert_eq!(ops[4].result, KvResult::CasMismatch { current: None });
        assert_eq!(ops[0].key, b("\x00k"));
        assert_eq!(ops[1].result, KvResult::Value(Some(b("a b"))));
        assert!(kv_shared::linearizability::check(&ops, Default::default()).is_linearizable());
        assert!(read_jsonl("{not json}\n").unwrap_err().contains("line 1"));
    }
}
