//! What a replica says about the puts answered so far, carried on every peer datagram:
//! every put at or below `through` has been answered `ok` by some leader, except the
//! ones listed in `owed`, which a leader presumed answered by a predecessor that died
//! without telling (`doubt.rs`, deferred answers) and whose answer must still go before
//! any reply that shows their value.
//!
//! Each replica's report is a true statement as long as the reports it heard were, so two
//! reports combine into one that keeps what either says was answered ([`Report::merge`]).

use kv_raft::Index;

/// Most owed indexes one report lists: a report that would list more claims less (its
/// `through` stops below the first one left out), so it stays true.
pub const OWED_LISTED_MAX: usize = 32;

/// Every put at or below `through` was answered, except those at the `owed` indexes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// The highest index the report speaks for.
    pub through: Index,
    /// Indexes at or below `through` whose puts may be unanswered (ascending, at most
    /// [`OWED_LISTED_MAX`]).
    pub owed: Vec<Index>,
}

impl Report {
    /// A report of `through` and `owed`, keeping only owed indexes at or below `through`
    /// and, past [`OWED_LISTED_MAX`] of them, lowering `through` below the first left out.
    pub fn new(mut through: Index, owed: impl IntoIterator<Item = Index>) -> Report {
        let mut owed: Vec<Index> = owed.into_iter().filter(|&i| i <= through).collect();
        owed.sort_unstable();
        owed.dedup();
        if owed.len() > OWED_LISTED_MAX {
            through = owed[OWED_LISTED_MAX] - 1;
            owed.truncate(OWED_LISTED_MAX);
        }
        Report { through, owed }
    }

    /// Whether the put(s) of entry `index` are known answered.
    pub fn covers(&self, index: Index) -> bool {
        index <= self.through && self.owed.binary_search(&index).is_err()
    }

    /// Whether `index` is listed as owed.
    pub fn owes(&self, index: Index) -> bool {
        self.owed.binary_search(&index).is_ok()
    }

    /// Takes in what `other` says: the result covers every index either covers.
    pub fn merge(&mut self, other: &Report) {
        let (high, low) = if other.through > self.through {
            (other, &*self)
        } else {
            (&*self, other)
        };
        let owed = high
            .owed
            .iter()
            .copied()
            .filter(|&i| !low.covers(i))
            .collect();
        *self = Report {
            through: high.through,
            owed,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_covers_what_it_does_not_list_as_owed() {
        let r = Report::new(10, [7, 12]);
        assert_eq!(r.owed, vec![7], "12 is above through");
        assert!(r.covers(6) && r.covers(10) && !r.covers(7) && !r.covers(11));
        assert!(r.owes(7) && !r.owes(6));
    }

    #[test]
    fn a_report_with_too_many_owed_claims_less_instead_of_lying() {
        let owed: Vec<Index> = (1..=40).map(|i| i * 2).collect();
        let r = Report::new(100, owed);
        assert_eq!(r.owed.len(), OWED_LISTED_MAX);
        let first_left_out = 2 * (OWED_LISTED_MAX as Index + 1);
        assert_eq!(r.through, first_left_out - 1);
        assert!(!r.covers(first_left_out));
    }

    #[test]
    fn merging_keeps_everything_either_report_covers() {
        let mut a = Report::new(10, [4, 7]);
        a.merge(&Report::new(12, [7, 11]));
        assert_eq!(a, Report::new(12, [7, 11]));
        // The higher report owes 4, which the lower one covers: answered.
        let mut b = Report::new(12, [4, 11]);
        b.merge(&Report::new(10, [7]));
        assert_eq!(b, Report::new(12, [11]));
        // Equal reach: owed only where both owe.
        let mut c = Report::new(10, [4, 7]);
        c.merge(&Report::new(10, [7, 9]));
        assert_eq!(c, Report::new(10, [7]));
        // Merging is order-free.
        let mut d = Report::new(10, [7]);
        d.merge(&Report::new(12, [4, 11]));
        assert_eq!(d, b);
    }
}
