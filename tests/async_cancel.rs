//! `acquire_async` on tokio: cancelled futures leave no waiter and no held unit behind.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use leasehold::{LockError, LockManager};

fn poll_once<F: Future>(fut: Pin<&mut F>) -> Poll<F::Output> {
    fut.poll(&mut Context::from_waker(Waker::noop()))
}

/// A waker that counts its wake-ups.
#[derive(Default)]
struct CountingWaker(std::sync::atomic::AtomicUsize);

impl std::task::Wake for CountingWaker {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

impl CountingWaker {
    fn woken(&self) -> usize {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_waiters_leave_nothing_behind() {
    let locks = Arc::new(LockManager::<String>::new());
    let holder = locks.exclusive("k").try_acquire().unwrap();
    let mut tasks = Vec::new();
    for i in 0..64 {
        let locks = Arc::clone(&locks);
        tasks.push(tokio::spawn(async move {
            let fut = async {
                if i % 2 == 0 {
                    locks.exclusive("k").acquire_async().await.map(drop)
                } else {
                    locks.shared("k").acquire_async().await.map(drop)
                }
            };
            tokio::time::timeout(Duration::from_millis(20), fut).await
        }));
    }
    for t in tasks {
        assert!(t.await.unwrap().is_err(), "a waiter got a lock that was held");
    }
    assert!(locks.debug_state("k").contains("queue 0"), "{}", locks.debug_state("k"));
    drop(holder);
    // Nothing is held or queued: exclusive at once, then the table empties.
    drop(locks.exclusive("k").try_acquire().expect("no unit left behind"));
    locks.reclaim_idle();
    assert_eq!(locks.slot_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_get_the_lock_in_turn() {
    let locks = Arc::new(LockManager::<u64>::new());
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let locks = Arc::clone(&locks);
        tasks.push(tokio::spawn(async move {
            for _ in 0..50 {
                let g = locks.exclusive(&1).acquire_async().await.unwrap();
                tokio::task::yield_now().await;
                drop(g);
            }
        }));
    }
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(20), t).await.expect("no lost wake-up").unwrap();
    }
}

#[test]
fn a_future_dropped_after_being_handed_the_lock_gives_it_back() {
    let clock = leasehold::ManualClock::new();
    let locks = LockManager::<u64>::builder().clock(clock.clone()).build().unwrap();
    let holder = locks.exclusive(&1).try_acquire().unwrap();
    let mut fut = Box::pin(locks.exclusive(&1).acquire_async());
    let woken = Arc::new(CountingWaker::default());
    assert!(fut.as_mut().poll(&mut Context::from_waker(&Waker::from(woken.clone()))).is_pending());
    // Past the fairness bound by the manager's clock: the release hands the lock to it directly.
    clock.advance(Duration::from_millis(1));
    drop(holder);
    assert_eq!(woken.woken(), 1);
    assert_eq!(locks.inspect(&1).map(|i| (i.holders.len(), i.waiters.len())), Some((1, 0)), "not handed the lock");
    // Dropped without being polled again: whatever it was handed must come back.
    drop(fut);
    assert!(locks.exclusive(&1).try_acquire().is_ok());
    assert!(locks.debug_state(&1).contains("queue 0"));
}

#[test]
fn a_cancelled_writer_lets_the_readers_behind_it_in() {
    let locks = LockManager::<u64>::new();
    let reader = locks.shared(&1).try_acquire().unwrap();
    let mut writer = Box::pin(locks.exclusive(&1).acquire_async());
    assert!(poll_once(writer.as_mut()).is_pending());
    // Writer queued: a new reader waits behind it.
    assert_eq!(locks.shared(&1).try_acquire().unwrap_err(), LockError::WouldBlock);
    let mut late_reader = Box::pin(locks.shared(&1).acquire_async());
    let woken = Arc::new(CountingWaker::default());
    let waker = Waker::from(woken.clone());
    assert!(late_reader.as_mut().poll(&mut Context::from_waker(&waker)).is_pending());
    drop(writer);
    assert_eq!(woken.woken(), 1, "the writer's leaving did not wake the reader behind it");
    match late_reader.as_mut().poll(&mut Context::from_waker(&waker)) {
        Poll::Ready(Ok(g)) => assert!(g.is_held()),
        other => {
            panic!("the reader behind a cancelled writer is still waiting: {:?}", other.map(|r| r.map(|g| g.token())))
        }
    }
    drop(reader);
}
