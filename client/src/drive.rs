//! Many futures driven by one task: the bench's logical clients, each woken by the reply
//! it waits for, are polled by the task that awaits them all instead of being tokio tasks
//! of their own, so that a reply wakes a client with a push onto one list rather than a
//! task schedule and a task poll through tokio's harness on every round.

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

/// The clients woken since the driver last looked, and the driver's own waker.
#[derive(Default)]
struct Woken {
    clients: Vec<usize>,
    driver: Option<Waker>,
}

/// The waker of client `index`.
struct ClientWaker {
    index: usize,
    woken: Arc<Mutex<Woken>>,
}

impl Wake for ClientWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let driver = {
            let mut w = self.woken.lock().expect("woken lock");
            w.clients.push(self.index);
            w.driver.take()
        };
        if let Some(d) = driver {
            d.wake();
        }
    }
}

/// Runs `futures` to completion on the calling task; each is polled when it was woken.
/// One pass over the clients woken per poll of this future: a client woken again
/// meanwhile is polled after the runtime had its turn (tokio's cooperative budget, spent
/// by a long pass, would otherwise make a client's timer wake it at once forever).
pub(crate) async fn drive<F: Future<Output = ()>>(futures: Vec<F>) {
    let count = futures.len();
    let woken = Arc::new(Mutex::new(Woken {
        clients: (0..count).collect(),
        driver: None,
    }));
    let wakers: Vec<Waker> = (0..count)
        .map(|index| {
            Waker::from(Arc::new(ClientWaker {
                index,
                woken: woken.clone(),
            }))
        })
        .collect();
    let mut futures: Vec<Option<Pin<Box<F>>>> =
        futures.into_iter().map(|f| Some(Box::pin(f))).collect();
    let mut running = count;
    let mut pass = Vec::new();
    poll_fn(|cx| {
        {
            let mut w = woken.lock().expect("woken lock");
            std::mem::swap(&mut w.clients, &mut pass);
            if pass.is_empty() {
                if running == 0 {
                    return Poll::Ready(());
                }
                match &mut w.driver {
                    Some(d) if d.will_wake(cx.waker()) => {}
                    d => *d = Some(cx.waker().clone()),
                }
                return Poll::Pending;
            }
        }
        for index in pass.drain(..) {
            let Some(f) = &mut futures[index] else {
                continue;
            };
            if f.as_mut()
                .poll(&mut Context::from_waker(&wakers[index]))
                .is_ready()
            {
                futures[index] = None;
                running -= 1;
            }
        }
        if running == 0 {
            return Poll::Ready(());
        }
        // Look again after the runtime's turn: clients woken during the pass are listed.
        cx.waker().wake_by_ref();
        Poll::Pending
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn every_future_runs_to_completion_each_woken_by_what_it_waits_for() {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<usize>();
        let done = Arc::new(Mutex::new(Vec::new()));
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        let clients: Vec<_> = (0..5)
            .map(|i| {
                let (done, rx) = (done.clone(), rx.clone());
                async move {
                    // Client i waits i milliseconds, then for a message, then finishes.
                    tokio::time::sleep(Duration::from_millis(i as u64)).await;
                    let got = rx.lock().await.recv().await;
                    done.lock().unwrap().push((i, got));
                }
            })
            .collect();
        let sender = tokio::spawn(async move {
            for m in 0..5 {
                tokio::time::sleep(Duration::from_millis(5)).await;
                tx.send(m).unwrap();
            }
        });
        tokio::time::timeout(Duration::from_secs(10), drive(clients))
            .await
            .expect("every client finished");
        sender.await.unwrap();
        let mut done = done.lock().unwrap().clone();
        assert_eq!(done.len(), 5);
        done.sort();
        assert!(done.iter().all(|(_, got)| got.is_some()));
        let mut messages: Vec<usize> = done.iter().map(|(_, got)| got.unwrap()).collect();
        messages.sort();
        assert_eq!(messages, vec![0, 1, 2, 3, 4]);
    }

    #[tokio::test]
    async fn no_futures_is_done_at_once() {
        let none: Vec<std::future::Ready<()>> = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), drive(none))
            .await
            .expect("nothing to wait for");
    }

    #[tokio::test]
    async fn a_future_that_keeps_waking_itself_lets_the_other_tasks_run() {
        let flag = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let spinning = {
            let flag = flag.clone();
            async move {
                // Pending and woken at once until a separate task sets the flag: it is
                // set only if the driver yields to the runtime between passes.
                poll_fn(|cx| {
                    if flag.load(std::sync::atomic::Ordering::SeqCst) {
                        Poll::Ready(())
                    } else {
                        cx.waker().wake_by_ref();
                        Poll::Pending
                    }
                })
                .await
            }
        };
        let setter = tokio::spawn(async move {
            flag.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        tokio::time::timeout(Duration::from_secs(5), drive(vec![spinning]))
            .await
            .expect("the setter ran");
        setter.await.unwrap();
    }
}
