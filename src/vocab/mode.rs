//! Lock modes and owner labels.

#![deny(unsafe_code)]

use std::fmt;
use std::sync::Arc;

/// Most units a key can hold: the capacity of a read/write key, so at most this many readers.
/// (The state word's layout, `engine/word.rs`, is checked at compile time to count this many.)
pub const MAX_UNITS: u32 = (1 << 20) - 1;
/// Most permits a semaphore key can have.
pub const MAX_PERMITS: u32 = MAX_UNITS - 1;

/// How a holder holds a key.
///
/// One counting model serves all three: a key has a capacity (a read/write key: [`MAX_UNITS`],
/// a semaphore key: its permits); a shared holder or a permit holder takes one unit, an exclusive
/// holder takes them all.
///
/// # Examples
///
/// ```
/// use leasehold::{LockManager, Mode};
/// let locks: LockManager<String> = LockManager::new();
/// let g = locks.semaphore("pool", 4).try_acquire()?;
/// assert_eq!(g.mode(), Mode::Semaphore(4));
/// # Ok::<(), leasehold::LockError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Alone: no other holder of any mode.
    Exclusive,
    /// With other shared holders (or as one permit of a semaphore key).
    Shared,
    /// One of `n` permits.
    Semaphore(u32),
}

impl Mode {
    /// Whether this mode takes the key's whole capacity.
    pub(crate) const fn is_exclusive(self) -> bool {
        matches!(self, Mode::Exclusive)
    }

    /// The capacity a key must have for this request, if the request fixes one.
    pub(crate) const fn capacity(self) -> u32 {
        match self {
            Mode::Semaphore(n) => n,
            Mode::Exclusive | Mode::Shared => MAX_UNITS,
        }
    }

    pub(crate) const fn code(self) -> u64 {
        match self {
            Mode::Exclusive => 0,
            Mode::Shared => 1,
            Mode::Semaphore(_) => 2,
        }
    }

    pub(crate) const fn from_code(code: u64, capacity: u32) -> Mode {
        match code {
            0 => Mode::Exclusive,
            1 => Mode::Shared,
            _ => Mode::Semaphore(capacity),
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mode::Exclusive => f.write_str("exclusive"),
            Mode::Shared => f.write_str("shared"),
            Mode::Semaphore(n) => write!(f, "semaphore({n})"),
        }
    }
}

/// A label naming who holds a lock (a worker, a transaction, a host): shown by introspection and
/// used to revoke everything one owner holds. Cheap to clone.
///
/// # Examples
///
/// ```
/// use leasehold::Owner;
/// let a = Owner::from("worker-7");
/// assert_eq!(a.as_str(), "worker-7");
/// assert_eq!(a, Owner::from(String::from("worker-7")));
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Owner(Arc<str>);

impl Owner {
    /// The label.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(leasehold::Owner::from("w").as_str(), "w");
    /// ```
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&str> for Owner {
    fn from(s: &str) -> Self {
        Owner(Arc::from(s))
    }
}

impl From<String> for Owner {
    fn from(s: String) -> Self {
        Owner(Arc::from(s))
    }
}

impl From<&Owner> for Owner {
    fn from(o: &Owner) -> Self {
        o.clone()
    }
}

impl fmt::Debug for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
