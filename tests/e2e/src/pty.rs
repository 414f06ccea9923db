//! A program on a pseudo-terminal, so the REPL tests type keys (TAB, Ctrl-C, Ctrl-D, the
//! arrow keys) into the real kvcli binary and read what it draws, as a person would. The
//! pty comes from `expectrl`, the screen from `vt100`.
//!
//! A thread reads everything the program writes into a buffer. Matching works on what a
//! terminal would show: line editors redraw a line in place (carriage return, cursor
//! moves, erase to end of line), so the raw bytes of a typed line need not be contiguous,
//! while the screen row is exactly what a person sees. The screen has [`ROWS`] rows, more
//! than a test writes, so that nothing scrolls and a row number keeps its meaning between
//! matches. Dropping a [`PtyChild`] kills the process.

use expectrl::process::unix::{Signal, WaitStatus};
use expectrl::process::Termios;
use expectrl::session::OsSession;
use expectrl::Session;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::process::Command;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Columns of the terminal: wide enough that no status table line wraps.
pub const COLUMNS: u16 = 200;
/// Rows of the terminal: more than any test writes, so that nothing scrolls away.
pub const ROWS: u16 = 400;

/// What the terminal sends for the Up arrow key.
pub const KEY_UP: &str = "\x1b[A";
/// Ctrl-C.
pub const CTRL_C: &str = "\x03";
/// Ctrl-D.
pub const CTRL_D: &str = "\x04";
/// The Enter key (a terminal sends a carriage return).
pub const ENTER: &str = "\r";
/// The TAB key.
pub const TAB: &str = "\t";

/// How much of the raw output a failed match shows.
const RAW_TAIL_CHARS: usize = 1500;

/// A query of the cursor position (Device Status Report); a terminal answers it.
const CURSOR_QUERY: &[u8] = b"\x1b[6n";
/// The answer: row 1, column 1.
const CURSOR_ANSWER: &[u8] = b"\x1b[1;1R";

/// A running program on a pseudo-terminal.
pub struct PtyChild {
    session: OsSession,
    output: Arc<Output>,
    /// The first screen row the next match may use.
    seen: usize,
}

/// The program's output so far, filled by the reader thread.
struct Output {
    state: Mutex<OutputState>,
    changed: Condvar,
}

struct OutputState {
    raw: Vec<u8>,
    /// The terminal side is closed: the program (and every process holding it) is gone.
    closed: bool,
}

impl PtyChild {
    /// Starts `cmd` with a new pty (`COLUMNS` x `ROWS`, `TERM=xterm`, echo on) as its
    /// controlling terminal, stdin, stdout and stderr.
    pub fn spawn(mut cmd: Command) -> PtyChild {
        cmd.env("TERM", "xterm");
        let mut session = Session::spawn(cmd).expect("spawn a program on a pty");
        session
            .get_process_mut()
            .set_window_size(COLUMNS, ROWS)
            .expect("set the pty's window size");
        // expectrl starts with echo off; a terminal a person types into has it on.
        session.set_echo(true).expect("turn the pty's echo on");
        let master = || -> File {
            session
                .get_stream()
                .as_fd()
                .try_clone_to_owned()
                .expect("dup the pty")
                .into()
        };
        let (reader, answers) = (master(), master());
        let output = Arc::new(Output {
            state: Mutex::new(OutputState {
                raw: Vec::new(),
                closed: false,
            }),
            changed: Condvar::new(),
        });
        let shared = Arc::clone(&output);
        // Detached: it ends when the terminal side closes (read fails with EIO on Linux).
        std::thread::spawn(move || read_output(reader, answers, &shared));
        PtyChild {
            session,
            output,
            seen: 0,
        }
    }

    /// Types `keys` (text or the key constants of this module).
    pub fn send(&mut self, keys: &str) {
        self.session
            .write_all(keys.as_bytes())
            .and_then(|()| self.session.flush())
            .expect("write to the pty");
    }

    /// Waits for a row at or after the previous match that contains `needle`; the next
    /// match starts on the row after it.
    pub fn expect(&mut self, needle: &str, timeout: Duration) {
        self.wait_until(
            &format!("a row containing {needle:?}"),
            timeout,
            |sc, from| {
                (from..sc.rows.len())
                    .find(|&r| sc.rows[r].contains(needle))
                    .map(|r| r + 1)
            },
        );
    }

    /// Waits for a finished row (the cursor has left it) at or after the previous match
    /// that reads exactly `line` (trailing spaces ignored); the next match starts after it.
    pub fn expect_line(&mut self, line: &str, timeout: Duration) {
        self.wait_until(&format!("the line {line:?}"), timeout, |sc, from| {
            (from..sc.cursor.0)
                .find(|&r| sc.rows[r] == line.trim_end())
                .map(|r| r + 1)
        });
    }

    /// Waits until the row being edited (the cursor's), at or after the previous match,
    /// starts with `prefix`; the next match starts on that same row.
    pub fn expect_input(&mut self, prefix: &str, timeout: Duration) {
        self.wait_until(
            &format!("the input row to start with {prefix:?}"),
            timeout,
            |sc, from| {
                let (row, _) = sc.cursor;
                (row >= from && sc.rows[row].starts_with(prefix.trim_end())).then_some(row)
            },
        );
    }

    /// Waits until the cursor sits right after `prompt` on a row, at or after the previous
    /// match, that shows nothing else: the program waits for input.
    pub fn expect_prompt(&mut self, prompt: &str, timeout: Duration) {
        self.wait_until(&format!("the prompt {prompt:?}"), timeout, |sc, from| {
            let (row, col) = sc.cursor;
            let shows_only_the_prompt = sc.rows[row] == prompt.trim_end();
            (row >= from && shows_only_the_prompt && col == prompt.chars().count()).then_some(row)
        });
    }

    /// Renders the screen until `find` (given it and the first row to look at) returns
    /// the first row of the next search. Panics with the screen on timeout.
    fn wait_until(
        &mut self,
        what: &str,
        timeout: Duration,
        find: impl Fn(&Screen, usize) -> Option<usize>,
    ) {
        let deadline = Instant::now() + timeout;
        let mut state = self.output.state.lock().expect("output lock");
        loop {
            let screen = Screen::render(&state.raw);
            if let Some(next) = find(&screen, self.seen) {
                self.seen = next;
                return;
            }
            let now = Instant::now();
            if state.closed || now >= deadline {
                let why = if state.closed {
                    "the program closed the terminal"
                } else {
                    "timed out"
                };
                let raw = String::from_utf8_lossy(&state.raw);
                let tail: String = raw.chars().rev().take(RAW_TAIL_CHARS).collect();
                let tail: String = tail.chars().rev().collect();
                // Unlocked first, so that the reader thread does not see a poisoned lock.
                drop(state);
                panic!(
                    "{why} ({timeout:?}) waiting for {what} from row {}; the screen (cursor at \
                     {:?}):\n{}\n---- the last {RAW_TAIL_CHARS} characters as written ----\n\
                     {tail:?}\n---- end ----",
                    self.seen,
                    screen.cursor,
                    screen.numbered()
                );
            }
            state = self
                .output
                .changed
                .wait_timeout(state, deadline - now)
                .expect("output lock")
                .0;
        }
    }

    /// Waits up to `timeout` for the program to exit and returns its exit code; panics
    /// (killing it) if it does not exit, or if a signal ended it.
    pub fn wait_exit(&mut self, timeout: Duration) -> i32 {
        let deadline = Instant::now() + timeout;
        loop {
            match self.session.get_process().status().expect("waitpid") {
                WaitStatus::Exited(_, code) => return code,
                WaitStatus::StillAlive if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                other => {
                    let screen = Screen::render(&self.output.state.lock().expect("lock").raw);
                    panic!(
                        "the program did not exit within {timeout:?} ({other:?}); the \
                         screen:\n{}",
                        screen.numbered()
                    );
                }
            }
        }
    }
}

impl Drop for PtyChild {
    fn drop(&mut self) {
        let process = self.session.get_process_mut();
        if let Ok(WaitStatus::StillAlive) = process.status() {
            let _ = process.kill(Signal::SIGKILL);
            let _ = process.wait();
        }
    }
}

/// The reader thread: appends output and answers cursor position queries (line editors
/// ask, then wait a moment for the answer, and would eat typed keys as a malformed one).
fn read_output(mut reader: File, mut answers: File, output: &Output) {
    let mut buf = [0u8; 4096];
    let mut answered = 0;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut state = output.state.lock().expect("output lock");
        state.raw.extend_from_slice(&buf[..n]);
        let queries = state
            .raw
            .windows(CURSOR_QUERY.len())
            .filter(|w| *w == CURSOR_QUERY)
            .count();
        drop(state);
        while answered < queries {
            let _ = answers.write_all(CURSOR_ANSWER);
            answered += 1;
        }
        output.changed.notify_all();
    }
    output.state.lock().expect("output lock").closed = true;
    output.changed.notify_all();
}

/// What the terminal shows after some output, as `vt100` renders it: the rows' text
/// (trailing spaces dropped) and the cursor.
struct Screen {
    rows: Vec<String>,
    /// (row, column) of the cursor.
    cursor: (usize, usize),
}

impl Screen {
    fn render(raw: &[u8]) -> Screen {
        let mut parser = vt100::Parser::new(ROWS, COLUMNS, 0);
        parser.process(raw);
        let screen = parser.screen();
        let (row, col) = screen.cursor_position();
        Screen {
            rows: screen
                .rows(0, COLUMNS)
                .map(|r| r.trim_end().to_string())
                .collect(),
            cursor: (usize::from(row), usize::from(col)),
        }
    }

    /// The rows up to the last one written to or holding the cursor, numbered, for
    /// failure messages.
    fn numbered(&self) -> String {
        let last_written = self.rows.iter().rposition(|r| !r.is_empty()).unwrap_or(0);
        (0..=last_written.max(self.cursor.0))
            .map(|r| format!("{r:4}| {}", self.rows[r]))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_screen_shows_a_line_redrawn_in_place() {
        // As rustyline draws `put g`, a dimmed hint, then the rest of the word.
        let raw = b"banner\r\n\x1b[?2004h\r\x1b[Kkvcli> \r\x1b[7C\r\x1b[Kkvcli> put \x1b[2mKEY VALUE\x1b[0m\
                    \r\x1b[11C\r\x1b[Kkvcli> put g\r\x1b[12Creeting\x1b]0;title\x07";
        let sc = Screen::render(raw);
        assert_eq!(sc.rows[0], "banner");
        assert_eq!(sc.rows[1], "kvcli> put greeting");
        assert_eq!(sc.cursor, (1, 19));
    }

    #[test]
    fn a_program_on_the_pty_sees_a_terminal_and_its_output_is_matched() {
        let mut cmd = Command::new("sh");
        // `read go` first: the window size is set right after the spawn.
        cmd.args([
            "-c",
            "read go; [ -t 0 ] && [ -t 1 ] && echo is-a-tty; stty size; printf 'name? '; read line; echo \"got $line\"",
        ]);
        let mut p = PtyChild::spawn(cmd);
        p.send(ENTER);
        p.expect_line("is-a-tty", Duration::from_secs(10));
        p.expect_line(&format!("{ROWS} {COLUMNS}"), Duration::from_secs(10));
        p.expect_prompt("name? ", Duration::from_secs(10));
        p.send("hello");
        p.expect_input("name? hello", Duration::from_secs(10));
        p.send(ENTER);
        p.expect("got hello", Duration::from_secs(10));
        assert_eq!(p.wait_exit(Duration::from_secs(10)), 0);
    }
}
