//! The compatibility matrix (`leasehold::compat`) and the upgradable transitions of the state
//! word (`leasehold::word`), checked against models that do not share their code:
//!
//! - the matrix against modes' rights (who reads or writes the node or below it, who may
//!   upgrade), over a sequence of grants and releases on one key: a grant succeeds exactly when
//!   the rights say it is compatible with every holder, and `join` covers both of its arguments;
//! - the word against a model of one read/write key (readers, an upgradable holder, an exclusive
//!   holder, a pending upgrade, a queued writer): every claim, upgrade, downgrade and release
//!   either is refused for the reason the model (through the matrix) gives, or produces the word
//!   the model predicts: units, the `UP` and `UPGRADING` bits, the counter (one more per claim and
//!   per upgrade), the record bits.

#![no_main]

use arbitrary::Arbitrary;
use leasehold::compat::{self, Granule, ALL};
use leasehold::word::{self, Need, Refusal, COUNTER_MAX, EXCL_WAITING, OVERFLOW, UP, UPGRADING};
use leasehold::MAX_UNITS;
use libfuzzer_sys::fuzz_target;

const MAX_STEPS: usize = 256;

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Op {
    /// Matrix: grant a mode (index % 6) on the modelled key.
    Grant(u8),
    /// Matrix: release the holder at index % len.
    Release(u8),
    /// Matrix: check join of two modes.
    Join(u8, u8),
    /// Word: claim shared / upgradable / exclusive (privileged or not).
    ClaimShared(bool),
    ClaimUpgradable(bool),
    ClaimExclusive,
    /// Word: release one reader / the upgradable / the exclusive holder.
    ReleaseShared(u8),
    ReleaseUpgradable,
    ReleaseExclusive,
    /// Word: the upgradable holder tries to upgrade; begins waiting; gives up waiting.
    TryUpgrade,
    BeginUpgrade,
    CancelUpgrade,
    /// Word: the exclusive holder downgrades to shared / to upgradable.
    DowngradeShared,
    DowngradeUpgradable,
    /// Word: a writer queues / the queue empties of writers.
    WriterQueued(bool),
}

fn granule(i: u8) -> Granule {
    ALL[i as usize % ALL.len()]
}

/// (reads node, writes node, writes below, may upgrade) of each mode.
fn rights(m: Granule) -> (bool, bool, bool, bool) {
    match m {
        Granule::IS => (false, false, false, false),
        Granule::IX => (false, false, true, false),
        Granule::S => (true, false, false, false),
        Granule::SIX => (true, false, true, false),
        Granule::U => (true, false, false, true),
        Granule::X => (true, true, true, false),
    }
}

fn rights_compatible(a: Granule, b: Granule) -> bool {
    let (ra, wa, wba, ua) = rights(a);
    let (rb, wb, wbb, ub) = rights(b);
    !(wa || wb || (ra && wbb) || (rb && wba) || (ua && ub))
}

/// One read/write key as the word must describe it.
#[derive(Default)]
struct Key {
    word: u64,
    /// Records of the readers (shared holders).
    readers: Vec<u8>,
    /// The upgradable holder's record.
    upgradable: Option<u8>,
    /// The exclusive holder's record.
    exclusive: Option<u8>,
    upgrading: bool,
    writer_queued: bool,
    counter: u64,
}

impl Key {
    fn holders(&self) -> impl Iterator<Item = Granule> + '_ {
        self.readers
            .iter()
            .map(|_| Granule::S)
            .chain(self.upgradable.map(|_| Granule::U))
            .chain(self.exclusive.map(|_| Granule::X))
    }

    fn admits(&self, m: Granule) -> bool {
        self.holders().all(|h| compat::compatible(h, m))
    }

    fn check(&self) {
        let w = self.word;
        let units = self.readers.len() as u32 + u32::from(self.upgradable.is_some());
        let units = if self.exclusive.is_some() { MAX_UNITS } else { units };
        assert_eq!(word::units(w), units, "units of {w:064b}");
        assert_eq!(w & UP != 0, self.upgradable.is_some(), "UP of {w:064b}");
        assert_eq!(w & UPGRADING != 0, self.upgrading, "UPGRADING of {w:064b}");
        assert_eq!(word::counter(w), self.counter, "counter of {w:064b}");
        let mut recs = 0u8;
        for r in self.readers.iter().chain(&self.upgradable).chain(&self.exclusive) {
            if *r != OVERFLOW {
                assert_eq!(recs & (1 << r), 0, "record {r} held twice");
                recs |= 1 << r;
            }
        }
        assert_eq!(word::records(w), recs, "records of {w:064b}");
        // The matrix holds among the holders.
        let hs: Vec<Granule> = self.holders().collect();
        for (i, a) in hs.iter().enumerate() {
            for b in &hs[i + 1..] {
                assert!(compat::compatible(*a, *b), "{a} beside {b}");
            }
        }
    }

    fn claim(&mut self, m: Granule, privileged: bool) {
        let blocked_by_queue = self.writer_queued && !privileged;
        let r = match m {
            Granule::S => {
                word::try_claim(self.word, MAX_UNITS, Need { exclusive: false, privileged, watch: false }, COUNTER_MAX)
            }
            Granule::U => word::try_claim_upgradable(self.word, MAX_UNITS, privileged, false, COUNTER_MAX),
            _ => word::try_claim(self.word, MAX_UNITS, Need { exclusive: true, privileged, watch: false }, COUNTER_MAX),
        };
        let readers_stopped = m != Granule::X && (self.upgrading || blocked_by_queue);
        let expect_ok = self.admits(m) && !readers_stopped;
        match r {
            Ok(c) => {
                assert!(expect_ok, "{m} claimed from {:064b}", self.word);
                self.word = c.word;
                self.counter += 1;
                match m {
                    Granule::S => self.readers.push(c.record),
                    Granule::U => self.upgradable = Some(c.record),
                    _ => self.exclusive = Some(c.record),
                }
            }
            Err(Refusal::Busy) => assert!(!expect_ok, "{m} refused from {:064b}", self.word),
            Err(e) => panic!("{m} refused with {e:?} from a live word {:064b}", self.word),
        }
    }
}

fuzz_target!(|ops: Vec<Op>| {
    let mut holders: Vec<Granule> = Vec::new();
    let mut key = Key::default();
    for op in ops.into_iter().take(MAX_STEPS) {
        match op {
            Op::Grant(i) => {
                let m = granule(i);
                let ok = holders.iter().all(|&h| compat::compatible(h, m));
                assert_eq!(ok, holders.iter().all(|&h| rights_compatible(h, m)), "{m} beside {holders:?}");
                if ok {
                    holders.push(m);
                }
                for (i, a) in holders.iter().enumerate() {
                    for b in &holders[i + 1..] {
                        assert!(rights_compatible(*a, *b), "{a} beside {b}");
                    }
                }
            }
            Op::Release(i) => {
                if !holders.is_empty() {
                    holders.swap_remove(i as usize % holders.len());
                }
            }
            Op::Join(a, b) => {
                let (a, b) = (granule(a), granule(b));
                let j = compat::join(a, b);
                assert!(compat::covers(j, a) && compat::covers(j, b));
                // Whoever conflicts with a or b conflicts with their join.
                for c in ALL {
                    if !rights_compatible(a, c) || !rights_compatible(b, c) {
                        assert!(!rights_compatible(j, c), "join({a}, {b}) = {j} admits {c}");
                    }
                }
            }
            Op::ClaimShared(p) => key.claim(Granule::S, p),
            Op::ClaimUpgradable(p) => key.claim(Granule::U, p),
            Op::ClaimExclusive => key.claim(Granule::X, false),
            Op::ReleaseShared(i) => {
                if !key.readers.is_empty() {
                    let r = key.readers.swap_remove(i as usize % key.readers.len());
                    key.word -= word::release_delta(r, 1);
                }
            }
            Op::ReleaseUpgradable => {
                if let Some(r) = key.upgradable.take() {
                    key.word = word::cancel_upgrade(key.word);
                    key.upgrading = false;
                    key.word -= word::release_upgradable_delta(r);
                }
            }
            Op::ReleaseExclusive => {
                if let Some(r) = key.exclusive.take() {
                    key.word -= word::release_delta(r, MAX_UNITS);
                }
            }
            Op::TryUpgrade => {
                let r = word::try_upgrade(key.word, MAX_UNITS, COUNTER_MAX);
                match (key.upgradable, r) {
                    (None, Err(Refusal::Unstable)) => {}
                    (None, r) => panic!("upgrade without an upgradable holder: {r:?}"),
                    (Some(rec), Ok(w)) => {
                        assert!(key.readers.is_empty(), "upgraded beside readers");
                        key.word = w;
                        key.counter += 1;
                        key.upgradable = None;
                        key.upgrading = false;
                        key.exclusive = Some(rec);
                    }
                    (Some(_), Err(Refusal::Busy)) => assert!(!key.readers.is_empty(), "refused alone"),
                    (Some(_), Err(e)) => panic!("upgrade refused with {e:?}"),
                }
            }
            Op::BeginUpgrade => {
                if key.upgradable.is_some() {
                    key.word = word::begin_upgrade(key.word);
                    key.upgrading = true;
                }
            }
            Op::CancelUpgrade => {
                key.word = word::cancel_upgrade(key.word);
                key.upgrading = false;
            }
            Op::DowngradeShared => {
                if let Some(r) = key.exclusive.take() {
                    key.word = word::downgrade_to_shared(key.word, MAX_UNITS);
                    key.readers.push(r);
                }
            }
            Op::DowngradeUpgradable => {
                if let Some(r) = key.exclusive.take() {
                    key.word = word::downgrade_to_upgradable(key.word, MAX_UNITS);
                    key.upgradable = Some(r);
                }
            }
            Op::WriterQueued(on) => {
                key.writer_queued = on;
                key.word = if on { key.word | EXCL_WAITING } else { key.word & !EXCL_WAITING };
            }
        }
        key.check();
    }
});
