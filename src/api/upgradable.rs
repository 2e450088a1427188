//! Upgradable locks (issue 12): the request, the guard, and its upgrade to exclusive, blocking or
//! not. The protocols are the engine's (`engine/upgrade.rs`); the async upgrade is
//! `upgrade_future.rs`, the downgrades of an exclusive guard `downgrade.rs`.

#![deny(unsafe_code)]

use std::borrow::Borrow;
use std::fmt;
use std::future::Future;
use std::hash::{BuildHasher, Hash};
use std::ops::Deref;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::api::future::AcquireFuture;
use crate::api::guard::LockGuard;
use crate::api::loss::LossCause;
use crate::api::manager::LockManager;
use crate::api::request::Request;
use crate::engine::queue::Waiter;
use crate::engine::slot::SlotInner;
use crate::engine::table::DefaultHasher;
use crate::engine::upgrade::Upgrade;
use crate::primitives::sync::Arc;
use crate::vocab::error::LockError;
use crate::vocab::mode::{Mode, Owner};

/// A guard's mode change that did not happen: the guard, unchanged (still valid unless the error
/// is [`LockError::Expired`]), and why. Converts into its [`LockError`] (dropping the guard, which
/// releases it) so that `?` works in a function that returns `LockError`.
///
/// # Examples
///
/// ```
/// use leasehold::{LockError, LockManager};
/// let locks: LockManager<String> = LockManager::new();
/// let u = locks.upgradable("row/9").try_acquire()?;
/// let _reader = locks.shared("row/9").try_acquire()?;
/// let failed = u.try_upgrade().unwrap_err();
/// assert_eq!(failed.error, LockError::WouldBlock);
/// let u = failed.guard;                 // still the upgradable holding
/// assert!(u.is_held());
/// # Ok::<(), LockError>(())
/// ```
pub struct ModeChangeFailed<G> {
    /// The guard, as it was.
    pub guard: G,
    /// Why the change did not happen.
    pub error: LockError,
}

impl<G> fmt::Debug for ModeChangeFailed<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ModeChangeFailed").field("error", &self.error).finish_non_exhaustive()
    }
}

impl<G> fmt::Display for ModeChangeFailed<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "mode change refused: {}", self.error)
    }
}

impl<G> std::error::Error for ModeChangeFailed<G> {}

impl<G> From<ModeChangeFailed<G>> for LockError {
    fn from(failed: ModeChangeFailed<G>) -> Self {
        failed.error
    }
}

/// A request for an upgradable lock on one key: beside shared holders, never beside an exclusive
/// holder or another upgradable one, and its guard can become exclusive
/// ([`UpgradableGuard::upgrade`]) without letting a writer in between. The builder and the ways to
/// wait are those of [`Request`]; a queued writer stops new upgradable requests as it stops new
/// readers. An upgradable request on a semaphore key is [`LockError::PermitMismatch`].
///
/// # Examples
///
/// ```
/// use leasehold::{LockError, LockManager, Mode};
/// let locks: LockManager<String> = LockManager::new();
/// let u = locks.upgradable("row/9").owner("txn-1").try_acquire()?;
/// assert_eq!(u.mode(), Mode::Upgradable);
/// let _reader = locks.shared("row/9").try_acquire()?;          // readers still get in
/// assert_eq!(locks.upgradable("row/9").try_acquire().unwrap_err(), LockError::WouldBlock);
/// # Ok::<(), LockError>(())
/// ```
#[must_use = "a request does nothing until one of its acquire methods is called"]
pub struct UpgradableRequest<'m, 'q, K, Q: ?Sized, S = DefaultHasher> {
    request: Request<'m, 'q, K, Q, S>,
}

impl<K, Q: ?Sized + fmt::Debug, S> fmt::Debug for UpgradableRequest<'_, '_, K, Q, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.request, f)
    }
}

impl<K, S> LockManager<K, S>
where
    K: Hash + Eq + Send + Sync + 'static,
    S: BuildHasher + Send + Sync + 'static,
{
    /// A request for an upgradable lock on `key` (see [`UpgradableRequest`]).
    ///
    /// # Examples
    ///
    /// ```
    /// let locks: leasehold::LockManager<String> = leasehold::LockManager::new();
    /// let u = locks.upgradable("row/9").acquire()?;
    /// let w = u.upgrade()?;                       // exclusive: a larger token
    /// let r = w.downgrade()?;                     // shared, no gap a writer could use
    /// assert_eq!(r.mode(), leasehold::Mode::Shared);
    /// # Ok::<(), leasehold::LockError>(())
    /// ```
    pub fn upgradable<'m, 'q, Q>(&'m self, key: &'q Q) -> UpgradableRequest<'m, 'q, K, Q, S>
    where
        K: Borrow<Q> + From<Q::Owned>,
        Q: ?Sized + Hash + Eq + ToOwned,
    {
        UpgradableRequest { request: Request::new(&self.state, key, Mode::Upgradable) }
    }
}

impl<'m, 'q, K, Q, S> UpgradableRequest<'m, 'q, K, Q, S>
where
    K: Hash + Eq + Send + Sync + 'static + Borrow<Q> + From<Q::Owned>,
    Q: ?Sized + Hash + Eq + ToOwned,
    S: BuildHasher + Send + Sync + 'static,
{
    /// The plain request inside (for the backend trait, whose guard is a `LockGuard`).
    pub(crate) fn into_request(self) -> Request<'m, 'q, K, Q, S> {
        self.request
    }

    /// As [`Request::lease`]: the lease carries over to the exclusive holding of an upgrade.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
    /// let u = locks.upgradable(&1).lease(Duration::from_secs(5)).try_acquire()?;
    /// let deadline = u.expires_at();
    /// assert_eq!(u.upgrade()?.expires_at(), deadline);
    /// # Ok::<(), leasehold::LockError>(())
    /// ```
    pub fn lease(self, ttl: Duration) -> Self {
        UpgradableRequest { request: self.request.lease(ttl) }
    }

    /// As [`Request::owner`].
    ///
    /// # Examples
    ///
    /// ```
    /// let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
    /// let u = locks.upgradable(&1).owner("txn-7").try_acquire()?;
    /// assert_eq!(u.owner().unwrap().as_str(), "txn-7");
    /// # Ok::<(), leasehold::LockError>(())
    /// ```
    pub fn owner(self, owner: impl Into<Owner>) -> Self {
        UpgradableRequest { request: self.request.owner(owner) }
    }

    /// As [`Request::keep_alive`]: renewals go on through an upgrade (on the new holding).
    ///
    /// # Examples
    ///
    /// ```
    /// let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
    /// let u = locks.upgradable(&1).keep_alive().try_acquire()?;
    /// assert!(u.expires_at().is_some());
    /// # Ok::<(), leasehold::LockError>(())
    /// ```
    pub fn keep_alive(self) -> Self {
        UpgradableRequest { request: self.request.keep_alive() }
    }

    /// As [`Request::on_lost`].
    ///
    /// # Examples
    ///
    /// ```
    /// let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
    /// let u = locks.upgradable(&1).owner("a").on_lost(|cause| eprintln!("lost: {cause:?}")).try_acquire()?;
    /// # Ok::<(), leasehold::LockError>(())
    /// ```
    pub fn on_lost(self, f: impl Fn(LossCause) + Send + Sync + 'static) -> Self {
        UpgradableRequest { request: self.request.on_lost(f) }
    }

    /// Takes the lock if it is free now; never waits.
    ///
    /// # Errors
    ///
    /// As [`Request::try_acquire`]; `PermitMismatch` on a semaphore key.
    ///
    /// # Examples
    ///
    /// ```
    /// use leasehold::LockError;
    /// let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
    /// let _w = locks.exclusive(&1).try_acquire()?;
    /// assert_eq!(locks.upgradable(&1).try_acquire().unwrap_err(), LockError::WouldBlock);
    /// # Ok::<(), LockError>(())
    /// ```
    pub fn try_acquire(self) -> Result<UpgradableGuard<'m, K, S>, LockError> {
        self.request.try_acquire().map(UpgradableGuard::new)
    }

    /// Waits as long as it takes.
    ///
    /// # Errors
    ///
    /// As [`Request::acquire`].
    ///
    /// # Examples
    ///
    /// ```
    /// let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
    /// let u = locks.upgradable(&1).acquire()?;
    /// # Ok::<(), leasehold::LockError>(())
    /// ```
    pub fn acquire(self) -> Result<UpgradableGuard<'m, K, S>, LockError> {
        self.request.acquire().map(UpgradableGuard::new)
    }

    /// Waits at most `timeout`.
    ///
    /// # Errors
    ///
    /// As [`Request::acquire_timeout`].
    ///
    /// # Examples
    ///
    /// ```
    /// use leasehold::LockError;
    /// use std::time::Duration;
    /// let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
    /// let _u = locks.upgradable(&1).try_acquire()?;
    /// let err = locks.upgradable(&1).acquire_timeout(Duration::from_millis(5)).unwrap_err();
    /// assert_eq!(err, LockError::TimedOut);
    /// # Ok::<(), LockError>(())
    /// ```
    pub fn acquire_timeout(self, timeout: Duration) -> Result<UpgradableGuard<'m, K, S>, LockError> {
        self.request.acquire_timeout(timeout).map(UpgradableGuard::new)
    }

    /// A future that resolves to the lock.
    ///
    /// # Cancel safety
    ///
    /// As [`Request::acquire_async`]: dropping it leaves no waiter and no holding behind.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), leasehold::LockError> {
    /// let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
    /// let u = locks.upgradable(&1).acquire_async().await?;
    /// let w = u.upgrade_async().await?;
    /// assert_eq!(w.mode(), leasehold::Mode::Exclusive);
    /// # Ok(())
    /// # }
    /// ```
    pub fn acquire_async(self) -> UpgradableAcquire<'m, 'q, K, Q, S> {
        UpgradableAcquire { inner: self.request.acquire_async() }
    }
}

/// The future of [`UpgradableRequest::acquire_async`]. Cancel-safe, as [`AcquireFuture`].
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), leasehold::LockError> {
/// let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
/// let u = locks.upgradable(&7).lease(std::time::Duration::from_secs(5)).acquire_async().await?;
/// assert_eq!(u.mode(), leasehold::Mode::Upgradable);
/// # Ok(())
/// # }
/// ```
#[must_use = "futures do nothing unless polled"]
pub struct UpgradableAcquire<'m, 'q, K, Q: ?Sized, S = DefaultHasher> {
    inner: AcquireFuture<'m, 'q, K, Q, S>,
}

impl<K, Q: ?Sized + fmt::Debug, S> fmt::Debug for UpgradableAcquire<'_, '_, K, Q, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpgradableAcquire").field("inner", &self.inner).finish()
    }
}

impl<'m, 'q, K, Q, S> Future for UpgradableAcquire<'m, 'q, K, Q, S>
where
    K: Hash + Eq + Send + Sync + 'static + Borrow<Q> + From<Q::Owned>,
    Q: ?Sized + Hash + Eq + ToOwned,
    S: BuildHasher + Send + Sync + 'static,
{
    type Output = Result<UpgradableGuard<'m, K, S>, LockError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.get_mut().inner).poll(cx).map(|r| r.map(UpgradableGuard::new))
    }
}

/// An upgradable holding: a [`LockGuard`] (it derefs to one; its mode is
/// [`Mode::Upgradable`]) that can become exclusive. Dropping it releases the lock.
///
/// An upgrade stops new readers at once and waits for the readers present to leave; it is a new
/// holding for fencing, with a larger token, and keeps the lease (deadline, renewals, keep-alive,
/// the loss signal). A failed upgrade (would block, timed out) gives the guard back unchanged, in
/// [`ModeChangeFailed`]; if the lease expires while it waits, it fails with
/// [`LockError::Expired`]. Only one upgradable holder exists per key, so two upgrades never wait
/// for each other.
///
/// # Examples
///
/// ```
/// use leasehold::{LockManager, Mode};
/// let locks: LockManager<String> = LockManager::new();
/// let u = locks.upgradable("row/9").try_acquire()?;
/// let before = u.token();
/// let w = u.upgrade()?;
/// assert_eq!(w.mode(), Mode::Exclusive);
/// assert!(w.token() > before);
/// # Ok::<(), leasehold::LockError>(())
/// ```
#[must_use = "dropping the guard releases the lock at once"]
pub struct UpgradableGuard<'m, K, S = DefaultHasher> {
    guard: LockGuard<'m, K, S>,
}

impl<'m, K, S> Deref for UpgradableGuard<'m, K, S> {
    type Target = LockGuard<'m, K, S>;

    fn deref(&self) -> &Self::Target {
        &self.guard
    }
}

impl<K: fmt::Debug, S> fmt::Debug for UpgradableGuard<'_, K, S>
where
    K: Hash + Eq,
    S: BuildHasher,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpgradableGuard").field("guard", &self.guard).finish()
    }
}

impl<'m, K, S> UpgradableGuard<'m, K, S> {
    pub(crate) fn new(guard: LockGuard<'m, K, S>) -> Self {
        UpgradableGuard { guard }
    }

    /// The guard it wraps (for the backend trait and `lock_many`, whose guards are `LockGuard`s).
    pub(crate) fn into_inner(self) -> LockGuard<'m, K, S> {
        self.guard
    }

    /// Releases the lock now.
    ///
    /// # Errors
    ///
    /// As [`LockGuard::release`].
    ///
    /// # Examples
    ///
    /// ```
    /// let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
    /// locks.upgradable(&1).try_acquire()?.release()?;
    /// assert!(locks.upgradable(&1).try_acquire().is_ok());
    /// # Ok::<(), leasehold::LockError>(())
    /// ```
    pub fn release(self) -> Result<(), LockError> {
        self.guard.release()
    }
}

impl<'m, K, S> UpgradableGuard<'m, K, S>
where
    K: Hash + Eq + Send + Sync + 'static,
    S: BuildHasher + Send + Sync + 'static,
{
    /// Becomes exclusive if no reader holds the key now; never waits.
    ///
    /// # Errors
    ///
    /// [`LockError::WouldBlock`] while readers hold the key (also, after about 2^32 acquisitions
    /// of the key without a moment idle, when its acquisition counter is spent: release and
    /// acquire again); [`LockError::Expired`] if the holding was lost. The guard comes back in
    /// the error.
    ///
    /// # Examples
    ///
    /// ```
    /// let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
    /// let u = locks.upgradable(&1).try_acquire()?;
    /// let w = u.try_upgrade()?;
    /// assert!(locks.shared(&1).try_acquire().is_err());
    /// # Ok::<(), leasehold::LockError>(())
    /// ```
    pub fn try_upgrade(self) -> Result<LockGuard<'m, K, S>, ModeChangeFailed<Self>> {
        let (_, slot) = self.guard.place();
        let mut inner = slot.lock();
        match self.step(&mut inner, None) {
            Upgrade::Done(h) => {
                drop(inner);
                Ok(self.guard.changed(h))
            }
            refused => {
                drop(inner);
                Err(self.refused(refused))
            }
        }
    }

    /// Becomes exclusive, waiting as long as the readers present hold the key. New readers are
    /// stopped at once.
    ///
    /// # Errors
    ///
    /// [`LockError::Expired`] if the holding is lost while it waits; `WouldBlock` for a spent
    /// acquisition counter (see [`try_upgrade`](UpgradableGuard::try_upgrade)).
    ///
    /// # Examples
    ///
    /// ```
    /// let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
    /// let u = locks.upgradable(&1).acquire()?;
    /// let w = u.upgrade()?;
    /// assert_eq!(w.mode(), leasehold::Mode::Exclusive);
    /// # Ok::<(), leasehold::LockError>(())
    /// ```
    pub fn upgrade(self) -> Result<LockGuard<'m, K, S>, ModeChangeFailed<Self>> {
        self.upgrade_until(None)
    }

    /// Becomes exclusive, waiting at most `timeout` for the readers to leave. On timeout the
    /// readers it held back may claim again and the guard comes back, still upgradable.
    ///
    /// # Errors
    ///
    /// [`LockError::TimedOut`], and those of [`upgrade`](UpgradableGuard::upgrade).
    ///
    /// # Examples
    ///
    /// ```
    /// use leasehold::LockError;
    /// use std::time::Duration;
    /// let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
    /// let u = locks.upgradable(&1).try_acquire()?;
    /// let reader = locks.shared(&1).try_acquire()?;
    /// let failed = u.upgrade_timeout(Duration::from_millis(5)).unwrap_err();
    /// assert_eq!(failed.error, LockError::TimedOut);
    /// assert!(failed.guard.is_held());
    /// # Ok::<(), LockError>(())
    /// ```
    pub fn upgrade_timeout(self, timeout: Duration) -> Result<LockGuard<'m, K, S>, ModeChangeFailed<Self>> {
        let deadline =
            Instant::now().checked_add(timeout).unwrap_or_else(|| Instant::now() + Duration::from_secs(1 << 30));
        self.upgrade_until(Some(deadline))
    }

    fn upgrade_until(self, deadline: Option<Instant>) -> Result<LockGuard<'m, K, S>, ModeChangeFailed<Self>> {
        let (locks, slot) = self.guard.place();
        let waiter = Waiter::for_upgrade(None, locks.table.core.clock.now_ns());
        loop {
            let mut inner = slot.lock();
            match self.step(&mut inner, Some(&waiter)) {
                Upgrade::Done(h) => {
                    drop(inner);
                    return Ok(self.guard.changed(h));
                }
                Upgrade::Busy => {}
                refused => {
                    drop(inner);
                    return Err(self.refused(refused));
                }
            }
            drop(inner);
            // Park until the last reader's release notifies us, the time is up, or a holder's
            // deadline comes (a reader past its deadline must not keep us waiting).
            while waiter.is_waiting() {
                let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
                if left == Some(Duration::ZERO) {
                    let mut inner = slot.lock();
                    if slot.cancel_upgrade(&waiter, &mut inner) {
                        drop(inner);
                        return Err(ModeChangeFailed { guard: self, error: LockError::TimedOut });
                    }
                    // Notified (or its holding ended) just now: look once more.
                    break;
                }
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
        }
    }

    /// One upgrade step under the slot lock, expiring holders past their deadlines first (ours
    /// too: then the step finds it gone).
    pub(crate) fn step(&self, inner: &mut SlotInner, waiter: Option<&Arc<Waiter>>) -> Upgrade {
        let (locks, slot) = self.guard.place();
        let core = &locks.table.core;
        let h = self.guard.current();
        loop {
            let outcome = slot.upgrade_locked(core, &h, waiter, inner, &mut |old, new| {
                self.guard.rekey_signal(old, new.token);
            });
            match outcome {
                Upgrade::Busy | Upgrade::PastDeadline(_)
                    if locks.table.expire_blockers(slot, inner, &|s, e| locks.emit_ended(s, e)) > 0 =>
                {
                    continue
                }
                other => return other,
            }
        }
    }

    /// The guard back, with why an upgrade step refused.
    pub(crate) fn refused(self, outcome: Upgrade) -> ModeChangeFailed<Self> {
        if let Upgrade::PastDeadline(now) = outcome {
            // Nobody expired it yet (the step's expiry found nothing to do): end it as an expiry,
            // so that this answer, `is_held` and the reaper agree.
            self.guard.expire_own(&self.guard.current(), now);
        }
        let error = match outcome {
            Upgrade::Gone | Upgrade::PastDeadline(_) => LockError::Expired,
            Upgrade::Busy | Upgrade::Exhausted | Upgrade::Done(_) => LockError::WouldBlock,
        };
        ModeChangeFailed { guard: self, error }
    }
}
