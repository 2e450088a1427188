//! Lease edges, driven by a manual clock: no test sleeps to make a lease expire.

use std::mem;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use leasehold::{Fenced, LockError, LockManager, ManualClock};

const MS: Duration = Duration::from_millis(1);

/// A manager whose leases expire when the test advances the clock (expiry runs inside `advance`).
fn driven(clock: &ManualClock) -> LockManager<String> {
    LockManager::builder().clock(clock.clone()).build().unwrap()
}

/// A manager whose wheel nobody drives: only contenders and renewals notice deadlines.
fn undriven(clock: &ManualClock) -> LockManager<String> {
    LockManager::builder().clock(clock.clone()).reaper(false).build().unwrap()
}

#[test]
fn renew_just_before_the_deadline_extends_it() {
    let clock = ManualClock::new();
    let locks = undriven(&clock);
    let g = locks.exclusive("k").lease(100 * MS).try_acquire().unwrap();
    assert_eq!(g.expires_at(), Some(100 * MS));
    clock.advance(99 * MS);
    g.renew(100 * MS).unwrap();
    assert_eq!(g.expires_at(), Some(199 * MS));
    clock.advance(99 * MS);
    assert!(g.is_held());
    assert_eq!(locks.exclusive("k").try_acquire().unwrap_err(), LockError::WouldBlock);
}

#[test]
fn renew_just_after_the_deadline_fails_even_if_nothing_expired_it() {
    let clock = ManualClock::new();
    let locks = undriven(&clock);
    let g = locks.exclusive("k").lease(100 * MS).try_acquire().unwrap();
    clock.advance(100 * MS);
    assert!(!g.is_held(), "the deadline has passed");
    assert_eq!(g.renew(100 * MS), Err(LockError::Expired));
    // The failed renewal ended the holding: release agrees, and the key is free.
    assert_eq!(g.release(), Err(LockError::Expired));
    assert!(locks.exclusive("k").try_acquire().is_ok());
}

#[test]
fn after_expiry_release_and_renew_fail_and_drop_is_a_no_op() {
    let clock = ManualClock::new();
    let locks = driven(&clock);
    let old = locks.exclusive("k").lease(10 * MS).try_acquire().unwrap();
    clock.advance(10 * MS);
    assert!(!old.is_held());
    assert_eq!(old.expires_at(), None);
    let new = locks.exclusive("k").try_acquire().unwrap();
    assert!(new.token() > old.token());
    assert_eq!(old.renew(10 * MS), Err(LockError::Expired));
    drop(old);
    // Dropping the expired guard did not free the new holder's lock.
    assert!(new.is_held());
    assert_eq!(locks.shared("k").try_acquire().unwrap_err(), LockError::WouldBlock);
}

#[test]
fn a_contender_takes_over_an_expired_holder_without_the_wheel() {
    let clock = ManualClock::new();
    let locks = undriven(&clock);
    let old = locks.exclusive("k").lease(50 * MS).try_acquire().unwrap();
    clock.advance(50 * MS);
    // Nobody ran the wheel, yet neither a try nor a blocking acquire waits on the dead lease.
    let new = locks.exclusive("k").try_acquire().expect("the holder's deadline has passed");
    assert!(new.token() > old.token());
    drop(new);
    let old = locks.exclusive("k").lease(50 * MS).try_acquire().unwrap();
    clock.advance(50 * MS);
    let started = Instant::now();
    let new = locks.exclusive("k").acquire().unwrap();
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(old.release(), Err(LockError::Expired));
    drop(new);
}

#[test]
fn a_parked_waiter_is_woken_by_expiry() {
    let clock = ManualClock::new();
    let locks = driven(&clock);
    let holder = locks.exclusive("k").lease(30 * MS).try_acquire().unwrap();
    let got = AtomicBool::new(false);
    thread::scope(|s| {
        s.spawn(|| {
            let g = locks.exclusive("k").acquire().unwrap();
            got.store(true, Ordering::SeqCst);
            drop(g);
        });
        // The waiter is queued (observed, not slept for) and has not got the held lock.
        while locks.inspect("k").map_or(0, |i| i.waiters.len()) == 0 {
            thread::yield_now();
        }
        assert!(!got.load(Ordering::SeqCst));
        clock.advance(30 * MS);
    });
    assert!(got.load(Ordering::SeqCst));
    assert!(!holder.is_held());
}

#[test]
fn a_waiter_wakes_at_the_holders_deadline_with_no_reaper() {
    // Real time: the waiter's own park timeout is the holder's deadline.
    let locks: LockManager<String> = LockManager::builder().reaper(false).build().unwrap();
    let holder = locks.exclusive("k").lease(20 * MS).try_acquire().unwrap();
    let started = Instant::now();
    let g = locks.exclusive("k").acquire_timeout(Duration::from_secs(10)).unwrap();
    let waited = started.elapsed();
    assert!(waited >= 15 * MS && waited < Duration::from_secs(5), "waited {waited:?}");
    assert!(g.token() > holder.token());
    assert!(!holder.is_held());
}

#[test]
fn one_expired_reader_among_several() {
    let clock = ManualClock::new();
    let locks = driven(&clock);
    let r1 = locks.shared("k").lease(10 * MS).try_acquire().unwrap();
    let r2 = locks.shared("k").lease(20 * MS).try_acquire().unwrap();
    let r3 = locks.shared("k").try_acquire().unwrap();
    clock.advance(10 * MS);
    assert!(!r1.is_held());
    assert!(r2.is_held() && r3.is_held());
    assert_eq!(locks.exclusive("k").try_acquire().unwrap_err(), LockError::WouldBlock);
    clock.advance(10 * MS);
    assert!(!r2.is_held() && r3.is_held());
    assert_eq!(locks.exclusive("k").try_acquire().unwrap_err(), LockError::WouldBlock);
    drop(r3);
    let w = locks.exclusive("k").try_acquire().unwrap();
    assert_eq!(r1.release(), Err(LockError::Expired));
    assert_eq!(r2.release(), Err(LockError::Expired));
    assert!(w.is_held());
}

#[test]
fn one_expired_permit_among_n() {
    let clock = ManualClock::new();
    let locks = driven(&clock);
    let p1 = locks.semaphore("pool", 3).lease(10 * MS).try_acquire().unwrap();
    let p2 = locks.semaphore("pool", 3).try_acquire().unwrap();
    let p3 = locks.semaphore("pool", 3).lease(60 * MS).try_acquire().unwrap();
    assert_eq!(locks.semaphore("pool", 3).try_acquire().unwrap_err(), LockError::WouldBlock);
    clock.advance(10 * MS);
    // Exactly one permit came back: the expired one.
    let p4 = locks.semaphore("pool", 3).try_acquire().unwrap();
    assert_eq!(locks.semaphore("pool", 3).try_acquire().unwrap_err(), LockError::WouldBlock);
    assert!(!p1.is_held() && p2.is_held() && p3.is_held() && p4.is_held());
    drop(p1);
    assert_eq!(locks.semaphore("pool", 3).try_acquire().unwrap_err(), LockError::WouldBlock);
}

#[test]
fn forgotten_guards_lose_the_lock_at_their_deadline() {
    let clock = ManualClock::new();
    let locks = driven(&clock);
    let leaked = locks.exclusive("job").lease(25 * MS).owner("crashed-worker").try_acquire().unwrap();
    let leaked_token = leaked.token();
    mem::forget(leaked);
    let reader = locks.shared("report").lease(25 * MS).try_acquire().unwrap();
    mem::forget(reader);
    clock.advance(24 * MS);
    assert_eq!(locks.exclusive("job").try_acquire().unwrap_err(), LockError::WouldBlock);
    clock.advance(MS);
    let next = locks.exclusive("job").try_acquire().expect("the leaked lease ran out");
    assert!(next.token() > leaked_token);
    assert!(locks.exclusive("report").try_acquire().is_ok());
}

#[test]
fn a_stale_holders_late_write_is_fenced_off() {
    let clock = ManualClock::new();
    let locks = driven(&clock);
    let ledger = Fenced::new(Vec::new());
    let slow = locks.exclusive("ledger").lease(10 * MS).try_acquire().unwrap();
    ledger.write(slow.token(), |l| l.push("slow: begin")).unwrap();
    clock.advance(15 * MS); // the slow holder hangs past its lease
    let fast = locks.exclusive("ledger").lease(10 * MS).try_acquire().unwrap();
    ledger.write(fast.token(), |l| l.push("fast")).unwrap();
    let late = ledger.write(slow.token(), |l| l.push("slow: late"));
    assert!(matches!(late, Err(LockError::StaleToken { .. })));
    assert_eq!(ledger.read(|l| l.clone()), vec!["slow: begin", "fast"]);
    assert_eq!(ledger.rejected(), 1);
}

#[test]
fn release_racing_expiry_frees_the_unit_exactly_once() {
    let clock = ManualClock::new();
    let locks = undriven(&clock);
    let mut release_won = 0;
    let mut expiry_won = 0;
    for round in 0..2_000_u64 {
        let g = locks.semaphore("sem", 2).lease(MS).try_acquire().unwrap();
        let other = locks.semaphore("sem", 2).try_acquire().unwrap();
        clock.advance(MS);
        let (released, expired) = thread::scope(|s| {
            let releaser = s.spawn(move || g.release());
            let expirer = s.spawn(|| locks.expire_due());
            (releaser.join().unwrap(), expirer.join().unwrap())
        });
        // Past its deadline the release expires the holding itself (it must not say `Ok` once
        // `is_held` says false); it races the expirer for that, and exactly one of them wins.
        match (released, expired) {
            (Err(LockError::Expired), 0) => release_won += 1,
            (Err(LockError::Expired), 1) => expiry_won += 1,
            other => panic!("round {round}: release and expiry both or neither won: {other:?}"),
        }
        assert_eq!(locks.metrics().expiries, round + 1, "round {round}: one expiry per round");
        // Exactly one permit is free: one more fits, a second does not.
        let p = locks.semaphore("sem", 2).try_acquire().expect("the unit came back");
        assert_eq!(locks.semaphore("sem", 2).try_acquire().unwrap_err(), LockError::WouldBlock);
        drop((p, other));
    }
    println!("release won {release_won} times, expiry {expiry_won} times");
    assert!(release_won > 0 && expiry_won > 0, "one side never won: release {release_won}, expiry {expiry_won}");
}

/// The common lease's release (no owner, no service: `finish_slow`'s lean path, deadline far
/// off) races a revoker on the lease word: exactly one wins, the unit comes back once, and the
/// losing guard's zombie count is given back (the slot is reclaimed at the end).
#[test]
fn release_racing_revocation_frees_the_unit_exactly_once() {
    let clock = ManualClock::new();
    let locks = undriven(&clock);
    let (mut release_won, mut revoke_won) = (0, 0);
    for round in 0..2_000 {
        let g = locks.semaphore("sem", 2).lease(Duration::from_secs(60)).try_acquire().unwrap();
        let other = locks.semaphore("sem", 2).try_acquire().unwrap();
        let token = g.token();
        // Each side is started first in half the rounds.
        let (released, revoked) = thread::scope(|s| {
            if round % 2 == 0 {
                let releaser = s.spawn(move || g.release());
                let revoker = s.spawn(|| locks.revoke("sem", token));
                (releaser.join().unwrap(), revoker.join().unwrap())
            } else {
                let revoker = s.spawn(|| locks.revoke("sem", token));
                let releaser = s.spawn(move || g.release());
                (releaser.join().unwrap(), revoker.join().unwrap())
            }
        });
        match (released, revoked) {
            (Ok(()), Err(LockError::NotHeld)) => release_won += 1,
            (Err(LockError::Expired), Ok(())) => revoke_won += 1,
            other => panic!("round {round}: release and revocation both or neither won: {other:?}"),
        }
        let p = locks.semaphore("sem", 2).try_acquire().expect("the unit came back");
        assert_eq!(locks.semaphore("sem", 2).try_acquire().unwrap_err(), LockError::WouldBlock);
        drop((p, other));
    }
    println!("release won {release_won} times, revocation {revoke_won} times");
    assert!(release_won > 0 && revoke_won > 0, "one side never won: release {release_won}, revocation {revoke_won}");
    locks.reclaim_idle();
    assert_eq!(locks.slot_count(), 0, "a guard that lost to the revoker left its zombie count behind");
}

/// The exclusive lease's release is one compare-exchange on the state word that leaves its lease
/// word as it was; a revoker marks the word first and ends the holding only if the marked word
/// still shows it. Raced on real threads, with a third thread taking the key as soon as it is
/// free (over the old lease word): exactly one of release and revocation wins, the new holding is
/// never revoked in the old one's place, and the unit comes back once (the slot is reclaimed).
#[test]
fn exclusive_release_racing_revocation_and_a_new_holder() {
    let clock = ManualClock::new();
    let locks = undriven(&clock);
    let (mut release_won, mut revoke_won) = (0, 0);
    for round in 0..2_000 {
        let g = locks.exclusive("x").lease(Duration::from_secs(60)).try_acquire().unwrap();
        let token = g.token();
        let stop = AtomicBool::new(false);
        let (released, revoked, taken) = thread::scope(|s| {
            let taker = s.spawn(|| loop {
                match locks.exclusive("x").lease(Duration::from_secs(60)).try_acquire() {
                    Ok(next) => {
                        assert!(next.token() > token);
                        assert!(next.is_held());
                        break Some(next.release());
                    }
                    Err(LockError::WouldBlock) if !stop.load(Ordering::Relaxed) => thread::yield_now(),
                    Err(e) => {
                        assert_eq!(e, LockError::WouldBlock);
                        break None;
                    }
                }
            });
            let (released, revoked) = if round % 2 == 0 {
                let releaser = s.spawn(move || g.release());
                let revoker = s.spawn(|| locks.revoke("x", token));
                (releaser.join().unwrap(), revoker.join().unwrap())
            } else {
                let revoker = s.spawn(|| locks.revoke("x", token));
                let releaser = s.spawn(move || g.release());
                (releaser.join().unwrap(), revoker.join().unwrap())
            };
            stop.store(true, Ordering::Relaxed);
            (released, revoked, taker.join().unwrap())
        });
        match (released, revoked) {
            (Ok(()), Err(LockError::NotHeld)) => release_won += 1,
            (Err(LockError::Expired), Ok(())) => revoke_won += 1,
            other => panic!("round {round}: release and revocation both or neither won: {other:?}"),
        }
        assert_eq!(taken, Some(Ok(())), "round {round}: the next holder was not left alone");
        let again = locks.exclusive("x").try_acquire().expect("the unit came back");
        assert_eq!(locks.shared("x").try_acquire().unwrap_err(), LockError::WouldBlock);
        drop(again);
    }
    println!("release won {release_won} times, revocation {revoke_won} times");
    assert!(release_won > 0 && revoke_won > 0, "one side never won: release {release_won}, revocation {revoke_won}");
    locks.reclaim_idle();
    assert_eq!(locks.slot_count(), 0, "a unit or a zombie count was left behind");
}

/// A leased exclusive holding downgraded to shared is still expired at its deadline, with other
/// readers beside it (their claims move the state word on, which an exclusive holding's lease
/// word is checked against: the downgrade makes it an ordinary one first).
#[test]
fn a_downgraded_lease_still_expires_beside_other_readers() {
    let clock = ManualClock::new();
    let locks = driven(&clock);
    let g = locks.exclusive("d").lease(10 * MS).try_acquire().unwrap();
    let r = g.downgrade().unwrap();
    let other = locks.shared("d").try_acquire().unwrap();
    assert!(r.is_held());
    clock.advance(10 * MS);
    assert!(!r.is_held());
    assert_eq!(locks.metrics().expiries, 1, "the downgraded lease was not expired");
    assert_eq!(r.release(), Err(LockError::Expired));
    drop(other);
    assert!(locks.exclusive("d").try_acquire().is_ok(), "the expired reader's unit did not come back");
}

#[test]
fn renewal_and_expiry_agree() {
    // Whoever wins the lease word decides: a renewal that returned Ok is never expired by a
    // racing expiry of the old deadline.
    let clock = ManualClock::new();
    let locks = undriven(&clock);
    for _ in 0..2_000 {
        let g = locks.exclusive("k").lease(2 * MS).try_acquire().unwrap();
        clock.advance(MS);
        let renewed = thread::scope(|s| {
            let r = s.spawn(|| g.renew(10 * MS));
            s.spawn(|| {
                clock.advance(MS);
                locks.expire_due()
            });
            r.join().unwrap()
        });
        match renewed {
            Ok(()) => {
                assert!(g.is_held(), "renewed, yet not held");
                assert_eq!(locks.exclusive("k").try_acquire().unwrap_err(), LockError::WouldBlock);
                g.release().unwrap();
            }
            Err(e) => {
                assert_eq!(e, LockError::Expired);
                assert_eq!(g.release(), Err(LockError::Expired));
            }
        }
    }
}

#[tokio::test]
async fn an_async_waiter_is_woken_by_expiry() {
    let clock = ManualClock::new();
    let locks = driven(&clock);
    let holder = locks.exclusive("k").lease(10 * MS).try_acquire().unwrap();
    let mut fut = std::pin::pin!(locks.exclusive("k").acquire_async());
    let woken = std::sync::Arc::new(CountingWaker::default());
    let waker = std::task::Waker::from(woken.clone());
    assert!(futures_poll_once(fut.as_mut(), &waker).is_none());
    clock.advance(10 * MS);
    assert_eq!(woken.0.load(Ordering::SeqCst), 1, "the expiry did not wake the waiting task");
    let g = futures_poll_once(fut.as_mut(), &waker).expect("woken, and ready").unwrap();
    assert!(g.token() > holder.token());
}

/// A waker that counts its wake-ups.
#[derive(Default)]
struct CountingWaker(std::sync::atomic::AtomicUsize);

impl std::task::Wake for CountingWaker {
    fn wake(self: std::sync::Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// Polls a future once with `waker`.
fn futures_poll_once<F: std::future::Future>(
    fut: std::pin::Pin<&mut F>,
    waker: &std::task::Waker,
) -> Option<F::Output> {
    let mut cx = std::task::Context::from_waker(waker);
    match fut.poll(&mut cx) {
        std::task::Poll::Ready(v) => Some(v),
        std::task::Poll::Pending => None,
    }
}
