//! Multi-threaded stress with a shadow checker: every holder records itself while it holds, and
//! the checker fails the test on two modes held at once that the compatibility matrix forbids
//! (two exclusive holders, a writer beside a reader, IX beside S, ...) or more than n permits.
//! Every waiter must eventually get the lock or its timeout. Bounded to a few seconds.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use leasehold::compat::{compatible, ALL};
use leasehold::{Fenced, LockError, LockManager, Mode};

const KEYS: u64 = 4;
const PERMITS: u32 = 3;

/// What holds a key right now, as the holders themselves report it: holders per matrix mode.
#[derive(Default)]
struct Shadow {
    held: [AtomicI64; ALL.len()],
}

impl Shadow {
    fn enter(&self, mode: Mode) {
        let g = mode.granule();
        let mine = self.held[g as usize].fetch_add(1, Ordering::SeqCst) + 1;
        for h in ALL {
            let n = self.held[h as usize].load(Ordering::SeqCst) - i64::from(h == g);
            assert!(n <= 0 || compatible(h, g), "{mode} beside {n} holders of {h}");
        }
        if let Mode::Semaphore(n) = mode {
            assert!(mine <= n as i64, "{mine} holders of a {n}-permit semaphore");
        }
    }

    fn exit(&self, mode: Mode) {
        self.held[mode.granule() as usize].fetch_sub(1, Ordering::SeqCst);
    }
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
