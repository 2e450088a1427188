//! The creation walk: at the idle bound, one walk from a new key's home both looks the key up and
//! finds an idle slot in the key's own probe run, whose entry its creation then reuses in place
//! (no removal, no shift, no insert probe), or, when the home is free, an idle slot just before
//! it (removed by a null store: no shift); else the hand's sweep (`reclaim_for_reuse`, here too)
//! reclaims one.

use std::borrow::Borrow;

use super::{Reclaim, Shard, ShardInner, Table, MIN_TABLE};
use crate::engine::core::Core;
use crate::engine::slot::Slot;
use crate::engine::word;
use crate::primitives::sync::Ordering;

/// What `Shard::creation_walk` found.
pub(crate) enum Walk<'a, K> {
    /// The key has a slot (nothing was reclaimed).
    Found,
    /// An idle slot reclaimed for the new key (dead, its key dropped, still counted in
    /// `present`), and the entry where the new slot goes (`Shard::place_at`): the reclaimed slot's
    /// own, when it was in the key's probe run, or else the empty entry that ends the run.
    Reused { slot: &'a Slot<K>, at: usize },
    /// Nothing reclaimed (the caller takes a slot from the pool, and probes again: the table may
    /// grow first).
    Vacant,
}

impl<K> Shard<K> {
    /// The insert-time sweep of a creation at the idle bound, under the shard lock. Walks the
    /// key's probe run from its home: the key, if it has a slot (then nothing changes), and the
    /// first idle slot there. That slot, if it has no zombies and the second chance lets it go,
    /// is reclaimed and its entry kept for the new key: every other key's probe run still passes
    /// it. A key whose run is empty (its home is free) looks at the entry just before its home
    /// instead: that entry ends its cluster, so a slot there that the second chance lets go is
    /// reclaimed and its entry nulled with no shift (no key's run crosses it but into the free
    /// home), and the new slot goes to the home. Else the hand sweeps as `sweep_on_insert` does
    /// (`reclaim_for_reuse`, up to `budget` entries) and the slot it reclaims leaves the index
    /// (`remove_at`). A slot spared is marked
    /// (`Slot::swept`) either way; when nothing was reclaimed, `last_sweep_found_idle` tells the
    /// backoff whether an idle slot was seen (after a reclaim the backoff does not read it).
    ///
    /// So about one creation in four (the share of homes that are taken at a load of at most 1/4)
    /// reclaims a slot in its own probe run, and about one in five (a free home with a slot just
    /// before it) the slot before its home, rather than at the hand, with the same second chance:
    /// a key's home is random, so this is a CLOCK whose hand often jumps (bench/perf5-churn.md,
    /// phase 8).
    #[inline(always)]
    pub(crate) fn creation_walk<Q>(
        &self,
        g: &mut ShardInner<K>,
        hash: u64,
        key: &Q,
        budget: usize,
        core: &Core,
    ) -> Walk<'_, K>
    where
        K: Borrow<Q>,
        Q: ?Sized + Eq,
    {
        let table = self.table(); // only this thread (holding the lock) could swap it
                                  // In locals: the atomic accesses below would otherwise have them loaded again per entry.
        let (entries, mask) = (&*table.entries, table.mask);
        // SAFETY (of every `get_unchecked` below): the index is masked, and
        // `entries.len() == mask + 1` (`Table::with_capacity`).
        let entry_at = |i: usize| unsafe { entries.get_unchecked(i & mask) };
        let home = hash as usize & mask;
        let mut i = home;
        let mut candidate = None;
        loop {
            let entry = entry_at(i);
            let p = entry.slot.load(Ordering::Relaxed);
            if p.is_null() {
                break;
            }
            // SAFETY: slots are type-stable (the module ground rules of `shard.rs`).
            let slot = unsafe { &*p };
            if entry.hash.load(Ordering::Relaxed) == hash
                // SAFETY: slots in the index are live while we hold the shard lock (reclamation
                // needs it), so their keys are initialised and stay put.
                && unsafe { slot.key() }.borrow() == key
            {
                return Walk::Found;
            }
            // A first look (Relaxed: `try_reclaim` loads the word again, with Acquire).
            if candidate.is_none() && word::is_idle(slot.word.load(Ordering::Relaxed)) {
                candidate = Some((i, slot));
            }
            i = (i + 1) & mask;
        }
        let vacancy = i;
        let mut found_idle = false;
        if let Some((at, slot)) = candidate {
            // Kept in the index: the entry stays occupied, so no probe run is cut.
            // Not retired: the creation births it `continued` (`Table::birth`).
            match self.try_reclaim(g, slot, core, true, false) {
                // (`last_sweep_found_idle` is left as it is: only the backoff after a sweep that
                // reclaimed nothing reads it, and every sweep writes it first.)
                Reclaim::Done => return Walk::Reused { slot, at },
                Reclaim::Spared => found_idle = true,
                Reclaim::Busy => {}
            }
        } else if vacancy == home {
            // The key's run is empty (its home is free): the entry just before the home, if it
            // holds a slot, ends its cluster, so its removal shifts nothing (a null store, as
            // `remove_at` ends). An idle slot there is reclaimed as the hand would reclaim it,
            // without the hand's walk to it and its removal's scan; the new slot goes to the home.
            let before = entry_at(home.wrapping_sub(1));
            let p = before.slot.load(Ordering::Relaxed);
            if !p.is_null() {
                // SAFETY: slots are type-stable.
                let slot = unsafe { &*p };
                // Not retired: the creation births it `continued` (`Table::birth`).
                match self.try_reclaim(g, slot, core, true, false) {
                    Reclaim::Done => {
                        // Release, as `remove_at`'s: a reader that loads the null and probes on
                        // misses, and takes the locked path.
                        before.slot.store(std::ptr::null_mut(), Ordering::Release);
                        return Walk::Reused { slot, at: home };
                    }
                    Reclaim::Spared => found_idle = true,
                    Reclaim::Busy => {}
                }
            }
        }
        // Else CLOCK from the hand, as `sweep_on_insert` sweeps. Its removal shifts back the rest
        // of the removed entry's cluster, which may be the cluster of the key's run: the one entry
        // it empties is then the run's first empty, where the new slot goes.
        match self.reclaim_for_reuse_in(g, table, budget, core, false) {
            Some((slot, hole)) => {
                // An empty home (the key's run is empty) is not in any cluster the removal
                // shifted: the new slot goes there.
                let in_run = vacancy != home && (hole.wrapping_sub(home) & mask) < (vacancy.wrapping_sub(home) & mask);
                Walk::Reused { slot, at: if in_run { hole } else { vacancy } }
            }
            None => {
                // Whether either looked at an idle slot it spared (the backoff's question).
                g.last_sweep_found_idle |= found_idle;
                Walk::Vacant
            }
        }
    }

    /// The insert-time sweep: like [`sweep`](Shard::sweep) of one slot, but the slot it reclaims
    /// is returned (dead, out of the index, its key dropped) for the caller to reuse in place,
    /// with no trip through the pool, with the entry its removal emptied (`remove_at`). It stays
    /// counted in `present`: the caller reinserts it (`reinsert`) under the same lock hold.
    /// `retire`: as `try_reclaim`'s (`false`: the caller births it `continued`).
    #[inline(always)]
    pub(crate) fn reclaim_for_reuse(
        &self,
        g: &mut ShardInner<K>,
        budget: usize,
        core: &Core,
        retire: bool,
    ) -> Option<(&Slot<K>, usize)> {
        self.reclaim_for_reuse_in(g, self.table(), budget, core, retire)
    }

    /// `reclaim_for_reuse` in `table`, the current table (only this thread, holding the lock,
    /// could swap it), which the creation walk has loaded already.
    #[inline(always)]
    fn reclaim_for_reuse_in(
        &self,
        g: &mut ShardInner<K>,
        table: &Table<K>,
        budget: usize,
        core: &Core,
        retire: bool,
    ) -> Option<(&Slot<K>, usize)> {
        // The caller's budget is at most twice the smallest table (`sweep.rs`), so it needs no
        // bound of two turns of the table (`sweep`), and the caller sweeps a shard with slots.
        debug_assert!(budget <= 2 * MIN_TABLE && budget > 0 && g.present > 0);
        let (entries, mask) = (&*table.entries, table.mask);
        // The hand in a local, unmasked (every use masks it), written back once: most entries it
        // passes are empty (the table is at most 1/4 full). `present` changes only when a slot is
        // reclaimed, which ends the loop.
        let mut hand = g.hand;
        let mut stop = hand.wrapping_add(budget);
        // A window of empty entries only says nothing about the shard (a sparse table, a gap the
        // creation walk left): the hand then goes on to one turn. Else the creation backs off and
        // grows the shard past its bound (lockbench W4 saw 4,097 slots cached).
        let (mut extended, mut busy, mut found_idle) = (false, false, false);
        let reused = loop {
            if hand == stop {
                if found_idle || busy || extended {
                    break None;
                }
                extended = true;
                stop = hand.wrapping_add((mask + 1).saturating_sub(budget));
                continue;
            }
            // SAFETY: `hand & mask <= mask` and `entries.len() == mask + 1` (`Table::with_capacity`).
            let p = unsafe { entries.get_unchecked(hand & mask) }.slot.load(Ordering::Relaxed);
            if !p.is_null() {
                // SAFETY: slots are type-stable.
                let slot = unsafe { &*p };
                match self.try_reclaim(g, slot, core, true, retire) {
                    // The hand stays if the shift moved another entry into position i, else
                    // it passes the entry the removal emptied.
                    Reclaim::Done => {
                        let hole = self.remove_at(table, hand);
                        if hole == hand & mask {
                            hand = hand.wrapping_add(1);
                        }
                        break Some((slot, hole));
                    }
                    Reclaim::Spared => found_idle = true,
                    Reclaim::Busy => busy = true,
                }
            }
            hand = hand.wrapping_add(1);
        };
        g.hand = hand;
        if reused.is_none() {
            // Only the backoff after a sweep that reclaimed nothing reads it.
            g.last_sweep_found_idle = found_idle;
        }
        reused
    }
}
