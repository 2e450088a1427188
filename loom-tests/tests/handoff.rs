//! The fairness hand-off: a release with a waiter that has waited past the fairness bound (by
//! the manager's clock, here a manual one) hands its units straight to that waiter, in the same
//! compare-exchange that returns them, so no barger can take them in between, and this holds
//! whether the waiter's claim fits an inline holder record or needs an overflow record.

#![cfg(leasehold_loom)]

mod common;

use std::time::Duration;

use common::{manager, until_queued, KEY};
use leasehold::LockError;
use loom::sync::atomic::{AtomicBool, Ordering::SeqCst};
use loom::sync::Arc;
use loom::thread;

/// An exclusive holder releases while a barger tries to take the key: the overdue waiter gets it,
/// and the barger gets in only after the waiter has had it.
#[test]
fn an_overdue_waiter_is_handed_the_lock_before_a_barger() {
    loom::model(|| {
        let (locks, clock) = manager();
        let g = locks.exclusive(&KEY).try_acquire().expect("a free key");
        let first = g.token();
        let waiter_had_it = Arc::new(AtomicBool::new(false));
        let waiter = {
            let (locks, had) = (locks.clone(), waiter_had_it.clone());
            thread::spawn(move || {
                let g = locks.exclusive(&KEY).acquire().expect("an exclusive acquire only waits");
                assert!(g.token() > first);
                had.store(true, SeqCst);
                drop(g);
            })
        };
        until_queued(&locks);
        clock.advance(Duration::from_millis(1));
        let barger = {
            let (locks, had) = (locks.clone(), waiter_had_it.clone());
            thread::spawn(move || match locks.exclusive(&KEY).try_acquire() {
                Ok(g) => assert!(had.load(SeqCst), "a barger took the lock of an overdue waiter (token {})", g.token()),
                Err(e) => assert_eq!(e, LockError::WouldBlock),
            })
        };
        drop(g);
        barger.join().expect("the barger never passed the overdue waiter");
        waiter.join().expect("the overdue waiter got the lock");
    });
}

/// A semaphore of five permits with five holders: the fifth holding lives in an overflow record.
/// Its release must hand the permit to the overdue waiter (whose claim needs an overflow record
/// too): a try right after the release finds no permit free.
#[test]
fn the_hand_off_holds_past_four_holders() {
    loom::model(|| {
        let (locks, clock) = manager();
        let mut holders: Vec<_> =
            (0..5).map(|_| locks.semaphore(&KEY, 5).try_acquire().expect("five permits")).collect();
        let waiter_had_it = Arc::new(AtomicBool::new(false));
        let waiter = {
            let (locks, had) = (locks.clone(), waiter_had_it.clone());
            thread::spawn(move || {
                let g = locks.semaphore(&KEY, 5).acquire().expect("a permit acquire only waits");
                assert!(g.is_held());
                had.store(true, SeqCst);
            })
        };
        until_queued(&locks);
        clock.advance(Duration::from_millis(1));
        drop(holders.pop());
        // Free again only once the waiter has had the permit (and given it back).
        if let Ok(g) = locks.semaphore(&KEY, 5).try_acquire() {
            assert!(
                waiter_had_it.load(SeqCst),
                "the releaser took back an overdue waiter's permit (token {})",
                g.token()
            );
        }
        waiter.join().expect("the overdue waiter got its permit");
        drop(holders);
    });
}
