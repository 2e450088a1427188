//! Holder records and the holdings they describe: a slot's `Record`s (token, lease word, mode and
//! units, start time), where a holding's record lives (`RecordRef`), what a guard carries
//! (`Holding`), and what a request asks for (`Ask`).

use crate::engine::lease;
use crate::engine::word::{self, Claim, Need, RecordIdx, Refusal};
use crate::primitives::counters::HOLD_SAMPLE;
use crate::primitives::sync::{AtomicU64, Ordering};
use crate::vocab::mode::{Mode, Owner};

/// A holding's mode and units, packed: `mode code | units << Mode::CODE_BITS`.
#[inline]
pub(crate) const fn meta(mode: Mode, units: u32) -> u64 {
    mode.code() | ((units as u64) << Mode::CODE_BITS)
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
        (self.meta.load(Ordering::Relaxed) >> Mode::CODE_BITS) as u32
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

/// A stable pointer to a holding's record (inline records live in the slot, overflow records in
/// boxes that live as long as the slot's memory).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RecordPtr(pub(crate) *const Record);

// SAFETY: it points into type-stable slot memory owned by the manager, which every holder of a
// `Holding` borrows; all access through it is to atomics.
unsafe impl Send for RecordPtr {}
// SAFETY: as above.
unsafe impl Sync for RecordPtr {}

/// What a guard carries to identify its holding: three full words (so a guard returned through
/// memory is written and read back with whole-word stores and loads that forward), the packed
/// part in `bits`, laid out so that `bits & RELEASE_MASK` is the holding's
/// `word::release_delta` (its units and its inline record's bit, where the state word has them):
///
/// ```text
///  63..61    60       59       58       57      56         55 .. 52          51       50      49 ...... 20    19 ..... 0
/// [ mode | managed | owned | holder | up held | overflow | inline record bit | sampled | told | overflow index | units ]
/// ```
///
/// A holding with neither an inline record bit nor `overflow` is *bare* (`word.rs`: a plain
/// exclusive holding without a record); its `rec` points at record 0, the record it takes if a
/// renewal or a downgrade ever needs one, and [`record`](Holding::record) names that one.
///
/// `sampled`: the token picks it for the hold-time histogram ([`is_sampled`](Holding::is_sampled)),
/// set by [`new`](Holding::new), or by a claim that builds an `unsampled`, `bare_unsampled` or
/// `plain_unit` holding and adds it with [`sampled_if`](Holding::sampled_if) where it stamps the
/// start: the guard's fast release then tests it in the same mask as `managed`, `overflow` and
/// `up held`, not as a test of its own.
///
/// `told`: subscribers were told of its start ([`TOLD`]), so they are told of its end: the
/// guard's fast release tests it in its one mask instead of loading the event flag again.
///
/// `up held`: an upgradable holding, which also holds the word's `UP` bit; its release
/// subtracts `UP` too ([`word_delta`](Holding::word_delta)), so it takes the guard's slow path.
/// The `holder` bit (`HOLDER_MARK`) is the holder's own: the engine never sets it and ignores it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Holding {
    pub(crate) rec: RecordPtr,
    pub(crate) token: u64,
    pub(crate) bits: u64,
}

const UNITS_MASK: u64 = (1 << word::UNITS_BITS) - 1;
const OVERFLOW_INDEX_SHIFT: u32 = word::UNITS_BITS;
/// The overflow index's field (30 bits: a slot has at most `MAX_UNITS` overflow records).
const OVERFLOW_INDEX_MASK: u64 = (1 << 30) - 1;
const _: () = assert!(word::MAX_UNITS as u64 <= OVERFLOW_INDEX_MASK);
const RECORD_BITS: u64 = 0xF << 52;
/// `Holding::bits`: what a release subtracts from the state word.
pub(crate) const RELEASE_MASK: u64 = UNITS_MASK | RECORD_BITS;
/// `Holding::bits`: the holding is in an overflow record.
pub(crate) const IN_OVERFLOW: u64 = 1 << 56;
/// `Holding::bits`: one of the one-in-`HOLD_SAMPLE` holdings timed for the hold-time histogram.
pub(crate) const SAMPLED: u64 = 1 << 51;
/// `Holding::bits`: the holding's start was told to event subscribers (the façade sets it where
/// it emits `Acquired`, and where an upgrade or downgrade rebuilds a guard while someone listens):
/// the guard's release takes its slow path, which tells them of the end. The engine ignores it.
pub(crate) const TOLD: u64 = 1 << 50;
const _: () = assert!(OVERFLOW_INDEX_MASK << OVERFLOW_INDEX_SHIFT < TOLD);
const _: () = assert!(TOLD < SAMPLED && TOLD & RELEASE_MASK == 0);
const _: () = assert!(SAMPLED & RELEASE_MASK == 0);
/// `Holding::bits`: ended through the lease word (leased or owned).
pub(crate) const MANAGED: u64 = 1 << 60;
/// `Holding::bits`: has an owner label (cleared under the slot lock when it ends).
pub(crate) const OWNED: u64 = 1 << 59;
/// `Holding::bits`: an upgradable holding (it holds the word's `UP` bit). The guard's fast release
/// tests it with `MANAGED` and `IN_OVERFLOW` in one mask, so plain holdings pay nothing for it.
pub(crate) const UP_HELD: u64 = 1 << 57;
/// `Holding::bits`: left to the holder (the guard marks "has a service to end first" with it, so
/// its release tests one word); the engine never sets it and no engine test reads it.
pub(crate) const HOLDER_MARK: u64 = 1 << 58;
const MODE_SHIFT: u32 = 61;
/// `Holding::bits`: the mode's code (`Mode::code`); zero for an exclusive holding, so that
/// "exclusive" is one more bit in a release's mask test.
pub(crate) const MODE_BITS: u64 = Mode::CODE_MASK << MODE_SHIFT;
const _: () = assert!(Mode::Exclusive.code() == 0);
/// The whole `Holding::bits` of a bare holding that is nothing more (`bare_unsampled`): every unit
/// and nothing else, so neither sampled, told, managed nor upgradable. Its claim writes no record
/// (`Slot::try_claim_bare`); its release is `Slot::release_plain`'s, whose record store goes into
/// record 0, unused while it holds.
pub(crate) const PLAIN_BARE: u64 = (word::MAX_UNITS as u64 & UNITS_MASK) | (Mode::Exclusive.code() << MODE_SHIFT);

impl Holding {
    /// Packs a holding; `mode` is `Mode::code`.
    #[inline(always)]
    pub(crate) fn new(
        record: RecordRef,
        rec: *const Record,
        token: u64,
        units: u32,
        mode: u64,
        managed: bool,
        owned: bool,
    ) -> Self {
        Self::unsampled(record, rec, token, units, mode, managed, owned).sampled_if(token % HOLD_SAMPLE == 0)
    }

    /// `new` without the `SAMPLED` bit, for a claim that tests the token itself (it stamps a
    /// sampled holding's start) and adds the bit in that branch (`sampled_if(true)`): then the
    /// common, unsampled path has nothing to add.
    #[inline(always)]
    pub(crate) fn unsampled(
        record: RecordRef,
        rec: *const Record,
        token: u64,
        units: u32,
        mode: u64,
        managed: bool,
        owned: bool,
    ) -> Self {
        let place = match record {
            RecordRef::Inline(idx) => word::record_bit(idx),
            RecordRef::Overflow(i) => IN_OVERFLOW | ((i as u64 & OVERFLOW_INDEX_MASK) << OVERFLOW_INDEX_SHIFT),
        };
        let bits = (units as u64 & UNITS_MASK)
            | place
            | if managed { MANAGED } else { 0 }
            | if owned { OWNED } else { 0 }
            | (mode << MODE_SHIFT);
        Holding { rec: RecordPtr(rec), token, bits }
    }

    /// Where its record lives.
    #[inline(always)]
    pub(crate) fn record(&self) -> RecordRef {
        if self.bits & IN_OVERFLOW != 0 {
            RecordRef::Overflow(((self.bits >> OVERFLOW_INDEX_SHIFT) & OVERFLOW_INDEX_MASK) as u32)
        } else {
            // `& 3`: a bare holding (no bit; 64 trailing zeros) names record 0.
            RecordRef::Inline((((self.bits & RECORD_BITS) >> 52).trailing_zeros() & 3) as RecordIdx)
        }
    }

    /// A plain exclusive holding without a record (`word.rs`, bare holdings).
    #[inline(always)]
    pub(crate) fn is_bare(&self) -> bool {
        self.bits & (RECORD_BITS | IN_OVERFLOW) == 0
    }

    /// A bare holding of every unit of a read/write key, with `token` (`rec` is record 0). (The
    /// claim builds it as `bare_unsampled(..).sampled_if(..)`, in its sampling branch; a plain
    /// exclusive creation's caller rebuilds it from the token, `api/request.rs`.)
    #[inline(always)]
    pub(crate) fn bare(rec: *const Record, token: u64) -> Holding {
        Self::bare_unsampled(rec, token).sampled_if(token % HOLD_SAMPLE == 0)
    }

    /// `bare` without the `SAMPLED` bit (as `unsampled`).
    #[inline(always)]
    pub(crate) fn bare_unsampled(rec: *const Record, token: u64) -> Holding {
        Holding { rec: RecordPtr(rec), token, bits: PLAIN_BARE }
    }

    /// A plain holding of one unit in the inline record whose bit in the state word is `bit`
    /// (`word::try_claim_unit_bit`), unsampled (as `unsampled`); `mode` is `Mode::code`.
    #[inline(always)]
    pub(crate) fn plain_unit(rec: *const Record, token: u64, bit: u64, mode: u64) -> Holding {
        debug_assert!(bit.count_ones() == 1 && bit & RECORD_BITS != 0);
        Holding { rec: RecordPtr(rec), token, bits: 1 | bit | (mode << MODE_SHIFT) }
    }

    /// The same holding, with `SAMPLED` if `sampled`.
    #[inline(always)]
    pub(crate) fn sampled_if(self, sampled: bool) -> Holding {
        if sampled {
            Holding { bits: self.bits | SAMPLED, ..self }
        } else {
            self
        }
    }

    /// The bits a bare holding gains when it takes record 0 (a promotion to a managed holding
    /// adds [`MANAGED`] too): its release then subtracts the record's bit with its units.
    pub(crate) const RECORD_ZERO: u64 = 1 << 52;

    /// The capacity units it holds.
    #[cfg(test)]
    pub(crate) fn units(&self) -> u32 {
        (self.bits & UNITS_MASK) as u32
    }

    /// Leased or owned: ended through the lease word, by the guard or by an expirer or revoker.
    #[inline(always)]
    pub(crate) fn managed(&self) -> bool {
        self.bits & MANAGED != 0
    }

    /// The same holding, managed (a plain holding that a renew has promoted).
    #[inline]
    pub(crate) fn as_managed(&self) -> Holding {
        Holding { bits: self.bits | MANAGED, ..*self }
    }

    /// Has an owner label to clear when it ends.
    #[inline(always)]
    pub(crate) fn owned(&self) -> bool {
        self.bits & OWNED != 0
    }

    /// What its release subtracts from the state word (`word::release_delta`) for a holding
    /// that is not upgradable (the guard's fast path has checked `UP_HELD`).
    #[inline(always)]
    pub(crate) fn release_delta(&self) -> u64 {
        self.bits & RELEASE_MASK
    }

    /// `release_delta` of a plain holding in an inline record (none of `MANAGED`, `OWNED`,
    /// `IN_OVERFLOW`, `UP_HELD`, `SAMPLED`, `TOLD`, `HOLDER_MARK`: the guard's fast release tests
    /// them first), whose bits are then its delta and its mode: the mode, the top bits, shifted
    /// out and back (two instructions where the mask took three).
    #[inline(always)]
    pub(crate) fn plain_release_delta(&self) -> u64 {
        const _: () = assert!(MODE_BITS == !0 << MODE_SHIFT && MODE_SHIFT == 61);
        let delta = (self.bits << 3) >> 3;
        debug_assert_eq!(delta, self.release_delta(), "not a plain holding: {:#x}", self.bits);
        delta
    }

    /// What its release subtracts from the state word, whatever its mode: an upgradable
    /// holding's also clears `UP` (`word::release_upgradable_delta`).
    #[inline]
    pub(crate) fn word_delta(&self) -> u64 {
        if self.bits & UP_HELD != 0 {
            self.release_delta() + word::UP
        } else {
            self.release_delta()
        }
    }

    /// The same holding with another mode and units (a downgrade: the token and record stay).
    pub(crate) fn with_mode(&self, mode: Mode, units: u32) -> Holding {
        let kept = self.bits & !(UNITS_MASK | UP_HELD | (Mode::CODE_MASK << MODE_SHIFT));
        let up = if matches!(mode, Mode::Upgradable) { UP_HELD } else { 0 };
        Holding { bits: kept | (units as u64 & UNITS_MASK) | up | (mode.code() << MODE_SHIFT), ..*self }
    }

    /// `Mode::code` of the request that made it.
    #[inline(always)]
    pub(crate) fn mode_code(&self) -> u64 {
        self.bits >> MODE_SHIFT
    }

    /// Whether this holding is one of the one-in-`HOLD_SAMPLE` timed for the hold-time histogram:
    /// its token picks it, and the pick is kept in `bits` (`SAMPLED`). Its start time is then in
    /// its record's `acquired_ns`.
    #[inline(always)]
    pub(crate) fn is_sampled(&self) -> bool {
        self.bits & SAMPLED != 0
    }
}

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

    /// The claim this request makes on `word` (a key of `capacity`): an upgradable request's
    /// takes `UP` too (`word::try_claim_upgradable`), every other mode's is `word::try_claim`.
    #[inline(always)]
    pub(crate) fn claim(&self, word: u64, capacity: u32, privileged: bool, limit: u64) -> Result<Claim, Refusal> {
        if let Mode::Upgradable = self.mode {
            return word::try_claim_upgradable(word, capacity, privileged, self.ttl_ns.is_some(), limit);
        }
        word::try_claim(word, capacity, self.need(privileged), limit)
    }

    /// The holding a claim for this request made, packed for its guard.
    #[inline(always)]
    pub(crate) fn holding(&self, record: RecordRef, rec: *const Record, token: u64, units: u32) -> Holding {
        let h = Holding::new(record, rec, token, units, self.mode.code(), self.managed(), self.owner.is_some());
        match self.mode {
            Mode::Upgradable => Holding { bits: h.bits | UP_HELD, ..h },
            _ => h,
        }
    }
}

#[cfg(all(test, not(leasehold_loom)))]
mod tests {
    use super::*;

    #[test]
    fn bits_round_trip_and_give_the_release_delta() {
        let rec = std::ptr::null();
        for idx in 0..word::INLINE_RECORDS as RecordIdx {
            for units in [1, 4, word::MAX_UNITS] {
                let h = Holding::new(RecordRef::Inline(idx), rec, 9, units, 1, idx % 2 == 0, idx == 3);
                assert_eq!(h.record(), RecordRef::Inline(idx));
                assert_eq!((h.units(), h.mode_code(), h.managed(), h.owned()), (units, 1, idx % 2 == 0, idx == 3));
                assert_eq!(h.release_delta(), word::release_delta(idx, units));
            }
        }
        let b = Holding::bare(rec, 9);
        assert!(b.is_bare() && !b.managed() && !b.owned());
        assert_eq!(
            (b.record(), b.units(), b.mode_code()),
            (RecordRef::Inline(0), word::MAX_UNITS, Mode::Exclusive.code())
        );
        assert_eq!(b.release_delta(), word::MAX_UNITS as u64);
        let promoted = Holding { bits: b.bits | Holding::RECORD_ZERO | MANAGED, ..b };
        assert!(!promoted.is_bare() && promoted.managed());
        assert_eq!(promoted.record(), RecordRef::Inline(0));
        assert_eq!(promoted.release_delta(), word::release_delta(0, word::MAX_UNITS));
        let max = OVERFLOW_INDEX_MASK as u32;
        let h = Holding::new(RecordRef::Overflow(max), rec, 9, 3, 2, true, false);
        assert_eq!((h.record(), h.units(), h.mode_code()), (RecordRef::Overflow(max), 3, 2));
        assert_eq!(h.release_delta(), word::release_delta(word::OVERFLOW, 3));
        assert!(!h.is_sampled());
        // The sampled bit follows the token, and changes nothing else.
        for token in [0, 1, 255, 256, 257, 512, u64::MAX - 255] {
            let sampled = token % HOLD_SAMPLE == 0;
            let h = Holding::new(RecordRef::Overflow(max), rec, token, 3, 2, true, false);
            assert_eq!((h.is_sampled(), h.record(), h.release_delta()), (sampled, RecordRef::Overflow(max), 3));
            let h = Holding::new(RecordRef::Inline(2), rec, token, 1, 2, false, false);
            assert_eq!(
                (h.is_sampled(), h.record(), h.release_delta()),
                (sampled, RecordRef::Inline(2), word::release_delta(2, 1))
            );
            let u = Holding::plain_unit(rec, token, word::record_bit(2), 2).sampled_if(sampled);
            assert_eq!(u.bits, h.bits);
            let b = Holding::bare(rec, token);
            assert_eq!((b.is_sampled(), b.is_bare(), b.release_delta()), (sampled, true, word::MAX_UNITS as u64));
        }
    }
}
