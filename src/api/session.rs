//! Sessions: a transaction's requests, whose waits enter the wait-for graph (`detector.rs`).

#![deny(unsafe_code)]

use std::borrow::Borrow;
use std::fmt;
use std::future::Future;
use std::hash::{BuildHasher, Hash};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use crate::api::detector::SessionState;
use crate::api::future::AcquireFuture;
use crate::api::guard::LockGuard;
use crate::api::manager::LockManager;
use crate::api::request::Request;
use crate::engine::table::DefaultHasher;
use crate::vocab::deadlock::SessionId;
use crate::vocab::error::LockError;
use crate::vocab::mode::{Mode, Owner};
use crate::vocab::token::FenceToken;

/// A transaction: its holdings and waits enter the wait-for graph, so a wait that would close a
/// cycle of sessions waiting on each other fails with [`LockError::Deadlock`] instead of hanging.
///
/// Holdings are ordinary locks (a plain `locks.exclusive(k)` and a session's exclusive exclude
/// each other), but only sessions' holdings and waits are edges of the graph. Session requests
/// take no lease: a session's holding lasts until its guard is dropped (a transaction's locks last
/// until it commits or aborts). A session has one wait in the graph at a time: if two threads
/// make requests of one session at once, the second wait stays out of the graph.
///
/// # Examples
///
/// ```
/// use leasehold::{LockError, LockManager};
/// let locks: LockManager<String> = LockManager::new();
/// let tx = locks.session("txn-42");
/// let row = tx.exclusive("row/9").acquire()?;
/// assert!(row.is_held());
/// // The row's token fences the write, as with any guard.
/// let _t = row.token();
/// # Ok::<(), LockError>(())
/// ```
pub struct Session<'m, K, S = DefaultHasher> {
    pub(crate) locks: &'m LockManager<K, S>,
    state: Arc<SessionState<K>>,
}

impl<K, S> fmt::Debug for Session<'_, K, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session").field("id", &self.state.id).field("label", &self.state.label).finish()
    }
}

impl<K, S> Session<'_, K, S> {
    /// This session's id (larger is younger).
    ///
    /// # Examples
    ///
    /// ```
    /// let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
    /// let tx = locks.session("t");
    /// assert_eq!(locks.wait_graph().sessions[0].id, tx.id());
    /// ```
    pub fn id(&self) -> SessionId {
        self.state.id
    }

    /// This session's label.
    ///
    /// # Examples
    ///
    /// ```
    /// let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
    /// assert_eq!(locks.session("txn-1").label().as_str(), "txn-1");
    /// ```
    pub fn label(&self) -> &Owner {
        &self.state.label
    }
}

impl<'m, K, S> Session<'m, K, S>
where
    K: Hash + Eq + Clone + fmt::Debug + Send + Sync + 'static,
    S: BuildHasher + Send + Sync + 'static,
{
    pub(crate) fn new(locks: &'m LockManager<K, S>, label: Owner) -> Self {
        let state = locks.detector.register(label);
        Session { locks, state }
    }

    /// A request for `key` alone, on behalf of this session.
    ///
    /// # Examples
    ///
    /// ```
    /// let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
    /// let tx = locks.session("t");
    /// let g = tx.exclusive(&1).try_acquire()?;
    /// assert!(locks.shared(&1).try_acquire().is_err());
    /// # Ok::<(), leasehold::LockError>(())
    /// ```
    pub fn exclusive<'s, 'q, Q>(&'s self, key: &'q Q) -> SessionRequest<'s, 'm, 'q, K, Q, S>
    where
        K: Borrow<Q> + From<Q::Owned>,
        Q: ?Sized + Hash + Eq + ToOwned,
    {
        SessionRequest { session: self, key, mode: Mode::Exclusive, owner: None }
    }

    /// A request for `key` beside other shared holders, on behalf of this session.
    ///
    /// # Examples
    ///
    /// ```
    /// let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
    /// let (a, b) = (locks.session("a"), locks.session("b"));
    /// let _r1 = a.shared(&1).try_acquire()?;
    /// let _r2 = b.shared(&1).try_acquire()?;
    /// # Ok::<(), leasehold::LockError>(())
    /// ```
    pub fn shared<'s, 'q, Q>(&'s self, key: &'q Q) -> SessionRequest<'s, 'm, 'q, K, Q, S>
    where
        K: Borrow<Q> + From<Q::Owned>,
        Q: ?Sized + Hash + Eq + ToOwned,
    {
        SessionRequest { session: self, key, mode: Mode::Shared, owner: None }
    }

    /// A request for one of `permits` permits of `key`, on behalf of this session. Its waits do
    /// not enter the wait-for graph (a permit waits for any one holder, not all).
    ///
    /// # Examples
    ///
    /// ```
    /// let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
    /// let tx = locks.session("t");
    /// let p = tx.semaphore(&1, 2).try_acquire()?;
    /// assert_eq!(p.mode(), leasehold::Mode::Semaphore(2));
    /// # Ok::<(), leasehold::LockError>(())
    /// ```
    pub fn semaphore<'s, 'q, Q>(&'s self, key: &'q Q, permits: u32) -> SessionRequest<'s, 'm, 'q, K, Q, S>
    where
        K: Borrow<Q> + From<Q::Owned>,
        Q: ?Sized + Hash + Eq + ToOwned,
    {
        SessionRequest { session: self, key, mode: Mode::Semaphore(permits), owner: None }
    }

    /// A request for `key` in `mode`, on behalf of this session.
    pub(crate) fn request<'s, 'q, Q>(&'s self, key: &'q Q, mode: Mode) -> SessionRequest<'s, 'm, 'q, K, Q, S>
    where
        K: Borrow<Q> + From<Q::Owned>,
        Q: ?Sized + Hash + Eq + ToOwned,
    {
        SessionRequest { session: self, key, mode, owner: None }
    }
}

impl<K, S> Drop for Session<'_, K, S> {
    fn drop(&mut self) {
        // Guards borrow the session, so none is left: only the registration remains.
        self.locks.detector.unregister(&self.state);
    }
}

/// A request of a [`Session`]: one key, one mode; then acquire in one of the four ways.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
/// let tx = locks.session("t");
/// let g = tx.exclusive(&3).owner("txn-3").acquire_timeout(Duration::from_millis(10))?;
/// assert_eq!(g.owner().unwrap().as_str(), "txn-3");
/// # Ok::<(), leasehold::LockError>(())
/// ```
#[must_use = "a request does nothing until one of its acquire methods is called"]
pub struct SessionRequest<'s, 'm, 'q, K, Q: ?Sized, S = DefaultHasher> {
    session: &'s Session<'m, K, S>,
    key: &'q Q,
    mode: Mode,
    owner: Option<Owner>,
}

impl<K, Q: ?Sized + fmt::Debug, S> fmt::Debug for SessionRequest<'_, '_, '_, K, Q, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionRequest")
            .field("session", &self.session.state.id)
            .field("key", &self.key)
            .field("mode", &self.mode)
            .finish()
    }
}

impl<'s, 'm, 'q, K, Q, S> SessionRequest<'s, 'm, 'q, K, Q, S>
where
    K: Hash + Eq + Clone + fmt::Debug + Send + Sync + 'static + Borrow<Q> + From<Q::Owned>,
    Q: ?Sized + Hash + Eq + ToOwned,
    S: BuildHasher + Send + Sync + 'static,
{
    pub(crate) fn new(session: &'s Session<'m, K, S>, key: &'q Q, mode: Mode, owner: Option<Owner>) -> Self {
        SessionRequest { session, key, mode, owner }
    }

    /// Labels the holding (introspection, revocation); the session's label is not used by default
    /// because an owner label costs the slot lock on acquire.
    ///
    /// # Examples
    ///
    /// ```
    /// let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
    /// let tx = locks.session("t");
    /// let g = tx.shared(&1).owner("t").try_acquire()?;
    /// assert_eq!(g.owner().unwrap().as_str(), "t");
    /// # Ok::<(), leasehold::LockError>(())
    /// ```
    pub fn owner(mut self, owner: impl Into<Owner>) -> Self {
        self.owner = Some(owner.into());
        self
    }

    fn request(&self) -> Request<'m, 'q, K, Q, S> {
        let r = Request::new(&self.session.locks.state, self.key, self.mode);
        match &self.owner {
            Some(o) => r.owner(o.clone()),
            None => r,
        }
    }

    fn wrap(&self, guard: LockGuard<'m, K, S>, seq: Option<u64>) -> Result<SessionGuard<'s, 'm, K, S>, LockError> {
        let key = guard.key().clone();
        match self.session.state.record(key, self.mode, seq) {
            Ok(id) => Ok(SessionGuard { guard: Some(guard), session: &self.session.state, id }),
            // Chosen as a victim just as the lock came: the abort wins (the report says so);
            // dropping the guard releases it.
            Err(cycle) => Err(LockError::Deadlock { cycle }),
        }
    }

    /// Takes the lock if it is free now; never waits (and so never deadlocks).
    ///
    /// # Errors
    ///
    /// As [`Request::try_acquire`].
    ///
    /// # Examples
    ///
    /// ```
    /// use leasehold::LockError;
    /// let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
    /// let (a, b) = (locks.session("a"), locks.session("b"));
    /// let _g = a.exclusive(&1).try_acquire()?;
    /// assert_eq!(b.exclusive(&1).try_acquire().unwrap_err(), LockError::WouldBlock);
    /// # Ok::<(), LockError>(())
    /// ```
    pub fn try_acquire(self) -> Result<SessionGuard<'s, 'm, K, S>, LockError> {
        let g = self.request().try_acquire()?;
        self.wrap(g, None)
    }

    /// Waits for the lock; fails at once with [`LockError::Deadlock`] if the wait would close a
    /// cycle and this session is the victim (or later, if the youngest-victim policy picks it).
    ///
    /// # Errors
    ///
    /// [`LockError::Deadlock`], and the validation errors of [`Request::acquire`].
    ///
    /// # Examples
    ///
    /// ```
    /// let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
    /// let tx = locks.session("t");
    /// let g = tx.exclusive(&1).acquire()?;
    /// # Ok::<(), leasehold::LockError>(())
    /// ```
    pub fn acquire(self) -> Result<SessionGuard<'s, 'm, K, S>, LockError> {
        self.acquire_until(None)
    }

    /// Waits at most `timeout`.
    ///
    /// # Errors
    ///
    /// [`LockError::TimedOut`], [`LockError::Deadlock`], and the validation errors.
    ///
    /// # Examples
    ///
    /// ```
    /// use leasehold::LockError;
    /// use std::time::Duration;
    /// let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
    /// let (a, b) = (locks.session("a"), locks.session("b"));
    /// let _g = a.exclusive(&1).try_acquire()?;
    /// let err = b.exclusive(&1).acquire_timeout(Duration::from_millis(5)).unwrap_err();
    /// assert_eq!(err, LockError::TimedOut);
    /// # Ok::<(), LockError>(())
    /// ```
    pub fn acquire_timeout(self, timeout: Duration) -> Result<SessionGuard<'s, 'm, K, S>, LockError> {
        let deadline = Instant::now().checked_add(timeout);
        self.acquire_until(Some(deadline.unwrap_or_else(|| Instant::now() + Duration::from_secs(1 << 30))))
    }

    pub(crate) fn acquire_until(self, deadline: Option<Instant>) -> Result<SessionGuard<'s, 'm, K, S>, LockError> {
        // Uncontended: no waker, no graph; only this session's list.
        match self.request().try_acquire() {
            Ok(g) => return self.wrap(g, None),
            Err(LockError::WouldBlock) => {}
            Err(e) => return Err(e),
        }
        let mut fut = SessionAcquire { request: self, state: AcquireState::Contended };
        let waker = Waker::from(std::sync::Arc::new(ThreadWaker(std::thread::current())));
        let mut cx = Context::from_waker(&waker);
        loop {
            if let Poll::Ready(r) = Pin::new(&mut fut).poll(&mut cx) {
                return r;
            }
            match deadline {
                None => std::thread::park(),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        // Dropping the future withdraws the wait (and releases a lock handed to
                        // it meanwhile).
                        drop(fut);
                        return Err(LockError::TimedOut);
                    }
                    std::thread::park_timeout(d - now);
                }
            }
        }
    }

    /// A future that resolves to the lock, on any executor.
    ///
    /// # Cancel safety
    ///
    /// Dropping it before it completes withdraws its wait from the queue and from the wait-for
    /// graph, and releases a lock handed to it meanwhile.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), leasehold::LockError> {
    /// let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
    /// let tx = locks.session("t");
    /// let g = tx.exclusive(&1).acquire_async().await?;
    /// assert!(g.is_held());
    /// # Ok(())
    /// # }
    /// ```
    pub fn acquire_async(self) -> SessionAcquire<'s, 'm, 'q, K, Q, S> {
        SessionAcquire { request: self, state: AcquireState::Start }
    }
}

struct ThreadWaker(std::thread::Thread);

impl Wake for ThreadWaker {
    fn wake(self: std::sync::Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &std::sync::Arc<Self>) {
        self.0.unpark();
    }
}

/// The future of [`SessionRequest::acquire_async`].
#[must_use = "futures do nothing unless polled"]
pub struct SessionAcquire<'s, 'm, 'q, K, Q: ?Sized, S = DefaultHasher> {
    request: SessionRequest<'s, 'm, 'q, K, Q, S>,
    state: AcquireState<'m, 'q, K, Q, S>,
}

enum AcquireState<'m, 'q, K, Q: ?Sized, S> {
    Start,
    /// A `try_acquire` just failed: register the wait without trying again.
    Contended,
    /// Waiting in the engine; registered in the graph as this wait (if it was).
    Waiting(AcquireFuture<'m, 'q, K, Q, S>, Option<u64>),
    Done,
}

impl<K, Q: ?Sized + fmt::Debug, S> fmt::Debug for SessionAcquire<'_, '_, '_, K, Q, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            AcquireState::Start | AcquireState::Contended => "start",
            AcquireState::Waiting(..) => "waiting",
            AcquireState::Done => "done",
        };
        f.debug_struct("SessionAcquire").field("request", &self.request).field("state", &state).finish()
    }
}

impl<K, Q: ?Sized, S> Unpin for SessionAcquire<'_, '_, '_, K, Q, S> {}

impl<'s, 'm, 'q, K, Q, S> Future for SessionAcquire<'s, 'm, 'q, K, Q, S>
where
    K: Hash + Eq + Clone + fmt::Debug + Send + Sync + 'static + Borrow<Q> + From<Q::Owned>,
    Q: ?Sized + Hash + Eq + ToOwned,
    S: BuildHasher + Send + Sync + 'static,
{
    type Output = Result<SessionGuard<'s, 'm, K, S>, LockError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let session = &this.request.session.state;
        if let AcquireState::Start | AcquireState::Contended = this.state {
            if let AcquireState::Start = this.state {
                // Uncontended: no graph, only this session's list.
                match this.request.request().try_acquire() {
                    Ok(g) => {
                        this.state = AcquireState::Done;
                        return Poll::Ready(this.request.wrap(g, None));
                    }
                    Err(LockError::WouldBlock) => {}
                    Err(e) => {
                        this.state = AcquireState::Done;
                        return Poll::Ready(Err(e));
                    }
                }
            }
            let mut seq = None;
            if !matches!(this.request.mode, Mode::Semaphore(_)) {
                let key = K::from(this.request.key.to_owned());
                match this.request.session.locks.detector.begin_wait(session, key, this.request.mode) {
                    Ok(s) => seq = s,
                    Err(e) => {
                        this.state = AcquireState::Done;
                        return Poll::Ready(Err(e));
                    }
                }
            }
            this.state = AcquireState::Waiting(this.request.request().acquire_async(), seq);
        }
        let AcquireState::Waiting(fut, seq) = &mut this.state else {
            panic!("SessionAcquire polled after it completed");
        };
        let seq = *seq;
        // The waker first, so an abort set after this check wakes us.
        if let Some(cycle) = session.set_waker(seq, cx.waker()) {
            this.state = AcquireState::Done; // drops the engine future: cancel-safe
            return Poll::Ready(Err(LockError::Deadlock { cycle }));
        }
        match Pin::new(fut).poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(g)) => {
                this.state = AcquireState::Done;
                Poll::Ready(this.request.wrap(g, seq))
            }
            Poll::Ready(Err(e)) => {
                this.state = AcquireState::Done;
                let abort = session.end_wait(seq);
                Poll::Ready(Err(abort.map_or(e, |cycle| LockError::Deadlock { cycle })))
            }
        }
    }
}

impl<K, Q: ?Sized, S> Drop for SessionAcquire<'_, '_, '_, K, Q, S> {
    fn drop(&mut self) {
        if let AcquireState::Waiting(fut, seq) = std::mem::replace(&mut self.state, AcquireState::Done) {
            // The engine future leaves its queue (releasing a lock handed to it); then the graph
            // forgets the wait.
            drop(fut);
            self.request.session.state.end_wait(seq);
        }
    }
}

/// A holding of a [`Session`]: a [`LockGuard`] (it derefs to one) that also leaves the session's
/// list when it ends. Dropping it releases the lock.
///
/// # Examples
///
/// ```
/// let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
/// let tx = locks.session("t");
/// let g = tx.exclusive(&1).try_acquire()?;
/// let token = g.token();
/// g.release()?;
/// assert!(locks.exclusive(&1).try_acquire()?.token() > token);
/// # Ok::<(), leasehold::LockError>(())
/// ```
#[must_use = "dropping the guard releases the lock at once"]
pub struct SessionGuard<'s, 'm, K, S = DefaultHasher> {
    guard: Option<LockGuard<'m, K, S>>,
    session: &'s SessionState<K>,
    id: u64,
}

impl<K: Hash + Eq + fmt::Debug, S: BuildHasher> fmt::Debug for SessionGuard<'_, '_, K, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionGuard").field("session", &self.session.id).field("guard", &self.guard).finish()
    }
}

impl<'m, K, S> std::ops::Deref for SessionGuard<'_, 'm, K, S> {
    type Target = LockGuard<'m, K, S>;

    fn deref(&self) -> &Self::Target {
        match &self.guard {
            Some(g) => g,
            None => unreachable!("the guard is taken only by release and drop"),
        }
    }
}

impl<K, S> SessionGuard<'_, '_, K, S> {
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
    /// let tx = locks.session("t");
    /// tx.exclusive(&1).try_acquire()?.release()?;
    /// assert!(locks.wait_graph().sessions[0].held.is_empty());
    /// # Ok::<(), leasehold::LockError>(())
    /// ```
    pub fn release(mut self) -> Result<(), LockError> {
        self.session.forget(self.id);
        match self.guard.take() {
            Some(g) => g.release(),
            None => Ok(()),
        }
    }

    /// The fencing token (as [`LockGuard::token`]).
    ///
    /// # Examples
    ///
    /// ```
    /// let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
    /// let tx = locks.session("t");
    /// let a = tx.shared(&1).try_acquire()?;
    /// let b = tx.shared(&2).try_acquire()?;
    /// assert!(a.token() > leasehold::FenceToken::from_u64(0) || b.token() > a.token());
    /// # Ok::<(), leasehold::LockError>(())
    /// ```
    pub fn token(&self) -> FenceToken {
        match &self.guard {
            Some(g) => g.token(),
            None => unreachable!("the guard is taken only by release and drop"),
        }
    }
}

impl<K, S> Drop for SessionGuard<'_, '_, K, S> {
    fn drop(&mut self) {
        // Out of the list first: a search must never see a holding that is already released.
        self.session.forget(self.id);
        drop(self.guard.take());
    }
}

impl<K, S> LockManager<K, S>
where
    K: Hash + Eq + Clone + fmt::Debug + Send + Sync + 'static,
    S: BuildHasher + Send + Sync + 'static,
{
    /// A session (a transaction): its waits enter the wait-for graph, so a deadlock among
    /// sessions fails one request with [`LockError::Deadlock`] instead of hanging.
    ///
    /// # Examples
    ///
    /// ```
    /// let locks: leasehold::LockManager<String> = leasehold::LockManager::new();
    /// let tx = locks.session("txn-42");
    /// let g = tx.exclusive("row/9").acquire()?;
    /// # Ok::<(), leasehold::LockError>(())
    /// ```
    pub fn session(&self, label: impl Into<Owner>) -> Session<'_, K, S> {
        Session::new(self, label.into())
    }
}
