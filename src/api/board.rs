//! An election's board: who leads, and the observers it tells of every change.
//!
//! The board records changes in token order, under its own lock, which is never held while a
//! lock of the election table is taken (see `election.rs` for who records what, and when).

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::api::loss::{LossCause, LossSignal};
use crate::vocab::mode::Owner;
use crate::vocab::token::FenceToken;

/// Changes an observer keeps before it starts dropping the oldest (and counting them).
pub const OBSERVER_CAPACITY: usize = 64;

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
    /// When the tenure began, a reading of the manager's clock ([`LockManager::now`](crate::LockManager::now)).
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

/// One election's record of who leads, and its observers.
#[derive(Default)]
pub(crate) struct Board {
    pub(crate) state: Mutex<BoardState>,
}

#[derive(Default)]
pub(crate) struct BoardState {
    pub(crate) leader: Option<Leader>,
    /// The current tenure's loss signal.
    signal: Option<Arc<LossSignal>>,
    observers: Vec<Weak<Queue>>,
}

impl Board {
    /// Records a change for every observer (under the board lock).
    pub(crate) fn publish(state: &mut BoardState, kind: ChangeKind, leader: Option<Leader>) {
        state.observers.retain(|o| match o.upgrade() {
            Some(q) => {
                q.push(LeaderChange { kind, leader: leader.clone(), missed_before: 0 });
                true
            }
            None => false,
        });
    }

    /// Closes the current tenure if its holding was lost (under the board lock).
    pub(crate) fn close_lost(state: &mut BoardState) {
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

    pub(crate) fn refresh(&self) {
        Board::close_lost(&mut self.state.lock());
    }

    /// A winner records its tenure, closing the one before. Returns false if a later tenure is
    /// on the board already (this one was lost before it could be announced).
    pub(crate) fn install(&self, leader: Leader, signal: Arc<LossSignal>) -> bool {
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
    pub(crate) fn resigned(&self, token: FenceToken) {
        let mut state = self.state.lock();
        if state.leader.as_ref().is_some_and(|l| l.token == token) {
            let ended = state.leader.take();
            state.signal = None;
            Board::publish(&mut state, ChangeKind::Resigned, ended);
        }
    }

    pub(crate) fn current(&self) -> Option<Leader> {
        let mut state = self.state.lock();
        Board::close_lost(&mut state);
        state.leader.clone()
    }
}

/// A bounded stream of an election's changes, in token order, from
/// [`LockManager::observe`](crate::LockManager::observe). It keeps the last [`OBSERVER_CAPACITY`] changes; an observer that
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
    /// A new observer of `board`: its first change is the board's current state.
    pub(crate) fn new(board: Arc<Board>) -> Self {
        let queue = Arc::new(Queue::default());
        {
            let mut state = board.state.lock();
            Board::close_lost(&mut state);
            queue.push(LeaderChange { kind: ChangeKind::Current, leader: state.leader.clone(), missed_before: 0 });
            state.observers.push(Arc::downgrade(&queue));
        }
        LeaderChanges { queue, board }
    }

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
