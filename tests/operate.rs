//! Operating it: introspection, metrics (a test per counter), events, the audit trail,
//! revocation.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use leasehold::{
    AuditLog, EventKind, FenceToken, LockError, LockManager, ManualClock, MetricsSnapshot, Mode, HOLD_SAMPLE,
};

const MS: Duration = Duration::from_millis(1);

fn manual() -> (ManualClock, LockManager<String>) {
    let clock = ManualClock::new();
    let locks = LockManager::builder().clock(clock.clone()).build().unwrap();
    (clock, locks)
}

/// The counters of a snapshot, by name, for "this one moved and nothing else" checks.
fn counters(m: &MetricsSnapshot) -> BTreeMap<&'static str, u64> {
    BTreeMap::from([
        ("acquisitions", m.acquisitions),
        ("would_block", m.would_block),
        ("timeouts", m.timeouts),
        ("refused", m.refused),
        ("cancelled", m.cancelled),
        ("contended", m.contended),
        ("renewals", m.renewals),
        ("renew_failures", m.renew_failures),
        ("expiries", m.expiries),
        ("revocations", m.revocations),
        ("fence_rejections", m.fence_rejections),
        ("events_dropped", m.events_dropped),
        ("wait_time", m.wait_time.count()),
        ("hold_time", m.hold_time.count()),
    ])
}

/// Runs `action` and asserts that exactly the named counters moved, by the given amounts.
fn moves<T>(locks: &LockManager<String>, expect: &[(&str, u64)], action: impl FnOnce() -> T) -> T {
    let before = counters(&locks.metrics());
    let out = action();
    let after = counters(&locks.metrics());
    for (name, b) in &before {
        let want = expect.iter().find(|(n, _)| n == name).map_or(0, |(_, d)| *d);
        assert_eq!(after[name] - b, want, "counter {name} moved by {} (wanted {want})", after[name] - b);
    }
    out
}

#[test]
fn acquisitions_count_successes_in_every_mode() {
    let (_clock, locks) = manual();
    let g = moves(&locks, &[("acquisitions", 1)], || locks.exclusive("a").try_acquire().unwrap());
    moves(&locks, &[], || drop(g));
    moves(&locks, &[("acquisitions", 3)], || {
        let s = locks.shared("b").try_acquire().unwrap();
        let p = locks.semaphore("c", 2).lease(MS * 10).try_acquire().unwrap();
        let o = locks.exclusive("d").owner("w").try_acquire().unwrap();
        drop((s, p, o));
    });
    // Reclaimed slots keep their count, and a capacity change is not an acquisition.
    locks.reclaim_idle();
    moves(&locks, &[("acquisitions", 2)], || {
        drop(locks.semaphore("b", 3).try_acquire().unwrap()); // "b" was read/write: reshaped
        drop(locks.shared("b").try_acquire().unwrap()); // and back
    });
    assert_eq!(locks.metrics().acquisitions, 6);
}

#[test]
fn refusals_are_counted_by_kind() {
    let (_clock, locks) = manual();
    let _g = locks.exclusive("k").try_acquire().unwrap();
    moves(&locks, &[("would_block", 1)], || locks.exclusive("k").try_acquire().unwrap_err());
    moves(&locks, &[("timeouts", 1)], || locks.exclusive("k").acquire_timeout(MS).unwrap_err());
    moves(&locks, &[("refused", 3)], || {
        locks.semaphore("s", 0).try_acquire().unwrap_err();
        locks.exclusive("x").lease(Duration::ZERO).acquire().unwrap_err();
        locks.semaphore("k", 2).try_acquire().unwrap_err(); // permit mismatch
    });
    let m = locks.metrics();
    assert_eq!(m.attempts(), m.acquisitions + 5);
}

#[test]
fn contention_and_wait_time_count_only_waiting_acquisitions() {
    let (_clock, locks) = manual();
    let g = locks.exclusive("k").try_acquire().unwrap();
    moves(&locks, &[("acquisitions", 1), ("contended", 1), ("wait_time", 1)], || {
        thread::scope(|s| {
            let waiter = s.spawn(|| drop(locks.exclusive("k").acquire().unwrap()));
            while locks.metrics().waiters == 0 {
                thread::yield_now();
            }
            drop(g);
            waiter.join().unwrap();
        })
    });
    let m = locks.metrics();
    assert!(m.wait_time.sum() > Duration::ZERO);
    assert_eq!(m.waiters, 0);
}

#[test]
fn cancelled_async_waits_are_counted() {
    let (_clock, locks) = manual();
    let _g = locks.exclusive("k").try_acquire().unwrap();
    moves(&locks, &[("cancelled", 1)], || {
        let mut fut = Box::pin(locks.exclusive("k").acquire_async());
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        assert!(fut.as_mut().poll(&mut cx).is_pending());
        drop(fut);
    });
}

#[test]
fn renewals_and_their_failures() {
    let (clock, locks) = manual();
    let g = locks.exclusive("k").lease(MS * 10).try_acquire().unwrap();
    moves(&locks, &[("renewals", 2)], || {
        g.renew(MS * 10).unwrap();
        g.renew(MS * 20).unwrap();
    });
    clock.advance(MS * 20);
    moves(&locks, &[("renew_failures", 1)], || g.renew(MS * 10).unwrap_err());
    // A plain holding that gains a lease is a renewal too.
    let p = locks.exclusive("p").try_acquire().unwrap();
    moves(&locks, &[("renewals", 1)], || p.renew(MS).unwrap());
}

#[test]
fn expiries_count_lost_leases_whoever_expires_them() {
    let (clock, locks) = manual();
    let _a = locks.exclusive("a").lease(MS).try_acquire().unwrap();
    let _b = locks.exclusive("b").lease(MS).try_acquire().unwrap();
    moves(&locks, &[("expiries", 2)], || clock.advance(MS)); // the reaper, inside advance
    let undriven = LockManager::<String>::builder().clock(clock.clone()).reaper(false).build().unwrap();
    let _c = undriven.exclusive("c").lease(MS).try_acquire().unwrap();
    clock.advance(MS);
    let before = undriven.metrics().expiries;
    drop(undriven.exclusive("c").try_acquire().unwrap()); // a contender takes over
    assert_eq!(undriven.metrics().expiries, before + 1);
}

#[test]
fn revocations_fence_rejections_and_hold_times() {
    let (_clock, locks) = manual();
    let g = locks.exclusive("k").owner("w").try_acquire().unwrap();
    moves(&locks, &[("revocations", 1)], || locks.revoke("k", g.token()).unwrap());
    let cell = locks.fenced(());
    cell.write(FenceToken::from_u64(5), |_| ()).unwrap();
    moves(&locks, &[("fence_rejections", 1)], || cell.write(FenceToken::from_u64(4), |_| ()).unwrap_err());
    // One holding in HOLD_SAMPLE is timed from acquire to release.
    let before = locks.metrics().hold_time.count();
    for _ in 0..HOLD_SAMPLE * 4 {
        drop(locks.shared("h").try_acquire().unwrap());
    }
    assert_eq!(locks.metrics().hold_time.count() - before, 4);
}

#[test]
fn gauges_follow_what_is_held_and_queued() {
    let (_clock, locks) = manual();
    let m = locks.metrics();
    assert_eq!((m.live_slots, m.live_holders, m.waiters), (0, 0, 0));
    let readers: Vec<_> = (0..6).map(|_| locks.shared("r").try_acquire().unwrap()).collect(); // 2 overflow
    let w = locks.exclusive("w").try_acquire().unwrap();
    let m = locks.metrics();
    assert_eq!((m.live_slots, m.live_holders, m.waiters), (2, 7, 0));
    let mut fut = Box::pin(locks.exclusive("w").acquire_async());
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    assert!(fut.as_mut().poll(&mut cx).is_pending());
    assert_eq!(locks.metrics().waiters, 1);
    drop((readers, fut, w));
    let m = locks.metrics();
    assert_eq!((m.live_slots, m.live_holders, m.waiters), (0, 0, 0));
}

#[test]
fn inspect_shows_holders_and_waiters() {
    let (clock, locks) = manual();
    clock.advance(MS * 5);
    let r1 = locks.shared("k").lease(MS * 100).owner("a").try_acquire().unwrap();
    let r2 = locks.shared("k").try_acquire().unwrap();
    let mut writer = Box::pin(locks.exclusive("k").owner("b").lease(MS * 7).acquire_async());
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    assert!(writer.as_mut().poll(&mut cx).is_pending());
    let info = locks.inspect("k").unwrap();
    assert_eq!(info.key, "k");
    assert_eq!(info.mode, Some(Mode::Shared));
    assert_eq!(info.units_held, 2);
    assert_eq!(info.holders.len(), 2);
    let (h1, h2) = (&info.holders[0], &info.holders[1]);
    assert_eq!((h1.token, h1.mode, h1.owner.as_ref().map(|o| o.as_str())), (r1.token(), Mode::Shared, Some("a")));
    assert_eq!((h1.acquired_at, h1.expires_at), (Some(MS * 5), Some(MS * 105)));
    assert_eq!((h2.token, h2.owner.clone(), h2.acquired_at, h2.expires_at), (r2.token(), None, None, None));
    assert_eq!(info.waiters.len(), 1);
    let w = &info.waiters[0];
    assert_eq!((w.mode, w.owner.as_ref().map(|o| o.as_str()), w.lease), (Mode::Exclusive, Some("b"), Some(MS * 7)));
    drop(writer);
    assert!(locks.inspect("k").unwrap().waiters.is_empty());
    drop((r1, r2));
    assert!(locks.inspect("k").is_none());
}

#[test]
fn snapshots_agree_with_what_is_held_while_others_churn() {
    let locks: LockManager<String> = LockManager::builder().shards(4).build().unwrap();
    let held: Vec<_> = (0..20)
        .map(|i| {
            let key = format!("stable/{i}");
            let g = match i % 3 {
                0 => locks.exclusive(&key).owner(format!("owner-{i}")).try_acquire(),
                1 => locks.shared(&key).lease(Duration::from_secs(60)).try_acquire(),
                _ => locks.semaphore(&key, 2).try_acquire(),
            }
            .unwrap();
            (key, g.token(), g)
        })
        .collect();
    let stop = AtomicBool::new(false);
    thread::scope(|s| {
        for t in 0..2 {
            let (locks, stop) = (&locks, &stop);
            s.spawn(move || {
                let mut i = 0_u64;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let key = format!("churn/{t}/{}", i % 50);
                    if let Ok(g) = locks.exclusive(&key).try_acquire() {
                        drop(g);
                    }
                }
            });
        }
        for _ in 0..50 {
            let snap = locks.snapshot();
            for (key, token, g) in &held {
                let info = snap.iter().find(|i| &i.key == key).unwrap_or_else(|| panic!("{key} is held but missing"));
                assert_eq!(info.holders.len(), 1, "{key}: {info:?}");
                assert_eq!(info.holders[0].token, *token);
                assert_eq!(info.holders[0].mode, g.mode());
            }
            for info in &snap {
                if info.key.starts_with("churn/") {
                    // A churned key is at most one exclusive holder, seen consistently.
                    assert!(info.holders.len() <= 1 && info.units_held <= leasehold::MAX_UNITS);
                }
            }
        }
        stop.store(true, Ordering::Relaxed);
    });
}

#[test]
fn a_slow_subscriber_loses_events_and_counts_them() {
    let (_clock, locks) = manual();
    let slow = locks.subscribe(4);
    let fast = locks.subscribe(1000);
    for _ in 0..50 {
        drop(locks.exclusive("k").try_acquire().unwrap());
    }
    assert_eq!(fast.drain().count(), 100);
    assert_eq!(slow.drain().count(), 4);
    assert_eq!(slow.dropped(), 96);
    assert_eq!(locks.metrics().events_dropped, 96);
    // Dropping a subscriber unsubscribes it.
    drop(slow);
    drop(locks.exclusive("k").try_acquire().unwrap());
    assert_eq!(fast.drain().count(), 2);
}

/// Every holding a subscriber heard begin, it hears end, on the guard's fast release too (the
/// plain modes); a plain holding that began before anyone subscribed ends unheard.
#[test]
fn a_subscriber_hears_the_release_of_every_holding_it_heard_acquired() {
    let (_clock, locks) = manual();
    let before = locks.exclusive("early").try_acquire().unwrap();
    let events = locks.subscribe(64);
    let mut kinds = Vec::new();
    for _ in 0..2 {
        drop(locks.exclusive("x").try_acquire().unwrap());
        drop(locks.shared("s").acquire().unwrap());
        drop(locks.semaphore("p", 3).try_acquire().unwrap());
    }
    drop(before);
    kinds.extend(events.drain().map(|e| (e.kind, e.key)));
    let pair = |k: &str| [(EventKind::Acquired, k.to_owned()), (EventKind::Released, k.to_owned())];
    let want: Vec<_> = [pair("x"), pair("s"), pair("p")].into_iter().flatten().collect();
    assert_eq!(kinds, [want.clone(), want].concat(), "no release of \"early\", every other one paired");
    // A holding heard begin is told its end, to whoever listens then (here a later subscriber).
    let g = locks.exclusive("x").try_acquire().unwrap();
    let late = locks.subscribe(4);
    drop(events);
    drop(g);
    assert_eq!(late.drain().map(|e| e.kind).collect::<Vec<_>>(), [EventKind::Released]);
}

/// The same for exclusive leases without owner (their own fast path and one-CAS release): each
/// one acquired while someone listens is heard begin and end, also on a key whose slot exists and
/// is idle (the lock-free claim's case); one begun before the subscription ends unheard.
#[test]
fn a_subscriber_hears_every_lease_it_heard_begin_end() {
    let (_clock, locks) = manual();
    let before = locks.exclusive("early").lease(MS * 100).try_acquire().unwrap();
    drop(locks.exclusive("l").lease(MS * 100).try_acquire().unwrap());
    let events = locks.subscribe(64);
    for _ in 0..2 {
        drop(locks.exclusive("l").lease(MS * 100).acquire().unwrap());
        locks.exclusive("l").lease(MS * 100).try_acquire().unwrap().release().unwrap();
    }
    before.release().unwrap();
    let kinds: Vec<_> = events.drain().map(|e| (e.kind, e.key)).collect();
    let pair = [(EventKind::Acquired, "l".to_owned()), (EventKind::Released, "l".to_owned())];
    assert_eq!(
        kinds,
        [pair.clone(), pair.clone(), pair.clone(), pair].concat(),
        "four pairs on \"l\", nothing of \"early\""
    );
}

#[test]
fn events_cover_every_kind_in_order() {
    let (clock, locks) = manual();
    let events = locks.subscribe(64);
    let g = locks.exclusive("k").lease(MS * 10).owner("w").try_acquire().unwrap();
    g.renew(MS * 10).unwrap();
    clock.advance(MS * 10);
    let r = locks.shared("k").owner("v").try_acquire().unwrap();
    locks.revoke("k", r.token()).unwrap();
    drop((g, r));
    let got: Vec<_> =
        events.drain().map(|e| (e.kind, e.key, e.token, e.owner.map(|o| o.as_str().to_owned()))).collect();
    let (t1, t2) = (got[0].2, got[3].2);
    assert_eq!(
        got,
        vec![
            (EventKind::Acquired, "k".to_owned(), t1, Some("w".to_owned())),
            (EventKind::Renewed, "k".to_owned(), t1, Some("w".to_owned())),
            (EventKind::Expired, "k".to_owned(), t1, Some("w".to_owned())),
            (EventKind::Acquired, "k".to_owned(), t2, Some("v".to_owned())),
            (EventKind::Revoked, "k".to_owned(), t2, Some("v".to_owned())),
        ]
    );
}

#[test]
fn the_audit_file_parses_back_to_the_events() {
    let dir = std::env::temp_dir().join(format!("leasehold-audit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("audit.jsonl");
    let _ = std::fs::remove_file(&path);
    let (clock, locks) = manual();
    let audit = AuditLog::with_flush_interval(locks.subscribe(1024), &path, MS * 5).unwrap();
    let mirror = locks.subscribe(1024);
    let a = locks.exclusive("orders/\"17\"").lease(MS * 3).owner("w-1").try_acquire().unwrap();
    let b = locks.semaphore("pool", 2).try_acquire().unwrap();
    a.renew(MS * 3).unwrap();
    clock.advance(MS * 3);
    drop(b);
    let c = locks.shared("pool").owner("w-2").try_acquire().unwrap();
    locks.revoke_owner("w-2");
    drop((a, c));
    let written = audit.stop().unwrap();
    let emitted: Vec<_> = mirror.drain().collect();
    assert_eq!(written as usize, emitted.len());
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<_> = text.lines().collect();
    assert_eq!(lines.len(), emitted.len());
    for (line, e) in lines.iter().zip(&emitted) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|err| panic!("{line}: {err}"));
        assert_eq!(v["event"], e.kind.as_str());
        assert_eq!(v["key"], e.key.as_str());
        assert_eq!(v["mode"], e.mode.to_string());
        assert_eq!(v["token"], e.token.as_u64());
        assert_eq!(v["at_ns"], e.at.as_nanos() as u64);
        match &e.owner {
            Some(o) => assert_eq!(v["owner"], o.as_str()),
            None => assert!(v["owner"].is_null()),
        }
    }
    let kinds: Vec<_> = emitted.iter().map(|e| e.kind).collect();
    use EventKind::*;
    assert_eq!(kinds, [Acquired, Acquired, Renewed, Expired, Released, Acquired, Revoked]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn revocation_wakes_waiters_and_expires_the_guard() {
    let (_clock, locks) = manual();
    let stuck = locks.exclusive("job").lease(Duration::from_secs(600)).try_acquire().unwrap();
    thread::scope(|s| {
        let waiter = s.spawn(|| locks.exclusive("job").acquire().unwrap().token());
        while locks.metrics().waiters == 0 {
            thread::yield_now();
        }
        locks.revoke("job", stuck.token()).unwrap();
        let next = waiter.join().unwrap();
        assert!(next > stuck.token());
    });
    assert!(!stuck.is_held());
    assert_eq!(stuck.renew(Duration::from_secs(1)), Err(LockError::Expired));
    assert_eq!(stuck.release(), Err(LockError::Expired));
}

#[test]
fn only_revocable_holdings_are_revoked() {
    let (_clock, locks) = manual();
    let plain = locks.exclusive("p").try_acquire().unwrap();
    assert_eq!(locks.revoke("p", plain.token()), Err(LockError::NotHeld));
    assert_eq!(locks.revoke("nobody", FenceToken::from_u64(1)), Err(LockError::NotHeld));
    let owned = locks.shared("o").owner("x").try_acquire().unwrap();
    assert_eq!(locks.revoke("o", FenceToken::from_u64(owned.token().as_u64() + 1)), Err(LockError::NotHeld));
    assert!(plain.is_held() && owned.is_held());
    // Overflow holdings (more than four at once) are revoked too.
    let many: Vec<_> = (0..6).map(|i| locks.shared("m").owner(format!("o{}", i % 2)).try_acquire().unwrap()).collect();
    assert_eq!(locks.revoke_owner("o1"), 3);
    assert_eq!(many.iter().filter(|g| g.is_held()).count(), 3);
}
