//! A program on a pseudo-terminal, so the REPL tests type keys (TAB, Ctrl-C, Ctrl-D, the
//! arrow keys) into the real kvcli binary and read what it draws, as a person would. Built
//! on rustix's pty calls alone, so the tests need neither a pty crate nor tmux.
//!
//! The child's stdin, stdout and stderr are the pty's terminal side; a thread reads
//! everything it writes into a buffer. Matching works on what a terminal would show
//! ([`Screen`]): line editors redraw a line in place (carriage return, cursor moves, erase
//! to end of line), so the raw bytes of a typed line need not be contiguous, while the
//! screen row is exactly what a person sees. The pty is not made the child's
//! controlling terminal (that would need `setsid` in the child, i.e. unsafe code): line
//! editors such as rustyline switch off signal keys in raw mode and read Ctrl-C as a byte,
//! so nothing depends on it. Dropping a [`PtyChild`] kills the process.

use rustix::fs::{Mode, OFlags};
use rustix::pty::OpenptFlags;
use std::fs::File;
use std::io::{Read, Write};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Columns of the terminal: wide enough that no status table line wraps.
pub const COLUMNS: u16 = 200;
/// Rows of the terminal.
pub const ROWS: u16 = 50;

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
    child: Child,
    input: File,
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
    /// Starts `cmd` with a new pty (`COLUMNS` x `ROWS`, `TERM=xterm`) as its stdin,
    /// stdout and stderr.
    pub fn spawn(mut cmd: Command) -> PtyChild {
        let master =
            rustix::pty::openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC)
                .expect("open a pseudo-terminal");
        rustix::pty::grantpt(&master).expect("grantpt");
        rustix::pty::unlockpt(&master).expect("unlockpt");
        rustix::termios::tcsetwinsize(
            &master,
            rustix::termios::Winsize {
                ws_row: ROWS,
                ws_col: COLUMNS,
                ws_xpixel: 0,
                ws_ypixel: 0,
            },
        )
        .expect("set the pty's window size");
        let name = rustix::pty::ptsname(&master, Vec::new()).expect("ptsname");
        // NOCTTY: opening it must not make the pty the test process's own terminal.
        let terminal: File = rustix::fs::open(
            name.as_c_str(),
            OFlags::RDWR | OFlags::NOCTTY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .expect("open the pty's terminal side")
        .into();
        cmd.stdin(Stdio::from(terminal.try_clone().expect("dup pty")))
            .stdout(Stdio::from(terminal.try_clone().expect("dup pty")))
            .stderr(Stdio::from(terminal))
            .env("TERM", "xterm");
        let child = cmd.spawn().expect("spawn a program on the pty");
        // The command holds our copies of the terminal side; without closing them the
        // master would never see the end of the output.
        drop(cmd);

        let master = File::from(master);
        let output = Arc::new(Output {
            state: Mutex::new(OutputState {
                raw: Vec::new(),
                closed: false,
            }),
            changed: Condvar::new(),
        });
        let reader = master.try_clone().expect("dup pty master");
        let answers = master.try_clone().expect("dup pty master");
        let shared = Arc::clone(&output);
        // Detached: it ends when the terminal side closes (read fails with EIO on Linux).
        std::thread::spawn(move || read_output(reader, answers, &shared));
        PtyChild {
            child,
            input: master,
            output,
            seen: 0,
        }
    }

    /// The program's process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Types `keys` (text or the key constants of this module).
    pub fn send(&mut self, keys: &str) {
        self.input
            .write_all(keys.as_bytes())
            .and_then(|()| self.input.flush())
            .expect("write to the pty");
    }

    /// What the terminal shows so far (every row since the start; nothing scrolls away).
    pub fn screen(&self) -> Screen {
        Screen::render(&self.output.state.lock().expect("output lock").raw)
    }

    /// Waits for a row at or after the previous match that contains `needle`; the next
    /// match starts on the row after it.
    pub fn expect(&mut self, needle: &str, timeout: Duration) {
        self.wait_until(
            &format!("a row containing {needle:?}"),
            timeout,
            |sc, from| {
                (from..sc.rows.len())
                    .find(|&r| sc.row_text(r).contains(needle))
                    .map(|r| r + 1)
            },
        );
    }

    /// Waits for a finished row (the cursor has left it) at or after the previous match
    /// that reads exactly `line` (trailing spaces ignored); the next match starts after it.
    pub fn expect_line(&mut self, line: &str, timeout: Duration) {
        self.wait_until(&format!("the line {line:?}"), timeout, |sc, from| {
            (from..sc.cursor.0)
                .find(|&r| sc.row_text(r).trim_end() == line)
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
                (row >= from && sc.row_text(row).starts_with(prefix)).then_some(row)
            },
        );
    }

    /// Waits until the cursor sits right after `prompt` on a row, at or after the previous
    /// match, that shows nothing else: the program waits for input.
    pub fn expect_prompt(&mut self, prompt: &str, timeout: Duration) {
        self.wait_until(&format!("the prompt {prompt:?}"), timeout, |sc, from| {
            let (row, col) = sc.cursor;
            (row >= from && sc.row_text(row) == prompt && col == prompt.chars().count())
                .then_some(row)
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

    /// Waits up to `timeout` for the program to exit; panics (killing it) if it does not.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            if Instant::now() >= deadline {
                panic!(
                    "the program did not exit within {timeout:?}; the screen:\n{}",
                    self.screen().numbered()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for PtyChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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

/// What a terminal shows after some output: rows of characters and the cursor. It
/// knows what line editors use (carriage return, newline, backspace, tab, cursor left,
/// right, up, down and to a column, erase in line and below) and ignores the rest
/// (colours, modes, titles). It never wraps or scrolls: rows grow as long as written and
/// all of them are kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Screen {
    /// The rows, from the first output on.
    pub rows: Vec<Vec<char>>,
    /// (row, column) of the cursor.
    pub cursor: (usize, usize),
}

impl Screen {
    /// The screen after `raw` was written to an empty terminal. An incomplete escape
    /// sequence at the end is ignored.
    pub fn render(raw: &[u8]) -> Screen {
        let text = String::from_utf8_lossy(raw);
        let mut sc = Screen {
            rows: vec![Vec::new()],
            cursor: (0, 0),
        };
        let mut chars = text.chars();
        while let Some(c) = chars.next() {
            let (row, col) = sc.cursor;
            match c {
                '\x1b' => match chars.next() {
                    Some('[') => {
                        let mut params = String::new();
                        let Some(end) = chars.by_ref().find(|c| {
                            let done = ('@'..='~').contains(c);
                            if !done {
                                params.push(*c);
                            }
                            done
                        }) else {
                            break;
                        };
                        sc.csi(&params, end);
                    }
                    // OSC (a window title, say): up to BEL or ESC \.
                    Some(']') => {
                        while let Some(c) = chars.next() {
                            if c == '\x07' {
                                break;
                            }
                            if c == '\x1b' {
                                chars.next();
                                break;
                            }
                        }
                    }
                    _ => {}
                },
                '\r' => sc.cursor.1 = 0,
                '\n' => sc.move_to(row + 1, col),
                '\x08' => sc.cursor.1 = col.saturating_sub(1),
                '\t' => sc.cursor.1 = (col / 8 + 1) * 8,
                c if c.is_control() => {}
                c => {
                    let line = &mut sc.rows[row];
                    if line.len() <= col {
                        line.resize(col + 1, ' ');
                    }
                    line[col] = c;
                    sc.cursor.1 = col + 1;
                }
            }
        }
        sc
    }

    /// Row `r` as text (trailing spaces kept: a prompt ends in one).
    pub fn row_text(&self, r: usize) -> String {
        self.rows[r].iter().collect()
    }

    /// Every row, numbered, for failure messages.
    pub fn numbered(&self) -> String {
        (0..self.rows.len())
            .map(|r| format!("{r:4}| {}", self.row_text(r)))
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn move_to(&mut self, row: usize, col: usize) {
        if self.rows.len() <= row {
            self.rows.resize(row + 1, Vec::new());
        }
        self.cursor = (row, col);
    }

    /// A control sequence `ESC [ params end`.
    fn csi(&mut self, params: &str, end: char) {
        let (row, col) = self.cursor;
        let first = params
            .trim_start_matches('?')
            .split(';')
            .next()
            .and_then(|p| p.parse::<usize>().ok());
        let count = first.unwrap_or(1).max(1);
        match end {
            'A' => self.move_to(row.saturating_sub(count), col),
            'B' => self.move_to(row + count, col),
            'C' => self.cursor.1 = col + count,
            'D' => self.cursor.1 = col.saturating_sub(count),
            'G' => self.cursor.1 = count - 1,
            'K' => {
                let line = &mut self.rows[row];
                match first.unwrap_or(0) {
                    0 => line.truncate(col),
                    1 => line.iter_mut().take(col + 1).for_each(|c| *c = ' '),
                    _ => line.clear(),
                }
            }
            'J' if first.unwrap_or(0) == 0 => {
                self.rows[row].truncate(col);
                self.rows.truncate(row + 1);
            }
            _ => {}
        }
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
        assert_eq!(sc.row_text(0), "banner");
        assert_eq!(sc.row_text(1), "kvcli> put greeting");
        assert_eq!(sc.cursor, (1, 19));
        let sc = Screen::render(b"abcdef\x1b[3D\x1b[K\x08X\nY\x1b[1A\x1b[1GZ\ttab\x1b[");
        assert_eq!(sc.row_text(0), "ZbX     tab");
        assert_eq!(sc.row_text(1), "   Y");
        assert_eq!(sc.cursor, (0, 11));
    }

    #[test]
    fn a_program_on_the_pty_sees_a_terminal_and_its_output_is_matched() {
        let mut cmd = Command::new("sh");
        cmd.args([
            "-c",
            "[ -t 0 ] && [ -t 1 ] && echo is-a-tty; stty size; printf 'name? '; read line; echo \"got $line\"",
        ]);
        let mut p = PtyChild::spawn(cmd);
        p.expect_line("is-a-tty", Duration::from_secs(10));
        p.expect_line(&format!("{ROWS} {COLUMNS}"), Duration::from_secs(10));
        p.expect_prompt("name? ", Duration::from_secs(10));
        p.send("hello");
        p.expect_input("name? hello", Duration::from_secs(10));
        p.send(ENTER);
        p.expect("got hello", Duration::from_secs(10));
        assert!(p.wait_exit(Duration::from_secs(10)).success());
    }
}
