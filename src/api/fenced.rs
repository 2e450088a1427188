//! The resource side of fencing: a value that refuses writes carrying a token lower than the
//! highest it has accepted.

#![deny(unsafe_code)]

use std::sync::Arc;

use crate::primitives::sync::untracked::{AtomicU64, Ordering};
use crate::vocab::error::LockError;
use crate::vocab::token::FenceToken;

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
    counter: Option<Arc<AtomicU64>>,
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

    pub(crate) fn counted(value: T, counter: Arc<AtomicU64>) -> Self {
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
                    c.fetch_add(1, Ordering::Relaxed);
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
