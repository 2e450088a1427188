//! Observation: metrics snapshots and their exporters, lock events and the audit log, and the
//! inspection of a key's holders and waiters. It reads the engine; the engine never calls it.

pub(crate) mod audit;
pub(crate) mod events;
pub(crate) mod inspect;
pub(crate) mod metrics;

pub use audit::AuditLog;
pub use events::{EventKind, EventReceiver, LockEvent};
pub use inspect::{HolderInfo, LockInfo, WaiterInfo};
pub use metrics::{HistogramSnapshot, MetricsSnapshot};
