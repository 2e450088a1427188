//! Profiling aid for workload L: one thread, W1 and W1 with a 30 s lease alternated in one
//! process, with the clock reads a leased release may make measured alone beside them.
//! `leaseloop [ops per round] [rounds]`: prints each round and the medians.
use std::hint::black_box;
use std::time::{Duration, Instant};

use leasehold::{Clock, LockManager, MonotonicClock};

const KEYS: u64 = 1024;

fn per_op(n: u64, f: impl Fn(u64)) -> f64 {
    let t = Instant::now();
    for i in 0..n {
        f(i);
    }
    t.elapsed().as_nanos() as f64 / n as f64
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(2_000_000);
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(9);
    let locks: LockManager<u64> = LockManager::new();
    let clock = MonotonicClock::new();
    let w1 = |i: u64| {
        let g = locks.exclusive(&(i & (KEYS - 1))).acquire().expect("uncontended");
        black_box(g.token());
    };
    let leased = |i: u64| {
        let g = locks.exclusive(&(i & (KEYS - 1))).lease(Duration::from_secs(30)).acquire().expect("uncontended");
        black_box(g.token());
    };
    let exact = |_| {
        black_box(clock.now());
    };
    let coarse = |_| {
        black_box(clock.now_coarse());
    };
    let (mut a, mut b, mut r, mut e, mut c) = (vec![], vec![], vec![], vec![], vec![]);
    per_op(n, w1);
    per_op(n, leased);
    println!("round   W1 ns   L ns   L/W1   exact clock ns   coarse clock ns");
    for round in 0..rounds {
        let x = per_op(n, w1);
        let y = per_op(n, leased);
        let ex = per_op(n, exact);
        let co = per_op(n, coarse);
        println!("{round:5} {x:7.1} {y:6.1} {:6.2} {ex:16.1} {co:17.1}", y / x);
        a.push(x);
        b.push(y);
        r.push(y / x);
        e.push(ex);
        c.push(co);
    }
    println!(
        "median {:6.1} {:6.1} {:6.2} {:16.1} {:17.1}",
        median(&mut a),
        median(&mut b),
        median(&mut r),
        median(&mut e),
        median(&mut c)
    );
}
