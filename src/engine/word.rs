//! The slot state word: one `u64` that every acquire and release of a key goes through.
//!
//! ```text
//!  63  62  61  60  59  58  57  56  55..52   51 ........ 20   19 ........ 0
//! [UPG| UP|MTX|CAP|DEAD|WCH| XW| WT|records| acquisitions |    units     ]
//! ```
//!
//! | field | bits | meaning |
//! |---|---|---|
//! | `units` | 0..20 | capacity units held. A shared holder or a permit holds 1; an exclusive holder holds the key's whole capacity. |
//! | `acquisitions` | 20..52 | acquisitions of this slot incarnation so far. A holder's fencing token is the slot's token base plus this counter just after its claim, so the counter is also the ABA tag that makes a stale release fail. |
//! | `records` | 52..56 | one bit per inline holder record (see `slot.rs`); a holder that finds all four taken uses an overflow record, counted in `units` only. |
//! | `WT` waiters | 56 | the slot's wait queue is not empty: a release must take the slow path and wake whoever can now proceed. |
//! | `XW` exclusive waiting | 57 | an exclusive request is queued: new shared or permit requests do not barge past it (writers are not starved). |
//! | `WCH` watched | 58 | the timer wheel has an entry for this slot that fires no later than `Slot::scheduled`. |
//! | `DEAD` | 59 | the slot is reclaimed (or never used): no claim may succeed; look the key up again. |
//! | `CAP` changing | 60 | an idle slot's capacity is being changed by a request of another kind. |
//! | `MTX` matrix | 61 | a holder in an intention mode holds the key, or did and its release is not yet counted: every claim is decided under the slot lock by the slot's census of held modes and the compatibility matrix (`engine/matrix.rs`); the lock-free claim refuses (`Busy`), and the slot is not idle. |
//! | `UP` | 62 | an upgradable holder holds the key (one of the units is its). |
//! | `UPG` upgrading | 63 | the upgradable holder waits to upgrade: no new shared or upgradable claim. |
//!
//! States (units `u`, records `r`, capacity `c`):
//!
//! | state | word | may move to |
//! |---|---|---|
//! | dead | `DEAD` | fresh (under the shard lock) |
//! | idle | `u = 0, r = 0, !WT` | held, dead (the sweep), capacity change |
//! | shared | `0 < u < c` or `u = c` by permits | more holders (`u + 1 <= c`), fewer |
//! | exclusive | `u = c`, one record, or none (a *bare* holding, below) | idle / waiters woken |
//!
//! Invariants: `units <= capacity`; an exclusive holder is alone; every inline record bit belongs
//! to exactly one live holding; `DEAD` only with `u = 0, r = 0, !WT`.
//!
//! A *bare* holding is a plain exclusive holding claimed by the lock-free path on a read/write
//! key ([`try_claim_bare`]): it takes every unit and no record, so its claim and release touch the
//! word alone. It is the only holder, so the word says everything about it: `u = c` with no
//! record bit (and no overflow record) is a bare holding, and its token is the slot's token base
//! plus the counter, exactly. While it is held no other holding has a record, so a record it
//! gains later (a renewal turns it into a leased holding, a downgrade into a reader: both under
//! the slot lock) is record 0.
//!
//! No word repeats (modulo 2^32 acquisitions): the counter only grows, also across a capacity
//! change (which counts as an acquisition) and across reclamation (a dead slot keeps its counter
//! and its next incarnation continues from it, with the token base lowered to match). So a
//! claimer that loaded a word, then lost the processor while the slot was reshaped or reclaimed
//! and reused, cannot compare-exchange against it: the capacity and the incarnation it read are
//! those of the word it installs. Only a rebase (once the counter is spent) starts it at zero.
//!
//! Every transition is a pure `const fn` here, tested exhaustively below; the slot module does
//! nothing but load, call one of these, and compare-exchange. The module is public but hidden, for
//! the fuzz target of the transitions; it is not part of the crate's API.

#![deny(unsafe_code)]

/// Bits of the `units` field.
pub const UNITS_BITS: u32 = 20;
pub use crate::vocab::mode::{MAX_PERMITS, MAX_UNITS};
// The public limit is what the `units` field counts.
const _: () = assert!(MAX_UNITS as u64 == (1 << UNITS_BITS) - 1);

const UNITS_MASK: u64 = MAX_UNITS as u64;
pub const COUNTER_SHIFT: u32 = UNITS_BITS;
/// Bits of the acquisition counter.
pub const COUNTER_BITS: u32 = 32;
/// The largest counter value; a slot whose counter reaches the limit must be rebased while idle.
pub const COUNTER_MAX: u64 = (1 << COUNTER_BITS) - 1;
pub const COUNTER_MASK: u64 = COUNTER_MAX << COUNTER_SHIFT;
pub const COUNTER_ONE: u64 = 1 << COUNTER_SHIFT;

/// Number of inline holder records per slot.
pub const INLINE_RECORDS: usize = 4;
const RECORDS_SHIFT: u32 = 52;
const RECORDS_MASK: u64 = 0xF << RECORDS_SHIFT;

pub const WAITERS: u64 = 1 << 56;
pub const EXCL_WAITING: u64 = 1 << 57;
pub const WATCHED: u64 = 1 << 58;
pub const DEAD: u64 = 1 << 59;
pub const CAP_CHANGING: u64 = 1 << 60;
/// Claims are decided by the matrix under the slot lock (see the module docs and `matrix.rs`).
pub const MATRIX: u64 = 1 << 61;

/// Which inline record a claim took; `OVERFLOW` means none was free.
pub type RecordIdx = u8;
/// No inline record: the holding lives in an overflow record.
pub const OVERFLOW: RecordIdx = u8::MAX;

/// The units field.
#[inline]
pub const fn units(word: u64) -> u32 {
    (word & UNITS_MASK) as u32
}

/// The acquisition counter.
#[inline]
pub const fn counter(word: u64) -> u64 {
    (word & COUNTER_MASK) >> COUNTER_SHIFT
}

/// The inline-record bitmap (bit `i` = record `i` held).
#[inline]
pub const fn records(word: u64) -> u8 {
    ((word & RECORDS_MASK) >> RECORDS_SHIFT) as u8
}

/// The bit of inline record `idx`.
#[inline]
pub const fn record_bit(idx: RecordIdx) -> u64 {
    1 << (RECORDS_SHIFT + idx as u32)
}

/// Whether inline record `idx` is held in `word`.
#[inline]
pub const fn holds_record(word: u64, idx: RecordIdx) -> bool {
    word & record_bit(idx) != 0
}

/// A slot nobody holds or waits on, that is not dead or changing: the sweep may reclaim it.
#[inline]
pub const fn is_idle(word: u64) -> bool {
    word & (UNITS_MASK | RECORDS_MASK | WAITERS | DEAD | CAP_CHANGING | MATRIX) == 0
}

/// Nobody holds a unit (waiters may be queued), and the slot is live and stable: the acquisition
/// counter may be reset.
#[inline]
pub const fn is_unheld(word: u64) -> bool {
    word & (UNITS_MASK | RECORDS_MASK | DEAD | CAP_CHANGING) == 0
}

/// The word a slot's next incarnation starts from: idle, continuing the dead slot's counter.
#[inline]
pub const fn reborn(dead: u64) -> u64 {
    dead & COUNTER_MASK
}

/// The word of a dead slot that was live with `last`: it keeps the counter (see the module docs).
#[inline]
pub const fn dead_from(last: u64) -> u64 {
    DEAD | (last & COUNTER_MASK)
}

/// What a request needs from the word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Need {
    /// Exclusive (takes the whole capacity) or not (takes one unit).
    pub exclusive: bool,
    /// A queued waiter retrying after a wake-up may pass the writer-waiting flag: it is in the
    /// queue already, ahead of the writer or granted by it.
    pub privileged: bool,
    /// The holding has a lease, so the claim also marks the slot watched by the timer wheel.
    pub watch: bool,
}

/// Why a claim cannot be made from this word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Held in a conflicting mode, or a writer is queued ahead of this reader: wait.
    Busy,
    /// The slot is dead or changing capacity: look it up again.
    Unstable,
    /// The acquisition counter reached its limit: the slot must be rebased while idle.
    Exhausted,
}

/// A successful claim: the word to install and the record it took.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Claim {
    pub word: u64,
    pub record: RecordIdx,
    /// Units the claim took, from the capacity it was computed with.
    pub units: u32,
}

/// The units a request of this kind holds on a key of this capacity.
#[inline]
pub const fn units_for(need: Need, capacity: u32) -> u32 {
    if need.exclusive {
        capacity
    } else {
        1
    }
}

/// Claims units (and the lowest free inline record) for `need` on a key of `capacity`.
///
/// `counter_limit` is the largest counter value a claim may produce (normally [`COUNTER_MAX`];
/// tests shrink it to exercise rebasing).
#[inline]
pub const fn try_claim(word: u64, capacity: u32, need: Need, counter_limit: u64) -> Result<Claim, Refusal> {
    if word & (DEAD | CAP_CHANGING | MATRIX) != 0 {
        // A matrix key is busy to the lock-free claim: its claims are decided under the lock.
        return Err(if word & (DEAD | CAP_CHANGING) != 0 { Refusal::Unstable } else { Refusal::Busy });
    }
    let held = units(word);
    if need.exclusive {
        if held != 0 {
            return Err(Refusal::Busy);
        }
    } else if held >= capacity
        || (word & (EXCL_WAITING | UPGRADING) != 0 && (!need.privileged || word & UPGRADING != 0))
    {
        // A queued writer stops readers that are not queued themselves; a waiting upgrade stops
        // every new reader (one mask test when neither flag is set, as before).
        return Err(Refusal::Busy);
    }
    if counter(word) >= counter_limit {
        return Err(Refusal::Exhausted);
    }
    let free = !records(word) & 0xF;
    let record = if free == 0 { OVERFLOW } else { free.trailing_zeros() as RecordIdx };
    let units = units_for(need, capacity);
    let mut next = word + units as u64 + COUNTER_ONE;
    if record != OVERFLOW {
        next |= record_bit(record);
    }
    if need.watch {
        next |= WATCHED;
    }
    Ok(Claim { word: next, record, units })
}

/// `counter(word) >= counter_limit` for a limit of at most [`COUNTER_MAX`] (the builder clamps
/// it, and the fuzz target's limits are in range), compared as 32-bit numbers: the counter field
/// is exactly the low 32 bits of `word >> COUNTER_SHIFT`, so no mask (one instruction fewer on
/// the lock-free claims).
#[inline(always)]
const fn counter_reached(word: u64, counter_limit: u64) -> bool {
    (word >> COUNTER_SHIFT) as u32 >= counter_limit as u32
}

/// The claim of a bare holding (module docs): every unit of a read/write key and no record, for
/// a plain exclusive request on the lock-free path. The caller has checked that the capacity is
/// `MAX_UNITS`. One mask test: no unit held (so no record either), not dead, changing or a matrix
/// key.
#[inline]
pub const fn try_claim_bare(word: u64, counter_limit: u64) -> Result<u64, Refusal> {
    if word & (UNITS_MASK | DEAD | CAP_CHANGING | MATRIX) != 0 {
        return Err(if word & (DEAD | CAP_CHANGING) != 0 { Refusal::Unstable } else { Refusal::Busy });
    }
    if counter_reached(word, counter_limit) {
        return Err(Refusal::Exhausted);
    }
    Ok(word + UNITS_MASK + COUNTER_ONE)
}

/// The word of a key whose only holding's claim made `counter` and took `delta` (its units and
/// inline record's bit, `release_delta`; every unit and no bit for a bare holding), with no flag:
/// what a plain holding's release expects (`Slot::release_plain`); with `delta` zero, the word
/// that release leaves. `counter` is at most [`COUNTER_MAX`], so it stays in its field.
#[inline(always)]
pub const fn held_alone(counter: u64, delta: u64) -> u64 {
    (counter << COUNTER_SHIFT) | delta
}

/// Whether [`try_claim_bare`] claims from `word`, as one test for the lock-free path (which
/// needs no refusal reason): the word's refusing fields (units, `DEAD`, `CAP_CHANGING`,
/// `MATRIX`) and its counter, rotated so that the counter is the low 32 bits and every refusing
/// bit lies above them, compare below `counter_limit` exactly when none is set and the counter
/// has not reached the limit. `counter_limit` is at most [`COUNTER_MAX`] (the builder clamps
/// it), below any refusing bit. A mask, a rotate and one compare instead of two tests.
#[inline(always)]
pub const fn bare_claimable(word: u64, counter_limit: u64) -> bool {
    debug_assert!(counter_limit <= COUNTER_MAX);
    (word & (UNITS_MASK | COUNTER_MASK | DEAD | CAP_CHANGING | MATRIX)).rotate_right(COUNTER_SHIFT) < counter_limit
}

/// The lock-free claim of a lease without owner in exclusive mode on a read/write key (the
/// caller has checked that the capacity is `MAX_UNITS`): [`try_claim`]'s exclusive, watched claim,
/// whose record is always record 0 (no unit held, so no record either), as one mask test and a
/// constant record, so that the caller's record is a constant too.
#[inline]
pub const fn try_claim_exclusive_watched(word: u64, counter_limit: u64) -> Result<u64, Refusal> {
    // `RECORDS_MASK` too, though no sane word has a record without units: the same one test.
    if word & (UNITS_MASK | RECORDS_MASK | DEAD | CAP_CHANGING | MATRIX) != 0 {
        return Err(if word & (DEAD | CAP_CHANGING) != 0 { Refusal::Unstable } else { Refusal::Busy });
    }
    if counter_reached(word, counter_limit) {
        return Err(Refusal::Exhausted);
    }
    Ok((word + UNITS_MASK + COUNTER_ONE + record_bit(0)) | WATCHED)
}

/// The lock-free path's claim of one unit and an inline record (a plain shared or permit
/// request, not queued): [`try_claim`]'s claim when it takes an inline record, `None` for every
/// refusal and for a claim that would need an overflow record. The caller needs no reason (each
/// one sends it to the locked path), so every flag that refuses is one mask test.
#[inline]
pub const fn try_claim_unit(word: u64, capacity: u32, counter_limit: u64) -> Option<Claim> {
    match try_claim_unit_bit(word, capacity, counter_limit) {
        Some((next, bit)) => Some(Claim { word: next, record: record_of_bit(bit), units: 1 }),
        None => None,
    }
}

/// [`try_claim_unit`] as the lock-free path uses it: the word to install and the bit of the
/// record it took, where the word has it (the holding's release subtracts that bit, so the
/// claim never shifts it down to an index and back; [`record_of_bit`] gives the index).
#[inline(always)]
pub const fn try_claim_unit_bit(word: u64, capacity: u32, counter_limit: u64) -> Option<(u64, u64)> {
    if word & (DEAD | CAP_CHANGING | MATRIX | EXCL_WAITING | UPGRADING) != 0
        || units(word) >= capacity
        || counter_reached(word, counter_limit)
    {
        return None;
    }
    // Record 0 is free whenever the key has no other holder (the uncontended case): one bit test
    // then gives a constant record.
    let bit = if word & record_bit(0) == 0 {
        record_bit(0)
    } else {
        let free = !records(word) & 0xF;
        if free == 0 {
            return None;
        }
        // The lowest free record's bit.
        ((free & free.wrapping_neg()) as u64) << RECORDS_SHIFT
    };
    Some((word + 1 + COUNTER_ONE + bit, bit))
}

/// The inline record whose bit is `bit` (one of the record bits, as [`record_bit`] makes them).
#[inline(always)]
pub const fn record_of_bit(bit: u64) -> RecordIdx {
    // `& 3`: in range by construction, and so without a bounds check where it indexes.
    ((bit.trailing_zeros() - RECORDS_SHIFT) & 3) as RecordIdx
}

/// What a release subtracts from the word: the holding's units and its inline record's bit.
/// Subtracting it (a single `fetch_sub`) clears the bit, because the bit is set.
#[inline]
pub const fn release_delta(record: RecordIdx, units: u32) -> u64 {
    if record == OVERFLOW {
        units as u64
    } else {
        units as u64 + record_bit(record)
    }
}

/// Returns `units` and the record of a holding. The caller has checked that the holding is live.
#[cfg(test)]
const fn release(word: u64, record: RecordIdx, units: u32) -> u64 {
    word - release_delta(record, units)
}

/// The bits a rebase clears: the acquisition counter, and the `CAP_CHANGING` flag it held the
/// slot with.
pub const REBASE_CLEARS: u64 = COUNTER_MASK | CAP_CHANGING;

/// The flags a request that will queue sets on a busy word, in its claim loop: `WAITERS`, and
/// `EXCL_WAITING` for an exclusive request (which stops new readers from barging past it).
#[inline]
pub const fn waiting_flags(exclusive: bool) -> u64 {
    WAITERS | if exclusive { EXCL_WAITING } else { 0 }
}

/// The queue flags that describe a wait queue: `WAITERS` if anyone waits, `EXCL_WAITING` if an
/// exclusive request does.
#[inline]
pub const fn queue_flags(waiting: bool, exclusive_waiting: bool) -> u64 {
    (if waiting { WAITERS } else { 0 }) | if exclusive_waiting { EXCL_WAITING } else { 0 }
}

/// `word` with its queue flags made `flags` (from [`queue_flags`]) and every other field as it was:
/// the wait queue's owner (under the slot lock, the only place these flags are cleared) brings
/// the word in line with the queue.
#[inline]
pub const fn with_queue_flags(word: u64, flags: u64) -> u64 {
    (word & !(WAITERS | EXCL_WAITING)) | (flags & (WAITERS | EXCL_WAITING))
}

/// The word after a release of `delta` (from [`release_delta`]) that hands the freed units
/// straight to a queued request in the same compare-exchange: a claim for `need` on the released
/// word (its record may be [`OVERFLOW`]: the slot then writes an overflow record under the slot
/// lock it holds, so the hand-off holds for any number of holders).
#[inline]
pub const fn hand_off(word: u64, delta: u64, capacity: u32, need: Need, counter_limit: u64) -> Option<Claim> {
    match try_claim(word - delta, capacity, need, counter_limit) {
        Ok(c) => Some(c),
        Err(_) => None,
    }
}

/// The word after a claim for `need` on a matrix key (`MATRIX` set), once the slot's census has
/// admitted it: the claim [`try_claim`] would make on the word without `MATRIX`, as a queued
/// request (the census and the queue, not the word's writer flag, decide fairness there), with
/// `MATRIX` kept. An exclusive claim still needs every unit free: the word, not the census, is
/// what keeps an exclusive holder alone.
#[inline]
pub const fn try_claim_in_matrix(word: u64, capacity: u32, need: Need, counter_limit: u64) -> Result<Claim, Refusal> {
    let need = Need { exclusive: need.exclusive, privileged: true, watch: need.watch };
    match try_claim(word & !MATRIX, capacity, need, counter_limit) {
        Ok(c) => Ok(Claim { word: c.word | (word & MATRIX), record: c.record, units: c.units }),
        Err(r) => Err(r),
    }
}

// ---- Upgradable holders (issue 12) ----
//
// An upgradable holder holds one unit, an inline or overflow record like a reader, and the `UP`
// bit: it coexists with shared holders, and excludes exclusive holders (they need all units) and
// other upgradables (`UP` is taken). Its `upgrade` becomes exclusive: at once when it is the only
// holder, otherwise it sets `UPGRADING`, which refuses every new shared or upgradable claim, and
// waits for the readers present to leave. A downgrade gives units back in one step, so no writer
// can get in between.

/// An upgradable holder holds the key (one unit of its units is its).
pub const UP: u64 = 1 << 62;
/// The upgradable holder is waiting to upgrade: no new reader may claim.
pub const UPGRADING: u64 = 1 << 63;

/// Claims one unit, a record and `UP` for an upgradable holder on a read/write key of
/// `capacity`. Refused (`Busy`) beside an exclusive holder, another upgradable, or a queued writer
/// (unless `privileged`); `Unstable` and `Exhausted` as [`try_claim`].
#[inline]
pub const fn try_claim_upgradable(
    word: u64,
    capacity: u32,
    privileged: bool,
    watch: bool,
    counter_limit: u64,
) -> Result<Claim, Refusal> {
    if word & (DEAD | CAP_CHANGING) != 0 {
        return Err(Refusal::Unstable);
    }
    if word & (UP | UPGRADING | MATRIX) != 0 || units(word) >= capacity || (word & EXCL_WAITING != 0 && !privileged) {
        return Err(Refusal::Busy);
    }
    match try_claim(word, capacity, Need { exclusive: false, privileged: true, watch }, counter_limit) {
        Ok(c) => Ok(Claim { word: c.word | UP, record: c.record, units: 1 }),
        Err(r) => Err(r),
    }
}

/// The upgrade of the upgradable holder: the word with all `capacity` units held by it, `UP`
/// and `UPGRADING` cleared and the acquisition counter advanced (the exclusive holding is a new
/// one for fencing: its token is larger). `Busy` while other holders remain (set `UPGRADING` with
/// [`begin_upgrade`] and wait for them); `Exhausted` at the counter limit.
#[inline]
pub const fn try_upgrade(word: u64, capacity: u32, counter_limit: u64) -> Result<u64, Refusal> {
    if word & UP == 0 || units(word) == 0 {
        return Err(Refusal::Unstable);
    }
    if units(word) != 1 {
        return Err(Refusal::Busy);
    }
    if counter(word) >= counter_limit {
        return Err(Refusal::Exhausted);
    }
    Ok((word & !(UP | UPGRADING)) + (capacity as u64 - 1) + COUNTER_ONE)
}

/// Stops new readers while the upgradable holder waits for the present ones.
#[inline]
pub const fn begin_upgrade(word: u64) -> u64 {
    word | UPGRADING
}

/// Gives up waiting to upgrade (timeout, cancel): readers may claim again.
#[inline]
pub const fn cancel_upgrade(word: u64) -> u64 {
    word & !UPGRADING
}

/// Whether a shared or upgradable claim must be refused because an upgrade is waiting.
#[inline]
pub const fn upgrade_pending(word: u64) -> bool {
    word & UPGRADING != 0
}

/// Exclusive (all `capacity` units) to shared: keeps one unit, in one step.
#[inline]
pub const fn downgrade_to_shared(word: u64, capacity: u32) -> u64 {
    word - (capacity as u64 - 1)
}

/// Exclusive to upgradable: keeps one unit and takes `UP`, in one step (no upgradable can be
/// there: the exclusive holder was alone).
#[inline]
pub const fn downgrade_to_upgradable(word: u64, capacity: u32) -> u64 {
    (word - (capacity as u64 - 1)) | UP
}

/// What the release of an upgradable holding subtracts: its unit, its record's bit, and `UP`
/// (the holder cancels a pending upgrade first).
#[inline]
pub const fn release_upgradable_delta(record: RecordIdx) -> u64 {
    release_delta(record, 1) + UP
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHARED: Need = Need { exclusive: false, privileged: false, watch: false };
    const EXCL: Need = Need { exclusive: true, privileged: false, watch: false };

    #[test]
    fn fields_do_not_overlap() {
        let fields = [
            UNITS_MASK,
            COUNTER_MASK,
            RECORDS_MASK,
            WAITERS,
            EXCL_WAITING,
            WATCHED,
            DEAD,
            CAP_CHANGING,
            MATRIX,
            UP,
            UPGRADING,
        ];
        for (i, a) in fields.iter().enumerate() {
            for b in &fields[i + 1..] {
                assert_eq!(a & b, 0, "{a:064b} overlaps {b:064b}");
            }
        }
        assert_eq!(fields.iter().fold(0, |acc, f| acc | f).count_ones(), 64);
    }

    /// Exhaustive over every combination of units around the interesting boundaries, every
    /// record bitmap, every flag, both capacities kinds and every need: the claim either refuses
    /// for the documented reason or produces a word that keeps every invariant, and releasing the
    /// claim gives back the original word apart from the counter and the sticky bits.
    #[test]
    fn claim_and_release_exhaustively() {
        let capacities = [1_u32, 2, 3, 4, 5, MAX_PERMITS, MAX_UNITS];
        let flag_sets = [
            0,
            WAITERS,
            EXCL_WAITING | WAITERS,
            WATCHED,
            DEAD,
            CAP_CHANGING,
            WAITERS | WATCHED,
            UP,
            UP | UPGRADING,
            MATRIX,
        ];
        let mut checked = 0_u64;
        for &capacity in &capacities {
            let unit_values = [0, 1, 2, capacity.saturating_sub(1), capacity];
            for &held in &unit_values {
                for recs in 0..16_u64 {
                    for &flags in &flag_sets {
                        for counter_value in [0, 1, COUNTER_MAX - 1, COUNTER_MAX] {
                            let word = held as u64 | (recs << RECORDS_SHIFT) | flags | (counter_value << COUNTER_SHIFT);
                            for exclusive in [false, true] {
                                for privileged in [false, true] {
                                    for watch in [false, true] {
                                        let need = Need { exclusive, privileged, watch };
                                        check_claim(word, capacity, need);
                                        checked += 1;
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        assert!(checked > 100_000, "only {checked} cases");
    }

    fn check_claim(word: u64, capacity: u32, need: Need) {
        let result = try_claim(word, capacity, need, COUNTER_MAX);
        let held = units(word);
        let unstable = word & (DEAD | CAP_CHANGING) != 0;
        let busy =
            if need.exclusive { held != 0 } else { held >= capacity || (word & EXCL_WAITING != 0 && !need.privileged) };
        let busy = busy || (!need.exclusive && word & UPGRADING != 0) || word & MATRIX != 0;
        match result {
            Err(Refusal::Unstable) => assert!(unstable, "{word:064b}: refused as unstable"),
            Err(Refusal::Busy) => assert!(!unstable && busy, "{word:064b} cap {capacity} {need:?}: refused as busy"),
            Err(Refusal::Exhausted) => {
                assert!(!unstable && !busy && counter(word) == COUNTER_MAX, "{word:064b}: refused as exhausted")
            }
            Ok(Claim { word: next, record, units: claimed }) => {
                assert!(!unstable && !busy, "{word:064b} cap {capacity} {need:?}: claimed");
                let taken = units_for(need, capacity);
                assert_eq!(claimed, taken);
                assert_eq!(units(next), held + taken, "{word:064b} -> {next:064b}");
                assert!(units(next) <= capacity, "over capacity: {next:064b}");
                if need.exclusive {
                    assert_eq!(held, 0, "exclusive beside a holder: {word:064b}");
                }
                assert_eq!(counter(next), counter(word) + 1);
                assert_eq!(next & WATCHED != 0, need.watch || word & WATCHED != 0);
                // Flags other than WATCHED are untouched.
                let sticky = WAITERS | EXCL_WAITING | DEAD | CAP_CHANGING | MATRIX | UP | UPGRADING;
                assert_eq!(next & sticky, word & sticky);
                if record == OVERFLOW {
                    assert_eq!(records(word), 0xF, "overflow with a free record: {word:064b}");
                    assert_eq!(records(next), 0xF);
                } else {
                    assert!(!holds_record(word, record), "took a held record: {word:064b}");
                    assert!(holds_record(next, record));
                    assert_eq!(records(next), records(word) | (1 << record));
                    // The lowest free record is taken.
                    assert_eq!(records(word) & ((1 << record) - 1), (1 << record) - 1);
                }
                let back = release(next, record, taken);
                assert_eq!(units(back), held);
                assert_eq!(records(back), records(word));
                assert_eq!(counter(back), counter(word) + 1);
            }
        }
    }

    #[test]
    fn a_bare_claim_on_a_flagless_word_installs_held_alone_of_its_counter() {
        for c in [0, 1, 77, COUNTER_MAX - 1] {
            let next = try_claim_bare(c << COUNTER_SHIFT, COUNTER_MAX).expect("free");
            assert_eq!(held_alone(counter(next), UNITS_MASK), next, "counter {c}");
        }
        // A flag at the claim stays in the word, so the release's expected word differs from it.
        let next = try_claim_bare((5 << COUNTER_SHIFT) | WAITERS, COUNTER_MAX).expect("free");
        assert_ne!(held_alone(counter(next), UNITS_MASK), next);
    }

    #[test]
    fn a_lone_unit_claim_installs_held_alone_and_its_release_leaves_the_counter() {
        for c in [0, 1, 77, COUNTER_MAX - 1] {
            let (next, bit) = try_claim_unit_bit(c << COUNTER_SHIFT, 4, COUNTER_MAX).expect("free");
            let delta = release_delta(record_of_bit(bit), 1);
            assert_eq!(held_alone(counter(next), delta), next, "counter {c}");
            assert_eq!(release(next, record_of_bit(bit), 1), held_alone(counter(next), 0));
        }
        // Beside another holder, or with a flag, the word is not the lone holding's: the release
        // compare-exchange fails and the fallback subtracts (or takes the slot lock).
        let (first, _) = try_claim_unit_bit(9 << COUNTER_SHIFT, 4, COUNTER_MAX).expect("free");
        let (both, bit) = try_claim_unit_bit(first, 4, COUNTER_MAX).expect("a second permit");
        assert_ne!(held_alone(counter(both), release_delta(record_of_bit(bit), 1)), both);
        let (flagged, bit) = try_claim_unit_bit((9 << COUNTER_SHIFT) | WAITERS, 4, COUNTER_MAX).expect("free");
        assert_ne!(held_alone(counter(flagged), release_delta(record_of_bit(bit), 1)), flagged);
    }

    /// A bare claim is exactly an exclusive claim on a read/write key without the record, from
    /// every word of the claim test's grid; its release (the units alone) gives the word back.
    #[test]
    fn bare_claim_is_an_exclusive_claim_without_a_record() {
        let mut checked = 0_u64;
        for word in sane_rw_words() {
            let full = try_claim(word, MAX_UNITS, EXCL, COUNTER_MAX);
            for limit in [COUNTER_MAX, 1, 2, 0] {
                assert_eq!(bare_claimable(word, limit), try_claim_bare(word, limit).is_ok(), "{word:064b} {limit}");
            }
            match (try_claim_bare(word, COUNTER_MAX), full) {
                (Ok(next), Ok(c)) => {
                    assert_eq!(c.record, 0, "{word:064b}");
                    assert_eq!(next, c.word - record_bit(0), "{word:064b}");
                    assert_eq!(records(next), 0);
                    assert_eq!(units(next), MAX_UNITS);
                    assert!(!is_idle(next));
                    assert_eq!(next - UNITS_MASK, word + COUNTER_ONE, "release gives the word back");
                }
                (Err(a), Err(b)) => assert_eq!(a, b, "{word:064b}"),
                (bare, full) => panic!("{word:064b}: bare {bare:?}, exclusive {full:?}"),
            }
            checked += 1;
        }
        assert!(checked > 1_000, "only {checked} cases");
    }

    /// The flags the lock-free claims' tests combine with every count of units and records.
    const CLAIM_FLAG_SETS: [u64; 9] =
        [0, WAITERS, EXCL_WAITING | WAITERS, WATCHED, DEAD, CAP_CHANGING, UP, UP | UPGRADING, MATRIX];

    /// The words of a read/write key the lock-free exclusive claims are checked on: units held
    /// (none, few, all), every record set, `CLAIM_FLAG_SETS`, the counter at both ends. Sane
    /// words only: a record belongs to a holding, which holds units.
    fn sane_rw_words() -> impl Iterator<Item = u64> {
        [0_u64, 1, 2, MAX_UNITS as u64 - 1, MAX_UNITS as u64].into_iter().flat_map(|held| {
            (0..16_u64).filter(move |&recs| held != 0 || recs == 0).flat_map(move |recs| {
                CLAIM_FLAG_SETS.into_iter().flat_map(move |flags| {
                    [0, 1, COUNTER_MAX - 1, COUNTER_MAX]
                        .into_iter()
                        .map(move |c| held | (recs << RECORDS_SHIFT) | flags | (c << COUNTER_SHIFT))
                })
            })
        })
    }

    /// The exclusive lease's claim is exactly `try_claim`'s exclusive, watched claim on a
    /// read/write key, record 0 included, from every sane word of the claim test's grid.
    #[test]
    fn exclusive_watched_claim_is_the_exclusive_lease_claim() {
        let watched = Need { exclusive: true, privileged: false, watch: true };
        let mut checked = 0_u64;
        for word in sane_rw_words() {
            for limit in [COUNTER_MAX, 1, 2] {
                let full = try_claim(word, MAX_UNITS, watched, limit);
                match (try_claim_exclusive_watched(word, limit), full) {
                    (Ok(next), Ok(c)) => {
                        assert_eq!((c.record, c.units, next), (0, MAX_UNITS, c.word), "{word:064b}");
                    }
                    (Err(a), Err(b)) => assert_eq!(a, b, "{word:064b}"),
                    (ours, full) => panic!("{word:064b}: ours {ours:?}, try_claim {full:?}"),
                }
                checked += 1;
            }
        }
        assert!(checked > 1_000, "only {checked} cases");
    }

    /// The lock-free unit claim is exactly the plain shared claim where that takes an inline
    /// record, and refuses everything else, on every word of the claim test's grid.
    #[test]
    fn unit_claim_is_the_shared_claim_with_an_inline_record() {
        let mut checked = 0_u64;
        for capacity in [1_u32, 2, 4, 5, MAX_UNITS] {
            for held in [0_u32, 1, 2, 3, 4, capacity.saturating_sub(1), capacity] {
                for recs in 0..16_u64 {
                    for flags in CLAIM_FLAG_SETS {
                        for counter_value in [0, 1, COUNTER_MAX - 1, COUNTER_MAX] {
                            let word = held as u64 | (recs << RECORDS_SHIFT) | flags | (counter_value << COUNTER_SHIFT);
                            let full = match try_claim(word, capacity, SHARED, COUNTER_MAX) {
                                Ok(c) if c.record != OVERFLOW => Some(c),
                                _ => None,
                            };
                            assert_eq!(try_claim_unit(word, capacity, COUNTER_MAX), full, "{word:064b} cap {capacity}");
                            checked += 1;
                        }
                    }
                }
            }
        }
        assert!(checked > 10_000, "only {checked} cases");
    }

    #[test]
    fn exclusive_excludes_everything_and_shared_share() {
        let cap = MAX_UNITS;
        const FRESH: u64 = 0;
        let x = try_claim(FRESH, cap, EXCL, COUNTER_MAX).expect("free key");
        assert_eq!(try_claim(x.word, cap, EXCL, COUNTER_MAX), Err(Refusal::Busy));
        assert_eq!(try_claim(x.word, cap, SHARED, COUNTER_MAX), Err(Refusal::Busy));
        let s1 = try_claim(FRESH, cap, SHARED, COUNTER_MAX).expect("free key");
        let s2 = try_claim(s1.word, cap, SHARED, COUNTER_MAX).expect("second reader");
        assert_eq!((s1.record, s2.record), (0, 1));
        assert_eq!(try_claim(s2.word, cap, EXCL, COUNTER_MAX), Err(Refusal::Busy));
        // A queued writer stops new readers but not a privileged (queued) one.
        let queued = s2.word | WAITERS | EXCL_WAITING;
        assert_eq!(try_claim(queued, cap, SHARED, COUNTER_MAX), Err(Refusal::Busy));
        assert!(try_claim(queued, cap, Need { privileged: true, ..SHARED }, COUNTER_MAX).is_ok());
    }

    #[test]
    fn semaphore_counts_permits_and_overflows_records() {
        let cap = 6;
        let mut word = 0;
        let mut taken = Vec::new();
        for i in 0..6 {
            let c = try_claim(word, cap, SHARED, COUNTER_MAX).expect("a permit is free");
            assert_eq!(c.record, if i < 4 { i as u8 } else { OVERFLOW });
            taken.push(c.record);
            word = c.word;
        }
        assert_eq!(try_claim(word, cap, SHARED, COUNTER_MAX), Err(Refusal::Busy));
        assert_eq!(try_claim(word, cap, EXCL, COUNTER_MAX), Err(Refusal::Busy));
        for r in taken {
            word = release(word, r, 1);
        }
        assert_eq!(units(word), 0);
        assert_eq!(records(word), 0);
        assert!(!is_idle(word | WAITERS));
        assert!(is_idle(word));
        // Exclusive on a semaphore key takes every permit.
        let x = try_claim(word, cap, EXCL, COUNTER_MAX).expect("all permits free");
        assert_eq!(units(x.word), cap);
    }

    #[test]
    fn counter_limit_forces_a_rebase() {
        let limit = 3;
        let mut word = 0;
        for _ in 0..3 {
            let c = try_claim(word, MAX_UNITS, EXCL, limit).expect("below the limit");
            word = release(c.word, c.record, MAX_UNITS);
        }
        assert_eq!(counter(word), 3);
        assert_eq!(try_claim(word, MAX_UNITS, EXCL, limit), Err(Refusal::Exhausted));
        let word = word & !REBASE_CLEARS;
        assert_eq!(counter(word), 0);
        assert!(try_claim(word, MAX_UNITS, EXCL, limit).is_ok());
    }

    /// Every queue-flag transition on every word of the claim test's grid: the result has exactly
    /// the queue's flags, every other field untouched, and the flags a queuing request sets are
    /// the queue flags of a queue it has joined.
    #[test]
    fn queue_flags_exhaustively() {
        let flag_sets = [0, WAITERS, EXCL_WAITING, EXCL_WAITING | WAITERS, WATCHED, DEAD, CAP_CHANGING];
        let mut checked = 0_u64;
        for held in [0_u64, 1, 2, MAX_UNITS as u64 - 1, MAX_UNITS as u64] {
            for recs in 0..16_u64 {
                for &a in &flag_sets {
                    for &b in &flag_sets {
                        for counter_value in [0, 1, COUNTER_MAX] {
                            let word = held | (recs << RECORDS_SHIFT) | a | b | (counter_value << COUNTER_SHIFT);
                            for waiting in [false, true] {
                                for exclusive_waiting in [false, true] {
                                    let flags = queue_flags(waiting, exclusive_waiting);
                                    let next = with_queue_flags(word, flags);
                                    assert_eq!(next & WAITERS != 0, waiting);
                                    assert_eq!(next & EXCL_WAITING != 0, exclusive_waiting);
                                    let others = !(WAITERS | EXCL_WAITING);
                                    assert_eq!(next & others, word & others, "{word:064b} -> {next:064b}");
                                    assert_eq!(with_queue_flags(next, flags), next, "not idempotent");
                                    // An emptied queue leaves the word idle exactly when its holders do.
                                    if !waiting {
                                        assert_eq!(is_idle(next), is_idle(word & !WAITERS));
                                    }
                                    checked += 1;
                                }
                            }
                            for exclusive in [false, true] {
                                let joined = word | waiting_flags(exclusive);
                                let others = !(WAITERS | EXCL_WAITING);
                                assert_eq!(joined & others, word & others);
                                assert!(joined & WAITERS != 0);
                                assert_eq!(joined & EXCL_WAITING != 0, exclusive || word & EXCL_WAITING != 0);
                            }
                        }
                    }
                }
            }
        }
        assert!(checked > 10_000, "only {checked} cases");
    }

    /// A hand-off is exactly a release followed by a privileged claim in one step, including one
    /// that needs an overflow record (past four holders).
    #[test]
    fn hand_off_is_release_then_claim() {
        for capacity in [1_u32, 2, 5, MAX_UNITS] {
            for exclusive in [false, true] {
                let holder = Need { exclusive, privileged: false, watch: false };
                for queued_exclusive in [false, true] {
                    let need = Need { exclusive: queued_exclusive, privileged: true, watch: false };
                    let mut word = WAITERS | if queued_exclusive { EXCL_WAITING } else { 0 };
                    // Fill the key with holders, then hand each one's units over in turn.
                    let mut held = Vec::new();
                    while let Ok(c) = try_claim(word, capacity, holder, COUNTER_MAX) {
                        word = c.word;
                        held.push(c);
                        if held.len() > 6 {
                            break;
                        }
                    }
                    for c in held {
                        let delta = release_delta(c.record, c.units);
                        let direct = try_claim(word - delta, capacity, need, COUNTER_MAX);
                        match hand_off(word, delta, capacity, need, COUNTER_MAX) {
                            Some(h) => {
                                assert_eq!(Ok(h), direct);
                                assert_eq!(units(h.word), units(word) - c.units + h.units);
                                assert!(units(h.word) <= capacity);
                            }
                            None => assert!(direct.is_err(), "refused a hand-off that fits: {direct:?}"),
                        }
                        word -= delta;
                    }
                }
            }
        }
    }

    /// Upgradable claims, upgrades and downgrades from every word around the boundaries: each is
    /// refused for exactly the documented reason, or gives the word the compatibility matrix and
    /// the field layout predict.
    #[test]
    fn upgradable_transitions_exhaustively() {
        use crate::vocab::compat::{compatible, Granule};
        let cap = MAX_UNITS;
        let mut checked = 0_u64;
        for held in [0, 1, 2, 3, cap - 1, cap] {
            for recs in 0..16_u64 {
                for flags in [0, WAITERS, EXCL_WAITING | WAITERS, WATCHED, DEAD, CAP_CHANGING, UP, UP | UPGRADING] {
                    for counter_value in [0, 1, COUNTER_MAX - 1, COUNTER_MAX] {
                        let word = held as u64 | (recs << RECORDS_SHIFT) | flags | (counter_value << COUNTER_SHIFT);
                        // Sane words only: UP needs a unit, and an exclusive holder is alone.
                        if word & UP != 0 && (held == 0 || held == cap) {
                            continue;
                        }
                        // The holders this word describes, as modes of the matrix.
                        let holders: &[Granule] = match (held, word & UP != 0) {
                            (0, _) => &[],
                            (h, false) if h == cap => &[Granule::X],
                            (_, false) => &[Granule::S],
                            (1, true) => &[Granule::U],
                            (_, true) => &[Granule::U, Granule::S],
                        };
                        let unstable = word & (DEAD | CAP_CHANGING) != 0;
                        for privileged in [false, true] {
                            let r = try_claim_upgradable(word, cap, privileged, false, COUNTER_MAX);
                            let matrix_ok = holders.iter().all(|&h| compatible(h, Granule::U));
                            let queue_ok = word & UPGRADING == 0 && (word & EXCL_WAITING == 0 || privileged);
                            match r {
                                Err(Refusal::Unstable) => assert!(unstable),
                                Err(Refusal::Busy) => assert!(!(unstable || matrix_ok && queue_ok), "{word:064b}"),
                                Err(Refusal::Exhausted) => assert_eq!(counter(word), COUNTER_MAX),
                                Ok(c) => {
                                    assert!(!unstable && matrix_ok && queue_ok, "{word:064b}");
                                    assert_eq!(units(c.word), held + 1);
                                    assert!(c.word & UP != 0);
                                    assert_eq!(counter(c.word), counter(word) + 1);
                                    let back = c.word - release_upgradable_delta(c.record);
                                    assert_eq!(
                                        back & !COUNTER_MASK,
                                        word & !COUNTER_MASK,
                                        "release gives the word back"
                                    );
                                }
                            }
                            checked += 1;
                        }
                        if word & UP != 0 && !unstable {
                            match try_upgrade(word, cap, COUNTER_MAX) {
                                Ok(next) => {
                                    assert_eq!(held, 1, "upgraded beside readers: {word:064b}");
                                    assert_eq!(units(next), cap);
                                    assert_eq!(next & (UP | UPGRADING), 0);
                                    assert_eq!(counter(next), counter(word) + 1, "an upgrade is a new token");
                                    assert_eq!(records(next), records(word));
                                    // Back down: one step each, the record kept, nobody let in.
                                    let s = downgrade_to_shared(next, cap);
                                    assert_eq!((units(s), s & UP), (1, 0));
                                    let u = downgrade_to_upgradable(next, cap);
                                    assert_eq!((units(u), u & UP != 0), (1, true));
                                    assert_eq!(counter(s), counter(next));
                                    assert!(try_claim(next, cap, EXCL, COUNTER_MAX).is_err());
                                }
                                Err(Refusal::Busy) => assert!(held > 1),
                                Err(Refusal::Exhausted) => assert_eq!(counter(word), COUNTER_MAX),
                                Err(Refusal::Unstable) => panic!("a live upgradable word refused as unstable"),
                            }
                            // A pending upgrade stops every new reader, even a queued one.
                            let pending = begin_upgrade(word);
                            assert!(upgrade_pending(pending));
                            for privileged in [false, true] {
                                let need = Need { exclusive: false, privileged, watch: false };
                                assert_eq!(try_claim(pending, cap, need, COUNTER_MAX), Err(Refusal::Busy));
                            }
                            assert_eq!(cancel_upgrade(pending), word & !UPGRADING);
                        }
                    }
                }
            }
        }
        assert!(checked > 5_000, "only {checked} cases");
    }
}
