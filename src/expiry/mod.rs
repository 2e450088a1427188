//! The expiry driver: who turns the timer wheel and what happens when an entry fires. The engine
//! registers slots with the wheel (`engine/watch.rs`); this layer fires them. The keep-alive
//! renewer (`renewer.rs`) is the other half of a lease's life: it pushes deadlines on.

pub(crate) mod driver;
#[cfg(not(leasehold_loom))]
pub(crate) mod reaper;
pub(crate) mod renewer;
