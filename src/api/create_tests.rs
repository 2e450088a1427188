//! `Table::create_plain` when the key has a slot after all (a creator or a reader's miss raced
//! the lock-free lookup): it must change nothing visible, even after the insert-time sweep took a
//! dead slot for it (reclaimed in place at the idle bound, or from the pool below it).

use crate::api::manager::LockManager;
use crate::vocab::Mode;

fn check(idle_slots: usize, fill: u64) {
    let locks: LockManager<u64> =
        LockManager::builder().shards(1).idle_slots(idle_slots).reaper(false).build().unwrap();
    let table = &locks.state.table;
    // The idle cache at its bound (or below it), all idle, then one key held.
    for k in 100..100 + fill {
        drop(locks.exclusive(&k).acquire().unwrap());
    }
    let held = locks.exclusive(&7).acquire().unwrap();
    let before = locks.slot_count();
    let hash = table.hash(&7u64);
    // The key has a slot: no creation, and the dead slot taken for it goes back.
    assert!(table.create_plain(hash, &7u64, Mode::Exclusive).is_none());
    assert!(locks.slot_count() <= before, "no slot was added");
    assert_eq!(locks.slot_count(), table.total_slots());
    drop(held);
    // Still one slot for the key: a second acquire finds it (its token follows the first).
    let t = locks.exclusive(&7).acquire().unwrap().token();
    let t2 = locks.exclusive(&7).acquire().unwrap().token();
    assert!(t2 > t);
    // And the pool is sound: new keys still come and go, and nothing is left after a reclaim.
    for k in 1000..1000 + 4 * idle_slots as u64 {
        drop(locks.exclusive(&k).acquire().unwrap());
    }
    locks.reclaim_idle();
    assert_eq!(locks.slot_count(), 0);
}

#[test]
fn a_creation_for_a_key_that_has_a_slot_changes_nothing() {
    check(4, 4); // at the bound: a slot reclaimed for reuse in place goes to the pool
    check(64, 4); // below it: a slot from the pool goes back
}
