//! Several keys at once, all or nothing.
//!
//! The canonical order is the key's own total order (`Q: Ord`, the borrowed form the caller
//! passes): every request takes its keys in ascending order, so two overlapping requests never
//! hold one key each while waiting for the other's (the classic resource-ordering argument: a
//! wait is always for a key larger than every key the waiter holds, so no cycle can close).
//! Ordering by hash would need a tie-break for colliding hashes anyway, and `Ord` is what a
//! database's keys (integers, byte strings, tuples) already have.
//!
//! A key named twice is taken once, in the mode that covers both ([`crate::vocab::compat::join`]):
//! exclusive wins over shared; a semaphore named with two permit counts is
//! [`LockError::PermitMismatch`].
//!
//! If any key fails (would block, times out, errors, or the future is dropped), the keys already
//! taken are released before the call returns: the guards taken so far live in one vector that
//! is dropped.

#![deny(unsafe_code)]

use std::borrow::Borrow;
use std::fmt;
use std::future::Future;
use std::hash::{BuildHasher, Hash};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::api::future::AcquireFuture;
use crate::api::manager::LockManager;
use crate::api::many_guard::{Held, ManyGuard};
use crate::api::request::Request;
use crate::api::service::DEFAULT_KEEP_ALIVE_TTL;
use crate::api::session::{Session, SessionAcquire, SessionRequest};
use crate::engine::lease::MAX_TTL;
use crate::engine::table::DefaultHasher;
use crate::vocab::compat::join;
use crate::vocab::error::LockError;
use crate::vocab::mode::{Mode, Owner, MAX_UNITS};

/// Sorts by key and merges duplicates.
fn canonical<'q, Q: ?Sized + Ord>(mut keys: Vec<(&'q Q, Mode)>) -> Result<Vec<(&'q Q, Mode)>, LockError> {
    keys.sort_by(|a, b| a.0.cmp(b.0));
    let mut out: Vec<(&'q Q, Mode)> = Vec::with_capacity(keys.len());
    for (k, m) in keys {
        match out.last_mut() {
            Some(last) if last.0 == k => last.1 = merge(last.1, m)?,
            _ => out.push((k, m)),
        }
    }
    Ok(out)
}

/// A request for several keys at once (see [`LockManager::lock_many`]).
///
/// # Examples
///
/// ```
/// use leasehold::{LockManager, Mode};
/// use std::time::Duration;
/// let locks: LockManager<String> = LockManager::new();
/// let all = locks
///     .lock_many([("b", Mode::Shared), ("a", Mode::Exclusive)])
///     .lease(Duration::from_secs(30))
///     .owner("mover")
///     .acquire_timeout(Duration::from_millis(50))?;
/// assert_eq!(all.keys().collect::<Vec<_>>(), ["a", "b"]);   // canonical order
/// # Ok::<(), leasehold::LockError>(())
/// ```
#[must_use = "a request does nothing until one of its acquire methods is called"]
pub struct ManyRequest<'s, 'm, 'q, K, Q: ?Sized, S = DefaultHasher> {
    locks: &'m LockManager<K, S>,
    session: Option<&'s Session<'m, K, S>>,
    keys: Result<Vec<(&'q Q, Mode)>, LockError>,
    ttl: Option<Duration>,
    owner: Option<Owner>,
    /// Every key's lease renewed by the manager's renewer (`keep_alive`).
    keep_alive: bool,
}

impl<K, Q: ?Sized + fmt::Debug, S> fmt::Debug for ManyRequest<'_, '_, '_, K, Q, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManyRequest")
            .field("keys", &self.keys)
            .field("session", &self.session.map(|s| s.id()))
            .field("ttl", &self.ttl)
            .field("keep_alive", &self.keep_alive)
            .field("owner", &self.owner)
            .finish()
    }
}

impl<'s, 'm, 'q, K, Q, S> ManyRequest<'s, 'm, 'q, K, Q, S>
where
    K: Hash + Eq + Send + Sync + 'static + Borrow<Q> + From<Q::Owned>,
    Q: ?Sized + Hash + Eq + Ord + ToOwned + 'q,
    S: BuildHasher + Send + Sync + 'static,
{
    pub(crate) fn new<I>(locks: &'m LockManager<K, S>, session: Option<&'s Session<'m, K, S>>, keys: I) -> Self
    where
        I: IntoIterator<Item = (&'q Q, Mode)>,
    {
        let keys = canonical(keys.into_iter().collect());
        ManyRequest { locks, session, keys, ttl: None, owner: None, keep_alive: false }
    }

    /// Gives every holding a lease of `ttl` (each key's lease is its own). Sessions take no
    /// lease: with a session this is [`LockError::InvalidTtl`] at acquire time.
    ///
    /// # Examples
    ///
    /// ```
    /// use leasehold::Mode;
    /// use std::time::Duration;
    /// let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
    /// let all = locks.lock_many([(&1, Mode::Exclusive)]).lease(Duration::from_secs(1)).try_acquire()?;
    /// assert!(all.iter().all(|g| g.expires_at().is_some()));
    /// # Ok::<(), leasehold::LockError>(())
    /// ```
    pub fn lease(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// Labels every holding.
    ///
    /// # Examples
    ///
    /// ```
    /// use leasehold::Mode;
    /// let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
    /// let all = locks.lock_many([(&1, Mode::Shared), (&2, Mode::Shared)]).owner("etl").try_acquire()?;
    /// assert!(all.iter().all(|g| g.owner().unwrap().as_str() == "etl"));
    /// # Ok::<(), leasehold::LockError>(())
    /// ```
    pub fn owner(mut self, owner: impl Into<Owner>) -> Self {
        self.owner = Some(owner.into());
        self
    }

    /// Keeps every key's lease alive while the guard lives, as
    /// [`Request::keep_alive`](crate::Request::keep_alive) does for one key (each key's lease is
    /// renewed on its own by the manager's renewer, and each has its own loss signal). Without
    /// [`lease`](ManyRequest::lease), the leases are 30 seconds. Sessions take no lease.
    ///
    /// # Examples
    ///
    /// ```
    /// use leasehold::Mode;
    /// use std::time::Duration;
    /// let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
    /// let all = locks.lock_many([(&1, Mode::Exclusive), (&2, Mode::Shared)]).keep_alive().try_acquire()?;
    /// assert!(all.iter().all(|g| g.trusted_for() > Duration::from_secs(10)));
    /// # Ok::<(), leasehold::LockError>(())
    /// ```
    pub fn keep_alive(mut self) -> Self {
        self.ttl.get_or_insert(DEFAULT_KEEP_ALIVE_TTL);
        self.keep_alive = true;
        self
    }

    fn plan(&self) -> Result<Vec<(&'q Q, Mode)>, LockError> {
        let keys = self.keys.clone()?;
        match self.ttl {
            Some(ttl) if self.session.is_some() || ttl.is_zero() || ttl > MAX_TTL => Err(LockError::InvalidTtl { ttl }),
            _ => Ok(keys),
        }
    }

    fn plain(&self, key: &'q Q, mode: Mode) -> Request<'m, 'q, K, Q, S> {
        let mut r = Request::new(&self.locks.state, key, mode);
        if let Some(ttl) = self.ttl {
            r = r.lease(ttl);
        }
        if let Some(o) = &self.owner {
            r = r.owner(o.clone());
        }
        if self.keep_alive {
            r = r.keep_alive();
        }
        r
    }

    /// Takes every key if each is free now; otherwise none (never waits).
    ///
    /// # Errors
    ///
    /// [`LockError::WouldBlock`] if any key is held in a conflicting mode, the validation errors
    /// of a single request, and [`LockError::PermitMismatch`] for a semaphore named twice with
    /// different permit counts.
    ///
    /// # Examples
    ///
    /// ```
    /// use leasehold::{LockError, Mode};
    /// let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
    /// let _b = locks.exclusive(&2).try_acquire()?;
    /// let err = locks.lock_many([(&1, Mode::Exclusive), (&2, Mode::Exclusive)]).try_acquire().unwrap_err();
    /// assert_eq!(err, LockError::WouldBlock);
    /// assert!(locks.exclusive(&1).try_acquire().is_ok());   // key 1 was given back
    /// # Ok::<(), LockError>(())
    /// ```
    pub fn try_acquire(self) -> Result<ManyGuard<'s, 'm, K, S>, LockError>
    where
        K: Clone + fmt::Debug,
    {
        let plan = self.plan()?;
        let mut held = Vec::with_capacity(plan.len());
        for (key, mode) in plan {
            held.push(match self.session {
                Some(s) => Held::Session(SessionRequest::new(s, key, mode, self.owner.clone()).try_acquire()?),
                None => Held::Plain(self.plain(key, mode).try_acquire()?),
            });
        }
        Ok(ManyGuard { held })
    }

    /// Waits as long as it takes for every key.
    ///
    /// # Errors
    ///
    /// The validation errors, and with a session [`LockError::Deadlock`].
    ///
    /// # Examples
    ///
    /// ```
    /// use leasehold::Mode;
    /// let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
    /// let all = locks.lock_many([(&3, Mode::Exclusive), (&1, Mode::Exclusive)]).acquire()?;
    /// assert_eq!(all.len(), 2);
    /// # Ok::<(), leasehold::LockError>(())
    /// ```
    pub fn acquire(self) -> Result<ManyGuard<'s, 'm, K, S>, LockError>
    where
        K: Clone + fmt::Debug,
    {
        self.acquire_until(None)
    }

    /// Waits at most `timeout` for all the keys together; on timeout, none is held.
    ///
    /// # Errors
    ///
    /// [`LockError::TimedOut`], the validation errors, and with a session
    /// [`LockError::Deadlock`].
    ///
    /// # Examples
    ///
    /// ```
    /// use leasehold::{LockError, Mode};
    /// use std::time::Duration;
    /// let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
    /// let _b = locks.shared(&2).try_acquire()?;
    /// let err = locks
    ///     .lock_many([(&1, Mode::Exclusive), (&2, Mode::Exclusive)])
    ///     .acquire_timeout(Duration::from_millis(5))
    ///     .unwrap_err();
    /// assert_eq!(err, LockError::TimedOut);
    /// assert!(locks.exclusive(&1).try_acquire().is_ok());
    /// # Ok::<(), LockError>(())
    /// ```
    pub fn acquire_timeout(self, timeout: Duration) -> Result<ManyGuard<'s, 'm, K, S>, LockError>
    where
        K: Clone + fmt::Debug,
    {
        let deadline = Instant::now().checked_add(timeout);
        self.acquire_until(Some(deadline.unwrap_or_else(|| Instant::now() + Duration::from_secs(1 << 30))))
    }

    fn acquire_until(self, deadline: Option<Instant>) -> Result<ManyGuard<'s, 'm, K, S>, LockError>
    where
        K: Clone + fmt::Debug,
    {
        let plan = self.plan()?;
        let mut held = Vec::with_capacity(plan.len());
        for (key, mode) in plan {
            held.push(match self.session {
                Some(s) => {
                    Held::Session(SessionRequest::new(s, key, mode, self.owner.clone()).acquire_until(deadline)?)
                }
                None => {
                    let r = self.plain(key, mode);
                    Held::Plain(match deadline {
                        None => r.acquire()?,
                        Some(d) => r.acquire_timeout(d.saturating_duration_since(Instant::now()))?,
                    })
                }
            });
        }
        Ok(ManyGuard { held })
    }

    /// A future that resolves when every key is held.
    ///
    /// # Cancel safety
    ///
    /// Dropping it before it completes leaves its current wait (as a single request's future
    /// does) and releases every key it took.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), leasehold::LockError> {
    /// use leasehold::Mode;
    /// let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
    /// let all = locks.lock_many([(&1, Mode::Exclusive), (&2, Mode::Shared)]).acquire_async().await?;
    /// assert_eq!(all.len(), 2);
    /// # Ok(())
    /// # }
    /// ```
    pub fn acquire_async(self) -> ManyAcquire<'s, 'm, 'q, K, Q, S> {
        let plan = self.plan().map(|p| p.into_iter().rev().collect());
        ManyAcquire { request: self, plan, current: None, held: Vec::new() }
    }
}

enum Step<'s, 'm, 'q, K, Q: ?Sized, S> {
    Plain(AcquireFuture<'m, 'q, K, Q, S>),
    Session(SessionAcquire<'s, 'm, 'q, K, Q, S>),
}

/// The future of [`ManyRequest::acquire_async`].
#[must_use = "futures do nothing unless polled"]
pub struct ManyAcquire<'s, 'm, 'q, K, Q: ?Sized, S = DefaultHasher> {
    request: ManyRequest<'s, 'm, 'q, K, Q, S>,
    /// The keys still to take, last first.
    plan: Result<Vec<(&'q Q, Mode)>, LockError>,
    current: Option<Step<'s, 'm, 'q, K, Q, S>>,
    held: Vec<Held<'s, 'm, K, S>>,
}

impl<K, Q: ?Sized + fmt::Debug, S> fmt::Debug for ManyAcquire<'_, '_, '_, K, Q, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManyAcquire").field("request", &self.request).field("taken", &self.held.len()).finish()
    }
}

impl<K, Q: ?Sized, S> Unpin for ManyAcquire<'_, '_, '_, K, Q, S> {}

impl<'s, 'm, 'q, K, Q, S> Future for ManyAcquire<'s, 'm, 'q, K, Q, S>
where
    K: Hash + Eq + Clone + fmt::Debug + Send + Sync + 'static + Borrow<Q> + From<Q::Owned>,
    Q: ?Sized + Hash + Eq + Ord + ToOwned + 'q,
    S: BuildHasher + Send + Sync + 'static,
{
    type Output = Result<ManyGuard<'s, 'm, K, S>, LockError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        loop {
            let plan = match &mut this.plan {
                Ok(plan) => plan,
                Err(e) => return Poll::Ready(Err(e.clone())),
            };
            if this.current.is_none() {
                let Some((key, mode)) = plan.pop() else {
                    return Poll::Ready(Ok(ManyGuard { held: std::mem::take(&mut this.held) }));
                };
                this.current = Some(match this.request.session {
                    Some(s) => {
                        Step::Session(SessionRequest::new(s, key, mode, this.request.owner.clone()).acquire_async())
                    }
                    None => Step::Plain(this.request.plain(key, mode).acquire_async()),
                });
            }
            let step = match this.current.as_mut() {
                Some(Step::Plain(f)) => Pin::new(f).poll(cx).map(|r| r.map(Held::Plain)),
                Some(Step::Session(f)) => Pin::new(f).poll(cx).map(|r| r.map(Held::Session)),
                None => unreachable!("set just above"),
            };
            match step {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(r) => {
                    this.current = None;
                    match r {
                        Ok(h) => this.held.push(h),
                        Err(e) => {
                            // All or nothing: give back what was taken, then report.
                            this.held.clear();
                            this.plan = Ok(Vec::new());
                            return Poll::Ready(Err(e));
                        }
                    }
                }
            }
        }
    }
}

impl<K, S> LockManager<K, S>
where
    K: Hash + Eq + Send + Sync + 'static,
    S: BuildHasher + Send + Sync + 'static,
{
    /// A request for several keys at once, all or nothing: `[(key, mode), ...]`.
    ///
    /// Keys are taken in ascending order of `Q: Ord` (the canonical order: two overlapping
    /// requests cannot deadlock); a key named twice is taken once in the stronger mode; if any key
    /// fails, those taken are released before the call returns. One guard releases all, and each
    /// key keeps its own fencing token ([`ManyGuard::token`]).
    ///
    /// # Examples
    ///
    /// ```
    /// use leasehold::{LockManager, Mode};
    /// use std::time::Duration;
    /// let locks: LockManager<String> = LockManager::new();
    /// let all = locks.lock_many([("a", Mode::Exclusive), ("b", Mode::Shared)]).acquire_timeout(Duration::from_secs(1))?;
    /// assert!(all.token("a").is_some());
    /// # Ok::<(), leasehold::LockError>(())
    /// ```
    pub fn lock_many<'m, 'q, Q, I>(&'m self, keys: I) -> ManyRequest<'m, 'm, 'q, K, Q, S>
    where
        I: IntoIterator<Item = (&'q Q, Mode)>,
        K: Borrow<Q> + From<Q::Owned>,
        Q: ?Sized + Hash + Eq + Ord + ToOwned + 'q,
    {
        ManyRequest::new(self, None, keys)
    }
}

impl<'m, K, S> Session<'m, K, S>
where
    K: Hash + Eq + Clone + fmt::Debug + Send + Sync + 'static,
    S: BuildHasher + Send + Sync + 'static,
{
    /// Several keys at once, all or nothing, on behalf of this session (see
    /// [`LockManager::lock_many`]): each key's wait enters the wait-for graph.
    ///
    /// # Examples
    ///
    /// ```
    /// use leasehold::Mode;
    /// let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
    /// let tx = locks.session("t");
    /// let all = tx.lock_many([(&1, Mode::Exclusive), (&2, Mode::Shared)]).acquire()?;
    /// assert_eq!(all.len(), 2);
    /// # Ok::<(), leasehold::LockError>(())
    /// ```
    pub fn lock_many<'s, 'q, Q, I>(&'s self, keys: I) -> ManyRequest<'s, 'm, 'q, K, Q, S>
    where
        I: IntoIterator<Item = (&'q Q, Mode)>,
        K: Borrow<Q> + From<Q::Owned>,
        Q: ?Sized + Hash + Eq + Ord + ToOwned + 'q,
    {
        ManyRequest::new(self.locks, Some(self), keys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_sorts_and_merges() {
        let keys = vec![(&5u32, Mode::Shared), (&1, Mode::Shared), (&5, Mode::Exclusive), (&3, Mode::Shared)];
        let c = canonical(keys).unwrap();
        assert_eq!(c, vec![(&1, Mode::Shared), (&3, Mode::Shared), (&5, Mode::Exclusive)]);
    }
}

/// The mode that covers both `a` and `b`, for a key named twice in one request: the join of the
/// matrix (`compat::join`). On a semaphore key, shared is one permit and exclusive all of them;
/// a semaphore mode beside a mode of the hierarchy (upgradable, intention) is refused: one key
/// is a semaphore or a read/write key, not both.
fn merge(a: Mode, b: Mode) -> Result<Mode, LockError> {
    match (a, b) {
        (Mode::Semaphore(n), Mode::Semaphore(m)) if n != m => Err(LockError::PermitMismatch { live: n, requested: m }),
        (Mode::Semaphore(n), Mode::Semaphore(_) | Mode::Shared) | (Mode::Shared, Mode::Semaphore(n)) => {
            Ok(Mode::Semaphore(n))
        }
        (Mode::Semaphore(_), Mode::Exclusive) | (Mode::Exclusive, Mode::Semaphore(_)) => Ok(Mode::Exclusive),
        (Mode::Semaphore(n), _) | (_, Mode::Semaphore(n)) => {
            Err(LockError::PermitMismatch { live: n, requested: MAX_UNITS })
        }
        _ => Ok(Mode::from_granule(join(a.granule(), b.granule()))),
    }
}

#[cfg(all(test, not(leasehold_loom)))]
mod merge_tests {
    use super::*;
    use crate::vocab::compat::{covers, ALL};
    use Mode::*;

    #[test]
    fn merge_takes_the_stronger_mode() {
        assert_eq!(merge(Shared, Shared), Ok(Shared));
        assert_eq!(merge(Shared, Exclusive), Ok(Exclusive));
        assert_eq!(merge(Exclusive, Shared), Ok(Exclusive));
        assert_eq!(merge(Semaphore(3), Shared), Ok(Semaphore(3)));
        assert_eq!(merge(Shared, Semaphore(3)), Ok(Semaphore(3)));
        assert_eq!(merge(Semaphore(3), Semaphore(3)), Ok(Semaphore(3)));
        assert_eq!(merge(Semaphore(3), Exclusive), Ok(Exclusive));
        assert_eq!(merge(Semaphore(3), Semaphore(4)), Err(LockError::PermitMismatch { live: 3, requested: 4 }));
        assert_eq!(merge(IntentExclusive, Shared), Ok(SharedIntentExclusive));
        assert_eq!(merge(IntentShared, Upgradable), Ok(Upgradable));
        assert_eq!(merge(Upgradable, IntentExclusive), Ok(Exclusive));
        assert_eq!(merge(Semaphore(2), IntentShared), Err(LockError::PermitMismatch { live: 2, requested: MAX_UNITS }));
    }

    #[test]
    fn merge_covers_both_for_every_pair_of_matrix_modes() {
        for a in ALL {
            for b in ALL {
                let (ma, mb) = (Mode::from_granule(a), Mode::from_granule(b));
                let m = merge(ma, mb).expect("matrix modes always merge");
                assert!(covers(m.granule(), a) && covers(m.granule(), b), "{ma} + {mb} = {m}");
                assert_eq!(m.granule(), join(a, b));
            }
        }
    }
}
