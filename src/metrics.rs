//! Metrics that cost the hot path nothing.
//!
//! Successful acquisitions are not counted on the way: every slot's acquisition counter already
//! counts them, so the total is the sum over live slots plus what reclaimed and rebased slots had
//! counted (moved into their shard's `retired_acquisitions` under the shard lock). Everything
//! else (refusals, timeouts, waiting, expiry, renewal, revocation) happens on a slow path and is
//! counted there, per shard, so no counter is written by every acquire. Hold times are sampled:
//! one acquisition in [`HOLD_SAMPLE`], chosen by the slot's counter, is timed from acquire to
//! release. A snapshot is exact when nothing runs, and a consistent-enough sum while threads churn.

#![deny(unsafe_code)]

use std::fmt::{self, Write as _};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crossbeam_utils::CachePadded;

/// One acquisition in this many is timed for the hold-time histogram.
pub const HOLD_SAMPLE: u64 = 256;

/// Histogram buckets: bucket `i` counts durations below `2^i` ns (and at least `2^(i-1)`); the
/// last one is open-ended. 2^40 ns is about 18 minutes.
const BUCKETS: usize = 41;

/// A log2-bucketed latency histogram, updated with relaxed atomic adds.
pub(crate) struct Histogram {
    buckets: [AtomicU64; BUCKETS],
    sum_ns: AtomicU64,
}

impl Histogram {
    fn new() -> Self {
        Histogram { buckets: std::array::from_fn(|_| AtomicU64::new(0)), sum_ns: AtomicU64::new(0) }
    }

    /// Counts one duration.
    pub(crate) fn record(&self, ns: u64) {
        let bucket = (u64::BITS - ns.leading_zeros()) as usize;
        self.buckets[bucket.min(BUCKETS - 1)].fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    fn add_to(&self, out: &mut HistogramSnapshot) {
        for (i, b) in self.buckets.iter().enumerate() {
            let n = b.load(Ordering::Relaxed);
            out.counts[i] += n;
            out.count += n;
        }
        out.sum += Duration::from_nanos(self.sum_ns.load(Ordering::Relaxed));
    }
}

/// What one shard counted.
pub(crate) struct ShardStats {
    /// Acquisitions no live slot counts any more: `+counter` of a slot when it is reclaimed or
    /// rebased, `-counter` of the dead slot a new incarnation continues from (wrapping).
    pub(crate) retired_acquisitions: AtomicU64,
    /// Counter increments that were not acquisitions (capacity changes).
    pub(crate) reshapes: AtomicU64,
    pub(crate) would_block: AtomicU64,
    pub(crate) timeouts: AtomicU64,
    pub(crate) refused: AtomicU64,
    pub(crate) cancelled: AtomicU64,
    pub(crate) contended: AtomicU64,
    pub(crate) renewals: AtomicU64,
    pub(crate) renew_failures: AtomicU64,
    pub(crate) expiries: AtomicU64,
    pub(crate) revocations: AtomicU64,
    pub(crate) wait: Histogram,
    pub(crate) hold: Histogram,
}

impl ShardStats {
    fn new() -> Self {
        let z = || AtomicU64::new(0);
        ShardStats {
            retired_acquisitions: z(),
            reshapes: z(),
            would_block: z(),
            timeouts: z(),
            refused: z(),
            cancelled: z(),
            contended: z(),
            renewals: z(),
            renew_failures: z(),
            expiries: z(),
            revocations: z(),
            wait: Histogram::new(),
            hold: Histogram::new(),
        }
    }

    /// Adds one to a counter.
    #[inline]
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Every shard's stats, indexed like the shards (by the top bits of the key hash).
pub(crate) struct Stats {
    shards: Box<[CachePadded<ShardStats>]>,
    shift: u32,
    /// Writes refused by `Fenced` resources made with `LockManager::fenced`.
    pub(crate) fence_rejections: std::sync::Arc<AtomicU64>,
}

impl Stats {
    pub(crate) fn new(shards: usize, shift: u32) -> Self {
        Stats {
            shards: (0..shards).map(|_| CachePadded::new(ShardStats::new())).collect(),
            shift,
            fence_rejections: std::sync::Arc::new(AtomicU64::new(0)),
        }
    }

    /// The stats of the shard a key hash belongs to.
    #[inline]
    pub(crate) fn of(&self, hash: u64) -> &ShardStats {
        &self.shards[hash.checked_shr(self.shift).unwrap_or(0) as usize]
    }

    /// Sums every shard into `out` (gauges and acquisitions from live slots are the caller's).
    pub(crate) fn add_to(&self, out: &mut MetricsSnapshot) {
        let mut retired = 0_u64;
        for s in self.shards.iter() {
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
            s.wait.add_to(&mut out.wait_time);
            s.hold.add_to(&mut out.hold_time);
        }
        out.acquisitions = out.acquisitions.wrapping_add(retired);
        out.fence_rejections = self.fence_rejections.load(Ordering::Relaxed);
    }
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
    /// How long holdings were held (one in [`HOLD_SAMPLE`] timed).
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
        let mut counter = |name: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP leasehold_{name} {help}\n# TYPE leasehold_{name} counter\nleasehold_{name} {value}"
            );
        };
        counter("acquisitions_total", "Acquisitions that succeeded.", self.acquisitions);
        counter("acquire_attempts_total", "Acquire calls that finished.", self.attempts());
        counter("acquire_would_block_total", "try_acquire calls refused as held.", self.would_block);
        counter("acquire_timeouts_total", "acquire_timeout calls that timed out.", self.timeouts);
        counter("acquire_refused_total", "Requests refused as invalid or over capacity.", self.refused);
        counter("acquire_cancelled_total", "Async acquires dropped while waiting.", self.cancelled);
        counter("acquire_contended_total", "Acquisitions that had to wait.", self.contended);
        counter("renewals_total", "Successful lease renewals.", self.renewals);
        counter("renew_failures_total", "Renewals of leases already lost.", self.renew_failures);
        counter("expiries_total", "Holdings lost at their lease deadline.", self.expiries);
        counter("revocations_total", "Holdings revoked by an operator.", self.revocations);
        counter("fence_rejections_total", "Stale writes refused by fenced resources.", self.fence_rejections);
        counter("events_dropped_total", "Events a slow subscriber missed.", self.events_dropped);
        let mut gauge = |name: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP leasehold_{name} {help}\n# TYPE leasehold_{name} gauge\nleasehold_{name} {value}"
            );
        };
        gauge("live_slots", "Keys held or waited on.", self.live_slots);
        gauge("live_holders", "Holdings live now.", self.live_holders);
        gauge("waiters", "Requests queued now.", self.waiters);
        histogram(&mut out, "acquire_wait_seconds", "Wait of contended acquisitions.", &self.wait_time);
        histogram(&mut out, "hold_seconds", "Hold time, one acquisition in 256 sampled.", &self.hold_time);
        out
    }
}

/// Publishes a snapshot through the `metrics` crate facade.
#[cfg(feature = "metrics")]
pub(crate) fn publish(m: &MetricsSnapshot) {
    let counters = [
        ("leasehold_acquisitions_total", m.acquisitions),
        ("leasehold_acquire_attempts_total", m.attempts()),
        ("leasehold_acquire_would_block_total", m.would_block),
        ("leasehold_acquire_timeouts_total", m.timeouts),
        ("leasehold_acquire_refused_total", m.refused),
        ("leasehold_acquire_cancelled_total", m.cancelled),
        ("leasehold_acquire_contended_total", m.contended),
        ("leasehold_renewals_total", m.renewals),
        ("leasehold_renew_failures_total", m.renew_failures),
        ("leasehold_expiries_total", m.expiries),
        ("leasehold_revocations_total", m.revocations),
        ("leasehold_fence_rejections_total", m.fence_rejections),
        ("leasehold_events_dropped_total", m.events_dropped),
    ];
    for (name, value) in counters {
        ::metrics::counter!(name).absolute(value);
    }
    ::metrics::gauge!("leasehold_live_slots").set(m.live_slots as f64);
    ::metrics::gauge!("leasehold_live_holders").set(m.live_holders as f64);
    ::metrics::gauge!("leasehold_waiters").set(m.waiters as f64);
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
        h.add_to(&mut s);
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
