//! Upgradable locks (issue 12, item 1): the matrix of an upgradable holder, upgrades (try, blocking,
//! timeout, async and its cancellation, expiry while upgrading), downgrades, tokens and leases.
//! No test sleeps to let a thread park: each observes the waiter through `inspect` first.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use leasehold::{LockError, LockManager, LossCause, ManualClock, Mode};

/// A waker that counts its wake-ups.
#[derive(Default)]
struct CountingWaker(AtomicUsize);

impl Wake for CountingWaker {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

fn counting() -> (Arc<CountingWaker>, Waker) {
    let c = Arc::new(CountingWaker::default());
    (Arc::clone(&c), Waker::from(c))
}

fn poll<F: Future + Unpin>(f: &mut F, waker: &Waker) -> Poll<F::Output> {
    Pin::new(f).poll(&mut Context::from_waker(waker))
}

/// Spins (yielding) until `inspect` shows `n` waiters on `key`: the way to know a thread parked.
fn until_waiters(locks: &LockManager<String>, key: &str, n: usize) {
    for _ in 0..10_000_000 {
        if locks.inspect(key).is_some_and(|i| i.waiters.len() == n) {
            return;
        }
        std::thread::yield_now();
    }
    panic!("never saw {n} waiters on {key}");
}

#[test]
fn upgradable_is_beside_readers_and_alone_among_writers_and_upgradables() {
    let locks: LockManager<String> = LockManager::new();
    let u = locks.upgradable("k").try_acquire().unwrap();
    assert_eq!(u.mode(), Mode::Upgradable);
    let r = locks.shared("k").try_acquire().expect("a reader beside an upgradable");
    assert_eq!(locks.upgradable("k").try_acquire().unwrap_err(), LockError::WouldBlock);
    assert_eq!(locks.exclusive("k").try_acquire().unwrap_err(), LockError::WouldBlock);
    let info = locks.inspect("k").unwrap();
    assert_eq!(info.mode, Some(Mode::Upgradable));
    assert_eq!(info.holders.iter().filter(|h| h.mode == Mode::Upgradable).count(), 1);
    drop(u);
    // Its release gave `UP` back: another upgradable gets in beside the reader.
    let u2 = locks.upgradable("k").try_acquire().expect("UP was released");
    drop(r);
    drop(u2);
    drop(locks.exclusive("k").try_acquire().expect("nothing left held"));
    // Beside an exclusive holder: refused.
    let w = locks.exclusive("k").try_acquire().unwrap();
    assert_eq!(locks.upgradable("k").try_acquire().unwrap_err(), LockError::WouldBlock);
    drop(w);
}

#[test]
fn managed_and_overflow_upgradable_holdings_release_up() {
    let locks: LockManager<String> = LockManager::new();
    // Four readers take the inline records, so the upgradable one lives in an overflow record.
    let readers: Vec<_> = (0..4).map(|_| locks.shared("k").try_acquire().unwrap()).collect();
    let u = locks.upgradable("k").owner("o").lease(Duration::from_secs(60)).try_acquire().unwrap();
    u.release().unwrap();
    let u = locks.upgradable("k").lease(Duration::from_secs(60)).try_acquire().expect("UP released");
    drop(readers);
    drop(u);
    let w = locks.exclusive("k").try_acquire().expect("nothing left held");
    drop(w);
}

#[test]
fn a_queued_writer_stops_new_upgradables() {
    let locks = Arc::new(LockManager::<String>::new());
    let r = locks.shared("k").try_acquire().unwrap();
    let writer = {
        let locks = Arc::clone(&locks);
        std::thread::spawn(move || locks.exclusive("k").acquire().map(|g| g.token()))
    };
    until_waiters(&locks, "k", 1);
    assert_eq!(locks.upgradable("k").try_acquire().unwrap_err(), LockError::WouldBlock);
    drop(r);
    writer.join().unwrap().unwrap();
}

#[test]
fn upgradable_on_a_semaphore_key_is_a_permit_mismatch() {
    let locks: LockManager<String> = LockManager::new();
    let p = locks.semaphore("pool", 3).try_acquire().unwrap();
    assert!(matches!(locks.upgradable("pool").try_acquire(), Err(LockError::PermitMismatch { live: 3, .. })));
    drop(p);
    // Idle: the key becomes a read/write key again.
    assert!(locks.upgradable("pool").try_acquire().is_ok());
    let w = locks.semaphore("pool2", 2).try_acquire().unwrap();
    drop(w);
    let x = locks.exclusive("sem").try_acquire().unwrap();
    drop(x);
}

#[test]
fn try_upgrade_would_block_beside_a_reader_and_keeps_the_guard() {
    let locks: LockManager<String> = LockManager::new();
    let u = locks.upgradable("k").try_acquire().unwrap();
    let t0 = u.token();
    let r = locks.shared("k").try_acquire().unwrap();
    let failed = u.try_upgrade().unwrap_err();
    assert_eq!(failed.error, LockError::WouldBlock);
    let u = failed.guard;
    assert!(u.is_held());
    assert_eq!(u.mode(), Mode::Upgradable);
    // A try does not leave readers stopped.
    drop(locks.shared("k").try_acquire().expect("no UPGRADING left behind"));
    drop(r);
    let w = u.try_upgrade().expect("alone now");
    assert_eq!(w.mode(), Mode::Exclusive);
    assert!(w.token() > t0, "an upgrade is a new holding: {} after {t0}", w.token());
    assert_eq!(locks.shared("k").try_acquire().unwrap_err(), LockError::WouldBlock);
    drop(w);
    drop(locks.exclusive("k").try_acquire().expect("the exclusive release gave everything back"));
}

#[test]
fn upgrade_stops_new_readers_and_waits_for_the_present_ones() {
    let locks = LockManager::<String>::new();
    let u = locks.upgradable("k").try_acquire().unwrap();
    let r = locks.shared("k").try_acquire().unwrap();
    std::thread::scope(|s| {
        let upgrader = s.spawn(|| {
            let w = u.upgrade().expect("the reader leaves");
            assert_eq!(w.mode(), Mode::Exclusive);
            assert_eq!(locks.shared("k").try_acquire().unwrap_err(), LockError::WouldBlock);
            w.token()
        });
        until_waiters(&locks, "k", 1);
        assert_eq!(locks.inspect("k").unwrap().waiters[0].mode, Mode::Exclusive);
        // The pending upgrade stops new readers at once.
        assert_eq!(locks.shared("k").try_acquire().unwrap_err(), LockError::WouldBlock);
        let reader_token = r.token();
        drop(r); // the last reader's release wakes the upgrader
        let t = upgrader.join().unwrap();
        assert!(t > reader_token);
    });
}

#[test]
fn upgrade_timeout_gives_the_guard_back_and_lets_readers_in_again() {
    let locks = Arc::new(LockManager::<String>::new());
    let u = locks.upgradable("k").try_acquire().unwrap();
    let r = locks.shared("k").try_acquire().unwrap();
    // A reader that arrives during the upgrade waits (UPGRADING); the timeout must let it in.
    let late = {
        let locks = Arc::clone(&locks);
        std::thread::spawn(move || {
            // Only after the upgrade is pending (the upgrader shows as the first waiter).
            until_waiters(&locks, "k", 1);
            locks.shared("k").acquire().map(|g| g.token())
        })
    };
    let failed = u.upgrade_timeout(Duration::from_millis(50)).unwrap_err();
    assert_eq!(failed.error, LockError::TimedOut);
    let u = failed.guard;
    assert!(u.is_held());
    late.join().unwrap().expect("the reader held back gets in after the timeout");
    assert!(locks.shared("k").try_acquire().is_ok());
    drop(r);
    assert!(u.try_upgrade().is_ok());
}

#[test]
fn a_dropped_upgrade_future_clears_upgrading_and_wakes_the_readers_it_held_back() {
    let locks: LockManager<String> = LockManager::new();
    let u = locks.upgradable("k").try_acquire().unwrap();
    let r = locks.shared("k").try_acquire().unwrap();
    let (_, up_waker) = counting();
    let mut up = u.upgrade_async();
    assert!(poll(&mut up, &up_waker).is_pending());
    assert_eq!(locks.inspect("k").unwrap().waiters.len(), 1, "the upgrade waits");
    // A reader arriving now queues behind the pending upgrade.
    let (reader_count, reader_waker) = counting();
    let mut reader = locks.shared("k").acquire_async();
    assert!(poll(&mut reader, &reader_waker).is_pending());
    assert_eq!(locks.inspect("k").unwrap().waiters.len(), 2);
    assert_eq!(reader_count.0.load(Ordering::SeqCst), 0);
    drop(up); // cancels the upgrade (and releases the upgradable holding it owned)
    assert!(reader_count.0.load(Ordering::SeqCst) >= 1, "the reader held back was not woken");
    let g = match poll(&mut reader, &reader_waker) {
        Poll::Ready(g) => g.expect("the reader gets in"),
        Poll::Pending => panic!("woken but still pending"),
    };
    assert!(locks.inspect("k").unwrap().waiters.is_empty());
    drop((g, r));
    drop(locks.upgradable("k").try_acquire().expect("UP went with the dropped guard"));
}

#[test]
fn the_last_readers_release_wakes_an_async_upgrade() {
    let locks: LockManager<String> = LockManager::new();
    let u = locks.upgradable("k").try_acquire().unwrap();
    let t0 = u.token();
    let r = locks.shared("k").try_acquire().unwrap();
    let (count, waker) = counting();
    let mut up = u.upgrade_async();
    assert!(poll(&mut up, &waker).is_pending());
    drop(r);
    assert_eq!(count.0.load(Ordering::SeqCst), 1, "one wake-up for the upgrader");
    match poll(&mut up, &waker) {
        Poll::Ready(Ok(w)) => assert!(w.token() > t0),
        Poll::Ready(Err(e)) => panic!("upgrade failed: {}", e.error),
        Poll::Pending => panic!("woken but still pending"),
    };
}

#[test]
fn expiry_while_upgrading_fails_the_upgrade_and_clears_upgrading() {
    let clock = ManualClock::new();
    let locks = LockManager::<String>::builder().clock(clock.clone()).build().unwrap();
    let u = locks.upgradable("k").lease(Duration::from_secs(1)).try_acquire().unwrap();
    let r = locks.shared("k").try_acquire().unwrap();
    std::thread::scope(|s| {
        let upgrader = s.spawn(|| {
            let failed = u.upgrade().expect_err("the lease runs out first");
            assert_eq!(failed.error, LockError::Expired);
            assert!(!failed.guard.is_held());
        });
        until_waiters(&locks, "k", 1);
        clock.advance(Duration::from_secs(2));
        upgrader.join().unwrap();
    });
    // UPGRADING and UP are gone with the holding: readers and an upgradable get in.
    let r2 = locks.shared("k").try_acquire().expect("no UPGRADING left");
    let u2 = locks.upgradable("k").try_acquire().expect("no UP left");
    drop((r, r2, u2));
}

#[test]
fn an_upgrade_keeps_the_lease_and_the_loss_signal() {
    let clock = ManualClock::new();
    let locks = LockManager::<String>::builder().clock(clock.clone()).build().unwrap();
    let u = locks.upgradable("k").owner("o").lease(Duration::from_secs(10)).try_acquire().unwrap();
    assert!(!u.is_lost());
    let deadline = u.expires_at();
    let w = u.upgrade().unwrap();
    assert_eq!(w.expires_at(), deadline, "the lease carries over");
    w.renew(Duration::from_secs(20)).expect("still renewable");
    assert_eq!(w.owner().unwrap().as_str(), "o");
    locks.revoke_owner("o");
    assert_eq!(w.loss_cause(), Some(LossCause::Revoked), "the signal followed the new token");
}

#[test]
fn keep_alive_follows_the_upgrade() {
    let clock = ManualClock::new();
    let locks = LockManager::<String>::builder().clock(clock.clone()).build().unwrap();
    let u = locks.upgradable("k").lease(Duration::from_secs(3)).keep_alive().try_acquire().unwrap();
    let w = u.upgrade().unwrap();
    for _ in 0..6 {
        clock.advance(Duration::from_secs(1));
    }
    assert!(w.is_held(), "renewed on the exclusive holding");
    assert!(!w.is_lost());
}

#[test]
fn downgrade_keeps_the_token_lets_readers_in_and_keeps_the_writer_out() {
    let locks = Arc::new(LockManager::<String>::new());
    let w = locks.exclusive("k").try_acquire().unwrap();
    let token = w.token();
    let reader = {
        let locks = Arc::clone(&locks);
        std::thread::spawn(move || locks.shared("k").acquire().map(|g| g.token()))
    };
    until_waiters(&locks, "k", 1);
    let writer = {
        let locks = Arc::clone(&locks);
        std::thread::spawn(move || locks.exclusive("k").acquire().map(|g| g.token()))
    };
    until_waiters(&locks, "k", 2);
    let r = w.downgrade().unwrap();
    assert_eq!((r.mode(), r.token()), (Mode::Shared, token), "a downgrade keeps its token");
    // The reader queued ahead of the writer gets in; the writer waits for the downgraded holder.
    reader.join().unwrap().unwrap();
    assert_eq!(locks.inspect("k").unwrap().waiters.len(), 1, "the writer still waits");
    drop(r);
    assert!(writer.join().unwrap().unwrap() > token);
}

#[test]
fn downgrade_to_upgradable_and_back_up() {
    let locks: LockManager<String> = LockManager::new();
    let w = locks.exclusive("k").lease(Duration::from_secs(30)).try_acquire().unwrap();
    let t = w.token();
    let u = w.downgrade_to_upgradable().unwrap();
    assert_eq!((u.mode(), u.token()), (Mode::Upgradable, t));
    let r = locks.shared("k").try_acquire().expect("readers beside it");
    assert_eq!(locks.upgradable("k").try_acquire().unwrap_err(), LockError::WouldBlock);
    drop(r);
    let w = u.upgrade().unwrap();
    assert!(w.token() > t);
    drop(w);
    assert!(locks.upgradable("k").try_acquire().is_ok(), "UP released by the exclusive release");
}

#[test]
fn only_an_exclusive_guard_of_a_read_write_key_downgrades() {
    let locks: LockManager<String> = LockManager::new();
    let r = locks.shared("k").try_acquire().unwrap();
    let failed = r.downgrade().unwrap_err();
    assert_eq!(failed.error, LockError::InvalidModeChange { from: Mode::Shared, to: Mode::Shared });
    assert!(failed.guard.is_held(), "the guard comes back");
    let s = locks.exclusive("sem").try_acquire().unwrap();
    drop(s);
    let p = locks.semaphore("sem", 2).try_acquire().unwrap();
    drop(p);
    let x = locks.semaphore("sem", 2).try_acquire().unwrap();
    let failed = x.downgrade_to_upgradable().unwrap_err();
    assert!(matches!(failed.error, LockError::InvalidModeChange { .. }));
    let x = locks.exclusive("sem2").try_acquire().unwrap();
    drop(x);
}

#[test]
fn an_expired_exclusive_guard_does_not_downgrade() {
    let clock = ManualClock::new();
    let locks = LockManager::<String>::builder().clock(clock.clone()).build().unwrap();
    let w = locks.exclusive("k").lease(Duration::from_secs(1)).try_acquire().unwrap();
    clock.advance(Duration::from_secs(2));
    let failed = w.downgrade().unwrap_err();
    assert_eq!(failed.error, LockError::Expired);
    drop(failed);
    drop(locks.exclusive("k").try_acquire().expect("free"));
}

#[test]
fn lock_many_takes_upgradable_keys() {
    let locks: LockManager<String> = LockManager::new();
    let all = locks.lock_many([("a", Mode::Upgradable), ("b", Mode::Shared)]).try_acquire().unwrap();
    assert!(locks.shared("a").try_acquire().is_ok());
    assert_eq!(locks.upgradable("a").try_acquire().unwrap_err(), LockError::WouldBlock);
    drop(all);
    assert!(locks.upgradable("a").try_acquire().is_ok(), "UP released with the many-guard");
}

#[test]
fn an_upgrade_that_closes_a_cycle_of_sessions_fails_with_deadlock_naming_both() {
    let locks: LockManager<String> = LockManager::new();
    let (a, b) = (locks.session("A"), locks.session("B"));
    let a_up = a.upgradable("k1").try_acquire().unwrap();
    let a_x = a.exclusive("k2").try_acquire().unwrap();
    let b_s = b.shared("k1").try_acquire().unwrap();
    std::thread::scope(|s| {
        let blocked = s.spawn(|| {
            let g = b.exclusive("k2").acquire().expect("A gives k2 up");
            drop(g);
            drop(b_s);
        });
        until_waiters(&locks, "k2", 1);
        // A upgrades k1: it waits for B (a reader of k1), which waits for A (k2): a cycle.
        let failed = a_up.upgrade().expect_err("the upgrade closes the cycle");
        let LockError::Deadlock { cycle } = &failed.error else { panic!("not a deadlock: {}", failed.error) };
        let sessions: Vec<_> = cycle.edges.iter().map(|e| e.session).collect();
        assert!(sessions.contains(&a.id()) && sessions.contains(&b.id()), "{cycle}");
        assert_eq!(cycle.victim, a.id(), "the requester is the victim by default");
        assert!(cycle.edges.iter().any(|e| e.session == a.id() && e.mode == Mode::Exclusive && e.key.contains("k1")));
        // The guard comes back, still upgradable and held; the readers it held back are free.
        let u = failed.guard;
        assert_eq!(u.mode(), Mode::Upgradable);
        assert!(u.is_held());
        assert!(locks.shared("k1").try_acquire().is_ok(), "UPGRADING was cleared");
        drop(a_x); // A aborts: B proceeds
        blocked.join().unwrap();
        let w = u.upgrade().expect("alone on k1 now");
        assert_eq!(w.mode(), Mode::Exclusive);
    });
    assert!(!locks.deadlocks().is_empty());
}

#[test]
fn a_sessions_downgrade_and_upgrade_update_its_list() {
    let locks: LockManager<String> = LockManager::new();
    let tx = locks.session("t");
    let w = tx.exclusive("k").try_acquire().unwrap();
    let u = w.downgrade_to_upgradable().unwrap();
    let held = |m: Mode| locks.wait_graph().sessions[0].held.iter().any(|(_, hm)| *hm == m);
    assert!(held(Mode::Upgradable));
    let w = u.upgrade().unwrap();
    assert!(held(Mode::Exclusive) && !held(Mode::Upgradable));
    let r = w.downgrade().unwrap();
    assert!(held(Mode::Shared));
    let failed = r.downgrade().unwrap_err();
    assert!(matches!(failed.error, LockError::InvalidModeChange { .. }));
}

#[test]
fn a_sessions_async_upgrade_waits_for_the_reader_and_a_dropped_one_lets_readers_in() {
    let locks: LockManager<String> = LockManager::new();
    let (a, b) = (locks.session("A"), locks.session("B"));
    let u = a.upgradable("k").try_acquire().unwrap();
    let t0 = u.token();
    let r = b.shared("k").try_acquire().unwrap();
    let (count, waker) = counting();
    let mut up = u.upgrade_async();
    assert!(poll(&mut up, &waker).is_pending());
    assert!(
        locks.wait_graph().sessions.iter().any(|s| s.id == a.id() && s.waiting.is_some()),
        "the wait is in the graph"
    );
    drop(r);
    assert_eq!(count.0.load(Ordering::SeqCst), 1, "the reader's release woke the upgrade");
    let w = match poll(&mut up, &waker) {
        Poll::Ready(Ok(w)) => w,
        Poll::Ready(Err(f)) => panic!("upgrade failed: {}", f.error),
        Poll::Pending => panic!("woken but still pending"),
    };
    assert!(w.token() > t0);
    assert!(locks.wait_graph().sessions.iter().all(|s| s.waiting.is_none()));
    let u = w.downgrade_to_upgradable().unwrap();
    let r = b.shared("k").try_acquire().unwrap();
    let mut up = u.upgrade_async();
    assert!(poll(&mut up, &waker).is_pending());
    assert_eq!(b.shared("k").try_acquire().unwrap_err(), LockError::WouldBlock, "the upgrade stops readers");
    drop(up); // gives the upgrade up and releases the holding
    assert!(locks.wait_graph().sessions.iter().all(|s| s.waiting.is_none() && s.held.len() <= 1));
    assert!(locks.upgradable("k").try_acquire().is_ok());
    drop(r);
}

#[test]
fn subscribers_hear_an_upgrade_as_a_release_and_an_acquisition() {
    use leasehold::EventKind;
    let locks: LockManager<String> = LockManager::new();
    let events = locks.subscribe(16);
    let u = locks.upgradable("k").owner("o").try_acquire().unwrap();
    let t0 = u.token();
    let w = u.upgrade().unwrap();
    let t1 = w.token();
    let seen: Vec<_> = events.drain().map(|e| (e.kind, e.mode, e.token)).collect();
    assert_eq!(
        seen,
        vec![
            (EventKind::Acquired, Mode::Upgradable, t0),
            (EventKind::Released, Mode::Upgradable, t0),
            (EventKind::Acquired, Mode::Exclusive, t1)
        ]
    );
}

#[test]
fn an_upgradable_holding_in_an_overflow_record_upgrades_and_downgrades() {
    let locks: LockManager<String> = LockManager::new();
    let readers: Vec<_> = (0..4).map(|_| locks.shared("k").try_acquire().unwrap()).collect();
    let u = locks.upgradable("k").lease(Duration::from_secs(60)).owner("o").try_acquire().unwrap();
    let t0 = u.token();
    drop(readers);
    let w = u.try_upgrade().expect("alone now");
    assert!(w.token() > t0);
    assert_eq!(w.owner().unwrap().as_str(), "o");
    let info = locks.inspect("k").unwrap();
    assert_eq!((info.mode, info.holders.len(), info.holders[0].token), (Some(Mode::Exclusive), 1, w.token()));
    let u = w.downgrade_to_upgradable().unwrap();
    assert!(locks.shared("k").try_acquire().is_ok());
    u.release().unwrap();
    drop(locks.exclusive("k").try_acquire().expect("everything given back"));
}
