//! Moving a shard's replica from one node to another (`Op::MoveReplica`), and adding or
//! removing one voter of the metadata group (a move with one side `NodeId::NONE`): the
//! checks a leader makes before recording a move, and the driver that takes a recorded move
//! through its membership changes one step at a time. Both are pure functions of the
//! shard's replicated state (membership, the move in flight) and the leader's view of
//! its followers, so that whichever replica leads next takes the same next step.

use crate::sm::MoveInFlight;
use kv_raft::{ConfChange, Membership};
use kv_shared::proto::{MoveRefusal, ShardRoute};
use kv_shared::registry::{NodeState, METADATA_SHARD};
use kv_shared::NodeId;

/// A learner that has not caught up with the leader's commit index this many ticks after
/// the leader first saw it as a learner is given up on: the move is undone. At the
/// default 10 ms tick, 10 minutes: long enough for a snapshot of the largest shard over
/// a slow link, short enough that a move to a node that died does not block the shard's
/// moves forever.
pub const MOVE_CATCH_UP_TICKS_MAX: u64 = 60_000;

/// A learner whose replica has sent its leader nothing for this many election timeouts
/// (the longest, `election_ticks_max`) is given up on at once: a node that is down, or
/// that refuses the shard, would otherwise hold the shard's moves for
/// [`MOVE_CATCH_UP_TICKS_MAX`]. A learner receiving a snapshot acknowledges every chunk,
/// so a slow transfer is not silence.
pub const MOVE_LEARNER_SILENT_ELECTIONS_MAX: u64 = 5;

/// A replica created by a move that its shard never listed (the move was undone before
/// the leader's snapshot reached it) is forgotten after hearing no leader for this many
/// election timeouts: twice the silence after which the leader gives up on the move's
/// learner, so a leader still adding it has given up first. A learner being caught up
/// hears its leader every heartbeat.
pub const CREATED_REPLICA_SILENT_ELECTIONS_MAX: u64 = 2 * MOVE_LEARNER_SILENT_ELECTIONS_MAX;

/// Refuses a move that cannot start: `members` are the nodes of the cluster (removed
/// ones left out), `to_state` the registry's state of `to`, `route` the shard's replica
/// set now, `in_flight` the move recorded, if any. `from` or `to` may be `NodeId::NONE`
/// for the metadata group only (its voter count follows the cluster's size; a data
/// shard keeps R): a voter added, or one removed (never the last).
pub fn check_move(
    from: NodeId,
    to: NodeId,
    members: &[NodeId],
    to_state: Option<NodeState>,
    route: &ShardRoute,
    in_flight: Option<MoveInFlight>,
) -> Result<(), MoveRefusal> {
    if from.is_none() || to.is_none() {
        return check_voter_change(from, to, members, to_state, route, in_flight);
    }
    check_target(to, members, to_state)?;
    // `from` may have been removed (`node remove --dead`): its replicas are what moves.
    if !members.contains(&from) && !route.voters.contains(&from) {
        return Err(MoveRefusal::UnknownNode { node: from });
    }
    if from == to {
        return Err(MoveRefusal::SameNode);
    }
    check_no_move_in_flight(in_flight)?;
    check_not_member(to, route)?;
    check_voter(from, route)
}

/// `to` can receive a replica: a node of the cluster, neither draining nor removed.
fn check_target(
    to: NodeId,
    members: &[NodeId],
    to_state: Option<NodeState>,
) -> Result<(), MoveRefusal> {
    if !members.contains(&to) {
        return Err(MoveRefusal::UnknownNode { node: to });
    }
    if let Some(state @ (NodeState::Draining | NodeState::Removed)) = to_state {
        return Err(MoveRefusal::NotActive { node: to, state });
    }
    Ok(())
}

/// One move at a time per shard.
fn check_no_move_in_flight(in_flight: Option<MoveInFlight>) -> Result<(), MoveRefusal> {
    match in_flight {
        Some(m) => Err(MoveRefusal::MoveInFlight {
            from: m.from,
            to: m.to,
        }),
        None => Ok(()),
    }
}

/// `to` holds no replica of the shard yet.
fn check_not_member(to: NodeId, route: &ShardRoute) -> Result<(), MoveRefusal> {
    if route.voters.contains(&to) || route.learners.contains(&to) {
        return Err(MoveRefusal::AlreadyMember {
            node: to,
            route: route.clone(),
        });
    }
    Ok(())
}

/// `from` is a voter of the shard.
fn check_voter(from: NodeId, route: &ShardRoute) -> Result<(), MoveRefusal> {
    if !route.voters.contains(&from) {
        return Err(MoveRefusal::NotAVoter {
            node: from,
            route: route.clone(),
        });
    }
    Ok(())
}

/// [`check_move`] for a voter added (`from` none) or removed (`to` none).
fn check_voter_change(
    from: NodeId,
    to: NodeId,
    members: &[NodeId],
    to_state: Option<NodeState>,
    route: &ShardRoute,
    in_flight: Option<MoveInFlight>,
) -> Result<(), MoveRefusal> {
    if route.shard != METADATA_SHARD {
        return Err(MoveRefusal::VoterCountFixed);
    }
    if from.is_none() && to.is_none() {
        return Err(MoveRefusal::SameNode);
    }
    check_no_move_in_flight(in_flight)?;
    if from.is_none() {
        check_target(to, members, to_state)?;
        return check_not_member(to, route);
    }
    check_voter(from, route)?;
    if route.voters.len() <= 1 {
        return Err(MoveRefusal::LastVoter { node: from });
    }
    Ok(())
}

/// What the leader does next for a move in flight.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MoveStep {
    /// Propose this membership change.
    Change(ConfChange),
    /// Hand leadership to this voter (the leader is the replica that goes).
    TransferLeadership(NodeId),
    /// Wait (the learner is catching up, or a change is being applied).
    Wait,
    /// Record the move as ended: done (`None`) or undone for this reason.
    End(Option<MoveRefusal>),
}

/// The leader's view of a shard, as the move driver reads it.
#[derive(Clone, Debug)]
pub struct LeaderView<'a> {
    /// This node (the leader).
    pub me: NodeId,
    /// The membership as of the commit index.
    pub membership: &'a Membership,
    /// Each follower's match index.
    pub progress: &'a [(NodeId, u64)],
    /// The leader's commit index.
    pub commit: u64,
    /// Ticks since this leader first saw the move's learner catching up.
    pub catch_up_ticks: u64,
    /// Ticks since the learner's replica last sent this leader anything for the shard
    /// (at most `catch_up_ticks`).
    pub learner_silent_ticks: u64,
    /// Silence after which the learner is given up on: [`MOVE_LEARNER_SILENT_ELECTIONS_MAX`]
    /// election timeouts.
    pub learner_silent_ticks_max: u64,
    /// Leadership transfers this replica started for the move so far (see
    /// [`transfer_target`]).
    pub transfers_tried: u32,
}

/// The next step of move `m`, from the membership it has reached. The steps are
/// `AddLearner(to)`, catch-up, `PromoteLearner(to)`, a leadership transfer if `from`
/// leads, `RemoveNode(from)`, then the end (a voter added, `from` none, ends after the
/// promotion; a voter removed, `to` none, starts at the transfer); a learner that does not catch up within
/// [`MOVE_CATCH_UP_TICKS_MAX`], or is silent for `learner_silent_ticks_max`, ends the
/// move undone (the stray learner is then removed, see [`stray_learner`]).
pub fn next_step(m: &MoveInFlight, view: &LeaderView<'_>) -> MoveStep {
    let voters = &view.membership.voters;
    let learners = &view.membership.learners;
    let matched = |n: NodeId| {
        view.progress
            .iter()
            .find(|(id, _)| *id == n)
            .map_or(0, |(_, m)| *m)
    };
    if learners.contains(&m.to) {
        if matched(m.to) >= view.commit {
            return MoveStep::Change(ConfChange::PromoteLearner(m.to));
        }
        if view.catch_up_ticks >= MOVE_CATCH_UP_TICKS_MAX
            || view.learner_silent_ticks >= view.learner_silent_ticks_max
        {
            return MoveStep::End(Some(MoveRefusal::CatchUpTimedOut {
                node: m.to,
                ticks: view.catch_up_ticks,
            }));
        }
        return MoveStep::Wait;
    }
    let from_member = !m.from.is_none() && (voters.contains(&m.from) || learners.contains(&m.from));
    if !m.to.is_none() && !voters.contains(&m.to) {
        return if m.from.is_none() || voters.contains(&m.from) {
            MoveStep::Change(ConfChange::AddLearner(m.to))
        } else {
            // `from` left by some other way before `to` joined: nothing to move.
            MoveStep::End(Some(MoveRefusal::NotAVoter {
                node: m.from,
                route: ShardRoute {
                    shard: m.shard,
                    epoch: 0,
                    voters: voters.clone(),
                    learners: learners.clone(),
                    leader: Some(view.me),
                },
            }))
        };
    }
    if !from_member {
        return MoveStep::End(None);
    }
    if m.from == view.me {
        return MoveStep::TransferLeadership(transfer_target(m, view));
    }
    MoveStep::Change(ConfChange::RemoveNode(m.from))
}

/// The voter a leader that goes hands leadership to: the move's new voter first; when
/// earlier transfers did not take, in turn every other voter (the most caught up first),
/// then the new voter again. The new voter may have died since its promotion, and a
/// leader that kept handing over to it alone would never be removed: the shard would
/// keep four voters, and no other move could start while this one is in flight.
pub fn transfer_target(m: &MoveInFlight, view: &LeaderView<'_>) -> NodeId {
    let matched = |n: NodeId| {
        view.progress
            .iter()
            .find(|(id, _)| *id == n)
            .map_or(0, |(_, m)| *m)
    };
    let mut others: Vec<NodeId> = view
        .membership
        .voters
        .iter()
        .copied()
        .filter(|v| *v != view.me && *v != m.to)
        .collect();
    others.sort_by_key(|v| (std::cmp::Reverse(matched(*v)), *v));
    // A voter removed (`to` none) hands over to the others alone.
    let first = Some(m.to).filter(|to| !to.is_none());
    let order: Vec<NodeId> = first.into_iter().chain(others).collect();
    if order.is_empty() {
        // No other voter: never asked for (`check_move` refuses removing the last).
        return view.me;
    }
    order[view.transfers_tried as usize % order.len()]
}

/// A learner that no move in flight is adding (left by a move that was undone): the
/// leader removes it.
pub fn stray_learner(membership: &Membership, in_flight: Option<MoveInFlight>) -> Option<NodeId> {
    membership
        .learners
        .iter()
        .copied()
        .find(|l| in_flight.is_none_or(|m| m.to != *l))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kv_shared::{ClientId, ShardId};

    fn n(ids: &[u64]) -> Vec<NodeId> {
        ids.iter().map(|i| NodeId(*i)).collect()
    }

    fn mv(from: u64, to: u64) -> MoveInFlight {
        MoveInFlight {
            shard: ShardId(0),
            from: NodeId(from),
            to: NodeId(to),
            client: ClientId(9),
            seq: 1,
        }
    }

    fn step(
        m: &MoveInFlight,
        voters: &[u64],
        learners: &[u64],
        me: u64,
        progress: &[(u64, u64)],
    ) -> MoveStep {
        let membership = Membership {
            voters: n(voters),
            learners: n(learners),
        };
        let progress: Vec<(NodeId, u64)> = progress.iter().map(|(i, m)| (NodeId(*i), *m)).collect();
        next_step(
            m,
            &LeaderView {
                me: NodeId(me),
                membership: &membership,
                progress: &progress,
                commit: 10,
                catch_up_ticks: 0,
                learner_silent_ticks: 0,
                learner_silent_ticks_max: 100,
                transfers_tried: 0,
            },
        )
    }

    #[test]
    fn a_move_walks_learner_catch_up_promote_remove_end() {
        let m = mv(3, 4);
        let add = step(&m, &[1, 2, 3], &[], 1, &[(2, 10), (3, 10)]);
        assert_eq!(add, MoveStep::Change(ConfChange::AddLearner(NodeId(4))));
        let wait = step(&m, &[1, 2, 3], &[4], 1, &[(4, 9)]);
        assert_eq!(wait, MoveStep::Wait);
        let promote = step(&m, &[1, 2, 3], &[4], 1, &[(4, 10)]);
        assert_eq!(
            promote,
            MoveStep::Change(ConfChange::PromoteLearner(NodeId(4)))
        );
        let remove = step(&m, &[1, 2, 3, 4], &[], 1, &[(4, 10)]);
        assert_eq!(remove, MoveStep::Change(ConfChange::RemoveNode(NodeId(3))));
        assert_eq!(step(&m, &[1, 2, 4], &[], 1, &[]), MoveStep::End(None));
    }

    fn metadata_move(from: u64, to: u64) -> MoveInFlight {
        MoveInFlight {
            shard: METADATA_SHARD,
            ..mv(from, to)
        }
    }

    #[test]
    fn a_voter_added_walks_learner_catch_up_promote_end() {
        let m = metadata_move(0, 4);
        let add = step(&m, &[1, 2, 3], &[], 1, &[(2, 10), (3, 10)]);
        assert_eq!(add, MoveStep::Change(ConfChange::AddLearner(NodeId(4))));
        assert_eq!(step(&m, &[1, 2, 3], &[4], 1, &[(4, 9)]), MoveStep::Wait);
        let promote = step(&m, &[1, 2, 3], &[4], 1, &[(4, 10)]);
        assert_eq!(
            promote,
            MoveStep::Change(ConfChange::PromoteLearner(NodeId(4)))
        );
        assert_eq!(step(&m, &[1, 2, 3, 4], &[], 1, &[]), MoveStep::End(None));
    }

    #[test]
    fn a_voter_removed_goes_at_once_and_a_leader_hands_over_first() {
        let m = metadata_move(3, 0);
        let remove = step(&m, &[1, 2, 3, 4, 5], &[], 1, &[]);
        assert_eq!(remove, MoveStep::Change(ConfChange::RemoveNode(NodeId(3))));
        assert_eq!(step(&m, &[1, 2, 4, 5], &[], 1, &[]), MoveStep::End(None));
        let leader_goes = metadata_move(1, 0);
        let s = step(&leader_goes, &[1, 2, 3], &[], 1, &[(2, 9), (3, 10)]);
        assert_eq!(s, MoveStep::TransferLeadership(NodeId(3)), "most caught up");
    }

    #[test]
    fn voter_changes_are_for_the_metadata_group_and_never_remove_the_last() {
        let route = |voters: &[u64]| ShardRoute {
            shard: METADATA_SHARD,
            epoch: 0,
            voters: n(voters),
            learners: vec![],
            leader: Some(NodeId(1)),
        };
        let members = n(&[1, 2, 3, 4]);
        let none = NodeId::NONE;
        let check =
            |from, to, r: &ShardRoute, state| check_move(from, to, &members, state, r, None);
        assert_eq!(check(none, NodeId(4), &route(&[1, 2, 3]), None), Ok(()));
        assert_eq!(check(NodeId(3), none, &route(&[1, 2, 3]), None), Ok(()));
        let data = ShardRoute {
            shard: ShardId(0),
            ..route(&[1, 2, 3])
        };
        let e = check(none, NodeId(4), &data, None).unwrap_err();
        assert_eq!(e, MoveRefusal::VoterCountFixed);
        assert!(e.to_string().contains("replication factor"), "{e}");
        assert_eq!(
            check(NodeId(1), none, &route(&[1]), None),
            Err(MoveRefusal::LastVoter { node: NodeId(1) })
        );
        assert!(matches!(
            check(NodeId(4), none, &route(&[1, 2, 3]), None),
            Err(MoveRefusal::NotAVoter { .. })
        ));
        assert!(matches!(
            check(none, NodeId(2), &route(&[1, 2, 3]), None),
            Err(MoveRefusal::AlreadyMember { .. })
        ));
        assert_eq!(
            check(
                none,
                NodeId(4),
                &route(&[1, 2, 3]),
                Some(NodeState::Draining)
            ),
            Err(MoveRefusal::NotActive {
                node: NodeId(4),
                state: NodeState::Draining
            })
        );
        assert_eq!(
            check(none, NodeId(9), &route(&[1, 2, 3]), None),
            Err(MoveRefusal::UnknownNode { node: NodeId(9) })
        );
        assert_eq!(
            check(none, none, &route(&[1, 2, 3]), None),
            Err(MoveRefusal::SameNode)
        );
        let in_flight = Some(metadata_move(0, 4));
        assert!(matches!(
            check_move(
                none,
                NodeId(4),
                &members,
                None,
                &route(&[1, 2, 3]),
                in_flight
            ),
            Err(MoveRefusal::MoveInFlight { .. })
        ));
    }

    #[test]
    fn a_leader_that_goes_hands_over_to_the_new_voter_first() {
        let m = mv(1, 4);
        let s = step(&m, &[1, 2, 3, 4], &[], 1, &[(4, 10)]);
        assert_eq!(s, MoveStep::TransferLeadership(NodeId(4)));
    }

    /// The new voter may die right after its promotion: a leader whose transfers to it
    /// do not take hands over to the other voters in turn (most caught up first).
    #[test]
    fn a_leader_whose_transfers_do_not_take_tries_the_other_voters() {
        let m = mv(1, 4);
        let membership = Membership {
            voters: n(&[1, 2, 3, 4]),
            learners: vec![],
        };
        let progress = [(NodeId(2), 7), (NodeId(3), 10), (NodeId(4), 10)];
        let view = |transfers_tried| LeaderView {
            me: NodeId(1),
            membership: &membership,
            progress: &progress,
            commit: 10,
            catch_up_ticks: 0,
            learner_silent_ticks: 0,
            learner_silent_ticks_max: 100,
            transfers_tried,
        };
        let targets: Vec<MoveStep> = (0..4).map(|t| next_step(&m, &view(t))).collect();
        let expected = [4, 3, 2, 4].map(|i| MoveStep::TransferLeadership(NodeId(i)));
        assert_eq!(targets, expected);
    }

    #[test]
    fn a_learner_that_never_catches_up_undoes_the_move() {
        let m = mv(3, 4);
        let membership = Membership {
            voters: n(&[1, 2, 3]),
            learners: n(&[4]),
        };
        let view = LeaderView {
            me: NodeId(1),
            membership: &membership,
            progress: &[],
            commit: 10,
            catch_up_ticks: MOVE_CATCH_UP_TICKS_MAX,
            learner_silent_ticks: 0,
            learner_silent_ticks_max: 100,
            transfers_tried: 0,
        };
        assert!(matches!(
            next_step(&m, &view),
            MoveStep::End(Some(MoveRefusal::CatchUpTimedOut { .. }))
        ));
        let answering = LeaderView {
            catch_up_ticks: 99,
            learner_silent_ticks: 99,
            ..view.clone()
        };
        assert_eq!(next_step(&m, &answering), MoveStep::Wait);
        let silent = LeaderView {
            learner_silent_ticks: 100,
            ..answering
        };
        assert!(matches!(
            next_step(&m, &silent),
            MoveStep::End(Some(MoveRefusal::CatchUpTimedOut { .. }))
        ));
        assert_eq!(stray_learner(&membership, None), Some(NodeId(4)));
        assert_eq!(stray_learner(&membership, Some(m)), None);
    }

    #[test]
    fn checks_name_what_is_wrong() {
        let route = ShardRoute {
            shard: ShardId(0),
            epoch: 0,
            voters: n(&[1, 2, 3]),
            learners: vec![],
            leader: Some(NodeId(1)),
        };
        let members = n(&[1, 2, 3, 4]);
        let check = |from, to, f| check_move(NodeId(from), NodeId(to), &members, None, &route, f);
        assert_eq!(check(3, 4, None), Ok(()));
        assert_eq!(
            check(3, 9, None),
            Err(MoveRefusal::UnknownNode { node: NodeId(9) })
        );
        assert_eq!(check(3, 3, None), Err(MoveRefusal::SameNode));
        assert!(matches!(
            check(3, 2, None),
            Err(MoveRefusal::AlreadyMember { .. })
        ));
        assert!(matches!(
            check(4, 3, None),
            Err(MoveRefusal::AlreadyMember { .. })
        ));
        assert!(matches!(check(4, 4, None), Err(MoveRefusal::SameNode)));
        // A removed node (left out of the members) is no target, but its replicas move.
        let live = n(&[1, 2, 4]);
        assert_eq!(
            check_move(NodeId(3), NodeId(4), &live, None, &route, None),
            Ok(())
        );
        assert_eq!(
            check_move(NodeId(1), NodeId(3), &live, None, &route, None),
            Err(MoveRefusal::UnknownNode { node: NodeId(3) })
        );
        assert_eq!(
            check_move(NodeId(9), NodeId(4), &live, None, &route, None),
            Err(MoveRefusal::UnknownNode { node: NodeId(9) })
        );
        let draining = Some(NodeState::Draining);
        let e = check_move(NodeId(3), NodeId(4), &members, draining, &route, None);
        assert_eq!(
            e,
            Err(MoveRefusal::NotActive {
                node: NodeId(4),
                state: NodeState::Draining
            })
        );
        assert_eq!(
            e.unwrap_err().to_string(),
            "node n4 is draining and receives no replica"
        );
        let in_flight = Some(mv(2, 4));
        assert_eq!(
            check(3, 4, in_flight),
            Err(MoveRefusal::MoveInFlight {
                from: NodeId(2),
                to: NodeId(4)
            })
        );
    }
}
