//! The guard's release past its one fast test (`LockGuard::finish`): the service, a sampled hold
//! time, a passed deadline, the `Released` event and the units.

use std::sync::OnceLock;

use super::{LockGuard, HAS_SERVICE};
use crate::engine::holding::{IN_OVERFLOW, MANAGED, MODE_BITS, OWNED, UP_HELD};
use crate::engine::lease;
use crate::engine::slot::AlreadyEnded;
use crate::observe::events::EventKind;
use crate::primitives::sync::Ordering;

impl<K, S> LockGuard<'_, K, S> {
    /// Everything `finish`'s one test sends here: a managed, overflow, upgradable or sampled
    /// holding, a guard with a service, or a release someone listens to. The common lease (no
    /// owner, no service, an inline record, not sampled, nobody listening, the deadline ahead) is
    /// released here without a frame for the rest. (`#[cold]` although every lease comes here:
    /// without it the plain release's loop in the caller is laid out worse, by 1-2
    /// instructions, and the lease's count does not move.)
    #[cold]
    #[inline(never)]
    pub(super) fn finish_slow(&self) -> Result<(), AlreadyEnded> {
        let h = self.current();
        let core = &self.locks.table.core;
        if h.bits & (MANAGED | OWNED | IN_OVERFLOW | UP_HELD | HAS_SERVICE) == MANAGED
            && !h.is_sampled()
            && !self.locks.events.is_active()
        {
            // As `end_holding`, whose deadline test this is: its lease word loaded once, for the
            // deadline and as the compare-exchange's expected value.
            // An exclusive holding: one read-modify-write, on the state word
            // (`release_exclusive_lease`, which takes the word loaded before the lease word).
            let exclusive = h.bits & MODE_BITS == 0;
            let w = if exclusive { self.slot.word.load(Ordering::Acquire) } else { 0 };
            let l = self.slot.lease_word(&h);
            if !lease::is_leased(l) || core.clock.passed(lease::deadline_ns(l)).is_none() {
                let released = if exclusive {
                    self.slot.release_exclusive_lease(core, &h, w, l)
                } else {
                    self.slot.release_lease(core, &h, l)
                };
                return match released {
                    Ok(()) => Ok(()),
                    Err(AlreadyEnded) => self.leave_zombie(),
                };
            }
        }
        self.finish_other()
    }

    /// `finish_slow` past the common lease.
    #[cold]
    #[inline(never)]
    fn finish_other(&self) -> Result<(), AlreadyEnded> {
        // Only a guard that installed a service cell has `HAS_SERVICE` (set in `service_cell`
        // before any `&self` borrow ends, so before this release): the others skip its swap and
        // its drop.
        if self.current().bits & HAS_SERVICE != 0 {
            return self.finish_with_service();
        }
        self.end_holding()
    }

    /// `finish_slow` for a guard with a service cell: the service ends first, and is freed after
    /// the release, as a field would be.
    #[cold]
    #[inline(never)]
    fn finish_with_service(&self) -> Result<(), AlreadyEnded> {
        let service = self.service.take();
        if let Some(service) = service.as_deref().and_then(OnceLock::get) {
            self.holding_ref().before_release(service);
        }
        let ended = self.end_holding();
        drop(service);
        ended
    }

    /// The release of any holding past the service: sampling, a passed deadline, the event, and
    /// the units.
    #[inline]
    fn end_holding(&self) -> Result<(), AlreadyEnded> {
        let h = self.current();
        if h.is_sampled() {
            self.record_hold();
        }
        let core = &self.locks.table.core;
        if h.managed() {
            // Past its deadline, the holding is lost whether or not an expirer came: end it as an
            // expiry, so that release agrees with `is_held` (the compare-exchange of the release
            // below then fails). A renew cannot move the deadline back once it has passed.
            // One load of the lease word (`force_end` checks the holding is still this one) and
            // the clock as `is_held` reads it, exactly: `passed` skips the exact read only when
            // the coarse clock shows the deadline further off than that clock can lag.
            let l = self.slot.lease_word(&h);
            if lease::is_leased(l) {
                if let Some(now) = core.clock.passed(lease::deadline_ns(l)) {
                    self.expire_own(&h, now);
                }
            }
        }
        // Built while the holding still pins the key; sent once the release has won and before
        // the units go back, so that no successor's `Acquired` comes before it.
        let released = match self.prepare(EventKind::Released) {
            None => self.slot.release(core, &h),
            Some(event) => {
                let events = &self.locks.events;
                self.slot.release_then(core, &h, || events.send(event))
            }
        };
        match released {
            Ok(()) => Ok(()),
            Err(AlreadyEnded) => self.leave_zombie(),
        }
    }

    /// An expirer or revoker ended the holding and counted this guard as a zombie; this is the
    /// guard's last touch of the slot.
    #[cold]
    #[inline(never)]
    fn leave_zombie(&self) -> Result<(), AlreadyEnded> {
        // Release: pairs with the reclaimer's Acquire load of the count.
        self.slot.zombies.fetch_sub(1, Ordering::Release);
        Err(AlreadyEnded)
    }
}
