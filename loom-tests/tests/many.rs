//! Several keys at once: two overlapping `lock_many` calls cannot deadlock.

#![cfg(leasehold_loom)]

mod common;

use common::manager;
use leasehold::Mode;
use loom::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use loom::sync::Arc;
use loom::thread;

/// Two threads `lock_many` the keys 1 and 2 exclusively, named in opposite orders, both blocking.
/// Loom fails the model if every thread is blocked (a deadlock): taking keys in the canonical
/// order is what prevents it (naming them in the given order deadlocks at bound 1). The counter
/// checks that the two holdings of both keys never overlap.
#[test]
fn overlapping_lock_many_never_deadlocks() {
    loom::model(|| {
        let (locks, _clock) = manager();
        let inside = Arc::new(AtomicUsize::new(0));
        let work = |keys: [u8; 2]| {
            let (locks, inside) = (locks.clone(), inside.clone());
            move || {
                let all = locks.lock_many(keys.iter().map(|k| (k, Mode::Exclusive))).acquire().expect("only waits");
                assert_eq!(all.len(), 2);
                assert_eq!(inside.fetch_add(1, SeqCst), 0, "two holders of both keys at once");
                inside.fetch_sub(1, SeqCst);
                drop(all);
            }
        };
        let t = thread::spawn(work([1, 2]));
        work([2, 1])();
        t.join().expect("the other request finished");
    });
}
