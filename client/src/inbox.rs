//! A session's inbox: the receive task and the watchdog hand a session its replies and
//! expiry notices under one uncontended lock. A tokio channel's block list, semaphore and
//! cooperative budget are paid on every reply, on the critical path of every lock-step
//! round.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

struct State<T> {
    queue: VecDeque<T>,
    /// The receiver's, while it waits.
    waker: Option<Waker>,
    /// The sender is gone: once the queue is drained, `recv` answers `None`.
    closed: bool,
}

/// The sending half (one per inbox; the session table holds it).
pub(crate) struct Sender<T>(Arc<Mutex<State<T>>>);

/// The receiving half (the session holds it).
pub(crate) struct Receiver<T>(Arc<Mutex<State<T>>>);

/// A new inbox, empty.
pub(crate) fn inbox<T>() -> (Sender<T>, Receiver<T>) {
    let state = Arc::new(Mutex::new(State {
        queue: VecDeque::new(),
        waker: None,
        closed: false,
    }));
    (Sender(state.clone()), Receiver(state))
}

impl<T> Sender<T> {
    /// Queues `item` and wakes the receiver if it waits. Never fails: an item for a
    /// receiver that is gone is dropped with the inbox.
    pub(crate) fn send(&self, item: T) {
        let waker = {
            let mut s = self.0.lock().expect("inbox lock");
            s.queue.push_back(item);
            s.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let waker = {
            let mut s = self.0.lock().expect("inbox lock");
            s.closed = true;
            s.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl<T> Receiver<T> {
    /// The next item, in the order sent; `None` once the sender is gone and every item
    /// sent was received.
    pub(crate) async fn recv(&mut self) -> Option<T> {
        poll_fn(|cx| {
            let mut s = self.0.lock().expect("inbox lock");
            if let Some(item) = s.queue.pop_front() {
                return Poll::Ready(Some(item));
            }
            if s.closed {
                return Poll::Ready(None);
            }
            park(&mut s.waker, cx);
            Poll::Pending
        })
        .await
    }
}

/// Keeps the waker of the task about to wait in `slot` (one waiting task at a time), so
/// that the next send wakes it; the inbox and the send task's outbox wait alike.
pub(crate) fn park(slot: &mut Option<Waker>, cx: &Context<'_>) {
    match slot {
        Some(w) if w.will_wake(cx.waker()) => {}
        w => *w = Some(cx.waker().clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn items_arrive_in_order_and_a_waiting_receiver_wakes() {
        let (tx, mut rx) = inbox();
        tx.send(1);
        tx.send(2);
        assert_eq!(rx.recv().await, Some(1));
        assert_eq!(rx.recv().await, Some(2));
        let waiting = tokio::spawn(async move {
            let got = rx.recv().await;
            (got, rx)
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished(), "nothing to receive yet");
        tx.send(3);
        let (got, mut rx) = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("the send woke the receiver")
            .unwrap();
        assert_eq!(got, Some(3));
        tx.send(4);
        drop(tx);
        assert_eq!(
            rx.recv().await,
            Some(4),
            "items sent before the close are kept"
        );
        assert_eq!(rx.recv().await, None);
    }

    #[tokio::test]
    async fn dropping_the_sender_wakes_a_waiting_receiver_with_none() {
        let (tx, mut rx) = inbox::<u32>();
        let waiting = tokio::spawn(async move { rx.recv().await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(tx);
        let got = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("the close woke the receiver")
            .unwrap();
        assert_eq!(got, None);
    }
}
