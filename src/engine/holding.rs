//! Holder records and the holdings they describe: a slot's `Record`s (token, lease word, mode and
//! units, start time), where a holding's record lives (`RecordRef`), what a guard carries
//! (`Holding`), and what a request asks for (`Ask`).

use crate::engine::lease;
use crate::engine::word::{Need, RecordIdx};
use crate::primitives::counters::HOLD_SAMPLE;
use crate::primitives::sync::{AtomicU64, Ordering};
use crate::vocab::mode::{Mode, Owner};

/// A holding's mode and units, packed: `mode code | units << 2`.
#[inline]
pub(crate) const fn meta(mode: Mode, units: u32) -> u64 {
    mode.code() | ((units as u64) << 2)
}

/// "Not known" for `Record::acquired_ns`.
pub(crate) const UNKNOWN_TIME: u64 = u64::MAX;

/// One holding's record: written by the claimer after its claim, read by its guard, the reaper,
/// contenders and introspection.
#[derive(Debug)]
pub(crate) struct Record {
    /// The holding's fencing token. Written before the lease word is published.
    pub(crate) token: AtomicU64,
    /// The lease word (`lease.rs`): the one word renew, release and expiry compare-exchange.
    pub(crate) lease: AtomicU64,
    /// `meta(mode, units)` of a managed holding.
    pub(crate) meta: AtomicU64,
    /// When a managed holding began, in clock nanoseconds.
    pub(crate) acquired_ns: AtomicU64,
}

impl Record {
    pub(crate) fn new() -> Self {
        Record {
            token: AtomicU64::new(0),
            lease: AtomicU64::new(lease::FREE),
            meta: AtomicU64::new(0),
            acquired_ns: AtomicU64::new(UNKNOWN_TIME),
        }
    }

    /// Units of the managed holding in this record (plain holdings keep theirs in the lease word).
    pub(crate) fn units(&self) -> u32 {
        (self.meta.load(Ordering::Relaxed) >> 2) as u32
    }
}

/// Where a holding's record lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RecordRef {
    /// One of the slot's inline records; its bit is in the state word.
    Inline(RecordIdx),
    /// An overflow record (all inline records were taken), at this index of `SlotInner::overflow`.
    Overflow(u32),
}

/// What a guard carries to identify its holding.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Holding {
    pub(crate) record: RecordRef,
    /// Stable pointer to the record (inline records live in the slot, overflow records in boxes
    /// that live as long as the slot's memory).
    pub(crate) rec: *const Record,
    pub(crate) token: u64,
    pub(crate) units: u32,
    /// Leased or owned: ended through the lease word, by the guard or by an expirer or revoker.
    pub(crate) managed: bool,
    /// Has an owner label to clear when it ends.
    pub(crate) owned: bool,
}

impl Holding {
    /// Whether this holding is one of the one-in-`HOLD_SAMPLE` timed for the hold-time histogram:
    /// its token picks it, so choosing costs a test of a value at hand. Its start time is then in
    /// its record's `acquired_ns`.
    #[inline]
    pub(crate) fn is_sampled(&self) -> bool {
        self.token % HOLD_SAMPLE == 0
    }
}

// SAFETY: `rec` points into type-stable slot memory owned by the manager, which the guard borrows;
// all access through it is to atomics.
unsafe impl Send for Holding {}
// SAFETY: as above.
unsafe impl Sync for Holding {}

/// What a request asks for.
#[derive(Clone, Debug)]
pub(crate) struct Ask {
    pub(crate) mode: Mode,
    pub(crate) ttl_ns: Option<u64>,
    pub(crate) owner: Option<Owner>,
}

impl Ask {
    #[inline]
    pub(crate) fn managed(&self) -> bool {
        self.ttl_ns.is_some() | self.owner.is_some()
    }

    #[inline]
    pub(crate) fn need(&self, privileged: bool) -> Need {
        Need { exclusive: self.mode.is_exclusive(), privileged, watch: self.ttl_ns.is_some() }
    }
}
