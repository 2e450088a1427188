//! Before anything is timed: every peer must really exclude. A peer that fails is a bug in the
//! harness (or in the peer), and the run stops.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use crate::peers::{KeyedLock, PeerId, Visit};
use crate::zipf::{Rng, Zipf};

const THREADS: usize = 4;
const KEYS: usize = 4;
const WRITER: i64 = i64::MIN / 2;

/// Plain counters, written without atomics under the peer's exclusive lock.
struct Counters([UnsafeCell<u64>; KEYS]);
// SAFETY: every access happens under the exclusive lock of the counter's key (which is what
// the check verifies: a lost update means the lock did not exclude).
unsafe impl Sync for Counters {}

struct Check {
    iters: usize,
}

impl Visit for Check {
    type Out = Result<(), String>;

    fn visit<L: KeyedLock>(self, lock: &L) -> Result<(), String> {
        let modes = lock.modes();
        let iters = self.iters;
        if modes.exclusive {
            // Lost updates: read, pause, write, under the lock; an overlap loses increments.
            let counters = Counters(Default::default());
            std::thread::scope(|s| {
                for t in 0..THREADS {
                    let counters = &counters;
                    s.spawn(move || {
                        for i in 0..iters {
                            let key = ((i + t) % KEYS) as u64;
                            lock.exclusive(key, || {
                                let c = counters.0[key as usize].get();
                                // SAFETY: under the key's exclusive lock.
                                unsafe {
                                    let v = std::ptr::read_volatile(c);
                                    for _ in 0..(i % 8) {
                                        std::hint::spin_loop();
                                    }
                                    std::ptr::write_volatile(c, v + 1);
                                }
                            });
                        }
                    });
                }
            });
            let total: u64 = counters.0.iter().map(|c| unsafe { *c.get() }).sum();
            if total != (THREADS * iters) as u64 {
                return Err(format!("exclusive lost updates: {total} of {} increments", THREADS * iters));
            }
        }
        if modes.shared {
            // Readers and writers on the same keys must not overlap.
            let state: [AtomicI64; KEYS] = Default::default();
            let bad = AtomicU64::new(0);
            std::thread::scope(|s| {
                for t in 0..THREADS {
                    let (state, bad) = (&state, &bad);
                    s.spawn(move || {
                        let mut rng = Rng::new(t as u64);
                        for _ in 0..iters {
                            let key = (rng.next_u64() % KEYS as u64) as usize;
                            let st = &state[key];
                            if rng.next_u64() % 4 == 0 {
                                lock.exclusive(key as u64, || {
                                    if st.compare_exchange(0, WRITER, Ordering::AcqRel, Ordering::Acquire).is_err() {
                                        bad.fetch_add(1, Ordering::Relaxed);
                                    }
                                    std::hint::spin_loop();
                                    if st.compare_exchange(WRITER, 0, Ordering::AcqRel, Ordering::Acquire).is_err() {
                                        bad.fetch_add(1, Ordering::Relaxed);
                                        st.store(0, Ordering::Release);
                                    }
                                });
                            } else {
                                lock.shared(key as u64, || {
                                    if st.fetch_add(1, Ordering::AcqRel) < 0 {
                                        bad.fetch_add(1, Ordering::Relaxed);
                                    }
                                    std::hint::spin_loop();
                                    st.fetch_sub(1, Ordering::AcqRel);
                                });
                            }
                        }
                    });
                }
            });
            let bad = bad.load(Ordering::Relaxed);
            if bad != 0 {
                return Err(format!("shared and exclusive holders overlapped {bad} times"));
            }
        }
        if modes.permit {
            // Never more than `n` permit holders at once.
            const N: u32 = 2;
            let inside = AtomicI64::new(0);
            let over = AtomicU64::new(0);
            std::thread::scope(|s| {
                for _ in 0..THREADS {
                    let (inside, over) = (&inside, &over);
                    s.spawn(move || {
                        for _ in 0..iters {
                            lock.permit(0, N, || {
                                if inside.fetch_add(1, Ordering::AcqRel) >= N as i64 {
                                    over.fetch_add(1, Ordering::Relaxed);
                                }
                                std::hint::spin_loop();
                                inside.fetch_sub(1, Ordering::AcqRel);
                            });
                        }
                    });
                }
            });
            let over = over.load(Ordering::Relaxed);
            if over != 0 {
                return Err(format!("more than {N} permit holders at once, {over} times"));
            }
        }
        Ok(())
    }
}

/// Checks every peer (and the Zipf generator); returns the first failure.
pub fn all(iters: usize) -> Result<(), String> {
    let zipf = Zipf::new(crate::workloads::W2_KEYS, crate::workloads::W2_THETA);
    let mut rng = Rng::new(1);
    let n = 400_000;
    let hot = (0..n).filter(|_| zipf.sample(&mut rng) == 0).count() as f64 / n as f64;
    if (hot - zipf.p_hottest()).abs() > 0.1 * zipf.p_hottest() {
        return Err(format!("zipf: rank 0 drawn {hot:.4} of the time, expected {:.4}", zipf.p_hottest()));
    }
    for peer in crate::peers::ALL {
        // Permit check with 2 permits; the tokio peer is built for that count.
        struct Named(PeerId, usize);
        impl Visit for Named {
            type Out = Result<(), String>;
            fn visit<L: KeyedLock>(self, lock: &L) -> Result<(), String> {
                if lock.name() != self.0.name() {
                    return Err(format!("peer id {:?} builds a lock named {}", self.0, lock.name()));
                }
                Check { iters: self.1 }.visit(lock)
            }
        }
        peer.with(2, Named(peer, iters)).map_err(|e| format!("{}: {e}", peer.name()))?;
    }
    Ok(())
}
