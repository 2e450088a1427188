//! Upgradable locks of a session: `session.upgradable(key)`, and the upgrades and downgrades of a
//! session's guard, whose waits enter the wait-for graph (`detector.rs`). An upgrade waits for
//! every other session holding the key in a mode exclusive conflicts with (not for its own
//! upgradable holding), and readers queued behind it wait for it as for a queued writer.

#![deny(unsafe_code)]

use std::borrow::Borrow;
use std::fmt;
use std::future::Future;
use std::hash::{BuildHasher, Hash};
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use crate::api::guard::LockGuard;
use crate::api::session::{Session, SessionGuard, SessionRequest, ThreadWaker};
use crate::api::upgradable::{ModeChangeFailed, UpgradableGuard};
use crate::api::upgrade_future::UpgradeFuture;
use crate::engine::table::DefaultHasher;
use crate::vocab::error::LockError;
use crate::vocab::mode::Mode;

impl<'m, K, S> Session<'m, K, S>
where
    K: Hash + Eq + Clone + fmt::Debug + Send + Sync + 'static,
    S: BuildHasher + Send + Sync + 'static,
{
    /// An upgradable request for `key`, on behalf of this session: beside readers, alone among
    /// writers and upgradables; its guard can [`upgrade`](SessionGuard::upgrade), and that wait
    /// takes part in deadlock detection.
    ///
    /// # Examples
    ///
    /// ```
    /// let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
    /// let tx = locks.session("t");
    /// let u = tx.upgradable(&1).try_acquire()?;
    /// let w = u.upgrade()?;
    /// assert_eq!(w.mode(), leasehold::Mode::Exclusive);
    /// # Ok::<(), leasehold::LockError>(())
    /// ```
    pub fn upgradable<'s, 'q, Q>(&'s self, key: &'q Q) -> SessionRequest<'s, 'm, 'q, K, Q, S>
    where
        K: Borrow<Q> + From<Q::Owned>,
        Q: ?Sized + Hash + Eq + ToOwned,
    {
        SessionRequest::new(self, key, Mode::Upgradable, None)
    }
}

impl<'s, 'm, K, S> SessionGuard<'s, 'm, K, S>
where
    K: Hash + Eq + Clone + fmt::Debug + Send + Sync + 'static,
    S: BuildHasher + Send + Sync + 'static,
{
    /// The wrapped guard, taken out (the session guard is then empty until `put` fills it).
    fn take(&mut self) -> LockGuard<'m, K, S> {
        match self.guard.take() {
            Some(g) => g,
            None => unreachable!("the guard is taken only by release, drop and a mode change"),
        }
    }

    fn put(mut self, guard: LockGuard<'m, K, S>, mode: Option<Mode>) -> Self {
        if let Some(mode) = mode {
            self.session.state.set_mode(self.id, mode);
        }
        self.guard = Some(guard);
        self
    }

    fn refuse(mut self, guard: LockGuard<'m, K, S>, error: LockError) -> ModeChangeFailed<Self> {
        self.guard = Some(guard);
        ModeChangeFailed { guard: self, error }
    }

    /// Upgrades an upgradable holding of the session to exclusive if no other holder is in the
    /// way now; never waits.
    ///
    /// # Errors
    ///
    /// As [`UpgradableGuard::try_upgrade`]; [`LockError::InvalidModeChange`] if this guard is not
    /// upgradable. The guard comes back in the error.
    ///
    /// # Examples
    ///
    /// ```
    /// let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
    /// let tx = locks.session("t");
    /// let r = tx.shared(&1).try_acquire()?;
    /// let failed = r.try_upgrade().unwrap_err();      // only an upgradable guard upgrades
    /// assert!(matches!(failed.error, leasehold::LockError::InvalidModeChange { .. }));
    /// # Ok::<(), leasehold::LockError>(())
    /// ```
    pub fn try_upgrade(mut self) -> Result<Self, ModeChangeFailed<Self>> {
        let from = self.mode();
        if from != Mode::Upgradable {
            return Err(ModeChangeFailed {
                guard: self,
                error: LockError::InvalidModeChange { from, to: Mode::Exclusive },
            });
        }
        let u = UpgradableGuard::new(self.take());
        match u.try_upgrade() {
            Ok(w) => Ok(self.put(w, Some(Mode::Exclusive))),
            Err(failed) => Err(self.refuse(failed.guard.into_inner(), failed.error)),
        }
    }

    /// Upgrades an upgradable holding of the session to exclusive, waiting for the readers
    /// present. The wait enters the wait-for graph: if it would close a cycle of sessions and
    /// this session is the victim, it fails with [`LockError::Deadlock`] and the guard comes
    /// back, still upgradable.
    ///
    /// # Errors
    ///
    /// [`LockError::Deadlock`], those of [`UpgradableGuard::upgrade`], and
    /// [`LockError::InvalidModeChange`] if this guard is not upgradable.
    ///
    /// # Examples
    ///
    /// ```
    /// let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
    /// let tx = locks.session("t");
    /// let w = tx.upgradable(&1).acquire()?.upgrade()?;
    /// assert_eq!(w.mode(), leasehold::Mode::Exclusive);
    /// # Ok::<(), leasehold::LockError>(())
    /// ```
    pub fn upgrade(self) -> Result<Self, ModeChangeFailed<Self>> {
        self.upgrade_until(None)
    }

    /// As [`upgrade`](SessionGuard::upgrade), waiting at most `timeout`.
    ///
    /// # Errors
    ///
    /// [`LockError::TimedOut`], and those of [`upgrade`](SessionGuard::upgrade).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
    /// let (a, b) = (locks.session("a"), locks.session("b"));
    /// let u = a.upgradable(&1).try_acquire()?;
    /// let _r = b.shared(&1).try_acquire()?;
    /// let failed = u.upgrade_timeout(Duration::from_millis(5)).unwrap_err();
    /// assert_eq!(failed.error, leasehold::LockError::TimedOut);
    /// assert_eq!(failed.guard.mode(), leasehold::Mode::Upgradable);
    /// # Ok::<(), leasehold::LockError>(())
    /// ```
    pub fn upgrade_timeout(self, timeout: Duration) -> Result<Self, ModeChangeFailed<Self>> {
        let deadline =
            Instant::now().checked_add(timeout).unwrap_or_else(|| Instant::now() + Duration::from_secs(1 << 30));
        self.upgrade_until(Some(deadline))
    }

    fn upgrade_until(mut self, deadline: Option<Instant>) -> Result<Self, ModeChangeFailed<Self>> {
        let from = self.mode();
        if from != Mode::Upgradable {
            return Err(ModeChangeFailed {
                guard: self,
                error: LockError::InvalidModeChange { from, to: Mode::Exclusive },
            });
        }
        // Uncontended: no graph.
        let u = match UpgradableGuard::new(self.take()).try_upgrade() {
            Ok(w) => return Ok(self.put(w, Some(Mode::Exclusive))),
            Err(ModeChangeFailed { guard, error: LockError::WouldBlock }) => guard,
            Err(failed) => return Err(self.refuse(failed.guard.into_inner(), failed.error)),
        };
        let state = &self.session.state;
        let seq = match self.session.locks.detector.begin_wait(state, u.key().clone(), Mode::Exclusive, Some(self.id)) {
            Ok(seq) => seq,
            Err(e) => return Err(self.refuse(u.into_inner(), e)),
        };
        let mut fut = u.upgrade_async();
        let waker = Waker::from(std::sync::Arc::new(ThreadWaker(std::thread::current())));
        let mut cx = Context::from_waker(&waker);
        loop {
            // The waker first, so an abort set after this check wakes us.
            if let Some(cycle) = state.set_waker(seq, &waker) {
                let guard = fut.withdraw().map(UpgradableGuard::into_inner);
                return Err(self.refuse_withdrawn(guard, LockError::Deadlock { cycle }));
            }
            match Pin::new(&mut fut).poll(&mut cx) {
                Poll::Ready(Ok(w)) => {
                    return match state.end_wait(seq) {
                        None => Ok(self.put(w, Some(Mode::Exclusive))),
                        // Chosen as a victim just as the upgrade came: the abort wins, and the
                        // guard goes back to upgradable in one step (its token stays larger).
                        Some(cycle) => {
                            let guard = match w.downgrade_to_upgradable() {
                                Ok(u) => u.into_inner(),
                                Err(failed) => failed.guard,
                            };
                            Err(self.refuse(guard, LockError::Deadlock { cycle }))
                        }
                    };
                }
                Poll::Ready(Err(failed)) => {
                    state.end_wait(seq);
                    return Err(self.refuse(failed.guard.into_inner(), failed.error));
                }
                Poll::Pending => {}
            }
            match deadline {
                None => std::thread::park(),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        state.end_wait(seq);
                        let guard = fut.withdraw().map(UpgradableGuard::into_inner);
                        return Err(self.refuse_withdrawn(guard, LockError::TimedOut));
                    }
                    std::thread::park_timeout(d - now);
                }
            }
        }
    }

    /// As [`upgrade`](SessionGuard::upgrade), as a future on any executor.
    ///
    /// # Cancel safety
    ///
    /// Dropping it before it completes withdraws the wait from the graph and gives up the
    /// pending upgrade (the readers it held back proceed); the guard it owns is dropped with it,
    /// which releases the upgradable holding (as [`UpgradableGuard::upgrade_async`]).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), leasehold::LockError> {
    /// let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
    /// let tx = locks.session("t");
    /// let u = tx.upgradable(&1).acquire_async().await?;
    /// let w = u.upgrade_async().await?;
    /// assert_eq!(w.mode(), leasehold::Mode::Exclusive);
    /// # Ok(())
    /// # }
    /// ```
    pub fn upgrade_async(self) -> SessionUpgrade<'s, 'm, K, S> {
        SessionUpgrade { guard: Some(self), state: UpgradeState::Start }
    }

    /// `refuse` with the guard a withdrawn future gave back (it always has one while pending).
    fn refuse_withdrawn(self, guard: Option<LockGuard<'m, K, S>>, error: LockError) -> ModeChangeFailed<Self> {
        match guard {
            Some(g) => self.refuse(g, error),
            None => unreachable!("a pending upgrade future owns its guard"),
        }
    }

    /// Downgrades an exclusive holding of the session to shared (as [`LockGuard::downgrade`]).
    ///
    /// # Errors
    ///
    /// As [`LockGuard::downgrade`].
    ///
    /// # Examples
    ///
    /// ```
    /// let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
    /// let tx = locks.session("t");
    /// let r = tx.exclusive(&1).try_acquire()?.downgrade()?;
    /// assert_eq!(r.mode(), leasehold::Mode::Shared);
    /// assert!(locks.shared(&1).try_acquire().is_ok());
    /// # Ok::<(), leasehold::LockError>(())
    /// ```
    pub fn downgrade(self) -> Result<Self, ModeChangeFailed<Self>> {
        self.downgrade_to(Mode::Shared)
    }

    /// Downgrades an exclusive holding of the session to upgradable (as
    /// [`LockGuard::downgrade_to_upgradable`]).
    ///
    /// # Errors
    ///
    /// As [`LockGuard::downgrade`].
    ///
    /// # Examples
    ///
    /// ```
    /// let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
    /// let tx = locks.session("t");
    /// let u = tx.exclusive(&1).try_acquire()?.downgrade_to_upgradable()?;
    /// assert_eq!(u.mode(), leasehold::Mode::Upgradable);
    /// let w = u.upgrade()?;
    /// # Ok::<(), leasehold::LockError>(())
    /// ```
    pub fn downgrade_to_upgradable(self) -> Result<Self, ModeChangeFailed<Self>> {
        self.downgrade_to(Mode::Upgradable)
    }

    fn downgrade_to(mut self, to: Mode) -> Result<Self, ModeChangeFailed<Self>> {
        let from = self.mode();
        if from != Mode::Exclusive {
            return Err(ModeChangeFailed { guard: self, error: LockError::InvalidModeChange { from, to } });
        }
        // The list first: it may claim less than the holding has for a moment, never more (a
        // reported cycle stays real).
        self.session.state.set_mode(self.id, to);
        let w = self.take();
        let changed = match to {
            Mode::Upgradable => w.downgrade_to_upgradable().map(UpgradableGuard::into_inner),
            _ => w.downgrade(),
        };
        match changed {
            Ok(g) => Ok(self.put(g, None)),
            Err(failed) => {
                self.session.state.set_mode(self.id, from);
                Err(self.refuse(failed.guard, failed.error))
            }
        }
    }
}

/// The future of [`SessionGuard::upgrade_async`].
#[must_use = "futures do nothing unless polled"]
pub struct SessionUpgrade<'s, 'm, K, S = DefaultHasher> {
    /// The session guard (its lock guard is out, in the engine future, while it waits).
    guard: Option<SessionGuard<'s, 'm, K, S>>,
    state: UpgradeState<'m, K, S>,
}

enum UpgradeState<'m, K, S> {
    Start,
    /// Waiting in the engine; registered in the graph as this wait (if it was).
    Waiting(UpgradeFuture<'m, K, S>, Option<u64>),
}

impl<K, S> fmt::Debug for SessionUpgrade<'_, '_, K, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let waiting = matches!(self.state, UpgradeState::Waiting(..));
        f.debug_struct("SessionUpgrade").field("waiting", &waiting).finish_non_exhaustive()
    }
}

impl<K, S> Unpin for SessionUpgrade<'_, '_, K, S> {}

impl<'s, 'm, K, S> Future for SessionUpgrade<'s, 'm, K, S>
where
    K: Hash + Eq + Clone + fmt::Debug + Send + Sync + 'static,
    S: BuildHasher + Send + Sync + 'static,
{
    type Output = Result<SessionGuard<'s, 'm, K, S>, ModeChangeFailed<SessionGuard<'s, 'm, K, S>>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let Some(mut guard) = this.guard.take() else {
            panic!("SessionUpgrade polled after it completed");
        };
        if let UpgradeState::Start = this.state {
            let from = guard.mode();
            if from != Mode::Upgradable {
                let error = LockError::InvalidModeChange { from, to: Mode::Exclusive };
                return Poll::Ready(Err(ModeChangeFailed { guard, error }));
            }
            let u = match UpgradableGuard::new(guard.take()).try_upgrade() {
                Ok(w) => return Poll::Ready(Ok(guard.put(w, Some(Mode::Exclusive)))),
                Err(ModeChangeFailed { guard: u, error: LockError::WouldBlock }) => u,
                Err(failed) => return Poll::Ready(Err(guard.refuse(failed.guard.into_inner(), failed.error))),
            };
            let state = &guard.session.state;
            match guard.session.locks.detector.begin_wait(state, u.key().clone(), Mode::Exclusive, Some(guard.id)) {
                Ok(seq) => this.state = UpgradeState::Waiting(u.upgrade_async(), seq),
                Err(e) => return Poll::Ready(Err(guard.refuse(u.into_inner(), e))),
            }
        }
        let UpgradeState::Waiting(fut, seq) = &mut this.state else { unreachable!("set above") };
        let seq = *seq;
        let state = &guard.session.state;
        // The waker first, so an abort set after this check wakes us.
        if let Some(cycle) = state.set_waker(seq, cx.waker()) {
            let back = fut.withdraw().map(UpgradableGuard::into_inner);
            this.state = UpgradeState::Start;
            return Poll::Ready(Err(guard.refuse_withdrawn(back, LockError::Deadlock { cycle })));
        }
        match Pin::new(fut).poll(cx) {
            Poll::Pending => {
                this.guard = Some(guard);
                Poll::Pending
            }
            Poll::Ready(Ok(w)) => {
                this.state = UpgradeState::Start;
                Poll::Ready(match state.end_wait(seq) {
                    None => Ok(guard.put(w, Some(Mode::Exclusive))),
                    // Chosen as a victim just as the upgrade came: the abort wins (see `upgrade`).
                    Some(cycle) => {
                        let back = match w.downgrade_to_upgradable() {
                            Ok(u) => u.into_inner(),
                            Err(failed) => failed.guard,
                        };
                        Err(guard.refuse(back, LockError::Deadlock { cycle }))
                    }
                })
            }
            Poll::Ready(Err(failed)) => {
                this.state = UpgradeState::Start;
                state.end_wait(seq);
                Poll::Ready(Err(guard.refuse(failed.guard.into_inner(), failed.error)))
            }
        }
    }
}

impl<K, S> Drop for SessionUpgrade<'_, '_, K, S> {
    fn drop(&mut self) {
        if let (Some(guard), UpgradeState::Waiting(fut, seq)) =
            (self.guard.take(), std::mem::replace(&mut self.state, UpgradeState::Start))
        {
            // The graph forgets the wait and the holding leaves the session's list first (a list
            // never names a released holding); then the engine future gives up the upgrade and
            // drops the upgradable guard, releasing it.
            guard.session.state.end_wait(seq);
            drop(guard);
            drop(fut);
        }
    }
}
