//! Multi-threaded stress with a shadow checker: every holder records itself while it holds, and
//! the checker fails the test on two modes held at once that the compatibility matrix forbids
//! (two exclusive holders, a writer beside a reader, IX beside S, two upgradables, ...) or more
//! than n permits. Upgradable holders upgrade (try, with a timeout, or waiting) and exclusive ones
//! downgrade, with the shadow moved as the holding changes; every exclusive holding writes through
//! a fenced resource, so an upgrade's token must be the newest too. Every waiter must eventually
//! get the lock or its timeout. Bounded to a few seconds.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use leasehold::{Fenced, LockError, LockManager, Mode};

#[path = "support/shadow.rs"]
mod shadow;
use shadow::Shadow;

const KEYS: u64 = 4;
const PERMITS: u32 = 3;

fn spin(r: u64) {
    for _ in 0..r % 64 {
        std::hint::spin_loop();
    }
    if (r >> 8) % 16 == 0 {
        thread::yield_now();
    }
}

/// An upgradable holding of `key`: read a while, then upgrade (try, with a short timeout, or
/// waiting), write through the fence with the upgrade's token, and sometimes downgrade back to
/// upgradable and upgrade again. Returns false if it did not get the key.
fn upgradable_round(locks: &LockManager<u64>, key: u64, r: u64, shadow: &Shadow, fence: &Fenced<u64>) -> bool {
    let request = locks.upgradable(&key);
    let request = if (r >> 12) % 4 == 0 { request.lease(Duration::from_secs(60)) } else { request };
    let Ok(u) = request.acquire_timeout(Duration::from_secs(10)) else { return false };
    shadow.enter(Mode::Upgradable);
    spin(r >> 20);
    let upgraded = match (r >> 44) % 3 {
        0 => u.try_upgrade(),
        1 => u.upgrade_timeout(Duration::from_millis(2)),
        _ => u.upgrade_timeout(Duration::from_secs(10)),
    };
    let w = match upgraded {
        Ok(w) => w,
        Err(failed) => {
            assert!(matches!(failed.error, LockError::WouldBlock | LockError::TimedOut), "{}", failed.error);
            assert_eq!(failed.guard.mode(), Mode::Upgradable);
            shadow.exit(Mode::Upgradable);
            return true;
        }
    };
    // Exclusive now: the shadow follows (it cannot be wrong in between: nobody else enters).
    shadow.exit(Mode::Upgradable);
    shadow.enter(Mode::Exclusive);
    fence.write(w.token(), |v| *v += 1).expect("an upgrade's token is the newest the resource has seen");
    spin(r >> 24);
    if (r >> 50) % 2 == 0 {
        shadow.exit(Mode::Exclusive);
        shadow.enter(Mode::Upgradable);
        let u = w.downgrade_to_upgradable().expect("a live exclusive guard downgrades");
        spin(r >> 28);
        match u.upgrade_timeout(Duration::from_secs(10)) {
            Ok(w) => {
                shadow.exit(Mode::Upgradable);
                shadow.enter(Mode::Exclusive);
                fence.write(w.token(), |v| *v += 1).expect("a second upgrade's token is the newest");
                shadow.exit(Mode::Exclusive);
            }
            Err(failed) => {
                assert_eq!(failed.error, LockError::TimedOut);
                shadow.exit(Mode::Upgradable);
            }
        }
    } else {
        shadow.exit(Mode::Exclusive);
    }
    true
}

fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

fn run_stress(threads: usize, run_for: Duration) {
    let locks: LockManager<u64> = LockManager::builder().shards(4).build().unwrap();
    // Keys 0..KEYS are read/write keys, key 100 is a semaphore.
    let shadows: Vec<Shadow> = (0..=KEYS).map(|_| Shadow::default()).collect();
    let fences: Vec<Fenced<u64>> = (0..=KEYS).map(|_| Fenced::new(0)).collect();
    let stop = AtomicBool::new(false);
    let acquired = AtomicU64::new(0);
    let timed_out = AtomicU64::new(0);
    thread::scope(|s| {
        for t in 0..threads {
            let (locks, shadows, fences, stop, acquired, timed_out) =
                (&locks, &shadows, &fences, &stop, &acquired, &timed_out);
            s.spawn(move || {
                let mut rng = 0x9E37_79B9_7F4A_7C15_u64 ^ (t as u64 + 1);
                while !stop.load(Ordering::Relaxed) {
                    let r = xorshift(&mut rng);
                    let (key, shadow_idx) =
                        if r % 5 == 0 { (100, KEYS as usize) } else { (r % KEYS, (r % KEYS) as usize) };
                    if key != 100 && (r >> 36) % 4 == 0 {
                        if upgradable_round(locks, key, r, &shadows[shadow_idx], &fences[shadow_idx]) {
                            acquired.fetch_add(1, Ordering::Relaxed);
                        } else {
                            timed_out.fetch_add(1, Ordering::Relaxed);
                        }
                        continue;
                    }
                    let request = match (key, (r >> 8) % 8) {
                        (100, 0..=2) => locks.exclusive(&key),
                        (100, _) => locks.semaphore(&key, PERMITS),
                        (_, 0 | 1) => locks.exclusive(&key),
                        (_, 2) => locks.intent_shared(&key),
                        (_, 3) => locks.intent_exclusive(&key),
                        (_, 4) => locks.shared_intent_exclusive(&key),
                        _ => locks.shared(&key),
                    };
                    let request = if (r >> 12) % 4 == 0 { request.lease(Duration::from_secs(60)) } else { request };
                    let guard = match (r >> 16) % 4 {
                        0 => request.try_acquire(),
                        1 => request.acquire_timeout(Duration::from_millis(2)),
                        _ => request.acquire_timeout(Duration::from_secs(10)),
                    };
                    let guard = match guard {
                        Ok(g) => g,
                        Err(LockError::WouldBlock) => continue,
                        // An exclusive request that found the semaphore key idle made it a
                        // read/write key while it holds it (the first holder decides).
                        Err(LockError::PermitMismatch { .. }) if key == 100 => continue,
                        Err(LockError::TimedOut) => {
                            timed_out.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                        Err(e) => panic!("unexpected error {e}"),
                    };
                    let mode = guard.mode();
                    shadows[shadow_idx].enter(mode);
                    if mode == Mode::Exclusive {
                        fences[shadow_idx]
                            .write(guard.token(), |v| *v += 1)
                            .expect("an exclusive holder's token is the newest the resource has seen");
                        if key != 100 && (r >> 40) % 4 == 0 {
                            // Downgrade: the shadow moves first (the holding is still exclusive
                            // until the downgrade, so nobody can enter meanwhile).
                            shadows[shadow_idx].exit(mode);
                            shadows[shadow_idx].enter(Mode::Shared);
                            let r = guard.downgrade().expect("a live exclusive guard downgrades");
                            spin(r.token().as_u64());
                            shadows[shadow_idx].exit(Mode::Shared);
                            acquired.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                    }
                    for _ in 0..(r >> 20) % 64 {
                        std::hint::spin_loop();
                    }
                    if (r >> 28) % 16 == 0 {
                        thread::yield_now();
                    }
                    shadows[shadow_idx].exit(mode);
                    acquired.fetch_add(1, Ordering::Relaxed);
                    if (r >> 32) % 2 == 0 {
                        guard.release().expect("a lock nobody expired releases cleanly");
                    }
                }
            });
        }
        thread::sleep(run_for);
        stop.store(true, Ordering::Relaxed);
    });
    let acquired = acquired.load(Ordering::Relaxed);
    println!("{threads} threads: {acquired} acquisitions, {} timeouts", timed_out.load(Ordering::Relaxed));
    assert!(acquired > 1000, "only {acquired} acquisitions in {run_for:?}");
    // Nothing is left held or queued: every key can be taken exclusively at once.
    for key in (0..KEYS).chain([100]) {
        if let Err(e) = locks.exclusive(&key).try_acquire() {
            panic!("key {key} is left behind ({e}): {}", locks.debug_state(&key));
        }
    }
    locks.reclaim_idle();
    assert_eq!(locks.slot_count(), 0);
}

#[test]
fn shadow_checker_two_threads() {
    run_stress(2, Duration::from_millis(700));
}

#[test]
fn shadow_checker_eight_threads() {
    run_stress(8, Duration::from_millis(1200));
}

/// Every waiter on one hot key eventually gets it: no lost wake-up, no starvation.
#[test]
fn every_waiter_gets_the_hot_key() {
    let locks: LockManager<u64> = LockManager::new();
    let holder = locks.exclusive(&7).acquire().unwrap();
    let done = AtomicU64::new(0);
    let started = Instant::now();
    thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                for _ in 0..200 {
                    let g = locks.exclusive(&7).acquire().unwrap();
                    drop(g);
                }
                done.fetch_add(1, Ordering::SeqCst);
            });
        }
        // Every waiter queued (observed, not slept for) before the holder lets go.
        while locks.inspect(&7).map_or(0, |i| i.waiters.len()) < 8 {
            thread::yield_now();
        }
        assert_eq!(done.load(Ordering::SeqCst), 0, "a waiter got a key that is held");
        drop(holder);
    });
    assert_eq!(done.load(Ordering::SeqCst), 8);
    assert!(started.elapsed() < Duration::from_secs(30));
}

/// A writer is not starved by a stream of readers.
#[test]
fn writer_is_not_starved_by_readers() {
    let locks = Arc::new(LockManager::<u64>::new());
    let stop = AtomicBool::new(false);
    thread::scope(|s| {
        for _ in 0..3 {
            s.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    let _r = locks.shared(&1).acquire().unwrap();
                    std::hint::spin_loop();
                }
            });
        }
        thread::sleep(Duration::from_millis(10));
        let started = Instant::now();
        let w = locks.exclusive(&1).acquire_timeout(Duration::from_secs(5));
        let waited = started.elapsed();
        stop.store(true, Ordering::Relaxed);
        assert!(w.is_ok(), "the writer waited {waited:?} and gave up");
    });
}
