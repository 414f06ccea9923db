//! A linearizability checker for key-value histories, so that kvsim and `kvcli bench --check`
//! can say whether what clients observed is explainable by one atomic map.
//!
//! The caller records one [`Operation`] per request: what it asked ([`KvOp`]), what it got
//! ([`KvResult`]) and when it asked and got the answer. [`check`] then decides whether some
//! order of the operations (a *linearization*) both respects real time (an operation that
//! completed before another was invoked comes first) and explains every result by running
//! the operations one at a time on a map that starts empty.
//!
//! # Model
//! - Every key starts absent. [`KvOp::Get`] returns the value or `None`; [`KvOp::Put`] sets;
//!   [`KvOp::Delete`] removes (absent keys are fine); [`KvOp::Cas`] writes `new` iff the
//!   current value equals `expected` (`None`: absent) and answers [`KvResult::CasOk`], or
//!   writes nothing and answers [`KvResult::CasMismatch`] with the value it found.
//! - Keys are independent, so the history is split per key and each key is checked alone
//!   (linearizability is compositional: the whole history is linearizable iff every key's
//!   sub-history is).
//! - Two events at the same nanosecond count as concurrent: an operation invoked at the
//!   instant another completes may be ordered either way. Coarse clocks then cannot make
//!   a correct history fail.
//!
//! # Outcomes the client does not know
//! A request that timed out or failed in a way that leaves its effect unknown is recorded
//! with [`KvResult::Unknown`]. It may have taken effect at any instant after its invocation,
//! even long after the client gave up, or never: its completion time is taken as +infinity
//! and its `complete_ns` is ignored. A read with an unknown result constrains nothing and is
//! dropped. A request that *definitely* did not take effect (refused before reaching the
//! log, for example a redirect from a non-leader) must be left out of the history by the
//! caller: recording it as `Unknown` is safe but makes the search slower and weaker.
//!
//! # Algorithm
//! Per key: the Wing & Gong depth-first search over a doubly linked list of call and return
//! events, with Lowe's memoization of (set of operations linearized, value) pairs, as in
//! Porcupine, written as a loop with an explicit stack. The search is bounded by a
//! [`CheckBudget`]; past it the verdict is [`Verdict::Timeout`] instead of a hang. A failing
//! key's history is then shrunk to a small failing subset within its own budget. See
//! `docs/LINEARIZABILITY.md` for the details and the complexity.
//!
//! ```
//! use bytes::Bytes;
//! use kv_shared::linearizability::{check, CheckBudget, KvOp, KvResult, Operation, Verdict};
//!
//! let key = Bytes::from_static(b"k");
//! let history = vec![
//!     Operation {
//!         client: 1,
//!         key: key.clone(),
//!         op: KvOp::Put(Bytes::from_static(b"a")),
//!         result: KvResult::Done,
//!         invoke_ns: 0,
//!         complete_ns: 10,
//!     },
//!     // Invoked after the put completed, yet it does not see it: a lost write.
//!     Operation {
//!         client: 2,
//!         key,
//!         op: KvOp::Get,
//!         result: KvResult::Value(None),
//!         invoke_ns: 20,
//!         complete_ns: 30,
//!     },
//! ];
//! assert!(matches!(check(&history, CheckBudget::default()), Verdict::NotLinearizable { .. }));
//! ```

mod explain;
mod model;
mod search;
mod shrink;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

use bytes::Bytes;
use std::collections::HashMap;
use std::fmt;

use search::{prepare, search, Limits, SearchOutcome};

/// What a client asked for. The key lives in [`Operation::key`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum KvOp {
    /// Read the key.
    Get,
    /// Set the key to this value.
    Put(Bytes),
    /// Remove the key.
    Delete,
    /// Write `new` iff the key currently holds `expected` (`None`: iff it is absent).
    Cas {
        /// The value the key must hold, or `None` for "absent".
        expected: Option<Bytes>,
        /// The value written on a match.
        new: Bytes,
    },
}

/// What the client got back. Each [`KvOp`] has its own results plus [`KvResult::Unknown`];
/// a result of another operation's kind (a put answered with a value, say) is never
/// linearizable.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum KvResult {
    /// A get's answer: the value, or `None` if the key was absent.
    Value(Option<Bytes>),
    /// A put or delete took effect.
    Done,
    /// A compare-and-set found `expected` and wrote `new`.
    CasOk,
    /// A compare-and-set found another value and wrote nothing.
    CasMismatch {
        /// The value it found (`None`: absent). Never equal to `expected`.
        current: Option<Bytes>,
    },
    /// The outcome is unknown (timeout, lost quorum, crash): the operation may have taken
    /// effect at any instant after `invoke_ns`, or never. `complete_ns` is ignored.
    Unknown,
}

/// One client request and its answer, on one key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Operation {
    /// Who issued it. Only used to describe failures: the checker needs no per-client order
    /// beyond what the timestamps say.
    pub client: u64,
    /// The key it touches.
    pub key: Bytes,
    /// What was asked.
    pub op: KvOp,
    /// What was answered.
    pub result: KvResult,
    /// When the request was sent, on a clock shared by all clients, in nanoseconds.
    pub invoke_ns: u64,
    /// When the answer arrived, on the same clock. Must be `>= invoke_ns` unless the result
    /// is [`KvResult::Unknown`], where it is ignored.
    pub complete_ns: u64,
}

impl Operation {
    /// True if the result can answer the operation at all (a get answered with `Done` cannot).
    pub fn result_fits(&self) -> bool {
        match (&self.op, &self.result) {
            (_, KvResult::Unknown) => true,
            (KvOp::Get, KvResult::Value(_)) => true,
            (KvOp::Put(_) | KvOp::Delete, KvResult::Done) => true,
            (KvOp::Cas { .. }, KvResult::CasOk) => true,
            (KvOp::Cas { expected, .. }, KvResult::CasMismatch { current }) => current != expected,
            _ => false,
        }
    }
}

/// How much work [`check`] may do before giving up. A "step" is one move of the search:
/// placing one operation next, or taking the last placed one back. A step costs roughly a
/// hash-set lookup; the defaults allow a few seconds of search in all.
///
/// The budget counts steps, not time, so the same history always gets the same verdict:
/// a simulator run stays reproducible from its seed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckBudget {
    /// Steps allowed for one key; past this the verdict is [`Verdict::Timeout`] for that key.
    pub steps_per_key_max: u64,
    /// Steps allowed for the whole history, all keys together.
    pub steps_total_max: u64,
    /// Memory the memo of one key's search may take, roughly, in bytes; past this the
    /// verdict is [`Verdict::Timeout`] for that key. The memo holds one small entry per
    /// distinct (set of operations placed, value) reached.
    pub memo_bytes_per_key_max: u64,
    /// Steps spent shrinking a failing key's history to a smaller failing one. Zero turns
    /// shrinking off: `minimal_history` is then the key's whole history.
    pub shrink_steps_max: u64,
}

impl CheckBudget {
    /// The limits of one search of one key, given the steps left for the whole history.
    fn per_key(&self, steps_left_total: u64) -> Limits {
        Limits {
            steps_max: self.steps_per_key_max.min(steps_left_total),
            memo_bytes_max: self.memo_bytes_per_key_max,
        }
    }
}

impl Default for CheckBudget {
    fn default() -> Self {
        CheckBudget {
            steps_per_key_max: 10_000_000,
            steps_total_max: 100_000_000,
            memo_bytes_per_key_max: 256 << 20,
            shrink_steps_max: 5_000_000,
        }
    }
}

/// The answer of [`check`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Some order of all operations respects real time and explains every result.
    Linearizable,
    /// No such order exists for this key. When several keys fail, the smallest key is named.
    NotLinearizable {
        /// The failing key.
        key: Bytes,
        /// Operations of this key (in invocation order) that already admit no
        /// linearization: the key's history shrunk, within the shrink budget, by removing
        /// operations while it kept failing. A removal is never allowed to leave a read of
        /// a value without an operation that writes that value, so the subset fails for
        /// the same kind of reason as the whole, not for a made-up one.
        minimal_history: Vec<Operation>,
        /// A human-readable account: the operations and how far the search got.
        explanation: String,
    },
    /// The search budget ran out on this key before a verdict (and no key was found to
    /// fail). Nothing is known about this key, nor about keys not yet checked.
    Timeout {
        /// The first key whose search ran out of budget.
        key: Bytes,
    },
}

impl Verdict {
    /// True for [`Verdict::Linearizable`].
    pub fn is_linearizable(&self) -> bool {
        matches!(self, Verdict::Linearizable)
    }
}

/// Checks whether `history` is linearizable with respect to a key-value map whose keys
/// start absent. The order of `history` does not matter. Keys are checked in byte order;
/// a failing key is reported in preference to one whose search ran out of budget.
///
/// # Panics
/// If an operation whose result is not [`KvResult::Unknown`] completes before it is
/// invoked (`complete_ns < invoke_ns`): the caller's clock or bookkeeping is broken.
pub fn check(history: &[Operation], budget: CheckBudget) -> Verdict {
    let mut by_key: HashMap<&Bytes, Vec<&Operation>> = HashMap::new();
    for op in history {
        assert!(
            op.result == KvResult::Unknown || op.invoke_ns <= op.complete_ns,
            "operation completes before it is invoked: {op}"
        );
        by_key.entry(&op.key).or_default().push(op);
    }
    let mut keys: Vec<&Bytes> = by_key.keys().copied().collect();
    keys.sort();

    let mut steps_left_total = budget.steps_total_max;
    let mut first_timeout: Option<&Bytes> = None;
    for key in keys {
        let ops = &by_key[key];
        if let Some(bad) = ops.iter().find(|op| !op.result_fits()) {
            return Verdict::NotLinearizable {
                key: key.clone(),
                minimal_history: vec![(*bad).clone()],
                explanation: explain::misfit(key, bad),
            };
        }
        if steps_left_total == 0 {
            first_timeout.get_or_insert(key);
            continue;
        }
        let run = search(&prepare(ops), budget.per_key(steps_left_total), false);
        steps_left_total -= run.steps;
        match run.outcome {
            SearchOutcome::Linearizable => {}
            SearchOutcome::Timeout => {
                first_timeout.get_or_insert(key);
            }
            SearchOutcome::NotLinearizable { .. } => {
                let minimal = shrink::shrink(ops, budget);
                let explanation = explain::failure(key, &minimal, budget.per_key(u64::MAX));
                return Verdict::NotLinearizable {
                    key: key.clone(),
                    minimal_history: minimal.into_iter().cloned().collect(),
                    explanation,
                };
            }
        }
    }
    match first_timeout {
        Some(key) => Verdict::Timeout { key: key.clone() },
        None => Verdict::Linearizable,
    }
}

/// Writes bytes as `b"..."` with non-printable bytes escaped, cut after 32 bytes so that a
/// large value does not drown a failure report.
pub(crate) struct ShowBytes<'a>(pub &'a [u8]);

impl fmt::Display for ShowBytes<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN_BYTES_MAX: usize = 32;
        let shown = &self.0[..self.0.len().min(SHOWN_BYTES_MAX)];
        write!(f, "b\"{}\"", shown.escape_ascii())?;
        if self.0.len() > SHOWN_BYTES_MAX {
            write!(f, "...({} bytes)", self.0.len())?;
        }
        Ok(())
    }
}

/// Writes an optional value, `None` as `absent`.
pub(crate) struct ShowValue<'a>(pub Option<&'a [u8]>);

impl fmt::Display for ShowValue<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(v) => ShowBytes(v).fmt(f),
            None => f.write_str("absent"),
        }
    }
}

impl fmt::Display for Operation {
    /// One line, for example `c2 get => b"a" [40, 50]` or `c1 put b"x" => unknown [5, inf)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "c{} ", self.client)?;
        match &self.op {
            KvOp::Get => write!(f, "get")?,
            KvOp::Put(v) => write!(f, "put {}", ShowBytes(v))?,
            KvOp::Delete => write!(f, "delete")?,
            KvOp::Cas { expected, new } => write!(
                f,
                "cas {} -> {}",
                ShowValue(expected.as_deref()),
                ShowBytes(new)
            )?,
        }
        f.write_str(" => ")?;
        match &self.result {
            KvResult::Value(v) => write!(f, "{}", ShowValue(v.as_deref()))?,
            KvResult::Done => f.write_str("done")?,
            KvResult::CasOk => f.write_str("ok")?,
            KvResult::CasMismatch { current } => {
                write!(f, "mismatch (found {})", ShowValue(current.as_deref()))?
            }
            KvResult::Unknown => f.write_str("unknown")?,
        }
        if self.result == KvResult::Unknown {
            write!(f, " [{}, inf)", self.invoke_ns)
        } else {
            write!(f, " [{}, {}]", self.invoke_ns, self.complete_ns)
        }
    }
}
