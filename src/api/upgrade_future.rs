//! The async upgrade of an upgradable guard: the same steps as the blocking upgrade
//! (`upgradable.rs`), with a task waiter as the slot's upgrader.

#![deny(unsafe_code)]

use std::fmt;
use std::future::Future;
use std::hash::{BuildHasher, Hash};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use crate::api::future::arm_holder_timer;
use crate::api::guard::LockGuard;
use crate::api::upgradable::{ModeChangeFailed, UpgradableGuard};
use crate::engine::queue::Waiter;
use crate::engine::table::DefaultHasher;
use crate::engine::upgrade::Upgrade;
use crate::primitives::sync::Arc;

/// The future of [`UpgradableGuard::upgrade_async`]: resolves to the exclusive guard, or to the
/// upgradable guard back with the reason it could not upgrade.
///
/// # Cancel safety
///
/// Dropping it before it completes gives up the pending upgrade: the readers it held back may
/// claim again, and they are woken. The upgradable guard it owns is dropped with it, which
/// releases the upgradable holding (as async-lock's upgrade future does); to keep the guard past
/// a time limit, use [`UpgradableGuard::upgrade_timeout`].
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), leasehold::LockError> {
/// use leasehold::{LockError, LockManager};
/// let locks: LockManager<String> = LockManager::new();
/// let u = locks.upgradable("row/9").try_acquire()?;
/// let reader = locks.shared("row/9").try_acquire()?;
/// let upgrade = u.upgrade_async();
/// // Dropped while it waits for the reader (here: never polled to the end): the upgrade is given up.
/// drop(upgrade);
/// assert!(locks.shared("row/9").try_acquire().is_ok());
/// drop(reader);
/// let w = locks.upgradable("row/9").try_acquire()?.upgrade_async().await?;
/// assert_eq!(locks.shared("row/9").try_acquire().unwrap_err(), LockError::WouldBlock);
/// # drop(w);
/// # Ok(())
/// # }
/// ```
#[must_use = "futures do nothing unless polled"]
pub struct UpgradeFuture<'m, K, S = DefaultHasher> {
    guard: Option<UpgradableGuard<'m, K, S>>,
    waiter: Option<Arc<Waiter>>,
    /// The holder deadline the process timer is armed for, and the instant it fires.
    timer: Option<(u64, Instant)>,
}

impl<K, S> fmt::Debug for UpgradeFuture<'_, K, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpgradeFuture").field("waiting", &self.waiter.is_some()).finish_non_exhaustive()
    }
}

// No self-references.
impl<K, S> Unpin for UpgradeFuture<'_, K, S> {}

impl<'m, K, S> UpgradableGuard<'m, K, S>
where
    K: Hash + Eq + Send + Sync + 'static,
    S: BuildHasher + Send + Sync + 'static,
{
    /// A future that becomes exclusive (as [`upgrade`](UpgradableGuard::upgrade)), on any
    /// executor.
    ///
    /// # Cancel safety
    ///
    /// See [`UpgradeFuture`]: a dropped future clears the pending upgrade and wakes the readers it
    /// held back; the upgradable holding is released with it.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), leasehold::LockError> {
    /// let locks: leasehold::LockManager<String> = leasehold::LockManager::new();
    /// let u = locks.upgradable("row/9").acquire_async().await?;
    /// let w = u.upgrade_async().await?;
    /// assert!(locks.shared("row/9").try_acquire().is_err());
    /// # drop(w);
    /// # Ok(())
    /// # }
    /// ```
    pub fn upgrade_async(self) -> UpgradeFuture<'m, K, S> {
        UpgradeFuture { guard: Some(self), waiter: None, timer: None }
    }
}

impl<'m, K, S> UpgradeFuture<'m, K, S>
where
    K: Hash + Eq + Send + Sync + 'static,
    S: BuildHasher + Send + Sync + 'static,
{
    /// Gives up the pending upgrade (if any) and takes the guard back, unchanged (a session's
    /// deadlock abort, `session_upgrade.rs`).
    pub(crate) fn withdraw(&mut self) -> Option<UpgradableGuard<'m, K, S>> {
        let guard = self.guard.take()?;
        if let Some(waiter) = self.waiter.take() {
            let (_, slot) = guard.place();
            let mut inner = slot.lock();
            slot.cancel_upgrade(&waiter, &mut inner);
        }
        Some(guard)
    }
}

impl<'m, K, S> Future for UpgradeFuture<'m, K, S>
where
    K: Hash + Eq + Send + Sync + 'static,
    S: BuildHasher + Send + Sync + 'static,
{
    type Output = Result<LockGuard<'m, K, S>, ModeChangeFailed<UpgradableGuard<'m, K, S>>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let Some(guard) = this.guard.as_ref() else {
            panic!("UpgradeFuture polled after it completed");
        };
        let (locks, slot) = guard.place();
        let waiter = this
            .waiter
            .get_or_insert_with(|| Waiter::for_upgrade(Some(cx.waker().clone()), locks.table.core.clock.now_ns()));
        // The waker first: a release that notifies after the step below wakes this task.
        waiter.set_waker(cx.waker());
        loop {
            let mut inner = slot.lock();
            match guard.step(&mut inner, Some(waiter)) {
                Upgrade::Busy => {
                    let earliest = slot.earliest_deadline(&inner);
                    drop(inner);
                    if arm_holder_timer(locks, earliest, &mut this.timer, cx.waker()) {
                        return Poll::Pending;
                    }
                    // A holder came due: look again (the step expires it).
                }
                Upgrade::Done(h) => {
                    drop(inner);
                    this.waiter = None;
                    let Some(guard) = this.guard.take() else { unreachable!("checked above") };
                    return Poll::Ready(Ok(guard.into_inner().changed(h)));
                }
                refused => {
                    drop(inner);
                    this.waiter = None;
                    let Some(guard) = this.guard.take() else { unreachable!("checked above") };
                    return Poll::Ready(Err(guard.refused(refused)));
                }
            }
        }
    }
}

impl<K, S> Drop for UpgradeFuture<'_, K, S> {
    fn drop(&mut self) {
        if let (Some(guard), Some(waiter)) = (&self.guard, self.waiter.take()) {
            let (_, slot) = guard.place();
            let mut inner = slot.lock();
            // Clears `UPGRADING` and wakes the readers it held back; the guard drops after this.
            slot.cancel_upgrade(&waiter, &mut inner);
        }
    }
}
