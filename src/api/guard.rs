//! The guard: proof of a holding, and the holder's side of leases.

use crate::primitives::sync::untracked::{AtomicU64, Ordering as UntrackedOrdering};
use std::fmt;
use std::hash::{BuildHasher, Hash};
use std::mem::ManuallyDrop;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::api::loss::{LossCause, LossSignal, Lost};
use crate::api::service::{GuardService, HoldingRef, ServiceAsk, ServiceCell};

use crate::api::state::State;
use crate::engine::holding::{
    Holding, RecordPtr, HOLDER_MARK, IN_OVERFLOW, MANAGED, MODE_BITS, OWNED, SAMPLED, TOLD, UP_HELD,
};
use crate::engine::lease::MAX_TTL;
use crate::engine::slot::{AlreadyEnded, Ending, Lost as NotRenewed, Slot};
use crate::engine::table::DefaultHasher;
use crate::observe::events::EventKind;
use crate::primitives::clock::duration_ns;
use crate::primitives::counters::ShardStats;
use crate::primitives::sync::Ordering;
use crate::vocab::error::LockError;
use crate::vocab::mode::{Mode, Owner};
use crate::vocab::token::FenceToken;

mod release;

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
    locks: &'m State<K, S>,
    slot: &'m Slot<K>,
    // The holding, as whole words (`Holding`): no narrow field, so a guard returned through memory
    // is stored and loaded back with stores that forward (bench/PERF-PLAN.md, P1).
    rec: RecordPtr,
    token: u64,
    /// `Holding::bits` (mode, units, record, managed, owned) as the claim made them: a plain word,
    /// so that a guard the caller inlines keeps it in a register and its release's tests fold.
    bits: u64,
    /// Bits of `Holding::bits` gained later, through `&self` (hence atomic): `MANAGED` (and a bare
    /// holding's record bit) when a plain holding is first renewed (promoted), `HOLDER_MARK`
    /// (`HAS_SERVICE`) once `service` is set. The holding is `bits | late` (`current`); the
    /// release tests both at once.
    late: AtomicU64,
    /// Keep-alive and the loss signal, once asked for (`service.rs`): one word, no drop glue.
    service: ServiceCell<K>,
}

/// `bits`: the guard has a `service` to end before its release (the bit `Holding` leaves to its
/// holder).
const HAS_SERVICE: u64 = HOLDER_MARK;

impl<'m, K, S> LockGuard<'m, K, S> {
    /// Takes the guard's service out (a guard being replaced by one over its changed holding,
    /// `downgrade.rs`), leaving it with none.
    pub(crate) fn take_service(&self) -> Option<GuardService<K>> {
        self.service.take().and_then(|cell| cell.into_inner())
    }

    #[inline(always)]
    pub(crate) fn new(locks: &'m State<K, S>, slot: &'m Slot<K>, holding: Holding) -> Self {
        LockGuard {
            locks,
            slot,
            rec: holding.rec,
            token: holding.token,
            bits: holding.bits,
            late: AtomicU64::new(0),
            service: ServiceCell::new(),
        }
    }

    /// The service, if one was asked for and set up.
    fn service(&self) -> Option<&GuardService<K>> {
        self.service.get()
    }

    /// The service's cell, installing an empty one on first use.
    #[cold]
    pub(crate) fn service_cell(&self) -> &OnceLock<GuardService<K>> {
        let (cell, installed) = self.service.get_or_install();
        if installed {
            // Before the guard's release reads it: that release has `self` to itself, so every
            // `&self` call (this one) happened before it.
            self.late.fetch_or(HAS_SERVICE, UntrackedOrdering::Relaxed);
        }
        cell
    }

    #[inline(always)]
    pub(crate) fn current(&self) -> Holding {
        Holding { rec: self.rec, token: self.token, bits: self.bits | self.late.load(UntrackedOrdering::Relaxed) }
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
        Mode::from_code(self.current().mode_code(), self.slot.capacity.load(Ordering::Relaxed))
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
        FenceToken::from_u64(self.token)
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
        let h = self.current();
        if !h.owned() {
            return None;
        }
        self.slot.owner_of(&h)
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
        self.slot.is_held(&self.current(), || self.locks.table.core.clock.now_ns())
    }

    /// The lease deadline, as a reading of the manager's clock (compare with
    /// [`LockManager::now`](crate::LockManager::now)); `None` without a lease or once the holding is gone.
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
        let core = &self.locks.table.core;
        let h = self.current();
        let stats = core.stats.of(self.slot.hash.load(Ordering::Relaxed));
        let renewed = if h.managed() {
            match self.slot.renew(core, &h, duration_ns(ttl)) {
                Ok(_) => Ok(()),
                Err(NotRenewed::Gone) => Err(LockError::Expired),
                Err(NotRenewed::PastDeadline(now)) => {
                    // Lost even though nobody expired it yet: expire it now, so that release and
                    // expiry agree with this answer.
                    self.expire_own(&h, now);
                    Err(LockError::Expired)
                }
            }
        } else {
            match self.slot.promote(core, &h, duration_ns(ttl)) {
                Ok(_) => {
                    // A bare holding took record 0 (`Slot::promote`): its release returns that too.
                    let took = if h.is_bare() { Holding::RECORD_ZERO } else { 0 };
                    self.late.fetch_or(MANAGED | took, UntrackedOrdering::Relaxed);
                    Ok(())
                }
                // Another thread's renew of this guard promoted it first: renew the managed
                // holding (it fails only if the holding is really gone or past its deadline).
                Err(AlreadyEnded) => match self.slot.renew(core, &h.as_managed(), duration_ns(ttl)) {
                    Ok(_) => Ok(()),
                    Err(NotRenewed::Gone) => Err(LockError::Expired),
                    Err(NotRenewed::PastDeadline(now)) => {
                        self.expire_own(&h.as_managed(), now);
                        Err(LockError::Expired)
                    }
                },
            }
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

    fn holding_ref(&self) -> HoldingRef<'_, K, S> {
        HoldingRef { state: self.locks, slot: self.slot, holding: self.current() }
    }

    /// The holding's loss signal, attaching one on first use.
    fn signal(&self) -> &Arc<LossSignal> {
        &self.service_cell().get_or_init(|| self.holding_ref().attach(None, None)).signal
    }

    /// The holding's loss signal, shared (for the election board).
    pub(crate) fn loss_signal(&self) -> Arc<LossSignal> {
        self.signal();
        Arc::clone(self.signal())
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
    /// never later than the lease's real deadline. `None` once the holding is lost or released, or
    /// past that deadline; `Some(Duration::MAX)` for a holding without a lease (only its guard,
    /// or a revocation, ends it).
    ///
    /// A holder about to act on the lock checks [`trusted_for`](LockGuard::trusted_for) against
    /// how long the action takes, and still writes with its fencing token: a pause after the check
    /// is not covered.
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
        self.holding_ref().trusted_until(self.service()).map(|ns| match ns {
            u64::MAX => Duration::MAX,
            ns => Duration::from_nanos(ns),
        })
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
            Some(until) => until.saturating_sub(Duration::from_nanos(self.holding_ref().now_ns())),
            None => Duration::ZERO,
        }
    }

    /// A counter of the keep-alive renewals of this holding that outlives the guard (tests check
    /// that no renewal reaches a released holding). `None` without keep-alive.
    #[doc(hidden)]
    pub fn renewal_counter(&self) -> Option<Arc<std::sync::atomic::AtomicU64>> {
        self.service().and_then(|s| s.keep_alive.as_ref()).map(|k| k.renewal_counter())
    }

    /// Ends this guard's own holding as an expiry: its deadline passed at `now` though nobody
    /// expired it yet (event and metrics as the reaper's). The guard is then a zombie.
    #[cold]
    pub(crate) fn expire_own(&self, h: &Holding, now: u64) {
        let core = &self.locks.table.core;
        let events = &self.locks.events;
        let mut si = self.slot.lock();
        self.slot.force_end(core, h.record(), Ending::Expiry { now, token: Some(h.token) }, &mut si, &mut |e| {
            // Before the units go back, as every ender does (loss.rs). A release detached its
            // signal first, so only a renewal that found the deadline passed fires it here.
            self.locks.losses.holding_ended(self.slot as *const Slot<K> as usize, e.token, true);
            if events.is_active() {
                // SAFETY: the units are not back yet: the slot is pinned.
                let key = unsafe { self.slot.key() };
                events.emit(EventKind::Expired, key, self.mode(), e.token, e.owner.clone(), now);
            }
        });
    }

    /// The manager state and slot this guard works on.
    pub(crate) fn place(&self) -> (&'m State<K, S>, &'m Slot<K>) {
        (self.locks, self.slot)
    }

    /// Moves the holding's loss signal (if one is attached) from `old` to the token of an
    /// upgraded holding. Called under the slot lock, so no ender looks for it in between.
    pub(crate) fn rekey_signal(&self, old: u64, new: u64) {
        if self.service.get().is_some() {
            self.locks.losses.rekey(self.slot as *const Slot<K> as usize, old, new);
        }
    }

    /// Sends an event about this holding to subscribers, if any (the holding pins the slot).
    fn emit(&self, kind: EventKind) {
        if let Some(event) = self.prepare(kind) {
            self.locks.events.send(event);
        }
    }

    /// Builds an event about this holding, if anyone listens.
    #[inline]
    fn prepare(&self, kind: EventKind) -> Option<crate::observe::events::LockEvent<K>> {
        let inner = self.locks;
        if !inner.events.is_active() {
            return None;
        }
        let h = self.current();
        let owner = if h.owned() { self.slot.owner_of(&h) } else { None };
        // SAFETY: pinned by this guard (held, or zombie-counted).
        let key = unsafe { self.slot.key() };
        inner.events.prepare(kind, key, self.mode(), self.token, owner, inner.table.core.clock.now_ns())
    }

    /// Records the hold time of a sampled holding that is about to end (read while still held).
    #[cold]
    #[inline(never)]
    fn record_hold(&self) {
        let core = &self.locks.table.core;
        let held = core.clock.now_ns().saturating_sub(self.slot.sampled_start(&self.current()));
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
    pub fn release(self) -> Result<(), LockError> {
        // `finish` is the guard's last act on the lock (and frees what the guard owns besides,
        // keep-alive and loss signal): no drop after it.
        ManuallyDrop::new(self).finish().map_err(|AlreadyEnded| LockError::Expired)
    }

    /// Ends the holding; called once, by `release` or `drop`. `Err` if an expirer or revoker
    /// ended it first. (Not a `LockError`: its drop glue, inlined into `drop`, made the guard's
    /// drop too big to inline into a caller's loop.)
    #[inline(always)]
    fn finish(&mut self) -> Result<(), AlreadyEnded> {
        // The guard is ours alone here (`&mut`): its late bits are read as a plain word, so that
        // a guard kept in registers has its whole holding as constants and the tests below fold.
        let h = Holding { rec: self.rec, token: self.token, bits: self.bits | *self.late.get_mut() };
        // A plain holding, bare or in an inline record, not upgradable, no service, not sampled,
        // whose start no subscriber heard of (`TOLD`): one store and one compare-exchange from the
        // word its claim installed (`Slot::release_plain`), or its fallback. (One call out of line
        // for all the rest keeps this small; the mask is one constant.) A subscriber hears the end
        // of every holding it heard begin; of one that began before anyone listened, only if it
        // ends on the slow path (`subscribe`).
        if h.bits & (MANAGED | IN_OVERFLOW | HAS_SERVICE | UP_HELD | SAMPLED | TOLD) == 0 && self.slot.release_plain(&h)
        {
            return Ok(());
        }
        // Out of line on a copy of the guard, built field by field: a guard lent (`&self`) to a
        // call out of line would have to live in memory, and the fast path above would read it
        // back from there (bench/perf5-hotpath.md). `finish` is the guard's last act (called once,
        // by `release` or `drop`, and its fields have no drop glue), so the copy, which takes
        // over the service's box, is the only one used from here on.
        Self::finish_moved(self.locks, self.slot, self.rec, self.token, h.bits, self.service.moved())
    }

    /// `finish_slow` on the copy `finish` made (its late bits folded into `bits`).
    #[cold]
    #[inline(never)]
    fn finish_moved(
        locks: &'m State<K, S>,
        slot: &'m Slot<K>,
        rec: RecordPtr,
        token: u64,
        bits: u64,
        service: *mut OnceLock<GuardService<K>>,
    ) -> Result<(), AlreadyEnded> {
        // An exclusive lease (no owner, inline, not sampled, its start untold, its deadline
        // ahead): one compare-exchange on the word, before any guard is built in memory
        // (bench/perf5-lease.md, Phase 7). Anything else, or a compare-exchange lost, goes on.
        // As for a plain holding, `TOLD` stands for the event flag: subscribers hear the end of
        // the holdings whose start they heard (`subscribe`).
        if bits & (MANAGED | OWNED | IN_OVERFLOW | HAS_SERVICE | UP_HELD | SAMPLED | TOLD | MODE_BITS) == MANAGED
            && slot.try_release_exclusive_lease(&locks.table.core, &Holding { rec, token, bits })
        {
            return Ok(());
        }
        let g =
            LockGuard { locks, slot, rec, token, bits, late: AtomicU64::new(0), service: ServiceCell::owning(service) };
        let ended = g.finish_slow();
        // Finished: no drop.
        std::mem::forget(g);
        ended
    }
}

impl<K, S> LockGuard<'_, K, S>
where
    K: Hash + Eq + Send + Sync + 'static,
    S: BuildHasher + Send + Sync + 'static,
{
    /// Starts what the request asked for (keep-alive, `on_lost`) on a guard just built.
    #[cold]
    pub(crate) fn start_service(&self, ask: &ServiceAsk, ttl_ns: Option<u64>) {
        let service = self.holding_ref().start(ask, ttl_ns, self.mode());
        // A fresh guard's cell is empty: nobody else could have asked yet.
        let _ = self.service_cell().set(service);
    }
}

impl<K, S> Drop for LockGuard<'_, K, S> {
    #[inline(always)]
    fn drop(&mut self) {
        let _ = self.finish();
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
