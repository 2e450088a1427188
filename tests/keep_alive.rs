//! Keep-alive leases and the loss signal (issue 13): a renewer that cannot keep up lets the
//! lease expire, the holder is told before the next holder acquires, and its late fenced write
//! is refused; no renewal reaches a released holding; a renewal after the deadline loses to
//! expiry on the same compare-exchange.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use leasehold::{EventKind, LockError, LockManager, LossCause, ManualClock, Mode};

const TTL: Duration = Duration::from_secs(3);
const STEP: Duration = Duration::from_secs(1);

struct CountingWaker(AtomicUsize);

impl Wake for CountingWaker {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

fn counting_waker() -> (Arc<CountingWaker>, Waker) {
    let c = Arc::new(CountingWaker(AtomicUsize::new(0)));
    (Arc::clone(&c), Waker::from(c))
}

fn manual() -> (LockManager<String>, ManualClock) {
    let clock = ManualClock::new();
    let locks = LockManager::<String>::builder().clock(clock.clone()).build().expect("valid settings");
    (locks, clock)
}

/// The renewer keeps the lease alive while it runs; frozen, it lets the lease expire. The holder
/// is told (its `lost()` waker woken, `is_lost()` true) before a second holder, parked in
/// `acquire()`, gets the key; and the frozen holder's fenced write is refused after the second
/// holder's.
#[test]
fn a_frozen_renewer_loses_the_lease_and_the_loss_is_signalled_before_the_next_holder() {
    let (locks, clock) = manual();
    let db = locks.fenced(Vec::<&str>::new());
    let g = locks.exclusive("job").lease(TTL).keep_alive().acquire().expect("free");
    let renewals = g.renewal_counter().expect("a keep-alive guard has a counter");
    db.write(g.token(), |log| log.push("first")).expect("first write");
    for _ in 0..10 {
        clock.advance(STEP);
        assert!(g.is_held(), "kept alive at {:?}", locks.now());
    }
    assert_eq!(renewals.load(Ordering::SeqCst), 10, "one renewal per third of the TTL");
    assert_eq!(g.expires_at(), Some(locks.now() + TTL));

    let (wakes, waker) = counting_waker();
    let mut lost = Box::pin(g.lost());
    assert_eq!(lost.as_mut().poll(&mut Context::from_waker(&waker)), Poll::Pending);

    let stall = locks.stall_renewer();
    std::thread::scope(|s| {
        let second = s.spawn(|| {
            let g2 = locks.exclusive("job").acquire().expect("an exclusive acquire only waits");
            // Read the first holder's state at the moment the second holds the key.
            let seen = (g.is_lost(), wakes.0.load(Ordering::SeqCst));
            db.write(g2.token(), |log| log.push("second")).expect("the new holder writes");
            (seen, g2.token())
        });
        // Parked behind the first holder (seen through introspection, not a sleep).
        while locks.inspect("job").is_none_or(|i| i.waiters.is_empty()) {
            std::thread::yield_now();
        }
        clock.advance(STEP);
        clock.advance(STEP);
        assert!(g.is_held(), "still inside the last renewed lease");
        clock.advance(STEP); // the last renewal's deadline
        let ((lost_seen, wakes_seen), t2) = second.join().expect("the second holder");
        assert!(lost_seen, "the second holder acquired before the first was told");
        assert_eq!(wakes_seen, 1, "the lost() waker was not woken before the second holder acquired");
        assert!(t2 > g.token());
    });
    drop(stall);
    assert_eq!(lost.as_mut().poll(&mut Context::from_waker(&waker)), Poll::Ready(LossCause::Expired));
    assert_eq!(wakes.0.load(Ordering::SeqCst), 1, "woken exactly once");
    assert_eq!(renewals.load(Ordering::SeqCst), 10, "no renewal while frozen");
    assert_eq!(g.trusted_until(), None);
    let late = db.write(g.token(), |log| log.push("late"));
    assert!(matches!(late, Err(LockError::StaleToken { .. })), "{late:?}");
    assert_eq!(db.read(|log| log.clone()), ["first", "second"]);
    drop(lost);
    assert_eq!(g.release(), Err(LockError::Expired));
}

/// After release (or drop) the renewer never renews the holding again: its own counter and the
/// manager's renewal count stand still while the clock runs on.
#[test]
fn no_renewal_reaches_a_released_or_dropped_guard() {
    let (locks, clock) = manual();
    for release in [true, false] {
        let g = locks.exclusive("job").lease(TTL).keep_alive().acquire().expect("free");
        let renewals = g.renewal_counter().expect("a counter");
        clock.advance(STEP);
        clock.advance(STEP);
        assert_eq!(renewals.load(Ordering::SeqCst), 2);
        if release {
            g.release().expect("held");
        } else {
            drop(g);
        }
        let total = locks.metrics().renewals;
        for _ in 0..30 {
            clock.advance(STEP);
        }
        assert_eq!(renewals.load(Ordering::SeqCst), 2, "renewed after release (release = {release})");
        assert_eq!(locks.metrics().renewals, total);
        // The key is free, and a new holder keeps it (nobody renews an old holding over it).
        let h = locks.exclusive("job").lease(TTL).try_acquire().expect("free again");
        clock.advance(TTL);
        assert!(!h.is_held());
    }
}

/// The renewer's renewal is the hand renewal's compare-exchange: once the deadline has passed, it
/// loses (the holding is not renewed and then expired as usual), whether the renewer or the
/// expirer looks first.
#[test]
fn a_renewal_after_the_deadline_loses_to_expiry() {
    let clock = ManualClock::new();
    let locks = LockManager::<u32>::builder().clock(clock.clone()).reaper(false).build().expect("valid");
    let g = locks.exclusive(&1).lease(TTL).keep_alive().try_acquire().expect("free");
    let renewals = g.renewal_counter().expect("a counter");
    clock.advance(STEP);
    assert_eq!(locks.renew_due(), 1);
    clock.advance(TTL); // past the renewed deadline, nobody expired it yet
    assert_eq!(locks.renew_due(), 0, "a renewal after the deadline succeeded");
    assert_eq!(renewals.load(Ordering::SeqCst), 1);
    assert!(!g.is_held());
    assert_eq!(locks.expire_due(), 1);
    assert_eq!(g.loss_cause(), Some(LossCause::Expired));
    assert_eq!(locks.renew_due(), 0);
}

/// Keep-alive works in every mode, and the holder's trusted deadline follows the last renewal,
/// never past the real deadline.
#[test]
fn keep_alive_in_every_mode_and_trusted_until_follows_the_renewals() {
    let (locks, clock) = manual();
    let w = locks.exclusive("w").lease(TTL).keep_alive().try_acquire().expect("free");
    let r1 = locks.shared("r").lease(TTL).keep_alive().try_acquire().expect("free");
    let r2 = locks.shared("r").lease(TTL).keep_alive().try_acquire().expect("free");
    let p = locks.semaphore("pool", 2).lease(TTL).keep_alive().try_acquire().expect("free");
    for _ in 0..20 {
        clock.advance(STEP);
        for (name, until, real) in [
            ("w", w.trusted_until(), w.expires_at()),
            ("r1", r1.trusted_until(), r1.expires_at()),
            ("r2", r2.trusted_until(), r2.expires_at()),
            ("p", p.trusted_until(), p.expires_at()),
        ] {
            assert_eq!(until, Some(locks.now() + TTL), "{name}: not renewed at {:?}", locks.now());
            assert!(until <= real, "{name}: trusted past the real deadline");
        }
    }
    assert_eq!(w.trusted_for(), TTL);
    assert_eq!(locks.metrics().renewals, 80);
}

/// A keep-alive request without a lease gets the default one (30 s), renewed.
#[test]
fn keep_alive_without_a_lease_gets_the_default() {
    let (locks, clock) = manual();
    let g = locks.exclusive("job").keep_alive().try_acquire().expect("free");
    assert_eq!(g.expires_at(), Some(locks.now() + Duration::from_secs(30)));
    clock.advance(Duration::from_secs(10));
    assert_eq!(g.expires_at(), Some(locks.now() + Duration::from_secs(30)));
}

/// Revocations signal too: the future, `is_lost`, and the callback (on the service thread, no
/// lock held: the callback itself takes the key it lost). A panicking callback does not stop the
/// next one.
#[test]
fn revocation_fires_the_signal_and_the_callbacks_run_outside_the_lock() {
    let (locks, _clock) = manual();
    let locks = Arc::new(locks);
    let (tx, rx) = mpsc::channel();
    let panicking = locks.exclusive("a").owner("host-7").on_lost(|_| panic!("a user bug")).try_acquire().expect("free");
    let l = Arc::clone(&locks);
    let g = locks
        .exclusive("b")
        .owner("host-7")
        .on_lost(move |cause| {
            // Takes the key it lost: would deadlock if run under the key's lock.
            let again = l.exclusive("b").try_acquire().map(|g| g.token());
            tx.send((cause, again)).expect("the test listens");
        })
        .try_acquire()
        .expect("free");
    let (wakes, waker) = counting_waker();
    let mut lost = Box::pin(g.lost());
    assert_eq!(lost.as_mut().poll(&mut Context::from_waker(&waker)), Poll::Pending);
    assert!(!g.is_lost());
    assert_eq!(locks.revoke_owner("host-7"), 2);
    assert!(g.is_lost() && panicking.is_lost());
    assert_eq!(wakes.0.load(Ordering::SeqCst), 1);
    assert_eq!(lost.as_mut().poll(&mut Context::from_waker(&waker)), Poll::Ready(LossCause::Revoked));
    let (cause, again) = rx.recv_timeout(Duration::from_secs(10)).expect("the callback ran");
    assert_eq!(cause, LossCause::Revoked);
    assert!(again.expect("the key was free in the callback") > g.token());
    assert!(rx.try_recv().is_err(), "a callback ran twice");
}

/// Asking late works: a guard that never asked attaches its signal on the first `is_lost`, and
/// one whose holding already ended sees the loss at once.
#[test]
fn asking_after_the_fact_sees_the_loss() {
    let (locks, clock) = manual();
    let g = locks.exclusive("job").lease(TTL).try_acquire().expect("free");
    clock.advance(TTL);
    assert_eq!(g.loss_cause(), Some(LossCause::Expired));
    let h = locks.exclusive("job2").owner("x").try_acquire().expect("free");
    locks.revoke("job2", h.token()).expect("held");
    assert_eq!(h.loss_cause(), Some(LossCause::Revoked));
    let plain = locks.exclusive("job3").try_acquire().expect("free");
    assert!(!plain.is_lost());
    assert_eq!(plain.trusted_until(), Some(Duration::MAX));
}

/// A real clock: the renewer thread (started on the first keep-alive holding) renews a short
/// lease repeatedly; we wait on the renewal events, not on the clock.
#[test]
fn the_renewer_thread_renews_on_a_real_clock() {
    let locks: LockManager<String> = LockManager::new();
    let events = locks.subscribe(64);
    let g = locks.exclusive("job").lease(Duration::from_millis(300)).keep_alive().acquire().expect("free");
    let mut renewed = 0;
    while renewed < 3 {
        let e = events.recv_timeout(Duration::from_secs(10)).expect("the renewer renews");
        if e.kind == EventKind::Renewed {
            assert_eq!(e.token, g.token());
            renewed += 1;
        }
    }
    assert!(g.is_held());
    assert!(g.renewal_counter().expect("a counter").load(Ordering::SeqCst) >= 3);
    g.release().expect("held");
}

/// The order, seen from inside: a queued async acquire's waker is woken when the expirer gives the
/// units back; at that moment the first holder's loss must already be visible. (Single-threaded
/// and deterministic: the waker records what it sees when the expirer calls it.)
#[test]
fn the_next_holders_wake_up_already_sees_the_loss() {
    let clock = ManualClock::new();
    let locks: &'static LockManager<String> =
        Box::leak(Box::new(LockManager::<String>::builder().clock(clock.clone()).build().expect("valid")));
    let first = Arc::new(locks.exclusive("job").lease(TTL).keep_alive().try_acquire().expect("free"));
    struct Recorder {
        first: Arc<leasehold::LockGuard<'static, String>>,
        seen: std::sync::Mutex<Vec<bool>>,
    }
    impl Wake for Recorder {
        fn wake(self: Arc<Self>) {
            self.seen.lock().expect("not poisoned").push(self.first.is_lost());
        }
    }
    let recorder = Arc::new(Recorder { first: Arc::clone(&first), seen: std::sync::Mutex::new(Vec::new()) });
    let waker = Waker::from(Arc::clone(&recorder));
    let mut next = Box::pin(locks.exclusive("job").acquire_async());
    assert!(next.as_mut().poll(&mut Context::from_waker(&waker)).is_pending());
    let stall = locks.stall_renewer();
    clock.advance(TTL);
    drop(stall);
    assert_eq!(*recorder.seen.lock().expect("not poisoned"), [true], "woken before the loss was signalled");
    match next.as_mut().poll(&mut Context::from_waker(&waker)) {
        Poll::Ready(Ok(g)) => assert!(g.token() > first.token()),
        other => panic!("the next holder did not get the key: {other:?}"),
    }
}

/// A loss callback that holds the last handle on the manager drops the manager on the service
/// thread itself: the manager's drop must not try to join that thread (a self-join panics).
#[test]
fn a_callback_may_drop_the_last_handle_on_the_manager() {
    /// Reports, when dropped, whether the thread was panicking (it is dropped after the manager).
    struct Report(mpsc::Sender<bool>);
    impl Drop for Report {
        fn drop(&mut self) {
            let _ = self.0.send(!std::thread::panicking());
        }
    }
    let (locks, _clock) = manual();
    let locks = Arc::new(locks);
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let (done_tx, done_rx) = mpsc::channel();
    let go_rx = std::sync::Mutex::new(go_rx);
    // Tuple fields drop in order: the manager first, then the report.
    let pack = (Arc::clone(&locks), Report(done_tx));
    let g = locks
        .exclusive("job")
        .owner("host-7")
        .on_lost(move |_| {
            let _ = go_rx.lock().map(|rx| rx.recv());
            let _ = &pack;
        })
        .try_acquire()
        .expect("free");
    assert_eq!(locks.revoke_owner("host-7"), 1);
    drop(g);
    drop(locks); // the running callback now holds the last handle
    go_tx.send(()).expect("the callback waits");
    assert_eq!(
        done_rx.recv_timeout(Duration::from_secs(10)),
        Ok(true),
        "dropping the manager on its service thread panicked"
    );
}

/// `lock_many(..).keep_alive()`: every key's lease is renewed on its own, so advancing the clock
/// well past the TTL leaves every key held; the same request without keep-alive loses them all.
#[test]
fn lock_many_keeps_every_key_alive() {
    let clock = ManualClock::new();
    let locks = LockManager::<u64>::builder().clock(clock.clone()).build().unwrap();
    let ttl = Duration::from_millis(300);
    let kept = locks
        .lock_many([(&1, Mode::Exclusive), (&2, Mode::Shared), (&3, Mode::Exclusive)])
        .lease(ttl)
        .keep_alive()
        .try_acquire()
        .unwrap();
    let plain = locks.lock_many([(&4, Mode::Exclusive), (&5, Mode::Shared)]).lease(ttl).try_acquire().unwrap();
    for _ in 0..10 {
        clock.advance(Duration::from_millis(100));
    }
    assert!(kept.iter().all(|g| g.is_held() && !g.is_lost()), "a kept-alive key was lost");
    assert!(plain.iter().all(|g| !g.is_held()), "a key without keep-alive outlived its lease");
    // Released together: nothing renews them afterwards, and the keys are free.
    drop(kept);
    for k in [1, 2, 3] {
        assert!(locks.exclusive(&k).try_acquire().is_ok());
    }
}

/// What a guard carries for its service (here the `on_lost` callback of a holding that cannot be
/// lost, and a signal attached late by `is_lost`) is freed with the guard, whether it is dropped
/// or released, by `try_acquire` or `acquire`: the callback's captures are dropped once the
/// guard is gone, and the key is free again.
#[test]
fn a_plain_guards_service_is_freed_with_it() {
    let (locks, _clock) = manual();
    let captured = Arc::new(());
    for (i, release) in [false, true].into_iter().enumerate() {
        for blocking in [false, true] {
            let keep = Arc::clone(&captured);
            let request = locks.exclusive("job").on_lost(move |_| {
                let _ = &keep;
            });
            let g = if blocking { request.acquire() } else { request.try_acquire() }.expect("free");
            assert_eq!(Arc::strong_count(&captured), 2, "the callback is kept while the guard lives");
            assert!(!g.is_lost(), "a holding without lease or owner is never lost ({i})");
            if release {
                g.release().expect("held");
            } else {
                drop(g);
            }
            assert_eq!(Arc::strong_count(&captured), 1, "the callback outlived its guard (release: {release})");
            drop(locks.exclusive("job").try_acquire().expect("the unit came back"));
        }
    }
}
