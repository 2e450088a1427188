//! The 64-core property, checked on any machine (issue 11, P10): uncontended operations on keys
//! in distinct shards write no common cache line. `primitives/write_audit.rs` notes every write
//! to state shared beyond one slot; slot lines are the key's own and are not noted.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::time::Duration;

use foldhash::fast::FixedState;

use crate::api::manager::LockManager;
use crate::primitives::counters::HOLD_SAMPLE;
use crate::primitives::write_audit;

const SHARDS: usize = 64;
const OPS: u64 = 10_000;

type Locks = LockManager<u64, FixedState>;
/// One uncontended acquire and release of a key.
type Op = fn(&Locks, u64);

/// One key per shard (`shard_of`: `log2(SHARDS)` hash bits from `SHARD_HASH_SHIFT`), from `base` on.
fn one_key_per_shard(hasher: &FixedState, base: u64) -> Vec<u64> {
    let mut by_shard = vec![None; SHARDS];
    let mut k = base;
    while by_shard.iter().any(Option::is_none) {
        let shard = crate::primitives::counters::shard_of(hasher.hash_one(k), SHARDS);
        by_shard[shard].get_or_insert(k);
        k += 1;
    }
    by_shard.into_iter().flatten().collect()
}

#[test]
fn keys_in_distinct_shards_write_no_common_cache_line() {
    let hasher = FixedState::with_seed(7);
    let locks: Locks = LockManager::builder().hasher(hasher.clone()).shards(SHARDS).reaper(false).build().unwrap();
    let modes: [(&str, Op); 4] = [
        ("exclusive", |l, k| drop(l.exclusive(&k).acquire().unwrap())),
        ("shared", |l, k| drop(l.shared(&k).acquire().unwrap())),
        ("semaphore", |l, k| drop(l.semaphore(&k, 4).acquire().unwrap())),
        ("leased", |l, k| drop(l.exclusive(&k).lease(Duration::from_secs(30)).acquire().unwrap())),
    ];
    for (i, (mode, op)) in modes.into_iter().enumerate() {
        let keys = one_key_per_shard(&hasher, (i as u64) << 32);
        assert_eq!(keys.len(), SHARDS);
        write_audit::take();
        for &k in &keys {
            op(&locks, k);
        }
        // The audit sees shared writes: creating a slot takes its shard's lock (one line per shard).
        let created = write_audit::take();
        assert!(created.len() >= SHARDS, "{mode}: creating {SHARDS} slots noted only {created:?}");
        let mut writer: HashMap<usize, u64> = HashMap::new();
        for &k in &keys {
            for _ in 0..OPS {
                op(&locks, k);
            }
            let lines = write_audit::take();
            // At most the hold-time sample: one acquisition in HOLD_SAMPLE records its hold in its
            // shard's histogram (a bucket and the sum).
            let writes: u64 = lines.values().sum();
            assert!(
                writes <= 2 * (OPS / HOLD_SAMPLE + 1),
                "{mode}: key {k} wrote shared lines {writes} times: {lines:?}"
            );
            for &line in lines.keys() {
                if let Some(other) = writer.insert(line, k) {
                    panic!("{mode}: keys {other} and {k}, in distinct shards, both wrote cache line {line:#x}");
                }
            }
        }
    }
}
