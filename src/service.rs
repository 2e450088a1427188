//! The holder's side of keep-alive and of the loss signal: what a guard carries once it asks.
//!
//! A guard that never asks for keep-alive, an `on_lost` callback, [`LockGuard::lost`] or
//! [`LockGuard::is_lost`] carries an empty cell and costs nothing more. The first ask attaches a
//! [`LossSignal`] to the holding (`loss.rs`), under the slot lock, after checking that the
//! holding is still live; if it is not, the signal is fired at once with the cause read from the
//! lease word.

use std::hash::{BuildHasher, Hash};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use crate::guard::LockGuard;
use crate::lease;
use crate::loss::{LossCallback, LossCause, LossSignal, Lost};
use crate::manager::Inner;
use crate::renew::KeepAlive;
use crate::slot::Record;
use crate::sync::Ordering;

/// The lease a keep-alive request gets when it names none (Redisson's watchdog default).
pub(crate) const DEFAULT_KEEP_ALIVE_TTL: Duration = Duration::from_secs(30);

/// What a request asked for beyond the lock itself.
#[derive(Clone, Default)]
pub(crate) struct ServiceAsk {
    pub(crate) keep_alive: bool,
    pub(crate) on_lost: Option<LossCallback>,
}

/// What a guard carries once it asked (see the module docs).
pub(crate) struct GuardService<K> {
    pub(crate) signal: Arc<LossSignal>,
    pub(crate) keep_alive: Option<Arc<KeepAlive<K>>>,
}

impl<K> GuardService<K> {
    /// The guard is about to release its holding: stop renewals (waiting out one in progress)
    /// and take the signal off the desk (an own release is not a loss).
    pub(crate) fn before_release<S>(&self, guard: &LockGuard<'_, K, S>) {
        if let Some(k) = &self.keep_alive {
            k.close();
        }
        guard.locks.inner.core.losses.detach(guard.slot_addr(), guard.holding.token);
    }
}

impl<'m, K, S> LockGuard<'m, K, S> {
    pub(crate) fn slot_addr(&self) -> usize {
        self.slot as *const _ as usize
    }

    fn record(&self) -> &Record {
        // SAFETY: `rec` points at one of the slot's records, in type-stable memory that lives as
        // long as the manager this guard borrows.
        unsafe { &*self.holding.rec }
    }

    /// The holding's loss signal, attaching one on first use.
    fn signal(&self) -> &LossSignal {
        match self.service.get() {
            Some(s) => &s.signal,
            None => &self.service.get_or_init(|| Box::new(self.attach(None, None))).signal,
        }
    }

    /// The holding's loss signal, shared (for the election board).
    pub(crate) fn loss_signal(&self) -> Arc<LossSignal> {
        self.signal();
        match self.service.get() {
            Some(s) => Arc::clone(&s.signal),
            None => unreachable!("`signal` attached it"),
        }
    }

    /// Attaches a loss signal (with `callback`) and maybe a keep-alive entry.
    pub(crate) fn attach(
        &self,
        callback: Option<LossCallback>,
        keep_alive: Option<Arc<KeepAlive<K>>>,
    ) -> GuardService<K> {
        let signal = Arc::new(LossSignal::new(callback));
        let core = &self.locks.inner.core;
        let token = self.holding.token;
        let rec = self.record();
        let si = self.slot.lock();
        let l = rec.lease.load(Ordering::Acquire);
        let tagged = lease::tag(l) == lease::tag_of(token) && rec.token.load(Ordering::Relaxed) == token;
        let live = tagged && matches!(lease::state(l), lease::HELD | lease::PLAIN);
        if live {
            // Under the slot lock: an ender of this holding takes the same lock (loss.rs).
            core.losses.attach(self.slot_addr(), token, Arc::clone(&signal));
        }
        drop(si);
        if !live {
            // Ended before we attached. An expiring word of ours still shows its deadline.
            let expired = tagged && lease::is_leased(l) && lease::deadline_ns(l) <= core.clock.now_ns();
            let expired = expired || keep_alive.as_ref().is_some_and(|k| k.trusted_ns() <= core.clock.now_ns());
            core.losses.fire(&signal, if expired { LossCause::Expired } else { LossCause::Revoked });
        }
        GuardService { signal, keep_alive }
    }

    /// A future that completes when this holding ends without this guard's release: its lease
    /// expired (a keep-alive renewer that could not keep up, or nobody renewed), or it was
    /// revoked. It completes before the next holder can acquire the key. A holding without lease
    /// or owner cannot be lost, so its `lost()` never completes.
    ///
    /// The first call attaches the signal (one lock of the key and one of the manager's signal
    /// register); a guard that never asks pays nothing.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: dropping the future removes its waker.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), leasehold::LockError> {
    /// use leasehold::{LockManager, LossCause, ManualClock};
    /// use std::time::Duration;
    /// let clock = ManualClock::new();
    /// let locks = LockManager::<String>::builder().clock(clock.clone()).build().unwrap();
    /// let g = locks.exclusive("job").lease(Duration::from_secs(1)).acquire_async().await?;
    /// let lost = g.lost();
    /// clock.advance(Duration::from_secs(1));
    /// assert_eq!(lost.await, LossCause::Expired);
    /// # Ok(())
    /// # }
    /// ```
    pub fn lost(&self) -> Lost<'_> {
        Lost::new(self.signal())
    }

    /// Whether the holding ended without this guard's release (expired or revoked). Once true it
    /// stays true; it is true before the next holder can acquire the key.
    ///
    /// # Examples
    ///
    /// ```
    /// let locks: leasehold::LockManager<String> = leasehold::LockManager::new();
    /// let g = locks.exclusive("job").owner("host-7").try_acquire()?;
    /// assert!(!g.is_lost());
    /// locks.revoke_owner("host-7");
    /// assert!(g.is_lost());
    /// # Ok::<(), leasehold::LockError>(())
    /// ```
    pub fn is_lost(&self) -> bool {
        self.loss_cause().is_some()
    }

    /// Why the holding was lost, if it was.
    ///
    /// # Examples
    ///
    /// ```
    /// use leasehold::{LockManager, LossCause, ManualClock};
    /// use std::time::Duration;
    /// let clock = ManualClock::new();
    /// let locks = LockManager::<u64>::builder().clock(clock.clone()).build()?;
    /// let g = locks.exclusive(&1).lease(Duration::from_secs(1)).try_acquire().unwrap();
    /// assert_eq!(g.loss_cause(), None);
    /// clock.advance(Duration::from_secs(2));
    /// assert_eq!(g.loss_cause(), Some(LossCause::Expired));
    /// # Ok::<(), leasehold::ConfigError>(())
    /// ```
    pub fn loss_cause(&self) -> Option<LossCause> {
        self.signal().cause()
    }

    /// Until when (a reading of the manager's clock, as [`LockManager::now`](crate::LockManager::now))
    /// the holder may trust that it holds the lock: the deadline set by the last successful
    /// renewal (by the keep-alive renewer or by [`renew`](LockGuard::renew)) or by the acquire,
    /// never later than the lease's real deadline. `None` once the holding is lost, or past that
    /// deadline; `Some(Duration::MAX)` for a holding without a lease (only its guard, or a
    /// revocation, ends it).
    ///
    /// A holder about to act on the lock checks `trusted_for()` against how long the action takes,
    /// and still writes with its fencing token: a pause after the check is not covered.
    ///
    /// # Examples
    ///
    /// ```
    /// use leasehold::{LockManager, ManualClock};
    /// use std::time::Duration;
    /// let clock = ManualClock::new();
    /// let locks = LockManager::<u64>::builder().clock(clock.clone()).build()?;
    /// let g = locks.exclusive(&1).lease(Duration::from_secs(9)).try_acquire().unwrap();
    /// assert_eq!(g.trusted_until(), Some(locks.now() + Duration::from_secs(9)));
    /// clock.advance(Duration::from_secs(9));
    /// assert_eq!(g.trusted_until(), None);
    /// # Ok::<(), leasehold::ConfigError>(())
    /// ```
    pub fn trusted_until(&self) -> Option<Duration> {
        if self.done || self.service.get().is_some_and(|s| s.signal.cause().is_some()) {
            return None;
        }
        let now = self.locks.inner.core.clock.now_ns();
        let rec = self.record();
        let l = rec.lease.load(Ordering::Acquire);
        let token = self.holding.token;
        if rec.token.load(Ordering::Relaxed) != token || lease::tag(l) != lease::tag_of(token) {
            return None;
        }
        match lease::state(l) {
            lease::PLAIN => Some(Duration::MAX),
            lease::HELD if !lease::is_leased(l) => Some(Duration::MAX),
            lease::HELD => {
                let real = lease::deadline_ns(l);
                let renewed = self.service.get().and_then(|s| s.keep_alive.as_ref()).map_or(real, |k| k.trusted_ns());
                let until = real.min(renewed);
                (until > now).then(|| Duration::from_nanos(until))
            }
            _ => None,
        }
    }

    /// How much longer the holder may trust the lock (see [`trusted_until`](LockGuard::trusted_until));
    /// zero once it may not.
    ///
    /// # Examples
    ///
    /// ```
    /// use leasehold::{LockManager, ManualClock};
    /// use std::time::Duration;
    /// let clock = ManualClock::new();
    /// let locks = LockManager::<u64>::builder().clock(clock.clone()).build()?;
    /// let g = locks.exclusive(&1).lease(Duration::from_secs(9)).try_acquire().unwrap();
    /// clock.advance(Duration::from_secs(4));
    /// assert_eq!(g.trusted_for(), Duration::from_secs(5));
    /// # Ok::<(), leasehold::ConfigError>(())
    /// ```
    pub fn trusted_for(&self) -> Duration {
        match self.trusted_until() {
            Some(Duration::MAX) => Duration::MAX,
            Some(until) => until.saturating_sub(Duration::from_nanos(self.locks.inner.core.clock.now_ns())),
            None => Duration::ZERO,
        }
    }

    /// A counter of the keep-alive renewals of this holding that outlives the guard (tests check
    /// that no renewal reaches a released holding). `None` without keep-alive.
    #[doc(hidden)]
    pub fn renewal_counter(&self) -> Option<Arc<AtomicU64>> {
        self.service.get().and_then(|s| s.keep_alive.as_ref()).map(|k| k.renewal_counter())
    }
}

impl<'m, K, S> LockGuard<'m, K, S>
where
    K: Hash + Eq + Send + Sync + 'static,
    S: BuildHasher + Send + Sync + 'static,
{
    /// Starts what the request asked for on a guard just built: the loss signal, and keep-alive
    /// renewals of a leased holding.
    #[cold]
    pub(crate) fn start_service(&self, ask: &ServiceAsk, ttl_ns: Option<u64>) {
        let inner = &self.locks.inner;
        let keep_alive = match (ask.keep_alive, ttl_ns, self.slot.deadline_of(&self.current())) {
            (true, Some(ttl), Some(deadline)) => {
                Some(Arc::new(KeepAlive::new(self.slot, self.holding, self.mode(), ttl, deadline)))
            }
            _ => None,
        };
        let service = self.service.get_or_init(|| Box::new(self.attach(ask.on_lost.clone(), keep_alive)));
        if let Some(k) = &service.keep_alive {
            if service.signal.cause().is_none() {
                Inner::keep_alive(inner, Arc::clone(k));
            }
        }
        if ask.on_lost.is_some() {
            Inner::ensure_service_thread(inner);
        }
    }
}
