//! Waiting: the per-slot wait queue, who is woken when units come back, and the hand-off that
//! makes waiting eventually fair.
//!
//! Policy, in the manner of parking_lot: a running thread may barge (take free units although
//! others wait), because handing every release to a parked thread costs a wake-up per hand-off.
//! A release wakes exactly the queued waiters, from the front, that the free units can now admit
//! (a queued exclusive request stops the walk, so readers behind a writer stay asleep); a woken
//! waiter retries and, if it loses to a barger, sleeps again in its place. A waiter that has waited
//! longer than [`FAIR_AFTER`] is not woken to retry but handed the units directly by the release,
//! so nobody waits forever.
//!
//! The queue computes which flags the state word must carry for it (`WaitQueue::flags`); the
//! slot writes them (`Slot::enqueue`, `Slot::wake_waiters`, `Slot::hand_off` in `slot.rs`)
//! through the pure transitions of `word.rs`, so this file never touches the word.

#![deny(unsafe_code)]

use std::collections::VecDeque;
use std::task::Waker;
use std::time::{Duration, Instant};

use crate::engine::census::Census;
use crate::engine::holding::{Ask, Holding};
use crate::engine::word;
use crate::primitives::sync::{thread, Arc, AtomicU8, Mutex, Ordering};

/// How long a waiter may lose to bargers before a release hands the lock to it directly, by the
/// manager's clock.
pub(crate) const FAIR_AFTER: Duration = Duration::from_micros(500);
const FAIR_AFTER_NS: u64 = FAIR_AFTER.as_nanos() as u64;

/// A slot's queue of waiting requests, in arrival order. It lives under the slot lock; the slot
/// keeps the word's `WAITERS` and `EXCL_WAITING` flags equal to [`flags`](WaitQueue::flags).
///
/// At most one *upgrader* (the upgradable holder waiting for the readers to leave, `upgrade.rs`)
/// stands at the front. While it waits (the word's `UPGRADING`) no other request can claim, so a
/// release wakes it alone, once its own unit is the only one held. (It lives in the queue rather
/// than beside it so that the slot does not grow.)
#[derive(Default)]
pub(crate) struct WaitQueue {
    waiters: VecDeque<Arc<Waiter>>,
}

/// Parked, waiting for a wake-up.
const WAITING: u8 = 0;
/// Woken to retry; still in the queue, where its request reserves the units it needs.
const NOTIFIED: u8 = 1;
/// Handed a holding by a release; removed from the queue.
const GRANTED: u8 = 2;

/// One queued request.
pub(crate) struct Waiter {
    pub(crate) ask: Ask,
    state: AtomicU8,
    /// When it first queued (real time), for the wait-time metrics and introspection.
    since: Instant,
    /// When it first queued by the manager's clock, for the fairness hand-off.
    queued_ns: u64,
    wake: Wake,
    grant: Mutex<Option<Holding>>,
    /// An upgrade's waiter (it asks for exclusive, holding one unit already).
    upgrade: bool,
}

enum Wake {
    Thread(thread::Thread),
    Task(Mutex<Option<Waker>>),
}

impl Waiter {
    /// A waiter that parks the current thread.
    pub(crate) fn for_thread(ask: Ask, now_ns: u64) -> Arc<Self> {
        Arc::new(Waiter {
            ask,
            state: AtomicU8::new(WAITING),
            since: Instant::now(),
            queued_ns: now_ns,
            wake: Wake::Thread(thread::current()),
            grant: Mutex::new(None),
            upgrade: false,
        })
    }

    /// A waiter that wakes a task.
    pub(crate) fn for_task(ask: Ask, waker: Waker, now_ns: u64) -> Arc<Self> {
        Arc::new(Waiter {
            ask,
            state: AtomicU8::new(WAITING),
            since: Instant::now(),
            queued_ns: now_ns,
            wake: Wake::Task(Mutex::new(Some(waker))),
            grant: Mutex::new(None),
            upgrade: false,
        })
    }

    /// The waiter of an upgrade: it wakes `waker`'s task, or without one parks the current
    /// thread. It shows as an exclusive waiter (in `inspect`), first in line.
    pub(crate) fn for_upgrade(waker: Option<Waker>, now_ns: u64) -> Arc<Self> {
        Arc::new(Waiter {
            ask: Ask { mode: crate::vocab::mode::Mode::Exclusive, ttl_ns: None, owner: None },
            state: AtomicU8::new(WAITING),
            since: Instant::now(),
            queued_ns: now_ns,
            wake: match waker {
                Some(w) => Wake::Task(Mutex::new(Some(w))),
                None => Wake::Thread(thread::current()),
            },
            grant: Mutex::new(None),
            upgrade: true,
        })
    }

    /// How long it has been queued (real time).
    pub(crate) fn waited(&self) -> Duration {
        self.since.elapsed()
    }

    /// Whether it is still parked, not woken.
    pub(crate) fn is_waiting(&self) -> bool {
        self.state.load(Ordering::Acquire) == WAITING
    }

    /// Whether a release woke it to retry (it is still queued, not handed the lock).
    pub(crate) fn is_notified(&self) -> bool {
        self.state.load(Ordering::Acquire) == NOTIFIED
    }

    /// Takes the holding a release handed it, if any.
    pub(crate) fn take_grant(&self) -> Option<Holding> {
        // Acquire: pairs with the Release in `grant`, so the holding's record is visible.
        if self.state.load(Ordering::Acquire) == GRANTED {
            self.grant.lock().take()
        } else {
            None
        }
    }

    /// Back to parked after a lost retry (under the slot lock).
    pub(crate) fn rearm(&self) {
        let _ = self.state.compare_exchange(NOTIFIED, WAITING, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// Replaces the task's waker (a future polled from another task).
    pub(crate) fn set_waker(&self, waker: &Waker) {
        if let Wake::Task(slot) = &self.wake {
            let mut slot = slot.lock();
            if !slot.as_ref().is_some_and(|w| w.will_wake(waker)) {
                *slot = Some(waker.clone());
            }
        }
    }

    pub(crate) fn notify(&self) {
        // Release: the waiter's Acquire load sees the units this release returned.
        self.state.store(NOTIFIED, Ordering::Release);
        self.wake();
    }

    /// Hands the waiter a holding claimed for it (it has been removed from the queue).
    pub(crate) fn grant(&self, h: Holding) {
        *self.grant.lock() = Some(h);
        self.state.store(GRANTED, Ordering::Release);
        self.wake();
    }

    fn wake(&self) {
        match &self.wake {
            Wake::Thread(t) => t.unpark(),
            Wake::Task(w) => {
                // Taken, not cloned: the task re-registers when it polls and finds it must wait.
                // Woken outside the waker lock: a waker may run the task inline.
                let waker = w.lock().take();
                if let Some(waker) = waker {
                    waker.wake();
                }
            }
        }
    }

    /// Whether it has waited long enough to be handed the lock, at `now_ns` on the manager's
    /// clock (so a manual clock decides it; loom models stay deterministic).
    fn is_overdue(&self, now_ns: u64) -> bool {
        now_ns.saturating_sub(self.queued_ns) >= FAIR_AFTER_NS
    }
}

impl WaitQueue {
    /// Queues `waiter` at the back. Returns the flags the word must gain for it (its claim loop
    /// set `WAITERS` already; an exclusive waiter adds `EXCL_WAITING`).
    pub(crate) fn push(&mut self, waiter: Arc<Waiter>) -> u64 {
        let exclusive = waiter.ask.mode.is_exclusive();
        self.waiters.push_back(waiter);
        if exclusive {
            word::EXCL_WAITING
        } else {
            0
        }
    }

    /// Removes `waiter` (it gave up, or it claimed by itself after a wake-up). Returns whether it
    /// was queued.
    pub(crate) fn remove(&mut self, waiter: &Arc<Waiter>) -> bool {
        let pos = self.waiters.iter().position(|w| Arc::ptr_eq(w, waiter));
        if let Some(pos) = pos {
            self.waiters.remove(pos);
        }
        pos.is_some()
    }

    /// Registers the upgrader (the word's `UPGRADING` is set with it). Returns false if it was
    /// registered already.
    pub(crate) fn set_upgrader(&mut self, waiter: &Arc<Waiter>) -> bool {
        debug_assert!(waiter.upgrade, "an upgrader is made by `Waiter::for_upgrade`");
        if self.is_upgrader(waiter) {
            return false;
        }
        self.waiters.push_front(Arc::clone(waiter));
        true
    }

    /// The upgrader, if one waits.
    fn upgrader(&self) -> Option<&Arc<Waiter>> {
        self.waiters.front().filter(|w| w.upgrade)
    }

    /// Takes the upgrader out (it upgraded, gave up, or its holding ended).
    pub(crate) fn take_upgrader(&mut self) -> Option<Arc<Waiter>> {
        self.upgrader()?;
        self.waiters.pop_front()
    }

    /// Whether `waiter` is the registered upgrader.
    pub(crate) fn is_upgrader(&self, waiter: &Arc<Waiter>) -> bool {
        self.upgrader().is_some_and(|u| Arc::ptr_eq(u, waiter))
    }

    /// Removes the first waiter.
    pub(crate) fn pop_front(&mut self) -> Option<Arc<Waiter>> {
        self.waiters.pop_front()
    }

    /// The waiters queued ahead of `waiter`, from the front (all of them if it is not queued).
    pub(crate) fn ahead_of<'a>(&'a self, waiter: &'a Arc<Waiter>) -> impl Iterator<Item = &'a Arc<Waiter>> + 'a {
        self.waiters.iter().take_while(move |w| !Arc::ptr_eq(w, waiter))
    }

    /// The waiters, from the front (an upgrader, which asks for exclusive, first).
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Arc<Waiter>> + '_ {
        self.waiters.iter()
    }

    pub(crate) fn len(&self) -> usize {
        self.waiters.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.waiters.is_empty()
    }

    /// The word's queue flags for this queue (`word::queue_flags`). A waiting upgrader needs
    /// `WAITERS` (so that every release takes the slow path and can wake it), not
    /// `EXCL_WAITING`: its `UPGRADING` already stops every new reader.
    pub(crate) fn flags(&self) -> u64 {
        word::queue_flags(!self.is_empty(), self.waiters.iter().any(|w| w.ask.mode.is_exclusive() && !w.upgrade))
    }

    /// Wakes the waiters at the front that `free` of `capacity` units can admit; a queued
    /// exclusive request that does not fit stops the walk. While an upgrader waits nobody else
    /// can claim: it alone is woken, once its own unit is the only one held.
    pub(crate) fn wake_admitted(&self, capacity: u32, mut free: u32) {
        if self.wake_upgrader(capacity, free) {
            return;
        }
        for waiter in self.waiters.iter() {
            let exclusive = waiter.ask.mode.is_exclusive();
            let fits = if exclusive { free == capacity } else { free >= 1 };
            if !fits {
                break;
            }
            free = if exclusive { 0 } else { free - 1 };
            // A notified waiter is retrying already: it keeps its reservation, nobody else is woken for it.
            if waiter.state.load(Ordering::Relaxed) == WAITING {
                waiter.notify();
            }
        }
    }

    /// While an upgrader waits, it alone may be woken, and only once its own unit is the only one
    /// held (`free == capacity - 1`). Returns whether an upgrader waits.
    fn wake_upgrader(&self, capacity: u32, free: u32) -> bool {
        let Some(up) = self.upgrader() else { return false };
        if free == capacity - 1 && up.state.load(Ordering::Relaxed) == WAITING {
            up.notify();
        }
        true
    }

    /// `wake_admitted` for a matrix key: wakes the waiters at the front whose modes the census
    /// `held` admits, each also beside the ones woken before it (they will hold it too); the
    /// first that does not fit stops the walk (first come, first served). A waiting upgrader is
    /// woken as in `wake_admitted`, by units: it needs every other holder gone.
    pub(crate) fn wake_compatible(&self, mut held: Census, capacity: u32, free: u32) {
        if self.wake_upgrader(capacity, free) {
            return;
        }
        for waiter in self.waiters.iter() {
            let g = waiter.ask.mode.granule();
            if !held.admits(g) {
                break;
            }
            held.add(g);
            if waiter.state.load(Ordering::Relaxed) == WAITING {
                waiter.notify();
            }
        }
    }

    /// The first waiter, if a release should hand it the units directly: it is parked (not
    /// already retrying) and has waited longer than [`FAIR_AFTER`].
    /// `now_ns` reads the manager's clock (so a manual clock decides it, and loom models stay
    /// deterministic); it is read only if the first waiter is parked, so a release while the
    /// first waiter is already retrying reads no clock.
    pub(crate) fn overdue_front(&self, now_ns: impl FnOnce() -> u64) -> Option<&Arc<Waiter>> {
        self.waiters
            .front()
            .filter(|front| front.state.load(Ordering::Relaxed) == WAITING && front.is_overdue(now_ns()))
    }
}
