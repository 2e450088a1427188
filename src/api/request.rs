//! Requests: the builder every acquisition goes through, and the ways to wait.

#![deny(unsafe_code)]

use std::borrow::Borrow;
use std::fmt;
use std::hash::{BuildHasher, Hash};
use std::time::{Duration, Instant};

use crate::api::guard::LockGuard;
use crate::api::loss::LossCause;
use crate::api::service::{ServiceAsk, DEFAULT_KEEP_ALIVE_TTL};
use crate::api::state::State;
use crate::engine::holding::{Ask, Holding};
use crate::engine::lease::MAX_TTL;
use crate::engine::queue::Waiter;
use crate::engine::slot::Slot;
use crate::engine::table::{Attempt, DefaultHasher};
use crate::engine::word::MAX_PERMITS;
use crate::primitives::clock::duration_ns;
use crate::primitives::sync::Arc;
use crate::vocab::error::LockError;
use crate::vocab::mode::{Mode, Owner};

/// A request for a lock on one key, in one mode: set a lease or an owner, then acquire.
///
/// # Examples
///
/// ```
/// use leasehold::LockManager;
/// use std::time::Duration;
///
/// let locks: LockManager<String> = LockManager::new();
/// let g = locks
///     .exclusive("orders/17")
///     .lease(Duration::from_secs(30))
///     .owner("worker-3")
///     .acquire_timeout(Duration::from_millis(50))?;
/// assert_eq!(g.owner().unwrap().as_str(), "worker-3");
/// # Ok::<(), leasehold::LockError>(())
/// ```
#[must_use = "a request does nothing until one of its acquire methods is called"]
pub struct Request<'m, 'q, K, Q: ?Sized, S = DefaultHasher> {
    pub(crate) locks: &'m State<K, S>,
    pub(crate) key: &'q Q,
    mode: Mode,
    ttl: Option<Duration>,
    owner: Option<Owner>,
    /// Keep-alive and `on_lost` (`service.rs`); `None` for a plain request.
    service: Option<Box<ServiceAsk>>,
}

impl<K, Q: ?Sized + fmt::Debug, S> fmt::Debug for Request<'_, '_, K, Q, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Request")
            .field("key", &self.key)
            .field("mode", &self.mode)
            .field("ttl", &self.ttl)
            .field("owner", &self.owner)
            .finish()
    }
}

impl<'m, 'q, K, Q, S> Request<'m, 'q, K, Q, S>
where
    K: Hash + Eq + Send + Sync + 'static + Borrow<Q>,
    Q: ?Sized + Hash + Eq + ToOwned,
    K: From<Q::Owned>,
    S: BuildHasher + Send + Sync + 'static,
{
    pub(crate) fn new(locks: &'m State<K, S>, key: &'q Q, mode: Mode) -> Self {
        Request { locks, key, mode, ttl: None, owner: None, service: None }
    }

    /// Gives the holding a lease: it is lost `ttl` after it is acquired unless renewed, and the
    /// next holder gets a larger fencing token. Zero, or more than [`MAX_TTL`], is
    /// [`LockError::InvalidTtl`] at acquire time.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
    /// let g = locks.exclusive(&1).lease(Duration::from_secs(5)).try_acquire()?;
    /// assert!(g.expires_at().is_some());
    /// # Ok::<(), leasehold::LockError>(())
    /// ```
    pub fn lease(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// Labels the holder (shown by introspection, used to revoke all of one owner's locks).
    ///
    /// # Examples
    ///
    /// ```
    /// let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
    /// let g = locks.shared(&1).owner("reporting").try_acquire()?;
    /// assert_eq!(g.owner().unwrap().as_str(), "reporting");
    /// # Ok::<(), leasehold::LockError>(())
    /// ```
    pub fn owner(mut self, owner: impl Into<Owner>) -> Self {
        self.owner = Some(owner.into());
        self
    }

    /// Keeps the lease alive while the guard lives: the manager's renewer (one for all holdings)
    /// renews it every third of its TTL, and stops before the guard releases. Without
    /// [`lease`](Request::lease), the lease is 30 seconds. If the renewer cannot keep up (it is
    /// starved, or the process pauses), the lease expires as any other and the guard's
    /// [`lost`](LockGuard::lost) signal fires before the next holder can acquire.
    ///
    /// A guard that is leaked (`mem::forget`) keeps its lease alive for good, as a leaked mutex
    /// guard keeps its mutex; a holder that may hang should renew by hand from its work loop
    /// instead, so that a hang lets the lease run out.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let locks: leasehold::LockManager<String> = leasehold::LockManager::new();
    /// let g = locks.exclusive("job").lease(Duration::from_secs(10)).keep_alive().acquire()?;
    /// assert!(g.trusted_for() > Duration::from_secs(5));
    /// # Ok::<(), leasehold::LockError>(())
    /// ```
    pub fn keep_alive(mut self) -> Self {
        self.ttl.get_or_insert(DEFAULT_KEEP_ALIVE_TTL);
        self.service.get_or_insert_with(Box::default).keep_alive = true;
        self
    }

    /// Calls `f` once if the holding is lost (expired or revoked rather than released by its
    /// guard). It runs on the manager's service thread (or in
    /// [`renew_due`](crate::LockManager::renew_due) for a manager without a reaper), with no lock held,
    /// so it may use the manager; a panic in it is caught. It runs after the loss: what is
    /// ordered before the next holder's acquire is the guard's [`is_lost`](LockGuard::is_lost)
    /// and [`lost`](LockGuard::lost), not this call. Only holdings with a lease or an owner can
    /// be lost.
    ///
    /// # Examples
    ///
    /// ```
    /// use leasehold::LossCause;
    /// let locks: leasehold::LockManager<String> = leasehold::LockManager::new();
    /// let (tx, rx) = std::sync::mpsc::channel();
    /// let g = locks.exclusive("job").owner("host-7").on_lost(move |cause| tx.send(cause).unwrap()).acquire()?;
    /// locks.revoke_owner("host-7");
    /// assert_eq!(rx.recv().unwrap(), LossCause::Revoked);
    /// # Ok::<(), leasehold::LockError>(())
    /// ```
    pub fn on_lost(mut self, f: impl Fn(LossCause) + Send + Sync + 'static) -> Self {
        self.service.get_or_insert_with(Box::default).on_lost = Some(std::sync::Arc::new(f));
        self
    }

    #[inline(always)]
    fn ask(&self) -> Result<Ask, LockError> {
        if let Mode::Semaphore(n) = self.mode {
            if n == 0 || n > MAX_PERMITS {
                return Err(LockError::InvalidPermits { permits: n });
            }
        }
        // In nanoseconds, one compare each: zero, and past `MAX_TTL` (a saturated count is past it).
        const MAX_TTL_NS: u64 = duration_ns(MAX_TTL);
        let ttl_ns = match self.ttl {
            None => None,
            Some(ttl) => match duration_ns(ttl) {
                0 => return Err(LockError::InvalidTtl { ttl }),
                ns if ns > MAX_TTL_NS => return Err(LockError::InvalidTtl { ttl }),
                ns => Some(ns),
            },
        };
        Ok(Ask { mode: self.mode, ttl_ns, owner: self.owner.clone() })
    }

    /// The mode of a plain request (no lease, no owner, no service, valid permits): such a request
    /// takes the fast path without an `Ask`, its validation or its owner clone (bench/PERF-PLAN.md,
    /// P2), and has nothing to drop. Built by `new` and never given a service, the test of
    /// `service` folds away where the request is inlined.
    #[inline(always)]
    fn plain_mode(&self) -> Option<Mode> {
        let valid = match self.mode {
            Mode::Semaphore(n) => n != 0 && n <= MAX_PERMITS,
            Mode::Exclusive | Mode::Shared => true,
            // Upgradable and intention modes are decided off the plain fast path.
            _ => false,
        };
        (self.ttl.is_none() & self.owner.is_none() & self.service.is_none() & valid).then_some(self.mode)
    }

    #[inline(always)]
    pub(crate) fn guard(&self, slot: &'m Slot<K>, h: Holding) -> LockGuard<'m, K, S> {
        let h = self.locks.emit_acquired(slot, h, self.mode, self.owner.as_ref());
        let guard = LockGuard::new(self.locks, slot, h);
        if let Some(service) = &self.service {
            guard.start_service(service, self.ttl.map(duration_ns));
        }
        guard
    }

    /// Validates the request, counting a refusal.
    #[inline(always)]
    pub(crate) fn checked_ask(&self) -> Result<Ask, LockError> {
        self.ask().inspect_err(|e| {
            let locks = self.locks;
            locks.table.count_refusal(locks.table.hash(self.key), e);
        })
    }

    /// Takes the lock if it is free now; never waits.
    ///
    /// A holder whose lease deadline has passed does not count as holding, even if the reaper has
    /// not expired it yet.
    ///
    /// # Errors
    ///
    /// [`LockError::WouldBlock`] if the key is held in a conflicting mode (or a writer is queued
    /// ahead of this reader), and the validation errors (`InvalidPermits`, `InvalidTtl`,
    /// `PermitMismatch`, `Capacity`).
    ///
    /// # Examples
    ///
    /// ```
    /// use leasehold::{LockError, LockManager};
    /// let locks: LockManager<String> = LockManager::new();
    /// let _w = locks.exclusive("k").try_acquire()?;
    /// assert_eq!(locks.shared("k").try_acquire().unwrap_err(), LockError::WouldBlock);
    /// # Ok::<(), LockError>(())
    /// ```
    #[inline(always)]
    pub fn try_acquire(self) -> Result<LockGuard<'m, K, S>, LockError> {
        if let Some(mode) = self.plain_mode() {
            let (locks, key) = (self.locks, self.key);
            let hash = locks.table.hash(key);
            // With anyone listening to events the claim fails (`EventBus::claim_limit`), and the
            // slow path tells them: nothing to tell here.
            if let Ok((slot, h)) = locks.table.try_fast_plain(hash, key, mode, locks.events.claim_limit()) {
                // Nothing to drop: a plain request has no owner and no service (`plain_mode`).
                std::mem::forget(self);
                return Ok(LockGuard::new(locks, slot, h));
            }
        }
        self.try_acquire_slow()
    }

    /// `try_acquire` past a plain request's fast path.
    #[cold]
    #[inline(never)]
    fn try_acquire_slow(self) -> Result<LockGuard<'m, K, S>, LockError> {
        let ask = self.checked_ask()?;
        let locks = self.locks;
        let hash = locks.table.hash(self.key);
        let (slot, h) = match locks.table.try_fast(hash, self.key, &ask) {
            (Some(slot), Some(h)) => (slot, h),
            _ => match locks.attempt(hash, self.key, &ask, None) {
                Attempt::Acquired(slot, h) => (slot, h),
                Attempt::Failed(e) => return Err(e),
                Attempt::Queued(..) => unreachable!("no waiter was offered"),
            },
        };
        Ok(self.guard(slot, h))
    }

    /// Waits as long as it takes to get the lock.
    ///
    /// A waiter tries again a few times, yielding its core in between, then parks; a holder whose lease runs out while we wait is expired
    /// at its deadline and we proceed.
    ///
    /// # Errors
    ///
    /// The validation errors (`InvalidPermits`, `InvalidTtl`, `PermitMismatch`, `Capacity`).
    ///
    /// # Examples
    ///
    /// ```
    /// let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
    /// let g = locks.exclusive(&42).acquire()?;
    /// # Ok::<(), leasehold::LockError>(())
    /// ```
    #[inline(always)]
    pub fn acquire(self) -> Result<LockGuard<'m, K, S>, LockError> {
        self.acquire_until(None)
    }

    /// Waits at most `timeout` for the lock.
    ///
    /// # Errors
    ///
    /// [`LockError::TimedOut`] when the time is up, and the validation errors.
    ///
    /// # Examples
    ///
    /// ```
    /// use leasehold::{LockError, LockManager};
    /// use std::time::Duration;
    /// let locks: LockManager<String> = LockManager::new();
    /// let _g = locks.exclusive("k").try_acquire()?;
    /// let err = locks.exclusive("k").acquire_timeout(Duration::from_millis(5)).unwrap_err();
    /// assert_eq!(err, LockError::TimedOut);
    /// # Ok::<(), LockError>(())
    /// ```
    #[inline]
    pub fn acquire_timeout(self, timeout: Duration) -> Result<LockGuard<'m, K, S>, LockError> {
        self.acquire_until(Some(Instant::now().checked_add(timeout).unwrap_or_else(far_future)))
    }

    /// The fast path, inlined into the caller like `try_acquire`'s; everything else is cold.
    #[inline(always)]
    fn acquire_until(self, deadline: Option<Instant>) -> Result<LockGuard<'m, K, S>, LockError> {
        if let Some(mode) = self.plain_mode() {
            // Only scalars cross into the slow path, so the request need not live in memory.
            let (locks, key) = (self.locks, self.key);
            // Nothing to drop: a plain request has no owner and no service (`plain_mode`).
            std::mem::forget(self);
            let hash = locks.table.hash(key);
            // With anyone listening to events the claim fails (`EventBus::claim_limit`): only the
            // slow path's holding is told of.
            let (slot, h) = match locks.table.try_fast_plain(hash, key, mode, locks.events.claim_limit()) {
                Ok(claimed) => claimed,
                Err(found) => {
                    let (slot, h) = match found {
                        // A plain exclusive miss creates the key's slot, its result in two registers.
                        None if matches!(mode, Mode::Exclusive) => match create_bare_cold(locks, key, hash) {
                            Some((slot, token)) => (slot, Holding::bare(&slot.records[0], token)),
                            None => acquire_slow_plain(locks, key, mode, hash, None, deadline)?,
                        },
                        found => acquire_slow_plain(locks, key, mode, hash, found, deadline)?,
                    };
                    (slot, locks.emit_acquired(slot, h, mode, None))
                }
            };
            return Ok(LockGuard::new(locks, slot, h));
        }
        if self.owner.is_none() && self.service.is_none() {
            return self.acquire_lease_only(deadline);
        }
        self.acquire_managed(deadline)
    }

    /// `acquire_until` for a managed request (lease or owner) or one to refuse: validated into an
    /// `Ask` first.
    #[inline(never)]
    fn acquire_managed(self, deadline: Option<Instant>) -> Result<LockGuard<'m, K, S>, LockError> {
        let ask = self.checked_ask()?;
        let locks = self.locks;
        let hash = locks.table.hash(self.key);
        let (found, claimed) = locks.table.try_fast(hash, self.key, &ask);
        let (slot, h) = match (found, claimed) {
            (Some(slot), Some(h)) => (slot, h),
            // The guard is built here for both paths, so the slow path returns only what it got.
            _ => acquire_slow(self.locks, self.key, ask, hash, found, deadline)?,
        };
        Ok(self.guard(slot, h))
    }

    /// `acquire_managed` for a lease with neither owner nor service (the common lease): a valid
    /// lease in a mode the plain fast path claims takes the same fast path (`try_fast_lease`),
    /// without an `Ask`, an owner or a service; anything else is `acquire_managed`'s. Inlined
    /// like the plain fast path: a ttl known where the request is built then folds its checks
    /// away, and the call frame and the guard's return through memory go. (`always`: with a hint
    /// only, lockbench's loop kept it out of line.)
    #[inline(always)]
    fn acquire_lease_only(self, deadline: Option<Instant>) -> Result<LockGuard<'m, K, S>, LockError> {
        let Some((mode, ttl_ns)) = self.lease_only() else {
            return self.acquire_managed(deadline);
        };
        let (locks, key) = (self.locks, self.key);
        // Nothing to drop: no owner and no service (tested by the caller).
        std::mem::forget(self);
        let hash = locks.table.hash(key);
        // As the plain fast path: with anyone listening the claim fails (`EventBus::claim_limit`),
        // and only the slow path's holding is told of.
        let (slot, h) = match locks.table.try_fast_lease(hash, key, mode, ttl_ns, locks.events.claim_limit()) {
            Ok(claimed) => claimed,
            Err(found) => {
                let ask = Ask { mode, ttl_ns: Some(ttl_ns), owner: None };
                let (slot, h) = acquire_slow(locks, key, ask, hash, found, deadline)?;
                (slot, locks.emit_acquired(slot, h, mode, None))
            }
        };
        Ok(LockGuard::new(locks, slot, h))
    }

    /// The mode and ttl of a lease that `try_fast_lease` can claim: a valid ttl, in a mode of the
    /// plain fast path (`plain_mode`). Invalid ones are refused, with their count, by `ask`.
    #[inline(always)]
    fn lease_only(&self) -> Option<(Mode, u64)> {
        const MAX_TTL_NS: u64 = duration_ns(MAX_TTL);
        let valid = match self.mode {
            Mode::Semaphore(n) => n != 0 && n <= MAX_PERMITS,
            Mode::Exclusive | Mode::Shared => true,
            _ => false,
        };
        let ttl_ns = duration_ns(self.ttl?);
        (valid && ttl_ns != 0 && ttl_ns <= MAX_TTL_NS).then_some((self.mode, ttl_ns))
    }
}

/// A plain exclusive request's miss (`Request::acquire_until`): `Table::create_plain`, whose
/// result comes back in two registers, not through memory: the slot and its bare holding's token,
/// from which the caller rebuilds the holding (`Holding::bare`: record 0, every unit, sampled by
/// the token, as `Slot::finish_bare` made it). Only scalars go in (no `found`, no deadline: the
/// caller tested the miss). `None`: nothing done (the key has a slot after all, or the slot
/// bound), and the caller takes `acquire_slow_plain`.
#[cold]
#[inline(never)]
fn create_bare_cold<'m, K, Q, S>(locks: &'m State<K, S>, key: &Q, hash: u64) -> Option<(&'m Slot<K>, u64)>
where
    K: Hash + Eq + Send + Sync + 'static + Borrow<Q>,
    Q: ?Sized + Hash + Eq + ToOwned,
    K: From<Q::Owned>,
    S: BuildHasher + Send + Sync + 'static,
{
    let (slot, h) = locks.table.create_plain(hash, key, Mode::Exclusive)?;
    debug_assert!({
        let rebuilt = Holding::bare(&slot.records[0], h.token);
        (rebuilt.rec.0, rebuilt.bits) == (h.rec.0, h.bits)
    });
    Some((slot, h.token))
}

/// `acquire_slow` for a plain request (`Request::acquire_until`: `ask` has neither lease nor
/// owner): a miss (no slot found by the lock-free lookup) creates the key's slot directly, without
/// the waiter factory and the locked path's plumbing (`Table::create_plain`; `None`: the key has a
/// slot after all, or something unusual, and `acquire_slow` decides). The mode comes by value
/// (a register), not in an `Ask` built in the caller's frame: `acquire_slow`'s is built here.
#[cold]
#[inline(never)]
fn acquire_slow_plain<'m, K, Q, S>(
    locks: &'m State<K, S>,
    key: &Q,
    mode: Mode,
    hash: u64,
    found: Option<&'m Slot<K>>,
    deadline: Option<Instant>,
) -> Result<(&'m Slot<K>, Holding), LockError>
where
    K: Hash + Eq + Send + Sync + 'static + Borrow<Q>,
    Q: ?Sized + Hash + Eq + ToOwned,
    K: From<Q::Owned>,
    S: BuildHasher + Send + Sync + 'static,
{
    if found.is_none() {
        // Exclusive, the common case, on a path of its own where the mode is a constant.
        let created = match mode {
            Mode::Exclusive => locks.table.create_plain(hash, key, Mode::Exclusive),
            mode => locks.table.create_plain(hash, key, mode),
        };
        if let Some(created) = created {
            return Ok(created);
        }
    }
    acquire_slow(locks, key, Ask { mode, ttl_ns: None, owner: None }, hash, found, deadline)
}

/// Past the fast path: spin a little on a held slot, then the locked path, and park if queued.
#[cold]
#[inline(never)]
fn acquire_slow<'m, K, Q, S>(
    locks: &'m State<K, S>,
    key: &Q,
    ask: Ask,
    hash: u64,
    found: Option<&'m Slot<K>>,
    deadline: Option<Instant>,
) -> Result<(&'m Slot<K>, Holding), LockError>
where
    K: Hash + Eq + Send + Sync + 'static + Borrow<Q>,
    Q: ?Sized + Hash + Eq + ToOwned,
    K: From<Q::Owned>,
    S: BuildHasher + Send + Sync + 'static,
{
    #[cfg(leasehold_loom)]
    let _ = found;
    // Someone holds it: a few tries catch a short critical section without parking.
    // (Not under loom: a model explores the interleavings a spin would only wait through.)
    #[cfg(not(leasehold_loom))]
    if let Some(slot) = found {
        // While anyone listens to events, plain and lease-only acquisitions come here with the key
        // most likely free (their lock-free claim is refused then, `EventBus::claim_limit`): one
        // try before the spin's first yield.
        if locks.events.is_active() {
            if let Some(h) = locks.table.claim_found(slot, key, &ask) {
                return Ok((slot, h));
            }
        }
        if let Some(h) = spin_claim(deadline, || locks.table.claim_found(slot, key, &ask)) {
            return Ok((slot, h));
        }
    }
    let make = || Waiter::for_thread(ask.clone(), locks.table.core.clock.now_ns());
    match locks.attempt(hash, key, &ask, Some(&make)) {
        Attempt::Acquired(slot, h) => Ok((slot, h)),
        Attempt::Failed(e) => Err(e),
        Attempt::Queued(slot, waiter) => {
            let h = wait_blocking(locks, slot, &waiter, deadline)?;
            Ok((slot, h))
        }
    }
}

/// How many times a waiter yields its core and tries again before it queues, and a woken waiter
/// before it retries under the slot lock (W3 in lockbench, issue 11: see `bench/perf5-handoff.md`).
///
/// Yields, not a spin of `pause` bursts: every try reads the slot's cache line. Tries a few hundred
/// cycles apart keep taking the line from the holder, whose next write must fetch it back, and
/// catch the key in the holder's short gap between a release and its next claim, so the key and
/// its line change hands several times as often as the holder's work needs (the bare mutex's
/// short spin loses less: its gap is a few instructions). A yield spaces the tries by the length
/// of a system call and lets a runnable holder have the core on a busy machine.
#[cfg(not(leasehold_loom))]
const SPIN_YIELDS: u32 = 20;

/// Tries `claim` after each of up to [`SPIN_YIELDS`] yields, and none past `deadline` (a yield on
/// a busy machine may take a time slice). Under loom, once, without yielding: a model explores the
/// interleavings a spin would only wait through.
#[inline]
fn spin_claim(deadline: Option<Instant>, mut claim: impl FnMut() -> Option<Holding>) -> Option<Holding> {
    #[cfg(not(leasehold_loom))]
    {
        for _ in 0..SPIN_YIELDS {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return None;
            }
            crate::primitives::sync::thread::yield_now();
            if let Some(h) = claim() {
                return Some(h);
            }
        }
        None
    }
    #[cfg(leasehold_loom)]
    {
        let _ = deadline;
        claim()
    }
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(60 * 60 * 24 * 365 * 30)
}

/// Parks until the queued `waiter` is handed the lock, claims it after a wake-up, or times out.
fn wait_blocking<K, S>(
    locks: &State<K, S>,
    slot: &Slot<K>,
    waiter: &Arc<Waiter>,
    deadline: Option<Instant>,
) -> Result<Holding, LockError>
where
    K: Hash + Eq + Send + Sync + 'static,
    S: BuildHasher + Send + Sync + 'static,
{
    loop {
        while waiter.is_waiting() {
            let now = Instant::now();
            let left = deadline.map(|d| d.saturating_duration_since(now));
            if left == Some(Duration::ZERO) {
                break;
            }
            // A holder past its deadline must not keep us waiting even if no reaper runs.
            let holder = locks.table.holder_deadline_wait(slot);
            if holder == Some(Duration::ZERO) {
                break;
            }
            let timeout = match (left, holder) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            crate::primitives::sync::park(timeout);
        }
        // Woken to retry: a few lock-free claims first. The releaser that woke us runs on and may
        // well take the key again before we run; a single retry under the slot lock would mostly
        // find it held and park again, and every release while we stay queued takes the slot lock.
        if waiter.is_notified() && locks.table.woken_claims_lock_free(slot, &waiter.ask) {
            if let Some(h) = spin_claim(deadline, || locks.table.claim_woken(slot, waiter)) {
                locks.count_contended(slot, waiter);
                return Ok(h);
            }
        }
        let mut g = slot.lock();
        if let Some(h) = waiter.take_grant().or_else(|| locks.retry_queued(slot, waiter, &mut g)) {
            locks.count_contended(slot, waiter);
            return Ok(h);
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            #[cfg(feature = "tracing")]
            locks.trace("gave up waiting", slot, None, waiter.ask.owner.as_ref());
            slot.leave_queue(waiter, &mut g);
            drop(g);
            locks.table.count_refusal(slot.hash.load(crate::primitives::sync::Ordering::Relaxed), &LockError::TimedOut);
            return Err(LockError::TimedOut);
        }
    }
}
