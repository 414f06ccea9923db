//! Hand-written histories with a known answer: each known-bad one is a classic way a
//! replicated store goes wrong, each known-good one a way a correct store may legally look
//! odd.

use super::*;

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

/// An operation on key `k` by `client` over `[invoke, complete]`.
fn op(client: u64, op: KvOp, result: KvResult, invoke_ns: u64, complete_ns: u64) -> Operation {
    Operation {
        client,
        key: b("k"),
        op,
        result,
        invoke_ns,
        complete_ns,
    }
}

fn put(client: u64, v: &str, result: KvResult, t: (u64, u64)) -> Operation {
    op(client, KvOp::Put(b(v)), result, t.0, t.1)
}

fn get(client: u64, seen: Option<&str>, t: (u64, u64)) -> Operation {
    op(client, KvOp::Get, KvResult::Value(seen.map(b)), t.0, t.1)
}

fn del(client: u64, t: (u64, u64)) -> Operation {
    op(client, KvOp::Delete, KvResult::Done, t.0, t.1)
}

fn cas(
    client: u64,
    expected: Option<&str>,
    new: &str,
    result: KvResult,
    t: (u64, u64),
) -> Operation {
    let op_ = KvOp::Cas {
        expected: expected.map(b),
        new: b(new),
    };
    op(client, op_, result, t.0, t.1)
}

fn mismatch(current: Option<&str>) -> KvResult {
    KvResult::CasMismatch {
        current: current.map(b),
    }
}

fn verdict(history: &[Operation]) -> Verdict {
    check(history, CheckBudget::default())
}

fn assert_ok(history: &[Operation]) {
    let v = verdict(history);
    assert_eq!(v, Verdict::Linearizable, "history: {history:#?}");
}

/// Asserts the history fails and returns the minimal history and explanation.
fn assert_bad(history: &[Operation]) -> (Vec<Operation>, String) {
    match verdict(history) {
        Verdict::NotLinearizable {
            key,
            minimal_history,
            explanation,
        } => {
            assert_eq!(key, b("k"));
            // The shrunk history must itself fail.
            assert!(
                !check(&minimal_history, CheckBudget::default()).is_linearizable(),
                "minimal history passes: {minimal_history:#?}"
            );
            (minimal_history, explanation)
        }
        other => panic!("expected NotLinearizable, got {other:?} for {history:#?}"),
    }
}

const DONE: KvResult = KvResult::Done;
const UNKNOWN: KvResult = KvResult::Unknown;

// ---- known good ----

#[test]
fn empty_history_is_linearizable() {
    assert_ok(&[]);
}

#[test]
fn sequential_put_get_delete_get() {
    assert_ok(&[
        get(1, None, (0, 5)),
        put(1, "a", DONE, (10, 20)),
        get(2, Some("a"), (30, 40)),
        del(1, (50, 60)),
        get(2, None, (70, 80)),
    ]);
}

#[test]
fn concurrent_writes_may_take_effect_in_either_order() {
    let writes = [put(1, "a", DONE, (0, 100)), put(2, "b", DONE, (0, 100))];
    for last in ["a", "b"] {
        let mut h = writes.to_vec();
        h.push(get(3, Some(last), (200, 210)));
        assert_ok(&h);
    }
}

#[test]
fn read_overlapping_a_write_may_see_old_or_new() {
    for seen in [None, Some("a")] {
        assert_ok(&[put(1, "a", DONE, (10, 50)), get(2, seen, (20, 30))]);
    }
}

#[test]
fn cas_chain_from_absent() {
    assert_ok(&[
        cas(1, None, "1", KvResult::CasOk, (0, 10)),
        cas(2, Some("1"), "2", KvResult::CasOk, (20, 30)),
        cas(3, Some("1"), "3", mismatch(Some("2")), (40, 50)),
        cas(1, Some("2"), "3", KvResult::CasOk, (60, 70)),
        get(2, Some("3"), (80, 90)),
    ]);
}

#[test]
fn concurrent_cas_exactly_one_wins() {
    assert_ok(&[
        put(1, "0", DONE, (0, 10)),
        cas(2, Some("0"), "x", KvResult::CasOk, (20, 60)),
        cas(3, Some("0"), "y", mismatch(Some("x")), (20, 60)),
        get(1, Some("x"), (70, 80)),
    ]);
}

#[test]
fn unknown_write_that_applied_long_after_the_client_gave_up() {
    // The client gave up at 20; the write surfaced only after two reads saw nothing.
    assert_ok(&[
        put(1, "a", UNKNOWN, (10, 20)),
        get(2, None, (30, 40)),
        get(2, None, (50, 60)),
        get(2, Some("a"), (70, 80)),
        get(3, Some("a"), (90, 100)),
    ]);
}

#[test]
fn unknown_write_that_never_applied() {
    assert_ok(&[
        put(1, "a", DONE, (0, 10)),
        put(1, "b", UNKNOWN, (20, 30)),
        get(2, Some("a"), (40, 50)),
        get(2, Some("a"), (1_000, 1_010)),
    ]);
}

#[test]
fn unknown_cas_and_unknown_reads() {
    assert_ok(&[
        put(1, "a", DONE, (0, 10)),
        cas(2, Some("a"), "b", UNKNOWN, (20, 30)),
        op(3, KvOp::Get, UNKNOWN, 25, 26),
        get(3, Some("b"), (40, 50)),
    ]);
}

#[test]
fn operations_touching_at_one_instant_count_as_concurrent() {
    // The get is invoked at the instant the put completes; either order is allowed.
    assert_ok(&[put(1, "a", DONE, (0, 10)), get(2, None, (10, 20))]);
}

#[test]
fn history_order_does_not_matter() {
    let mut h = vec![
        put(1, "a", DONE, (0, 10)),
        put(2, "b", DONE, (20, 30)),
        get(3, Some("b"), (40, 50)),
    ];
    h.reverse();
    assert_ok(&h);
}

// ---- known bad ----

#[test]
fn stale_read_after_a_completed_write() {
    let (minimal, explanation) = assert_bad(&[
        put(1, "a", DONE, (0, 10)),
        put(2, "b", DONE, (20, 30)),
        get(3, Some("a"), (40, 50)),
    ]);
    // All three are needed: without the second put the read is fine, and the first put
    // must stay because the read observes its value.
    assert_eq!(minimal.len(), 3, "{minimal:#?}");
    assert!(
        explanation.contains("#1, after which the value is b\"b\" (read by none of these operations)\nThen #2 must take effect"),
        "{explanation}"
    );
}

#[test]
fn read_of_a_value_never_written() {
    let (minimal, explanation) = assert_bad(&[
        put(1, "a", DONE, (0, 10)),
        get(2, Some("zz"), (20, 30)),
        put(1, "b", DONE, (40, 50)),
    ]);
    assert_eq!(minimal, vec![get(2, Some("zz"), (20, 30))]);
    assert!(
        explanation.contains("observes b\"zz\", which no operation on this key writes"),
        "{explanation}"
    );
}

#[test]
fn lost_acknowledged_write() {
    let (minimal, _) = assert_bad(&[
        put(1, "a", DONE, (0, 10)),
        get(2, Some("a"), (20, 30)),
        get(3, None, (40, 50)),
    ]);
    assert!(minimal.contains(&get(3, None, (40, 50))), "{minimal:#?}");
}

#[test]
fn cas_reported_ok_against_a_value_already_overwritten() {
    assert_bad(&[
        put(1, "a", DONE, (0, 10)),
        put(1, "b", DONE, (20, 30)),
        cas(2, Some("a"), "c", KvResult::CasOk, (40, 50)),
    ]);
}

#[test]
fn cas_mismatch_reporting_a_wrong_current_value() {
    assert_bad(&[
        put(1, "a", DONE, (0, 10)),
        cas(2, Some("x"), "c", mismatch(None), (20, 30)),
    ]);
}

#[test]
fn two_readers_see_concurrent_writes_in_opposite_orders() {
    let (minimal, _) = assert_bad(&[
        put(1, "a", DONE, (0, 100)),
        put(2, "b", DONE, (0, 100)),
        get(3, Some("a"), (10, 20)),
        get(3, Some("b"), (50, 60)),
        get(4, Some("b"), (10, 20)),
        get(4, Some("a"), (50, 60)),
    ]);
    assert!(minimal.len() >= 4, "{minimal:#?}");
}

#[test]
fn unknown_write_cannot_take_effect_before_it_is_invoked() {
    assert_bad(&[get(1, Some("a"), (0, 10)), put(2, "a", UNKNOWN, (20, 30))]);
}

#[test]
fn write_undone_by_nothing() {
    // A delete that definitely completed cannot be skipped.
    assert_bad(&[
        put(1, "a", DONE, (0, 10)),
        del(2, (20, 30)),
        get(1, Some("a"), (40, 50)),
    ]);
}

#[test]
fn result_of_the_wrong_kind_is_not_linearizable() {
    let h = [op(1, KvOp::Get, DONE, 0, 10)];
    match verdict(&h) {
        Verdict::NotLinearizable {
            minimal_history,
            explanation,
            ..
        } => {
            assert_eq!(minimal_history, h.to_vec());
            assert!(explanation.contains("never gives"), "{explanation}");
        }
        other => panic!("{other:?}"),
    }
}

// ---- keys, budget, shrinking ----

#[test]
fn keys_are_checked_independently_and_the_failing_one_is_named() {
    let mut h = vec![put(1, "a", DONE, (0, 10)), get(2, Some("a"), (20, 30))];
    let mut other = get(2, Some("a"), (20, 30));
    other.key = b("other");
    h.push(other);
    match verdict(&h) {
        Verdict::NotLinearizable {
            key,
            minimal_history,
            ..
        } => {
            assert_eq!(key, b("other"));
            assert!(minimal_history.iter().all(|o| o.key == b("other")));
        }
        v => panic!("{v:?}"),
    }
}

#[test]
fn an_exhausted_budget_reports_timeout_not_a_verdict() {
    let h: Vec<Operation> = (0..20)
        .map(|i| put(i, &i.to_string(), DONE, (0, 100)))
        .chain([get(99, Some("0"), (200, 210))])
        .collect();
    let budget = CheckBudget {
        steps_per_key_max: 5,
        ..CheckBudget::default()
    };
    assert_eq!(check(&h, budget), Verdict::Timeout { key: b("k") });
    assert_ok(&h);
}

#[test]
fn a_failing_key_wins_over_one_that_timed_out() {
    let mut h: Vec<Operation> = (0..20)
        .map(|i| put(i, &i.to_string(), DONE, (0, 100)))
        .chain([get(99, Some("0"), (200, 210))])
        .collect();
    let mut bad = get(1, Some("zz"), (0, 1));
    bad.key = b("z-last");
    h.push(bad);
    let budget = CheckBudget {
        steps_per_key_max: 5,
        ..CheckBudget::default()
    };
    assert!(
        matches!(check(&h, budget), Verdict::NotLinearizable { key, .. } if key == b("z-last"))
    );
}

#[test]
fn shrinking_drops_the_noise_around_a_stale_read() {
    let mut h = Vec::new();
    // Noise: 200 correct operations on the key before and after the failure.
    let mut t = 0;
    for i in 0..100 {
        h.push(put(1, &format!("n{i}"), DONE, (t, t + 5)));
        h.push(get(2, Some(&format!("n{i}")), (t + 6, t + 8)));
        t += 10;
    }
    h.push(put(1, "a", DONE, (t, t + 5)));
    h.push(put(1, "b", DONE, (t + 10, t + 15)));
    h.push(get(2, Some("a"), (t + 20, t + 25)));
    for i in 0..100 {
        let t = t + 30 + 10 * i;
        h.push(put(1, &format!("m{i}"), DONE, (t, t + 5)));
    }
    let (minimal, _) = assert_bad(&h);
    assert_eq!(
        minimal,
        vec![
            put(1, "a", DONE, (t, t + 5)),
            put(1, "b", DONE, (t + 10, t + 15)),
            get(2, Some("a"), (t + 20, t + 25)),
        ]
    );
}

#[test]
fn zero_shrink_budget_returns_the_whole_key_history() {
    let h = [
        put(1, "a", DONE, (0, 10)),
        put(1, "b", DONE, (20, 30)),
        get(2, Some("zz"), (40, 50)),
    ];
    let budget = CheckBudget {
        shrink_steps_max: 0,
        ..CheckBudget::default()
    };
    match check(&h, budget) {
        Verdict::NotLinearizable {
            minimal_history, ..
        } => assert_eq!(minimal_history, h.to_vec()),
        v => panic!("{v:?}"),
    }
}

#[test]
#[should_panic(expected = "completes before it is invoked")]
fn completion_before_invocation_is_a_caller_bug() {
    check(&[put(1, "a", DONE, (10, 5))], CheckBudget::default());
}

#[test]
fn display_is_one_readable_line() {
    assert_eq!(
        cas(7, None, "v\n", mismatch(Some("w")), (1, 2)).to_string(),
        "c7 cas absent -> b\"v\\n\" => mismatch (found b\"w\") [1, 2]"
    );
    assert_eq!(
        put(1, "x", UNKNOWN, (5, 9)).to_string(),
        "c1 put b\"x\" => unknown [5, inf)"
    );
}
