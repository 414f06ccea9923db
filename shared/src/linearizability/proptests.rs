//! Generated histories: correct by construction (a sequential model run at random instants
//! inside random overlapping intervals), the same with one read corrupted, tiny random
//! histories compared against a brute-force checker, and large histories for speed.

use super::*;
use proptest::prelude::*;
use proptest::sample::Index;

/// One generated request, before timing and results are worked out.
#[derive(Clone, Debug)]
struct Spec {
    client: u8,
    key: u16,
    /// 0-3 get, 4-6 put, 7 delete, 8-9 compare-and-set.
    kind: u8,
    gap_ns: u16,
    dur_ns: u16,
    /// Where inside its interval the request takes effect, in thousandths.
    lin_permille: u16,
    /// 0: unknown result but applied (possibly long after the client gave up);
    /// 1: unknown result and never applied; else a known result.
    fate: u8,
    cas_pick: u8,
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        (any::<u8>(), any::<u16>(), 0u8..10, 0u16..30),
        (1u16..60, 0u16..=1000, 0u8..20, any::<u8>()),
    )
        .prop_map(
            |((client, key, kind, gap_ns), (dur_ns, lin_permille, fate, cas_pick))| Spec {
                client,
                key,
                kind,
                gap_ns,
                dur_ns,
                lin_permille,
                fate,
                cas_pick,
            },
        )
}

/// Builds a linearizable history: each client issues its requests one after another, each
/// request takes effect at one instant inside its interval (an unknown-result write at any
/// instant after its invocation, or never), and results come from running a map in the
/// order of those instants.
fn build(specs: &[Spec], clients: usize, keys: usize) -> Vec<Operation> {
    let mut client_free_ns = vec![0u64; clients];
    let mut ops = Vec::with_capacity(specs.len());
    // (instant it takes effect, index) of each request that takes effect.
    let mut effects: Vec<(u64, usize)> = Vec::new();
    for (i, s) in specs.iter().enumerate() {
        let client = s.client as usize % clients;
        let invoke_ns = client_free_ns[client] + u64::from(s.gap_ns);
        let complete_ns = invoke_ns + u64::from(s.dur_ns);
        client_free_ns[client] = complete_ns + 1;
        let op = match s.kind {
            0..=3 => KvOp::Get,
            4..=6 => KvOp::Put(Bytes::from(format!("v{i}"))),
            7 => KvOp::Delete,
            _ => KvOp::Cas {
                expected: None,
                new: Bytes::from(format!("v{i}")),
            },
        };
        let offset_ns = u64::from(s.dur_ns) * u64::from(s.lin_permille) / 1000;
        match (s.fate, &op) {
            (1, _) | (0, KvOp::Get) => {}
            (0, _) => effects.push((invoke_ns + 10 * offset_ns, i)),
            _ => effects.push((invoke_ns + offset_ns, i)),
        }
        let result = if s.fate < 2 {
            KvResult::Unknown
        } else {
            KvResult::Done
        };
        ops.push(Operation {
            client: client as u64,
            key: Bytes::from(format!("k{}", usize::from(s.key) % keys)),
            op,
            result,
            invoke_ns,
            complete_ns,
        });
    }
    effects.sort_unstable();
    let mut map: HashMap<Bytes, Bytes> = HashMap::new();
    for (_, i) in effects {
        let known = ops[i].result != KvResult::Unknown;
        let key = ops[i].key.clone();
        let current = map.get(&key).cloned();
        let result = match &mut ops[i].op {
            KvOp::Get => KvResult::Value(current),
            KvOp::Put(v) => {
                map.insert(key, v.clone());
                KvResult::Done
            }
            KvOp::Delete => {
                map.remove(&key);
                KvResult::Done
            }
            KvOp::Cas { expected, new } => {
                *expected = match specs[i].cas_pick % 3 {
                    0 => current.clone(),
                    1 => None,
                    pick => Some(Bytes::from(format!("v{}", usize::from(pick) * 7 % (i + 1)))),
                };
                if *expected == current {
                    map.insert(key, new.clone());
                    KvResult::CasOk
                } else {
                    KvResult::CasMismatch { current }
                }
            }
        };
        if known {
            ops[i].result = result;
        }
    }
    ops
}

/// A brute-force oracle for tiny histories: tries every order, placing next any operation
/// that no unplaced known-result operation must precede, with unknown-result operations
/// optional. Shares nothing with the real search but the sequential model.
fn brute_force(history: &[Operation]) -> bool {
    if !history.iter().all(Operation::result_fits) {
        return false;
    }
    let ops: Vec<(&Operation, model::Step)> = {
        let mut values = model::Interner::default();
        history
            .iter()
            .filter_map(|op| Some((op, model::Step::compile(op, &mut values)?)))
            .collect()
    };
    fn go(ops: &[(&Operation, model::Step)], placed: &mut Vec<bool>, state: u32) -> bool {
        let known_left = (0..ops.len()).any(|i| !placed[i] && ops[i].0.result != KvResult::Unknown);
        if !known_left {
            return true;
        }
        for i in 0..ops.len() {
            if placed[i] {
                continue;
            }
            let must_wait = (0..ops.len()).any(|j| {
                !placed[j]
                    && ops[j].0.result != KvResult::Unknown
                    && ops[j].0.complete_ns < ops[i].0.invoke_ns
            });
            if must_wait {
                continue;
            }
            if let Some(after) = ops[i].1.apply(state) {
                placed[i] = true;
                let found = go(ops, placed, after);
                placed[i] = false;
                if found {
                    return true;
                }
            }
        }
        false
    }
    go(&ops, &mut vec![false; ops.len()], model::ABSENT)
}

/// A tiny history on one key with arbitrary (mostly wrong) results over two values.
fn tiny_history() -> impl Strategy<Value = Vec<Operation>> {
    let value = prop_oneof![
        Just(None),
        Just(Some(Bytes::from("a"))),
        Just(Some(Bytes::from("b")))
    ];
    let one = (0u8..4, value.clone(), value, 0u64..20, 0u64..10, 0u8..8).prop_map(
        |(kind, v1, v2, invoke_ns, dur_ns, roll)| {
            let new = v1.clone().unwrap_or_else(|| Bytes::from("a"));
            let (op, result) = match kind {
                0 => (KvOp::Get, KvResult::Value(v1)),
                1 => (KvOp::Put(new), KvResult::Done),
                2 => (KvOp::Delete, KvResult::Done),
                _ if roll % 2 == 0 => (KvOp::Cas { expected: v2, new }, KvResult::CasOk),
                // May report current == expected: a misfit both checkers must reject.
                _ => (
                    KvOp::Cas { expected: v2, new },
                    KvResult::CasMismatch { current: v1 },
                ),
            };
            let result = if roll == 7 { KvResult::Unknown } else { result };
            Operation {
                client: u64::from(roll),
                key: Bytes::from("k"),
                op,
                result,
                invoke_ns,
                complete_ns: invoke_ns + dur_ns,
            }
        },
    );
    proptest::collection::vec(one, 0..9)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn histories_of_a_sequential_model_are_linearizable(
        specs in proptest::collection::vec(spec(), 0..80),
        clients in 1usize..6,
        keys in 1usize..4,
    ) {
        let history = build(&specs, clients, keys);
        let verdict = check(&history, CheckBudget::default());
        prop_assert_eq!(verdict, Verdict::Linearizable, "{:#?}", history);
    }

    #[test]
    fn a_read_of_a_value_never_written_is_caught(
        specs in proptest::collection::vec(spec(), 1..80),
        clients in 1usize..6,
        keys in 1usize..4,
        which in any::<Index>(),
    ) {
        let mut history = build(&specs, clients, keys);
        let reads: Vec<usize> = (0..history.len())
            .filter(|&i| matches!(history[i].result, KvResult::Value(_)))
            .collect();
        prop_assume!(!reads.is_empty());
        let victim = reads[which.index(reads.len())];
        history[victim].result = KvResult::Value(Some(Bytes::from("never-written")));
        match check(&history, CheckBudget::default()) {
            Verdict::NotLinearizable { key, minimal_history, explanation } => {
                prop_assert_eq!(&key, &history[victim].key);
                prop_assert!(!minimal_history.is_empty());
                prop_assert!(minimal_history.iter().all(|op| history.contains(op)));
                prop_assert!(!check(&minimal_history, CheckBudget::default()).is_linearizable());
                prop_assert!(explanation.contains("never-written"), "{}", explanation);
            }
            other => prop_assert!(false, "expected NotLinearizable, got {:?}", other),
        }
    }

}

proptest! {
    // Cheap cases, and the one property that checks every pruning rule of the search
    // against an oracle that has none: run many.
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn agrees_with_brute_force_on_tiny_histories(history in tiny_history()) {
        let expected = brute_force(&history);
        let verdict = check(&history, CheckBudget::default());
        prop_assert_eq!(verdict.is_linearizable(), expected, "{:?} for {:#?}", verdict, history);
    }
}

/// Specs from a fixed seed, for histories too large for proptest to shrink usefully.
fn seeded_specs(seed: u64, count: usize, unknown_percent: u64) -> Vec<Spec> {
    let mut rng = crate::splitmix::SplitMix64::new(seed);
    let mut next = move || rng.next_u64();
    (0..count)
        .map(|_| {
            let r = next();
            Spec {
                client: r as u8,
                key: (r >> 8) as u16,
                kind: ((r >> 16) % 10) as u8,
                gap_ns: ((r >> 24) % 30) as u16,
                dur_ns: 1 + ((r >> 32) % 60) as u16,
                lin_permille: ((r >> 40) % 1001) as u16,
                // `fate` below 2 means an unknown result.
                fate: if (r >> 52) % 100 < unknown_percent {
                    ((r >> 50) % 2) as u8
                } else {
                    2
                },
                cas_pick: (r >> 60) as u8,
            }
        })
        .collect()
}

#[test]
fn twenty_thousand_operations_over_many_keys_finish_linearizable() {
    let history = build(&seeded_specs(1, 20_000, 2), 8, 50);
    assert_eq!(
        check(&history, CheckBudget::default()),
        Verdict::Linearizable
    );
}

#[test]
fn twenty_thousand_operations_on_one_hot_key_finish_linearizable() {
    let history = build(&seeded_specs(2, 20_000, 2), 8, 1);
    assert_eq!(
        check(&history, CheckBudget::default()),
        Verdict::Linearizable
    );
}

#[test]
fn a_hundred_thousand_operations_over_a_thousand_keys_finish_linearizable() {
    let history = build(&seeded_specs(3, 100_000, 2), 16, 1_000);
    assert_eq!(
        check(&history, CheckBudget::default()),
        Verdict::Linearizable
    );
}

#[test]
fn a_hot_key_with_a_third_of_outcomes_unknown_finishes_linearizable() {
    // Unknown writes never return, so each stays concurrent with everything after it: the
    // case that makes a plain Wing-Gong search blow up.
    let history = build(&seeded_specs(4, 5_000, 33), 6, 1);
    assert_eq!(
        check(&history, CheckBudget::default()),
        Verdict::Linearizable
    );
}
