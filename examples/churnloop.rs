//! Profiling aid: one thread acquiring and releasing a fresh key every time.
fn main() {
    let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
    let n: u64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(10_000_000);
    let t = std::time::Instant::now();
    for k in 0..n {
        drop(locks.exclusive(&k).try_acquire().unwrap());
    }
    println!("{:.1} ns/op, {} slots cached", t.elapsed().as_nanos() as f64 / n as f64, locks.slot_count());
}
