//! The per-flush vectors of the node core that keep their room between flushes: the
//! outbox of messages per peer and the sizing rule they share.

use crate::codec::frame::FrameOut;
use crate::codec::GroupMessage;
use kv_shared::NodeId;

/// What the next flush sends one peer: whole messages, and the frame's records of
/// every group's Appends and acks.
#[derive(Debug)]
pub(super) struct PeerOut {
    pub(super) peer: NodeId,
    pub(super) msgs: Vec<GroupMessage>,
    pub(super) frame: FrameOut,
}

/// What each peer is sent in the next flush, by peer id. A node has a handful of peers,
/// and a round writes a message or record per group and follower: a sorted vector finds
/// a peer's in a comparison or two, where a BTreeMap's entry per message cost tens of
/// instructions.
#[derive(Debug, Default)]
pub(super) struct Outbox {
    peers: Vec<PeerOut>,
    /// The room a new list starts with: the most messages one peer's held lately.
    room: Room,
    /// The room a new frame starts with: the most bytes one peer's held lately.
    frame_room: Room,
    /// The vector `take` handed out last, given back emptied.
    spare: Vec<PeerOut>,
}

impl Outbox {
    /// `peer`'s list of messages, created empty if it has none yet (a peer sent nothing
    /// else gets a keepalive).
    pub(super) fn to(&mut self, peer: NodeId) -> &mut Vec<GroupMessage> {
        &mut self.slot(peer).msgs
    }

    /// `peer`'s frame.
    pub(super) fn frame(&mut self, peer: NodeId) -> &mut FrameOut {
        &mut self.slot(peer).frame
    }

    fn slot(&mut self, peer: NodeId) -> &mut PeerOut {
        let i = match self.peers.binary_search_by_key(&peer, |p| p.peer) {
            Ok(i) => i,
            Err(i) => {
                let out = PeerOut {
                    peer,
                    msgs: Vec::with_capacity(self.room.most),
                    frame: FrameOut::with_capacity(self.frame_room.most),
                };
                self.peers.insert(i, out);
                i
            }
        };
        &mut self.peers[i]
    }

    /// Every peer's, ascending by peer, leaving none.
    pub(super) fn take(&mut self) -> Vec<PeerOut> {
        let most = self.peers.iter().map(|p| p.msgs.len()).max().unwrap_or(0);
        self.room.update(most);
        let most = self.peers.iter().map(|p| p.frame.len()).max().unwrap_or(0);
        self.frame_room.update(most);
        std::mem::replace(&mut self.peers, std::mem::take(&mut self.spare))
    }

    /// Takes back what `take` handed out, emptied, for its room.
    pub(super) fn give_back(&mut self, mut peers: Vec<PeerOut>) {
        peers.clear();
        self.spare = peers;
    }
}

/// Flushes in a row that needed less than half a [`Room`] before it halves.
const ROOM_SHRINK_AFTER_FLUSHES: u32 = 64;

/// The room a vector that every flush fills anew and hands out starts with: the most
/// recent flushes needed. Flushes of one round differ (the one that proposes sends an
/// Append per group and follower, the one after the fsync nothing; the one that applies
/// holds the replies, the others none), so sizing each from the flush just before
/// started the busy one from nothing, and its pushes grew the vector five or six times
/// every round. A room that more than `ROOM_SHRINK_AFTER_FLUSHES` flushes in a row left
/// less than half used halves, so a burst does not size every later flush.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Room {
    most: usize,
    small_flushes: u32,
}

impl Room {
    /// Takes the length a flush needed; returns the room for the next one.
    pub(crate) fn update(&mut self, used: usize) -> usize {
        if used >= self.most / 2 {
            self.most = self.most.max(used);
            self.small_flushes = 0;
        } else {
            self.small_flushes += 1;
            if self.small_flushes >= ROOM_SHRINK_AFTER_FLUSHES {
                self.most /= 2;
                self.small_flushes = 0;
            }
        }
        self.most
    }
}

/// Takes `v`, leaving it empty with room for as many items: a round at many shards
/// pushes an op and a durable per group, and the next round's pushes then grow nothing.
pub(super) fn take_sized<T>(v: &mut Vec<T>) -> Vec<T> {
    let n = v.len();
    std::mem::replace(v, Vec::with_capacity(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flush_that_needs_nothing_does_not_shrink_the_next_ones_room() {
        let mut room = Room::default();
        assert_eq!(room.update(64), 64);
        for _ in 0..10 {
            assert_eq!(room.update(0), 64, "the flush between two busy ones");
            assert_eq!(room.update(64), 64);
        }
        assert_eq!(room.update(100), 100, "grows at once");
    }

    #[test]
    fn the_outbox_lists_peers_in_id_order_each_once() {
        let mut outbox = Outbox::default();
        let gm = |to: u64| GroupMessage {
            shard: kv_shared::ShardId(0),
            msg: kv_raft::Message {
                from: NodeId(1),
                to: NodeId(to),
                term: 1,
                body: kv_raft::MessageBody::TimeoutNow,
            },
        };
        for to in [3, 2, 3, 5, 2, 3] {
            outbox.to(NodeId(to)).push(gm(to));
        }
        outbox.to(NodeId(4));
        let peers = outbox.take();
        let lists: Vec<(u64, usize)> = peers.iter().map(|p| (p.peer.0, p.msgs.len())).collect();
        assert_eq!(lists, [(2, 2), (3, 3), (4, 0), (5, 1)]);
        assert!(peers
            .iter()
            .all(|p| p.msgs.iter().all(|gm| gm.msg.to == p.peer)));
        outbox.give_back(peers);
        assert!(outbox.take().is_empty(), "taken lists are gone");
        assert_eq!(
            outbox.to(NodeId(2)).capacity(),
            3,
            "a new list has the room"
        );
    }

    #[test]
    fn a_burst_stops_sizing_flushes_once_it_is_long_past() {
        let mut room = Room::default();
        room.update(10_000);
        let mut sizes = Vec::new();
        for _ in 0..4 * ROOM_SHRINK_AFTER_FLUSHES {
            sizes.push(room.update(3));
        }
        assert_eq!(sizes[ROOM_SHRINK_AFTER_FLUSHES as usize - 2], 10_000);
        assert_eq!(sizes[ROOM_SHRINK_AFTER_FLUSHES as usize - 1], 5_000);
        assert_eq!(*sizes.last().unwrap(), 625, "halved once per period");
        for _ in 0..20 * ROOM_SHRINK_AFTER_FLUSHES {
            room.update(3);
        }
        assert!(room.update(3) < 8, "down to what flushes need");
    }
}
