//! What every model shares: a manager small enough for loom, and a way to check that a model
//! really explored the interleaving it is about.

#![allow(dead_code)] // each test binary uses its own subset

use std::collections::hash_map::DefaultHasher;
use std::hash::BuildHasherDefault;
use std::sync::atomic::{AtomicBool, Ordering as StdOrdering};

use leasehold::{LockManager, ManualClock};
use loom::sync::Arc;

/// A hasher with a fixed seed. Loom replays each execution by counting branch points, so a model
/// must do the same thing every time it is run: with the default (randomly seeded) hasher the
/// key's home position in the index, and so the number of entries a sweep or a probe loads,
/// changes from one execution to the next, loom's replay goes out of step, and a load returns a
/// value the atomic never held (in one case a null table pointer: a segfault in `sweep`).
pub type Fixed = BuildHasherDefault<DefaultHasher>;

/// The manager every model uses.
pub type Locks = LockManager<u8, Fixed>;

/// The one key the models fight over.
pub const KEY: u8 = 7;

/// A manager as small as loom needs: one shard (so a reclaim and an acquire meet on one shard
/// lock), a manual clock, and no reaper (there are no background threads under loom; models
/// drive expiry with `expire_due`).
pub fn manager() -> (Arc<Locks>, ManualClock) {
    let clock = ManualClock::new();
    let locks = LockManager::<u8>::builder()
        .shards(1)
        .clock(clock.clone())
        .reaper(false)
        .hasher(Fixed::default())
        .build()
        .expect("a valid loom configuration");
    (Arc::new(locks), clock)
}

/// Waits (yielding to loom) until `KEY` has a queued waiter: a model whose release must find its
/// waiter already queued calls it first, since a waiter spins with `yield_now` before it queues,
/// which hands the turn back to the releasing thread.
pub fn until_queued(locks: &Locks) {
    while locks.inspect(&KEY).map_or(0, |i| i.waiters.len()) == 0 {
        loom::thread::yield_now();
    }
}

/// A flag set by some execution of a model and checked once loom has explored them all, so that
/// a model cannot pass by never reaching the interleaving it exists for. A plain std atomic: it
/// lives across loom's executions and is not part of any model.
pub struct Seen(AtomicBool);

impl Seen {
    pub const fn new() -> Self {
        Seen(AtomicBool::new(false))
    }

    pub fn mark(&self) {
        self.0.store(true, StdOrdering::Relaxed);
    }

    pub fn get(&self) -> bool {
        self.0.load(StdOrdering::Relaxed)
    }
}
