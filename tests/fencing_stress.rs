//! Real-clock stress: holders that sometimes pause past their lease while writing through a fenced
//! resource. An independent shadow of the resource counts stale writes it accepted (must be 0):
//! a write whose token is lower than one the resource already accepted. It also reports how many
//! stale writes `Fenced` rejected, and checks that takeovers always hand out larger tokens. One
//! holder in four comes in upgradable and upgrades before it writes (an upgrade is a new holding
//! with a larger token, the lease carried over), and some holders downgrade before they release.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::Duration;

use leasehold::{Fenced, LockError, LockManager};

#[test]
fn paused_holders_are_fenced_off() {
    let locks: LockManager<u64> = LockManager::builder().shards(2).build().unwrap();
    let resources: Vec<Fenced<u64>> = (0..2).map(|_| Fenced::new(0)).collect();
    // Highest token each resource accepted, as seen by the writers themselves.
    let shadow: Vec<Mutex<u64>> = (0..2).map(|_| Mutex::new(0)).collect();
    // Highest token handed out per key, checked at acquisition.
    let issued: Vec<Mutex<u64>> = (0..2).map(|_| Mutex::new(0)).collect();
    let (accepted, rejected, stale_accepted, expired_releases) =
        (AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0));
    let stop = AtomicBool::new(false);
    thread::scope(|s| {
        for t in 0..4_u64 {
            let (locks, resources, shadow, issued) = (&locks, &resources, &shadow, &issued);
            let (accepted, rejected, stale_accepted, expired_releases, stop) =
                (&accepted, &rejected, &stale_accepted, &expired_releases, &stop);
            s.spawn(move || {
                let mut n = t;
                while !stop.load(Ordering::Relaxed) {
                    n = n.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    let key = (n >> 33) % 2;
                    let ttl = Duration::from_millis(3);
                    let g = if (n >> 36) % 4 == 0 {
                        let Ok(u) = locks.upgradable(&key).lease(ttl).acquire_timeout(Duration::from_secs(5)) else {
                            continue;
                        };
                        match u.upgrade_timeout(Duration::from_secs(5)) {
                            Ok(w) => w,
                            Err(failed) => {
                                // Only its lease running out stops an upgrade with no readers.
                                assert_eq!(failed.error, LockError::Expired);
                                continue;
                            }
                        }
                    } else {
                        let Ok(g) = locks.exclusive(&key).lease(ttl).acquire_timeout(Duration::from_secs(5)) else {
                            continue;
                        };
                        g
                    };
                    let token = g.token().as_u64();
                    {
                        // Checked only while still held: then no takeover has happened since our
                        // acquisition, so every token recorded so far was issued before ours.
                        let mut last = issued[key as usize].lock().unwrap();
                        if g.is_held() {
                            assert!(token > *last, "token {token} issued after {}", *last);
                        }
                        *last = (*last).max(token);
                    }
                    // One holder in eight hangs past its lease before (and between) its writes.
                    let pause = (n >> 40) % 8 == 0;
                    for round in 0..2 {
                        if pause && round == 1 {
                            thread::sleep(Duration::from_millis(5));
                        }
                        let mut seen = shadow[key as usize].lock().unwrap();
                        match resources[key as usize].write(g.token(), |v| *v += 1) {
                            Ok(()) => {
                                if token < *seen {
                                    stale_accepted.fetch_add(1, Ordering::Relaxed);
                                }
                                *seen = (*seen).max(token);
                                accepted.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(LockError::StaleToken { .. }) => {
                                assert!(token < *seen, "a current token was refused");
                                rejected.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(e) => panic!("{e}"),
                        }
                    }
                    // Some give their rights back in two steps: a downgrade (which keeps the
                    // token), then the release.
                    let g = if (n >> 44) % 4 == 0 {
                        match g.downgrade() {
                            Ok(r) => r,
                            Err(failed) => {
                                assert_eq!(failed.error, LockError::Expired);
                                failed.guard
                            }
                        }
                    } else {
                        g
                    };
                    if g.release() == Err(LockError::Expired) {
                        expired_releases.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
        thread::sleep(Duration::from_millis(1500));
        stop.store(true, Ordering::Relaxed);
    });
    let (accepted, rejected) = (accepted.into_inner(), rejected.into_inner());
    println!(
        "accepted {accepted} writes, rejected {rejected} stale writes, {} leases lost before release",
        expired_releases.into_inner()
    );
    assert_eq!(stale_accepted.into_inner(), 0, "a stale write was accepted");
    assert!(accepted > 100, "only {accepted} writes");
    assert!(rejected > 0, "no holder was ever fenced off: the pauses did not outlive the leases");
}
