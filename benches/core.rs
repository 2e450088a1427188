//! Criterion benches of the contention-critical core, one thread (the comparison harness,
//! `examples/lockbench.rs`, covers threads and peers). Every group also measures F, one bare
//! `parking_lot::Mutex` lock+unlock, in the same run, so ratios are meaningful on a noisy machine.
//!
//! `cargo bench --bench core`

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use leasehold::{LockManager, ManualClock};

const KEYS: u64 = 1024;

fn uncontended(c: &mut Criterion) {
    let mut g = c.benchmark_group("uncontended");
    g.throughput(Throughput::Elements(1));
    let mutex = parking_lot::Mutex::new(0_u64);
    g.bench_function("F: parking_lot::Mutex lock+unlock", |b| b.iter(|| *black_box(&mutex).lock() += 1));

    let locks: LockManager<u64> = LockManager::new();
    for (name, f) in [
        ("exclusive, one key", 0),
        ("shared, one key", 1),
        ("semaphore(4), one key", 2),
        ("exclusive, 1024 keys", 3),
        ("exclusive + 30 s lease, one key", 4),
        ("exclusive + 30 s lease, 1024 keys", 5),
        ("exclusive + owner label, one key", 6),
    ] {
        let mut k = 0_u64;
        g.bench_function(name, |b| {
            b.iter(|| {
                k = (k + 1) % KEYS;
                let g = match f {
                    0 => locks.exclusive(&7).try_acquire(),
                    1 => locks.shared(&7).try_acquire(),
                    2 => locks.semaphore(&8, 4).try_acquire(),
                    3 => locks.exclusive(&k).try_acquire(),
                    4 => locks.exclusive(&7).lease(Duration::from_secs(30)).try_acquire(),
                    5 => locks.exclusive(&k).lease(Duration::from_secs(30)).try_acquire(),
                    _ => locks.exclusive(&7).owner("worker-1").try_acquire(),
                };
                drop(black_box(g));
            })
        });
    }
    let strings: LockManager<String> = LockManager::new();
    let keys: Vec<String> = (0..KEYS).map(|k| format!("orders/{k}")).collect();
    let mut k = 0;
    g.bench_function("exclusive, 1024 String keys by &str", |b| {
        b.iter(|| {
            k = (k + 1) % keys.len();
            drop(black_box(strings.exclusive(keys[k].as_str()).try_acquire()));
        })
    });
    g.finish();
}

fn churn(c: &mut Criterion) {
    let mut g = c.benchmark_group("churn");
    g.throughput(Throughput::Elements(1));
    let mutex = parking_lot::Mutex::new(0_u64);
    g.bench_function("F: parking_lot::Mutex lock+unlock", |b| b.iter(|| *black_box(&mutex).lock() += 1));
    let locks: LockManager<u64> = LockManager::new();
    let mut k = 0_u64;
    g.bench_function("exclusive, a fresh key every time", |b| {
        b.iter(|| {
            k += 1;
            drop(black_box(locks.exclusive(&k).try_acquire()));
        })
    });
    g.finish();
}

/// Expiry processed per lease when one million leases expire at once: the manager's whole path
/// (wheel, scan of each slot, the lease compare-exchange, units back), not the wheel alone.
fn expiry(c: &mut Criterion) {
    const LEASES: u64 = 1_000_000;
    let mut g = c.benchmark_group("expiry");
    g.sample_size(10);
    g.throughput(Throughput::Elements(LEASES));
    g.bench_function("1M forgotten leased guards, expire_due", |b| {
        b.iter_batched(
            || {
                let clock = ManualClock::new();
                let locks = LockManager::<u64>::builder().clock(clock.clone()).reaper(false).build().unwrap();
                for k in 0..LEASES {
                    // Spread deadlines over 30 s of 1 ms ticks, like real leases.
                    let ttl = Duration::from_millis(1 + k % 30_000);
                    std::mem::forget(locks.exclusive(&k).lease(ttl).try_acquire().unwrap());
                }
                clock.advance(Duration::from_secs(31));
                (clock, locks)
            },
            |(_clock, locks)| {
                let started = Instant::now();
                let n = locks.expire_due();
                assert_eq!(n as u64, LEASES);
                black_box(started.elapsed())
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

criterion_group! {
    name = benches;
    // Short runs: the machines these run on are small and shared.
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    targets = uncontended, churn, expiry
}
criterion_main!(benches);
