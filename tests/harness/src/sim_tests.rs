//! Unit tests of the harness core: routing, counting, faults and client rules, without processes.

use super::*;
use crate::scenario::{Benchmarks, Event, Tests};
use crate::score::checks;

fn scenario(replicas: usize, requests: usize, drops: f64, events: Vec<Event>) -> Scenario {
    Scenario {
        lifetime: 1.0,
        replicas,
        requests,
        mix: 0.0,
        drops,
        wait: 1.0,
        end_wait: 1.0,
        seed: None,
        clients: 8,
        max_packets: 20_000,
        events,
        tests: Tests {
            maximum_get_fail_fraction: 0.5,
            maximum_put_fail_fraction: 0.5,
            maximum_get_generation_fail_fraction: 0.1,
            minimum_total_msgs_fraction: 0.5,
            maximum_appends_batched_fraction: None,
            benchmarks: Benchmarks {
                total_msgs: [10.0, 20.0, 30.0],
                failures: [0.0, 1.0, 2.0],
                duplicates: [0.0, 1.0, 2.0],
                median_latency: [0.001, 0.01, 0.1],
            },
        },
    }
}

fn addr(i: usize) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 2000 + i as u16))
}

fn t(secs: f64) -> Duration {
    Duration::from_secs_f64(secs)
}

fn msg(src: &str, dst: &str, leader: &str, kind: &str) -> Vec<u8> {
    serde_json::json!({"src": src, "dst": dst, "leader": leader, "type": kind})
        .to_string()
        .into_bytes()
}

/// A sim whose replicas have all said hello.
fn started(s: &Scenario) -> Sim {
    started_with(s, LateDatagrams::Drop)
}

/// `started` with `late` for the late datagrams of killed replicas.
fn started_with(s: &Scenario, late: LateDatagrams) -> Sim {
    let mut sim = Sim::new(s, 1).with_late_datagrams(late);
    let mut out = Vec::new();
    for i in 0..s.replicas {
        let id = NodeId(i as u16).to_string();
        sim.on_datagram(
            t(0.0),
            addr(i),
            &msg(&id, "FFFF", "FFFF", "hello"),
            &mut out,
        );
    }
    assert!(out.is_empty(), "hello is neither forwarded nor answered");
    sim
}

/// A scenario's event list of one `kind` event at `time` s.
fn one_event(kind: EventKind, time: f64) -> Vec<Event> {
    vec![Event { kind, time }]
}

/// The replica a kill action in `out` kills, if any.
fn killed(out: &[Action]) -> Option<NodeId> {
    out.iter().find_map(|a| match a {
        Action::Kill(id) => Some(*id),
        Action::Send { .. } => None,
    })
}

fn sends(out: &[Action]) -> Vec<SocketAddr> {
    out.iter()
        .filter_map(|a| match a {
            Action::Send { to, .. } => Some(*to),
            Action::Kill(_) => None,
        })
        .collect()
}

#[test]
fn broadcast_copies_to_every_other_replica_and_counts_n_minus_1() {
    let mut sim = started(&scenario(5, 1, 0.0, vec![]));
    let mut out = Vec::new();
    let bytes = msg("0001", "FFFF", "0001", "append");
    sim.on_datagram(t(0.1), addr(1), &bytes, &mut out);
    assert_eq!(sends(&out), vec![addr(0), addr(2), addr(3), addr(4)]);
    assert!(out
        .iter()
        .all(|a| matches!(a, Action::Send { bytes: b, .. } if *b == bytes)));
    let data = sim.finish(t(0.2));
    assert_eq!(data.net.total_msgs, 4);
    assert_eq!(data.last_leader.as_deref(), Some("0001"));
}

#[test]
fn copies_to_killed_replicas_still_count() {
    let s = scenario(3, 1, 0.0, one_event(EventKind::KillNonLeader, 0.0));
    let mut sim = started(&s);
    let mut out = Vec::new();
    sim.on_datagram(t(0.1), addr(0), &msg("0000", "FFFF", "0000", "x"), &mut out);
    out.clear();
    sim.on_tick(t(1.0), &mut out);
    let victim = killed(&out).expect("kill_non_leader kills someone");
    assert_ne!(victim, NodeId(0), "never the named leader");
    sim.on_datagram(
        t(1.1),
        addr(0),
        &msg("0000", &victim.to_string(), "0000", "x"),
        &mut out,
    );
    sim.on_replica_exit(t(1.2), victim, "signal 15");
    let data = sim.finish(t(2.0));
    assert_eq!(data.net.total_msgs, 3);
    assert_eq!(data.net.to_dead, 1);
    assert!(
        data.deaths.is_empty(),
        "a killed replica's exit is not a death"
    );
}

#[test]
fn a_message_addressed_before_hello_marks_the_target_dead() {
    let s = scenario(3, 1, 0.0, vec![]);
    let mut sim = Sim::new(&s, 1);
    let mut out = Vec::new();
    sim.on_datagram(
        t(0.0),
        addr(0),
        &msg("0000", "FFFF", "FFFF", "hello"),
        &mut out,
    );
    sim.on_datagram(
        t(0.1),
        addr(0),
        &msg("0000", "0002", "FFFF", "vote"),
        &mut out,
    );
    assert!(out.is_empty());
    let data = sim.finish(t(1.0));
    assert_eq!(data.deaths.len(), 1);
    assert_eq!(data.deaths[0].replica, "0002");
    let verdict = checks(&s, &data);
    assert!(!verdict[1].passed, "check 2 fails");
    assert!(verdict[0].passed, "not a message-format error");
}

#[test]
fn malformed_datagrams_are_errors_and_kill_their_sender() {
    let bad: Vec<(&str, Vec<u8>)> = vec![
        ("empty", vec![]),
        ("non-UTF-8", vec![0xff, 0xfe]),
        ("not JSON", b"hello".to_vec()),
        (
            "missing",
            br#"{"src": "0001", "dst": "0000", "type": "x"}"#.to_vec(),
        ),
        (
            "neither FFFF nor a replica",
            msg("0001", "0000", "0BAD", "x"),
        ),
        (
            "neither FFFF nor a replica",
            msg("0001", "0000", "0015", "x"),
        ),
        ("claims src", msg("0002", "0000", "FFFF", "x")),
    ];
    for (why, bytes) in bad {
        let s = scenario(3, 1, 0.0, vec![]);
        let mut sim = started(&s);
        let mut out = Vec::new();
        sim.on_datagram(t(0.1), addr(1), &bytes, &mut out);
        // A dead sender's later traffic is ignored.
        sim.on_datagram(t(0.2), addr(1), &msg("0001", "0000", "FFFF", "x"), &mut out);
        assert!(out.is_empty(), "{why}");
        let data = sim.finish(t(1.0));
        assert_eq!(data.error_count, 1, "{why}");
        assert!(data.errors[0].contains(why), "{why}: {:?}", data.errors);
        assert_eq!(data.deaths.len(), 1, "{why}");
        assert_eq!(data.net.total_msgs, 0, "{why}");
    }
}

#[test]
fn bad_destinations_are_errors() {
    for dst in ["ffff", "0100", "00000", "0003"] {
        let s = scenario(3, 1, 0.0, vec![]);
        let mut sim = started(&s);
        let mut out = Vec::new();
        sim.on_datagram(t(0.1), addr(1), &msg("0001", dst, "FFFF", "x"), &mut out);
        let data = sim.finish(t(1.0));
        assert_eq!(data.error_count, 1, "{dst}");
        assert_eq!(data.net.total_msgs, 0, "{dst}");
    }
}

#[test]
fn kill_leader_kills_the_last_named_leader() {
    let s = scenario(5, 1, 0.0, one_event(EventKind::KillLeader, 0.5));
    let mut sim = started(&s);
    let mut out = Vec::new();
    sim.on_datagram(
        t(0.1),
        addr(3),
        &msg("0003", "0001", "0003", "append"),
        &mut out,
    );
    // FFFF does not erase what the harness saw.
    sim.on_datagram(
        t(0.2),
        addr(1),
        &msg("0001", "0003", "FFFF", "ack"),
        &mut out,
    );
    out.clear();
    sim.on_tick(t(1.5), &mut out);
    assert!(out.contains(&Action::Kill(NodeId(3))));
    let data = sim.finish(t(2.0));
    assert_eq!(data.events[0].outcome, "killed 0003");
}

#[test]
fn part_easy_keeps_the_leader_with_a_majority() {
    let s = scenario(5, 1, 0.0, one_event(EventKind::PartEasy, 0.0));
    for seed in 0..20 {
        let mut sim = Sim::new(&s, seed);
        let mut out = Vec::new();
        for i in 0..5 {
            let id = NodeId(i as u16).to_string();
            sim.on_datagram(
                t(0.0),
                addr(i),
                &msg(&id, "FFFF", "FFFF", "hello"),
                &mut out,
            );
        }
        sim.on_datagram(t(0.1), addr(4), &msg("0004", "0000", "0004", "x"), &mut out);
        out.clear();
        sim.on_tick(t(1.0), &mut out);
        out.retain(|a| matches!(a, Action::Kill(_)));
        sim.on_datagram(t(1.1), addr(4), &msg("0004", "FFFF", "0004", "x"), &mut out);
        assert_eq!(
            sends(&out).len(),
            2,
            "the leader reaches exactly 2 of 4 peers"
        );
        let data = sim.finish(t(2.0));
        assert_eq!(data.net.blocked, 2);
        assert_eq!(data.net.total_msgs, 5);
    }
}

#[test]
fn part_end_heals() {
    let events = vec![
        Event {
            kind: EventKind::PartHard,
            time: 0.0,
        },
        Event {
            kind: EventKind::PartEnd,
            time: 0.5,
        },
    ];
    let s = scenario(5, 1, 0.0, events);
    let mut sim = started(&s);
    let mut out = Vec::new();
    sim.on_tick(t(1.0), &mut out);
    out.clear();
    for i in 0..5 {
        let id = NodeId(i as u16).to_string();
        sim.on_datagram(t(1.1), addr(i), &msg(&id, "FFFF", "FFFF", "x"), &mut out);
    }
    let during = sends(&out).len();
    assert_eq!(
        during,
        3 * 2 + 2,
        "majority of 3 and minority of 2 each talk inside"
    );
    out.clear();
    sim.on_tick(t(1.5), &mut out);
    sim.on_datagram(t(1.6), addr(0), &msg("0000", "FFFF", "FFFF", "x"), &mut out);
    assert_eq!(sends(&out).len(), 4);
}

/// Sends the scenario's single request; returns (target replica index, client id, MID).
fn first_request(sim: &mut Sim, now: Duration) -> (usize, String, String) {
    let mut out = Vec::new();
    sim.on_tick(now, &mut out);
    assert_eq!(out.len(), 1);
    let Action::Send { to, bytes } = &out[0] else {
        panic!("expected a send")
    };
    let v: serde_json::Value = serde_json::from_slice(bytes).unwrap();
    let target = (to.port() - 2000) as usize;
    assert_eq!(v["dst"], NodeId(target as u16).to_string());
    assert_eq!(v["type"], "put");
    let text = |name: &str| v[name].as_str().unwrap().to_string();
    (target, text("src"), text("MID"))
}

fn reply(src: usize, client: &str, leader: &str, kind: &str, mid: &str) -> Vec<u8> {
    let src = NodeId(src as u16).to_string();
    serde_json::json!({"src": src, "dst": client, "leader": leader, "type": kind, "MID": mid})
        .to_string()
        .into_bytes()
}

#[test]
fn redirect_resends_at_once_under_a_new_mid_to_the_named_leader() {
    let s = scenario(5, 1, 1.0, vec![]); // every copy dropped: client traffic must not be
    let mut sim = started(&s);
    let (target, client, mid) = first_request(&mut sim, t(1.0));
    let leader = (target + 1) % 5;
    let leader_id = NodeId(leader as u16).to_string();
    let mut out = Vec::new();
    let redirect = reply(target, &client, &leader_id, "redirect", &mid);
    sim.on_datagram(t(1.001), addr(target), &redirect, &mut out);
    assert_eq!(sends(&out), vec![addr(leader)]);
    let Action::Send { bytes, .. } = &out[0] else {
        unreachable!()
    };
    let v: serde_json::Value = serde_json::from_slice(bytes).unwrap();
    let mid2 = v["MID"].as_str().unwrap().to_string();
    assert_ne!(mid2, mid);
    out.clear();
    let ok = reply(leader, &client, &leader_id, "ok", &mid2);
    sim.on_datagram(t(1.003), addr(leader), &ok, &mut out);
    sim.on_datagram(t(1.004), addr(leader), &ok, &mut out);
    let late_ok = reply(target, &client, &leader_id, "ok", &mid);
    sim.on_datagram(t(1.005), addr(target), &late_ok, &mut out);
    let wrong_client = reply(leader, "0016", &leader_id, "ok", &mid2);
    let wrong_client = if client == "0016" {
        reply(leader, "0015", &leader_id, "ok", &mid2)
    } else {
        wrong_client
    };
    sim.on_datagram(t(1.006), addr(leader), &wrong_client, &mut out);
    assert!(out.is_empty(), "nothing more to send");
    let data = sim.finish(t(3.0));
    assert_eq!(data.work.redirects, 1);
    assert_eq!(data.work.puts_acked, 1);
    assert_eq!(data.work.duplicates, 1);
    assert_eq!(
        data.error_count, 2,
        "ok after redirect, and another client's MID: {:?}",
        data.errors
    );
    assert!(data.errors[0].contains("second reply"));
    assert!(data.errors[1].contains("unknown MID"));
    assert_eq!(data.latencies.len(), 2);
    assert_eq!((data.unanswered_gets, data.unanswered_puts), (0, 0));
    assert_eq!(data.net.total_msgs, 0, "client traffic is not counted");
}

#[test]
fn packet_storm_stops_the_run() {
    let mut s = scenario(5, 1, 0.0, vec![]);
    s.max_packets = 10;
    let mut sim = started(&s);
    let mut out = Vec::new();
    for _ in 0..3 {
        sim.on_datagram(t(0.1), addr(0), &msg("0000", "FFFF", "0000", "x"), &mut out);
    }
    assert_eq!(sim.stopped(), Some(StopReason::PacketStorm));
    assert_eq!(sends(&out).len(), 10);
    let data = sim.finish(t(0.2));
    assert_eq!(data.stop, StopReason::PacketStorm);
    assert_eq!(data.net.total_msgs, 10);
}

#[test]
fn an_unplanned_exit_is_a_death() {
    let s = scenario(3, 1, 0.0, vec![]);
    let mut sim = started(&s);
    sim.on_replica_exit(t(0.5), NodeId(2), "exit code 1");
    let data = sim.finish(t(1.0));
    assert_eq!(data.deaths.len(), 1);
    assert!(data.deaths[0].reason.contains("exit code 1"));
}

/// Kills a non-leader of 3 replicas, lets the live one name itself leader,
/// then feeds a broadcast the victim sent before dying: (what it sent, data).
fn late_broadcast(late: LateDatagrams) -> (Vec<SocketAddr>, RunData) {
    let s = scenario(3, 1, 0.0, one_event(EventKind::KillNonLeader, 0.0));
    let mut sim = started_with(&s, late);
    let mut out = Vec::new();
    sim.on_datagram(t(0.1), addr(0), &msg("0000", "FFFF", "0000", "x"), &mut out);
    sim.on_tick(t(1.0), &mut out);
    let victim = usize::from(killed(&out).expect("kill_non_leader kills someone").0);
    let other = 3 - victim;
    let other_id = NodeId(other as u16).to_string();
    sim.on_datagram(
        t(1.1),
        addr(other),
        &msg(&other_id, "0000", &other_id, "x"),
        &mut out,
    );
    sim.on_replica_exit(t(1.2), NodeId(victim as u16), "signal 15");
    out.clear();
    let victim_id = NodeId(victim as u16).to_string();
    sim.on_datagram(
        t(1.3),
        addr(victim),
        &msg(&victim_id, "FFFF", "0000", "x"),
        &mut out,
    );
    let mut expected = vec![addr(0), addr(other)];
    expected.sort();
    let sent = sends(&out);
    assert!(sent.is_empty() || sent == expected, "{sent:?}");
    let data = sim.finish(t(2.0));
    assert_eq!(
        data.last_leader,
        Some(other_id),
        "a killed replica names no leader"
    );
    (sent, data)
}

#[test]
fn a_killed_replicas_late_datagram_is_ignored_under_drop() {
    let (sent, data) = late_broadcast(LateDatagrams::Drop);
    assert!(sent.is_empty());
    assert_eq!(data.net.total_msgs, 2 + 1);
    let expected = LateCounts {
        policy: LateDatagrams::Drop,
        delivered: 0,
        ignored: 1,
    };
    assert_eq!(data.late, expected);
}

#[test]
fn a_killed_replicas_late_datagram_is_routed_and_counted_under_deliver() {
    let (sent, data) = late_broadcast(LateDatagrams::Deliver);
    assert_eq!(sent.len(), 2, "one copy to each other replica");
    assert_eq!(data.net.total_msgs, 2 + 1 + 2);
    assert_eq!(data.net.to_dead, 0, "the live ones received it");
    let expected = LateCounts {
        policy: LateDatagrams::Deliver,
        delivered: 1,
        ignored: 0,
    };
    assert_eq!(data.late, expected);
    assert!(data.deaths.is_empty() && data.error_count == 0);
}

/// The client's request goes to a replica that names itself leader and is
/// killed by kill_leader; its ok to the request arrives after the kill.
fn late_ok(late: LateDatagrams) -> RunData {
    let s = scenario(3, 1, 0.0, one_event(EventKind::KillLeader, 0.5));
    let mut sim = started_with(&s, late);
    let (target, client, mid) = first_request(&mut sim, t(1.0));
    let target_id = NodeId(target as u16).to_string();
    let mut out = Vec::new();
    let named = msg(&target_id, "FFFF", &target_id, "x");
    sim.on_datagram(t(1.1), addr(target), &named, &mut out);
    out.clear();
    sim.on_tick(t(1.6), &mut out);
    assert_eq!(out, vec![Action::Kill(NodeId(target as u16))]);
    out.clear();
    let ok = reply(target, &client, &target_id, "ok", &mid);
    sim.on_datagram(t(1.7), addr(target), &ok, &mut out);
    assert!(out.is_empty(), "an ok asks for nothing more");
    sim.finish(t(3.0))
}

#[test]
fn a_killed_leaders_late_ok_is_scored_only_under_deliver() {
    let dropped = late_ok(LateDatagrams::Drop);
    assert_eq!(dropped.work.puts_acked, 0);
    assert_eq!(dropped.unanswered_puts, 1);
    assert_eq!((dropped.late.delivered, dropped.late.ignored), (0, 1));
    let delivered = late_ok(LateDatagrams::Deliver);
    assert_eq!(delivered.work.puts_acked, 1);
    assert_eq!(delivered.unanswered_puts, 0);
    assert_eq!(delivered.latencies.len(), 1);
    assert_eq!((delivered.late.delivered, delivered.late.ignored), (1, 0));
}

#[test]
fn dead_and_exited_replicas_stay_ignored_under_deliver() {
    let s = scenario(3, 1, 0.0, vec![]);
    let mut sim = started_with(&s, LateDatagrams::Deliver);
    let mut out = Vec::new();
    sim.on_datagram(t(0.1), addr(1), b"", &mut out);
    sim.on_replica_exit(t(0.2), NodeId(2), "exit code 1");
    for i in [1, 2] {
        let id = NodeId(i as u16).to_string();
        sim.on_datagram(t(0.3), addr(i), &msg(&id, "FFFF", &id, "x"), &mut out);
    }
    assert!(out.is_empty(), "{out:?}");
    let data = sim.finish(t(1.0));
    assert_eq!(data.net.total_msgs, 0);
    assert_eq!(data.error_count, 1, "only the empty datagram");
    assert_eq!(data.last_leader, None);
    assert_eq!((data.late.delivered, data.late.ignored), (0, 0));
}
