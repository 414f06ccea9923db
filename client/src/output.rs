//! How results look: for people (aligned tables, colour only on a terminal) or for machines
//! (`--json`, one JSON object per line). Rendering is pure, so its tests need no cluster.

use crate::client::NodeAddr;
use crate::error::Error;
use crate::value::{display_value, display_word};
use bytes::Bytes;
use kv_shared::{NodeId, ShardId};
use serde_json::{json, Value};

mod status;

use status::status_json;
pub use status::{combine_status, render_status, ClusterStatus, NodeRow, ShardRow};

/// Writes `text` to stdout. A reader that went away (`kvcli help | head -3`) is not worth
/// the panic `print!` raises on a closed pipe: it has read what it wanted.
pub fn print_stdout(text: &str) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

/// `eprintln!` for kvcli's notes and progress lines: a closed stderr (`kvcli bench 2>&1 |
/// head -1`) drops the line instead of panicking in the middle of the command, where a
/// drain would stop driving its moves and a bench would lose its report.
#[macro_export]
macro_rules! note {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

/// Output settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Style {
    /// One JSON object per result instead of text.
    pub json: bool,
    /// ANSI colours (only when writing to a terminal).
    pub colour: bool,
}

/// What a command produced.
#[derive(Clone, Debug)]
pub enum CmdOutput {
    /// A get's value (`None`: not found).
    Value(Option<Bytes>),
    /// A put or delete was applied.
    Done,
    /// A cas matched and wrote.
    CasOk,
    /// A cas found another value.
    CasMismatch {
        /// The current value (`None`: absent).
        current: Option<Bytes>,
    },
    /// An increment's sum.
    Integer(i64),
    /// The cluster status.
    Status(ClusterStatus),
    /// Where a key lives.
    Shard {
        /// The key.
        key: Bytes,
        /// Its shard.
        shard: ShardId,
        /// The cached leader of that shard.
        leader: Option<NodeAddr>,
    },
    /// Text to show as is (help).
    Text(String),
    /// An elastic-cluster command's result (`node drain`, `rebalance`, ...).
    Balance(Box<crate::balance_output::BalanceOutput>),
    /// A shard's replica moved.
    Moved {
        /// The shard.
        shard: ShardId,
        /// The node whose replica went.
        from: NodeId,
        /// The node that holds one now.
        to: NodeId,
    },
    /// The node list.
    NodeList(crate::nodes::NodeList),
}

impl CmdOutput {
    /// The exit code a one-shot command ends with: 1 for "not found" and "cas mismatch"
    /// (so scripts can branch on them) and for a status with a shard that cannot serve
    /// (no leader or no quorum), 0 otherwise. Errors exit 2 (see [`EXIT_ERROR`]).
    pub fn exit_code(&self) -> i32 {
        match self {
            CmdOutput::Value(None) | CmdOutput::CasMismatch { .. } => EXIT_NOT_FOUND_OR_MISMATCH,
            CmdOutput::Status(s) if !s.serving() => EXIT_NOT_FOUND_OR_MISMATCH,
            CmdOutput::Balance(b) => b.exit_code(),
            _ => EXIT_OK,
        }
    }
}

/// Success.
pub const EXIT_OK: i32 = 0;
/// Key not found, cas mismatch, or a status showing a shard that cannot serve.
pub const EXIT_NOT_FOUND_OR_MISMATCH: i32 = 1;
/// Any error (bad usage, unreachable cluster, refused request).
pub const EXIT_ERROR: i32 = 2;

fn paint(style: Style, code: &str, text: &str) -> String {
    if style.colour {
        format!("\x1b[{code}m{text}\x1b[0m")
    } else {
        text.to_string()
    }
}

/// Renders a result (no trailing newline).
pub fn render(out: &CmdOutput, style: Style) -> String {
    if style.json {
        return render_json(out).to_string();
    }
    match out {
        CmdOutput::Value(Some(v)) => display_word(v),
        CmdOutput::Value(None) => paint(style, "2", "(not found)"),
        CmdOutput::Done | CmdOutput::CasOk => paint(style, "32", "OK"),
        CmdOutput::CasMismatch { current } => format!(
            "{}: the current value is {}",
            paint(style, "33", "cas mismatch"),
            current
                .as_deref()
                .map(display_word)
                .unwrap_or_else(|| "(absent)".into())
        ),
        CmdOutput::Integer(n) => n.to_string(),
        CmdOutput::Status(s) => render_status(s, style),
        CmdOutput::Shard { key, shard, leader } => format!(
            "key {} -> shard {}; leader {}",
            crate::value::display_word(key),
            shard.0,
            leader
                .map(|l| crate::error::node_name(l.id, l.addr))
                .unwrap_or_else(|| "unknown (not cached yet)".into())
        ),
        CmdOutput::Text(t) => t.trim_end().to_string(),
        CmdOutput::Balance(b) => b.render(style),
        CmdOutput::NodeList(list) => {
            crate::nodes::render_node_list(list, |cell| paint(style, "31", cell))
        }
        CmdOutput::Moved { shard, from, to } => format!(
            "{}: shard {}'s replica moved from node {} to node {}",
            paint(style, "32", "OK"),
            shard.0,
            from.0,
            to.0
        ),
    }
}

fn render_json(out: &CmdOutput) -> Value {
    let v = |b: &Option<Bytes>| b.as_deref().map(display_value);
    match out {
        CmdOutput::Value(Some(b)) => json!({"result": "ok", "value": display_value(b)}),
        CmdOutput::Value(None) => json!({"result": "not-found", "value": null}),
        CmdOutput::Done | CmdOutput::CasOk => json!({"result": "ok"}),
        CmdOutput::CasMismatch { current } => {
            json!({"result": "cas-mismatch", "current": v(current)})
        }
        CmdOutput::Integer(n) => json!({"result": "ok", "value": n}),
        CmdOutput::Status(s) => status_json(s),
        CmdOutput::Shard { key, shard, leader } => json!({
            "result": "ok",
            "key": display_value(key),
            "shard": shard.0,
            "leader": leader.and_then(|l| l.id).map(|id| id.0),
            "leader_addr": leader.map(|l| l.addr.to_string()),
        }),
        CmdOutput::Text(t) => json!({"result": "ok", "text": t}),
        CmdOutput::Balance(b) => b.json(),
        CmdOutput::NodeList(list) => crate::nodes::node_list_json(list),
        CmdOutput::Moved { shard, from, to } => json!({
            "result": "ok",
            "shard": shard.0,
            "from": from.0,
            "to": to.0,
        }),
    }
}

/// Renders an error as one line (no trailing newline).
pub fn render_error(message: &str, kind: &str, style: Style) -> String {
    if style.json {
        json!({"result": "error", "kind": kind, "error": message}).to_string()
    } else {
        format!("{} {message}", paint(style, "31", "error:"))
    }
}

/// Renders a client error.
pub fn render_client_error(e: &Error, style: Style) -> String {
    render_error(&e.to_string(), &e.kind(), style)
}

/// Lays out rows under headers, columns padded to their widest cell. `paint` may colour a
/// cell after padding, so colour codes never upset the alignment.
pub(crate) fn table(
    headers: &[&str],
    rows: &[Vec<String>],
    paint_cell: impl Fn(usize, &str, String) -> String,
) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, c) in row.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let last = cells.len() - 1;
        cells
            .into_iter()
            .enumerate()
            .map(|(i, c)| {
                if i == last {
                    c
                } else {
                    format!("{c:<w$}", w = widths[i])
                }
            })
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let mut out = line(headers.iter().map(|h| h.to_string()).collect());
    for row in rows {
        out.push('\n');
        let cells = row.iter().enumerate().map(|(i, c)| {
            let raw = c.clone();
            let padded = if i + 1 == row.len() {
                raw.clone()
            } else {
                format!("{raw:<w$}", w = widths[i])
            };
            paint_cell(i, &raw, padded)
        });
        out.push_str(cells.collect::<Vec<_>>().join("  ").trim_end());
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    /// Whatever a get prints can be typed back as the value of a put and means the same
    /// bytes: spaces and quotes are quoted, empty is "", binary is hex:/b64:.
    #[test]
    fn printed_values_can_be_typed_back() {
        use crate::command::{parse_line, Command};
        let values: [&[u8]; 8] = [
            b"",
            b"a b",
            b"say \"hi\"",
            b"it's",
            b"back\\slash",
            b" padded ",
            b"\x00\xff",
            b"hex:not really",
        ];
        for v in values {
            let v = Bytes::copy_from_slice(v);
            let printed = render(&CmdOutput::Value(Some(v.clone())), PLAIN);
            let typed = parse_line(&format!("put k {printed}")).unwrap();
            assert_eq!(
                typed,
                Some(Command::Put {
                    key: Bytes::from_static(b"k"),
                    value: v.clone()
                }),
                "{v:?} printed as {printed}"
            );
        }
    }

    use super::*;

    /// The two uncoloured styles, for the rendering tests of every output module.
    pub(crate) const PLAIN: Style = Style {
        json: false,
        colour: false,
    };
    pub(crate) const JSON: Style = Style {
        json: true,
        colour: false,
    };

    #[test]
    fn results_and_exit_codes() {
        let b = |s: &str| Bytes::copy_from_slice(s.as_bytes());
        assert_eq!(render(&CmdOutput::Value(Some(b("v 1"))), PLAIN), "\"v 1\"");
        assert_eq!(
            render(&CmdOutput::Value(Some(Bytes::from_static(b"\x00"))), PLAIN),
            "hex:00"
        );
        assert_eq!(render(&CmdOutput::Value(None), PLAIN), "(not found)");
        assert_eq!(render(&CmdOutput::Done, PLAIN), "OK");
        assert_eq!(
            render(&CmdOutput::CasMismatch { current: None }, PLAIN),
            "cas mismatch: the current value is (absent)"
        );
        assert_eq!(
            render(&CmdOutput::Value(None), JSON),
            r#"{"result":"not-found","value":null}"#
        );
        assert_eq!(
            render(
                &CmdOutput::CasMismatch {
                    current: Some(b("x"))
                },
                JSON
            ),
            r#"{"current":"x","result":"cas-mismatch"}"#
        );
        assert_eq!(render(&CmdOutput::Value(Some(b(""))), PLAIN), "\"\"");
        assert_eq!(render(&CmdOutput::Value(Some(b("a b"))), PLAIN), "\"a b\"");
        assert_eq!(CmdOutput::Value(None).exit_code(), 1);
        assert_eq!(CmdOutput::CasMismatch { current: None }.exit_code(), 1);
        assert_eq!(CmdOutput::Value(Some(b("v"))).exit_code(), 0);
        assert_eq!(CmdOutput::CasOk.exit_code(), 0);
        assert_eq!(
            render_error("shard 3 has no leader", "no-leader", PLAIN),
            "error: shard 3 has no leader"
        );
        assert_eq!(
            render(
                &CmdOutput::Done,
                Style {
                    json: false,
                    colour: true
                }
            ),
            "\x1b[32mOK\x1b[0m"
        );
        let leader = NodeAddr {
            id: Some(NodeId(2)),
            addr: "127.0.0.1:7102".parse().unwrap(),
        };
        let shard = CmdOutput::Shard {
            key: b("a b"),
            shard: ShardId(3),
            leader: Some(leader),
        };
        assert_eq!(
            render(&shard, PLAIN),
            "key \"a b\" -> shard 3; leader node 2 (127.0.0.1:7102)"
        );
        assert_eq!(
            render(&shard, JSON),
            r#"{"key":"a b","leader":2,"leader_addr":"127.0.0.1:7102","result":"ok","shard":3}"#
        );
    }
}
