//! Turns a failed check into prose a person can act on: the failing operations, any value
//! read that nobody wrote, and the furthest order the search found before it got stuck.

use super::model::{observed_value, written_value, ABSENT, UNOBSERVED};
use super::search::{prepare, search, Limits, SearchOutcome};
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
pub(super) fn failure(key: &Bytes, ops: &[&Operation], limits: Limits) -> String {
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
    let run = search(&prepared, limits, true);
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
        // The search merged values nobody reads into one; name the bytes for the reader,
        // tracking which operation last wrote.
        let (mut before, mut shown) = (ABSENT, prepared.values.describe(ABSENT));
        for &(op, after) in &furthest.order {
            let step = prepared.steps[op as usize];
            if after != UNOBSERVED {
                shown = prepared.values.describe(after);
            } else if step.applies(before) {
                if let Some(Some(v)) = written_value(prepared.ops[op as usize]) {
                    shown = format!("{} (read by none of these operations)", ShowBytes(v));
                }
            }
            let _ = writeln!(out, "  #{op}, after which the value is {shown}");
            before = after;
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
