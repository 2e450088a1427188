//! The expiry driver: the firing side of the `WATCHED` protocol (`engine/watch.rs` has the ground
//! rules and the registering side). It takes the slots whose wheel entries are due, expires the
//! leases past their deadline, registers each slot again at its earliest deadline left, and runs
//! the periodic idle sweep when one is due. Whoever drives time calls it: the reaper thread
//! (`reaper.rs`), `ManualClock::advance`, or the embedder through `LockManager::expire_due`.

use std::hash::{BuildHasher, Hash};

use crate::engine::slot::Slot;
use crate::engine::table::{OnEnded, Table};
use crate::engine::word;
use crate::primitives::sync::Ordering;

/// Fired wheel entries taken per hold of the wheel lock.
const EXPIRY_BATCH: usize = 256;

/// What one run did.
pub(crate) struct Run {
    /// Holdings expired.
    pub(crate) expired: usize,
    /// Whether the periodic sweep ran (the façade then publishes the metrics).
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    pub(crate) swept: bool,
}

/// Runs the wheel up to now, then sweeps if a sweep is due.
pub(crate) fn run_expiry<K, S>(table: &Table<K, S>, on_ended: OnEnded<'_, K>) -> Run
where
    K: Hash + Eq + Send + Sync + 'static,
    S: BuildHasher + Send + Sync + 'static,
{
    let now = table.core.clock.now_ns();
    let now_tick = now / table.core.wheel.tick_ns;
    let mut expired = 0;
    // Fired entries are taken a batch at a time, so the wheel lock is taken once per batch.
    let mut batch = Vec::with_capacity(EXPIRY_BATCH);
    while table.core.wheel.pop_due(now_tick, &mut batch, |a| {
        // SAFETY: wheel entries are addresses of this manager's type-stable slots.
        unsafe { &(*(a as *const Slot<K>)).watch }
    }) {
        // Touch every slot of the batch first: independent loads, so their cache misses
        // overlap instead of coming one after another in the scans below.
        #[cfg(not(leasehold_loom))]
        {
            let mut touched = 0_u64;
            for &addr in &batch {
                // SAFETY: as above.
                let slot = unsafe { &*(addr as *const Slot<K>) };
                touched ^= slot.word.load(Ordering::Relaxed) ^ slot.watch.scheduled.load(Ordering::Relaxed);
                touched ^= slot.swept.load(Ordering::Relaxed);
            }
            std::hint::black_box(touched);
        }
        for &addr in &batch {
            // SAFETY: as above.
            let slot = unsafe { &*(addr as *const Slot<K>) };
            expired += scan_slot(table, slot, addr, now, on_ended);
        }
    }
    let swept = table.sweep_if_due(now);
    Run { expired, swept }
}

/// Step 2 of the expiry protocol (`engine/watch.rs`) for one fired slot.
fn scan_slot<K, S>(table: &Table<K, S>, slot: &Slot<K>, addr: usize, now: u64, on_ended: OnEnded<'_, K>) -> usize {
    // SeqCst: the read-modify-write that splits claims into "scanned here" and "see NONE and
    // register themselves"; SeqCst also orders it after the SeqCst store of `scheduled`.
    let w = slot.word.fetch_and(!word::WATCHED, Ordering::SeqCst);
    if w & word::DEAD != 0 {
        return 0;
    }
    let mut inner = slot.lock();
    let scan = slot.expire_overdue(&table.core, now, w, &mut inner, &mut |e| on_ended(slot, e));
    drop(inner);
    let mut next = scan.earliest;
    if scan.in_flux {
        next = next.min(now.saturating_add(table.core.wheel.tick_ns));
    }
    if next != u64::MAX {
        table.core.wheel.register(&slot.watch, &slot.word, addr, next);
    }
    scan.expired
}
