//! The instruction yardstick's driver: `opcount OP N` runs N iterations of one operation on one
//! thread and prints nothing else. `bench/instructions.sh` runs it under callgrind at two values
//! of N and divides the difference in instructions by the difference in N, so set-up, warm-up and
//! tear-down cancel out.
//!
//! Operations (each iteration is one acquire and one release, like lockbench's workloads):
//! - `exclusive`: exclusive on keys cycling through 1,024 (W1's keys: after the first 1,024
//!   iterations every slot exists and the path is the uncontended fast path).
//! - `shared`: the same with shared mode.
//! - `semaphore`: one key, 4 permits (workload S).
//! - `leased`: `exclusive` with a 30 s lease on every acquire (workload L).
//! - `churn`: a fresh key every iteration (W4), after a warm-up that fills the idle cache, then
//!   `reclaim_idle()` once at the end (so its cost, bounded by the idle cache, is the same at both
//!   N and cancels).
//! - `mutex`: a bare `parking_lot::Mutex<()>` lock+unlock (F, the unit of lockbench's ratios).
//! - `hashmap`: `std::sync::Mutex<HashMap<u64, ()>>` insert + remove of a fresh key (W4's peer).
//!
//! The manager has the default settings except for a fixed hash seed and shard count and no reaper
//! thread, so that a count is the same from run to run and machine to machine.
use std::collections::HashMap;
use std::hint::black_box;
use std::time::Duration;

use foldhash::fast::FixedState;
use leasehold::LockManager;

const KEYS: u64 = 1024;
const SEED: u64 = 0x1ea5_e401d;

fn main() {
    let mut args = std::env::args().skip(1);
    let op = args.next().unwrap_or_default();
    let n: u64 = match args.next().map(|a| a.parse()) {
        Some(Ok(n)) => n,
        _ => usage(),
    };
    // A fixed hash seed and shard count (the default's on up to 4 cores), and no reaper thread:
    // the default seed is random per process, which moves probe lengths, and the reaper's
    // periodic sweep runs by wall time, which valgrind stretches; either moves the count.
    let locks: LockManager<u64, FixedState> = LockManager::builder()
        .hasher(FixedState::with_seed(SEED))
        .shards(64)
        .reaper(false)
        .build()
        .expect("valid configuration");
    match op.as_str() {
        "exclusive" => {
            for i in 0..n {
                let g = locks.exclusive(&(i & (KEYS - 1))).acquire().expect("uncontended acquire");
                black_box(g.token());
            }
        }
        "shared" => {
            for i in 0..n {
                let g = locks.shared(&(i & (KEYS - 1))).acquire().expect("uncontended acquire");
                black_box(g.token());
            }
        }
        "semaphore" => {
            for _ in 0..n {
                let g = locks.semaphore(&0, 4).acquire().expect("uncontended acquire");
                black_box(g.token());
            }
        }
        "leased" => leased(&locks, n),
        "churn" => {
            // Fill the idle cache first (the same at both N): the count is then that of a churn
            // at the cache's bound, where every creation reclaims.
            let warm = locks.idle_slot_bound() as u64 + 64 * 64;
            for k in (1 << 40)..(1 << 40) + warm {
                drop(locks.exclusive(&k).acquire().expect("uncontended acquire"));
            }
            for k in 0..n {
                let g = locks.exclusive(&k).acquire().expect("uncontended acquire");
                black_box(g.token());
            }
            black_box(locks.reclaim_idle());
            assert_eq!(locks.slot_count(), 0, "churn must leave no slot after reclaim_idle");
        }
        "mutex" => {
            let m = parking_lot::Mutex::new(());
            for _ in 0..n {
                black_box(&*m.lock());
            }
        }
        "hashmap" => {
            let m = std::sync::Mutex::new(HashMap::<u64, ()>::new());
            for k in 0..n {
                m.lock().expect("not poisoned").insert(black_box(k), ());
                m.lock().expect("not poisoned").remove(&black_box(k));
            }
        }
        _ => usage(),
    }
}

/// The `leased` loop, in a function of its own: its fast path is inlined like the plain one, and
/// in `main` it would take registers from the other loops (exclusive's count moved by 4).
#[inline(never)]
fn leased(locks: &LockManager<u64, FixedState>, n: u64) {
    for i in 0..n {
        let g =
            locks.exclusive(&(i & (KEYS - 1))).lease(Duration::from_secs(30)).acquire().expect("uncontended acquire");
        black_box(g.token());
    }
}

fn usage() -> ! {
    eprintln!("usage: opcount exclusive|shared|semaphore|leased|churn|mutex|hashmap N");
    std::process::exit(2)
}
