//! What the keep-alive renewer costs, and how many leases one renewer keeps alive.
//!
//! `cargo run --release --example renewbench -- [quick]`
//!
//! 1. Cost per renewed lease: N keep-alive leases on a manual clock with no reaper; the clock
//!    moves a third of the TTL so every lease is due, and one `renew_due` pass renews them all
//!    (heap pop, gate, one compare-exchange on the lease word, heap push). Time per renewal.
//! 2. Leases kept alive at a TTL: N keep-alive leases on the real clock with the renewer thread
//!    and the reaper running, for a few seconds (at least 1.5 TTLs); a lease the renewer fails to
//!    renew in time expires, and the run counts expiries. The largest N with no expiry is what one
//!    renewer keeps alive at that TTL on this machine (other processes share the cores).

use std::time::{Duration, Instant};

use leasehold::{LockManager, ManualClock};

fn cost_per_renewal(n: u64) -> f64 {
    let clock = ManualClock::new();
    let locks = LockManager::<u64>::builder().clock(clock.clone()).reaper(false).build().expect("valid");
    let ttl = Duration::from_secs(3);
    let guards: Vec<_> =
        (0..n).map(|k| locks.exclusive(&k).lease(ttl).keep_alive().try_acquire().expect("free")).collect();
    let mut best = f64::MAX;
    for _ in 0..5 {
        clock.advance(ttl / 3);
        let t = Instant::now();
        let renewed = locks.renew_due();
        let per = t.elapsed().as_nanos() as f64 / renewed.max(1) as f64;
        assert_eq!(renewed as u64, n, "every lease was due");
        best = best.min(per);
    }
    drop(guards);
    best
}

/// Returns the expiries seen while `n` keep-alive leases of `ttl` ran for `run`.
fn expiries_at(n: u64, ttl: Duration, run: Duration) -> u64 {
    let locks: LockManager<u64> = LockManager::new();
    let guards: Vec<_> =
        (0..n).map(|k| locks.exclusive(&k).lease(ttl).keep_alive().try_acquire().expect("free")).collect();
    std::thread::sleep(run);
    let m = locks.metrics();
    let lost = guards.iter().filter(|g| g.is_lost()).count() as u64;
    drop(guards);
    m.expiries.max(lost)
}

fn main() {
    let quick = std::env::args().nth(1).is_some_and(|a| a == "quick");
    println!("## Cost per renewed lease (one renew_due pass, best of 5)\n");
    println!("| leases | ns per renewal |");
    println!("|---:|---:|");
    for n in [1_000_u64, 100_000, if quick { 200_000 } else { 1_000_000 }] {
        println!("| {n} | {:.0} |", cost_per_renewal(n));
    }
    println!("\n## Leases one renewer keeps alive (real clock, renewer thread, reaper)\n");
    println!("| TTL | leases | run | expiries |");
    println!("|---:|---:|---:|---:|");
    let cases: &[(Duration, &[u64])] = if quick {
        &[(Duration::from_millis(1), &[100, 1_000]), (Duration::from_millis(100), &[10_000])]
    } else {
        &[
            (Duration::from_millis(1), &[1, 100]),
            (Duration::from_millis(10), &[100, 1_000, 10_000]),
            (Duration::from_millis(100), &[10_000, 30_000, 100_000]),
            (Duration::from_secs(10), &[100_000, 300_000]),
        ]
    };
    for &(ttl, ns) in cases {
        // Past several renewals and past the first deadline (10 s leases: one and a half TTLs).
        let run = if ttl >= Duration::from_secs(1) { ttl + ttl / 2 } else { (ttl * 5).max(Duration::from_secs(2)) };
        for &n in ns {
            println!("| {ttl:?} | {n} | {run:?} | {} |", expiries_at(n, ttl, run));
        }
    }
}
