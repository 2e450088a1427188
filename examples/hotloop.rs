//! Profiling aid: one thread acquiring and releasing keys in a loop.
//! `hotloop [ops] [key mask]`: keys cycle through `0..=mask`.
fn main() {
    let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
    let mut args = std::env::args().skip(1);
    let n: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(50_000_000);
    let mask: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(1023);
    let t = std::time::Instant::now();
    for i in 0..n {
        let g = locks.exclusive(&(i & mask)).acquire().unwrap();
        std::hint::black_box(g.token());
        drop(g);
    }
    println!("{:.1} ns/op", t.elapsed().as_nanos() as f64 / n as f64);
}
