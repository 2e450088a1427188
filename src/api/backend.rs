//! One interface, two backends: the trait that both the in-process [`LockManager`] and the
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
//! The in-process implementation adds nothing to the fast path: a request is the manager's own
//! `Request`, and `try_acquire` / an uncontended `acquire` complete on their first poll.

use std::borrow::Borrow;
use std::future::Future;
use std::hash::{BuildHasher, Hash};
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use crate::api::future::AcquireFuture;
use crate::api::guard::LockGuard;
use crate::api::manager::LockManager;
use crate::api::request::Request;
use crate::primitives::timer;
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

impl<K, S> LockBackend for LockManager<K, S>
where
    K: Hash + Eq + Send + Sync + 'static + Borrow<str> + From<String>,
    S: BuildHasher + Send + Sync + 'static,
{
    type Guard<'a>
        = LockGuard<'a, K, S>
    where
        Self: 'a;
    type Error = LockError;

    #[inline]
    fn acquire_with<'a>(
        &'a self,
        key: &str,
        spec: LockSpec,
        wait: Wait,
    ) -> impl Future<Output = Result<LockGuard<'a, K, S>, LockError>> + Send {
        InProcessAcquire { start: Some(build_request(self, key, spec)), wait, waiting: None }
    }
}

/// The in-process acquire behind the trait: the manager's own request, run at the first poll
/// (`Try` and a free lock complete there); only a wait that has to queue arms a timer.
struct InProcessAcquire<'m, 'q, K, S> {
    start: Option<Request<'m, 'q, K, str, S>>,
    wait: Wait,
    waiting: Option<(AcquireFuture<'m, 'q, K, str, S>, Option<Sleep>)>,
}

// No field is structurally pinned: `Request`, `AcquireFuture` and `Sleep` are `Unpin`.
impl<K, S> Unpin for InProcessAcquire<'_, '_, K, S> {}

#[inline]
fn build_request<'m, 'q, K, S>(locks: &'m LockManager<K, S>, key: &'q str, spec: LockSpec) -> Request<'m, 'q, K, str, S>
where
    K: Hash + Eq + Send + Sync + 'static + Borrow<str> + From<String>,
    S: BuildHasher + Send + Sync + 'static,
{
    let mut request = match spec.mode {
        Mode::Exclusive => locks.exclusive(key),
        Mode::Shared => locks.shared(key),
        Mode::Semaphore(n) => locks.semaphore(key, n),
        // An upgradable holding behind the trait's guard (a `LockGuard` in mode `Upgradable`):
        // the same claim and release as `locks.upgradable`; upgrading needs the in-process
        // `UpgradableGuard`, which the trait does not offer.
        Mode::Upgradable => locks.upgradable(key).into_request(),
        mode => Request::new(&locks.state, key, mode),
    };
    if let Some(ttl) = spec.lease {
        request = request.lease(ttl);
    }
    // Moved, not cloned.
    if let Some(owner) = spec.owner {
        request = request.owner(owner);
    }
    request
}

impl<'m, K, S> Future for InProcessAcquire<'m, '_, K, S>
where
    K: Hash + Eq + Send + Sync + 'static + Borrow<str> + From<String>,
    S: BuildHasher + Send + Sync + 'static,
{
    type Output = Result<LockGuard<'m, K, S>, LockError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if this.wait == Wait::Try {
            if let Some(request) = this.start.take() {
                return Poll::Ready(request.try_acquire());
            }
        }
        this.poll_wait(cx)
    }
}

impl<'m, K, S> InProcessAcquire<'m, '_, K, S>
where
    K: Hash + Eq + Send + Sync + 'static + Borrow<str> + From<String>,
    S: BuildHasher + Send + Sync + 'static,
{
    /// Everything but `Try`: kept out of line, so the try path stays small enough to inline.
    #[inline(never)]
    fn poll_wait(&mut self, cx: &mut Context<'_>) -> Poll<Result<LockGuard<'m, K, S>, LockError>> {
        if let Some(request) = self.start.take() {
            self.waiting = Some((request.acquire_async(), None));
        }
        let Some((acquire, sleep)) = &mut self.waiting else {
            panic!("an acquire future was polled after it completed")
        };
        if let Poll::Ready(done) = Pin::new(acquire).poll(cx) {
            self.waiting = None;
            return Poll::Ready(done);
        }
        let Wait::Timeout(timeout) = self.wait else { return Poll::Pending };
        // Queued: only now does the wait need a deadline.
        let sleep = sleep.get_or_insert_with(|| Sleep::new(timeout));
        if Pin::new(sleep).poll(cx).is_pending() {
            return Poll::Pending;
        }
        // Dropping the queued future leaves the queue (passing on a grant that raced with the
        // deadline).
        self.waiting = None;
        Poll::Ready(Err(LockError::TimedOut))
    }
}

impl<K, S> BackendGuard for LockGuard<'_, K, S>
where
    K: Hash + Eq + Send + Sync + 'static,
    S: BuildHasher + Send + Sync + 'static,
{
    type Error = LockError;

    #[inline]
    fn token(&self) -> FenceToken {
        LockGuard::token(self)
    }

    fn mode(&self) -> Mode {
        LockGuard::mode(self)
    }

    fn owner(&self) -> Option<Owner> {
        LockGuard::owner(self)
    }

    #[inline]
    fn is_held(&self) -> bool {
        LockGuard::is_held(self)
    }

    #[inline]
    fn renew(&self, ttl: Duration) -> impl Future<Output = Result<(), LockError>> + Send {
        std::future::ready(LockGuard::renew(self, ttl))
    }

    #[inline]
    fn release(self) -> impl Future<Output = Result<(), LockError>> + Send {
        std::future::ready(LockGuard::release(self))
    }
}

/// A deadline future for the in-process timed wait, woken by the process timer
/// (`primitives/timer.rs`: the core has no async runtime to borrow a timer from). Only a wait
/// that queues creates one.
struct Sleep {
    /// `None`: a timeout past the clock's range, which never fires.
    at: Option<Instant>,
    /// The waker the timer was last armed with (armed again only for a different task).
    armed: Option<Waker>,
}

impl Sleep {
    fn new(timeout: Duration) -> Self {
        Sleep { at: Instant::now().checked_add(timeout), armed: None }
    }
}

impl Future for Sleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let Some(at) = this.at else { return Poll::Pending };
        if Instant::now() >= at {
            return Poll::Ready(());
        }
        // A wake-up before `at` (spurious, or for an earlier entry) only makes the task poll
        // again and look at the clock itself.
        if !this.armed.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            timer::wake_at(at, cx.waker());
            this.armed = Some(cx.waker().clone());
        }
        Poll::Pending
    }
}
