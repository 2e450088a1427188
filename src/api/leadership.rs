//! A tenure as leader: the candidate's side of an election (`election.rs`).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::api::board::{Board, ChangeKind};
use crate::api::guard::LockGuard;
use crate::api::loss::{LossCause, Lost};
use crate::vocab::error::LockError;
use crate::vocab::mode::Owner;
use crate::vocab::token::FenceToken;

/// A tenure as leader: proof that this candidate leads, until it resigns, drops this, or loses
/// the lease. Dropping it resigns.
///
/// # Examples
///
/// ```
/// use leasehold::LockManager;
/// use std::time::Duration;
/// let locks: LockManager<u64> = LockManager::new();
/// let lead = locks.elect("scheduler").candidate("node-2").lease(Duration::from_secs(10)).acquire()?;
/// lead.proclaim("10.0.0.2:80")?;
/// let db = locks.fenced(Vec::new());
/// db.write(lead.token(), |log| log.push("leader's write"))?;
/// lead.resign()?;
/// assert!(locks.leader("scheduler").is_none());
/// # Ok::<(), leasehold::LockError>(())
/// ```
#[must_use = "dropping the leadership resigns at once"]
pub struct Leadership<'m> {
    pub(crate) guard: Option<LockGuard<'m, Arc<str>>>,
    pub(crate) board: Arc<Board>,
    pub(crate) name: Arc<str>,
    pub(crate) label: Owner,
    pub(crate) ttl: Duration,
}

impl fmt::Debug for Leadership<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Leadership")
            .field("name", &self.name)
            .field("label", &self.label)
            .field("token", &self.token())
            .field("is_leader", &self.is_leader())
            .finish()
    }
}

impl Leadership<'_> {
    fn guard(&self) -> &LockGuard<'_, Arc<str>> {
        // Some from construction until drop or resign, which consume `self`.
        self.guard.as_ref().expect("a Leadership holds its guard until it is consumed")
    }

    /// The tenure's fencing token: strictly greater than every earlier leader's of this election.
    ///
    /// # Examples
    ///
    /// ```
    /// let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
    /// let a = locks.elect("e").try_acquire()?;
    /// let first = a.token();
    /// a.resign()?;
    /// assert!(locks.elect("e").try_acquire()?.token() > first);
    /// # Ok::<(), leasehold::LockError>(())
    /// ```
    pub fn token(&self) -> FenceToken {
        self.guard().token()
    }

    /// The election's name.
    ///
    /// # Examples
    ///
    /// ```
    /// let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
    /// assert_eq!(locks.elect("e").try_acquire()?.name(), "e");
    /// # Ok::<(), leasehold::LockError>(())
    /// ```
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The candidate's label.
    ///
    /// # Examples
    ///
    /// ```
    /// let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
    /// assert_eq!(locks.elect("e").candidate("n1").try_acquire()?.label().as_str(), "n1");
    /// # Ok::<(), leasehold::LockError>(())
    /// ```
    pub fn label(&self) -> &Owner {
        &self.label
    }

    /// Whether this tenure is still on: not lost, and its lease deadline has not passed.
    ///
    /// # Examples
    ///
    /// ```
    /// let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
    /// let lead = locks.elect("e").candidate("n1").try_acquire()?;
    /// assert!(lead.is_leader());
    /// locks.revoke_owner("n1");
    /// assert!(!lead.is_leader());
    /// # Ok::<(), leasehold::LockError>(())
    /// ```
    pub fn is_leader(&self) -> bool {
        let g = self.guard();
        !g.is_lost() && g.is_held()
    }

    /// Publishes `value` (say, the leader's address) to followers ([`LockManager::leader`](crate::LockManager::leader)) and
    /// observers.
    ///
    /// # Errors
    ///
    /// [`LockError::Expired`] if this tenure is over.
    ///
    /// # Examples
    ///
    /// ```
    /// let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
    /// let lead = locks.elect("e").try_acquire()?;
    /// lead.proclaim("10.0.0.2:80")?;
    /// assert_eq!(locks.leader("e").unwrap().value.as_deref(), Some("10.0.0.2:80"));
    /// # Ok::<(), leasehold::LockError>(())
    /// ```
    pub fn proclaim(&self, value: impl Into<String>) -> Result<(), LockError> {
        if !self.is_leader() {
            return Err(LockError::Expired);
        }
        let mut state = self.board.state.lock();
        Board::close_lost(&mut state);
        let token = self.token();
        match state.leader.as_mut() {
            Some(l) if l.token == token => {
                l.value = Some(value.into());
                let leader = l.clone();
                Board::publish(&mut state, ChangeKind::Proclaimed, Some(leader));
                Ok(())
            }
            _ => Err(LockError::Expired),
        }
    }

    /// Renews the lease by hand, for a leader elected with [`Campaign::renew_by_hand`](crate::Campaign::renew_by_hand) (with
    /// keep-alive the renewer does it).
    ///
    /// # Errors
    ///
    /// [`LockError::Expired`] if the tenure is over.
    ///
    /// # Examples
    ///
    /// ```
    /// let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
    /// let lead = locks.elect("e").renew_by_hand().try_acquire()?;
    /// lead.renew()?;
    /// # Ok::<(), leasehold::LockError>(())
    /// ```
    pub fn renew(&self) -> Result<(), LockError> {
        self.guard().renew(self.ttl)
    }

    /// A future that completes when this tenure ends without `resign` (see [`LockGuard::lost`]).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), leasehold::LockError> {
    /// use leasehold::LossCause;
    /// let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
    /// let lead = locks.elect("e").candidate("n1").acquire_async().await?;
    /// locks.revoke_owner("n1");
    /// assert_eq!(lead.lost().await, LossCause::Revoked);
    /// # Ok(())
    /// # }
    /// ```
    pub fn lost(&self) -> Lost<'_> {
        self.guard().lost()
    }

    /// Whether this tenure ended without `resign` (see [`LockGuard::is_lost`]).
    ///
    /// # Examples
    ///
    /// ```
    /// let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
    /// let lead = locks.elect("e").candidate("n1").try_acquire()?;
    /// assert!(!lead.is_lost());
    /// # Ok::<(), leasehold::LockError>(())
    /// ```
    pub fn is_lost(&self) -> bool {
        self.guard().is_lost()
    }

    /// Why this tenure ended without `resign`, if it did.
    ///
    /// # Examples
    ///
    /// ```
    /// use leasehold::LossCause;
    /// let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
    /// let lead = locks.elect("e").candidate("n1").try_acquire()?;
    /// locks.revoke_owner("n1");
    /// assert_eq!(lead.loss_cause(), Some(LossCause::Revoked));
    /// # Ok::<(), leasehold::LockError>(())
    /// ```
    pub fn loss_cause(&self) -> Option<LossCause> {
        self.guard().loss_cause()
    }

    /// How much longer this leader may trust that it leads (see [`LockGuard::trusted_for`]).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
    /// let lead = locks.elect("e").lease(Duration::from_secs(5)).try_acquire()?;
    /// assert!(lead.trusted_for() > Duration::ZERO);
    /// # Ok::<(), leasehold::LockError>(())
    /// ```
    pub fn trusted_for(&self) -> Duration {
        self.guard().trusted_for()
    }

    /// Steps down: the next candidate may be elected at once.
    ///
    /// # Errors
    ///
    /// [`LockError::Expired`] if the tenure had already ended (lost).
    ///
    /// # Examples
    ///
    /// ```
    /// let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
    /// locks.elect("e").candidate("a").try_acquire()?.resign()?;
    /// assert!(locks.elect("e").candidate("b").try_acquire().is_ok());
    /// # Ok::<(), leasehold::LockError>(())
    /// ```
    pub fn resign(mut self) -> Result<(), LockError> {
        self.step_down()
    }

    fn step_down(&mut self) -> Result<(), LockError> {
        let Some(guard) = self.guard.take() else { return Ok(()) };
        let token = guard.token();
        let released = guard.release();
        if released.is_ok() {
            self.board.resigned(token);
        } else {
            self.board.refresh();
        }
        released
    }
}

impl Drop for Leadership<'_> {
    fn drop(&mut self) {
        let _ = self.step_down();
    }
}
