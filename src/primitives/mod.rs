//! Primitives with no knowledge of locks: the sync shim (what loom swaps), clocks, the timer
//! wheel, and the counters and histograms the engine bumps.

pub(crate) mod clock;
pub(crate) mod counters;
pub(crate) mod sync;
#[doc(hidden)]
pub mod wheel;
