//! Reclamation policy: when idle slots are swept back into their shard's free list. The
//! mechanism (the second chance, the hand) is `Shard::sweep` in `shard.rs`; the table-wide
//! sweeps are `Table::sweep_all` and `Table::sweep_periodic` in `capacity.rs`. Here: the
//! constants, the insert-time sweep with its backoff, and the periodic sweep's timer.

use std::time::Duration;

use crate::engine::core::Core;
use crate::engine::shard::{Shard, ShardInner};
use crate::engine::slot::Slot;
use crate::primitives::clock::duration_ns;
use crate::primitives::sync::{AtomicU64, Ordering};

/// The idle sweep on a slot creation in a shard that already has `idle_per_shard` slots: it looks
/// at up to this many index entries (more, to one turn of the table, while it has seen no slot
/// at all), and stops once it has reclaimed one slot (to reuse for the new key) or, in a shard
/// over its bound, two, so that under a churn of new keys the shard stays at its bound and
/// shrinks back to it after a burst.
pub(crate) const SWEEP_ON_INSERT: usize = 32;
// `Shard::reclaim_for_reuse` relies on it: its budget needs no bound of two turns of the table.
const _: () = assert!(SWEEP_ON_INSERT <= 2 * crate::engine::shard::MIN_TABLE);
/// Default budget of the idle-slot cache per shard, in bytes of slot and index memory
/// (`Builder::idle_bytes` sets the whole table's): 20 KiB, 64 slots of a `u64` key (`slot_cost`,
/// 320 bytes), so 1.25 MiB at the default 64 shards. A shard keeps at most
/// `budget / shards / slot_cost` slots before creations reclaim idle ones (CLOCK: the sweep's
/// hand with a second chance for a slot claimed since its last visit; a creation at the bound
/// also looks in its own probe run and just before its home, `Shard::creation_walk`), and the
/// periodic sweep reclaims only what is beyond that bound. A key reused within a working set
/// below the bound keeps its slot (no insert and remove per acquire).
///
/// Why not larger by default (measured with lockbench, 1 thread, 5 repetitions, two runs each):
/// a 32 MiB budget keeps W2's 100,000 Zipf keys resident, but W2 did not get faster (117-159 ns
/// per op against 118-121 at 1.25 MiB: a fresh manager's first touches dominate the window, and a
/// 32 MB resident set misses the caches anyway), while W4's churn went from 139-166 to 409-467 ns
/// per op (its sweep and index then walk 32 MB of cold memory); 4 MiB was worse on both (170 and
/// 269-341 ns). An embedder whose working set must stay resident sets `idle_bytes` to about
/// `keys * 320` bytes (`idle_bytes(32 << 20)` for 100,000 `u64` keys).
pub(crate) const IDLE_BYTES_PER_SHARD: usize = 64 * 320;

/// How the idle cache is bounded (the builder's choice).
#[derive(Clone, Copy, Debug)]
pub(crate) enum IdleBound {
    /// At most this many bytes of slot and index memory (`slot_cost` per slot).
    Bytes(usize),
    /// At most this many slots.
    Slots(usize),
}

/// Memory one cached slot costs: the slot and its share of the index (kept at most 1/4 full).
pub(crate) const fn slot_cost<K>() -> usize {
    std::mem::size_of::<crate::engine::slot::Slot<K>>() + crate::engine::shard::INDEX_BYTES_PER_SLOT
}

/// Slots a shard keeps before creations reclaim idle ones (at least one, so a byte budget below
/// one slot per shard still keeps one).
pub(crate) fn idle_per_shard<K>(bound: IdleBound, shards: usize) -> usize {
    match bound {
        // Rounded down: the budget is a bound.
        IdleBound::Bytes(bytes) => bytes / slot_cost::<K>() / shards,
        IdleBound::Slots(n) => n.div_ceil(shards),
    }
    .max(1)
}
/// How often the reaper (or `expire_due`) sweeps for idle slots.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);
/// Index entries the periodic sweep looks at per shard per interval: a table of up to this many
/// entries per shard is swept whole every interval (with the second chance, an idle slot then
/// outlives its last use by at most two intervals); a larger one a stretch at a time.
pub(crate) const SWEEP_PER_INTERVAL: usize = 4096;
/// Shards a refusal at the slot bound sweeps a stretch of (`SWEEP_ON_INSERT` entries each), so a
/// refusal costs O(1) however large the table.
pub(crate) const CAPACITY_SWEEP_SHARDS: usize = 8;
/// Most creations an insert-time sweep that found nothing lets pass before it looks again.
const MAX_SWEEP_BACKOFF: u32 = 1024;

/// The insert-time sweep: a slot creation in a shard with `idle_per_shard` slots or more looks at
/// a few index entries for an idle slot first, and reuses the first one it reclaims for the new
/// key in place (no trip through the pool); a shard over its bound (after a burst) reclaims one
/// more into the pool, so it shrinks back. A sweep that found nothing idle backs off
/// (exponentially, up to `MAX_SWEEP_BACKOFF` creations). Under the shard lock; returns the slot to
/// reuse (still counted in `present`: `Shard::reclaim_for_reuse`) and how many slots went to the
/// pool.
#[inline(always)]
pub(crate) fn sweep_on_insert<'s, K>(
    shard: &'s Shard<K>,
    g: &mut ShardInner<K>,
    idle_per_shard: usize,
    core: &Core,
) -> (Option<&'s Slot<K>>, usize) {
    if g.present < idle_per_shard {
        (None, 0)
    } else if g.sweep_skip > 0 {
        g.sweep_skip -= 1;
        (None, 0)
    } else {
        let reused = shard.reclaim_for_reuse(g, SWEEP_ON_INSERT, core, true).map(|(slot, _)| slot);
        // Over the bound (after a burst): one more into the pool, so the shard shrinks back. (The
        // reused slot is still in `present`: without it the shard has `present - 1`.)
        let pooled = if reused.is_some() && g.present > idle_per_shard {
            shard.sweep(g, SWEEP_ON_INSERT, 1, core, false)
        } else {
            0
        };
        back_off(g, reused.is_some());
        (reused, pooled)
    }
}

/// After an insert-time sweep (`sweep_on_insert`, `Shard::creation_walk`): one that reclaimed
/// nothing and saw no idle slot (a shard full of held slots) doubles the creations to let pass
/// before the next, any other resets it.
#[inline(always)]
pub(crate) fn back_off<K>(g: &mut ShardInner<K>, reused: bool) {
    let fruitless = !reused && !g.last_sweep_found_idle;
    g.sweep_backoff = if fruitless { (g.sweep_backoff * 2 + 1).min(MAX_SWEEP_BACKOFF) } else { 0 };
    g.sweep_skip = g.sweep_backoff;
}

/// When the next periodic sweep is due (clock nanoseconds).
pub(crate) struct SweepTimer {
    next_ns: AtomicU64,
}

impl SweepTimer {
    pub(crate) fn new(now: u64) -> Self {
        SweepTimer { next_ns: AtomicU64::new(now.saturating_add(duration_ns(SWEEP_INTERVAL))) }
    }

    /// Clock time of the next periodic sweep (for the reaper thread, which loom models lack).
    #[cfg(not(leasehold_loom))]
    pub(crate) fn next_ns(&self) -> u64 {
        self.next_ns.load(Ordering::Relaxed)
    }

    /// Whether a periodic sweep is due at `now`; true for one caller only per interval (it moves
    /// the timer on).
    pub(crate) fn take_due(&self, now: u64) -> bool {
        let next_sweep = self.next_ns.load(Ordering::Relaxed);
        now >= next_sweep
            && {
                crate::primitives::write_audit::note(&self.next_ns);
                true
            }
            && self
                .next_ns
                .compare_exchange(
                    next_sweep,
                    now.saturating_add(duration_ns(SWEEP_INTERVAL)),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
    }
}

#[cfg(all(test, not(leasehold_loom)))]
mod tests {
    use super::*;

    #[test]
    fn budgets_in_bytes_count_whole_slots() {
        // The default keeps 64 slots of a u64 key per shard; 32 MiB keeps W2's 100,000 keys.
        assert!(slot_cost::<u64>() <= 320, "{}", slot_cost::<u64>());
        assert!(idle_per_shard::<u64>(IdleBound::Bytes(IDLE_BYTES_PER_SHARD * 64), 64) >= 64);
        assert!(idle_per_shard::<u64>(IdleBound::Bytes(32 << 20), 64) * 64 >= 100_000);
        assert_eq!(idle_per_shard::<u64>(IdleBound::Slots(6_400), 64), 100);
        assert_eq!(idle_per_shard::<u64>(IdleBound::Bytes(0), 64), 1);
    }
}
