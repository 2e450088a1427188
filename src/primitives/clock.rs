//! Where lease time comes from: a monotonic clock by default, a manual clock for tests.
//!
//! Times are durations since the clock's origin. Waiting timeouts (`acquire_timeout`) are real
//! time and do not use the clock; lease deadlines, renewals and expiry always do.

use std::fmt;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use crate::primitives::sync::{AtomicU64, Ordering};
#[cfg(target_os = "linux")]
use crate::primitives::vdso::{self, ClockGettime};

/// A source of monotonic time for leases.
///
/// Implement it to drive leases from your engine's own clock; use [`ManualClock`] in tests.
///
/// # Examples
///
/// ```
/// use leasehold::{Clock, MonotonicClock};
/// let clock = MonotonicClock::new();
/// let a = clock.now();
/// assert!(clock.now() >= a);
/// ```
pub trait Clock: Send + Sync + 'static {
    /// Time since this clock's origin. Never decreases.
    fn now(&self) -> Duration;

    /// A cheaper reading and the most it may lag [`now`](Clock::now). Lease deadlines are stamped
    /// as `reading + lag + ttl`, so a lease never ends before its ttl has passed.
    fn now_coarse(&self) -> (Duration, Duration) {
        (self.now(), Duration::ZERO)
    }

    /// Lets the manager recognise a [`ManualClock`] (to run expiry when it is advanced).
    #[doc(hidden)]
    fn as_manual(&self) -> Option<&ManualClock> {
        None
    }
}

/// The system's monotonic clock (on Linux, `CLOCK_MONOTONIC`, with the kernel's coarse clock for
/// stamping deadlines on the acquire path: about 2 ns instead of 16 on x86-64, both called in the
/// vDSO directly where glibc lets us name it).
///
/// # Examples
///
/// ```
/// use leasehold::{Clock, MonotonicClock};
/// let clock = MonotonicClock::new();
/// let (coarse, lag) = clock.now_coarse();
/// assert!(coarse <= clock.now() + lag);
/// ```
#[derive(Clone, Debug)]
pub struct MonotonicClock {
    origin_ns: u64,
    coarse_lag_ns: u64,
    /// `clock_gettime`, the vDSO's where it can be named (`vdso.rs`).
    #[cfg(target_os = "linux")]
    read: ClockGettime,
    #[cfg(not(target_os = "linux"))]
    origin: std::time::Instant,
}

impl Default for MonotonicClock {
    fn default() -> Self {
        Self::new()
    }
}

/// A reading of clock `id` in nanoseconds, through `read` (`vdso::clock_gettime`). Inlined: the
/// leased fast path reads the coarse clock twice, and a call of our own around the kernel's
/// would add a frame to each.
#[cfg(target_os = "linux")]
#[inline(always)]
fn clock_ns(read: ClockGettime, id: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `read` is `clock_gettime` (the vDSO's or the C library's, `vdso.rs`), `ts` is a
    // valid, writable timespec for the duration of the call, and both clock ids we pass
    // (CLOCK_MONOTONIC and CLOCK_MONOTONIC_COARSE) exist on every Linux since 2.6.32.
    let rc = unsafe { read(id, &mut ts) };
    debug_assert_eq!(rc, 0);
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

impl MonotonicClock {
    /// A clock whose origin is now.
    ///
    /// # Examples
    ///
    /// ```
    /// use leasehold::{Clock, MonotonicClock};
    /// assert!(MonotonicClock::new().now() < std::time::Duration::from_secs(1));
    /// ```
    pub fn new() -> Self {
        #[cfg(target_os = "linux")]
        {
            let read = vdso::clock_gettime();
            let mut res = libc::timespec { tv_sec: 0, tv_nsec: 0 };
            // SAFETY: `res` is a valid, writable timespec for the duration of the call.
            let rc = unsafe { libc::clock_getres(libc::CLOCK_MONOTONIC_COARSE, &mut res) };
            let coarse_lag_ns = if rc == 0 { res.tv_sec as u64 * 1_000_000_000 + res.tv_nsec as u64 } else { 0 };
            MonotonicClock { origin_ns: clock_ns(read, libc::CLOCK_MONOTONIC), coarse_lag_ns, read }
        }
        #[cfg(not(target_os = "linux"))]
        {
            MonotonicClock { origin_ns: 0, coarse_lag_ns: 0, origin: std::time::Instant::now() }
        }
    }

    #[inline]
    pub(crate) fn now_ns(&self) -> u64 {
        #[cfg(target_os = "linux")]
        {
            clock_ns(self.read, libc::CLOCK_MONOTONIC).saturating_sub(self.origin_ns)
        }
        #[cfg(not(target_os = "linux"))]
        {
            self.origin.elapsed().as_nanos() as u64
        }
    }

    /// A lower bound on now plus the most it can lag: the earliest instant a deadline may count from.
    #[inline]
    pub(crate) fn stamp_ns(&self) -> u64 {
        self.coarse_ns() + self.coarse_lag_ns
    }

    /// The coarse clock, never later than now (the kernel's time at its last timekeeping update),
    /// about a fifth of the exact read's cost.
    #[inline]
    fn coarse_ns(&self) -> u64 {
        #[cfg(target_os = "linux")]
        {
            clock_ns(self.read, libc::CLOCK_MONOTONIC_COARSE).saturating_sub(self.origin_ns)
        }
        #[cfg(not(target_os = "linux"))]
        {
            self.now_ns()
        }
    }
}

impl Clock for MonotonicClock {
    fn now(&self) -> Duration {
        Duration::from_nanos(self.now_ns())
    }

    fn now_coarse(&self) -> (Duration, Duration) {
        let lag = Duration::from_nanos(self.coarse_lag_ns);
        (Duration::from_nanos(self.stamp_ns() - self.coarse_lag_ns), lag)
    }
}

/// Something that wants to hear when a [`ManualClock`] moves (a manager running expiry).
pub(crate) trait TimeListener: Send + Sync {
    fn time_advanced(&self);
}

/// A clock that moves only when told to: leases in tests expire by `advance`, never by sleeping.
///
/// A manager built with a manual clock (and the default background expiry) runs its expiry inside
/// [`advance`](ManualClock::advance): when `advance` returns, every lease whose deadline has passed
/// is expired and its waiters are woken. Clones share one time.
///
/// # Examples
///
/// ```
/// use leasehold::{LockError, LockManager, ManualClock};
/// use std::time::Duration;
///
/// let clock = ManualClock::new();
/// let locks = LockManager::<String>::builder().clock(clock.clone()).build()?;
/// let g = locks.exclusive("job").lease(Duration::from_secs(10)).try_acquire()?;
/// clock.advance(Duration::from_secs(10));
/// assert!(!g.is_held());
/// assert_eq!(g.release(), Err(LockError::Expired));
/// assert!(locks.exclusive("job").try_acquire().is_ok());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct ManualClock {
    shared: Arc<ManualShared>,
}

struct ManualShared {
    now_ns: AtomicU64,
    listeners: Mutex<Vec<Weak<dyn TimeListener>>>,
}

impl fmt::Debug for ManualClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManualClock").field("now", &Duration::from_nanos(self.now_ns())).finish()
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl ManualClock {
    /// A clock at time zero.
    ///
    /// # Examples
    ///
    /// ```
    /// use leasehold::{Clock, ManualClock};
    /// assert_eq!(ManualClock::new().now(), std::time::Duration::ZERO);
    /// ```
    pub fn new() -> Self {
        ManualClock { shared: Arc::new(ManualShared { now_ns: AtomicU64::new(0), listeners: Mutex::new(Vec::new()) }) }
    }

    /// Moves time forward by `by`, then runs the expiry of every manager that uses this clock.
    ///
    /// # Examples
    ///
    /// ```
    /// use leasehold::{Clock, ManualClock};
    /// use std::time::Duration;
    /// let clock = ManualClock::new();
    /// clock.advance(Duration::from_millis(5));
    /// assert_eq!(clock.now(), Duration::from_millis(5));
    /// ```
    pub fn advance(&self, by: Duration) {
        let by = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        // Release: a thread that reads the new time also sees what the advancing thread did before.
        let _ = self.shared.now_ns.fetch_update(Ordering::Release, Ordering::Relaxed, |t| Some(t.saturating_add(by)));
        let listeners: Vec<_> = {
            let mut list = self.shared.listeners.lock().unwrap_or_else(|e| e.into_inner());
            list.retain(|l| l.strong_count() > 0);
            list.iter().filter_map(Weak::upgrade).collect()
        };
        for listener in listeners {
            listener.time_advanced();
        }
    }

    #[inline]
    pub(crate) fn now_ns(&self) -> u64 {
        // Acquire pairs with the Release in `advance`.
        self.shared.now_ns.load(Ordering::Acquire)
    }

    pub(crate) fn subscribe(&self, listener: Weak<dyn TimeListener>) {
        self.shared.listeners.lock().unwrap_or_else(|e| e.into_inner()).push(listener);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Duration {
        Duration::from_nanos(self.now_ns())
    }

    fn as_manual(&self) -> Option<&ManualClock> {
        Some(self)
    }
}

/// The manager's clock, with the two built-in clocks called without dynamic dispatch.
pub(crate) enum ClockSource {
    Monotonic(MonotonicClock),
    Manual(ManualClock),
    Custom(Box<dyn Clock>),
}

impl ClockSource {
    pub(crate) fn from_clock<C: Clock>(clock: C) -> Self {
        if let Some(manual) = clock.as_manual() {
            return ClockSource::Manual(manual.clone());
        }
        ClockSource::Custom(Box::new(clock))
    }

    /// Now, exactly (as exact as the clock is).
    #[inline]
    pub(crate) fn now_ns(&self) -> u64 {
        match self {
            ClockSource::Monotonic(c) => c.now_ns(),
            ClockSource::Manual(c) => c.now_ns(),
            ClockSource::Custom(c) => duration_ns(c.now()),
        }
    }

    /// The instant a new lease counts from: never earlier than now, cheap to read.
    #[inline]
    pub(crate) fn stamp_ns(&self) -> u64 {
        match self {
            ClockSource::Monotonic(c) => c.stamp_ns(),
            ClockSource::Manual(c) => c.now_ns(),
            ClockSource::Custom(c) => {
                let (reading, lag) = c.now_coarse();
                duration_ns(reading).saturating_add(duration_ns(lag))
            }
        }
    }

    /// The exact now if `deadline_ns` has passed by it, else `None`. When a cheap reading shows
    /// the deadline more than [`LAG_BOUND_NS`] ahead, the exact clock is not read (a leased
    /// release asks this; the answer agrees with `now_ns`, which `is_held` reads, as long as the
    /// cheap reading lags now by less than the bound).
    #[inline]
    pub(crate) fn passed(&self, deadline_ns: u64) -> Option<u64> {
        // For a manual clock the reading is exact already; the same test keeps one code path (and
        // lets a manual clock test it).
        let (reading, lag) = self.cheap_reading();
        if surely_before(reading, lag, deadline_ns) {
            return None;
        }
        self.passed_exactly(deadline_ns)
    }

    /// `passed` past its cheap reading: the exact now if `deadline_ns` has passed by it.
    #[inline]
    pub(crate) fn passed_exactly(&self, deadline_ns: u64) -> Option<u64> {
        let now = self.now_ns();
        (deadline_ns <= now).then_some(now)
    }

    /// A cheap reading and the most it may lag now, as `passed` takes them before its exact read:
    /// a deadline `d` has surely not passed at the reading if `reading + lag < d`
    /// ([`surely_before`]). For a caller that reads the clock before it loads what it tests, so
    /// that nothing it loaded lives across the clock's call.
    #[inline(always)]
    pub(crate) fn cheap_reading(&self) -> (u64, u64) {
        match self {
            ClockSource::Monotonic(c) => (c.coarse_ns(), LAG_BOUND_NS),
            ClockSource::Manual(c) => (c.now_ns(), LAG_BOUND_NS),
            ClockSource::Custom(c) => {
                let (reading, lag) = c.now_coarse();
                (duration_ns(reading), duration_ns(lag).max(LAG_BOUND_NS))
            }
        }
    }

    /// Whether time moves by itself (so a waiter may sleep until a holder's deadline).
    pub(crate) fn is_real_time(&self) -> bool {
        !matches!(self, ClockSource::Manual(_))
    }
}

/// The most a cheap clock reading is taken to lag the exact clock when `ClockSource::passed`
/// skips the exact read: one second. `CLOCK_MONOTONIC_COARSE` is the kernel's time at its last
/// timekeeping update, done from one CPU's tick; its stated resolution is one tick (4 ms at
/// HZ=250), but a late tick on a busy virtual machine makes it lag by more (7.6 ms measured here
/// between two exact reads 2 us apart; a stress run once saw release and `is_held` disagree at the
/// resolution): the CPU that keeps time was not running when its tick was due. Kernels since 2022
/// let a CPU that sees that update stall for a few of its own ticks do it itself. One second is
/// over a hundred times the lag measured, and 100 ticks at the slowest tick rate (HZ=100); it
/// costs only the leases released within a second of their deadline an exact read.
pub(crate) const LAG_BOUND_NS: u64 = 1_000_000_000;

/// Whether a deadline is surely ahead of now, given a reading at most `lag` behind now.
#[inline]
pub(crate) const fn surely_before(reading_ns: u64, lag_ns: u64, deadline_ns: u64) -> bool {
    reading_ns.saturating_add(lag_ns) < deadline_ns
}

/// `d` in nanoseconds, saturating at `u64::MAX` (as `d.as_nanos()` would, without its `u128`
/// arithmetic: this runs on every leased acquire).
pub(crate) const fn duration_ns(d: Duration) -> u64 {
    let Some(secs_ns) = d.as_secs().checked_mul(1_000_000_000) else {
        return u64::MAX;
    };
    match secs_ns.checked_add(d.subsec_nanos() as u64) {
        Some(ns) => ns,
        None => u64::MAX,
    }
}

#[cfg(test)]
mod tests {
    use super::{duration_ns, surely_before, ClockSource, ManualClock, LAG_BOUND_NS};
    use std::time::Duration;

    #[test]
    fn the_exact_read_is_skipped_only_beyond_the_lag_bound() {
        let d = 5_000_000_000;
        assert!(surely_before(d - LAG_BOUND_NS - 1, LAG_BOUND_NS, d));
        assert!(!surely_before(d - LAG_BOUND_NS, LAG_BOUND_NS, d));
        assert!(!surely_before(d, LAG_BOUND_NS, d));
        assert!(!surely_before(u64::MAX - 1, LAG_BOUND_NS, u64::MAX), "saturates, never wraps");
    }

    #[test]
    fn passed_answers_as_the_exact_clock_at_every_distance() {
        let clock = ManualClock::new();
        let source = ClockSource::from_clock(clock.clone());
        let d = 3 * LAG_BOUND_NS;
        let mut at = 0;
        for t in [d - LAG_BOUND_NS - 1, d - LAG_BOUND_NS, d - 1, d, d + 1] {
            clock.advance(Duration::from_nanos(t - at));
            at = t;
            assert_eq!(source.passed(d), (d <= t).then_some(t), "at {t}");
        }
    }

    #[test]
    fn duration_ns_saturates_as_as_nanos_does() {
        let edges = [
            Duration::ZERO,
            Duration::from_nanos(1),
            Duration::from_secs(30),
            Duration::new(18_446_744_073, 709_551_615),
            Duration::new(18_446_744_073, 709_551_616),
            Duration::new(18_446_744_074, 0),
            Duration::from_secs(u64::MAX / 1_000_000_000 + 1),
            Duration::MAX,
        ];
        for d in edges {
            let wide = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
            assert_eq!(duration_ns(d), wide, "{d:?}");
        }
    }
}
