//! Waiting: a release must wake the parked waiters it lets proceed (no lost wake-up). A thread
//! that parks and is never unparked leaves loom with no runnable thread, which it reports as a
//! deadlock, so each model just asserts that its waiters finish.

#![cfg(leasehold_loom)]

mod common;

use common::{manager, until_queued, Fixed, Locks, Seen, KEY};
use leasehold::LockGuard;
use loom::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use loom::sync::Arc;
use loom::thread;

/// When the holder's guard is dropped, relative to its waiter.
#[derive(Clone, Copy)]
enum Release {
    /// Whenever loom lets it: before the waiter looks, while it queues, or once it is parked
    /// (though loom reaches a queued waiter only after the release began: the waiter spins with
    /// `yield_now` first, which hands the turn back to the holder).
    AnyTime,
    /// Only once the waiter is in the queue: `WAITERS` is in the word before the release begins.
    AfterItQueued,
}

/// The body of the models below: `hold` takes the key on the model's thread, a second thread
/// waits for it in an exclusive `acquire()`, and the holder's guard is dropped (`release`). The
/// waiter must get the lock, with a larger token.
fn release_wakes_an_exclusive_waiter(hold: for<'a> fn(&'a Locks) -> LockGuard<'a, u8, Fixed>, release: Release) {
    loom::model(move || {
        let (locks, _clock) = manager();
        let g = hold(&locks);
        let first = g.token();
        let waiter = {
            let locks = locks.clone();
            thread::spawn(move || {
                let g = locks.exclusive(&KEY).acquire().expect("an exclusive acquire only waits");
                assert!(g.token() > first, "token {} after {first}", g.token());
            })
        };
        if let Release::AfterItQueued = release {
            until_queued(&locks);
        }
        drop(g);
        waiter.join().expect("the waiter got the lock");
    });
}

/// A bare holding (the lock-free path's exclusive claim: the key exists and is idle).
fn bare_holding(locks: &Locks) -> LockGuard<'_, u8, Fixed> {
    drop(locks.exclusive(&KEY).try_acquire().expect("a free key"));
    locks.exclusive(&KEY).try_acquire().expect("a free key (a bare holding)")
}

/// A plain reader (the lock-free path's shared claim, in record 0).
fn plain_reader(locks: &Locks) -> LockGuard<'_, u8, Fixed> {
    drop(locks.shared(&KEY).try_acquire().expect("a free key"));
    locks.shared(&KEY).try_acquire().expect("a free key (a plain reader)")
}

/// A holding from the slow path (a new slot: a holding with a record).
#[test]
fn release_wakes_a_parked_waiter() {
    release_wakes_an_exclusive_waiter(
        |locks| locks.exclusive(&KEY).try_acquire().expect("a free key"),
        Release::AnyTime,
    );
}

/// A bare holding, released by `Slot::release_plain`'s compare-exchange from the word its claim
/// installed, or, once a flag has moved the word, by its fallback: a test of the word the
/// compare-exchange found, then a `fetch_sub` (or the slot lock on `WAITERS`). A waiter that
/// queues after that test must be woken from the `fetch_sub`'s previous word: without that
/// wake-up this model deadlocks.
#[test]
fn bare_release_wakes_a_parked_waiter() {
    release_wakes_an_exclusive_waiter(bare_holding, Release::AnyTime);
}

/// A bare holding released after its waiter has queued: `WAITERS` is in the word before the
/// release begins. `Slot::release_plain`'s compare-exchange from the word its claim installed
/// (flagless) must then fail and leave the release to the path that wakes the queue; a release
/// that returned the units whatever the flags (a compare-exchange from the word as loaded) leaves
/// the waiter parked and this model deadlocks (`bare_release_wakes_a_parked_waiter` never releases
/// after its waiter queued: `Release::AnyTime`).
#[test]
fn bare_release_wakes_a_waiter_queued_before_it() {
    release_wakes_an_exclusive_waiter(bare_holding, Release::AfterItQueued);
}

/// A plain reader (the lock-free path's shared claim, in record 0) and a writer waiting:
/// `Slot::release_plain` frees the record, then compare-exchanges from the word of a lone holding.
/// A writer that queued first makes it fail and go to the slot lock; one that comes after it
/// finds the key free.
#[test]
fn plain_reader_release_wakes_a_parked_writer() {
    release_wakes_an_exclusive_waiter(plain_reader, Release::AnyTime);
}

/// A plain reader released after a writer has queued behind it: `WAITERS` is in the word before
/// the release begins, so `Slot::release_plain`'s compare-exchange fails on it and must send the
/// release to the slot lock, which wakes the writer; a release that returned its unit whatever the
/// flags leaves the writer parked and this model deadlocks.
#[test]
fn plain_reader_release_wakes_a_writer_queued_before_it() {
    release_wakes_an_exclusive_waiter(plain_reader, Release::AfterItQueued);
}

/// Two plain readers (records 0 and 1) and a writer waiting in `acquire()`. The first release
/// finds the other reader in the word, so `Slot::release_plain`'s compare-exchange from the word
/// of a lone holding fails: without a flag it subtracts with a `fetch_sub`, with `WAITERS` it
/// leaves the release to the slot lock. The second finds itself alone unless a flag came. The
/// writer must get in, and while it holds, the key must show it alone: a release that left its
/// units or its record behind would show a second holder or block the writer.
fn two_readers_release_to_a_writer(release: Release) {
    loom::model(move || {
        let (locks, _clock) = manager();
        let first = plain_reader(&locks);
        let second = locks.shared(&KEY).try_acquire().expect("readers share");
        let last = second.token();
        let writer = {
            let locks = locks.clone();
            thread::spawn(move || {
                let g = locks.exclusive(&KEY).acquire().expect("an exclusive acquire only waits");
                assert!(g.token() > last, "token {} after {last}", g.token());
                let info = locks.inspect(&KEY).expect("a held key has a slot");
                assert_eq!(info.holders.len(), 1, "the writer alone: {:?}", info.holders);
                assert_eq!(info.holders[0].token, g.token());
            })
        };
        if let Release::AfterItQueued = release {
            until_queued(&locks);
        }
        drop(first);
        drop(second);
        writer.join().expect("the writer got the lock");
        assert!(locks.inspect(&KEY).is_none_or(|i| i.holders.is_empty() && i.units_held == 0));
    });
}

#[test]
fn two_readers_release_to_a_parked_writer() {
    two_readers_release_to_a_writer(Release::AnyTime);
}

/// As above with `WAITERS` in the word before either release: both go to the slot lock.
#[test]
fn two_readers_release_to_a_writer_queued_before_them() {
    two_readers_release_to_a_writer(Release::AfterItQueued);
}

/// The same with a managed holding (a lease: `release` goes through the lease word) releasing to
/// a waiter that asks for a lease too.
#[test]
fn leased_release_wakes_a_parked_waiter() {
    loom::model(|| {
        let (locks, _clock) = manager();
        let ttl = std::time::Duration::from_secs(1);
        let g = locks.exclusive(&KEY).lease(ttl).try_acquire().expect("a free key");
        let waiter = {
            let locks = locks.clone();
            thread::spawn(move || {
                let g = locks.exclusive(&KEY).lease(ttl).acquire().expect("an exclusive acquire only waits");
                assert!(g.is_held());
            })
        };
        g.release().expect("nothing expires the holding (the clock does not move)");
        waiter.join().expect("the waiter got the lock");
    });
}

static BOTH_PARKED_READERS_IN: Seen = Seen::new();

/// A writer releases with two readers waiting in `acquire()`: the release must wake every reader
/// the free units admit, not just the first, and both must get in.
#[test]
fn writer_release_wakes_every_waiting_reader() {
    loom::model(|| {
        let (locks, _clock) = manager();
        let inside = Arc::new(AtomicUsize::new(0));
        let g = locks.exclusive(&KEY).try_acquire().expect("a free key");
        let reader = || {
            let (locks, inside) = (locks.clone(), inside.clone());
            thread::spawn(move || {
                let r = locks.shared(&KEY).acquire().expect("a shared acquire only waits");
                if inside.fetch_add(1, SeqCst) == 1 {
                    BOTH_PARKED_READERS_IN.mark();
                }
                inside.fetch_sub(1, SeqCst);
                drop(r);
            })
        };
        let (a, b) = (reader(), reader());
        drop(g);
        a.join().expect("first reader got the lock");
        b.join().expect("second reader got the lock");
    });
    assert!(BOTH_PARKED_READERS_IN.get(), "no execution had both readers in at once");
}

static WOKEN_WAITER_CLAIMED_WITH_ANOTHER_QUEUED: Seen = Seen::new();

/// Two exclusive waiters queue behind a holder. A release wakes the first, which retries with a
/// lock-free claim (`Table::claim_woken`) while still in the queue, then leaves it; its own release
/// must then wake the second. A woken waiter that claimed but stayed queued would keep reserving
/// the units it no longer waits for, and the second waiter would sleep forever.
#[test]
fn a_woken_waiters_lock_free_claim_lets_the_next_waiter_in() {
    loom::model(|| {
        let (locks, _clock) = manager();
        let g = locks.exclusive(&KEY).try_acquire().expect("a free key");
        let waiter = || {
            let locks = locks.clone();
            thread::spawn(move || {
                let g = locks.exclusive(&KEY).acquire().expect("an exclusive acquire only waits");
                if locks.inspect(&KEY).is_some_and(|i| i.waiters.len() == 1) {
                    WOKEN_WAITER_CLAIMED_WITH_ANOTHER_QUEUED.mark();
                }
                drop(g);
            })
        };
        let (a, b) = (waiter(), waiter());
        // Both queued (or one of them already in), then release.
        while locks.inspect(&KEY).map_or(0, |i| i.waiters.len()) < 2 {
            thread::yield_now();
        }
        drop(g);
        a.join().expect("first waiter got the lock");
        b.join().expect("second waiter got the lock");
    });
    assert!(WOKEN_WAITER_CLAIMED_WITH_ANOTHER_QUEUED.get(), "no execution had a waiter in with the other still queued");
}
