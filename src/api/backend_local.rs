//! The in-process implementation of [`LockBackend`]: the manager's own request, run at the first
//! poll (`Try` and a free lock complete there); only a wait that has to queue arms a timer.

use std::borrow::Borrow;
use std::future::Future;
use std::hash::{BuildHasher, Hash};
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use crate::api::backend::{BackendGuard, LockBackend, LockSpec, Wait};
use crate::api::future::AcquireFuture;
use crate::api::guard::LockGuard;
use crate::api::manager::LockManager;
use crate::api::request::Request;
use crate::primitives::timer;
use crate::vocab::{FenceToken, LockError, Mode, Owner};

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
        Mode::IntentShared => locks.intent_shared(key),
        Mode::IntentExclusive => locks.intent_exclusive(key),
        Mode::SharedIntentExclusive => locks.shared_intent_exclusive(key),
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
