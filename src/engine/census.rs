//! A matrix key's census: how many holders hold it in each mode of the compatibility matrix.
//!
//! The state word counts units, which decides exclusive against everything and shared against
//! shared; it cannot tell an intention-exclusive holder from a reader. So while a key has a holder
//! in an intention mode, the word carries `MATRIX`, every claim on the key is made under the slot
//! lock, and this census (in the slot's lock-protected part) says which modes are held: a claim
//! is admitted when [`compat::compatible`](crate::vocab::compat::compatible) says its mode may be
//! held beside every mode the census counts. The word still enforces units, so the census only
//! ever has to be right about the modes that share units (IS, IX, S, SIX, U).
//!
//! The census may count a holding a moment longer than the word does (a lock-free release
//! subtracts its units, then takes the slot lock to be counted out): that errs towards refusing,
//! and the late releaser wakes the queue once it is counted out. It never counts one too few:
//! `MATRIX` is cleared only when the census is empty, so no release can be counted out of a census
//! that did not count it in.

#![deny(unsafe_code)]

use crate::engine::word;
use crate::vocab::compat::{compatible, Granule, ALL};

/// Holders per matrix mode, indexed by `Granule as usize`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Census {
    held: [u32; ALL.len()],
}

impl Census {
    /// The census of a read/write key's word just before it gains `MATRIX`: everyone holding it
    /// then came through the lock-free path in a mode the word shows. An exclusive holder is the
    /// only one to hold every unit with at most one record (readers that many hold four inline
    /// records); an upgradable holder is the `UP` bit; the other units are readers.
    pub(crate) fn of_word(w: u64, capacity: u32) -> Census {
        let mut c = Census::default();
        let units = word::units(w);
        if units == 0 {
            return c;
        }
        if units == capacity && word::records(w).count_ones() <= 1 && w & word::UP == 0 {
            c.held[Granule::X as usize] = 1;
            return c;
        }
        let up = u32::from(w & word::UP != 0);
        c.held[Granule::U as usize] = up;
        c.held[Granule::S as usize] = units - up;
        c
    }

    /// Whether a request in mode `g` may be held beside every holder counted.
    pub(crate) fn admits(&self, g: Granule) -> bool {
        ALL.iter().all(|&h| self.held[h as usize] == 0 || compatible(h, g))
    }

    /// Counts a holding in.
    pub(crate) fn add(&mut self, g: Granule) {
        self.held[g as usize] += 1;
    }

    /// Counts a holding out. A holding is counted out only once and only after it was counted in
    /// (module docs), so the count is positive.
    pub(crate) fn remove(&mut self, g: Granule) {
        debug_assert!(self.held[g as usize] > 0, "census: {g} counted out but not in");
        self.held[g as usize] = self.held[g as usize].saturating_sub(1);
    }

    /// Moves one holding from mode `from` to mode `to` (an upgrade or downgrade).
    #[allow(dead_code)] // for upgrade and downgrade on a matrix key
    pub(crate) fn reclassify(&mut self, from: Granule, to: Granule) {
        self.remove(from);
        self.add(to);
    }

    /// Holders counted, all modes.
    pub(crate) fn total(&self) -> u32 {
        self.held.iter().sum()
    }

    /// Holders counted in mode `g`.
    #[cfg(test)]
    pub(crate) fn count(&self, g: Granule) -> u32 {
        self.held[g as usize]
    }
}

#[cfg(all(test, not(leasehold_loom)))]
mod tests {
    use super::*;
    use crate::vocab::mode::MAX_UNITS;

    #[test]
    fn admits_exactly_what_the_matrix_allows_beside_every_holder() {
        for a in ALL {
            for b in ALL {
                let mut c = Census::default();
                assert!(c.admits(a), "an empty census admits {a}");
                c.add(a);
                c.add(Granule::IS);
                assert_eq!(c.admits(b), compatible(a, b) && compatible(Granule::IS, b), "{a}+IS then {b}");
                c.remove(Granule::IS);
                assert_eq!(c.admits(b), compatible(a, b), "{a} then {b}");
                c.remove(a);
                assert_eq!(c.total(), 0);
            }
        }
    }

    #[test]
    fn a_word_is_read_as_the_holders_it_shows() {
        let rec = |i: u8| word::record_bit(i);
        assert_eq!(Census::of_word(0, MAX_UNITS), Census::default());
        let x = Census::of_word(u64::from(MAX_UNITS) | rec(0), MAX_UNITS);
        assert_eq!((x.count(Granule::X), x.total()), (1, 1));
        let readers = Census::of_word(3 | rec(0) | rec(1) | rec(2), MAX_UNITS);
        assert_eq!((readers.count(Granule::S), readers.total()), (3, 3));
        let with_up = Census::of_word(2 | rec(0) | rec(1) | word::UP, MAX_UNITS);
        assert_eq!((with_up.count(Granule::U), with_up.count(Granule::S)), (1, 1));
        // A full key of readers (all four inline records and overflow ones) is not an exclusive holder.
        let full = Census::of_word(u64::from(MAX_UNITS) | rec(0) | rec(1) | rec(2) | rec(3), MAX_UNITS);
        assert_eq!(full.count(Granule::S), MAX_UNITS);
    }

    #[test]
    fn reclassify_moves_one_holding() {
        let mut c = Census::default();
        c.add(Granule::U);
        c.add(Granule::S);
        c.reclassify(Granule::U, Granule::X);
        assert_eq!((c.count(Granule::U), c.count(Granule::X), c.total()), (0, 1, 2));
    }
}
