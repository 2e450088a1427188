//! The promises of the contract (DESIGN.md) that issue 10 found broken, one test each. Every test
//! here failed on the code before its fix (the closing note says how).

use std::future::Future;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::task::{Context, Poll, Wake, Waker};
use std::thread;
use std::time::Duration;

use leasehold::{EventKind, LockError, LockManager, ManualClock};

const MS: Duration = Duration::from_millis(1);

/// A manager on a manual clock that nobody expires but the guards and contenders themselves.
fn unreaped(clock: &ManualClock) -> LockManager<String> {
    LockManager::builder().clock(clock.clone()).reaper(false).build().unwrap()
}

/// A waker that counts its wake-ups.
#[derive(Default)]
struct CountingWaker(AtomicUsize);

impl Wake for CountingWaker {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

impl CountingWaker {
    fn woken(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

// 1. A guard that said "not held" never says "released fine" (or "renewed fine") afterwards.

#[test]
fn release_past_the_deadline_is_an_expiry() {
    let clock = ManualClock::new();
    let locks = unreaped(&clock);
    let events = locks.subscribe(16);
    let g = locks.exclusive("k").lease(10 * MS).try_acquire().unwrap();
    clock.advance(10 * MS);
    assert!(!g.is_held());
    assert_eq!(g.release(), Err(LockError::Expired), "released fine after is_held() said false");
    let kinds: Vec<EventKind> = events.drain().map(|e| e.kind).collect();
    assert_eq!(kinds, [EventKind::Acquired, EventKind::Expired]);
    assert_eq!(locks.metrics().expiries, 1);
    assert!(locks.exclusive("k").try_acquire().is_ok());
}

/// A release skips the exact clock read only when the cheap one shows the deadline more than a
/// second away (`ClockSource::passed`): at every distance around that bound and around the
/// deadline, release still agrees with `is_held`.
#[test]
fn release_agrees_with_is_held_near_the_deadline() {
    let clock = ManualClock::new();
    let locks = unreaped(&clock);
    let ttl = Duration::from_secs(30);
    let bound = Duration::from_secs(1);
    let ns = Duration::from_nanos(1);
    let at = [ttl - bound - ns, ttl - bound, ttl - ns, ttl, ttl + ns];
    let guards: Vec<_> =
        (0..at.len()).map(|i| locks.exclusive(&format!("k{i}")).lease(ttl).try_acquire().unwrap()).collect();
    let mut now = Duration::ZERO;
    for (g, t) in guards.into_iter().zip(at) {
        clock.advance(t - now);
        now = t;
        let held = g.is_held();
        assert_eq!(held, t < ttl, "is_held at {t:?}");
        let released = g.release();
        assert_eq!(released, if held { Ok(()) } else { Err(LockError::Expired) }, "release at {t:?}");
    }
    assert_eq!(locks.metrics().expiries, 2);
}

#[test]
fn drop_past_the_deadline_is_an_expiry_too() {
    let clock = ManualClock::new();
    let locks = unreaped(&clock);
    let g = locks.shared("k").lease(10 * MS).owner("w").try_acquire().unwrap();
    clock.advance(11 * MS);
    assert!(!g.is_held());
    drop(g);
    assert_eq!(locks.metrics().expiries, 1);
    assert!(locks.exclusive("k").try_acquire().is_ok());
}

#[test]
fn renew_past_the_deadline_fails_though_nobody_expired_it() {
    let clock = ManualClock::new();
    let locks = unreaped(&clock);
    let g = locks.exclusive("k").lease(10 * MS).try_acquire().unwrap();
    clock.advance(10 * MS);
    assert!(!g.is_held());
    assert_eq!(g.renew(Duration::from_secs(1)), Err(LockError::Expired));
    assert_eq!(g.release(), Err(LockError::Expired));
}

// 2. An async waiter takes over from an expired holder without a reaper.

#[test]
fn an_async_waiter_takes_over_an_expired_holder_without_a_reaper() {
    // Real time: the point is the future's own timer firing at the holder's deadline.
    let locks: LockManager<String> = LockManager::builder().reaper(false).build().unwrap();
    let holder = locks.exclusive("k").lease(50 * MS).try_acquire().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    let got =
        rt.block_on(async { tokio::time::timeout(Duration::from_secs(3), locks.exclusive("k").acquire_async()).await });
    let g = got.expect("the future waited past the holder's deadline (3 s)").unwrap();
    assert!(g.token() > holder.token());
    assert!(!holder.is_held());
}

// 3. Two threads renewing one guard: both succeed while it is held.

#[test]
fn two_threads_renewing_one_guard_both_succeed() {
    let locks: LockManager<u64> = LockManager::new();
    let mut failures = 0;
    for i in 0..4_000_u64 {
        // A plain holding (its first renewal gives it a lease) and a leased one.
        let g = if i % 2 == 0 {
            locks.exclusive(&i).try_acquire().unwrap()
        } else {
            locks.exclusive(&i).lease(Duration::from_secs(30)).try_acquire().unwrap()
        };
        let start = Barrier::new(2);
        let results: Vec<Result<(), LockError>> = thread::scope(|s| {
            let a = s.spawn(|| {
                start.wait();
                g.renew(Duration::from_secs(30))
            });
            let b = s.spawn(|| {
                start.wait();
                (g.renew(Duration::from_secs(30)), g.is_held())
            });
            let (rb, held) = b.join().unwrap();
            assert!(held, "a held guard said not held after a concurrent renew");
            vec![a.join().unwrap(), rb]
        });
        failures += results.iter().filter(|r| r.is_err()).count();
        assert!(g.is_held());
        g.release().unwrap();
    }
    assert_eq!(failures, 0, "renews that lost a race to another renew of the live holding");
}

// 4. Writer preference: a reader queued behind a writer does not take the lock before it.

#[test]
fn a_reader_queued_behind_a_writer_does_not_pass_it_on_a_timeout() {
    let clock = ManualClock::new();
    let locks = unreaped(&clock);
    let r0 = locks.shared("k").try_acquire().unwrap();
    thread::scope(|s| {
        let writer = s.spawn(|| locks.exclusive("k").acquire_timeout(Duration::from_secs(10)).map(|g| g.token()));
        while locks.inspect("k").unwrap().waiters.is_empty() {
            thread::yield_now();
        }
        // Queued behind the writer: it wakes at its own timeout and must not claim on its way out.
        let reader = locks.shared("k").acquire_timeout(30 * MS).map(|g| g.token());
        assert_eq!(reader, Err(LockError::TimedOut), "a reader queued behind a writer passed it");
        drop(r0);
        assert!(writer.join().unwrap().is_ok());
    });
}

#[test]
fn an_async_reader_behind_a_writer_stays_behind_it_when_polled() {
    let clock = ManualClock::new();
    let locks = unreaped(&clock);
    let r0 = locks.shared("k").try_acquire().unwrap();
    let ww = Arc::new(CountingWaker::default());
    let rw = Arc::new(CountingWaker::default());
    let (wwaker, rwaker) = (Waker::from(ww.clone()), Waker::from(rw.clone()));
    let mut writer = std::pin::pin!(locks.exclusive("k").acquire_async());
    let mut reader = std::pin::pin!(locks.shared("k").acquire_async());
    assert!(writer.as_mut().poll(&mut Context::from_waker(&wwaker)).is_pending());
    assert!(reader.as_mut().poll(&mut Context::from_waker(&rwaker)).is_pending());
    assert_eq!(locks.inspect("k").unwrap().waiters.len(), 2);
    // Polled again without a wake-up (an executor may do that): it must stay queued.
    assert!(reader.as_mut().poll(&mut Context::from_waker(&rwaker)).is_pending(), "the reader passed the writer");
    drop(r0);
    assert_eq!(ww.woken(), 1, "the release did not wake the writer");
    let Poll::Ready(w) = writer.as_mut().poll(&mut Context::from_waker(&wwaker)) else {
        panic!("the woken writer did not get the lock")
    };
    drop(w.unwrap());
    assert_eq!(rw.woken(), 1, "the writer's release did not wake the reader");
    assert!(reader.as_mut().poll(&mut Context::from_waker(&rwaker)).is_ready());
}

// 5. The fairness hand-off holds for any number of holders, timed by the manager's clock.

#[test]
fn an_overdue_waiter_is_handed_the_lock_past_four_holders() {
    let clock = ManualClock::new();
    let locks = unreaped(&clock);
    let mut holders: Vec<_> = (0..5).map(|_| locks.semaphore("pool", 5).try_acquire().unwrap()).collect();
    let counter = Arc::new(CountingWaker::default());
    let waker = Waker::from(counter.clone());
    let mut waiter = std::pin::pin!(locks.semaphore("pool", 5).acquire_async());
    assert!(waiter.as_mut().poll(&mut Context::from_waker(&waker)).is_pending());
    // Overdue by the manager's clock (no sleep).
    clock.advance(MS);
    // The fifth holder lives in an overflow record; its release must hand its permit over.
    let fifth = holders.pop().unwrap();
    drop(fifth);
    assert_eq!(counter.woken(), 1);
    assert_eq!(
        locks.semaphore("pool", 5).try_acquire().map(|g| g.token()).unwrap_err(),
        LockError::WouldBlock,
        "a barger took the permit of a waiter that had waited past the fairness bound"
    );
    let Poll::Ready(got) = waiter.as_mut().poll(&mut Context::from_waker(&waker)) else { panic!("not handed over") };
    assert!(got.unwrap().is_held());
}

#[test]
fn a_waiter_that_is_not_overdue_by_the_clock_is_only_woken() {
    let clock = ManualClock::new();
    let locks = unreaped(&clock);
    let holder = locks.exclusive("k").try_acquire().unwrap();
    let counter = Arc::new(CountingWaker::default());
    let waker = Waker::from(counter.clone());
    let mut waiter = std::pin::pin!(locks.exclusive("k").acquire_async());
    assert!(waiter.as_mut().poll(&mut Context::from_waker(&waker)).is_pending());
    // However long it really waited, the manager's clock has not moved: a barger may still win.
    thread::sleep(2 * MS);
    drop(holder);
    assert_eq!(counter.woken(), 1);
    let barger = locks.exclusive("k").try_acquire().expect("not overdue: no hand-off");
    drop(barger);
    assert!(waiter.as_mut().poll(&mut Context::from_waker(&waker)).is_ready());
}

// 6. Events in the order the holdings happened; user code panicking inside expiry or revocation.

#[test]
fn each_keys_events_come_in_the_order_of_its_holdings() {
    let locks: LockManager<u64> = LockManager::new();
    let events = locks.subscribe(1 << 20);
    const THREADS: u64 = 4;
    const OPS: u64 = 20_000;
    thread::scope(|s| {
        for t in 0..THREADS {
            let locks = &locks;
            s.spawn(move || {
                for i in 0..OPS {
                    let key = (i + t) % 2;
                    let g = if i % 3 == 0 {
                        locks.exclusive(&key).lease(Duration::from_secs(10)).acquire().unwrap()
                    } else {
                        locks.exclusive(&key).acquire().unwrap()
                    };
                    std::hint::black_box(g.token());
                }
            });
        }
    });
    assert_eq!(events.dropped(), 0);
    let mut open: [Option<u64>; 2] = [None, None];
    let mut seen = 0;
    for e in events.drain() {
        let k = e.key as usize;
        match e.kind {
            EventKind::Acquired => {
                assert_eq!(
                    open[k],
                    None,
                    "key {k}: Acquired {} before the Released of {:?}",
                    e.token.as_u64(),
                    open[k]
                );
                open[k] = Some(e.token.as_u64());
            }
            EventKind::Released => {
                assert_eq!(open[k], Some(e.token.as_u64()), "key {k}: Released {} out of order", e.token.as_u64());
                open[k] = None;
            }
            other => panic!("unexpected {other:?}"),
        }
        seen += 1;
    }
    assert_eq!(seen, 2 * THREADS * OPS);
}

static PANIC_ON_CLONE: AtomicBool = AtomicBool::new(false);

/// A key whose `clone` panics on demand (user code run by the event bus).
#[derive(Debug, PartialEq, Eq)]
struct Touchy(u32);

impl Clone for Touchy {
    fn clone(&self) -> Self {
        if PANIC_ON_CLONE.load(Ordering::SeqCst) {
            panic!("Touchy::clone asked to panic");
        }
        Touchy(self.0)
    }
}

impl Hash for Touchy {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

#[test]
fn a_panicking_key_clone_in_expiry_or_revocation_leaves_nothing_held() {
    let clock = ManualClock::new();
    // The reaper on a manual clock: expiry runs inside `advance`.
    let locks: LockManager<Touchy> = LockManager::builder().clock(clock.clone()).build().unwrap();
    let _events = locks.subscribe(16);
    let a = locks.exclusive(&Touchy(1)).lease(10 * MS).try_acquire().unwrap();
    let b = locks.exclusive(&Touchy(2)).owner("o").try_acquire().unwrap();
    PANIC_ON_CLONE.store(true, Ordering::SeqCst);
    let advanced = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| clock.advance(10 * MS)));
    let revoked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| locks.revoke(&Touchy(2), b.token())));
    PANIC_ON_CLONE.store(false, Ordering::SeqCst);
    assert!(advanced.is_ok(), "a key's clone panicking in expiry escaped into the expiry driver");
    assert!(matches!(revoked, Ok(Ok(()))), "revocation: {revoked:?}");
    assert!(!a.is_held() && !b.is_held());
    assert!(locks.exclusive(&Touchy(1)).try_acquire().is_ok(), "the expired key is held forever");
    assert!(locks.exclusive(&Touchy(2)).try_acquire().is_ok(), "the revoked key is held forever");
    // The expiry driver still works.
    let c = locks.exclusive(&Touchy(3)).lease(10 * MS).try_acquire().unwrap();
    clock.advance(10 * MS);
    assert_eq!(locks.metrics().expiries, 2);
    assert!(!c.is_held());
}

// Tokens above a floor, for resources fenced across a restart.

#[test]
fn every_token_is_above_the_floor_across_reclaims_and_rebases() {
    let floor = 5 << 40;
    let locks: LockManager<u64> = LockManager::builder().token_floor(floor).counter_limit(3).build().unwrap();
    for key in 0..8_u64 {
        let mut last = floor;
        for round in 0..10 {
            let t = locks.exclusive(&key).try_acquire().unwrap().token().as_u64();
            assert!(t > last, "key {key} round {round}: token {t} after {last} (floor {floor})");
            last = t;
            if round % 3 == 0 {
                locks.reclaim_idle();
            }
        }
    }
    assert_eq!(
        LockManager::<u64>::builder().token_floor(leasehold::MAX_TOKEN_FLOOR + 1).build().unwrap_err(),
        leasehold::ConfigError::TokenFloor { floor: leasehold::MAX_TOKEN_FLOOR + 1 }
    );
    assert!(LockManager::<u64>::builder().token_floor(leasehold::MAX_TOKEN_FLOOR).build().is_ok());
}

// The slot bound is exact under racing creators.

#[test]
fn max_slots_is_exact_with_eight_threads_racing_at_the_bound() {
    const MAX: usize = 16;
    let locks: LockManager<u64> = LockManager::builder().max_slots(MAX).build().unwrap();
    let next_key = AtomicUsize::new(0);
    for round in 0..3_000 {
        let start = Barrier::new(8);
        let held: Vec<Vec<_>> = thread::scope(|s| {
            let workers: Vec<_> = (0..8)
                .map(|_| {
                    s.spawn(|| {
                        start.wait();
                        let mut mine = Vec::new();
                        for _ in 0..4 {
                            let key = next_key.fetch_add(1, Ordering::Relaxed) as u64;
                            match locks.exclusive(&key).try_acquire() {
                                Ok(g) => mine.push(g),
                                Err(LockError::Capacity { max_slots }) => assert_eq!(max_slots, MAX),
                                Err(e) => panic!("{e:?}"),
                            }
                        }
                        mine
                    })
                })
                .collect();
            workers.into_iter().map(|w| w.join().unwrap()).collect()
        });
        let n: usize = held.iter().map(Vec::len).sum();
        assert!(locks.slot_count() <= MAX, "round {round}: {} slots, bound {MAX}", locks.slot_count());
        assert!(n <= MAX && n > 0, "round {round}: {n} holders of distinct keys, bound {MAX}");
        drop(held);
    }
}
