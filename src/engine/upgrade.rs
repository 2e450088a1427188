//! Upgradable holders (issue 12): the upgrade of an upgradable holding to exclusive, giving it up,
//! and the downgrades of an exclusive holding, as protocols of one slot.
//!
//! # Ground rules
//!
//! - Each change of the state word here is one named compare-exchange loop over a pure transition
//!   of `word.rs`: [`upgrade_word`](Slot::upgrade_word) (`try_upgrade`, or `begin_upgrade` with
//!   `WAITERS`), [`cancel_upgrade_word`](Slot::cancel_upgrade_word) and
//!   [`downgrade_word`](Slot::downgrade_word). Nothing else here writes the word. On a matrix key
//!   (`matrix.rs`), the upgrade and the downgrades also move the holding between modes of the
//!   key's census, under the same slot lock; giving up an upgrade changes no mode.
//! - Everything runs under the slot lock: the upgrader's registration (`WaitQueue::upgrader`), the
//!   relabelling of the record after an upgrade (token, meta, lease tag) and the record's new mode
//!   after a downgrade. An expirer or revoker (`Slot::force_end`) takes the same lock, so it never
//!   sees one half done; it ends a pending upgrade of the holding it ends (`upgradable_ended`).
//! - No lost wake-up: `upgrade_word` sets `UPGRADING` and `WAITERS` in the compare-exchange loop
//!   that finds readers present, so every later release takes the slow path, and its
//!   `wake_waiters` (under the slot lock) notifies the upgrader once the upgrader's own unit is
//!   the only one held. `UPGRADING` refuses every new shared or upgradable claim and an exclusive
//!   claim needs every unit, so a woken upgrader's upgrade cannot fail for want of units.
//! - Tokens: an upgrade is a new holding for fencing; its compare-exchange advances the
//!   acquisition counter, so its token is larger than every token before it. A downgrade keeps its
//!   token: it only gives rights away, and whatever it fences was already allowed to the
//!   exclusive holding with that token.

use crate::engine::core::Core;
use crate::engine::holding::{meta, Holding};
use crate::engine::lease;
use crate::engine::queue::Waiter;
use crate::engine::slot::{Slot, SlotInner};
use crate::engine::word::{self, Refusal, MAX_UNITS};
use crate::primitives::counters::HOLD_SAMPLE;
use crate::primitives::sync::{Arc, Ordering};
use crate::vocab::compat::Granule;
use crate::vocab::mode::Mode;

/// What an upgrade step found.
#[derive(Debug)]
pub(crate) enum Upgrade {
    /// Exclusive now: the new holding (a larger token, every unit), in the same record.
    Done(Holding),
    /// Readers hold the key too. With a waiter, it is registered as the slot's upgrader and
    /// `UPGRADING` stops new readers; a release notifies it when the last reader leaves.
    Busy,
    /// The holding is gone: expired or revoked.
    Gone,
    /// Its lease deadline passed at this clock reading, though nobody expired it yet: the caller
    /// expires it (so that the upgrade, `is_held` and expiry agree).
    PastDeadline(u64),
    /// The acquisition counter is spent (about 2^32 claims since the slot was last idle) and the
    /// holding itself keeps it from being rebased: release and acquire again.
    Exhausted,
}

impl<K> Slot<K> {
    /// Checks that `h` is still this record's live holding (by its lease word and token).
    fn upgrade_liveness(&self, core: &Core, h: &Holding) -> Result<(), Upgrade> {
        if self.is_bare_and_plain(h) {
            return Ok(());
        }
        let rec = self.record(h);
        let l = rec.lease.load(Ordering::Acquire);
        if lease::state(l) == lease::PLAIN && !h.is_bare() {
            return if lease::tag(l) == lease::tag_of(h.token) { Ok(()) } else { Err(Upgrade::Gone) };
        }
        if !lease::is_held_by(l, h.token) || rec.token.load(Ordering::Relaxed) != h.token {
            return Err(Upgrade::Gone);
        }
        let now = core.clock.now_ns();
        if lease::is_leased(l) && lease::deadline_ns(l) <= now {
            return Err(Upgrade::PastDeadline(now));
        }
        Ok(())
    }

    /// One upgrade step for the upgradable holding `h`, under the slot lock: exclusive at once if
    /// its unit is the only one held; otherwise `Busy`, and with `waiter` the waiter is (or stays)
    /// the slot's upgrader. `on_upgraded(old_token, new)` runs under the slot lock once the
    /// holding is exclusive (the façade moves the loss signal to the new token there, before any
    /// ender can look for it).
    pub(crate) fn upgrade_locked(
        &self,
        core: &Core,
        h: &Holding,
        waiter: Option<&Arc<Waiter>>,
        inner: &mut SlotInner,
        on_upgraded: &mut dyn FnMut(u64, &Holding),
    ) -> Upgrade {
        if let Err(ended) = self.upgrade_liveness(core, h) {
            if let Some(w) = waiter {
                self.cancel_upgrade(w, inner);
            }
            return ended;
        }
        let capacity = self.capacity.load(Ordering::Relaxed);
        match self.upgrade_word(core, capacity, waiter.is_some()) {
            Ok(next) => {
                if waiter.is_some_and(|w| inner.queue.is_upgrader(w)) {
                    inner.queue.take_upgrader();
                }
                if next & word::MATRIX != 0 {
                    // A matrix key's census follows the holding's new mode (under the slot lock,
                    // as every census change).
                    inner.census_mut().reclassify(Granule::U, Granule::X);
                }
                let upgraded = self.relabel_upgraded(core, h, next, capacity);
                on_upgraded(h.token, &upgraded);
                self.sync_queue_flags(inner);
                Upgrade::Done(upgraded)
            }
            Err(Refusal::Busy) => {
                if let Some(w) = waiter {
                    // `upgrade_word` set `UPGRADING` and `WAITERS`; a release that sees them takes
                    // the slot lock we hold, so it finds the upgrader registered.
                    inner.queue.set_upgrader(w);
                    w.rearm();
                }
                Upgrade::Busy
            }
            Err(Refusal::Exhausted) => {
                if let Some(w) = waiter {
                    self.cancel_upgrade(w, inner);
                }
                Upgrade::Exhausted
            }
            Err(Refusal::Unstable) => Upgrade::Gone,
        }
    }

    /// The upgrade's word transition: `word::try_upgrade`, or (with `flag_if_busy`, readers
    /// present) `word::begin_upgrade` plus `WAITERS` in the same loop, so that a release either
    /// came first (the next round upgrades) or sees the flags and wakes the upgrader.
    fn upgrade_word(&self, core: &Core, capacity: u32, flag_if_busy: bool) -> Result<u64, Refusal> {
        let flags = word::UPGRADING | word::WAITERS;
        let mut w = self.word.load(Ordering::Acquire);
        loop {
            let next = match word::try_upgrade(w, capacity, core.counter_limit) {
                Ok(next) => next,
                Err(Refusal::Busy) if flag_if_busy && w & flags != flags => word::begin_upgrade(w) | word::WAITERS,
                Err(refused) => return Err(refused),
            };
            // Acquire: the readers that left released their critical sections to the exclusive
            // holding (pairs with their Release `fetch_sub` in `return_units`).
            match self.word.compare_exchange_weak(w, next, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) if next & word::UP == 0 => return Ok(next),
                Ok(_) => w = next,
                Err(actual) => w = actual,
            }
        }
    }

    /// Writes the record of an upgraded holding: its new token, then its lease word retagged
    /// (keeping state and deadline, so the lease carries over) or its plain word with the new
    /// mode. The old token's lease word no longer matches, so a renewal of the old holding fails.
    fn relabel_upgraded(&self, core: &Core, h: &Holding, next: u64, capacity: u32) -> Holding {
        let rec = self.record(h);
        let token = self.token_of(next);
        rec.token.store(token, Ordering::Relaxed);
        let mut l = rec.lease.load(Ordering::Acquire);
        let managed = lease::state(l) != lease::PLAIN;
        if managed || token % HOLD_SAMPLE == 0 {
            // A new holding: its hold time starts now.
            rec.acquired_ns.store(core.clock.now_ns(), Ordering::Relaxed);
        }
        if managed {
            rec.meta.store(meta(Mode::Exclusive, capacity), Ordering::Relaxed);
            // AcqRel: publishes the token and meta above to whoever reads the new tag (an ender's,
            // a renewal's or inspect's Acquire load); races a renewal's compare-exchange of the
            // old holding on the same word, which only moves the deadline.
            while let Err(actual) =
                rec.lease.compare_exchange(l, lease::retagged(l, token), Ordering::AcqRel, Ordering::Acquire)
            {
                l = actual;
            }
        } else {
            // Only the guard changes a plain holding's word, and the upgrade owns the guard.
            // Release: a reader that sees this word sees the token above.
            rec.lease.store(lease::plain(token, meta(Mode::Exclusive, capacity)), Ordering::Release);
        }
        Holding::new(h.record(), rec, token, capacity, Mode::Exclusive.code(), managed, h.owned())
    }

    /// Gives up a pending upgrade (timeout, a dropped future, a deadlock abort): clears
    /// `UPGRADING` and wakes the readers it held back. Returns false if `waiter` was not (or no
    /// longer) the slot's upgrader.
    pub(crate) fn cancel_upgrade(&self, waiter: &Arc<Waiter>, inner: &mut SlotInner) -> bool {
        if !inner.queue.is_upgrader(waiter) {
            return false;
        }
        inner.queue.take_upgrader();
        self.cancel_upgrade_word();
        self.wake_waiters(inner);
        true
    }

    /// The word transition of giving up an upgrade: `word::cancel_upgrade`.
    fn cancel_upgrade_word(&self) {
        let mut w = self.word.load(Ordering::Acquire);
        loop {
            let next = word::cancel_upgrade(w);
            if next == w {
                return;
            }
            // Release: the readers it lets in next see the holder's critical section so far.
            match self.word.compare_exchange_weak(w, next, Ordering::Release, Ordering::Acquire) {
                Ok(_) => return,
                Err(actual) => w = actual,
            }
        }
    }

    /// An expirer or revoker is ending the upgradable holding (`force_end`, under the slot lock):
    /// ends its pending upgrade, if any (the upgrader is woken and finds its holding gone), and
    /// returns the `UP` bit for the release delta.
    pub(crate) fn upgradable_ended(&self, inner: &mut SlotInner) -> u64 {
        if let Some(upgrader) = inner.queue.take_upgrader() {
            self.cancel_upgrade_word();
            upgrader.notify();
        }
        word::UP
    }

    /// Downgrades the exclusive holding `h` to `to` (`Shared` or `Upgradable`) in one word
    /// transition, under the slot lock, and wakes the waiters the freed units admit (a queued
    /// writer still stops the readers behind it). The token is kept (see the ground rules).
    pub(crate) fn downgrade_locked(
        &self,
        core: &Core,
        h: &Holding,
        to: Mode,
        inner: &mut SlotInner,
    ) -> Result<Holding, Upgrade> {
        self.upgrade_liveness(core, h)?;
        let capacity = self.capacity.load(Ordering::Relaxed);
        debug_assert_eq!(capacity, MAX_UNITS, "the façade refuses downgrades on semaphore keys");
        let rec = self.record(h);
        let mut h = *h;
        // A bare holding (no record; the guard owns it, so no promotion is under way) takes record
        // 0 in the downgrade's own transition: it is free while the bare holding holds alone
        // (word.rs), and the readers the downgrade admits take the others. Written before the
        // bit is set, so every reader that sees the bit sees the record.
        let take = if h.is_bare() {
            rec.token.store(h.token, Ordering::Relaxed);
            rec.lease.store(lease::plain(h.token, meta(to, 1)), Ordering::Relaxed);
            h.bits |= Holding::RECORD_ZERO;
            word::record_bit(0)
        } else {
            0
        };
        if take == 0 {
            // A managed holding's word loses `EXCL` before the downgrade admits anyone: an ender
            // reads an `EXCL` word as its holding's only while the word shows that holding alone
            // (`force_end`), and the guard's one-RMW release is for exclusive holdings only.
            // A compare-exchange: a renewal may move the deadline meanwhile (enders are excluded
            // by the slot lock, which we hold). AcqRel as the upgrade's retag.
            let mut l = rec.lease.load(Ordering::Acquire);
            while lease::state(l) == lease::HELD && lease::is_exclusive(l) {
                match rec.lease.compare_exchange(l, lease::not_exclusive(l), Ordering::AcqRel, Ordering::Acquire) {
                    Ok(_) => break,
                    Err(actual) => l = actual,
                }
            }
        }
        if self.downgrade_word(capacity, to == Mode::Upgradable, take) & word::MATRIX != 0 {
            inner.census_mut().reclassify(Granule::X, to.granule());
        }
        if take == 0 {
            let l = rec.lease.load(Ordering::Acquire);
            if lease::state(l) == lease::PLAIN {
                // Only the guard changes a plain holding's word; the downgrade owns the guard.
                rec.lease.store(lease::plain(h.token, meta(to, 1)), Ordering::Release);
            } else {
                // Read under the slot lock by an ender (`Record::units`), which we exclude.
                rec.meta.store(meta(to, 1), Ordering::Relaxed);
            }
        }
        self.wake_waiters(inner);
        Ok(h.with_mode(to, 1))
    }

    /// The downgrade's word transition: `word::downgrade_to_shared` or
    /// `word::downgrade_to_upgradable`; one compare-exchange gives the units back (and takes
    /// `UP`), so no writer can claim in between.
    /// `take` is record 0's bit for a bare holding, which takes its record in the same step.
    fn downgrade_word(&self, capacity: u32, to_upgradable: bool, take: u64) -> u64 {
        let mut w = self.word.load(Ordering::Acquire);
        loop {
            let next = if to_upgradable {
                word::downgrade_to_upgradable(w, capacity)
            } else {
                word::downgrade_to_shared(w, capacity)
            } | take;
            // Release: the readers it admits see the exclusive holder's writes (and a bare
            // holding's record, written before).
            match self.word.compare_exchange_weak(w, next, Ordering::Release, Ordering::Acquire) {
                Ok(_) => return next,
                Err(actual) => w = actual,
            }
        }
    }
}
