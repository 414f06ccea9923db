//! The client library against the fake cluster: discovery, routing to the leader,
//! redirects, retries under the same sequence number (also of a write reserved for another
//! way), the unavailability deadline, limits and batching.

mod common;

use bytes::Bytes;
use common::FakeCluster;
use kv_shared::proto::Op;
use kv_shared::NodeId;
use kvcli::{Client, Error, Response};
use std::time::{Duration, Instant};

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

#[tokio::test]
async fn learns_shards_and_leader_then_talks_only_to_the_leader() {
    let fake = FakeCluster::start(3, 4, Some(2));
    let client = Client::connect(fake.options()).await.unwrap();
    assert_eq!(client.shard_count(), Some(4));
    let ids: Vec<_> = client.nodes().iter().map(|n| n.id.map(|i| i.0)).collect();
    assert_eq!(
        ids,
        vec![Some(1), Some(2), Some(3)],
        "ids learned from Status replies"
    );
    let mut s = client.session();
    s.put(b("k"), b("v")).await.unwrap();
    assert_eq!(s.get(b("k")).await.unwrap(), Some(b("v")));
    assert_eq!(s.get(b("missing")).await.unwrap(), None);
    let shard = client.shard_of(b"k").unwrap();
    assert_eq!(client.cached_leader(shard).unwrap().addr, fake.nodes[1]);
    let ctl = fake.ctl();
    let keyed: Vec<u64> = ctl
        .received
        .iter()
        .filter(|r| r.3 != Op::Status)
        .map(|r| r.0)
        .collect();
    // The session's open, the put, the two gets.
    assert_eq!(
        keyed,
        vec![2, 2, 2, 2],
        "every keyed request went straight to the leader"
    );
}

#[tokio::test]
async fn a_client_given_one_node_learns_the_others_and_goes_to_the_leader() {
    let fake = FakeCluster::start(3, 4, Some(3));
    let mut options = fake.options();
    options.nodes.truncate(1);
    let client = Client::connect(options).await.unwrap();
    let known: Vec<_> = client
        .nodes()
        .iter()
        .map(|n| (n.id.map(|i| i.0), n.addr))
        .collect();
    let expected: Vec<_> = (1..=3).map(Some).zip(fake.nodes.iter().copied()).collect();
    assert_eq!(known, expected, "addresses learned from node 1's status");
    let mut s = client.session();
    s.put(b("k"), b("v")).await.unwrap();
    let keyed: Vec<u64> = fake
        .ctl()
        .received
        .iter()
        .filter(|r| r.3 != Op::Status)
        .map(|r| r.0)
        .collect();
    // The session's open, then the put: both straight to the leader.
    assert_eq!(keyed, vec![3, 3], "straight to the leader node 1 named");
}

#[tokio::test]
async fn a_leader_that_joined_after_connect_is_found_through_the_redirecting_nodes_status() {
    // Node 3 registers after the client connected (status replies list nodes 1 and 2
    // only); then the shards' leadership moves to it, as the balancer does to joined nodes.
    let fake = FakeCluster::start(3, 4, Some(1));
    let all = fake.ctl().addrs.clone();
    fake.ctl().addrs.truncate(2);
    let mut options = fake.options();
    options.nodes.truncate(2);
    let client = Client::connect(options).await.unwrap();
    assert_eq!(client.nodes().len(), 2, "node 3 is not known yet");
    let mut s = client.session();
    s.put(b("k"), b("1")).await.unwrap();
    {
        let mut c = fake.ctl();
        c.addrs = all;
        c.leader = Some(3);
    }
    s.put(b("k"), b("2")).await.unwrap();
    let shard = client.shard_of(b"k").unwrap();
    assert_eq!(client.cached_leader(shard).unwrap().addr, fake.nodes[2]);
    let puts: Vec<u64> = fake
        .ctl()
        .received
        .iter()
        .filter(|r| matches!(r.3, Op::Put { .. }))
        .map(|r| r.0)
        .collect();
    assert_eq!(
        puts.last(),
        Some(&3),
        "the second put reached node 3: {puts:?}"
    );
}

#[tokio::test]
async fn replicas_that_joined_after_connect_are_found_through_the_answering_nodes_status() {
    // The shard moved to node 3, which registered after the client connected: nodes 1
    // and 2 answer with its replica set, naming a node the client has no address for.
    let fake = FakeCluster::start(3, 2, Some(1));
    let all = fake.ctl().addrs.clone();
    fake.ctl().addrs.truncate(2);
    let mut options = fake.options();
    options.nodes.truncate(2);
    let client = Client::connect(options).await.unwrap();
    {
        let mut c = fake.ctl();
        c.addrs = all;
        c.replicas = Some(vec![3]);
        c.route_epoch = 5;
        c.leader = Some(3);
    }
    let mut s = client.session();
    s.put(b("a"), b("1")).await.unwrap();
    let shard = client.shard_of(b"a").unwrap();
    assert_eq!(client.cached_leader(shard).unwrap().addr, fake.nodes[2]);
}

#[tokio::test]
async fn a_node_without_the_shard_hands_over_its_replica_set() {
    let fake = FakeCluster::start(3, 2, None);
    {
        let mut c = fake.ctl();
        c.replicas = Some(vec![1]);
    }
    let client = Client::connect(fake.options()).await.unwrap();
    let shard = client.shard_of(b"a").unwrap();
    assert_eq!(client.cached_route(shard).unwrap().voters, vec![NodeId(1)]);
    {
        // The shard moved to nodes 2 and 3 (epoch 5), led by 2; node 1 has no replica.
        let mut c = fake.ctl();
        c.replicas = Some(vec![2, 3]);
        c.route_epoch = 5;
        c.leader = Some(2);
    }
    let mut s = client.session();
    s.put(b("a"), b("1")).await.unwrap();
    let route = client.cached_route(shard).unwrap();
    assert_eq!((route.epoch, route.voters), (5, vec![NodeId(2), NodeId(3)]));
    assert_eq!(client.cached_leader(shard).unwrap().addr, fake.nodes[1]);
    let ctl = fake.ctl();
    let keyed: Vec<(u64, u64)> = ctl
        .received
        .iter()
        .filter(|r| r.3 != Op::Status)
        .map(|r| (r.0, r.2))
        .collect();
    // The session's open (seq 1) at the old replica, then at the leader it named, then
    // the put (seq 2) there.
    assert_eq!(
        keyed,
        vec![(1, 1), (2, 1), (2, 2)],
        "the old replica, then the leader it named"
    );
    assert_eq!(client.metrics().redirects, 1);
}

/// Every node of the client's cached replica set moved away and forgot the shard (each
/// answers with nothing newer than the client knows): the client asks the nodes outside
/// that set instead of rotating among the ones that disclaimed it, and one of them knows
/// where the shard went.
#[tokio::test]
async fn when_every_known_replica_disclaims_the_shard_the_other_nodes_are_asked() {
    let fake = FakeCluster::start(3, 1, None);
    {
        let mut c = fake.ctl();
        c.replicas = Some(vec![1]);
        c.route_epoch = 5;
        c.leader = Some(1);
    }
    let client = Client::connect(fake.options()).await.unwrap();
    let mut s = client.session();
    s.put(b("a"), b("1")).await.unwrap();
    let shard = client.shard_of(b"a").unwrap();
    assert_eq!(client.cached_route(shard).unwrap().voters, vec![NodeId(1)]);
    {
        // The shard moved to node 3 (epoch 7); node 1 was removed and forgot it, so it
        // answers with the bootstrap set at epoch 0, older than the client's.
        let mut c = fake.ctl();
        c.replicas = Some(vec![3]);
        c.route_epoch = 7;
        c.leader = Some(3);
        c.forgetful = vec![1];
    }
    s.put(b("a"), b("2")).await.unwrap();
    assert_eq!(client.cached_leader(shard).unwrap().addr, fake.nodes[2]);
    let asked_node_1 = fake
        .ctl()
        .received
        .iter()
        .filter(|r| r.3 != Op::Status && r.2 == 2 && r.0 == 1)
        .count();
    assert_eq!(
        asked_node_1, 1,
        "node 1 disclaimed the shard once and was not asked again"
    );
}

#[tokio::test]
async fn follows_a_redirect_when_the_leader_moves() {
    let fake = FakeCluster::start(3, 2, Some(1));
    let client = Client::connect(fake.options()).await.unwrap();
    let mut s = client.session();
    s.put(b("a"), b("1")).await.unwrap();
    fake.ctl().leader = Some(3);
    s.put(b("a"), b("2")).await.unwrap();
    assert_eq!(client.metrics().redirects, 1);
    assert_eq!(
        client
            .cached_leader(client.shard_of(b"a").unwrap())
            .unwrap()
            .addr,
        fake.nodes[2]
    );
    let ctl = fake.ctl();
    let second: Vec<(u64, u64)> = ctl
        .received
        .iter()
        .filter(|r| matches!(r.3, Op::Put { .. }))
        .skip(1)
        .map(|r| (r.0, r.2))
        .collect();
    // seq 1 opened the session on the key's shard, seq 2 was the first put.
    assert_eq!(
        second,
        vec![(1, 3), (3, 3)],
        "old leader first, then the hinted one, same seq"
    );
    assert_eq!(ctl.data.get(&b("a")), Some(&b("2")));
}

#[tokio::test]
async fn finds_the_leader_without_hints_by_trying_the_nodes() {
    let fake = FakeCluster::start(3, 1, Some(3));
    let client = Client::connect(fake.options()).await.unwrap();
    {
        let mut c = fake.ctl();
        c.leader = Some(2);
        c.hint = false;
    }
    let mut s = client.session();
    s.put(b("k"), b("v")).await.unwrap();
    assert_eq!(fake.ctl().data.get(&b("k")), Some(&b("v")));
}

#[tokio::test]
async fn a_write_whose_reply_is_lost_is_retried_under_the_same_seq_and_applied_once() {
    let fake = FakeCluster::start(3, 2, Some(1));
    let client = Client::connect(fake.options()).await.unwrap();
    let mut s = client.session();
    fake.ctl().drop_replies = 2;
    s.put(b("k"), b("v")).await.unwrap();
    {
        let ctl = fake.ctl();
        let puts: Vec<(u64, u64)> = ctl
            .received
            .iter()
            .filter(|r| matches!(r.3, Op::Put { .. }))
            .map(|r| (r.1 .0, r.2))
            .collect();
        let at_leader = ctl
            .received
            .iter()
            .filter(|r| matches!(r.3, Op::Put { .. }) && r.0 == 1)
            .count();
        assert_eq!(at_leader, 3, "two lost replies, then an answer: {puts:?}");
        assert!(
            puts.iter().all(|p| *p == puts[0]),
            "every attempt carries the same (client, seq): {puts:?}"
        );
        assert_eq!(ctl.applied.len(), 1, "the write applied exactly once");
    }
    assert!(client.metrics().retries >= 2);
    // The next request gets the next seq (seq 1 opened the session, 2 was the put).
    s.put(b("k"), b("w")).await.unwrap();
    let last = fake.ctl().received.last().unwrap().2;
    assert_eq!(last, 3);
}

#[tokio::test]
async fn dropped_and_delayed_requests_are_retried_until_answered() {
    let fake = FakeCluster::start(1, 1, Some(1));
    let client = Client::connect(fake.options()).await.unwrap();
    let mut s = client.session();
    s.put(b("k"), b("v")).await.unwrap();
    fake.ctl().drop_requests = 3;
    assert_eq!(s.get(b("k")).await.unwrap(), Some(b("v")));
    // Replies slower than the attempt timeout: the retry's (or the first's) late answer wins.
    fake.ctl().delay = Duration::from_millis(150);
    assert_eq!(s.get(b("k")).await.unwrap(), Some(b("v")));
}

// Every node refuses, slowly: no retry may go out so close to the deadline that its
// refusal arrives too late, which would leave a write that was never applied "unknown".
#[tokio::test]
async fn writes_refused_by_every_node_are_known_not_applied_even_when_refusals_are_slow() {
    let fake = FakeCluster::start(3, 8, None);
    let mut options = fake.options();
    options.unavailable_after = Duration::from_millis(400);
    let client = Client::connect(options).await.unwrap();
    fake.ctl().delay = Duration::from_millis(30);
    let mut writes = tokio::task::JoinSet::new();
    for i in 0..16 {
        let mut s = client.session();
        writes.spawn(async move { s.put(b(&format!("k{i}")), b("v")).await });
    }
    while let Some(result) = writes.join_next().await {
        let e = result.unwrap().unwrap_err();
        assert!(matches!(e, Error::NoLeader { .. }), "{e}");
        assert!(!e.outcome_unknown(), "every node refused: {e}");
    }
}

#[tokio::test]
async fn a_shard_without_leader_is_unavailable_after_the_deadline_not_a_hang() {
    let fake = FakeCluster::start(3, 8, None);
    let mut options = fake.options();
    options.unavailable_after = Duration::from_millis(400);
    let client = Client::connect(options).await.unwrap();
    let mut s = client.session();
    let start = Instant::now();
    let e = s.put(b("k"), b("v")).await.unwrap_err();
    let took = start.elapsed();
    let shard = client.shard_of(b"k").unwrap();
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_millis(3000),
        "{took:?}"
    );
    let msg = e.to_string();
    assert!(
        msg.starts_with(&format!("unavailable: shard {} has no leader", shard.0)),
        "{msg}"
    );
    assert!(
        !e.outcome_unknown(),
        "every node refused: the write was not applied"
    );
    assert!(matches!(e, Error::NoLeader { .. }));

    // A cluster that answers nothing is said to be unreachable, not leaderless; a write's
    // outcome is now unknown.
    fake.ctl().silent = true;
    let e = s.put(b("k"), b("v")).await.unwrap_err();
    assert!(e.to_string().starts_with("no node answered within"), "{e}");
    assert!(matches!(e, Error::NoNodeAnswered { .. }));
    assert!(e.outcome_unknown());
}

#[tokio::test]
async fn with_every_node_silent_a_request_and_status_say_so_and_status_exits_2() {
    let fake = FakeCluster::start(3, 8, Some(1));
    let mut options = fake.options();
    options.unavailable_after = Duration::from_millis(500);
    let client = Client::connect(options).await.unwrap();
    fake.ctl().silent = true;
    let mut s = client.session();
    let e = s.get(b("k")).await.unwrap_err();
    assert!(!e.outcome_unknown(), "a get changes nothing");
    assert!(e.to_string().starts_with("no node answered within"), "{e}");
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let style = kvcli::output::Style {
        json: false,
        colour: false,
    };
    let words = vec!["status".to_string()];
    let code = kvcli::run::one_shot(&client, &words, style, &mut out, &mut err).await;
    let err = String::from_utf8(err).unwrap();
    assert_eq!(code, 2, "{err}");
    assert!(err.starts_with("error: no node answered within"), "{err}");
    assert!(out.is_empty());
}

#[tokio::test]
async fn connect_without_a_cluster_file_needs_an_answer() {
    let fake = FakeCluster::start(2, 1, Some(1));
    fake.ctl().silent = true;
    let mut options = fake.options();
    options.discovery_timeout = Duration::from_millis(200);
    let e = Client::connect(options)
        .await
        .err()
        .expect("nobody answered");
    assert!(e.to_string().starts_with("no node answered within"), "{e}");
    assert!(e.to_string().contains(&fake.nodes[1].to_string()), "{e}");
}

#[tokio::test]
async fn limits_are_refused_before_sending() {
    let fake = FakeCluster::start(1, 1, Some(1));
    let client = Client::connect(fake.options()).await.unwrap();
    let mut s = client.session();
    let e = s
        .put(Bytes::from(vec![b'k'; 2000]), b("v"))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("KEY_BYTES_MAX"), "{e}");
    let e = s
        .put(b("k"), Bytes::from(vec![0; 40_000]))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("VALUE_BYTES_MAX"), "{e}");
    assert!(fake.ctl().received.iter().all(|r| r.3 == Op::Status));
    // Within every item limit, but not within a datagram: refused as it is encoded into
    // the outbox, which then sends the next request as if it had never been there.
    let most = Bytes::from(vec![b'v'; kv_shared::limits::VALUE_BYTES_MAX]);
    let e = s.cas(b("k"), Some(most.clone()), most).await.unwrap_err();
    assert!(e.to_string().contains("BODY_BYTES_MAX"), "{e}");
    assert_eq!(e.kind(), "limit");
    s.put(b("k"), b("v")).await.unwrap();
    let received = fake.ctl().received.clone();
    assert!(received.iter().all(|r| !matches!(r.3, Op::Cas { .. })));
    assert!(received.iter().any(|r| r.3
        == Op::Put {
            key: b("k"),
            value: b("v")
        }));
}

#[tokio::test]
async fn a_write_refused_as_session_expired_reopens_the_session_on_the_next_write() {
    let fake = FakeCluster::start(1, 1, Some(1));
    let client = Client::connect(fake.options()).await.unwrap();
    let mut s = client.session();
    let opens = |fake: &FakeCluster| {
        fake.ctl()
            .received
            .iter()
            .filter(|r| matches!(r.3, Op::OpenSession { .. }))
            .count()
    };
    s.put(b("k"), b("1")).await.unwrap();
    s.put(b("k"), b("2")).await.unwrap();
    assert_eq!(opens(&fake), 1, "opened once for both writes");
    fake.ctl().expire_sessions = 1;
    let e = s.put(b("k"), b("3")).await.unwrap_err();
    assert_eq!(e.kind(), "session-expired");
    assert_eq!(opens(&fake), 1);
    s.put(b("k"), b("4")).await.unwrap();
    assert_eq!(opens(&fake), 2, "the next write opened the session again");
    assert_eq!(fake.ctl().data.get(&b("k")), Some(&b("4")));
}

#[tokio::test]
async fn cas_both_forms_and_mismatch() {
    let fake = FakeCluster::start(1, 1, Some(1));
    let client = Client::connect(fake.options()).await.unwrap();
    let mut s = client.session();
    assert_eq!(s.cas(b("c"), None, b("1")).await.unwrap(), Response::CasOk);
    assert_eq!(
        s.cas(b("c"), None, b("2")).await.unwrap(),
        Response::CasMismatch {
            current: Some(b("1"))
        }
    );
    assert_eq!(
        s.cas(b("c"), Some(b("1")), b("2")).await.unwrap(),
        Response::CasOk
    );
    s.delete(b("c")).await.unwrap();
    assert_eq!(s.get(b("c")).await.unwrap(), None);
}

#[tokio::test]
async fn requests_ready_together_share_a_datagram() {
    let fake = FakeCluster::start(1, 4, Some(1));
    let client = Client::connect(fake.options()).await.unwrap();
    let before = client.metrics();
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let mut s = client.session();
            tokio::spawn(async move { s.put(Bytes::from(format!("k{i}")), b("v")).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let m = client.metrics();
    // Each new session opens itself on the key's shard before its put.
    assert_eq!(m.requests_sent - before.requests_sent, 100);
    assert!(m.datagrams_sent - before.datagrams_sent <= 10, "{m:?}");
    let biggest = fake.ctl().datagrams.iter().map(|d| d.1).max().unwrap();
    assert!(biggest >= 10, "largest datagram carried {biggest} requests");
}

/// Issues one get per key from its own session, all at once, and returns the request
/// counts of the datagrams the node received for them.
async fn gets_issued_together(fake: &FakeCluster, client: &Client, keys: Vec<Bytes>) -> Vec<usize> {
    let before = fake.ctl().datagrams.len();
    let metrics_before = client.metrics();
    let tasks: Vec<_> = keys
        .into_iter()
        .map(|key| {
            let mut s = client.session();
            tokio::spawn(async move { s.get(key).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let counts: Vec<usize> = fake.ctl().datagrams[before..].iter().map(|d| d.1).collect();
    let m = client.metrics();
    // The fake answers each request datagram with one reply datagram.
    assert_eq!(
        m.reply_datagrams_received - metrics_before.reply_datagrams_received,
        counts.len() as u64
    );
    assert_eq!(
        m.datagrams_sent - metrics_before.datagrams_sent,
        counts.len() as u64
    );
    counts
}

#[tokio::test]
async fn requests_issued_together_leave_in_as_few_datagrams_as_the_limits_allow() {
    use kv_shared::auth::BODY_BYTES_MAX;
    use kv_shared::limits::CLIENT_REQUESTS_PER_DATAGRAM_MAX;
    use kv_shared::pack::count_prefix_bytes;
    let fake = FakeCluster::start(1, 4, Some(1));
    let mut options = fake.options();
    // No retry may add a datagram while the test counts.
    options.attempt_timeout = Duration::from_secs(5);
    let client = Client::connect(options).await.unwrap();

    // Large gets: the byte limit decides. A request's size depends on its random client
    // id's varint length, so pick a key length at which the shortest and the longest
    // encodings fill a datagram with the same number of requests.
    let request_bytes = |client: u64, key_len: usize| {
        postcard::to_stdvec(&kv_shared::proto::ClientRequest {
            client: kv_shared::ClientId(client),
            seq: 1,
            epoch: 0,
            op: kv_shared::proto::Op::Get {
                key: Bytes::from(vec![b'k'; key_len]),
                stale: false,
            },
        })
        .unwrap()
        .len()
    };
    let per_datagram = |item: usize| (BODY_BYTES_MAX - count_prefix_bytes(127)) / item;
    let key_len = (900..=1000)
        .find(|&k| per_datagram(request_bytes(1, k)) == per_datagram(request_bytes(u64::MAX, k)))
        .expect("some key length packs alike whatever the client id");
    let per = per_datagram(request_bytes(u64::MAX, key_len));
    assert!((2..127).contains(&per), "{per} requests per datagram");
    let keys: Vec<Bytes> = (0..2 * per + 1)
        .map(|i| {
            let mut k = format!("{i:06}").into_bytes();
            k.resize(key_len, b'k');
            Bytes::from(k)
        })
        .collect();
    assert_eq!(
        gets_issued_together(&fake, &client, keys).await,
        vec![per, per, 1]
    );

    // Small gets: the count limit decides.
    let n = CLIENT_REQUESTS_PER_DATAGRAM_MAX + 44;
    let keys = (0..n).map(|i| Bytes::from(format!("s{i}"))).collect();
    assert_eq!(
        gets_issued_together(&fake, &client, keys).await,
        vec![CLIENT_REQUESTS_PER_DATAGRAM_MAX, 44]
    );
}

/// A write whose sequence number the session set aside (`reserve`: the Redis gateway
/// hands such a write to its own node's core) and which is then retried through the
/// client (`execute_reserved`) goes out under that same number: applied once already, it
/// is answered from the session table and not applied again. A session not yet open on
/// the shard sets nothing aside, and the numbers go on after the reserved one.
#[tokio::test]
async fn a_reserved_write_is_retried_under_its_own_sequence_number() {
    let fake = FakeCluster::start(3, 4, Some(2));
    let client = Client::connect(fake.options()).await.unwrap();
    let mut s = client.session();
    let write = Op::Put {
        key: b("r"),
        value: b("two"),
    };
    assert!(s.reserve(&write).is_none(), "not open on the shard yet");
    s.put(b("r"), b("one")).await.unwrap();
    let reserved = s.reserve(&write).expect("open on the shard now");
    let request = reserved.request(write.clone(), 0);
    assert_eq!(request.seq, reserved.seq());
    {
        // The other way applied it (as the node's core would) and its answer was lost.
        let mut ctl = fake.ctl();
        ctl.data.insert(b("r"), b("two"));
        ctl.applied.push((request.client, request.seq));
        let outcome = kv_shared::proto::Outcome::Done;
        ctl.sessions.insert(request.client, (request.seq, outcome));
    }
    let r = s.execute_reserved(write, reserved, true).await;
    assert_eq!(r, Ok(Response::Done));
    s.put(b("r"), b("three")).await.unwrap();
    let ctl = fake.ctl();
    let applied: Vec<u64> = ctl
        .applied
        .iter()
        .filter(|(c, _)| *c == request.client)
        .map(|(_, seq)| *seq)
        .collect();
    // Put "one" (after the session's open, seq 1), the reserved put (once), put "three".
    assert_eq!(applied, vec![2, 3, 4]);
}

// The client times attempts out with one sweeping watchdog, not a timer per request: a lost
// request is still retried no sooner than the attempt timeout and well within three times
// it, also when it is the first request after the client sat idle (the watchdog then
// sleeps until a session arms a deadline).
#[tokio::test]
async fn a_lost_request_times_out_after_the_attempt_timeout_and_is_retried() {
    let fake = FakeCluster::start(1, 1, Some(1));
    let options = fake.options();
    let attempt_timeout = options.attempt_timeout;
    let client = Client::connect(options).await.unwrap();
    let mut s = client.session();
    s.put(b("k"), b("v")).await.unwrap();
    for round in 0..2 {
        // Long enough for the watchdog to find nothing armed and go to sleep.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let retries = client.metrics().retries;
        fake.ctl().drop_requests = 1;
        let start = Instant::now();
        let got = tokio::time::timeout(Duration::from_secs(2), s.get(b("k")))
            .await
            .expect("a lost request times out instead of waiting for ever");
        let took = start.elapsed();
        assert_eq!(got.unwrap(), Some(b("v")), "round {round}");
        assert_eq!(client.metrics().retries, retries + 1, "round {round}");
        assert!(
            took >= attempt_timeout && took < attempt_timeout * 3,
            "round {round}: answered after {took:?}, attempt timeout {attempt_timeout:?}"
        );
    }
}
