//! The expiry driver: who turns the timer wheel and what happens when an entry fires. The engine
//! registers slots with the wheel (`engine/watch.rs`); this layer fires them.

pub(crate) mod driver;
#[cfg(not(leasehold_loom))]
pub(crate) mod reaper;
