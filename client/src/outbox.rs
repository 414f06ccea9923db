//! The send task's outbox: sessions encode their requests straight into one shared byte
//! buffer under its lock, and the send task takes the whole buffer at once, so that a
//! request costs no buffer of its own (a slice handed out, reference-counted and dropped)
//! on the way from its session to its datagram.

use std::future::poll_fn;
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};

/// Requests ready to send: their encodings one after the other in `bytes`, and for each,
/// in the order queued, where it goes and where its encoding lies in `bytes`.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    pub(crate) bytes: Vec<u8>,
    pub(crate) requests: Vec<(SocketAddr, Range<usize>)>,
}

impl Batch {
    /// Empties the batch, keeping its capacity.
    pub(crate) fn clear(&mut self) {
        self.bytes.clear();
        self.requests.clear();
    }

    /// The encoding of request `i`.
    pub(crate) fn request(&self, i: usize) -> &[u8] {
        &self.bytes[self.requests[i].1.clone()]
    }
}

struct State {
    batch: Batch,
    /// The send task's, while it waits.
    waker: Option<Waker>,
    /// Every queueing handle is gone.
    closed: bool,
}

/// The queueing half (the client's shared state holds it).
pub(crate) struct Sender(Arc<Mutex<State>>);

/// The send task's half.
pub(crate) struct Receiver(Arc<Mutex<State>>);

/// A new outbox, empty.
pub(crate) fn outbox() -> (Sender, Receiver) {
    let state = Arc::new(Mutex::new(State {
        batch: Batch::default(),
        waker: None,
        closed: false,
    }));
    (Sender(state.clone()), Receiver(state))
}

impl Sender {
    /// Queues for `to` the request `encode` appends to the buffer it is given, unless it
    /// returns an error, in which case nothing is queued (what it appended is cut off).
    /// Wakes the send task if it waits.
    pub(crate) fn push<E>(
        &self,
        to: SocketAddr,
        encode: impl FnOnce(&mut Vec<u8>) -> Result<(), E>,
    ) -> Result<(), E> {
        let waker = {
            let mut s = self.0.lock().expect("outbox lock");
            let start = s.batch.bytes.len();
            if let Err(e) = encode(&mut s.batch.bytes) {
                s.batch.bytes.truncate(start);
                return Err(e);
            }
            let end = s.batch.bytes.len();
            s.batch.requests.push((to, start..end));
            s.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
        Ok(())
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        let waker = {
            let mut s = self.0.lock().expect("outbox lock");
            s.closed = true;
            s.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl Receiver {
    /// Swaps every request queued into `out` (emptied first; its buffers become the
    /// outbox's next ones), waiting for one if none is; false once the sender is gone and
    /// every request was taken.
    pub(crate) async fn take(&mut self, out: &mut Batch) -> bool {
        out.clear();
        poll_fn(|cx| {
            let mut s = self.0.lock().expect("outbox lock");
            if !s.batch.requests.is_empty() {
                std::mem::swap(&mut s.batch, out);
                return Poll::Ready(true);
            }
            if s.closed {
                return Poll::Ready(false);
            }
            crate::inbox::park(&mut s.waker, cx);
            Poll::Pending
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    /// Queues `bytes` for `to` as one request.
    fn push(tx: &Sender, to: SocketAddr, bytes: &[u8]) {
        tx.push::<()>(to, |b| {
            b.extend_from_slice(bytes);
            Ok(())
        })
        .unwrap();
    }

    #[tokio::test]
    async fn requests_come_out_in_order_and_a_refused_one_leaves_nothing() {
        let (tx, mut rx) = outbox();
        push(&tx, addr(1), b"one");
        assert_eq!(
            tx.push(addr(2), |b| {
                b.extend_from_slice(b"too large");
                Err("refused")
            }),
            Err("refused")
        );
        push(&tx, addr(2), b"two");
        let mut batch = Batch::default();
        assert!(rx.take(&mut batch).await);
        assert_eq!(batch.bytes, b"onetwo");
        assert_eq!(batch.requests, vec![(addr(1), 0..3), (addr(2), 3..6)]);
        assert_eq!(batch.request(1), b"two");
        // The outbox now holds the batch's old (empty) buffers; the next take swaps again.
        push(&tx, addr(3), b"three");
        assert!(rx.take(&mut batch).await);
        assert_eq!(batch.requests, vec![(addr(3), 0..5)]);
        assert_eq!(batch.request(0), b"three");
    }

    #[tokio::test]
    async fn a_waiting_send_task_wakes_for_a_request_and_for_the_close() {
        let (tx, mut rx) = outbox();
        let waiting = tokio::spawn(async move {
            let mut batch = Batch::default();
            let more = rx.take(&mut batch).await;
            (more, batch, rx)
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished(), "nothing to take yet");
        push(&tx, addr(1), &[7]);
        let (more, batch, mut rx) = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("the push woke the send task")
            .unwrap();
        assert!(more);
        assert_eq!(batch.bytes, [7]);
        push(&tx, addr(1), &[8]);
        drop(tx);
        let mut batch = Batch::default();
        assert!(
            rx.take(&mut batch).await,
            "requests queued before the close"
        );
        assert_eq!(batch.bytes, [8]);
        assert!(!rx.take(&mut batch).await);
    }
}
