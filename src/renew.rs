//! Keep-alive: one shared renewer per manager that renews the leases of keep-alive holdings.
//!
//! # Ground rules
//!
//! - One renewer per manager, never a thread or task per guard. It keeps a min-heap of
//!   [`KeepAlive`] entries by due time, and renews each at a third of its TTL (as etcd's lease
//!   keep-alive does), through the one renewal step every renewal takes (`Slot::renew`: one
//!   compare-exchange on the lease word). A renewal that comes after the deadline therefore loses
//!   to expiry exactly as a hand renewal does: the lease word's compare-exchange decides.
//! - Who drives it follows the reaper: a background thread (started on the first keep-alive
//!   holding, not before), `ManualClock::advance` (after expiry, so a clock that jumps past a
//!   deadline expires the lease, as a starved renewer would), or the embedder calling
//!   [`LockManager::renew_due`](crate::LockManager::renew_due). The same thread runs the queued
//!   loss callbacks (`loss.rs`), with no lock held.
//! - Each entry has a *gate* (a small lock around an "open" flag). The renewer renews an entry
//!   only while holding its gate open; the guard closes the gate before it releases. So no
//!   renewal reaches a released holding, and a renewal never races the guard's own release on
//!   the lease word (the release's compare-exchange would otherwise fail against a renewal and
//!   take the holding for expired). Lock order: gate, then slot lock, then wheel lock.
//! - An entry whose renewal fails (the holding was expired or revoked, or is past its deadline)
//!   is dropped; the expirer or revoker fires the holding's loss signal.

use std::cmp::Ordering as CmpOrdering;
use std::collections::BinaryHeap;
use std::hash::{BuildHasher, Hash};
use std::sync::atomic::{AtomicBool, AtomicU64 as StdAtomicU64, Ordering as StdOrdering};
use std::sync::{Arc, Weak};

use crate::events::EventKind;
use crate::manager::Inner;
use crate::metrics::ShardStats;
use crate::mode::Mode;
use crate::slot::{Holding, Slot};
use crate::sync::{Mutex, Ordering};

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
    holding: Holding,
    mode: Mode,
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

    /// A counter of this holding's renewals that outlives the guard.
    pub(crate) fn renewal_counter(&self) -> Arc<StdAtomicU64> {
        Arc::clone(&self.renewals)
    }

    fn period_ns(&self) -> u64 {
        (self.ttl_ns / RENEW_DIVISOR).max(1)
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
const AWAKE: u64 = 0;
/// `sleeping_until` while it sleeps with nothing due.
#[cfg_attr(leasehold_loom, allow(dead_code))] // no service thread under loom
const IDLE: u64 = u64::MAX;
/// Entries renewed per hold of the heap lock.
const BATCH: usize = 256;

/// The manager's renewer (see the module's ground rules).
pub(crate) struct Renewer<K> {
    pub(crate) drive: Drive,
    heap: Mutex<BinaryHeap<Due<K>>>,
    seq: StdAtomicU64,
    /// A renewal pass holds it; the test hook `stall_renewer` takes it to freeze the renewer.
    pass: parking_lot::Mutex<()>,
    /// When the thread will look at the heap next (`AWAKE`, `IDLE`, or a clock reading).
    sleeping_until: StdAtomicU64,
    started: AtomicBool,
    shutdown: AtomicBool,
    thread: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
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

    fn push(&self, at: u64, entry: Arc<KeepAlive<K>>) {
        let seq = self.seq.fetch_add(1, StdOrdering::Relaxed);
        self.heap.lock().push(Due { at, seq, entry });
    }

    /// Freezes the renewer until the returned guard drops: a thread-driven renewer blocks in its
    /// next pass; a clock- or embedder-driven one skips its passes.
    pub(crate) fn stall(&self) -> parking_lot::MutexGuard<'_, ()> {
        self.pass.lock()
    }

    /// Stops and joins the thread (the manager is being dropped).
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
}

impl<K, S> Inner<K, S>
where
    K: Hash + Eq + Send + Sync + 'static,
    S: BuildHasher + Send + Sync + 'static,
{
    /// Starts renewing `entry` (its guard was just built). `this` is the manager's `Arc`, for the
    /// thread started on the first keep-alive holding.
    pub(crate) fn keep_alive(this: &Arc<Self>, entry: Arc<KeepAlive<K>>) {
        let renewer = &this.renewer;
        let at = entry.trusted_ns().saturating_sub(entry.ttl_ns - entry.period_ns());
        renewer.push(at, entry);
        Self::ensure_service_thread(this);
        // SeqCst: pairs with the thread's store of `sleeping_until` then its re-check of the heap
        // in `service_loop`: either it sees our entry, or we see it asleep past `at` and wake it.
        if renewer.drive == Drive::Thread && at < renewer.sleeping_until.load(StdOrdering::SeqCst) {
            this.core.losses.wake_runner();
        }
    }

    /// Starts the service thread if this manager's mode has one and it is not running yet.
    pub(crate) fn ensure_service_thread(this: &Arc<Self>) {
        let renewer = &this.renewer;
        if renewer.drive == Drive::Embedder || renewer.started.load(StdOrdering::Acquire) {
            return;
        }
        #[cfg(not(leasehold_loom))]
        {
            let mut slot = renewer.thread.lock().unwrap_or_else(|e| e.into_inner());
            if renewer.started.swap(true, StdOrdering::AcqRel) {
                return;
            }
            let weak = Arc::downgrade(this);
            // If the thread cannot start, keep-alive holdings are not renewed: their leases run
            // out and their loss signals fire, which is how their holders learn of it.
            if let Ok(handle) =
                std::thread::Builder::new().name("leasehold-renewer".into()).spawn(move || service_loop(weak))
            {
                this.core.losses.set_runner(handle.thread().clone());
                *slot = Some(handle);
            }
        }
    }

    /// Renews every keep-alive entry due at the clock's reading. Returns how many it renewed and
    /// when the next entry is due (`None`: none queued). A stalled renewer blocks here (thread
    /// drive) or renews nothing (`block == false`).
    pub(crate) fn renew_due_entries(&self, block: bool) -> (usize, Option<u64>) {
        let renewer = &self.renewer;
        let _pass = if block {
            renewer.pass.lock()
        } else {
            match renewer.pass.try_lock() {
                Some(p) => p,
                None => return (0, None),
            }
        };
        let now = self.core.clock.now_ns();
        let mut renewed = 0;
        let mut batch = Vec::with_capacity(BATCH);
        loop {
            batch.clear();
            {
                let mut heap = renewer.heap.lock();
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
                if let Some(next) = self.renew_entry(&entry) {
                    renewed += 1;
                    renewer.push(next, entry);
                }
            }
        }
        let next = renewer.heap.lock().peek().map(|d| d.at);
        (renewed, next)
    }

    /// One renewal under the entry's gate. Returns when it is next due, or `None` to drop it.
    fn renew_entry(&self, entry: &KeepAlive<K>) -> Option<u64> {
        let open = entry.gate.lock();
        if !*open {
            return None;
        }
        // SAFETY: the gate is open, so the guard has not begun its release: its holding (or, if
        // it was expired, its zombie count) pins the slot, and slot memory is type-stable.
        let slot = unsafe { &*entry.slot };
        let deadline = slot.renew(&self.core, &entry.holding, entry.ttl_ns).ok()?;
        entry.renewals.fetch_add(1, StdOrdering::Relaxed);
        // Release: a holder that reads this deadline in `trusted_until` also sees the renewal.
        entry.trusted_ns.store(deadline, StdOrdering::Release);
        ShardStats::bump(&self.core.stats.of(slot.hash.load(Ordering::Relaxed)).renewals);
        if self.events.is_active() {
            let owner = if entry.holding.owned { slot.owner_of(&entry.holding) } else { None };
            self.emit(EventKind::Renewed, slot, entry.holding.token, entry.mode, owner);
        }
        drop(open);
        Some(deadline.saturating_sub(entry.ttl_ns).saturating_add(entry.period_ns()))
    }
}

/// The service thread: renews what is due (thread drive) and runs queued loss callbacks.
#[cfg(not(leasehold_loom))]
fn service_loop<K, S>(weak: Weak<Inner<K, S>>)
where
    K: Hash + Eq + Send + Sync + 'static,
    S: BuildHasher + Send + Sync + 'static,
{
    loop {
        let Some(inner) = weak.upgrade() else { return };
        let renewer = &inner.renewer;
        if renewer.shutdown.load(StdOrdering::SeqCst) {
            return;
        }
        renewer.sleeping_until.store(AWAKE, StdOrdering::SeqCst);
        inner.core.losses.run_callbacks();
        let timeout = if renewer.drive == Drive::Thread {
            let (_, next) = inner.renew_due_entries(true);
            let until = next.unwrap_or(IDLE);
            // SeqCst: store-then-check here against push-then-load in `keep_alive`.
            renewer.sleeping_until.store(until, StdOrdering::SeqCst);
            let first = renewer.heap.lock().peek().map(|d| d.at);
            if first.is_some_and(|f| f < until) {
                continue;
            }
            next.map(|n| std::time::Duration::from_nanos(n.saturating_sub(inner.core.clock.now_ns())))
        } else {
            renewer.sleeping_until.store(IDLE, StdOrdering::SeqCst);
            None
        };
        if inner.core.losses.has_callbacks() || renewer.shutdown.load(StdOrdering::SeqCst) {
            continue;
        }
        drop(inner);
        match timeout {
            Some(t) if t.is_zero() => {}
            Some(t) => std::thread::park_timeout(t),
            None => std::thread::park(),
        }
    }
}

#[cfg(leasehold_loom)]
#[allow(dead_code)]
fn service_loop<K, S>(_weak: Weak<Inner<K, S>>) {}

impl<K, S> crate::LockManager<K, S>
where
    K: Hash + Eq + Send + Sync + 'static,
    S: BuildHasher + Send + Sync + 'static,
{
    /// Renews the keep-alive leases that are due and runs the queued loss callbacks. Returns how
    /// many leases it renewed.
    ///
    /// Call it from your own thread, at least every third of your shortest keep-alive TTL, when
    /// the manager was built with `.reaper(false)`; otherwise the manager's renewer does this
    /// itself (a thread, or `ManualClock::advance`), and this call only adds a pass.
    ///
    /// # Examples
    ///
    /// ```
    /// use leasehold::{LockManager, ManualClock};
    /// use std::time::Duration;
    ///
    /// let clock = ManualClock::new();
    /// let locks = LockManager::<u32>::builder().clock(clock.clone()).reaper(false).build()?;
    /// let g = locks.exclusive(&1).lease(Duration::from_secs(3)).keep_alive().try_acquire()?;
    /// clock.advance(Duration::from_secs(1));
    /// assert_eq!(locks.renew_due(), 1);
    /// assert_eq!(g.expires_at(), Some(locks.now() + Duration::from_secs(3)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn renew_due(&self) -> usize {
        let (renewed, _) = self.inner.renew_due_entries(false);
        self.inner.core.losses.run_callbacks();
        if let Some(elections) = self.inner.elections.get() {
            elections.drive();
        }
        renewed
    }

    /// Freezes the keep-alive renewer until the returned guard is dropped, to test what a starved
    /// renewer does: a thread-driven renewer blocks in its next pass; one driven by
    /// `ManualClock::advance` or `renew_due` skips its passes. Elections' renewer too.
    #[doc(hidden)]
    pub fn stall_renewer(&self) -> RenewerStall<'_> {
        let elections = self.inner.elections.get().map(|e| e.stall());
        RenewerStall { _main: self.inner.renewer.stall(), _elections: elections }
    }
}

/// The guard of [`LockManager::stall_renewer`](crate::LockManager::stall_renewer) (a test hook).
#[doc(hidden)]
pub struct RenewerStall<'a> {
    _main: parking_lot::MutexGuard<'a, ()>,
    _elections: Option<parking_lot::MutexGuard<'a, ()>>,
}

impl std::fmt::Debug for RenewerStall<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RenewerStall")
    }
}
