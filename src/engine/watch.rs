//! Lease expiry, the registering side: which slots the timer wheel watches (`Watch`), the wheel
//! behind its lock and how to wake whoever drives it (`Wheelhouse`). The firing side, the driver,
//! is `expiry/driver.rs`.
//!
//! # Ground rules
//!
//! The wheel holds one entry per *slot* that has leased holdings, firing no later than the
//! earliest of their deadlines; it is never touched on the hot path of an acquire, a release or
//! a renewal that pushes a deadline later. The protocol rests on the word's `WATCHED` bit and on
//! `Watch::scheduled` (the time the entry fires, or `NONE`):
//!
//! 1. A leased claim sets `WATCHED` in the same compare-exchange that claims, writes its lease,
//!    then reads `scheduled`: if the entry fires no later than its deadline there is nothing to
//!    do (the common case: one load); otherwise it registers (`Wheelhouse::register`, under the
//!    wheel lock: move the entry earlier, store `scheduled`, set `WATCHED`).
//! 2. When an entry fires, the driver (under the wheel lock) removes it and stores
//!    `scheduled = NONE`; then it clears `WATCHED` with one read-modify-write of the word, and
//!    scans the leases of the records whose bit was set in the word that RMW returned: it expires
//!    those past their deadline and registers again at the earliest deadline left.
//!
//! Why no lease is missed: a claim either precedes the driver's RMW in the word's modification
//! order, and then the driver's scan sees its record bit and (through the release sequence of the
//! last release of that record) either its lease or an in-flux `FREE`/`EXPIRING` word, which
//! makes the driver look again one tick later; or it follows the RMW, and then it synchronises
//! with it and reads `scheduled == NONE` (or a later registration), so it registers itself.
//!
//! A renewal that moves a deadline *earlier* than `scheduled` registers too. It is the only path
//! that does not go through the word, so it uses SeqCst on its lease compare-exchange and its load
//! of `scheduled`, against the driver's SeqCst store of `scheduled` and load of the lease: either
//! the driver's scan sees the new deadline, or the renewer sees `NONE` and registers.

use crate::engine::word;
use crate::primitives::sync::{thread, AtomicU64, Mutex, Ordering};
use crate::primitives::wheel::{EntryKey, Wheel};

/// `scheduled` when the slot has no wheel entry.
pub(crate) const NONE: u64 = u64::MAX;

/// A slot's registration with the wheel.
pub(crate) struct Watch {
    /// The wheel fires this slot no later than this (clock nanoseconds); `NONE` if not scheduled.
    pub(crate) scheduled: AtomicU64,
    /// The slot's wheel entry (`EntryKey::to_bits`, `NONE` for none). Only read and written under
    /// the wheel lock, so Relaxed is enough; an atomic only to keep the slot `Sync` without unsafe.
    entry: AtomicU64,
}

impl Watch {
    pub(crate) fn new() -> Self {
        Watch { scheduled: AtomicU64::new(NONE), entry: AtomicU64::new(NONE) }
    }

    fn entry(&self) -> Option<EntryKey> {
        EntryKey::from_bits(self.entry.load(Ordering::Relaxed))
    }

    fn set_entry(&self, key: Option<EntryKey>) {
        self.entry.store(key.map_or(NONE, EntryKey::to_bits), Ordering::Relaxed);
    }
}

/// The timer wheel, its lock, and the way to wake whoever drives it.
pub(crate) struct Wheelhouse {
    /// Wheel resolution in clock nanoseconds.
    pub(crate) tick_ns: u64,
    wheel: Mutex<Wheel<usize>>,
    driver: Driver,
}

/// How registrations wake the reaper thread when they move the next expiry earlier.
struct Driver {
    /// The reaper thread, once started.
    thread: Mutex<Option<thread::Thread>>,
    /// The tick the reaper sleeps until (`NONE`: asleep with nothing scheduled; 0: awake).
    sleeping_until: AtomicU64,
}

#[cfg_attr(leasehold_loom, allow(dead_code))] // the reaper thread's half is not built under loom
impl Wheelhouse {
    pub(crate) fn new(tick_ns: u64) -> Self {
        Wheelhouse {
            tick_ns,
            wheel: Mutex::new(Wheel::new()),
            driver: Driver { thread: Mutex::new(None), sleeping_until: AtomicU64::new(0) },
        }
    }

    /// Makes the wheel fire slot `addr` no later than `deadline` (clock nanoseconds), and marks the
    /// slot `WATCHED`.
    pub(crate) fn register(
        &self,
        watch: &Watch,
        word: &crate::primitives::sync::AtomicU64,
        addr: usize,
        deadline: u64,
    ) {
        let tick = deadline.div_ceil(self.tick_ns);
        {
            let mut wheel = self.wheel.lock();
            if watch.scheduled.load(Ordering::Relaxed) > deadline {
                match watch.entry() {
                    Some(key) if wheel.reschedule(key, tick) => {}
                    _ => watch.set_entry(Some(wheel.insert(tick, addr))),
                }
                // SeqCst: see the module docs (renewal); Release for claimers that read it
                // through the word's release sequence.
                watch.scheduled.store(deadline, Ordering::SeqCst);
            }
            // Release: a claim that sees `WATCHED` sees `scheduled`.
            word.fetch_or(word::WATCHED, Ordering::Release);
        }
        self.driver.wake_if_before(tick);
    }

    /// Drops a slot's entry (the slot is being reclaimed).
    pub(crate) fn unregister(&self, watch: &Watch) {
        let mut wheel = self.wheel.lock();
        if let Some(key) = watch.entry() {
            wheel.remove(key);
            watch.set_entry(None);
        }
        watch.scheduled.store(NONE, Ordering::SeqCst);
    }

    /// Takes up to `batch.capacity()` slots whose entries are due at `now_tick` into `batch`,
    /// clearing their registrations (step 2 of the protocol), under one hold of the wheel lock.
    /// The caller then scans each slot. Returns false once nothing is due.
    pub(crate) fn pop_due(
        &self,
        now_tick: u64,
        batch: &mut Vec<usize>,
        watch_of: impl Fn(usize) -> *const Watch,
    ) -> bool {
        batch.clear();
        let mut wheel = self.wheel.lock();
        while batch.len() < batch.capacity() {
            let Some((_, addr)) = wheel.poll(now_tick) else { break };
            // SAFETY: `watch_of` gives the watch of a type-stable slot.
            let watch = unsafe { &*watch_of(addr) };
            watch.set_entry(None);
            watch.scheduled.store(NONE, Ordering::SeqCst);
            batch.push(addr);
        }
        !batch.is_empty()
    }

    /// The next tick at which an entry may fire.
    pub(crate) fn next_tick(&self) -> Option<u64> {
        self.wheel.lock().next_expiration()
    }

    /// Records the reaper thread (it parks; registrations unpark it).
    pub(crate) fn set_driver_thread(&self, t: thread::Thread) {
        *self.driver.thread.lock() = Some(t);
    }

    /// Before the reaper sleeps: publish until when, then re-check the wheel (see `Driver`).
    /// Returns the tick to sleep until, or `None` to sleep until woken; `Some(0)` means "don't sleep".
    pub(crate) fn prepare_sleep(&self, now_tick: u64, cap_tick: Option<u64>) -> Option<u64> {
        let next = self.next_tick();
        let until = match (next, cap_tick) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        // SeqCst, paired with `wake_if_before`: store-then-check here, insert-then-load there.
        self.driver.sleeping_until.store(until.unwrap_or(NONE), Ordering::SeqCst);
        let next_again = self.next_tick();
        if next_again.is_some_and(|t| t <= now_tick || until.is_none_or(|u| t < u)) {
            self.driver.sleeping_until.store(0, Ordering::SeqCst);
            return Some(0);
        }
        until
    }

    /// The reaper is awake (processing).
    pub(crate) fn mark_awake(&self) {
        self.driver.sleeping_until.store(0, Ordering::SeqCst);
    }

    /// Wakes the reaper if it sleeps with nothing scheduled (the first slot of an empty shard
    /// gives it a sweep to schedule).
    pub(crate) fn wake_driver_if_idle(&self) {
        if self.driver.sleeping_until.load(Ordering::SeqCst) == NONE {
            self.wake_driver();
        }
    }

    /// Wakes the reaper (shutdown, or the first slot of an empty table).
    pub(crate) fn wake_driver(&self) {
        if let Some(t) = self.driver.thread.lock().as_ref() {
            t.unpark();
        }
    }
}

impl Driver {
    fn wake_if_before(&self, tick: u64) {
        // SeqCst: see `Wheelhouse::prepare_sleep`.
        let until = self.sleeping_until.load(Ordering::SeqCst);
        if until != 0 && tick < until {
            if let Some(t) = self.thread.lock().as_ref() {
                t.unpark();
            }
        }
    }
}
