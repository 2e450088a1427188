//! The public façade: the manager and its builder, requests and their future, guards, fenced
//! resources. Thin: it checks arguments, calls the engine, and turns what the engine reports into
//! events and metrics (`state.rs`).

// The backend trait's timed wait needs the process timer, which loom builds leave out.
#[cfg(not(leasehold_loom))]
pub(crate) mod backend;
#[cfg(not(leasehold_loom))]
pub(crate) mod backend_local;
pub(crate) mod board;
pub(crate) mod builder;
#[cfg(all(test, not(leasehold_loom)))]
mod create_tests;
pub(crate) mod deadlocks;
pub(crate) mod detector;
pub(crate) mod downgrade;
pub(crate) mod election;
pub(crate) mod fenced;
pub(crate) mod future;
pub(crate) mod guard;
pub(crate) mod hierarchy;
pub(crate) mod leadership;
pub(crate) mod loss;
pub(crate) mod manager;
pub(crate) mod many;
pub(crate) mod many_guard;
pub(crate) mod request;
pub(crate) mod service;
pub(crate) mod session;
pub(crate) mod session_upgrade;
pub(crate) mod state;
pub(crate) mod upgradable;
pub(crate) mod upgrade_future;
#[cfg(all(test, not(leasehold_loom)))]
mod write_audit_tests;

pub use crate::engine::table::DefaultHasher;
#[cfg(not(leasehold_loom))]
pub use backend::{BackendError, BackendGuard, BackendRequest, LockBackend, LockSpec, Wait};
pub use board::{ChangeKind, Leader, LeaderChange, LeaderChanges, NextChange, OBSERVER_CAPACITY};
pub use builder::Builder;
pub use election::Campaign;
pub use fenced::Fenced;
pub use future::AcquireFuture;
pub use guard::LockGuard;
pub use leadership::Leadership;
pub use loss::{LossCause, Lost};
pub use manager::{LockManager, RenewerStall};
pub use many::{ManyAcquire, ManyRequest};
pub use many_guard::ManyGuard;
pub use request::Request;
pub use session::{Session, SessionAcquire, SessionGuard, SessionRequest};
pub use session_upgrade::SessionUpgrade;
pub use upgradable::{ModeChangeFailed, UpgradableAcquire, UpgradableGuard, UpgradableRequest};
pub use upgrade_future::UpgradeFuture;

/// The database-engine section of the docs (`docs-database.md`), so that its examples run as
/// doctests until it is folded into the README.
#[cfg(doctest)]
#[doc = include_str!("../../docs-database.md")]
struct DocsDatabase;
