//! The future of an async acquire: the fast path on the first poll, then a place in the slot's
//! queue, woken by a release, a grant, or the process timer at a holder's lease deadline.

#![deny(unsafe_code)]

use std::borrow::Borrow;
use std::fmt;
use std::future::Future;
use std::hash::{BuildHasher, Hash};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::api::guard::LockGuard;
use crate::api::request::Request;
use crate::api::state::State;
use crate::engine::holding::Ask;
use crate::engine::queue::Waiter;
use crate::engine::slot::Slot;
use crate::engine::table::{Attempt, DefaultHasher};
use crate::primitives::sync::Arc;
use crate::vocab::error::LockError;

/// Arms the process timer to wake the task at the earliest holder deadline `earliest` (clock
/// nanoseconds), once per deadline. Returns false if that deadline has passed already (the caller
/// retries now, expiring the holder). With a manual clock, time moves only when the test moves it
/// and `advance` runs the expiry, so nothing is armed.
pub(crate) fn arm_holder_timer<K, S>(
    locks: &State<K, S>,
    earliest: Option<u64>,
    armed: &mut Option<(u64, Instant)>,
    waker: &std::task::Waker,
) -> bool
where
    K: Hash + Eq + Send + Sync + 'static,
    S: BuildHasher + Send + Sync + 'static,
{
    let Some(deadline) = earliest else { return true };
    if !locks.table.core.clock.is_real_time() {
        return true;
    }
    let now = locks.table.core.clock.now_ns();
    if deadline <= now {
        return false;
    }
    let real_now = Instant::now();
    // Armed again for a new deadline, or if the timer fired before the clock reached this one.
    if armed.is_none_or(|(d, at)| d != deadline || at <= real_now) {
        let at = real_now + Duration::from_nanos(deadline - now);
        *armed = Some((deadline, at));
        #[cfg(not(leasehold_loom))]
        crate::primitives::timer::wake_at(at, waker);
        #[cfg(leasehold_loom)]
        let _ = waker;
    }
    true
}

/// The future of [`Request::acquire_async`].
#[must_use = "futures do nothing unless polled"]
pub struct AcquireFuture<'m, 'q, K, Q: ?Sized, S = DefaultHasher> {
    request: Request<'m, 'q, K, Q, S>,
    ask: Result<Ask, LockError>,
    state: FutureState<'m, K>,
    /// The holder deadline the process timer is armed for, and the instant it fires.
    timer: Option<(u64, Instant)>,
}

impl<'m, 'q, K, Q, S> Request<'m, 'q, K, Q, S>
where
    K: Hash + Eq + Send + Sync + 'static + Borrow<Q>,
    Q: ?Sized + Hash + Eq + ToOwned,
    K: From<Q::Owned>,
    S: BuildHasher + Send + Sync + 'static,
{
    /// A future that resolves to the lock, on any executor.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future before it completes leaves nothing behind: its place in the queue is
    /// given up (waking whoever that lets proceed), and a lock handed to it meanwhile is released.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), leasehold::LockError> {
    /// let locks: leasehold::LockManager<String> = leasehold::LockManager::new();
    /// let g = locks.exclusive("orders/17").acquire_async().await?;
    /// assert!(g.is_held());
    /// # Ok(())
    /// # }
    /// ```
    pub fn acquire_async(self) -> AcquireFuture<'m, 'q, K, Q, S> {
        let ask = self.checked_ask();
        AcquireFuture { request: self, ask, state: FutureState::Start, timer: None }
    }
}

enum FutureState<'m, K> {
    Start,
    Queued(&'m Slot<K>, Arc<Waiter>),
    Done,
}

impl<K, Q: ?Sized + fmt::Debug, S> fmt::Debug for AcquireFuture<'_, '_, K, Q, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            FutureState::Start => "start",
            FutureState::Queued(..) => "queued",
            FutureState::Done => "done",
        };
        f.debug_struct("AcquireFuture").field("request", &self.request).field("state", &state).finish()
    }
}

// The future holds no self-references.
impl<K, Q: ?Sized, S> Unpin for AcquireFuture<'_, '_, K, Q, S> {}

impl<'m, 'q, K, Q, S> Future for AcquireFuture<'m, 'q, K, Q, S>
where
    K: Hash + Eq + Send + Sync + 'static + Borrow<Q>,
    Q: ?Sized + Hash + Eq + ToOwned,
    K: From<Q::Owned>,
    S: BuildHasher + Send + Sync + 'static,
{
    type Output = Result<LockGuard<'m, K, S>, LockError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let locks = this.request.locks;
        match &this.state {
            FutureState::Done => panic!("AcquireFuture polled after it completed"),
            FutureState::Start => {
                let ask = match &this.ask {
                    Ok(ask) => ask.clone(),
                    Err(e) => {
                        this.state = FutureState::Done;
                        return Poll::Ready(Err(e.clone()));
                    }
                };
                let key = this.request.key;
                let hash = locks.table.hash(key);
                if let (Some(slot), Some(h)) = locks.table.try_fast(hash, key, &ask) {
                    this.state = FutureState::Done;
                    return Poll::Ready(Ok(this.request.guard(slot, h)));
                }
                let make = || Waiter::for_task(ask.clone(), cx.waker().clone(), locks.table.core.clock.now_ns());
                match locks.attempt(hash, key, &ask, Some(&make)) {
                    Attempt::Acquired(slot, h) => {
                        this.state = FutureState::Done;
                        Poll::Ready(Ok(this.request.guard(slot, h)))
                    }
                    Attempt::Failed(e) => {
                        this.state = FutureState::Done;
                        Poll::Ready(Err(e))
                    }
                    Attempt::Queued(slot, waiter) => {
                        let earliest = slot.earliest_deadline(&slot.lock());
                        this.state = FutureState::Queued(slot, waiter);
                        // The attempt expired whoever was past due, so this only arms the timer.
                        let _ = arm_holder_timer(locks, earliest, &mut this.timer, cx.waker());
                        Poll::Pending
                    }
                }
            }
            FutureState::Queued(slot, waiter) => {
                let (slot, waiter) = (*slot, Arc::clone(waiter));
                if let Some(h) = waiter.take_grant() {
                    this.state = FutureState::Done;
                    locks.count_contended(slot, &waiter);
                    return Poll::Ready(Ok(this.request.guard(slot, h)));
                }
                if waiter.is_waiting() {
                    waiter.set_waker(cx.waker());
                    let earliest = slot.earliest_deadline(&slot.lock());
                    // Not woken: still pending unless a holder's deadline has passed, which this
                    // future must act on itself (no reaper may run).
                    if waiter.is_waiting() && arm_holder_timer(locks, earliest, &mut this.timer, cx.waker()) {
                        return Poll::Pending;
                    }
                }
                let mut g = slot.lock();
                // The waker first, under the slot lock, so no wake-up slips between it and the retry.
                waiter.set_waker(cx.waker());
                if let Some(h) = waiter.take_grant().or_else(|| locks.retry_queued(slot, &waiter, &mut g)) {
                    drop(g);
                    this.state = FutureState::Done;
                    locks.count_contended(slot, &waiter);
                    return Poll::Ready(Ok(this.request.guard(slot, h)));
                }
                let earliest = slot.earliest_deadline(&g);
                drop(g);
                if !arm_holder_timer(locks, earliest, &mut this.timer, cx.waker()) {
                    // A holder came due between the retry and now: poll again.
                    cx.waker().wake_by_ref();
                }
                Poll::Pending
            }
        }
    }
}

impl<K, Q: ?Sized, S> Drop for AcquireFuture<'_, '_, K, Q, S> {
    fn drop(&mut self) {
        if let FutureState::Queued(slot, waiter) = std::mem::replace(&mut self.state, FutureState::Done) {
            let core = &self.request.locks.table.core;
            let mut g = slot.lock();
            match waiter.take_grant() {
                Some(h) => {
                    drop(g);
                    // Handed the lock but never polled to take it: give it back.
                    if slot.release(core, &h).is_err() {
                        // Expired meanwhile: its expirer counted us as a zombie.
                        slot.zombies.fetch_sub(1, crate::primitives::sync::Ordering::Release);
                    }
                }
                None => {
                    slot.leave_queue(&waiter, &mut g);
                    let stats = core.stats.of(slot.hash.load(crate::primitives::sync::Ordering::Relaxed));
                    crate::primitives::counters::ShardStats::bump(&stats.cancelled);
                }
            }
        }
    }
}
