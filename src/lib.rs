#![doc = include_str!("../README.md")]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

mod audit;
mod clock;
mod election;
mod error;
mod events;
mod expiry;
mod guard;
mod inspect;
mod lease;
mod loss;
mod manager;
mod metrics;
mod mode;
mod renew;
mod request;
mod service;
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
pub use election::{
    Campaign, ChangeKind, Leader, LeaderChange, LeaderChanges, Leadership, NextChange, OBSERVER_CAPACITY,
};
pub use error::{ConfigError, LockError};
pub use events::{EventKind, EventReceiver, LockEvent};
pub use guard::LockGuard;
pub use inspect::{HolderInfo, LockInfo, WaiterInfo};
pub use loss::{LossCause, Lost};
pub use manager::{Builder, DefaultHasher, LockManager};
pub use metrics::{HistogramSnapshot, MetricsSnapshot, HOLD_SAMPLE};
pub use mode::{Mode, Owner};
pub use renew::RenewerStall;
pub use request::{AcquireFuture, Request, MAX_TTL};
pub use token::{FenceToken, Fenced};
pub use word::{MAX_PERMITS, MAX_UNITS};
