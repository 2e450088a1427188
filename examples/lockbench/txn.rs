//! Workload T: database transactions. Each transaction takes its table key (the intention lock,
//! IX), then 2-10 row keys exclusively in random order (Zipf 0.99 over 100,000 rows per table),
//! then commits (releases all). Two ways to run the same transactions:
//!
//! - `sessions`: one session per thread, deadlock detection on; a transaction that gets
//!   `LockError::Deadlock` aborts (releases what it holds) and counts as a deadlock;
//! - `lock_many`: all keys of the transaction in one `lock_many` call (canonical order, so no
//!   deadlock can form and none is detected).
//!
//! The table key is taken in IX: while any transaction holds it, it is a matrix key, whose
//! claims are decided under its slot lock (`engine/matrix.rs`), so the table key is the one lock
//! every transaction of a table passes through.
//!
//! Reported per thread count (medians across repetitions): commits/s, deadlocks/s, p99 of a
//! row request's latency (waits included), and for sessions the detector's searches per second
//! and its mean time per search (the cost detection adds to each wait).

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use leasehold::{LockError, LockManager, Mode};

use crate::zipf::{Rng, Zipf};

const TABLES: u64 = 4;
const ROWS: u64 = 100_000;
const THETA: f64 = 0.99;
const TABLE_BIT: u64 = 1 << 63;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Way {
    Sessions,
    LockMany,
}

#[derive(Default, Clone)]
struct Out {
    commits: u64,
    deadlocks: u64,
    /// Row-request latencies in ns (sampled: every request).
    lat: Vec<u32>,
}

struct Cell {
    commits_s: f64,
    deadlocks_s: f64,
    p99_ns: f64,
    searches_s: f64,
    ns_per_search: f64,
}

fn transaction(rng: &mut Rng, zipf: &Zipf, rows: &mut Vec<u64>) -> u64 {
    let table = rng.next_u64() % TABLES;
    let n = 2 + (rng.next_u64() % 9) as usize;
    rows.clear();
    while rows.len() < n {
        let r = table * ROWS + zipf.sample(rng);
        if !rows.contains(&r) {
            rows.push(r);
        }
    }
    table | TABLE_BIT
}

fn run_once(way: Way, threads: usize, window: Duration, seed: u64) -> Cell {
    let locks = LockManager::<u64>::new();
    let zipf = Zipf::new(ROWS, THETA);
    let stop = AtomicBool::new(false);
    let started = Instant::now();
    let outs: Vec<Out> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|t| {
                let (locks, zipf, stop) = (&locks, &zipf, &stop);
                s.spawn(move || {
                    let mut rng = Rng::new(seed * 1000 + t as u64);
                    let mut out = Out::default();
                    let mut rows = Vec::with_capacity(10);
                    let session = locks.session(format!("worker-{t}"));
                    while !stop.load(Ordering::Relaxed) {
                        let table = transaction(&mut rng, zipf, &mut rows);
                        match way {
                            Way::Sessions => {
                                let Ok(_t) = session.intent_exclusive(&table).acquire() else { continue };
                                let mut held = Vec::with_capacity(rows.len());
                                let mut aborted = false;
                                for r in &rows {
                                    let at = Instant::now();
                                    let got = session.exclusive(r).acquire();
                                    out.lat.push(at.elapsed().as_nanos().min(u32::MAX as u128) as u32);
                                    match got {
                                        Ok(g) => held.push(g),
                                        Err(LockError::Deadlock { .. }) => {
                                            aborted = true;
                                            break;
                                        }
                                        Err(e) => panic!("workload T: {e}"),
                                    }
                                }
                                drop(held);
                                if aborted {
                                    out.deadlocks += 1;
                                } else {
                                    out.commits += 1;
                                }
                            }
                            Way::LockMany => {
                                let keys = std::iter::once((&table, Mode::IntentExclusive))
                                    .chain(rows.iter().map(|r| (r, Mode::Exclusive)));
                                let at = Instant::now();
                                let all = locks.lock_many(keys).acquire().expect("lock_many only waits");
                                // One latency per transaction, spread over its row requests.
                                let per_row = at.elapsed().as_nanos() as u64 / rows.len() as u64;
                                out.lat.extend(std::iter::repeat_n(per_row.min(u32::MAX as u64) as u32, rows.len()));
                                drop(all);
                                out.commits += 1;
                            }
                        }
                    }
                    out
                })
            })
            .collect();
        std::thread::sleep(window);
        stop.store(true, Ordering::Relaxed);
        hs.into_iter().map(|h| h.join().expect("a worker panicked")).collect()
    });
    let secs = started.elapsed().as_secs_f64();
    let mut lat: Vec<u32> = outs.iter().flat_map(|o| o.lat.iter().copied()).collect();
    lat.sort_unstable();
    let p99 = lat.get(lat.len().saturating_sub(1).min(lat.len() * 99 / 100)).copied().unwrap_or(0);
    let stats = locks.deadlock_stats();
    Cell {
        commits_s: outs.iter().map(|o| o.commits).sum::<u64>() as f64 / secs,
        deadlocks_s: outs.iter().map(|o| o.deadlocks).sum::<u64>() as f64 / secs,
        p99_ns: p99 as f64,
        searches_s: stats.searches as f64 / secs,
        ns_per_search: if stats.searches == 0 { 0.0 } else { stats.search_ns as f64 / stats.searches as f64 },
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// The cost detection adds to one wait, alone on one thread: `sessions` sessions each hold
/// `per_session` row keys; a further session's `acquire_timeout(0)` on a held key registers its
/// wait, searches the graph, queues in the engine and gives up. The baseline does the same
/// engine steps without a session (a failed try, one poll of the engine's future, its drop).
fn isolated_wait_cost(sessions: usize, per_session: u64) -> (f64, f64) {
    const N: u32 = 20_000;
    let locks = LockManager::<u64>::new();
    let txs: Vec<_> = (0..sessions).map(|i| locks.session(format!("s{i}"))).collect();
    let mut held = Vec::new();
    for (i, tx) in txs.iter().enumerate() {
        for r in 0..per_session {
            held.push(tx.exclusive(&(i as u64 * 1000 + r)).try_acquire().expect("free"));
        }
    }
    let waiter = locks.session("waiter");
    let key = 0_u64; // held by s0
    let start = Instant::now();
    for _ in 0..N {
        let r = waiter.exclusive(&key).acquire_timeout(Duration::ZERO);
        assert!(matches!(r, Err(LockError::TimedOut)));
    }
    let with = start.elapsed().as_nanos() as f64 / f64::from(N);
    // The same steps without a session: a failed try, then one poll of the engine's future
    // (which queues) and its drop (which leaves the queue), as the session's timed-out wait does.
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    let start = Instant::now();
    for _ in 0..N {
        assert!(locks.exclusive(&key).try_acquire().is_err());
        let mut fut = locks.exclusive(&key).acquire_async();
        assert!(std::pin::Pin::new(&mut fut).poll(&mut cx).is_pending());
    }
    let without = start.elapsed().as_nanos() as f64 / f64::from(N);
    drop(held);
    (with, without)
}

/// Runs workload T and prints its table.
pub fn run(threads: &[usize], reps: usize, window: Duration) {
    println!("\n### Workload T: transactions (IX on a table, then 2-10 rows X in random order, Zipf {THETA} over {ROWS} rows x {TABLES} tables)\n");
    println!("\nDetection cost per wait, alone on one thread (a session's timed-out wait: try, register, search, queue, withdraw; against the same engine steps without a session):\n");
    println!("| live sessions | keys each | wait with detection | wait without | detection adds |");
    println!("|---:|---:|---:|---:|---:|");
    for (n, k) in [(2, 5), (16, 5), (64, 10)] {
        let runs: Vec<(f64, f64)> = (0..reps).map(|_| isolated_wait_cost(n, k)).collect();
        let with = median(runs.iter().map(|r| r.0).collect());
        let without = median(runs.iter().map(|r| r.1).collect());
        println!("| {n} | {k} | {with:.0} ns | {without:.0} ns | {:.0} ns |", with - without);
    }
    println!();
    println!("| way | threads | commits/s | deadlocks/s | p99 row wait | searches/s | ns per search |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for way in [Way::Sessions, Way::LockMany] {
        for &t in threads {
            let cells: Vec<Cell> = (0..reps).map(|r| run_once(way, t, window, r as u64 + 1)).collect();
            let m = |f: fn(&Cell) -> f64| median(cells.iter().map(f).collect());
            let name = match way {
                Way::Sessions => "sessions + detection",
                Way::LockMany => "lock_many (ordered)",
            };
            println!(
                "| {name} | {t} | {:.0} | {:.0} | {:.0} ns | {:.0} | {:.0} |",
                m(|c| c.commits_s),
                m(|c| c.deadlocks_s),
                m(|c| c.p99_ns),
                m(|c| c.searches_s),
                m(|c| c.ns_per_search)
            );
        }
    }
}
