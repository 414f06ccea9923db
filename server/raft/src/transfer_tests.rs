//! Leadership transfer to a voter that has just been promoted from learner: the step a
//! replica move takes when it moves the leader's own replica.

use crate::node::RoleState;
use crate::testing::{test_config, Cluster};
use crate::{ConfChange, Config};
use bytes::Bytes;
use kv_shared::NodeId;

fn node(c: &mut Cluster, id: u64) -> &mut crate::Raft {
    &mut c.nodes.get_mut(&id).expect("node").raft
}

/// Without commit broadcasts, a follower learns the commit index from the next Append or
/// heartbeat. A leader that committed `PromoteLearner(4)` and at once handed leadership
/// to node 4 sent a TimeoutNow that node 4, not knowing its promotion committed and so
/// still a learner, ignored; the transfer ran out and was retried by the move seconds
/// later. The TimeoutNow now follows an Append that tells the commit index.
#[test]
fn a_just_promoted_learner_takes_over_at_once() {
    let opts = Config {
        broadcast_commit: false,
        ..test_config()
    };
    let mut c = Cluster::new(3, &[4], opts);
    c.quiet = true;
    for _ in 0..60 {
        for id in [1, 2, 3, 4] {
            c.tick(id);
        }
        c.stabilize();
        if c.leader().is_some() {
            break;
        }
    }
    let l = c.leader().expect("a leader");
    node(&mut c, l)
        .propose(Bytes::from_static(b"x"))
        .expect("leader");
    c.stabilize();
    node(&mut c, l)
        .propose_conf_change(ConfChange::PromoteLearner(NodeId(4)))
        .expect("no change pending");
    c.stabilize();
    assert!(
        c.nodes[&l].raft.membership.voters.contains(&NodeId(4)),
        "the promotion committed on the leader"
    );
    assert!(
        !c.nodes[&4].raft.membership.voters.contains(&NodeId(4)),
        "node 4 was not told the commit (else this test shows nothing)"
    );
    node(&mut c, l).transfer_leadership(NodeId(4));
    c.process(l);
    c.stabilize();
    assert!(
        matches!(c.nodes[&4].raft.role, RoleState::Leader(_)),
        "node 4 did not take over without a tick"
    );
}
