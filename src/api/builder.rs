//! Configuration: the [`Builder`] checks every setting and assembles a manager's state.

use std::fmt;
use std::hash::{BuildHasher, Hash};
use std::marker::PhantomData;
use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::api::loss::LossDesk;
use crate::api::manager::LockManager;
use crate::api::state::State;
use crate::engine::core::Core;
use crate::engine::sweep::IdleBound;
use crate::engine::table::{DefaultHasher, Table, TableConfig};
use crate::engine::watch::Wheelhouse;
use crate::engine::word::COUNTER_MAX;
use crate::expiry::renewer::{Drive, Renewer};
use crate::observe::events::EventBus;
use crate::primitives::clock::{duration_ns, Clock, ClockSource, MonotonicClock};
use crate::primitives::counters::Stats;
use crate::primitives::sync::untracked::AtomicBool;
use crate::vocab::{ConfigError, MAX_TOKEN_FLOOR};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ReaperMode {
    /// A background thread drives the wheel.
    Thread,
    /// The manual clock drives it (inside `ManualClock::advance`).
    ManualClock,
    /// The embedder calls `expire_due`.
    Embedder,
}

impl<K> LockManager<K, DefaultHasher>
where
    K: Hash + Eq + Send + Sync + 'static,
{
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
    idle: Option<IdleBound>,
    tick: Duration,
    reaper: bool,
    clock: Option<ClockSource>,
    hasher: S,
    counter_limit: u64,
    token_floor: u64,
    describe_key: Option<fn(&K) -> String>,
    detect: crate::api::detector::DetectConfig,
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
            idle: None,
            tick: Duration::from_millis(1),
            reaper: true,
            clock: None,
            hasher: DefaultHasher::default(),
            counter_limit: COUNTER_MAX,
            token_floor: 0,
            describe_key: None,
            detect: crate::api::detector::DetectConfig::default(),
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

    /// Bound on slots in the table (held, waited on, or cached idle), exact under concurrent
    /// creators. An acquire that needs a new slot beyond it first reclaims idle slots (a bounded
    /// stretch of the table per attempt, so a refusal costs O(1); repeated attempts go round the
    /// whole table, and the reaper reclaims idle slots within about two seconds), then fails
    /// with [`LockError::Capacity`](crate::LockError::Capacity). Default: unbounded.
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
    /// replaces the default byte budget of [`idle_bytes`](Builder::idle_bytes)). A key reused
    /// within a working set smaller than this keeps its slot and is acquired without touching the
    /// shard lock; beyond it, creating a slot for a new key reclaims idle ones (CLOCK: a slot
    /// claimed since the sweep's hand last passed gets a second chance). Idle slots beyond the
    /// bound are also reclaimed by the reaper within about two seconds, and
    /// [`LockManager::reclaim_idle`] reclaims them all at once.
    ///
    /// # Examples
    ///
    /// ```
    /// let locks = leasehold::LockManager::<u64>::builder().shards(64).idle_slots(100_000).build()?;
    /// assert!(locks.idle_slot_bound() >= 100_000);
    /// # Ok::<(), leasehold::ConfigError>(())
    /// ```
    pub fn idle_slots(mut self, idle_slots: usize) -> Self {
        self.idle = Some(IdleBound::Slots(idle_slots));
        self
    }

    /// The idle-slot cache's budget in bytes of slot and index memory (spread over the shards;
    /// default 20 KiB per shard: 64 slots of a `u64` key, 1.25 MiB at 64 shards). Bounds what the
    /// table keeps beyond the slots held or waited on: [`LockManager::idle_bytes_bound`] tells
    /// the bound in bytes once built. A slot of a `u64` key costs about 320 bytes with its share
    /// of the index: to keep a working set of 100,000 such keys resident, give 32 MiB. A larger
    /// cache makes a churn of fresh keys slower (its sweep walks more cold memory). See
    /// [`idle_slots`](Builder::idle_slots) for how the cache is used.
    ///
    /// # Examples
    ///
    /// ```
    /// let locks = leasehold::LockManager::<u64>::builder().idle_bytes(1 << 20).build()?;
    /// assert!(locks.idle_bytes_bound() <= 1 << 20);
    /// # Ok::<(), leasehold::ConfigError>(())
    /// ```
    pub fn idle_bytes(mut self, bytes: usize) -> Self {
        self.idle = Some(IdleBound::Bytes(bytes));
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
            idle: self.idle,
            tick: self.tick,
            reaper: self.reaper,
            clock: self.clock,
            hasher,
            counter_limit: self.counter_limit,
            token_floor: self.token_floor,
            describe_key: self.describe_key,
            detect: self.detect,
            _key: PhantomData,
        }
    }

    /// How deep the deadlock search follows a chain of waiting sessions (default 50, as RocksDB's
    /// `deadlock_detect_depth`); beyond it the requester fails with [`LockError::Deadlock`] and
    /// `depth_exceeded` set. At least 1 (0 is taken as 1).
    ///
    /// # Examples
    ///
    /// ```
    /// let locks = leasehold::LockManager::<u64>::builder().deadlock_depth(8).build()?;
    /// # Ok::<(), leasehold::ConfigError>(())
    /// ```
    ///
    /// [`LockError::Deadlock`]: crate::LockError::Deadlock
    pub fn deadlock_depth(mut self, depth: usize) -> Self {
        self.detect.depth = depth.max(1);
        self
    }

    /// Which request fails when a session's wait would close a cycle (default: the requester).
    ///
    /// # Examples
    ///
    /// ```
    /// use leasehold::VictimPolicy;
    /// let locks = leasehold::LockManager::<u64>::builder().deadlock_victim(VictimPolicy::Youngest).build()?;
    /// # Ok::<(), leasehold::ConfigError>(())
    /// ```
    pub fn deadlock_victim(mut self, victim: crate::vocab::deadlock::VictimPolicy) -> Self {
        self.detect.victim = victim;
        self
    }

    /// How many recent deadlocks `LockManager::deadlocks` keeps (default 32; 0 keeps none).
    ///
    /// # Examples
    ///
    /// ```
    /// let locks = leasehold::LockManager::<u64>::builder().deadlock_history(4).build()?;
    /// assert!(locks.deadlocks().is_empty());
    /// # Ok::<(), leasehold::ConfigError>(())
    /// ```
    pub fn deadlock_history(mut self, history: usize) -> Self {
        self.detect.history = history;
        self
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

    /// Every fencing token this manager hands out is greater than `floor`, for every key
    /// (default 0: tokens start at 1). A process that restarts and fences a durable or remote
    /// resource sets it to the highest token that resource has accepted (or a persisted epoch,
    /// such as a restart counter times 2^40), so its tokens continue above the old ones instead
    /// of being rejected as stale. At most [`MAX_TOKEN_FLOOR`], so tokens cannot run out;
    /// more is [`ConfigError::TokenFloor`].
    ///
    /// # Examples
    ///
    /// ```
    /// use leasehold::{ConfigError, LockManager, MAX_TOKEN_FLOOR};
    ///
    /// // The resource accepted token 41_977 before the restart.
    /// let locks = LockManager::<String>::builder().token_floor(41_977).build()?;
    /// let g = locks.exclusive("ledger").try_acquire().unwrap();
    /// assert!(g.token().as_u64() > 41_977);
    /// assert_eq!(
    ///     LockManager::<String>::builder().token_floor(u64::MAX).build().unwrap_err(),
    ///     ConfigError::TokenFloor { floor: u64::MAX }
    /// );
    /// # let _ = MAX_TOKEN_FLOOR;
    /// # Ok::<(), ConfigError>(())
    /// ```
    pub fn token_floor(mut self, floor: u64) -> Self {
        self.token_floor = floor;
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
        if self.token_floor > MAX_TOKEN_FLOOR {
            return Err(ConfigError::TokenFloor { floor: self.token_floor });
        }
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
        let core = Core {
            clock,
            counter_limit: self.counter_limit,
            wheel: Wheelhouse::new(duration_ns(self.tick)),
            stats: Stats::new(shards),
        };
        let config = TableConfig {
            shards,
            max_slots: self.max_slots,
            idle: self.idle,
            wake_driver_on_first: reaper == ReaperMode::Thread,
            token_floor: self.token_floor,
        };
        let state = Arc::new_cyclic(|me| State {
            me: me.clone(),
            table: Table::new(core, self.hasher, config),
            events: EventBus::new(self.counter_limit),
            describe_key: self.describe_key,
            shutdown: AtomicBool::new(false),
            reaper_thread: std::sync::Mutex::new(None),
            losses: LossDesk::new(),
            renewer: Renewer::new(match reaper {
                ReaperMode::Thread => Drive::Thread,
                ReaperMode::ManualClock => Drive::ManualClock,
                ReaperMode::Embedder => Drive::Embedder,
            }),
            elections: std::sync::OnceLock::new(),
        });
        match reaper {
            ReaperMode::Thread => start_reaper(&state)?,
            ReaperMode::ManualClock => {
                if let Some(m) = manual {
                    let weak: Weak<State<K, S>> = Arc::downgrade(&state);
                    m.subscribe(weak);
                }
            }
            ReaperMode::Embedder => {}
        }
        Ok(LockManager { state, detector: crate::api::detector::Detector::new(self.detect) })
    }
}

fn default_shards() -> usize {
    let cores = std::thread::available_parallelism().map_or(4, |n| n.get());
    (cores * 16).next_power_of_two().clamp(64, 1024)
}

#[cfg(not(leasehold_loom))]
fn start_reaper<K, S>(state: &Arc<State<K, S>>) -> Result<(), ConfigError>
where
    K: Hash + Eq + Send + Sync + 'static,
    S: BuildHasher + Send + Sync + 'static,
{
    let for_thread = Arc::clone(state);
    let handle = std::thread::Builder::new()
        .name("leasehold-reaper".into())
        .spawn(move || for_thread.reaper_loop())
        .map_err(|e| ConfigError::Reaper { reason: e.to_string() })?;
    state.table.core.wheel.set_driver_thread(handle.thread().clone());
    *state.reaper_thread.lock().unwrap_or_else(|e| e.into_inner()) = Some(handle);
    Ok(())
}

/// Under loom there are no background threads: models drive expiry with `expire_due`.
#[cfg(leasehold_loom)]
fn start_reaper<K, S>(_state: &Arc<State<K, S>>) -> Result<(), ConfigError> {
    Ok(())
}
