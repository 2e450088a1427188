//! Keep-alive: one shared renewer per manager that renews the leases of keep-alive holdings.
//!
//! # Ground rules
//!
//! - One renewer per manager, never a thread or task per guard. It keeps a min-heap of
//!   [`KeepAlive`] entries by due time, and renews each at a third of its TTL (as etcd's lease
//!   keep-alive does), through the one renewal step every renewal takes (`Slot::renew`: one
//!   compare-exchange on the lease word). A renewal that comes after the deadline therefore loses
//!   to expiry exactly as a hand renewal does: the lease word's compare-exchange decides.
//! - Who drives it follows the reaper: a background thread (the façade's service thread, started
//!   on the first keep-alive holding, not before), `ManualClock::advance` (after expiry, so a
//!   clock that jumps past a deadline expires the lease, as a starved renewer would), or the
//!   embedder calling `LockManager::renew_due`.
//! - Each entry has a *gate* (a small lock around an "open" flag). The renewer renews an entry
//!   only while holding its gate open; the guard closes the gate before it releases. So no
//!   renewal reaches a released holding, and a renewal never races the guard's own release on
//!   the lease word (the release's compare-exchange would otherwise fail against a renewal and
//!   take the holding for expired). Lock order: gate, then slot lock, then wheel lock.
//! - An entry whose renewal fails (the holding was expired or revoked, or is past its deadline)
//!   is dropped; the expirer or revoker fires the holding's loss signal.

use std::cmp::Ordering as CmpOrdering;
use std::collections::BinaryHeap;
use std::sync::Arc;

use crate::engine::core::Core;
use crate::engine::holding::Holding;
use crate::engine::slot::Slot;
use crate::primitives::counters::ShardStats;
use crate::primitives::sync::untracked::{AtomicBool, AtomicU64 as StdAtomicU64, Ordering as StdOrdering};
use crate::primitives::sync::{Mutex, Ordering};
use crate::vocab::mode::Mode;

/// The fraction of the TTL between renewals: renew when a third of the lease has run, so two
/// renewals in a row can fail (or be late) before the lease runs out.
pub(crate) const RENEW_DIVISOR: u64 = 3;

/// How the renewer is driven (mirrors the reaper's mode).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Drive {
    /// A background thread, started on the first keep-alive holding.
    Thread,
    /// `ManualClock::advance` renews; a thread runs only the loss callbacks.
    ManualClock,
    /// The embedder calls `renew_due`.
    Embedder,
}

/// One keep-alive holding, shared by its guard and the renewer's heap.
pub(crate) struct KeepAlive<K> {
    slot: *const Slot<K>,
    pub(crate) holding: Holding,
    pub(crate) mode: Mode,
    ttl_ns: u64,
    /// Open while the guard lives (see the ground rules).
    gate: Mutex<bool>,
    /// Successful renewals of this holding (a test reads it after the guard is gone).
    renewals: Arc<StdAtomicU64>,
    /// The deadline the last successful renewal (or the acquire) set, in clock nanoseconds.
    trusted_ns: StdAtomicU64,
}

// SAFETY: `slot` points into the manager's type-stable slot memory, which outlives every entry
// (entries live in the manager's renewer and in guards that borrow the manager). The renewer
// dereferences it only to renew, under the open gate, while the guard's holding pins the slot.
unsafe impl<K: Send + Sync> Send for KeepAlive<K> {}
// SAFETY: as above; every other field is atomic or behind a lock.
unsafe impl<K: Send + Sync> Sync for KeepAlive<K> {}

impl<K> KeepAlive<K> {
    pub(crate) fn new(slot: &Slot<K>, holding: Holding, mode: Mode, ttl_ns: u64, deadline_ns: u64) -> Self {
        KeepAlive {
            slot,
            holding,
            mode,
            ttl_ns,
            gate: Mutex::new(true),
            renewals: Arc::new(StdAtomicU64::new(0)),
            trusted_ns: StdAtomicU64::new(deadline_ns),
        }
    }

    /// Closes the gate: no renewal of this holding starts after this returns, and none is in
    /// progress. The guard calls it before it releases.
    pub(crate) fn close(&self) {
        *self.gate.lock() = false;
    }

    /// The deadline of the last successful renewal (or of the acquire).
    pub(crate) fn trusted_ns(&self) -> u64 {
        self.trusted_ns.load(StdOrdering::Acquire)
    }

    /// The lease length it renews to.
    pub(crate) fn ttl_ns(&self) -> u64 {
        self.ttl_ns
    }

    /// A counter of this holding's renewals that outlives the guard.
    pub(crate) fn renewal_counter(&self) -> Arc<StdAtomicU64> {
        Arc::clone(&self.renewals)
    }

    fn period_ns(&self) -> u64 {
        (self.ttl_ns / RENEW_DIVISOR).max(1)
    }

    /// When the first renewal is due: a period after the acquire.
    pub(crate) fn first_due(&self) -> u64 {
        self.trusted_ns().saturating_sub(self.ttl_ns - self.period_ns())
    }
}

/// A heap entry: an entry and when it is due.
struct Due<K> {
    at: u64,
    seq: u64,
    entry: Arc<KeepAlive<K>>,
}

impl<K> PartialEq for Due<K> {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl<K> Eq for Due<K> {}
impl<K> PartialOrd for Due<K> {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}
impl<K> Ord for Due<K> {
    /// Reversed, so that `BinaryHeap` (a max-heap) pops the earliest first.
    fn cmp(&self, other: &Self) -> CmpOrdering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

/// `sleeping_until` while the thread is awake.
pub(crate) const AWAKE: u64 = 0;
/// `sleeping_until` while it sleeps with nothing due.
#[cfg_attr(leasehold_loom, allow(dead_code))] // no service thread under loom
pub(crate) const IDLE: u64 = u64::MAX;
/// Entries renewed per hold of the heap lock.
const BATCH: usize = 256;

/// The manager's renewer (see the module's ground rules).
pub(crate) struct Renewer<K> {
    pub(crate) drive: Drive,
    heap: Mutex<BinaryHeap<Due<K>>>,
    seq: StdAtomicU64,
    /// A renewal pass holds it; the test hook `stall_renewer` takes it to freeze the renewer.
    pass: parking_lot::Mutex<()>,
    /// When the service thread looks at the heap next (`AWAKE`, `IDLE`, or a clock reading).
    pub(crate) sleeping_until: StdAtomicU64,
    pub(crate) started: AtomicBool,
    pub(crate) shutdown: AtomicBool,
    pub(crate) thread: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl<K> Renewer<K> {
    pub(crate) fn new(drive: Drive) -> Self {
        Renewer {
            drive,
            heap: Mutex::new(BinaryHeap::new()),
            seq: StdAtomicU64::new(0),
            pass: parking_lot::Mutex::new(()),
            sleeping_until: StdAtomicU64::new(AWAKE),
            started: AtomicBool::new(false),
            shutdown: AtomicBool::new(false),
            thread: std::sync::Mutex::new(None),
        }
    }

    /// Queues `entry` for a renewal at `at` (clock nanoseconds).
    pub(crate) fn push(&self, at: u64, entry: Arc<KeepAlive<K>>) {
        let seq = self.seq.fetch_add(1, StdOrdering::Relaxed);
        self.heap.lock().push(Due { at, seq, entry });
    }

    /// When the earliest entry is due.
    pub(crate) fn next_due(&self) -> Option<u64> {
        self.heap.lock().peek().map(|d| d.at)
    }

    /// Freezes the renewer until the returned guard drops: a thread-driven renewer blocks in its
    /// next pass; a clock- or embedder-driven one skips its passes.
    pub(crate) fn stall(&self) -> parking_lot::MutexGuard<'_, ()> {
        self.pass.lock()
    }

    /// Stops and joins the service thread (the manager is being dropped).
    pub(crate) fn shut_down(&self) {
        self.shutdown.store(true, StdOrdering::SeqCst);
        let handle = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(handle) = handle {
            handle.thread().unpark();
            // A loss callback that held the last handle on the manager drops it on this very
            // thread: it ends on its own once the callback returns (it sees `shutdown`).
            if handle.thread().id() != std::thread::current().id() {
                // The thread only renews and runs callbacks (which are caught); nothing to report.
                let _ = handle.join();
            }
        }
    }

    /// Renews every entry due at `core`'s clock reading, calling `on_renewed` for each renewal
    /// (under its gate: the holding pins the slot). Returns how many it renewed and when the next
    /// entry is due. A stalled renewer blocks here (`block`) or renews nothing.
    pub(crate) fn renew_due(
        &self,
        core: &Core,
        block: bool,
        on_renewed: &dyn Fn(&Slot<K>, &KeepAlive<K>),
    ) -> (usize, Option<u64>) {
        let _pass = if block {
            self.pass.lock()
        } else {
            match self.pass.try_lock() {
                Some(p) => p,
                None => return (0, None),
            }
        };
        let now = core.clock.now_ns();
        let mut renewed = 0;
        let mut batch = Vec::with_capacity(BATCH);
        loop {
            batch.clear();
            {
                let mut heap = self.heap.lock();
                while batch.len() < BATCH {
                    match heap.peek() {
                        Some(d) if d.at <= now => batch.extend(heap.pop()),
                        _ => break,
                    }
                }
            }
            if batch.is_empty() {
                break;
            }
            for due in batch.drain(..) {
                let entry = due.entry;
                if let Some(next) = renew_entry(core, &entry, on_renewed) {
                    renewed += 1;
                    self.push(next, entry);
                }
            }
        }
        (renewed, self.next_due())
    }
}

/// One renewal under the entry's gate. Returns when it is next due, or `None` to drop it.
fn renew_entry<K>(core: &Core, entry: &KeepAlive<K>, on_renewed: &dyn Fn(&Slot<K>, &KeepAlive<K>)) -> Option<u64> {
    let open = entry.gate.lock();
    if !*open {
        return None;
    }
    // SAFETY: the gate is open, so the guard has not begun its release: its holding (or, if it
    // was expired, its zombie count) pins the slot, and slot memory is type-stable.
    let slot = unsafe { &*entry.slot };
    let deadline = slot.renew(core, &entry.holding, entry.ttl_ns).ok()?;
    entry.renewals.fetch_add(1, StdOrdering::Relaxed);
    // Release: a holder that reads this deadline in `trusted_until` also sees the renewal.
    entry.trusted_ns.store(deadline, StdOrdering::Release);
    ShardStats::bump(&core.stats.of(slot.hash.load(Ordering::Relaxed)).renewals);
    on_renewed(slot, entry);
    drop(open);
    Some(deadline.saturating_sub(entry.ttl_ns).saturating_add(entry.period_ns()))
}
