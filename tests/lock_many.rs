//! `lock_many`: canonical order, all or nothing, duplicates, per-key tokens, the four ways to wait.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use leasehold::{LockError, LockManager, Mode};

struct CountingWaker(AtomicUsize);

impl Wake for CountingWaker {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < Duration::from_secs(10), "timed out waiting until {what}");
        std::thread::yield_now();
    }
}

#[test]
fn overlapping_requests_in_opposite_orders_never_deadlock() {
    let locks = Arc::new(LockManager::<u64>::new());
    let (done_tx, done_rx) = mpsc::channel();
    for t in 0..2u64 {
        let (locks, done_tx) = (Arc::clone(&locks), done_tx.clone());
        std::thread::spawn(move || {
            for i in 0..2_000u64 {
                // Thread 0 names the keys ascending, thread 1 descending; the keys overlap.
                let mut keys = [(i % 5), (i % 5) + 1, 7];
                if t == 1 {
                    keys.reverse();
                }
                let all = locks.lock_many(keys.iter().map(|k| (k, Mode::Exclusive))).acquire().unwrap();
                assert_eq!(all.len(), 3);
                std::thread::yield_now();
                drop(all);
            }
            done_tx.send(()).unwrap();
        });
    }
    for _ in 0..2 {
        done_rx.recv_timeout(Duration::from_secs(60)).expect("two lock_many calls deadlocked");
    }
}

#[test]
fn a_failure_gives_back_what_was_taken() {
    let locks = LockManager::<u64>::new();
    let _held = locks.exclusive(&3).try_acquire().unwrap();
    let keys = [(&1, Mode::Exclusive), (&2, Mode::Shared), (&3, Mode::Exclusive)];
    assert_eq!(locks.lock_many(keys).try_acquire().unwrap_err(), LockError::WouldBlock);
    assert_eq!(locks.lock_many(keys).acquire_timeout(Duration::from_millis(5)).unwrap_err(), LockError::TimedOut);
    // 1 and 2 were taken before 3 failed, and given back.
    assert!(locks.inspect(&1).is_none_or(|i| i.holders.is_empty()));
    assert!(locks.inspect(&2).is_none_or(|i| i.holders.is_empty()));
    assert!(locks.exclusive(&1).try_acquire().is_ok() && locks.exclusive(&2).try_acquire().is_ok());
    assert!(locks.inspect(&3).unwrap().waiters.is_empty(), "no waiter left behind on 3");
}

#[test]
fn duplicates_merge_into_the_stronger_mode_or_are_refused() {
    let locks = LockManager::<u64>::new();
    let all = locks.lock_many([(&1, Mode::Shared), (&2, Mode::Shared), (&1, Mode::Exclusive)]).try_acquire().unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(locks.inspect(&1).unwrap().mode, Some(Mode::Exclusive));
    drop(all);
    let err = locks.lock_many([(&1, Mode::Semaphore(2)), (&1, Mode::Semaphore(3))]).try_acquire().unwrap_err();
    assert_eq!(err, LockError::PermitMismatch { live: 2, requested: 3 });
    assert_eq!(
        locks.lock_many([(&1, Mode::Semaphore(0))]).try_acquire().unwrap_err(),
        LockError::InvalidPermits { permits: 0 }
    );
}

#[test]
fn each_key_has_its_own_growing_token_and_one_guard_releases_all() {
    let locks = LockManager::<String>::new();
    let first = locks.lock_many([("a", Mode::Exclusive), ("b", Mode::Exclusive)]).acquire().unwrap();
    let (ta, tb) = (first.token("a").unwrap(), first.token("b").unwrap());
    assert_eq!(first.keys().map(String::as_str).collect::<Vec<_>>(), ["a", "b"]);
    first.release().unwrap();
    let again = locks.lock_many([("b", Mode::Exclusive), ("a", Mode::Exclusive)]).acquire().unwrap();
    assert!(again.token("a").unwrap() > ta && again.token("b").unwrap() > tb);
    drop(again);
    assert!(locks.inspect("a").is_none_or(|i| i.holders.is_empty()));
    assert!(locks.inspect("b").is_none_or(|i| i.holders.is_empty()));
}

#[test]
fn a_lease_applies_to_every_key_and_sessions_refuse_it() {
    let locks = LockManager::<u64>::new();
    let all = locks
        .lock_many([(&1, Mode::Exclusive), (&2, Mode::Shared)])
        .lease(Duration::from_secs(5))
        .try_acquire()
        .unwrap();
    assert!(all.iter().all(|g| g.expires_at().is_some()));
    drop(all);
    let tx = locks.session("t");
    let err = tx.lock_many([(&1, Mode::Exclusive)]).lease(Duration::from_secs(5)).try_acquire().unwrap_err();
    assert_eq!(err, LockError::InvalidTtl { ttl: Duration::from_secs(5) });
    assert_eq!(
        locks.lock_many([(&1, Mode::Exclusive)]).lease(Duration::ZERO).try_acquire().unwrap_err(),
        LockError::InvalidTtl { ttl: Duration::ZERO }
    );
}

#[test]
fn a_dropped_future_releases_what_it_took_and_leaves_no_waiter() {
    let locks = LockManager::<u64>::new();
    let blocker = locks.exclusive(&2).try_acquire().unwrap();
    let wakes = Arc::new(CountingWaker(AtomicUsize::new(0)));
    let waker = Waker::from(Arc::clone(&wakes));
    let mut cx = Context::from_waker(&waker);
    let mut fut = locks.lock_many([(&1, Mode::Exclusive), (&2, Mode::Exclusive)]).acquire_async();
    assert!(Pin::new(&mut fut).poll(&mut cx).is_pending());
    assert_eq!(locks.inspect(&1).unwrap().holders.len(), 1, "key 1 taken first");
    assert_eq!(locks.inspect(&2).unwrap().waiters.len(), 1, "queued on key 2");
    drop(fut);
    assert!(locks.inspect(&1).is_none_or(|i| i.holders.is_empty()), "key 1 given back");
    assert!(locks.inspect(&2).unwrap().waiters.is_empty(), "no waiter left on key 2");
    drop(blocker);
    assert!(locks.lock_many([(&1, Mode::Exclusive), (&2, Mode::Exclusive)]).try_acquire().is_ok());
}

#[test]
fn a_pending_future_is_woken_and_completes() {
    let locks = LockManager::<u64>::new();
    let blocker = locks.exclusive(&2).try_acquire().unwrap();
    let wakes = Arc::new(CountingWaker(AtomicUsize::new(0)));
    let waker = Waker::from(Arc::clone(&wakes));
    let mut cx = Context::from_waker(&waker);
    let mut fut = locks.lock_many([(&1, Mode::Shared), (&2, Mode::Exclusive), (&3, Mode::Exclusive)]).acquire_async();
    assert!(Pin::new(&mut fut).poll(&mut cx).is_pending());
    assert_eq!(wakes.0.load(Ordering::SeqCst), 0);
    drop(blocker);
    assert!(wakes.0.load(Ordering::SeqCst) >= 1, "the release woke the future");
    let Poll::Ready(all) = Pin::new(&mut fut).poll(&mut cx) else { panic!("ready after the wake-up") };
    assert_eq!(all.unwrap().len(), 3);
}

#[test]
fn session_lock_many_waits_enter_the_graph() {
    // lock_many orders its own keys, but a single request of another session can still cross it:
    // the detector sees the lock_many wait.
    let locks = LockManager::<u64>::new();
    let b = locks.session("b");
    let _b2 = b.exclusive(&2).try_acquire().unwrap();
    std::thread::scope(|s| {
        let locks = &locks;
        let a_thread = s.spawn(move || {
            let a = locks.session("a");
            a.lock_many([(&1, Mode::Exclusive), (&2, Mode::Exclusive)]).acquire().map(|g| g.len())
        });
        until("a waits on 2", || {
            locks.wait_graph().sessions.iter().any(|n| n.label.as_str() == "a" && n.waiting.is_some())
        });
        let err = b.exclusive(&1).acquire().unwrap_err();
        assert!(matches!(err, LockError::Deadlock { .. }), "{err:?}");
        drop(_b2);
        assert_eq!(a_thread.join().unwrap(), Ok(2));
    });
}
