//! Stress for the database-engine requests, with the shadow checker of `stress.rs`: threads run
//! transactions (a table key in an intention mode, IX for writers and IS for readers, or S for a
//! scan and SIX for a scan that also writes rows; then 2-4 row keys, exclusive or shared, in
//! random order) through sessions with deadlock detection, or all at once through `lock_many`,
//! while every holder records itself in a shadow that fails the test on two modes held at once
//! that the compatibility matrix forbids, and every exclusive holder writes through a `Fenced`
//! resource that refuses a stale token. A deadlock must be reported (the victim aborts), never left to hang: the
//! watchdog fails the test if any thread stops making progress. Bounded to a few seconds.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use leasehold::{Fenced, LockError, LockManager, Mode};

#[path = "support/shadow.rs"]
mod shadow;
use shadow::Shadow;

const TABLES: u64 = 2;
const ROWS: u64 = 6;

struct World {
    locks: LockManager<u64>,
    shadows: Vec<Shadow>,
    fences: Vec<Fenced<u64>>,
    stop: AtomicBool,
    commits: AtomicU64,
    deadlocks: AtomicU64,
}

/// Keys 0..TABLES are tables; a row key is `TABLES + table * ROWS + row`.
fn transaction(rng: &mut u64) -> Vec<(u64, Mode)> {
    let mut next = || {
        *rng ^= *rng << 13;
        *rng ^= *rng >> 7;
        *rng ^= *rng << 17;
        *rng
    };
    let table = next() % TABLES;
    let scan = next() % 8 == 0;
    let mut keys = vec![(table, Mode::IntentShared)];
    for _ in 0..2 + next() % 3 {
        let row = TABLES + table * ROWS + next() % ROWS;
        let mode = if next() % 4 == 0 { Mode::Shared } else { Mode::Exclusive };
        if !keys.iter().any(|(k, _)| *k == row) {
            keys.push((row, mode));
        }
    }
    // The table's mode: what its rows need (IX for a writer, IS for a reader), or a scan's S
    // (SIX if the scan also writes rows).
    let writes = keys.iter().any(|&(_, m)| m == Mode::Exclusive);
    keys[0].1 = match (scan, writes) {
        (false, false) => Mode::IntentShared,
        (false, true) => Mode::IntentExclusive,
        (true, false) => Mode::Shared,
        (true, true) => Mode::SharedIntentExclusive,
    };
    keys
}

fn hold(world: &World, key: u64, mode: Mode, token: leasehold::FenceToken) {
    world.shadows[key as usize].enter(mode);
    if mode == Mode::Exclusive {
        world.fences[key as usize].write(token, |v| *v += 1).expect("a holder's token is never stale");
    }
}

fn run(threads: usize, run_for: Duration) {
    let world = Arc::new(World {
        locks: LockManager::new(),
        shadows: (0..TABLES + TABLES * ROWS).map(|_| Shadow::default()).collect(),
        fences: (0..TABLES + TABLES * ROWS).map(|_| Fenced::new(0)).collect(),
        stop: AtomicBool::new(false),
        commits: AtomicU64::new(0),
        deadlocks: AtomicU64::new(0),
    });
    let (progress_tx, progress_rx) = mpsc::channel::<usize>();
    let mut handles = Vec::new();
    for t in 0..threads {
        let (world, progress_tx) = (Arc::clone(&world), progress_tx.clone());
        handles.push(std::thread::spawn(move || {
            let mut rng = 0x9E37_79B9_7F4A_7C15_u64 ^ (t as u64 + 1);
            let session = world.locks.session(format!("t{t}"));
            while !world.stop.load(Ordering::Relaxed) {
                let keys = transaction(&mut rng);
                if t % 2 == 0 {
                    // Through the session, key by key in the order drawn: deadlocks can form.
                    let mut held = Vec::new();
                    let mut aborted = false;
                    for &(k, m) in &keys {
                        let r = match m {
                            Mode::Exclusive => session.exclusive(&k).acquire(),
                            Mode::IntentShared => session.intent_shared(&k).acquire(),
                            Mode::IntentExclusive => session.intent_exclusive(&k).acquire(),
                            Mode::SharedIntentExclusive => session.shared_intent_exclusive(&k).acquire(),
                            _ => session.shared(&k).acquire(),
                        };
                        match r {
                            Ok(g) => {
                                hold(&world, k, m, g.token());
                                held.push((k, m, g));
                            }
                            Err(LockError::Deadlock { .. }) => {
                                aborted = true;
                                break;
                            }
                            Err(e) => panic!("unexpected {e:?}"),
                        }
                    }
                    for (k, m, g) in held.into_iter().rev() {
                        world.shadows[k as usize].exit(m);
                        drop(g);
                    }
                    if aborted {
                        world.deadlocks.fetch_add(1, Ordering::Relaxed);
                    } else {
                        world.commits.fetch_add(1, Ordering::Relaxed);
                    }
                } else {
                    // All at once, in canonical order, through the session: two such requests
                    // never deadlock, but one can cross a key-by-key transaction, and then the
                    // detector sees it (a plain lock_many would not be in the graph).
                    match session.lock_many(keys.iter().map(|(k, m)| (k, *m))).acquire() {
                        Ok(all) => {
                            for g in all.iter() {
                                hold(&world, *g.key(), g.mode(), g.token());
                            }
                            for g in all.iter() {
                                world.shadows[*g.key() as usize].exit(g.mode());
                            }
                            drop(all);
                            world.commits.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(LockError::Deadlock { .. }) => {
                            world.deadlocks.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => panic!("unexpected {e:?}"),
                    }
                }
                let _ = progress_tx.send(t);
            }
        }));
    }
    drop(progress_tx);
    let start = Instant::now();
    let mut last = vec![Instant::now(); threads];
    while start.elapsed() < run_for {
        if let Ok(t) = progress_rx.recv_timeout(Duration::from_millis(50)) {
            last[t] = Instant::now();
        }
        for (t, at) in last.iter().enumerate() {
            assert!(
                at.elapsed() < Duration::from_secs(10),
                "thread {t} made no progress for 10 s: a hang\n{:?}",
                world.locks.wait_graph()
            );
        }
    }
    world.stop.store(true, Ordering::Relaxed);
    // Each thread finishes its transaction and stops; one that does not within 10 s hangs.
    let deadline = Instant::now() + Duration::from_secs(10);
    while handles.iter().any(|h| !h.is_finished()) {
        assert!(Instant::now() < deadline, "a thread did not finish: a hang\n{:?}", world.locks.wait_graph());
        std::thread::sleep(Duration::from_millis(10));
    }
    for h in handles {
        h.join().unwrap();
    }
    let (c, d) = (world.commits.load(Ordering::Relaxed), world.deadlocks.load(Ordering::Relaxed));
    assert!(c > 100, "only {c} commits");
    assert_eq!(world.locks.deadlock_stats().deadlocks, d, "every deadlock reported aborted one transaction");
    for k in 0..TABLES + TABLES * ROWS {
        assert!(
            world.locks.inspect(&k).is_none_or(|i| i.holders.is_empty() && i.waiters.is_empty()),
            "key {k} left held"
        );
    }
}

#[test]
fn sessions_and_lock_many_under_stress() {
    run(4, Duration::from_secs(2));
}
