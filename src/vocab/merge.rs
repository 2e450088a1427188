//! Merging two modes of one key (a key named twice in one `lock_many`): the join of the
//! compatibility matrix. Its own module because it speaks of errors, and `error.rs` speaks of
//! modes (a refused mode change, a deadlock's cycle): here neither imports the other in a circle.

#![deny(unsafe_code)]

use crate::vocab::compat::join;
use crate::vocab::error::LockError;
use crate::vocab::mode::{Mode, MAX_UNITS};

/// The mode that covers both `a` and `b`, for a key named twice in one request: the join of the
/// matrix (`compat::join`). On a semaphore key, shared is one permit and exclusive all of them;
/// a semaphore mode beside a mode of the hierarchy (upgradable, intention) is refused: one key
/// is a semaphore or a read/write key, not both.
pub(crate) fn merge(a: Mode, b: Mode) -> Result<Mode, LockError> {
    match (a, b) {
        (Mode::Semaphore(n), Mode::Semaphore(m)) if n != m => Err(LockError::PermitMismatch { live: n, requested: m }),
        (Mode::Semaphore(n), Mode::Semaphore(_) | Mode::Shared) | (Mode::Shared, Mode::Semaphore(n)) => {
            Ok(Mode::Semaphore(n))
        }
        (Mode::Semaphore(_), Mode::Exclusive) | (Mode::Exclusive, Mode::Semaphore(_)) => Ok(Mode::Exclusive),
        (Mode::Semaphore(n), _) | (_, Mode::Semaphore(n)) => {
            Err(LockError::PermitMismatch { live: n, requested: MAX_UNITS })
        }
        _ => Ok(Mode::from_granule(join(a.granule(), b.granule()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vocab::compat::{covers, ALL};
    use Mode::*;

    #[test]
    fn merge_takes_the_stronger_mode() {
        assert_eq!(merge(Shared, Shared), Ok(Shared));
        assert_eq!(merge(Shared, Exclusive), Ok(Exclusive));
        assert_eq!(merge(Exclusive, Shared), Ok(Exclusive));
        assert_eq!(merge(Semaphore(3), Shared), Ok(Semaphore(3)));
        assert_eq!(merge(Shared, Semaphore(3)), Ok(Semaphore(3)));
        assert_eq!(merge(Semaphore(3), Semaphore(3)), Ok(Semaphore(3)));
        assert_eq!(merge(Semaphore(3), Exclusive), Ok(Exclusive));
        assert_eq!(merge(Semaphore(3), Semaphore(4)), Err(LockError::PermitMismatch { live: 3, requested: 4 }));
        assert_eq!(merge(IntentExclusive, Shared), Ok(SharedIntentExclusive));
        assert_eq!(merge(IntentShared, Upgradable), Ok(Upgradable));
        assert_eq!(merge(Upgradable, IntentExclusive), Ok(Exclusive));
        assert_eq!(merge(Semaphore(2), IntentShared), Err(LockError::PermitMismatch { live: 2, requested: MAX_UNITS }));
    }

    #[test]
    fn merge_covers_both_for_every_pair_of_matrix_modes() {
        for a in ALL {
            for b in ALL {
                let (ma, mb) = (Mode::from_granule(a), Mode::from_granule(b));
                let m = merge(ma, mb).expect("matrix modes always merge");
                assert!(covers(m.granule(), a) && covers(m.granule(), b), "{ma} + {mb} = {m}");
                assert_eq!(m.granule(), join(a, b));
            }
        }
    }
}
