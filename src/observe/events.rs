//! Lock events for subscribers: acquired, released, renewed, expired, revoked.
//!
//! With no subscriber the hot path pays one relaxed load of a flag that only `subscribe` and the
//! last unsubscribe write. With subscribers, each event is cloned into every subscriber's bounded
//! channel with `try_send`: a slow subscriber never blocks a lock operation; what does not fit is
//! counted as dropped, per subscriber and in the manager's metrics.

#![deny(unsafe_code)]

use crate::primitives::sync::untracked::{AtomicBool, AtomicU64, Ordering};
use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, TrySendError};

use crate::vocab::mode::{Mode, Owner};
use crate::vocab::token::FenceToken;

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EventKind {
    /// A holding began.
    Acquired,
    /// Its guard released it (or was dropped).
    Released,
    /// Its lease was renewed.
    Renewed,
    /// Its lease deadline passed and it was expired (by the reaper, a contender or a renewal).
    Expired,
    /// An operator revoked it.
    Revoked,
}

impl EventKind {
    /// The kind as a lower-case word (`"acquired"`, ...).
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(leasehold::EventKind::Expired.as_str(), "expired");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Acquired => "acquired",
            EventKind::Released => "released",
            EventKind::Renewed => "renewed",
            EventKind::Expired => "expired",
            EventKind::Revoked => "revoked",
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One event of one holding.
///
/// # Examples
///
/// ```
/// use leasehold::{EventKind, LockManager};
/// let locks: LockManager<String> = LockManager::new();
/// let events = locks.subscribe(16);
/// drop(locks.exclusive("k").owner("w1").try_acquire()?);
/// let e = events.try_recv().unwrap();
/// assert_eq!((e.kind, e.key.as_str(), e.owner.unwrap().as_str()), (EventKind::Acquired, "k", "w1"));
/// assert_eq!(events.try_recv().unwrap().kind, EventKind::Released);
/// # Ok::<(), leasehold::LockError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct LockEvent<K> {
    /// What happened.
    pub kind: EventKind,
    /// The key.
    pub key: K,
    /// The holding's mode.
    pub mode: Mode,
    /// The holding's fencing token.
    pub token: FenceToken,
    /// The holding's owner label, if it has one.
    pub owner: Option<Owner>,
    /// When, on the manager's clock (see [`LockManager::now`](crate::LockManager::now)).
    pub at: Duration,
}

/// The receiving end of [`LockManager::subscribe`](crate::LockManager::subscribe). Dropping it
/// unsubscribes.
pub struct EventReceiver<K> {
    rx: Receiver<LockEvent<K>>,
    dropped: Arc<AtomicU64>,
}

impl<K> fmt::Debug for EventReceiver<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventReceiver").field("queued", &self.rx.len()).field("dropped", &self.dropped()).finish()
    }
}

impl<K> EventReceiver<K> {
    /// The next event if one is queued.
    ///
    /// # Examples
    ///
    /// ```
    /// let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
    /// let events = locks.subscribe(8);
    /// assert!(events.try_recv().is_none());
    /// let _g = locks.exclusive(&1).try_acquire()?;
    /// assert!(events.try_recv().is_some());
    /// # Ok::<(), leasehold::LockError>(())
    /// ```
    pub fn try_recv(&self) -> Option<LockEvent<K>> {
        self.rx.try_recv().ok()
    }

    /// The next event, waiting up to `timeout`.
    ///
    /// # Examples
    ///
    /// ```
    /// let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
    /// let events = locks.subscribe(8);
    /// assert!(events.recv_timeout(std::time::Duration::from_millis(1)).is_none());
    /// ```
    pub fn recv_timeout(&self, timeout: Duration) -> Option<LockEvent<K>> {
        self.rx.recv_timeout(timeout).ok()
    }

    /// Every event queued now.
    ///
    /// # Examples
    ///
    /// ```
    /// let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
    /// let events = locks.subscribe(8);
    /// drop(locks.exclusive(&1).try_acquire()?);
    /// assert_eq!(events.drain().count(), 2);
    /// # Ok::<(), leasehold::LockError>(())
    /// ```
    pub fn drain(&self) -> impl Iterator<Item = LockEvent<K>> + '_ {
        self.rx.try_iter()
    }

    /// Events this subscriber missed because its queue was full.
    ///
    /// # Examples
    ///
    /// ```
    /// let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
    /// let events = locks.subscribe(1);
    /// drop(locks.exclusive(&1).try_acquire()?); // two events, room for one
    /// assert_eq!(events.dropped(), 1);
    /// # Ok::<(), leasehold::LockError>(())
    /// ```
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

struct Subscriber<K> {
    tx: Sender<LockEvent<K>>,
    dropped: Arc<AtomicU64>,
    /// Its receiver was dropped: remove it.
    gone: AtomicBool,
}

/// The manager's subscribers.
pub(crate) struct EventBus<K> {
    /// The counter limit of a lock-free plain claim (`claim_limit`): the manager's counter limit
    /// (at least 1) while nobody listens, 0 while anyone does, so also whether anyone does
    /// (`is_active`). Changed under `subscribers`' write lock.
    claim_limit: AtomicU64,
    counter_limit: u64,
    subscribers: parking_lot::RwLock<Vec<Subscriber<K>>>,
    /// How to clone a key, set by the first `subscribe` (which requires `K: Clone`), so that the
    /// manager itself does not.
    clone_key: OnceLock<fn(&K) -> K>,
    pub(crate) dropped: AtomicU64,
}

impl<K> EventBus<K> {
    /// A bus with no subscriber, for a manager whose counter limit is `counter_limit`.
    pub(crate) fn new(counter_limit: u64) -> Self {
        // A limit of 0 would read as "someone listens" (the builder clamps it to at least 1).
        let counter_limit = counter_limit.max(1);
        EventBus {
            claim_limit: AtomicU64::new(counter_limit),
            counter_limit,
            subscribers: parking_lot::RwLock::new(Vec::new()),
            clone_key: OnceLock::new(),
            dropped: AtomicU64::new(0),
        }
    }

    /// Whether anyone listens.
    #[inline]
    pub(crate) fn is_active(&self) -> bool {
        self.claim_limit() == 0
    }

    /// The counter limit that the lock-free plain claim (`Table::try_fast_plain`) is given: the
    /// manager's own while nobody listens, and 0 while anyone does, so that every plain claim then
    /// fails there and takes the slow path, which tells the subscribers. The hot path's one test
    /// for events is thus the claim's counter compare, which it makes anyway: a plain acquisition
    /// that nobody listens to neither loads the event flag nor tests it. (An acquisition racing
    /// `subscribe` may load the old limit and go untold: it is concurrent with the subscription.)
    #[inline(always)]
    pub(crate) fn claim_limit(&self) -> u64 {
        // Relaxed: a limit, not a publication; see above for a racing subscription.
        self.claim_limit.load(Ordering::Relaxed)
    }

    pub(crate) fn subscribe(&self, capacity: usize) -> EventReceiver<K>
    where
        K: Clone,
    {
        let _ = self.clone_key.set(<K as Clone>::clone);
        let (tx, rx) = crossbeam_channel::bounded(capacity.max(1));
        let dropped = Arc::new(AtomicU64::new(0));
        let mut subs = self.subscribers.write();
        subs.push(Subscriber { tx, dropped: Arc::clone(&dropped), gone: AtomicBool::new(false) });
        self.claim_limit.store(0, Ordering::Relaxed);
        EventReceiver { rx, dropped }
    }

    /// Sends an event to every subscriber. `key` is read now (the caller has the slot pinned).
    #[cold]
    pub(crate) fn emit(&self, kind: EventKind, key: &K, mode: Mode, token: u64, owner: Option<Owner>, at_ns: u64) {
        if let Some(event) = self.prepare(kind, key, mode, token, owner, at_ns) {
            self.send(event);
        }
    }

    /// Builds an event now (reading the key while the caller has the slot pinned), to send later.
    #[cold]
    pub(crate) fn prepare(
        &self,
        kind: EventKind,
        key: &K,
        mode: Mode,
        token: u64,
        owner: Option<Owner>,
        at_ns: u64,
    ) -> Option<LockEvent<K>> {
        let clone_key = self.clone_key.get()?;
        Some(LockEvent {
            kind,
            key: clone_key(key),
            mode,
            token: FenceToken::from_u64(token),
            owner,
            at: Duration::from_nanos(at_ns),
        })
    }

    /// Sends a prepared event to every subscriber.
    #[cold]
    pub(crate) fn send(&self, event: LockEvent<K>) {
        let Some(clone_key) = self.clone_key.get() else { return };
        // The subscribers' read lock is a manager-wide line.
        crate::primitives::write_audit::note(&self.subscribers);
        let copy = |e: &LockEvent<K>| LockEvent { key: clone_key(&e.key), owner: e.owner.clone(), ..*e };
        let mut gone = false;
        {
            let subs = self.subscribers.read();
            for s in subs.iter() {
                match s.tx.try_send(copy(&event)) {
                    Ok(()) => {}
                    Err(TrySendError::Full(_)) => {
                        s.dropped.fetch_add(1, Ordering::Relaxed);
                        self.dropped.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(TrySendError::Disconnected(_)) => {
                        s.gone.store(true, Ordering::Relaxed);
                        gone = true;
                    }
                }
            }
        }
        if gone {
            let mut subs = self.subscribers.write();
            subs.retain(|s| !s.gone.load(Ordering::Relaxed));
            if subs.is_empty() {
                self.claim_limit.store(self.counter_limit, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(all(test, not(leasehold_loom)))]
mod tests {
    use super::*;

    /// The lock-free plain claim is refused (limit 0) exactly while anyone listens, and gets the
    /// manager's limit back once the last subscriber is found gone.
    #[test]
    fn the_claim_limit_follows_the_subscriptions() {
        let bus: EventBus<u64> = EventBus::new(1000);
        assert_eq!(bus.claim_limit(), 1000);
        let first = bus.subscribe(4);
        let second = bus.subscribe(4);
        assert_eq!(bus.claim_limit(), 0);
        drop(first);
        bus.emit(EventKind::Acquired, &1, Mode::Exclusive, 1, None, 0);
        assert!(bus.is_active());
        assert_eq!(bus.claim_limit(), 0, "one subscriber is left");
        drop(second);
        bus.emit(EventKind::Released, &1, Mode::Exclusive, 1, None, 0);
        assert!(!bus.is_active());
        assert_eq!(bus.claim_limit(), 1000);
        let _third = bus.subscribe(4);
        assert_eq!(bus.claim_limit(), 0);
    }
}
