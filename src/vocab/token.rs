//! Fencing tokens (the resource side of fencing is `api/fenced.rs`).
//!
//! Every acquisition of a key gets a token strictly greater than every token handed out before for
//! that key (for the life of the manager). A resource that remembers the highest token it has
//! accepted can therefore reject the late write of a holder whose lease ran out: that holder's
//! token is lower than the one its successor already wrote with.

#![deny(unsafe_code)]

use std::fmt;

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

/// The highest [`Builder::token_floor`](crate::Builder::token_floor): half the token range, so that
/// the tokens above it cannot run out.
pub const MAX_TOKEN_FLOOR: u64 = u64::MAX / 2;
