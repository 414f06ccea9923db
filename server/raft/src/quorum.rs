//! Majority arithmetic over a voter set: the commit index a quorum has reached and the
//! outcome of an election. Kept apart so it is tested on its own (etcd's `quorum/`).

use crate::types::Index;
use kv_shared::NodeId;

/// Outcome of counting votes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum VoteResult {
    /// A majority granted.
    Won,
    /// A majority refused (or can no longer grant).
    Lost,
    /// Not decided yet.
    Pending,
}

/// Size of a majority of `n` voters.
pub(crate) fn majority(n: usize) -> usize {
    n / 2 + 1
}

/// The highest index that a majority of `voters` has reached, given each voter's match.
/// 0 for an empty voter set (nothing can commit).
pub(crate) fn committed_index(voters: &[NodeId], match_of: impl Fn(NodeId) -> Index) -> Index {
    if voters.is_empty() {
        return 0;
    }
    if let [a, b, c] = *voters {
        // Three voters, the usual replication: the median, without filling and sorting
        // an array (a leader asks on every round of every group it leads).
        let (a, b, c) = (match_of(a), match_of(b), match_of(c));
        return a.min(b).max(a.max(b).min(c));
    }
    committed_index_sorted(voters, match_of)
}

/// [`committed_index`] of any voter set, by sorting the matches.
fn committed_index_sorted(voters: &[NodeId], match_of: impl Fn(NodeId) -> Index) -> Index {
    // A leader asks this on every `ready()` of every group it leads, so the common case
    // (every voter set the limits allow) sorts on the stack instead of allocating.
    let mut on_stack = [0 as Index; kv_shared::limits::NODES_MAX];
    let mut on_heap = Vec::new();
    let matches: &mut [Index] = if voters.len() <= on_stack.len() {
        &mut on_stack[..voters.len()]
    } else {
        on_heap.resize(voters.len(), 0);
        &mut on_heap
    };
    for (m, v) in matches.iter_mut().zip(voters) {
        *m = match_of(*v);
    }
    matches.sort_unstable_by(|a, b| b.cmp(a));
    matches[majority(voters.len()) - 1]
}

/// Counts `votes` (granted or refused) of `voters`; votes of non-voters are ignored.
pub(crate) fn vote_result(
    voters: &[NodeId],
    vote_of: impl Fn(NodeId) -> Option<bool>,
) -> VoteResult {
    let need = majority(voters.len());
    let (mut yes, mut no) = (0, 0);
    for v in voters {
        match vote_of(*v) {
            Some(true) => yes += 1,
            Some(false) => no += 1,
            None => {}
        }
    }
    if yes >= need {
        VoteResult::Won
    } else if voters.len() - no < need {
        VoteResult::Lost
    } else {
        VoteResult::Pending
    }
}

/// True if at least a majority of `voters` satisfy `pred`.
pub(crate) fn has_quorum(voters: &[NodeId], pred: impl Fn(NodeId) -> bool) -> bool {
    !voters.is_empty() && voters.iter().filter(|v| pred(**v)).count() >= majority(voters.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: &[u64]) -> Vec<NodeId> {
        n.iter().map(|i| NodeId(*i)).collect()
    }

    #[test]
    fn committed_index_is_the_majority_th_largest_match() {
        let v = ids(&[1, 2, 3]);
        assert_eq!(committed_index(&v, |n| [0, 5, 3, 1][n.0 as usize]), 3);
        let v = ids(&[1, 2, 3, 4]);
        assert_eq!(committed_index(&v, |n| [0, 5, 3, 1, 9][n.0 as usize]), 3);
        assert_eq!(committed_index(&ids(&[7]), |_| 4), 4);
        assert_eq!(committed_index(&[], |_| 4), 0);
        // Beyond the stack array's NODES_MAX voters, the same answer.
        let many: Vec<NodeId> = (1..=kv_shared::limits::NODES_MAX as u64 + 3)
            .map(NodeId)
            .collect();
        let q = committed_index(&many, |n| n.0 * 10);
        let majority_th = many.len() - majority(many.len()) + 1;
        assert_eq!(q, majority_th as u64 * 10);
    }

    #[test]
    fn committed_index_of_three_voters_is_what_sorting_gives() {
        let v = ids(&[1, 2, 3]);
        for a in 0..4u64 {
            for b in 0..4u64 {
                for c in 0..4u64 {
                    let m = [0, a, b, c];
                    assert_eq!(
                        committed_index(&v, |n| m[n.0 as usize]),
                        committed_index_sorted(&v, |n| m[n.0 as usize]),
                        "matches {a} {b} {c}"
                    );
                }
            }
        }
    }

    #[test]
    fn vote_result_needs_a_majority_of_voters_only() {
        let v = ids(&[1, 2, 3]);
        assert_eq!(
            vote_result(&v, |n| (n.0 == 1).then_some(true)),
            VoteResult::Pending
        );
        assert_eq!(
            vote_result(&v, |n| (n.0 <= 2).then_some(true)),
            VoteResult::Won
        );
        assert_eq!(
            vote_result(&v, |n| (n.0 >= 2).then_some(false)),
            VoteResult::Lost
        );
        // A grant from a non-voter (node 9) is not counted.
        let votes = |n: NodeId| (n.0 == 1 || n.0 == 9).then_some(true);
        assert_eq!(vote_result(&v, votes), VoteResult::Pending);
        assert_eq!(vote_result(&ids(&[1]), |_| Some(true)), VoteResult::Won);
    }

    #[test]
    fn has_quorum_counts_majorities() {
        let v = ids(&[1, 2, 3, 4, 5]);
        assert!(has_quorum(&v, |n| n.0 <= 3));
        assert!(!has_quorum(&v, |n| n.0 <= 2));
        assert!(!has_quorum(&[], |_| true));
    }
}
