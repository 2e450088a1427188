//! Primitives with no knowledge of locks: the sync shim (what loom swaps), clocks, the timer
//! wheel, and the counters and histograms the engine bumps.

pub(crate) mod clock;
pub(crate) mod counters;
pub(crate) mod sync;
#[cfg(not(leasehold_loom))]
pub(crate) mod timer;
#[doc(hidden)]
pub mod wheel;
