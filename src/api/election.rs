//! Leader election on the lock table: a leader is the exclusive, keep-alive holder of the
//! election's name; a board per name tells followers and observers who leads.
//!
//! # Ground rules
//!
//! - Names of elections live in their own table: a `LockManager<Arc<str>>` made on the first
//!   [`elect`](crate::LockManager::elect), sharing the manager's clock and its way of driving
//!   expiry (its own reaper and renewer threads, `ManualClock::advance`, or `renew_due`). So an
//!   election named "x" never collides with a lock on a key "x" of any key type, and a
//!   `LockManager<u64>` can hold elections too.
//! - A tenure is one holding: its fencing token is the leader's token, so tokens of successive
//!   leaders strictly increase (the table's per-key token rule), and a deposed leader's write
//!   through a [`Fenced`](crate::Fenced) resource is refused once its successor wrote.
//! - Tenures never overlap: the next candidate can acquire only after the holding ended, and a
//!   holding that ends without its release (expiry, revocation) fires its loss signal before the
//!   units go back (`loss.rs`), so the old leader's `is_leader()` is false before the new one's
//!   is true.
//! - The board records changes in token order, under its own lock, which is never held while a
//!   lock of the table is taken: a winner records its tenure after acquiring, first closing the
//!   tenure before it (its cause read from that holding's loss signal, which fired before the
//!   winner could acquire); a resigner records its end after releasing, unless a successor
//!   already did; a tenure lost with no successor is closed by the loss callback, or by the
//!   next reader of the board, whichever comes first.
//! - Boards are kept for the manager's life (one small record per election name ever used):
//!   elections are few, and an observer may subscribe before any candidate campaigns.

use std::any::Any;
use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, Hash};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::api::board::{Board, Leader, LeaderChanges};
use crate::api::guard::LockGuard;
use crate::api::leadership::Leadership;
use crate::api::manager::LockManager;
use crate::api::request::Request;
use crate::api::state::ElectionTable;
use crate::expiry::renewer::Drive;
use crate::observe::inspect::LockInfo;
use crate::primitives::clock::{Clock, ClockSource};
use crate::vocab::error::LockError;
use crate::vocab::mode::Owner;

/// The lease of a candidate that names none.
const DEFAULT_ELECTION_TTL: Duration = Duration::from_secs(10);

/// The manager's elections (see the module's ground rules).
pub(crate) struct Elections {
    pub(crate) locks: LockManager<Arc<str>>,
    boards: Mutex<HashMap<Arc<str>, Arc<Board>>>,
}

/// Reads the clock of the manager that owns the elections (for a custom clock, which cannot be
/// cloned). Weak: the manager owns the elections, not the other way round.
struct BorrowedClock(Box<dyn Fn() -> u64 + Send + Sync>);

impl Clock for BorrowedClock {
    fn now(&self) -> Duration {
        Duration::from_nanos((self.0)())
    }
}

impl Elections {
    /// The table for a manager with this clock, tick and reaper setting.
    pub(crate) fn new(
        clock: &ClockSource,
        tick_ns: u64,
        reaper: bool,
        now: Box<dyn Fn() -> u64 + Send + Sync>,
    ) -> Self {
        let builder = LockManager::<Arc<str>>::builder().shards(16).tick(Duration::from_nanos(tick_ns));
        let builder = match clock {
            ClockSource::Monotonic(c) => builder.clock(c.clone()),
            ClockSource::Manual(c) => builder.clock(c.clone()),
            ClockSource::Custom(_) => builder.clock(BorrowedClock(now)),
        };
        // Without a reaper thread (the system is out of threads) elections still never overlap:
        // a contender expires a holder past its deadline itself; only the signals come later.
        let locks = match builder.reaper(reaper).build() {
            Ok(locks) => locks,
            Err(_) => LockManager::<Arc<str>>::builder()
                .shards(16)
                .reaper(false)
                .build()
                .expect("a manager without threads and with valid settings always builds"),
        };
        Elections { locks, boards: Mutex::new(HashMap::new()) }
    }

    fn board(&self, name: &str) -> Arc<Board> {
        let mut boards = self.boards.lock();
        if let Some(b) = boards.get(name) {
            return Arc::clone(b);
        }
        let b = Arc::new(Board::default());
        boards.insert(Arc::from(name), Arc::clone(&b));
        b
    }

    fn existing_board(&self, name: &str) -> Option<Arc<Board>> {
        self.boards.lock().get(name).cloned()
    }

    /// Revokes every tenure of `owner` (from `LockManager::revoke_owner`).
    pub(crate) fn revoke_owner(&self, owner: &Owner) -> usize {
        let n = self.locks.revoke_owner(owner.clone());
        if n > 0 {
            let boards: Vec<Arc<Board>> = self.boards.lock().values().cloned().collect();
            for b in boards {
                b.refresh();
            }
        }
        n
    }
}

impl ElectionTable for Elections {
    fn revoke_owner(&self, owner: &Owner) -> usize {
        Elections::revoke_owner(self, owner)
    }

    fn drive(&self) {
        self.locks.expire_due();
        self.locks.renew_due();
    }

    fn stall(&self) -> parking_lot::MutexGuard<'_, ()> {
        self.locks.state.renewer.stall()
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// A candidate's campaign: set the label and lease, then acquire leadership.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
/// let lead = locks
///     .elect("scheduler")
///     .candidate("node-2")
///     .lease(Duration::from_secs(5))
///     .acquire_timeout(Duration::from_millis(100))?;
/// assert!(lead.is_leader());
/// # Ok::<(), leasehold::LockError>(())
/// ```
#[must_use = "a campaign does nothing until one of its acquire methods is called"]
pub struct Campaign<'m, K, S> {
    locks: &'m LockManager<K, S>,
    name: Arc<str>,
    label: Owner,
    ttl: Duration,
    keep_alive: bool,
}

impl<K, S> fmt::Debug for Campaign<'_, K, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Campaign")
            .field("name", &self.name)
            .field("label", &self.label)
            .field("ttl", &self.ttl)
            .field("keep_alive", &self.keep_alive)
            .finish()
    }
}

enum How {
    Try,
    Until(Option<Instant>),
}

impl<'m, K, S> Campaign<'m, K, S>
where
    K: Hash + Eq + Send + Sync + 'static,
    S: BuildHasher + Send + Sync + 'static,
{
    /// The candidate's label: what followers see as the leader, and the owner label of its
    /// holding (so [`revoke_owner`](LockManager::revoke_owner) deposes it). Default: "candidate".
    ///
    /// # Examples
    ///
    /// ```
    /// let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
    /// let lead = locks.elect("scheduler").candidate("node-2").try_acquire()?;
    /// assert_eq!(lead.label().as_str(), "node-2");
    /// # Ok::<(), leasehold::LockError>(())
    /// ```
    pub fn candidate(mut self, label: impl Into<Owner>) -> Self {
        self.label = label.into();
        self
    }

    /// The leader's lease (default 10 s): kept alive by the renewer while the `Leadership`
    /// lives, unless [`renew_by_hand`](Campaign::renew_by_hand).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
    /// let lead = locks.elect("scheduler").lease(Duration::from_secs(3)).try_acquire()?;
    /// assert!(lead.trusted_for() > Duration::from_secs(2));
    /// # Ok::<(), leasehold::LockError>(())
    /// ```
    pub fn lease(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// No keep-alive: the leader calls [`Leadership::renew`] from its own work loop, so that a
    /// leader that hangs loses its lease (the renewer would keep a hung leader in office).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
    /// let lead = locks.elect("scheduler").lease(Duration::from_secs(3)).renew_by_hand().try_acquire()?;
    /// lead.renew()?;
    /// # Ok::<(), leasehold::LockError>(())
    /// ```
    pub fn renew_by_hand(mut self) -> Self {
        self.keep_alive = false;
        self
    }

    /// Takes leadership if nobody holds it now.
    ///
    /// # Errors
    ///
    /// [`LockError::WouldBlock`] if another candidate leads; [`LockError::InvalidTtl`] for a zero
    /// or too long lease.
    ///
    /// # Examples
    ///
    /// ```
    /// use leasehold::LockError;
    /// let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
    /// let a = locks.elect("scheduler").candidate("a").try_acquire()?;
    /// assert_eq!(locks.elect("scheduler").candidate("b").try_acquire().unwrap_err(), LockError::WouldBlock);
    /// # Ok::<(), LockError>(())
    /// ```
    pub fn try_acquire(self) -> Result<Leadership<'m>, LockError> {
        self.campaign(How::Try)
    }

    /// Waits until elected.
    ///
    /// # Errors
    ///
    /// [`LockError::InvalidTtl`] for a zero or too long lease.
    ///
    /// # Examples
    ///
    /// ```
    /// let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
    /// let lead = locks.elect("scheduler").candidate("a").acquire()?;
    /// # Ok::<(), leasehold::LockError>(())
    /// ```
    pub fn acquire(self) -> Result<Leadership<'m>, LockError> {
        self.campaign(How::Until(None))
    }

    /// Waits at most `timeout` to be elected.
    ///
    /// # Errors
    ///
    /// [`LockError::TimedOut`], and [`LockError::InvalidTtl`] for a zero or too long lease.
    ///
    /// # Examples
    ///
    /// ```
    /// use leasehold::LockError;
    /// use std::time::Duration;
    /// let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
    /// let _a = locks.elect("scheduler").candidate("a").try_acquire()?;
    /// let b = locks.elect("scheduler").candidate("b").acquire_timeout(Duration::from_millis(5));
    /// assert_eq!(b.unwrap_err(), LockError::TimedOut);
    /// # Ok::<(), LockError>(())
    /// ```
    pub fn acquire_timeout(self, timeout: Duration) -> Result<Leadership<'m>, LockError> {
        self.campaign(How::Until(Instant::now().checked_add(timeout)))
    }

    /// Campaigns on any executor.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future gives up the campaign; leadership handed to it meanwhile is released.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), leasehold::LockError> {
    /// let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
    /// let lead = locks.elect("scheduler").candidate("a").acquire_async().await?;
    /// assert!(lead.is_leader());
    /// # Ok(())
    /// # }
    /// ```
    pub async fn acquire_async(self) -> Result<Leadership<'m>, LockError> {
        let elections = self.locks.elections();
        let guard = self.request(elections, &self.name).acquire_async().await?;
        Ok(self.install(elections, guard))
    }

    fn request<'e, 'q>(&self, elections: &'e Elections, name: &'q str) -> Request<'e, 'q, Arc<str>, str> {
        let board = Arc::downgrade(&elections.board(name));
        // Closes a tenure lost with no successor (after the fact, on the service thread).
        let close = move |_| {
            if let Some(b) = board.upgrade() {
                b.refresh();
            }
        };
        let request = elections.locks.exclusive(name).lease(self.ttl).owner(self.label.clone()).on_lost(close);
        if self.keep_alive {
            request.keep_alive()
        } else {
            request
        }
    }

    fn campaign(self, how: How) -> Result<Leadership<'m>, LockError> {
        let elections = self.locks.elections();
        let request = self.request(elections, &self.name);
        let guard = match how {
            How::Try => request.try_acquire()?,
            How::Until(None) => request.acquire()?,
            How::Until(Some(deadline)) => {
                request.acquire_timeout(deadline.saturating_duration_since(Instant::now()))?
            }
        };
        Ok(self.install(elections, guard))
    }

    fn install(&self, elections: &'m Elections, guard: LockGuard<'m, Arc<str>>) -> Leadership<'m> {
        let board = elections.board(&self.name);
        let signal = guard.loss_signal();

        let leader = Leader {
            label: self.label.clone(),
            value: None,
            token: guard.token(),
            since: Duration::from_nanos(elections.locks.state.table.core.clock.now_ns()),
        };
        board.install(leader, signal);
        Leadership { guard: Some(guard), board, name: Arc::clone(&self.name), label: self.label.clone(), ttl: self.ttl }
    }
}

impl<K, S> LockManager<K, S>
where
    K: Hash + Eq + Send + Sync + 'static,
    S: BuildHasher + Send + Sync + 'static,
{
    /// The elections' table, made on first use.
    fn elections(&self) -> &Elections {
        let table = self.state.elections.get_or_init(|| {
            // Weak: the manager owns the elections, so a strong reference would be a cycle.
            let weak = self.state.me.clone();
            let now = Box::new(move || weak.upgrade().map_or(0, |s| s.table.core.clock.now_ns()));
            let reaper = self.state.renewer.drive != Drive::Embedder;
            Box::new(Elections::new(&self.state.table.core.clock, self.state.table.core.wheel.tick_ns, reaper, now))
        });
        table.as_any().downcast_ref::<Elections>().unwrap_or_else(|| unreachable!("only `elect` fills the cell"))
    }

    /// A campaign to lead the election `name`. The leader holds an exclusive lease on the name,
    /// kept alive by default, and its fencing token.
    ///
    /// Elections have their own namespace: a name is not a key of this manager's table but of the
    /// manager's election table (made on the first `elect`, sharing this manager's clock and its
    /// way of driving expiry), so any key type works and an election never blocks, or is blocked
    /// by, a lock on a key that looks the same.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
    /// let lead = locks.elect("scheduler").candidate("node-2").lease(Duration::from_secs(10)).acquire()?;
    /// lead.proclaim("10.0.0.2:80")?;
    /// assert_eq!(locks.leader("scheduler").unwrap().token, lead.token());
    /// # Ok::<(), leasehold::LockError>(())
    /// ```
    pub fn elect(&self, name: &str) -> Campaign<'_, K, S> {
        Campaign {
            locks: self,
            name: Arc::from(name),
            label: Owner::from("candidate"),
            ttl: DEFAULT_ELECTION_TTL,
            keep_alive: true,
        }
    }

    /// Who leads the election `name` now (label, proclaimed value, token, since when); `None` if
    /// nobody does.
    ///
    /// # Examples
    ///
    /// ```
    /// let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
    /// assert!(locks.leader("scheduler").is_none());
    /// let _lead = locks.elect("scheduler").candidate("node-2").try_acquire()?;
    /// assert_eq!(locks.leader("scheduler").unwrap().label.as_str(), "node-2");
    /// # Ok::<(), leasehold::LockError>(())
    /// ```
    pub fn leader(&self, name: &str) -> Option<Leader> {
        self.state.elections.get()?.as_any().downcast_ref::<Elections>()?.existing_board(name)?.current()
    }

    /// The holder and waiters of the election `name` (for tests and debugging).
    #[doc(hidden)]
    pub fn inspect_election(&self, name: &str) -> Option<LockInfo<Arc<str>>> {
        self.state.elections.get()?.as_any().downcast_ref::<Elections>()?.locks.inspect(name)
    }

    /// Observes the election `name`: first its current state, then every change in token order
    /// (see [`LeaderChanges`] for what happens to an observer that falls behind).
    ///
    /// # Examples
    ///
    /// ```
    /// use leasehold::ChangeKind;
    /// let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
    /// let changes = locks.observe("scheduler");
    /// let lead = locks.elect("scheduler").try_acquire()?;
    /// drop(lead);
    /// let kinds: Vec<ChangeKind> = std::iter::from_fn(|| changes.try_next()).map(|c| c.kind).collect();
    /// assert_eq!(kinds, [ChangeKind::Current, ChangeKind::Elected, ChangeKind::Resigned]);
    /// # Ok::<(), leasehold::LockError>(())
    /// ```
    pub fn observe(&self, name: &str) -> LeaderChanges {
        LeaderChanges::new(self.elections().board(name))
    }
}
