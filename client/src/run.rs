//! Running commands: one at a time (one-shot), line by line from a script, or in the
//! interactive REPL (rustyline: history file, completion, hints, Ctrl-C / Ctrl-D). All
//! three share [`execute`], so a command behaves the same in each.

use crate::client::{Client, Response, Session};
use crate::command::{help_text, parse_line, Command, COMMANDS};
use crate::error::Error;
use crate::output::{
    combine_status, print_stdout, render, render_client_error, render_error, CmdOutput, Style,
    EXIT_ERROR, EXIT_OK,
};
use kv_shared::proto::Op;
use rustyline::completion::{Completer, Pair};
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::history::DefaultHistory;
use rustyline::validate::Validator;
use rustyline::{Context, Editor, Helper};
use std::borrow::Cow;
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::time::Duration;

/// How long `status` waits for the nodes.
pub const STATUS_TIMEOUT: Duration = Duration::from_millis(1000);

/// What running a command led to.
pub enum Step {
    /// A result to print.
    Output(CmdOutput),
    /// Leave.
    Quit,
}

/// Runs one parsed command.
pub async fn execute(client: &Client, session: &mut Session, cmd: Command) -> Result<Step, Error> {
    let response = match cmd {
        Command::Get { key, stale } => session.execute(Op::Get { key, stale }).await?,
        Command::Put { key, value } => session.execute(Op::Put { key, value }).await?,
        Command::Del { key } => session.execute(Op::Delete { key }).await?,
        Command::Cas { key, expected, new } => {
            session.execute(Op::Cas { key, expected, new }).await?
        }
        Command::Incr { key, delta } => session.execute(Op::Incr { key, delta }).await?,
        Command::Status => {
            let started = std::time::Instant::now();
            let reports = client.status(STATUS_TIMEOUT).await;
            if reports.iter().all(|r| r.result.is_err()) {
                return Err(no_node_answered(started, &reports));
            }
            let count = client.shard_count().unwrap_or(0);
            return Ok(Step::Output(CmdOutput::Status(combine_status(
                &reports, count,
            ))));
        }
        Command::NodeList => {
            let started = std::time::Instant::now();
            let reports = client.status(STATUS_TIMEOUT).await;
            if reports.iter().all(|r| r.result.is_err()) {
                return Err(no_node_answered(started, &reports));
            }
            return Ok(Step::Output(CmdOutput::NodeList(crate::nodes::node_list(
                &reports,
            ))));
        }
        Command::ShardLeader { shard, node } => {
            let op = Op::ShardLeader {
                shard: kv_shared::ShardId(shard),
                node: kv_shared::NodeId(node),
            };
            session.execute(op).await?
        }
        Command::ShardMove {
            shard,
            from,
            to,
            wait_s,
        } => {
            let op = Op::MoveReplica {
                shard: kv_shared::ShardId(shard),
                from: kv_shared::NodeId(from),
                to: kv_shared::NodeId(to),
            };
            crate::note!(
                "moving shard {shard}'s replica from node {from} to node {to}: waiting up to {wait_s} s for the new replica to catch up and the old one to go"
            );
            // A session of its own: the move is its first request, so it applies exactly
            // once whatever this session did before, and a retry waits for the same move.
            let mut admin = client.session();
            match admin.execute_within(op, Duration::from_secs(wait_s)).await {
                Ok(_) => {
                    return Ok(Step::Output(CmdOutput::Moved {
                        shard: kv_shared::ShardId(shard),
                        from: kv_shared::NodeId(from),
                        to: kv_shared::NodeId(to),
                    }))
                }
                Err(e) => {
                    if matches!(e, Error::GaveUp { .. } | Error::NoLeader { .. }) {
                        crate::note!(
                            "the move did not finish within {wait_s} s; it may still be in flight (kvcli status lists moves in flight)"
                        );
                    }
                    return Err(e);
                }
            }
        }
        Command::Shard { key } => {
            let shard = client
                .shard_of(&key)
                .expect("a connected client knows the shard count");
            let leader = client.cached_leader(shard);
            return Ok(Step::Output(CmdOutput::Shard { key, shard, leader }));
        }
        Command::Balance(b) => {
            return crate::balance_cmd::execute(client, b)
                .await
                .map(|o| Step::Output(CmdOutput::Balance(Box::new(o))))
        }
        Command::Help { topic } => {
            return Ok(Step::Output(CmdOutput::Text(help_text(topic.as_deref()))))
        }
        Command::Quit => return Ok(Step::Quit),
    };
    Ok(Step::Output(match response {
        Response::Value(v) => CmdOutput::Value(v),
        Response::Done => CmdOutput::Done,
        Response::CasOk => CmdOutput::CasOk,
        Response::CasMismatch { current } => CmdOutput::CasMismatch { current },
        Response::Integer(n) => CmdOutput::Integer(n),
    }))
}

/// The error of a status round no node answered.
pub(crate) fn no_node_answered(
    started: std::time::Instant,
    reports: &[crate::NodeReport],
) -> Error {
    Error::NoNodeAnswered {
        waited_ms: started.elapsed().as_millis() as u64,
        tried: reports
            .iter()
            .map(|r| r.node.addr.to_string())
            .collect::<Vec<_>>()
            .join(", "),
        outcome_unknown: false,
    }
}

/// Runs one command given as words (`kvcli get K`), prints its result, returns the exit code.
pub async fn one_shot(
    client: &Client,
    words: &[String],
    style: Style,
    out: &mut impl Write,
    err: &mut impl Write,
) -> i32 {
    let cmd = match crate::command::parse_words(words) {
        Ok(c) => c,
        Err(e) => {
            let _ = writeln!(err, "{}", render_error(&e.to_string(), "usage", style));
            return EXIT_ERROR;
        }
    };
    let mut session = client.session();
    match execute(client, &mut session, cmd).await {
        Ok(Step::Output(o)) => {
            let _ = writeln!(out, "{}", render(&o, style));
            o.exit_code()
        }
        Ok(Step::Quit) => EXIT_OK,
        Err(e) => {
            let _ = writeln!(
                if style.json {
                    &mut *out as &mut dyn Write
                } else {
                    err
                },
                "{}",
                render_client_error(&e, style)
            );
            EXIT_ERROR
        }
    }
}

/// Runs a script: one command per line, one result per line. Stops at the first error
/// unless `keep_going`. Not-found and cas-mismatch are results, not errors. Errors go to
/// `err` as `error: ...` lines, or with `--json` to `out` as `{"result":"error",...}`
/// objects so that every command line has exactly one result line. Returns 0 if no
/// command failed, 2 otherwise.
pub async fn script(
    client: &Client,
    input: impl BufRead,
    style: Style,
    keep_going: bool,
    out: &mut impl Write,
    err: &mut impl Write,
) -> i32 {
    let mut session = client.session();
    let mut code = EXIT_OK;
    for (n, line) in input.lines().enumerate() {
        let line = match line {
            Ok(l) => l,
            Err(e) => {
                let _ = writeln!(
                    err,
                    "{}",
                    render_error(&format!("cannot read line {}: {e}", n + 1), "io", style)
                );
                return EXIT_ERROR;
            }
        };
        let failure = match parse_line(&line) {
            Ok(None) => continue,
            Ok(Some(cmd)) => match execute(client, &mut session, cmd).await {
                Ok(Step::Output(o)) => {
                    let _ = writeln!(out, "{}", render(&o, style));
                    None
                }
                Ok(Step::Quit) => break,
                Err(e) => Some(render_error(
                    &format!("line {}: {e}", n + 1),
                    &e.kind(),
                    style,
                )),
            },
            Err(e) => Some(render_error(
                &format!("line {}: {e}", n + 1),
                "usage",
                style,
            )),
        };
        if let Some(msg) = failure {
            code = EXIT_ERROR;
            let _ = writeln!(
                if style.json {
                    &mut *out as &mut dyn Write
                } else {
                    &mut *err
                },
                "{msg}"
            );
            if !keep_going {
                break;
            }
        }
        let _ = out.flush();
    }
    code
}

/// The REPL's helper: completes command names (and `--stale`, `--absent`), hints the
/// arguments still to type, and dims the hint on a colour terminal.
pub struct ReplHelper {
    /// Dim hints with ANSI codes.
    pub colour: bool,
}

impl ReplHelper {
    /// Completions for the word ending at `pos`: (start of that word, candidates).
    pub fn completions(&self, line: &str, pos: usize) -> (usize, Vec<String>) {
        let before = &line[..pos];
        let start = before
            .rfind(char::is_whitespace)
            .map(|i| i + 1)
            .unwrap_or(0);
        let word = &before[start..];
        let words_before: Vec<&str> = before[..start].split_whitespace().collect();
        let choices: Vec<&str> = match words_before.as_slice() {
            [] => COMMANDS.iter().map(|(n, _, _)| *n).collect(),
            ["help"] => COMMANDS.iter().map(|(n, _, _)| *n).collect(),
            ["get", _] => vec!["--stale"],
            ["cas", _] => vec!["--absent"],
            ["shard"] => vec!["leader", "move"],
            ["shard", "move", _] => vec!["--from"],
            ["shard", "move", _, "--from", _] => vec!["--to"],
            ["shard", "move", _, "--from", _, "--to", _] => vec!["--wait"],
            ["node"] => vec!["list", "drain", "remove"],
            ["node", "remove", _] => vec!["--dead"],
            ["node", "drain" | "remove", _, ..] => vec!["--wait", "--moves-max"],
            ["rebalance"] => vec![
                "status",
                "pause",
                "resume",
                "--dry-run",
                "--wait",
                "--moves-max",
            ],
            ["rebalance", "--dry-run" | "--wait" | "--moves-max", ..] => {
                vec!["--dry-run", "--wait", "--moves-max"]
            }
            _ => vec![],
        };
        let found = choices
            .into_iter()
            .filter(|c| c.starts_with(word))
            .map(|c| format!("{c} "))
            .collect();
        (start, found)
    }

    /// The hint after the cursor: the rest of a command name, or the arguments still missing.
    pub fn hint_for(&self, line: &str, pos: usize) -> Option<String> {
        if pos < line.len() || line.trim().is_empty() {
            return None;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        let ends_in_space = line.ends_with(char::is_whitespace);
        if words.len() == 1 && !ends_in_space {
            let (name, args, _) = COMMANDS.iter().find(|(n, _, _)| n.starts_with(words[0]))?;
            let rest = &name[words[0].len()..];
            return Some(if args.is_empty() {
                rest.to_string()
            } else {
                format!("{rest} {args}")
            });
        }
        let (_, args, _) = COMMANDS.iter().find(|(n, _, _)| *n == words[0])?;
        let first_form = args.split(" | ").next().unwrap_or("");
        let wanted: Vec<&str> = first_form.split_whitespace().collect();
        let typed = words.len() - 1;
        if !ends_in_space || typed >= wanted.len() {
            return None;
        }
        Some(wanted[typed..].join(" "))
    }
}

impl Completer for ReplHelper {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let (start, found) = self.completions(line, pos);
        Ok((
            start,
            found
                .into_iter()
                .map(|c| Pair {
                    display: c.trim_end().to_string(),
                    replacement: c,
                })
                .collect(),
        ))
    }
}

impl Hinter for ReplHelper {
    type Hint = String;

    fn hint(&self, line: &str, pos: usize, _ctx: &Context<'_>) -> Option<String> {
        self.hint_for(line, pos)
    }
}

impl Highlighter for ReplHelper {
    fn highlight_hint<'h>(&self, hint: &'h str) -> Cow<'h, str> {
        if self.colour {
            Cow::Owned(format!("\x1b[2m{hint}\x1b[0m"))
        } else {
            Cow::Borrowed(hint)
        }
    }
}

impl Validator for ReplHelper {}
impl Helper for ReplHelper {}

/// Where the REPL keeps its history: `--history-file`, else `$KVCLI_HISTORY`, else
/// `~/.kvcli_history`; `None` if there is no home directory.
pub fn history_path(flag: Option<PathBuf>) -> Option<PathBuf> {
    flag.or_else(|| std::env::var_os("KVCLI_HISTORY").map(PathBuf::from))
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".kvcli_history")))
}

/// The interactive loop. Ctrl-C cancels the line being typed (or the command running);
/// Ctrl-D or `quit` leaves. History is loaded at start and saved after every command.
pub async fn repl(client: &Client, style: Style, history: Option<PathBuf>) -> anyhow::Result<i32> {
    let config = rustyline::Config::builder()
        .auto_add_history(false)
        .max_history_size(10_000)?
        .build();
    let mut editor: Editor<ReplHelper, DefaultHistory> = Editor::with_config(config)?;
    editor.set_helper(Some(ReplHelper {
        colour: style.colour,
    }));
    if let Some(path) = &history {
        // A missing file is the first session; anything else is worth a warning only.
        if let Err(e) = editor.load_history(path) {
            if path.exists() {
                crate::note!("warning: cannot read history {}: {e}", path.display());
            }
        }
    }
    let shards = client.shard_count().unwrap_or(0);
    print_stdout(&format!(
        "kvcli: connected to {} node(s), {shards} shards. Type help for commands, Ctrl-D to leave.\n",
        client.nodes().len()
    ));
    let mut session = client.session();
    loop {
        let line = match editor.readline("kvcli> ") {
            Ok(l) => l,
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(e.into()),
        };
        if line.trim().is_empty() {
            continue;
        }
        let _ = editor.add_history_entry(line.as_str());
        if let Some(path) = &history {
            if let Err(e) = editor.save_history(path) {
                crate::note!("warning: cannot save history to {}: {e}", path.display());
            }
        }
        let cmd = match parse_line(&line) {
            Ok(Some(c)) => c,
            Ok(None) => continue,
            Err(e) => {
                print_stdout(&format!(
                    "{}\n",
                    render_error(&e.to_string(), "usage", style)
                ));
                continue;
            }
        };
        let cancelled = cmd.cancelled_message();
        tokio::select! {
            r = execute(client, &mut session, cmd) => match r {
                Ok(Step::Output(o)) => print_stdout(&format!("{}\n", render(&o, style))),
                Ok(Step::Quit) => break,
                Err(e) => print_stdout(&format!("{}\n", render_client_error(&e, style))),
            },
            _ = tokio::signal::ctrl_c() => {
                print_stdout(&format!("{}\n", render_error(cancelled, "cancelled", style)));
                // The cancelled request may still be answered; a fresh session keeps the
                // next request's sequence number clear of it.
                session = client.session();
            }
        }
    }
    Ok(EXIT_OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completion_of_commands_and_flags() {
        let h = ReplHelper { colour: false };
        assert_eq!(h.completions("st", 2), (0, vec!["status ".to_string()]));
        assert_eq!(
            h.completions("s", 1).1,
            vec!["status ".to_string(), "shard ".to_string()]
        );
        assert_eq!(
            h.completions("get k --s", 9),
            (6, vec!["--stale ".to_string()])
        );
        assert_eq!(
            h.completions("cas k --", 8),
            (6, vec!["--absent ".to_string()])
        );
        assert_eq!(h.completions("help ca", 7), (5, vec!["cas ".to_string()]));
        assert!(h.completions("put k ", 6).1.is_empty());
        assert_eq!(h.completions("shard m", 7), (6, vec!["move ".to_string()]));
        assert_eq!(
            h.completions("shard move 3 --f", 16).1,
            vec!["--from ".to_string()]
        );
        assert_eq!(
            h.completions("shard move 3 --from 1 ", 22).1,
            vec!["--to ".to_string()]
        );
        assert_eq!(h.completions("no", 2), (0, vec!["node ".to_string()]));
        assert_eq!(h.completions("node d", 6), (5, vec!["drain ".to_string()]));
        assert_eq!(
            h.completions("node remove 4 --d", 17).1,
            vec!["--dead ".to_string()]
        );
        assert_eq!(
            h.completions("rebalance s", 11).1,
            vec!["status ".to_string()]
        );
        assert_eq!(
            h.completions("rebalance p", 11).1,
            vec!["pause ".to_string()]
        );
        assert_eq!(
            h.completions("rebalance --dry-run --m", 23).1,
            vec!["--moves-max ".to_string()]
        );
        assert_eq!(h.completions("node l", 6), (5, vec!["list ".to_string()]));
    }

    #[test]
    fn hints_show_what_is_left_to_type() {
        let h = ReplHelper { colour: false };
        assert_eq!(h.hint_for("pu", 2).as_deref(), Some("t KEY VALUE"));
        assert_eq!(h.hint_for("put ", 4).as_deref(), Some("KEY VALUE"));
        assert_eq!(h.hint_for("put k ", 6).as_deref(), Some("VALUE"));
        assert_eq!(h.hint_for("put k v", 7), None);
        assert_eq!(h.hint_for("cas k ", 6).as_deref(), Some("EXPECTED NEW"));
        assert_eq!(h.hint_for("stat", 4).as_deref(), Some("us"));
        assert_eq!(h.hint_for("zzz", 3), None);
        assert_eq!(
            h.hint_for("put", 1),
            None,
            "no hint unless the cursor is at the end"
        );
    }

    #[test]
    fn history_path_prefers_the_flag_then_the_environment() {
        let flag = PathBuf::from("/tmp/x");
        assert_eq!(history_path(Some(flag.clone())), Some(flag));
    }
}
