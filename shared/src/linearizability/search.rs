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

use super::model::{Interner, Step, ValueId, ABSENT, UNOBSERVED};
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
    /// Bit `op` is set iff `ops[op]` has an unknown result (the complement of `definite`).
    unknown: Vec<u64>,
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
/// into [`UNOBSERVED`]. Operations with unknown results that can only write such a value are
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
    let mut unknown = vec![0u64; words(n)];
    let mut unknown_count = 0usize;
    // (time, 0 for a call and 1 for a return, op): calls before returns at equal times, so
    // that touching intervals count as concurrent.
    let mut events: Vec<(u64, u8, u32)> = Vec::with_capacity(2 * n);
    for (id, op) in (0..n_u32).zip(&ops) {
        events.push((op.invoke_ns, 0, id));
        if op.result == KvResult::Unknown {
            set_bit(&mut unknown, id);
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
        unknown,
        window_end,
        node_op,
        node_is_call,
        call_node,
        return_node,
        next,
        prev,
    }
}

/// What one search may spend.
#[derive(Clone, Copy, Debug)]
pub(super) struct Limits {
    /// Steps (see [`super::CheckBudget`]).
    pub steps_max: u64,
    /// Approximate bytes of memo entries.
    pub memo_bytes_max: u64,
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
    /// The step or memory budget ran out first.
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

/// Bytes a memo entry costs beyond its `u32`s: the boxed slice's pointer and length, and
/// the hash table's slot and control byte, roughly.
const MEMO_ENTRY_OVERHEAD_BYTES: u64 = 40;

/// The mutable state of one search: the event list with placed operations lifted out,
/// the placed set, the value, and the stack to take placements back.
struct Search<'p, 'a> {
    p: &'p Prepared<'a>,
    next: Vec<u32>,
    prev: Vec<u32>,
    placed: Vec<u64>,
    state: ValueId,
    /// The lowest-numbered known-result operation not placed yet (see [`Search::encode`]).
    first_open: u32,
    /// The lowest-numbered unknown-result operation not placed yet.
    first_open_unknown: u32,
    definite_left: usize,
    stack: Vec<Frame>,
}

/// One placed operation, with what is needed to take it back.
struct Frame {
    op: u32,
    /// Placed as a ready read: the configuration below has no other option worth trying.
    forced: bool,
    state_before: ValueId,
    first_open_before: u32,
    first_open_unknown_before: u32,
}

/// Where the search loop is.
enum Mode {
    /// Just reached a new configuration (after a placement, or at the start).
    Arrived,
    /// Trying the candidates of the current configuration, from this list node on.
    Scanning(u32),
    /// The current configuration has no completion: take placements back.
    Failing,
}

/// Searches for a linearization of `p` within `limits`. With `trace`, a failed search also
/// reports the furthest it got (this copies the stack at each new depth, so it is meant for
/// small histories).
///
/// Besides Wing-Gong's scan and Lowe's memo, three rules cut down the orders tried; each
/// keeps at least one linearization if any exists (see docs/LINEARIZABILITY.md):
/// - a read whose value matches now is placed at once, without trying alternatives (a read
///   changes nothing, and moving it earlier respects real time);
/// - twins are placed in number order (see [`Prepared`]);
/// - a write of a value nobody reads is placed only as the lowest-numbered such write
///   that may go now, and no other blind write goes while one of those may go (they are
///   placed in a batch right before the blind write that overwrites them).
pub(super) fn search(p: &Prepared<'_>, limits: Limits, trace: bool) -> SearchRun {
    let n = p.ops.len() as u32;
    let placed = vec![0u64; words(n as usize)];
    let mut s = Search {
        p,
        next: p.next.clone(),
        prev: p.prev.clone(),
        first_open: first_unplaced(&p.definite, &placed, 0, n),
        first_open_unknown: first_unplaced(&p.unknown, &placed, 0, n),
        placed,
        state: ABSENT,
        definite_left: p.definite_count,
        stack: Vec::new(),
    };
    // Lowe's memo: the (placed set, value) pairs already reached. A pair is reached again
    // only after its first visit failed (the placed set grows along a path), so it is pruned.
    let mut memo: HashSet<Box<[u32]>, Xxh64Builder> = HashSet::with_hasher(Xxh64Builder::new(0));
    let mut memo_bytes = 0u64;
    let mut memo_key: Vec<u32> = Vec::new();
    let mut depth_max = 0usize;
    let mut furthest: Option<Furthest> = None;
    let mut steps = 0u64;
    let end = |outcome, steps| SearchRun { outcome, steps };
    if s.definite_left == 0 {
        return end(SearchOutcome::Linearizable, steps);
    }

    let mut mode = Mode::Arrived;
    // The lowest-numbered unplaced write of an unobserved value that may go now (NIL if
    // none), for the current configuration.
    let mut batch_next = NIL;
    loop {
        if steps == limits.steps_max || memo_bytes > limits.memo_bytes_max {
            return end(SearchOutcome::Timeout, steps);
        }
        steps += 1;
        let (op, forced) = match mode {
            Mode::Failing => {
                // Take back placements up to the last one that had alternatives.
                let Some(frame) = s.take_back() else {
                    return end(SearchOutcome::NotLinearizable { furthest }, steps);
                };
                if !frame.forced {
                    batch_next = s.window().batch_next;
                    mode = Mode::Scanning(s.next[p.call_node[frame.op as usize] as usize]);
                }
                continue;
            }
            Mode::Arrived => {
                let window = s.window();
                batch_next = window.batch_next;
                match window.ready_read {
                    Some(read) => (read, true),
                    None => {
                        mode = Mode::Scanning(s.next[HEAD as usize]);
                        continue;
                    }
                }
            }
            Mode::Scanning(node) => {
                // A known-result operation is left, so its return lies ahead and stops the
                // scan before the end of the list.
                assert_ne!(node, NIL, "the scan ran past every return");
                if !p.node_is_call[node as usize] {
                    // This operation had to be placed by now.
                    mode = Mode::Failing;
                    continue;
                }
                let op = p.node_op[node as usize];
                if !s.may_go(op, batch_next) {
                    mode = Mode::Scanning(s.next[node as usize]);
                    continue;
                }
                (op, false)
            }
        };
        // Place `op` if the (placed set, value) it leads to is new.
        let Some(after) = p.steps[op as usize].apply(s.state) else {
            debug_assert!(!forced, "a ready read does not fit");
            let Mode::Scanning(node) = mode else {
                unreachable!("only scanned candidates can fail to fit")
            };
            mode = Mode::Scanning(s.next[node as usize]);
            continue;
        };
        if p.is_definite(op) && s.definite_left == 1 {
            return end(SearchOutcome::Linearizable, steps);
        }
        s.place(op, after, forced);
        s.encode(&mut memo_key);
        if memo.contains(&memo_key[..]) {
            s.take_back();
            mode = match mode {
                Mode::Scanning(node) => Mode::Scanning(s.next[node as usize]),
                _ => Mode::Failing,
            };
            continue;
        }
        memo_bytes += memo_key.len() as u64 * 4 + MEMO_ENTRY_OVERHEAD_BYTES;
        memo.insert(memo_key.as_slice().into());
        mode = Mode::Arrived;
        if trace && s.stack.len() > depth_max {
            depth_max = s.stack.len();
            furthest = Some(s.snapshot());
        }
    }
}

/// What the operations that may go now (calls before the first return) offer.
struct Window {
    /// A read that fits the current value (the lowest-numbered one), if any.
    ready_read: Option<u32>,
    /// The lowest-numbered write of an unobserved value, or NIL.
    batch_next: u32,
}

impl Search<'_, '_> {
    /// Places `op` next, leaving the key at value `after`.
    fn place(&mut self, op: u32, after: ValueId, forced: bool) {
        let n = self.p.ops.len() as u32;
        self.stack.push(Frame {
            op,
            forced,
            state_before: self.state,
            first_open_before: self.first_open,
            first_open_unknown_before: self.first_open_unknown,
        });
        put_bit(&mut self.placed, op, true);
        self.state = after;
        if self.p.is_definite(op) {
            self.definite_left -= 1;
            if op == self.first_open {
                self.first_open = first_unplaced(&self.p.definite, &self.placed, op + 1, n);
            }
        } else if op == self.first_open_unknown {
            self.first_open_unknown = first_unplaced(&self.p.unknown, &self.placed, op + 1, n);
        }
        lift(self.p, &mut self.next, &mut self.prev, op);
    }

    /// Takes back the last placement and returns it (`None` if nothing is placed).
    fn take_back(&mut self) -> Option<Frame> {
        let frame = self.stack.pop()?;
        put_bit(&mut self.placed, frame.op, false);
        self.state = frame.state_before;
        self.first_open = frame.first_open_before;
        self.first_open_unknown = frame.first_open_unknown_before;
        self.definite_left += usize::from(self.p.is_definite(frame.op));
        unlift(self.p, &mut self.next, &mut self.prev, frame.op);
        Some(frame)
    }

    /// Scans the operations that may go now: those whose call precedes every remaining
    /// return (any operation that must precede them is placed).
    fn window(&self) -> Window {
        let mut window = Window {
            ready_read: None,
            batch_next: NIL,
        };
        let mut node = self.next[HEAD as usize];
        while node != NIL && self.p.node_is_call[node as usize] {
            let op = self.p.node_op[node as usize];
            match self.p.steps[op as usize] {
                Step::Observe(v)
                    if v == self.state && window.ready_read.is_none() && self.twin_placed(op) =>
                {
                    window.ready_read = Some(op);
                }
                Step::Write(UNOBSERVED) if window.batch_next == NIL => window.batch_next = op,
                _ => {}
            }
            node = self.next[node as usize];
        }
        window
    }

    /// True if `op`'s previous twin (if any) is placed.
    fn twin_placed(&self, op: u32) -> bool {
        let twin = self.p.twin_prev[op as usize];
        twin == NIL || bit(&self.placed, twin)
    }

    /// True if the rules let `op` (a call in the window) be tried next, `batch_next` being
    /// the window's lowest-numbered write of an unobserved value.
    fn may_go(&self, op: u32, batch_next: u32) -> bool {
        let batch_rule = match self.p.steps[op as usize] {
            Step::Write(UNOBSERVED) => op == batch_next,
            Step::Write(_) => batch_next == NIL,
            _ => true,
        };
        batch_rule && self.twin_placed(op)
    }

    /// Writes into `out` a description of (placed set, value) that identifies it exactly
    /// and stays small:
    /// `[value, first_open, a, A.., b, B.., C..]` where `A` lists the known-result
    /// operations placed above `first_open` (`a` of them), `B` the unknown-result ones
    /// not placed below it (`b`), `C` the unknown-result ones placed above it. The rest
    /// follows: below `first_open` every known-result operation is placed (by definition)
    /// and every unknown-result one not in `B`; above it, only those listed.
    ///
    /// Everything placed above `first_open` was invoked before `first_open` returns: the
    /// scan never passes a return, and `first_open`'s return is still in the list. So `A`
    /// and `C` lie below `window_end[first_open]`, and their length is bounded by how many
    /// operations overlap one, not by the history length. `B` holds unknown-result
    /// operations left out so far, scanned from the lowest one (below which all are placed).
    fn encode(&self, out: &mut Vec<u32>) {
        let p = self.p;
        let first_open = self.first_open;
        let window_end = p.window_end[first_open as usize];
        if cfg!(debug_assertions) {
            let mut stray = None;
            for_each_bit(
                window_end,
                p.ops.len() as u32,
                |w| self.placed[w],
                |op| {
                    stray.get_or_insert(op);
                },
            );
            assert_eq!(
                stray, None,
                "an operation placed past the window of first_open"
            );
        }
        out.clear();
        out.extend([self.state, first_open]);
        let placed = &self.placed;
        let counted = |out: &mut Vec<u32>, lo, hi, word: &dyn Fn(usize) -> u64| {
            let count_at = out.len();
            out.push(0);
            for_each_bit(lo, hi, word, |op| out.push(op));
            out[count_at] = (out.len() - count_at - 1) as u32;
        };
        counted(out, first_open + 1, window_end, &|w| {
            placed[w] & p.definite[w]
        });
        let below = self.first_open_unknown.min(first_open);
        counted(out, below, first_open, &|w| !placed[w] & p.unknown[w]);
        for_each_bit(
            first_open + 1,
            window_end,
            |w| placed[w] & p.unknown[w],
            |op| out.push(op),
        );
    }

    /// The current partial order and the return that will stop the next scan.
    fn snapshot(&self) -> Furthest {
        let order = self
            .stack
            .iter()
            .enumerate()
            .map(|(i, frame)| {
                let after = self.stack.get(i + 1).map_or(self.state, |f| f.state_before);
                (frame.op, after)
            })
            .collect();
        let mut node = self.next[HEAD as usize];
        while node != NIL && self.p.node_is_call[node as usize] {
            node = self.next[node as usize];
        }
        Furthest {
            order,
            blocker: (node != NIL).then(|| self.p.node_op[node as usize]),
        }
    }
}

/// The lowest bit at or above `from` set in `kind` but not in `placed` (`n` if none).
fn first_unplaced(kind: &[u64], placed: &[u64], from: u32, n: u32) -> u32 {
    if from >= n {
        return n;
    }
    let mut word = (from / 64) as usize;
    let mut bits = kind[word] & !placed[word] & (!0u64 << (from % 64));
    loop {
        if bits != 0 {
            return (word as u32 * 64 + bits.trailing_zeros()).min(n);
        }
        word += 1;
        if word == kind.len() {
            return n;
        }
        bits = kind[word] & !placed[word];
    }
}

/// Calls `f` with every bit index in `lo..hi` set in the bitmap whose `i`th 64-bit word
/// is `word(i)`, in increasing order.
fn for_each_bit(lo: u32, hi: u32, word: impl Fn(usize) -> u64, mut f: impl FnMut(u32)) {
    if lo >= hi {
        return;
    }
    let (first, last) = ((lo / 64) as usize, ((hi - 1) / 64) as usize);
    for i in first..=last {
        let mut bits = word(i);
        if i == first {
            bits &= !0u64 << (lo % 64);
        }
        let tail_bits = hi % 64;
        if i == last && tail_bits > 0 {
            bits &= !0u64 >> (64 - tail_bits);
        }
        while bits != 0 {
            f(i as u32 * 64 + bits.trailing_zeros());
            bits &= bits - 1;
        }
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
