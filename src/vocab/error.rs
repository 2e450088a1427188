//! Errors: what went wrong, in words a caller can act on.

#![deny(unsafe_code)]

use std::fmt;
use std::time::Duration;

use crate::vocab::token::FenceToken;

/// Why an acquire, renew, release or fenced write did not happen.
///
/// # Examples
///
/// ```
/// use leasehold::{LockError, LockManager};
///
/// let locks: LockManager<String> = LockManager::new();
/// let _held = locks.exclusive("orders/17").try_acquire()?;
/// assert_eq!(locks.exclusive("orders/17").try_acquire().unwrap_err(), LockError::WouldBlock);
/// assert_eq!(locks.semaphore("pool", 0).try_acquire().unwrap_err(), LockError::InvalidPermits { permits: 0 });
/// # Ok::<(), LockError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LockError {
    /// `try_acquire` found the key held in a conflicting mode (or writers queued ahead of a reader).
    WouldBlock,
    /// `acquire_timeout` waited the whole timeout without getting the lock.
    TimedOut,
    /// The holding is gone: its lease deadline passed, or an operator revoked it. Its unit was (or
    /// will be) given to others, and its fencing token is stale.
    Expired,
    /// A semaphore key is live with a different number of permits than this request names.
    PermitMismatch {
        /// The permit count the live key has.
        live: u32,
        /// The permit count this request asked for.
        requested: u32,
    },
    /// A semaphore needs between 1 and [`MAX_PERMITS`](crate::MAX_PERMITS) permits.
    InvalidPermits {
        /// The permit count asked for.
        permits: u32,
    },
    /// A lease must be longer than zero, and its deadline must fit the clock's range.
    InvalidTtl {
        /// The lease length asked for.
        ttl: Duration,
    },
    /// The manager holds as many live slots as `max_slots` allows; release some locks first.
    Capacity {
        /// The configured bound on live slots.
        max_slots: usize,
    },
    /// `revoke` found no holding of the key with that token that can be revoked (plain holdings,
    /// without lease or owner, are ended by their guards alone).
    NotHeld,
    /// A session's wait would close a cycle of sessions waiting on each other (or passed the
    /// detection depth bound), and this request was chosen to fail. The caller should end the
    /// transaction: drop its guards, so that the others proceed.
    Deadlock {
        /// The sessions, keys and modes of the cycle, and the victim.
        cycle: Box<crate::vocab::deadlock::Cycle>,
    },
    /// A guard was asked to change its mode in a way it cannot: only an upgradable guard
    /// upgrades, only an exclusive guard of a read/write key (not a semaphore key) downgrades.
    InvalidModeChange {
        /// The guard's mode.
        from: crate::vocab::mode::Mode,
        /// The mode asked for.
        to: crate::vocab::mode::Mode,
    },
    /// A [`Fenced`](crate::Fenced) resource refused a write carrying a token older than one it
    /// has already accepted: the writer lost its lock since it took that token.
    StaleToken {
        /// The token the writer presented.
        presented: FenceToken,
        /// The highest token the resource has accepted.
        highest: FenceToken,
    },
}

impl fmt::Display for LockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LockError::WouldBlock => f.write_str("the lock is held in a conflicting mode"),
            LockError::TimedOut => f.write_str("timed out waiting for the lock"),
            LockError::Expired => f.write_str("the lease expired or was revoked; the lock is no longer held"),
            LockError::PermitMismatch { live, requested } => {
                write!(f, "the semaphore key is live with {live} permits, but this request asks for {requested}")
            }
            LockError::InvalidPermits { permits } => {
                write!(f, "a semaphore needs between 1 and {} permits, not {permits}", crate::vocab::mode::MAX_PERMITS)
            }
            LockError::InvalidTtl { ttl } => {
                write!(f, "a lease must be longer than zero and its deadline must fit the clock; got {ttl:?}")
            }
            LockError::Capacity { max_slots } => {
                write!(f, "the lock table is full ({max_slots} live slots); release locks or raise max_slots")
            }
            LockError::NotHeld => f.write_str("no revocable holding of that key has that token"),
            LockError::Deadlock { cycle } => write!(f, "deadlock: {cycle}"),
            LockError::InvalidModeChange { from, to } => {
                write!(f, "a {from} guard cannot change to {to} (only exclusive downgrades, on a read/write key)")
            }
            LockError::StaleToken { presented, highest } => {
                write!(f, "stale fencing token {presented}: the resource has already accepted {highest}")
            }
        }
    }
}

impl std::error::Error for LockError {}

/// A builder setting that cannot work.
///
/// # Examples
///
/// ```
/// use leasehold::{ConfigError, LockManager};
///
/// let err = LockManager::<u64>::builder().shards(3).build().unwrap_err();
/// assert_eq!(err, ConfigError::Shards { shards: 3 });
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// Shards must be a power of two between 1 and 65,536.
    Shards {
        /// The shard count asked for.
        shards: usize,
    },
    /// `max_slots` must be at least 1.
    MaxSlots {
        /// The bound asked for.
        max_slots: usize,
    },
    /// The timer-wheel tick must be between 1 microsecond and 1 second.
    Tick {
        /// The tick asked for.
        tick: Duration,
    },
    /// The reaper thread could not be started.
    Reaper {
        /// What the operating system said.
        reason: String,
    },
    /// The token floor must be at most [`MAX_TOKEN_FLOOR`](crate::vocab::token::MAX_TOKEN_FLOOR).
    TokenFloor {
        /// The floor asked for.
        floor: u64,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Shards { shards } => {
                write!(f, "shards must be a power of two between 1 and 65536, not {shards}")
            }
            ConfigError::MaxSlots { max_slots } => {
                write!(f, "max_slots must be at least 1, not {max_slots}")
            }
            ConfigError::Tick { tick } => {
                write!(f, "the timer tick must be between 1 microsecond and 1 second, not {tick:?}")
            }
            ConfigError::Reaper { reason } => {
                write!(f, "could not start the reaper thread: {reason}")
            }
            ConfigError::TokenFloor { floor } => {
                write!(f, "the token floor must be at most {}, not {floor}", crate::vocab::token::MAX_TOKEN_FLOOR)
            }
        }
    }
}

impl std::error::Error for ConfigError {}
