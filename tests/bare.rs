//! Bare holdings: a plain exclusive holding taken by the lock-free path writes no holder record
//! (engine/word.rs). Everything a record told about it must still be told: introspection and
//! metrics read it off the state word, and a renewal, a downgrade or a loss signal gives it a
//! record when asked (under the slot lock). Driven by a manual clock: nothing sleeps.

use std::thread;
use std::time::Duration;

use leasehold::{LockError, LockManager, LossCause, ManualClock, Mode, MAX_UNITS};

const MS: Duration = Duration::from_millis(1);

/// A manager whose leases expire when the test advances the clock (expiry runs inside `advance`).
fn driven(clock: &ManualClock) -> LockManager<u64> {
    LockManager::builder().clock(clock.clone()).build().unwrap()
}

/// A bare holding of `key`: the key's first holding makes its slot on the locked path (with a
/// record), so the slot is made first and the holding is claimed lock-free.
fn bare(locks: &LockManager<u64>, key: u64) -> leasehold::LockGuard<'_, u64> {
    drop(locks.exclusive(&key).try_acquire().unwrap());
    locks.exclusive(&key).try_acquire().unwrap()
}

#[test]
fn inspect_and_metrics_see_a_plain_exclusive_holder_with_its_token() {
    let locks: LockManager<u64> = LockManager::new();
    // Tokens move on between holdings, so the token reported must be this holding's own.
    for _ in 0..3 {
        drop(locks.exclusive(&1).try_acquire().unwrap());
    }
    let g = bare(&locks, 1);
    let info = locks.inspect(&1).expect("held");
    assert_eq!(info.mode, Some(Mode::Exclusive));
    assert_eq!(info.units_held, MAX_UNITS);
    assert_eq!(info.holders.len(), 1, "{info:?}");
    let h = &info.holders[0];
    assert_eq!((h.mode, h.token, h.owner.clone(), h.expires_at), (Mode::Exclusive, g.token(), None, None));
    assert_eq!(locks.metrics().live_holders, 1);
    assert!(g.is_held());
    assert_eq!(g.trusted_until(), Some(Duration::MAX));
    drop(g);
    assert!(locks.inspect(&1).is_none());
    assert_eq!(locks.metrics().live_holders, 0);
    // With a reader queued behind it: the holder still by its own token, and its release (which
    // finds `WAITERS`) hands the key on.
    let g = bare(&locks, 1);
    thread::scope(|s| {
        let reader = s.spawn(|| locks.shared(&1).acquire().map(|r| r.token()));
        while locks.inspect(&1).unwrap().waiters.is_empty() {
            thread::yield_now();
        }
        let info = locks.inspect(&1).unwrap();
        assert_eq!((info.holders.len(), info.holders[0].token), (1, g.token()), "{info:?}");
        let token = g.token();
        drop(g);
        assert!(reader.join().unwrap().unwrap() > token);
    });
}

#[test]
fn a_renewed_plain_exclusive_guard_gets_a_lease_that_expires() {
    let clock = ManualClock::new();
    let locks = driven(&clock);
    let g = bare(&locks, 1);
    assert_eq!(g.expires_at(), None);
    g.renew(100 * MS).unwrap();
    assert_eq!(g.expires_at(), Some(100 * MS));
    let info = locks.inspect(&1).unwrap();
    assert_eq!(info.holders.len(), 1, "{info:?}");
    assert_eq!((info.holders[0].token, info.holders[0].expires_at), (g.token(), Some(100 * MS)));
    // A second renewal renews the lease the first one gave.
    clock.advance(50 * MS);
    g.renew(100 * MS).unwrap();
    assert_eq!(g.expires_at(), Some(150 * MS));
    assert_eq!(g.trusted_until(), Some(150 * MS));
    assert_eq!(locks.exclusive(&1).try_acquire().unwrap_err(), LockError::WouldBlock);
    clock.advance(100 * MS);
    assert!(!g.is_held());
    assert_eq!(g.loss_cause(), Some(LossCause::Expired));
    let next = locks.exclusive(&1).try_acquire().expect("the expired holding gave its units back");
    assert!(next.token() > g.token());
    assert_eq!(g.release(), Err(LockError::Expired));
    assert!(next.is_held(), "the zombie's release must not touch the next holder");
    drop(next);
    assert_eq!(locks.reclaim_idle(), 1, "the key is idle again: every unit and record came back");
}

#[test]
fn a_renewed_plain_exclusive_guard_releases_its_units_and_record() {
    let clock = ManualClock::new();
    let locks = driven(&clock);
    let g = bare(&locks, 1);
    g.renew(100 * MS).unwrap();
    g.release().unwrap();
    // Four readers take the four inline records: none may be left taken by the renewed holding.
    let readers: Vec<_> = (0..4).map(|_| locks.shared(&1).try_acquire().unwrap()).collect();
    let info = locks.inspect(&1).unwrap();
    assert_eq!(info.holders.len(), 4, "{info:?}");
    drop(readers);
    assert_eq!(locks.reclaim_idle(), 1);
}

#[test]
fn renewals_of_one_plain_exclusive_guard_from_two_threads_both_hold() {
    let clock = ManualClock::new();
    let locks = driven(&clock);
    let g = bare(&locks, 1);
    thread::scope(|s| {
        let a = s.spawn(|| g.renew(100 * MS));
        let b = s.spawn(|| g.renew(200 * MS));
        assert_eq!(a.join().unwrap(), Ok(()));
        assert_eq!(b.join().unwrap(), Ok(()));
    });
    assert!(g.expires_at().is_some());
    assert_eq!(locks.inspect(&1).unwrap().holders.len(), 1);
    g.release().unwrap();
    assert_eq!(locks.reclaim_idle(), 1);
}

#[test]
fn a_plain_exclusive_guard_downgrades_with_its_token() {
    let locks: LockManager<u64> = LockManager::new();
    let w = bare(&locks, 1);
    let token = w.token();
    let r = w.downgrade().unwrap();
    assert_eq!((r.mode(), r.token()), (Mode::Shared, token));
    let others: Vec<_> = (0..4).map(|_| locks.shared(&1).try_acquire().unwrap()).collect();
    let info = locks.inspect(&1).unwrap();
    assert_eq!(info.holders.len(), 5, "{info:?}");
    assert!(info.holders.iter().any(|h| h.token == token && h.mode == Mode::Shared), "{info:?}");
    assert_eq!(locks.exclusive(&1).try_acquire().unwrap_err(), LockError::WouldBlock);
    drop(others);
    // The downgraded holding's release gives back its unit and its record.
    drop(r);
    let u = bare(&locks, 1).downgrade_to_upgradable().unwrap();
    assert_eq!(u.mode(), Mode::Upgradable);
    let w = u.upgrade().unwrap();
    assert!(w.token() > token);
    drop(w);
    assert_eq!(locks.reclaim_idle(), 1);
}

#[test]
fn a_plain_exclusive_guards_loss_signal_fires_on_expiry_after_a_renewal() {
    let clock = ManualClock::new();
    let locks = driven(&clock);
    let g = bare(&locks, 1);
    assert!(!g.is_lost(), "a live bare holding attaches a live signal");
    g.renew(10 * MS).unwrap();
    clock.advance(10 * MS);
    assert_eq!(g.loss_cause(), Some(LossCause::Expired));
    assert!(!g.is_held());
}

#[test]
fn sampled_plain_exclusive_holdings_are_timed() {
    let locks: LockManager<u64> = LockManager::new();
    // One holding in 256 is timed (by its token); 1,024 holdings time about four.
    for _ in 0..1024 {
        drop(locks.exclusive(&1).try_acquire().unwrap());
    }
    let timed = locks.metrics().hold_time.count();
    assert!((3..=5).contains(&timed), "{timed} holdings timed");
}
