#![doc = include_str!("../README.md")]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

// The layers, top to bottom (ARCHITECTURE.md; `.ci/layers.py` checks that imports only point
// down): the public façade, observation, the expiry driver, the engine, the shared vocabulary,
// and the primitives.
mod api;
mod expiry;
mod observe;

mod engine;
mod primitives;
mod vocab;

pub use api::{AcquireFuture, Builder, DefaultHasher, Fenced, LockGuard, LockManager, Request};
#[cfg(not(leasehold_loom))]
pub use api::{BackendError, BackendGuard, BackendRequest, LockBackend, LockSpec, Wait};
pub use api::{Campaign, ChangeKind, Leader, LeaderChange, LeaderChanges, Leadership, NextChange, OBSERVER_CAPACITY};
pub use api::{LossCause, Lost, RenewerStall};
pub use api::{ManyAcquire, ManyGuard, ManyRequest, Session, SessionAcquire, SessionGuard, SessionRequest};
pub use api::{ModeChangeFailed, SessionUpgrade, UpgradableAcquire, UpgradableGuard, UpgradableRequest, UpgradeFuture};
pub use engine::lease::MAX_TTL;
pub use observe::{AuditLog, EventKind, EventReceiver, HistogramSnapshot, HolderInfo, LockEvent, LockInfo};
pub use observe::{MetricsSnapshot, WaiterInfo};
pub use primitives::clock::{Clock, ManualClock, MonotonicClock};
pub use primitives::counters::HOLD_SAMPLE;
pub use vocab::{ConfigError, FenceToken, LockError, Mode, Owner, MAX_PERMITS, MAX_TOKEN_FLOOR, MAX_UNITS};
pub use vocab::{Cycle, CycleEdge, DeadlockStats, SessionId, SessionNode, VictimPolicy, WaitGraph};

/// The compatibility matrix of the multi-granularity lock modes (IS, IX, S, SIX, U, X), as data.
pub use vocab::compat;

/// The state word's layout and its pure transitions (hidden: for the fuzz target and loom models).
#[doc(hidden)]
pub use engine::word;
/// The hierarchical timer wheel (hidden: for the fuzz target and the benchmark).
#[doc(hidden)]
pub use primitives::wheel;
