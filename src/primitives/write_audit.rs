//! The shared-write audit (issue 11, P10): in the crate's own test build, every write to state
//! shared beyond one slot (a shard's lock or stats, the timer wheel, a manager-wide counter or
//! timer, the event bus) notes the cache line it writes, per thread. Outside `cfg(test)`, `note`
//! is an empty inline function: release builds pay nothing.
//!
//! What it is for: on the uncontended path, keys in distinct shards must write no common cache
//! line (slot lines are private to their key), so that 64 cores on 64 keys do not bounce lines.
//! `api/write_audit_tests.rs` checks it: it runs uncontended operations on keys of distinct
//! shards and asserts that no line is written for two keys, and that what one key writes is at
//! most its own shard's hold-time sample. A new global counter or shard-wide write on the fast
//! path makes it fail. Call sites: `Shard::lock`, `ShardStats::bump`, `Histogram::record`,
//! `Wheelhouse`'s wheel lock, `Table::bounded`, `SweepTimer::take_due`, `EventBus::send`.

/// Notes a write to the cache line holding `at`.
#[inline(always)]
pub(crate) fn note<T>(at: *const T) {
    #[cfg(all(test, not(leasehold_loom)))]
    imp::note(at as usize >> 6);
    #[cfg(not(all(test, not(leasehold_loom))))]
    let _ = at;
}

#[cfg(all(test, not(leasehold_loom)))]
pub(crate) use imp::take;

#[cfg(all(test, not(leasehold_loom)))]
mod imp {
    use std::cell::RefCell;
    use std::collections::HashMap;

    thread_local! {
        static LINES: RefCell<HashMap<usize, u64>> = RefCell::new(HashMap::new());
    }

    pub(super) fn note(line: usize) {
        LINES.with(|l| *l.borrow_mut().entry(line).or_default() += 1);
    }

    /// This thread's noted writes since the last `take`: cache line -> writes.
    pub(crate) fn take() -> HashMap<usize, u64> {
        LINES.with(|l| std::mem::take(&mut *l.borrow_mut()))
    }
}
