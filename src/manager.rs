//! The lock manager: configuration, the two lookup paths, expiry driving and idle sweeping.

use std::borrow::Borrow;
use std::fmt;
use std::hash::{BuildHasher, Hash};
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use crate::clock::{duration_ns, Clock, ClockSource, MonotonicClock, TimeListener};
use crate::election::Elections;
use crate::error::{ConfigError, LockError};
use crate::events::{EventBus, EventKind, EventReceiver};
use crate::expiry::Wheelhouse;
use crate::inspect::{self, LockInfo};
use crate::loss::LossDesk;
use crate::metrics::{MetricsSnapshot, ShardStats, Stats};
use crate::mode::{Mode, Owner};
use crate::renew::{Drive, Renewer};
use crate::request::Request;
use crate::slot::{Ask, Blocked, Core, Ended, Holding, RecordRef, Slot, SlotInner};
use crate::sync::{Arc as SyncArc, AtomicU64, Ordering};
use crate::table::{key_matches, Shard};
use crate::token::Fenced;
use crate::wait::{self, Waiter};
use crate::word::{self, COUNTER_MAX};

/// The hasher a manager uses unless told otherwise: foldhash's, seeded per process (fast, and
/// resistant enough to chosen keys for a lock table).
#[cfg(not(leasehold_loom))]
pub type DefaultHasher = foldhash::fast::RandomState;
/// Under loom, a fixed seed: loom replays each execution step by step and needs every run of a
/// model to hash (and so to probe and sweep) the same way.
#[cfg(leasehold_loom)]
pub type DefaultHasher = foldhash::fast::FixedState;

/// The idle sweep on a slot creation in a shard that already has `idle_per_shard` slots: it looks
/// at up to this many index entries, and stops once it has reclaimed two slots, so that under a
/// churn of new keys the shard stays near its bound and shrinks back to it after a burst.
const SWEEP_ON_INSERT: usize = 32;
const RECLAIM_ON_INSERT: usize = 2;
/// Default bound on the slots a shard keeps before creations start reclaiming idle ones. A key
/// reused within a working set below `shards * idle_per_shard` keeps its slot (no insert and
/// remove per acquire); cyclic reuse over a larger set would evict every slot before its reuse.
const IDLE_PER_SHARD: usize = 64;
/// How often the reaper (or `expire_due`) sweeps for idle slots.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);
/// Index entries the periodic sweep looks at per shard per interval: a table of up to this many
/// entries per shard is swept whole every interval (with the second chance, an idle slot then
/// outlives its last use by at most two intervals); a larger one a stretch at a time.
const SWEEP_PER_INTERVAL: usize = 4096;
/// Most creations an insert-time sweep that found nothing lets pass before it looks again.
const MAX_SWEEP_BACKOFF: u32 = 1024;
/// Fired wheel entries taken per hold of the wheel lock.
const EXPIRY_BATCH: usize = 256;

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
    pub(crate) inner: Arc<Inner<K, S>>,
}

pub(crate) struct Inner<K, S> {
    pub(crate) core: Core,
    pub(crate) events: EventBus<K>,
    /// How `tracing` output names a key (see `Builder::describe_keys`).
    #[cfg_attr(not(feature = "tracing"), allow(dead_code))]
    describe_key: Option<fn(&K) -> String>,
    shards: Box<[Shard<K>]>,
    /// `hash >> shard_shift` is the shard (the index uses the low bits).
    shard_shift: u32,
    hasher: S,
    max_slots: usize,
    /// A shard with this many slots reclaims idle ones as it creates new ones.
    idle_per_shard: usize,
    /// Slots in the index over all shards, kept only when `max_slots` is bounded (a counter every
    /// slot creation and reclamation writes; unbounded managers sum the shards' own counts).
    bounded: Option<AtomicUsize>,
    /// Clock time of the next periodic sweep.
    next_sweep_ns: AtomicU64,
    reaper: ReaperMode,
    shutdown: AtomicBool,
    reaper_thread: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
    /// The keep-alive renewer (`renew.rs`).
    pub(crate) renewer: Renewer<K>,
    /// Elections' own lock table, made on the first `elect` (`election.rs`).
    pub(crate) elections: OnceLock<Elections>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ReaperMode {
    /// A background thread drives the wheel.
    Thread,
    /// The manual clock drives it (inside `ManualClock::advance`).
    ManualClock,
    /// The embedder calls `expire_due`.
    Embedder,
}

/// Builds a [`LockManager`]; every setting is checked by [`build`](Builder::build).
///
/// # Examples
///
/// ```
/// use leasehold::LockManager;
/// use std::time::Duration;
///
/// let locks = LockManager::<u64>::builder()
///     .shards(64)
///     .tick(Duration::from_millis(1))
///     .max_slots(1_000_000)
///     .build()?;
/// # Ok::<(), leasehold::ConfigError>(())
/// ```
pub struct Builder<K, S = DefaultHasher> {
    shards: Option<usize>,
    max_slots: usize,
    idle_slots: Option<usize>,
    tick: Duration,
    reaper: bool,
    clock: Option<ClockSource>,
    hasher: S,
    counter_limit: u64,
    describe_key: Option<fn(&K) -> String>,
    _key: PhantomData<fn(K)>,
}

impl<K, S: fmt::Debug> fmt::Debug for Builder<K, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("shards", &self.shards)
            .field("max_slots", &self.max_slots)
            .field("tick", &self.tick)
            .field("reaper", &self.reaper)
            .finish_non_exhaustive()
    }
}

impl<K> Default for Builder<K, DefaultHasher> {
    fn default() -> Self {
        Builder {
            shards: None,
            max_slots: usize::MAX,
            idle_slots: None,
            tick: Duration::from_millis(1),
            reaper: true,
            clock: None,
            hasher: DefaultHasher::default(),
            counter_limit: COUNTER_MAX,
            describe_key: None,
            _key: PhantomData,
        }
    }
}

impl<K, S> Builder<K, S> {
    /// Number of shards: a power of two. The default scales with the available cores (sixteen per
    /// core, between 64 and 1,024), so threads creating slots for different keys rarely share a
    /// shard lock, and the idle-slot cache (64 per shard) holds a large working set.
    ///
    /// # Examples
    ///
    /// ```
    /// let locks = leasehold::LockManager::<u64>::builder().shards(128).build()?;
    /// assert_eq!(locks.shard_count(), 128);
    /// # Ok::<(), leasehold::ConfigError>(())
    /// ```
    pub fn shards(mut self, shards: usize) -> Self {
        self.shards = Some(shards);
        self
    }

    /// Bound on slots in the table (held, waited on, or cached idle). An acquire that needs a new
    /// slot beyond it first reclaims idle slots, then fails with [`LockError::Capacity`].
    /// Default: unbounded.
    ///
    /// # Examples
    ///
    /// ```
    /// let locks = leasehold::LockManager::<u64>::builder().max_slots(1).build()?;
    /// let _a = locks.exclusive(&1).try_acquire().unwrap();
    /// assert!(matches!(locks.exclusive(&2).try_acquire(), Err(leasehold::LockError::Capacity { .. })));
    /// # Ok::<(), leasehold::ConfigError>(())
    /// ```
    pub fn max_slots(mut self, max_slots: usize) -> Self {
        self.max_slots = max_slots;
        self
    }

    /// About how many idle slots the table keeps cached for reuse (spread over the shards;
    /// default 64 per shard). A key reused within a working set smaller than this keeps its slot
    /// and is acquired without touching the shard lock; beyond it, creating a slot for a new key
    /// reclaims idle ones. Idle slots beyond the bound are also reclaimed by the reaper within
    /// about two seconds, and [`LockManager::reclaim_idle`] reclaims them all at once.
    ///
    /// # Examples
    ///
    /// ```
    /// let locks = leasehold::LockManager::<u64>::builder().idle_slots(100_000).build()?;
    /// # Ok::<(), leasehold::ConfigError>(())
    /// ```
    pub fn idle_slots(mut self, idle_slots: usize) -> Self {
        self.idle_slots = Some(idle_slots);
        self
    }

    /// Timer-wheel resolution: leases expire within one tick after their deadline. Default 1 ms.
    ///
    /// # Examples
    ///
    /// ```
    /// let locks = leasehold::LockManager::<u64>::builder().tick(std::time::Duration::from_micros(100)).build()?;
    /// # Ok::<(), leasehold::ConfigError>(())
    /// ```
    pub fn tick(mut self, tick: Duration) -> Self {
        self.tick = tick;
        self
    }

    /// Whether a background reaper thread drives lease expiry (default `true`). With `false`, the
    /// embedder calls [`LockManager::expire_due`] from its own threads. Either way a contender
    /// never waits on a holder whose deadline has passed.
    ///
    /// # Examples
    ///
    /// ```
    /// let locks = leasehold::LockManager::<u64>::builder().reaper(false).build()?;
    /// locks.expire_due(); // from the engine's own thread, as often as it likes
    /// # Ok::<(), leasehold::ConfigError>(())
    /// ```
    pub fn reaper(mut self, reaper: bool) -> Self {
        self.reaper = reaper;
        self
    }

    /// The clock leases are measured by (default [`MonotonicClock`]). With a
    /// [`ManualClock`](crate::ManualClock) and the reaper on, expiry runs inside
    /// `ManualClock::advance` instead of on a thread.
    ///
    /// # Examples
    ///
    /// ```
    /// let clock = leasehold::ManualClock::new();
    /// let locks = leasehold::LockManager::<u64>::builder().clock(clock.clone()).build()?;
    /// # Ok::<(), leasehold::ConfigError>(())
    /// ```
    pub fn clock<C: Clock>(mut self, clock: C) -> Self {
        self.clock = Some(ClockSource::from_clock(clock));
        self
    }

    /// The hasher for keys.
    ///
    /// # Examples
    ///
    /// ```
    /// let locks = leasehold::LockManager::<u64>::builder().hasher(std::collections::hash_map::RandomState::new()).build()?;
    /// assert!(locks.exclusive(&1).try_acquire().is_ok());
    /// # Ok::<(), leasehold::ConfigError>(())
    /// ```
    pub fn hasher<S2>(self, hasher: S2) -> Builder<K, S2> {
        Builder {
            shards: self.shards,
            max_slots: self.max_slots,
            idle_slots: self.idle_slots,
            tick: self.tick,
            reaper: self.reaper,
            clock: self.clock,
            hasher,
            counter_limit: self.counter_limit,
            describe_key: self.describe_key,
            _key: PhantomData,
        }
    }

    /// Names keys in `tracing` output by their `Debug` form (with the `tracing` feature; without
    /// this, slow-path trace events carry the key's hash).
    ///
    /// # Examples
    ///
    /// ```
    /// let locks = leasehold::LockManager::<String>::builder().describe_keys().build()?;
    /// # Ok::<(), leasehold::ConfigError>(())
    /// ```
    pub fn describe_keys(mut self) -> Self
    where
        K: fmt::Debug,
    {
        self.describe_key = Some(|k| format!("{k:?}"));
        self
    }

    /// Acquisitions per slot incarnation before its counter is rebased (tests shrink it).
    #[doc(hidden)]
    pub fn counter_limit(mut self, limit: u64) -> Self {
        self.counter_limit = limit.clamp(1, COUNTER_MAX);
        self
    }
}

impl<K, S> Builder<K, S>
where
    K: Hash + Eq + Send + Sync + 'static,
    S: BuildHasher + Send + Sync + 'static,
{
    /// Checks the settings and builds the manager (starting its reaper thread, if any).
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] for a shard count that is not a power of two in 1..=65,536, a zero
    /// `max_slots`, a tick outside 1 µs..=1 s, or a reaper thread that could not start.
    ///
    /// # Examples
    ///
    /// ```
    /// let locks = leasehold::LockManager::<u64>::builder().build()?;
    /// assert_eq!(leasehold::LockManager::<u64>::builder().max_slots(0).build().unwrap_err(),
    ///            leasehold::ConfigError::MaxSlots { max_slots: 0 });
    /// # Ok::<(), leasehold::ConfigError>(())
    /// ```
    pub fn build(self) -> Result<LockManager<K, S>, ConfigError> {
        let shards = match self.shards {
            Some(n) if n == 0 || !n.is_power_of_two() || n > 65_536 => return Err(ConfigError::Shards { shards: n }),
            Some(n) => n,
            None => default_shards(),
        };
        if self.max_slots == 0 {
            return Err(ConfigError::MaxSlots { max_slots: 0 });
        }
        if self.tick < Duration::from_micros(1) || self.tick > Duration::from_secs(1) {
            return Err(ConfigError::Tick { tick: self.tick });
        }
        let clock = self.clock.unwrap_or_else(|| ClockSource::Monotonic(MonotonicClock::new()));
        let reaper = match (&clock, self.reaper) {
            (_, false) => ReaperMode::Embedder,
            (ClockSource::Manual(_), true) => ReaperMode::ManualClock,
            (_, true) => ReaperMode::Thread,
        };
        let manual = match &clock {
            ClockSource::Manual(m) => Some(m.clone()),
            _ => None,
        };
        let now = clock.now_ns();
        let inner = Arc::new(Inner {
            core: Core {
                clock,
                counter_limit: self.counter_limit,
                wheel: Wheelhouse::new(duration_ns(self.tick)),
                stats: Stats::new(shards, 64 - shards.trailing_zeros()),
                losses: LossDesk::new(),
            },
            renewer: Renewer::new(match reaper {
                ReaperMode::Thread => Drive::Thread,
                ReaperMode::ManualClock => Drive::ManualClock,
                ReaperMode::Embedder => Drive::Embedder,
            }),
            elections: OnceLock::new(),
            events: EventBus::new(),
            describe_key: self.describe_key,
            shards: (0..shards).map(|_| Shard::new()).collect(),
            shard_shift: 64 - shards.trailing_zeros(),
            hasher: self.hasher,
            max_slots: self.max_slots,
            idle_per_shard: self.idle_slots.map_or(IDLE_PER_SHARD, |n| n.div_ceil(shards)),
            bounded: (self.max_slots != usize::MAX).then(|| AtomicUsize::new(0)),
            next_sweep_ns: AtomicU64::new(now.saturating_add(duration_ns(SWEEP_INTERVAL))),
            reaper,
            shutdown: AtomicBool::new(false),
            reaper_thread: std::sync::Mutex::new(None),
        });
        match reaper {
            ReaperMode::Thread => start_reaper(&inner)?,
            ReaperMode::ManualClock => {
                if let Some(m) = manual {
                    let weak: Weak<Inner<K, S>> = Arc::downgrade(&inner);
                    m.subscribe(weak);
                }
            }
            ReaperMode::Embedder => {}
        }
        Ok(LockManager { inner })
    }
}

fn default_shards() -> usize {
    let cores = std::thread::available_parallelism().map_or(4, |n| n.get());
    (cores * 16).next_power_of_two().clamp(64, 1024)
}

#[cfg(not(leasehold_loom))]
fn start_reaper<K, S>(inner: &Arc<Inner<K, S>>) -> Result<(), ConfigError>
where
    K: Hash + Eq + Send + Sync + 'static,
    S: BuildHasher + Send + Sync + 'static,
{
    let for_thread = Arc::clone(inner);
    let handle = std::thread::Builder::new()
        .name("leasehold-reaper".into())
        .spawn(move || for_thread.reaper_loop())
        .map_err(|e| ConfigError::Reaper { reason: e.to_string() })?;
    inner.core.wheel.set_driver_thread(handle.thread().clone());
    *inner.reaper_thread.lock().unwrap_or_else(|e| e.into_inner()) = Some(handle);
    Ok(())
}

/// Under loom there are no background threads: models drive expiry with `expire_due`.
#[cfg(leasehold_loom)]
fn start_reaper<K, S>(_inner: &Arc<Inner<K, S>>) -> Result<(), ConfigError> {
    Ok(())
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

    /// A builder, to choose shards, tick, bounds, clock and reaper.
    ///
    /// # Examples
    ///
    /// ```
    /// let locks = leasehold::LockManager::<String>::builder().shards(16).build()?;
    /// # Ok::<(), leasehold::ConfigError>(())
    /// ```
    pub fn builder() -> Builder<K, DefaultHasher> {
        Builder::default()
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
            .field("shards", &self.inner.shards.len())
            .field("slots", &self.inner.shards.iter().map(Shard::count).sum::<usize>())
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
        Request::new(self, key, Mode::Exclusive)
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
        Request::new(self, key, Mode::Shared)
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
        Request::new(self, key, Mode::Semaphore(permits))
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
        self.inner.run_expiry()
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
        self.inner.sweep_all(true)
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
        self.inner.total_slots()
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
        self.inner.metrics()
    }

    /// Publishes [`metrics`](LockManager::metrics) through the `metrics` crate facade (counters
    /// as absolute values, gauges, and wait and hold quantiles as gauges), for whatever exporter
    /// the application installed. The reaper thread calls it once a second.
    #[cfg(feature = "metrics")]
    pub fn publish_metrics(&self) {
        crate::metrics::publish(&self.metrics());
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
        let hash = self.inner.hash(key);
        let shard = self.inner.shard(hash);
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
        for shard in self.inner.shards.iter() {
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
        self.inner.events.subscribe(capacity)
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
    pub fn revoke<Q>(&self, key: &Q, token: crate::token::FenceToken) -> Result<(), LockError>
    where
        K: Borrow<Q>,
        Q: ?Sized + Hash + Eq,
    {
        let inner = &*self.inner;
        let hash = inner.hash(key);
        let shard = inner.shard(hash);
        let g = shard.lock();
        let slot = shard.find_locked(&g, hash, key).ok_or(LockError::NotHeld)?;
        let mut si = slot.lock();
        let token = token.as_u64();
        for record in holding_records(slot, &si) {
            if slot
                .force_end(&inner.core, record, None, Some(token), &mut si, &mut |e| inner.emit_ended(slot, e))
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
        let inner = &*self.inner;
        let mut revoked = 0;
        for shard in inner.shards.iter() {
            let g = shard.lock();
            for slot in shard.slots(&g) {
                if word::units(slot.word.load(Ordering::Acquire)) == 0 {
                    continue;
                }
                let mut si = slot.lock();
                let mine: Vec<RecordRef> =
                    holding_records(slot, &si).into_iter().filter(|&r| si.owner(r).as_ref() == Some(&owner)).collect();
                for record in mine {
                    let ended =
                        slot.force_end(&inner.core, record, None, None, &mut si, &mut |e| inner.emit_ended(slot, e));
                    revoked += usize::from(ended.is_some());
                }
            }
        }
        // The owner's leaderships too (elections keep their own table).
        if let Some(elections) = inner.elections.get() {
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
        Fenced::counted(value, std::sync::Arc::clone(&self.inner.core.stats.fence_rejections))
    }

    /// A one-line dump of a key's slot state, for debugging this crate.
    #[doc(hidden)]
    pub fn debug_state<Q>(&self, key: &Q) -> String
    where
        K: Borrow<Q>,
        Q: ?Sized + Hash + Eq,
    {
        let hash = self.inner.hash(key);
        let shard = self.inner.shard(hash);
        let g = shard.lock();
        match shard.find_locked(&g, hash, key) {
            None => "no slot".into(),
            Some(slot) => {
                let inner = slot.lock();
                let w = slot.word.load(Ordering::Acquire);
                format!(
                    "word {w:064b} units {} records {:04b} queue {} cap {}",
                    word::units(w),
                    word::records(w),
                    inner.queue.len(),
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
        self.inner.shards.len()
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
        Duration::from_nanos(self.inner.core.clock.now_ns())
    }
}

impl<K, S> Drop for LockManager<K, S> {
    fn drop(&mut self) {
        self.inner.shutdown.store(true, std::sync::atomic::Ordering::SeqCst);
        self.inner.core.wheel.wake_driver();
        let handle = self.inner.reaper_thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(handle) = handle {
            // The reaper only runs expiry and sweeps; a panic there was already reported.
            let _ = handle.join();
        }
        self.inner.renewer.shut_down();
    }
}

/// The records of a slot's live holdings (under its lock).
fn holding_records<K>(slot: &Slot<K>, si: &SlotInner) -> Vec<RecordRef> {
    let w = slot.word.load(Ordering::Acquire);
    (0..word::INLINE_RECORDS as word::RecordIdx)
        .filter(|&i| word::holds_record(w, i))
        .map(RecordRef::Inline)
        .chain(si.overflow_in_use().map(|(i, _)| RecordRef::Overflow(i)))
        .collect()
}

/// What the locked path did.
pub(crate) enum Attempt<'a, K> {
    Acquired(&'a Slot<K>, Holding),
    Queued(&'a Slot<K>, SyncArc<Waiter>),
    Failed(LockError),
}

impl<K, S> Inner<K, S>
where
    K: Hash + Eq + Send + Sync + 'static,
    S: BuildHasher + Send + Sync + 'static,
{
    #[inline]
    pub(crate) fn hash<Q: ?Sized + Hash>(&self, key: &Q) -> u64 {
        self.hasher.hash_one(key)
    }

    #[inline]
    fn shard(&self, hash: u64) -> &Shard<K> {
        let i = hash.checked_shr(self.shard_shift).unwrap_or(0) as usize;
        &self.shards[i]
    }

    /// The fast path: a lock-free lookup and one compare-exchange. `None` means "take the locked
    /// path" (no slot yet, busy, or anything unusual). Also returns the slot found, for spinning.
    #[inline]
    pub(crate) fn try_fast<Q>(&self, hash: u64, key: &Q, ask: &Ask) -> (Option<&Slot<K>>, Option<Holding>)
    where
        K: Borrow<Q>,
        Q: ?Sized + Hash + Eq,
    {
        let Some(slot) = self.shard(hash).find(hash) else {
            return (None, None);
        };
        (Some(slot), self.claim_found(slot, key, ask))
    }

    /// Claims a slot found by the lock-free lookup, then checks its key (the claim pins it).
    #[inline]
    pub(crate) fn claim_found<Q>(&self, slot: &Slot<K>, key: &Q, ask: &Ask) -> Option<Holding>
    where
        K: Borrow<Q>,
        Q: ?Sized + Hash + Eq,
    {
        let h = slot.try_claim(&self.core, ask, false).ok()?;
        // SAFETY: our claim pins the slot, so it is live and its key stays put.
        if unsafe { key_matches(slot, key) } {
            Some(h)
        } else {
            // A full 64-bit hash collision with a key that holds this slot: undo and go slow.
            let _ = slot.release(&self.core, &h);
            None
        }
    }

    /// The authoritative path, under the shard lock: finds or creates the slot, claims, or (with
    /// `waiter`) queues. Expired holders blocking the request are expired first. Refusals are
    /// counted.
    pub(crate) fn attempt<Q>(
        &self,
        hash: u64,
        key: &Q,
        ask: &Ask,
        waiter: Option<&dyn Fn() -> SyncArc<Waiter>>,
    ) -> Attempt<'_, K>
    where
        K: Borrow<Q> + From<Q::Owned>,
        Q: ?Sized + Hash + Eq + ToOwned,
    {
        let attempt = self.attempt_locked(hash, key, ask, waiter);
        if let Attempt::Failed(e) = &attempt {
            self.count_refusal(hash, e);
        }
        attempt
    }

    /// Counts a refused request.
    #[cold]
    pub(crate) fn count_refusal(&self, hash: u64, e: &LockError) {
        let stats = self.core.stats.of(hash);
        ShardStats::bump(match e {
            LockError::WouldBlock => &stats.would_block,
            LockError::TimedOut => &stats.timeouts,
            _ => &stats.refused,
        });
    }

    /// Slots in the table (held, waited on, or idle and cached), summed over the shards.
    pub(crate) fn total_slots(&self) -> usize {
        self.shards.iter().map(Shard::count).sum()
    }

    /// Keeps the bounded count in step with `n` slots reclaimed.
    fn note_reclaimed(&self, n: usize) {
        if let (Some(count), true) = (&self.bounded, n > 0) {
            count.fetch_sub(n, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// See [`LockManager::metrics`].
    pub(crate) fn metrics(&self) -> MetricsSnapshot {
        let inner = self;
        let mut m = MetricsSnapshot::default();
        for shard in inner.shards.iter() {
            let g = shard.lock();
            for slot in shard.slots(&g) {
                let w = slot.word.load(Ordering::Acquire);
                m.acquisitions = m.acquisitions.wrapping_add(word::counter(w));
                let records = word::records(w).count_ones() as u64;
                let queued = w & word::WAITERS != 0;
                if word::units(w) == 0 && !queued {
                    continue;
                }
                m.live_slots += 1;
                m.live_holders += records;
                if records as usize == word::INLINE_RECORDS || queued {
                    let si = slot.lock();
                    m.live_holders += si.overflow_in_use().count() as u64;
                    m.waiters += si.queue.len() as u64;
                }
            }
        }
        inner.core.stats.add_to(&mut m);
        m.events_dropped = inner.events.dropped.load(std::sync::atomic::Ordering::Relaxed);
        m
    }

    /// Counts an acquisition that had to wait, and how long it waited.
    pub(crate) fn count_contended(&self, slot: &Slot<K>, waiter: &Waiter) {
        let stats = self.core.stats.of(slot.hash.load(Ordering::Relaxed));
        ShardStats::bump(&stats.contended);
        stats.wait.record(crate::clock::duration_ns(waiter.waited()));
    }

    /// Tells subscribers that a holding began (the caller holds it, so the key is pinned).
    #[inline]
    pub(crate) fn emit_acquired(&self, slot: &Slot<K>, h: &Holding, mode: Mode, owner: Option<&Owner>) {
        if self.events.is_active() {
            self.emit(EventKind::Acquired, slot, h.token, mode, owner.cloned());
        }
    }

    /// Tells subscribers about a holding event. The slot must be pinned.
    #[cold]
    pub(crate) fn emit(&self, kind: EventKind, slot: &Slot<K>, token: u64, mode: Mode, owner: Option<Owner>) {
        // SAFETY: the caller has the slot pinned (it holds the holding, or an expirer has not yet
        // returned its units).
        let key = unsafe { slot.key() };
        self.events.emit(kind, key, mode, token, owner, self.core.clock.now_ns());
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

    /// Tells subscribers that an expirer or revoker ended a holding (called before its units go back).
    fn emit_ended(&self, slot: &Slot<K>, e: &Ended) {
        #[cfg(feature = "tracing")]
        self.trace(if e.expired { "lease expired" } else { "holding revoked" }, slot, Some(e.token), e.owner.as_ref());
        if self.events.is_active() {
            let mode = Mode::from_code(e.meta & 0b11, slot.capacity.load(Ordering::Relaxed));
            let kind = if e.expired { EventKind::Expired } else { EventKind::Revoked };
            self.emit(kind, slot, e.token, mode, e.owner.clone());
        }
    }

    fn attempt_locked<Q>(
        &self,
        hash: u64,
        key: &Q,
        ask: &Ask,
        waiter: Option<&dyn Fn() -> SyncArc<Waiter>>,
    ) -> Attempt<'_, K>
    where
        K: Borrow<Q>,
        Q: ?Sized + Hash + Eq + ToOwned,
        K: From<Q::Owned>,
    {
        let shard = self.shard(hash);
        let mut reclaimed_for_capacity = false;
        loop {
            let mut g = shard.lock();
            let Some(slot) = shard.find_locked(&g, hash, key) else {
                if self.bounded.as_ref().is_some_and(|n| n.load(std::sync::atomic::Ordering::Relaxed) >= self.max_slots)
                {
                    let reclaimed = shard.sweep(&mut g, usize::MAX, usize::MAX, &self.core, true);
                    if reclaimed > 0 {
                        self.note_reclaimed(reclaimed);
                        continue;
                    }
                    drop(g);
                    if !reclaimed_for_capacity {
                        reclaimed_for_capacity = true;
                        self.sweep_all(true);
                        continue;
                    }
                    return Attempt::Failed(LockError::Capacity { max_slots: self.max_slots });
                }
                let reclaimed = if g.present < self.idle_per_shard {
                    0
                } else if g.sweep_skip > 0 {
                    g.sweep_skip -= 1;
                    0
                } else {
                    let n = shard.sweep(&mut g, SWEEP_ON_INSERT, RECLAIM_ON_INSERT, &self.core, false);
                    let fruitless = n == 0 && !g.last_sweep_found_idle;
                    g.sweep_backoff = if fruitless { (g.sweep_backoff * 2 + 1).min(MAX_SWEEP_BACKOFF) } else { 0 };
                    g.sweep_skip = g.sweep_backoff;
                    n
                };
                let slot = shard.alloc(&mut g);
                let capacity = ask.mode.capacity();
                // The new incarnation continues the dead slot's counter (word.rs: no word repeats),
                // with its token base lowered so that its first token is just above the shard's
                // high-water mark. A spent counter starts again from zero.
                let mut start = word::reborn(slot.word.load(Ordering::Relaxed));
                if word::counter(start) >= self.core.counter_limit || word::counter(start) > g.high_water {
                    start = 0;
                }
                let base = g.high_water - word::counter(start);
                // The counter it continues from was counted when the dead slot was reclaimed.
                self.core.stats.of(hash).retired_acquisitions.fetch_sub(word::counter(start), Ordering::Relaxed);
                let claim = word::try_claim(start, capacity, ask.need(false), self.core.counter_limit)
                    .expect("a fresh slot admits any request");
                // SAFETY: `alloc` gave a dead slot of this shard, not yet in the index; we hold the lock.
                unsafe { slot.init(K::from(key.to_owned()), hash, capacity, base, claim.word) };
                // A key used once since its creation gets no second chance from the sweep; one
                // claimed again since (a hot key) does.
                slot.swept.store(word::counter(claim.word), Ordering::Relaxed);
                shard.insert(&mut g, hash, slot);
                let first_in_shard = g.present == 1;
                if let Some(n) = &self.bounded {
                    n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                self.note_reclaimed(reclaimed);
                drop(g);
                if first_in_shard && self.reaper == ReaperMode::Thread {
                    // The reaper sleeps without a sweep timer while the table is empty.
                    self.core.wheel.wake_driver_if_idle();
                }
                let h = slot.finish_claim(&self.core, ask, claim, None);
                return Attempt::Acquired(slot, h);
            };
            // Found under the shard lock: pinned while we hold it. Take the slot lock too.
            let mut inner = slot.lock();
            drop(g);
            // From here the slot may be reclaimed only once it is idle: our claim or our
            // `WAITERS` flag prevents that; if neither happens we go round again.
            match slot.claim_locked(&self.core, ask, false, waiter.is_some(), &mut inner) {
                Ok(h) => return Attempt::Acquired(slot, h),
                Err(blocked @ (Blocked::Busy | Blocked::Exhausted)) => {
                    // A spent counter is reset once nobody holds a unit; until then, wait.
                    if blocked == Blocked::Exhausted && slot.rebase(&self.core) {
                        continue;
                    }
                    if self.expire_blockers(slot, &mut inner) > 0 {
                        continue;
                    }
                    let Some(make) = waiter else {
                        return Attempt::Failed(LockError::WouldBlock);
                    };
                    let w = make();
                    #[cfg(feature = "tracing")]
                    self.trace("waiting", slot, None, ask.owner.as_ref());
                    wait::enqueue(slot, SyncArc::clone(&w), &mut inner);
                    return Attempt::Queued(slot, w);
                }
                Err(Blocked::Mismatch(live)) => {
                    let requested = match ask.mode {
                        Mode::Semaphore(n) => n,
                        _ => word::MAX_UNITS,
                    };
                    return Attempt::Failed(LockError::PermitMismatch { live, requested });
                }
                Err(Blocked::Reshape) => {
                    slot.reshape(&self.core, ask.mode.capacity());
                }
                Err(Blocked::Unstable | Blocked::Overflow) => crate::sync::spin_loop(),
            }
        }
    }

    /// A queued waiter's retry after a wake-up, under the slot lock.
    pub(crate) fn retry_queued(
        &self,
        slot: &Slot<K>,
        waiter: &SyncArc<Waiter>,
        inner: &mut SlotInner,
    ) -> Option<Holding> {
        loop {
            match slot.claim_locked(&self.core, &waiter.ask, true, true, inner) {
                Ok(h) => {
                    wait::leave(slot, &self.core, waiter, inner);
                    return Some(h);
                }
                Err(Blocked::Exhausted) if slot.rebase(&self.core) => continue,
                Err(Blocked::Busy | Blocked::Exhausted) => {
                    if self.expire_blockers(slot, inner) > 0 {
                        continue;
                    }
                    waiter.rearm();
                    return None;
                }
                Err(_) => {
                    crate::sync::spin_loop();
                }
            }
        }
    }

    /// Expires the leased holders of `slot` whose deadlines have passed (a contender never waits
    /// on them, whether or not the wheel has run). Returns how many.
    pub(crate) fn expire_blockers(&self, slot: &Slot<K>, inner: &mut SlotInner) -> usize {
        if slot.earliest_deadline(inner).is_none() {
            return 0;
        }
        let now = self.core.clock.now_ns();
        let w = slot.word.load(Ordering::Acquire);
        slot.expire_due(&self.core, now, w, inner, &mut |e| self.emit_ended(slot, e)).expired
    }

    /// How long a queued waiter may sleep before it must look at the holders' deadlines itself.
    pub(crate) fn holder_deadline_wait(&self, slot: &Slot<K>) -> Option<Duration> {
        if !self.core.clock.is_real_time() {
            return None;
        }
        let earliest = slot.earliest_deadline(&slot.lock())?;
        let now = self.core.clock.now_ns();
        Some(Duration::from_nanos(earliest.saturating_sub(now)))
    }

    /// Runs the wheel up to now, then sweeps if a sweep is due.
    pub(crate) fn run_expiry(&self) -> usize {
        let now = self.core.clock.now_ns();
        let now_tick = now / self.core.wheel.tick_ns;
        let mut expired = 0;
        // Fired entries are taken a batch at a time, so the wheel lock is taken once per batch.
        let mut batch = Vec::with_capacity(EXPIRY_BATCH);
        while self.core.wheel.pop_due(now_tick, &mut batch, |a| {
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
                expired += self.scan_slot(slot, addr, now);
            }
        }
        let next_sweep = self.next_sweep_ns.load(Ordering::Relaxed);
        if now >= next_sweep
            && self
                .next_sweep_ns
                .compare_exchange(
                    next_sweep,
                    now.saturating_add(duration_ns(SWEEP_INTERVAL)),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            self.sweep_periodic();
            #[cfg(feature = "metrics")]
            crate::metrics::publish(&self.metrics());
        }
        expired
    }

    /// Step 2 of the expiry protocol (`expiry.rs`) for one fired slot.
    fn scan_slot(&self, slot: &Slot<K>, addr: usize, now: u64) -> usize {
        // SeqCst: the read-modify-write that splits claims into "scanned here" and "see NONE and
        // register themselves"; SeqCst also orders it after the SeqCst store of `scheduled`.
        let w = slot.word.fetch_and(!word::WATCHED, Ordering::SeqCst);
        if w & word::DEAD != 0 {
            return 0;
        }
        let mut inner = slot.lock();
        let scan = slot.expire_due(&self.core, now, w, &mut inner, &mut |e| self.emit_ended(slot, e));
        drop(inner);
        let mut next = scan.earliest;
        if scan.in_flux {
            next = next.min(now.saturating_add(self.core.wheel.tick_ns));
        }
        if next != u64::MAX {
            self.core.wheel.register(&slot.watch, &slot.word, addr, next);
        }
        scan.expired
    }

    /// The periodic sweep: a bounded stretch of every shard (the hand moves on from where it
    /// stopped), with a second chance for recently used slots, so the reaper never stalls on a
    /// huge table. An idle slot outlives its last use by at most two full turns of the hand.
    fn sweep_periodic(&self) -> usize {
        self.sweep_shards(SWEEP_PER_INTERVAL, false)
    }

    /// Sweeps every shard for idle slots (`thorough`: no second chance). Returns how many it reclaimed.
    pub(crate) fn sweep_all(&self, thorough: bool) -> usize {
        self.sweep_shards(usize::MAX, thorough)
    }

    /// Sweeps up to `budget` index entries of each shard, one shard lock at a time.
    fn sweep_shards(&self, budget: usize, thorough: bool) -> usize {
        let mut total = 0;
        for shard in self.shards.iter() {
            let mut g = shard.lock();
            let n = shard.sweep(&mut g, budget, usize::MAX, &self.core, thorough);
            drop(g);
            self.note_reclaimed(n);
            total += n;
        }
        total
    }

    #[cfg(not(leasehold_loom))]
    fn reaper_loop(self: Arc<Self>) {
        use std::sync::atomic::Ordering as StdOrdering;
        let tick = self.core.wheel.tick_ns;
        loop {
            if self.shutdown.load(StdOrdering::SeqCst) {
                return;
            }
            self.core.wheel.mark_awake();
            self.run_expiry();
            let now = self.core.clock.now_ns();
            let now_tick = now / tick;
            let sweep_tick =
                (self.total_slots() > 0).then(|| self.next_sweep_ns.load(Ordering::Relaxed).div_ceil(tick));
            if self.shutdown.load(StdOrdering::SeqCst) {
                return;
            }
            match self.core.wheel.prepare_sleep(now_tick, sweep_tick) {
                Some(0) => {}
                Some(t) => {
                    std::thread::park_timeout(Duration::from_nanos(t.saturating_sub(now_tick).saturating_mul(tick)))
                }
                None => std::thread::park(),
            }
        }
    }
}

impl<K, S> TimeListener for Inner<K, S>
where
    K: Hash + Eq + Send + Sync + 'static,
    S: BuildHasher + Send + Sync + 'static,
{
    fn time_advanced(&self) {
        self.run_expiry();
        // After expiry: a clock that jumped past a deadline lost the lease, as a late renewer would.
        self.renew_due_entries(false);
    }
}
