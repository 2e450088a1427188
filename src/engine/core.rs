//! What every slot protocol needs from its table, and nothing generic: the clock, the counter
//! limit, the timer wheel to register leases with, and the shards' counters.

use crate::engine::watch::Wheelhouse;
use crate::primitives::clock::ClockSource;
use crate::primitives::counters::Stats;

/// What the slot protocols need from the manager (nothing generic).
pub(crate) struct Core {
    pub(crate) clock: ClockSource,
    /// The largest acquisition counter a claim may produce (see `word::COUNTER_MAX`).
    pub(crate) counter_limit: u64,
    pub(crate) wheel: Wheelhouse,
    pub(crate) stats: Stats,
}
