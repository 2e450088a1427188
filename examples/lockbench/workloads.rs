//! The workloads and the one timed loop every peer runs them through.
//!
//! A thread runs ops in batches of 64: the first op of a batch is timed with `Instant` (the
//! acquire latency: from just before the request until the critical section starts), the other
//! 63 are not, and between batches the thread reads the phase flag. Key streams are computed
//! before the threads start; the loop only reads them.

use std::hint::black_box;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use crate::peers::{Entries, KeyedLock, Mode, PeerId};
use crate::zipf::{Rng, Zipf};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    /// Each thread its own 1,024 keys, exclusive, cycling.
    W1,
    /// Zipfian (theta 0.99) over 100,000 keys, 90% shared, 10% exclusive.
    W2,
    /// One hot key, exclusive, all threads.
    W3,
    /// A fresh key per op (thread-disjoint), a fixed number of ops; then live entries and RSS.
    W4,
    /// One semaphore key with 4 permits.
    S,
    /// W1 with a 30 s lease on every acquire (leasehold only).
    L,
}

pub const ALL: [Workload; 6] = [Workload::W1, Workload::W2, Workload::W3, Workload::W4, Workload::S, Workload::L];

pub const W1_KEYS: u64 = 1024;
pub const W2_KEYS: u64 = 100_000;
pub const W2_THETA: f64 = 0.99;
pub const SEM_PERMITS: u32 = 4;
const BATCH: usize = 64;
/// Per-thread W2 stream length (cycled): 2^19 ops, 4 MiB per thread.
const W2_STREAM: usize = 1 << 19;
const W2_EXCLUSIVE_BIT: u64 = 1 << 63;

impl Workload {
    pub fn name(self) -> &'static str {
        match self {
            Workload::W1 => "W1",
            Workload::W2 => "W2",
            Workload::W3 => "W3",
            Workload::W4 => "W4",
            Workload::S => "S",
            Workload::L => "L",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Workload::W1 => "uncontended: each thread its own 1,024 keys, exclusive",
            Workload::W2 => "Zipf 0.99 over 100,000 keys, 90% shared / 10% exclusive",
            Workload::W3 => "one hot key, exclusive, all threads",
            Workload::W4 => "churn: a fresh key per op",
            Workload::S => "one semaphore key, 4 permits",
            Workload::L => "W1 with a 30 s lease on every acquire",
        }
    }

    /// The peers that offer what the workload asks for.
    pub fn peers(self) -> Vec<PeerId> {
        crate::peers::ALL
            .into_iter()
            .filter(|&p| match self {
                Workload::L => p == PeerId::LeaseholdLease,
                _ if p == PeerId::LeaseholdLease => false,
                Workload::W1 | Workload::W3 | Workload::W4 => p.modes().exclusive,
                Workload::W2 => p.modes().exclusive && p.modes().shared,
                Workload::S => p.modes().permit,
            })
            .collect()
    }
}

/// Where a thread's ops come from: `at(i)` is its i-th op (key and mode).
pub trait Stream: Sync {
    fn at(&self, i: usize) -> (u64, Mode);
}

/// W1 and L: keys `base .. base + 1024`, cycling, exclusive.
pub struct Cycle {
    base: u64,
}

impl Stream for Cycle {
    #[inline(always)]
    fn at(&self, i: usize) -> (u64, Mode) {
        (self.base + (i as u64 & (W1_KEYS - 1)), Mode::Exclusive)
    }
}

/// W2: a precomputed Zipfian stream, the mode in the top bit.
pub struct Zipfian<'a> {
    ops: &'a [u64],
}

impl Stream for Zipfian<'_> {
    #[inline(always)]
    fn at(&self, i: usize) -> (u64, Mode) {
        let v = self.ops[i & (W2_STREAM - 1)];
        let mode = if v & W2_EXCLUSIVE_BIT != 0 { Mode::Exclusive } else { Mode::Shared };
        (v & !W2_EXCLUSIVE_BIT, mode)
    }
}

/// W3 and S: one key.
pub struct OneKey {
    mode: Mode,
}

impl Stream for OneKey {
    #[inline(always)]
    fn at(&self, _: usize) -> (u64, Mode) {
        (0, self.mode)
    }
}

/// W4: `base + i`, never reused.
pub struct Fresh {
    base: u64,
}

impl Stream for Fresh {
    #[inline(always)]
    fn at(&self, i: usize) -> (u64, Mode) {
        (self.base + i as u64, Mode::Exclusive)
    }
}

/// Per-thread W2 streams, built once for the whole run (the same streams for every peer).
pub fn zipf_streams(threads: usize) -> Vec<Vec<u64>> {
    let zipf = Zipf::new(W2_KEYS, W2_THETA);
    (0..threads)
        .map(|t| {
            let mut rng = Rng::new(0xC0FF_EE00 + t as u64);
            (0..W2_STREAM)
                .map(|_| {
                    let key = zipf.sample(&mut rng);
                    // 10% exclusive.
                    if rng.next_u64() % 10 == 0 {
                        key | W2_EXCLUSIVE_BIT
                    } else {
                        key
                    }
                })
                .collect()
        })
        .collect()
}

/// One thread's share of a cell.
struct ThreadOut {
    ops: u64,
    start: Instant,
    end: Instant,
    samples: Vec<u32>,
    /// Voluntary context switches (the thread blocked: parked, or waited in the kernel) over the timed span.
    switches: u64,
}

/// A measured cell (one workload, one peer, one thread count, one repetition).
#[derive(Clone, Debug)]
pub struct Measured {
    pub ops: u64,
    /// Sum over threads of each thread's timed span, in ns.
    pub thread_ns: f64,
    /// From the first thread's start to the last thread's end, in ns.
    pub wall_ns: f64,
    /// Sampled acquire latencies (ns), all threads.
    pub samples: Vec<u32>,
    /// Voluntary context switches of all threads over their timed spans.
    pub switches: u64,
    /// W4 only: live entries after the churn.
    pub entries: Option<Entries>,
    /// W4 only: RSS growth over the churn, in bytes.
    pub rss_growth: Option<i64>,
}

impl Measured {
    /// Time per op as each thread sees it (sum of thread time over ops).
    pub fn ns_per_op(&self) -> f64 {
        self.thread_ns / self.ops as f64
    }
    /// Ops per microsecond over the whole cell = Mops/s.
    pub fn mops(&self) -> f64 {
        self.ops as f64 / self.wall_ns * 1e3
    }
}

const WARM: u32 = 0;
const RUN: u32 = 1;
const STOP: u32 = 2;

#[inline(always)]
fn batch<L: KeyedLock, S: Stream, const SAMPLE: bool>(lock: &L, s: &S, i: usize, samples: &mut Vec<u32>) -> usize {
    let (k, m) = s.at(i);
    if SAMPLE {
        let t = Instant::now();
        let d = lock.with(m, k, Instant::now) - t;
        if samples.len() < samples.capacity() {
            samples.push(d.as_nanos().min(u32::MAX as u128) as u32);
        }
    } else {
        lock.with(m, k, || black_box(()));
    }
    for j in 1..BATCH {
        let (k, m) = s.at(i + j);
        lock.with(m, k, || black_box(()));
    }
    i + BATCH
}

/// Runs `streams.len()` threads on `lock`: `warm` untimed, then `window` timed.
pub fn timed<L: KeyedLock, S: Stream>(lock: &L, streams: &[S], warm: Duration, window: Duration) -> Measured {
    let phase = AtomicU32::new(WARM);
    let barrier = Barrier::new(streams.len() + 1);
    // Enough for 1 in 64 ops at 5 ns/op over the window.
    let cap = (window.as_nanos() as usize / 5 / BATCH).clamp(1024, 1 << 22);
    let outs: Vec<ThreadOut> = std::thread::scope(|scope| {
        let handles: Vec<_> = streams
            .iter()
            .map(|s| {
                let (phase, barrier) = (&phase, &barrier);
                scope.spawn(move || {
                    let mut samples = Vec::with_capacity(cap);
                    barrier.wait();
                    let mut i = 0;
                    while phase.load(Ordering::Relaxed) == WARM {
                        i = batch::<L, S, false>(lock, s, i, &mut samples);
                    }
                    let (i0, start, cs0) = (i, Instant::now(), voluntary_switches());
                    while phase.load(Ordering::Relaxed) == RUN {
                        i = batch::<L, S, true>(lock, s, i, &mut samples);
                    }
                    let (end, switches) = (Instant::now(), voluntary_switches() - cs0);
                    ThreadOut { ops: (i - i0) as u64, start, end, samples, switches }
                })
            })
            .collect();
        barrier.wait();
        std::thread::sleep(warm);
        phase.store(RUN, Ordering::Relaxed);
        std::thread::sleep(window);
        phase.store(STOP, Ordering::Relaxed);
        handles.into_iter().map(|h| h.join().expect("a worker panicked")).collect()
    });
    collect(outs)
}

/// W4's runner: each thread runs `warm_ops` on its `warm` stream, then (all threads parked on
/// a barrier) `between` runs on the calling thread, then each thread runs `ops` on its timed
/// stream to completion. The threads and their sample buffers exist (and are touched) before
/// `between`, so an RSS baseline taken there does not count them; `after` runs once all threads
/// are done but before they exit.
fn counted<L: KeyedLock, S: Stream>(
    lock: &L,
    warm: &[S],
    timed: &[S],
    warm_ops: usize,
    ops: usize,
    between: impl FnOnce(),
    after: impl FnOnce(),
) -> Measured {
    let barrier = Barrier::new(timed.len() + 1);
    let (warm_batches, batches) = ((warm_ops / BATCH).max(1), (ops / BATCH).max(1));
    let outs: Vec<ThreadOut> = std::thread::scope(|scope| {
        let handles: Vec<_> = warm
            .iter()
            .zip(timed)
            .map(|(w, s)| {
                let barrier = &barrier;
                scope.spawn(move || {
                    let mut samples = vec![0_u32; batches];
                    samples.clear();
                    let mut i = 0;
                    for _ in 0..warm_batches {
                        i = batch::<L, S, false>(lock, w, i, &mut samples);
                    }
                    barrier.wait();
                    barrier.wait();
                    let (start, cs0) = (Instant::now(), voluntary_switches());
                    let mut i = 0;
                    for _ in 0..batches {
                        i = batch::<L, S, true>(lock, s, i, &mut samples);
                    }
                    let (end, switches) = (Instant::now(), voluntary_switches() - cs0);
                    let out = ThreadOut { ops: i as u64, start, end, samples, switches };
                    barrier.wait();
                    out
                })
            })
            .collect();
        barrier.wait();
        between();
        barrier.wait();
        barrier.wait();
        after();
        handles.into_iter().map(|h| h.join().expect("a worker panicked")).collect()
    });
    collect(outs)
}

fn collect(outs: Vec<ThreadOut>) -> Measured {
    let first = outs.iter().map(|o| o.start).min().expect("at least one thread");
    let last = outs.iter().map(|o| o.end).max().expect("at least one thread");
    Measured {
        ops: outs.iter().map(|o| o.ops).sum(),
        thread_ns: outs.iter().map(|o| (o.end - o.start).as_nanos() as f64).sum(),
        wall_ns: (last - first).as_nanos() as f64,
        switches: outs.iter().map(|o| o.switches).sum(),
        samples: outs.into_iter().flat_map(|o| o.samples).collect(),
        entries: None,
        rss_growth: None,
    }
}

/// The calling thread's voluntary context switches so far (`getrusage(RUSAGE_THREAD)`): each is
/// a time it blocked (a parked waiter, a futex wait), which a spinning waiter never does.
fn voluntary_switches() -> u64 {
    // SAFETY: an all-zero `rusage` is a valid value; getrusage only writes into it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a `rusage` we own.
    if unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) } != 0 {
        return 0;
    }
    ru.ru_nvcsw as u64
}

/// The process's resident set, in bytes (`/proc/self/statm`).
pub fn rss_bytes() -> i64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: i64 = statm.split_whitespace().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages * page as i64
}

/// Gives freed heap pages back to the kernel, so that an RSS reading reflects live memory and
/// a later churn cannot hide its growth in memory an earlier peer freed.
pub fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Sizes of one run.
#[derive(Clone, Copy, Debug)]
pub struct Sizes {
    pub warm: Duration,
    pub window: Duration,
    /// W4 ops in all, split over the threads.
    pub churn_ops: usize,
    /// W4 warm-up ops per thread (other keys), before the RSS baseline.
    pub churn_warm: usize,
}

/// Runs one cell: a fresh peer, `threads` threads, the workload's streams.
pub fn run_cell(w: Workload, peer: PeerId, threads: usize, zipf: &[Vec<u64>], sizes: Sizes) -> Measured {
    struct Cell<'a> {
        w: Workload,
        threads: usize,
        zipf: &'a [Vec<u64>],
        sizes: Sizes,
    }
    impl crate::peers::Visit for Cell<'_> {
        type Out = Measured;
        fn visit<L: KeyedLock>(self, lock: &L) -> Measured {
            let Cell { w, threads, zipf, sizes } = self;
            let base = |t: usize| (t as u64) << 40;
            match w {
                Workload::W1 | Workload::L => {
                    let s: Vec<_> = (0..threads).map(|t| Cycle { base: base(t) }).collect();
                    timed(lock, &s, sizes.warm, sizes.window)
                }
                Workload::W2 => {
                    let s: Vec<_> = zipf[..threads].iter().map(|ops| Zipfian { ops }).collect();
                    timed(lock, &s, sizes.warm, sizes.window)
                }
                Workload::W3 => {
                    let s: Vec<_> = (0..threads).map(|_| OneKey { mode: Mode::Exclusive }).collect();
                    timed(lock, &s, sizes.warm, sizes.window)
                }
                Workload::S => {
                    let s: Vec<_> = (0..threads).map(|_| OneKey { mode: Mode::Permit(SEM_PERMITS) }).collect();
                    timed(lock, &s, sizes.warm, sizes.window)
                }
                Workload::W4 => {
                    // Warm-up on other keys (allocator arenas, the peer's caches), then the baseline.
                    let warm: Vec<_> = (0..threads).map(|t| Fresh { base: base(t) | 1 << 39 }).collect();
                    let s: Vec<_> = (0..threads).map(|t| Fresh { base: base(t) }).collect();
                    let (mut before, mut after) = (0, 0);
                    let between = || {
                        trim_heap();
                        before = rss_bytes();
                    };
                    let ops = sizes.churn_ops / threads;
                    let mut m = counted(lock, &warm, &s, sizes.churn_warm, ops, between, || after = rss_bytes());
                    m.rss_growth = Some(after - before);
                    m.entries = Some(lock.entries());
                    m
                }
            }
        }
    }
    peer.with(SEM_PERMITS, Cell { w, threads, zipf, sizes })
}
