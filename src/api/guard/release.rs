//! The guard's release past its one fast test (`LockGuard::finish`): the service, a sampled hold
//! time, a passed deadline, the `Released` event and the units.

use std::sync::OnceLock;

use super::{LockGuard, HAS_SERVICE};
use crate::engine::lease;
use crate::engine::slot::AlreadyEnded;
use crate::observe::events::EventKind;
use crate::primitives::sync::Ordering;

impl<K, S> LockGuard<'_, K, S> {
    /// Everything `finish`'s one test sends here: a managed, overflow, upgradable or sampled
    /// holding, a guard with a service, or a release someone listens to.
    #[cold]
    #[inline(never)]
    pub(super) fn finish_slow(&self) -> Result<(), AlreadyEnded> {
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
            // the exact clock, as `is_held` reads it: the coarse stamp may lag it by more than
            // its stated resolution (a stress run saw `Ok` after `is_held` said false with it).
            let l = self.slot.lease_word(&h);
            if lease::is_leased(l) {
                let now = core.clock.now_ns();
                if lease::deadline_ns(l) <= now {
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
            Err(AlreadyEnded) => {
                // An expirer or revoker ended the holding and counted this guard as a zombie;
                // this is the guard's last touch of the slot. Release: pairs with the
                // reclaimer's Acquire load of the count.
                self.slot.zombies.fetch_sub(1, Ordering::Release);
                Err(AlreadyEnded)
            }
        }
    }
}
