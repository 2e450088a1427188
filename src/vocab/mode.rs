//! Lock modes and owner labels.

#![deny(unsafe_code)]

use std::fmt;
use std::sync::Arc;

use crate::vocab::compat::Granule;

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
    /// Upgradable (update, `U`): beside shared holders, excludes exclusive holders and other
    /// upgradables; its guard can become exclusive without letting a writer in between.
    Upgradable,
    /// Intention shared (`IS`): will take shared locks on some keys below this one in a
    /// hierarchy. Beside every mode but exclusive.
    IntentShared,
    /// Intention exclusive (`IX`): will take exclusive (or shared) locks below. Beside `IS` and
    /// `IX` only.
    IntentExclusive,
    /// Shared plus intention exclusive (`SIX`): reads the whole node, writes some below. Beside
    /// `IS` only.
    SharedIntentExclusive,
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
            _ => MAX_UNITS,
        }
    }

    /// An intention mode (`IS`, `IX`, `SIX`): decided by the compatibility matrix under the slot
    /// lock rather than by the state word alone.
    #[inline(always)]
    pub(crate) const fn is_intention(self) -> bool {
        matches!(self, Mode::IntentShared | Mode::IntentExclusive | Mode::SharedIntentExclusive)
    }

    /// The mode's place in the compatibility matrix (`compat.rs`). A permit is a shared unit.
    pub const fn granule(self) -> Granule {
        match self {
            Mode::Exclusive => Granule::X,
            Mode::Shared | Mode::Semaphore(_) => Granule::S,
            Mode::Upgradable => Granule::U,
            Mode::IntentShared => Granule::IS,
            Mode::IntentExclusive => Granule::IX,
            Mode::SharedIntentExclusive => Granule::SIX,
        }
    }

    /// The mode a request of the matrix mode `g` makes.
    pub const fn from_granule(g: Granule) -> Mode {
        match g {
            Granule::IS => Mode::IntentShared,
            Granule::IX => Mode::IntentExclusive,
            Granule::S => Mode::Shared,
            Granule::SIX => Mode::SharedIntentExclusive,
            Granule::U => Mode::Upgradable,
            Granule::X => Mode::Exclusive,
        }
    }

    /// Bits of [`code`](Mode::code).
    pub(crate) const CODE_BITS: u32 = 3;
    pub(crate) const CODE_MASK: u64 = (1 << Self::CODE_BITS) - 1;

    pub(crate) const fn code(self) -> u64 {
        match self {
            Mode::Exclusive => 0,
            Mode::Shared => 1,
            Mode::Semaphore(_) => 2,
            Mode::Upgradable => 3,
            Mode::IntentShared => 4,
            Mode::IntentExclusive => 5,
            Mode::SharedIntentExclusive => 6,
        }
    }

    pub(crate) const fn from_code(code: u64, capacity: u32) -> Mode {
        match code & Self::CODE_MASK {
            0 => Mode::Exclusive,
            1 => Mode::Shared,
            3 => Mode::Upgradable,
            4 => Mode::IntentShared,
            5 => Mode::IntentExclusive,
            6 => Mode::SharedIntentExclusive,
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
            Mode::Upgradable => f.write_str("upgradable"),
            Mode::IntentShared => f.write_str("intent shared"),
            Mode::IntentExclusive => f.write_str("intent exclusive"),
            Mode::SharedIntentExclusive => f.write_str("shared intent exclusive"),
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

#[cfg(test)]
mod tests {
    use super::Mode::*;
    use super::*;

    #[test]
    fn codes_round_trip() {
        for m in [Exclusive, Shared, Semaphore(7), Upgradable, IntentShared, IntentExclusive, SharedIntentExclusive] {
            assert_eq!(Mode::from_code(m.code(), 7), m);
            assert!(m.code() <= Mode::CODE_MASK);
            if !matches!(m, Semaphore(_)) {
                assert_eq!(Mode::from_granule(m.granule()), m);
            }
        }
    }
}
