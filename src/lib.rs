#![doc = include_str!("../README.md")]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

mod audit;
mod clock;
pub mod compat;
mod cycle;
mod detector;
mod error;
mod events;
mod expiry;
mod guard;
mod inspect;
mod lease;
mod manager;
mod many;
mod metrics;
mod mode;
mod request;
mod session;
mod slot;
mod sync;
mod table;
mod token;
mod wait;
#[doc(hidden)]
pub mod wheel;
#[doc(hidden)]
pub mod word;

pub use audit::AuditLog;
pub use clock::{Clock, ManualClock, MonotonicClock};
pub use cycle::{Cycle, CycleEdge, DeadlockStats, SessionId, SessionNode, VictimPolicy, WaitGraph};
pub use error::{ConfigError, LockError};
pub use events::{EventKind, EventReceiver, LockEvent};
pub use guard::LockGuard;
pub use inspect::{HolderInfo, LockInfo, WaiterInfo};
pub use manager::{Builder, DefaultHasher, LockManager};
pub use many::{ManyAcquire, ManyGuard, ManyRequest};
pub use metrics::{HistogramSnapshot, MetricsSnapshot, HOLD_SAMPLE};
pub use mode::{Mode, Owner};
pub use request::{AcquireFuture, Request, MAX_TTL};
pub use session::{Session, SessionAcquire, SessionGuard, SessionRequest};
pub use token::{FenceToken, Fenced};
pub use word::{MAX_PERMITS, MAX_UNITS};

/// The database-engine section of the docs (`docs-database.md`), so that its examples run as
/// doctests until it is folded into the README.
#[cfg(doctest)]
#[doc = include_str!("../docs-database.md")]
struct DocsDatabase;
