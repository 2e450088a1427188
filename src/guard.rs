//! The guard: proof of a holding, and the holder's side of leases.

use std::fmt;
use std::hash::{BuildHasher, Hash};
use std::sync::atomic::AtomicBool;
use std::sync::OnceLock;
use std::time::Duration;

use crate::clock::duration_ns;
use crate::error::LockError;
use crate::events::EventKind;
use crate::manager::{DefaultHasher, LockManager};
use crate::metrics::ShardStats;
use crate::mode::{Mode, Owner};
use crate::request::MAX_TTL;
use crate::service::GuardService;
use crate::slot::{Holding, Lost, RecordRef, Slot};
use crate::sync::Ordering;
use crate::token::FenceToken;

/// A held lock on one key. Dropping it releases the lock; it can be moved to another thread.
///
/// With a lease, the holding is lost at its deadline unless [`renew`](LockGuard::renew)ed: then
/// [`is_held`](LockGuard::is_held) is false, `renew` and `release` return
/// [`LockError::Expired`], and dropping it does nothing.
///
/// # Examples
///
/// ```
/// use leasehold::{LockManager, Mode};
/// use std::time::Duration;
///
/// let locks: LockManager<String> = LockManager::new();
/// let g = locks.exclusive("orders/17").lease(Duration::from_secs(30)).acquire()?;
/// assert_eq!(g.key(), "orders/17");
/// assert_eq!(g.mode(), Mode::Exclusive);
/// g.renew(Duration::from_secs(30))?;
/// assert!(g.is_held());
/// g.release()?;
/// # Ok::<(), leasehold::LockError>(())
/// ```
#[must_use = "dropping the guard releases the lock at once"]
pub struct LockGuard<'m, K, S = DefaultHasher> {
    pub(crate) locks: &'m LockManager<K, S>,
    pub(crate) slot: &'m Slot<K>,
    pub(crate) holding: Holding,
    /// Whether the holding ends through its lease word (a plain holding becomes managed when it
    /// is first renewed).
    managed: AtomicBool,
    /// `Mode::code`; a semaphore's permits are the slot's capacity.
    mode: u8,
    pub(crate) done: bool,
    /// Keep-alive and the loss signal, once asked for (`service.rs`); empty otherwise.
    pub(crate) service: OnceLock<Box<GuardService<K>>>,
}

impl<'m, K, S> LockGuard<'m, K, S> {
    #[inline]
    pub(crate) fn new(locks: &'m LockManager<K, S>, slot: &'m Slot<K>, holding: Holding, mode: Mode) -> Self {
        LockGuard {
            locks,
            slot,
            managed: AtomicBool::new(holding.managed),
            holding,
            mode: mode.code() as u8,
            done: false,
            service: OnceLock::new(),
        }
    }

    #[inline]
    pub(crate) fn current(&self) -> Holding {
        Holding { managed: self.managed.load(std::sync::atomic::Ordering::Relaxed), ..self.holding }
    }

    /// The key this guard holds.
    ///
    /// # Examples
    ///
    /// ```
    /// let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
    /// assert_eq!(*locks.exclusive(&5).try_acquire()?.key(), 5);
    /// # Ok::<(), leasehold::LockError>(())
    /// ```
    pub fn key(&self) -> &K {
        // SAFETY: the slot is pinned for as long as this guard lives: by its units while held, and
        // by the zombie count once an expirer or revoker has ended it (slot.rs).
        unsafe { self.slot.key() }
    }

    /// The mode of this holding.
    ///
    /// # Examples
    ///
    /// ```
    /// use leasehold::{LockManager, Mode};
    /// let locks: LockManager<u64> = LockManager::new();
    /// assert_eq!(locks.shared(&5).try_acquire()?.mode(), Mode::Shared);
    /// # Ok::<(), leasehold::LockError>(())
    /// ```
    pub fn mode(&self) -> Mode {
        Mode::from_code(self.mode as u64, self.slot.capacity.load(Ordering::Relaxed))
    }

    /// The fencing token: strictly greater than every token handed out before for this key.
    ///
    /// # Examples
    ///
    /// ```
    /// let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
    /// let a = locks.shared(&5).try_acquire()?;
    /// let b = locks.shared(&5).try_acquire()?;
    /// assert!(b.token() > a.token());
    /// # Ok::<(), leasehold::LockError>(())
    /// ```
    pub fn token(&self) -> FenceToken {
        FenceToken::from_u64(self.holding.token)
    }

    /// The owner label this holding was acquired with (while it is held).
    ///
    /// # Examples
    ///
    /// ```
    /// let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
    /// assert!(locks.shared(&5).try_acquire()?.owner().is_none());
    /// assert_eq!(locks.shared(&6).owner("etl").try_acquire()?.owner().unwrap().as_str(), "etl");
    /// # Ok::<(), leasehold::LockError>(())
    /// ```
    pub fn owner(&self) -> Option<Owner> {
        if !self.holding.owned {
            return None;
        }
        self.slot.owner_of(&self.holding)
    }

    /// Whether the lock is still held: not released, expired or revoked, and (with a lease) its
    /// deadline has not passed by the manager's clock.
    ///
    /// # Examples
    ///
    /// ```
    /// let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
    /// assert!(locks.exclusive(&5).try_acquire()?.is_held());
    /// # Ok::<(), leasehold::LockError>(())
    /// ```
    pub fn is_held(&self) -> bool {
        !self.done && self.slot.is_held(&self.current(), || self.locks.inner.core.clock.now_ns())
    }

    /// The lease deadline, as a reading of the manager's clock (compare with
    /// [`LockManager::now`]); `None` without a lease or once the holding is gone.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
    /// let g = locks.exclusive(&5).lease(Duration::from_secs(60)).try_acquire()?;
    /// assert!(g.expires_at().unwrap() > locks.now());
    /// # Ok::<(), leasehold::LockError>(())
    /// ```
    pub fn expires_at(&self) -> Option<Duration> {
        self.slot.deadline_of(&self.current()).map(Duration::from_nanos)
    }

    /// Extends the lease to `ttl` from now: one atomic step on the holding's lease word. A holding
    /// acquired without a lease gains one.
    ///
    /// # Errors
    ///
    /// [`LockError::Expired`] if the lease was already lost (its deadline passed, or it was
    /// revoked); [`LockError::InvalidTtl`] for a zero or too long `ttl`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
    /// let g = locks.exclusive(&5).lease(Duration::from_secs(1)).try_acquire()?;
    /// g.renew(Duration::from_secs(60))?;
    /// assert!(g.expires_at().unwrap() > locks.now() + Duration::from_secs(30));
    /// # Ok::<(), leasehold::LockError>(())
    /// ```
    pub fn renew(&self, ttl: Duration) -> Result<(), LockError> {
        if ttl.is_zero() || ttl > MAX_TTL {
            return Err(LockError::InvalidTtl { ttl });
        }
        if self.done {
            return Err(LockError::Expired);
        }
        let core = &self.locks.inner.core;
        let h = self.current();
        let stats = core.stats.of(self.slot.hash.load(Ordering::Relaxed));
        let renewed = if h.managed {
            match self.slot.renew(core, &h, duration_ns(ttl)) {
                Ok(_) => Ok(()),
                Err(Lost::Gone) => Err(LockError::Expired),
                Err(Lost::PastDeadline(now)) => {
                    // Lost even though nobody expired it yet: expire it now, so that release and
                    // expiry agree with this answer.
                    let events = &self.locks.inner.events;
                    let mut si = self.slot.lock();
                    self.slot.force_end(core, h.record, Some(now), Some(h.token), &mut si, &mut |e| {
                        if events.is_active() {
                            // SAFETY: the units are not back yet: the slot is pinned.
                            let key = unsafe { self.slot.key() };
                            events.emit(EventKind::Expired, key, self.mode(), e.token, e.owner.clone(), now);
                        }
                    });
                    Err(LockError::Expired)
                }
            }
        } else {
            let promoted = self.slot.promote(core, &h, duration_ns(ttl)).map_err(|()| LockError::Expired);
            if promoted.is_ok() {
                self.managed.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            promoted.map(drop)
        };
        match renewed {
            Ok(()) => {
                ShardStats::bump(&stats.renewals);
                self.emit(EventKind::Renewed);
            }
            Err(_) => ShardStats::bump(&stats.renew_failures),
        }
        renewed
    }

    /// Sends an event about this holding to subscribers, if any (the holding pins the slot).
    fn emit(&self, kind: EventKind) {
        if let Some(event) = self.prepare(kind) {
            self.locks.inner.events.send(event);
        }
    }

    /// Builds an event about this holding, if anyone listens.
    #[inline]
    fn prepare(&self, kind: EventKind) -> Option<crate::events::LockEvent<K>> {
        let inner = &self.locks.inner;
        if !inner.events.is_active() {
            return None;
        }
        let owner = if self.holding.owned { self.slot.owner_of(&self.holding) } else { None };
        // SAFETY: pinned by this guard (held, or zombie-counted).
        let key = unsafe { self.slot.key() };
        inner.events.prepare(kind, key, self.mode(), self.holding.token, owner, inner.core.clock.now_ns())
    }

    /// Records the hold time of a sampled holding that is about to end (read while still held).
    #[cold]
    #[inline(never)]
    fn record_hold(&self) {
        let core = &self.locks.inner.core;
        let held = core.clock.now_ns().saturating_sub(self.slot.sampled_start(&self.holding));
        core.stats.of(self.slot.hash.load(Ordering::Relaxed)).hold.record(held);
    }

    /// Releases the lock now.
    ///
    /// # Errors
    ///
    /// [`LockError::Expired`] if the lease ran out (and was expired) or the holding was revoked
    /// first: the lock was not held any more, and the unit was given back already.
    ///
    /// # Examples
    ///
    /// ```
    /// let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
    /// locks.exclusive(&5).try_acquire()?.release()?;
    /// assert!(locks.exclusive(&5).try_acquire().is_ok());
    /// # Ok::<(), leasehold::LockError>(())
    /// ```
    pub fn release(mut self) -> Result<(), LockError> {
        self.finish()
    }

    #[inline]
    fn finish(&mut self) -> Result<(), LockError> {
        if let Some(service) = self.service.get() {
            service.before_release(self);
        }
        self.done = true;
        if self.holding.is_sampled() {
            self.record_hold();
        }
        let core = &self.locks.inner.core;
        if let (false, RecordRef::Inline(idx), false) = (
            self.managed.load(std::sync::atomic::Ordering::Relaxed),
            self.holding.record,
            self.locks.inner.events.is_active(),
        ) {
            self.slot.release_plain(core, idx, self.holding.units);
            return Ok(());
        }
        self.finish_slow()
    }

    #[inline(never)]
    fn finish_slow(&mut self) -> Result<(), LockError> {
        let h = self.current();
        // Built while the holding still pins the key; sent only if the release wins.
        let event = self.prepare(EventKind::Released);
        match self.slot.release(&self.locks.inner.core, &h) {
            Ok(()) => {
                if let Some(event) = event {
                    self.locks.inner.events.send(event);
                }
                Ok(())
            }
            Err(()) => {
                // An expirer or revoker ended the holding and counted this guard as a zombie;
                // this is the guard's last touch of the slot. Release: pairs with the
                // reclaimer's Acquire load of the count.
                self.slot.zombies.fetch_sub(1, Ordering::Release);
                Err(LockError::Expired)
            }
        }
    }
}

impl<K, S> Drop for LockGuard<'_, K, S> {
    #[inline]
    fn drop(&mut self) {
        if !self.done {
            let _ = self.finish();
        }
    }
}

impl<K: fmt::Debug, S> fmt::Debug for LockGuard<'_, K, S>
where
    K: Hash + Eq,
    S: BuildHasher,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockGuard")
            .field("key", self.key())
            .field("mode", &self.mode())
            .field("token", &self.token())
            .field("owner", &self.owner())
            .finish()
    }
}
