//! The metadata group moves like a shard: a registered node that holds none of it
//! receives a replica by `MoveReplica` on the group (snapshot with the registry), the old
//! voter drops it, the new replica survives a restart, the leader's own replica moves too,
//! and a node holding no replica routes admin operations by the route it last heard.

use super::{ids, Cluster};
use crate::NodeConfig;
use kv_shared::proto::{ClientError, ClientRequest, Op, Outcome, Role};
use kv_shared::registry::METADATA_SHARD;
use kv_shared::{ClientId, NodeId};
use std::net::SocketAddr;

/// Four nodes: 1-3 from the cluster file (one shard and the metadata group on them),
/// node 4 joined and registered, with the registry every node knows.
fn joined_fourth() -> Cluster {
    let mut c = Cluster::with(4, 1, |cfg| {
        cfg.members = ids(3);
        cfg.replication = 3;
        cfg.metadata_voters = ids(3);
        cfg.snapshot_threshold_entries = 20;
    });
    c.tick(60);
    for node in 1..=4u64 {
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
    c.nodes[3].learn_registry(registry);
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
