//! Profiling aid for the contended hand-off (lockbench's W3): `threads` threads take one key in
//! turn, with an empty critical section, for `ms` milliseconds, through leasehold and through a bare
//! `parking_lot::Mutex`, alternating `rounds` times.
//!
//! `handoffloop [threads] [ms] [rounds]` prints, per peer and round: ns/op per thread, the share
//! of acquisitions that changed hands (the previous holder was another thread: for leasehold the
//! fencing token skipped, for the mutex a counter under the lock), and voluntary context
//! switches per op (`getrusage(RUSAGE_THREAD)`: a parked waiter, a futex wait).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant};

struct Out {
    /// The thread's CPU time over its wall time: near 1 when it had a core to itself.
    cpu_share: f64,
    ops: u64,
    changes: u64,
    switches: u64,
    ns: u128,
}

/// The calling thread's voluntary context switches and CPU time (ns) so far.
fn usage() -> (u64, u128) {
    // SAFETY: an all-zero `rusage` is valid; getrusage only writes into it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a `rusage` we own.
    if unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) } != 0 {
        return (0, 0);
    }
    let tv = |t: libc::timeval| t.tv_sec as u128 * 1_000_000_000 + t.tv_usec as u128 * 1000;
    (ru.ru_nvcsw as u64, tv(ru.ru_utime) + tv(ru.ru_stime))
}

/// Runs `threads` threads of `op` (which returns the acquisition's sequence number) for `window`.
fn run(threads: usize, window: Duration, op: &(dyn Fn() -> u64 + Sync)) -> Vec<Out> {
    let stop = AtomicBool::new(false);
    let barrier = Barrier::new(threads + 1);
    std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|_| {
                let (stop, barrier) = (&stop, &barrier);
                s.spawn(move || {
                    barrier.wait();
                    let (t0, (cs0, cpu0)) = (Instant::now(), usage());
                    let (mut ops, mut changes, mut last) = (0_u64, 0_u64, 0_u64);
                    while !stop.load(Ordering::Relaxed) {
                        for _ in 0..64 {
                            let seq = op();
                            changes += u64::from(seq != last.wrapping_add(1));
                            last = seq;
                        }
                        ops += 64;
                    }
                    let (ns, (cs1, cpu1)) = (t0.elapsed().as_nanos(), usage());
                    Out { cpu_share: (cpu1 - cpu0) as f64 / ns as f64, ops, changes, switches: cs1 - cs0, ns }
                })
            })
            .collect();
        barrier.wait();
        std::thread::sleep(window);
        stop.store(true, Ordering::Relaxed);
        hs.into_iter().map(|h| h.join().expect("worker")).collect()
    })
}

fn report(name: &str, outs: &[Out]) {
    let ops: u64 = outs.iter().map(|o| o.ops).sum();
    let ns: u128 = outs.iter().map(|o| o.ns).sum();
    let changes: u64 = outs.iter().map(|o| o.changes).sum();
    let sw: u64 = outs.iter().map(|o| o.switches).sum();
    let share = outs.iter().map(|o| o.cpu_share).fold(f64::MAX, f64::min);
    println!(
        "{name:>10}: cpu {share:4.2} {:7.1} ns/op/thread  changed hands {:6.3}  blocks/op {:.2e}  ops {}",
        ns as f64 / ops as f64,
        changes as f64 / ops as f64,
        sw as f64 / ops as f64,
        ops
    );
}

fn main() {
    let mut args = std::env::args().skip(1);
    let threads: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(2);
    let ms: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(300);
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(3);
    let window = Duration::from_millis(ms);
    for _ in 0..rounds {
        let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
        let lh = run(threads, window, &|| {
            let g = locks.exclusive(&0).acquire().expect("acquire");
            g.token().as_u64()
        });
        report("leasehold", &lh);
        let m = parking_lot::Mutex::new(0_u64);
        let mx = run(threads, window, &|| {
            let mut g = m.lock();
            *g += 1;
            *g
        });
        report("mutex", &mx);
    }
}
