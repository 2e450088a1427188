//! Acquire+release on a three-member loopback etcd cluster against the in-process manager, in the
//! same run; and the in-process manager through the `LockBackend` trait against its direct API.
//!
//! ```text
//! cargo run --release -p leasehold-etcd --example etcd_bench [-- --secs 3]
//! ```
//!
//! Starts its own cluster (the `etcd` binary on the PATH or at `$LEASEHOLD_ETCD_BIN`; data on
//! tmpfs when there is one), or uses `$LEASEHOLD_ETCD_ENDPOINTS` (comma-separated) if set. Each
//! client acquires and releases its own lock (uncontended locks on a shared coordinator, the
//! common case), then 8 clients share one lock; exclusive, no lease given (the backend's default
//! TTL).

#[path = "../tests/support/cluster.rs"]
mod cluster;

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use leasehold::{BackendGuard, LockBackend, LockManager};
use leasehold_etcd::{EtcdLocks, EtcdOptions};

struct Cell {
    backend: &'static str,
    clients: usize,
    one_lock: bool,
    ops: usize,
    secs: f64,
    lat_ns: Vec<u64>,
}

impl Cell {
    fn pct(&self, p: f64) -> u64 {
        if self.lat_ns.is_empty() {
            return 0;
        }
        let i = ((self.lat_ns.len() as f64 - 1.0) * p).round() as usize;
        self.lat_ns[i]
    }
}

fn fmt_ns(ns: u64) -> String {
    if ns >= 1_000_000 {
        format!("{:.2} ms", ns as f64 / 1e6)
    } else if ns >= 1_000 {
        format!("{:.1} µs", ns as f64 / 1e3)
    } else {
        format!("{ns} ns")
    }
}

fn main() {
    let secs: f64 = std::env::args().skip_while(|a| a != "--secs").nth(1).and_then(|s| s.parse().ok()).unwrap_or(3.0);
    let run = Duration::from_secs_f64(secs);

    let (_cluster, endpoints) = match std::env::var("LEASEHOLD_ETCD_ENDPOINTS") {
        Ok(e) => (None, e.split(',').map(str::to_string).collect::<Vec<_>>()),
        Err(_) => {
            let Some(bin) = cluster::etcd_binary() else {
                eprintln!("etcd_bench needs an `etcd` binary on the PATH (or LEASEHOLD_ETCD_BIN, or LEASEHOLD_ETCD_ENDPOINTS)");
                std::process::exit(2);
            };
            let c = cluster::Cluster::start(&bin, 3, Duration::from_secs(30)).unwrap_or_else(|e| {
                eprintln!("could not start the cluster: {e}");
                std::process::exit(2);
            });
            let eps = c.endpoints();
            (Some(c), eps)
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");

    let mut cells = Vec::new();
    for (clients, one_lock) in [(1usize, false), (2, false), (8, false), (8, true)] {
        cells.push(bench_in_process(clients, one_lock, run));
        cells.push(rt.block_on(bench_etcd(&endpoints, clients, one_lock, run)));
    }
    println!("\nacquire+release, exclusive, {secs} s per cell, 2 cores, 3-member loopback etcd 3.4 cluster\n");
    println!("| backend | clients | locks | ops/s | p50 | p99 |");
    println!("|---|---:|---|---:|---:|---:|");
    for c in &cells {
        let locks = if c.one_lock { "one, shared by all" } else { "one each" };
        let rate = c.ops as f64 / c.secs;
        println!(
            "| {} | {} | {locks} | {rate:.0} | {} | {} |",
            c.backend,
            c.clients,
            fmt_ns(c.pct(0.5)),
            fmt_ns(c.pct(0.99))
        );
    }

    println!("\nin-process, one thread: direct API vs the LockBackend trait (try_acquire + release, ns/op; fastest of 31 interleaved runs of 200k)\n");
    let [direct, awaited, via_trait] = trait_overhead();
    println!("| path | ns/op |");
    println!("|---|---:|");
    println!("| direct: `locks.exclusive(k).try_acquire()` + `release()` | {direct:.1} |");
    println!("| the same calls, each awaited in an `async` block | {awaited:.1} |");
    println!("| trait: `LockBackend::exclusive(&locks, k).try_acquire().await` + `release().await` | {via_trait:.1} |");
}

fn bench_in_process(clients: usize, one_lock: bool, run: Duration) -> Cell {
    let locks: Arc<LockManager<String>> = Arc::new(LockManager::new());
    let start = Instant::now();
    let handles: Vec<_> = (0..clients)
        .map(|i| {
            let locks = locks.clone();
            std::thread::spawn(move || {
                let key = if one_lock { "bench/one".to_string() } else { format!("bench/{i}") };
                let mut lat = Vec::with_capacity(1 << 20);
                let end = Instant::now() + run;
                let mut n = 0usize;
                loop {
                    // A clock read per 64 ops decides the end; every op's latency is timed.
                    let t0 = Instant::now();
                    let g = locks.exclusive(key.as_str()).acquire().expect("no lease, no error");
                    g.release().expect("held");
                    lat.push(t0.elapsed().as_nanos() as u64);
                    n += 1;
                    if n % 64 == 0 && Instant::now() >= end {
                        break;
                    }
                }
                lat
            })
        })
        .collect();
    let mut lat: Vec<u64> = handles.into_iter().flat_map(|h| h.join().expect("bench thread")).collect();
    let secs = start.elapsed().as_secs_f64();
    lat.sort_unstable();
    Cell { backend: "in-process", clients, one_lock, ops: lat.len(), secs, lat_ns: lat }
}

async fn bench_etcd(endpoints: &[String], clients: usize, one_lock: bool, run: Duration) -> Cell {
    let opts = EtcdOptions { namespace: format!("leasehold-bench/{clients}-{one_lock}/"), ..EtcdOptions::default() };
    let mut tasks = Vec::new();
    let start = Instant::now();
    for i in 0..clients {
        let locks = EtcdLocks::connect(endpoints.to_vec(), opts.clone()).await.expect("connect");
        tasks.push(tokio::spawn(async move {
            let key = if one_lock { "bench/one".to_string() } else { format!("bench/{i}") };
            let mut lat = Vec::new();
            let end = Instant::now() + run;
            while Instant::now() < end {
                let t0 = Instant::now();
                let g = locks.exclusive(&key).acquire().await.expect("acquire");
                g.release().await.expect("release");
                lat.push(t0.elapsed().as_nanos() as u64);
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.expect("bench task"));
    }
    let secs = start.elapsed().as_secs_f64();
    lat.sort_unstable();
    Cell { backend: "etcd (3 members)", clients, one_lock, ops: lat.len(), secs, lat_ns: lat }
}

/// Polls a future that completes on its first poll (the in-process try path does).
#[inline(always)]
fn now<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => unreachable!("the in-process try path completes on its first poll"),
    }
}

fn trait_overhead() -> [f64; 3] {
    const N: u32 = 200_000;
    let locks: LockManager<String> = LockManager::new();
    let key = "bench/trait";
    let mut runs: [Vec<f64>; 3] = Default::default();
    // Short runs, interleaved, many of them, the fastest kept: the machine is shared, and other
    // processes' noise only ever adds time.
    for _ in 0..31 {
        let t0 = Instant::now();
        for _ in 0..N {
            let g = locks.exclusive(std::hint::black_box(key)).try_acquire().expect("free");
            g.release().expect("held");
        }
        runs[0].push(t0.elapsed().as_nanos() as f64 / f64::from(N));
        // The least any async API pays: the direct call awaited inside a future.
        let t0 = Instant::now();
        for _ in 0..N {
            let g = now(async { locks.exclusive(std::hint::black_box(key)).try_acquire() }).expect("free");
            now(async { g.release() }).expect("held");
        }
        runs[1].push(t0.elapsed().as_nanos() as f64 / f64::from(N));
        let t0 = Instant::now();
        for _ in 0..N {
            let g = now(LockBackend::exclusive(&locks, std::hint::black_box(key)).try_acquire()).expect("free");
            now(BackendGuard::release(g)).expect("held");
        }
        runs[2].push(t0.elapsed().as_nanos() as f64 / f64::from(N));
    }
    runs.map(|r| r.into_iter().fold(f64::INFINITY, f64::min))
}
