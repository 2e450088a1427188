//! Introspection: who holds what, since when, until when, and who is waiting.

#![deny(unsafe_code)]

use std::time::Duration;

use crate::engine::holding::{Record, RecordRef, UNKNOWN_TIME};
use crate::engine::lease;
use crate::engine::slot::{Slot, SlotInner};
use crate::engine::word::{self, RecordIdx, INLINE_RECORDS, MAX_UNITS};
use crate::primitives::sync::Ordering;
use crate::vocab::mode::{Mode, Owner};
use crate::vocab::token::FenceToken;

/// The state of one key's lock: its holders and its waiters.
///
/// A snapshot taken while other threads work: a holding that begins or ends during the snapshot
/// may or may not be in it, but everything in it was true at some instant of the snapshot.
///
/// # Examples
///
/// ```
/// use leasehold::{LockManager, Mode};
/// use std::time::Duration;
///
/// let locks: LockManager<String> = LockManager::new();
/// let g = locks.exclusive("orders/17").lease(Duration::from_secs(30)).owner("worker-3").try_acquire()?;
/// let info = locks.inspect("orders/17").expect("held");
/// assert_eq!(info.mode, Some(Mode::Exclusive));
/// assert_eq!(info.holders.len(), 1);
/// let h = &info.holders[0];
/// assert_eq!((h.token, h.owner.as_ref().unwrap().as_str()), (g.token(), "worker-3"));
/// assert!(h.expires_at.unwrap() > locks.now());
/// assert!(info.waiters.is_empty());
/// # Ok::<(), leasehold::LockError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct LockInfo<K> {
    /// The key.
    pub key: K,
    /// How it is held now: `Semaphore(n)` on a semaphore key; on a read/write key the weakest
    /// mode that covers every holder's (the matrix's join: IS and IX holders make IX); `None`
    /// when only waited on.
    pub mode: Option<Mode>,
    /// The key's capacity: [`MAX_UNITS`] for a read/write key, `n` for a semaphore.
    pub capacity: u32,
    /// Units held (an exclusive holder holds the whole capacity).
    pub units_held: u32,
    /// Each live holding, with its exact token and mode. (A plain exclusive holding has no
    /// holder record; it is read off the key's state word, with the same token its guard has.)
    /// A holding being claimed or released may count in `units_held` a moment before or after
    /// it is listed here: the two agree whenever no holding begins or ends during the snapshot.
    pub holders: Vec<HolderInfo>,
    /// Each queued request, first in line first.
    pub waiters: Vec<WaiterInfo>,
}

/// One holding.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct HolderInfo {
    /// Its mode.
    pub mode: Mode,
    /// Its fencing token.
    pub token: FenceToken,
    /// Its owner label.
    pub owner: Option<Owner>,
    /// When it began, on the manager's clock: known for holdings with a lease or an owner.
    pub acquired_at: Option<Duration>,
    /// Its lease deadline, on the manager's clock.
    pub expires_at: Option<Duration>,
}

/// One queued request.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct WaiterInfo {
    /// The mode it asks for.
    pub mode: Mode,
    /// Its owner label.
    pub owner: Option<Owner>,
    /// The lease it will get.
    pub lease: Option<Duration>,
    /// How long it has waited so far (real time).
    pub waited: Duration,
}

/// A slot's lock state without its key.
pub(crate) struct Description {
    mode: Option<Mode>,
    capacity: u32,
    units_held: u32,
    holders: Vec<HolderInfo>,
    waiters: Vec<WaiterInfo>,
}

impl Description {
    pub(crate) fn with_key<K>(self, key: K) -> LockInfo<K> {
        let Description { mode, capacity, units_held, holders, waiters } = self;
        LockInfo { key, mode, capacity, units_held, holders, waiters }
    }
}

/// The holdings and waiters of a slot, under its lock. `None` if the slot is neither held nor
/// waited on.
pub(crate) fn describe<K>(slot: &Slot<K>, inner: &SlotInner) -> Option<Description> {
    let w = slot.word.load(Ordering::Acquire);
    let capacity = slot.capacity.load(Ordering::Relaxed);
    if word::units(w) == 0 && inner.queue.is_empty() {
        return None;
    }
    let mut holders = Vec::new();
    // The token of the exclusive holding the word shows, if it shows one: an `EXCL` lease word is
    // its holding's only then (engine/lease.rs).
    let shown = if word::units(w) != 0 { slot.bare_token(w) } else { None };
    for idx in 0..INLINE_RECORDS as RecordIdx {
        if word::holds_record(w, idx) {
            holders.extend(holder(&slot.records[idx as usize], RecordRef::Inline(idx), capacity, shown, inner));
        }
    }
    for (i, rec) in inner.overflow_in_use() {
        holders.extend(holder(rec, RecordRef::Overflow(i), capacity, shown, inner));
    }
    let bare = capacity == MAX_UNITS && word::units(w) == MAX_UNITS && word::records(w) == 0;
    if bare && inner.overflow_in_use().next().is_none() {
        // A bare holding (engine/word.rs: a plain exclusive holding without a record): the word
        // shows it, and its token is the slot's base plus the word's counter.
        if let Some(token) = slot.bare_token(w) {
            holders.push(HolderInfo {
                mode: Mode::Exclusive,
                token: FenceToken::from_u64(token),
                owner: None,
                acquired_at: None,
                expires_at: None,
            });
        }
    }
    holders.sort_by_key(|h| h.token);
    let waiters = inner
        .queue
        .iter()
        .map(|w| WaiterInfo {
            mode: w.ask.mode,
            owner: w.ask.owner.clone(),
            lease: w.ask.ttl_ns.map(Duration::from_nanos),
            waited: w.waited(),
        })
        .collect();
    let mode = if word::units(w) == 0 {
        None
    } else if holders.iter().any(|h| h.mode == Mode::Exclusive) || word_shows_exclusive(w, capacity) {
        Some(Mode::Exclusive)
    } else if w & word::UP != 0 {
        Some(Mode::Upgradable)
    } else if capacity == MAX_UNITS {
        // The weakest mode that covers every holder's (IX beside IS is IX; U beside S is U).
        let joined = holders.iter().map(|h| h.mode.granule()).reduce(crate::vocab::compat::join);
        Some(joined.map_or(Mode::Shared, Mode::from_granule))
    } else {
        Some(Mode::Semaphore(capacity))
    };
    Some(Description { mode, capacity, units_held: word::units(w), holders, waiters })
}

/// Whether the word alone shows an exclusive holder (the matrix census reads it the same way,
/// `Census::of_word`): every unit of a read/write key with at most one record (readers that many
/// would hold all four) and no upgradable. So the mode is right even when the holder's record is
/// being written (a claim in flux, left out of `holders`) or when it has none (a bare holding).
fn word_shows_exclusive(w: u64, capacity: u32) -> bool {
    capacity == MAX_UNITS && word::units(w) == MAX_UNITS && word::records(w).count_ones() <= 1 && w & word::UP == 0
}

/// One record's holding, if it is published and consistent (a record between two holdings, or
/// being claimed, is skipped). `shown`: the token of the exclusive holding the word shows.
fn holder(rec: &Record, at: RecordRef, capacity: u32, shown: Option<u64>, inner: &SlotInner) -> Option<HolderInfo> {
    let l = rec.lease.load(Ordering::Acquire);
    let token = rec.token.load(Ordering::Relaxed);
    let stale_exclusive = lease::state(l) == lease::HELD && lease::is_exclusive(l) && shown != Some(token);
    if lease::tag(l) != lease::tag_of(token) || stale_exclusive {
        return None;
    }
    match lease::state(l) {
        lease::PLAIN => Some(HolderInfo {
            mode: Mode::from_code(lease::plain_meta(l) & Mode::CODE_MASK, capacity),
            token: FenceToken::from_u64(token),
            owner: None,
            acquired_at: None,
            expires_at: None,
        }),
        lease::HELD => {
            let acquired = rec.acquired_ns.load(Ordering::Relaxed);
            Some(HolderInfo {
                mode: Mode::from_code(rec.meta.load(Ordering::Relaxed) & Mode::CODE_MASK, capacity),
                token: FenceToken::from_u64(token),
                owner: inner.owner(at),
                acquired_at: (acquired != UNKNOWN_TIME).then(|| Duration::from_nanos(acquired)),
                expires_at: lease::is_leased(l).then(|| Duration::from_nanos(lease::deadline_ns(l))),
            })
        }
        _ => None,
    }
}
