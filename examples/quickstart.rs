//! leasehold at work: exclusive and shared locks, a semaphore, a lease that runs out while its
//! holder hangs, and the fenced resource that refuses the late write.
//!
//! `cargo run --release --example quickstart`

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use leasehold::{Fenced, LockError, LockManager};

fn main() -> Result<(), LockError> {
    let locks: Arc<LockManager<String>> = Arc::new(LockManager::new());

    // Read/write: many readers or one writer.
    {
        let r1 = locks.shared("config").try_acquire()?;
        let r2 = locks.shared("config").try_acquire()?;
        let writer = locks.exclusive("config").try_acquire();
        println!(
            "two readers hold \"config\" (tokens {} and {}); a writer now: {:?}",
            r1.token(),
            r2.token(),
            writer.err()
        );
    }

    // A semaphore: at most 3 holders of "db-pool" at once, across 8 threads.
    let busy = std::sync::atomic::AtomicUsize::new(0);
    let most = std::sync::atomic::AtomicUsize::new(0);
    thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                for _ in 0..200 {
                    let _permit = locks.semaphore("db-pool", 3).acquire().expect("valid request");
                    let now = busy.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                    most.fetch_max(now, std::sync::atomic::Ordering::SeqCst);
                    thread::yield_now();
                    busy.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                }
            });
        }
    });
    println!("8 threads shared a 3-permit semaphore; at most {} held it at once", most.into_inner());

    // Leases and fencing: a holder that hangs past its lease loses the lock, and the resource
    // refuses its late write because a newer token has written since.
    let ledger = Arc::new(Fenced::new(Vec::<String>::new()));
    let slow = {
        let (locks, ledger) = (Arc::clone(&locks), Arc::clone(&ledger));
        thread::spawn(move || -> Result<(), LockError> {
            let g = locks.exclusive("ledger").lease(Duration::from_millis(50)).acquire()?;
            ledger.write(g.token(), |l| l.push(format!("slow {}: begin", g.token())))?;
            thread::sleep(Duration::from_millis(120)); // hangs past its lease
            let late = ledger.write(g.token(), |l| l.push(format!("slow {}: late", g.token())));
            println!("the slow holder's late write: {:?}; still held: {}", late.as_ref().err(), g.is_held());
            Ok(())
        })
    };
    thread::sleep(Duration::from_millis(10));
    let started = Instant::now();
    let fast = locks.exclusive("ledger").lease(Duration::from_secs(5)).acquire()?;
    println!(
        "the next holder waited {:?} (the slow holder's lease ran out) and got token {}",
        started.elapsed(),
        fast.token()
    );
    ledger.write(fast.token(), |l| l.push(format!("fast {}", fast.token())))?;
    fast.renew(Duration::from_secs(5))?;
    drop(fast);
    slow.join().expect("the slow thread does not panic")?;
    println!("ledger: {:?}", ledger.read(|l| l.clone()));

    // Async, on any executor (here, a tiny one-thread tokio runtime).
    let rt = tokio::runtime::Builder::new_current_thread().build().expect("a runtime");
    rt.block_on(async {
        let g = locks.exclusive("job-42").lease(Duration::from_secs(30)).owner("worker-1").acquire_async().await?;
        println!(
            "async holder of {:?}: owner {:?}, expires at {:?} on the manager's clock",
            g.key(),
            g.owner(),
            g.expires_at()
        );
        Ok::<(), LockError>(())
    })?;

    locks.reclaim_idle();
    println!("slots left after everything was released: {}", locks.slot_count());
    Ok(())
}
