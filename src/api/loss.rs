//! The loss signal: how a holder learns that its holding ended without its own release.
//!
//! # Ground rules
//!
//! - A [`LossSignal`] is a one-shot: `state` goes from `ARMED` to `EXPIRED` or `REVOKED` once and
//!   never back. Whoever wins that compare-exchange wakes the stored wakers and queues the
//!   callback; everyone else does nothing.
//! - Only holdings that ask have a signal (a keep-alive or `on_lost` request, or a guard on which
//!   [`lost`](crate::LockGuard::lost) / [`is_lost`](crate::LockGuard::is_lost) was called), so
//!   a guard that never asks costs nothing. The signals in use are in the manager's
//!   [`LossDesk`], keyed by (slot address, token).
//! - A signal is attached under the slot lock after checking that the holding is still live; the
//!   expirer and the revoker (`Slot::force_end`, through its `OnEnded` callback: `State::emit_ended`,
//!   and the guard's own expiry in `renew`) look it up under the same slot lock, after their
//!   compare-exchange on the lease word and *before the holding's units go back*. So either the
//!   ender finds the signal and fires it before the next holder can claim, or the attacher saw
//!   the holding already ended and fires the signal itself. The next holder's claim synchronises
//!   with the return of the units (Release/Acquire on the state word), so it sees `is_lost()`.
//! - Firing runs no user code under the slot lock: it stores the state, takes the wakers out
//!   (under the signal's own lock, a leaf lock) and wakes them, and hands a callback to the
//!   desk's queue. The manager's service thread (or `renew_due` for an embedder) runs queued
//!   callbacks later, with no lock held and panics caught.

#![deny(unsafe_code)]

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

// Loom's twins under the loom cfg: the enders take these locks inside loom models.
use crate::primitives::sync::{AtomicU64, AtomicU8, Mutex, Ordering};

/// Why a holding ended without its holder's release.
///
/// # Examples
///
/// ```
/// use leasehold::{LockManager, LossCause};
/// let locks: LockManager<String> = LockManager::new();
/// let g = locks.exclusive("job").owner("host-7").try_acquire()?;
/// locks.revoke_owner("host-7");
/// assert_eq!(g.loss_cause(), Some(LossCause::Revoked));
/// # Ok::<(), leasehold::LockError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LossCause {
    /// The lease deadline passed before a renewal (the renewer could not keep up, or nobody renewed).
    Expired,
    /// An operator took it back ([`revoke`](crate::LockManager::revoke),
    /// [`revoke_owner`](crate::LockManager::revoke_owner)).
    Revoked,
}

/// A callback registered with `on_lost`: called once, on the service thread, with no lock held.
pub(crate) type LossCallback = Arc<dyn Fn(LossCause) + Send + Sync>;

const ARMED: u8 = 0;
const EXPIRED: u8 = 1;
const REVOKED: u8 = 2;

/// One holding's loss signal (see the module's ground rules).
pub(crate) struct LossSignal {
    /// `ARMED`, then `EXPIRED` or `REVOKED` for good.
    state: AtomicU8,
    /// Tasks awaiting [`Lost`], each under the id of its future (so a dropped future removes
    /// its waker instead of leaving it behind).
    wakers: Mutex<Vec<(u64, Waker)>>,
    next_id: AtomicU64,
    callback: Option<LossCallback>,
}

impl fmt::Debug for LossSignal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LossSignal").field("cause", &self.cause()).finish_non_exhaustive()
    }
}

impl LossSignal {
    pub(crate) fn new(callback: Option<LossCallback>) -> Self {
        LossSignal { state: AtomicU8::new(ARMED), wakers: Mutex::new(Vec::new()), next_id: AtomicU64::new(0), callback }
    }

    /// The cause, once fired.
    #[inline]
    pub(crate) fn cause(&self) -> Option<LossCause> {
        // Acquire: pairs with the Release of the firing compare-exchange, so a holder that sees
        // the loss also sees what the ender did before it.
        match self.state.load(Ordering::Acquire) {
            EXPIRED => Some(LossCause::Expired),
            REVOKED => Some(LossCause::Revoked),
            _ => None,
        }
    }

    /// Fires the signal (once). Returns the callback to run, if this call fired it and one was
    /// registered. Runs no user code: waking a waker is the executor's code.
    pub(crate) fn fire(&self, cause: LossCause) -> Option<LossCallback> {
        let to = match cause {
            LossCause::Expired => EXPIRED,
            LossCause::Revoked => REVOKED,
        };
        // Release: pairs with the Acquire in `cause`. AcqRel (not Release alone) so that two
        // racing firers agree on one winner and the loser returns quietly.
        if self.state.compare_exchange(ARMED, to, Ordering::AcqRel, Ordering::Acquire).is_err() {
            return None;
        }
        // Taken under the lock that `Lost::poll` registers under, after the state store: a poll
        // either registered before this (and is woken here) or re-checks the state after its
        // registration and sees it.
        let wakers = std::mem::take(&mut *self.wakers.lock());
        for (_, waker) in wakers {
            waker.wake();
        }
        self.callback.clone()
    }

    fn register(&self, id: u64, waker: &Waker) {
        let mut wakers = self.wakers.lock();
        match wakers.iter_mut().find(|(i, _)| *i == id) {
            Some((_, w)) if w.will_wake(waker) => {}
            Some((_, w)) => *w = waker.clone(),
            None => wakers.push((id, waker.clone())),
        }
    }

    fn deregister(&self, id: u64) {
        self.wakers.lock().retain(|(i, _)| *i != id);
    }

    /// Wakers stored now (for tests).
    #[cfg(test)]
    pub(crate) fn waiting(&self) -> usize {
        self.wakers.lock().len()
    }
}

/// A future that completes when the holding is lost, with the cause; it never completes while
/// the holding lives. Runtime-agnostic: it stores the task's waker, and the expirer or revoker
/// wakes it before the next holder can acquire the key.
///
/// Returned by [`LockGuard::lost`](crate::LockGuard::lost) and
/// [`Leadership::lost`](crate::Leadership::lost).
///
/// # Cancel safety
///
/// Dropping it removes its waker; awaiting `lost()` again later is fine.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), leasehold::LockError> {
/// use leasehold::{LockManager, LossCause};
/// let locks: LockManager<String> = LockManager::new();
/// let g = locks.exclusive("job").owner("host-7").acquire_async().await?;
/// locks.revoke_owner("host-7");
/// assert_eq!(g.lost().await, LossCause::Revoked);
/// # Ok(())
/// # }
/// ```
#[must_use = "futures do nothing unless polled"]
pub struct Lost<'g> {
    signal: &'g LossSignal,
    id: u64,
    registered: bool,
}

impl fmt::Debug for Lost<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lost").field("cause", &self.signal.cause()).finish()
    }
}

impl<'g> Lost<'g> {
    pub(crate) fn new(signal: &'g LossSignal) -> Self {
        Lost { signal, id: signal.next_id.fetch_add(1, Ordering::Relaxed), registered: false }
    }
}

impl Future for Lost<'_> {
    type Output = LossCause;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<LossCause> {
        let this = self.get_mut();
        if let Some(cause) = this.signal.cause() {
            return Poll::Ready(cause);
        }
        this.signal.register(this.id, cx.waker());
        this.registered = true;
        // Re-check after registering: `fire` stores the state before it takes the wakers.
        match this.signal.cause() {
            Some(cause) => Poll::Ready(cause),
            None => Poll::Pending,
        }
    }
}

impl Drop for Lost<'_> {
    fn drop(&mut self) {
        if self.registered {
            self.signal.deregister(self.id);
        }
    }
}

/// The manager's register of loss signals in use, and the queue of callbacks waiting to run.
/// Keyed by the slot's address and the holding's token (unique among live holdings: a slot's
/// tokens never repeat).
pub(crate) struct LossDesk {
    /// Signals attached, by (slot address, token). Only touched when `attached > 0`.
    signals: Mutex<HashMap<(usize, u64), Arc<LossSignal>>>,
    /// `signals.len()`, readable without the lock: an ender that reads 0 skips the lookup.
    attached: AtomicU64,
    /// Callbacks of fired signals, run later with no lock held.
    queue: Mutex<Vec<(LossCallback, LossCause)>>,
    /// The thread that runs the queue, if one was started (`State::ensure_service_thread`).
    runner: Mutex<Option<std::thread::Thread>>,
}

impl LossDesk {
    pub(crate) fn new() -> Self {
        LossDesk {
            signals: Mutex::new(HashMap::new()),
            attached: AtomicU64::new(0),
            queue: Mutex::new(Vec::new()),
            runner: Mutex::new(None),
        }
    }

    /// Attaches `signal` to the holding (`slot`, `token`). The caller holds the slot lock and has
    /// just checked that the holding is live.
    pub(crate) fn attach(&self, slot: usize, token: u64, signal: Arc<LossSignal>) {
        let mut signals = self.signals.lock();
        if signals.insert((slot, token), signal).is_none() {
            // Relaxed: an ender of this holding reads it under the same slot lock the caller holds.
            self.attached.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Detaches the holding's signal (its guard is releasing it, or it was found lost).
    pub(crate) fn detach(&self, slot: usize, token: u64) {
        if self.signals.lock().remove(&(slot, token)).is_some() {
            self.attached.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Moves the signal of the holding (`slot`, `old`) to the token `new` of the holding an
    /// upgrade made of it (under the slot lock, like every ender's lookup).
    pub(crate) fn rekey(&self, slot: usize, old: u64, new: u64) {
        if self.attached.load(Ordering::Relaxed) == 0 {
            return;
        }
        let mut signals = self.signals.lock();
        if let Some(signal) = signals.remove(&(slot, old)) {
            signals.insert((slot, new), signal);
        }
    }

    /// The ender's hook (called from `force_end`'s callback, under the slot lock, before the units
    /// go back): fires
    /// the holding's signal, if one is attached.
    #[inline]
    pub(crate) fn holding_ended(&self, slot: usize, token: u64, expired: bool) {
        if self.attached.load(Ordering::Relaxed) == 0 {
            return;
        }
        self.fire_attached(slot, token, if expired { LossCause::Expired } else { LossCause::Revoked });
    }

    #[cold]
    fn fire_attached(&self, slot: usize, token: u64, cause: LossCause) {
        let Some(signal) = self.signals.lock().remove(&(slot, token)) else { return };
        self.attached.fetch_sub(1, Ordering::Relaxed);
        self.fire(&signal, cause);
    }

    /// Fires `signal` and queues its callback for the runner.
    pub(crate) fn fire(&self, signal: &LossSignal, cause: LossCause) {
        if let Some(callback) = signal.fire(cause) {
            self.queue.lock().push((callback, cause));
            self.wake_runner();
        }
    }

    /// Wakes the thread that runs queued callbacks (and renews), if there is one.
    pub(crate) fn wake_runner(&self) {
        if let Some(t) = self.runner.lock().as_ref() {
            t.unpark();
        }
    }

    /// Records the thread that runs queued callbacks.
    #[cfg_attr(leasehold_loom, allow(dead_code))] // no service thread under loom
    pub(crate) fn set_runner(&self, t: std::thread::Thread) {
        *self.runner.lock() = Some(t);
    }

    /// Runs the queued callbacks (no lock held while they run; a panicking callback is caught and
    /// counted, never propagated to the thread that runs them). Returns how many ran.
    pub(crate) fn run_callbacks(&self) -> usize {
        let batch = std::mem::take(&mut *self.queue.lock());
        let n = batch.len();
        for (callback, cause) in batch {
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| callback(cause)));
        }
        n
    }

    /// Whether callbacks wait to run.
    #[cfg_attr(leasehold_loom, allow(dead_code))] // no service thread under loom
    pub(crate) fn has_callbacks(&self) -> bool {
        !self.queue.lock().is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::task::Wake;

    struct Counting(AtomicUsize);
    impl Wake for Counting {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn fire_wakes_each_registered_waker_once_and_only_the_first_fire_counts() {
        let signal = LossSignal::new(Some(Arc::new(|_| {})));
        let counter = Arc::new(Counting(AtomicUsize::new(0)));
        let waker = Waker::from(Arc::clone(&counter));
        let mut cx = Context::from_waker(&waker);
        let mut a = Lost::new(&signal);
        let mut b = Lost::new(&signal);
        assert_eq!(Pin::new(&mut a).poll(&mut cx), Poll::Pending);
        assert_eq!(Pin::new(&mut a).poll(&mut cx), Poll::Pending); // same task: no second waker
        assert_eq!(Pin::new(&mut b).poll(&mut cx), Poll::Pending);
        assert_eq!(signal.waiting(), 2);
        assert_eq!(counter.0.load(Ordering::SeqCst), 0);
        assert!(signal.fire(LossCause::Revoked).is_some());
        assert_eq!(counter.0.load(Ordering::SeqCst), 2);
        assert!(signal.fire(LossCause::Expired).is_none(), "a one-shot fires once");
        assert_eq!(Pin::new(&mut a).poll(&mut cx), Poll::Ready(LossCause::Revoked));
        assert_eq!(Pin::new(&mut b).poll(&mut cx), Poll::Ready(LossCause::Revoked));
    }

    #[test]
    fn a_dropped_future_takes_its_waker_with_it() {
        let signal = LossSignal::new(None);
        let counter = Arc::new(Counting(AtomicUsize::new(0)));
        let waker = Waker::from(Arc::clone(&counter));
        let mut cx = Context::from_waker(&waker);
        let mut a = Lost::new(&signal);
        assert_eq!(Pin::new(&mut a).poll(&mut cx), Poll::Pending);
        drop(a);
        assert_eq!(signal.waiting(), 0);
        assert!(signal.fire(LossCause::Expired).is_none(), "no callback registered");
        assert_eq!(counter.0.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn a_panicking_callback_is_contained() {
        let desk = LossDesk::new();
        let ran = Arc::new(AtomicUsize::new(0));
        let r = Arc::clone(&ran);
        let a = LossSignal::new(Some(Arc::new(|_| panic!("user bug"))));
        let b = LossSignal::new(Some(Arc::new(move |c| {
            assert_eq!(c, LossCause::Expired);
            r.fetch_add(1, Ordering::SeqCst);
        })));
        desk.fire(&a, LossCause::Expired);
        desk.fire(&b, LossCause::Expired);
        assert_eq!(desk.run_callbacks(), 2);
        assert_eq!(ran.load(Ordering::SeqCst), 1);
    }
}
