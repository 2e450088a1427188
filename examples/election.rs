//! Leader election among worker threads: one leads and writes to a fenced store; the leader hangs
//! past its lease; another worker takes over; when the old leader wakes up, its write is refused.
//!
//! `cargo run --release --example election -- [seconds]` (default 2): runs that long and prints
//! the observer's view of the election and what the store accepted and refused.
//!
//! The leaders renew by hand, from their work loop (`renew_by_hand`): a leader that hangs then
//! stops renewing and loses its lease. (With the default keep-alive, the manager's renewer would
//! keep a hung leader in office, which is what keep-alive is for when the holder is busy rather
//! than stuck.) The store checks fencing tokens, so even a write that the hung leader issued
//! after checking `trusted_for` is refused once its successor has written.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use leasehold::{ChangeKind, LockError, LockManager};

const LEASE: Duration = Duration::from_millis(200);
const HANG: Duration = Duration::from_millis(600);

fn main() {
    let seconds: u64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(2);
    let locks: Arc<LockManager<String>> = Arc::new(LockManager::new());
    let store = Arc::new(locks.fenced(Vec::<(u64, String)>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let hung_once = Arc::new(AtomicBool::new(false));
    let refused = Arc::new(AtomicU64::new(0));
    let started = Instant::now();

    // An observer prints every change of the election, in token order.
    let observer = {
        let (locks, stop) = (Arc::clone(&locks), Arc::clone(&stop));
        thread::spawn(move || {
            let changes = locks.observe("scheduler");
            let mut seen = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                if let Some(c) = changes.next_timeout(Duration::from_millis(50)) {
                    let who = c.leader.as_ref().map_or("nobody".to_owned(), |l| {
                        format!("{} (token {}, value {:?})", l.label.as_str(), l.token, l.value)
                    });
                    println!("[{:>5} ms] observer: {:?} {who}", started.elapsed().as_millis(), c.kind);
                    seen.push(c.kind);
                }
            }
            seen
        })
    };

    let workers: Vec<_> = (0..3)
        .map(|w| {
            let (locks, store, stop) = (Arc::clone(&locks), Arc::clone(&store), Arc::clone(&stop));
            let (hung_once, refused) = (Arc::clone(&hung_once), Arc::clone(&refused));
            thread::spawn(move || {
                let name = format!("worker-{w}");
                while !stop.load(Ordering::Relaxed) {
                    let campaign = locks.elect("scheduler").candidate(name.as_str()).lease(LEASE).renew_by_hand();
                    let Ok(lead) = campaign.acquire_timeout(Duration::from_millis(100)) else { continue };
                    let _ = lead.proclaim(format!("10.0.0.{w}:80"));
                    let mut round = 0;
                    while !stop.load(Ordering::Relaxed) {
                        round += 1;
                        // Only act while the lease has time left for the action.
                        if lead.trusted_for() < Duration::from_millis(50) {
                            break;
                        }
                        if round == 3 && !hung_once.swap(true, Ordering::Relaxed) {
                            println!(
                                "[{:>5} ms] {name}: hangs for {HANG:?} (lease {LEASE:?})",
                                started.elapsed().as_millis()
                            );
                            thread::sleep(HANG);
                        }
                        let entry = format!("{name} round {round}");
                        match store.write(lead.token(), |log| log.push((lead.token().as_u64(), entry))) {
                            Ok(()) => {}
                            Err(LockError::StaleToken { .. }) => {
                                refused.fetch_add(1, Ordering::Relaxed);
                                println!(
                                    "[{:>5} ms] {name}: write with token {} refused (lost: {:?})",
                                    started.elapsed().as_millis(),
                                    lead.token(),
                                    lead.loss_cause()
                                );
                                break;
                            }
                            Err(e) => panic!("unexpected store error {e}"),
                        }
                        if lead.renew().is_err() {
                            break;
                        }
                        thread::sleep(Duration::from_millis(20));
                    }
                    // Resigning a lost tenure says so; either way, campaign again.
                    let _ = lead.resign();
                }
            })
        })
        .collect();

    thread::sleep(Duration::from_secs(seconds));
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().expect("worker");
    }
    let kinds = observer.join().expect("observer");

    let log = store.read(|log| log.clone());
    let tokens: Vec<u64> = log.iter().map(|(t, _)| *t).collect();
    assert!(tokens.windows(2).all(|w| w[0] <= w[1]), "the store accepted a write from an older leader");
    let mut tenures = tokens.clone();
    tenures.dedup();
    let leaders = tenures.len();
    let expiries = kinds.iter().filter(|k| **k == ChangeKind::Expired).count();
    println!(
        "\n{} writes accepted from {leaders} tenure(s); {} refused; {expiries} tenure(s) expired",
        log.len(),
        refused.load(Ordering::Relaxed)
    );
    assert!(hung_once.load(Ordering::Relaxed), "the run was too short for the leader to hang");
    assert!(refused.load(Ordering::Relaxed) >= 1, "the hung leader's write was not refused");
    assert!(expiries >= 1, "the hung leader's lease did not expire");
}
