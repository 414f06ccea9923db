//! The per-key search: Wing & Gong's depth-first search for a linearization with Lowe's
//! memoization, as Porcupine does it, written as a loop over an explicit stack so that a
//! history of any length cannot overflow the call stack.
//!
//! The events (calls and returns) of one key's operations sit in a doubly linked list in
//! time order. The search scans the list from its head: at a call it tries to place that
//! operation next (its step must fit the current value, and the pair (set placed, value
//! after) must be new); placing an operation lifts its call and return out of the list and
//! restarts the scan. Meeting a return means the operation returning there should have been
//! placed already, so the search takes back the last placed operation and scans on past it.
//!
//! Operations with an unknown result have no return event (their completion is +infinity),
//! so they never block the scan, and the search succeeds as soon as every operation with a
//! known result is placed: the unknown ones left over can all be placed at the end, where
//! they change nothing anyone observed.

use super::model::{Interner, Step, ValueId, ABSENT};
use super::{KvResult, Operation};
use std::collections::HashMap;
use std::collections::HashSet;
use xxhash_rust::xxh64::Xxh64Builder;

/// "No node" in the event list.
const NIL: u32 = u32::MAX;
/// The list head: a sentinel node before the first event.
const HEAD: u32 = 0;

/// One key's history, ready for [`search`]. Operations are numbered by invocation order.
pub(super) struct Prepared<'a> {
    /// The operations, in invocation order (reads with unknown results left out).
    pub ops: Vec<&'a Operation>,
    /// `steps[op]`: what `ops[op]` does to the key.
    pub steps: Vec<Step>,
    /// The values of this key.
    pub values: Interner,
    /// How many operations were left out as unable to matter (reads with unknown results,
    /// and writes with unknown results of values nobody observes).
    pub left_out: usize,
    /// `twin_prev[op]`: the previous operation (or [`NIL`]) that no order can tell apart
    /// from `ops[op]`: the same step, its call among the same run of consecutive calls and
    /// its return among the same run of consecutive returns (real time relates operations
    /// only through how calls and returns interleave). Swapping twins in an order changes
    /// nothing, so the search places twins in number order only.
    twin_prev: Vec<u32>,
    /// Bit `op` is set iff `ops[op]` has a known result (it has a return event).
    definite: Vec<u64>,
    definite_count: usize,
    /// `unknown_rank[op]`: the index of `ops[op]` among the unknown-result operations.
    unknown_rank: Vec<u32>,
    unknown_count: usize,
    /// `window_end[op]`: the operations invoked before `ops[op]` returns are exactly those
    /// numbered below this (meaningful for operations with a known result).
    window_end: Vec<u32>,
    /// Per list node (node 0 is [`HEAD`]): the operation of the event, and whether it is
    /// the call (else the return).
    node_op: Vec<u32>,
    node_is_call: Vec<bool>,
    call_node: Vec<u32>,
    return_node: Vec<u32>,
    /// The list links before any operation is placed.
    next: Vec<u32>,
    prev: Vec<u32>,
}

impl Prepared<'_> {
    fn is_definite(&self, op: u32) -> bool {
        bit(&self.definite, op)
    }
}

/// Orders one key's operations and builds the event list. The order of `ops` only breaks
/// ties between operations invoked at the same instant.
///
/// Two reductions, both exact, happen here. Values that no operation observes are merged
/// into [`UNOBSERVED`](super::model::UNOBSERVED). Operations with unknown results that can only write such a value are
/// dropped: placing one can only make later steps fail, and leaving it out is the same as
/// placing it at the very end.
pub(super) fn prepare<'a>(ops: &[&'a Operation]) -> Prepared<'a> {
    let mut values = Interner::default();
    let compiled: Vec<(&'a Operation, Step)> = ops
        .iter()
        .filter_map(|&op| Some((op, Step::compile(op, &mut values)?)))
        .collect();
    let observed: HashSet<ValueId> = compiled.iter().filter_map(|(_, s)| s.observed()).collect();
    let mut kept: Vec<(&'a Operation, Step)> = compiled
        .into_iter()
        .map(|(op, step)| (op, step.merge_unobserved(|v| observed.contains(&v))))
        .filter(|(op, step)| op.result != KvResult::Unknown || !step.writes_only_unobserved())
        .collect();
    let left_out = ops.len() - kept.len();
    kept.sort_by_key(|(op, _)| op.invoke_ns);
    let (ops, steps): (Vec<&Operation>, Vec<Step>) = kept.into_iter().unzip();
    let n = ops.len();
    let n_u32 = u32::try_from(n).expect("fewer than 2^32 operations on one key");

    let mut definite = vec![0u64; words(n)];
    let mut unknown_rank = vec![NIL; n];
    let mut unknown_count = 0usize;
    // (time, 0 for a call and 1 for a return, op): calls before returns at equal times, so
    // that touching intervals count as concurrent.
    let mut events: Vec<(u64, u8, u32)> = Vec::with_capacity(2 * n);
    for (id, op) in (0..n_u32).zip(&ops) {
        events.push((op.invoke_ns, 0, id));
        if op.result == KvResult::Unknown {
            unknown_rank[id as usize] = u32::try_from(unknown_count).expect("checked above");
            unknown_count += 1;
        } else {
            set_bit(&mut definite, id);
            events.push((op.complete_ns, 1, id));
        }
    }
    events.sort_unstable();

    let nodes = events.len() + 1;
    let mut node_op = vec![NIL; nodes];
    let mut node_is_call = vec![false; nodes];
    let mut call_node = vec![NIL; n];
    let mut return_node = vec![NIL; n];
    let mut window_end = vec![0u32; n];
    let mut calls_seen = 0u32;
    // Runs of consecutive events of one kind, numbered; unknown results return in run NIL.
    let (mut call_run, mut return_run) = (vec![0u32; n], vec![NIL; n]);
    let (mut run, mut run_kind) = (0u32, None);
    for (i, &(_, kind, id)) in events.iter().enumerate() {
        let node = u32::try_from(i + 1).expect("fewer than 2^32 events");
        if run_kind != Some(kind) {
            run += 1;
            run_kind = Some(kind);
        }
        node_op[node as usize] = id;
        if kind == 0 {
            node_is_call[node as usize] = true;
            call_node[id as usize] = node;
            call_run[id as usize] = run;
            debug_assert_eq!(calls_seen, id, "calls are listed in invocation order");
            calls_seen += 1;
        } else {
            return_node[id as usize] = node;
            return_run[id as usize] = run;
            window_end[id as usize] = calls_seen;
        }
    }
    let mut last_twin: HashMap<(Step, u32, u32), u32> = HashMap::new();
    let twin_prev: Vec<u32> = (0..n)
        .map(|id| {
            let class = (steps[id], call_run[id], return_run[id]);
            last_twin.insert(class, id as u32).unwrap_or(NIL)
        })
        .collect();
    let next: Vec<u32> = (0..nodes)
        .map(|i| if i + 1 < nodes { i as u32 + 1 } else { NIL })
        .collect();
    let prev: Vec<u32> = (0..nodes)
        .map(|i| if i == 0 { NIL } else { i as u32 - 1 })
        .collect();

    Prepared {
        definite_count: n - unknown_count,
        left_out,
        twin_prev,
        ops,
        steps,
        values,
        definite,
        unknown_rank,
        unknown_count,
        window_end,
        node_op,
        node_is_call,
        call_node,
        return_node,
        next,
        prev,
    }
}

/// How a search ended.
#[derive(Debug)]
pub(super) enum SearchOutcome {
    /// Every operation was placed.
    Linearizable,
    /// Every order was tried (or pruned as already tried); none works.
    NotLinearizable {
        /// The longest partial order found, if the search was asked to keep it.
        furthest: Option<Furthest>,
    },
    /// The step budget ran out first.
    Timeout,
}

/// The deepest point a failed search reached, to explain the failure.
#[derive(Debug)]
pub(super) struct Furthest {
    /// Operations placed, in order, each with the key's value after it.
    pub order: Vec<(u32, ValueId)>,
    /// The operation whose return stopped the scan there: it had to be placed before
    /// anything invoked after it completed. `None` if the scan ended without one.
    pub blocker: Option<u32>,
}

/// A search's outcome and the steps it took.
#[derive(Debug)]
pub(super) struct SearchRun {
    /// How it ended.
    pub outcome: SearchOutcome,
    /// Steps taken (never more than the budget given).
    pub steps: u64,
}

/// One placed operation, with what is needed to take it back.
struct Frame {
    op: u32,
    state_before: ValueId,
    first_open_before: u32,
}

/// Searches for a linearization of `p` in at most `steps_max` steps. With `trace`, a failed
/// search also reports the furthest it got (this copies the stack at each new depth, so it
/// is meant for small histories).
pub(super) fn search(p: &Prepared<'_>, steps_max: u64, trace: bool) -> SearchRun {
    let n = u32::try_from(p.ops.len()).expect("checked in prepare");
    let mut next = p.next.clone();
    let mut prev = p.prev.clone();
    let mut placed = vec![0u64; words(n as usize)];
    let mut placed_unknown = vec![0u64; words(p.unknown_count)];
    // Lowe's memo: the (placed set, value) pairs already reached. A pair reached again
    // leads to the same futures, so it is pruned.
    let mut memo: HashSet<Box<[u32]>, Xxh64Builder> = HashSet::with_hasher(Xxh64Builder::new(0));
    let mut memo_key: Vec<u32> = Vec::new();
    let mut stack: Vec<Frame> = Vec::new();
    let mut state = ABSENT;
    // The lowest-numbered known-result operation not placed yet (see `encode_placed`).
    let mut first_open = first_open_definite(p, &placed, 0);
    let mut definite_left = p.definite_count;
    let mut depth_max = 0usize;
    let mut furthest: Option<Furthest> = None;
    let mut steps = 0u64;
    if definite_left == 0 {
        return SearchRun {
            outcome: SearchOutcome::Linearizable,
            steps,
        };
    }

    let mut node = next[HEAD as usize];
    loop {
        if steps == steps_max {
            return SearchRun {
                outcome: SearchOutcome::Timeout,
                steps,
            };
        }
        steps += 1;
        // A known-result operation is left, so its return lies ahead and stops the scan
        // before the end of the list.
        assert_ne!(node, NIL, "the scan ran past every return");
        let op = p.node_op[node as usize];
        if p.node_is_call[node as usize] {
            let twin = p.twin_prev[op as usize];
            let twin_waits = twin != NIL && !bit(&placed, twin);
            if let Some(after) = p.steps[op as usize].apply(state).filter(|_| !twin_waits) {
                let definite = p.is_definite(op);
                if definite && definite_left == 1 {
                    return SearchRun {
                        outcome: SearchOutcome::Linearizable,
                        steps,
                    };
                }
                mark(p, &mut placed, &mut placed_unknown, op, true);
                let first_open_after = if op == first_open {
                    first_open_definite(p, &placed, op + 1)
                } else {
                    first_open
                };
                encode_placed(
                    p,
                    &placed,
                    &placed_unknown,
                    after,
                    first_open_after,
                    &mut memo_key,
                );
                if !memo.contains(&memo_key[..]) {
                    memo.insert(memo_key.as_slice().into());
                    stack.push(Frame {
                        op,
                        state_before: state,
                        first_open_before: first_open,
                    });
                    state = after;
                    first_open = first_open_after;
                    definite_left -= usize::from(definite);
                    lift(p, &mut next, &mut prev, op);
                    node = next[HEAD as usize];
                    if trace && stack.len() > depth_max {
                        depth_max = stack.len();
                        furthest = Some(snapshot(p, &next, &stack, state));
                    }
                    continue;
                }
                mark(p, &mut placed, &mut placed_unknown, op, false);
            }
            node = next[node as usize];
        } else {
            let Some(frame) = stack.pop() else {
                return SearchRun {
                    outcome: SearchOutcome::NotLinearizable { furthest },
                    steps,
                };
            };
            mark(p, &mut placed, &mut placed_unknown, frame.op, false);
            state = frame.state_before;
            first_open = frame.first_open_before;
            definite_left += usize::from(p.is_definite(frame.op));
            unlift(p, &mut next, &mut prev, frame.op);
            node = next[p.call_node[frame.op as usize] as usize];
        }
    }
}

/// Writes into `out` a description of (placed set, value) that identifies it exactly and
/// stays small: the value, `first_open`, the known-result operations placed above
/// `first_open`, and the bitmap of placed unknown-result operations. All known-result
/// operations below `first_open` are placed by its definition. Those placed above it were
/// all invoked before `first_open` returns (the scan never passes a return, and the return
/// of `first_open` is still in the list), so they lie below `window_end[first_open]` and
/// their number is bounded by how many operations overlap one, not by the history length.
fn encode_placed(
    p: &Prepared<'_>,
    placed: &[u64],
    placed_unknown: &[u64],
    state: ValueId,
    first_open: u32,
    out: &mut Vec<u32>,
) {
    out.clear();
    out.push(state);
    out.push(first_open);
    let end = p.window_end[first_open as usize];
    if cfg!(debug_assertions) {
        let mut stray = None;
        for_each_common_bit(placed, &p.definite, end, p.ops.len() as u32, |op| {
            stray.get_or_insert(op);
        });
        assert_eq!(
            stray, None,
            "a placed operation lies past the window of first_open"
        );
    }
    for_each_common_bit(placed, &p.definite, first_open + 1, end, |op| out.push(op));
    for &w in placed_unknown {
        out.push(w as u32);
        out.push((w >> 32) as u32);
    }
}

/// The lowest-numbered known-result operation at or above `from` not placed yet (the
/// number of operations if none).
fn first_open_definite(p: &Prepared<'_>, placed: &[u64], from: u32) -> u32 {
    let n = p.ops.len() as u32;
    let mut word = (from / 64) as usize;
    if from >= n {
        return n;
    }
    let mut bits = p.definite[word] & !placed[word] & (!0u64 << (from % 64));
    loop {
        if bits != 0 {
            return (word as u32 * 64 + bits.trailing_zeros()).min(n);
        }
        word += 1;
        if word == p.definite.len() {
            return n;
        }
        bits = p.definite[word] & !placed[word];
    }
}

/// Calls `f` with every bit index in `lo..hi` set in both `a` and `b`, in increasing order.
fn for_each_common_bit(a: &[u64], b: &[u64], lo: u32, hi: u32, mut f: impl FnMut(u32)) {
    if lo >= hi {
        return;
    }
    let (first, last) = ((lo / 64) as usize, ((hi - 1) / 64) as usize);
    for word in first..=last {
        let mut bits = a[word] & b[word];
        if word == first {
            bits &= !0u64 << (lo % 64);
        }
        let tail_bits = hi % 64;
        if word == last && tail_bits > 0 {
            bits &= !0u64 >> (64 - tail_bits);
        }
        while bits != 0 {
            f(word as u32 * 64 + bits.trailing_zeros());
            bits &= bits - 1;
        }
    }
}

/// Sets (or clears) `op` in the placed sets.
fn mark(p: &Prepared<'_>, placed: &mut [u64], placed_unknown: &mut [u64], op: u32, on: bool) {
    put_bit(placed, op, on);
    let rank = p.unknown_rank[op as usize];
    if rank != NIL {
        put_bit(placed_unknown, rank, on);
    }
}

/// Takes the events of `op` out of the list.
fn lift(p: &Prepared<'_>, next: &mut [u32], prev: &mut [u32], op: u32) {
    unlink(next, prev, p.call_node[op as usize]);
    let ret = p.return_node[op as usize];
    if ret != NIL {
        unlink(next, prev, ret);
    }
}

/// Puts the events of `op` back; undoes the latest [`lift`] (dancing links: a removed node
/// keeps its own links, so restoring in reverse order of removal is exact).
fn unlift(p: &Prepared<'_>, next: &mut [u32], prev: &mut [u32], op: u32) {
    let ret = p.return_node[op as usize];
    if ret != NIL {
        relink(next, prev, ret);
    }
    relink(next, prev, p.call_node[op as usize]);
}

fn unlink(next: &mut [u32], prev: &mut [u32], node: u32) {
    let (before, after) = (prev[node as usize], next[node as usize]);
    next[before as usize] = after;
    if after != NIL {
        prev[after as usize] = before;
    }
}

fn relink(next: &mut [u32], prev: &mut [u32], node: u32) {
    let (before, after) = (prev[node as usize], next[node as usize]);
    next[before as usize] = node;
    if after != NIL {
        prev[after as usize] = node;
    }
}

/// The current partial order and the return that will stop the next scan.
fn snapshot(p: &Prepared<'_>, next: &[u32], stack: &[Frame], state: ValueId) -> Furthest {
    let order = stack
        .iter()
        .enumerate()
        .map(|(i, frame)| {
            let after = stack.get(i + 1).map_or(state, |f| f.state_before);
            (frame.op, after)
        })
        .collect();
    let mut node = next[HEAD as usize];
    while node != NIL && p.node_is_call[node as usize] {
        node = next[node as usize];
    }
    Furthest {
        order,
        blocker: (node != NIL).then(|| p.node_op[node as usize]),
    }
}

fn words(bits: usize) -> usize {
    bits.div_ceil(64)
}

fn bit(set: &[u64], i: u32) -> bool {
    set[(i / 64) as usize] & (1u64 << (i % 64)) != 0
}

fn set_bit(set: &mut [u64], i: u32) {
    set[(i / 64) as usize] |= 1u64 << (i % 64);
}

fn put_bit(set: &mut [u64], i: u32, on: bool) {
    let mask = 1u64 << (i % 64);
    let word = &mut set[(i / 64) as usize];
    if on {
        *word |= mask;
    } else {
        *word &= !mask;
    }
}
