//! The in-process manager behind the `LockBackend` trait: the same outcomes as its own API, wake-ups
//! observed with a counting waker, the timed wait's deadline served by the trait's timer.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use leasehold::{BackendError, BackendGuard, LockBackend, LockError, LockManager, Mode};

struct Counting(AtomicUsize);

impl Wake for Counting {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

fn counting() -> (Arc<Counting>, Waker) {
    let c = Arc::new(Counting(AtomicUsize::new(0)));
    (c.clone(), Waker::from(c))
}

/// Waits (bounded) until the waker has been called `n` times.
fn wait_woken(c: &Counting, n: usize) {
    let end = Instant::now() + Duration::from_secs(10);
    while c.0.load(Ordering::SeqCst) < n {
        assert!(Instant::now() < end, "not woken within 10 s");
        std::thread::yield_now();
    }
}

fn poll<F: Future + Unpin>(f: &mut F, w: &Waker) -> Poll<F::Output> {
    Pin::new(f).poll(&mut Context::from_waker(w))
}

#[test]
fn try_and_immediate_acquires_complete_on_the_first_poll() {
    let locks: LockManager<String> = LockManager::new();
    let (woken, w) = counting();
    let mut f = Box::pin(LockBackend::exclusive(&locks, "k").lease(Duration::from_secs(5)).owner("a").try_acquire());
    let Poll::Ready(Ok(g)) = f.as_mut().poll(&mut Context::from_waker(&w)) else { panic!("try did not complete") };
    assert_eq!(BackendGuard::mode(&g), Mode::Exclusive);
    assert_eq!(BackendGuard::owner(&g).unwrap().as_str(), "a");
    let mut busy = Box::pin(LockBackend::shared(&locks, "k").try_acquire());
    match busy.as_mut().poll(&mut Context::from_waker(&w)) {
        Poll::Ready(Err(e)) => assert_eq!(e.lock_error(), Some(&LockError::WouldBlock)),
        other => panic!("a shared try beside a writer: {:?}", other.map(|r| r.map(|g| g.token()))),
    }
    assert_eq!(woken.0.load(Ordering::SeqCst), 0);
}

#[test]
fn a_queued_acquire_is_woken_by_the_release() {
    let locks: LockManager<String> = LockManager::new();
    let held = locks.exclusive("k").try_acquire().unwrap();
    let first = held.token();
    let (woken, w) = counting();
    let mut f = Box::pin(LockBackend::exclusive(&locks, "k").acquire());
    assert!(f.as_mut().poll(&mut Context::from_waker(&w)).is_pending());
    assert_eq!(locks.inspect("k").unwrap().waiters.len(), 1);
    held.release().unwrap();
    wait_woken(&woken, 1);
    let Poll::Ready(Ok(g)) = f.as_mut().poll(&mut Context::from_waker(&w)) else {
        panic!("not granted after the release")
    };
    assert!(g.token() > first);
}

#[test]
fn a_timed_acquire_times_out_and_leaves_the_queue() {
    let locks: LockManager<String> = LockManager::new();
    let held = locks.exclusive("k").try_acquire().unwrap();
    let (woken, w) = counting();
    let t0 = Instant::now();
    let mut f = Box::pin(LockBackend::exclusive(&locks, "k").acquire_timeout(Duration::from_millis(30)));
    assert!(f.as_mut().poll(&mut Context::from_waker(&w)).is_pending());
    assert_eq!(locks.inspect("k").unwrap().waiters.len(), 1);
    // The timer thread wakes the task at the deadline.
    wait_woken(&woken, 1);
    assert!(t0.elapsed() >= Duration::from_millis(30));
    match f.as_mut().poll(&mut Context::from_waker(&w)) {
        Poll::Ready(Err(e)) => assert_eq!(e, LockError::TimedOut),
        other => panic!("after the deadline: {:?}", other.map(|r| r.map(|g| g.token()))),
    }
    drop(f);
    assert!(locks.inspect("k").unwrap().waiters.is_empty());
    held.release().unwrap();
    assert!(locks.exclusive("k").try_acquire().is_ok());
}

#[test]
fn a_timed_acquire_granted_before_its_deadline_holds() {
    let locks: LockManager<String> = LockManager::new();
    let held = locks.semaphore("pool", 1).try_acquire().unwrap();
    let (woken, w) = counting();
    let mut f = Box::pin(LockBackend::semaphore(&locks, "pool", 1).acquire_timeout(Duration::from_secs(30)));
    assert!(poll(&mut f, &w).is_pending());
    held.release().unwrap();
    wait_woken(&woken, 1);
    let Poll::Ready(Ok(g)) = poll(&mut f, &w) else { panic!("not granted") };
    assert!(BackendGuard::is_held(&g));
}

#[test]
fn trait_guards_renew_and_release_as_the_manager_does() {
    let locks: LockManager<String> = LockManager::builder().clock(leasehold::ManualClock::new()).build().unwrap();
    let (_, w) = counting();
    let Poll::Ready(Ok(g)) =
        poll(&mut Box::pin(LockBackend::exclusive(&locks, "k").lease(Duration::from_secs(1)).try_acquire()), &w)
    else {
        panic!("not acquired")
    };
    assert_eq!(
        poll(&mut Box::pin(BackendGuard::renew(&g, Duration::ZERO)), &w),
        Poll::Ready(Err(LockError::InvalidTtl { ttl: Duration::ZERO }))
    );
    assert_eq!(poll(&mut Box::pin(BackendGuard::renew(&g, Duration::from_secs(2))), &w), Poll::Ready(Ok(())));
    assert_eq!(poll(&mut Box::pin(BackendGuard::release(g)), &w), Poll::Ready(Ok(())));
    let bad = poll(&mut Box::pin(LockBackend::semaphore(&locks, "s", 0).try_acquire()), &w).map(|r| r.err());
    assert_eq!(bad, Poll::Ready(Some(LockError::InvalidPermits { permits: 0 })));
}

/// Generic code compiles against the trait with `Send` futures (spawnable on any runtime).
#[test]
fn trait_futures_are_send() {
    fn is_send<T: Send>(_: &T) {}
    let locks: LockManager<String> = LockManager::new();
    let f = LockBackend::exclusive(&locks, "k").acquire();
    is_send(&f);
    let locks: LockManager<Arc<str>> = LockManager::new();
    let f = LockBackend::shared(&locks, "k").acquire_timeout(Duration::from_secs(1));
    is_send(&f);
}

#[test]
fn an_upgradable_spec_holds_beside_readers_and_alone_among_upgradables() {
    let locks: LockManager<String> = LockManager::new();
    let (_, w) = counting();
    let spec = leasehold::LockSpec::new(Mode::Upgradable).lease(Duration::from_secs(5));
    let mut f = Box::pin(LockBackend::acquire_with(&locks, "k", spec.clone(), leasehold::Wait::Try));
    let Poll::Ready(Ok(g)) = f.as_mut().poll(&mut Context::from_waker(&w)) else { panic!("try did not complete") };
    assert_eq!(BackendGuard::mode(&g), Mode::Upgradable);
    assert!(locks.shared("k").try_acquire().is_ok(), "a reader beside the upgradable holding");
    assert_eq!(locks.upgradable("k").try_acquire().unwrap_err(), LockError::WouldBlock);
    let mut second = Box::pin(LockBackend::acquire_with(&locks, "k", spec, leasehold::Wait::Try));
    match second.as_mut().poll(&mut Context::from_waker(&w)) {
        Poll::Ready(Err(e)) => assert_eq!(e.lock_error(), Some(&LockError::WouldBlock)),
        other => panic!("a second upgradable: {:?}", other.map(|r| r.map(|g| g.token()))),
    }
    drop(f);
    drop(g);
    assert!(locks.upgradable("k").try_acquire().is_ok(), "the trait guard's release cleared UP");
}
