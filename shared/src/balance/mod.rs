//! The balance planner: from the cluster's nodes and each shard's replicas, the next
//! replica moves and leader transfers that bring every shard to R voters on live nodes,
//! spread replicas within one of the mean, and put leaders where the cluster's
//! [`LeaderPolicy`] says (within one of the mean, or each on its shard's first live
//! voter). Pure and deterministic, so that kvcli now, and the metadata group's leader
//! later, plan alike from the same view.
//!
//! A plan is one round: the caller starts its moves (at most `moves_max` in flight,
//! counting the ones already running), waits for some to end, reads the cluster again and
//! plans again. Safety never depends on the plan: every move is a Raft conf change that
//! the shard's leader checks and drives. The planner only avoids asking for moves that
//! cannot finish or that would leave a shard without a quorum of answering voters.

mod assess;
#[cfg(test)]
mod metadata_tests;
#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

use crate::config::LeaderPolicy;
use crate::registry::{METADATA_SHARD, METADATA_VOTERS_MAX};
use crate::{NodeId, ShardId};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

pub use assess::{assess, Assessment, NodeLoad};

/// What the planner may do with a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NodeState {
    /// Answers and may receive replicas and leadership.
    Live,
    /// Answers, receives nothing, and its replicas move away.
    Draining,
    /// Does not answer now and may come back: receives nothing, keeps its replicas, and
    /// its replicas do not count toward a shard's quorum of answering voters.
    Down,
    /// Will not come back: its replicas are rebuilt on live nodes (from the live majority).
    Dead,
    /// Answers, but registered so recently that some node does not know it yet (it would
    /// refuse the node's datagrams): receives nothing until it is active.
    Joining,
}

impl NodeState {
    /// The node answers, so its replicas count toward a quorum.
    pub fn answers(self) -> bool {
        matches!(
            self,
            NodeState::Live | NodeState::Draining | NodeState::Joining
        )
    }

    /// Its replicas must all move away.
    pub fn evacuated(self) -> bool {
        matches!(self, NodeState::Draining | NodeState::Dead)
    }

    /// A word for output.
    pub fn name(self) -> &'static str {
        match self {
            NodeState::Live => "live",
            NodeState::Draining => "draining",
            NodeState::Down => "down",
            NodeState::Dead => "dead",
            NodeState::Joining => "joining",
        }
    }
}

/// The planner's state of a node, from its state in the node registry (`None`: not
/// registered, or no registry known), whether it answers now, and whether it has been
/// silent longer than the balancer's `down_after` (kvcli, which keeps no timer, passes
/// false). A removed node is dead (its id never comes back); a draining node that stops
/// answering is down, then dead like any other; a joining node that answers is joining.
pub fn node_state(
    registered: Option<crate::registry::NodeState>,
    answers: bool,
    silent_too_long: bool,
) -> NodeState {
    use crate::registry::NodeState as Registered;
    match (registered, answers) {
        (Some(Registered::Removed), _) => NodeState::Dead,
        (Some(Registered::Draining), true) => NodeState::Draining,
        (Some(Registered::Joining), true) => NodeState::Joining,
        (_, true) => NodeState::Live,
        (_, false) if silent_too_long => NodeState::Dead,
        (_, false) => NodeState::Down,
    }
}

/// A node of the cluster as the planner sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeInfo {
    /// The node.
    pub id: NodeId,
    /// What may be done with it.
    pub state: NodeState,
}

/// A shard as the planner sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardInfo {
    /// The shard.
    pub shard: ShardId,
    /// Its voters.
    pub voters: Vec<NodeId>,
    /// Its learners: a move of the shard is in flight, so the planner leaves it alone.
    pub learners: Vec<NodeId>,
    /// Its leader, if one is known.
    pub leader: Option<NodeId>,
    /// Nodes the shard must not move to: a move to them was undone because they did not
    /// catch up (the driver remembers it). A node that left the shard may take it back
    /// (docs/ELASTIC.md), so leaving it is no reason to avoid it.
    pub avoid: Vec<NodeId>,
}

/// The cluster: nodes, shards, and the replication factor R every shard should have.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cluster {
    /// Every node (a voter on a node not listed here counts as [`NodeState::Down`]).
    pub nodes: Vec<NodeInfo>,
    /// Every shard.
    pub shards: Vec<ShardInfo>,
    /// Voters each shard should have.
    pub replication: usize,
    /// Where leaderships go (the cluster file's `[placement] leaders`).
    pub leaders: LeaderPolicy,
}

/// Why a move is planned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MoveReason {
    /// The replica is on a draining or dead node.
    Evacuate,
    /// Its node holds more replicas than another live node by two or more.
    Balance,
    /// The metadata group has fewer voters than [`metadata_voters_wanted`]: `to` is added
    /// as a voter (a learner that catches up and is promoted) and no replica goes
    /// (`from` is [`NodeId::NONE`]).
    GrowMetadata,
    /// The metadata group has more voters than [`metadata_voters_wanted`]: `from`'s
    /// replica is removed and none is added (`to` is [`NodeId::NONE`]).
    ShrinkMetadata,
}

/// One replica move: `shard`'s replica on `from` goes to `to` (`Op::MoveReplica`). For
/// the metadata group only, one side may be [`NodeId::NONE`]: a voter added
/// ([`MoveReason::GrowMetadata`]) or removed ([`MoveReason::ShrinkMetadata`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Move {
    /// The shard.
    pub shard: ShardId,
    /// The node whose replica goes.
    pub from: NodeId,
    /// The live node that receives one.
    pub to: NodeId,
    /// Why.
    pub reason: MoveReason,
}

/// One leadership transfer: `shard`'s leadership goes from `from` to `to` (a voter), by
/// making `to` the shard's preferred leader (`Op::ShardLeader`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LeaderTransfer {
    /// The shard.
    pub shard: ShardId,
    /// Its leader now.
    pub from: NodeId,
    /// Its next leader.
    pub to: NodeId,
}

/// Why a replica that should move cannot, or why a shard cannot be balanced by moves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum StuckReason {
    /// No live node outside the shard's replicas (and the nodes it avoids) can take it.
    NoTarget,
    /// Fewer than a majority of the shard's voters answer: it can commit no change.
    NoQuorum,
    /// The shard has this many voters, not R: moves keep the count, so none fixes it.
    WrongReplicaCount(usize),
}

impl std::fmt::Display for StuckReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StuckReason::NoTarget => {
                write!(f, "no live node outside its replicas can take a replica")
            }
            StuckReason::NoQuorum => write!(f, "fewer than a majority of its voters answer"),
            StuckReason::WrongReplicaCount(n) => {
                write!(f, "it has {n} voters, not the replication factor")
            }
        }
    }
}

/// A replica (or a shard) the plan cannot take where it should go, and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Stuck {
    /// The shard.
    pub shard: ShardId,
    /// The node whose replica should move (`None`: the shard as a whole).
    pub node: Option<NodeId>,
    /// Why it cannot.
    pub reason: StuckReason,
}

/// One round of work.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Moves to start now, evacuations first; never two of one shard, nor one of a shard
    /// whose move is in flight.
    pub moves: Vec<Move>,
    /// Leadership transfers, planned only when no move is planned or in flight.
    pub leader_transfers: Vec<LeaderTransfer>,
    /// What cannot be done, and why.
    pub stuck: Vec<Stuck>,
}

impl Plan {
    /// Nothing to do this round.
    pub fn is_empty(&self) -> bool {
        self.moves.is_empty() && self.leader_transfers.is_empty()
    }
}

/// The voters `s` should have: R for a data shard; for the metadata group ([`METADATA_SHARD`],
/// listed among the shards so that its replicas move off draining and dead nodes and
/// spread like any other), [`metadata_voters_wanted`].
pub fn voters_wanted(cluster: &Cluster, s: &ShardInfo) -> usize {
    if s.shard == METADATA_SHARD {
        metadata_voters_wanted(cluster, s)
    } else {
        cluster.replication
    }
}

/// The metadata group's voters wanted: 5 ([`METADATA_VOTERS_MAX`]) when at least 5 nodes
/// are live, 3 when 3 or 4 are (an even count survives no more failures than the odd
/// one below it, and costs a vote more), every live node when fewer are. Down nodes count
/// as live here (they may come back, and a blip must not shrink the group), but only
/// live nodes receive a replica; and the group is never shrunk below the voters on
/// answering nodes it has when fewer than 3 nodes answer.
pub fn metadata_voters_wanted(cluster: &Cluster, s: &ShardInfo) -> usize {
    let eligible = cluster
        .nodes
        .iter()
        .filter(|n| matches!(n.state, NodeState::Live | NodeState::Down))
        .count();
    let wanted = match eligible {
        n if n >= METADATA_VOTERS_MAX => METADATA_VOTERS_MAX,
        n if n >= 3 => 3,
        n => n,
    };
    // With one or two nodes left, the group keeps what it has rather than dropping to a
    // voter count nothing needs (a removal would need those same voters to commit).
    let answering = s
        .voters
        .iter()
        .filter(|v| cluster.state_of(**v).answers())
        .count();
    if wanted < 3 {
        wanted.max(answering).max(1)
    } else {
        wanted
    }
}

/// A majority of `n` voters.
pub fn majority(n: usize) -> usize {
    n / 2 + 1
}

impl Cluster {
    /// The state of `node` (a node not listed is [`NodeState::Down`]: never touched).
    pub fn state_of(&self, node: NodeId) -> NodeState {
        self.nodes
            .iter()
            .find(|n| n.id == node)
            .map_or(NodeState::Down, |n| n.state)
    }

    fn live_nodes(&self) -> Vec<NodeId> {
        let mut live: Vec<NodeId> = self
            .nodes
            .iter()
            .filter(|n| n.state == NodeState::Live)
            .map(|n| n.id)
            .collect();
        live.sort();
        live.dedup();
        live
    }

    /// Applies a round as if every move and transfer in it completed: moved replicas
    /// change nodes (a moved leader's leadership goes with it, as the move hands it over),
    /// transferred leaderships change hands. `kvcli rebalance --dry-run` shows the rounds
    /// this way.
    pub fn apply(&mut self, plan: &Plan) {
        for m in &plan.moves {
            if let Some(s) = self.shards.iter_mut().find(|s| s.shard == m.shard) {
                move_voters(s, m);
            }
        }
        for t in &plan.leader_transfers {
            if let Some(s) = self.shards.iter_mut().find(|s| s.shard == t.shard) {
                s.leader = Some(t.to);
            }
        }
    }
}

/// `s`'s voters and leader once move `m` is done (either side may be [`NodeId::NONE`]);
/// a leader that goes hands over to the new voter, or to the lowest other voter.
fn move_voters(s: &mut ShardInfo, m: &Move) {
    s.voters.retain(|v| *v != m.from);
    if !m.to.is_none() && !s.voters.contains(&m.to) {
        s.voters.push(m.to);
    }
    s.voters.sort();
    if s.leader == Some(m.from) {
        s.leader = if m.to.is_none() {
            s.voters.first().copied()
        } else {
            Some(m.to)
        };
    }
}

/// The shards with the moves in flight applied as if done; `frozen` holds the shards that
/// no new move may touch (a move in flight, learners present, or more voters than wanted:
/// a move promoted its learner and has yet to remove the old replica).
struct Projection {
    shards: Vec<ShardInfo>,
    frozen: BTreeSet<ShardId>,
    /// Frozen shards with no move of `in_flight`: moves someone else started (another
    /// admin, or a balancer that lost the metadata leadership). They count toward the cap
    /// like the caller's own, so a new balancer adopts its predecessor's moves instead of
    /// piling its own on top of them.
    observed_moves: usize,
    /// Replicas (voters and learners) per node.
    load: BTreeMap<NodeId, usize>,
}

impl Projection {
    fn new(cluster: &Cluster, in_flight: &[Move]) -> Projection {
        let mut shards = cluster.shards.clone();
        shards.sort_by_key(|s| s.shard);
        let mut frozen = BTreeSet::new();
        let mut observed_moves = 0;
        for s in &mut shards {
            if let Some(m) = in_flight.iter().find(|m| m.shard == s.shard) {
                s.learners.retain(|l| *l != m.to);
                move_voters(s, m);
                frozen.insert(s.shard);
            }
            let moving = !s.learners.is_empty()
                || (s.shard != METADATA_SHARD && s.voters.len() > voters_wanted(cluster, s));
            if moving && frozen.insert(s.shard) {
                observed_moves += 1;
            }
        }
        let mut load: BTreeMap<NodeId, usize> = cluster.nodes.iter().map(|n| (n.id, 0)).collect();
        for s in &shards {
            for n in s.voters.iter().chain(&s.learners) {
                *load.entry(*n).or_default() += 1;
            }
        }
        Projection {
            shards,
            frozen,
            observed_moves,
            load,
        }
    }
}

/// Whether a majority of `shard`'s voters answer, so that it can commit a membership
/// change. This is all a move needs to keep that majority: the new replica answers (it is
/// chosen among live nodes) and becomes a voter only once caught up, so while both
/// replicas vote the shard has one more voter and one more answering voter, and after the
/// old one goes at least as many answering voters as before.
fn has_quorum(cluster: &Cluster, shard: &ShardInfo) -> bool {
    let live = shard
        .voters
        .iter()
        .filter(|v| cluster.state_of(**v).answers())
        .count();
    live >= majority(shard.voters.len())
}

/// How many moves may run at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MoveLimits {
    /// Voluntary moves: off draining nodes, and spreading.
    pub moves_max: usize,
    /// Repairs: moves of replicas off dead nodes, if they have a limit of their own
    /// (`None`: they count toward `moves_max`). Each such shard runs a replica short (one
    /// more failure away from losing its quorum) until its move ends, so the balancer
    /// does not make repairs wait behind a drain or a spread.
    pub repairs_max: Option<usize>,
}

/// [`plan_within`] with at most `moves_max` moves of any kind at once: what kvcli plans
/// with.
pub fn plan(cluster: &Cluster, in_flight: &[Move], moves_max: usize) -> Plan {
    plan_within(
        cluster,
        in_flight,
        MoveLimits {
            moves_max,
            repairs_max: None,
        },
    )
}

/// The next round of work for `cluster`, with `in_flight` moves still running and at most
/// `limits.moves_max` moves running at once (repairs apart if `limits.repairs_max` is
/// set), fewer by the moves the cluster shows that `in_flight` does not list (shards with
/// learners, or with more voters than wanted), which count as voluntary.
///
/// Moves: first every replica on a dead node, then every replica on a draining node, each
/// to the live node with the fewest replicas (then the fewest leaders, then the lowest
/// id) that holds none of the shard; then, while two live nodes differ by two replicas
/// or more, one replica from the fuller to the emptier (preferring a shard the fuller one
/// does not lead). Leader transfers, only once no move is planned or running: with spread
/// leaders, away from a node that is not live, then along chains of transfers from a node
/// leading two more shards than another, until no such chain exists; with packed leaders,
/// each shard's leadership to its [`packed_leader`].
pub fn plan_within(cluster: &Cluster, in_flight: &[Move], limits: MoveLimits) -> Plan {
    let mut p = Projection::new(cluster, in_flight);
    let mut plan = Plan::default();
    let repairing = match limits.repairs_max {
        Some(_) => in_flight
            .iter()
            .filter(|m| cluster.state_of(m.from) == NodeState::Dead)
            .count(),
        None => 0,
    };
    let mut repair_budget = limits.repairs_max.map(|r| r.saturating_sub(repairing));
    let mut budget = limits
        .moves_max
        .saturating_sub(in_flight.len() - repairing + p.observed_moves);
    let mut moved: BTreeSet<ShardId> = BTreeSet::new();
    let mut leaders = leader_counts(cluster, &p.shards);
    let data_shards = p.shards.iter().filter(|s| s.shard != METADATA_SHARD);
    for s in data_shards.filter(|s| !p.frozen.contains(&s.shard)) {
        if s.voters.len() != voters_wanted(cluster, s) {
            plan.stuck.push(Stuck {
                shard: s.shard,
                node: None,
                reason: StuckReason::WrongReplicaCount(s.voters.len()),
            });
        }
    }
    for pass in [NodeState::Dead, NodeState::Draining] {
        for i in 0..p.shards.len() {
            let s = &p.shards[i];
            if p.frozen.contains(&s.shard) || moved.contains(&s.shard) {
                continue;
            }
            let Some(from) = s
                .voters
                .iter()
                .copied()
                .find(|v| cluster.state_of(*v) == pass)
            else {
                continue;
            };
            if s.shard == METADATA_SHARD && s.voters.len() > voters_wanted(cluster, s) {
                // The group shrinks anyway: the voter goes without a replacement
                // (`resize_metadata` removes dead and draining voters first).
                continue;
            }
            let stuck = |reason| Stuck {
                shard: s.shard,
                node: Some(from),
                reason,
            };
            if !has_quorum(cluster, s) {
                plan.stuck.push(stuck(StuckReason::NoQuorum));
                continue;
            }
            let target = cluster
                .live_nodes()
                .into_iter()
                .filter(|n| can_receive(s, *n))
                .min_by_key(|n| (p.load[n], leaders.get(n).copied().unwrap_or(0), *n));
            let Some(to) = target else {
                // The metadata group on every live node (5 nodes or fewer): nothing can
                // take its replica, and a move keeps the voter count, so its replica
                // stays and does not hold up a drain (What is next, docs/ELASTIC.md).
                if s.shard != METADATA_SHARD {
                    plan.stuck.push(stuck(StuckReason::NoTarget));
                }
                continue;
            };
            let left = match (&mut repair_budget, pass) {
                (Some(repairs), NodeState::Dead) => repairs,
                _ => &mut budget,
            };
            if *left == 0 {
                continue;
            }
            *left -= 1;
            let m = Move {
                shard: s.shard,
                from,
                to,
                reason: MoveReason::Evacuate,
            };
            take(&mut p, &mut leaders, &mut moved, m);
            plan.moves.push(m);
        }
    }
    if budget > 0 {
        if let Some(m) = resize_metadata(cluster, &p, &moved, &leaders) {
            budget -= 1;
            take(&mut p, &mut leaders, &mut moved, m);
            plan.moves.push(m);
        }
    }
    while budget > 0 {
        let Some(m) = balance_move(cluster, &p, &moved) else {
            break;
        };
        budget -= 1;
        take(&mut p, &mut leaders, &mut moved, m);
        plan.moves.push(m);
    }
    if plan.moves.is_empty() && in_flight.is_empty() && p.frozen.is_empty() {
        plan.leader_transfers = match cluster.leaders {
            LeaderPolicy::Spread => leader_transfers(cluster, &p.shards),
            LeaderPolicy::Pack => packed_transfers(cluster, &p.shards),
        };
    }
    plan.stuck.sort();
    plan
}

/// `node` may receive a replica of `s`: not a member, not avoided.
fn can_receive(s: &ShardInfo, node: NodeId) -> bool {
    !s.voters.contains(&node) && !s.learners.contains(&node) && !s.avoid.contains(&node)
}

/// Records move `m` in the projection.
fn take(
    p: &mut Projection,
    leaders: &mut BTreeMap<NodeId, usize>,
    moved: &mut BTreeSet<ShardId>,
    m: Move,
) {
    let s = p
        .shards
        .iter_mut()
        .find(|s| s.shard == m.shard)
        .expect("a planned move names a shard of the cluster");
    let led_by_from = s.leader == Some(m.from);
    move_voters(s, &m);
    if led_by_from && s.shard != METADATA_SHARD {
        *leaders.entry(m.from).or_default() -= 1;
        *leaders.entry(m.to).or_default() += 1;
    }
    if !m.from.is_none() {
        *p.load.get_mut(&m.from).expect("a voter has a load") -= 1;
    }
    if !m.to.is_none() {
        *p.load.entry(m.to).or_default() += 1;
    }
    moved.insert(m.shard);
}

/// One voter added to or removed from the metadata group, if its voter count is not
/// [`metadata_voters_wanted`] and nothing else moves it this round or is in flight.
/// Added: the live node outside it with the fewest replicas (then leaders, then id),
/// only if its answering voters stay a majority of the larger group. Removed: a voter on
/// a dead, draining or down node first, else the live voter with the most replicas that
/// does not lead it (the leader only when no other is left: its node hands leadership
/// over first), only if the answering voters left are a majority of the smaller group.
fn resize_metadata(
    cluster: &Cluster,
    p: &Projection,
    moved: &BTreeSet<ShardId>,
    leaders: &BTreeMap<NodeId, usize>,
) -> Option<Move> {
    let s = p.shards.iter().find(|s| s.shard == METADATA_SHARD)?;
    if p.frozen.contains(&s.shard) || moved.contains(&s.shard) || !s.learners.is_empty() {
        return None;
    }
    let wanted = metadata_voters_wanted(cluster, s);
    let answering = |voters: &[NodeId]| {
        voters
            .iter()
            .filter(|v| cluster.state_of(**v).answers())
            .count()
    };
    let n = s.voters.len();
    if n < wanted {
        let to = cluster
            .live_nodes()
            .into_iter()
            .filter(|x| can_receive(s, *x))
            .min_by_key(|x| (p.load[x], leaders.get(x).copied().unwrap_or(0), *x))?;
        // The learner answers and is promoted only once caught up.
        (answering(&s.voters) + 1 >= majority(n + 1)).then_some(Move {
            shard: s.shard,
            from: NodeId::NONE,
            to,
            reason: MoveReason::GrowMetadata,
        })
    } else if n > wanted {
        let rank = |v: &NodeId| {
            let not_live = match cluster.state_of(*v) {
                NodeState::Dead => 0,
                NodeState::Draining => 1,
                NodeState::Down => 2,
                NodeState::Joining => 3,
                NodeState::Live => 4,
            };
            let load = p.load.get(v).copied().unwrap_or(0);
            (not_live, s.leader == Some(*v), std::cmp::Reverse(load), *v)
        };
        let from = s.voters.iter().copied().min_by_key(rank)?;
        let left: Vec<NodeId> = s.voters.iter().copied().filter(|v| *v != from).collect();
        (answering(&left) >= majority(n - 1)).then_some(Move {
            shard: s.shard,
            from,
            to: NodeId::NONE,
            reason: MoveReason::ShrinkMetadata,
        })
    } else {
        None
    }
}

/// One move from the fullest live node that can give to the emptiest that can take, if
/// two live nodes differ by two replicas or more.
fn balance_move(cluster: &Cluster, p: &Projection, moved: &BTreeSet<ShardId>) -> Option<Move> {
    let mut live = cluster.live_nodes();
    live.sort_by_key(|n| (p.load[n], *n));
    for a in live.iter().rev() {
        for b in &live {
            if p.load[a] < p.load[b] + 2 {
                break;
            }
            let candidates = p.shards.iter().filter(|s| {
                !p.frozen.contains(&s.shard)
                    && !moved.contains(&s.shard)
                    && s.voters.contains(a)
                    && can_receive(s, *b)
                    && has_quorum(cluster, s)
            });
            // A follower's replica first: moving the leader's costs a leadership transfer.
            let best = candidates.min_by_key(|s| (s.leader == Some(*a), s.shard));
            if let Some(s) = best {
                return Some(Move {
                    shard: s.shard,
                    from: *a,
                    to: *b,
                    reason: MoveReason::Balance,
                });
            }
        }
    }
    None
}

/// Shards led per node (every node listed, 0 when it leads nothing).
fn leader_counts(cluster: &Cluster, shards: &[ShardInfo]) -> BTreeMap<NodeId, usize> {
    let mut counts: BTreeMap<NodeId, usize> = cluster.nodes.iter().map(|n| (n.id, 0)).collect();
    // The metadata group's leadership is not spread: `Op::ShardLeader` names data shards,
    // and a move of its leader's replica hands its leadership over itself.
    let data_shards = shards.iter().filter(|s| s.shard != METADATA_SHARD);
    for l in data_shards.filter_map(|s| s.leader) {
        *counts.entry(l).or_default() += 1;
    }
    counts
}

/// The leader `s` should have under [`LeaderPolicy::Pack`]: its live voter with the lowest
/// id (`None` if no voter is live). Draining, joining, down and dead nodes are passed
/// over, so the next node in the order takes their leaderships.
pub fn packed_leader(cluster: &Cluster, s: &ShardInfo) -> Option<NodeId> {
    (s.voters.iter().copied())
        .filter(|v| cluster.state_of(*v) == NodeState::Live)
        .min()
}

/// Under [`LeaderPolicy::Pack`]: each data shard with a known leader that is not its
/// [`packed_leader`] hands leadership to it. Leader counts are not evened out: with R = N
/// every leadership goes to one node. The metadata group is left alone, as with spread
/// leaders.
fn packed_transfers(cluster: &Cluster, shards: &[ShardInfo]) -> Vec<LeaderTransfer> {
    (shards.iter())
        .filter(|s| s.shard != METADATA_SHARD)
        .filter_map(|s| {
            let from = s.leader?;
            let to = packed_leader(cluster, s)?;
            (to != from).then_some(LeaderTransfer {
                shard: s.shard,
                from,
                to,
            })
        })
        .collect()
}

/// Under [`LeaderPolicy::Spread`]: transfers off nodes that are not live, then chains that each take one leadership from
/// a live node leading `k` shards to one leading at most `k - 2` (each hop hands a shard's
/// leadership to one of its live voters). When no such chain exists, no assignment of
/// leaders to voters has a smaller spread (Harvey, Ladner, Lovász, Tamir: "Semi-matchings
/// for bipartite graphs and load balancing", 2003). Each shard moves at most once a round.
fn leader_transfers(cluster: &Cluster, shards: &[ShardInfo]) -> Vec<LeaderTransfer> {
    let live = cluster.live_nodes();
    let is_live = |n: &NodeId| live.binary_search(n).is_ok();
    let mut leader: BTreeMap<ShardId, NodeId> = shards
        .iter()
        .filter(|s| s.shard != METADATA_SHARD)
        .filter_map(|s| s.leader.map(|l| (s.shard, l)))
        .collect();
    let voters: BTreeMap<ShardId, Vec<NodeId>> = shards
        .iter()
        .map(|s| (s.shard, s.voters.iter().copied().filter(is_live).collect()))
        .collect();
    let mut count: BTreeMap<NodeId, usize> = live.iter().map(|n| (*n, 0)).collect();
    for l in leader.values().filter(|l| is_live(l)) {
        *count.get_mut(l).expect("live") += 1;
    }
    let mut transfers = Vec::new();
    let mut used: BTreeSet<ShardId> = BTreeSet::new();
    for (shard, from) in leader.clone() {
        if is_live(&from) {
            continue;
        }
        let to = voters[&shard].iter().min_by_key(|v| (count[*v], **v));
        if let Some(&to) = to {
            transfers.push(LeaderTransfer { shard, from, to });
            leader.insert(shard, to);
            *count.get_mut(&to).expect("live") += 1;
            used.insert(shard);
        }
    }
    loop {
        let mut by_count = live.clone();
        by_count.sort_by_key(|n| (std::cmp::Reverse(count[n]), *n));
        let chain = by_count
            .iter()
            .find_map(|a| transfer_chain(*a, &leader, &voters, &count, &used));
        let Some(chain) = chain else {
            break;
        };
        let (first, last) = (chain[0].from, chain[chain.len() - 1].to);
        *count.get_mut(&first).expect("live") -= 1;
        *count.get_mut(&last).expect("live") += 1;
        for t in chain {
            leader.insert(t.shard, t.to);
            used.insert(t.shard);
            transfers.push(t);
        }
    }
    transfers
}

/// A chain of transfers from `start` to the node leading the fewest shards among those
/// reachable, if it leads at most two fewer than `start` (breadth first, shards and voters
/// in ascending order, the shortest chain to that node: deterministic), over shards not
/// yet moved this round.
fn transfer_chain(
    start: NodeId,
    leader: &BTreeMap<ShardId, NodeId>,
    voters: &BTreeMap<ShardId, Vec<NodeId>>,
    count: &BTreeMap<NodeId, usize>,
    used: &BTreeSet<ShardId>,
) -> Option<Vec<LeaderTransfer>> {
    let goal = count[&start].checked_sub(2)?;
    let mut came_from: BTreeMap<NodeId, LeaderTransfer> = BTreeMap::new();
    let mut reached: Vec<NodeId> = Vec::new();
    let mut queue = VecDeque::from([start]);
    while let Some(x) = queue.pop_front() {
        for (shard, _) in leader
            .iter()
            .filter(|(s, l)| **l == x && !used.contains(*s))
        {
            for &y in &voters[shard] {
                if y == start || came_from.contains_key(&y) {
                    continue;
                }
                came_from.insert(
                    y,
                    LeaderTransfer {
                        shard: *shard,
                        from: x,
                        to: y,
                    },
                );
                reached.push(y);
                queue.push_back(y);
            }
        }
    }
    // `reached` is in breadth-first order: the first of the emptiest is the nearest.
    let end = *reached.iter().min_by_key(|y| count[*y])?;
    if count[&end] > goal {
        return None;
    }
    let mut chain = vec![came_from[&end]];
    while chain[0].from != start {
        chain.insert(0, came_from[&chain[0].from]);
    }
    Some(chain)
}

/// The rounds `plan` takes from `cluster` to balanced if every move and transfer
/// completes (at most `rounds_max`); `kvcli rebalance --dry-run` prints them.
pub fn simulate(cluster: &Cluster, moves_max: usize, rounds_max: usize) -> Vec<Plan> {
    let mut c = cluster.clone();
    let mut rounds = Vec::new();
    while rounds.len() < rounds_max {
        let p = plan(&c, &[], moves_max);
        if p.is_empty() {
            break;
        }
        c.apply(&p);
        rounds.push(p);
    }
    rounds
}
