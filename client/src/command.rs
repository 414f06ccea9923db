//! The command language shared by the REPL, scripts and one-shot use: a line becomes words
//! (shell-like quoting), words become a validated [`Command`]. Parsing happens once, here,
//! so that everything after it works with bytes that already passed the checks.

use crate::value::{parse_value, ValueError};
use bytes::Bytes;

/// One thing a user asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Read a key; `stale` reads any replica's local state (not linearizable).
    Get {
        /// The key.
        key: Bytes,
        /// Opt out of linearizability.
        stale: bool,
    },
    /// Write a key.
    Put {
        /// The key.
        key: Bytes,
        /// The value.
        value: Bytes,
    },
    /// Remove a key.
    Del {
        /// The key.
        key: Bytes,
    },
    /// Compare-and-set; `expected: None` means "only if the key is absent".
    Cas {
        /// The key.
        key: Bytes,
        /// Required current value, or `None` for absent.
        expected: Option<Bytes>,
        /// Value to write on a match.
        new: Bytes,
    },
    /// Add `delta` to the integer a key holds (absent: 0), atomically on the server.
    Incr {
        /// The key.
        key: Bytes,
        /// What to add (negative subtracts).
        delta: i64,
    },
    /// The cluster table.
    Status,
    /// Which shard a key maps to and its cached leader.
    Shard {
        /// The key.
        key: Bytes,
    },
    /// Make a node the preferred leader of a shard (admin).
    ShardLeader {
        /// The shard.
        shard: u32,
        /// The node.
        node: u64,
    },
    /// Move a shard's replica from one node to another (admin), waiting until it is done.
    ShardMove {
        /// The shard.
        shard: u32,
        /// The node whose replica goes.
        from: u64,
        /// The node that receives one.
        to: u64,
        /// How long to wait for the move, in seconds.
        wait_s: u64,
    },
    /// `node drain`, `node remove --dead`, `rebalance` and `rebalance status`.
    Balance(crate::balance_cmd::BalanceCommand),
    /// The cluster's nodes: registry state, identity, replicas and leaders held, reachable.
    NodeList,
    /// Usage, for all commands or one.
    Help {
        /// A command name, if the user asked about one.
        topic: Option<String>,
    },
    /// Leave the REPL or script.
    Quit,
}

impl Command {
    /// What the REPL prints when Ctrl-C stops it waiting for this command. A write, or an
    /// admin change, left kvcli before the user gave up on it: a node may still apply it.
    pub fn cancelled_message(&self) -> &'static str {
        use crate::balance_cmd::BalanceCommand as B;
        match self {
            Command::Put { .. }
            | Command::Del { .. }
            | Command::Cas { .. }
            | Command::Incr { .. }
            | Command::ShardLeader { .. }
            | Command::ShardMove { .. }
            | Command::Balance(
                B::Drain { .. }
                | B::RemoveDead { .. }
                | B::Pause(_)
                | B::Rebalance { dry_run: false, .. },
            ) => "cancelled: kvcli stopped waiting, but the request was sent and may still take effect (its outcome is unknown)",
            _ => "cancelled",
        }
    }
}

/// How long `shard move` waits for the move by default, in seconds: a learner that has
/// not caught up in about ten minutes makes the leader undo the move anyway.
pub const MOVE_WAIT_DEFAULT_S: u64 = 600;

/// Why a line is not a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// A quote was opened and never closed.
    #[error("unterminated {0} quote")]
    UnterminatedQuote(char),
    /// A backslash ended the line.
    #[error("a backslash ends the line; nothing to escape")]
    DanglingEscape,
    /// The first word is not a command.
    #[error("unknown command {0:?}; type help for the list")]
    UnknownCommand(String),
    /// Wrong number of words after the command.
    #[error("usage: {0}")]
    Usage(String),
    /// A key or value with a bad `hex:`/`b64:` form.
    #[error(transparent)]
    Value(#[from] ValueError),
}

/// Name, argument synopsis and one line of explanation for each command, in help order.
/// The REPL's completion and hints read this table too.
pub const COMMANDS: &[(&str, &str, &str)] = &[
    (
        "get",
        "KEY [--stale]",
        "read a key (--stale: any replica, may be out of date)",
    ),
    ("put", "KEY VALUE", "write a key"),
    ("del", "KEY", "delete a key"),
    (
        "cas",
        "KEY EXPECTED NEW | KEY --absent NEW",
        "write NEW only if KEY holds EXPECTED (or is absent)",
    ),
    (
        "incr",
        "KEY [DELTA]",
        "add DELTA (default 1, may be negative) to the integer KEY holds; prints the sum",
    ),
    (
        "status",
        "",
        "per shard: leader, term, epoch, replicas and their own applied index; per node: reachability; then what is wrong (exit 1 if a shard cannot serve)",
    ),
    (
        "shard",
        "KEY | leader SHARD NODE | move SHARD --from NODE --to NODE [--wait SECS]",
        "which shard KEY belongs to, and its cached leader; or make NODE lead SHARD (it takes over once caught up, and keeps it); or move SHARD's replica from one node to another (add, catch up by snapshot, promote, remove), waiting up to SECS (default 600)",
    ),
    (
        "node",
        crate::balance_cmd::NODE_USAGE,
        "list shows the cluster's nodes as the node registry lists them (address, state, data-dir identity, replicas and leaders held, reachable or not); admin: drain marks NODE draining, waits (showing progress) until its replicas moved away, then marks it removed; remove --dead marks a node that will not come back removed and waits until its replicas are rebuilt on live nodes. The balancer on the metadata leader makes the moves; with it disabled or paused, kvcli makes them itself, at most N at once (default 4). Waits up to SECS (default 3600)",
    ),
    (
        "rebalance",
        crate::balance_cmd::REBALANCE_USAGE,
        "admin: wait until every node holds within one of the mean replicas and leaderships (the balancer moves them; disabled or paused, kvcli does; --dry-run prints the rounds); status shows the balancer (running or paused, moves in flight, last round), each node's share and the next round (exit 1 if not balanced); pause stops the balancer from starting moves and transfers, resume lets it go on",
    ),
    ("help", "[COMMAND]", "this list, or one command's usage"),
    ("quit", "", "leave (Ctrl-D works too)"),
];

/// The command table's name of `name` (lower case), which may be an alias (`set`,
/// `delete`, `rm`, `exit`, `?`); `None`: no such command.
fn canonical_name(name: &str) -> Option<&'static str> {
    let name = match name {
        "set" => "put",
        "delete" | "rm" => "del",
        "exit" => "quit",
        "?" => "help",
        other => other,
    };
    COMMANDS.iter().map(|(n, _, _)| *n).find(|n| *n == name)
}

/// The usage line of a command, e.g. `cas KEY EXPECTED NEW | KEY --absent NEW`.
pub fn usage_of(name: &str) -> Option<String> {
    COMMANDS
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(n, args, _)| {
            if args.is_empty() {
                n.to_string()
            } else {
                format!("{n} {args}")
            }
        })
}

/// Splits a line into words. Double quotes allow spaces and the escapes `\"`, `\\`, `\n`,
/// `\t`; single quotes take everything literally; outside quotes a backslash escapes the
/// next character.
pub fn split_words(line: &str) -> Result<Vec<String>, ParseError> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        None => return Err(ParseError::UnterminatedQuote('"')),
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            None => return Err(ParseError::UnterminatedQuote('"')),
                            Some('n') => word.push('\n'),
                            Some('t') => word.push('\t'),
                            Some(other) => word.push(other),
                        },
                        Some(other) => word.push(other),
                    }
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        None => return Err(ParseError::UnterminatedQuote('\'')),
                        Some('\'') => break,
                        Some(other) => word.push(other),
                    }
                }
            }
            '\\' => {
                in_word = true;
                word.push(chars.next().ok_or(ParseError::DanglingEscape)?);
            }
            other => {
                in_word = true;
                word.push(other);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

/// Parses one line. `Ok(None)` for a blank line or a `#` comment.
pub fn parse_line(line: &str) -> Result<Option<Command>, ParseError> {
    if line.trim_start().starts_with('#') {
        return Ok(None);
    }
    let words = split_words(line)?;
    if words.is_empty() {
        return Ok(None);
    }
    parse_words(&words).map(Some)
}

/// Parses words (as the shell hands them to a one-shot `kvcli get K`).
pub fn parse_words<S: AsRef<str>>(words: &[S]) -> Result<Command, ParseError> {
    let name = words[0].as_ref();
    let args: Vec<&str> = words[1..].iter().map(AsRef::as_ref).collect();
    let usage = |n: &str| ParseError::Usage(usage_of(n).expect("listed command"));
    let v = |w: &str| parse_value(w).map_err(ParseError::from);
    let lower = name.to_ascii_lowercase();
    if let Some(parsed) = crate::balance_cmd::parse(&lower, &args) {
        return parsed.map(Command::Balance);
    }
    let cmd = match (lower.as_str(), args.as_slice()) {
        ("get", [k]) => Command::Get {
            key: v(k)?,
            stale: false,
        },
        ("get", [k, "--stale"]) | ("get", ["--stale", k]) => Command::Get {
            key: v(k)?,
            stale: true,
        },
        ("get", _) => return Err(usage("get")),
        ("put" | "set", [k, val]) => Command::Put {
            key: v(k)?,
            value: v(val)?,
        },
        ("put" | "set", _) => return Err(usage("put")),
        ("del" | "delete" | "rm", [k]) => Command::Del { key: v(k)? },
        ("del" | "delete" | "rm", _) => return Err(usage("del")),
        ("cas", [k, "--absent", new]) => Command::Cas {
            key: v(k)?,
            expected: None,
            new: v(new)?,
        },
        ("cas", [k, expected, new]) => Command::Cas {
            key: v(k)?,
            expected: Some(v(expected)?),
            new: v(new)?,
        },
        ("cas", _) => return Err(usage("cas")),
        ("incr", [k]) => Command::Incr {
            key: v(k)?,
            delta: 1,
        },
        ("incr", [k, d]) => Command::Incr {
            key: v(k)?,
            delta: d.parse().map_err(|_| {
                ParseError::Usage(format!(
                    "{}: DELTA {d:?} is not a whole number in {}..={}",
                    usage_of("incr").expect("listed"),
                    i64::MIN,
                    i64::MAX
                ))
            })?,
        },
        ("incr", _) => return Err(usage("incr")),
        ("status", []) => Command::Status,
        ("status", _) => return Err(usage("status")),
        ("shard", [k]) => Command::Shard { key: v(k)? },
        ("shard", ["leader", s, n]) => match (s.parse(), n.parse()) {
            (Ok(shard), Ok(node)) => Command::ShardLeader { shard, node },
            _ => return Err(usage("shard")),
        },
        ("shard", ["move", s, "--from", from, "--to", to, rest @ ..]) => {
            let wait_s = match rest {
                [] => MOVE_WAIT_DEFAULT_S,
                ["--wait", secs] => secs.parse().map_err(|_| usage("shard"))?,
                _ => return Err(usage("shard")),
            };
            match (s.parse(), from.parse(), to.parse()) {
                (Ok(shard), Ok(from), Ok(to)) => Command::ShardMove {
                    shard,
                    from,
                    to,
                    wait_s,
                },
                _ => return Err(usage("shard")),
            }
        }
        ("shard", _) => return Err(usage("shard")),
        ("node", ["list"]) => Command::NodeList,
        ("node", _) => return Err(usage("node")),
        ("help" | "?", []) => Command::Help { topic: None },
        ("help" | "?", [t]) => match canonical_name(&t.to_ascii_lowercase()) {
            Some(topic) => Command::Help {
                topic: Some(topic.to_string()),
            },
            None => return Err(ParseError::UnknownCommand(t.to_string())),
        },
        ("help" | "?", _) => return Err(usage("help")),
        ("quit" | "exit", []) => Command::Quit,
        ("quit" | "exit", _) => return Err(usage("quit")),
        _ => return Err(ParseError::UnknownCommand(name.to_string())),
    };
    Ok(cmd)
}

/// Synopses longer than this (`shard`, `node`, `rebalance`) get their explanation on the
/// next line: aligned after the longest one, every explanation began past column 100.
const HELP_SYNOPSIS_WIDTH: usize = 40;

/// The help text: one line per command, aligned.
pub fn help_text(topic: Option<&str>) -> String {
    if let Some(t) = topic {
        return match COMMANDS.iter().find(|(n, _, _)| *n == t) {
            Some((_, _, what)) => format!("{}\n  {what}", usage_of(t).expect("listed")),
            None => format!("no command {t:?}; type help for the list"),
        };
    }
    let width = COMMANDS
        .iter()
        .map(|(n, a, _)| n.len() + 1 + a.len())
        .filter(|&w| w <= HELP_SYNOPSIS_WIDTH)
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for (n, a, what) in COMMANDS {
        let synopsis = format!("{n} {a}");
        if synopsis.len() > width {
            out.push_str(&format!("  {synopsis}\n  {:width$}  {what}\n", ""));
        } else {
            out.push_str(&format!("  {synopsis:<width$}  {what}\n"));
        }
    }
    out.push_str(
        "\nKeys and values: quote to include spaces (\"a b\" or 'a b'); hex:00ff and b64:AAE= give binary bytes.\n",
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn quoting_and_escapes() {
        assert_eq!(
            split_words(r#"put "a key" 'it''s'"#).unwrap(),
            ["put", "a key", "its"]
        );
        assert_eq!(
            split_words(r#"put k "say \"hi\"\n""#).unwrap(),
            ["put", "k", "say \"hi\"\n"]
        );
        assert_eq!(split_words(r"put a\ b c").unwrap(), ["put", "a b", "c"]);
        assert_eq!(split_words(r#"put k """#).unwrap(), ["put", "k", ""]);
        assert_eq!(split_words("  get   k  ").unwrap(), ["get", "k"]);
        assert_eq!(
            split_words(r#"put "k"#),
            Err(ParseError::UnterminatedQuote('"'))
        );
        assert_eq!(
            split_words("put 'k"),
            Err(ParseError::UnterminatedQuote('\''))
        );
        assert_eq!(split_words("put k\\"), Err(ParseError::DanglingEscape));
    }

    #[test]
    fn commands_parse() {
        assert_eq!(
            parse_line("get k").unwrap(),
            Some(Command::Get {
                key: b("k"),
                stale: false
            })
        );
        assert_eq!(
            parse_line("GET k --stale").unwrap(),
            Some(Command::Get {
                key: b("k"),
                stale: true
            })
        );
        assert_eq!(
            parse_line("put \"my key\" hex:00ff").unwrap(),
            Some(Command::Put {
                key: b("my key"),
                value: Bytes::from_static(b"\x00\xff")
            })
        );
        assert_eq!(
            parse_line("del k").unwrap(),
            Some(Command::Del { key: b("k") })
        );
        assert_eq!(
            parse_line("cas k old new").unwrap(),
            Some(Command::Cas {
                key: b("k"),
                expected: Some(b("old")),
                new: b("new")
            })
        );
        assert_eq!(
            parse_line("cas k --absent b64:aGk=").unwrap(),
            Some(Command::Cas {
                key: b("k"),
                expected: None,
                new: b("hi")
            })
        );
        assert_eq!(
            parse_line("incr n -3").unwrap(),
            Some(Command::Incr {
                key: b("n"),
                delta: -3
            })
        );
        assert_eq!(
            parse_line("incr n x").unwrap_err().to_string(),
            "usage: incr KEY [DELTA]: DELTA \"x\" is not a whole number in -9223372036854775808..=9223372036854775807"
        );
        assert_eq!(parse_line("status").unwrap(), Some(Command::Status));
        assert_eq!(
            parse_line("shard k").unwrap(),
            Some(Command::Shard { key: b("k") })
        );
        assert_eq!(
            parse_line("shard leader 3 2").unwrap(),
            Some(Command::ShardLeader { shard: 3, node: 2 })
        );
        assert_eq!(
            parse_line("shard leader").unwrap(),
            Some(Command::Shard { key: b("leader") }),
            "a key named leader"
        );
        assert!(parse_line("shard leader x 2").is_err());
        assert_eq!(parse_line("node list").unwrap(), Some(Command::NodeList));
        assert!(parse_line("node").is_err() && parse_line("node list 3").is_err());
        assert_eq!(
            parse_line("shard move 3 --from 1 --to 4").unwrap(),
            Some(Command::ShardMove {
                shard: 3,
                from: 1,
                to: 4,
                wait_s: MOVE_WAIT_DEFAULT_S
            })
        );
        assert_eq!(
            parse_line("shard move 3 --from 1 --to 4 --wait 30").unwrap(),
            Some(Command::ShardMove {
                shard: 3,
                from: 1,
                to: 4,
                wait_s: 30
            })
        );
        for bad in [
            "shard move 3 --to 4 --from 1",
            "shard move 3 --from 1",
            "shard move x --from 1 --to 4",
            "shard move 3 --from 1 --to 4 --wait",
            "shard move 3 --from 1 --to 4 --wait soon",
        ] {
            assert!(parse_line(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_line("help cas").unwrap(),
            Some(Command::Help {
                topic: Some("cas".into())
            })
        );
        assert_eq!(parse_line("quit").unwrap(), Some(Command::Quit));
        assert_eq!(parse_line("   ").unwrap(), None);
        assert_eq!(parse_line("# a comment").unwrap(), None);
    }

    #[test]
    fn mistakes_say_what_to_type() {
        assert_eq!(
            parse_line("put k").unwrap_err().to_string(),
            "usage: put KEY VALUE"
        );
        assert_eq!(
            parse_line("cas k v").unwrap_err().to_string(),
            "usage: cas KEY EXPECTED NEW | KEY --absent NEW"
        );
        assert!(parse_line("frobnicate")
            .unwrap_err()
            .to_string()
            .contains("unknown command \"frobnicate\""));
        assert!(parse_line("put k hex:zz")
            .unwrap_err()
            .to_string()
            .contains("hex"));
        assert!(parse_line("incr n 9223372036854775808")
            .unwrap_err()
            .to_string()
            .contains("not a whole number"));
        assert_eq!(
            parse_line("help frob").unwrap_err().to_string(),
            "unknown command \"frob\"; type help for the list"
        );
        for (alias, name) in [
            ("SET", "put"),
            ("rm", "del"),
            ("delete", "del"),
            ("exit", "quit"),
        ] {
            assert_eq!(
                parse_line(&format!("help {alias}")).unwrap(),
                Some(Command::Help {
                    topic: Some(name.into())
                })
            );
        }
    }

    /// Ctrl-C on a write must not read as "nothing happened": the request already left.
    #[test]
    fn a_cancelled_write_is_of_unknown_outcome_and_a_cancelled_read_is_not() {
        let unknown = |line: &str| {
            let cmd = parse_line(line).unwrap().unwrap();
            cmd.cancelled_message().contains("outcome is unknown")
        };
        for write in [
            "put k v",
            "del k",
            "cas k a b",
            "cas k --absent b",
            "incr k",
            "shard leader 0 1",
            "shard move 0 --from 1 --to 2",
            "node drain 2",
            "node remove 2 --dead",
            "rebalance",
            "rebalance pause",
        ] {
            assert!(unknown(write), "{write}");
        }
        for read in [
            "get k",
            "get k --stale",
            "status",
            "shard k",
            "node list",
            "rebalance status",
            "rebalance --dry-run",
        ] {
            assert!(!unknown(read), "{read}");
        }
    }

    #[test]
    fn help_lists_every_command() {
        let h = help_text(None);
        for (n, _, _) in COMMANDS {
            assert!(h.contains(n), "{n} missing from help");
        }
        assert!(help_text(Some("cas")).starts_with("cas KEY EXPECTED NEW"));
        // Explanations start in one column, close enough to the left to be read.
        let column = 2 + HELP_SYNOPSIS_WIDTH - 1 + 2;
        assert!(
            h.starts_with(&format!("  {:<39}  read a key", "get KEY [--stale]")),
            "{h}"
        );
        let shard_usage = usage_of("shard").unwrap();
        assert!(
            h.contains(&format!("\n  {shard_usage}\n{:column$}which shard KEY", "")),
            "{h}"
        );
    }
}
