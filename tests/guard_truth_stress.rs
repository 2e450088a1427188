//! A guard never contradicts itself: once `is_held()` said false, no later `renew` or `release` of
//! that guard returns `Ok`. Real clock, public API only: several threads, leases of a few
//! milliseconds, holders that sometimes oversleep them, a `Fenced` resource per key with a shadow
//! log of the writes it accepted, and an exclusion check on every holding that was still held
//! at its end. Runs `LEASEHOLD_STRESS_SECS` seconds (default 3; 60 by hand).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::Duration;

use leasehold::{Fenced, LockError, LockManager};

const KEYS: u64 = 3;
const THREADS: u64 = 6;

#[derive(Default)]
struct Figures {
    ops: AtomicU64,
    holdings: AtomicU64,
    lost: AtomicU64,
    renewed: AtomicU64,
    accepted: AtomicU64,
    rejected: AtomicU64,
    /// `renew` or `release` Ok after `is_held()` said false.
    truth_violations: AtomicU64,
    /// A fenced write accepted with a token below one accepted before.
    stale_accepted: AtomicU64,
    /// Another holding of the key began while this one was held throughout.
    exclusion_violations: AtomicU64,
}

#[test]
fn a_guard_never_says_released_after_saying_not_held() {
    let secs: u64 = std::env::var("LEASEHOLD_STRESS_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(3);
    let locks: LockManager<u64> = LockManager::new();
    let resources: Vec<Fenced<u64>> = (0..KEYS).map(|_| locks.fenced(0)).collect();
    // Highest token each resource accepted, written inside the accepted write itself.
    let shadow: Vec<Mutex<u64>> = (0..KEYS).map(|_| Mutex::new(0)).collect();
    // Token of the latest holding of each key, set just after its acquisition.
    let latest: Vec<AtomicU64> = (0..KEYS).map(|_| AtomicU64::new(0)).collect();
    let f = Figures::default();
    let stop = AtomicBool::new(false);
    thread::scope(|s| {
        for t in 0..THREADS {
            let (locks, resources, shadow, latest, f, stop) = (&locks, &resources, &shadow, &latest, &f, &stop);
            s.spawn(move || {
                let mut n = t.wrapping_add(0x9E37_79B9_7F4A_7C15);
                let mut next = move || {
                    n = n.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    n >> 33
                };
                while !stop.load(Ordering::Relaxed) {
                    let key = next() % KEYS;
                    let ttl = Duration::from_millis(2 + next() % 4);
                    let Ok(g) = locks.exclusive(&key).lease(ttl).acquire_timeout(Duration::from_secs(5)) else {
                        continue;
                    };
                    let token = g.token().as_u64();
                    latest[key as usize].fetch_max(token, Ordering::SeqCst);
                    f.holdings.fetch_add(1, Ordering::Relaxed);
                    let mut said_lost = false;
                    let steps = 1 + next() % 4;
                    for _ in 0..steps {
                        f.ops.fetch_add(1, Ordering::Relaxed);
                        match next() % 8 {
                            // Oversleep the lease now and then.
                            0 => thread::sleep(Duration::from_millis(6)),
                            1..=2 => thread::sleep(Duration::from_micros(next() % 1500)),
                            3..=4 => {
                                let r = g.renew(ttl);
                                if r.is_ok() {
                                    f.renewed.fetch_add(1, Ordering::Relaxed);
                                    if said_lost {
                                        f.truth_violations.fetch_add(1, Ordering::Relaxed);
                                    }
                                }
                            }
                            _ => {
                                let written = resources[key as usize].write(g.token(), |v| {
                                    *v = token;
                                    let mut high = shadow[key as usize].lock().unwrap();
                                    if token < *high {
                                        f.stale_accepted.fetch_add(1, Ordering::Relaxed);
                                    }
                                    *high = (*high).max(token);
                                });
                                match written {
                                    Ok(()) => f.accepted.fetch_add(1, Ordering::Relaxed),
                                    Err(_) => f.rejected.fetch_add(1, Ordering::Relaxed),
                                };
                            }
                        }
                        if !g.is_held() {
                            said_lost = true;
                        }
                    }
                    // Exclusion: the latest holding read first, then still held: nobody else can
                    // have acquired the key since this holding began.
                    let newest = latest[key as usize].load(Ordering::SeqCst);
                    if g.is_held() {
                        if newest != token {
                            f.exclusion_violations.fetch_add(1, Ordering::Relaxed);
                        }
                    } else {
                        said_lost = true;
                    }
                    if said_lost {
                        f.lost.fetch_add(1, Ordering::Relaxed);
                    }
                    match g.release() {
                        Ok(()) if said_lost => {
                            f.truth_violations.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(()) | Err(LockError::Expired) => {}
                        Err(e) => panic!("release: {e:?}"),
                    }
                }
            });
        }
        thread::sleep(Duration::from_secs(secs));
        stop.store(true, Ordering::Relaxed);
    });
    let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
    println!(
        "guard truth stress, {secs} s, {THREADS} threads, {KEYS} keys: {} ops, {} holdings, {} leases lost, {} renewed, \
         fenced writes {} accepted / {} rejected, violations: truth {}, stale {}, exclusion {}",
        get(&f.ops),
        get(&f.holdings),
        get(&f.lost),
        get(&f.renewed),
        get(&f.accepted),
        get(&f.rejected),
        get(&f.truth_violations),
        get(&f.stale_accepted),
        get(&f.exclusion_violations),
    );
    assert!(get(&f.holdings) > 0 && get(&f.lost) > 0, "the run never lost a lease: it tested nothing");
    assert_eq!(get(&f.truth_violations), 0, "renew or release Ok after is_held() said false");
    assert_eq!(get(&f.stale_accepted), 0, "a stale fenced write was accepted");
    assert_eq!(get(&f.exclusion_violations), 0, "two holders at once");
    assert_eq!(locks.metrics().fence_rejections, get(&f.rejected));
}
