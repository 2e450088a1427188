//! Fencing tokens and the resource side of fencing.
//!
//! Every acquisition of a key gets a token strictly greater than every token handed out before for
//! that key (for the life of the manager). A resource that remembers the highest token it has
//! accepted can therefore reject the late write of a holder whose lease ran out: that holder's
//! token is lower than the one its successor already wrote with.

#![deny(unsafe_code)]

use std::fmt;

use crate::error::LockError;

/// A fencing token: strictly increasing per key, comparable only between holdings of one key.
///
/// # Examples
///
/// ```
/// use leasehold::LockManager;
///
/// let locks: LockManager<String> = LockManager::new();
/// let first = locks.exclusive("k").try_acquire()?.token();
/// let second = locks.exclusive("k").try_acquire()?.token();
/// assert!(second > first);
/// println!("holding with token {second}");
/// # Ok::<(), leasehold::LockError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct FenceToken(u64);

impl FenceToken {
    /// The token as a number, e.g. to send to a remote resource.
    ///
    /// # Examples
    ///
    /// ```
    /// use leasehold::FenceToken;
    /// assert_eq!(FenceToken::from_u64(7).as_u64(), 7);
    /// ```
    pub const fn as_u64(self) -> u64 {
        self.0
    }

    /// A token from a number, e.g. one received from a remote holder.
    ///
    /// # Examples
    ///
    /// ```
    /// use leasehold::FenceToken;
    /// assert!(FenceToken::from_u64(2) > FenceToken::from_u64(1));
    /// ```
    pub const fn from_u64(value: u64) -> Self {
        FenceToken(value)
    }
}

impl fmt::Display for FenceToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// A value guarded by fencing: it keeps the highest token it has accepted and refuses a write that
/// carries a lower one.
///
/// Writes carrying the same token as the highest are accepted (one holder may write many times).
/// A `Fenced` is for one key's resource: tokens of different keys are not comparable.
///
/// # Examples
///
/// ```
/// use leasehold::{Fenced, LockError, LockManager};
///
/// let locks: LockManager<String> = LockManager::new();
/// let balance = Fenced::new(100_i64);
///
/// let old = locks.exclusive("acct").try_acquire()?;
/// let stale = old.token();
/// drop(old);
/// let new = locks.exclusive("acct").try_acquire()?;
/// balance.write(new.token(), |b| *b += 5)?;
/// // The first holder's late write is refused.
/// assert!(matches!(balance.write(stale, |b| *b -= 100), Err(LockError::StaleToken { .. })));
/// assert_eq!(balance.read(|b| *b), 105);
/// # Ok::<(), LockError>(())
/// ```
#[derive(Debug, Default)]
pub struct Fenced<T> {
    state: parking_lot::Mutex<FencedState<T>>,
    /// The manager's count of refused writes, for resources made by `LockManager::fenced`.
    counter: Option<std::sync::Arc<std::sync::atomic::AtomicU64>>,
}

#[derive(Debug, Default)]
struct FencedState<T> {
    highest: Option<FenceToken>,
    rejected: u64,
    value: T,
}

impl<T> Fenced<T> {
    /// A resource that has accepted no token yet.
    ///
    /// # Examples
    ///
    /// ```
    /// let cell = leasehold::Fenced::new(String::new());
    /// assert_eq!(cell.highest(), None);
    /// ```
    pub fn new(value: T) -> Self {
        Fenced { state: parking_lot::Mutex::new(FencedState { highest: None, rejected: 0, value }), counter: None }
    }

    pub(crate) fn counted(value: T, counter: std::sync::Arc<std::sync::atomic::AtomicU64>) -> Self {
        Fenced { counter: Some(counter), ..Fenced::new(value) }
    }

    /// Applies `f` to the value if `token` is at least the highest token accepted so far, and
    /// remembers `token`.
    ///
    /// # Errors
    ///
    /// [`LockError::StaleToken`] if a higher token was accepted before; the value is untouched.
    ///
    /// # Examples
    ///
    /// ```
    /// use leasehold::{Fenced, FenceToken};
    /// let cell = Fenced::new(0);
    /// assert!(cell.write(FenceToken::from_u64(2), |v| *v = 2).is_ok());
    /// assert!(cell.write(FenceToken::from_u64(1), |v| *v = 1).is_err());
    /// assert_eq!(cell.read(|v| *v), 2);
    /// ```
    pub fn write<R>(&self, token: FenceToken, f: impl FnOnce(&mut T) -> R) -> Result<R, LockError> {
        let mut state = self.state.lock();
        if let Some(highest) = state.highest {
            if token < highest {
                state.rejected += 1;
                if let Some(c) = &self.counter {
                    c.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                return Err(LockError::StaleToken { presented: token, highest });
            }
        }
        state.highest = Some(token);
        Ok(f(&mut state.value))
    }

    /// Reads the value.
    ///
    /// # Examples
    ///
    /// ```
    /// let cell = leasehold::Fenced::new(vec![1, 2]);
    /// assert_eq!(cell.read(|v| v.len()), 2);
    /// ```
    pub fn read<R>(&self, f: impl FnOnce(&T) -> R) -> R {
        f(&self.state.lock().value)
    }

    /// The highest token accepted so far.
    ///
    /// # Examples
    ///
    /// ```
    /// use leasehold::{Fenced, FenceToken};
    /// let cell = Fenced::new(());
    /// cell.write(FenceToken::from_u64(9), |_| ()).unwrap();
    /// assert_eq!(cell.highest(), Some(FenceToken::from_u64(9)));
    /// ```
    pub fn highest(&self) -> Option<FenceToken> {
        self.state.lock().highest
    }

    /// How many writes this resource has refused as stale.
    ///
    /// # Examples
    ///
    /// ```
    /// use leasehold::{Fenced, FenceToken};
    /// let cell = Fenced::new(());
    /// cell.write(FenceToken::from_u64(9), |_| ()).unwrap();
    /// let _ = cell.write(FenceToken::from_u64(3), |_| ());
    /// assert_eq!(cell.rejected(), 1);
    /// ```
    pub fn rejected(&self) -> u64 {
        self.state.lock().rejected
    }

    /// The value, consuming the resource.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(leasehold::Fenced::new(3).into_inner(), 3);
    /// ```
    pub fn into_inner(self) -> T {
        self.state.into_inner().value
    }
}
