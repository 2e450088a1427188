//! Differential test: random sequences of try_acquire / release / drop / renew / advance-time /
//! reclaim / try_upgrade / downgrade over a few keys and every mode (exclusive, shared,
//! semaphore, upgradable, the intention modes), checked step by step against a single-threaded reference model (same outcome,
//! same error, tokens strictly increasing per key, same `is_held`, `expires_at` and `mode` for
//! every guard, same number of live slots), and after every step the holders `inspect` shows for
//! each key are the model's and pairwise compatible by the matrix.

use std::time::Duration;

use leasehold::compat::compatible;
use leasehold::{LockError, LockGuard, LockManager, ManualClock, Mode, UpgradableGuard};
use proptest::prelude::*;

#[path = "support/reference_model.rs"]
mod reference_model;
use reference_model::Model;

#[derive(Clone, Debug)]
enum Op {
    Acquire {
        key: u8,
        mode: Mode,
        lease_ms: Option<u8>,
        owner: bool,
    },
    Release {
        guard: usize,
    },
    Drop {
        guard: usize,
    },
    Renew {
        guard: usize,
        ttl_ms: u8,
    },
    Advance {
        ms: u8,
    },
    Reclaim,
    /// `try_upgrade` of an upgradable guard (a no-op on another guard).
    Upgrade {
        guard: usize,
    },
    /// `downgrade` (or `downgrade_to_upgradable`) of a guard that is not upgradable.
    Downgrade {
        guard: usize,
        to_upgradable: bool,
    },
}

fn mode() -> impl Strategy<Value = Mode> {
    prop_oneof![
        Just(Mode::Exclusive),
        Just(Mode::Shared),
        (1_u32..=3).prop_map(Mode::Semaphore),
        Just(Mode::IntentShared),
        Just(Mode::IntentExclusive),
        Just(Mode::SharedIntentExclusive),
        Just(Mode::Upgradable),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0_u8..3, mode(), proptest::option::of(1_u8..40), any::<bool>())
            .prop_map(|(key, mode, lease_ms, owner)| Op::Acquire { key, mode, lease_ms, owner }),
        2 => any::<usize>().prop_map(|guard| Op::Release { guard }),
        1 => any::<usize>().prop_map(|guard| Op::Drop { guard }),
        2 => (any::<usize>(), 0_u8..40).prop_map(|(guard, ttl_ms)| Op::Renew { guard, ttl_ms }),
        2 => (1_u8..30).prop_map(|ms| Op::Advance { ms }),
        1 => Just(Op::Reclaim),
        2 => any::<usize>().prop_map(|guard| Op::Upgrade { guard }),
        2 => (any::<usize>(), any::<bool>()).prop_map(|(guard, to_upgradable)| Op::Downgrade { guard, to_upgradable }),
    ]
}

/// A guard of either type.
enum Guard<'m> {
    Lock(LockGuard<'m, u8>),
    Up(UpgradableGuard<'m, u8>),
}

impl<'m> std::ops::Deref for Guard<'m> {
    type Target = LockGuard<'m, u8>;

    fn deref(&self) -> &Self::Target {
        match self {
            Guard::Lock(g) => g,
            Guard::Up(g) => g,
        }
    }
}

impl Guard<'_> {
    fn release(self) -> Result<(), LockError> {
        match self {
            Guard::Lock(g) => g.release(),
            Guard::Up(g) => g.release(),
        }
    }
}

struct Held<'m> {
    id: usize,
    key: u8,
    /// The mode the guard is in now (as requested, upgraded or downgraded).
    mode: Mode,
    guard: Guard<'m>,
}

fn run(ops: Vec<Op>, counter_limit: Option<u64>) -> Result<(), TestCaseError> {
    let clock = ManualClock::new();
    let mut builder = LockManager::<u8>::builder().clock(clock.clone()).shards(2);
    if let Some(limit) = counter_limit {
        builder = builder.counter_limit(limit);
    }
    let locks = builder.build().expect("valid configuration");
    let mut model = Model::default();
    let mut guards: Vec<Held<'_>> = Vec::new();
    let mut next_id = 0;
    for op in ops {
        match op {
            Op::Acquire { key, mode, lease_ms, owner } => {
                let id = next_id;
                next_id += 1;
                let lease = lease_ms.map(|ms| Duration::from_millis(ms as u64));
                let owner = owner.then(|| format!("owner-{id}"));
                let got = if mode == Mode::Upgradable {
                    let mut req = locks.upgradable(&key);
                    if let Some(ttl) = lease {
                        req = req.lease(ttl);
                    }
                    if let Some(o) = owner {
                        req = req.owner(o);
                    }
                    req.try_acquire().map(Guard::Up)
                } else {
                    let mut req = match mode {
                        Mode::Exclusive => locks.exclusive(&key),
                        Mode::Shared => locks.shared(&key),
                        Mode::Semaphore(n) => locks.semaphore(&key, n),
                        Mode::IntentShared => locks.intent_shared(&key),
                        Mode::IntentExclusive => locks.intent_exclusive(&key),
                        Mode::SharedIntentExclusive => locks.shared_intent_exclusive(&key),
                        _ => unreachable!("the strategy makes no other mode"),
                    };
                    if let Some(ttl) = lease {
                        req = req.lease(ttl);
                    }
                    if let Some(o) = owner {
                        req = req.owner(o);
                    }
                    req.try_acquire().map(Guard::Lock)
                };
                let want = model.acquire(key, mode, lease_ms, id);
                match (got, want) {
                    (Ok(guard), Ok(_)) => {
                        let km = model.keys.get_mut(&key).expect("modelled");
                        let token = guard.token().as_u64();
                        prop_assert!(token > km.last_token, "token {token} after {} on key {key}", km.last_token);
                        km.last_token = token;
                        prop_assert_eq!(guard.mode(), mode);
                        guards.push(Held { id, key, mode, guard });
                    }
                    // A spent acquisition counter makes requests wait for the key to drain: with
                    // a shrunken limit the only allowed divergence is a refusal the model would
                    // not make.
                    (Err(LockError::WouldBlock), Ok(_)) if counter_limit.is_some() => {
                        model.end(id);
                    }
                    (Err(e), Err(w)) => prop_assert_eq!(e, w),
                    (got, want) => {
                        return Err(TestCaseError::fail(format!(
                            "acquire {mode} on {key}: got {:?}, model says {want:?}",
                            got.map(|g| g.token())
                        )))
                    }
                }
            }
            Op::Release { guard } | Op::Drop { guard } if !guards.is_empty() => {
                let held = guards.remove(guard % guards.len());
                let live = model.end(held.id);
                if matches!(op, Op::Release { .. }) {
                    let got = held.guard.release();
                    prop_assert_eq!(got.is_ok(), live, "release of guard {} on key {}: {:?}", held.id, held.key, got);
                    if !live {
                        prop_assert_eq!(got, Err(LockError::Expired));
                    }
                }
            }
            Op::Renew { guard, ttl_ms } if !guards.is_empty() => {
                let held = &guards[guard % guards.len()];
                let got = held.guard.renew(Duration::from_millis(ttl_ms as u64));
                if ttl_ms == 0 {
                    prop_assert_eq!(got, Err(LockError::InvalidTtl { ttl: Duration::ZERO }));
                } else {
                    let now = model.now_ms;
                    match model.holder(held.id) {
                        Some(h) => {
                            prop_assert_eq!(got, Ok(()));
                            h.deadline = Some(now + ttl_ms as u64);
                        }
                        None => prop_assert_eq!(got, Err(LockError::Expired)),
                    }
                }
            }
            Op::Advance { ms } => {
                clock.advance(Duration::from_millis(ms as u64));
                model.advance(ms as u64);
            }
            Op::Reclaim => {
                locks.reclaim_idle();
                prop_assert_eq!(locks.slot_count(), model.pinned_keys(guards.iter().map(|h| (h.id, h.key))));
            }
            Op::Upgrade { guard } if !guards.is_empty() => {
                let i = guard % guards.len();
                if matches!(guards[i].guard, Guard::Up(_)) {
                    let held = guards.remove(i);
                    let Guard::Up(g) = held.guard else { unreachable!("checked") };
                    let want = model.try_upgrade(held.id);
                    match (g.try_upgrade(), want) {
                        (Ok(w), Ok(())) => {
                            let km = model.keys.get_mut(&held.key).expect("modelled");
                            let token = w.token().as_u64();
                            prop_assert!(token > km.last_token, "upgrade token {token} after {}", km.last_token);
                            km.last_token = token;
                            guards.push(Held { mode: Mode::Exclusive, guard: Guard::Lock(w), ..held });
                        }
                        // A spent counter: the upgrade is refused until the key drains (the model
                        // has no counter): undo the model's upgrade.
                        (Err(f), Ok(())) if counter_limit.is_some() && f.error == LockError::WouldBlock => {
                            model
                                .downgrade(held.id, held.key, Mode::Exclusive, Mode::Upgradable)
                                .expect("just upgraded");
                            guards.push(Held { guard: Guard::Up(f.guard), ..held });
                        }
                        (Err(f), Err(e)) => {
                            prop_assert_eq!(&f.error, &e);
                            guards.push(Held { guard: Guard::Up(f.guard), ..held });
                        }
                        (got, want) => {
                            return Err(TestCaseError::fail(format!(
                                "try_upgrade of guard {} on {}: got {:?}, model says {want:?}",
                                held.id,
                                held.key,
                                got.map(|g| g.token()).map_err(|f| f.error)
                            )))
                        }
                    }
                }
            }
            Op::Downgrade { guard, to_upgradable } if !guards.is_empty() => {
                let i = guard % guards.len();
                if matches!(guards[i].guard, Guard::Lock(_)) {
                    let held = guards.remove(i);
                    let Guard::Lock(g) = held.guard else { unreachable!("checked") };
                    let token = g.token();
                    let to = if to_upgradable { Mode::Upgradable } else { Mode::Shared };
                    let want = model.downgrade(held.id, held.key, held.mode, to);
                    let got = if to_upgradable {
                        g.downgrade_to_upgradable().map(Guard::Up).map_err(|f| (Guard::Lock(f.guard), f.error))
                    } else {
                        g.downgrade().map(Guard::Lock).map_err(|f| (Guard::Lock(f.guard), f.error))
                    };
                    match (got, want) {
                        (Ok(g), Ok(())) => {
                            prop_assert_eq!(g.token(), token, "a downgrade keeps its token");
                            guards.push(Held { mode: to, guard: g, ..held });
                        }
                        (Err((g, e)), Err(w)) => {
                            match (&e, &w) {
                                // An ended semaphore guard names its key's capacity now (see the
                                // mode check below).
                                (
                                    LockError::InvalidModeChange { from: Mode::Semaphore(_), to: a },
                                    LockError::InvalidModeChange { from: Mode::Semaphore(_), to: b },
                                ) if !model.live.contains_key(&held.id) => prop_assert_eq!(a, b),
                                _ => prop_assert_eq!(e, w),
                            }
                            guards.push(Held { guard: g, ..held });
                        }
                        (got, want) => {
                            return Err(TestCaseError::fail(format!(
                                "downgrade to {to} of guard {} on {}: got {:?}, model says {want:?}",
                                held.id,
                                held.key,
                                got.map(|g| g.token()).map_err(|(_, e)| e)
                            )))
                        }
                    }
                }
            }
            Op::Release { .. } | Op::Drop { .. } | Op::Renew { .. } | Op::Upgrade { .. } | Op::Downgrade { .. } => {}
        }
        // Every guard agrees with the model after every step.
        for held in &guards {
            let live = model.live.contains_key(&held.id);
            prop_assert_eq!(held.guard.is_held(), live, "is_held of guard {} on key {}", held.id, held.key);
            let want_deadline = if live { model.holder(held.id).and_then(|h| h.deadline) } else { None };
            prop_assert_eq!(held.guard.expires_at(), want_deadline.map(Duration::from_millis));
            // Live guards only: an ended semaphore guard's mode follows its key's capacity, which
            // a later request of another kind may change (a quirk older than this check).
            if live {
                prop_assert_eq!(held.guard.mode(), held.mode, "mode of guard {} on key {}", held.id, held.key);
            }
        }
        // The matrix, on the manager's own holders: the modes `inspect` shows are the model's,
        // and pairwise compatible.
        prop_assert_eq!(model.check_matrix(), Ok(()));
        for key in 0..3_u8 {
            let mut got: Vec<String> =
                locks.inspect(&key).map(|i| i.holders.iter().map(|h| h.mode.to_string()).collect()).unwrap_or_default();
            let mut want: Vec<String> = model
                .keys
                .get(&key)
                .map(|k| k.holders.iter().map(|h| h.mode.to_string()).collect())
                .unwrap_or_default();
            got.sort();
            want.sort();
            prop_assert_eq!(&got, &want, "holders of key {}", key);
            let modes: Vec<Mode> =
                locks.inspect(&key).map(|i| i.holders.iter().map(|h| h.mode).collect()).unwrap_or_default();
            for (i, a) in modes.iter().enumerate() {
                for b in &modes[i + 1..] {
                    prop_assert!(compatible(a.granule(), b.granule()), "key {}: {} beside {}", key, a, b);
                }
            }
        }
        prop_assert!(locks.slot_count() >= model.live_keys());
    }
    drop(guards);
    locks.reclaim_idle();
    prop_assert_eq!(locks.slot_count(), 0);
    Ok(())
}

proptest! {
    // 4096 cases by default (about a second); PROPTEST_CASES raises it for a longer run by hand.
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(4096)
    ))]

    #[test]
    fn agrees_with_the_reference_model(ops in proptest::collection::vec(op(), 1..120)) {
        run(ops, None)?;
    }

    /// The same with a tiny acquisition counter, so slots are rebased all the time: tokens must
    /// still only grow, and the manager may refuse but never admit what the model refuses.
    #[test]
    fn tokens_grow_across_rebases(ops in proptest::collection::vec(op(), 1..120)) {
        run(ops, Some(3))?;
    }
}
