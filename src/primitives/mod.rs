//! Primitives with no knowledge of locks: the sync shim (what loom swaps), clocks (and the
//! kernel's clock function, `vdso`), the timer wheel, and the counters and histograms the engine
//! bumps.

pub(crate) mod clock;
pub(crate) mod counters;
pub(crate) mod sync;
#[cfg(not(leasehold_loom))]
pub(crate) mod timer;
#[cfg(target_os = "linux")]
pub(crate) mod vdso;
#[doc(hidden)]
pub mod wheel;
pub(crate) mod write_audit;
