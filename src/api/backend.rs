//! One interface, two backends: the trait that both the in-process
//! [`LockManager`](crate::LockManager) and the
//! `leasehold-etcd` cluster backend implement, so a service moves from in-process locks to
//! cluster-wide locks by changing how it builds its lock manager, not how it uses it.
//!
//! The trait is async because the network is. Keys are strings (etcd keys are bytes), so the
//! in-process manager implements it for any key type built from and borrowed as `str`
//! (`LockManager<String>`, `LockManager<Arc<str>>`). Requests read as they do on the manager:
//! `locks.exclusive(key).lease(ttl).owner(o).try_acquire().await`. On a concrete
//! `LockManager` the inherent (synchronous) methods of the same names take precedence; the trait's
//! are what backend-generic code calls.
//!
//! The in-process implementation (`backend_local.rs`) adds nothing to the fast path: a request is the manager's own
//! `Request`, and `try_acquire` / an uncontended `acquire` complete on their first poll.

use std::future::Future;
use std::time::Duration;

use crate::vocab::{FenceToken, LockError, Mode, Owner};

/// How long an acquisition may wait.
///
/// # Examples
///
/// ```
/// use leasehold::Wait;
/// use std::time::Duration;
/// assert_ne!(Wait::Try, Wait::Timeout(Duration::from_secs(1)));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    /// Do not wait: fail with [`LockError::WouldBlock`] if the lock is not free now.
    Try,
    /// Wait at most this long, then fail with [`LockError::TimedOut`].
    Timeout(Duration),
    /// Wait until the lock is granted (or the backend fails).
    Forever,
}

/// What is asked for: mode, optional lease, optional owner label.
///
/// # Examples
///
/// ```
/// use leasehold::{LockSpec, Mode};
/// use std::time::Duration;
/// let spec = LockSpec::new(Mode::Shared).lease(Duration::from_secs(3)).owner("reports");
/// assert_eq!(spec.mode, Mode::Shared);
/// assert_eq!(spec.lease, Some(Duration::from_secs(3)));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockSpec {
    /// The mode.
    pub mode: Mode,
    /// The lease: the holding is lost this long after it is acquired (or last renewed).
    pub lease: Option<Duration>,
    /// The holder's label.
    pub owner: Option<Owner>,
}

impl LockSpec {
    /// A request in `mode`, with no lease and no owner.
    ///
    /// # Examples
    ///
    /// ```
    /// let spec = leasehold::LockSpec::new(leasehold::Mode::Exclusive);
    /// assert!(spec.lease.is_none() && spec.owner.is_none());
    /// ```
    #[inline]
    pub fn new(mode: Mode) -> Self {
        LockSpec { mode, lease: None, owner: None }
    }

    /// With a lease of `ttl`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let spec = leasehold::LockSpec::new(leasehold::Mode::Exclusive).lease(Duration::from_secs(2));
    /// assert_eq!(spec.lease, Some(Duration::from_secs(2)));
    /// ```
    pub fn lease(mut self, ttl: Duration) -> Self {
        self.lease = Some(ttl);
        self
    }

    /// With an owner label.
    ///
    /// # Examples
    ///
    /// ```
    /// let spec = leasehold::LockSpec::new(leasehold::Mode::Exclusive).owner("node-2");
    /// assert_eq!(spec.owner.unwrap().as_str(), "node-2");
    /// ```
    pub fn owner(mut self, owner: impl Into<Owner>) -> Self {
        self.owner = Some(owner.into());
        self
    }
}

/// A backend's error: it says whether it is one of the lock outcomes every backend shares
/// ([`LockError::WouldBlock`], [`LockError::TimedOut`], [`LockError::Expired`], ...), so generic
/// code can act on those without knowing the backend.
///
/// # Examples
///
/// ```
/// use leasehold::{BackendError, LockError};
/// assert_eq!(LockError::WouldBlock.lock_error(), Some(&LockError::WouldBlock));
/// ```
pub trait BackendError: std::error::Error + Send + Sync + 'static {
    /// The shared lock outcome this error is, if it is one (not a transport failure).
    fn lock_error(&self) -> Option<&LockError>;
}

impl BackendError for LockError {
    fn lock_error(&self) -> Option<&LockError> {
        Some(self)
    }
}

/// A held lock of some backend: its token, its mode, whether it is still held, and the holder's
/// side of the lease.
///
/// # Examples
///
/// ```
/// use leasehold::{BackendGuard, LockBackend, LockManager};
/// # fn block_on<F: std::future::Future>(f: F) -> F::Output {
/// #     struct Unpark(std::thread::Thread);
/// #     impl std::task::Wake for Unpark { fn wake(self: std::sync::Arc<Self>) { self.0.unpark() } }
/// #     let waker = std::sync::Arc::new(Unpark(std::thread::current())).into();
/// #     let mut cx = std::task::Context::from_waker(&waker);
/// #     let mut f = std::pin::pin!(f);
/// #     loop { if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) { return v; } std::thread::park(); }
/// # }
/// let locks: LockManager<String> = LockManager::new();
/// block_on(async {
///     let g = LockBackend::exclusive(&locks, "jobs/1").try_acquire().await?;
///     assert!(BackendGuard::is_held(&g));
///     BackendGuard::release(g).await
/// })?;
/// # Ok::<(), leasehold::LockError>(())
/// ```
pub trait BackendGuard: Send {
    /// The backend's error.
    type Error: BackendError;

    /// The fencing token of this holding: strictly greater than every earlier holding's of the
    /// same key, and stable while held. Works with [`Fenced`](crate::Fenced) whatever the backend.
    fn token(&self) -> FenceToken;

    /// The mode held.
    fn mode(&self) -> Mode;

    /// The owner label, if the request had one.
    fn owner(&self) -> Option<Owner>;

    /// Whether the lock is still held: false once released, or once the lease may be gone.
    fn is_held(&self) -> bool;

    /// Extends the lease (see each backend for what `ttl` may be).
    fn renew(&self, ttl: Duration) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Releases the lock; [`LockError::Expired`] if it had already been lost.
    fn release(self) -> impl Future<Output = Result<(), Self::Error>> + Send;
}

/// A lock manager, in-process or on a cluster: the one interface both backends implement.
///
/// Only [`acquire_with`](LockBackend::acquire_with) is required; `exclusive`, `shared` and
/// `semaphore` build requests that read as they do on the in-process manager.
///
/// # Examples
///
/// ```
/// use leasehold::{BackendGuard, LockBackend, LockError, LockManager};
/// use std::time::Duration;
/// # fn block_on<F: std::future::Future>(f: F) -> F::Output {
/// #     struct Unpark(std::thread::Thread);
/// #     impl std::task::Wake for Unpark { fn wake(self: std::sync::Arc<Self>) { self.0.unpark() } }
/// #     let waker = std::sync::Arc::new(Unpark(std::thread::current())).into();
/// #     let mut cx = std::task::Context::from_waker(&waker);
/// #     let mut f = std::pin::pin!(f);
/// #     loop { if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) { return v; } std::thread::park(); }
/// # }
///
/// // Code written once against the trait...
/// async fn transfer<B: LockBackend>(locks: &B) -> Result<u64, B::Error> {
///     let g = locks.exclusive("accounts/7").lease(Duration::from_secs(5)).acquire_timeout(Duration::from_secs(1)).await?;
///     let token = g.token().as_u64();
///     g.release().await?;
///     Ok(token)
/// }
///
/// // ...runs on the in-process manager (or on `leasehold_etcd::EtcdLocks`).
/// let locks: LockManager<String> = LockManager::new();
/// assert!(block_on(transfer(&locks))? > 0);
/// # Ok::<(), LockError>(())
/// ```
pub trait LockBackend: Send + Sync {
    /// The guard of a holding; it may borrow the backend.
    type Guard<'a>: BackendGuard<Error = Self::Error>
    where
        Self: 'a;
    /// What goes wrong: for the in-process manager, [`LockError`].
    type Error: BackendError;

    /// Acquires `key` as `spec` says, waiting as `wait` says.
    fn acquire_with<'a>(
        &'a self,
        key: &str,
        spec: LockSpec,
        wait: Wait,
    ) -> impl Future<Output = Result<Self::Guard<'a>, Self::Error>> + Send;

    /// A request for `key` in exclusive mode.
    ///
    /// # Examples
    ///
    /// ```
    /// use leasehold::{LockBackend, LockManager, Mode};
    /// let locks: LockManager<String> = LockManager::new();
    /// assert_eq!(LockBackend::exclusive(&locks, "k").spec().mode, Mode::Exclusive);
    /// ```
    #[inline]
    fn exclusive<'a, 'k>(&'a self, key: &'k str) -> BackendRequest<'a, 'k, Self> {
        BackendRequest { backend: self, key, spec: LockSpec::new(Mode::Exclusive) }
    }

    /// A request for `key` in shared mode.
    ///
    /// # Examples
    ///
    /// ```
    /// use leasehold::{LockBackend, LockManager, Mode};
    /// let locks: LockManager<String> = LockManager::new();
    /// assert_eq!(LockBackend::shared(&locks, "k").spec().mode, Mode::Shared);
    /// ```
    #[inline]
    fn shared<'a, 'k>(&'a self, key: &'k str) -> BackendRequest<'a, 'k, Self> {
        BackendRequest { backend: self, key, spec: LockSpec::new(Mode::Shared) }
    }

    /// A request for one of `permits` permits of `key`.
    ///
    /// # Examples
    ///
    /// ```
    /// use leasehold::{LockBackend, LockManager, Mode};
    /// let locks: LockManager<String> = LockManager::new();
    /// assert_eq!(LockBackend::semaphore(&locks, "k", 3).spec().mode, Mode::Semaphore(3));
    /// ```
    #[inline]
    fn semaphore<'a, 'k>(&'a self, key: &'k str, permits: u32) -> BackendRequest<'a, 'k, Self> {
        BackendRequest { backend: self, key, spec: LockSpec::new(Mode::Semaphore(permits)) }
    }

    /// A request for `key` in any mode: the intention modes of hierarchical locking
    /// ([`Mode::IntentExclusive`] on a table key, then exclusive on its rows), upgradable, or
    /// the three above. The backend decides between modes by the compatibility matrix.
    ///
    /// # Examples
    ///
    /// ```
    /// use leasehold::{LockBackend, LockManager, Mode};
    /// let locks: LockManager<String> = LockManager::new();
    /// let req = LockBackend::request(&locks, "table/7", Mode::IntentExclusive);
    /// assert_eq!(req.spec().mode, Mode::IntentExclusive);
    /// ```
    #[inline]
    fn request<'a, 'k>(&'a self, key: &'k str, mode: Mode) -> BackendRequest<'a, 'k, Self> {
        BackendRequest { backend: self, key, spec: LockSpec::new(mode) }
    }
}

/// A request built by [`LockBackend::exclusive`], [`shared`](LockBackend::shared) or
/// [`semaphore`](LockBackend::semaphore), finished by one of the three acquires.
///
/// # Examples
///
/// ```
/// use leasehold::{LockBackend, LockManager};
/// use std::time::Duration;
/// let locks: LockManager<String> = LockManager::new();
/// let req = LockBackend::shared(&locks, "k").lease(Duration::from_secs(1)).owner("me");
/// assert_eq!(req.spec().owner.as_ref().unwrap().as_str(), "me");
/// ```
#[must_use = "a request does nothing until one of its acquires is awaited"]
pub struct BackendRequest<'a, 'k, B: ?Sized> {
    backend: &'a B,
    key: &'k str,
    spec: LockSpec,
}

impl<B: ?Sized> std::fmt::Debug for BackendRequest<'_, '_, B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackendRequest").field("key", &self.key).field("spec", &self.spec).finish()
    }
}

impl<'a, 'k, B: LockBackend + ?Sized> BackendRequest<'a, 'k, B> {
    /// Gives the holding a lease of `ttl`.
    ///
    /// # Examples
    ///
    /// ```
    /// use leasehold::{LockBackend, LockManager};
    /// use std::time::Duration;
    /// let locks: LockManager<String> = LockManager::new();
    /// let req = LockBackend::exclusive(&locks, "k").lease(Duration::from_secs(2));
    /// assert_eq!(req.spec().lease, Some(Duration::from_secs(2)));
    /// ```
    #[inline]
    pub fn lease(mut self, ttl: Duration) -> Self {
        self.spec.lease = Some(ttl);
        self
    }

    /// Labels the holder.
    ///
    /// # Examples
    ///
    /// ```
    /// use leasehold::{LockBackend, LockManager};
    /// let locks: LockManager<String> = LockManager::new();
    /// let req = LockBackend::exclusive(&locks, "k").owner("node-1");
    /// assert_eq!(req.spec().owner.as_ref().unwrap().as_str(), "node-1");
    /// ```
    #[inline]
    pub fn owner(mut self, owner: impl Into<Owner>) -> Self {
        self.spec.owner = Some(owner.into());
        self
    }

    /// What this request asks for.
    ///
    /// # Examples
    ///
    /// ```
    /// use leasehold::{LockBackend, LockManager, Mode};
    /// let locks: LockManager<String> = LockManager::new();
    /// assert_eq!(LockBackend::semaphore(&locks, "k", 2).spec().mode, Mode::Semaphore(2));
    /// ```
    pub fn spec(&self) -> &LockSpec {
        &self.spec
    }

    /// Acquires now or fails with [`LockError::WouldBlock`].
    ///
    /// # Examples
    ///
    /// ```
    /// use leasehold::{BackendError, LockBackend, LockError, LockManager};
    /// # fn block_on<F: std::future::Future>(f: F) -> F::Output {
    /// #     struct Unpark(std::thread::Thread);
    /// #     impl std::task::Wake for Unpark { fn wake(self: std::sync::Arc<Self>) { self.0.unpark() } }
    /// #     let waker = std::sync::Arc::new(Unpark(std::thread::current())).into();
    /// #     let mut cx = std::task::Context::from_waker(&waker);
    /// #     let mut f = std::pin::pin!(f);
    /// #     loop { if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) { return v; } std::thread::park(); }
    /// # }
    /// let locks: LockManager<String> = LockManager::new();
    /// let _g = block_on(LockBackend::exclusive(&locks, "k").try_acquire())?;
    /// let err = block_on(LockBackend::exclusive(&locks, "k").try_acquire()).unwrap_err();
    /// assert_eq!(err.lock_error(), Some(&LockError::WouldBlock));
    /// # Ok::<(), LockError>(())
    /// ```
    #[inline]
    pub fn try_acquire(self) -> impl Future<Output = Result<B::Guard<'a>, B::Error>> + Send + use<'a, 'k, B> {
        self.backend.acquire_with(self.key, self.spec, Wait::Try)
    }

    /// Waits at most `timeout`, then fails with [`LockError::TimedOut`].
    ///
    /// # Examples
    ///
    /// ```
    /// use leasehold::{BackendError, LockBackend, LockError, LockManager};
    /// use std::time::Duration;
    /// # fn block_on<F: std::future::Future>(f: F) -> F::Output {
    /// #     struct Unpark(std::thread::Thread);
    /// #     impl std::task::Wake for Unpark { fn wake(self: std::sync::Arc<Self>) { self.0.unpark() } }
    /// #     let waker = std::sync::Arc::new(Unpark(std::thread::current())).into();
    /// #     let mut cx = std::task::Context::from_waker(&waker);
    /// #     let mut f = std::pin::pin!(f);
    /// #     loop { if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) { return v; } std::thread::park(); }
    /// # }
    /// let locks: LockManager<String> = LockManager::new();
    /// let _g = locks.exclusive("k").try_acquire()?;
    /// let err = block_on(LockBackend::exclusive(&locks, "k").acquire_timeout(Duration::from_millis(5))).unwrap_err();
    /// assert_eq!(err.lock_error(), Some(&LockError::TimedOut));
    /// # Ok::<(), LockError>(())
    /// ```
    #[inline]
    pub fn acquire_timeout(
        self,
        timeout: Duration,
    ) -> impl Future<Output = Result<B::Guard<'a>, B::Error>> + Send + use<'a, 'k, B> {
        self.backend.acquire_with(self.key, self.spec, Wait::Timeout(timeout))
    }

    /// Waits until the lock is granted.
    ///
    /// # Examples
    ///
    /// ```
    /// use leasehold::{BackendGuard, LockBackend, LockManager};
    /// # fn block_on<F: std::future::Future>(f: F) -> F::Output {
    /// #     struct Unpark(std::thread::Thread);
    /// #     impl std::task::Wake for Unpark { fn wake(self: std::sync::Arc<Self>) { self.0.unpark() } }
    /// #     let waker = std::sync::Arc::new(Unpark(std::thread::current())).into();
    /// #     let mut cx = std::task::Context::from_waker(&waker);
    /// #     let mut f = std::pin::pin!(f);
    /// #     loop { if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) { return v; } std::thread::park(); }
    /// # }
    /// let locks: LockManager<String> = LockManager::new();
    /// let g = block_on(LockBackend::semaphore(&locks, "pool", 2).acquire())?;
    /// assert!(g.is_held());
    /// # Ok::<(), leasehold::LockError>(())
    /// ```
    #[inline]
    pub fn acquire(self) -> impl Future<Output = Result<B::Guard<'a>, B::Error>> + Send + use<'a, 'k, B> {
        self.backend.acquire_with(self.key, self.spec, Wait::Forever)
    }
}
