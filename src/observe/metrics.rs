//! Metrics that cost the hot path nothing.
//!
//! Successful acquisitions are not counted on the way: every slot's acquisition counter already
//! counts them, so the total is the sum over live slots plus what reclaimed and rebased slots had
//! counted (moved into their shard's `ShardInner::retired_acquisitions` under the shard lock, or its
//! `retired_acquisitions` by a capacity change or rebase). Everything
//! else (refusals, timeouts, waiting, expiry, renewal, revocation) happens on a slow path and is
//! counted there, per shard, so no counter is written by every acquire. Hold times are sampled:
//! one acquisition in [`HOLD_SAMPLE`](crate::HOLD_SAMPLE), chosen by the slot's counter, is timed from acquire to
//! release. A snapshot is exact when nothing runs, and a consistent-enough sum while threads churn.

#![deny(unsafe_code)]

use crate::engine::table::Table;
use crate::engine::word;
use crate::primitives::counters::{Histogram, Stats, BUCKETS};
use crate::primitives::sync::untracked::{AtomicU64, Ordering};
use crate::primitives::sync::Ordering as SyncOrdering;
use std::fmt::{self, Write as _};
use std::time::Duration;

/// A snapshot of `table`'s metrics (see `LockManager::metrics`): the shards' counters plus what the
/// live slots count, one shard lock at a time.
pub(crate) fn collect<K, S>(table: &Table<K, S>, events_dropped: u64) -> MetricsSnapshot {
    let mut m = MetricsSnapshot::default();
    for shard in table.shards() {
        let g = shard.lock();
        m.acquisitions = m.acquisitions.wrapping_add(g.retired_acquisitions);
        for slot in shard.slots(&g) {
            let w = slot.word.load(SyncOrdering::Acquire);
            m.acquisitions = m.acquisitions.wrapping_add(word::counter(w));
            let records = word::records(w).count_ones() as u64;
            let queued = w & word::WAITERS != 0;
            if word::units(w) == 0 && !queued {
                continue;
            }
            m.live_slots += 1;
            m.live_holders += records;
            if records == 0 && word::units(w) == word::MAX_UNITS {
                // A bare holding (word.rs): every unit of a read/write key and no record.
                m.live_holders += 1;
            }
            if records as usize == word::INLINE_RECORDS || queued {
                let si = slot.lock();
                m.live_holders += si.overflow_in_use().count() as u64;
                m.waiters += si.queue.len() as u64;
            }
        }
    }
    add_stats(&mut m, &table.core.stats);
    m.events_dropped = events_dropped;
    m
}

/// Sums every shard into `out` (gauges and acquisitions from live slots are the caller's).
pub(crate) fn add_stats(out: &mut MetricsSnapshot, stats: &Stats) {
    let mut retired = 0_u64;
    for s in stats.shards() {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        retired = retired.wrapping_add(get(&s.retired_acquisitions)).wrapping_sub(get(&s.reshapes));
        out.would_block += get(&s.would_block);
        out.timeouts += get(&s.timeouts);
        out.refused += get(&s.refused);
        out.cancelled += get(&s.cancelled);
        out.contended += get(&s.contended);
        out.renewals += get(&s.renewals);
        out.renew_failures += get(&s.renew_failures);
        out.expiries += get(&s.expiries);
        out.revocations += get(&s.revocations);
        out.wait_time.add(&s.wait);
        out.hold_time.add(&s.hold);
    }
    out.acquisitions = out.acquisitions.wrapping_add(retired);
    out.fence_rejections = stats.fence_rejections.load(Ordering::Relaxed);
}

/// A latency distribution: counts per power-of-two bucket.
///
/// # Examples
///
/// ```
/// let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
/// let m = locks.metrics();
/// assert_eq!(m.wait_time.count(), 0);
/// assert_eq!(m.wait_time.quantile(0.99), None);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistogramSnapshot {
    counts: [u64; BUCKETS],
    count: u64,
    sum: Duration,
}

impl Default for HistogramSnapshot {
    fn default() -> Self {
        HistogramSnapshot { counts: [0; BUCKETS], count: 0, sum: Duration::ZERO }
    }
}

impl HistogramSnapshot {
    /// Adds a live histogram's counts.
    pub(crate) fn add(&mut self, h: &Histogram) {
        for (i, n) in h.bucket_counts().enumerate() {
            self.counts[i] += n;
            self.count += n;
        }
        self.sum += Duration::from_nanos(h.sum_ns());
    }

    /// Number of durations recorded.
    ///
    /// # Examples
    ///
    /// ```
    /// let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
    /// assert_eq!(locks.metrics().hold_time.count(), 0);
    /// ```
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Their sum.
    ///
    /// # Examples
    ///
    /// ```
    /// let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
    /// assert_eq!(locks.metrics().wait_time.sum(), std::time::Duration::ZERO);
    /// ```
    pub fn sum(&self) -> Duration {
        self.sum
    }

    /// `(upper bound, count)` per bucket: durations below the bound and at least the previous one.
    /// The last bucket's bound is `Duration::MAX`.
    ///
    /// # Examples
    ///
    /// ```
    /// let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
    /// assert!(locks.metrics().wait_time.buckets().all(|(_, n)| n == 0));
    /// ```
    pub fn buckets(&self) -> impl Iterator<Item = (Duration, u64)> + '_ {
        self.counts.iter().enumerate().map(|(i, &n)| (bucket_bound(i), n))
    }

    /// The upper bound of the bucket holding the `q`-quantile (`0.0..=1.0`); `None` when empty.
    ///
    /// # Examples
    ///
    /// ```
    /// let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
    /// for _ in 0..leasehold::HOLD_SAMPLE {
    ///     drop(locks.exclusive(&1).try_acquire()?);
    /// }
    /// assert!(locks.metrics().hold_time.quantile(0.5).is_some());
    /// # Ok::<(), leasehold::LockError>(())
    /// ```
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        if self.count == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, &n) in self.counts.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(bucket_bound(i));
            }
        }
        Some(Duration::MAX)
    }
}

fn bucket_bound(i: usize) -> Duration {
    if i + 1 >= BUCKETS {
        Duration::MAX
    } else {
        Duration::from_nanos(1 << i)
    }
}

/// A snapshot of a manager's metrics (see [`LockManager::metrics`](crate::LockManager::metrics)).
///
/// Counters count since the manager was built; `live_*` and `waiters` are gauges.
///
/// # Examples
///
/// ```
/// use leasehold::LockManager;
/// let locks: LockManager<u64> = LockManager::new();
/// let g = locks.exclusive(&1).try_acquire()?;
/// let _ = locks.exclusive(&1).try_acquire();
/// let m = locks.metrics();
/// assert_eq!((m.acquisitions, m.would_block, m.live_holders), (1, 1, 1));
/// assert!(m.to_prometheus().contains("leasehold_acquire_would_block_total 1"));
/// # Ok::<(), leasehold::LockError>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MetricsSnapshot {
    /// Acquisitions that succeeded, in any mode.
    pub acquisitions: u64,
    /// `try_acquire` calls refused with `WouldBlock`.
    pub would_block: u64,
    /// `acquire_timeout` calls that timed out.
    pub timeouts: u64,
    /// Requests refused for a reason of their own: bad permits or ttl, a permit mismatch, capacity.
    pub refused: u64,
    /// `acquire_async` futures dropped while waiting.
    pub cancelled: u64,
    /// Acquisitions that had to wait in the queue (the rest waited zero).
    pub contended: u64,
    /// Successful renewals.
    pub renewals: u64,
    /// Renewals refused because the lease was already lost.
    pub renew_failures: u64,
    /// Holdings lost at their lease deadline (leaked, hung or not renewed).
    pub expiries: u64,
    /// Holdings taken back by `revoke` or `revoke_owner`.
    pub revocations: u64,
    /// Writes refused as stale by `Fenced` resources made with `LockManager::fenced`.
    pub fence_rejections: u64,
    /// Events a slow subscriber missed.
    pub events_dropped: u64,
    /// Slots held or waited on now.
    pub live_slots: u64,
    /// Holdings live now.
    pub live_holders: u64,
    /// Requests queued now.
    pub waiters: u64,
    /// How long contended acquisitions waited.
    pub wait_time: HistogramSnapshot,
    /// How long holdings were held (one in [`HOLD_SAMPLE`](crate::HOLD_SAMPLE) timed).
    pub hold_time: HistogramSnapshot,
}

impl MetricsSnapshot {
    /// Every acquire call that finished: succeeded, refused, timed out or cancelled.
    ///
    /// # Examples
    ///
    /// ```
    /// let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
    /// let _g = locks.exclusive(&1).try_acquire()?;
    /// let _ = locks.exclusive(&1).try_acquire();
    /// assert_eq!(locks.metrics().attempts(), 2);
    /// # Ok::<(), leasehold::LockError>(())
    /// ```
    pub fn attempts(&self) -> u64 {
        self.acquisitions + self.would_block + self.timeouts + self.refused + self.cancelled
    }

    /// The Prometheus text exposition format (version 0.0.4), metric names prefixed `leasehold_`.
    ///
    /// # Examples
    ///
    /// ```
    /// let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
    /// let text = locks.metrics().to_prometheus();
    /// assert!(text.contains("# TYPE leasehold_acquisitions_total counter"));
    /// ```
    pub fn to_prometheus(&self) -> String {
        let mut out = String::new();
        for (kind, list) in [("counter", COUNTERS), ("gauge", GAUGES)] {
            for &(name, help, value) in list {
                let _ = writeln!(
                    out,
                    "# HELP leasehold_{name} {help}\n# TYPE leasehold_{name} {kind}\nleasehold_{name} {}",
                    value(self)
                );
            }
        }
        histogram(&mut out, "acquire_wait_seconds", "Wait of contended acquisitions.", &self.wait_time);
        histogram(&mut out, "hold_seconds", "Hold time, one acquisition in 256 sampled.", &self.hold_time);
        out
    }
}

/// A metric: its name (after the `leasehold_` prefix), its help text, and its value in a snapshot.
type Metric = (&'static str, &'static str, fn(&MetricsSnapshot) -> u64);

/// The one list of counter names, for the Prometheus text and the `metrics` facade alike.
const COUNTERS: &[Metric] = &[
    ("acquisitions_total", "Acquisitions that succeeded.", |m| m.acquisitions),
    ("acquire_attempts_total", "Acquire calls that finished.", |m| m.attempts()),
    ("acquire_would_block_total", "try_acquire calls refused as held.", |m| m.would_block),
    ("acquire_timeouts_total", "acquire_timeout calls that timed out.", |m| m.timeouts),
    ("acquire_refused_total", "Requests refused as invalid or over capacity.", |m| m.refused),
    ("acquire_cancelled_total", "Async acquires dropped while waiting.", |m| m.cancelled),
    ("acquire_contended_total", "Acquisitions that had to wait.", |m| m.contended),
    ("renewals_total", "Successful lease renewals.", |m| m.renewals),
    ("renew_failures_total", "Renewals of leases already lost.", |m| m.renew_failures),
    ("expiries_total", "Holdings lost at their lease deadline.", |m| m.expiries),
    ("revocations_total", "Holdings revoked by an operator.", |m| m.revocations),
    ("fence_rejections_total", "Stale writes refused by fenced resources.", |m| m.fence_rejections),
    ("events_dropped_total", "Events a slow subscriber missed.", |m| m.events_dropped),
];

/// The one list of gauge names.
const GAUGES: &[Metric] = &[
    ("live_slots", "Keys held or waited on.", |m| m.live_slots),
    ("live_holders", "Holdings live now.", |m| m.live_holders),
    ("waiters", "Requests queued now.", |m| m.waiters),
];

/// Publishes a snapshot through the `metrics` crate facade.
#[cfg(feature = "metrics")]
pub(crate) fn publish(m: &MetricsSnapshot) {
    for &(name, _, value) in COUNTERS {
        ::metrics::counter!(format!("leasehold_{name}")).absolute(value(m));
    }
    for &(name, _, value) in GAUGES {
        ::metrics::gauge!(format!("leasehold_{name}")).set(value(m) as f64);
    }
    for (name, h) in [("acquire_wait", &m.wait_time), ("hold", &m.hold_time)] {
        for (q, label) in [(0.5, "0.5"), (0.99, "0.99")] {
            if let Some(d) = h.quantile(q) {
                ::metrics::gauge!(format!("leasehold_{name}_seconds_quantile"), "quantile" => label)
                    .set(d.as_secs_f64());
            }
        }
    }
}

fn histogram(out: &mut String, name: &str, help: &str, h: &HistogramSnapshot) {
    let _ = writeln!(out, "# HELP leasehold_{name} {help}\n# TYPE leasehold_{name} histogram");
    let mut cumulative = 0;
    for (bound, n) in h.buckets() {
        cumulative += n;
        if bound == Duration::MAX {
            break;
        }
        if n == 0 && cumulative == 0 {
            continue;
        }
        let _ = writeln!(out, "leasehold_{name}_bucket{{le=\"{}\"}} {cumulative}", Seconds(bound));
    }
    let _ = writeln!(out, "leasehold_{name}_bucket{{le=\"+Inf\"}} {}", h.count);
    let _ = writeln!(out, "leasehold_{name}_sum {}", Seconds(h.sum));
    let _ = writeln!(out, "leasehold_{name}_count {}", h.count);
}

/// A duration as Prometheus wants it: seconds, as a float.
struct Seconds(Duration);

impl fmt::Display for Seconds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_and_quantiles() {
        let h = Histogram::new();
        for ns in [0, 1, 2, 3, 1000, 1023, 1024, u64::MAX] {
            h.record(ns);
        }
        let mut s = HistogramSnapshot::default();
        s.add(&h);
        assert_eq!(s.count(), 8);
        let b: Vec<_> = s.buckets().collect();
        assert_eq!(b[0], (Duration::from_nanos(1), 1)); // 0
        assert_eq!(b[1], (Duration::from_nanos(2), 1)); // 1
        assert_eq!(b[2], (Duration::from_nanos(4), 2)); // 2, 3
        assert_eq!(b[10], (Duration::from_nanos(1024), 2)); // 1000, 1023
        assert_eq!(b[11], (Duration::from_nanos(2048), 1)); // 1024
        assert_eq!(b[BUCKETS - 1], (Duration::MAX, 1));
        assert_eq!(s.quantile(0.5), Some(Duration::from_nanos(4)));
        assert_eq!(s.quantile(1.0), Some(Duration::MAX));
    }

    #[test]
    fn prometheus_text_is_well_formed() {
        let mut m = MetricsSnapshot { acquisitions: 3, would_block: 1, ..Default::default() };
        m.wait_time.counts[10] = 2;
        m.wait_time.count = 2;
        m.wait_time.sum = Duration::from_nanos(1800);
        let text = m.to_prometheus();
        assert!(text.contains("leasehold_acquire_attempts_total 4\n"));
        assert!(text.contains("leasehold_acquire_wait_seconds_bucket{le=\"0.000001024\"} 2\n"));
        assert!(text.contains("leasehold_acquire_wait_seconds_bucket{le=\"+Inf\"} 2\n"));
        assert!(text.contains("leasehold_acquire_wait_seconds_count 2\n"));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (name, value) = line.rsplit_once(' ').expect("name value");
            assert!(name.starts_with("leasehold_"), "{line}");
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
    }
}
