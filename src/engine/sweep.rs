//! Reclamation policy: when idle slots are swept back into their shard's free list. The
//! mechanism (the second chance, the hand) is `Shard::sweep` in `shard.rs`; the table-wide sweeps
//! are `Table::sweep_all` and `Table::sweep_periodic`. Here: the constants, the insert-time sweep
//! with its backoff, and the periodic sweep's timer.

use std::time::Duration;

use crate::engine::core::Core;
use crate::engine::shard::{Shard, ShardInner};
use crate::primitives::clock::duration_ns;
use crate::primitives::sync::{AtomicU64, Ordering};

/// The idle sweep on a slot creation in a shard that already has `idle_per_shard` slots: it looks
/// at up to this many index entries, and stops once it has reclaimed two slots, so that under a
/// churn of new keys the shard stays near its bound and shrinks back to it after a burst.
pub(crate) const SWEEP_ON_INSERT: usize = 32;
const RECLAIM_ON_INSERT: usize = 2;
/// Default bound on the slots a shard keeps before creations start reclaiming idle ones. A key
/// reused within a working set below `shards * idle_per_shard` keeps its slot (no insert and
/// remove per acquire); cyclic reuse over a larger set would evict every slot before its reuse.
pub(crate) const IDLE_PER_SHARD: usize = 64;
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
/// a few index entries for idle slots first; a sweep that found nothing idle backs off
/// (exponentially, up to `MAX_SWEEP_BACKOFF` creations). Under the shard lock; returns how many
/// slots it reclaimed.
pub(crate) fn sweep_on_insert<K>(shard: &Shard<K>, g: &mut ShardInner<K>, idle_per_shard: usize, core: &Core) -> usize {
    if g.present < idle_per_shard {
        0
    } else if g.sweep_skip > 0 {
        g.sweep_skip -= 1;
        0
    } else {
        let n = shard.sweep(g, SWEEP_ON_INSERT, RECLAIM_ON_INSERT, core, false);
        let fruitless = n == 0 && !g.last_sweep_found_idle;
        g.sweep_backoff = if fruitless { (g.sweep_backoff * 2 + 1).min(MAX_SWEEP_BACKOFF) } else { 0 };
        g.sweep_skip = g.sweep_backoff;
        n
    }
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
