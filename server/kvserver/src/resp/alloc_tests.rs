//! Pins down what the gateway's per-command path allocates: at ~100,000 GETs a second on
//! one core, every allocation per command is a visible share of the node's CPU, and a
//! change that adds one should fail a test rather than go unnoticed in a benchmark.
//!
//! The kv-server unit-test binary counts heap allocations per thread (the tests of other
//! threads do not disturb a count).

// A global allocator is an unsafe trait; this one only counts and hands every call to the
// system allocator unchanged.
#![allow(unsafe_code)]

use super::commands::{self, Plan};
use super::parse_command;
use bytes::{Bytes, BytesMut};
use kvcli::Response;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn count() {
    // During a thread's teardown the counter may be gone: that allocation is nobody's.
    let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
}

// SAFETY: every call is passed to `System` with the caller's own arguments.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

/// Runs `f` and returns how many allocations it made on this thread.
fn allocations_in(f: impl FnOnce()) -> u64 {
    let before = ALLOCATIONS.with(Cell::get);
    f();
    ALLOCATIONS.with(Cell::get) - before
}

/// One GET through the gateway's own steps, the core's answer given: parse it off the
/// input buffer, plan it, build the reply from the answer and encode it.
fn get_round(input: &mut BytesMut, words: &mut Vec<Bytes>, out: &mut BytesMut, value: Bytes) {
    input.extend_from_slice(b"*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n");
    assert!(parse_command(input, words).expect("well formed"));
    let plan = commands::plan(words, false);
    words.clear();
    let Plan::Ops { ops, finish } = plan else {
        panic!("GET is an operation")
    };
    assert_eq!(ops.len(), 1);
    let mut answers = [Ok(Response::Value(Some(value)))];
    commands::finish(finish, &mut answers).encode(2, out);
}

#[test]
fn a_get_allocates_only_the_codecs_list_of_ranges() {
    let mut input = BytesMut::with_capacity(16 * 1024);
    let mut words = Vec::with_capacity(8);
    let mut out = BytesMut::with_capacity(16 * 1024);
    // The core copies a value out of its map into a `Bytes` that owns its buffer: sharing
    // such a `Bytes` (a clone) would allocate.
    let value = || Bytes::from(vec![b'v'; 100]);
    // The first command turns the input buffer into a shared one (its one allocation).
    get_round(&mut input, &mut words, &mut out, value());
    out.clear();
    let v = value();
    let made = allocations_in(|| get_round(&mut input, &mut words, &mut out, v));
    assert_eq!(
        &out[..],
        [&b"$100\r\n"[..], &[b'v'; 100], b"\r\n"].concat(),
        "the reply"
    );
    assert_eq!(
        made, 1,
        "a GET allocates the codec's list of ranges and nothing else"
    );
}

/// A waker for futures polled once (they are ready at once); made before counting.
fn noop_waker() -> std::task::Waker {
    struct Noop;
    impl std::task::Wake for Noop {
        fn wake(self: std::sync::Arc<Self>) {}
    }
    std::task::Waker::from(std::sync::Arc::new(Noop))
}

/// Polls `f` once with `waker`; it must be ready.
fn ready_now<T>(waker: &std::task::Waker, f: impl std::future::Future<Output = T>) -> T {
    let mut cx = std::task::Context::from_waker(waker);
    match std::pin::pin!(f).poll(&mut cx) {
        std::task::Poll::Ready(v) => v,
        std::task::Poll::Pending => panic!("not ready"),
    }
}

#[test]
fn an_answer_from_the_core_reuses_its_connections_slot() {
    let mut slots = super::answer::Slots::default();
    let waker = noop_waker();
    let round = |slots: &mut super::answer::Slots| {
        let (answerer, waiter) = slots.pair();
        answerer.send(kv_shared::proto::Outcome::Value(None));
        ready_now(&waker, slots.settle(waiter))
    };
    // The connection's first operation allocates the slot.
    assert_eq!(
        round(&mut slots),
        Some(kv_shared::proto::Outcome::Value(None))
    );
    let made = allocations_in(|| {
        round(&mut slots);
    });
    assert_eq!(
        made, 0,
        "a tokio oneshot would allocate here, once per operation"
    );
}
