//! The timer wheel (`leasehold::wheel::Wheel`) against a `BTreeMap` of deadlines: insert,
//! remove, reschedule and advance (poll until nothing is due), with stale keys (removed or fired)
//! used on purpose. After every step: `len` agrees, every key ever issued is live exactly when
//! the model has it (with the same deadline and value), and `next_expiration` is a lower bound on
//! every deadline that is not earlier than `elapsed`. An advance pops exactly the entries due by
//! then, in non-decreasing tick order, where an entry scheduled in the past counts as due at the
//! tick it was scheduled at.

#![no_main]

use std::collections::BTreeMap;

use arbitrary::Arbitrary;
use leasehold::wheel::{EntryKey, Wheel};
use libfuzzer_sys::fuzz_target;

const MAX_OPS: usize = 256;

/// A tick, relative to the wheel's current one or absolute.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum When {
    /// `elapsed + n`: the same or a nearby level-0 slot.
    Near(u8),
    /// `elapsed + n * 61`: a few levels up, crossing slot boundaries.
    Mid(u16),
    /// `elapsed + 2^(n % 64)`: every level, up to the top.
    Pow(u8),
    /// Anywhere in `u64`.
    Abs(u64),
    /// `elapsed - n`: overdue.
    Past(u8),
}

impl When {
    fn at(self, elapsed: u64) -> u64 {
        match self {
            When::Near(n) => elapsed.saturating_add(u64::from(n)),
            When::Mid(n) => elapsed.saturating_add(u64::from(n) * 61),
            When::Pow(n) => elapsed.saturating_add(1 << (n % 64)),
            When::Abs(t) => t,
            When::Past(n) => elapsed.saturating_sub(u64::from(n)),
        }
    }
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Op {
    Insert(When),
    /// The key of the `n % issued`-th entry ever inserted (maybe removed or fired).
    Remove(u16),
    Reschedule(u16, When),
    /// Poll until nothing is due at this tick.
    Advance(When),
}

#[derive(Arbitrary, Debug)]
struct Input {
    /// `Wheel::with_capacity(n % 8)`.
    capacity: u8,
    ops: Vec<Op>,
}

/// What the model knows of a live entry.
#[derive(Clone, Copy, Debug)]
struct Entry {
    when: u64,
    /// The tick it fires at: `max(when, elapsed when it was last scheduled)`.
    due: u64,
}

fn run(input: Input) {
    let mut wheel: Wheel<u32> = Wheel::with_capacity(usize::from(input.capacity % 8));
    // Every key issued, by value (= index here); and the live ones.
    let mut issued: Vec<EntryKey> = Vec::new();
    let mut live: BTreeMap<u32, Entry> = BTreeMap::new();
    let mut last_fired = 0_u64;
    let mut log: Vec<String> = Vec::new();
    macro_rules! check {
        ($cond:expr, $($msg:tt)+) => {
            if !$cond {
                panic!("{}\n\nsteps:\n{}\nwheel: {:?}", format!($($msg)+), log.join("\n"), wheel);
            }
        };
    }
    for op in input.ops.into_iter().take(MAX_OPS) {
        let elapsed = wheel.elapsed();
        match op {
            Op::Insert(w) => {
                let when = w.at(elapsed);
                let value = issued.len() as u32;
                log.push(format!("let k{value} = wheel.insert({when}, {value});"));
                let key = wheel.insert(when, value);
                issued.push(key);
                live.insert(value, Entry { when, due: when.max(elapsed) });
            }
            Op::Remove(i) if !issued.is_empty() => {
                let value = u32::from(i) % issued.len() as u32;
                let got = wheel.remove(issued[value as usize]);
                log.push(format!("wheel.remove(k{value}); // {got:?}"));
                let want = live.remove(&value).map(|_| value);
                check!(got == want, "remove(k{value}) gave {got:?}, the model says {want:?}");
            }
            Op::Reschedule(i, w) if !issued.is_empty() => {
                let value = u32::from(i) % issued.len() as u32;
                let when = w.at(elapsed);
                let got = wheel.reschedule(issued[value as usize], when);
                log.push(format!("wheel.reschedule(k{value}, {when}); // {got}"));
                let want = match live.get_mut(&value) {
                    Some(e) => {
                        *e = Entry { when, due: when.max(elapsed) };
                        true
                    }
                    None => false,
                };
                check!(got == want, "reschedule(k{value}) gave {got}, the model says {want}");
            }
            Op::Remove(_) | Op::Reschedule(..) => {}
            Op::Advance(w) => {
                let now = w.at(elapsed);
                log.push(format!("while let Some(_) = wheel.poll({now}) {{}}"));
                while let Some((key, value)) = wheel.poll(now) {
                    let entry = live.remove(&value);
                    check!(entry.is_some(), "poll({now}) fired k{value}, which the model does not have");
                    let entry = entry.expect("checked");
                    check!(issued.get(value as usize) == Some(&key), "poll fired k{value} under another key {key:?}");
                    check!(entry.due <= now.max(elapsed), "poll({now}) fired k{value} due at {} early", entry.due);
                    check!(
                        entry.due >= last_fired,
                        "k{value} due at {} fired after one due at {last_fired}",
                        entry.due
                    );
                    last_fired = entry.due;
                }
                let now = now.max(elapsed);
                check!(wheel.elapsed() == now, "elapsed {} after poll({now})", wheel.elapsed());
                let missed: Vec<_> = live.iter().filter(|(_, e)| e.due <= now).collect();
                check!(missed.is_empty(), "poll({now}) left due entries: {missed:?}");
            }
        }
        check!(wheel.len() == live.len(), "len {} but the model has {}", wheel.len(), live.len());
        check!(wheel.is_empty() == live.is_empty(), "is_empty disagrees");
        // Every key ever issued: after an advance (and at the end) all of them, else the one
        // this step touched (the last issued, removed or rescheduled).
        let touched = match op {
            Op::Advance(_) => 0..issued.len(),
            Op::Insert(_) => issued.len().saturating_sub(1)..issued.len(),
            Op::Remove(i) | Op::Reschedule(i, _) if !issued.is_empty() => {
                let i = usize::from(i) % issued.len();
                i..i + 1
            }
            Op::Remove(_) | Op::Reschedule(..) => 0..0,
        };
        for value in touched {
            check_key(&wheel, &issued, &live, value as u32, &log);
        }
        let earliest = live.values().map(|e| e.due).min();
        match (wheel.next_expiration(), earliest) {
            (None, None) => {}
            (Some(t), Some(due)) => {
                check!(t >= wheel.elapsed(), "next_expiration {t} before elapsed {}", wheel.elapsed());
                check!(t <= due, "next_expiration {t} after the earliest due tick {due}");
            }
            (got, want) => check!(false, "next_expiration {got:?}, but the earliest due tick is {want:?}"),
        }
    }
    for value in 0..issued.len() {
        check_key(&wheel, &issued, &live, value as u32, &log);
    }
}

/// Whether the entry issued as `value` is live exactly when the model has it, with its deadline
/// and value.
fn check_key(wheel: &Wheel<u32>, issued: &[EntryKey], live: &BTreeMap<u32, Entry>, value: u32, log: &[String]) {
    let key = issued[value as usize];
    let want = live.get(&value);
    let (when, got) = (wheel.when(key), wheel.get(key));
    if when != want.map(|e| e.when) || got != want.map(|_| &value) {
        panic!(
            "k{value}: when {when:?} get {got:?}, the model says {want:?}\n\nsteps:\n{}\nwheel: {wheel:?}",
            log.join("\n")
        );
    }
}

fuzz_target!(|input: Input| run(input));
