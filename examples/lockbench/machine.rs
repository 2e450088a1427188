//! The machine: what it is, how busy it was while we ran, and two reference timings.

use std::hint::black_box;
use std::time::Instant;

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// "2 cores, AMD EPYC".
pub fn short() -> String {
    format!("{} cores, {}", cores(), cpu_model())
}

/// The machine in one sentence (and this process's scheduling priority, when it is not the
/// default: a raised priority is how a run on a shared machine keeps its cores).
pub fn describe() -> String {
    let mut s = format!("Machine: {} ({} {})", short(), std::env::consts::OS, std::env::consts::ARCH);
    // SAFETY: getpriority has no preconditions.
    let nice = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
    let group = std::fs::read_to_string("/proc/self/autogroup")
        .ok()
        .and_then(|a| a.split_whitespace().skip_while(|w| *w != "nice").nth(1).and_then(|n| n.parse::<i32>().ok()));
    if nice != 0 || group.is_some_and(|g| g != 0) {
        s += &format!(", run at nice {nice}");
        if let Some(g) = group {
            s += &format!(" in a scheduler autogroup at nice {g}");
        }
    }
    s
}

/// CPU time of the whole machine and of this process, from `/proc`.
pub struct Usage {
    /// Busy and total jiffies over all CPUs.
    busy: u64,
    total: u64,
    /// This process's user + system jiffies.
    ours: u64,
    load: String,
}

impl Usage {
    pub fn now() -> Usage {
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let cpu: Vec<u64> =
            stat.lines().next().unwrap_or_default().split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
        let total: u64 = cpu.iter().take(8).sum();
        let idle = cpu.get(3).copied().unwrap_or(0) + cpu.get(4).copied().unwrap_or(0);
        let own = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        // After the parenthesised command name come the state (field 3) and then numbers, some of
        // them negative; utime and stime are fields 14 and 15.
        let after = own.rsplit_once(')').map_or("", |(_, rest)| rest);
        let field = |n: usize| after.split_whitespace().nth(n - 3).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        let ours = field(14) + field(15);
        let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        let load = load.split_whitespace().take(3).collect::<Vec<_>>().join(" ");
        Usage { busy: total - idle, total, ours, load }
    }

    /// The interval from `earlier` to `self`.
    pub fn since(&self, earlier: &Usage) -> UsageDelta {
        UsageDelta {
            busy: self.busy.saturating_sub(earlier.busy),
            total: self.total.saturating_sub(earlier.total),
            ours: self.ours.saturating_sub(earlier.ours),
            load_before: earlier.load.clone(),
            load_after: self.load.clone(),
        }
    }
}

pub struct UsageDelta {
    busy: u64,
    total: u64,
    ours: u64,
    load_before: String,
    load_after: String,
}

impl UsageDelta {
    pub fn describe(&self) -> String {
        let pct = |x: u64| if self.total == 0 { 0.0 } else { 100.0 * x as f64 / self.total as f64 };
        format!(
            "Machine load while it ran: this process used {:.0}% of all CPU time, other processes {:.0}% \
             (they can use the core that one-thread cells leave idle; load average {} before, {} after).",
            pct(self.ours),
            pct(self.busy.saturating_sub(self.ours)),
            self.load_before,
            self.load_after
        )
    }
}

/// One bare `parking_lot::Mutex` lock+unlock in a plain loop (no harness), in ns: for reference
/// next to F, which goes through the harness loop like every other cell.
pub fn tight_mutex_ns(iters: u64) -> f64 {
    let m = parking_lot::Mutex::new(());
    for _ in 0..iters / 10 {
        drop(black_box(&m).lock());
    }
    let t = Instant::now();
    for _ in 0..iters {
        drop(black_box(&m).lock());
    }
    t.elapsed().as_nanos() as f64 / iters as f64
}

/// The cost of one `Instant::now()` + `elapsed()` pair, in ns.
pub fn instant_ns() -> f64 {
    let n = 1_000_000;
    let t = Instant::now();
    let mut acc = 0_u128;
    for _ in 0..n {
        acc += black_box(Instant::now()).elapsed().as_nanos();
    }
    black_box(acc);
    t.elapsed().as_nanos() as f64 / n as f64
}

/// `threads` threads, each locking its own (cache-padded) mutex for `window`: ns/op per thread.
/// On an idle machine with as many cores as threads this stays at the one-thread figure; when
/// other processes take cores, it grows, and multi-thread figures in that run are suspect.
pub fn parallel_probe(threads: usize, window: std::time::Duration) -> f64 {
    use std::sync::atomic::{AtomicBool, Ordering};
    let stop = AtomicBool::new(false);
    let locks: Vec<crossbeam_utils::CachePadded<parking_lot::Mutex<()>>> =
        (0..threads).map(|_| Default::default()).collect();
    let per_thread: Vec<f64> = std::thread::scope(|s| {
        let hs: Vec<_> = locks
            .iter()
            .map(|m| {
                let stop = &stop;
                s.spawn(move || {
                    let t = Instant::now();
                    let mut n = 0_u64;
                    while !stop.load(Ordering::Relaxed) {
                        for _ in 0..256 {
                            drop(black_box(&**m).lock());
                        }
                        n += 256;
                    }
                    t.elapsed().as_nanos() as f64 / n as f64
                })
            })
            .collect();
        std::thread::sleep(window);
        stop.store(true, Ordering::Relaxed);
        hs.into_iter().map(|h| h.join().expect("probe thread")).collect()
    });
    per_thread.iter().sum::<f64>() / threads as f64
}
