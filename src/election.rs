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

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::hash::{BuildHasher, Hash};
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::clock::{Clock, ClockSource};
use crate::error::LockError;
use crate::guard::LockGuard;
use crate::loss::{LossCause, LossSignal, Lost};
use crate::manager::LockManager;
use crate::mode::Owner;
use crate::token::FenceToken;

/// Changes an observer keeps before it starts dropping the oldest (and counting them).
pub const OBSERVER_CAPACITY: usize = 64;
/// The lease of a candidate that names none.
const DEFAULT_ELECTION_TTL: Duration = Duration::from_secs(10);

/// A leader as followers see it.
///
/// # Examples
///
/// ```
/// let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
/// let lead = locks.elect("scheduler").candidate("node-2").try_acquire()?;
/// lead.proclaim("10.0.0.2:80")?;
/// let leader = locks.leader("scheduler").unwrap();
/// assert_eq!(leader.label.as_str(), "node-2");
/// assert_eq!(leader.value.as_deref(), Some("10.0.0.2:80"));
/// assert_eq!(leader.token, lead.token());
/// # Ok::<(), leasehold::LockError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leader {
    /// The candidate's label.
    pub label: Owner,
    /// What the leader last proclaimed (say, its address); `None` until it does.
    pub value: Option<String>,
    /// The tenure's fencing token.
    pub token: FenceToken,
    /// When the tenure began, a reading of the manager's clock ([`LockManager::now`]).
    pub since: Duration,
}

/// What changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ChangeKind {
    /// The first change an observer gets: who leads at the time it subscribed (`leader` is
    /// `None` if nobody does).
    Current,
    /// A tenure began.
    Elected,
    /// The leader proclaimed a new value.
    Proclaimed,
    /// The leader stepped down (`resign`, or its `Leadership` was dropped).
    Resigned,
    /// The tenure's lease ran out (the leader or its renewer could not keep up).
    Expired,
    /// The tenure was revoked by an operator.
    Revoked,
}

/// One change of an election, as an observer receives it.
///
/// # Examples
///
/// ```
/// use leasehold::ChangeKind;
/// let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
/// let changes = locks.observe("scheduler");
/// let lead = locks.elect("scheduler").candidate("node-2").try_acquire()?;
/// lead.resign()?;
/// let kinds: Vec<ChangeKind> = std::iter::from_fn(|| changes.try_next()).map(|c| c.kind).collect();
/// assert_eq!(kinds, [ChangeKind::Current, ChangeKind::Elected, ChangeKind::Resigned]);
/// # Ok::<(), leasehold::LockError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaderChange {
    /// What changed.
    pub kind: ChangeKind,
    /// The tenure the change is about (for `Current`, the leader then, if any).
    pub leader: Option<Leader>,
    /// Changes this observer lost just before this one, because it fell more than
    /// [`OBSERVER_CAPACITY`] changes behind. Zero when it missed nothing.
    pub missed_before: u64,
}

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

    /// An embedder's pass (`renew_due`): expiry and renewals of the elections' table.
    pub(crate) fn drive(&self) {
        self.locks.expire_due();
        self.locks.renew_due();
    }

    pub(crate) fn stall(&self) -> parking_lot::MutexGuard<'_, ()> {
        self.locks.inner.renewer.stall()
    }
}

/// One election's record of who leads, and its observers.
#[derive(Default)]
struct Board {
    state: Mutex<BoardState>,
}

#[derive(Default)]
struct BoardState {
    leader: Option<Leader>,
    /// The current tenure's loss signal.
    signal: Option<Arc<LossSignal>>,
    observers: Vec<Weak<Queue>>,
}

impl Board {
    /// Records a change for every observer (under the board lock).
    fn publish(state: &mut BoardState, kind: ChangeKind, leader: Option<Leader>) {
        state.observers.retain(|o| match o.upgrade() {
            Some(q) => {
                q.push(LeaderChange { kind, leader: leader.clone(), missed_before: 0 });
                true
            }
            None => false,
        });
    }

    /// Closes the current tenure if its holding was lost (under the board lock).
    fn close_lost(state: &mut BoardState) {
        let cause = state.signal.as_ref().and_then(|s| s.cause());
        if let Some(cause) = cause {
            let ended = state.leader.take();
            state.signal = None;
            let kind = match cause {
                LossCause::Expired => ChangeKind::Expired,
                LossCause::Revoked => ChangeKind::Revoked,
            };
            Board::publish(state, kind, ended);
        }
    }

    fn refresh(&self) {
        Board::close_lost(&mut self.state.lock());
    }

    /// A winner records its tenure, closing the one before. Returns false if a later tenure is
    /// on the board already (this one was lost before it could be announced).
    fn install(&self, leader: Leader, signal: Arc<LossSignal>) -> bool {
        let mut state = self.state.lock();
        if state.leader.as_ref().is_some_and(|l| l.token > leader.token) {
            return false;
        }
        Board::close_lost(&mut state);
        if let Some(prev) = state.leader.take() {
            // Not lost, yet its holding ended before ours began: it was released, and its
            // resigner has not recorded that yet.
            Board::publish(&mut state, ChangeKind::Resigned, Some(prev));
        }
        state.leader = Some(leader.clone());
        state.signal = Some(signal);
        Board::publish(&mut state, ChangeKind::Elected, Some(leader));
        true
    }

    /// The tenure `token` ended by its own release.
    fn resigned(&self, token: FenceToken) {
        let mut state = self.state.lock();
        if state.leader.as_ref().is_some_and(|l| l.token == token) {
            let ended = state.leader.take();
            state.signal = None;
            Board::publish(&mut state, ChangeKind::Resigned, ended);
        }
    }

    fn current(&self) -> Option<Leader> {
        let mut state = self.state.lock();
        Board::close_lost(&mut state);
        state.leader.clone()
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

    fn request<'e, 'q>(&self, elections: &'e Elections, name: &'q str) -> crate::Request<'e, 'q, Arc<str>, str> {
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
            since: Duration::from_nanos(elections.locks.inner.core.clock.now_ns()),
        };
        board.install(leader, signal);
        Leadership { guard: Some(guard), board, name: Arc::clone(&self.name), label: self.label.clone(), ttl: self.ttl }
    }
}

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
    guard: Option<LockGuard<'m, Arc<str>>>,
    board: Arc<Board>,
    name: Arc<str>,
    label: Owner,
    ttl: Duration,
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

    /// Publishes `value` (say, the leader's address) to followers ([`LockManager::leader`]) and
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

    /// Renews the lease by hand, for a leader elected with [`Campaign::renew_by_hand`] (with
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

/// A bounded stream of an election's changes, in token order, from
/// [`LockManager::observe`]. It keeps the last [`OBSERVER_CAPACITY`] changes; an observer that
/// falls further behind loses the oldest, and the next change it receives says how many
/// (`missed_before`).
///
/// # Examples
///
/// ```
/// use leasehold::ChangeKind;
/// let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
/// let changes = locks.observe("e");
/// assert_eq!(changes.try_next().unwrap().kind, ChangeKind::Current);
/// let lead = locks.elect("e").try_acquire()?;
/// assert_eq!(changes.try_next().unwrap().leader.unwrap().token, lead.token());
/// # Ok::<(), leasehold::LockError>(())
/// ```
pub struct LeaderChanges {
    queue: Arc<Queue>,
    board: Arc<Board>,
}

impl fmt::Debug for LeaderChanges {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeaderChanges").field("queued", &self.queue.state.lock().items.len()).finish()
    }
}

#[derive(Default)]
struct Queue {
    state: Mutex<QueueState>,
    ready: Condvar,
}

#[derive(Default)]
struct QueueState {
    items: VecDeque<LeaderChange>,
    missed: u64,
    wakers: Vec<Waker>,
}

impl Queue {
    fn push(&self, change: LeaderChange) {
        let wakers = {
            let mut q = self.state.lock();
            if q.items.len() == OBSERVER_CAPACITY {
                q.items.pop_front();
                q.missed += 1;
            }
            q.items.push_back(change);
            std::mem::take(&mut q.wakers)
        };
        self.ready.notify_all();
        for w in wakers {
            w.wake();
        }
    }

    fn pop(q: &mut QueueState) -> Option<LeaderChange> {
        let mut change = q.items.pop_front()?;
        change.missed_before = std::mem::take(&mut q.missed);
        Some(change)
    }
}

impl LeaderChanges {
    /// The next change, if one is queued; never waits.
    ///
    /// # Examples
    ///
    /// ```
    /// let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
    /// let changes = locks.observe("e");
    /// assert!(changes.try_next().is_some()); // the current state
    /// assert!(changes.try_next().is_none());
    /// ```
    pub fn try_next(&self) -> Option<LeaderChange> {
        // A tenure lost with no successor is closed by whoever looks first.
        self.board.refresh();
        Queue::pop(&mut self.queue.state.lock())
    }

    /// The next change, waiting at most `timeout` for one.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
    /// let changes = locks.observe("e");
    /// assert!(changes.next_timeout(Duration::from_millis(1)).is_some());
    /// assert!(changes.next_timeout(Duration::from_millis(1)).is_none());
    /// ```
    pub fn next_timeout(&self, timeout: Duration) -> Option<LeaderChange> {
        self.board.refresh();
        let deadline = Instant::now().checked_add(timeout);
        let mut q = self.queue.state.lock();
        loop {
            if let Some(c) = Queue::pop(&mut q) {
                return Some(c);
            }
            match deadline {
                Some(d) => {
                    if self.queue.ready.wait_until(&mut q, d).timed_out() {
                        return Queue::pop(&mut q);
                    }
                }
                None => self.queue.ready.wait(&mut q),
            }
        }
    }

    /// A future of the next change, on any executor.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: a change is taken from the queue only when the future completes.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use leasehold::ChangeKind;
    /// let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
    /// let changes = locks.observe("e");
    /// assert_eq!(changes.next().await.kind, ChangeKind::Current);
    /// # }
    /// ```
    pub fn next(&self) -> NextChange<'_> {
        NextChange { changes: self }
    }
}

/// The future of [`LeaderChanges::next`].
#[must_use = "futures do nothing unless polled"]
#[derive(Debug)]
pub struct NextChange<'a> {
    changes: &'a LeaderChanges,
}

impl Future for NextChange<'_> {
    type Output = LeaderChange;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<LeaderChange> {
        self.changes.board.refresh();
        let mut q = self.changes.queue.state.lock();
        if let Some(c) = Queue::pop(&mut q) {
            return Poll::Ready(c);
        }
        // Registered under the queue lock that `push` takes: no change slips between.
        if !q.wakers.iter().any(|w| w.will_wake(cx.waker())) {
            q.wakers.push(cx.waker().clone());
        }
        Poll::Pending
    }
}

impl<K, S> LockManager<K, S>
where
    K: Hash + Eq + Send + Sync + 'static,
    S: BuildHasher + Send + Sync + 'static,
{
    /// The elections' table, made on first use.
    fn elections(&self) -> &Elections {
        self.inner.elections.get_or_init(|| {
            // Weak: the manager owns the elections, so a strong reference would be a cycle.
            let weak = Arc::downgrade(&self.inner);
            let now = Box::new(move || weak.upgrade().map_or(0, |i| i.core.clock.now_ns()));
            let reaper = self.inner.renewer.drive != crate::renew::Drive::Embedder;
            Elections::new(&self.inner.core.clock, self.inner.core.wheel.tick_ns, reaper, now)
        })
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
        self.inner.elections.get()?.existing_board(name)?.current()
    }

    /// The holder and waiters of the election `name` (for tests and debugging).
    #[doc(hidden)]
    pub fn inspect_election(&self, name: &str) -> Option<crate::LockInfo<Arc<str>>> {
        self.inner.elections.get()?.locks.inspect(name)
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
        let board = self.elections().board(name);
        let queue = Arc::new(Queue::default());
        {
            let mut state = board.state.lock();
            Board::close_lost(&mut state);
            queue.push(LeaderChange { kind: ChangeKind::Current, leader: state.leader.clone(), missed_before: 0 });
            state.observers.push(Arc::downgrade(&queue));
        }
        LeaderChanges { queue, board }
    }
}
