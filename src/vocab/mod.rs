//! The vocabulary every layer speaks: lock modes and owner labels, fencing tokens, the error
//! kinds, the unit limits. Plain public value types with no behaviour over the table, at the
//! bottom so the engine can use them without knowing the façade (ARCHITECTURE.md: "Vocabulary").

pub mod compat;
pub(crate) mod deadlock;
pub(crate) mod error;
pub(crate) mod merge;
pub(crate) mod mode;
pub(crate) mod token;

pub use deadlock::{Cycle, CycleEdge, DeadlockStats, SessionId, SessionNode, VictimPolicy, WaitGraph};
pub use error::{ConfigError, LockError};
pub use mode::{Mode, Owner, MAX_PERMITS, MAX_UNITS};
pub use token::{FenceToken, MAX_TOKEN_FLOOR};
