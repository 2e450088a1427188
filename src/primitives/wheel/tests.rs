//! Tests of the timer wheel: unit cases, and differential runs against a `BTreeMap` model.

use super::*;
use std::collections::{BTreeMap, HashMap};

/// Reference level: the highest digit in which `a` and `b` differ, by loop.
fn level_ref(a: u64, b: u64) -> usize {
    (0..NUM_LEVELS)
        .rev()
        .find(|&l| {
            let s = l as u32 * LEVEL_BITS;
            a.checked_shr(s).unwrap_or(0) != b.checked_shr(s).unwrap_or(0)
        })
        .unwrap_or(0)
}

fn span(level: usize) -> u64 {
    1u64 << (level as u32 * LEVEL_BITS)
}

#[test]
fn layout() {
    assert_eq!(NUM_LEVELS, 11);
    assert!(NUM_LEVELS as u32 * LEVEL_BITS >= u64::BITS);
    assert_eq!(level_for(0, u64::MAX), NUM_LEVELS - 1);
    assert_eq!(slot_for(u64::MAX, NUM_LEVELS - 1), 15);
}

#[test]
fn level_for_boundaries() {
    let check = |elapsed: u64, when: u64| {
        assert_eq!(
            level_for(elapsed, when),
            level_ref(elapsed, when),
            "level_for(elapsed={elapsed:#066b}, when={when:#066b})"
        );
    };
    // From zero, the levels change exactly at powers of 64.
    for level in 0..NUM_LEVELS {
        let s = span(level);
        assert_eq!(level_for(0, s), level, "when={s:#b}");
        if level > 0 {
            assert_eq!(level_for(0, s - 1), level - 1, "when={:#b}", s - 1);
            assert_eq!(level_for(0, s + 1), level, "when={:#b}", s + 1);
        }
    }
    let elapsed_set = [
        0,
        1,
        62,
        63,
        64,
        65,
        4095,
        4097,
        0x5555_5555_5555_5555,
        0x0123_4567_89ab_cdef,
        (1 << 36) - 1,
        1 << 40,
        u64::MAX / 2,
        u64::MAX - (1 << 20),
    ];
    for &elapsed in &elapsed_set {
        for level in 0..NUM_LEVELS {
            let s = span(level);
            let level_span = s.checked_mul(SLOTS as u64);
            let ds = [Some(s - 1), Some(s), Some(s + 1)].into_iter().chain([
                level_span.map(|l| l - 1),
                level_span,
                level_span.map(|l| l + 1),
            ]);
            for d in ds.flatten() {
                if let Some(when) = elapsed.checked_add(d) {
                    check(elapsed, when);
                }
            }
            // Just below, at and after the next boundary of this level from `elapsed`.
            let next = level_span.and_then(|l| slot_start(elapsed, level, 0).checked_add(l));
            if let Some(b) = next.filter(|&b| b > elapsed) {
                check(elapsed, b - 1);
                check(elapsed, b);
                check(elapsed, b.saturating_add(1));
            }
        }
        check(elapsed, elapsed);
        check(elapsed, u64::MAX);
    }
}

#[test]
fn slot_for_boundaries() {
    for level in 0..NUM_LEVELS {
        let slots = if level == NUM_LEVELS - 1 { 16 } else { SLOTS };
        for pos in 0..slots as u64 {
            let first = pos * span(level);
            let last = first + (span(level) - 1);
            for when in [first, last] {
                assert_eq!(slot_for(when, level), pos as usize, "slot_for(when={when:#066b}, level={level})");
            }
        }
    }
}

#[test]
fn slot_start_boundaries() {
    for &elapsed in &[0u64, 1, 63, 64, 0x0123_4567_89ab_cdef, u64::MAX] {
        for level in 0..NUM_LEVELS {
            let slots = if level == NUM_LEVELS - 1 { 16 } else { SLOTS };
            for slot in 0..slots {
                let start = slot_start(elapsed, level, slot);
                let msg = format!("slot_start(elapsed={elapsed:#066b}, level={level}, slot={slot}) = {start:#066b}");
                assert_eq!(slot_for(start, level), slot, "{msg}");
                assert_eq!(start % span(level), 0, "{msg}");
                for l in level + 1..NUM_LEVELS {
                    assert_eq!(slot_for(start, l), slot_for(elapsed, l), "{msg}");
                }
            }
        }
    }
}

#[test]
fn place_boundaries() {
    for &elapsed in &[0u64, 1, 63, 64, 4095, 0x0123_4567_89ab_cdef, u64::MAX] {
        // Past and present deadlines share the current tick's slot.
        for when in [0, elapsed / 2, elapsed.saturating_sub(1), elapsed] {
            assert_eq!(
                place(elapsed, when),
                (0, slot_for(elapsed, 0)),
                "place(elapsed={elapsed:#066b}, when={when:#066b})"
            );
        }
        for level in 0..NUM_LEVELS {
            for d in [span(level), span(level) + 1, span(level) * 2 - 1] {
                let Some(when) = elapsed.checked_add(d) else {
                    continue;
                };
                let (l, s) = place(elapsed, when);
                let msg = format!("place(elapsed={elapsed:#066b}, when={when:#066b})");
                assert_eq!(l, level_ref(elapsed, when), "{msg}");
                assert_eq!(s, slot_for(when, l), "{msg}");
                // A future slot starts after elapsed and no later than when.
                let start = slot_start(elapsed, l, s);
                assert!(start > elapsed && start <= when, "{msg} start={start:#066b}");
            }
        }
    }
}

fn drain<T>(w: &mut Wheel<T>, now: u64) -> Vec<(EntryKey, T)> {
    std::iter::from_fn(|| w.poll(now)).collect()
}

#[test]
fn insert_poll_order() {
    let mut w = Wheel::new();
    let mut rng = Rng(7);
    let whens: Vec<u64> = (0..2000).map(|_| rng.below(300_000)).collect();
    for &t in &whens {
        w.insert(t, t);
    }
    w.check_invariants();
    let mut got = Vec::new();
    for now in 0..=300_000 {
        while let Some((_, t)) = w.poll(now) {
            assert_eq!(t, now, "fired at the wrong tick");
            got.push(t);
        }
    }
    let mut want = whens.clone();
    want.sort_unstable();
    assert_eq!(got, want);
    assert!(w.is_empty());
    assert_eq!(w.next_expiration(), None);
}

#[test]
fn dense_slots_cascade_in_batches() {
    // Thousands of entries per slot: every lane is long, and cascades
    // take many batches. Deadlines start in one level-2 slot.
    let mut w = Wheel::with_capacity(20_000);
    let base = 5 * 4096;
    let mut rng = Rng(99);
    let mut whens = HashMap::new();
    for i in 0..20_000u64 {
        // A quarter share a single tick; the rest spread over the slot.
        let when = if i % 4 == 0 { base + 100 } else { base + rng.below(4096) };
        whens.insert(w.insert(when, i), when);
    }
    // Remove every 7th key so lanes have holes at heads, tails, middles.
    let doomed: Vec<EntryKey> = whens.keys().copied().step_by(7).collect();
    for k in &doomed {
        assert!(w.remove(*k).is_some());
        whens.remove(k);
    }
    w.check_invariants();
    let mut fired = 0;
    for now in 0..=base + 4096 {
        while let Some((k, _)) = w.poll(now) {
            assert_eq!(w.when(k), None);
            assert_eq!(whens.remove(&k), Some(now), "fired at the wrong tick");
            fired += 1;
        }
        if now % 1000 == 0 {
            w.check_invariants();
        }
    }
    assert_eq!(fired, 20_000 - doomed.len());
    assert!(w.is_empty() && whens.is_empty());
}

#[test]
fn with_capacity_prebuilds_the_free_list() {
    let mut w = Wheel::with_capacity(100);
    assert_eq!((w.nodes.len(), w.len()), (100, 0));
    w.check_invariants();
    let keys: Vec<_> = (0..100).map(|i| w.insert(i, i)).collect();
    // Filled front to back, no growth.
    assert_eq!(keys.iter().map(|k| k.0).collect::<Vec<_>>(), (0..100).collect::<Vec<_>>());
    assert_eq!(w.nodes.len(), 100);
    w.insert(7, 7);
    assert_eq!(w.nodes.len(), 101);
    w.check_invariants();
    assert!(format!("{w:?}").contains("len: 101"));
    let mut empty: Wheel<()> = Wheel::default();
    assert!(empty.is_empty() && empty.poll(u64::MAX).is_none());
    assert_eq!(empty.elapsed(), u64::MAX);
}

#[test]
fn big_jump_returns_due_in_order() {
    let mut w = Wheel::new();
    for t in [5u64, 64, 4096, 1 << 20, (1 << 36) + 3, 1 << 50, u64::MAX - 1] {
        w.insert(t, t);
    }
    let got: Vec<u64> = drain(&mut w, 1 << 36).into_iter().map(|(_, t)| t).collect();
    assert_eq!(got, [5, 64, 4096, 1 << 20]);
    assert_eq!(w.elapsed(), 1 << 36);
    assert_eq!(w.next_expiration(), Some((1 << 36) + 3));
    let got: Vec<u64> = drain(&mut w, u64::MAX).into_iter().map(|(_, t)| t).collect();
    assert_eq!(got, [(1 << 36) + 3, 1 << 50, u64::MAX - 1]);
    assert_eq!(w.elapsed(), u64::MAX);
}

#[test]
fn far_future_fires_exactly() {
    // Nothing is clamped: each far deadline cascades through every level
    // and fires at the first poll with now >= when, never one tick early.
    for when in [1u64 << 36, (1 << 36) + 1, (1 << 60) - 1, 1 << 60, u64::MAX] {
        let mut w = Wheel::new();
        w.poll(when >> 1);
        let k = w.insert(when, ());
        assert!(w.next_expiration().unwrap() <= when);
        assert!(w.poll(when - 1).is_none(), "early: when={when:#066b}");
        w.check_invariants();
        assert_eq!(w.when(k), Some(when));
        assert_eq!(w.next_expiration(), Some(when), "when={when:#066b}");
        assert_eq!(w.poll(when).map(|(k, _)| k), Some(k));
        assert_eq!(w.elapsed(), when);
    }
}

#[test]
fn overdue_and_backwards_now() {
    let mut w = Wheel::new();
    w.poll(1000);
    let k = w.insert(10, "past");
    let n = w.insert(1000, "now");
    assert_eq!(w.next_expiration(), Some(1000));
    // A `now` below elapsed is treated as elapsed.
    let mut got: Vec<_> = drain(&mut w, 3).into_iter().map(|(k, _)| k).collect();
    got.sort_by_key(|k| k.0);
    assert_eq!(got, [k, n]);
    assert_eq!(w.elapsed(), 1000);
}

#[test]
fn remove_and_reschedule() {
    let mut w = Wheel::new();
    let a = w.insert(100, 'a');
    let b = w.insert(200, 'b');
    let c = w.insert(5000, 'c');
    assert_eq!(w.len(), 3);
    assert_eq!(w.remove(b), Some('b'));
    assert_eq!(w.remove(b), None);
    assert_eq!(w.len(), 2);
    // Later, then earlier, then into the past.
    assert!(w.reschedule(a, 7000));
    assert_eq!(w.when(a), Some(7000));
    assert!(w.reschedule(c, 50));
    assert_eq!(w.next_expiration(), Some(50));
    assert!(drain(&mut w, 49).is_empty());
    assert_eq!(drain(&mut w, 50).into_iter().map(|(_, v)| v).collect::<Vec<_>>(), ['c']);
    assert!(w.reschedule(a, 3));
    assert_eq!(w.next_expiration(), Some(50));
    assert_eq!(drain(&mut w, 50).into_iter().map(|(k, _)| k).collect::<Vec<_>>(), [a]);
    let x = w.insert(60, 'x');
    *w.get_mut(x).unwrap() = 'y';
    assert_eq!(drain(&mut w, 60)[0].1, 'y');
    w.check_invariants();
    assert!(w.is_empty());
}

#[test]
fn stale_keys_never_touch_reused_nodes() {
    let mut w = Wheel::new();
    let a = w.insert(10, 1);
    assert_eq!(w.remove(a), Some(1));
    // The freed node is reused; the old key must not address it.
    let b = w.insert(20, 2);
    assert_eq!(a.0, b.0, "slab index reused");
    assert_ne!(a, b);
    assert_eq!(w.get(a), None);
    assert_eq!(w.when(a), None);
    assert!(!w.reschedule(a, 5));
    assert_eq!(w.remove(a), None);
    assert_eq!(w.get(b), Some(&2));
    // Fired keys are stale too.
    let (fired, v) = w.poll(20).unwrap();
    assert_eq!((fired, v), (b, 2));
    assert_eq!(w.remove(b), None);
    assert!(w.get_mut(b).is_none());
    assert!(!w.reschedule(b, 30));
    // Out-of-range index.
    assert_eq!(w.get(EntryKey(99, 0)), None);
    assert!(w.is_empty());
}

#[test]
fn slab_reuses_without_growth() {
    let mut w = Wheel::with_capacity(64);
    let cap = w.nodes.capacity();
    let mut keys: Vec<_> = (0..64).map(|i| w.insert(i * 37, i)).collect();
    for round in 0..100u64 {
        for k in keys.iter_mut() {
            let v = w.remove(*k).unwrap();
            *k = w.insert(round * 1000 + v * 13, v);
        }
    }
    assert_eq!(w.nodes.len(), 64);
    assert_eq!(w.nodes.capacity(), cap);
    w.check_invariants();
}

#[test]
fn next_expiration_is_a_lower_bound() {
    let mut w = Wheel::new();
    assert_eq!(w.next_expiration(), None);
    w.insert(4000, ());
    // Level 1, slot 62 starts at 3968: early but never late.
    assert_eq!(w.next_expiration(), Some(3968));
    assert!(drain(&mut w, 3968).is_empty());
    assert_eq!(w.next_expiration(), Some(4000));
    w.insert(3990, ());
    assert_eq!(w.next_expiration(), Some(3990));
    assert_eq!(drain(&mut w, 3999).len(), 1);
    assert_eq!(w.next_expiration(), Some(4000));
    w.insert(0, ());
    assert_eq!(w.next_expiration(), Some(3999));
}

/// xorshift64*: small, deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Reference model: entries ordered by (when, seq), plus a key list for
/// picking a random live key in O(1).
#[derive(Default)]
struct Model {
    by_time: BTreeMap<(u64, u64), EntryKey>,
    by_key: HashMap<EntryKey, (u64, u64, usize)>,
    keys: Vec<EntryKey>,
}

impl Model {
    fn insert(&mut self, key: EntryKey, when: u64, seq: u64) {
        self.by_time.insert((when, seq), key);
        self.by_key.insert(key, (when, seq, self.keys.len()));
        self.keys.push(key);
    }
    fn remove(&mut self, key: EntryKey) -> Option<(u64, u64)> {
        let (when, seq, pos) = self.by_key.remove(&key)?;
        self.by_time.remove(&(when, seq));
        self.keys.swap_remove(pos);
        if let Some(moved) = self.keys.get(pos) {
            self.by_key.get_mut(moved).unwrap().2 = pos;
        }
        Some((when, seq))
    }
    fn pick(&self, rng: &mut Rng) -> Option<EntryKey> {
        (!self.keys.is_empty()).then(|| self.keys[rng.below(self.keys.len() as u64) as usize])
    }
}

/// Random ops against the wheel and the model in lockstep. `huge_bits`
/// bounds the rare huge time jumps (kept below 64 so elapsed doesn't pin
/// at u64::MAX and make every later insert overdue).
fn differential(seed: u64, ops: usize, start: u64, huge_bits: u32) {
    let mut rng = Rng(seed);
    let mut w: Wheel<u64> = Wheel::new();
    let mut m = Model::default();
    let mut dead: Vec<EntryKey> = Vec::new();
    let (mut seq, mut fired, mut max_len) = (0u64, 0usize, 0usize);
    w.poll(start);
    // Deadline offsets: mostly near, some at every level, some anywhere.
    let delta = |rng: &mut Rng| match rng.below(100) {
        0..=39 => rng.below(64),
        40..=69 => rng.below(5000),
        70..=89 => rng.below(1 << 24),
        90..=97 => rng.below(1 << 50),
        _ => rng.next(),
    };
    // A new deadline: overdue, due now, or in the future.
    let deadline = |rng: &mut Rng, e: u64| match rng.below(10) {
        0 => e.saturating_sub(rng.below(100)),
        _ => e.saturating_add(delta(rng)),
    };
    for op in 0..ops {
        let e = w.elapsed();
        // Alternate phases: in a growth phase most advances become inserts,
        // so the wheel also gets tested holding a few thousand entries.
        let roll = match rng.below(100) {
            r @ (45..=54 | 80..=99) if (op / 3000) % 2 == 0 => r % 45,
            r => r,
        };
        match roll {
            0..=44 => {
                let when = deadline(&mut rng, e);
                seq += 1;
                let k = w.insert(when, seq);
                m.insert(k, when, seq);
            }
            // Remove a live key, or try a stale one.
            45..=54 => match m.pick(&mut rng).filter(|_| rng.below(8) != 0) {
                Some(k) => {
                    let (_, s) = m.remove(k).unwrap();
                    assert_eq!(w.remove(k), Some(s));
                    dead.push(k);
                }
                None => {
                    if let Some(&k) = dead.get(rng.below(dead.len() as u64 + 1) as usize) {
                        assert_eq!(w.remove(k), None);
                        assert!(!w.reschedule(k, e));
                        assert!(w.get(k).is_none());
                        assert!(w.when(k).is_none());
                    }
                }
            },
            // Reschedule earlier or later (or into the past).
            55..=74 => {
                if let Some(k) = m.pick(&mut rng) {
                    let (_, s) = m.remove(k).unwrap();
                    let when = deadline(&mut rng, e);
                    assert!(w.reschedule(k, when));
                    m.insert(k, when, s);
                    assert_eq!(w.when(k), Some(when));
                    assert_eq!(w.get(k), Some(&s));
                }
            }
            // Advance: mostly small, rarely huge, sometimes backwards.
            _ => {
                let now = match rng.below(1000) {
                    0 => e.saturating_add(rng.below(1 << huge_bits)),
                    1..=99 => e.saturating_sub(rng.below(10)),
                    100..=799 => e + rng.below(16).min(u64::MAX - e),
                    800..=979 => e.saturating_add(rng.below(500)),
                    _ => e.saturating_add(rng.below(1 << 16)),
                };
                let eff = now.max(e);
                let mut last = e;
                while let Some((k, v)) = w.poll(now) {
                    let (when, s) = m.remove(k).expect("fired key unknown to model");
                    assert_eq!(v, s);
                    assert!(when <= eff, "early: when={when:#b} now={eff:#b}");
                    // Non-decreasing firing tick; overdue entries count as `e`.
                    let tick = when.max(e);
                    assert!(tick >= last, "out of order: {tick:#b} after {last:#b}");
                    // Fired at exactly its tick: the first poll with now >= when.
                    assert_eq!(tick, w.elapsed(), "late: when={when:#b}");
                    last = tick;
                    fired += 1;
                    dead.push(k);
                }
                assert_eq!(w.elapsed(), eff);
                // Nothing the model says is due may remain.
                if let Some(&(when, _)) = m.by_time.keys().next() {
                    assert!(when > eff, "missed: when={when:#b} now={eff:#b}");
                }
            }
        }
        if dead.len() > 4096 {
            dead.drain(..2048);
        }
        assert_eq!(w.len(), m.keys.len());
        max_len = max_len.max(w.len());
        let min = m.by_time.keys().next().map(|&(when, _)| when);
        match (w.next_expiration(), min) {
            (None, None) => {}
            (Some(n), Some(min)) => assert!(
                n >= w.elapsed() && n <= min.max(w.elapsed()),
                "next_expiration={n:#b} min={min:#b} elapsed={:#b}",
                w.elapsed()
            ),
            (n, min) => panic!("next_expiration={n:?} but model min={min:?}"),
        }
        if op % 997 == 0 {
            w.check_invariants();
        }
    }
    w.check_invariants();
    // Guard against a generator that stopped exercising the wheel.
    assert!(fired > ops / 10 && max_len > 400, "fired={fired} max_len={max_len}");
    assert!(w.elapsed() < u64::MAX, "elapsed pinned at u64::MAX");
}

#[test]
fn differential_against_btreemap() {
    for seed in 1..=4u64 {
        differential(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15), 25_000, 0, 48);
    }
}

#[test]
fn differential_near_u64_max() {
    // Every level's top digits are all ones here; slot starts sit near overflow.
    differential(0xdead_beef, 20_000, u64::MAX - (1 << 40), 32);
}
