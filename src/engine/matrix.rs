//! Claims on a matrix key: a key with a holder in an intention mode (IS, IX, SIX), whose claims
//! the compatibility matrix decides under the slot lock.
//!
//! The state word counts units and cannot tell an intention-exclusive holder from a reader, so an
//! intention request marks the word `MATRIX` (with the census of who holds the key then, read off
//! the word), and from then on every claim on the key, in any mode, comes here: the lock-free
//! claim refuses a `MATRIX` word, and `claim_locked` routes here. A claim is admitted when its
//! mode is compatible with every mode the census counts and, unless it is a woken waiter's retry,
//! with every queued request (so a stream of compatible newcomers cannot starve a queued one);
//! then one compare-exchange takes its units as usual, and the census counts it in. Releases
//! count holdings out (`Slot::count_out`); the last one clears `MATRIX`, and the key is an
//! ordinary key again. See `census.rs` for why the census never counts too few.

use crate::engine::census::Census;
use crate::engine::core::Core;
use crate::engine::holding::{Ask, Holding};
use crate::engine::slot::{Blocked, Slot, SlotInner};
use crate::engine::word::{self, Refusal, MATRIX, OVERFLOW};
use crate::primitives::sync::Ordering;
use crate::vocab::compat::compatible;
use crate::vocab::mode::Mode;

impl<K> Slot<K> {
    /// `claim_locked` for an intention request, or for any request on a matrix key. Under the
    /// slot lock. Refusals as `claim_locked`; with `flag_if_busy`, a refused request's flags go
    /// on the word in the same compare-exchange loop (no lost wake-up), and an intention request
    /// that will queue behind holders makes the key a matrix key, so that newcomers in any mode
    /// are judged against the queue from then on.
    pub(crate) fn claim_in_matrix(
        &self,
        core: &Core,
        ask: &Ask,
        privileged: bool,
        flag_if_busy: bool,
        inner: &mut SlotInner,
    ) -> Result<Holding, Blocked> {
        let g = ask.mode.granule();
        let need = ask.need(privileged);
        let waiting = word::waiting_flags(need.exclusive);
        // Fairness: a newcomer does not pass a queued request it conflicts with.
        let queue_admits = privileged || inner.queue.iter().all(|q| compatible(q.ask.mode.granule(), g));
        let mut w = self.word.load(Ordering::Acquire);
        loop {
            if w & (word::DEAD | word::CAP_CHANGING) != 0 {
                return Err(Blocked::Unstable);
            }
            let cap = self.check_capacity(w, ask.mode)?;
            let census = if w & MATRIX != 0 { inner.census() } else { Census::of_word(w, cap) };
            let claim = if census.admits(g) && queue_admits {
                match claim_word(w, cap, ask, core.counter_limit) {
                    Ok(c) => Some(c),
                    Err(Refusal::Busy) => None,
                    Err(Refusal::Unstable) => return Err(Blocked::Unstable),
                    Err(Refusal::Exhausted) if flag_if_busy => None,
                    Err(Refusal::Exhausted) => return Err(Blocked::Exhausted),
                }
            } else {
                None
            };
            let Some(claim) = claim else {
                if !flag_if_busy {
                    return Err(Blocked::Busy);
                }
                let mark = if ask.mode.is_intention() && census.total() > 0 { MATRIX } else { 0 };
                let flags = waiting | mark;
                if w & flags == flags {
                    return Err(if word::counter(w) >= core.counter_limit {
                        Blocked::Exhausted
                    } else {
                        Blocked::Busy
                    });
                }
                // AcqRel: as in `claim_locked`; a release after this sees the flags and takes the
                // locked path (and, with `MATRIX`, is counted out of the census set here).
                match self.word.compare_exchange_weak(w, w | flags, Ordering::AcqRel, Ordering::Acquire) {
                    Ok(_) => {
                        if w & MATRIX == 0 && mark != 0 {
                            *inner.census_mut() = census;
                        }
                        w |= flags;
                    }
                    Err(actual) => w = actual,
                }
                continue;
            };
            let next = claim.word | if ask.mode.is_intention() { MATRIX } else { 0 };
            // Acquire on success: pairs with the previous holder's Release, as `try_claim`.
            match self.word.compare_exchange_weak(w, next, Ordering::Acquire, Ordering::Acquire) {
                Ok(_) => {
                    if next & MATRIX != 0 {
                        let mut counted = census;
                        counted.add(g);
                        *inner.census_mut() = counted;
                    }
                    return Ok(if claim.record == OVERFLOW {
                        self.finish_overflow(core, ask, claim, inner)
                    } else {
                        self.finish_claim(core, ask, claim, Some(inner))
                    });
                }
                Err(actual) => w = actual,
            }
        }
    }

    /// Counts a holding of mode `mode` (`Mode::code`) out of the census, once its units are back;
    /// the last one out clears `MATRIX`. Under the slot lock.
    pub(crate) fn count_out(&self, mode: u64, inner: &mut SlotInner) {
        let census = inner.census_mut();
        census.remove(Mode::from_code(mode, 0).granule());
        if census.total() == 0 {
            // Release: a reclaimer that sees the slot idle (its Acquire load) sees the census
            // emptied. Nobody else changes `MATRIX` (slot lock), so a plain clear is enough.
            self.word.fetch_and(!MATRIX, Ordering::Release);
        }
    }
}

/// The word of a claim for `ask` on a matrix key's word `w` (units, record, counter), with the
/// census already satisfied; `MATRIX` stays as `w` has it. An upgradable claim also takes `UP`.
fn claim_word(w: u64, cap: u32, ask: &Ask, counter_limit: u64) -> Result<word::Claim, Refusal> {
    if ask.mode == Mode::Upgradable {
        let watch = ask.ttl_ns.is_some();
        return word::try_claim_upgradable(w & !MATRIX, cap, true, watch, counter_limit)
            .map(|c| word::Claim { word: c.word | (w & MATRIX), ..c });
    }
    word::try_claim_in_matrix(w, cap, ask.need(true), counter_limit)
}
