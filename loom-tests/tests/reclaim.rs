//! Reclamation: the idle sweep (`reclaim_idle`) racing a new acquire of the same key.

#![cfg(leasehold_loom)]

mod common;

use common::{manager, Seen, KEY};
use leasehold::LockError;
use loom::sync::atomic::{AtomicBool, Ordering::SeqCst};
use loom::sync::Arc;
use loom::thread;

static RECLAIMED_FIRST: Seen = Seen::new();
static ACQUIRED_FIRST: Seen = Seen::new();

/// Tokens of a key strictly increase across the reclamation of its slot and the creation of a
/// new one: acquire and release, then a new acquire races `reclaim_idle`, then (the slot surely
/// reclaimed) a third acquire.
#[test]
fn tokens_grow_across_reclamation() {
    loom::model(|| {
        let (locks, _clock) = manager();
        let first = locks.exclusive(&KEY).try_acquire().expect("a free key").token();
        let sweeper = {
            let locks = locks.clone();
            thread::spawn(move || locks.reclaim_idle())
        };
        let g = locks.exclusive(&KEY).try_acquire().expect("nobody holds the key");
        let second = g.token();
        let reclaimed = sweeper.join().expect("the sweep finished");
        assert!(second > first, "token {second} after {first} (sweep reclaimed {reclaimed})");
        match reclaimed {
            1 => RECLAIMED_FIRST.mark(),
            _ => ACQUIRED_FIRST.mark(),
        }
        drop(g);
        assert_eq!(locks.reclaim_idle(), 1);
        let third = locks.exclusive(&KEY).try_acquire().expect("a free key").token();
        assert!(third > second, "token {third} after {second} in a new slot");
    });
    assert!(RECLAIMED_FIRST.get() && ACQUIRED_FIRST.get(), "the sweep and the acquire never raced both ways");
}

/// Two readers acquiring a key race the reclamation of its idle slot: both must succeed, in one
/// live slot that the index maps the key to (not one reclaimed under them, nor two slots for one
/// key): a writer is refused while they hold, there is one slot, and once they are gone it is
/// idle and reclaimed.
#[test]
fn acquire_racing_reclamation_holds_a_live_slot() {
    loom::model(|| {
        let (locks, _clock) = manager();
        drop(locks.shared(&KEY).try_acquire().expect("a free key"));
        let sweeper = {
            let locks = locks.clone();
            thread::spawn(move || locks.reclaim_idle())
        };
        let (tx, rx) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
        let other = {
            let (locks, tx, rx) = (locks.clone(), tx.clone(), rx.clone());
            thread::spawn(move || {
                let g = locks.shared(&KEY).try_acquire().expect("readers never exclude each other");
                assert_eq!(*g.key(), KEY);
                // Hold until the main thread has checked, so both holdings overlap the check.
                tx.store(true, SeqCst);
                while !rx.load(SeqCst) {
                    thread::yield_now();
                }
                drop(g);
            })
        };
        let g = locks.shared(&KEY).try_acquire().expect("readers never exclude each other");
        assert_eq!(*g.key(), KEY);
        let reclaimed = sweeper.join().expect("the sweep finished");
        assert!(reclaimed <= 1);
        while !tx.load(SeqCst) {
            thread::yield_now();
        }
        assert!(g.is_held());
        assert_eq!(locks.slot_count(), 1, "{}", locks.debug_state(&KEY));
        assert_eq!(locks.exclusive(&KEY).try_acquire().unwrap_err(), LockError::WouldBlock);
        rx.store(true, SeqCst);
        other.join().expect("the other reader finished");
        drop(g);
        assert_eq!(locks.reclaim_idle(), 1);
        assert_eq!(locks.slot_count(), 0);
    });
}
