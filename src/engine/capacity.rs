//! The table's capacity and its table-wide sweeps: the slot bound (`max_slots`, counted as slots
//! are created and reclaimed, with a sweep for an idle slot before a refusal), the periodic sweep
//! the expiry driver runs, and `sweep_all`. The per-shard mechanism is `Shard::sweep`; the
//! policy's constants and timer are in `sweep.rs`.

use std::hash::{BuildHasher, Hash};

use crate::engine::sweep::{CAPACITY_SWEEP_SHARDS, SWEEP_ON_INSERT, SWEEP_PER_INTERVAL};
use crate::engine::table::Table;
use crate::primitives::sync::untracked::Ordering as UntrackedOrdering;

impl<K, S> Table<K, S>
where
    K: Hash + Eq + Send + Sync + 'static,
    S: BuildHasher + Send + Sync + 'static,
{
    /// Counts a slot about to be created against `max_slots`; false at the bound.
    pub(super) fn reserve_slot(&self) -> bool {
        let Some(count) = &self.bounded else { return true };
        crate::primitives::write_audit::note(count);
        count
            .fetch_update(UntrackedOrdering::Relaxed, UntrackedOrdering::Relaxed, |n| {
                (n < self.max_slots).then_some(n + 1)
            })
            .is_ok()
    }

    /// At the slot bound: sweeps a stretch of `SWEEP_ON_INSERT` entries of each of the next
    /// `CAPACITY_SWEEP_SHARDS` shards (a cursor goes round the table across calls), stopping at
    /// the first reclaimed slot. Returns how many it reclaimed.
    pub(super) fn sweep_for_capacity(&self) -> usize {
        let n = self.shards().len();
        crate::primitives::write_audit::note(&self.capacity_cursor);
        let start = self.capacity_cursor.fetch_add(CAPACITY_SWEEP_SHARDS, UntrackedOrdering::Relaxed);
        for i in 0..CAPACITY_SWEEP_SHARDS.min(n) {
            let shard = &self.shards()[start.wrapping_add(i) % n];
            let mut g = shard.lock();
            let reclaimed = shard.sweep(&mut g, SWEEP_ON_INSERT, 1, &self.core, true);
            drop(g);
            if reclaimed > 0 {
                self.note_reclaimed(reclaimed);
                return reclaimed;
            }
        }
        0
    }

    /// Keeps the bounded count in step with `n` slots reclaimed.
    pub(crate) fn note_reclaimed(&self, n: usize) {
        if let (Some(count), true) = (&self.bounded, n > 0) {
            crate::primitives::write_audit::note(count);
            count.fetch_sub(n, UntrackedOrdering::Relaxed);
        }
    }

    /// Runs the periodic sweep if one is due at `now` (one caller wins a due sweep). Returns
    /// whether it ran.
    pub(crate) fn sweep_if_due(&self, now: u64) -> bool {
        let due = self.sweep_timer.take_due(now);
        if due {
            self.sweep_periodic();
        }
        due
    }

    /// The periodic sweep: in every shard over its idle bound, a bounded stretch (the hand moves
    /// on from where it stopped), with a second chance for recently used slots, reclaiming down
    /// to the bound, so the reaper never stalls on a huge table and never evicts a working set
    /// that fits the budget. An idle slot beyond the bound outlives its last use by at most two
    /// full turns of the hand.
    fn sweep_periodic(&self) -> usize {
        let mut total = 0;
        for shard in self.shards() {
            if shard.count() <= self.idle_per_shard {
                continue;
            }
            let mut g = shard.lock();
            let excess = g.present.saturating_sub(self.idle_per_shard);
            let n = if excess > 0 { shard.sweep(&mut g, SWEEP_PER_INTERVAL, excess, &self.core, false) } else { 0 };
            drop(g);
            self.note_reclaimed(n);
            total += n;
        }
        total
    }

    /// Sweeps every shard for idle slots (`thorough`: no second chance). Returns how many it reclaimed.
    pub(crate) fn sweep_all(&self, thorough: bool) -> usize {
        self.sweep_shards(usize::MAX, thorough)
    }

    /// Sweeps up to `budget` index entries of each shard, one shard lock at a time.
    fn sweep_shards(&self, budget: usize, thorough: bool) -> usize {
        let mut total = 0;
        for shard in self.shards() {
            let mut g = shard.lock();
            let n = shard.sweep(&mut g, budget, usize::MAX, &self.core, thorough);
            drop(g);
            self.note_reclaimed(n);
            total += n;
        }
        total
    }
}
