//! Differential fuzzing of the public API: bytes become a sequence of operations (acquire in
//! each mode with or without a lease and an owner, release, drop, renew, advance the clock,
//! reclaim) over a few keys, run on a manager with a `ManualClock` (and the default reaper, so
//! expiry runs inside `advance`) and, step by step, on a reference model. After every step the
//! outcome and error agree, tokens of a key strictly increase, and every live guard's `is_held`,
//! `expires_at` and `owner` agree with the model.
//!
//! The reference model is `tests/support/reference_model.rs`, shared with `tests/model.rs`. On a failure the panic message carries the run so
//! far as Rust statements against the public API: paste them into a regression test.

#![no_main]

use std::collections::hash_map::DefaultHasher;
use std::hash::BuildHasherDefault;
use std::time::Duration;

use arbitrary::Arbitrary;
use leasehold::{LockError, LockGuard, LockManager, ManualClock, Mode};
use libfuzzer_sys::fuzz_target;

#[path = "../../tests/support/reference_model.rs"]
mod reference_model;
use reference_model::Model;

/// Keys are `0..KEYS`: few, so that operations meet on them.
const KEYS: u8 = 4;
/// Longer inputs are cut here: every step checks every live guard, and short runs find the same
/// bugs faster.
const MAX_OPS: usize = 200;

/// A fixed-seed hasher: a failure must reproduce in the regression test made from it.
type Fixed = BuildHasherDefault<DefaultHasher>;

#[derive(Arbitrary, Debug)]
struct Input {
    /// Shards: 1, 2 or 4.
    shards: u8,
    /// Idle slots the table keeps before creations sweep: small values exercise the sweep on
    /// insert. `None`: the default.
    idle_slots: Option<u8>,
    /// A shrunken acquisition counter (1..=8), so that slots are rebased all the time.
    counter_limit: Option<u8>,
    ops: Vec<Op>,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum FuzzMode {
    Exclusive,
    Shared,
    /// Permits `n % 4`: zero is invalid.
    Semaphore(u8),
    IntentShared,
    IntentExclusive,
    SharedIntentExclusive,
}

impl FuzzMode {
    fn mode(self) -> Mode {
        match self {
            FuzzMode::Exclusive => Mode::Exclusive,
            FuzzMode::Shared => Mode::Shared,
            FuzzMode::Semaphore(n) => Mode::Semaphore(u32::from(n % 4)),
            FuzzMode::IntentShared => Mode::IntentShared,
            FuzzMode::IntentExclusive => Mode::IntentExclusive,
            FuzzMode::SharedIntentExclusive => Mode::SharedIntentExclusive,
        }
    }
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Op {
    /// `lease_ms == Some(0)` is an invalid lease.
    Acquire {
        key: u8,
        mode: FuzzMode,
        lease_ms: Option<u8>,
        owner: bool,
    },
    Release {
        guard: u8,
    },
    Drop {
        guard: u8,
    },
    Renew {
        guard: u8,
        ttl_ms: u8,
    },
    Advance {
        ms: u8,
    },
    Reclaim,
}

struct Held<'m> {
    id: usize,
    key: u8,
    owner: bool,
    guard: LockGuard<'m, u8, Fixed>,
}

/// The run so far as Rust statements, for the failure message.
struct Transcript(Vec<String>);

impl Transcript {
    fn fail(&self, what: String) -> ! {
        panic!("{what}\n\nreproducer (leasehold public API):\n{}\n", self.0.join("\n"));
    }
}

macro_rules! check {
    ($t:expr, $cond:expr, $($msg:tt)+) => {
        if !$cond {
            $t.fail(format!($($msg)+));
        }
    };
}

fn request_text(key: u8, mode: Mode, lease_ms: Option<u8>, owner: bool, id: usize) -> String {
    let mut s = match mode {
        Mode::Exclusive => format!("locks.exclusive(&{key})"),
        Mode::Shared => format!("locks.shared(&{key})"),
        Mode::Semaphore(n) => format!("locks.semaphore(&{key}, {n})"),
        Mode::IntentShared => format!("locks.intent_shared(&{key})"),
        Mode::IntentExclusive => format!("locks.intent_exclusive(&{key})"),
        Mode::SharedIntentExclusive => format!("locks.shared_intent_exclusive(&{key})"),
        other => format!("/* {other} */"),
    };
    if let Some(ms) = lease_ms {
        s += &format!(".lease(ms({ms}))");
    }
    if owner {
        s += &format!(".owner(\"owner-{id}\")");
    }
    s + ".try_acquire()"
}

fn run(input: Input) {
    let shards = 1_usize << (input.shards % 3);
    let clock = ManualClock::new();
    let mut builder = LockManager::<u8>::builder().clock(clock.clone()).shards(shards).hasher(Fixed::default());
    let mut setup = format!(
        "let ms = |n| Duration::from_millis(n);\nlet clock = ManualClock::new();\nlet locks = LockManager::<u8>::builder().clock(clock.clone()).shards({shards}).hasher(BuildHasherDefault::<DefaultHasher>::default())"
    );
    if let Some(n) = input.idle_slots {
        let n = usize::from(n % 8);
        builder = builder.idle_slots(n);
        setup += &format!(".idle_slots({n})");
    }
    let counter_limit = input.counter_limit.map(|n| u64::from(n % 8) + 1);
    if let Some(limit) = counter_limit {
        builder = builder.counter_limit(limit);
        setup += &format!(".counter_limit({limit})");
    }
    setup += ".build().unwrap();";
    let locks = builder.build().expect("a valid configuration");
    let mut t = Transcript(vec![setup]);
    let mut model = Model::default();
    let mut guards: Vec<Held<'_>> = Vec::new();
    for (id, op) in input.ops.into_iter().take(MAX_OPS).enumerate() {
        match op {
            Op::Acquire { key, mode, lease_ms, owner } => {
                let key = key % KEYS;
                let mode = mode.mode();
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
                    req = req.lease(Duration::from_millis(u64::from(ms)));
                }
                if owner {
                    req = req.owner(format!("owner-{id}"));
                }
                let got = req.try_acquire();
                let want = model.acquire(key, mode, lease_ms, id);
                let text = request_text(key, mode, lease_ms, owner, id);
                match (got, want) {
                    (Ok(guard), Ok(_)) => {
                        let token = guard.token().as_u64();
                        t.0.push(format!("let g{id} = {text}.unwrap(); // token {token}"));
                        let km = model.keys.get_mut(&key).expect("an acquired key is modelled");
                        check!(t, token > km.last_token, "token {token} after {} on key {key}", km.last_token);
                        km.last_token = token;
                        check!(t, guard.mode() == mode, "guard mode {:?}, asked for {mode:?}", guard.mode());
                        check!(t, *guard.key() == key, "guard key {}", guard.key());
                        guards.push(Held { id, key, owner, guard });
                    }
                    (Err(e), Err(w)) => {
                        t.0.push(format!("let _ = {text}; // Err({e:?})"));
                        check!(t, e == w, "acquire: got {e:?}, the model says {w:?}");
                    }
                    // A spent acquisition counter makes requests wait for the key to drain: with
                    // a shrunken limit the only allowed divergence is a refusal the model would
                    // not make.
                    (Err(LockError::WouldBlock), Ok(_)) if counter_limit.is_some() => {
                        t.0.push(format!("let _ = {text}; // Err(WouldBlock): counter spent"));
                        model.end(id);
                    }
                    (got, want) => {
                        t.0.push(format!("let _ = {text}; // {:?}", got.as_ref().map(|g| g.token())));
                        t.fail(format!("acquire: got {:?}, the model says {want:?}", got.map(|g| g.token())));
                    }
                }
            }
            Op::Release { guard } | Op::Drop { guard } if !guards.is_empty() => {
                let held = guards.remove(usize::from(guard) % guards.len());
                let live = model.end(held.id);
                if matches!(op, Op::Release { .. }) {
                    let got = held.guard.release();
                    t.0.push(format!("let _ = g{}.release(); // {got:?}", held.id));
                    let want = if live { Ok(()) } else { Err(LockError::Expired) };
                    check!(t, got == want, "release: got {got:?}, the model says {want:?}");
                } else {
                    t.0.push(format!("drop(g{});", held.id));
                    drop(held.guard);
                }
            }
            Op::Renew { guard, ttl_ms } if !guards.is_empty() => {
                let held = &guards[usize::from(guard) % guards.len()];
                let got = held.guard.renew(Duration::from_millis(u64::from(ttl_ms)));
                t.0.push(format!("let _ = g{}.renew(ms({ttl_ms})); // {got:?}", held.id));
                let now = model.now_ms;
                let want = if ttl_ms == 0 {
                    Err(LockError::InvalidTtl { ttl: Duration::ZERO })
                } else if let Some(h) = model.holder(held.id) {
                    h.deadline = Some(now + u64::from(ttl_ms));
                    Ok(())
                } else {
                    Err(LockError::Expired)
                };
                check!(t, got == want, "renew: got {got:?}, the model says {want:?}");
            }
            Op::Advance { ms } => {
                t.0.push(format!("clock.advance(ms({ms}));"));
                clock.advance(Duration::from_millis(u64::from(ms)));
                model.advance(u64::from(ms));
            }
            Op::Reclaim => {
                let n = locks.reclaim_idle();
                t.0.push(format!("locks.reclaim_idle(); // {n}, leaving {}", locks.slot_count()));
                let want = model.pinned_keys(guards.iter().map(|h| (h.id, h.key)));
                check!(
                    t,
                    locks.slot_count() == want,
                    "{} slots after reclaim_idle, the model pins {want}",
                    locks.slot_count()
                );
            }
            Op::Release { .. } | Op::Drop { .. } | Op::Renew { .. } => {}
        }
        // Every guard agrees with the model after every step.
        for held in &guards {
            let live = model.live.contains_key(&held.id);
            let g = &held.guard;
            check!(t, g.is_held() == live, "g{}.is_held() is {}, the model says {live}", held.id, g.is_held());
            let want = if live { model.holder(held.id).and_then(|h| h.deadline) } else { None };
            let want = want.map(Duration::from_millis);
            check!(
                t,
                g.expires_at() == want,
                "g{}.expires_at() is {:?}, the model says {want:?}",
                held.id,
                g.expires_at()
            );
            let owner = g.owner().map(|o| o.as_str().to_owned());
            let want = (live && held.owner).then(|| format!("owner-{}", held.id));
            check!(t, owner == want, "g{}.owner() is {owner:?}, the model says {want:?}", held.id);
        }
        check!(
            t,
            locks.slot_count() >= model.live_keys(),
            "{} slots for {} held keys",
            locks.slot_count(),
            model.live_keys()
        );
    }
    drop(guards);
    t.0.push("// every guard dropped".into());
    locks.reclaim_idle();
    check!(t, locks.slot_count() == 0, "{} slots left once every guard is gone", locks.slot_count());
}

fuzz_target!(|input: Input| run(input));
