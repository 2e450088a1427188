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

#![deny(unsafe_code)]

use std::collections::VecDeque;
use std::task::Waker;
use std::time::{Duration, Instant};

use crate::slot::{Ask, Core, Holding, Slot, SlotInner};
use crate::sync::{thread, Arc, AtomicU8, Mutex, Ordering};
use crate::word::{self, OVERFLOW};

/// How long a waiter may lose to bargers before a release hands the lock to it directly, by the
/// manager's clock.
pub(crate) const FAIR_AFTER: Duration = Duration::from_micros(500);
const FAIR_AFTER_NS: u64 = FAIR_AFTER.as_nanos() as u64;

pub(crate) type WaitQueue = VecDeque<Arc<Waiter>>;

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

    fn grant(&self, h: Holding) {
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

/// Queues `waiter` (under the slot lock; the caller has already set `WAITERS` in the word).
pub(crate) fn enqueue<K>(slot: &Slot<K>, waiter: Arc<Waiter>, inner: &mut SlotInner) {
    let exclusive = waiter.ask.mode.is_exclusive();
    inner.queue.push_back(waiter);
    if exclusive {
        slot.word.fetch_or(word::EXCL_WAITING, Ordering::Relaxed);
    }
}

/// Removes `waiter` from the queue (it gave up, or it claimed by itself after a wake-up) and wakes
/// whoever its leaving lets proceed.
pub(crate) fn leave<K>(slot: &Slot<K>, core: &Core, waiter: &Arc<Waiter>, inner: &mut SlotInner) {
    if let Some(pos) = inner.queue.iter().position(|w| Arc::ptr_eq(w, waiter)) {
        inner.queue.remove(pos);
    }
    dispatch(slot, core, inner);
}

/// Wakes the waiters at the front of the queue that the free units can admit, then brings the
/// word's `WAITERS` and `EXCL_WAITING` flags in line with the queue. Under the slot lock.
pub(crate) fn dispatch<K>(slot: &Slot<K>, _core: &Core, inner: &mut SlotInner) {
    let w = slot.word.load(Ordering::Acquire);
    let capacity = slot.capacity.load(Ordering::Relaxed);
    let mut free = capacity.saturating_sub(word::units(w));
    for waiter in inner.queue.iter() {
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
    sync_flags(slot, inner);
}

/// Sets or clears `WAITERS` and `EXCL_WAITING` to match the queue. Under the slot lock (the only
/// place they change), so a plain read-modify-write of those bits is enough.
pub(crate) fn sync_flags<K>(slot: &Slot<K>, inner: &SlotInner) {
    let want_waiters = !inner.queue.is_empty();
    let want_excl = inner.queue.iter().any(|w| w.ask.mode.is_exclusive());
    let w = slot.word.load(Ordering::Relaxed);
    if !want_waiters && w & word::WAITERS != 0 {
        // Release: a reclaimer that sees the slot idle sees the queue's last change.
        slot.word.fetch_and(!word::WAITERS, Ordering::Release);
    }
    if !want_excl && w & word::EXCL_WAITING != 0 {
        slot.word.fetch_and(!word::EXCL_WAITING, Ordering::Release);
    }
    if want_excl && w & word::EXCL_WAITING == 0 {
        slot.word.fetch_or(word::EXCL_WAITING, Ordering::Relaxed);
    }
}

/// A release of `delta` that hands the units straight to an overdue first waiter: one
/// compare-exchange both returns the releaser's units and claims for the waiter, so no barger can
/// slip in between; a claim that finds the four inline records taken gets an overflow record, so
/// this holds for any number of holders. Returns false (nothing done) if the first waiter is not
/// overdue or does not fit; the caller then releases normally.
pub(crate) fn hand_off<K>(slot: &Slot<K>, core: &Core, delta: u64, inner: &mut SlotInner) -> bool {
    let Some(front) = inner.queue.front() else {
        return false;
    };
    if front.state.load(Ordering::Relaxed) != WAITING || !front.is_overdue(core.clock.now_ns()) {
        return false;
    }
    let front = Arc::clone(front);
    let capacity = slot.capacity.load(Ordering::Relaxed);
    let mut w = slot.word.load(Ordering::Acquire);
    let claim = loop {
        let released = w - delta;
        let Ok(claim) = word::try_claim(released, capacity, front.ask.need(true), core.counter_limit) else {
            return false;
        };
        // AcqRel: releases the releaser's critical section and acquires for the waiter, whose
        // Acquire load of its state (after `grant`'s Release) then sees it all.
        match slot.word.compare_exchange_weak(w, claim.word, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => break claim,
            Err(actual) => w = actual,
        }
    };
    let h = if claim.record == OVERFLOW {
        slot.finish_overflow(core, &front.ask, claim, inner)
    } else {
        slot.finish_claim(core, &front.ask, claim, Some(inner))
    };
    inner.queue.pop_front();
    front.grant(h);
    true
}
