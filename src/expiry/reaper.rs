//! The reaper thread's loop: run the expiry driver, then sleep until the wheel's next entry or
//! the next sweep is due, or until a registration earlier than that wakes it.

use std::hash::{BuildHasher, Hash};
use std::time::Duration;

use crate::engine::table::Table;
use crate::primitives::sync::untracked::{AtomicBool, Ordering as UntrackedOrdering};

/// Runs until `shutdown` is set; `run` is one run of the driver (`driver::run_expiry` and what
/// the façade does with its result).
#[cfg(not(leasehold_loom))]
pub(crate) fn reaper_loop<K, S>(table: &Table<K, S>, shutdown: &AtomicBool, run: impl Fn() -> usize)
where
    K: Hash + Eq + Send + Sync + 'static,
    S: BuildHasher + Send + Sync + 'static,
{
    let tick = table.core.wheel.tick_ns;
    loop {
        if shutdown.load(UntrackedOrdering::SeqCst) {
            return;
        }
        table.core.wheel.mark_awake();
        run();
        let now = table.core.clock.now_ns();
        let now_tick = now / tick;
        let sweep_tick = (table.total_slots() > 0).then(|| table.sweep_timer.next_ns().div_ceil(tick));
        if shutdown.load(UntrackedOrdering::SeqCst) {
            return;
        }
        match table.core.wheel.prepare_sleep(now_tick, sweep_tick) {
            Some(0) => {}
            Some(t) => std::thread::park_timeout(Duration::from_nanos(t.saturating_sub(now_tick).saturating_mul(tick))),
            None => std::thread::park(),
        }
    }
}
