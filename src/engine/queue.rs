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

    fn notify(&self) {
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

    /// Removes the first waiter.
    pub(crate) fn pop_front(&mut self) -> Option<Arc<Waiter>> {
        self.waiters.pop_front()
    }

    /// The waiters queued ahead of `waiter`, from the front (all of them if it is not queued).
    pub(crate) fn ahead_of<'a>(&'a self, waiter: &'a Arc<Waiter>) -> impl Iterator<Item = &'a Arc<Waiter>> + 'a {
        self.waiters.iter().take_while(move |w| !Arc::ptr_eq(w, waiter))
    }

    /// The waiters, from the front.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Arc<Waiter>> + '_ {
        self.waiters.iter()
    }

    pub(crate) fn len(&self) -> usize {
        self.waiters.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.waiters.is_empty()
    }

    /// The word's queue flags for this queue (`word::queue_flags`).
    pub(crate) fn flags(&self) -> u64 {
        word::queue_flags(!self.is_empty(), self.waiters.iter().any(|w| w.ask.mode.is_exclusive()))
    }

    /// Wakes the waiters at the front that `free` of `capacity` units can admit; a queued
    /// exclusive request that does not fit stops the walk.
    pub(crate) fn wake_admitted(&self, capacity: u32, mut free: u32) {
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

    /// `wake_admitted` for a matrix key: wakes the waiters at the front whose modes the census
    /// `held` admits, each also beside the ones woken before it (they will hold it too); the
    /// first that does not fit stops the walk (first come, first served).
    pub(crate) fn wake_compatible(&self, mut held: Census) {
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
    /// `now_ns` is the manager's clock (so a manual clock decides it, and loom models stay
    /// deterministic).
    pub(crate) fn overdue_front(&self, now_ns: u64) -> Option<&Arc<Waiter>> {
        self.waiters.front().filter(|front| front.state.load(Ordering::Relaxed) == WAITING && front.is_overdue(now_ns))
    }
}
