//! The lease word: one `u64` per holder record, the single atomic step of renewal.
//!
//! ```text
//!  63 ................................ 11    10     9 .... 3    2       1..0
//! [        deadline (64 ns units)       | EXCL |   tag     | LEASED | state ]
//! ```
//!
//! | field | meaning |
//! |---|---|
//! | `state` | `FREE` (no holding, or a claim whose lease is not written yet), `HELD` (a managed holding: it has a lease or an owner, so an expirer or a revoker may end it), `PLAIN` (a holding without lease or owner: only its guard ends it), `EXPIRING` (an expirer or a revoker won the holding; its unit is being returned) |
//! | `LEASED` | the holding has a deadline; without it the deadline bits are zero |
//! | `tag` | low 7 bits of the holding's fencing token: with the full-token check just before every compare-exchange, a stale guard's compare-exchange cannot match a later holding of the same record |
//! | `EXCL` | a managed exclusive holding: its release may leave this word as it is (below) |
//! | `deadline` | clock nanoseconds divided by 64, rounded up: a deadline reaches about 18 years past the clock's origin |
//!
//! Renew, release and expiry of one holding all compare-exchange this word, so exactly one of them
//! wins: renew `HELD -> HELD` (later deadline), expiry `HELD -> EXPIRING`. A release writes `FREE`
//! before it returns its unit to the slot, so that the reaper, which reads leases only of records
//! whose bit is set, sees either the current holding or an in-flux `FREE`/`EXPIRING`, never a
//! finished holding's stale deadline.
//!
//! Except an `EXCL` word: the release of an exclusive lease is one compare-exchange on the slot's
//! state word and leaves its lease word `HELD` (`Slot::release_exclusive_lease`). Such a word is
//! taken for its holding's only while the state word shows that holding (an exclusive holding is
//! alone, so the word's counter gives its token exactly): an ender checks that against the word
//! it marked (`Slot::force_end`), and a reader against the word it loaded.

#![deny(unsafe_code)]

pub(crate) const FREE: u64 = 0;
pub(crate) const HELD: u64 = 1;
pub(crate) const EXPIRING: u64 = 2;
pub(crate) const PLAIN: u64 = 3;
const STATE_MASK: u64 = 0b11;
const LEASED: u64 = 1 << 2;
const TAG_SHIFT: u32 = 3;
const TAG_MASK: u64 = 0x7F << TAG_SHIFT;
/// A managed exclusive holding (module docs).
const EXCL: u64 = 1 << 10;
const DEADLINE_SHIFT: u32 = 11;
/// Granularity of a stored deadline, in nanoseconds (a power of two, so whole milliseconds are exact).
pub(crate) const DEADLINE_UNIT_NS: u64 = 64;
/// The latest deadline the word can hold, in clock nanoseconds.
pub(crate) const MAX_DEADLINE_NS: u64 = ((1 << (64 - DEADLINE_SHIFT)) - 1) * DEADLINE_UNIT_NS;

/// The longest lease: half the range of a stored deadline (about nine years).
pub const MAX_TTL: std::time::Duration = std::time::Duration::from_nanos(MAX_DEADLINE_NS / 2);

/// The lease word's state field.
#[inline]
pub(crate) const fn state(word: u64) -> u64 {
    word & STATE_MASK
}

/// Whether the holding has a deadline.
#[inline]
pub(crate) const fn is_leased(word: u64) -> bool {
    word & LEASED != 0
}

/// The deadline in clock nanoseconds (only meaningful when leased).
#[inline]
pub(crate) const fn deadline_ns(word: u64) -> u64 {
    (word >> DEADLINE_SHIFT) * DEADLINE_UNIT_NS
}

/// The tag field.
#[inline]
pub(crate) const fn tag(word: u64) -> u64 {
    (word & TAG_MASK) >> TAG_SHIFT
}

/// The tag of a token.
#[inline]
pub(crate) const fn tag_of(token: u64) -> u64 {
    token & 0x7F
}

/// Whether a held (or expiring) word is an exclusive holding's (`EXCL`): it may outlive its
/// holding (module docs). Meaningless for a plain word.
#[inline]
pub(crate) const fn is_exclusive(word: u64) -> bool {
    word & EXCL != 0
}

/// The same held word, marked as an exclusive holding's (tests: `held_exclusive` builds one).
#[cfg(test)]
const fn exclusive(word: u64) -> u64 {
    word | EXCL
}

/// The same held word, no longer an exclusive holding's (a downgrade).
#[inline]
pub(crate) const fn not_exclusive(word: u64) -> u64 {
    word & !EXCL
}

/// Whether `word` is the held lease of the exclusive holding with `token` (`is_held_by` and
/// `EXCL`, in one test).
#[inline]
pub(crate) const fn is_held_exclusive_by(word: u64, token: u64) -> bool {
    word & (STATE_MASK | EXCL | TAG_MASK) == HELD | EXCL | (tag_of(token) << TAG_SHIFT)
}

/// A held word for `token`, with a deadline (rounded up to the next unit) or none.
///
/// The caller has checked `deadline_ns <= MAX_DEADLINE_NS`.
#[inline]
pub(crate) const fn held(token: u64, deadline_ns: Option<u64>) -> u64 {
    let base = HELD | (tag_of(token) << TAG_SHIFT);
    match deadline_ns {
        Some(ns) => base | LEASED | (ns.div_ceil(DEADLINE_UNIT_NS) << DEADLINE_SHIFT),
        None => base,
    }
}

/// The word of a plain holding (no lease, no owner) for `token`. With no deadline to keep, its
/// deadline bits carry the holding's `meta` (mode and units), saving a store on the hot path.
/// The token's whole low byte goes in (one instruction fewer than the tag's 7 bits): the bit
/// above the tag, `EXCL` in a held word, is nothing in a plain one, and no reader looks at it.
#[inline]
pub(crate) const fn plain(token: u64, meta: u64) -> u64 {
    PLAIN | ((token & 0xFF) << TAG_SHIFT) | (meta << DEADLINE_SHIFT)
}

/// `exclusive(held(token, deadline_ns))`, built from the token's whole low byte: the bit above
/// the tag is `EXCL`, set anyway (one instruction fewer on the leased acquire).
#[inline]
pub(crate) const fn held_exclusive(token: u64, deadline_ns: Option<u64>) -> u64 {
    held(0, deadline_ns) | ((token & 0xFF) << TAG_SHIFT) | EXCL
}

/// The `meta` a plain word carries.
#[inline]
pub(crate) const fn plain_meta(word: u64) -> u64 {
    word >> DEADLINE_SHIFT
}

/// The same holding with a new deadline.
#[inline]
pub(crate) const fn renewed(word: u64, deadline_ns: u64) -> u64 {
    (word & (STATE_MASK | TAG_MASK | EXCL)) | LEASED | (deadline_ns.div_ceil(DEADLINE_UNIT_NS) << DEADLINE_SHIFT)
}

/// The same held lease (state, deadline) for the holding with `token`: an upgrade, which is a new
/// holding in the same record, keeps its lease.
#[inline]
pub(crate) const fn retagged(word: u64, token: u64) -> u64 {
    (word & !TAG_MASK) | (tag_of(token) << TAG_SHIFT)
}

/// The same holding marked as being expired or revoked.
#[inline]
pub(crate) const fn expiring(word: u64) -> u64 {
    (word & !STATE_MASK) | EXPIRING
}

/// Whether `word` is the held lease of the holding with `token`.
#[inline]
pub(crate) const fn is_held_by(word: u64, token: u64) -> bool {
    state(word) == HELD && tag(word) == tag_of(token)
}

/// Whether a held, leased word's deadline has passed at `now_ns`.
#[inline]
pub(crate) const fn is_due(word: u64, now_ns: u64) -> bool {
    state(word) == HELD && is_leased(word) && deadline_ns(word) <= now_ns
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_at_the_boundaries() {
        for token in [0_u64, 1, 0xFF, 0x100, u64::MAX] {
            for deadline in [0, 1, 63, 64, 65, 1_000_000, MAX_DEADLINE_NS - 1, MAX_DEADLINE_NS] {
                let w = held(token, Some(deadline));
                assert_eq!(state(w), HELD, "{w:064b}");
                assert!(is_leased(w));
                assert!(is_held_by(w, token));
                assert!(!is_held_by(w, token.wrapping_add(1)), "{w:064b} token {token}");
                let d = deadline_ns(w);
                assert!(d >= deadline && d < deadline + DEADLINE_UNIT_NS, "{deadline} stored as {d}");
                assert!(d == 0 || !is_due(w, d - 1));
                assert!(is_due(w, d));
                assert!(!is_exclusive(w) && !is_held_exclusive_by(w, token));
                let x = exclusive(w);
                assert_eq!(held_exclusive(token, Some(deadline)), x);
                assert!(is_exclusive(x) && is_held_by(x, token) && is_held_exclusive_by(x, token));
                assert!(!is_held_exclusive_by(x, token.wrapping_add(1)));
                assert_eq!(deadline_ns(x), d);
                assert!(is_exclusive(renewed(x, deadline + 64)), "a renewal keeps EXCL");
                assert!(is_exclusive(retagged(x, token.wrapping_add(1))), "an upgrade keeps EXCL");
                assert_eq!(not_exclusive(x), w);
                assert!(!is_held_exclusive_by(expiring(x), token));
                let e = expiring(w);
                assert_eq!(state(e), EXPIRING);
                assert!(!is_held_by(e, token));
                assert!(!is_due(e, u64::MAX));
            }
            let w = held(token, None);
            assert!(!is_leased(w));
            assert!(!is_due(w, u64::MAX));
            let r = renewed(w, 5_000);
            assert!(is_leased(r) && is_held_by(r, token));
            assert_eq!(deadline_ns(r), 5_056);
        }
    }

    #[test]
    fn plain_words_carry_their_meta() {
        let meta = 2 | (1_048_575 << crate::vocab::mode::Mode::CODE_BITS);
        let w = plain(0x1234, meta);
        assert_eq!(state(w), PLAIN);
        assert_eq!(tag(w), 0x34);
        assert!(!is_exclusive(w));
        assert_eq!(plain_meta(w), meta);
        assert!(!is_leased(w) && !is_due(w, u64::MAX) && !is_held_by(w, 0x1234));
    }

    #[test]
    fn whole_milliseconds_are_exact() {
        for ms in [1_u64, 30, 1_000, 30_000, 86_400_000] {
            assert_eq!(deadline_ns(held(7, Some(ms * 1_000_000))), ms * 1_000_000);
        }
    }
}
