//! The holder's side of keep-alive and of the loss signal: what a guard carries once it asks.
//!
//! A guard that never asks for keep-alive, an `on_lost` callback, `lost()` or `is_lost()` carries
//! an empty cell and costs nothing more. The first ask attaches a [`LossSignal`] to the holding
//! (`loss.rs`), under the slot lock, after checking that the holding is still live; if it is not,
//! the signal is fired at once with the cause read from the lease word.

use std::hash::{BuildHasher, Hash};
use std::marker::PhantomData;
use std::ptr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::api::loss::{LossCallback, LossCause, LossSignal};
use crate::api::state::State;
use crate::engine::holding::{Holding, Record};
use crate::engine::lease;
use crate::engine::slot::Slot;
use crate::expiry::renewer::KeepAlive;
use crate::primitives::sync::untracked::{AtomicPtr, Ordering as UntrackedOrdering};
use crate::primitives::sync::Ordering;
use crate::vocab::mode::Mode;

/// The lease a keep-alive request gets when it names none (Redisson's watchdog default).
pub(crate) const DEFAULT_KEEP_ALIVE_TTL: Duration = Duration::from_secs(30);

/// What a request asked for beyond the lock itself.
#[derive(Clone, Default)]
pub(crate) struct ServiceAsk {
    pub(crate) keep_alive: bool,
    pub(crate) on_lost: Option<LossCallback>,
}

/// What a guard carries once it asked (see the module docs).
pub(crate) struct GuardService<K> {
    pub(crate) signal: Arc<LossSignal>,
    pub(crate) keep_alive: Option<Arc<KeepAlive<K>>>,
}

/// A guard's service: null until first asked for, then a boxed `OnceLock` the guard owns, freed
/// by its release (`take`). One word that a plain acquire writes once and its release never reads,
/// and no drop glue: a `OnceLock` inline cost every guard its state word and a drop call.
pub(crate) struct ServiceCell<K> {
    ptr: AtomicPtr<OnceLock<GuardService<K>>>,
    /// The cell owns the box `ptr` points at (auto traits and drop check as for the box).
    _owns: PhantomData<Box<OnceLock<GuardService<K>>>>,
}

impl<K> ServiceCell<K> {
    #[inline(always)]
    pub(crate) const fn new() -> Self {
        ServiceCell { ptr: AtomicPtr::new(ptr::null_mut()), _owns: PhantomData }
    }

    /// The same box in a new cell, for a guard that is finishing (`LockGuard::finish`, which has
    /// the guard to itself): the old cell is never read again, and the new one frees the box.
    #[inline]
    pub(crate) fn moved(&mut self) -> *mut OnceLock<GuardService<K>> {
        *self.ptr.get_mut()
    }

    /// A cell owning `p` (null, or a box `moved` gave out).
    #[inline]
    pub(crate) fn owning(p: *mut OnceLock<GuardService<K>>) -> Self {
        ServiceCell { ptr: AtomicPtr::new(p), _owns: PhantomData }
    }

    /// The service, if one was asked for and set up.
    pub(crate) fn get(&self) -> Option<&GuardService<K>> {
        // Acquire: pairs with the Release of the compare-exchange that installed the cell.
        let p = self.ptr.load(UntrackedOrdering::Acquire);
        // SAFETY: non-null, `p` came from `Box::into_raw` in `get_or_install` and is freed only by
        // `take`, which the guard calls once, in its release, when no borrow of it is left.
        (!p.is_null()).then(|| unsafe { &*p }).and_then(OnceLock::get)
    }

    /// The cell, installing an empty one on first use (two threads asking at once agree on one
    /// cell; its `OnceLock` then makes them agree on one service); `true` if this call installed it.
    #[cold]
    pub(crate) fn get_or_install(&self) -> (&OnceLock<GuardService<K>>, bool) {
        let p = self.ptr.load(UntrackedOrdering::Acquire);
        if !p.is_null() {
            // SAFETY: as in `get`.
            return (unsafe { &*p }, false);
        }
        let fresh = Box::into_raw(Box::new(OnceLock::new()));
        // AcqRel: Release publishes the fresh cell to the others' Acquire loads; Acquire on
        // failure sees the winner's.
        match self.ptr.compare_exchange(ptr::null_mut(), fresh, UntrackedOrdering::AcqRel, UntrackedOrdering::Acquire) {
            // SAFETY: installed just now; freed only by `take` (as in `get`).
            Ok(_) => (unsafe { &*fresh }, true),
            Err(winner) => {
                // SAFETY: `fresh` came from `Box::into_raw` above and was never shared.
                drop(unsafe { Box::from_raw(fresh) });
                // SAFETY: non-null (the compare-exchange failed against it); as in `get`.
                (unsafe { &*winner }, false)
            }
        }
    }

    /// Takes the cell out (the guard's release: once, with no other use of the guard left).
    pub(crate) fn take(&self) -> Option<Box<OnceLock<GuardService<K>>>> {
        let p = self.ptr.swap(ptr::null_mut(), UntrackedOrdering::Acquire);
        // SAFETY: non-null, `p` came from `Box::into_raw` in `get_or_install`, and the swap leaves
        // null behind, so it is taken once.
        (!p.is_null()).then(|| unsafe { Box::from_raw(p) })
    }
}

/// The parts of a guard the service needs.
pub(crate) struct HoldingRef<'a, K, S> {
    pub(crate) state: &'a State<K, S>,
    pub(crate) slot: &'a Slot<K>,
    pub(crate) holding: Holding,
}

impl<K, S> HoldingRef<'_, K, S> {
    fn slot_addr(&self) -> usize {
        self.slot as *const Slot<K> as usize
    }

    fn record(&self) -> &Record {
        // SAFETY: `rec` points at one of the slot's records, in type-stable memory that lives as
        // long as the manager the guard borrows.
        unsafe { &*self.holding.rec.0 }
    }

    /// Attaches a loss signal (with `callback`) and maybe a keep-alive entry.
    pub(crate) fn attach(
        &self,
        callback: Option<LossCallback>,
        keep_alive: Option<Arc<KeepAlive<K>>>,
    ) -> GuardService<K> {
        let signal = Arc::new(LossSignal::new(callback));
        let core = &self.state.table.core;
        let token = self.holding.token;
        let rec = self.record();
        let si = self.slot.lock();
        let l = rec.lease.load(Ordering::Acquire);
        let tagged = lease::tag(l) == lease::tag_of(token) && rec.token.load(Ordering::Relaxed) == token;
        // A bare holding (no record) is live while the word shows it (`Slot::is_bare_and_plain`).
        let live = self.slot.is_bare_and_plain(&self.holding)
            || tagged && matches!(lease::state(l), lease::HELD | lease::PLAIN);
        if live {
            // Under the slot lock: an ender of this holding takes the same lock (loss.rs).
            self.state.losses.attach(self.slot_addr(), token, Arc::clone(&signal));
        }
        drop(si);
        if !live {
            // Ended before we attached. An expiring word of ours still shows its deadline.
            let now = core.clock.now_ns();
            let expired = tagged && lease::is_leased(l) && lease::deadline_ns(l) <= now;
            let expired = expired || keep_alive.as_ref().is_some_and(|k| k.trusted_ns() <= now);
            self.state.losses.fire(&signal, if expired { LossCause::Expired } else { LossCause::Revoked });
        }
        GuardService { signal, keep_alive }
    }

    /// The guard is about to release its holding: stop renewals (waiting out one in progress)
    /// and take the signal off the desk (an own release is not a loss).
    pub(crate) fn before_release(&self, service: &GuardService<K>) {
        if let Some(k) = &service.keep_alive {
            k.close();
        }
        self.state.losses.detach(self.slot_addr(), self.holding.token);
    }

    /// See `LockGuard::trusted_until` (clock nanoseconds; `u64::MAX` for no lease).
    pub(crate) fn trusted_until(&self, service: Option<&GuardService<K>>) -> Option<u64> {
        if service.is_some_and(|s| s.signal.cause().is_some()) {
            return None;
        }
        if self.slot.is_bare_and_plain(&self.holding) {
            return Some(u64::MAX);
        }
        let now = self.state.table.core.clock.now_ns();
        let rec = self.record();
        let l = rec.lease.load(Ordering::Acquire);
        let token = self.holding.token;
        if rec.token.load(Ordering::Relaxed) != token || lease::tag(l) != lease::tag_of(token) {
            return None;
        }
        match lease::state(l) {
            lease::PLAIN => Some(u64::MAX),
            lease::HELD if !lease::is_leased(l) => Some(u64::MAX),
            lease::HELD => {
                let real = lease::deadline_ns(l);
                let renewed = service.and_then(|s| s.keep_alive.as_ref()).map_or(real, |k| k.trusted_ns());
                let until = real.min(renewed);
                (until > now).then_some(until)
            }
            _ => None,
        }
    }

    /// The clock's reading now.
    pub(crate) fn now_ns(&self) -> u64 {
        self.state.table.core.clock.now_ns()
    }
}

impl<K, S> HoldingRef<'_, K, S>
where
    K: Hash + Eq + Send + Sync + 'static,
    S: BuildHasher + Send + Sync + 'static,
{
    /// What the request asked for, on a guard just built: the loss signal, and keep-alive
    /// renewals of a leased holding.
    #[cold]
    pub(crate) fn start(&self, ask: &ServiceAsk, ttl_ns: Option<u64>, mode: Mode) -> GuardService<K> {
        let keep_alive = match (ask.keep_alive, ttl_ns, self.slot.deadline_of(&self.holding)) {
            (true, Some(ttl), Some(deadline)) => {
                Some(Arc::new(KeepAlive::new(self.slot, self.holding, mode, ttl, deadline)))
            }
            _ => None,
        };
        let service = self.attach(ask.on_lost.clone(), keep_alive);
        if let Some(k) = &service.keep_alive {
            if service.signal.cause().is_none() {
                self.state.keep_alive(Arc::clone(k));
            }
        }
        if ask.on_lost.is_some() {
            self.state.ensure_service_thread();
        }
        service
    }
}
