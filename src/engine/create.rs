//! Slot creation: a dead slot for a new key (one reclaimed for reuse in place at the idle bound,
//! or one from the pool), its birth (the reborn word, the token base above the shard's high-water
//! mark, the creator's claim) and its publication in the index, all under the shard lock; and
//! `create_plain`, a plain request's miss without the locked path's plumbing.

use std::borrow::Borrow;
use std::hash::{BuildHasher, Hash};

use crate::engine::holding::Holding;
use crate::engine::shard::{Shard, ShardInner, Walk};
use crate::engine::slot::Slot;
use crate::engine::sweep::{back_off, sweep_on_insert, SWEEP_ON_INSERT};
use crate::engine::table::Table;
use crate::engine::word;
use crate::primitives::sync::{MutexGuard, Ordering};
use crate::vocab::Mode;

/// Where `birth` publishes a slot from `dead_slot`.
#[derive(Clone, Copy)]
pub(super) enum Place {
    /// A slot from the pool: a new index entry (`Shard::insert`, which may grow the table and
    /// counts it).
    New,
    /// A slot reclaimed for reuse in place, still counted (`Shard::reinsert`).
    Reused,
}

impl<K, S> Table<K, S>
where
    K: Hash + Eq + Send + Sync + 'static,
    S: BuildHasher + Send + Sync + 'static,
{
    /// A plain request's miss (no slot found by the lock-free lookup): creates the key's slot
    /// under the shard lock, claimed for `mode`, without the locked path's waiter and `Attempt`
    /// plumbing. `None` (nothing done) if the key has a slot after all, at the slot bound, or for
    /// a mode the plain fast path does not take: the caller then takes the locked path. An
    /// exclusive creator holds a bare holding, like the lock-free path's exclusive claims.
    #[inline(always)]
    pub(crate) fn create_plain<Q>(&self, hash: u64, key: &Q, mode: Mode) -> Option<(&Slot<K>, Holding)>
    where
        K: Borrow<Q> + From<Q::Owned>,
        Q: ?Sized + Hash + Eq + ToOwned,
    {
        let need = match mode {
            Mode::Exclusive | Mode::Shared | Mode::Semaphore(_) => {
                word::Need { exclusive: mode.is_exclusive(), privileged: false, watch: false }
            }
            _ => return None,
        };
        let capacity = mode.capacity();
        let claim_of = |start: u64| {
            if let Mode::Exclusive = mode {
                // A bare holding (word.rs), as the lock-free path claims one: every unit of a
                // read/write key and no record, so no record is written. `try_claim_bare`'s claim
                // without its tests: `start` is idle and its counter below the limit (`birth`
                // starts a spent counter from zero, and the limit is at least 1).
                let word = start + word::MAX_UNITS as u64 + word::COUNTER_ONE;
                debug_assert_eq!(word::try_claim_bare(start, self.core.counter_limit), Ok(word));
                word::Claim { word, record: 0, units: word::MAX_UNITS }
            } else {
                word::try_claim(start, capacity, need, self.core.counter_limit)
                    .expect("a fresh slot admits any request")
            }
        };
        let finish = |slot: &Slot<K>, claim: word::Claim| {
            if let Mode::Exclusive = mode {
                slot.finish_bare(&self.core, claim.word)
            } else {
                slot.finish_plain(&self.core, mode, claim)
            }
        };
        let shard = self.shard(hash);
        let mut g = shard.lock();
        // Before anything changes: a panic in the key's conversion leaves the shard as it was.
        let owned = K::from(key.to_owned());
        // At the idle bound (a shard over it shrinks back through `dead_slot`'s sweep), one walk
        // from the key's home looks the key up and reclaims an idle slot for it, in its probe run
        // if it can (the entry is then reused in place).
        if g.present == self.idle_per_shard && g.sweep_skip == 0 {
            match shard.creation_walk(&mut g, hash, key, SWEEP_ON_INSERT, &self.core) {
                // The key has a slot after all (a creator or a reader's miss raced ours).
                Walk::Found => return None,
                Walk::Reused { slot, at } => {
                    back_off(&mut g, true);
                    let claim = self.birth(&mut g, slot, hash, owned, capacity, true, claim_of);
                    // Still counted in `present`; the lock goes with no driver to wake (the slot
                    // replaced one of the shard's, so it is not the shard's first).
                    shard.place_at(&mut g, at, hash, slot, false);
                    drop(g);
                    return Some((slot, finish(slot, claim)));
                }
                Walk::Vacant => back_off(&mut g, false),
            }
        }
        // Else the dead slot first, then one probe that both looks the key up and finds where
        // its new slot goes: the insert-time sweep's removal may move entries of the key's probe
        // run, so a position found before it could be wrong. (An idle slot of this very key may
        // be reclaimed first: the key then gets a new one, its tokens continuing above the
        // shard's high-water mark.)
        let (slot, place) = self.dead_slot(shard, &mut g)?;
        let vacancy = match shard.find_or_vacancy(&g, hash, key) {
            Err(i) => i,
            Ok(_) => {
                // The key has a slot after all.
                shard.unused(&mut g, slot, matches!(place, Place::Reused));
                self.note_reclaimed(1);
                return None;
            }
        };
        let claim = self.birth(&mut g, slot, hash, owned, capacity, false, claim_of);
        shard.place_at(&mut g, vacancy, hash, slot, matches!(place, Place::New));
        self.born(g, place);
        let h = finish(slot, claim);
        Some((slot, h))
    }

    /// A dead slot for a new key, under the shard lock, and where `birth` publishes it: at the
    /// idle bound an idle slot reclaimed for reuse in place (`sweep_on_insert`; still counted
    /// against `max_slots` and in the shard's `present`), else one from the pool, counted first.
    /// `None` at the slot bound.
    #[inline(always)]
    pub(super) fn dead_slot<'s>(&self, shard: &'s Shard<K>, g: &mut ShardInner<K>) -> Option<(&'s Slot<K>, Place)> {
        let (reused, pooled) = sweep_on_insert(shard, g, self.idle_per_shard, &self.core);
        self.note_reclaimed(pooled);
        match reused {
            Some(slot) => Some((slot, Place::Reused)),
            // Counted before it is made (a compare-exchange against the bound), so creators
            // racing on different shards cannot exceed it.
            None if self.reserve_slot() => {
                shard.make_room(g);
                Some((shard.alloc(g), Place::New))
            }
            None => None,
        }
    }

    /// Brings `slot` (dead, from `dead_slot`) to life for `key`, holding the creator's claim
    /// (`claim_of` the word it starts from). Under the shard lock; the caller then publishes it in
    /// the index (`publish`, or `Shard::place_at`). `continued`: reclaimed under this lock hold
    /// by the creation walk, which left its counter out of `retired_acquisitions`
    /// (`Shard::try_reclaim`'s `retire`) and raised the high-water mark to its last token.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    pub(super) fn birth(
        &self,
        g: &mut ShardInner<K>,
        slot: &Slot<K>,
        hash: u64,
        key: K,
        capacity: u32,
        continued: bool,
        claim_of: impl FnOnce(u64) -> word::Claim,
    ) -> word::Claim {
        // The new incarnation continues the dead slot's counter (word.rs: no word repeats), with
        // its token base lowered so that its first token is just above the shard's high-water
        // mark. A spent counter starts again from zero.
        let mut start = word::reborn(slot.word.load(Ordering::Relaxed));
        let counter = word::counter(start);
        if continued {
            // Its last token is at most the high-water mark (the reclaim raised the mark to it),
            // so only a spent counter starts again, and its acquisitions then retire here.
            debug_assert!(counter <= g.high_water);
            if counter >= self.core.counter_limit {
                start = 0;
                g.retired_acquisitions = g.retired_acquisitions.wrapping_add(counter);
            }
        } else {
            if counter >= self.core.counter_limit || counter > g.high_water {
                start = 0;
            }
            // The counter it continues from was counted when the dead slot was reclaimed.
            g.retired_acquisitions = g.retired_acquisitions.wrapping_sub(word::counter(start));
        }
        let base = g.high_water - word::counter(start);
        let claim = claim_of(start);
        // SAFETY: `dead_slot` gave a dead slot of this shard, not in the index; we hold the lock.
        unsafe { slot.init(key, hash, capacity, base, claim.word) };
        // A key used once since its creation gets no second chance from the sweep; one claimed
        // again since (a hot key) does.
        slot.swept.store(claim.word & word::COUNTER_MASK, Ordering::Relaxed);
        claim
    }

    /// Publishes a slot just born (`birth`) in the index, where `dead_slot` said.
    #[inline(always)]
    pub(super) fn publish(shard: &Shard<K>, g: &mut ShardInner<K>, hash: u64, slot: &Slot<K>, place: Place) {
        match place {
            Place::New => shard.insert(g, hash, slot),
            Place::Reused => shard.reinsert(g, hash, slot),
        }
    }

    /// After a birth: releases the shard lock and wakes the driver for a shard's first slot (a
    /// slot from the pool: one reclaimed for reuse in place replaced another of the shard's).
    #[inline(always)]
    pub(super) fn born(&self, g: MutexGuard<'_, ShardInner<K>>, place: Place) {
        let first_in_shard = matches!(place, Place::New) && g.present == 1;
        drop(g);
        if first_in_shard && self.wake_driver_on_first {
            // The reaper sleeps without a sweep timer while the table is empty.
            self.core.wheel.wake_driver_if_idle();
        }
    }
}
