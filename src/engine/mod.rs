//! The engine: the lock table and its shards, slots, the state and lease words, holder records,
//! the wait queue, claiming and retrying, the registration of leases with the timer wheel, and
//! the reclamation of idle slots. It knows the vocabulary and the primitives, never the façade,
//! observation or the expiry driver (they call it, and hear back through callbacks).

pub(crate) mod capacity;
pub(crate) mod census;
pub(crate) mod core;
pub(crate) mod create;
pub(crate) mod holding;
pub(crate) mod lease;
pub(crate) mod matrix;
pub(crate) mod queue;
pub(crate) mod shard;
pub(crate) mod slot;
pub(crate) mod sweep;
pub(crate) mod table;
pub(crate) mod upgrade;
pub(crate) mod watch;
#[doc(hidden)]
pub mod word;
