//! One reply type for every command, encoded as RESP2 or RESP3 (chosen per connection by
//! HELLO) with the `redis-protocol` codec, so commands never write protocol bytes.

use bytes::{Bytes, BytesMut};
use redis_protocol::bytes_utils::Str;
use redis_protocol::{resp2, resp3};

/// What a command answers, before the connection's protocol version is applied.
#[derive(Clone, Debug, PartialEq)]
pub enum Reply {
    /// `+OK`-style status line.
    Simple(&'static str),
    /// An error line; the text starts with its code (`ERR`, `WRONGTYPE`, `NOPROTO`).
    Error(String),
    /// An integer.
    Integer(i64),
    /// A bulk string, or the null reply for `None`.
    Bulk(Option<Bytes>),
    /// An array.
    Array(Vec<Reply>),
    /// A map (RESP3); a flat array of key, value, key, value in RESP2.
    Map(Vec<(Reply, Reply)>),
}

impl Reply {
    /// `+OK`.
    pub const OK: Reply = Reply::Simple("OK");

    /// An error reply with Redis's generic `ERR` code.
    pub fn err(text: impl std::fmt::Display) -> Reply {
        Reply::Error(format!("ERR {text}"))
    }

    /// A bulk string reply.
    pub fn bulk(b: impl Into<Bytes>) -> Reply {
        Reply::Bulk(Some(b.into()))
    }

    /// A bulk string from text.
    pub fn text(s: impl Into<String>) -> Reply {
        Reply::Bulk(Some(Bytes::from(s.into())))
    }

    /// The null reply.
    pub fn null() -> Reply {
        Reply::Bulk(None)
    }

    /// Appends the encoding for protocol `version` (2 or 3) to `out`. Takes the reply:
    /// a bulk string moves into its frame, where a copy of a `Bytes` that owns its own
    /// buffer (a value the core copied out) would cost an allocation per reply.
    pub fn encode(self, version: u8, out: &mut BytesMut) {
        let encoded = if version >= 3 {
            resp3::encode::complete::extend_encode(out, &self.into_resp3(), false)
        } else {
            resp2::encode::extend_encode(out, &self.into_resp2(), false)
        };
        // Frames built here are always well formed; only a malformed frame fails to encode.
        encoded.expect("a reply frame encodes");
    }

    fn into_resp2(self) -> resp2::types::BytesFrame {
        use resp2::types::BytesFrame as F;
        match self {
            Reply::Simple(s) => F::SimpleString(Bytes::from_static(s.as_bytes())),
            Reply::Error(e) => F::Error(Str::from(one_line(&e))),
            Reply::Integer(n) => F::Integer(n),
            Reply::Bulk(Some(b)) => F::BulkString(b),
            Reply::Bulk(None) => F::Null,
            Reply::Array(items) => F::Array(items.into_iter().map(Reply::into_resp2).collect()),
            Reply::Map(pairs) => F::Array(
                pairs
                    .into_iter()
                    .flat_map(|(k, v)| [k.into_resp2(), v.into_resp2()])
                    .collect(),
            ),
        }
    }

    fn into_resp3(self) -> resp3::types::BytesFrame {
        use resp3::types::BytesFrame as F;
        match self {
            Reply::Simple(s) => F::SimpleString {
                data: Bytes::from_static(s.as_bytes()),
                attributes: None,
            },
            Reply::Error(e) => F::SimpleError {
                data: Str::from(one_line(&e)),
                attributes: None,
            },
            Reply::Integer(n) => F::Number {
                data: n,
                attributes: None,
            },
            Reply::Bulk(Some(b)) => F::BlobString {
                data: b,
                attributes: None,
            },
            Reply::Bulk(None) => F::Null,
            Reply::Array(items) => F::Array {
                data: items.into_iter().map(Reply::into_resp3).collect(),
                attributes: None,
            },
            Reply::Map(pairs) => F::Map {
                data: pairs
                    .into_iter()
                    .map(|(k, v)| (k.into_resp3(), v.into_resp3()))
                    .collect(),
                attributes: None,
            },
        }
    }
}

/// Error and status lines cannot hold line breaks; the protocol would split them.
fn one_line(s: &str) -> String {
    s.replace(['\r', '\n'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(r: &Reply, v: u8) -> String {
        let mut out = BytesMut::new();
        r.clone().encode(v, &mut out);
        String::from_utf8(out.to_vec()).unwrap()
    }

    #[test]
    fn resp2_and_resp3_differ_where_redis_does() {
        assert_eq!(enc(&Reply::OK, 2), "+OK\r\n");
        assert_eq!(enc(&Reply::null(), 2), "$-1\r\n");
        assert_eq!(enc(&Reply::null(), 3), "_\r\n");
        assert_eq!(enc(&Reply::Integer(-3), 3), ":-3\r\n");
        assert_eq!(enc(&Reply::err("x\r\ny"), 2), "-ERR x  y\r\n");
        let map = Reply::Map(vec![(Reply::text("a"), Reply::Integer(1))]);
        assert_eq!(enc(&map, 2), "*2\r\n$1\r\na\r\n:1\r\n");
        assert_eq!(enc(&map, 3), "%1\r\n$1\r\na\r\n:1\r\n");
    }
}
