//! # leasehold
//!
//! An embedded, in-process lock manager: a table of locks keyed by resource id, with exclusive,
//! shared (read/write, writers not starved) and semaphore modes, leases that expire on a
//! hierarchical timer wheel, and fencing tokens that let a resource reject a stale holder's late
//! writes. The hot path is one lock-free lookup and one compare-exchange.
//!
//! ```
//! use leasehold::{Fenced, LockError, LockManager};
//! use std::time::Duration;
//!
//! let locks: LockManager<String> = LockManager::new();
//! let account = Fenced::new(100_i64);
//!
//! let g = locks.exclusive("acct/7").lease(Duration::from_secs(30)).acquire()?;
//! account.write(g.token(), |balance| *balance -= 30)?;
//! g.renew(Duration::from_secs(30))?;
//! g.release()?;
//!
//! let readers = (locks.shared("acct/7").try_acquire()?, locks.shared("acct/7").try_acquire()?);
//! assert_eq!(locks.exclusive("acct/7").try_acquire().unwrap_err(), LockError::WouldBlock);
//! drop(readers);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! See `README.md` for the design, the guarantees and the benchmarks.

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

mod clock;
mod error;
mod expiry;
mod guard;
mod lease;
mod manager;
mod mode;
mod request;
mod slot;
mod sync;
mod table;
mod token;
mod wait;
#[doc(hidden)]
pub mod wheel;
#[doc(hidden)]
pub mod word;

pub use clock::{Clock, ManualClock, MonotonicClock};
pub use error::{ConfigError, LockError};
pub use guard::LockGuard;
pub use manager::{Builder, DefaultHasher, LockManager};
pub use mode::{Mode, Owner};
pub use request::{AcquireFuture, Request, MAX_TTL};
pub use token::{FenceToken, Fenced};
pub use word::{MAX_PERMITS, MAX_UNITS};
