//! Requests in the intention modes of hierarchical (multi-granularity) locking: IS, IX and SIX,
//! beside shared (S) and exclusive (X) on the one compatibility matrix (`compat.rs`).
//!
//! A database locks a table key in an intention mode before it locks row keys below it: IX on
//! the table, then X on a row. Row writers share the table (IX beside IX); a table scan takes S on
//! the table and waits for the row writers (S against IX), and holds off new ones while it reads.
//! The crate does not know which key is below which: the caller names the hierarchy by the order
//! in which it locks (parent first).

use std::borrow::Borrow;
use std::fmt;
use std::hash::{BuildHasher, Hash};

use crate::api::manager::LockManager;
use crate::api::request::Request;
use crate::api::session::{Session, SessionRequest};
use crate::vocab::mode::Mode;

impl<K, S> LockManager<K, S>
where
    K: Hash + Eq + Send + Sync + 'static,
    S: BuildHasher + Send + Sync + 'static,
{
    /// A request for `key` in intention shared mode (IS): the caller will take shared locks on
    /// keys below it. Beside every mode but exclusive.
    ///
    /// # Examples
    ///
    /// ```
    /// use leasehold::{LockError, LockManager};
    /// let locks: LockManager<String> = LockManager::new();
    /// let reader = locks.intent_shared("table/7").try_acquire()?;
    /// let scan = locks.shared("table/7").try_acquire()?; // IS beside S
    /// assert_eq!(locks.exclusive("table/7").try_acquire().unwrap_err(), LockError::WouldBlock);
    /// # Ok::<(), LockError>(())
    /// ```
    pub fn intent_shared<'m, 'q, Q>(&'m self, key: &'q Q) -> Request<'m, 'q, K, Q, S>
    where
        K: Borrow<Q> + From<Q::Owned>,
        Q: ?Sized + Hash + Eq + ToOwned,
    {
        Request::new(&self.state, key, Mode::IntentShared)
    }

    /// A request for `key` in intention exclusive mode (IX): the caller will take exclusive (or
    /// shared) locks on keys below it. Beside IS and IX only; a shared holder of the key (a scan
    /// of the whole table) waits for it, and it waits for one.
    ///
    /// # Examples
    ///
    /// ```
    /// use leasehold::{LockError, LockManager};
    /// let locks: LockManager<String> = LockManager::new();
    /// let t1 = locks.intent_exclusive("table/7").try_acquire()?;
    /// let r1 = locks.exclusive("table/7/row/1").try_acquire()?;
    /// let t2 = locks.intent_exclusive("table/7").try_acquire()?; // another row writer
    /// assert_eq!(locks.shared("table/7").try_acquire().unwrap_err(), LockError::WouldBlock);
    /// # Ok::<(), LockError>(())
    /// ```
    pub fn intent_exclusive<'m, 'q, Q>(&'m self, key: &'q Q) -> Request<'m, 'q, K, Q, S>
    where
        K: Borrow<Q> + From<Q::Owned>,
        Q: ?Sized + Hash + Eq + ToOwned,
    {
        Request::new(&self.state, key, Mode::IntentExclusive)
    }

    /// A request for `key` in shared intention exclusive mode (SIX): the caller reads all of it
    /// and will write some keys below it. Beside IS only.
    ///
    /// # Examples
    ///
    /// ```
    /// use leasehold::{LockError, LockManager, Mode};
    /// let locks: LockManager<String> = LockManager::new();
    /// let six = locks.shared_intent_exclusive("table/7").try_acquire()?;
    /// assert_eq!(six.mode(), Mode::SharedIntentExclusive);
    /// let is = locks.intent_shared("table/7").try_acquire()?;
    /// assert_eq!(locks.intent_exclusive("table/7").try_acquire().unwrap_err(), LockError::WouldBlock);
    /// # Ok::<(), LockError>(())
    /// ```
    pub fn shared_intent_exclusive<'m, 'q, Q>(&'m self, key: &'q Q) -> Request<'m, 'q, K, Q, S>
    where
        K: Borrow<Q> + From<Q::Owned>,
        Q: ?Sized + Hash + Eq + ToOwned,
    {
        Request::new(&self.state, key, Mode::SharedIntentExclusive)
    }
}

impl<'m, K, S> Session<'m, K, S>
where
    K: Hash + Eq + Clone + fmt::Debug + Send + Sync + 'static,
    S: BuildHasher + Send + Sync + 'static,
{
    /// [`LockManager::intent_shared`] on behalf of this session: its waits enter the wait-for
    /// graph, judged by the matrix.
    ///
    /// # Examples
    ///
    /// ```
    /// let locks: leasehold::LockManager<String> = leasehold::LockManager::new();
    /// let tx = locks.session("txn-1");
    /// let t = tx.intent_shared("table/7").try_acquire()?;
    /// assert_eq!(t.mode(), leasehold::Mode::IntentShared);
    /// # Ok::<(), leasehold::LockError>(())
    /// ```
    pub fn intent_shared<'s, 'q, Q>(&'s self, key: &'q Q) -> SessionRequest<'s, 'm, 'q, K, Q, S>
    where
        K: Borrow<Q> + From<Q::Owned>,
        Q: ?Sized + Hash + Eq + ToOwned,
    {
        self.request(key, Mode::IntentShared)
    }

    /// [`LockManager::intent_exclusive`] on behalf of this session.
    ///
    /// # Examples
    ///
    /// ```
    /// let locks: leasehold::LockManager<String> = leasehold::LockManager::new();
    /// let tx = locks.session("txn-1");
    /// let t = tx.intent_exclusive("table/7").try_acquire()?;
    /// let r = tx.exclusive("table/7/row/1").try_acquire()?;
    /// # Ok::<(), leasehold::LockError>(())
    /// ```
    pub fn intent_exclusive<'s, 'q, Q>(&'s self, key: &'q Q) -> SessionRequest<'s, 'm, 'q, K, Q, S>
    where
        K: Borrow<Q> + From<Q::Owned>,
        Q: ?Sized + Hash + Eq + ToOwned,
    {
        self.request(key, Mode::IntentExclusive)
    }

    /// [`LockManager::shared_intent_exclusive`] on behalf of this session.
    ///
    /// # Examples
    ///
    /// ```
    /// let locks: leasehold::LockManager<String> = leasehold::LockManager::new();
    /// let tx = locks.session("txn-1");
    /// let t = tx.shared_intent_exclusive("table/7").try_acquire()?;
    /// assert!(locks.intent_exclusive("table/7").try_acquire().is_err());
    /// # Ok::<(), leasehold::LockError>(())
    /// ```
    pub fn shared_intent_exclusive<'s, 'q, Q>(&'s self, key: &'q Q) -> SessionRequest<'s, 'm, 'q, K, Q, S>
    where
        K: Borrow<Q> + From<Q::Owned>,
        Q: ?Sized + Hash + Eq + ToOwned,
    {
        self.request(key, Mode::SharedIntentExclusive)
    }
}
