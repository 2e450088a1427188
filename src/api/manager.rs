//! The lock manager: configuration, the two lookup paths, expiry driving and idle sweeping.

use std::borrow::Borrow;
use std::fmt;
use std::hash::{BuildHasher, Hash};
use std::sync::Arc;
use std::time::Duration;

use crate::api::fenced::Fenced;
use crate::api::request::Request;
use crate::api::state::State;
use crate::engine::holding::RecordRef;
use crate::engine::slot::Ending;
use crate::engine::table::DefaultHasher;
use crate::engine::word;
use crate::observe::events::EventReceiver;
use crate::observe::inspect::{self, LockInfo};
use crate::observe::metrics::MetricsSnapshot;
use crate::primitives::sync::untracked::Ordering as UntrackedOrdering;
use crate::primitives::sync::Ordering;
use crate::vocab::{FenceToken, LockError, Mode, Owner};

/// A table of locks keyed by resource id.
///
/// Keys are `K: Hash + Eq`, looked up by borrowed key (`&Q` where `K: Borrow<Q>`), so a
/// `LockManager<String>` takes `&str` and allocates only when a new slot must be created. A key
/// has a slot while it is held or waited on; idle slots are reclaimed (a few are cached per shard
/// for reuse), so memory follows the locks held, not the keys ever seen.
///
/// # Examples
///
/// ```
/// use leasehold::{LockError, LockManager};
/// use std::time::Duration;
///
/// let locks: LockManager<String> = LockManager::new();
/// let g = locks.exclusive("orders/17").lease(Duration::from_secs(30)).acquire()?;
/// assert_eq!(locks.shared("orders/17").try_acquire().unwrap_err(), LockError::WouldBlock);
/// let token = g.token();
/// drop(g);
/// let r = locks.shared("orders/17").try_acquire()?;
/// assert!(r.token() > token);
/// # Ok::<(), LockError>(())
/// ```
pub struct LockManager<K, S = DefaultHasher> {
    pub(crate) state: Arc<State<K, S>>,
    /// Sessions and the wait-for graph (touched only by sessions' waits and registrations).
    pub(crate) detector: crate::api::detector::Detector<K>,
}

impl<K> LockManager<K, DefaultHasher>
where
    K: Hash + Eq + Send + Sync + 'static,
{
    /// A manager with the default settings.
    ///
    /// # Panics
    ///
    /// If the reaper thread cannot be spawned (the operating system is out of threads); use
    /// [`builder`](LockManager::builder) to get that as an error.
    ///
    /// # Examples
    ///
    /// ```
    /// let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
    /// assert!(locks.exclusive(&7).try_acquire().is_ok());
    /// ```
    pub fn new() -> Self {
        Self::builder().build().expect("the default configuration is valid and a reaper thread can start")
    }
}

impl<K> Default for LockManager<K, DefaultHasher>
where
    K: Hash + Eq + Send + Sync + 'static,
{
    fn default() -> Self {
        Self::new()
    }
}

impl<K, S> fmt::Debug for LockManager<K, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockManager")
            .field("shards", &self.state.table.shards().len())
            .field("slots", &self.state.table.total_slots())
            .finish_non_exhaustive()
    }
}

impl<K, S> LockManager<K, S>
where
    K: Hash + Eq + Send + Sync + 'static,
    S: BuildHasher + Send + Sync + 'static,
{
    /// A request for `key` alone: no other holder of any mode.
    ///
    /// # Examples
    ///
    /// ```
    /// let locks: leasehold::LockManager<String> = leasehold::LockManager::new();
    /// let g = locks.exclusive("orders/17").try_acquire()?;
    /// assert!(locks.shared("orders/17").try_acquire().is_err());
    /// # Ok::<(), leasehold::LockError>(())
    /// ```
    pub fn exclusive<'m, 'q, Q>(&'m self, key: &'q Q) -> Request<'m, 'q, K, Q, S>
    where
        K: Borrow<Q>,
        Q: ?Sized + Hash + Eq + ToOwned,
        K: From<Q::Owned>,
    {
        Request::new(&self.state, key, Mode::Exclusive)
    }

    /// A request for `key` shared with other shared holders (readers). Writers are not starved:
    /// once an exclusive request is queued, new readers queue behind it.
    ///
    /// # Examples
    ///
    /// ```
    /// let locks: leasehold::LockManager<String> = leasehold::LockManager::new();
    /// let a = locks.shared("cfg").try_acquire()?;
    /// let b = locks.shared("cfg").try_acquire()?;
    /// assert_ne!(a.token(), b.token());
    /// # Ok::<(), leasehold::LockError>(())
    /// ```
    pub fn shared<'m, 'q, Q>(&'m self, key: &'q Q) -> Request<'m, 'q, K, Q, S>
    where
        K: Borrow<Q>,
        Q: ?Sized + Hash + Eq + ToOwned,
        K: From<Q::Owned>,
    {
        Request::new(&self.state, key, Mode::Shared)
    }

    /// A request for one of `permits` permits of `key`: at most `permits` holders at once.
    ///
    /// A live key with another permit count gives [`LockError::PermitMismatch`]; zero permits (or
    /// more than [`MAX_PERMITS`](crate::MAX_PERMITS)) give [`LockError::InvalidPermits`].
    ///
    /// # Examples
    ///
    /// ```
    /// use leasehold::{LockError, LockManager};
    /// let locks: LockManager<String> = LockManager::new();
    /// let a = locks.semaphore("pool", 2).try_acquire()?;
    /// let b = locks.semaphore("pool", 2).try_acquire()?;
    /// assert_eq!(locks.semaphore("pool", 2).try_acquire().unwrap_err(), LockError::WouldBlock);
    /// assert!(matches!(locks.semaphore("pool", 3).try_acquire(), Err(LockError::PermitMismatch { .. })));
    /// # Ok::<(), LockError>(())
    /// ```
    pub fn semaphore<'m, 'q, Q>(&'m self, key: &'q Q, permits: u32) -> Request<'m, 'q, K, Q, S>
    where
        K: Borrow<Q>,
        Q: ?Sized + Hash + Eq + ToOwned,
        K: From<Q::Owned>,
    {
        Request::new(&self.state, key, Mode::Semaphore(permits))
    }

    /// Expires every lease whose deadline has passed and wakes its waiters; also sweeps idle
    /// slots when a sweep is due. Returns how many holdings it expired.
    ///
    /// Call it from your own thread when the manager was built with `.reaper(false)`; with the
    /// default reaper it is not needed (but harmless).
    ///
    /// # Examples
    ///
    /// ```
    /// use leasehold::{LockManager, ManualClock};
    /// use std::time::Duration;
    ///
    /// let clock = ManualClock::new();
    /// let locks = LockManager::<u32>::builder().clock(clock.clone()).reaper(false).build()?;
    /// let g = locks.exclusive(&1).lease(Duration::from_millis(10)).try_acquire()?;
    /// clock.advance(Duration::from_millis(10));
    /// assert_eq!(locks.expire_due(), 1);
    /// assert!(!g.is_held());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn expire_due(&self) -> usize {
        self.state.run_expiry()
    }

    /// Renews the keep-alive leases that are due and runs the queued loss callbacks (elections'
    /// too). Returns how many leases it renewed.
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
        let (renewed, _) = self.state.renew_pass(false);
        self.state.losses.run_callbacks();
        if let Some(elections) = self.state.elections.get() {
            elections.drive();
        }
        renewed
    }

    /// Freezes the keep-alive renewer (and the elections') until the returned guard is dropped,
    /// to test what a starved renewer does: a thread-driven renewer blocks in its next pass; one
    /// driven by `ManualClock::advance` or `renew_due` skips its passes.
    #[doc(hidden)]
    pub fn stall_renewer(&self) -> RenewerStall<'_> {
        let elections = self.state.elections.get().map(|e| e.stall());
        RenewerStall { _main: self.state.renewer.stall(), _elections: elections }
    }

    /// Reclaims every idle slot now (the reaper does this lazily). Returns how many it reclaimed.
    ///
    /// # Examples
    ///
    /// ```
    /// let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
    /// for k in 0..100 {
    ///     drop(locks.exclusive(&k).try_acquire()?);
    /// }
    /// locks.reclaim_idle();
    /// assert_eq!(locks.slot_count(), 0);
    /// # Ok::<(), leasehold::LockError>(())
    /// ```
    pub fn reclaim_idle(&self) -> usize {
        self.state.table.sweep_all(true)
    }

    /// The most idle slots the table keeps cached for reuse (the bound of
    /// [`Builder::idle_bytes`](crate::Builder::idle_bytes) or
    /// [`Builder::idle_slots`](crate::Builder::idle_slots), rounded to whole slots per shard).
    /// Slots held or waited on come on top.
    ///
    /// # Examples
    ///
    /// ```
    /// let locks = leasehold::LockManager::<u64>::builder().shards(64).idle_slots(6_400).build()?;
    /// assert_eq!(locks.idle_slot_bound(), 6_400);
    /// # Ok::<(), leasehold::ConfigError>(())
    /// ```
    pub fn idle_slot_bound(&self) -> usize {
        self.state.table.idle_bound().0
    }

    /// The memory the idle cache may take at most, in bytes: `idle_slot_bound()` slots, each a
    /// slot plus its share of the index. The key's own heap memory (a `String`'s buffer) comes
    /// on top.
    ///
    /// # Examples
    ///
    /// ```
    /// let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
    /// assert!(locks.idle_bytes_bound() <= (20 << 10) * locks.shard_count());
    /// ```
    pub fn idle_bytes_bound(&self) -> usize {
        self.state.table.idle_bound().1
    }

    /// Slots in the table: held, waited on, or idle and cached for reuse.
    ///
    /// # Examples
    ///
    /// ```
    /// let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
    /// let _g = locks.exclusive(&1).try_acquire()?;
    /// assert_eq!(locks.slot_count(), 1);
    /// # Ok::<(), leasehold::LockError>(())
    /// ```
    pub fn slot_count(&self) -> usize {
        self.state.table.total_slots()
    }

    /// A snapshot of the manager's metrics: acquisitions, refusals, timeouts, contention, wait and
    /// hold times, renewals, expiries, revocations, fence rejections, and the live gauges.
    ///
    /// The counters cost the hot path nothing (see [`MetricsSnapshot`]); this call visits every
    /// slot, one shard at a time.
    ///
    /// # Examples
    ///
    /// ```
    /// let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
    /// drop(locks.shared(&1).try_acquire()?);
    /// assert_eq!(locks.metrics().acquisitions, 1);
    /// # Ok::<(), leasehold::LockError>(())
    /// ```
    pub fn metrics(&self) -> MetricsSnapshot {
        self.state.metrics()
    }

    /// Publishes [`metrics`](LockManager::metrics) through the `metrics` crate facade (counters
    /// as absolute values, gauges, and wait and hold quantiles as gauges), for whatever exporter
    /// the application installed. The reaper thread calls it once a second.
    #[cfg(feature = "metrics")]
    pub fn publish_metrics(&self) {
        crate::observe::metrics::publish(&self.metrics());
    }

    /// Who holds `key` and who waits for it; `None` if nobody does.
    ///
    /// # Examples
    ///
    /// ```
    /// let locks: leasehold::LockManager<String> = leasehold::LockManager::new();
    /// assert!(locks.inspect("k").is_none());
    /// let _r = locks.shared("k").try_acquire()?;
    /// assert_eq!(locks.inspect("k").unwrap().holders.len(), 1);
    /// # Ok::<(), leasehold::LockError>(())
    /// ```
    pub fn inspect<Q>(&self, key: &Q) -> Option<LockInfo<K>>
    where
        K: Borrow<Q> + Clone,
        Q: ?Sized + Hash + Eq,
    {
        let hash = self.state.table.hash(key);
        let shard = self.state.table.shard(hash);
        let g = shard.lock();
        let slot = shard.find_locked(&g, hash, key)?;
        let si = slot.lock();
        let description = inspect::describe(slot, &si)?;
        // SAFETY: the shard lock pins the slot.
        Some(description.with_key(unsafe { slot.key() }.clone()))
    }

    /// Every key held or waited on, with its holders and waiters. Visits one shard at a time: it
    /// never stops the whole table, so keys may come and go while it runs.
    ///
    /// # Examples
    ///
    /// ```
    /// let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
    /// let _a = locks.exclusive(&1).try_acquire()?;
    /// let _b = locks.semaphore(&2, 3).try_acquire()?;
    /// let mut keys: Vec<u64> = locks.snapshot().into_iter().map(|i| i.key).collect();
    /// keys.sort();
    /// assert_eq!(keys, [1, 2]);
    /// # Ok::<(), leasehold::LockError>(())
    /// ```
    pub fn snapshot(&self) -> Vec<LockInfo<K>>
    where
        K: Clone,
    {
        let mut out = Vec::new();
        for shard in self.state.table.shards() {
            let g = shard.lock();
            for slot in shard.slots(&g) {
                let si = slot.lock();
                if let Some(description) = inspect::describe(slot, &si) {
                    // SAFETY: the shard lock pins the slot.
                    out.push(description.with_key(unsafe { slot.key() }.clone()));
                }
            }
        }
        out
    }

    /// Subscribes to lock events (acquired, released, renewed, expired, revoked), in a queue of
    /// `capacity` events. A subscriber that falls behind loses events (counted by
    /// [`EventReceiver::dropped`] and in the metrics); it never slows a lock operation. Dropping
    /// the receiver unsubscribes.
    ///
    /// A subscriber hears of the end of every holding whose start it heard of. Of a holding that
    /// began while nobody was subscribed, it may not hear the release: a plain holding, or an
    /// exclusive lease without owner, released by its guard is told only if its start was, so
    /// that with nobody subscribed such a release does not look at the subscriptions at all.
    /// (Nor does such an acquisition: while anyone is subscribed, acquisitions leave the
    /// lock-free path, which is how they are told.)
    ///
    /// # Examples
    ///
    /// ```
    /// use leasehold::EventKind;
    /// let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
    /// let events = locks.subscribe(64);
    /// drop(locks.exclusive(&1).try_acquire()?);
    /// let kinds: Vec<EventKind> = events.drain().map(|e| e.kind).collect();
    /// assert_eq!(kinds, [EventKind::Acquired, EventKind::Released]);
    /// # Ok::<(), leasehold::LockError>(())
    /// ```
    pub fn subscribe(&self, capacity: usize) -> EventReceiver<K>
    where
        K: Clone,
    {
        self.state.events.subscribe(capacity)
    }

    /// Takes back one holding of `key`, the one with fencing token `token`: its unit goes to the
    /// next holder (with a larger token), its guard then behaves as expired, and waiters are woken.
    ///
    /// Only holdings with a lease or an owner label can be revoked; a plain holding is ended by
    /// its guard alone (so its release costs one atomic operation).
    ///
    /// # Errors
    ///
    /// [`LockError::NotHeld`] if no revocable holding of `key` has that token.
    ///
    /// # Examples
    ///
    /// ```
    /// use leasehold::LockError;
    /// let locks: leasehold::LockManager<String> = leasehold::LockManager::new();
    /// let stuck = locks.exclusive("job").owner("host-7").try_acquire()?;
    /// locks.revoke("job", stuck.token())?;
    /// assert!(!stuck.is_held());
    /// assert!(locks.exclusive("job").try_acquire().is_ok());
    /// assert_eq!(stuck.release(), Err(LockError::Expired));
    /// # Ok::<(), LockError>(())
    /// ```
    pub fn revoke<Q>(&self, key: &Q, token: FenceToken) -> Result<(), LockError>
    where
        K: Borrow<Q>,
        Q: ?Sized + Hash + Eq,
    {
        let state = &*self.state;
        let table = &state.table;
        let hash = table.hash(key);
        let shard = table.shard(hash);
        let g = shard.lock();
        let slot = shard.find_locked(&g, hash, key).ok_or(LockError::NotHeld)?;
        let mut si = slot.lock();
        let token = token.as_u64();
        for record in slot.holding_records(&si) {
            if slot
                .force_end(&table.core, record, Ending::Revocation { token: Some(token) }, &mut si, &mut |e| {
                    state.emit_ended(slot, e)
                })
                .is_some()
            {
                return Ok(());
            }
        }
        Err(LockError::NotHeld)
    }

    /// Revokes every holding labelled `owner` (say, of a host that died), shard by shard. Returns
    /// how many it revoked.
    ///
    /// # Examples
    ///
    /// ```
    /// let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
    /// let a = locks.exclusive(&1).owner("host-7").try_acquire()?;
    /// let b = locks.shared(&2).owner("host-7").try_acquire()?;
    /// let c = locks.shared(&2).owner("host-8").try_acquire()?;
    /// assert_eq!(locks.revoke_owner("host-7"), 2);
    /// assert!(!a.is_held() && !b.is_held() && c.is_held());
    /// # Ok::<(), leasehold::LockError>(())
    /// ```
    pub fn revoke_owner(&self, owner: impl Into<Owner>) -> usize {
        let owner = owner.into();
        let state = &*self.state;
        let table = &state.table;
        let mut revoked = 0;
        for shard in table.shards() {
            let g = shard.lock();
            for slot in shard.slots(&g) {
                if word::units(slot.word.load(Ordering::Acquire)) == 0 {
                    continue;
                }
                let mut si = slot.lock();
                let mine: Vec<RecordRef> =
                    slot.holding_records(&si).into_iter().filter(|&r| si.owner(r).as_ref() == Some(&owner)).collect();
                for record in mine {
                    let ended =
                        slot.force_end(&table.core, record, Ending::Revocation { token: None }, &mut si, &mut |e| {
                            state.emit_ended(slot, e)
                        });
                    revoked += usize::from(ended.is_some());
                }
            }
        }
        // The owner's leaderships too (elections keep their own table).
        if let Some(elections) = state.elections.get() {
            revoked += elections.revoke_owner(&owner);
        }
        revoked
    }

    /// A fenced resource whose refused writes count in this manager's metrics.
    ///
    /// # Examples
    ///
    /// ```
    /// use leasehold::FenceToken;
    /// let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
    /// let cell = locks.fenced(0_u32);
    /// cell.write(FenceToken::from_u64(2), |v| *v = 2)?;
    /// assert!(cell.write(FenceToken::from_u64(1), |v| *v = 1).is_err());
    /// assert_eq!(locks.metrics().fence_rejections, 1);
    /// # Ok::<(), leasehold::LockError>(())
    /// ```
    pub fn fenced<T>(&self, value: T) -> Fenced<T> {
        Fenced::counted(value, Arc::clone(&self.state.table.core.stats.fence_rejections))
    }

    /// A one-line dump of a key's slot state, for debugging this crate.
    #[doc(hidden)]
    pub fn debug_state<Q>(&self, key: &Q) -> String
    where
        K: Borrow<Q>,
        Q: ?Sized + Hash + Eq,
    {
        let hash = self.state.table.hash(key);
        let shard = self.state.table.shard(hash);
        let g = shard.lock();
        match shard.find_locked(&g, hash, key) {
            None => "no slot".into(),
            Some(slot) => {
                let si = slot.lock();
                let w = slot.word.load(Ordering::Acquire);
                format!(
                    "word {w:064b} units {} records {:04b} queue {} cap {}",
                    word::units(w),
                    word::records(w),
                    si.queue.len(),
                    slot.capacity.load(Ordering::Relaxed)
                )
            }
        }
    }

    /// Number of shards.
    ///
    /// # Examples
    ///
    /// ```
    /// let locks = leasehold::LockManager::<u64>::builder().shards(8).build()?;
    /// assert_eq!(locks.shard_count(), 8);
    /// # Ok::<(), leasehold::ConfigError>(())
    /// ```
    pub fn shard_count(&self) -> usize {
        self.state.table.shards().len()
    }

    /// The manager's lease clock reading, for comparing with [`LockGuard::expires_at`](crate::LockGuard::expires_at).
    ///
    /// # Examples
    ///
    /// ```
    /// let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
    /// let a = locks.now();
    /// assert!(locks.now() >= a);
    /// ```
    pub fn now(&self) -> Duration {
        Duration::from_nanos(self.state.table.core.clock.now_ns())
    }
}

impl<K, S> Drop for LockManager<K, S> {
    fn drop(&mut self) {
        self.state.shutdown.store(true, UntrackedOrdering::SeqCst);
        self.state.table.core.wheel.wake_driver();
        let handle = self.state.reaper_thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(handle) = handle {
            // The reaper only runs expiry and sweeps; a panic there was already reported.
            let _ = handle.join();
        }
        self.state.renewer.shut_down();
    }
}

/// The guard of [`LockManager::stall_renewer`] (a test hook).
#[doc(hidden)]
pub struct RenewerStall<'a> {
    _main: parking_lot::MutexGuard<'a, ()>,
    _elections: Option<parking_lot::MutexGuard<'a, ()>>,
}

impl fmt::Debug for RenewerStall<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RenewerStall")
    }
}
