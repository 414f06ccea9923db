//! Node ids of the course protocol: 4 uppercase hex digits, `FFFF` = everyone / unknown.

use std::fmt;

/// A 4-hex-digit id as it appears in `src`, `dst` and `leader`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub u16);

impl NodeId {
    /// `FFFF`: "every replica" as a destination, "unknown" as a leader.
    pub const BROADCAST: NodeId = NodeId(0xFFFF);

    /// Parses exactly four uppercase hex digits; lowercase (`ffff`) is rejected,
    /// because the course harness compares ids as strings.
    pub fn parse(text: &str) -> Option<NodeId> {
        let valid = text.len() == 4
            && text
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b));
        if !valid {
            return None;
        }
        u16::from_str_radix(text, 16).ok().map(NodeId)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04X}", self.0)
    }
}

/// Replica ids of an `n`-replica run: `0000`..`n-1`.
pub fn replica_ids(n: usize) -> Vec<NodeId> {
    (0..n).map(|i| NodeId(i as u16)).collect()
}

/// First client id; clients are `0015`.. like the course's, never replica ids.
pub const FIRST_CLIENT_ID: u16 = 0x15;

/// Client ids of a run with `clients` clients.
pub fn client_ids(clients: usize) -> Vec<NodeId> {
    (0..clients)
        .map(|i| NodeId(FIRST_CLIENT_ID + i as u16))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_uppercase_hex_only() {
        assert_eq!(NodeId::parse("0000"), Some(NodeId(0)));
        assert_eq!(NodeId::parse("FFFF"), Some(NodeId::BROADCAST));
        assert_eq!(NodeId::parse("001C"), Some(NodeId(0x1C)));
        assert_eq!(NodeId::parse("ffff"), None);
        assert_eq!(NodeId::parse("001c"), None);
        assert_eq!(NodeId::parse("000"), None);
        assert_eq!(NodeId::parse("00000"), None);
        assert_eq!(NodeId::parse("+001"), None);
    }

    #[test]
    fn displays_as_four_uppercase_hex_digits() {
        assert_eq!(NodeId(0x1C).to_string(), "001C");
        assert_eq!(NodeId::BROADCAST.to_string(), "FFFF");
        let clients: Vec<String> = client_ids(8).iter().map(|c| c.to_string()).collect();
        assert_eq!(clients.first().map(String::as_str), Some("0015"));
        assert_eq!(clients.last().map(String::as_str), Some("001C"));
    }
}
