//! From measured cells to figures: per-repetition rows, medians across repetitions, the Markdown
//! tables, the goals, the CSV.

use std::fmt::Write as _;

use crate::peers::PeerId;
use crate::workloads::{Measured, Workload};

const MIB: f64 = 1024.0 * 1024.0;

/// One cell of one repetition, reduced to figures (samples dropped).
#[derive(Clone, Debug)]
pub struct Row {
    pub rep: usize,
    pub w: Workload,
    pub peer: PeerId,
    pub threads: usize,
    pub ns: f64,
    pub mops: f64,
    pub p50: f64,
    pub p99: f64,
    /// Voluntary context switches per op (all threads).
    pub cs: f64,
    /// F of the same repetition, in ns.
    pub f: f64,
    pub entries_now: Option<usize>,
    pub entries_reclaimed: Option<usize>,
    pub entries_fixed: bool,
    pub rss_growth: Option<i64>,
}

impl Row {
    /// The row of a measured cell; `f` is set once the repetition's F is known.
    pub fn new(rep: usize, w: Workload, peer: PeerId, threads: usize, mut m: Measured) -> Row {
        let p50 = percentile(&mut m.samples, 0.50);
        let p99 = percentile(&mut m.samples, 0.99);
        Row {
            rep,
            w,
            peer,
            threads,
            ns: m.ns_per_op(),
            mops: m.mops(),
            p50,
            p99,
            cs: m.switches as f64 / m.ops as f64,
            f: f64::NAN,
            entries_now: m.entries.map(|e| e.now),
            entries_reclaimed: m.entries.and_then(|e| e.after_reclaim),
            entries_fixed: m.entries.is_some_and(|e| e.fixed),
            rss_growth: m.rss_growth,
        }
    }
}

fn percentile(samples: &mut [u32], q: f64) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    let i = ((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len()) - 1;
    *samples.select_nth_unstable(i).1 as f64
}

pub fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Medians across repetitions for one (workload, peer, threads).
#[derive(Clone, Debug)]
pub struct Cell {
    pub w: Workload,
    pub peer: PeerId,
    pub threads: usize,
    pub reps: usize,
    pub ns: f64,
    pub mops: f64,
    pub p50: f64,
    pub p99: f64,
    pub cs: f64,
    /// Median over repetitions of ns / F (each repetition's own F).
    pub xf: f64,
    /// Worst (largest) over repetitions.
    pub entries_now: Option<usize>,
    pub entries_reclaimed: Option<usize>,
    pub entries_fixed: bool,
    pub rss_median: Option<f64>,
    pub rss_max: Option<f64>,
}

pub fn cells(rows: &[Row]) -> Vec<Cell> {
    let mut keys: Vec<(Workload, PeerId, usize)> = Vec::new();
    for r in rows {
        if !keys.contains(&(r.w, r.peer, r.threads)) {
            keys.push((r.w, r.peer, r.threads));
        }
    }
    keys.into_iter()
        .map(|(w, peer, threads)| {
            let rs: Vec<&Row> = rows.iter().filter(|r| (r.w, r.peer, r.threads) == (w, peer, threads)).collect();
            let med = |f: &dyn Fn(&Row) -> f64| median(rs.iter().map(|r| f(r)).collect());
            let rss: Vec<f64> = rs.iter().filter_map(|r| r.rss_growth).map(|b| b as f64 / MIB).collect();
            Cell {
                w,
                peer,
                threads,
                reps: rs.len(),
                ns: med(&|r| r.ns),
                mops: med(&|r| r.mops),
                p50: med(&|r| r.p50),
                p99: med(&|r| r.p99),
                cs: med(&|r| r.cs),
                xf: med(&|r| r.ns / r.f),
                entries_now: rs.iter().filter_map(|r| r.entries_now).max(),
                entries_reclaimed: rs.iter().filter_map(|r| r.entries_reclaimed).max(),
                entries_fixed: rs.iter().any(|r| r.entries_fixed),
                rss_median: (!rss.is_empty()).then(|| median(rss.clone())),
                rss_max: rss.iter().copied().reduce(f64::max),
            }
        })
        .collect()
}

fn fmt_ns(ns: f64) -> String {
    if ns.is_nan() {
        "-".into()
    } else if ns >= 100_000.0 {
        format!("{:.0} µs", ns / 1000.0)
    } else if ns >= 100.0 {
        format!("{ns:.0}")
    } else {
        format!("{ns:.1}")
    }
}

fn fmt_ratio(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}")
    } else if x >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

fn fmt_blocks(x: f64) -> String {
    if x.is_nan() {
        "-".into()
    } else if x >= 0.01 {
        format!("{x:.3}")
    } else {
        format!("{x:.1e}")
    }
}

fn fmt_mops(x: f64) -> String {
    if x >= 10.0 {
        format!("{x:.1}")
    } else if x >= 0.1 {
        format!("{x:.2}")
    } else {
        format!("{x:.4}")
    }
}

/// The main table: every cell, medians and ratios to F.
pub fn table(cells: &[Cell]) -> String {
    let mut s = String::new();
    s.push_str("| workload | peer | threads | ns/op per thread | Mops/s | p50 acquire ns | p99 acquire ns | blocks/op | × F |\n");
    s.push_str("|---|---|---:|---:|---:|---:|---:|---:|---:|\n");
    for c in cells {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            c.w.name(),
            c.peer.name(),
            c.threads,
            fmt_ns(c.ns),
            fmt_mops(c.mops),
            fmt_ns(c.p50),
            fmt_ns(c.p99),
            fmt_blocks(c.cs),
            fmt_ratio(c.xf)
        );
    }
    s
}

/// The churn table: what W4 leaves behind.
pub fn churn_table(cells: &[Cell]) -> String {
    let mut s = String::new();
    s.push_str(
        "| peer | threads | ns/op per thread | × F | entries right after | after reclaim_idle() | RSS growth MiB (median / max) |\n",
    );
    s.push_str("|---|---:|---:|---:|---:|---:|---:|\n");
    for c in cells.iter().filter(|c| c.w == Workload::W4) {
        let entries = match (c.entries_now, c.entries_fixed) {
            (Some(n), true) => format!("{n} (fixed)"),
            (Some(n), false) => n.to_string(),
            (None, _) => "-".into(),
        };
        let reclaimed = c.entries_reclaimed.map_or("-".into(), |n| n.to_string());
        let rss = match (c.rss_median, c.rss_max) {
            (Some(m), Some(x)) => format!("{m:.2} / {x:.2}"),
            _ => "-".into(),
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} |",
            c.peer.name(),
            c.threads,
            fmt_ns(c.ns),
            fmt_ratio(c.xf),
            entries,
            reclaimed,
            rss
        );
    }
    s
}

pub struct Goal {
    pub what: String,
    pub measured: String,
    /// None: not measured in this run (e.g. 2 threads not asked for).
    pub pass: Option<bool>,
}

/// Median over repetitions of `num / den`, each from the same repetition.
fn paired(rows: &[Row], num: impl Fn(&Row) -> bool, den: impl Fn(&Row) -> bool) -> Option<f64> {
    let ratios: Vec<f64> = rows
        .iter()
        .filter(|r| num(r))
        .filter_map(|n| rows.iter().find(|d| d.rep == n.rep && den(d)).map(|d| n.ns / d.ns))
        .collect();
    (!ratios.is_empty()).then(|| median(ratios))
}

fn xf(rows: &[Row], w: Workload, peer: PeerId, threads: usize) -> Option<f64> {
    let v: Vec<f64> =
        rows.iter().filter(|r| r.w == w && r.peer == peer && r.threads == threads).map(|r| r.ns / r.f).collect();
    (!v.is_empty()).then(|| median(v))
}

/// The goals, evaluated from this run's numbers. `idle_bound` is leasehold's idle-slot
/// cache bound (`LockManager::idle_slot_bound`, 64 slots per shard by default).
pub fn goals(rows: &[Row], idle_bound: usize) -> Vec<Goal> {
    use PeerId::*;
    use Workload::*;
    let mut g = Vec::new();
    let mut limit = |what: &str, v: Option<f64>, max: f64, unit: &str| {
        g.push(Goal {
            what: what.into(),
            measured: v.map_or("not measured".into(), |v| format!("{} {unit}", fmt_ratio(v))),
            pass: v.map(|v| v <= max),
        })
    };
    limit("W1, 1 thread: <= 1.5 F", xf(rows, W1, Leasehold, 1), 1.5, "F");
    limit("W1, 2 threads: <= 2.0 F per thread", xf(rows, W1, Leasehold, 2), 2.0, "F");
    limit("W2, 2 threads: <= 3.0 F", xf(rows, W2, Leasehold, 2), 3.0, "F");
    let w3 = paired(
        rows,
        |r| r.w == W3 && r.peer == Leasehold && r.threads == 2,
        |r| r.w == W3 && r.peer == BareMutex && r.threads == 2,
    );
    limit("W3, 2 threads: <= 1.2 x bare mutex (W3, 2 threads)", w3, 1.2, "x bare mutex");
    limit("S, 1 thread: <= 1.5 F", xf(rows, S, Leasehold, 1), 1.5, "F");
    let l = paired(
        rows,
        |r| r.w == L && r.peer == LeaseholdLease && r.threads == 1,
        |r| r.w == W1 && r.peer == Leasehold && r.threads == 1,
    );
    limit("L: <= 1.2 x W1 (1 thread)", l, 1.2, "x W1");

    // W4: cost, slots left, RSS.
    let w4: Vec<&Row> = rows.iter().filter(|r| r.w == W4 && r.peer == Leasehold && r.threads == 1).collect();
    if w4.is_empty() {
        g.push(Goal {
            what: "W4, 1 thread: <= 2.5 F, no slot left, < 2 MiB RSS growth".into(),
            measured: "not measured".into(),
            pass: None,
        });
    } else {
        let x = median(w4.iter().map(|r| r.ns / r.f).collect());
        let now = w4.iter().filter_map(|r| r.entries_now).max().unwrap_or(0);
        let left = w4.iter().filter_map(|r| r.entries_reclaimed).max().unwrap_or(0);
        let rss = w4.iter().filter_map(|r| r.rss_growth).max().unwrap_or(0) as f64 / MIB;
        g.push(Goal {
            what: "W4, 1 thread: <= 2.5 F".into(),
            measured: format!("{} F", fmt_ratio(x)),
            pass: Some(x <= 2.5),
        });
        g.push(Goal {
            what: format!("W4: no slot left (0 after reclaim_idle(), <= {idle_bound} idle cached right after)"),
            measured: format!("{now} right after, {left} after reclaim_idle() (worst rep)"),
            pass: Some(left == 0 && now <= idle_bound),
        });
        g.push(Goal {
            what: "W4: RSS growth < 2 MiB".into(),
            measured: format!("{rss:.2} MiB (worst rep)"),
            pass: Some(rss < 2.0),
        });
    }
    g
}

pub fn goals_text(goals: &[Goal]) -> String {
    let mut s = String::new();
    for g in goals {
        let verdict = match g.pass {
            Some(true) => "PASS",
            Some(false) => "MISS",
            None => "n/a ",
        };
        let _ = writeln!(s, "- **{verdict}** {}: measured {}", g.what, g.measured);
    }
    s
}

pub fn csv(cells: &[Cell]) -> String {
    let mut s = String::from(
        "workload,peer,threads,reps,ns_per_op_per_thread,mops,p50_ns,p99_ns,blocks_per_op,ratio_to_f,entries_after,entries_after_reclaim,rss_growth_mib_median,rss_growth_mib_max\n",
    );
    let opt = |v: Option<String>| v.unwrap_or_default();
    for c in cells {
        let _ = writeln!(
            s,
            "{},{},{},{},{:.3},{:.4},{},{},{:.6},{:.4},{},{},{},{}",
            c.w.name(),
            c.peer.name(),
            c.threads,
            c.reps,
            c.ns,
            c.mops,
            c.p50,
            c.p99,
            c.cs,
            c.xf,
            opt(c.entries_now.map(|n| n.to_string())),
            opt(c.entries_reclaimed.map(|n| n.to_string())),
            opt(c.rss_median.map(|m| format!("{m:.3}"))),
            opt(c.rss_max.map(|m| format!("{m:.3}"))),
        );
    }
    s
}
