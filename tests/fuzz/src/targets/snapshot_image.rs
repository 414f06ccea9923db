//! The state machine's snapshot image (`kv_node::sm::StateMachine::from_image`), the
//! bytes a follower restores from a leader's snapshot. A decoded image must re-encode to
//! an image of the same state (same digest, keys, sessions and position), and the
//! restored machine must take writes.

use bytes::Bytes;
use kv_node::sm::{StateMachine, WriteCommand, WriteOp};
use kv_shared::ClientId;

/// The session table bound of the restored machine (small, so that images with more
/// sessions than it holds are common).
const SESSIONS_MAX: usize = 4;

pub fn run(data: &[u8]) {
    let Ok(mut sm) = StateMachine::from_image(data, SESSIONS_MAX) else {
        return;
    };
    let again =
        StateMachine::from_image(&sm.to_image(), SESSIONS_MAX).expect("a re-encoded image decodes");
    assert_eq!(
        again.digest(),
        sm.digest(),
        "image round trip changed the state"
    );
    assert_eq!(
        (
            again.keys(),
            again.sessions(),
            again.applied_index(),
            again.applied_term()
        ),
        (
            sm.keys(),
            sm.sessions(),
            sm.applied_index(),
            sm.applied_term()
        )
    );
    for seq in 1..=3 {
        sm.apply_write(&WriteCommand {
            client: ClientId(seq),
            seq,
            op: WriteOp::Put {
                key: Bytes::from_static(b"k"),
                value: Bytes::from_static(b"v"),
            },
        });
    }
    assert!(
        sm.sessions() <= SESSIONS_MAX,
        "the session table outgrew its bound"
    );
}

pub fn seeds() -> Vec<Vec<u8>> {
    let mut sm = StateMachine::new(SESSIONS_MAX);
    let empty = sm.to_image().to_vec();
    for (client, key) in [(1, "a"), (2, "b"), (1, "c")] {
        sm.apply_write(&WriteCommand {
            client: ClientId(client),
            seq: 1 + client,
            op: WriteOp::Put {
                key: Bytes::from(key),
                value: Bytes::from_static(b"value"),
            },
        });
    }
    vec![empty, sm.to_image().to_vec()]
}
