//! Differential test: random sequences of try_acquire / release / drop / renew / advance-time /
//! reclaim over a few keys and every mode (exclusive, shared, semaphore, the intention modes),
//! checked step by step against a single-threaded reference model (same outcome, same error,
//! tokens strictly increasing per key, same `is_held` and `expires_at` for every guard, same
//! number of live slots), and the holders the manager reports on each key pairwise compatible
//! by the matrix after every step.

use std::time::Duration;

use leasehold::compat::compatible;
use leasehold::{LockError, LockGuard, LockManager, ManualClock, Mode, MAX_UNITS};
use proptest::prelude::*;

#[path = "support/reference_model.rs"]
mod reference_model;
use reference_model::Model;

#[derive(Clone, Debug)]
enum Op {
    Acquire { key: u8, mode: Mode, lease_ms: Option<u8>, owner: bool },
    Release { guard: usize },
    Drop { guard: usize },
    Renew { guard: usize, ttl_ms: u8 },
    Advance { ms: u8 },
    Reclaim,
}

fn mode() -> impl Strategy<Value = Mode> {
    prop_oneof![
        Just(Mode::Exclusive),
        Just(Mode::Shared),
        (1_u32..=3).prop_map(Mode::Semaphore),
        Just(Mode::IntentShared),
        Just(Mode::IntentExclusive),
        Just(Mode::SharedIntentExclusive),
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
    ]
}

struct Held<'m> {
    id: usize,
    key: u8,
    guard: LockGuard<'m, u8>,
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
                let mut req = match mode {
                    Mode::Exclusive => locks.exclusive(&key),
                    Mode::Shared => locks.shared(&key),
                    Mode::Semaphore(n) => locks.semaphore(&key, n),
                    Mode::IntentShared => locks.intent_shared(&key),
                    Mode::IntentExclusive => locks.intent_exclusive(&key),
                    Mode::SharedIntentExclusive => locks.shared_intent_exclusive(&key),
                    other => unreachable!("not generated: {other}"),
                };
                if let Some(ms) = lease_ms {
                    req = req.lease(Duration::from_millis(ms as u64));
                }
                if owner {
                    req = req.owner(format!("owner-{id}"));
                }
                let got = req.try_acquire();
                let want = model.acquire(key, mode, lease_ms, id);
                match (got, want) {
                    (Ok(guard), Ok(_)) => {
                        let km = model.keys.get_mut(&key).expect("modelled");
                        let token = guard.token().as_u64();
                        prop_assert!(token > km.last_token, "token {token} after {} on key {key}", km.last_token);
                        km.last_token = token;
                        prop_assert_eq!(guard.mode(), mode);
                        guards.push(Held { id, key, guard });
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
            Op::Release { .. } | Op::Drop { .. } | Op::Renew { .. } => {}
        }
        // Every guard agrees with the model after every step.
        for held in &guards {
            let live = model.live.contains_key(&held.id);
            prop_assert_eq!(held.guard.is_held(), live, "is_held of guard {} on key {}", held.id, held.key);
            let want_deadline = if live { model.holder(held.id).and_then(|h| h.deadline) } else { None };
            prop_assert_eq!(held.guard.expires_at(), want_deadline.map(Duration::from_millis));
        }
        prop_assert!(locks.slot_count() >= model.live_keys());
        // The matrix holds on every key, as the manager reports its holders.
        for key in 0..3_u8 {
            let Some(info) = locks.inspect(&key) else { continue };
            if info.capacity != MAX_UNITS {
                continue;
            }
            for (i, a) in info.holders.iter().enumerate() {
                for b in &info.holders[i + 1..] {
                    prop_assert!(
                        compatible(a.mode.granule(), b.mode.granule()),
                        "{} beside {} on key {key}",
                        a.mode,
                        b.mode
                    );
                }
            }
        }
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
