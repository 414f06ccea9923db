//! How results look: for people (aligned tables, colour only on a terminal) or for machines
//! (`--json`, one JSON object per line). Rendering is pure, so its tests need no cluster.

use crate::client::{NodeAddr, NodeReport};
use crate::error::Error;
use crate::value::display_value;
use bytes::Bytes;
use kv_shared::proto::{NodeStatus, Role, ShardStatus};
use kv_shared::{NodeId, ShardId};
use serde_json::{json, Value};

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
}

impl CmdOutput {
    /// The exit code a one-shot command ends with: 1 for "not found" and "cas mismatch"
    /// (so scripts can branch on them), 0 otherwise. Errors exit 2 (see [`EXIT_ERROR`]).
    pub fn exit_code(&self) -> i32 {
        match self {
            CmdOutput::Value(None) | CmdOutput::CasMismatch { .. } => EXIT_NOT_FOUND_OR_MISMATCH,
            _ => EXIT_OK,
        }
    }
}

/// Success.
pub const EXIT_OK: i32 = 0;
/// Key not found, or cas mismatch.
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
        CmdOutput::Value(Some(v)) => display_value(v),
        CmdOutput::Value(None) => paint(style, "2", "(not found)"),
        CmdOutput::Done | CmdOutput::CasOk => paint(style, "32", "OK"),
        CmdOutput::CasMismatch { current } => format!(
            "{}: the current value is {}",
            paint(style, "33", "cas mismatch"),
            current
                .as_deref()
                .map(display_value)
                .unwrap_or_else(|| "(absent)".into())
        ),
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
        CmdOutput::Status(s) => status_json(s),
        CmdOutput::Shard { key, shard, leader } => json!({
            "result": "ok",
            "key": display_value(key),
            "shard": shard.0,
            "leader": leader.and_then(|l| l.id).map(|id| id.0),
            "leader_addr": leader.map(|l| l.addr.to_string()),
        }),
        CmdOutput::Text(t) => json!({"result": "ok", "text": t}),
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
    render_error(&e.to_string(), e.kind(), style)
}

/// One shard's row of the status table, combined from every node's report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardRow {
    /// The shard.
    pub shard: ShardId,
    /// The node that reports leading it with the highest term.
    pub leader: Option<NodeId>,
    /// Highest term reported.
    pub term: u64,
    /// The leader's commit index (else the highest reported).
    pub commit: u64,
    /// The leader's applied index (else the highest reported).
    pub applied: u64,
    /// Keys in the leader's state machine.
    pub keys: u64,
    /// Per replica: entries behind the leader's commit index (from the leader's match
    /// index), `None` where unknown.
    pub lag: Vec<(NodeId, Option<u64>)>,
}

/// One node's row: reachable or not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeRow {
    /// The node.
    pub node: NodeAddr,
    /// Round trip of the status request, if it answered.
    pub rtt_us: Option<u64>,
    /// Shards it leads.
    pub leads: usize,
    /// Peers and ms since last heard; or why it did not answer.
    pub detail: String,
}

/// The combined cluster status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterStatus {
    /// One row per shard.
    pub shards: Vec<ShardRow>,
    /// One row per node.
    pub nodes: Vec<NodeRow>,
}

/// Combines the nodes' status replies into one table.
pub fn combine_status(reports: &[NodeReport], shard_count: u32) -> ClusterStatus {
    let answered: Vec<&NodeStatus> = reports
        .iter()
        .filter_map(|r| r.result.as_ref().ok().map(|(s, _)| s))
        .collect();
    let all_ids: Vec<NodeId> = reports
        .iter()
        .filter_map(|r| {
            r.node
                .id
                .or_else(|| r.result.as_ref().ok().map(|(s, _)| s.node))
        })
        .collect();
    let mut shards = Vec::new();
    for shard in (0..shard_count).map(ShardId) {
        let views: Vec<(NodeId, &ShardStatus)> = answered
            .iter()
            .flat_map(|n| {
                n.shards
                    .iter()
                    .filter(|s| s.shard == shard)
                    .map(move |s| (n.node, s))
            })
            .collect();
        let leader_view = views
            .iter()
            .filter(|(_, s)| s.role == Role::Leader)
            .max_by_key(|(_, s)| s.term);
        let term = views.iter().map(|(_, s)| s.term).max().unwrap_or(0);
        let row = match leader_view {
            Some((leader, lv)) => {
                let lag = all_ids
                    .iter()
                    .map(|id| {
                        let behind = if id == leader {
                            Some(0)
                        } else {
                            lv.replicas
                                .iter()
                                .find(|(r, _)| r == id)
                                .map(|(_, m)| lv.commit.saturating_sub(*m))
                        };
                        (*id, behind)
                    })
                    .collect();
                ShardRow {
                    shard,
                    leader: Some(*leader),
                    term,
                    commit: lv.commit,
                    applied: lv.applied,
                    keys: lv.keys,
                    lag,
                }
            }
            None => ShardRow {
                shard,
                leader: None,
                term,
                commit: views.iter().map(|(_, s)| s.commit).max().unwrap_or(0),
                applied: views.iter().map(|(_, s)| s.applied).max().unwrap_or(0),
                keys: views.iter().map(|(_, s)| s.keys).max().unwrap_or(0),
                lag: all_ids.iter().map(|id| (*id, None)).collect(),
            },
        };
        shards.push(row);
    }
    let nodes = reports
        .iter()
        .map(|r| match &r.result {
            Ok((s, rtt)) => NodeRow {
                node: NodeAddr {
                    id: Some(s.node),
                    addr: r.node.addr,
                },
                rtt_us: Some(rtt.as_micros() as u64),
                leads: s.shards.iter().filter(|x| x.role == Role::Leader).count(),
                detail: s
                    .peers
                    .iter()
                    .map(|(p, ms)| match ms {
                        Some(ms) => format!("n{} {ms} ms", p.0),
                        None => format!("n{} never", p.0),
                    })
                    .collect::<Vec<_>>()
                    .join(", "),
            },
            Err(why) => NodeRow {
                node: r.node,
                rtt_us: None,
                leads: 0,
                detail: why.clone(),
            },
        })
        .collect();
    ClusterStatus { shards, nodes }
}

/// Lays out rows under headers, columns padded to their widest cell. `paint` may colour a
/// cell after padding, so colour codes never upset the alignment.
fn table(
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

/// The status tables, shards then nodes.
pub fn render_status(s: &ClusterStatus, style: Style) -> String {
    let shard_rows: Vec<Vec<String>> = s
        .shards
        .iter()
        .map(|r| {
            vec![
                format!("s{}", r.shard.0),
                r.leader
                    .map(|l| l.to_string())
                    .unwrap_or_else(|| "none".into()),
                r.term.to_string(),
                format!("{}/{}", r.commit, r.applied),
                r.keys.to_string(),
                r.lag
                    .iter()
                    .map(|(id, lag)| {
                        format!(
                            "{id}:{}",
                            lag.map(|l| l.to_string()).unwrap_or_else(|| "?".into())
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(" "),
            ]
        })
        .collect();
    let shards = table(
        &[
            "SHARD",
            "LEADER",
            "TERM",
            "COMMIT/APPLIED",
            "KEYS",
            "LAG (entries behind commit)",
        ],
        &shard_rows,
        |col, raw, padded| {
            if col == 1 && raw == "none" {
                paint(style, "31", &padded)
            } else {
                padded
            }
        },
    );
    let node_rows: Vec<Vec<String>> = s
        .nodes
        .iter()
        .map(|n| {
            vec![
                n.node
                    .id
                    .map(|i| i.to_string())
                    .unwrap_or_else(|| "?".into()),
                n.node.addr.to_string(),
                if n.rtt_us.is_some() {
                    "up".into()
                } else {
                    "unreachable".into()
                },
                n.rtt_us
                    .map(|us| format!("{:.1} ms", us as f64 / 1000.0))
                    .unwrap_or_else(|| "-".into()),
                if n.rtt_us.is_some() {
                    n.leads.to_string()
                } else {
                    "-".into()
                },
                n.detail.clone(),
            ]
        })
        .collect();
    let nodes = table(
        &[
            "NODE",
            "ADDRESS",
            "STATE",
            "RTT",
            "LEADS",
            "PEERS (last heard) / PROBLEM",
        ],
        &node_rows,
        |col, raw, padded| match (col, raw) {
            (2, "up") => paint(style, "32", &padded),
            (2, _) => paint(style, "31", &padded),
            _ => padded,
        },
    );
    format!("{shards}\n\n{nodes}")
}

fn status_json(s: &ClusterStatus) -> Value {
    json!({
        "result": "ok",
        "shards": s.shards.iter().map(|r| json!({
            "shard": r.shard.0,
            "leader": r.leader.map(|l| l.0),
            "term": r.term,
            "commit": r.commit,
            "applied": r.applied,
            "keys": r.keys,
            "lag": r.lag.iter().map(|(id, l)| json!({"node": id.0, "behind": l})).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "nodes": s.nodes.iter().map(|n| json!({
            "node": n.node.id.map(|i| i.0),
            "addr": n.node.addr.to_string(),
            "reachable": n.rtt_us.is_some(),
            "rtt_us": n.rtt_us,
            "leads": n.leads,
            "detail": n.detail,
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const PLAIN: Style = Style {
        json: false,
        colour: false,
    };
    const JSON: Style = Style {
        json: true,
        colour: false,
    };

    fn shard_status(
        shard: u32,
        role: Role,
        term: u64,
        leader: u64,
        commit: u64,
        replicas: Vec<(NodeId, u64)>,
    ) -> ShardStatus {
        ShardStatus {
            shard: ShardId(shard),
            role,
            term,
            leader: Some(NodeId(leader)),
            commit,
            applied: commit,
            log_entries: commit,
            snapshot_index: 0,
            keys: 5,
            epoch: 0,
            replicas,
        }
    }

    fn reports() -> Vec<NodeReport> {
        let n1 = NodeStatus {
            node: NodeId(1),
            shard_count: 2,
            shards: vec![
                shard_status(
                    0,
                    Role::Leader,
                    3,
                    1,
                    100,
                    vec![(NodeId(1), 100), (NodeId(2), 100), (NodeId(3), 90)],
                ),
                shard_status(1, Role::Follower, 2, 2, 40, vec![]),
            ],
            peers: vec![(NodeId(2), Some(12)), (NodeId(3), None)],
            nodes: vec![],
            routes: vec![],
        };
        vec![
            NodeReport {
                node: NodeAddr {
                    id: Some(NodeId(1)),
                    addr: "127.0.0.1:7101".parse().unwrap(),
                },
                result: Ok((n1, Duration::from_micros(400))),
            },
            NodeReport {
                node: NodeAddr {
                    id: Some(NodeId(3)),
                    addr: "127.0.0.1:7103".parse().unwrap(),
                },
                result: Err("no answer in 1000 ms".into()),
            },
        ]
    }

    #[test]
    fn status_combines_views_and_aligns() {
        let s = combine_status(&reports(), 2);
        assert_eq!(s.shards[0].leader, Some(NodeId(1)));
        assert_eq!(
            s.shards[0].lag,
            vec![(NodeId(1), Some(0)), (NodeId(3), Some(10))]
        );
        assert_eq!(s.shards[1].leader, None, "no node claims to lead s1");
        let text = render_status(&s, PLAIN);
        let expected = "\
SHARD  LEADER  TERM  COMMIT/APPLIED  KEYS  LAG (entries behind commit)
s0     n1      3     100/100         5     n1:0 n3:10
s1     none    2     40/40           5     n1:? n3:?

NODE  ADDRESS         STATE        RTT     LEADS  PEERS (last heard) / PROBLEM
n1    127.0.0.1:7101  up           0.4 ms  1      n2 12 ms, n3 never
n3    127.0.0.1:7103  unreachable  -       -      no answer in 1000 ms";
        assert_eq!(text, expected);
        let coloured = render_status(
            &s,
            Style {
                json: false,
                colour: true,
            },
        );
        assert!(coloured.contains("\x1b[31mnone  \x1b[0m"), "{coloured}");
        let j = render(&CmdOutput::Status(s), JSON);
        let v: Value = serde_json::from_str(&j).unwrap();
        assert_eq!(v["nodes"][1]["reachable"], false);
        assert_eq!(v["shards"][0]["lag"][1]["behind"], 10);
    }

    #[test]
    fn results_and_exit_codes() {
        let b = |s: &str| Bytes::copy_from_slice(s.as_bytes());
        assert_eq!(render(&CmdOutput::Value(Some(b("v 1"))), PLAIN), "v 1");
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
