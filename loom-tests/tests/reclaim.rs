//! Reclamation: the idle sweep (`reclaim_idle`) racing a new acquire of the same key, and a
//! creation that reuses an idle slot for a new key (in place, in its probe run, or just before its
//! home) racing the slot's old key.

#![cfg(leasehold_loom)]

mod common;

use common::{manager, Locks, Seen, KEY};
use leasehold::LockError;
use loom::sync::atomic::{AtomicBool, Ordering::SeqCst};
use loom::sync::Arc;
use loom::thread;

/// A second key, for the models where a creation reuses the first key's slot.
const OTHER: u8 = 8;

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

static REUSED_IN_PLACE: Seen = Seen::new();
static CLAIMED_BEFORE_REUSE: Seen = Seen::new();

/// A manager whose idle cache keeps one slot: the next creation reclaims the idle slot of another
/// key and reuses it in place for the new key (`Table::dead_slot`).
fn one_idle_slot() -> Arc<Locks> {
    let locks = leasehold::LockManager::<u8>::builder()
        .shards(1)
        .idle_slots(1)
        .clock(leasehold::ManualClock::new())
        .reaper(false)
        .hasher(common::Fixed::default())
        .build()
        .expect("a valid loom configuration");
    Arc::new(locks)
}

/// A creation that reuses an idle slot in place for its new key races an acquire of the slot's
/// old key (whose lock-free lookup may hold the slot's pointer from before): the old key's
/// acquirer never gets the slot under the new key, each guard holds its own key, the old key's
/// tokens keep growing, and both slots go once idle.
#[test]
fn creation_reusing_a_slot_races_its_old_key() {
    creation_races_the_old_key(OTHER, &REUSED_IN_PLACE, &CLAIMED_BEFORE_REUSE);
}

/// The race of the two creation models: `KEY` held and released once, then a creation for
/// `other` (which at the idle bound reclaims `KEY`'s idle slot for itself) against an acquire of
/// `KEY`. Marks `reused` where the creation got the reclaimed slot (its token continues from the
/// shard's high-water mark, `KEY`'s first token; a pool slot's starts from the floor), `before`
/// where the acquire claimed `KEY`'s slot first; the model fails unless both happened.
fn creation_races_the_old_key(other_key: u8, reused: &'static Seen, before: &'static Seen) {
    loom::model(move || {
        let locks = one_idle_slot();
        let first = locks.exclusive(&KEY).acquire().expect("a free key").token();
        let creator = {
            let locks = locks.clone();
            thread::spawn(move || {
                let g = locks.exclusive(&other_key).acquire().expect("a free key");
                assert_eq!(*g.key(), other_key);
                g.token()
            })
        };
        let g = locks.exclusive(&KEY).acquire().expect("nobody else takes this key");
        assert_eq!(*g.key(), KEY);
        let second = g.token();
        assert!(second > first, "token {second} after {first}");
        let other = creator.join().expect("the creator finished");
        if other > first {
            reused.mark();
        } else {
            before.mark();
        }
        assert!(locks.slot_count() <= 2, "{}", locks.debug_state(&KEY));
        assert_eq!(locks.exclusive(&other_key).try_acquire().map(|g| *g.key()), Ok(other_key));
        drop(g);
        let third = locks.exclusive(&KEY).acquire().expect("a free key").token();
        assert!(third > second, "token {third} after {second}");
        assert_eq!(locks.exclusive(&other_key).try_acquire().map(|g| *g.key()), Ok(other_key));
        locks.reclaim_idle();
        assert_eq!(locks.slot_count(), 0);
    });
    assert!(reused.get() && before.get(), "the creation and the acquire never raced both ways");
}

/// A waiter of a key races its holder's release and a creation at the idle bound, which reclaims
/// the key's slot if it finds it idle and reuses it for another key. The waiter must wait on (and
/// be woken in) the key's own slot, never on one reborn for the other key: it found the slot
/// under the shard lock and takes the slot lock, but reclamation needs only the shard lock, so
/// the locked path claims (or sets `WAITERS`) before it lets the shard lock go. (With the shard
/// lock dropped first, this model fails: the waiter gets a guard on the other key's slot.)
#[test]
fn a_waiter_never_waits_on_a_slot_reborn_for_another_key() {
    loom::model(|| {
        let locks = one_idle_slot();
        let held = locks.exclusive(&KEY).acquire().expect("a free key");
        let first = held.token();
        let waiter = {
            let locks = locks.clone();
            thread::spawn(move || {
                let g = locks.exclusive(&KEY).acquire().expect("woken by the release");
                assert_eq!(*g.key(), KEY);
                g.token()
            })
        };
        let creator = {
            let locks = locks.clone();
            thread::spawn(move || {
                let g = locks.exclusive(&OTHER).acquire().expect("a free key");
                assert_eq!(*g.key(), OTHER);
            })
        };
        drop(held);
        let second = waiter.join().expect("the waiter got the key");
        creator.join().expect("the creator finished");
        assert!(second > first, "token {second} after {first}");
        locks.reclaim_idle();
        assert_eq!(locks.slot_count(), 0);
    });
}

static REUSED_IN_ITS_RUN: Seen = Seen::new();
static CLAIMED_BEFORE_ITS_RUN: Seen = Seen::new();

/// A key other than `KEY` whose home in the index (16 entries: one idle slot never grows it) is
/// `KEY`'s: a creation for it at the idle bound walks its probe run through `KEY`'s entry.
fn near_key() -> u8 {
    use std::hash::BuildHasher;
    let home = |k: u8| common::Fixed::default().hash_one(k) & 15;
    (0..=u8::MAX).find(|&k| k != KEY && home(k) == home(KEY)).expect("some u8 shares a home of 16")
}

/// A creation that finds an idle slot in its own probe run reclaims it and reuses its index entry
/// in place (`Shard::creation_walk`: the entry's hash changes, its slot pointer stays), racing an
/// acquire of the slot's old key, whose lock-free lookup may hold the slot's pointer or read the
/// entry's old hash: each guard holds its own key, the old key's tokens keep growing, both keys
/// are found afterwards, and both slots go once idle.
#[test]
fn creation_reusing_an_entry_in_its_probe_run_races_its_old_key() {
    creation_races_the_old_key(near_key(), &REUSED_IN_ITS_RUN, &CLAIMED_BEFORE_ITS_RUN);
}

static REUSED_BEFORE_ITS_HOME: Seen = Seen::new();
static CLAIMED_BEFORE_ITS_HOME: Seen = Seen::new();

/// A key whose home in the index (16 entries) is the entry just after `KEY`'s: a creation for it
/// at the idle bound finds its home free and `KEY`'s entry just before it.
fn next_key() -> u8 {
    use std::hash::BuildHasher;
    let home = |k: u8| common::Fixed::default().hash_one(k) & 15;
    (0..=u8::MAX).find(|&k| home(k) == (home(KEY) + 1) & 15).expect("some u8 has each home of 16")
}

/// A creation whose home is free reclaims the idle slot in the entry just before its home (the end
/// of that cluster: its removal is a null store, `Shard::creation_walk`) and puts the slot, reborn
/// for its key, at its home, racing an acquire of the slot's old key, whose lock-free lookup may
/// hold the slot's pointer or read the old entry before its null: each guard holds its own key,
/// the old key's tokens keep growing, both keys are found afterwards, and both slots go once idle.
#[test]
fn creation_reusing_the_slot_before_its_home_races_its_old_key() {
    creation_races_the_old_key(next_key(), &REUSED_BEFORE_ITS_HOME, &CLAIMED_BEFORE_ITS_HOME);
}
