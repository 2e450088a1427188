//! Memory follows the locks held, not the keys ever seen.

use leasehold::LockManager;

fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

#[test]
fn ten_million_unique_keys_leave_nothing_behind() {
    let locks: LockManager<u64> = LockManager::new();
    // Warm up: allocators, the first chunks, and the idle cache up to its bound (64 slots per
    // shard by default), so that growth measured after this is a leak, not the cache.
    let warm = (locks.idle_slot_bound() as u64 + 8 * locks.shard_count() as u64).max(100_000);
    assert!(locks.idle_bytes_bound() <= (20 << 10) * locks.shard_count(), "the documented default budget");
    for k in 0..warm {
        drop(locks.exclusive(&k).try_acquire().unwrap());
    }
    let before = rss_bytes();
    let mut most = 0;
    for k in warm..warm + 10_000_000 {
        // Both miss paths: `try_acquire`'s goes through the locked path, `acquire`'s through
        // `create_plain`; both reuse reclaimed slots in place.
        if k % 2 == 0 {
            drop(locks.exclusive(&k).try_acquire().unwrap());
        } else {
            drop(locks.exclusive(&k).acquire().unwrap());
        }
        if k % 65_536 == 0 {
            most = most.max(locks.slot_count());
        }
    }
    let after = rss_bytes();
    // Slots are reclaimed as new keys arrive: the table never holds more than its idle cache
    // (`idle_slot_bound`) and a little slack per shard.
    let bound = locks.idle_slot_bound() + 4 * locks.shard_count();
    assert!(most <= bound, "{most} slots cached during the churn (bound {bound})");
    locks.reclaim_idle();
    assert_eq!(locks.slot_count(), 0);
    if let (Some(before), Some(after)) = (before, after) {
        let grown = after.saturating_sub(before);
        println!("RSS grew by {grown} bytes over 10 million unique keys; at most {most} slots cached");
        assert!(grown < 2 << 20, "RSS grew by {grown} bytes");
    }
}

#[test]
fn string_keys_are_dropped_with_their_slots() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    /// A key that counts how many of its copies are alive.
    #[derive(Debug)]
    struct Counted(u64, Arc<AtomicUsize>);
    impl PartialEq for Counted {
        fn eq(&self, o: &Self) -> bool {
            self.0 == o.0
        }
    }
    impl Eq for Counted {}
    impl std::hash::Hash for Counted {
        fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
            self.0.hash(h)
        }
    }
    impl Clone for Counted {
        fn clone(&self) -> Self {
            self.1.fetch_add(1, Ordering::SeqCst);
            Counted(self.0, Arc::clone(&self.1))
        }
    }
    impl Drop for Counted {
        fn drop(&mut self) {
            self.1.fetch_sub(1, Ordering::SeqCst);
        }
    }

    let alive = Arc::new(AtomicUsize::new(0));
    let locks: LockManager<Counted> = LockManager::new();
    for k in 0..1_000 {
        let key = Counted(k, Arc::clone(&alive));
        alive.fetch_add(1, Ordering::SeqCst);
        drop(locks.exclusive(&key).try_acquire().unwrap());
        drop(key);
    }
    locks.reclaim_idle();
    assert_eq!(alive.load(Ordering::SeqCst), 0, "a reclaimed slot kept its key");
    let key = Counted(7, Arc::clone(&alive));
    alive.fetch_add(1, Ordering::SeqCst);
    let g = locks.exclusive(&key).try_acquire().unwrap();
    drop(key);
    assert_eq!(alive.load(Ordering::SeqCst), 1, "the held slot owns one copy of its key");
    drop(g);
    drop(locks);
    assert_eq!(alive.load(Ordering::SeqCst), 0, "dropping the manager drops the cached keys");
}

/// A shard whose index grew sparse in a burst (tables only grow) keeps its idle bound under a
/// churn of new keys: the insert-time sweep's hand, in a window of empty entries only, goes on
/// until it has looked at a slot, instead of backing off and growing the shard past its bound.
#[test]
fn a_sparse_index_keeps_the_idle_bound_under_churn() {
    let locks: LockManager<u64> =
        LockManager::builder().shards(1).idle_slots(8).reaper(false).build().expect("a valid configuration");
    // The burst: 2,000 keys held at once grow the shard's index to thousands of entries.
    let burst: Vec<_> = (0..2_000_u64).map(|k| locks.exclusive(&k).try_acquire().expect("a free key")).collect();
    drop(burst);
    locks.reclaim_idle();
    assert_eq!(locks.slot_count(), 0);
    let mut most = 0;
    for k in 1_000_000..1_020_000_u64 {
        drop(locks.exclusive(&k).acquire().expect("a free key"));
        most = most.max(locks.slot_count());
    }
    assert!(most <= 8, "{most} slots cached with an idle bound of 8");
}

/// At the idle bound, a creation whose home is free reclaims an idle slot in the entry just
/// before its home and removes that entry with a null store: right only because the free home
/// ends that entry's cluster. Here the new key's home is taken by a key displaced from that
/// entry's home (`b`, probed past `a`), so the creation must leave `a`'s entry to the hand's
/// removal, which shifts `b` back: `b` stays found (its holder stays alone), and every key and
/// slot is accounted for afterwards.
#[test]
fn a_creation_never_cuts_a_displaced_key_off_its_run() {
    use std::collections::hash_map::DefaultHasher;
    use std::hash::{BuildHasher, BuildHasherDefault};
    type Fixed = BuildHasherDefault<DefaultHasher>;
    let locks: LockManager<u64, Fixed> = LockManager::builder()
        .shards(1)
        .idle_slots(2)
        .reaper(false)
        .hasher(Fixed::default())
        .build()
        .expect("a valid configuration");
    // Two slots never grow the index past its 16 entries.
    let home = |k: u64| Fixed::default().hash_one(k) & 15;
    let a = 0_u64;
    let b = (1..).find(|&k| home(k) == home(a)).expect("some key shares a home of 16");
    let c = (1..).find(|&k| k != b && home(k) == (home(a) + 1) & 15).expect("some key has each home");
    drop(locks.exclusive(&a).acquire().expect("a free key"));
    let held = locks.exclusive(&b).acquire().expect("a free key");
    // At the bound (2 slots): `c`'s creation reclaims `a`'s idle slot.
    let gc = locks.exclusive(&c).acquire().expect("a free key");
    assert_eq!(locks.exclusive(&b).try_acquire().err(), Some(leasehold::LockError::WouldBlock));
    assert_eq!(locks.slot_count(), 2);
    drop((held, gc));
    for k in [a, b, c] {
        assert_eq!(locks.exclusive(&k).try_acquire().map(|g| *g.key()), Ok(k));
    }
    locks.reclaim_idle();
    assert_eq!(locks.slot_count(), 0);
}
