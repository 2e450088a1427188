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
    let locks = LockManager::<u64>::new();
    let holder = locks.exclusive(&1).try_acquire().unwrap();
    let mut fut = Box::pin(locks.exclusive(&1).acquire_async());
    assert!(poll_once(fut.as_mut()).is_pending());
    // Let it wait past the fairness bound, so the release hands the lock to it directly.
    std::thread::sleep(Duration::from_millis(2));
    drop(holder);
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
    assert!(poll_once(late_reader.as_mut()).is_pending());
    drop(writer);
    // The writer's leaving woke the reader behind it.
    match poll_once(late_reader.as_mut()) {
        Poll::Ready(Ok(g)) => assert!(g.is_held()),
        other => {
            panic!("the reader behind a cancelled writer is still waiting: {:?}", other.map(|r| r.map(|g| g.token())))
        }
    }
    drop(reader);
}
