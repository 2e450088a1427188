//! Leases: the holder's release or renewal racing the expirer on the same lease word. The
//! manual clock is moved on the main thread before the race (no reaper runs under loom); the
//! expirer is `expire_due` on another thread.

#![cfg(leasehold_loom)]

mod common;

use std::time::Duration;

use common::{manager, Locks, Seen, KEY};
use leasehold::LockError;
use leasehold::ManualClock;
use loom::sync::Arc;
use loom::thread;

const TTL: Duration = Duration::from_millis(10);

/// The expirer of the races below: moves the clock past a `TTL` lease's deadline and runs
/// `expire_due`, returning how many holdings it ended.
fn spawn_expirer(locks: &Arc<Locks>, clock: &ManualClock) -> thread::JoinHandle<usize> {
    let (locks, clock) = (locks.clone(), clock.clone());
    thread::spawn(move || {
        clock.advance(TTL);
        locks.expire_due()
    })
}

/// After a race that ended `KEY`'s holding: its unit came back exactly once, so the key can be
/// taken exclusively again, and afterwards the slot is idle (no unit returned twice, no record bit
/// or zombie count left behind) and is reclaimed.
fn assert_unit_back_once(locks: &Locks) {
    let again = locks.exclusive(&KEY).try_acquire().expect("the unit came back");
    drop(again);
    assert_eq!(locks.reclaim_idle(), 1, "the slot is not idle: {}", locks.debug_state(&KEY));
    assert_eq!(locks.slot_count(), 0);
}

static RELEASE_WON: Seen = Seen::new();
static EXPIRY_WON: Seen = Seen::new();

/// A holding past its deadline: the guard releases while `expire_due` runs. Exactly one of them
/// ends it, as an expiry either way (past the deadline the release expires the holding itself and
/// returns `Expired`: it never says `Ok` once `is_held` says false), so the release wins iff
/// `expire_due() == 0`; one expiry is counted, and its unit comes back exactly once: the key
/// can be taken exclusively again, and afterwards the slot is idle (no unit returned twice, no
/// record bit or zombie count left behind), so it is reclaimed.
#[test]
fn release_races_expiry_one_winner() {
    loom::model(|| {
        let (locks, clock) = manager();
        let g = locks.exclusive(&KEY).lease(TTL).try_acquire().expect("a free key");
        clock.advance(TTL);
        let expirer = {
            let locks = locks.clone();
            thread::spawn(move || locks.expire_due())
        };
        let released = g.release();
        let expired = expirer.join().expect("expire_due finished");
        match (released, expired) {
            (Err(LockError::Expired), 0) => RELEASE_WON.mark(),
            (Err(LockError::Expired), 1) => EXPIRY_WON.mark(),
            (released, expired) => panic!("release {released:?} and expire_due {expired}: not exactly one winner"),
        }
        assert_eq!(locks.metrics().expiries, 1);
        assert_unit_back_once(&locks);
    });
    assert!(RELEASE_WON.get(), "no execution had the release win");
    assert!(EXPIRY_WON.get(), "no execution had the expiry win");
}

static RELEASE_BEAT_REVOKE: Seen = Seen::new();
static REVOKE_BEAT_RELEASE: Seen = Seen::new();

/// The common lease's release (no owner, no service, deadline ahead: `finish_slow`'s own path,
/// which loads the lease word once, for the deadline test and as the compare-exchange's expected
/// value) races `revoke` of the same holding. Exactly one wins; the loser's side says so
/// (`NotHeld`, or `Expired` with the guard's zombie count given back), and the unit comes back
/// exactly once: the key is free again and the slot idle, so it is reclaimed.
#[test]
fn release_races_revocation_one_winner() {
    loom::model(|| {
        let (locks, _clock) = manager();
        let g = locks.exclusive(&KEY).lease(TTL).try_acquire().expect("a free key");
        let token = g.token();
        let revoker = {
            let locks = locks.clone();
            thread::spawn(move || locks.revoke(&KEY, token))
        };
        let released = g.release();
        let revoked = revoker.join().expect("revoke finished");
        match (released, revoked) {
            (Ok(()), Err(LockError::NotHeld)) => RELEASE_BEAT_REVOKE.mark(),
            (Err(LockError::Expired), Ok(())) => REVOKE_BEAT_RELEASE.mark(),
            (released, revoked) => panic!("release {released:?} and revoke {revoked:?}: not exactly one winner"),
        }
        assert_unit_back_once(&locks);
    });
    assert!(RELEASE_BEAT_REVOKE.get(), "no execution had the release win");
    assert!(REVOKE_BEAT_RELEASE.get(), "no execution had the revocation win");
}

static FAST_RELEASE_WON: Seen = Seen::new();
static EXPIRY_BEAT_FAST_RELEASE: Seen = Seen::new();
static REUSED_AFTER_RELEASE: Seen = Seen::new();

/// An exclusive lease's release is one compare-exchange on the state word, which leaves its
/// lease word `HELD`; an expirer marks the state word (`WAITERS`) before it reads a lease word,
/// and ends an exclusive holding only if the marked word still shows it. Here the release races
/// an expirer that moves the clock past the deadline, and a third thread that claims the key
/// (record 0 again, over the old lease word) as soon as it is free. Exactly one of release and
/// expiry ends the first holding; the new holding is never ended by the expirer (its lease is
/// long: ending it would be the old word taken for it) and never shares the key; the unit comes
/// back exactly once (the key is free again and the slot idle, so it is reclaimed).
#[test]
fn exclusive_lease_release_races_expiry_and_a_new_claim() {
    loom::model(|| {
        let (locks, clock) = manager();
        let g = locks.exclusive(&KEY).lease(TTL).try_acquire().expect("a free key");
        let expirer = spawn_expirer(&locks, &clock);
        let claimer = {
            let locks = locks.clone();
            thread::spawn(move || match locks.exclusive(&KEY).lease(TTL * 100).try_acquire() {
                Ok(g2) => {
                    assert!(g2.is_held());
                    Some(g2.release())
                }
                Err(e) => {
                    assert_eq!(e, LockError::WouldBlock);
                    None
                }
            })
        };
        let released = g.release();
        let expired = expirer.join().expect("expire_due finished");
        let claimed = claimer.join().expect("the claimer finished");
        match (released, expired) {
            (Ok(()), 0) => FAST_RELEASE_WON.mark(),
            (Err(LockError::Expired), 0 | 1) => EXPIRY_BEAT_FAST_RELEASE.mark(),
            (released, expired) => panic!("release {released:?} and expire_due {expired}: not exactly one winner"),
        }
        match claimed {
            Some(Ok(())) => REUSED_AFTER_RELEASE.mark(),
            Some(other) => panic!("the new holding was ended by someone else: {other:?}"),
            None => {}
        }
        assert_unit_back_once(&locks);
    });
    assert!(FAST_RELEASE_WON.get(), "no execution had the release win");
    assert!(EXPIRY_BEAT_FAST_RELEASE.get(), "no execution had the expiry win");
    assert!(REUSED_AFTER_RELEASE.get(), "no execution had the key claimed again");
}

static RENEW_WON: Seen = Seen::new();
static RENEW_LOST: Seen = Seen::new();

/// The holder renews while another thread moves the clock past the old deadline and runs
/// `expire_due`. Either the renewal wins (the holding lives on, and the wheel still expires it at
/// its new deadline: no lease is missed) or it fails with `Expired` (and the holding was ended
/// exactly once, by whichever of the two got there first).
#[test]
fn renew_races_expiry_one_winner() {
    loom::model(|| {
        let (locks, clock) = manager();
        let g = locks.exclusive(&KEY).lease(TTL).try_acquire().expect("a free key");
        let expirer = spawn_expirer(&locks, &clock);
        let renewed = g.renew(TTL * 10);
        let expired = expirer.join().expect("expire_due finished");
        match renewed {
            Ok(()) => {
                RENEW_WON.mark();
                assert_eq!(expired, 0, "a renewed holding was expired at its old deadline");
                assert!(g.is_held());
                assert_eq!(locks.exclusive(&KEY).try_acquire().unwrap_err(), LockError::WouldBlock);
                // The new deadline is at most 10 ttl after the old one: the wheel fires there.
                clock.advance(TTL * 10);
                assert_eq!(locks.expire_due(), 1, "the renewed lease was never expired");
                assert!(!g.is_held());
                assert_eq!(g.release(), Err(LockError::Expired));
            }
            Err(e) => {
                RENEW_LOST.mark();
                assert_eq!(e, LockError::Expired);
                assert!(expired <= 1);
                assert!(!g.is_held());
                assert_eq!(g.release(), Err(LockError::Expired));
            }
        }
        drop(locks.exclusive(&KEY).try_acquire().expect("the unit came back"));
        assert_eq!(locks.reclaim_idle(), 1, "the slot is not idle: {}", locks.debug_state(&KEY));
    });
    assert!(RENEW_WON.get(), "no execution had the renewal win");
    assert!(RENEW_LOST.get(), "no execution had the renewal lose");
}

/// A holder's lease runs out while another thread is parked in `acquire()`: the expirer returns
/// the unit under the slot lock and must wake the waiter (loom reports a deadlock otherwise).
#[test]
fn expiry_wakes_a_parked_waiter() {
    loom::model(|| {
        let (locks, clock) = manager();
        let g = locks.exclusive(&KEY).lease(TTL).try_acquire().expect("a free key");
        let first = g.token();
        let waiter = {
            let locks = locks.clone();
            thread::spawn(move || {
                let g = locks.exclusive(&KEY).acquire().expect("an exclusive acquire only waits");
                assert!(g.token() > first);
            })
        };
        clock.advance(TTL);
        let expired = locks.expire_due();
        waiter.join().expect("the waiter got the lock");
        // The waiter may have expired the holder itself (a contender never waits on a holder past
        // its deadline), so `expire_due` found it at most once.
        assert!(expired <= 1);
        assert_eq!(g.release(), Err(LockError::Expired));
    });
}
