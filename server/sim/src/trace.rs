//! The run's trace: every notable event as one line with its simulated time. The last
//! ~200 lines are kept always (printed on failure); with `--trace` every line is kept,
//! and two runs of one seed must print the same bytes.

use std::collections::VecDeque;

/// Lines kept for a failure report.
pub const TAIL_LINES: usize = 200;

/// The trace of one run.
pub struct Trace {
    full: Option<Vec<String>>,
    detail: bool,
    tail: VecDeque<String>,
}

impl Trace {
    /// A trace; `full` keeps every line; `detail` adds a line per datagram and disk write
    /// (the costly part, so seed ranges leave it off and replays turn it on).
    pub fn new(full: bool, detail: bool) -> Trace {
        Trace {
            full: full.then(Vec::new),
            detail: detail || full,
            tail: VecDeque::with_capacity(TAIL_LINES),
        }
    }

    /// True if per-datagram and per-disk-write lines are wanted.
    pub fn wants_detail(&self) -> bool {
        self.detail
    }

    /// Adds a line at simulated time `now_ns`.
    pub fn log(&mut self, now_ns: u64, line: String) {
        let line = format!(
            "{:>6}.{:03}ms {line}",
            now_ns / 1_000_000,
            (now_ns / 1000) % 1000
        );
        if let Some(f) = &mut self.full {
            f.push(line.clone());
        }
        if self.tail.len() == TAIL_LINES {
            self.tail.pop_front();
        }
        self.tail.push_back(line);
    }

    /// The last lines.
    pub fn tail(&self) -> Vec<String> {
        self.tail.iter().cloned().collect()
    }

    /// Every line (empty unless full).
    pub fn into_full(self) -> Vec<String> {
        self.full.unwrap_or_default()
    }
}
