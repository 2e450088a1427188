//! The compatibility matrix of the multi-granularity lock modes, as data.
//!
//! Gray et al.'s five modes (IS, IX, S, SIX, X) plus the update mode U of an upgradable holder
//! (SQL Server's and parking_lot's upgradable read): one table says which pairs may be held on
//! one key at once, and one table says which mode covers two (the mode a holder needs to hold
//! both rights, used to merge duplicate keys of one request). Nothing else in the crate decides
//! compatibility by special cases: it asks [`compatible`].
//!
//! | held \ asked | IS | IX | S | SIX | U | X |
//! |---|---|---|---|---|---|---|
//! | IS  | yes | yes | yes | yes | yes | no |
//! | IX  | yes | yes | no  | no  | no  | no |
//! | S   | yes | no  | yes | no  | yes | no |
//! | SIX | yes | no  | no  | no  | no  | no |
//! | U   | yes | no  | yes | no  | no  | no |
//! | X   | no  | no  | no  | no  | no  | no |
//!
//! The partial order of strength (a stronger mode grants every right of a weaker one and conflicts
//! with everything the weaker one conflicts with): IS < IX < SIX < X, IS < S < SIX,
//! S < U < X.

#![deny(unsafe_code)]

use std::fmt;

/// A mode of the multi-granularity locking matrix.
///
/// # Examples
///
/// ```
/// use leasehold::compat::{compatible, Granule};
/// // A table locked IX by a writer of some rows admits another row writer (IX),
/// // but not a table scan (S), which waits for the row writers.
/// assert!(compatible(Granule::IX, Granule::IX));
/// assert!(!compatible(Granule::IX, Granule::S));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Granule {
    /// Intention shared: will take S on some descendants.
    IS = 0,
    /// Intention exclusive: will take X (or S) on some descendants.
    IX = 1,
    /// Shared: reads the whole node.
    S = 2,
    /// Shared plus intention exclusive: reads the whole node, writes some descendants.
    SIX = 3,
    /// Update (upgradable): reads, beside readers, and alone may become X.
    U = 4,
    /// Exclusive: alone.
    X = 5,
}

/// Every mode, in index order.
pub const ALL: [Granule; 6] = [Granule::IS, Granule::IX, Granule::S, Granule::SIX, Granule::U, Granule::X];

const Y: bool = true;
const N: bool = false;

/// `COMPATIBLE[held][asked]`: whether `asked` may be granted beside a holder of `held`.
pub const COMPATIBLE: [[bool; 6]; 6] = [
    //  IS IX  S SIX  U  X
    [Y, Y, Y, Y, Y, N], // IS
    [Y, Y, N, N, N, N], // IX
    [Y, N, Y, N, Y, N], // S
    [Y, N, N, N, N, N], // SIX
    [Y, N, Y, N, N, N], // U
    [N, N, N, N, N, N], // X
];

use Granule::{IS, IX, S, SIX, U, X};

/// `JOIN[a][b]`: the weakest mode at least as strong as both (the least upper bound in the
/// strength order above): what one holder needs to hold the rights of both.
pub const JOIN: [[Granule; 6]; 6] = [
    //   IS   IX   S    SIX  U  X
    [IS, IX, S, SIX, U, X],     // IS
    [IX, IX, SIX, SIX, X, X],   // IX
    [S, SIX, S, SIX, U, X],     // S
    [SIX, SIX, SIX, SIX, X, X], // SIX
    [U, X, U, X, U, X],         // U
    [X, X, X, X, X, X],         // X
];

/// Whether a holder of `held` and a holder of `asked` may hold one key at once.
///
/// # Examples
///
/// ```
/// use leasehold::compat::{compatible, Granule};
/// assert!(compatible(Granule::S, Granule::U));
/// assert!(!compatible(Granule::U, Granule::U));
/// ```
#[inline]
pub const fn compatible(held: Granule, asked: Granule) -> bool {
    COMPATIBLE[held as usize][asked as usize]
}

/// The weakest mode that covers both `a` and `b`.
///
/// # Examples
///
/// ```
/// use leasehold::compat::{join, Granule};
/// assert_eq!(join(Granule::S, Granule::IX), Granule::SIX);
/// assert_eq!(join(Granule::IS, Granule::S), Granule::S);
/// ```
#[inline]
pub const fn join(a: Granule, b: Granule) -> Granule {
    JOIN[a as usize][b as usize]
}

/// Whether `strong` grants every right of `weak` (the strength order; reflexive).
///
/// # Examples
///
/// ```
/// use leasehold::compat::{covers, Granule};
/// assert!(covers(Granule::SIX, Granule::S));
/// assert!(!covers(Granule::U, Granule::IX));
/// ```
#[inline]
pub const fn covers(strong: Granule, weak: Granule) -> bool {
    JOIN[strong as usize][weak as usize] as u8 == strong as u8
}

impl Granule {
    /// The mode with index `i` (the table's order), if there is one.
    ///
    /// # Examples
    ///
    /// ```
    /// use leasehold::compat::Granule;
    /// assert_eq!(Granule::from_index(5), Some(Granule::X));
    /// assert_eq!(Granule::from_index(6), None);
    /// ```
    pub const fn from_index(i: usize) -> Option<Granule> {
        if i < ALL.len() {
            Some(ALL[i])
        } else {
            None
        }
    }
}

impl fmt::Display for Granule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IS => "IS",
            IX => "IX",
            S => "S",
            SIX => "SIX",
            U => "U",
            X => "X",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rights a mode grants, from which the matrix is derived independently of the table:
    /// (reads the node, writes the node, reads below, writes below, may upgrade).
    fn rights(m: Granule) -> (bool, bool, bool, bool, bool) {
        match m {
            IS => (false, false, true, false, false),
            IX => (false, false, true, true, false),
            S => (true, false, true, false, false),
            SIX => (true, false, true, true, false),
            U => (true, false, true, false, true),
            X => (true, true, true, true, false),
        }
    }

    /// Two holders conflict when one writes the node and the other touches it at all, when one
    /// reads the whole node and the other writes below it, or when both may upgrade.
    fn derived_compatible(a: Granule, b: Granule) -> bool {
        let (ra, wa, _, wba, ua) = rights(a);
        let (rb, wb, _, wbb, ub) = rights(b);
        !(wa || wb || (ra && wbb) || (rb && wba) || (ua && ub))
    }

    #[test]
    fn matrix_matches_the_rights_derivation() {
        for a in ALL {
            for b in ALL {
                assert_eq!(compatible(a, b), derived_compatible(a, b), "{a} vs {b}");
            }
        }
    }

    #[test]
    fn matrix_is_symmetric_and_x_excludes_all() {
        for a in ALL {
            assert!(!compatible(X, a) && !compatible(a, X));
            if a != X {
                assert!(compatible(IS, a), "IS beside {a}");
            }
            for b in ALL {
                assert_eq!(compatible(a, b), compatible(b, a), "{a} vs {b}");
            }
        }
    }

    #[test]
    fn join_is_the_least_upper_bound() {
        // Strength from the rights: a covers b when a's rights include b's and a conflicts with
        // everything b conflicts with.
        let stronger = |a: Granule, b: Granule| {
            let (ra, wa, rba, wba, ua) = rights(a);
            let (rb, wb, rbb, wbb, ub) = rights(b);
            let rights_ok = (ra || !rb) && (wa || !wb) && (rba || !rbb) && (wba || !wbb) && (ua || !ub || wa);
            rights_ok && ALL.iter().all(|&c| derived_compatible(b, c) || !derived_compatible(a, c))
        };
        for a in ALL {
            for b in ALL {
                assert_eq!(covers(a, b), stronger(a, b), "covers({a}, {b})");
                let j = join(a, b);
                assert!(covers(j, a) && covers(j, b), "join({a}, {b}) = {j} is an upper bound");
                for c in ALL {
                    if covers(c, a) && covers(c, b) {
                        assert!(covers(c, j), "join({a}, {b}) = {j} is below every upper bound, {c} too");
                    }
                }
                assert_eq!(join(a, b), join(b, a));
                for c in ALL {
                    assert_eq!(join(join(a, b), c), join(a, join(b, c)));
                }
            }
            assert_eq!(join(a, a), a);
        }
    }

    #[test]
    fn a_stronger_mode_conflicts_with_everything_a_weaker_one_does() {
        for a in ALL {
            for b in ALL {
                if covers(a, b) {
                    for c in ALL {
                        assert!(compatible(b, c) || !compatible(a, c), "{a} covers {b} but admits {c}");
                    }
                }
            }
        }
    }

    #[test]
    fn indices_round_trip() {
        for (i, m) in ALL.iter().enumerate() {
            assert_eq!(Granule::from_index(i), Some(*m));
            assert_eq!(*m as usize, i);
        }
    }
}
