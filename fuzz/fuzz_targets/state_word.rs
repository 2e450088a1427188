//! The slot state word's pure transitions (`leasehold::word`): single claims on arbitrary words,
//! and sequences of claims, releases and flag changes from a sane word, checked against what the
//! word must mean: units never exceed the capacity, an exclusive holder is alone, the acquisition
//! counter grows by one per claim, the record bits are exactly the inline records held (each by
//! one holding), a refusal has exactly the documented reason, and a release gives back the word.
//!
//! Contract of the transitions (what the slot module guarantees its callers): capacities are in
//! `1..=MAX_UNITS` and counter limits in `0..=COUNTER_MAX`.

#![no_main]

use arbitrary::Arbitrary;
use leasehold::word::{
    self, Need, Refusal, CAP_CHANGING, COUNTER_MASK, COUNTER_MAX, COUNTER_ONE, DEAD, EXCL_WAITING, INLINE_RECORDS,
    MATRIX, OVERFLOW, REBASE_CLEARS, UPGRADING, WAITERS, WATCHED,
};
use leasehold::{MAX_PERMITS, MAX_UNITS};
use libfuzzer_sys::fuzz_target;


const MAX_STEPS: usize = 256;

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Cap {
    /// `1 + n % 8`: around the inline-record count.
    Small(u8),
    /// `1 + n % MAX_PERMITS`.
    Permits(u32),
    /// A semaphore's largest.
    MaxPermits,
    /// A read/write key.
    ReadWrite,
}

impl Cap {
    fn get(self) -> u32 {
        match self {
            Cap::Small(n) => 1 + u32::from(n % 8),
            Cap::Permits(n) => 1 + n % MAX_PERMITS,
            Cap::MaxPermits => MAX_PERMITS,
            Cap::ReadWrite => MAX_UNITS,
        }
    }
}

#[derive(Arbitrary, Debug, Clone, Copy)]
struct FuzzNeed {
    exclusive: bool,
    privileged: bool,
    watch: bool,
}

impl FuzzNeed {
    fn need(self) -> Need {
        Need { exclusive: self.exclusive, privileged: self.privileged, watch: self.watch }
    }
}

/// A counter limit: `None` is the real one, `Some(n)` a shrunken one (`n % (COUNTER_MAX + 1)`).
fn limit(l: Option<u64>) -> u64 {
    l.map_or(COUNTER_MAX, |n| n % (COUNTER_MAX + 1))
}

/// One claim on an arbitrary word.
#[derive(Arbitrary, Debug)]
struct Single {
    word: u64,
    cap: Cap,
    need: FuzzNeed,
    limit: Option<u64>,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Flag {
    Waiters,
    ExclWaiting,
    Watched,
    /// The matrix flag: the lock-free claim refuses as busy, and no transition touches it.
    Matrix,
}

impl Flag {
    fn bit(self) -> u64 {
        match self {
            Flag::Waiters => WAITERS,
            Flag::ExclWaiting => EXCL_WAITING,
            Flag::Watched => WATCHED,
            Flag::Matrix => MATRIX,
        }
    }
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Step {
    Claim(FuzzNeed),
    /// Release holding `n % holdings`.
    Release(u8),
    Set(Flag),
    Clear(Flag),
    /// Reset the counter if nobody holds a unit (what `Slot::rebase` does).
    Rebase,
    /// Kill the slot if idle, and bring it back (`dead_from`, then `reborn`).
    Reincarnate,
}

/// A sequence from a sane word: idle, with this counter and these flags.
#[derive(Arbitrary, Debug)]
struct Sequence {
    counter: u32,
    flags: [bool; 4],
    cap: Cap,
    limit: Option<u64>,
    steps: Vec<Step>,
}

#[derive(Arbitrary, Debug)]
struct Input {
    singles: Vec<Single>,
    sequence: Sequence,
}

/// The documented refusal for `need` on `word`, if any.
fn refusal(word: u64, cap: u32, need: Need, limit: u64) -> Option<Refusal> {
    let held = word::units(word);
    if word & (DEAD | CAP_CHANGING) != 0 {
        Some(Refusal::Unstable)
    } else if word & MATRIX != 0
        || need.exclusive && held != 0
        || !need.exclusive && (held >= cap || word & EXCL_WAITING != 0 && !need.privileged)
        || !need.exclusive && word & UPGRADING != 0
    {
        Some(Refusal::Busy)
    } else if word::counter(word) >= limit {
        Some(Refusal::Exhausted)
    } else {
        None
    }
}

fn check_single(s: &Single) {
    let (word, cap, need, limit) = (s.word, s.cap.get(), s.need.need(), limit(s.limit));
    let got = word::try_claim(word, cap, need, limit);
    let ctx = format!("try_claim({word:#066b}, {cap}, {need:?}, {limit})");
    match (got, refusal(word, cap, need, limit)) {
        (Err(r), Some(want)) => assert_eq!(r, want, "{ctx}: wrong reason"),
        (Ok(c), None) => {
            let held = word::units(word);
            let taken = word::units_for(need, cap);
            assert_eq!(c.units, taken, "{ctx}");
            assert_eq!(word::units(c.word), held + taken, "{ctx}: units");
            assert!(word::units(c.word) <= cap, "{ctx}: over capacity");
            assert!(!need.exclusive || held == 0, "{ctx}: exclusive beside a holder");
            assert_eq!(word::counter(c.word), word::counter(word) + 1, "{ctx}: counter");
            let recs = word::records(word);
            if c.record == OVERFLOW {
                assert_eq!(recs, 0xF, "{ctx}: overflow with a free record");
                assert_eq!(word::records(c.word), 0xF, "{ctx}");
            } else {
                assert!(usize::from(c.record) < INLINE_RECORDS, "{ctx}: record {}", c.record);
                assert_eq!(recs & ((1 << c.record) - 1), (1 << c.record) - 1, "{ctx}: not the lowest free record");
                assert!(!word::holds_record(word, c.record), "{ctx}: took a held record");
                assert_eq!(word::records(c.word), recs | (1 << c.record), "{ctx}: records");
            }
            // Besides units, records and the counter, the claim sets WATCHED for a lease, and
            // nothing else moves.
            let watch = if need.watch { WATCHED } else { 0 };
            let rest = !(COUNTER_MASK | 0xF << 52 | u64::from(MAX_UNITS) | WATCHED);
            assert_eq!(c.word & rest, word & rest, "{ctx}: other bits moved: {:#066b}", c.word);
            assert_eq!(c.word & WATCHED, watch | (word & WATCHED), "{ctx}: WATCHED");
            // A release gives back the word, the claim's counter and WATCHED apart.
            let back = c.word - word::release_delta(c.record, c.units);
            assert_eq!(back, (word + COUNTER_ONE) | watch, "{ctx}: the release does not give back the word");
        }
        (got, want) => panic!("{ctx} gave {got:?}, but the refusal should be {want:?}"),
    }
    // The lock-free path's claims (engine/word.rs) are `try_claim`'s where they apply: the bare
    // claim is the exclusive one on a read/write key without the record (on a sane word: a
    // record belongs to a holding, which holds units), the unit claim the plain shared one when
    // that takes an inline record.
    if cap == MAX_UNITS && (word::units(word) != 0 || word::records(word) == 0) {
        let excl = Need { exclusive: true, privileged: false, watch: false };
        assert_eq!(
            word::bare_claimable(word, limit),
            word::try_claim_bare(word, limit).is_ok(),
            "{ctx}: bare_claimable is try_claim_bare's success"
        );
        match (word::try_claim_bare(word, limit), word::try_claim(word, cap, excl, limit)) {
            (Ok(next), Ok(c)) => {
                assert_eq!(c.record, 0, "{ctx}: bare claim where the full one takes record {}", c.record);
                assert_eq!(next, c.word - word::record_bit(0), "{ctx}: bare claim");
            }
            (Err(a), Err(b)) => assert_eq!(a, b, "{ctx}: bare claim's reason"),
            (bare, full) => panic!("{ctx}: bare claim {bare:?}, exclusive claim {full:?}"),
        }
        // The exclusive lease's claim is the exclusive watched one, record 0 and all.
        let watched = Need { exclusive: true, privileged: false, watch: true };
        match (word::try_claim_exclusive_watched(word, limit), word::try_claim(word, cap, watched, limit)) {
            (Ok(next), Ok(c)) => assert_eq!((c.record, next), (0, c.word), "{ctx}: exclusive watched claim"),
            (Err(a), Err(b)) => assert_eq!(a, b, "{ctx}: exclusive watched claim's reason"),
            (ours, full) => panic!("{ctx}: exclusive watched claim {ours:?}, exclusive claim {full:?}"),
        }
    }
    let shared = Need { exclusive: false, privileged: false, watch: false };
    let want = match word::try_claim(word, cap, shared, limit) {
        Ok(c) if c.record != OVERFLOW => Some(c),
        _ => None,
    };
    assert_eq!(word::try_claim_unit(word, cap, limit), want, "{ctx}: unit claim");
    // The incarnation helpers keep the counter and nothing else.
    let dead = word::dead_from(word);
    assert_eq!(dead, DEAD | (word & COUNTER_MASK));
    assert_eq!(word::try_claim(dead, cap, need, limit), Err(Refusal::Unstable));
    assert_eq!(word::reborn(dead), word & COUNTER_MASK);
    assert!(word::is_idle(word::reborn(dead)));
    let idle = word::units(word) == 0 && word::records(word) == 0 && word & (WAITERS | DEAD | CAP_CHANGING | MATRIX) == 0;
    assert_eq!(word::is_idle(word), idle, "is_idle({word:#066b})");
    assert_eq!(word::counter(word & !REBASE_CLEARS), 0);
}

/// Where a sequence failed: its steps so far and the word.
fn ctx(log: &[String], word: u64) -> String {
    format!("after\n{}\nword {word:#066b}", log.join("\n"))
}

/// One holding in the sequence model.
#[derive(Debug)]
struct Holding {
    record: u8,
    units: u32,
    exclusive: bool,
}

fn run_sequence(s: &Sequence) {
    let cap = s.cap.get();
    let limit = limit(s.limit);
    let mut counter = u64::from(s.counter) % (COUNTER_MAX + 1);
    let mut flags = 0;
    for (on, flag) in s.flags.iter().zip([WAITERS, EXCL_WAITING, WATCHED, MATRIX]) {
        if *on {
            flags |= flag;
        }
    }
    let mut word = (counter << word::COUNTER_SHIFT) | flags;
    let mut holdings: Vec<Holding> = Vec::new();
    let mut log: Vec<String> = vec![format!("start {word:#066b} cap {cap} limit {limit}")];
    for step in s.steps.iter().take(MAX_STEPS) {
        log.push(format!("{step:?}"));
        match *step {
            Step::Claim(n) => {
                let need = n.need();
                let want = refusal(word, cap, need, limit);
                match word::try_claim(word, cap, need, limit) {
                    Ok(c) => {
                        assert!(want.is_none(), "claimed, but should be refused as {want:?}; {}", ctx(&log, word));
                        let inline = holdings.iter().filter(|h| h.record != OVERFLOW).count();
                        if inline < INLINE_RECORDS {
                            assert_ne!(c.record, OVERFLOW, "overflow with a free record; {}", ctx(&log, word));
                        }
                        assert!(
                            c.record == OVERFLOW || holdings.iter().all(|h| h.record != c.record),
                            "record {} taken twice; {}",
                            c.record,
                            ctx(&log, word)
                        );
                        holdings.push(Holding { record: c.record, units: c.units, exclusive: need.exclusive });
                        word = c.word;
                        counter += 1;
                        flags |= if need.watch { WATCHED } else { 0 };
                    }
                    Err(r) => assert_eq!(Some(r), want, "wrong refusal; {}", ctx(&log, word)),
                }
            }
            Step::Release(i) if !holdings.is_empty() => {
                let h = holdings.remove(usize::from(i) % holdings.len());
                word -= word::release_delta(h.record, h.units);
            }
            Step::Release(_) => {}
            Step::Set(f) => {
                word |= f.bit();
                flags |= f.bit();
            }
            Step::Clear(f) => {
                word &= !f.bit();
                flags &= !f.bit();
            }
            Step::Rebase => {
                if word::is_unheld(word) {
                    word &= !REBASE_CLEARS;
                    counter = 0;
                }
            }
            Step::Reincarnate => {
                if word::is_idle(word) {
                    word = word::reborn(word::dead_from(word));
                    flags = 0;
                }
            }
        }
        // The word is exactly what the model says it is.
        let units: u32 = holdings.iter().map(|h| h.units).sum();
        assert_eq!(word::units(word), units, "units; {}", ctx(&log, word));
        assert!(units <= cap, "{units} units over capacity {cap}; {}", ctx(&log, word));
        assert!(
            !holdings.iter().any(|h| h.exclusive) || holdings.len() == 1,
            "an exclusive holder not alone; {}",
            ctx(&log, word)
        );
        let records = holdings.iter().filter(|h| h.record != OVERFLOW).fold(0_u8, |acc, h| acc | 1 << h.record);
        assert_eq!(word::records(word), records, "record bits; {}", ctx(&log, word));
        assert_eq!(word::counter(word), counter, "counter; {}", ctx(&log, word));
        let all_flags = WAITERS | EXCL_WAITING | WATCHED | MATRIX | DEAD | CAP_CHANGING;
        assert_eq!(word & all_flags, flags, "flags; {}", ctx(&log, word));
        assert_eq!(word::is_idle(word), holdings.is_empty() && flags & (WAITERS | MATRIX) == 0, "is_idle; {}", ctx(&log, word));
        assert_eq!(word::is_unheld(word), holdings.is_empty(), "is_unheld; {}", ctx(&log, word));
    }
}

fuzz_target!(|input: Input| {
    for single in input.singles.iter().take(MAX_STEPS) {
        check_single(single);
    }
    run_sequence(&input.sequence);
});
