//! The run's trace: every notable event as one line with its simulated time. The last
//! ~200 lines are kept always (printed on failure); with `--trace` every line is kept,
//! and two runs of one seed must print the same bytes.

use std::collections::VecDeque;

/// Lines kept for a failure report.
pub const TAIL_LINES: usize = 200;

/// The trace of one run.
pub struct Trace {
    full: Option<Vec<String>>,
    tail: VecDeque<String>,
}

impl Trace {
    /// A trace; `full` keeps every line.
    pub fn new(full: bool) -> Trace {
        Trace {
            full: full.then(Vec::new),
            tail: VecDeque::with_capacity(TAIL_LINES),
        }
    }

    /// True if per-message detail is worth formatting (it always is for the tail; this
    /// is the hook to make it cheaper if profiling says so).
    pub fn wants_detail(&self) -> bool {
        true
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
