//! What the deadlock detector shows of a manager: the wait-for graph, the recent deadlocks and
//! the detector's counters.

use std::fmt;
use std::hash::{BuildHasher, Hash};

use crate::api::manager::LockManager;

impl<K, S> LockManager<K, S>
where
    K: Hash + Eq + Clone + fmt::Debug + Send + Sync + 'static,
    S: BuildHasher + Send + Sync + 'static,
{
    /// The wait-for graph now (sessions, holdings, waits), for a picture: see
    /// [`WaitGraph::to_dot`](crate::WaitGraph::to_dot).
    ///
    /// # Examples
    ///
    /// ```
    /// let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
    /// assert!(locks.wait_graph().sessions.is_empty());
    /// ```
    pub fn wait_graph(&self) -> crate::vocab::deadlock::WaitGraph {
        self.detector.wait_graph()
    }
}

impl<K, S> LockManager<K, S> {
    /// The most recent deadlocks (oldest first; a bounded ring, see `Builder::deadlock_history`).
    ///
    /// # Examples
    ///
    /// ```
    /// let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
    /// assert!(locks.deadlocks().is_empty());
    /// ```
    pub fn deadlocks(&self) -> Vec<crate::vocab::deadlock::Cycle> {
        self.detector.recent()
    }

    /// The detector's counters: searches, deadlocks, time spent searching.
    ///
    /// # Examples
    ///
    /// ```
    /// let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
    /// let tx = locks.session("t");
    /// let _g = tx.exclusive(&1).acquire()?;   // uncontended: no search
    /// assert_eq!(locks.deadlock_stats().searches, 0);
    /// # Ok::<(), leasehold::LockError>(())
    /// ```
    pub fn deadlock_stats(&self) -> crate::vocab::deadlock::DeadlockStats {
        self.detector.stats()
    }
}
