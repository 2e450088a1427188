//! Timer wheel vs `BinaryHeap` on the lease-expiry workload: 1,000,000 entries
//! with random deadlines spread over 30,000 ticks.
//!
//! Each iteration handles all `N` entries, so criterion's time per iteration
//! in milliseconds reads directly as nanoseconds per entry (the throughput
//! line says the same in elements/s). Only the named phase is timed: building
//! the structure for an expiry run, and dropping it, happen off the clock.
//!
//! Both structures start pre-sized *and* pre-touched, so inserts measure the
//! structure, not first-touch page faults: `Wheel::with_capacity` builds its
//! free list eagerly, and the heap is filled and cleared once in setup.
//!
//! Run: `cargo bench --bench wheel -- --warm-up-time 1 --measurement-time 3`

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use leasehold::wheel::Wheel;

/// Entries per iteration.
const N: usize = 1_000_000;

/// Deadlines fall in `1..=SPREAD`.
const SPREAD: u64 = 30_000;

/// The same pseudo-random deadlines for every run and both structures.
fn deadlines() -> Vec<u64> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    (0..N)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            1 + x % SPREAD
        })
        .collect()
}

fn fill_wheel(ds: &[u64]) -> Wheel<u64> {
    let mut w = Wheel::with_capacity(ds.len());
    for (i, &d) in ds.iter().enumerate() {
        w.insert(d, i as u64);
    }
    w
}

fn fill_heap(ds: &[u64]) -> BinaryHeap<Reverse<(u64, u32)>> {
    let mut h = BinaryHeap::with_capacity(ds.len());
    for (i, &d) in ds.iter().enumerate() {
        h.push(Reverse((d, i as u32)));
    }
    h
}

/// Time `run` on a fresh `setup()` per iteration; setup and drop off the clock.
fn timed<S, R>(iters: u64, mut setup: impl FnMut() -> S, mut run: impl FnMut(&mut S) -> R) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let mut state = setup();
        let start = Instant::now();
        black_box(run(&mut state));
        total += start.elapsed();
        drop(black_box(state));
    }
    total
}

fn insert(c: &mut Criterion) {
    let ds = deadlines();
    let mut g = c.benchmark_group("insert");
    g.throughput(Throughput::Elements(N as u64));
    g.sample_size(10).sampling_mode(SamplingMode::Flat);
    g.bench_function("wheel", |b| {
        b.iter_custom(|iters| {
            timed(
                iters,
                || Wheel::<u64>::with_capacity(N),
                |w| {
                    for (i, &d) in ds.iter().enumerate() {
                        w.insert(d, i as u64);
                    }
                },
            )
        })
    });
    g.bench_function("binary_heap", |b| {
        b.iter_custom(|iters| {
            timed(
                iters,
                || {
                    let mut h = fill_heap(&ds);
                    h.clear();
                    h
                },
                |h| {
                    for (i, &d) in ds.iter().enumerate() {
                        h.push(Reverse((d, i as u32)));
                    }
                },
            )
        })
    });
    g.finish();
}

fn expire(c: &mut Criterion) {
    let ds = deadlines();
    let mut g = c.benchmark_group("expire");
    g.throughput(Throughput::Elements(N as u64));
    g.sample_size(10).sampling_mode(SamplingMode::Flat);
    // Time advances one tick at a time, as a lease reaper would.
    g.bench_function("wheel_step1", |b| {
        b.iter_custom(|iters| {
            timed(
                iters,
                || fill_wheel(&ds),
                |w| {
                    let (mut n, mut sum) = (0usize, 0u64);
                    for now in 0..=SPREAD {
                        while let Some((_, v)) = w.poll(now) {
                            n += 1;
                            sum = sum.wrapping_add(v);
                        }
                    }
                    assert_eq!(n, N);
                    sum
                },
            )
        })
    });
    g.bench_function("binary_heap_step1", |b| {
        b.iter_custom(|iters| {
            timed(
                iters,
                || fill_heap(&ds),
                |h| {
                    let (mut n, mut sum) = (0usize, 0u64);
                    for now in 0..=SPREAD {
                        while h.peek().is_some_and(|Reverse((d, _))| *d <= now) {
                            let Reverse((_, v)) = h.pop().unwrap();
                            n += 1;
                            sum = sum.wrapping_add(v as u64);
                        }
                    }
                    assert_eq!(n, N);
                    sum
                },
            )
        })
    });
    // One jump to the end: everything drains in a single poll loop.
    g.bench_function("wheel_jump", |b| {
        b.iter_custom(|iters| {
            timed(
                iters,
                || fill_wheel(&ds),
                |w| {
                    let (mut n, mut sum) = (0usize, 0u64);
                    while let Some((_, v)) = w.poll(SPREAD) {
                        n += 1;
                        sum = sum.wrapping_add(v);
                    }
                    assert_eq!(n, N);
                    sum
                },
            )
        })
    });
    g.bench_function("binary_heap_jump", |b| {
        b.iter_custom(|iters| {
            timed(
                iters,
                || fill_heap(&ds),
                |h| {
                    let (mut n, mut sum) = (0usize, 0u64);
                    while let Some(Reverse((_, v))) = h.pop() {
                        n += 1;
                        sum = sum.wrapping_add(v as u64);
                    }
                    assert_eq!(n, N);
                    sum
                },
            )
        })
    });
    g.finish();
}

criterion_group!(benches, insert, expire);
criterion_main!(benches);
