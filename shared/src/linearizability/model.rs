//! The sequential specification of one key, compiled to small integers so that the search
//! hashes and compares a `u32` instead of a byte string at every step.

use super::{KvOp, KvResult, Operation, ShowBytes};
use bytes::Bytes;
use std::collections::HashMap;

/// A value of one key as the search sees it: an index into [`Interner::values`].
/// [`ABSENT`] is the absent key, the initial state.
pub(super) type ValueId = u32;

/// The state of a key that holds no value.
pub(super) const ABSENT: ValueId = 0;

/// Stands for every value that no operation of the history observes (see
/// [`Step::observed`]). From any two such values the same steps succeed and fail, so
/// merging them loses nothing and makes more search states coincide in the memo.
pub(super) const UNOBSERVED: ValueId = ValueId::MAX;

/// Numbers the distinct values of one key's history, so that equal bytes get equal ids.
#[derive(Debug, Default)]
pub(super) struct Interner {
    ids: HashMap<Bytes, ValueId>,
    /// `values[id - 1]` is the value of `id` (id 0 is [`ABSENT`]).
    values: Vec<Bytes>,
}

impl Interner {
    fn id(&mut self, value: &Bytes) -> ValueId {
        if let Some(&id) = self.ids.get(value) {
            return id;
        }
        self.values.push(value.clone());
        let id = ValueId::try_from(self.values.len()).expect("fewer than 2^32 distinct values");
        self.ids.insert(value.clone(), id);
        id
    }

    fn optional_id(&mut self, value: &Option<Bytes>) -> ValueId {
        value.as_ref().map_or(ABSENT, |v| self.id(v))
    }

    /// Describes a value id for a person.
    pub(super) fn describe(&self, id: ValueId) -> String {
        match id {
            ABSENT => "absent".to_string(),
            UNOBSERVED => "a value that none of these operations reads".to_string(),
            id => ShowBytes(&self.values[id as usize - 1]).to_string(),
        }
    }
}

/// One operation with its result, as a transition of the key's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) enum Step {
    /// Possible only in this state; changes nothing (a get, a cas that found another value).
    Observe(ValueId),
    /// Always possible; sets the state (a put, or a delete with [`ABSENT`]).
    Write(ValueId),
    /// Possible only if the state is `expected`; then sets `new`.
    CasOk { expected: ValueId, new: ValueId },
    /// A cas whose outcome is unknown: sets `new` if the state is `expected`, else nothing.
    CasMaybe { expected: ValueId, new: ValueId },
}

impl Step {
    /// Compiles an operation. `None` for an operation that constrains nothing (a get with an
    /// unknown result). The caller has checked [`Operation::result_fits`].
    pub(super) fn compile(op: &Operation, values: &mut Interner) -> Option<Step> {
        debug_assert!(op.result_fits(), "misfit result reached the search: {op}");
        let step = match (&op.op, &op.result) {
            (KvOp::Get, KvResult::Unknown) => return None,
            (KvOp::Get, KvResult::Value(v)) => Step::Observe(values.optional_id(v)),
            (KvOp::Put(v), _) => Step::Write(values.id(v)),
            (KvOp::Delete, _) => Step::Write(ABSENT),
            (KvOp::Cas { expected, new }, KvResult::CasOk) => Step::CasOk {
                expected: values.optional_id(expected),
                new: values.id(new),
            },
            (KvOp::Cas { .. }, KvResult::CasMismatch { current }) => {
                Step::Observe(values.optional_id(current))
            }
            (KvOp::Cas { expected, new }, _) => Step::CasMaybe {
                expected: values.optional_id(expected),
                new: values.id(new),
            },
            (KvOp::Get, _) => unreachable!("result_fits admits only values for a get"),
        };
        Some(step)
    }

    /// The value whose presence this step's outcome depends on, if any.
    pub(super) fn observed(self) -> Option<ValueId> {
        match self {
            Step::Observe(v) => Some(v),
            Step::Write(_) => None,
            Step::CasOk { expected, .. } | Step::CasMaybe { expected, .. } => Some(expected),
        }
    }

    /// The same step with every value written that is not in `observed` (and is not
    /// [`ABSENT`]) replaced by [`UNOBSERVED`].
    pub(super) fn merge_unobserved(self, observed: impl Fn(ValueId) -> bool) -> Step {
        let merge = |v: ValueId| {
            if v == ABSENT || observed(v) {
                v
            } else {
                UNOBSERVED
            }
        };
        match self {
            Step::Observe(_) => self,
            Step::Write(v) => Step::Write(merge(v)),
            Step::CasOk { expected, new } => Step::CasOk {
                expected,
                new: merge(new),
            },
            Step::CasMaybe { expected, new } => Step::CasMaybe {
                expected,
                new: merge(new),
            },
        }
    }

    /// True if the step can only set the key to [`UNOBSERVED`] or leave it alone.
    pub(super) fn writes_only_unobserved(self) -> bool {
        matches!(
            self,
            Step::Write(UNOBSERVED)
                | Step::CasMaybe {
                    new: UNOBSERVED,
                    ..
                }
        )
    }

    /// True if the step, taken from `state`, writes (a cas whose outcome is unknown writes
    /// only on a match).
    pub(super) fn applies(self, state: ValueId) -> bool {
        match self {
            Step::Observe(_) => false,
            Step::Write(_) | Step::CasOk { .. } => true,
            Step::CasMaybe { expected, .. } => state == expected,
        }
    }

    /// The state after this step from `state`, or `None` if the step's result rules out
    /// `state`.
    pub(super) fn apply(self, state: ValueId) -> Option<ValueId> {
        match self {
            Step::Observe(v) => (state == v).then_some(state),
            Step::Write(v) => Some(v),
            Step::CasOk { expected, new } => (state == expected).then_some(new),
            Step::CasMaybe { expected, new } => Some(if state == expected { new } else { state }),
        }
    }
}

/// The value an operation may write, if it writes at all: `Some(None)` for a delete.
/// Operations with unknown results count: they may have written.
pub(super) fn written_value(op: &Operation) -> Option<Option<&Bytes>> {
    match (&op.op, &op.result) {
        (KvOp::Put(v), _) => Some(Some(v)),
        (KvOp::Delete, _) => Some(None),
        (KvOp::Cas { new, .. }, KvResult::CasOk | KvResult::Unknown) => Some(Some(new)),
        _ => None,
    }
}

/// The value an operation's outcome depends on, if any: what a get returned, what a
/// cas found (or expected, when it succeeded or may have). `Some(None)` is "absent".
pub(super) fn observed_value(op: &Operation) -> Option<Option<&Bytes>> {
    match (&op.op, &op.result) {
        (KvOp::Get, KvResult::Value(v)) => Some(v.as_ref()),
        (KvOp::Cas { expected, .. }, KvResult::CasOk | KvResult::Unknown) => {
            Some(expected.as_ref())
        }
        (KvOp::Cas { .. }, KvResult::CasMismatch { current }) => Some(current.as_ref()),
        _ => None,
    }
}
