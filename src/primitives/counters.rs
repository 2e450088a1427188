//! The counters and histograms the engine bumps on its slow paths: per-shard, cache-padded,
//! relaxed atomic adds. What they mean to a reader (snapshots, Prometheus text, the `metrics`
//! facade) is `observe/metrics.rs`'s business.
//!
//! Observation counters: no synchronisation depends on their values and loom never models them,
//! so they are `std`'s atomics through the shim's `untracked` module (see `sync.rs`).

#![deny(unsafe_code)]

use crossbeam_utils::CachePadded;

use crate::primitives::sync::untracked::{AtomicU64, Ordering};

/// One acquisition in this many is timed for the hold-time histogram.
pub const HOLD_SAMPLE: u64 = 256;

/// Histogram buckets: bucket `i` counts durations below `2^i` ns (and at least `2^(i-1)`); the
/// last one is open-ended. 2^40 ns is about 18 minutes.
pub(crate) const BUCKETS: usize = 41;

/// A log2-bucketed latency histogram, updated with relaxed atomic adds.
pub(crate) struct Histogram {
    buckets: [AtomicU64; BUCKETS],
    sum_ns: AtomicU64,
}

impl Histogram {
    pub(crate) fn new() -> Self {
        Histogram { buckets: std::array::from_fn(|_| AtomicU64::new(0)), sum_ns: AtomicU64::new(0) }
    }

    /// Counts one duration.
    pub(crate) fn record(&self, ns: u64) {
        let bucket = (u64::BITS - ns.leading_zeros()) as usize;
        let bucket = &self.buckets[bucket.min(BUCKETS - 1)];
        crate::primitives::write_audit::note(bucket);
        crate::primitives::write_audit::note(&self.sum_ns);
        bucket.fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// The count of each bucket, from the shortest.
    pub(crate) fn bucket_counts(&self) -> impl Iterator<Item = u64> + '_ {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed))
    }

    /// The sum of the durations counted, in nanoseconds.
    pub(crate) fn sum_ns(&self) -> u64 {
        self.sum_ns.load(Ordering::Relaxed)
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
        crate::primitives::write_audit::note(counter);
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Where in the key hash the shard number starts (the index within a shard uses the low bits):
/// bits 40 and up, as many as the shard count needs (at most 16: the builder allows 65,536
/// shards). A fixed shift, so finding a shard is a shift and a mask (`Table::shard`), where the
/// top bits took a shift by a loaded count. (Bit 48 was tried too: with foldhash and sequential
/// `u64` keys it put keys whose low bits collide in one shard more often, 0.3 probes per lookup
/// more in `opcount`; bench/perf5-hotpath.md, Phase 6.)
pub(crate) const SHARD_HASH_SHIFT: u32 = 40;

/// The shard a key hash belongs to, of `shards` (a power of two, at most `2^16`): the table's
/// shards and their stats are indexed the same way.
#[inline(always)]
pub(crate) const fn shard_of(hash: u64, shards: usize) -> usize {
    (hash >> SHARD_HASH_SHIFT) as usize & (shards - 1)
}

/// Every shard's stats, indexed like the shards (`shard_of`).
pub(crate) struct Stats {
    shards: Box<[CachePadded<ShardStats>]>,
    /// Writes refused by `Fenced` resources made with `LockManager::fenced`.
    pub(crate) fence_rejections: std::sync::Arc<AtomicU64>,
}

impl Stats {
    pub(crate) fn new(shards: usize) -> Self {
        Stats {
            shards: (0..shards).map(|_| CachePadded::new(ShardStats::new())).collect(),
            fence_rejections: std::sync::Arc::new(AtomicU64::new(0)),
        }
    }

    /// The stats of the shard a key hash belongs to.
    #[inline]
    pub(crate) fn of(&self, hash: u64) -> &ShardStats {
        &self.shards[shard_of(hash, self.shards.len())]
    }

    /// Every shard's stats.
    pub(crate) fn shards(&self) -> impl Iterator<Item = &ShardStats> + '_ {
        self.shards.iter().map(|s| &**s)
    }
}
