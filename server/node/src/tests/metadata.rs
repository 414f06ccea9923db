//! The metadata group in whole-node tests: its replicas elect like a shard's, register
//! nodes exactly once, refuse an id under another identity, keep the registry across a
//! restart, and every node's status carries the registry it knows.

use super::{ids, Cluster};
use crate::{NodeConfig, NodeCore};
use kv_shared::proto::{ClientError, ClientRequest, Op, Outcome};
use kv_shared::registry::{NodeState, RegisterRefusal, Registry, METADATA_SHARD};
use kv_shared::{ClientId, NodeId, ShardId};
use kv_storage::Recovered;
use std::net::SocketAddr;

/// Five nodes, 2 shards at R = 3; the metadata group on nodes 1-3 (the test keeps the
/// group to 3 voters so that nodes 4 and 5 show how non-members learn the registry).
fn config(node: NodeId) -> NodeConfig {
    let mut c = NodeConfig::for_test(node, ids(5), 2);
    c.replication = 3;
    c.metadata_voters = ids(3);
    c
}

fn cluster() -> Cluster {
    let mut c = Cluster::with(5, 2, |cfg| *cfg = config(cfg.node));
    c.tick(60);
    c
}

fn register(client: u64, node: u64, identity: u64) -> ClientRequest {
    ClientRequest {
        client: ClientId(client),
        seq: 1,
        epoch: 0,
        op: Op::RegisterNode {
            node: NodeId(node),
            addr: SocketAddr::from(([127, 0, 0, 1], 7000 + node as u16)),
            identity,
        },
    }
}

#[test]
fn only_the_metadata_voters_host_the_group_and_it_elects_among_them() {
    let c = cluster();
    let hosts: Vec<bool> = c.nodes.iter().map(|n| n.hosts(METADATA_SHARD)).collect();
    assert_eq!(hosts, [true, true, true, false, false]);
    let l = c.leader(METADATA_SHARD);
    assert!(l < 3);
    // No status row for it: it is no shard of the keyspace.
    let status = c.nodes[l].status();
    assert!(status.shards.iter().all(|s| s.shard != METADATA_SHARD));
    assert_eq!(status.registry, None, "nothing registered yet");
}

#[test]
fn registrations_apply_once_and_another_identity_under_a_known_id_is_refused() {
    let mut c = cluster();
    let l = c.leader(METADATA_SHARD);
    // Node 5 (no metadata replica) is told where the group lives.
    c.request(4, 1, register(11, 5, 0x55));
    c.flush(4);
    match &c.reply_to(1)[..] {
        [Outcome::Error(ClientError::StaleRoute { route, .. })] => {
            assert_eq!(route.shard, METADATA_SHARD);
            assert_eq!(route.voters, ids(3));
        }
        other => panic!("{other:?}"),
    }
    for (token, node) in [(2, 1), (3, 5)] {
        c.request(l, token, register(20 + node, node, 0x100 + node));
        c.flush(l);
        c.tick(3);
        assert_eq!(c.reply_to(token), vec![Outcome::Done], "node {node}");
    }
    // A retry of the same request (same session and seq) is answered, not applied again.
    c.request(l, 4, register(25, 5, 0x105));
    c.flush(l);
    c.tick(3);
    assert_eq!(c.reply_to(4), vec![Outcome::Done]);
    let version = c.nodes[l].registry().unwrap().version;
    // Node 5 comes back with another data directory: refused, naming the id.
    c.request(l, 5, register(30, 5, 0x999));
    c.flush(l);
    c.tick(3);
    let expected = RegisterRefusal::IdentityMismatch {
        node: NodeId(5),
        registered: 0x105,
        presented: 0x999,
    };
    assert_eq!(
        c.reply_to(5),
        vec![Outcome::Error(ClientError::RegisterRefused(expected))]
    );
    // Every metadata replica applied the same registry; the refusal changed nothing.
    for i in 0..3 {
        let r = c.nodes[i].registry().expect("a metadata replica knows it");
        assert_eq!(r.version, version, "node {}", i + 1);
        let listed: Vec<(u64, NodeState, u64)> = r
            .nodes
            .iter()
            .map(|n| (n.id.0, n.state, n.identity))
            .collect();
        assert_eq!(
            listed,
            [
                (1, NodeState::Joining, 0x101),
                (5, NodeState::Joining, 0x105)
            ]
        );
        assert_eq!(c.nodes[i].status().registry, Some(Box::new(r)));
    }
    // A node outside the group knows only what it heard, and keeps the newest.
    assert_eq!(c.nodes[3].registry(), None);
    let newest = c.nodes[0].registry().unwrap();
    c.nodes[3].learn_registry(newest.clone());
    c.nodes[3].learn_registry(Registry::default());
    assert_eq!(c.nodes[3].status().registry, Some(Box::new(newest)));
}

#[test]
fn the_registry_survives_a_restart_of_every_metadata_replica() {
    let mut c = cluster();
    let l = c.leader(METADATA_SHARD);
    c.request(l, 1, register(7, 2, 0x22));
    c.flush(l);
    c.tick(3);
    assert_eq!(c.reply_to(1), vec![Outcome::Done]);
    let before = c.nodes[l].registry().unwrap();
    for i in 0..5 {
        let rec = Recovered {
            records: c.disks[i].clone(),
            snapshots: c.snapshots[i].clone(),
            truncated_tail: None,
        };
        c.nodes[i] = NodeCore::new(config(NodeId(i as u64 + 1)), rec).unwrap();
    }
    c.tick(80);
    let l = c.leader(METADATA_SHARD);
    assert_eq!(c.nodes[l].registry(), Some(before));
}

#[test]
fn an_admin_op_naming_the_metadata_group_is_not_a_registration_and_is_refused() {
    let mut c = cluster();
    let l = c.leader(METADATA_SHARD);
    let req = ClientRequest {
        client: ClientId(3),
        seq: 1,
        epoch: 0,
        op: Op::ShardLeader {
            shard: METADATA_SHARD,
            node: NodeId(1),
        },
    };
    c.request(l, 1, req);
    c.flush(l);
    assert!(matches!(
        &c.reply_to(1)[..],
        [Outcome::Error(ClientError::Malformed(m))] if m.contains("does not exist")
    ));
}

/// Node 4 is not among the bootstrap nodes: the others drop its datagrams until the
/// registry lists it; registered, it becomes a peer, holds no shard, and then receives
/// a replica by a move like any node.
#[test]
fn a_node_outside_the_bootstrap_set_registers_and_then_receives_a_replica() {
    let mut c = Cluster::with(4, 1, |cfg| {
        cfg.members = ids(3);
        cfg.replication = 3;
        cfg.metadata_voters = ids(3);
        cfg.snapshot_threshold_entries = 20;
    });
    c.tick(60);
    assert!(
        !c.nodes[3].hosts(ShardId(0)),
        "a joined node holds no shard"
    );
    assert!(!c.nodes[0].cluster_nodes().contains(&NodeId(4)));
    let refused = |c: &Cluster| {
        let refusals = c.nodes[0].refusals();
        refusals
            .iter()
            .find(|(r, _)| *r == "unknown_sender")
            .unwrap()
            .1
    };
    let before = refused(&c);
    c.nodes[0].on_peer_messages(NodeId(4), Vec::new());
    assert_eq!(refused(&c), before + 1, "not a peer before it registered");
    let l = c.leader(METADATA_SHARD);
    c.request(l, 1, register(40, 4, 0x44));
    c.flush(l);
    c.tick(3);
    assert_eq!(c.reply_to(1), vec![Outcome::Done]);
    // Node 4 hears the registry from a status reply (kvserver's registration does this).
    let registry = c.nodes[l].registry().unwrap();
    c.nodes[3].learn_registry(registry);
    for i in 0..4 {
        assert_eq!(c.nodes[i].cluster_nodes(), ids(4), "node {}", i + 1);
    }
    let before = refused(&c);
    c.nodes[0].on_peer_messages(NodeId(4), Vec::new());
    assert_eq!(refused(&c), before, "a peer once registered");
    let status = c.nodes[0].status();
    assert!(status
        .nodes
        .iter()
        .any(|(id, a)| *id == NodeId(4) && a.port() == 7004));
    let from = (0..3).find(|&i| i != c.leader(ShardId(0))).unwrap() as u64 + 1;
    let done = c.until_answered(2, super::move_req(50, from, 4), 2000);
    assert_eq!(done, Outcome::Done);
    c.tick(20);
    assert!(c.nodes[3].hosts(ShardId(0)));
    let l = c.leader(ShardId(0));
    assert!(c.voters(l, ShardId(0)).contains(&NodeId(4)));
}

fn set_state(client: u64, node: u64, state: NodeState) -> ClientRequest {
    ClientRequest {
        client: ClientId(client),
        seq: 1,
        epoch: 0,
        op: Op::SetNodeState {
            node: NodeId(node),
            state,
        },
    }
}

/// Four bootstrap nodes, one shard on nodes 1-3. Node 4 marked draining receives no
/// replica; node 3 marked removed is no peer any more (its datagrams are refused although
/// the cluster file lists it) and no target, yet its replica still moves away; the pause
/// flag is replicated state like the rest.
#[test]
fn draining_and_removed_nodes_receive_nothing_and_a_removed_one_is_no_peer() {
    let mut c = Cluster::with(4, 1, |cfg| {
        cfg.replication = 3;
        cfg.metadata_voters = ids(3);
        cfg.snapshot_threshold_entries = 20;
    });
    c.tick(60);
    let mut token = 0;
    let mut ask = |c: &mut Cluster, req: ClientRequest| {
        token += 1;
        let l = c.leader(METADATA_SHARD);
        c.request(l, token, req);
        c.flush(l);
        c.tick(3);
        c.reply_to(token)
    };
    for node in 1..=4 {
        let done = ask(&mut c, register(10 + node, node, 0x100 + node));
        assert_eq!(done, vec![Outcome::Done]);
    }
    let refused = ask(&mut c, set_state(20, 9, NodeState::Draining));
    assert!(
        matches!(&refused[..], [Outcome::Error(ClientError::NodeStateRefused(e))]
            if e.to_string() == "node n9 is not in the node registry (registered: 1, 2, 3, 4)"),
        "{refused:?}"
    );
    let done = ask(&mut c, set_state(21, 4, NodeState::Draining));
    assert_eq!(done, vec![Outcome::Done]);
    let registry = c.nodes[c.leader(METADATA_SHARD)].registry().unwrap();
    c.nodes[3].learn_registry(registry);
    assert_eq!(c.nodes[0].node_state(NodeId(4)), Some(NodeState::Draining));
    let from = (0..3).find(|&i| i != c.leader(ShardId(0))).unwrap() as u64 + 1;
    let outcome = c.until_answered(100, super::move_req(50, from, 4), 500);
    assert!(
        matches!(&outcome, Outcome::Error(ClientError::MoveRefused { reason, .. })
            if reason.to_string() == "node n4 is draining and receives no replica"),
        "{outcome:?}"
    );
    // Node 3 removed: refused as a sender, and no target.
    let victim = (0..3).find(|&i| i != c.leader(ShardId(0)) && i != c.leader(METADATA_SHARD));
    let victim = victim.map_or(2, |i| i) as u64 + 1;
    let done = ask(&mut c, set_state(22, victim, NodeState::Removed));
    assert_eq!(done, vec![Outcome::Done]);
    c.tick(5);
    let l = c.leader(METADATA_SHARD);
    let registry = c.nodes[l].registry().unwrap();
    for n in c.nodes.iter_mut() {
        n.learn_registry(registry.clone());
    }
    let observer = (0..4).find(|&i| i as u64 + 1 != victim).unwrap();
    assert!(!c.nodes[observer].cluster_nodes().contains(&NodeId(victim)));
    let unknown = |c: &Cluster| {
        let r = c.nodes[observer].refusals();
        r.iter().find(|(r, _)| *r == "unknown_sender").unwrap().1
    };
    let before = unknown(&c);
    c.nodes[observer].on_peer_messages(NodeId(victim), Vec::new());
    assert_eq!(unknown(&c), before + 1, "a removed node is no peer");
    let again = ask(&mut c, register(23, victim, 0x100 + victim));
    assert_eq!(
        again,
        vec![Outcome::Error(ClientError::RegisterRefused(
            RegisterRefusal::Removed {
                node: NodeId(victim)
            }
        ))]
    );
    assert_eq!(
        ask(&mut c, set_state(24, victim, NodeState::Draining)).len(),
        1
    );
    // The pause is replicated: every metadata replica applies it.
    let done = ask(
        &mut c,
        ClientRequest {
            client: ClientId(25),
            seq: 1,
            epoch: 0,
            op: Op::PauseBalancer { paused: true },
        },
    );
    assert_eq!(done, vec![Outcome::Done]);
    c.tick(5);
    for i in 0..3 {
        if i as u64 + 1 != victim {
            assert!(
                c.nodes[i].registry().unwrap().balancer_paused,
                "node {}",
                i + 1
            );
        }
    }
}
