//! The course protocol's inbound JSON (`kv_course::protocol::parse_inbound`) and the
//! base64 postcard batches replicas carry in it (`kv_course::peer::decode`). Neither may
//! panic; a decoded batch re-encodes to the same messages, and a report says only what a
//! report may (owed indexes ascending, at or below its index, few).

use kv_course::ids::CourseId;
use kv_course::peer;
use kv_course::protocol::{parse_inbound, Inbound};
use kv_course::report::OWED_LISTED_MAX;
use kv_node::GroupMessage;
use kv_raft::{Message, MessageBody};
use kv_shared::{NodeId, ShardId};

/// The replica the datagrams are addressed to.
const ME: CourseId = CourseId(1);

pub fn run(data: &[u8]) {
    if let Inbound::Peer { report, .. } = parse_inbound(data, ME) {
        assert!(report.owed.len() <= OWED_LISTED_MAX, "{report:?}");
        assert!(report.owed.windows(2).all(|w| w[0] < w[1]), "{report:?}");
        assert!(
            report.owed.iter().all(|&i| i <= report.through),
            "{report:?}"
        );
    }
    if let Inbound::Peer {
        payload: Some(payload),
        ..
    } = parse_inbound(data, ME)
    {
        if let Ok(msgs) = peer::decode(&payload) {
            let (payloads, dropped) = peer::encode(msgs.clone());
            assert_eq!(dropped, 0, "a decoded batch fits again");
            let back: Vec<GroupMessage> = payloads
                .iter()
                .flat_map(|p| peer::decode(p).expect("our own payload decodes"))
                .collect();
            assert_eq!(back, msgs, "course peer codec round trip");
        }
    }
}

pub fn seeds() -> Vec<Vec<u8>> {
    let batch = vec![GroupMessage {
        shard: ShardId(0),
        msg: Message {
            from: NodeId(1),
            to: NodeId(2),
            term: 3,
            body: MessageBody::Heartbeat {
                commit: 2,
                read_round: 1,
            },
        },
    }];
    let (payloads, _) = peer::encode(batch);
    let mut seeds: Vec<Vec<u8>> = [
        r#"{"src":"0000","dst":"0001","leader":"FFFF","type":"get","MID":"m1","key":"k"}"#,
        r#"{"src":"0000","dst":"0001","leader":"FFFF","type":"put","MID":"m2","key":"k","value":"v"}"#,
        r#"{"src":"0002","dst":"FFFF","leader":"FFFF","type":"raft","c":4,"s":9,"i":[[1,"0000","m3"]]}"#,
        r#"{"src":"0002","dst":"0001","leader":"0002","type":"raft","c":9,"o":[7,3,12],"s":2,"w":true}"#,
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    for p in payloads {
        seeds.push(
            format!(
                r#"{{"src":"0002","dst":"0001","leader":"0002","type":"raft","m":"{p}","s":1}}"#
            )
            .into_bytes(),
        );
    }
    seeds
}
