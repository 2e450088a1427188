//! The mode changes of a guard that keep the holding: the downgrades of an exclusive guard
//! (`LockGuard::downgrade`, `downgrade_to_upgradable`), and the guard rebuilt over a holding an
//! upgrade or a downgrade changed (`LockGuard::changed`). The protocols are the engine's
//! (`engine/upgrade.rs`).

use std::hash::{BuildHasher, Hash};
use std::mem::ManuallyDrop;
use std::sync::Arc;

use crate::api::guard::LockGuard;
use crate::api::upgradable::{ModeChangeFailed, UpgradableGuard};
use crate::engine::holding::{Holding, TOLD};
use crate::engine::upgrade::Upgrade;
use crate::expiry::renewer::KeepAlive;
use crate::observe::events::EventKind;
use crate::vocab::error::LockError;
use crate::vocab::mode::{Mode, MAX_UNITS};

impl<'m, K, S> LockGuard<'m, K, S>
where
    K: Hash + Eq + Send + Sync + 'static,
    S: BuildHasher + Send + Sync + 'static,
{
    /// Exclusive to shared, in one step: no writer can get in between, and the readers queued
    /// ahead of any queued writer get in at once. The token is kept: a downgrade only gives
    /// rights away, so it needs no new fencing token (and sends subscribers no event: the holding
    /// goes on).
    ///
    /// # Errors
    ///
    /// [`LockError::InvalidModeChange`] for a guard that is not exclusive, or on a semaphore key;
    /// [`LockError::Expired`] if the holding was lost. The guard comes back in the error.
    ///
    /// # Examples
    ///
    /// ```
    /// use leasehold::{LockError, LockManager, Mode};
    /// let locks: LockManager<String> = LockManager::new();
    /// let w = locks.exclusive("row/9").try_acquire()?;
    /// let token = w.token();
    /// let r = w.downgrade()?;
    /// assert_eq!((r.mode(), r.token()), (Mode::Shared, token));
    /// let _other = locks.shared("row/9").try_acquire()?;       // readers get in now
    /// let failed = r.downgrade().unwrap_err();                 // only exclusive downgrades
    /// assert!(matches!(failed.error, LockError::InvalidModeChange { .. }));
    /// # Ok::<(), LockError>(())
    /// ```
    pub fn downgrade(self) -> Result<LockGuard<'m, K, S>, ModeChangeFailed<Self>> {
        self.downgrade_to(Mode::Shared)
    }

    /// Exclusive to upgradable, in one step (as [`downgrade`](LockGuard::downgrade)): readers may
    /// join, no writer or other upgradable holder can, and the guard can upgrade again.
    ///
    /// # Errors
    ///
    /// As [`downgrade`](LockGuard::downgrade).
    ///
    /// # Examples
    ///
    /// ```
    /// let locks: leasehold::LockManager<String> = leasehold::LockManager::new();
    /// let w = locks.exclusive("row/9").try_acquire()?;
    /// let u = w.downgrade_to_upgradable()?;
    /// assert_eq!(u.mode(), leasehold::Mode::Upgradable);
    /// assert!(locks.shared("row/9").try_acquire().is_ok());
    /// assert!(locks.upgradable("row/9").try_acquire().is_err());
    /// # Ok::<(), leasehold::LockError>(())
    /// ```
    pub fn downgrade_to_upgradable(self) -> Result<UpgradableGuard<'m, K, S>, ModeChangeFailed<Self>> {
        self.downgrade_to(Mode::Upgradable).map(UpgradableGuard::new)
    }

    fn downgrade_to(self, to: Mode) -> Result<LockGuard<'m, K, S>, ModeChangeFailed<Self>> {
        let (locks, slot) = self.place();
        let from = self.mode();
        if from != Mode::Exclusive || slot.capacity.load(crate::primitives::sync::Ordering::Relaxed) != MAX_UNITS {
            return Err(ModeChangeFailed { guard: self, error: LockError::InvalidModeChange { from, to } });
        }
        let core = &locks.table.core;
        let h = self.current();
        let mut inner = slot.lock();
        match slot.downgrade_locked(core, &h, to, &mut inner) {
            Ok(h) => {
                drop(inner);
                Ok(self.changed(h))
            }
            Err(Upgrade::PastDeadline(now)) => {
                drop(inner);
                self.expire_own(&h, now);
                Err(ModeChangeFailed { guard: self, error: LockError::Expired })
            }
            Err(_) => {
                drop(inner);
                Err(ModeChangeFailed { guard: self, error: LockError::Expired })
            }
        }
    }
}

impl<'m, K, S> LockGuard<'m, K, S>
where
    K: Hash + Eq + Send + Sync + 'static,
    S: BuildHasher + Send + Sync + 'static,
{
    /// The same guard over its changed holding `h` (an upgrade or a downgrade, done under the slot
    /// lock), without releasing anything. It keeps its loss signal (re-keyed already, see
    /// `rekey_signal`); after an upgrade (a new token) its keep-alive moves to the new holding,
    /// with the same TTL and the deadline it had, and subscribers hear `Released` for the
    /// upgradable holding and `Acquired` for the exclusive one.
    pub(crate) fn changed(self, h: Holding) -> LockGuard<'m, K, S> {
        let this = ManuallyDrop::new(self);
        let service = this.take_service();
        let (locks, slot) = this.place();
        let old = this.token().as_u64();
        // Marked `TOLD` if anyone listens now, as `emit_acquired` marks a new holding.
        let listening = locks.events.is_active();
        let h = if listening { Holding { bits: h.bits | TOLD, ..h } } else { h };
        let guard = LockGuard::new(locks, slot, h);
        if h.token != old && listening {
            // An upgrade ends one holding and begins another, for fencing and for subscribers.
            let owner = guard.owner();
            locks.emit(EventKind::Released, slot, old, Mode::Upgradable, owner.clone());
            locks.emit(EventKind::Acquired, slot, h.token, Mode::Exclusive, owner);
        }
        if let Some(mut service) = service {
            if h.token != old {
                if let Some(k) = service.keep_alive.take() {
                    k.close();
                    let renewed = slot.deadline_of(&h).map(|deadline| {
                        Arc::new(KeepAlive::new(
                            slot,
                            h,
                            Mode::from_code(h.mode_code(), MAX_UNITS),
                            k.ttl_ns(),
                            deadline,
                        ))
                    });
                    if let Some(k) = &renewed {
                        locks.keep_alive(Arc::clone(k));
                    }
                    service.keep_alive = renewed;
                }
            }
            let _ = guard.service_cell().set(service);
        }
        guard
    }
}
