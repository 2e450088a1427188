//! The guard of a holding on the cluster.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use leasehold::{BackendGuard, FenceToken, LockError, Mode, Owner};

use crate::conn::{call, CallError};
use crate::error::EtcdError;
use crate::lease::{revoke_quietly, Hold};
use crate::Shared;

/// A lock held on the etcd cluster. Dropping it releases the lock (in the background, on the
/// runtime it was acquired on); [`release`](EtcdGuard::release) does it and says how it went.
///
/// Beyond the in-process guard it has a loss signal: the lease is kept alive in the background,
/// and when it may be gone (no keep-alive answered before the deadline computed from when the
/// last one was sent, or the server said it is gone) [`is_held`](EtcdGuard::is_held) turns false
/// for good and [`lost`](EtcdGuard::lost) resolves.
///
/// # Examples
///
/// ```no_run
/// use leasehold::LockBackend;
/// use leasehold_etcd::{EtcdLocks, EtcdOptions};
/// use std::time::Duration;
/// # async fn run() -> Result<(), leasehold_etcd::EtcdError> {
/// let locks = EtcdLocks::connect(["127.0.0.1:2379"], EtcdOptions::default()).await?;
/// let g = locks.exclusive("jobs/nightly").lease(Duration::from_secs(10)).acquire().await?;
/// tokio::select! {
///     _ = g.lost() => eprintln!("lost the lock: stop writing"),
///     _ = tokio::time::sleep(Duration::from_secs(1)) => {}
/// }
/// g.release().await?;
/// # Ok(()) }
/// ```
#[must_use = "dropping the guard releases the lock at once"]
pub struct EtcdGuard {
    pub(crate) shared: Arc<Shared>,
    pub(crate) hold: Arc<Hold>,
    pub(crate) name: String,
    pub(crate) entry: Vec<u8>,
    pub(crate) token: FenceToken,
    pub(crate) mode: Mode,
    pub(crate) owner: Option<Owner>,
    pub(crate) done: bool,
}

impl EtcdGuard {
    /// The lock's name.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run(locks: leasehold_etcd::EtcdLocks) -> Result<(), leasehold_etcd::EtcdError> {
    /// use leasehold::LockBackend;
    /// let g = locks.exclusive("orders/17").try_acquire().await?;
    /// assert_eq!(g.name(), "orders/17");
    /// # Ok(()) }
    /// ```
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The fencing token: the create revision of this holder's key, strictly greater than every
    /// earlier holder's of the same lock across the cluster, stable while held.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run(locks: leasehold_etcd::EtcdLocks) -> Result<(), leasehold_etcd::EtcdError> {
    /// use leasehold::LockBackend;
    /// let a = locks.exclusive("k").try_acquire().await?;
    /// let first = a.token();
    /// a.release().await?;
    /// assert!(locks.exclusive("k").try_acquire().await?.token() > first);
    /// # Ok(()) }
    /// ```
    pub fn token(&self) -> FenceToken {
        self.token
    }

    /// The mode held.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run(locks: leasehold_etcd::EtcdLocks) -> Result<(), leasehold_etcd::EtcdError> {
    /// use leasehold::{LockBackend, Mode};
    /// assert_eq!(locks.shared("k").try_acquire().await?.mode(), Mode::Shared);
    /// # Ok(()) }
    /// ```
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The owner label, if the request had one.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run(locks: leasehold_etcd::EtcdLocks) -> Result<(), leasehold_etcd::EtcdError> {
    /// use leasehold::LockBackend;
    /// let g = locks.exclusive("k").owner("node-2").try_acquire().await?;
    /// assert_eq!(g.owner().unwrap().as_str(), "node-2");
    /// # Ok(()) }
    /// ```
    pub fn owner(&self) -> Option<Owner> {
        self.owner.clone()
    }

    /// The etcd lease this holding is bound to.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run(locks: leasehold_etcd::EtcdLocks) -> Result<(), leasehold_etcd::EtcdError> {
    /// use leasehold::LockBackend;
    /// assert_ne!(locks.exclusive("k").try_acquire().await?.lease_id(), 0);
    /// # Ok(()) }
    /// ```
    pub fn lease_id(&self) -> i64 {
        self.hold.lease
    }

    /// When the holder stops trusting the lock unless a keep-alive is answered first.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run(locks: leasehold_etcd::EtcdLocks) -> Result<(), leasehold_etcd::EtcdError> {
    /// use leasehold::LockBackend;
    /// let g = locks.exclusive("k").try_acquire().await?;
    /// assert!(g.deadline() > std::time::Instant::now());
    /// # Ok(()) }
    /// ```
    pub fn deadline(&self) -> Instant {
        self.hold.deadline()
    }

    /// Whether the lock is still held: false once released, or once the lease may be gone.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run(locks: leasehold_etcd::EtcdLocks) -> Result<(), leasehold_etcd::EtcdError> {
    /// use leasehold::LockBackend;
    /// assert!(locks.exclusive("k").try_acquire().await?.is_held());
    /// # Ok(()) }
    /// ```
    pub fn is_held(&self) -> bool {
        !self.done && !self.hold.is_lost()
    }

    /// Whether the holding ended without its release (the lease expired, was revoked, or could
    /// not be kept alive before its deadline).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run(locks: leasehold_etcd::EtcdLocks) -> Result<(), leasehold_etcd::EtcdError> {
    /// use leasehold::LockBackend;
    /// assert!(!locks.exclusive("k").try_acquire().await?.is_lost());
    /// # Ok(()) }
    /// ```
    pub fn is_lost(&self) -> bool {
        self.hold.is_lost()
    }

    /// Resolves when the holding is lost; never, while it is kept alive.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run(locks: leasehold_etcd::EtcdLocks) -> Result<(), leasehold_etcd::EtcdError> {
    /// use leasehold::LockBackend;
    /// let g = locks.exclusive("k").try_acquire().await?;
    /// let held_a_second = tokio::time::timeout(std::time::Duration::from_secs(1), g.lost()).await.is_err();
    /// assert!(held_a_second);
    /// # Ok(()) }
    /// ```
    pub async fn lost(&self) {
        self.hold.lost().await
    }

    /// Sends a keep-alive now (the background task also does, every third of the TTL). etcd fixes
    /// a lease's TTL when it is granted, so the lease is extended by that TTL (the request's lease
    /// rounded up to whole seconds), whatever `ttl` says; `ttl` is checked as the in-process
    /// manager checks it. [`LockError::Expired`] if the holding is already lost.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run(locks: leasehold_etcd::EtcdLocks) -> Result<(), leasehold_etcd::EtcdError> {
    /// use leasehold::LockBackend;
    /// use std::time::Duration;
    /// let g = locks.exclusive("k").lease(Duration::from_secs(3)).try_acquire().await?;
    /// g.renew(Duration::from_secs(3)).await?;
    /// # Ok(()) }
    /// ```
    pub async fn renew(&self, ttl: Duration) -> Result<(), EtcdError> {
        if ttl.is_zero() || ttl > leasehold::MAX_TTL {
            return Err(EtcdError::Lock(LockError::InvalidTtl { ttl }));
        }
        if !self.is_held() {
            return Err(EtcdError::Lock(LockError::Expired));
        }
        let lease = self.hold.lease;
        let sent = Instant::now();
        let shared = &self.shared;
        let answered = call(&shared.client, &shared.opts, &shared.breaker, |c| async move {
            let mut lc = c.lease_client();
            lc.keep_alive(lease).await.map(drop)
        })
        .await;
        match answered {
            Ok(()) if self.hold.extend(sent) => Ok(()),
            Ok(()) | Err(CallError::LeaseGone) => {
                self.hold.mark_lost();
                Err(EtcdError::Lock(LockError::Expired))
            }
            Err(CallError::Failed(e)) => Err(e),
        }
    }

    /// Releases the lock: revokes its lease, which deletes its key and wakes the next waiter.
    /// [`LockError::Expired`] if the holding had already been lost (the lease is revoked all the
    /// same if it still exists); [`EtcdError::Unavailable`] if the cluster did not answer (the
    /// lock is then freed when the lease's TTL runs out).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run(locks: leasehold_etcd::EtcdLocks) -> Result<(), leasehold_etcd::EtcdError> {
    /// use leasehold::LockBackend;
    /// locks.exclusive("k").try_acquire().await?.release().await?;
    /// assert!(locks.exclusive("k").try_acquire().await.is_ok());
    /// # Ok(()) }
    /// ```
    pub async fn release(mut self) -> Result<(), EtcdError> {
        self.done = true;
        self.hold.stop();
        let was_lost = self.hold.is_lost();
        let lease = self.hold.lease;
        let shared = &self.shared;
        let revoked = call(&shared.client, &shared.opts, &shared.breaker, |c| async move {
            let mut lc = c.lease_client();
            lc.revoke(lease).await.map(drop)
        })
        .await;
        match revoked {
            Ok(()) if !was_lost => Ok(()),
            Ok(()) | Err(CallError::LeaseGone) => Err(EtcdError::Lock(LockError::Expired)),
            Err(CallError::Failed(e)) => Err(e),
        }
    }

    /// The key of this holder in etcd (the lock's range, then the lease id).
    pub(crate) fn entry_key(&self) -> &[u8] {
        &self.entry
    }
}

impl Drop for EtcdGuard {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        self.hold.stop();
        // On the runtime the manager was connected on; if it has shut down, the lease ends at its
        // TTL instead.
        self.shared.runtime.spawn(revoke_quietly(self.shared.clone(), self.hold.lease));
    }
}

impl fmt::Debug for EtcdGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdGuard")
            .field("name", &self.name)
            .field("mode", &self.mode)
            .field("token", &self.token)
            .field("lease", &self.hold.lease)
            .field("held", &self.is_held())
            .finish()
    }
}

impl BackendGuard for EtcdGuard {
    type Error = EtcdError;

    fn token(&self) -> FenceToken {
        self.token
    }

    fn mode(&self) -> Mode {
        self.mode
    }

    fn owner(&self) -> Option<Owner> {
        self.owner.clone()
    }

    fn is_held(&self) -> bool {
        EtcdGuard::is_held(self)
    }

    fn renew(&self, ttl: Duration) -> impl std::future::Future<Output = Result<(), EtcdError>> + Send {
        EtcdGuard::renew(self, ttl)
    }

    fn release(self) -> impl std::future::Future<Output = Result<(), EtcdError>> + Send {
        EtcdGuard::release(self)
    }
}
