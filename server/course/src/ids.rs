//! Course ids (4 uppercase hex digits) and how replica ids map onto raftkv node ids.
//!
//! The harness names every party with 4 hex digits: replicas, clients, and `FFFF` for
//! "everyone" (as a destination) or "unknown" (as a leader). Raft reserves node id 0 for
//! "none", so replica `XXXX` becomes `NodeId(0xXXXX + 1)`. The `leader` field of every
//! datagram must be `FFFF` or a real replica id, so [`Roster::leader_field`] is the one
//! place that turns a belief into that field, and it cannot name anyone else.

use kv_shared::NodeId;
use serde::{Serialize, Serializer};
use std::fmt;

/// A 4-hex-digit course id. Always printed with uppercase digits (the harness treats
/// lowercase `ffff` as an error).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CourseId(pub u16);

impl CourseId {
    /// `FFFF`: every replica as a destination, "unknown" as a leader.
    pub const BROADCAST: CourseId = CourseId(0xFFFF);

    /// Parses exactly 4 hex digits. Lowercase is accepted on input (we never emit it).
    pub fn parse(s: &str) -> Option<CourseId> {
        if s.len() != 4 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        u16::from_str_radix(s, 16).ok().map(CourseId)
    }

    /// The raftkv node id of this replica id (`FFFF` is never a replica).
    pub fn node(self) -> Option<NodeId> {
        (self != CourseId::BROADCAST).then(|| NodeId(u64::from(self.0) + 1))
    }

    /// The replica id of a raftkv node id, if it is one this mapping produced.
    pub fn from_node(node: NodeId) -> Option<CourseId> {
        let raw = node.0.checked_sub(1)?;
        let id = u16::try_from(raw).ok()?;
        (id != 0xFFFF).then_some(CourseId(id))
    }
}

impl fmt::Display for CourseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04X}", self.0)
    }
}

impl Serialize for CourseId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Why the command line does not describe a valid replica set.
#[derive(Debug, PartialEq, Eq)]
pub enum RosterError {
    /// An argument is not 4 hex digits.
    BadId(String),
    /// `FFFF` cannot be a replica.
    Broadcast,
    /// An id appears twice (or a peer equals this replica).
    Duplicate(CourseId),
}

impl fmt::Display for RosterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RosterError::BadId(s) => write!(f, "{s:?} is not a 4-hex-digit replica id"),
            RosterError::Broadcast => write!(f, "FFFF cannot be a replica id"),
            RosterError::Duplicate(id) => write!(f, "replica id {id} appears twice"),
        }
    }
}

impl std::error::Error for RosterError {}

/// This replica and its peers: the only ids that may appear as a datagram's `leader`.
#[derive(Clone, Debug)]
pub struct Roster {
    me: CourseId,
    peers: Vec<CourseId>,
}

impl Roster {
    /// Validates the ids from the command line (`<own id> <peer id> ...`).
    pub fn new(me: &str, peers: &[String]) -> Result<Roster, RosterError> {
        let parse = |s: &str| {
            let id = CourseId::parse(s).ok_or_else(|| RosterError::BadId(s.to_string()))?;
            if id == CourseId::BROADCAST {
                return Err(RosterError::Broadcast);
            }
            Ok(id)
        };
        let me = parse(me)?;
        let mut seen = vec![me];
        for p in peers {
            let id = parse(p)?;
            if seen.contains(&id) {
                return Err(RosterError::Duplicate(id));
            }
            seen.push(id);
        }
        seen.remove(0);
        seen.sort();
        Ok(Roster { me, peers: seen })
    }

    /// This replica.
    pub fn me(&self) -> CourseId {
        self.me
    }

    /// This replica's node id.
    pub fn me_node(&self) -> NodeId {
        NodeId(u64::from(self.me.0) + 1)
    }

    /// Every replica's node id, this one included, ascending.
    pub fn members(&self) -> Vec<NodeId> {
        let mut all: Vec<NodeId> = self.peers.iter().filter_map(|p| p.node()).collect();
        all.push(self.me_node());
        all.sort();
        all
    }

    /// The peer with this course id, as a node id (None for clients and strangers).
    pub fn peer_node(&self, id: CourseId) -> Option<NodeId> {
        if self.peers.contains(&id) {
            id.node()
        } else {
            None
        }
    }

    /// The course id of a member node (None for anyone else).
    pub fn member_id(&self, node: NodeId) -> Option<CourseId> {
        let id = CourseId::from_node(node)?;
        (id == self.me || self.peers.contains(&id)).then_some(id)
    }

    /// The `leader` field for a belief: the member's id, or `FFFF` when the belief is
    /// empty or names anyone outside the roster.
    pub fn leader_field(&self, belief: Option<NodeId>) -> CourseId {
        belief
            .and_then(|n| self.member_id(n))
            .unwrap_or(CourseId::BROADCAST)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_only_four_hex_digits() {
        assert_eq!(CourseId::parse("0000"), Some(CourseId(0)));
        assert_eq!(CourseId::parse("001c"), Some(CourseId(0x1C)));
        assert_eq!(CourseId::parse("FFFF"), Some(CourseId::BROADCAST));
        for bad in ["", "000", "00000", "00G0", "+001", " 001", "０００１"] {
            assert_eq!(CourseId::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn prints_uppercase_four_digits() {
        assert_eq!(CourseId(0x1c).to_string(), "001C");
        assert_eq!(CourseId::BROADCAST.to_string(), "FFFF");
        assert_eq!(serde_json::to_string(&CourseId(0xabc)).unwrap(), "\"0ABC\"");
    }

    #[test]
    fn node_mapping_round_trips_and_skips_none() {
        for raw in [0u16, 1, 4, 0x1234, 0xFFFE] {
            let node = CourseId(raw).node().unwrap();
            assert!(!node.is_none());
            assert_eq!(CourseId::from_node(node), Some(CourseId(raw)));
        }
        assert_eq!(CourseId::BROADCAST.node(), None);
        assert_eq!(CourseId::from_node(NodeId::NONE), None);
        assert_eq!(CourseId::from_node(NodeId(0x10000)), None);
        assert_eq!(CourseId::from_node(NodeId(1 << 40)), None);
    }

    #[test]
    fn roster_rejects_bad_sets() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            Roster::new("0000", &s(&["0001", "0000"])).unwrap_err(),
            RosterError::Duplicate(CourseId(0))
        );
        assert_eq!(
            Roster::new("FFFF", &s(&["0001"])).unwrap_err(),
            RosterError::Broadcast
        );
        assert!(matches!(
            Roster::new("0000", &s(&["01"])).unwrap_err(),
            RosterError::BadId(_)
        ));
    }

    #[test]
    fn leader_field_names_only_members() {
        let r = Roster::new("0002", &["0004".into(), "0000".into()]).unwrap();
        assert_eq!(r.members(), vec![NodeId(1), NodeId(3), NodeId(5)]);
        assert_eq!(r.leader_field(None), CourseId::BROADCAST);
        assert_eq!(r.leader_field(Some(NodeId(3))), CourseId(2));
        assert_eq!(r.leader_field(Some(NodeId(5))), CourseId(4));
        // A node id that maps to a client id, or to nothing, is never named.
        assert_eq!(r.leader_field(Some(NodeId(0x16))), CourseId::BROADCAST);
        assert_eq!(r.leader_field(Some(NodeId(0))), CourseId::BROADCAST);
        assert_eq!(r.peer_node(CourseId(4)), Some(NodeId(5)));
        assert_eq!(r.peer_node(CourseId(2)), None, "me is not a peer");
        assert_eq!(r.peer_node(CourseId(0x15)), None);
    }
}
