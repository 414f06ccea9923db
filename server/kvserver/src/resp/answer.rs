//! A one-shot answer from the event loop to a RESP connection whose allocation the
//! connection reuses: a `tokio::sync::oneshot` allocates once per request, this slot once
//! per connection (`resp::alloc_tests` holds it to that). The saving is in allocations;
//! no change in CPU per request showed above the shared machine's noise.
//!
//! [`Slots::pair`] gives the two ends: the [`Answerer`] travels with the request to the
//! event loop and is used once (or dropped, which the [`Waiter`] learns as "no answer",
//! like a dropped oneshot sender); the [`Waiter`] goes back to its connection's [`Slots`]
//! once it has its answer.

use kv_shared::proto::Outcome;
use std::future::poll_fn;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Poll, Waker};

/// Most idle slots a connection keeps: as many as it may have operations in flight.
pub const SLOTS_KEPT_MAX: usize = super::CONNECTION_OPS_IN_FLIGHT_MAX;

/// Where one answer goes.
#[derive(Debug)]
enum State {
    /// No answer yet; the waiter's waker once it has polled.
    Waiting(Option<Waker>),
    Answered(Outcome),
    /// The answerer was dropped without answering.
    Dropped,
    /// The waiter took the answer (or learned there is none).
    Taken,
}

#[derive(Debug)]
struct Slot(Mutex<State>);

impl Slot {
    fn state(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding the lock; a poisoned one still holds a valid state.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Ends the wait with `outcome` (`None`: no answer), waking the waiter.
    fn settle(&self, outcome: Option<Outcome>) {
        let next = outcome.map_or(State::Dropped, State::Answered);
        let before = std::mem::replace(&mut *self.state(), next);
        match before {
            State::Waiting(waker) => {
                if let Some(w) = waker {
                    w.wake();
                }
            }
            other => unreachable!("an answer slot is settled once, found {other:?}"),
        }
    }
}

/// The event loop's end: answers once. Dropped unanswered, it tells the waiter so.
#[derive(Debug)]
pub struct Answerer(Option<Arc<Slot>>);

impl Answerer {
    /// Delivers `outcome`. (A waiter that is gone, its connection closed, loses nothing.)
    pub fn send(mut self, outcome: Outcome) {
        if let Some(slot) = self.0.take() {
            slot.settle(Some(outcome));
        }
    }
}

impl Drop for Answerer {
    fn drop(&mut self) {
        if let Some(slot) = self.0.take() {
            slot.settle(None);
        }
    }
}

/// The connection's end.
#[derive(Debug)]
pub struct Waiter(Arc<Slot>);

impl Waiter {
    /// The answer, or `None` if the answerer was dropped without one. Call once.
    pub async fn wait(&self) -> Option<Outcome> {
        poll_fn(|cx| {
            let mut state = self.0.state();
            match std::mem::replace(&mut *state, State::Taken) {
                State::Answered(outcome) => Poll::Ready(Some(outcome)),
                State::Dropped => Poll::Ready(None),
                State::Waiting(waker) => {
                    let waker = match waker {
                        Some(w) if w.will_wake(cx.waker()) => w,
                        _ => cx.waker().clone(),
                    };
                    *state = State::Waiting(Some(waker));
                    Poll::Pending
                }
                State::Taken => panic!("an answer is waited for once"),
            }
        })
        .await
    }
}

#[cfg(test)]
impl Waiter {
    /// True once the answerer answered or was dropped.
    pub fn settled(&self) -> bool {
        matches!(*self.0.state(), State::Answered(_) | State::Dropped)
    }
}

/// A connection's idle slots.
#[derive(Debug, Default)]
pub struct Slots(Vec<Arc<Slot>>);

impl Slots {
    /// The two ends of a fresh wait, in a slot this connection used before if it has one.
    pub fn pair(&mut self) -> (Answerer, Waiter) {
        let slot = self
            .0
            .pop()
            .unwrap_or_else(|| Arc::new(Slot(Mutex::new(State::Taken))));
        *slot.state() = State::Waiting(None);
        (Answerer(Some(slot.clone())), Waiter(slot))
    }

    /// Waits for `waiter`'s answer (`None`: none came), then keeps its slot.
    pub async fn settle(&mut self, waiter: Waiter) -> Option<Outcome> {
        let outcome = waiter.wait().await;
        self.give_back(waiter);
        outcome
    }

    /// Keeps `waiter`'s slot for a later [`Slots::pair`], if its wait is over and nobody
    /// else holds the slot (its answerer is gone).
    pub fn give_back(&mut self, waiter: Waiter) {
        let done = matches!(*waiter.0.state(), State::Taken);
        if done && Arc::strong_count(&waiter.0) == 1 && self.0.len() < SLOTS_KEPT_MAX {
            self.0.push(waiter.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn value(v: &'static [u8]) -> Outcome {
        Outcome::Value(Some(Bytes::from_static(v)))
    }

    #[tokio::test]
    async fn an_answer_sent_before_or_after_the_wait_arrives() {
        let mut slots = Slots::default();
        let (answerer, waiter) = slots.pair();
        answerer.send(value(b"early"));
        assert_eq!(waiter.wait().await, Some(value(b"early")));
        slots.give_back(waiter);

        let (answerer, waiter) = slots.pair();
        let task = tokio::spawn(async move { (waiter.wait().await, waiter) });
        tokio::task::yield_now().await;
        answerer.send(value(b"late"));
        let (got, waiter) = task.await.expect("waiter");
        assert_eq!(got, Some(value(b"late")));
        slots.give_back(waiter);
        assert_eq!(slots.0.len(), 1, "one slot served both waits");
    }

    #[tokio::test]
    async fn a_dropped_answerer_ends_the_wait_with_none() {
        let mut slots = Slots::default();
        let (answerer, waiter) = slots.pair();
        let task = tokio::spawn(async move { waiter.wait().await });
        tokio::task::yield_now().await;
        drop(answerer);
        assert_eq!(task.await.expect("waiter"), None);
    }

    #[tokio::test]
    async fn a_slot_still_held_elsewhere_is_not_reused() {
        let mut slots = Slots::default();
        let (answerer, waiter) = slots.pair();
        // Not waited for: the answerer may still write into it.
        slots.give_back(waiter);
        assert!(slots.0.is_empty());
        let (_answerer2, waiter2) = slots.pair();
        answerer.send(value(b"x"));
        // The fresh pair is untouched by the old answerer.
        assert!(matches!(*waiter2.0.state(), State::Waiting(None)));
    }
}
