//! The keys of one lock and the rule that says who holds it: pure functions over a snapshot of
//! the lock's waiter keys, so the recipe's decisions are tested without a cluster.
//!
//! A lock named `name` owns the key range `{namespace}{name}\0`; every waiter writes one key there,
//! `{namespace}{name}\0{lease:016x}`, bound to its own lease. etcd gives each key a create revision
//! from one cluster-wide counter; the order of create revisions is the queue's order, and the
//! holder's create revision is its fencing token.

use leasehold::compat::compatible;
use leasehold::{Mode, MAX_UNITS};

/// The range of waiter keys of one lock.
pub(crate) fn lock_prefix(namespace: &str, name: &str) -> Vec<u8> {
    let mut p = Vec::with_capacity(namespace.len() + name.len() + 1);
    p.extend_from_slice(namespace.as_bytes());
    p.extend_from_slice(name.as_bytes());
    p.push(0);
    p
}

/// One waiter's key.
pub(crate) fn entry_key(prefix: &[u8], lease: i64) -> Vec<u8> {
    let mut k = prefix.to_vec();
    k.extend_from_slice(format!("{lease:016x}").as_bytes());
    k
}

/// What a waiter's key says of it: its mode (the owner follows after a newline, for people
/// reading the keys with etcdctl).
pub(crate) fn encode(mode: Mode, owner: Option<&str>) -> Vec<u8> {
    let mut v = match mode {
        Mode::Exclusive => "x".to_string(),
        Mode::Shared => "s".to_string(),
        Mode::Semaphore(n) => format!("n{n}"),
        Mode::Upgradable => "u".to_string(),
        Mode::IntentShared => "is".to_string(),
        Mode::IntentExclusive => "ix".to_string(),
        Mode::SharedIntentExclusive => "six".to_string(),
    };
    if let Some(owner) = owner {
        v.push('\n');
        v.push_str(owner);
    }
    v.into_bytes()
}

/// The mode written in a waiter's key; `None` for a value this crate did not write.
pub(crate) fn decode(value: &[u8]) -> Option<Mode> {
    let head = value.split(|&b| b == b'\n').next()?;
    match head {
        b"x" => Some(Mode::Exclusive),
        b"s" => Some(Mode::Shared),
        b"u" => Some(Mode::Upgradable),
        b"is" => Some(Mode::IntentShared),
        b"ix" => Some(Mode::IntentExclusive),
        b"six" => Some(Mode::SharedIntentExclusive),
        [b'n', digits @ ..] => std::str::from_utf8(digits).ok()?.parse().ok().map(Mode::Semaphore),
        _ => None,
    }
}

/// One waiter in a snapshot of the lock's range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    pub key: Vec<u8>,
    pub create_revision: i64,
    /// `None`: a key this crate did not write; it is treated as exclusive (it blocks everyone).
    pub mode: Option<Mode>,
}

/// The rule's answer for one waiter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The waiter holds the lock.
    Held,
    /// The waiter's own key is gone (its lease expired or was revoked while it waited).
    Gone,
    /// Wait for this key's deletion: the latest earlier waiter that conflicts.
    WaitFor(Vec<u8>),
    /// A semaphore that is full: wait for any earlier waiter to leave.
    WaitForAny,
    /// A semaphore with a different number of permits is live on the key.
    Mismatch { live: u32 },
}

/// Who holds: a mode of the matrix (exclusive, shared, upgradable, the intention modes) when no
/// earlier waiter's mode conflicts with it by the compatibility matrix (so exclusive waits for
/// every earlier waiter, a reader only for earlier writers, IX for earlier S, SIX, U and X;
/// semaphore waiters and keys this crate did not write conflict with every mode of the matrix);
/// semaphore(n), when every earlier waiter is a semaphore waiter and fewer than n are earlier (it
/// is among the n lowest create revisions). A semaphore and a mode of the hierarchy (upgradable,
/// intention) on one key refuse each other as a mismatch, as in the in-process manager.
pub(crate) fn verdict(entries: &[Entry], mine: &[u8], mode: Mode) -> Verdict {
    let Some(me) = entries.iter().find(|e| e.key == mine) else { return Verdict::Gone };
    let earlier = || entries.iter().filter(|e| e.create_revision < me.create_revision);
    let latest = |it: &mut dyn Iterator<Item = &Entry>| it.max_by_key(|e| e.create_revision).map(|e| e.key.clone());
    let hierarchy = |m: Mode| !matches!(m, Mode::Exclusive | Mode::Shared | Mode::Semaphore(_));
    match mode {
        Mode::Semaphore(n) => {
            let live = entries.iter().find_map(|e| match e.mode {
                Some(Mode::Semaphore(m)) if m != n => Some(m),
                Some(m) if hierarchy(m) => Some(MAX_UNITS),
                _ => None,
            });
            if let Some(live) = live {
                return Verdict::Mismatch { live };
            }
            let blocker = latest(&mut earlier().filter(|e| !matches!(e.mode, Some(Mode::Semaphore(_)))));
            if let Some(k) = blocker {
                return Verdict::WaitFor(k);
            }
            if earlier().count() < n as usize {
                Verdict::Held
            } else {
                Verdict::WaitForAny
            }
        }
        _ => {
            if hierarchy(mode) {
                let semaphore = entries.iter().find_map(|e| match e.mode {
                    Some(Mode::Semaphore(n)) => Some(n),
                    _ => None,
                });
                if let Some(live) = semaphore {
                    return Verdict::Mismatch { live };
                }
            }
            let conflicts = |e: &&Entry| match e.mode {
                Some(Mode::Semaphore(_)) | None => true,
                Some(m) => !compatible(m.granule(), mode.granule()),
            };
            match latest(&mut earlier().filter(conflicts)) {
                None => Verdict::Held,
                Some(k) => Verdict::WaitFor(k),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(name: &str, rev: i64, mode: Mode) -> Entry {
        Entry { key: name.as_bytes().to_vec(), create_revision: rev, mode: Some(mode) }
    }

    #[test]
    fn exclusive_holds_only_when_first_and_waits_for_its_predecessor() {
        let q = [e("a", 5, Mode::Exclusive), e("b", 7, Mode::Exclusive), e("c", 9, Mode::Exclusive)];
        assert_eq!(verdict(&q, b"a", Mode::Exclusive), Verdict::Held);
        assert_eq!(verdict(&q, b"b", Mode::Exclusive), Verdict::WaitFor(b"a".to_vec()));
        assert_eq!(verdict(&q, b"c", Mode::Exclusive), Verdict::WaitFor(b"b".to_vec()));
        assert_eq!(verdict(&q, b"z", Mode::Exclusive), Verdict::Gone);
    }

    #[test]
    fn readers_wait_only_for_earlier_writers_and_writers_for_everyone() {
        let q =
            [e("r1", 3, Mode::Shared), e("r2", 4, Mode::Shared), e("w", 6, Mode::Exclusive), e("r3", 8, Mode::Shared)];
        assert_eq!(verdict(&q, b"r1", Mode::Shared), Verdict::Held);
        assert_eq!(verdict(&q, b"r2", Mode::Shared), Verdict::Held);
        assert_eq!(verdict(&q, b"w", Mode::Exclusive), Verdict::WaitFor(b"r2".to_vec()));
        assert_eq!(verdict(&q, b"r3", Mode::Shared), Verdict::WaitFor(b"w".to_vec()));
    }

    #[test]
    fn a_semaphore_holds_among_the_n_lowest() {
        let q = [e("a", 1, Mode::Semaphore(2)), e("b", 2, Mode::Semaphore(2)), e("c", 3, Mode::Semaphore(2))];
        assert_eq!(verdict(&q, b"a", Mode::Semaphore(2)), Verdict::Held);
        assert_eq!(verdict(&q, b"b", Mode::Semaphore(2)), Verdict::Held);
        assert_eq!(verdict(&q, b"c", Mode::Semaphore(2)), Verdict::WaitForAny);
        assert_eq!(verdict(&q[1..], b"c", Mode::Semaphore(2)), Verdict::Held);
    }

    #[test]
    fn a_semaphore_refuses_other_permits_and_waits_for_other_modes() {
        let q = [e("a", 1, Mode::Semaphore(2)), e("b", 2, Mode::Semaphore(3))];
        assert_eq!(verdict(&q, b"b", Mode::Semaphore(3)), Verdict::Mismatch { live: 2 });
        let q = [e("w", 1, Mode::Exclusive), e("s", 2, Mode::Semaphore(3))];
        assert_eq!(verdict(&q, b"s", Mode::Semaphore(3)), Verdict::WaitFor(b"w".to_vec()));
    }

    #[test]
    fn a_foreign_key_blocks_like_a_writer() {
        let q = [Entry { key: b"f".to_vec(), create_revision: 1, mode: None }, e("r", 2, Mode::Shared)];
        assert_eq!(verdict(&q, b"r", Mode::Shared), Verdict::WaitFor(b"f".to_vec()));
    }

    #[test]
    fn the_matrix_decides_between_modes_of_the_hierarchy() {
        // Two row writers' IX share the table; a scan's S waits for the later one; a reader's IS
        // after it waits for nobody (IS is compatible with IX and S).
        let q = [
            e("ix1", 1, Mode::IntentExclusive),
            e("ix2", 2, Mode::IntentExclusive),
            e("scan", 3, Mode::Shared),
            e("is", 4, Mode::IntentShared),
            e("six", 5, Mode::SharedIntentExclusive),
            e("u", 6, Mode::Upgradable),
        ];
        assert_eq!(verdict(&q, b"ix2", Mode::IntentExclusive), Verdict::Held);
        assert_eq!(verdict(&q, b"scan", Mode::Shared), Verdict::WaitFor(b"ix2".to_vec()));
        assert_eq!(verdict(&q, b"is", Mode::IntentShared), Verdict::Held);
        assert_eq!(verdict(&q, b"six", Mode::SharedIntentExclusive), Verdict::WaitFor(b"scan".to_vec()));
        assert_eq!(verdict(&q, b"u", Mode::Upgradable), Verdict::WaitFor(b"six".to_vec()));
        let q = [e("p", 1, Mode::Semaphore(2)), e("ix", 2, Mode::IntentExclusive)];
        assert_eq!(verdict(&q, b"ix", Mode::IntentExclusive), Verdict::Mismatch { live: 2 });
        let q = [e("ix", 1, Mode::IntentExclusive), e("p", 2, Mode::Semaphore(2))];
        assert_eq!(verdict(&q, b"p", Mode::Semaphore(2)), Verdict::Mismatch { live: MAX_UNITS });
    }

    #[test]
    fn values_round_trip() {
        for mode in [
            Mode::Exclusive,
            Mode::Shared,
            Mode::Semaphore(7),
            Mode::Upgradable,
            Mode::IntentShared,
            Mode::IntentExclusive,
            Mode::SharedIntentExclusive,
        ] {
            assert_eq!(decode(&encode(mode, Some("node-1"))), Some(mode));
            assert_eq!(decode(&encode(mode, None)), Some(mode));
        }
        assert_eq!(decode(b"garbage"), None);
        assert_eq!(decode(b"nx"), None);
    }

    #[test]
    fn names_cannot_reach_into_each_others_ranges() {
        let a = lock_prefix("ns/", "a");
        let ab = lock_prefix("ns/", "a/b");
        assert!(!ab.starts_with(&a) && !a.starts_with(&ab));
        assert!(entry_key(&a, 0x2a).starts_with(&a));
    }
}
