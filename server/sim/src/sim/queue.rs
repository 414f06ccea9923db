//! The discrete-event queue: every future event of a run (ticks, deliveries, disk
//! completions, client messages, fault ends) ordered by simulated time, ties broken by
//! insertion order so that a seed replays exactly.

use kv_shared::proto::{ClientReply, ClientRequest};
use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// Something that happens at one point of simulated time.
#[derive(Clone, Debug)]
pub(super) enum Ev {
    Tick(usize),
    Deliver {
        to: usize,
        bytes: Vec<u8>,
    },
    DiskDone {
        node: usize,
        inc: u64,
        id: u64,
    },
    ToNode {
        node: usize,
        req: ClientRequest,
    },
    ToClient {
        client: usize,
        reply: ClientReply,
    },
    ClientWake {
        client: usize,
        epoch: u64,
    },
    Chaos,
    Heal,
    Restart(usize),
    Unpause(usize),
    DiskFast(usize),
    /// Crash a node that just became leader, if it is still the same incarnation.
    HitNewLeader {
        node: usize,
        inc: u64,
    },
    /// Figure 8 script: cut off (maybe crash) the leader the reconnected nodes elected.
    Fig8Cut(usize),
    /// The Moves profile's admin: its timer `epoch` fires.
    AdminWake {
        epoch: u64,
    },
    /// An answer to one of the admin's requests arrives.
    ToAdmin {
        reply: ClientReply,
    },
    Liveness,
}

struct Queued {
    at: u64,
    seq: u64,
    ev: Ev,
}

impl PartialEq for Queued {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Queued {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(o.at, o.seq))
    }
}

/// Pending events; pops the earliest, and among equal times the first pushed.
#[derive(Default)]
pub(super) struct EventQueue {
    heap: BinaryHeap<Reverse<Queued>>,
    seq: u64,
}

impl EventQueue {
    /// Schedules `ev` at simulated time `at` (ns).
    pub(super) fn push(&mut self, at: u64, ev: Ev) {
        self.seq += 1;
        self.heap.push(Reverse(Queued {
            at,
            seq: self.seq,
            ev,
        }));
    }

    /// The next event and its time.
    pub(super) fn pop(&mut self) -> Option<(u64, Ev)> {
        self.heap.pop().map(|Reverse(q)| (q.at, q.ev))
    }
}
