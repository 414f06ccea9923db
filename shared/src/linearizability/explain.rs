//! Turns a failed check into prose a person can act on: the failing operations, any value
//! read that nobody wrote, and the furthest order the search found before it got stuck.

use super::model::{observed_value, written_value};
use super::search::{prepare, search, SearchOutcome};
use super::{KvOp, KvResult, Operation, ShowBytes};
use bytes::Bytes;
use std::fmt::Write;

/// Histories longer than this are explained without the furthest order: recording it
/// copies the search stack at every new depth, quadratic in the history length.
const TRACED_OPS_MAX: usize = 1_000;

/// Explains an operation whose result cannot answer it at all.
pub(super) fn misfit(key: &Bytes, op: &Operation) -> String {
    let why = match (&op.op, &op.result) {
        (KvOp::Cas { .. }, KvResult::CasMismatch { .. }) => {
            "a compare-and-set cannot report a mismatch on finding the very value it expected"
        }
        _ => "this kind of operation never gives this kind of result",
    };
    format!("key {}: {op}: {why}.", ShowBytes(key))
}

/// Explains why `ops` (one key's operations, already shown not linearizable) fail.
pub(super) fn failure(key: &Bytes, ops: &[&Operation], steps_max: u64) -> String {
    let prepared = prepare(ops);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "key {}: no order of these {} operations respects real time and explains every result:",
        ShowBytes(key),
        prepared.ops.len()
    );
    for (i, op) in prepared.ops.iter().enumerate() {
        let _ = writeln!(out, "  #{i} {op}");
    }
    if prepared.left_out > 0 {
        let _ = writeln!(
            out,
            "({} operations with unknown outcomes are left out: reads, and writes of values that \
             nobody reads; they cannot matter.)",
            prepared.left_out
        );
    }
    for (i, op) in prepared.ops.iter().enumerate() {
        if let Some(v) = observed_but_never_written(op, &prepared.ops) {
            let _ = writeln!(
                out,
                "#{i} observes {}, which no operation on this key writes.",
                ShowBytes(v)
            );
        }
    }
    if prepared.ops.len() > TRACED_OPS_MAX {
        return out;
    }
    let run = search(&prepared, steps_max, true);
    let SearchOutcome::NotLinearizable {
        furthest: Some(furthest),
    } = run.outcome
    else {
        let _ = writeln!(
            out,
            "(no trace: the traced search ended with {:?})",
            run.outcome
        );
        return out;
    };
    if furthest.order.is_empty() {
        let _ = writeln!(out, "The search could not place any operation first.");
    } else {
        let _ = writeln!(
            out,
            "The furthest the search got places {} of them, in this order:",
            furthest.order.len()
        );
        for (op, value) in &furthest.order {
            let _ = writeln!(
                out,
                "  #{op}, after which the value is {}",
                prepared.values.describe(*value)
            );
        }
    }
    if let Some(blocker) = furthest.blocker {
        let _ = writeln!(
            out,
            "Then #{blocker} must take effect (it returned at {} ns), but neither it nor any other \
             operation invoked by then can come next: each result contradicts the value, or \
             leads only to orders already ruled out or equivalent to ones tried.",
            prepared.ops[blocker as usize].complete_ns
        );
    }
    out
}

/// The value `op` definitely saw, if no operation of `ops` writes it.
fn observed_but_never_written<'a>(op: &'a Operation, ops: &[&Operation]) -> Option<&'a Bytes> {
    if op.result == KvResult::Unknown {
        return None;
    }
    let seen = observed_value(op)??;
    let written = ops.iter().any(|w| written_value(w) == Some(Some(seen)));
    (!written).then_some(seen)
}
