//! The guard of a `lock_many` request: every key held, released together.

use std::borrow::Borrow;
use std::fmt;
use std::hash::{BuildHasher, Hash};

use crate::api::guard::LockGuard;
use crate::api::session::SessionGuard;
use crate::engine::table::DefaultHasher;
use crate::vocab::error::LockError;
use crate::vocab::token::FenceToken;

/// One held key of a [`ManyGuard`].
pub(crate) enum Held<'s, 'm, K, S> {
    Plain(LockGuard<'m, K, S>),
    Session(SessionGuard<'s, 'm, K, S>),
}

impl<'m, K, S> Held<'_, 'm, K, S> {
    fn guard(&self) -> &LockGuard<'m, K, S> {
        match self {
            Held::Plain(g) => g,
            Held::Session(g) => g,
        }
    }
}

/// Every key of a [`lock_many`](crate::LockManager::lock_many) request, held. Dropping it releases them
/// all (in reverse order); each key keeps its own fencing token.
///
/// # Examples
///
/// ```
/// use leasehold::Mode;
/// let locks: leasehold::LockManager<String> = leasehold::LockManager::new();
/// let all = locks.lock_many([("a", Mode::Exclusive), ("b", Mode::Shared)]).try_acquire()?;
/// let ta = all.token("a").unwrap();
/// assert!(all.token("c").is_none());
/// drop(all);
/// assert!(locks.exclusive("a").try_acquire()?.token() > ta);
/// # Ok::<(), leasehold::LockError>(())
/// ```
#[must_use = "dropping the guard releases every key at once"]
pub struct ManyGuard<'s, 'm, K, S = DefaultHasher> {
    pub(crate) held: Vec<Held<'s, 'm, K, S>>,
}

impl<K: Hash + Eq + fmt::Debug, S: BuildHasher> fmt::Debug for ManyGuard<'_, '_, K, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.held.iter().map(|h| h.guard())).finish()
    }
}

impl<'m, K, S> ManyGuard<'_, 'm, K, S> {
    /// How many keys are held (duplicates counted once).
    ///
    /// # Examples
    ///
    /// ```
    /// use leasehold::Mode;
    /// let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
    /// let all = locks.lock_many([(&1, Mode::Shared), (&1, Mode::Exclusive)]).try_acquire()?;
    /// assert_eq!(all.len(), 1);
    /// assert_eq!(all.iter().next().unwrap().mode(), Mode::Exclusive);   // the stronger mode
    /// # Ok::<(), leasehold::LockError>(())
    /// ```
    pub fn len(&self) -> usize {
        self.held.len()
    }

    /// Whether no key is held (an empty request).
    ///
    /// # Examples
    ///
    /// ```
    /// let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
    /// let none: [(&u64, leasehold::Mode); 0] = [];
    /// assert!(locks.lock_many(none).try_acquire()?.is_empty());
    /// # Ok::<(), leasehold::LockError>(())
    /// ```
    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// The guards, in canonical (ascending key) order.
    ///
    /// # Examples
    ///
    /// ```
    /// use leasehold::Mode;
    /// let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
    /// let all = locks.lock_many([(&2, Mode::Shared), (&1, Mode::Exclusive)]).try_acquire()?;
    /// let modes: Vec<Mode> = all.iter().map(|g| g.mode()).collect();
    /// assert_eq!(modes, [Mode::Exclusive, Mode::Shared]);
    /// # Ok::<(), leasehold::LockError>(())
    /// ```
    pub fn iter(&self) -> impl Iterator<Item = &LockGuard<'m, K, S>> + '_ {
        self.held.iter().map(|h| h.guard())
    }

    /// The keys, in canonical order.
    ///
    /// # Examples
    ///
    /// ```
    /// use leasehold::Mode;
    /// let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
    /// let all = locks.lock_many([(&2, Mode::Shared), (&1, Mode::Shared)]).try_acquire()?;
    /// assert_eq!(all.keys().copied().collect::<Vec<_>>(), [1, 2]);
    /// # Ok::<(), leasehold::LockError>(())
    /// ```
    pub fn keys(&self) -> impl Iterator<Item = &K> + '_ {
        self.held.iter().map(|h| h.guard().key())
    }

    /// The fencing token of `key`'s holding, if `key` is one of the keys.
    ///
    /// # Examples
    ///
    /// ```
    /// use leasehold::Mode;
    /// let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
    /// let all = locks.lock_many([(&1, Mode::Exclusive), (&2, Mode::Exclusive)]).try_acquire()?;
    /// assert!(all.token(&1).is_some() && all.token(&3).is_none());
    /// # Ok::<(), leasehold::LockError>(())
    /// ```
    pub fn token<Q>(&self, key: &Q) -> Option<FenceToken>
    where
        K: Borrow<Q>,
        Q: ?Sized + Eq,
    {
        self.iter().find(|g| g.key().borrow() == key).map(|g| g.token())
    }

    /// Releases every key now (in reverse order).
    ///
    /// # Errors
    ///
    /// The first [`LockError::Expired`] among them (the others are released all the same).
    ///
    /// # Examples
    ///
    /// ```
    /// use leasehold::Mode;
    /// let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
    /// locks.lock_many([(&1, Mode::Exclusive), (&2, Mode::Exclusive)]).try_acquire()?.release()?;
    /// assert!(locks.exclusive(&1).try_acquire().is_ok());
    /// # Ok::<(), leasehold::LockError>(())
    /// ```
    pub fn release(mut self) -> Result<(), LockError> {
        let mut first = Ok(());
        while let Some(h) = self.held.pop() {
            let r = match h {
                Held::Plain(g) => g.release(),
                Held::Session(g) => g.release(),
            };
            if first.is_ok() {
                first = r;
            }
        }
        first
    }
}

impl<K, S> Drop for ManyGuard<'_, '_, K, S> {
    fn drop(&mut self) {
        while let Some(h) = self.held.pop() {
            drop(h);
        }
    }
}
