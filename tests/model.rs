//! Differential test: random sequences of try_acquire / release / drop / renew / advance-time /
//! reclaim over a few keys and all three modes, checked step by step against a single-threaded
//! reference model (same outcome, same error, tokens strictly increasing per key, same
//! `is_held` and `expires_at` for every guard, same number of live slots).

use std::collections::BTreeMap;
use std::time::Duration;

use leasehold::{LockError, LockGuard, LockManager, ManualClock, Mode, MAX_UNITS};
use proptest::prelude::*;

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
    prop_oneof![Just(Mode::Exclusive), Just(Mode::Shared), (1_u32..=3).prop_map(Mode::Semaphore)]
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

/// One holder as the model sees it.
#[derive(Clone, Debug)]
struct Holder {
    id: usize,
    units: u32,
    /// Deadline in clock milliseconds.
    deadline: Option<u64>,
}

#[derive(Default, Debug)]
struct KeyModel {
    capacity: u32,
    holders: Vec<Holder>,
    last_token: u64,
}

impl KeyModel {
    fn held(&self) -> u32 {
        self.holders.iter().map(|h| h.units).sum()
    }
}

#[derive(Default, Debug)]
struct Model {
    now_ms: u64,
    keys: BTreeMap<u8, KeyModel>,
    /// Per guard id: the key, whether the model still considers it held.
    live: BTreeMap<usize, u8>,
}

impl Model {
    fn acquire(&mut self, key: u8, mode: Mode, lease_ms: Option<u8>, id: usize) -> Result<u32, LockError> {
        let km = self.keys.entry(key).or_default();
        if km.holders.is_empty() {
            km.capacity = match mode {
                Mode::Semaphore(n) => n,
                _ => MAX_UNITS,
            };
        } else {
            if let Mode::Semaphore(n) = mode {
                if n != km.capacity {
                    return Err(LockError::PermitMismatch { live: km.capacity, requested: n });
                }
            }
            let fits = match mode {
                Mode::Exclusive => km.held() == 0,
                _ => km.held() < km.capacity,
            };
            if !fits {
                return Err(LockError::WouldBlock);
            }
        }
        let units = if mode == Mode::Exclusive { km.capacity } else { 1 };
        km.holders.push(Holder { id, units, deadline: lease_ms.map(|ms| self.now_ms + ms as u64) });
        self.live.insert(id, key);
        Ok(units)
    }

    fn end(&mut self, id: usize) -> bool {
        match self.live.remove(&id) {
            Some(key) => {
                let km = self.keys.get_mut(&key).expect("a live guard's key is modelled");
                km.holders.retain(|h| h.id != id);
                true
            }
            None => false,
        }
    }

    fn holder(&mut self, id: usize) -> Option<&mut Holder> {
        let key = *self.live.get(&id)?;
        self.keys.get_mut(&key)?.holders.iter_mut().find(|h| h.id == id)
    }

    fn advance(&mut self, ms: u64) {
        self.now_ms += ms;
        let now = self.now_ms;
        let mut expired = Vec::new();
        for km in self.keys.values_mut() {
            km.holders.retain(|h| {
                let due = h.deadline.is_some_and(|d| d <= now);
                if due {
                    expired.push(h.id);
                }
                !due
            });
        }
        for id in expired {
            self.live.remove(&id);
        }
    }

    fn live_keys(&self) -> usize {
        self.keys.values().filter(|k| !k.holders.is_empty()).count()
    }

    /// Keys that must have a slot: held, or pinned by an expired guard that is still alive (its
    /// `key()` must stay readable).
    fn pinned_keys<'a>(&self, guards: impl Iterator<Item = (usize, u8)> + 'a) -> usize {
        let mut keys: std::collections::BTreeSet<u8> =
            self.keys.iter().filter(|(_, k)| !k.holders.is_empty()).map(|(&key, _)| key).collect();
        keys.extend(guards.filter(|(id, _)| !self.live.contains_key(id)).map(|(_, key)| key));
        keys.len()
    }
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
