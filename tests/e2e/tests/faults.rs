//! A kvserver process against damaged input: a torn WAL tail (recovered, and the cut
//! logged with file, offset and bytes), a flipped
//! byte inside the WAL (refused, naming file and offset), malformed datagrams (dropped
//! and counted), and SIGTERM (a clean exit 0).

use kv_e2e::cluster::{Cluster, Spec};
use kv_e2e::{keys_on_every_shard, wait_for, wal};
use kv_shared::wire::{self, Kind};
use kv_shared::NodeId;
use std::time::Duration;

const LEADERS_TIMEOUT: Duration = Duration::from_secs(15);
const EXIT_TIMEOUT: Duration = Duration::from_secs(10);

/// Starts a cluster, writes `per_shard` keys on every shard, and stops node 1 cleanly.
fn cluster_with_stopped_node_1(per_shard: usize) -> (Cluster, Vec<String>) {
    let mut c = Cluster::start(Spec::default());
    let mut client = c.client();
    c.wait_for_leaders(&mut client, LEADERS_TIMEOUT);
    let keys = keys_on_every_shard("wal", c.shards(), per_shard);
    for k in &keys {
        client.put(k, &format!("v-{k}"));
    }
    // Node 1 must hold the writes before it stops, so its WAL has records to damage.
    wait_for(
        "node 1 to apply every write",
        Duration::from_secs(20),
        || {
            keys.iter()
                .all(|k| client.stale_get_at(NodeId(1), k) == Some(Some(format!("v-{k}"))))
                .then_some(())
        },
    );
    let status = c.terminate(NodeId(1), EXIT_TIMEOUT);
    assert!(status.success(), "SIGTERM exit: {status}");
    (c, keys)
}

#[test]
fn sigterm_stops_a_node_cleanly_with_exit_0() {
    let (c, _) = cluster_with_stopped_node_1(1);
    let log = c.log(NodeId(1));
    assert!(
        log.contains("SIGTERM"),
        "log does not mention the signal:\n{log}"
    );
    assert!(
        log.contains("stopped"),
        "log does not say it stopped:\n{log}"
    );
}

#[test]
fn a_torn_wal_tail_is_cut_off_and_the_node_recovers() {
    let (mut c, keys) = cluster_with_stopped_node_1(3);
    let segs = wal::segments(&c.data_dir(NodeId(1)));
    let last = segs.last().expect("node 1 has a WAL segment");
    let records = wal::records(last);
    let tail = *records.last().expect("the last segment has records");
    // A crash in the middle of writing the next record: half of it reached the disk (here
    // the first half of a copy of the last one, a complete length prefix and too few
    // bytes), after the records that were synced. A write the crash tore was never
    // synced, so nothing in it was acknowledged; the last record was (with one record
    // per round, it holds the entries every group of the round acknowledged).
    let end = tail.offset + tail.len;
    wal::copy_within(last, tail.offset, tail.len / 2, end);
    let file_len = std::fs::metadata(last).expect("segment").len();

    c.spawn(NodeId(1));
    let cut_logged = format!(
        "file={} offset={} bytes_cut={}",
        last.display(),
        end,
        file_len - end
    );
    wait_for("node 1 to log the cut", Duration::from_secs(20), || {
        c.log(NodeId(1))
            .lines()
            .any(|l| l.contains("WARN") && l.contains(&cut_logged))
            .then_some(())
    });
    let mut client = c.client();
    // Whatever the cut took is re-replicated from the peers.
    wait_for(
        "node 1 to serve every key again",
        Duration::from_secs(20),
        || {
            c.assert_alive(NodeId(1));
            keys.iter()
                .all(|k| client.stale_get_at(NodeId(1), k) == Some(Some(format!("v-{k}"))))
                .then_some(())
        },
    );
    client.put("after-torn-tail", "ok");
    assert_eq!(client.get("after-torn-tail"), Some("ok".into()));
}

#[test]
fn a_flipped_byte_in_the_middle_of_the_wal_is_refused_naming_file_and_offset() {
    let (mut c, _) = cluster_with_stopped_node_1(3);
    let segs = wal::segments(&c.data_dir(NodeId(1)));
    let (seg, victim) = segs
        .iter()
        .find_map(|s| {
            let r = wal::records(s);
            // A record with valid records after it: damage "in the middle", not a tail.
            (r.len() >= 3).then(|| (s.clone(), r[r.len() / 2]))
        })
        .expect("a segment with at least 3 records");
    // The last byte of the record's body: its payload, covered by the record CRC.
    wal::flip_byte(&seg, victim.offset + victim.len - 1);

    c.spawn(NodeId(1));
    let status = c
        .wait_exit(NodeId(1), EXIT_TIMEOUT)
        .expect("node 1 must refuse to start, not run");
    assert_eq!(status.code(), Some(3), "exit status {status}");
    let log = c.log(NodeId(1));
    let name = seg.file_name().unwrap().to_str().unwrap();
    assert!(log.contains(name), "the error does not name {name}:\n{log}");
    let offset = format!("offset {}", victim.offset);
    assert!(
        log.contains(&offset),
        "the error does not name {offset}:\n{log}"
    );
}

#[test]
fn malformed_datagrams_are_dropped_and_counted_and_the_node_keeps_serving() {
    let mut c = Cluster::start(Spec::default());
    let mut client = c.client();
    c.wait_for_leaders(&mut client, LEADERS_TIMEOUT);
    let target = NodeId(2);

    // Sealed under a valid client key, so it gets as far as decoding.
    let good = client.seal_for(target, b"\x01not postcard");
    let mut bad_crc = good.clone();
    *bad_crc.last_mut().unwrap() ^= 1;
    let mut other_cluster = Vec::new();
    wire::encode(Kind::Peer, c.cluster_id() + 1, 1, b"x", &mut other_cluster);
    let mut unknown_peer = Vec::new();
    wire::encode(Kind::Peer, c.cluster_id(), 99, b"x", &mut unknown_peer);
    let oversized = vec![0u8; 65_000];
    for _ in 0..50 {
        client.send_raw(target, b"garbage");
        client.send_raw(target, &bad_crc);
        client.send_raw(target, &other_cluster);
        client.send_raw(target, &unknown_peer);
        client.send_raw(target, &good); // valid header, undecodable payload
        client.send_raw(target, &oversized);
    }
    client.put("after-garbage", "ok");
    assert_eq!(client.get("after-garbage"), Some("ok".into()));
    c.assert_alive(target);

    let log = c.log(target);
    for counter in [
        "bad_header",
        "bad_checksum",
        "wrong_cluster",
        "unknown_sender",
        "bad_payload",
    ] {
        assert!(log.contains(counter), "no warning for {counter}:\n{log}");
    }
    // Rate-limited: 300 bad datagrams make at most a handful of lines per kind.
    let lines = log
        .lines()
        .filter(|l| l.contains("dropped datagram"))
        .count();
    assert!(lines <= 30, "{lines} warning lines for 300 bad datagrams");
}
