//! The state a manager shares with its requests, guards and reaper: the engine's table, the
//! event bus, and the reaper thread. The façade's glue between the engine and observation: it
//! turns what the engine reports (an ended holding, a queued waiter) into events and traces.

use std::hash::{BuildHasher, Hash};
use std::sync::{Arc, OnceLock, Weak};

use crate::api::loss::LossDesk;

use crate::engine::holding::{Holding, TOLD};
use crate::engine::queue::Waiter;
use crate::engine::slot::{Ended, Slot, SlotInner};
use crate::engine::table::{Attempt, Table};
use crate::expiry::driver;
use crate::expiry::renewer::{Drive, KeepAlive, Renewer};
use crate::observe::events::{EventBus, EventKind};
use crate::observe::metrics::{self, MetricsSnapshot};
use crate::primitives::clock::{duration_ns, TimeListener};
use crate::primitives::counters::ShardStats;
use crate::primitives::sync::untracked::{AtomicBool, Ordering as UntrackedOrdering};
use crate::primitives::sync::{Arc as SyncArc, Ordering};
use crate::vocab::{Mode, Owner};

pub(crate) struct State<K, S> {
    /// This state's own `Arc`, weakly (for the service thread, started from a guard).
    pub(crate) me: Weak<State<K, S>>,
    pub(crate) table: Table<K, S>,
    pub(crate) events: EventBus<K>,
    /// How `tracing` output names a key (see `Builder::describe_keys`).
    #[cfg_attr(not(feature = "tracing"), allow(dead_code))]
    pub(crate) describe_key: Option<fn(&K) -> String>,
    /// Set when the manager is dropped: the reaper thread stops.
    pub(crate) shutdown: AtomicBool,
    pub(crate) reaper_thread: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Loss signals of holdings whose holders asked for one, and their queued callbacks.
    pub(crate) losses: LossDesk,
    /// The keep-alive renewer (`expiry/renewer.rs`).
    pub(crate) renewer: Renewer<K>,
    /// The election table, made on the first `elect` (`election.rs`). Known here only through
    /// [`ElectionTable`], because the election module builds on the manager, which builds on this.
    pub(crate) elections: OnceLock<Box<dyn ElectionTable>>,
}

/// What the manager needs from its election table.
pub(crate) trait ElectionTable: Send + Sync {
    /// Revokes the tenures of `owner` (from `revoke_owner`).
    fn revoke_owner(&self, owner: &Owner) -> usize;
    /// An embedder's pass: expiry and renewals of the election table.
    fn drive(&self);
    /// Freezes the election table's renewer (the `stall_renewer` test hook).
    fn stall(&self) -> parking_lot::MutexGuard<'_, ()>;
    /// For the election module to find its own type again.
    fn as_any(&self) -> &dyn std::any::Any;
}

impl<K, S> State<K, S>
where
    K: Hash + Eq + Send + Sync + 'static,
    S: BuildHasher + Send + Sync + 'static,
{
    /// The engine's locked path ([`Table::attempt`]), with events for the expired blockers it
    /// ends and a trace of a queued wait.
    pub(crate) fn attempt<Q>(
        &self,
        hash: u64,
        key: &Q,
        ask: &crate::engine::holding::Ask,
        waiter: Option<&dyn Fn() -> SyncArc<Waiter>>,
    ) -> Attempt<'_, K>
    where
        K: std::borrow::Borrow<Q> + From<Q::Owned>,
        Q: ?Sized + Hash + Eq + ToOwned,
    {
        let attempt = self.table.attempt(hash, key, ask, waiter, &|slot, e| self.emit_ended(slot, e));
        #[cfg(feature = "tracing")]
        if let Attempt::Queued(slot, _) = &attempt {
            self.trace("waiting", slot, None, ask.owner.as_ref());
        }
        attempt
    }

    /// A queued waiter's retry after a wake-up ([`Table::retry_queued`]), under the slot lock.
    pub(crate) fn retry_queued(&self, slot: &Slot<K>, waiter: &SyncArc<Waiter>, si: &mut SlotInner) -> Option<Holding> {
        self.table.retry_queued(slot, waiter, si, &|slot, e| self.emit_ended(slot, e))
    }

    /// Runs the expiry driver up to now (and publishes the metrics after a periodic sweep).
    pub(crate) fn run_expiry(&self) -> usize {
        let run = driver::run_expiry(&self.table, &|slot, e| self.emit_ended(slot, e));
        #[cfg(feature = "metrics")]
        if run.swept {
            metrics::publish(&self.metrics());
        }
        run.expired
    }

    /// See [`LockManager::metrics`](crate::LockManager::metrics).
    pub(crate) fn metrics(&self) -> MetricsSnapshot {
        metrics::collect(&self.table, self.events.dropped.load(UntrackedOrdering::Relaxed))
    }

    /// The reaper thread's body.
    #[cfg(not(leasehold_loom))]
    pub(crate) fn reaper_loop(self: std::sync::Arc<Self>) {
        crate::expiry::reaper::reaper_loop(&self.table, &self.shutdown, || self.run_expiry());
    }

    /// Counts an acquisition that had to wait, and how long it waited.
    pub(crate) fn count_contended(&self, slot: &Slot<K>, waiter: &Waiter) {
        let stats = self.table.core.stats.of(slot.hash.load(Ordering::Relaxed));
        ShardStats::bump(&stats.contended);
        stats.wait.record(duration_ns(waiter.waited()));
    }

    /// Tells subscribers that a holding began (the caller holds it, so the key is pinned), and
    /// returns it marked `TOLD` if anyone listened: its guard's release then tells them of its
    /// end, and a guard unheard of releases without loading the event flag (`LockGuard::finish`).
    /// Every guard is built from what this returns, or by `LockGuard::changed`.
    #[inline(always)]
    #[must_use]
    pub(crate) fn emit_acquired(&self, slot: &Slot<K>, h: Holding, mode: Mode, owner: Option<&Owner>) -> Holding {
        if self.events.is_active() {
            self.emit(EventKind::Acquired, slot, h.token, mode, owner.cloned());
            return Holding { bits: h.bits | TOLD, ..h };
        }
        h
    }

    /// Tells subscribers about a holding event. The slot must be pinned.
    #[cold]
    pub(crate) fn emit(&self, kind: EventKind, slot: &Slot<K>, token: u64, mode: Mode, owner: Option<Owner>) {
        // SAFETY: the caller has the slot pinned (it holds the holding, or an expirer has not yet
        // returned its units).
        let key = unsafe { slot.key() };
        self.events.emit(kind, key, mode, token, owner, self.table.core.clock.now_ns());
    }

    /// A slow-path trace event (the `tracing` feature), naming the key if the slot is pinned.
    #[cfg(feature = "tracing")]
    #[cold]
    pub(crate) fn trace(&self, what: &str, slot: &Slot<K>, token: Option<u64>, owner: Option<&Owner>) {
        // SAFETY: callers have the slot pinned.
        let key = self.describe_key.map(|d| d(unsafe { slot.key() }));
        let hash = slot.hash.load(Ordering::Relaxed);
        tracing::debug!(target: "leasehold", key = key.as_deref().unwrap_or("?"), key_hash = hash, token, owner = owner.map(Owner::as_str), "{what}");
    }

    /// Tells the holder (its loss signal) and subscribers that an expirer or revoker ended a
    /// holding (called before its units go back).
    pub(crate) fn emit_ended(&self, slot: &Slot<K>, e: &Ended) {
        self.losses.holding_ended(slot as *const Slot<K> as usize, e.token, e.expired);
        #[cfg(feature = "tracing")]
        self.trace(if e.expired { "lease expired" } else { "holding revoked" }, slot, Some(e.token), e.owner.as_ref());
        if self.events.is_active() {
            let mode = Mode::from_code(e.meta & Mode::CODE_MASK, slot.capacity.load(Ordering::Relaxed));
            let kind = if e.expired { EventKind::Expired } else { EventKind::Revoked };
            self.emit(kind, slot, e.token, mode, e.owner.clone());
        }
    }
}

impl<K, S> TimeListener for State<K, S>
where
    K: Hash + Eq + Send + Sync + 'static,
    S: BuildHasher + Send + Sync + 'static,
{
    fn time_advanced(&self) {
        self.run_expiry();
        // After expiry: a clock that jumped past a deadline lost the lease, as a late renewer would.
        self.renew_pass(false);
    }
}

impl<K, S> State<K, S>
where
    K: Hash + Eq + Send + Sync + 'static,
    S: BuildHasher + Send + Sync + 'static,
{
    /// One pass of the keep-alive renewer (`block`: wait out a stall; else skip while stalled).
    /// Returns how many leases it renewed and when the next one is due.
    pub(crate) fn renew_pass(&self, block: bool) -> (usize, Option<u64>) {
        self.renewer.renew_due(&self.table.core, block, &|slot, entry| {
            if self.events.is_active() {
                let owner = if entry.holding.owned() { slot.owner_of(&entry.holding) } else { None };
                self.emit(EventKind::Renewed, slot, entry.holding.token, entry.mode, owner);
            }
        })
    }

    /// Starts renewing `entry` (its guard was just built).
    pub(crate) fn keep_alive(&self, entry: Arc<KeepAlive<K>>) {
        let this = self;
        let at = entry.first_due();
        this.renewer.push(at, entry);
        self.ensure_service_thread();
        // SeqCst: pairs with the service thread's store of `sleeping_until` then its re-check of
        // the heap: either it sees our entry, or we see it asleep past `at` and wake it.
        if this.renewer.drive == Drive::Thread && at < this.renewer.sleeping_until.load(UntrackedOrdering::SeqCst) {
            this.losses.wake_runner();
        }
    }

    /// Starts the service thread (renewals with the reaper thread; loss callbacks with the reaper
    /// thread or a manual clock) if this manager has one and it is not running yet.
    pub(crate) fn ensure_service_thread(&self) {
        let this = self;
        let renewer = &this.renewer;
        if renewer.drive == Drive::Embedder || renewer.started.load(UntrackedOrdering::Acquire) {
            return;
        }
        #[cfg(not(leasehold_loom))]
        {
            let mut slot = renewer.thread.lock().unwrap_or_else(|e| e.into_inner());
            if renewer.started.swap(true, UntrackedOrdering::AcqRel) {
                return;
            }
            let weak = this.me.clone();
            // If the thread cannot start, keep-alive holdings are not renewed: their leases run
            // out and their loss signals fire, which is how their holders learn of it.
            if let Ok(handle) =
                std::thread::Builder::new().name("leasehold-renewer".into()).spawn(move || service_loop(weak))
            {
                this.losses.set_runner(handle.thread().clone());
                *slot = Some(handle);
            }
        }
    }
}

/// The service thread: renews what is due (thread drive) and runs queued loss callbacks.
#[cfg(not(leasehold_loom))]
fn service_loop<K, S>(weak: Weak<State<K, S>>)
where
    K: Hash + Eq + Send + Sync + 'static,
    S: BuildHasher + Send + Sync + 'static,
{
    use crate::expiry::renewer::{AWAKE, IDLE};
    use std::time::Duration;
    loop {
        let Some(state) = weak.upgrade() else { return };
        let renewer = &state.renewer;
        if renewer.shutdown.load(UntrackedOrdering::SeqCst) {
            return;
        }
        renewer.sleeping_until.store(AWAKE, UntrackedOrdering::SeqCst);
        state.losses.run_callbacks();
        let timeout = if renewer.drive == Drive::Thread {
            let (_, next) = state.renew_pass(true);
            let until = next.unwrap_or(IDLE);
            // SeqCst: store-then-check here against push-then-load in `keep_alive`.
            renewer.sleeping_until.store(until, UntrackedOrdering::SeqCst);
            if renewer.next_due().is_some_and(|f| f < until) {
                continue;
            }
            next.map(|n| Duration::from_nanos(n.saturating_sub(state.table.core.clock.now_ns())))
        } else {
            renewer.sleeping_until.store(IDLE, UntrackedOrdering::SeqCst);
            None
        };
        if state.losses.has_callbacks() || renewer.shutdown.load(UntrackedOrdering::SeqCst) {
            continue;
        }
        drop(state);
        match timeout {
            Some(t) if t.is_zero() => {}
            Some(t) => std::thread::park_timeout(t),
            None => std::thread::park(),
        }
    }
}
