//! The metadata group moves like a shard: a registered node that holds none of it
//! receives a replica by `MoveReplica` on the group (snapshot with the registry), the old
//! voter drops it, the new replica survives a restart, the leader's own replica moves too,
//! and a node holding no replica routes admin operations by the route it last heard; the
//! group gains a voter (a learner caught up and promoted) and loses one.

use super::{ids, Cluster};
use crate::NodeConfig;
use kv_shared::proto::{ClientError, ClientRequest, Op, Outcome, Role};
use kv_shared::registry::METADATA_SHARD;
use kv_shared::{ClientId, NodeId};
use std::net::SocketAddr;

/// Four nodes: 1-3 from the cluster file (one shard and the metadata group on them),
/// node 4 joined and registered, with the registry every node knows.
fn joined_fourth() -> Cluster {
    joined(4)
}

/// `nodes` nodes: 1-3 from the cluster file (one shard and the metadata group on them),
/// the others joined and registered, with the registry every node knows.
fn joined(nodes: u64) -> Cluster {
    let mut c = Cluster::with(nodes, 1, |cfg| {
        cfg.members = ids(3);
        cfg.replication = 3;
        cfg.metadata_voters = ids(3);
        cfg.snapshot_threshold_entries = 20;
    });
    c.tick(60);
    for node in 1..=nodes {
        let req = ClientRequest {
            client: ClientId(10 + node),
            seq: 1,
            epoch: 0,
            op: Op::RegisterNode {
                node: NodeId(node),
                addr: SocketAddr::from(([127, 0, 0, 1], 7000 + node as u16)),
                identity: 0x100 + node,
            },
        };
        assert_eq!(metadata_op(&mut c, 100 + node, req), Outcome::Done);
    }
    let registry = c.nodes[c.leader(METADATA_SHARD)].registry().unwrap();
    for n in &mut c.nodes[3..] {
        n.learn_registry(registry.clone());
    }
    c
}

/// Sends `req` to the metadata group's leader until an answer other than a timeout or a
/// redirect comes (at most 3000 ticks).
fn metadata_op(c: &mut Cluster, token: u64, req: ClientRequest) -> Outcome {
    for _ in 0..300 {
        let before = c.reply_to(token).len();
        let leader = (0..c.nodes.len()).find(|&i| {
            c.nodes[i].hosts(METADATA_SHARD)
                && c.nodes[i].raft_status(METADATA_SHARD).role == Role::Leader
        });
        if let Some(l) = leader {
            c.request(l, token, req.clone());
            c.flush(l);
        }
        c.tick(10);
        let replies = c.reply_to(token);
        if replies.len() > before {
            match replies.last().unwrap() {
                Outcome::Error(ClientError::Timeout { .. })
                | Outcome::Error(ClientError::NotLeader { .. }) => {}
                last => return last.clone(),
            }
        }
    }
    panic!("no answer to request {token} within 3000 ticks");
}

fn move_metadata(client: u64, from: u64, to: u64) -> ClientRequest {
    ClientRequest {
        client: ClientId(client),
        seq: 1,
        epoch: 0,
        op: Op::MoveReplica {
            shard: METADATA_SHARD,
            from: NodeId(from),
            to: NodeId(to),
        },
    }
}

#[test]
fn a_metadata_replica_moves_to_a_joined_node_with_the_registry_and_survives_its_restart() {
    let mut c = joined_fourth();
    assert!(!c.nodes[3].hosts(METADATA_SHARD));
    let l = c.leader(METADATA_SHARD);
    let from = (0..3).find(|&i| i != l).unwrap();
    let done = metadata_op(&mut c, 1, move_metadata(50, from as u64 + 1, 4));
    assert_eq!(done, Outcome::Done);
    c.tick(30);
    let l = c.leader(METADATA_SHARD);
    let mut voters = c.voters(l, METADATA_SHARD);
    voters.sort();
    let mut want: Vec<NodeId> = [1, 2, 3, 4]
        .into_iter()
        .filter(|n| *n != from as u64 + 1)
        .map(NodeId)
        .collect();
    want.sort();
    assert_eq!(voters, want);
    assert!(c.nodes[3].hosts(METADATA_SHARD), "node 4 holds the group");
    assert!(
        !c.nodes[from].hosts(METADATA_SHARD),
        "the old voter dropped it"
    );
    // The new replica's state machine, registry included, is the leader's.
    assert_eq!(
        c.nodes[3].state_digest(METADATA_SHARD),
        c.nodes[l].state_digest(METADATA_SHARD)
    );
    // Node 4 recovers the replica it was given (not in its bootstrap groups).
    let mut config = NodeConfig::for_test(NodeId(4), ids(3), 1);
    config.replication = 3;
    config.metadata_voters = ids(3);
    config.snapshot_threshold_entries = 20;
    c.restart(3, config);
    assert!(
        c.nodes[3].hosts(METADATA_SHARD),
        "recovered after a restart"
    );
    c.tick(60);
    let l = c.leader(METADATA_SHARD);
    assert_eq!(c.voters(l, METADATA_SHARD).len(), 3);
    // The status of every node names the moved group's voters.
    let route = c.nodes[l].status().metadata.expect("a metadata route");
    assert!(route.voters.contains(&NodeId(4)) && route.epoch > 0);
}

#[test]
fn the_metadata_leaders_own_replica_moves_and_a_non_member_routes_by_what_it_heard() {
    let mut c = joined_fourth();
    let l = c.leader(METADATA_SHARD);
    let done = metadata_op(&mut c, 1, move_metadata(50, l as u64 + 1, 4));
    assert_eq!(done, Outcome::Done);
    c.tick(60);
    let l2 = c.leader(METADATA_SHARD);
    assert_ne!(l2, l, "leadership left the moved replica");
    assert!(!c.nodes[l].hosts(METADATA_SHARD));
    let route = *c.nodes[l2].status().metadata.unwrap();
    assert!(!route.voters.contains(&NodeId(l as u64 + 1)));
    // The old leader holds no replica: it answers admin operations with the route of
    // its removal, newer than the bootstrap voters.
    let stale = c.nodes[l].shard_route(METADATA_SHARD);
    assert!(!stale.voters.contains(&NodeId(l as u64 + 1)), "{stale:?}");
    // A node that heard a newer route (the registration's status polls) routes by it.
    let mut newer = route.clone();
    newer.epoch += 10;
    newer.voters = vec![NodeId(9)];
    c.nodes[l].learn_metadata_route(newer.clone());
    assert_eq!(c.nodes[l].shard_route(METADATA_SHARD), newer);
    let mut older = route;
    older.epoch = 1;
    c.nodes[l].learn_metadata_route(older);
    assert_eq!(
        c.nodes[l].shard_route(METADATA_SHARD),
        newer,
        "never goes back"
    );
}

fn sorted_voters(c: &Cluster) -> Vec<NodeId> {
    let l = c.leader(METADATA_SHARD);
    let mut voters = c.voters(l, METADATA_SHARD);
    voters.sort();
    voters
}

/// The metadata group grows from 3 voters to 5 by two adds (no replica leaves), the new
/// voters hold the registry and count in its quorum (two of the first three stopped, it
/// still commits a registry change), and shrinks by a removal of its leader's voter.
#[test]
fn the_metadata_group_gains_voters_by_catch_up_and_promotion_and_loses_one() {
    let mut c = joined(5);
    assert_eq!(sorted_voters(&c), ids(3));
    let none = 0;
    for (token, node) in [(1, 4), (2, 5)] {
        let done = metadata_op(&mut c, token, move_metadata(50 + token, none, node));
        assert_eq!(done, Outcome::Done, "voter {node} added");
    }
    c.tick(30);
    assert_eq!(sorted_voters(&c), ids(5));
    let l = c.leader(METADATA_SHARD);
    for i in 3..5 {
        assert!(c.nodes[i].hosts(METADATA_SHARD));
        assert_eq!(
            c.nodes[i].state_digest(METADATA_SHARD),
            c.nodes[l].state_digest(METADATA_SHARD),
            "node {} holds the registry",
            i + 1
        );
    }
    // A data shard keeps R voters: no add there.
    let data_add = ClientRequest {
        op: Op::MoveReplica {
            shard: kv_shared::ShardId(0),
            from: NodeId::NONE,
            to: NodeId(4),
        },
        ..move_metadata(60, 0, 4)
    };
    let refused = c.until_answered(3, data_add, 2000);
    assert!(
        matches!(
            &refused,
            Outcome::Error(ClientError::MoveRefused {
                reason: kv_shared::proto::MoveRefusal::VoterCountFixed,
                ..
            })
        ),
        "{refused:?}"
    );
    // Five voters survive two of the first three stopping: the group still commits.
    let leader = c.leader(METADATA_SHARD);
    let stopped: Vec<usize> = (0..3).filter(|&i| i != leader).take(2).collect();
    for &i in &stopped {
        c.down[i] = true;
    }
    let pause = ClientRequest {
        client: ClientId(70),
        seq: 1,
        epoch: 0,
        op: Op::PauseBalancer { paused: true },
    };
    assert_eq!(metadata_op(&mut c, 4, pause), Outcome::Done);
    let l = c.leader(METADATA_SHARD);
    assert!(c.nodes[l].registry().unwrap().balancer_paused);
    for &i in &stopped {
        c.down[i] = false;
    }
    c.tick(60);
    // The leader's own voter removed: it hands leadership over, then goes.
    let l = c.leader(METADATA_SHARD);
    let done = metadata_op(&mut c, 5, move_metadata(80, l as u64 + 1, none));
    assert_eq!(done, Outcome::Done);
    c.tick(60);
    let voters = sorted_voters(&c);
    assert_eq!(voters.len(), 4);
    assert!(!voters.contains(&NodeId(l as u64 + 1)));
    assert!(!c.nodes[l].hosts(METADATA_SHARD), "its replica dropped");
}
