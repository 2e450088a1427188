//! Intention modes (IS, IX, SIX) beside shared and exclusive on one key: every pair of the matrix
//! through the public API, the table/row example, waking, fairness, leases, reclamation, and a
//! shadow stress in which the modes held at once are checked against the matrix.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use leasehold::compat::{compatible, Granule};
use leasehold::{LockError, LockGuard, LockManager, ManualClock, Mode};

#[path = "support/shadow.rs"]
mod shadow;
use shadow::Shadow;

const MODES: [Granule; 5] = [Granule::IS, Granule::IX, Granule::S, Granule::SIX, Granule::X];

fn take<'m>(locks: &'m LockManager<String>, key: &str, g: Granule) -> Result<LockGuard<'m, String>, LockError> {
    match g {
        Granule::IS => locks.intent_shared(key).try_acquire(),
        Granule::IX => locks.intent_exclusive(key).try_acquire(),
        Granule::S => locks.shared(key).try_acquire(),
        Granule::SIX => locks.shared_intent_exclusive(key).try_acquire(),
        Granule::X => locks.exclusive(key).try_acquire(),
        Granule::U => unreachable!("not in MODES"),
    }
}

/// Spins (yielding) until `cond` holds; fails after 10 s instead of hanging.
fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < Duration::from_secs(10), "timed out waiting until {what}");
        std::thread::yield_now();
    }
}

fn waiters(locks: &LockManager<String>, key: &str) -> usize {
    locks.inspect(key).map_or(0, |i| i.waiters.len())
}

#[test]
fn every_pair_is_granted_exactly_when_the_matrix_says() {
    let locks = LockManager::<String>::new();
    for held in MODES {
        for asked in MODES {
            // Twice: on a key the held mode created, and on one that lived before it.
            for warm in [false, true] {
                let key = format!("{held}-{asked}-{warm}");
                if warm {
                    drop(locks.shared(key.as_str()).try_acquire().unwrap());
                }
                let h = take(&locks, &key, held).unwrap();
                assert_eq!(h.mode(), Mode::from_granule(held));
                let got = take(&locks, &key, asked);
                assert_eq!(got.is_ok(), compatible(held, asked), "{asked} beside {held}: {:?}", got.as_ref().err());
                if let Err(e) = &got {
                    assert_eq!(*e, LockError::WouldBlock);
                }
                if let Ok(g) = &got {
                    assert!(g.token() > h.token(), "tokens grow");
                    let info = locks.inspect(key.as_str()).unwrap();
                    assert_eq!(info.holders.len(), 2);
                    assert_eq!(info.mode.map(|m| m.granule()), Some(leasehold::compat::join(held, asked)));
                }
                drop(got);
                drop(h);
                // Back to an ordinary idle key: every mode is granted again, and it can be reclaimed.
                for m in MODES {
                    drop(take(&locks, &key, m).unwrap());
                }
            }
        }
    }
    locks.reclaim_idle();
    assert_eq!(locks.slot_count(), 0, "matrix keys are reclaimed once idle");
}

#[test]
fn the_table_and_row_example() {
    let locks = LockManager::<String>::new();
    std::thread::scope(|s| {
        // Two row writers: IX on the table, X on their rows.
        let t1 = locks.intent_exclusive("table/7").acquire().unwrap();
        let r1 = locks.exclusive("table/7/row/1").acquire().unwrap();
        let t2 = locks.intent_exclusive("table/7").acquire().unwrap();
        let r2 = locks.exclusive("table/7/row/2").acquire().unwrap();
        let last_writer = t2.token();
        // A table scan takes S on the table: it waits for the row writers.
        let scanner = s.spawn(|| locks.shared("table/7").acquire().map(|g| g.token()));
        until("the scan waits", || waiters(&locks, "table/7") == 1);
        // While the scan waits, a new row writer does not pass it (first come, first served).
        assert_eq!(locks.intent_exclusive("table/7").try_acquire().unwrap_err(), LockError::WouldBlock);
        // A reader's IS is compatible with the row writers' IX and with the waiting scan's S.
        let reader = locks.intent_shared("table/7").try_acquire().unwrap();
        drop(reader);
        drop((r1, t1));
        assert_eq!(waiters(&locks, "table/7"), 1, "one row writer is left: the scan still waits");
        drop((r2, t2));
        let scan_token = scanner.join().unwrap().unwrap();
        assert!(scan_token > last_writer, "the scan is a later holding than the writers it waited for");
    });
    assert!(locks.inspect("table/7").is_none(), "nothing left held or queued");
}

#[test]
fn readers_that_came_by_the_fast_path_hold_off_an_intention_writer() {
    let locks = LockManager::<String>::new();
    // Plain readers before the key is a matrix key: the census must count them.
    let a = locks.shared("t").acquire().unwrap();
    let b = locks.shared("t").acquire().unwrap();
    std::thread::scope(|s| {
        let ix = s.spawn(|| locks.intent_exclusive("t").acquire().map(|g| g.mode()));
        until("IX waits", || waiters(&locks, "t") == 1);
        // Newcomers in a conflicting mode queue behind it instead of barging by the fast path.
        assert_eq!(locks.shared("t").try_acquire().unwrap_err(), LockError::WouldBlock);
        drop(a);
        assert_eq!(waiters(&locks, "t"), 1);
        drop(b);
        assert_eq!(ix.join().unwrap().unwrap(), Mode::IntentExclusive);
    });
    // The key is ordinary again: the fast path grants readers.
    let _c = locks.shared("t").try_acquire().unwrap();
}

#[test]
fn an_expired_intention_holder_is_counted_out() {
    let clock = ManualClock::new();
    let locks = LockManager::<String>::builder().clock(clock.clone()).reaper(false).build().unwrap();
    let ix = locks.intent_exclusive("t").lease(Duration::from_secs(1)).try_acquire().unwrap();
    assert_eq!(locks.shared("t").try_acquire().unwrap_err(), LockError::WouldBlock);
    clock.advance(Duration::from_secs(2));
    // A contender never waits on a lease past its deadline.
    let s = locks.shared("t").try_acquire().unwrap();
    assert_eq!(ix.release().unwrap_err(), LockError::Expired);
    assert_eq!(s.mode(), Mode::Shared);
    drop(s);
    locks.reclaim_idle();
    assert_eq!(locks.slot_count(), 0);
}

#[test]
fn a_semaphore_key_has_no_intention_modes() {
    let locks = LockManager::<String>::new();
    let _p = locks.semaphore("pool", 3).try_acquire().unwrap();
    for err in [
        locks.intent_shared("pool").try_acquire().unwrap_err(),
        locks.intent_exclusive("pool").try_acquire().unwrap_err(),
        locks.shared_intent_exclusive("pool").try_acquire().unwrap_err(),
    ] {
        assert!(matches!(err, LockError::PermitMismatch { live: 3, .. }), "{err:?}");
    }
}

#[test]
fn lock_many_takes_intention_modes_and_merges_duplicates() {
    let locks = LockManager::<String>::new();
    let all = locks
        .lock_many([
            ("table", Mode::IntentExclusive),
            ("table/row/1", Mode::Exclusive),
            ("table", Mode::Shared), // merged with IX: SIX
        ])
        .try_acquire()
        .unwrap();
    let info = locks.inspect("table").unwrap();
    assert_eq!(info.holders.len(), 1);
    assert_eq!(info.holders[0].mode, Mode::SharedIntentExclusive);
    assert!(locks.intent_shared("table").try_acquire().is_ok());
    assert!(locks.intent_exclusive("table").try_acquire().is_err());
    drop(all);
}

#[test]
fn a_cycle_through_an_intention_mode_is_a_deadlock() {
    let locks = LockManager::<String>::new();
    std::thread::scope(|s| {
        let a = locks.session("a");
        let _at = a.intent_exclusive("t").acquire().unwrap();
        let _ar = a.exclusive("t/1").acquire().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let locks = &locks;
        let b_thread = s.spawn(move || {
            let b = locks.session("b");
            let bt = b.intent_exclusive("t").acquire().unwrap();
            tx.send(()).unwrap();
            let r = b.exclusive("t/1").acquire().map(|g| g.token()); // waits for a
            drop(bt);
            r
        });
        rx.recv().unwrap();
        until("b waits on t/1", || waiters(locks, "t/1") == 1);
        // a scans the table: S against b's IX waits for b, which waits for a.
        let err = a.shared("t").acquire().unwrap_err();
        let LockError::Deadlock { cycle } = err else { panic!("expected a deadlock, got {err:?}") };
        assert_eq!(cycle.victim, a.id());
        let modes: Vec<Mode> = cycle.edges.iter().map(|e| e.mode).collect();
        assert!(modes.contains(&Mode::Shared) && modes.contains(&Mode::Exclusive), "{modes:?}");
        drop(_ar);
        assert!(b_thread.join().unwrap().is_ok());
    });
}

/// Threads take random modes on a few keys, blocking; a shadow per key counts the holders of
/// each mode and checks, on every grant, that the new mode is compatible with every mode held.
#[test]
fn shadow_stress_never_holds_incompatible_modes_at_once() {
    const THREADS: usize = 4;
    const KEYS: usize = 3;
    let ops = if cfg!(debug_assertions) { 3_000 } else { 30_000 };
    let locks = LockManager::<String>::new();
    let shadow: Vec<Shadow> = (0..KEYS).map(|_| Shadow::default()).collect();
    let granted = Arc::new(AtomicU32::new(0));
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let (locks, shadow, granted) = (&locks, &shadow, Arc::clone(&granted));
            s.spawn(move || {
                let mut x = 0x9E37_79B9_7F4A_7C15_u64 ^ (t as u64 + 1);
                for _ in 0..ops {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let k = (x % KEYS as u64) as usize;
                    // Mostly intention and shared modes, some writers.
                    let mi = [0, 0, 1, 1, 1, 2, 2, 3, 4][((x >> 8) % 9) as usize];
                    let g = MODES[mi];
                    let key = format!("k{k}");
                    let guard = match g {
                        Granule::IS => locks.intent_shared(key.as_str()).acquire(),
                        Granule::IX => locks.intent_exclusive(key.as_str()).acquire(),
                        Granule::S => locks.shared(key.as_str()).acquire(),
                        Granule::SIX => locks.shared_intent_exclusive(key.as_str()).acquire(),
                        _ => locks.exclusive(key.as_str()).acquire(),
                    }
                    .unwrap();
                    // Panics (failing the test when the scope joins) on a mode the matrix
                    // forbids beside `g`.
                    shadow[k].enter(Mode::from_granule(g));
                    granted.fetch_add(1, Ordering::Relaxed);
                    if x % 4 == 0 {
                        std::thread::yield_now();
                    }
                    shadow[k].exit(Mode::from_granule(g));
                    drop(guard);
                }
            });
        }
    });
    assert_eq!(granted.load(Ordering::Relaxed) as usize, THREADS * ops);
    for k in 0..KEYS {
        assert!(locks.inspect(format!("k{k}").as_str()).is_none(), "k{k} left held or queued");
    }
    locks.reclaim_idle();
    assert_eq!(locks.slot_count(), 0, "every matrix key went back to idle and was reclaimed");
}

/// A waiter queued long enough is handed the lock by a release (the fairness hand-off). An
/// intention request must not be handed a plain unit that way: it would hold without the key
/// being a matrix key, and a reader could then get in beside SIX by the lock-free path. The path
/// there: X held, a writer and then SIX queued; X's release makes the key ordinary again and
/// wakes the writer; SIX, now first in line and overdue, is handed the key by the writer's
/// release.
#[test]
fn an_overdue_intention_waiter_still_gets_a_matrix_key() {
    let clock = ManualClock::new();
    let locks = LockManager::<String>::builder().clock(clock.clone()).reaper(false).build().unwrap();
    let x = locks.exclusive("t").try_acquire().unwrap();
    std::thread::scope(|s| {
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let locks = &locks;
        let writer = s.spawn(move || {
            let g = locks.exclusive("t").acquire().unwrap();
            go_rx.recv().unwrap();
            drop(g);
        });
        until("the writer waits", || waiters(locks, "t") == 1);
        let six = s.spawn(move || {
            let g = locks.shared_intent_exclusive("t").acquire().unwrap();
            // While SIX holds, no reader may get in.
            let r = locks.shared("t").try_acquire();
            (g.mode(), r.map(|g| g.token()))
        });
        until("SIX waits behind the writer", || waiters(locks, "t") == 2);
        drop(x);
        until("the writer holds", || {
            locks.inspect("t").is_some_and(|i| i.mode == Some(Mode::Exclusive) && i.waiters.len() == 1)
        });
        clock.advance(Duration::from_secs(10)); // SIX is now far past the fairness bound
        go_tx.send(()).unwrap();
        writer.join().unwrap();
        let (mode, reader) = six.join().unwrap();
        assert_eq!(mode, Mode::SharedIntentExclusive);
        assert_eq!(reader.unwrap_err(), LockError::WouldBlock, "a reader got in beside SIX");
    });
    locks.reclaim_idle();
    assert_eq!(locks.slot_count(), 0);
}

/// Upgrades and downgrades on a matrix key: the census follows the holding's mode, an upgrade
/// waits for an IS holder (IS conflicts with X) and is woken by its release, and a downgrade to
/// shared keeps IX out again.
#[test]
fn upgrade_and_downgrade_on_a_matrix_key() {
    let locks = LockManager::<String>::new();
    let is = locks.intent_shared("t").try_acquire().unwrap(); // a matrix key from here on
    let u = locks.upgradable("t").try_acquire().unwrap();
    assert_eq!(locks.intent_exclusive("t").try_acquire().unwrap_err(), LockError::WouldBlock, "IX beside U");
    std::thread::scope(|s| {
        let locks = &locks;
        let up = s.spawn(move || {
            let x = u.upgrade().map_err(|e| e.error).unwrap();
            assert_eq!(x.mode(), Mode::Exclusive);
            // Exclusive on a matrix key: nobody else, not even IS.
            assert_eq!(locks.intent_shared("t").try_acquire().unwrap_err(), LockError::WouldBlock);
            let sh = x.downgrade().map_err(|e| e.error).unwrap();
            assert_eq!(sh.mode(), Mode::Shared);
            // Shared again: IS may join, IX may not.
            drop(locks.intent_shared("t").try_acquire().unwrap());
            assert_eq!(locks.intent_exclusive("t").try_acquire().unwrap_err(), LockError::WouldBlock);
            sh.token()
        });
        until("the upgrade waits for IS", || locks.inspect("t").is_some_and(|i| !i.waiters.is_empty()));
        assert_eq!(
            locks.intent_shared("t").try_acquire().unwrap_err(),
            LockError::WouldBlock,
            "no IS past a waiting upgrade"
        );
        drop(is);
        up.join().unwrap();
    });
    locks.reclaim_idle();
    assert_eq!(locks.slot_count(), 0, "the census emptied: the key is ordinary and idle");
}
