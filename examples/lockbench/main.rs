//! `lockbench`: leasehold against the keyed locks users would pick instead, in one process, on
//! the same workloads; prints a Markdown table (medians across repetitions, ratios to F, a bare
//! `parking_lot::Mutex` lock+unlock on one thread measured in the same repetition) and the goals.
//!
//! ```text
//! cargo run --release --example lockbench -- [--quick] [--threads 1,2,4] [--reps N]
//!     [--workloads W1,W2,W3,W4,S,L] [--peers leasehold,bare-mutex,...] [--csv PATH] [--plot PATH.svg]
//! ```
//!
//! Modules: `peers` (the trait and the eight peers), `workloads` (the key streams and the one
//! timed loop), `zipf` (PRNG and Zipf generator), `check` (every peer must exclude before
//! anything is timed), `report` (medians, tables, goals, CSV), `plot` (the SVG), `machine` (CPU,
//! load and the machine's busy share while we ran).

mod check;
mod machine;
mod peers;
mod plot;
mod report;
mod txn;
mod workloads;
mod zipf;

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use peers::PeerId;
use report::Row;
use workloads::{Sizes, Workload};

struct Args {
    quick: bool,
    threads: Vec<usize>,
    reps: Option<usize>,
    workloads: Vec<Workload>,
    peers: Vec<PeerId>,
    csv: Option<String>,
    plot: Option<String>,
    txn: bool,
}

const USAGE: &str = "\
usage: lockbench [--quick] [--threads 1,2,4] [--reps N] [--workloads W1,W2,W3,W4,S,L]
                 [--peers leasehold,bare-mutex,...] [--csv PATH] [--plot PATH.svg] [--txn]
  --quick      short windows, 1M churn ops, 3 repetitions (about half a minute on 2 cores)
  --threads    thread counts (default: powers of two up to the core count, and the core count)
  --reps       repetitions (default 7, or 3 with --quick); figures are medians across them
  --workloads  a subset of the workloads (F is measured whatever the subset)
  --peers      a subset of the peers: leasehold, leasehold+lease, std-mutex-map, dashmap-keep,
               dashmap-remove, lockable, tokio-semaphore, striped-1024, bare-mutex
  --csv        write the medians as CSV
  --plot       draw throughput against threads per workload as SVG
  --txn        run only workload T (transactions: sessions with deadlock detection against
               lock_many), at the given thread counts";

fn default_threads() -> Vec<usize> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut t: Vec<usize> =
        std::iter::successors(Some(1_usize), |&t| Some(t * 2)).take_while(|&t| t <= cores).collect();
    if !t.contains(&cores) {
        t.push(cores);
    }
    t
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        quick: false,
        threads: default_threads(),
        reps: None,
        workloads: workloads::ALL.to_vec(),
        peers: peers::ALL.to_vec(),
        csv: None,
        plot: None,
        txn: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--quick" => a.quick = true,
            "--threads" => {
                let v = value("--threads")?;
                a.threads = v
                    .split(',')
                    .map(|t| t.trim().parse::<usize>().ok().filter(|&t| t > 0).ok_or(format!("bad thread count {t:?}")))
                    .collect::<Result<_, _>>()?;
                a.threads.sort_unstable();
                a.threads.dedup();
            }
            "--reps" => {
                a.reps = Some(value("--reps")?.parse().ok().filter(|&r| r > 0).ok_or("--reps needs a positive number")?)
            }
            "--workloads" => {
                let v = value("--workloads")?;
                a.workloads = v
                    .split(',')
                    .map(|w| {
                        workloads::ALL
                            .into_iter()
                            .find(|x| x.name().eq_ignore_ascii_case(w.trim()))
                            .ok_or(format!("unknown workload {w:?}"))
                    })
                    .collect::<Result<_, _>>()?;
            }
            "--peers" => {
                let v = value("--peers")?;
                a.peers = v
                    .split(',')
                    .map(|p| peers::ALL.into_iter().find(|x| x.name() == p.trim()).ok_or(format!("unknown peer {p:?}")))
                    .collect::<Result<_, _>>()?;
            }
            "--csv" => a.csv = Some(value("--csv")?),
            "--plot" => a.plot = Some(value("--plot")?),
            "--txn" => a.txn = true,
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(a)
}

/// The progress line on stderr: rewritten in place on a terminal, one line per workload otherwise.
struct Progress {
    started: Instant,
    total: usize,
    done: usize,
    tty: bool,
    last: String,
}

impl Progress {
    fn step(&mut self, rep: usize, reps: usize, w: Workload, peer: PeerId, threads: usize) {
        self.done += 1;
        let el = self.started.elapsed().as_secs();
        let line = format!(
            "[rep {}/{reps}] cell {}/{} {} {} x{threads} ({}m{:02}s)",
            rep + 1,
            self.done,
            self.total,
            w.name(),
            peer.name(),
            el / 60,
            el % 60
        );
        let mut err = std::io::stderr().lock();
        if self.tty {
            let _ = write!(err, "\r{line:<78}");
        } else {
            let key = format!("{rep} {}", w.name());
            if key != self.last {
                let _ = writeln!(err, "{line}");
                self.last = key;
            }
        }
        let _ = err.flush();
    }

    fn finish(&self) {
        if self.tty {
            eprintln!();
        }
    }
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("lockbench: {e}");
            }
            eprintln!("{USAGE}");
            return if e.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(2) };
        }
    };
    let sizes = if args.quick {
        Sizes {
            warm: Duration::from_millis(15),
            window: Duration::from_millis(60),
            churn_ops: 1_000_000,
            churn_warm: 50_000,
        }
    } else {
        Sizes {
            warm: Duration::from_millis(60),
            window: Duration::from_millis(250),
            churn_ops: 10_000_000,
            churn_warm: 200_000,
        }
    };
    let reps = args.reps.unwrap_or(if args.quick { 3 } else { 7 });
    if args.txn {
        txn::run(&args.threads, reps, sizes.window * 4);
        return ExitCode::SUCCESS;
    }
    let threads = args.threads.clone();
    let max_threads = *threads.iter().max().expect("at least one thread count");
    let started = Instant::now();
    let usage0 = machine::Usage::now();

    eprintln!("lockbench: checking that every peer excludes ...");
    if let Err(e) = check::all(if args.quick { 5_000 } else { 20_000 }) {
        eprintln!("lockbench: correctness check failed, this is a harness bug: {e}");
        return ExitCode::from(3);
    }

    let zipf = if args.workloads.contains(&Workload::W2) { workloads::zipf_streams(max_threads) } else { Vec::new() };
    let f_tight = machine::tight_mutex_ns(20_000_000);
    // The parallel probe, at the start of every repetition and at the end: the most threads, each
    // on its own mutex, against one thread. A ratio near 1 means the threads really ran in parallel.
    let probe = || {
        let w = Duration::from_millis(100);
        machine::parallel_probe(max_threads, w) / machine::parallel_probe(1, w)
    };
    let mut probes = Vec::new();

    // Every peer, once, untimed: page in code and allocator arenas.
    for peer in Workload::W1.peers() {
        let warm = Sizes { window: sizes.warm, ..sizes };
        workloads::run_cell(Workload::W1, peer, 1, &zipf, warm);
    }

    let mut plan: Vec<(Workload, PeerId, usize)> = Vec::new();
    for &w in &args.workloads {
        for peer in w.peers().into_iter().filter(|p| args.peers.contains(p)) {
            for &t in &threads {
                if !(w == Workload::W1 && peer == PeerId::BareMutex && t == 1) {
                    plan.push((w, peer, t));
                }
            }
        }
    }
    let mut progress = Progress {
        started,
        total: reps * (plan.len() + args.workloads.len()),
        done: 0,
        tty: std::io::stderr().is_terminal(),
        last: String::new(),
    };
    let mut rows: Vec<Row> = Vec::new();
    for rep in 0..reps {
        probes.push(probe());
        // F: the bare mutex through the same loop, one thread, before each workload of this
        // repetition; the repetition's F is the median of those (robust to a passing burst of
        // load from other processes). The first one is also the bare-mutex W1 1-thread cell.
        let mut fs = Vec::new();
        let mut cells = Vec::new();
        for &w in &args.workloads {
            progress.step(rep, reps, Workload::W1, PeerId::BareMutex, 1);
            let m = workloads::run_cell(Workload::W1, PeerId::BareMutex, 1, &zipf, sizes);
            fs.push(m.ns_per_op());
            let keep = threads.contains(&1)
                && args.workloads.contains(&Workload::W1)
                && args.peers.contains(&PeerId::BareMutex);
            if fs.len() == 1 && keep {
                cells.push(Row::new(rep, Workload::W1, PeerId::BareMutex, 1, m));
            }
            for &(pw, peer, t) in plan.iter().filter(|p| p.0 == w) {
                progress.step(rep, reps, pw, peer, t);
                cells.push(Row::new(rep, pw, peer, t, workloads::run_cell(pw, peer, t, &zipf, sizes)));
            }
        }
        let f = report::median(fs);
        rows.extend(cells.into_iter().map(|r| Row { f, ..r }));
    }
    progress.finish();
    let usage = machine::Usage::now().since(&usage0);
    probes.push(probe());
    let took = started.elapsed();

    // Table order: workload, peer, threads.
    let mut cells = report::cells(&rows);
    let order = |c: &report::Cell| {
        (workloads::ALL.iter().position(|&w| w == c.w), peers::ALL.iter().position(|&p| p == c.peer), c.threads)
    };
    cells.sort_by_key(order);
    let fs: Vec<f64> = (0..reps).filter_map(|r| rows.iter().find(|x| x.rep == r).map(|x| x.f)).collect();
    let f = report::median(fs.clone());
    let idle_bound = leasehold::LockManager::<u64>::new().idle_slot_bound();

    println!("# lockbench\n");
    println!(
        "{}; {} mode, {reps} repetitions, threads {:?}; run took {:.0} s.",
        machine::describe(),
        if args.quick { "quick" } else { "full" },
        threads,
        took.as_secs_f64()
    );
    println!("{}", usage.describe());
    if max_threads > 1 {
        let median = report::median(probes.clone());
        println!(
            "Parallel probe ({max_threads} threads each locking its own mutex, ns/op per thread over one thread's; \
             1.00 means they really ran in parallel), at the start of each repetition and at the end: {}.\n",
            probes.iter().map(|p| format!("{p:.2}")).collect::<Vec<_>>().join(", ")
        );
        if median > 1.15 {
            println!(
                "**Warning: the threads did not get a core each during most of this run (median probe \
                 {median:.2}); figures for more than one thread are unreliable. Rerun on a quiet machine.**\n"
            );
        }
    }
    println!(
        "F = one bare `parking_lot::Mutex` lock+unlock on one thread, through the same loop, measured before \
         each workload of each repetition: {f:.1} ns (median; per repetition {}). The same lock+unlock in a \
         bare loop: {f_tight:.1} ns.\n",
        fs.iter().map(|x| format!("{x:.1}")).collect::<Vec<_>>().join(", ")
    );
    println!(
        "Figures are medians over the repetitions; × F is the median of each repetition's ns/op over that \
         repetition's F. ns/op per thread = a thread's time / its ops (lower is better); Mops/s = all ops / \
         wall time. Acquire latency is sampled on 1 op in 64 with `Instant` (its own cost, about {:.0} ns, is \
         included). blocks/op = voluntary context switches per op, all threads (`getrusage(RUSAGE_THREAD)`): \
         how often a waiter parked or a thread blocked in the kernel.\n",
        machine::instant_ns()
    );
    for w in &args.workloads {
        println!("- {}: {}", w.name(), w.describe());
    }
    println!("\n{}", report::table(&cells));
    if args.workloads.contains(&Workload::W4) {
        println!(
            "W4 churn, {} ops per cell (after a warm-up on other keys); entries are slots, map entries or \
             locked keys, the worst repetition; RSS growth from `/proc/self/statm` over the churn, heap \
             trimmed before.\n",
            sizes.churn_ops
        );
        println!("{}", report::churn_table(&cells));
    }
    println!("## Goals (leasehold)\n");
    print!("{}", report::goals_text(&report::goals(&rows, idle_bound)));

    if let Some(path) = &args.csv {
        if let Err(e) = std::fs::write(path, report::csv(&cells)) {
            eprintln!("lockbench: cannot write {path}: {e}");
            return ExitCode::FAILURE;
        }
        eprintln!("lockbench: wrote {path}");
    }
    if let Some(path) = &args.plot {
        let title = format!("lockbench: throughput against threads ({})", machine::short());
        if let Err(e) = plot::svg(path, &cells, &threads, &title) {
            eprintln!("lockbench: cannot draw {path}: {e}");
            return ExitCode::FAILURE;
        }
        eprintln!("lockbench: wrote {path}");
    }
    ExitCode::SUCCESS
}
