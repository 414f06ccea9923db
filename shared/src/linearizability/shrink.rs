//! Shrinks a failing key's history to a small failing subset, so that a person reads five
//! operations instead of five thousand. Bounded: each candidate is a full search, and all
//! candidates together share [`CheckBudget::shrink_steps_max`].

use super::model::{observed_value, written_value};
use super::search::{prepare, search, SearchOutcome};
use super::{CheckBudget, KvOp, KvResult, Operation};
use bytes::Bytes;
use std::collections::HashSet;

/// Returns a subset of `ops` (in invocation order) that is still not linearizable, found by
/// first trying short prefixes and then removing ever smaller chunks (a simplified ddmin).
/// The result is 1-minimal if the budget lasts: removing any single allowed operation makes
/// it linearizable.
///
/// Only removals that *cannot help* are allowed: a set of operations may go only if none
/// of them may write a value that an operation staying behind observes (reads, or expects
/// or finds in a cas; "absent" counts, written by a delete). Then any linearization of the
/// larger history, with the removed operations deleted and cas operations of unknown
/// outcome that changed nothing moved to the end, is a linearization of the smaller one.
/// So each accepted step keeps "smaller fails implies larger fails", and the result is a
/// real core of the failure, not one made up by removing, say, the delete a read of
/// "absent" relied on.
///
/// `ops` must not be linearizable; with a zero budget they come back unchanged (minus reads
/// with unknown results, which never matter).
pub(super) fn shrink<'a>(ops: &[&'a Operation], budget: CheckBudget) -> Vec<&'a Operation> {
    let mut all: Vec<&'a Operation> = ops
        .iter()
        .copied()
        .filter(|op| !(op.op == KvOp::Get && op.result == KvResult::Unknown))
        .collect();
    all.sort_by_key(|op| op.invoke_ns);
    let mut trial = Trial {
        all: &all,
        steps_left: budget.shrink_steps_max,
        budget,
    };

    let mut current: Vec<usize> = (0..all.len()).collect();
    // Failures are usually local in time, so a short prefix often already fails and makes
    // the chunk phase cheap.
    let mut prefix_len = 8;
    while prefix_len < current.len() {
        let candidate = current[..prefix_len].to_vec();
        if trial.still_fails(&candidate, &current[prefix_len..]) {
            current = candidate;
            break;
        }
        prefix_len *= 2;
    }

    let mut chunk = current.len().div_ceil(2);
    while chunk >= 1 && trial.steps_left > 0 {
        let mut removed_any = false;
        let mut start = 0;
        while start < current.len() && trial.steps_left > 0 {
            let end = (start + chunk).min(current.len());
            let candidate: Vec<usize> = current[..start]
                .iter()
                .chain(&current[end..])
                .copied()
                .collect();
            if trial.still_fails(&candidate, &current[start..end]) {
                current = candidate;
                removed_any = true;
            } else {
                start = end;
            }
        }
        if chunk == 1 && !removed_any {
            break;
        }
        // At chunk size 1, repeat the pass until nothing more goes (1-minimality).
        chunk = if chunk == 1 { 1 } else { chunk.div_ceil(2) };
    }
    current.into_iter().map(|i| all[i]).collect()
}

/// The candidate tester, with its share of the budget.
struct Trial<'s, 'a> {
    all: &'s [&'a Operation],
    steps_left: u64,
    budget: CheckBudget,
}

impl Trial<'_, '_> {
    /// True if going from `subset + removed` to `subset` (indices into `all`) is allowed and
    /// `subset` is shown not linearizable. A search that runs out of budget counts as "not
    /// shown".
    fn still_fails(&mut self, subset: &[usize], removed: &[usize]) -> bool {
        if self.steps_left == 0 || subset.is_empty() || !self.cannot_help(subset, removed) {
            return false;
        }
        let ops: Vec<&Operation> = subset.iter().map(|&i| self.all[i]).collect();
        let run = search(&prepare(&ops), self.budget.per_key(self.steps_left), false);
        self.steps_left -= run.steps;
        matches!(run.outcome, SearchOutcome::NotLinearizable { .. })
    }

    /// True if no operation of `removed` may write a value that `subset` observes.
    fn cannot_help(&self, subset: &[usize], removed: &[usize]) -> bool {
        let observed: HashSet<Option<&Bytes>> = subset
            .iter()
            .filter_map(|&i| observed_value(self.all[i]))
            .collect();
        removed
            .iter()
            .all(|&i| !matches!(written_value(self.all[i]), Some(v) if observed.contains(&v)))
    }
}
