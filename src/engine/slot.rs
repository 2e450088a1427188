//! A lock slot: one key's state word, its holder records and its wait queue, and the protocols
//! that claim, release, renew and force-end holdings.
//!
//! # Ground rules
//!
//! - Slot memory is type-stable: a slot is allocated in a shard's pool and freed only when the
//!   manager is dropped, so a pointer read from the lock-free index always points at a `Slot`,
//!   though maybe one since reclaimed or reused for another key. Nothing is read from a slot on
//!   that strength alone except atomics; the key is read only while the slot is *pinned*: by a
//!   unit the reader holds, by the `WAITERS` flag, by a zombie count, or by the shard lock (which
//!   reclamation needs).
//! - The state word (`word.rs`) is changed only by compare-exchange or by `fetch_sub`/`fetch_or`/
//!   `fetch_and` of bits the caller owns, so every transition is atomic.
//! - A holding is *plain* (no lease, no owner) or *managed*. Only its guard ends a plain holding,
//!   so a plain release is one `fetch_sub` on the word. A managed holding may also be ended by an
//!   expirer or a revoker; whoever wins the compare-exchange on its lease word (`lease.rs`) ends it
//!   and returns its units, so units are returned exactly once. An exclusive lease's guard
//!   skips that race (`release_exclusive_lease`: one compare-exchange on the word); an ender marks
//!   the word first and checks the holding against it (`force_end`).
//! - The slot lock (`inner`) guards the wait queue, owner labels and overflow records. The word's
//!   `WAITERS` and `EXCL_WAITING` flags change only under it. Lock order: shard lock, then slot
//!   lock, then the timer wheel's lock.

use std::mem::MaybeUninit;

use crate::engine::census::Census;
use crate::engine::core::Core;
use crate::engine::holding::{meta, Ask, Holding, Record, RecordRef};
use crate::engine::lease;
use crate::engine::queue::{WaitQueue, Waiter};
use crate::engine::watch::Watch;
use crate::engine::word::{self, Claim, RecordIdx, Refusal, INLINE_RECORDS, MAX_UNITS, OVERFLOW};
use crate::primitives::clock::surely_before;
use crate::primitives::counters::{ShardStats, HOLD_SAMPLE};
use crate::primitives::sync::{Arc, AtomicU32, AtomicU64, Mutex, MutexGuard, Ordering, UnsafeCell};
use crate::vocab::mode::{Mode, Owner};

/// Why a claim did not happen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Blocked {
    /// Held in a conflicting mode (or a writer is queued): wait, or report `WouldBlock`.
    Busy,
    /// Dead or changing capacity: look the key up again.
    Unstable,
    /// The acquisition counter is spent: rebase while idle.
    Exhausted,
    /// All inline records are taken: claim an overflow record under the slot lock.
    Overflow,
    /// A live key whose capacity differs from the semaphore request's.
    Mismatch(u32),
    /// An idle key whose capacity differs from the request's: change the capacity first.
    Reshape,
}

/// The slot's lock-protected part.
#[derive(Default)]
pub(crate) struct SlotInner {
    pub(crate) queue: WaitQueue,
    /// Owner labels and overflow records: most slots never need them, so they are allocated on
    /// first use and kept with the slot's memory.
    extra: Option<Box<SlotExtra>>,
}

#[derive(Default)]
struct SlotExtra {
    /// Holders per matrix mode while the word has `MATRIX` (`census.rs`); empty otherwise.
    census: Census,
    /// Owner labels of the inline records' holdings.
    owners: [Option<Owner>; INLINE_RECORDS],
    /// Overflow records; boxed so that they never move (guards point at them) or free while
    /// the slot's memory lives.
    #[allow(clippy::vec_box)]
    overflow: Vec<Box<Record>>,
    /// Per overflow record: in use, and its owner label.
    overflow_meta: Vec<(bool, Option<Owner>)>,
}

impl SlotInner {
    fn extra(&mut self) -> &mut SlotExtra {
        self.extra.get_or_insert_with(Box::default)
    }

    /// Attaches (or with `None`, clears) the owner label of a holding's record.
    /// The census of a matrix key (empty unless the word has `MATRIX`).
    pub(crate) fn census(&self) -> Census {
        self.extra.as_ref().map_or_else(Census::default, |e| e.census)
    }

    /// The census, to change (under the slot lock, as `MATRIX` changes).
    pub(crate) fn census_mut(&mut self) -> &mut Census {
        &mut self.extra().census
    }

    pub(crate) fn set_owner(&mut self, record: RecordRef, owner: Option<Owner>) {
        if owner.is_none() && self.extra.is_none() {
            return;
        }
        let extra = self.extra();
        match record {
            RecordRef::Inline(idx) => extra.owners[idx as usize] = owner,
            RecordRef::Overflow(i) => {
                if let Some(meta) = extra.overflow_meta.get_mut(i as usize) {
                    meta.1 = owner;
                }
            }
        }
    }

    /// The owner label of a holding's record.
    pub(crate) fn owner(&self, record: RecordRef) -> Option<Owner> {
        let extra = self.extra.as_ref()?;
        match record {
            RecordRef::Inline(idx) => extra.owners[idx as usize].clone(),
            RecordRef::Overflow(i) => extra.overflow_meta.get(i as usize).and_then(|m| m.1.clone()),
        }
    }

    /// The overflow records in use, with their indices.
    pub(crate) fn overflow_in_use(&self) -> impl Iterator<Item = (u32, &Record)> + '_ {
        self.extra.iter().flat_map(|e| {
            e.overflow
                .iter()
                .zip(&e.overflow_meta)
                .enumerate()
                .filter(|(_, (_, m))| m.0)
                .map(|(i, (r, _))| (i as u32, &**r))
        })
    }

    /// A stable pointer to overflow record `i`.
    pub(crate) fn overflow_record(&self, i: u32) -> Option<*const Record> {
        self.extra.as_ref()?.overflow.get(i as usize).map(|r| &**r as *const Record)
    }

    /// Takes a free overflow record (allocating one if none is free).
    fn take_overflow(&mut self) -> u32 {
        let extra = self.extra();
        let index = match extra.overflow_meta.iter().position(|(in_use, _)| !in_use) {
            Some(i) => i,
            None => {
                extra.overflow.push(Box::new(Record::new()));
                extra.overflow_meta.push((false, None));
                extra.overflow.len() - 1
            }
        };
        extra.overflow_meta[index] = (true, None);
        index as u32
    }

    /// Gives an overflow record back.
    fn free_overflow(&mut self, i: u32) {
        if let Some(meta) = self.extra().overflow_meta.get_mut(i as usize) {
            *meta = (false, None);
        }
    }
}

/// One key's lock.
///
/// Laid out so that an uncontended acquire and release of the first holder touch one cache line
/// (the word, token base, capacity, the key, and record 0, for a key of up to 8 bytes; up to 24,
/// the part of record 0 a plain holding writes), and aligned so that two slots never share a
/// line: threads working on different keys do not disturb each other, and a thread cycling
/// through many keys misses one line per key, not two (bench/perf5-hotpath.md, Phase 8).
#[repr(C, align(64))]
pub(crate) struct Slot<K> {
    /// The state word (`word.rs`).
    pub(crate) word: AtomicU64,
    /// Tokens of this incarnation are `token_base + counter`.
    pub(crate) token_base: AtomicU64,
    /// The key's capacity: `MAX_UNITS` for a read/write key, `n` for a semaphore. Changed only
    /// while idle, under the `CAP_CHANGING` flag.
    pub(crate) capacity: AtomicU32,
    /// Guards of expired or revoked holdings that are still alive: they may read the key, so a
    /// slot with zombies is not reclaimed. May dip below zero for a moment (wrapping).
    pub(crate) zombies: AtomicU32,
    /// The key; initialised exactly while the slot is live (between `init` and `drop_key`). On
    /// the first line: every lock-free claim compares it.
    key: UnsafeCell<MaybeUninit<K>>,
    /// Inline holder records, one per bit of the word's record bitmap.
    pub(crate) records: [Record; INLINE_RECORDS],
    /// The key's hash; written while the slot is dead, before it is published. Not read by the
    /// lock-free path (the index entry has it).
    pub(crate) hash: AtomicU64,
    /// The acquisition counter the idle sweep saw last (or the creator's claim), as its bits in
    /// the word (`word & COUNTER_MASK`, unshifted: `Shard::try_reclaim`): a slot claimed since is
    /// spared once (second chance). Only touched under the shard lock; next to the hash, so that
    /// a reclamation and a rebirth touch two lines: the first and this one.
    pub(crate) swept: AtomicU64,
    /// The timer wheel's view of this slot (`watch.rs`).
    pub(crate) watch: Watch,
    pub(crate) inner: Mutex<SlotInner>,
}

// SAFETY: the key is written only under the shard lock while the slot is dead and read only while
// pinned (module ground rules); every other field is atomic or behind a mutex.
unsafe impl<K: Send> Send for Slot<K> {}
// SAFETY: as above; shared access hands out `&K` only, so `K: Sync` is required.
unsafe impl<K: Send + Sync> Sync for Slot<K> {}

impl<K> Slot<K> {
    /// The records of the slot's live holdings (under its lock; `si` is its inner state).
    pub(crate) fn holding_records(&self, si: &SlotInner) -> Vec<RecordRef> {
        let w = self.word.load(Ordering::Acquire);
        (0..INLINE_RECORDS as RecordIdx)
            .filter(|&i| word::holds_record(w, i))
            .map(RecordRef::Inline)
            .chain(si.overflow_in_use().map(|(i, _)| RecordRef::Overflow(i)))
            .collect()
    }

    /// A dead slot for the pool.
    pub(crate) fn new_dead() -> Self {
        Slot {
            word: AtomicU64::new(word::DEAD),
            hash: AtomicU64::new(0),
            capacity: AtomicU32::new(MAX_UNITS),
            zombies: AtomicU32::new(0),
            token_base: AtomicU64::new(0),
            watch: Watch::new(),
            swept: AtomicU64::new(u64::MAX),
            records: [Record::new(), Record::new(), Record::new(), Record::new()],
            inner: Mutex::new(SlotInner::default()),
            key: UnsafeCell::new(MaybeUninit::uninit()),
        }
    }

    /// Brings a dead slot to life for `key`, already holding `first` (the creator's claim).
    ///
    /// # Safety
    ///
    /// The slot is dead, owned by the caller's shard, and not yet reachable from the index; the
    /// caller holds the shard lock.
    pub(crate) unsafe fn init(&self, key: K, hash: u64, capacity: u32, token_base: u64, first: u64) {
        // SAFETY: the slot is dead and unpublished (caller's contract): nobody else reads the key.
        self.key.with_mut(|p| unsafe { (*p).write(key) });
        self.hash.store(hash, Ordering::Relaxed);
        self.capacity.store(capacity, Ordering::Relaxed);
        self.token_base.store(token_base, Ordering::Relaxed);
        // Release: whoever acquires this word sees the key, hash, capacity and base.
        self.word.store(first, Ordering::Release);
    }

    /// The key.
    ///
    /// # Safety
    ///
    /// The slot is pinned (a unit held by the caller, `WAITERS` set, a zombie count held, or the
    /// shard lock) and live.
    #[inline]
    pub(crate) unsafe fn key(&self) -> &K {
        // SAFETY: pinned and live, so the key is initialised and nobody drops it meanwhile.
        self.key.with(|p| unsafe { (*p).assume_init_ref() })
    }

    /// Drops the key of a slot just made dead.
    ///
    /// # Safety
    ///
    /// The caller holds the shard lock, has moved the word to `DEAD` from idle, and found no zombies.
    pub(crate) unsafe fn drop_key(&self) {
        // SAFETY: live until now, and nothing pins it (caller's contract).
        self.key.with_mut(|p| unsafe { (*p).assume_init_drop() });
    }

    #[inline]
    pub(crate) fn lock(&self) -> MutexGuard<'_, SlotInner> {
        self.inner.lock()
    }

    /// The record a holding refers to.
    #[inline]
    pub(super) fn record(&self, h: &Holding) -> &Record {
        // SAFETY: `rec` points at one of this slot's records (inline, or a boxed overflow record
        // that lives as long as the slot's memory).
        unsafe { &*h.rec.0 }
    }

    /// The fencing token of a claim that produced `word`.
    #[inline(always)]
    pub(super) fn token_of(&self, word: u64) -> u64 {
        // Relaxed: the base changes only in a rebase, which the claim's Acquire already ordered.
        self.token_base.load(Ordering::Relaxed) + word::counter(word)
    }

    /// Checks a request against the key's capacity, for the word `w` just loaded.
    #[inline(always)]
    pub(crate) fn check_capacity(&self, w: u64, mode: Mode) -> Result<u32, Blocked> {
        // Relaxed: the word was loaded with Acquire, and a capacity change always changes the word,
        // so a capacity read that does not belong to `w` makes the compare-exchange fail.
        let cap = self.capacity.load(Ordering::Relaxed);
        match mode {
            Mode::Semaphore(n) if n != cap => {
                if word::is_idle(w) {
                    Err(Blocked::Reshape)
                } else {
                    Err(Blocked::Mismatch(cap))
                }
            }
            Mode::Exclusive | Mode::Shared if cap != MAX_UNITS && word::is_idle(w) => Err(Blocked::Reshape),
            Mode::Exclusive | Mode::Shared | Mode::Semaphore(_) => Ok(cap),
            // The modes of the hierarchy (upgradable, intention) have no meaning on a semaphore
            // key: an idle one is reshaped, a live one refused.
            _ if cap == MAX_UNITS => Ok(cap),
            _ if word::is_idle(w) => Err(Blocked::Reshape),
            _ => Err(Blocked::Mismatch(cap)),
        }
    }

    /// Tries to claim an inline record for `ask`: one compare-exchange on the word.
    #[inline(always)]
    pub(crate) fn try_claim(&self, core: &Core, ask: &Ask, privileged: bool) -> Result<Holding, Blocked> {
        if ask.mode.is_intention() {
            // Decided by the matrix, under the slot lock (`claim_locked`).
            return Err(Blocked::Busy);
        }
        let check = |w| self.check_capacity(w, ask.mode);
        self.claim_with(
            check,
            |w, cap| ask.claim(w, cap, privileged, core.counter_limit),
            #[inline(always)]
            |claim| self.finish_claim(core, ask, claim, None),
        )
    }

    /// `try_claim` for a plain request (no lease, no owner): no `Ask`, and the record written by
    /// `finish_plain`, so nothing of the managed lane is on this path.
    #[inline(always)]
    ///
    /// `limit` is the counter limit of this claim: the manager's (`Core::counter_limit`), or lower
    /// (0 refuses every claim: the façade's way to send plain acquisitions to its slow path while
    /// anyone listens to events, `EventBus::claim_limit`).
    pub(crate) fn try_claim_plain(&self, core: &Core, mode: Mode, limit: u64) -> Result<Holding, Blocked> {
        debug_assert!(limit <= core.counter_limit);
        if let Mode::Exclusive = mode {
            return self.try_claim_bare(core, limit);
        }
        // Only the capacity the mode expects is claimed here (one compare); any other case
        // (reshape, mismatch, a read/write mode on a semaphore key) is sent to the slow path,
        // which checks it in full (`check_capacity`).
        let expected = match mode {
            Mode::Semaphore(n) => n,
            _ => MAX_UNITS,
        };
        // `claim_with`'s loop, with the claim's record as its bit in the word (`try_claim_unit_bit`)
        // rather than an index: the holding's bits and its release need the bit, the record's
        // address the index, and the bit gives both (bench/perf5-hotpath.md, Phase 6).
        // Acquire: as in `claim_with`.
        let mut w = self.word.load(Ordering::Acquire);
        loop {
            // Relaxed: as in `check_capacity`.
            if self.capacity.load(Ordering::Relaxed) != expected {
                return Err(Blocked::Unstable);
            }
            // The limit is read inside the loop: a compare with a memory operand. Every refusal
            // goes to the slow path, which finds the reason itself: one test for all of them here.
            let Some((next, bit)) = word::try_claim_unit_bit(w, expected, limit) else {
                return Err(Blocked::Busy);
            };
            // Acquire on success: as in `claim_with` (pairs with the previous holder's Release).
            match self.word.compare_exchange_weak(w, next, Ordering::Acquire, Ordering::Acquire) {
                // Record 0 (the uncontended case) apart, so that its record is a constant.
                Ok(_) if bit == word::record_bit(0) => {
                    return Ok(self.finish_unit(core, mode, next, word::record_bit(0)))
                }
                Ok(_) => return Ok(self.finish_unit(core, mode, next, bit)),
                Err(actual) => w = actual,
            }
        }
    }

    /// `finish_plain` for a unit claim that installed `next`, taking the record whose bit is `bit`.
    #[inline(always)]
    fn finish_unit(&self, core: &Core, mode: Mode, next: u64, bit: u64) -> Holding {
        let rec = &self.records[word::record_of_bit(bit) as usize];
        let token = self.token_of(next);
        rec.token.store(token, Ordering::Relaxed);
        let h = Holding::plain_unit(rec, token, bit, mode.code());
        let sampled = token % HOLD_SAMPLE == 0;
        if sampled {
            self.stamp_sampled(core, rec);
        }
        // Release: a reader that sees this word sees the token above.
        rec.lease.store(lease::plain(token, meta(mode, 1)), Ordering::Release);
        h.sampled_if(sampled)
    }

    /// `try_claim_plain` for a lease without owner (`Request::acquire_lease_only`): no `Ask`,
    /// `WATCHED` in the claim, the record published by `publish_lease`. `mode` is exclusive,
    /// shared or a valid semaphore, as for `try_claim_plain`.
    #[inline(always)]
    /// `limit` is the claim's counter limit, as for `try_claim_plain`.
    pub(crate) fn try_claim_lease(&self, core: &Core, mode: Mode, ttl_ns: u64, limit: u64) -> Result<Holding, Blocked> {
        debug_assert!(limit <= core.counter_limit);
        let need = word::Need { exclusive: mode.is_exclusive(), privileged: false, watch: true };
        let expected = match mode {
            Mode::Semaphore(n) => n,
            _ => MAX_UNITS,
        };
        let check = |_| {
            // Relaxed: as in `check_capacity`.
            let cap = self.capacity.load(Ordering::Relaxed);
            if cap == expected {
                Ok(cap)
            } else {
                Err(Blocked::Unstable)
            }
        };
        self.claim_with(
            check,
            |w, cap| match mode {
                // Record 0, as a constant: the record's address and bit fold (the mode is a
                // constant where the request is inlined).
                Mode::Exclusive => word::try_claim_exclusive_watched(w, limit).map(|next| Claim {
                    word: next,
                    record: 0,
                    units: MAX_UNITS,
                }),
                _ => word::try_claim(w, cap, need, limit),
            },
            #[inline(always)]
            |claim| {
                let idx = claim.record;
                let rec = &self.records[idx as usize];
                let token = self.token_of(claim.word);
                rec.token.store(token, Ordering::Relaxed);
                let h = Holding::unsampled(RecordRef::Inline(idx), rec, token, claim.units, mode.code(), true, false);
                let sampled = token % HOLD_SAMPLE == 0;
                if sampled {
                    self.stamp_sampled(core, rec);
                }
                self.publish_lease(core, mode, Some(ttl_ns), rec, token, claim.units);
                h.sampled_if(sampled)
            },
        )
    }

    /// `try_claim_plain` for an exclusive request: a bare holding (`word.rs`), every unit and no
    /// record, so nothing but the word is written.
    #[inline(always)]
    fn try_claim_bare(&self, core: &Core, limit: u64) -> Result<Holding, Blocked> {
        // Acquire: as in `claim_with`.
        let w = self.word.load(Ordering::Acquire);
        // Relaxed: as in `check_capacity`. Any other capacity goes to the slow path.
        if self.capacity.load(Ordering::Relaxed) != MAX_UNITS {
            return Err(Blocked::Unstable);
        }
        // Every refusal goes to the slow path, which finds the reason itself (the caller drops it).
        if !word::bare_claimable(w, limit) {
            return Err(Blocked::Busy);
        }
        // `try_claim_bare`'s word (debug-checked against it).
        let next = w + MAX_UNITS as u64 + word::COUNTER_ONE;
        debug_assert_eq!(word::try_claim_bare(w, limit), Ok(next));
        // One attempt, no loop: the word changed under us (another holder, a flag), and the slow
        // path, which retries, decides. An exclusive claim that lost its compare-exchange rarely
        // wins a second one: the word it lost to holds units, most likely.
        // Acquire on success: as in `claim_with`.
        match self.word.compare_exchange(w, next, Ordering::Acquire, Ordering::Acquire) {
            Ok(_) => Ok(self.finish_bare(core, next)),
            Err(_) => Err(Blocked::Busy),
        }
    }

    /// The holding of a bare claim that installed `word` (`try_claim_bare`, or a creator's,
    /// `Table::create_plain`): nothing is written unless it is sampled.
    #[inline(always)]
    pub(crate) fn finish_bare(&self, core: &Core, word: u64) -> Holding {
        let token = self.token_of(word);
        // Record 0 is the bare holding's scratch while it holds (no other holding has a record
        // then, word.rs): a sampled one keeps its start there, and it is the record a promotion
        // or a downgrade takes.
        let rec = &self.records[0];
        let h = Holding::bare_unsampled(rec, token);
        if token % HOLD_SAMPLE == 0 {
            self.stamp_sampled(core, rec);
            return h.sampled_if(true);
        }
        h
    }

    /// The claim loop of `try_claim`: one compare-exchange on the word, then `finish` writes the
    /// record of the claim it installed.
    #[inline(always)]
    fn claim_with(
        &self,
        check_capacity: impl Fn(u64) -> Result<u32, Blocked>,
        claim_of: impl Fn(u64, u32) -> Result<Claim, Refusal>,
        finish: impl FnOnce(Claim) -> Holding,
    ) -> Result<Holding, Blocked> {
        // Acquire: pairs with the Release of whoever last changed the word (a release, an
        // initialisation, a capacity change), so the capacity and base read below are current.
        let mut w = self.word.load(Ordering::Acquire);
        loop {
            let cap = check_capacity(w)?;
            let claim = match claim_of(w, cap) {
                Ok(c) if c.record == OVERFLOW => return Err(Blocked::Overflow),
                Ok(c) => c,
                Err(Refusal::Busy) => return Err(Blocked::Busy),
                Err(Refusal::Unstable) => return Err(Blocked::Unstable),
                Err(Refusal::Exhausted) => return Err(Blocked::Exhausted),
            };
            // Acquire on success: pairs with the previous holder's Release in `return_units`, so
            // this holder sees everything the previous one did under the lock.
            match self.word.compare_exchange_weak(w, claim.word, Ordering::Acquire, Ordering::Acquire) {
                Ok(_) => return Ok(finish(claim)),
                Err(actual) => w = actual,
            }
        }
    }

    /// `finish_claim` of a plain holding in an inline record: its token and its lease word.
    #[inline(always)]
    pub(crate) fn finish_plain(&self, core: &Core, mode: Mode, claim: Claim) -> Holding {
        let idx = claim.record;
        let rec = &self.records[idx as usize];
        let token = self.token_of(claim.word);
        rec.token.store(token, Ordering::Relaxed);
        let h = Holding::unsampled(RecordRef::Inline(idx), rec, token, claim.units, mode.code(), false, false);
        let sampled = token % HOLD_SAMPLE == 0;
        if sampled {
            self.stamp_sampled(core, rec);
        }
        // Release: a reader that sees this word sees the token above.
        rec.lease.store(lease::plain(token, meta(mode, claim.units)), Ordering::Release);
        h.sampled_if(sampled)
    }

    /// A sampled holding's start, exactly, for the hold-time histogram (before the lease word
    /// publishes the record).
    #[cold]
    #[inline(never)]
    pub(super) fn stamp_sampled(&self, core: &Core, rec: &Record) {
        rec.acquired_ns.store(core.clock.now_ns(), Ordering::Relaxed);
    }

    /// Writes the record of a claim that installed `claim.word`. `inner` is the slot lock if the
    /// caller holds it (needed to attach an owner label).
    #[inline(always)]
    pub(crate) fn finish_claim(&self, core: &Core, ask: &Ask, claim: Claim, inner: Option<&mut SlotInner>) -> Holding {
        let idx = claim.record;
        let rec = &self.records[idx as usize];
        let token = self.token_of(claim.word);
        let units = claim.units;
        self.write_record(core, ask, rec, token, units, |owner| match inner {
            Some(inner) => inner.set_owner(RecordRef::Inline(idx), owner),
            None => self.lock().set_owner(RecordRef::Inline(idx), owner),
        });
        ask.holding(RecordRef::Inline(idx), rec, token, units)
    }

    /// Fills a record for a fresh holding and publishes it by its lease word. A plain holding is
    /// two stores (its mode and units ride in its lease word); a managed one takes the slow lane.
    #[inline(always)]
    fn write_record(
        &self,
        core: &Core,
        ask: &Ask,
        rec: &Record,
        token: u64,
        units: u32,
        set_owner: impl FnOnce(Option<Owner>),
    ) {
        rec.token.store(token, Ordering::Relaxed);
        if token % HOLD_SAMPLE == 0 {
            self.stamp_sampled(core, rec);
        }
        if ask.managed() && ask.owner.is_none() {
            self.publish_lease(core, ask.mode, ask.ttl_ns, rec, token, units);
        } else if ask.managed() {
            self.publish_managed(core, ask, rec, token, units, set_owner);
        } else {
            // Release: a reader that sees this word sees the token above.
            rec.lease.store(lease::plain(token, meta(ask.mode, units)), Ordering::Release);
        }
    }

    /// Fills a managed record and publishes it by its lease word: inline for a holding without
    /// an owner (a lease), the rest of `publish_managed` after the owner is attached.
    #[inline(always)]
    fn publish_lease(&self, core: &Core, mode: Mode, ttl_ns: Option<u64>, rec: &Record, token: u64, units: u32) {
        rec.meta.store(meta(mode, units), Ordering::Relaxed);
        let stamp = core.clock.stamp_ns();
        if token % HOLD_SAMPLE != 0 {
            rec.acquired_ns.store(stamp, Ordering::Relaxed);
        }
        let deadline = ttl_ns.map(|ttl| stamp.saturating_add(ttl).min(lease::MAX_DEADLINE_NS));
        // An exclusive holding's release needs only the word (`release_exclusive_lease`).
        let held =
            if mode.is_exclusive() { lease::held_exclusive(token, deadline) } else { lease::held(token, deadline) };
        // Release: an expirer or reader that sees HELD also sees the token, meta and owner.
        rec.lease.store(held, Ordering::Release);
        if let Some(deadline) = deadline {
            self.watch_claim(core, deadline);
        }
    }

    /// `publish_lease` for a holding with an owner, out of line (it may take the slot lock).
    #[inline(never)]
    fn publish_managed(
        &self,
        core: &Core,
        ask: &Ask,
        rec: &Record,
        token: u64,
        units: u32,
        set_owner: impl FnOnce(Option<Owner>),
    ) {
        if ask.owner.is_some() {
            // The owner is attached before the holding is published, so that a revoke-by-owner
            // that sees the holding also sees its owner. (Before the clock stamp: a wait for the
            // slot lock makes the deadline later, never earlier.)
            set_owner(ask.owner.clone());
        }
        self.publish_lease(core, ask.mode, ask.ttl_ns, rec, token, units);
    }

    /// Makes sure the timer wheel fires this slot no later than `deadline` (after a leased claim,
    /// whose compare-exchange set `WATCHED`). See `watch.rs` for why this is race-free.
    #[inline]
    fn watch_claim(&self, core: &Core, deadline: u64) {
        // Acquire: pairs with the Release store in `Wheelhouse::register`, reached through the
        // word's release sequence (the claim read a word at or after the registrar's `fetch_or`).
        if self.watch.scheduled.load(Ordering::Acquire) > deadline {
            core.wheel.register(&self.watch, &self.word, self as *const Self as usize, deadline);
        }
    }

    /// Claims for `ask` under the slot lock, taking an overflow record if the inline ones are
    /// all taken. Returns `Busy` and the other refusals like `try_claim`.
    ///
    /// With `flag_if_busy`, a busy word gets `WAITERS` (and `EXCL_WAITING` for an exclusive
    /// request) in the same compare-exchange loop, so a release either sees the flag and wakes
    /// the queue, or came first and the claim succeeds: no wake-up is lost.
    pub(crate) fn claim_locked(
        &self,
        core: &Core,
        ask: &Ask,
        privileged: bool,
        flag_if_busy: bool,
        inner: &mut SlotInner,
    ) -> Result<Holding, Blocked> {
        // Relaxed: `MATRIX` changes only under the slot lock, which we hold.
        if ask.mode.is_intention() || self.word.load(Ordering::Relaxed) & word::MATRIX != 0 {
            return self.claim_in_matrix(core, ask, privileged, flag_if_busy, inner);
        }
        let need = ask.need(privileged);
        let flags = word::waiting_flags(need.exclusive);
        let mut w = self.word.load(Ordering::Acquire);
        loop {
            let cap = self.check_capacity(w, ask.mode)?;
            let claim = match ask.claim(w, cap, privileged, core.counter_limit) {
                Ok(c) => c,
                Err(Refusal::Busy | Refusal::Exhausted) if flag_if_busy && w & flags != flags => {
                    match self.word.compare_exchange_weak(w, w | flags, Ordering::AcqRel, Ordering::Acquire) {
                        Ok(_) => w |= flags,
                        Err(actual) => w = actual,
                    }
                    continue;
                }
                Err(Refusal::Busy) => return Err(Blocked::Busy),
                Err(Refusal::Unstable) => return Err(Blocked::Unstable),
                Err(Refusal::Exhausted) => return Err(Blocked::Exhausted),
            };
            match self.word.compare_exchange_weak(w, claim.word, Ordering::Acquire, Ordering::Acquire) {
                Ok(_) if claim.record == OVERFLOW => return Ok(self.finish_overflow(core, ask, claim, inner)),
                Ok(_) => return Ok(self.finish_claim(core, ask, claim, Some(inner))),
                Err(actual) => w = actual,
            }
        }
    }

    /// Writes an overflow record for a claim that took units but no inline record.
    pub(crate) fn finish_overflow(&self, core: &Core, ask: &Ask, claim: Claim, inner: &mut SlotInner) -> Holding {
        let index = inner.take_overflow();
        let rec = inner.overflow_record(index).expect("just taken");
        // SAFETY: the box lives as long as the slot's memory and is never handed out as `&mut`.
        let rec_ref = unsafe { &*rec };
        let token = self.token_of(claim.word);
        let units = claim.units;
        let record = RecordRef::Overflow(index);
        self.write_record(core, ask, rec_ref, token, units, |owner| inner.set_owner(record, owner));
        ask.holding(record, rec, token, units)
    }

    /// When a sampled holding began (its record's `acquired_ns`), read while it is still held.
    pub(crate) fn sampled_start(&self, h: &Holding) -> u64 {
        self.record(h).acquired_ns.load(Ordering::Relaxed)
    }

    /// The owner label of a live owned holding.
    pub(crate) fn owner_of(&self, h: &Holding) -> Option<Owner> {
        let inner = self.lock();
        let rec = self.record(h);
        if !lease::is_held_by(rec.lease.load(Ordering::Acquire), h.token)
            || rec.token.load(Ordering::Relaxed) != h.token
        {
            return None;
        }
        inner.owner(h.record())
    }

    /// Whether the holding is still live (managed holdings: not expired, revoked, or past its
    /// deadline at `now_ns`).
    pub(crate) fn is_held(&self, h: &Holding, now_ns: impl FnOnce() -> u64) -> bool {
        if self.is_bare_and_plain(h) {
            return true;
        }
        let rec = self.record(h);
        let l = rec.lease.load(Ordering::Acquire);
        if !h.managed() && !h.is_bare() && lease::state(l) == lease::PLAIN {
            return lease::tag(l) == lease::tag_of(h.token);
        }
        // A managed holding, or a plain one that another thread's renew of the same guard has
        // just promoted (the guard's `managed` flag may not show it yet).
        lease::is_held_by(l, h.token)
            && rec.token.load(Ordering::Relaxed) == h.token
            && (!lease::is_leased(l) || lease::deadline_ns(l) > now_ns())
    }

    /// Whether `h` is a bare holding (`word.rs`) that is held and has no record: the word still
    /// has its units and its counter, and not record 0's bit (which a promotion of it sets, by
    /// another thread's renewal of the same guard maybe). False for any other holding, and for a
    /// bare one that took record 0: its record tells then.
    pub(crate) fn is_bare_and_plain(&self, h: &Holding) -> bool {
        if !h.is_bare() {
            return false;
        }
        // Acquire: pairs with the promotion's SeqCst `fetch_or` of the bit, after its record.
        let w = self.word.load(Ordering::Acquire);
        // While it holds, nothing else advances the counter (an exclusive holder is alone; a
        // rebase or reshape needs the slot unheld), so the counter is its own exactly then.
        w & word::record_bit(0) == 0 && word::units(w) != 0 && self.token_of(w) == h.token
    }

    /// The token of a bare holding seen in `w` (units `MAX_UNITS` and no record, on a read/write
    /// key), for introspection: `None` if the word moved to another holding meanwhile.
    pub(crate) fn bare_token(&self, w: u64) -> Option<u64> {
        let token = self.token_of(w);
        let now = self.word.load(Ordering::Acquire);
        (word::counter(now) == word::counter(w) && word::units(now) == word::units(w)).then_some(token)
    }

    /// The holding's lease word as it is now (whoever's it is).
    #[inline]
    pub(crate) fn lease_word(&self, h: &Holding) -> u64 {
        self.record(h).lease.load(Ordering::Acquire)
    }

    /// The holding's deadline, if it is leased and live.
    pub(crate) fn deadline_of(&self, h: &Holding) -> Option<u64> {
        let rec = self.record(h);
        let l = rec.lease.load(Ordering::Acquire);
        (lease::is_held_by(l, h.token) && lease::is_leased(l) && rec.token.load(Ordering::Relaxed) == h.token)
            .then(|| lease::deadline_ns(l))
    }

    /// Releases a holding. `Err(AlreadyEnded)` if an expirer or a revoker ended it first (the
    /// guard is then a zombie).
    #[inline]
    pub(crate) fn release(&self, core: &Core, h: &Holding) -> Result<(), AlreadyEnded> {
        self.release_then(core, h, || {})
    }

    /// `release`, running `ended` once the holding is won for the release and before its units
    /// go back (the guard sends its `Released` event there, so that it comes before the next
    /// holder's `Acquired`).
    #[inline]
    pub(crate) fn release_then(&self, core: &Core, h: &Holding, ended: impl FnOnce()) -> Result<(), AlreadyEnded> {
        match h.record() {
            RecordRef::Inline(_) => {
                let rec = self.record(h);
                if h.managed() {
                    self.end_managed(h, rec)?;
                    if h.owned() {
                        self.lock().set_owner(h.record(), None);
                    }
                    ended();
                    self.return_units(core, h.word_delta(), h.mode_code());
                } else {
                    ended();
                    // As `release_plain`, with an upgradable holding's `UP` in the delta.
                    if !h.is_bare() {
                        rec.lease.store(lease::FREE, Ordering::Relaxed);
                    }
                    self.return_units(core, h.word_delta(), h.mode_code());
                }
                Ok(())
            }
            RecordRef::Overflow(index) => {
                let mut inner = self.lock();
                let rec = self.record(h);
                if h.managed() {
                    self.end_managed(h, rec)?;
                } else {
                    rec.lease.store(lease::FREE, Ordering::Relaxed);
                }
                ended();
                inner.free_overflow(index);
                self.return_units_locked(core, h.word_delta(), h.mode_code(), &mut inner);
                Ok(())
            }
        }
    }

    /// The guard's side of the lease-word race: `HELD -> FREE`, or `Err` if an expirer or revoker
    /// won first.
    #[inline]
    fn end_managed(&self, h: &Holding, rec: &Record) -> Result<(), AlreadyEnded> {
        self.end_managed_seen(h, rec, rec.lease.load(Ordering::Acquire))
    }

    /// `end_managed` from the lease word `current` as the caller loaded it (Acquire).
    #[inline(always)]
    fn end_managed_seen(&self, h: &Holding, rec: &Record, current: u64) -> Result<(), AlreadyEnded> {
        if !lease::is_held_by(current, h.token) || rec.token.load(Ordering::Relaxed) != h.token {
            return Err(AlreadyEnded);
        }
        // AcqRel: wins (or loses) against the expirer's compare-exchange on the same word.
        rec.lease
            .compare_exchange(current, lease::FREE, Ordering::AcqRel, Ordering::Relaxed)
            .map(drop)
            .map_err(|_| AlreadyEnded)
    }

    /// `release` of a managed holding in an inline record, without owner, not upgradable, whose
    /// lease word the caller has loaded (Acquire) as `seen`: the lease-word race from it, then
    /// the units.
    #[inline(always)]
    pub(crate) fn release_lease(&self, core: &Core, h: &Holding, seen: u64) -> Result<(), AlreadyEnded> {
        self.end_managed_seen(h, self.record(h), seen)?;
        self.return_units(core, h.release_delta(), h.mode_code());
        Ok(())
    }

    /// `release_exclusive_lease` inlined into the guard's release, for the common case: a lease
    /// word that is this holding's `EXCL` word, a deadline ahead (`ClockSource::passed`: the
    /// coarse clock, the exact one only within a second of it), a word without waiters, and the
    /// compare-exchange won. False, having changed nothing, for anything else: the caller then
    /// takes its out-of-line path, which loads both words again.
    #[inline(always)]
    pub(crate) fn try_release_exclusive_lease(&self, core: &Core, h: &Holding) -> bool {
        // `ClockSource::passed` in two parts: its cheap reading first, so that nothing loaded
        // below lives across that call (the spills around it were 14 instructions), and its
        // exact read only for a deadline within the lag bound. Read before the words, the reading
        // still comes before the compare-exchange that decides, as `passed`'s did.
        let (reading, lag) = core.clock.cheap_reading();
        // Acquire, both, and in this order: as in `release_exclusive_lease`.
        let w = self.word.load(Ordering::Acquire);
        let rec = self.record(h);
        let l = rec.lease.load(Ordering::Acquire);
        (!lease::is_leased(l)
            || surely_before(reading, lag, lease::deadline_ns(l))
            || core.clock.passed_exactly(lease::deadline_ns(l)).is_none())
            && self.release_exclusive_cas(h, w, l)
    }

    /// The one read-modify-write of `release_exclusive_lease`: true if the word `w` has no
    /// waiters or ender's mark, `seen` is this holding's `EXCL` lease word, and the state word's
    /// compare-exchange from `w` won. The caller has tested the deadline.
    #[inline(always)]
    fn release_exclusive_cas(&self, h: &Holding, w: u64, seen: u64) -> bool {
        w & (word::WAITERS | word::MATRIX) == 0
            && lease::is_held_exclusive_by(seen, h.token)
            && self.record(h).token.load(Ordering::Relaxed) == h.token
            // Release: publishes the holder's critical section to the next claimer's Acquire (as
            // the plain release's `fetch_sub`). Relaxed on failure: the caller goes on from the
            // lease word, which it has.
            && self.word.compare_exchange(w, w - h.release_delta(), Ordering::Release, Ordering::Relaxed).is_ok()
    }

    /// `release_lease` of an exclusive holding whose lease word is `EXCL` (`lease.rs`): one
    /// read-modify-write, on the state word, and the lease word left as it is. `w` is the state
    /// word and `seen` the lease word, loaded in that order (both Acquire).
    ///
    /// An ender (`force_end`) marks the state word (`WAITERS`, a read-modify-write) before it
    /// reads a lease word, keeps the mark until it is done (under the slot lock), and ends an
    /// `EXCL` holding only if the word it marked still shows that holding. So if this release's
    /// compare-exchange from a `w` without `WAITERS` succeeds, it came before the mark in the
    /// word's order, and the ender's marked word shows the holding gone (no units, or a later
    /// counter); otherwise the mark came first and this compare-exchange fails: the release then
    /// takes the lease-word race (`release_lease`), which an ender that won makes fail. A mark
    /// already cleared when `w` was loaded was an ender that had finished: `w`'s Acquire load
    /// synchronises with the clearing, so `seen` shows its `EXPIRING` (or a later holding's).
    #[inline(always)]
    pub(crate) fn release_exclusive_lease(
        &self,
        core: &Core,
        h: &Holding,
        w: u64,
        seen: u64,
    ) -> Result<(), AlreadyEnded> {
        if self.release_exclusive_cas(h, w, seen) {
            return Ok(());
        }
        // Waiters to wake, an ender at work, a word that moved (the reaper's `WATCHED`), a
        // holding without `EXCL` (an upgraded one) or one ended already: the general path.
        self.release_lease(core, h, seen)
    }

    /// Returns units (and an inline record's bit, folded into `delta`) to the word, waking
    /// whoever can now proceed. `mode` is the holding's `Mode::code`, for a matrix key's census.
    #[inline(always)]
    pub(crate) fn return_units(&self, core: &Core, delta: u64, mode: u64) {
        if self.word.load(Ordering::Relaxed) & (word::WAITERS | word::MATRIX) != 0 {
            return self.return_units_queued(core, delta, mode);
        }
        // Release: publishes the holder's critical section to the next claimer's Acquire.
        let prev = self.word.fetch_sub(delta, Ordering::Release);
        if prev & (word::WAITERS | word::MATRIX) != 0 {
            self.wake_after_release(prev, mode);
        }
    }

    /// The release of a plain holding in an inline record (a bare holding's is record 0): one
    /// compare-exchange from the word its claim installed, which needs no load of the word.
    ///
    /// That word, if the holding is the key's only one and no flag has come since, is
    /// `word::held_alone` of the token's counter (`token - token_base`) and the holding's delta
    /// (its units and record bit): what its claim installed on a word without holders or flags
    /// (`try_claim_bare`, `try_claim_unit_bit`, a creation's bare claim on a reborn word). While
    /// the holding lasts the base does not change (a rebirth or a rebase needs the slot unheld).
    /// Whatever the counter, a word equal to it holds this holding's record bit and exactly its
    /// units, so no other holding and no flag: the subtraction is this holding's release. Any
    /// other word (another holder's units or claim, a flag) makes it fail having changed nothing,
    /// and `release_plain_found` goes on from the word it found: without `WAITERS` or `MATRIX`, one
    /// `fetch_sub`; with them, `false`, for the caller's slow path, which takes the slot lock and
    /// may hand the units to an overdue waiter.
    ///
    /// Why no pre-test (a load of the word before the subtraction, as phase 8 had): it loads the
    /// word its own claim has just written with a locked instruction, and the branch on it stands
    /// before the subtraction. Without it, one hot key on one thread (lockbench W3, bare) went from
    /// 1.68 to 1.36-1.44 F, and a semaphore's permits (S) from 1.74 to 1.58-1.62 F (alternated runs,
    /// bench/perf5-hotpath.md, Phases 9 and 10). A shared key with readers on several threads pays
    /// a failed compare-exchange before the `fetch_sub` instead of the pre-test's load; both bring
    /// the line in, and the compare-exchange brings it in for writing, which the `fetch_sub` needs.
    ///
    /// The record's `FREE` store comes first (it must land before the bit clears: lease.rs, no
    /// finished lease lingers; nobody but this guard ends a plain holding, so a plain store). A
    /// bare holding writes it into record 0, which nobody else uses while it holds (word.rs) and
    /// nobody reads without its bit. If the release then goes to the slow path, the record stays
    /// `FREE` with its bit set, which readers take for a record in flux (lease.rs), and the slow
    /// path, which ends a plain holding without reading its record, stores `FREE` again.
    #[inline(always)]
    pub(crate) fn release_plain(&self, h: &Holding) -> bool {
        // Relaxed: the base is written before the word's Release store at the slot's birth, and
        // our claim's Acquire read that word (or a later one); it does not change while we hold.
        let base = self.token_base.load(Ordering::Relaxed);
        // `token - base` is the claim's counter (`token_of`), at most `COUNTER_MAX`.
        let counter = h.token.wrapping_sub(base);
        debug_assert!(counter <= word::COUNTER_MAX, "a plain holding's token {} below its base {base}", h.token);
        // The word after the release: the counter alone (no holder, no flag).
        let unheld = word::held_alone(counter, 0);
        let alone = unheld | h.plain_release_delta();
        self.record(h).lease.store(lease::FREE, Ordering::Relaxed);
        // Release: publishes the holder's critical section to the next claimer's Acquire (as the
        // `fetch_sub` of `release_plain_found`). Relaxed on failure: the word found is only
        // tested for flags.
        match self.word.compare_exchange(alone, unheld, Ordering::Release, Ordering::Relaxed) {
            Ok(_) => true,
            Err(found) => self.release_plain_found(h, found),
        }
    }

    /// `release_plain` after its compare-exchange found `found`: one `fetch_sub` of the holding's
    /// delta, waking whoever queued meanwhile, or, if `found` has `WAITERS` or `MATRIX`, nothing
    /// and `false`, for the caller's slow path. Inlined: a call out of line here, even one never
    /// taken, made every plain loop 10-25 instructions longer (bench/perf5-hotpath.md, Phase 10).
    #[inline(always)]
    fn release_plain_found(&self, h: &Holding, found: u64) -> bool {
        if found & (word::WAITERS | word::MATRIX) != 0 {
            return false;
        }
        // Release: publishes the holder's critical section to the next claimer's Acquire.
        let prev = self.word.fetch_sub(h.release_delta(), Ordering::Release);
        if prev & (word::WAITERS | word::MATRIX) != 0 {
            // A waiter queued between the compare-exchange and the subtraction: wake it.
            self.wake_after_release(prev, h.mode_code());
        }
        true
    }

    #[cold]
    #[inline(never)]
    fn return_units_queued(&self, core: &Core, delta: u64, mode: u64) {
        let mut inner = self.lock();
        self.return_units_locked(core, delta, mode, &mut inner);
    }

    /// A waiter queued, or the key became a matrix key, between the load and the subtraction
    /// (`prev` is the word it subtracted from): count the holding out of the census if the
    /// census counted it in, and wake whoever can proceed.
    #[cold]
    #[inline(never)]
    fn wake_after_release(&self, prev: u64, mode: u64) {
        let mut inner = self.lock();
        if prev & word::MATRIX != 0 {
            self.count_out(mode, &mut inner);
        }
        self.wake_waiters(&mut inner);
    }

    /// `return_units` with the slot lock held: hands the units straight to the first waiter if it
    /// has waited too long (eventual fairness), then wakes whoever else can proceed. On a matrix
    /// key the census decides instead: the units go back and the holding is counted out.
    pub(crate) fn return_units_locked(&self, core: &Core, delta: u64, mode: u64, inner: &mut SlotInner) {
        // Relaxed: `MATRIX` changes only under the slot lock, which we hold.
        if self.word.load(Ordering::Relaxed) & word::MATRIX != 0 {
            self.word.fetch_sub(delta, Ordering::Release);
            self.count_out(mode, inner);
        } else if !self.hand_off(core, delta, inner) {
            self.word.fetch_sub(delta, Ordering::Release);
        }
        self.wake_waiters(inner);
    }

    /// Queues `waiter` (under the slot lock; its claim loop has already set `WAITERS`).
    pub(crate) fn enqueue(&self, waiter: Arc<Waiter>, inner: &mut SlotInner) {
        let flags = inner.queue.push(waiter);
        if flags != 0 {
            self.word.fetch_or(flags, Ordering::Relaxed);
        }
    }

    /// Removes `waiter` from the queue (it gave up, or it claimed by itself after a wake-up) and
    /// wakes whoever its leaving lets proceed.
    pub(crate) fn leave_queue(&self, waiter: &Arc<Waiter>, inner: &mut SlotInner) {
        inner.queue.remove(waiter);
        self.wake_waiters(inner);
    }

    /// Wakes the waiters at the front of the queue that the free units can admit, then brings the
    /// word's queue flags in line with the queue. Under the slot lock.
    pub(crate) fn wake_waiters(&self, inner: &mut SlotInner) {
        let w = self.word.load(Ordering::Acquire);
        let capacity = self.capacity.load(Ordering::Relaxed);
        let free = capacity.saturating_sub(word::units(w));
        if w & word::MATRIX != 0 {
            inner.queue.wake_compatible(inner.census(), capacity, free);
        } else {
            inner.queue.wake_admitted(capacity, free);
        }
        self.sync_queue_flags(inner);
    }

    /// Sets `WAITERS` and `EXCL_WAITING` to match the queue (`word::with_queue_flags`). Under the
    /// slot lock, the only place they are cleared.
    pub(super) fn sync_queue_flags(&self, inner: &SlotInner) {
        let flags = inner.queue.flags();
        let mut w = self.word.load(Ordering::Relaxed);
        loop {
            let next = word::with_queue_flags(w, flags);
            if next == w {
                return;
            }
            // Release: a reclaimer that sees the slot idle (its Acquire load of the word) sees
            // the queue's last change.
            match self.word.compare_exchange_weak(w, next, Ordering::Release, Ordering::Relaxed) {
                Ok(_) => return,
                Err(actual) => w = actual,
            }
        }
    }

    /// A release of `delta` that hands the units straight to an overdue first waiter
    /// (`word::hand_off`): one compare-exchange both returns the releaser's units and claims for
    /// the waiter, so no barger can slip in between. Returns false (nothing done) if the first
    /// waiter is not overdue or does not fit; the caller then releases normally.
    fn hand_off(&self, core: &Core, delta: u64, inner: &mut SlotInner) -> bool {
        let Some(front) = inner.queue.overdue_front(|| core.clock.now_ns()) else {
            return false;
        };
        if front.ask.mode.is_intention() {
            // The matrix decides an intention request, under its census: it is woken to claim
            // for itself instead.
            return false;
        }
        let front = Arc::clone(front);
        let capacity = self.capacity.load(Ordering::Relaxed);
        let mut w = self.word.load(Ordering::Acquire);
        let claim = loop {
            // `word::hand_off`: a release and a privileged claim in one step, in the claim of the
            // waiter's mode.
            let Ok(claim) = front.ask.claim(w - delta, capacity, true, core.counter_limit) else {
                return false;
            };
            // AcqRel: releases the releaser's critical section and acquires for the waiter, whose
            // Acquire load of its state (after `grant`'s Release) then sees it all.
            match self.word.compare_exchange_weak(w, claim.word, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => break claim,
                Err(actual) => w = actual,
            }
        };
        // A claim that found the four inline records taken gets an overflow record, so the
        // hand-off holds for any number of holders.
        let h = if claim.record == word::OVERFLOW {
            self.finish_overflow(core, &front.ask, claim, inner)
        } else {
            self.finish_claim(core, &front.ask, claim, Some(inner))
        };
        inner.queue.pop_front();
        front.grant(h);
        true
    }

    /// Ends a managed holding that is not the caller's guard's doing: an expiry (only if its
    /// deadline has passed) or a revocation, as `ending` says. Returns the token and units of the
    /// holding ended.
    ///
    /// Under the slot lock. The word carries the ender's mark (`WAITERS`) from before the lease
    /// word is read until the units are back or nothing was ended, so that an exclusive lease's
    /// one-RMW release (`release_exclusive_lease`) and this never both end the holding.
    pub(crate) fn force_end(
        &self,
        core: &Core,
        record: RecordRef,
        ending: Ending,
        inner: &mut SlotInner,
        on_end: &mut dyn FnMut(&Ended),
    ) -> Option<(u64, u32)> {
        // Acquire: a release that returned units before the mark is seen (through the word's
        // release sequence), with everything it stored before.
        let marked = self.word.fetch_or(word::WAITERS, Ordering::Acquire) | word::WAITERS;
        let ended = self.force_end_marked(core, record, ending, marked, inner, on_end);
        if ended.is_none() {
            // No unit went back (whose wake-up clears the mark): the flags as the queue says.
            self.sync_queue_flags(inner);
        }
        ended
    }

    /// `force_end` with the word marked (`marked`: the word as the mark left it).
    fn force_end_marked(
        &self,
        core: &Core,
        record: RecordRef,
        ending: Ending,
        marked: u64,
        inner: &mut SlotInner,
        on_end: &mut dyn FnMut(&Ended),
    ) -> Option<(u64, u32)> {
        let (due_at, token) = match ending {
            Ending::Expiry { now, token } => (Some(now), token),
            Ending::Revocation { token } => (None, token),
        };
        let rec: &Record = match record {
            RecordRef::Inline(idx) => &self.records[idx as usize],
            // SAFETY: overflow boxes never move or free while the slot's memory lives.
            RecordRef::Overflow(i) => unsafe { &*inner.overflow_record(i)? },
        };
        let l = rec.lease.load(Ordering::Acquire);
        if lease::state(l) != lease::HELD {
            return None;
        }
        let t = rec.token.load(Ordering::Relaxed);
        // A tag that does not match the token is a record between holdings: leave it.
        if lease::tag_of(t) != lease::tag(l) || token.is_some_and(|want| want != t) {
            return None;
        }
        // An exclusive holding's word may be left by a release that gave its units back before
        // the mark (`release_exclusive_lease`): it is this holding's only while the marked word
        // still shows it. The counter cannot move on while it holds (it is alone), and no such
        // release can come after the mark.
        if lease::is_exclusive(l) && (word::units(marked) == 0 || self.token_of(marked) != t) {
            return None;
        }
        if let Some(now) = due_at {
            if !lease::is_due(l, now) {
                return None;
            }
        }
        // AcqRel: the race against the guard's release and renew, on the same word.
        rec.lease.compare_exchange(l, lease::expiring(l), Ordering::AcqRel, Ordering::Relaxed).ok()?;
        // The guard is now a zombie; count it before the units go back, so that the slot is not
        // reclaimed under it (the reclaimer's Acquire on the word sees this increment).
        self.zombies.fetch_add(1, Ordering::Relaxed);
        let stats = core.stats.of(self.hash.load(Ordering::Relaxed));
        ShardStats::bump(if due_at.is_some() { &stats.expiries } else { &stats.revocations });
        let units = rec.units();
        let mode = rec.meta.load(Ordering::Relaxed) & Mode::CODE_MASK;
        let owner = inner.owner(record);
        inner.set_owner(record, None);
        // The units are not back yet, so the slot (and its key) is still pinned for the callback.
        // It runs user code (the key's `Clone` and `Debug` for events and traces): a panic there
        // loses the event, but must not leave the units out (the key held forever) or unwind
        // through the reaper.
        let ended = Ended { token: t, meta: rec.meta.load(Ordering::Relaxed), owner, expired: due_at.is_some() };
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| on_end(&ended)));
        // An upgradable holding gives `UP` back too, and a pending upgrade of it ends.
        let up =
            if Mode::from_code(ended.meta, MAX_UNITS) == Mode::Upgradable { self.upgradable_ended(inner) } else { 0 };
        match record {
            RecordRef::Inline(idx) => self.return_units_locked(core, word::release_delta(idx, units) + up, mode, inner),
            RecordRef::Overflow(i) => {
                inner.free_overflow(i);
                self.return_units_locked(core, word::release_delta(OVERFLOW, units) + up, mode, inner);
            }
        }
        Some((t, units))
    }

    /// Expires every managed holding of this slot whose deadline is before `now_ns`. Returns how
    /// many it expired and the earliest deadline of the leased holdings left (`u64::MAX` if none),
    /// and whether some record was between holdings (its lease may not be visible yet).
    pub(crate) fn expire_overdue(
        &self,
        core: &Core,
        now_ns: u64,
        word_seen: u64,
        inner: &mut SlotInner,
        on_expired: &mut dyn FnMut(&Ended),
    ) -> ScanResult {
        let mut result = ScanResult { expired: 0, earliest: u64::MAX, in_flux: false };
        let mut visit = |this: &Self, record: RecordRef, rec: &Record, inner: &mut SlotInner| {
            let l = rec.lease.load(Ordering::SeqCst);
            match lease::state(l) {
                lease::HELD if lease::is_leased(l) => {
                    if lease::deadline_ns(l) <= now_ns {
                        if this
                            .force_end(core, record, Ending::Expiry { now: now_ns, token: None }, inner, on_expired)
                            .is_some()
                        {
                            result.expired += 1;
                        } else {
                            result.in_flux = true;
                        }
                    } else {
                        result.earliest = result.earliest.min(lease::deadline_ns(l));
                    }
                }
                lease::HELD | lease::PLAIN => {}
                _ => result.in_flux = true,
            }
        };
        for idx in 0..INLINE_RECORDS as RecordIdx {
            if word::holds_record(word_seen, idx) {
                visit(self, RecordRef::Inline(idx), &self.records[idx as usize], inner);
            }
        }
        let in_use: Vec<(u32, *const Record)> = inner.overflow_in_use().map(|(i, r)| (i, r as *const Record)).collect();
        for (i, rec) in in_use {
            // SAFETY: overflow boxes never move or free while the slot's memory lives.
            visit(self, RecordRef::Overflow(i), unsafe { &*rec }, inner);
        }
        result
    }

    /// The earliest deadline among the live leased holdings (for a waiter's park timeout).
    pub(crate) fn earliest_deadline(&self, inner: &SlotInner) -> Option<u64> {
        let w = self.word.load(Ordering::Acquire);
        let inline = (0..INLINE_RECORDS as RecordIdx)
            .filter(|&i| word::holds_record(w, i))
            .map(|i| self.records[i as usize].lease.load(Ordering::Acquire));
        let overflow = inner.overflow_in_use().map(|(_, r)| r.lease.load(Ordering::Acquire));
        inline
            .chain(overflow)
            .filter(|&l| lease::state(l) == lease::HELD && lease::is_leased(l))
            .map(lease::deadline_ns)
            .min()
    }

    /// Renews a managed holding: one compare-exchange on its lease word. Returns the new deadline,
    /// or why not: gone already, or found past its deadline (the caller then expires it, so that
    /// release and expiry agree with the answer).
    pub(crate) fn renew(&self, core: &Core, h: &Holding, ttl_ns: u64) -> Result<u64, Lost> {
        let rec = self.record(h);
        loop {
            let l = rec.lease.load(Ordering::Acquire);
            if !lease::is_held_by(l, h.token) || rec.token.load(Ordering::Relaxed) != h.token {
                return Err(Lost::Gone);
            }
            let now = core.clock.now_ns();
            if lease::is_leased(l) && lease::deadline_ns(l) <= now {
                return Err(Lost::PastDeadline(now));
            }
            let deadline = now.saturating_add(ttl_ns).min(lease::MAX_DEADLINE_NS);
            // SeqCst: with the SeqCst load of `scheduled` below and the reaper's SeqCst store of
            // `scheduled` then load of this word, one of the two sees the other (watch.rs).
            if rec.lease.compare_exchange(l, lease::renewed(l, deadline), Ordering::SeqCst, Ordering::Relaxed).is_ok() {
                let stored = lease::deadline_ns(lease::renewed(l, deadline));
                if !lease::is_leased(l) {
                    // A holding that gains a lease: make sure the slot is watched.
                    self.word.fetch_or(word::WATCHED, Ordering::SeqCst);
                }
                if self.watch.scheduled.load(Ordering::SeqCst) > stored {
                    core.wheel.register(&self.watch, &self.word, self as *const Self as usize, stored);
                }
                return Ok(stored);
            }
        }
    }

    /// Gives a plain holding a lease (a renewal of a holding acquired without one); from then on it
    /// is managed. Returns the deadline, or `Err` if `h` is not a plain holding of this record.
    pub(crate) fn promote(&self, core: &Core, h: &Holding, ttl_ns: u64) -> Result<u64, AlreadyEnded> {
        if h.is_bare() {
            return self.promote_bare(core, h, ttl_ns);
        }
        let rec = self.record(h);
        let l = rec.lease.load(Ordering::Acquire);
        if lease::state(l) != lease::PLAIN || lease::tag(l) != lease::tag_of(h.token) {
            return Err(AlreadyEnded);
        }
        let now = core.clock.now_ns();
        let deadline = now.saturating_add(ttl_ns).min(lease::MAX_DEADLINE_NS);
        let leased = lease::held(h.token, Some(deadline));
        // Managed holdings keep their mode and units in the record (the plain word had them).
        rec.meta.store(lease::plain_meta(l), Ordering::Relaxed);
        // Only the guard changes a plain lease word, so this cannot fail; SeqCst as in `renew`.
        rec.lease.compare_exchange(l, leased, Ordering::SeqCst, Ordering::Relaxed).map_err(|_| AlreadyEnded)?;
        let stored = lease::deadline_ns(leased);
        // Like a leased claim: the read-modify-write of the word orders this lease against the
        // reaper's scan (watch.rs).
        self.word.fetch_or(word::WATCHED, Ordering::SeqCst);
        if self.watch.scheduled.load(Ordering::SeqCst) > stored {
            core.wheel.register(&self.watch, &self.word, self as *const Self as usize, stored);
        }
        Ok(stored)
    }

    /// `promote` for a bare holding: it takes record 0, under the slot lock. Record 0 is free
    /// while the bare holding holds (it is alone, `word.rs`), and the slot lock keeps a second
    /// renewal of the same guard (from another thread) out until the bit is set: that one finds
    /// the bit and renews the managed holding instead (`Err`, as when a plain record was promoted
    /// first). The caller adds `Holding::RECORD_ZERO` and `MANAGED` to its guard's bits.
    #[cold]
    fn promote_bare(&self, core: &Core, h: &Holding, ttl_ns: u64) -> Result<u64, AlreadyEnded> {
        let _inner = self.lock();
        if !self.is_bare_and_plain(h) {
            return Err(AlreadyEnded);
        }
        let rec = &self.records[0];
        rec.token.store(h.token, Ordering::Relaxed);
        rec.meta.store(meta(Mode::Exclusive, MAX_UNITS), Ordering::Relaxed);
        if !h.is_sampled() {
            // A sampled holding's start is there already (`try_claim_bare`); others have none.
            rec.acquired_ns.store(crate::engine::holding::UNKNOWN_TIME, Ordering::Relaxed);
        }
        let now = core.clock.now_ns();
        let deadline = now.saturating_add(ttl_ns).min(lease::MAX_DEADLINE_NS);
        let leased = lease::held(h.token, Some(deadline));
        rec.lease.store(leased, Ordering::Relaxed);
        let stored = lease::deadline_ns(leased);
        // SeqCst read-modify-write: publishes the record with its bit (every reader of a record
        // loads the word first, with Acquire, and reads only the records whose bits are set), and
        // orders the lease against the reaper's scan like a leased claim's (watch.rs).
        self.word.fetch_or(word::record_bit(0) | word::WATCHED, Ordering::SeqCst);
        if self.watch.scheduled.load(Ordering::SeqCst) > stored {
            core.wheel.register(&self.watch, &self.word, self as *const Self as usize, stored);
        }
        Ok(stored)
    }

    /// Changes the capacity of an idle slot (a request of another kind found it idle). Returns
    /// false if the slot was not idle any more.
    pub(crate) fn reshape(&self, core: &Core, capacity: u32) -> bool {
        let w = self.word.load(Ordering::Acquire);
        if !word::is_idle(w) {
            return false;
        }
        if self.word.compare_exchange(w, w | word::CAP_CHANGING, Ordering::Acquire, Ordering::Relaxed).is_err() {
            return false;
        }
        self.capacity.store(capacity, Ordering::Relaxed);
        ShardStats::bump(&core.stats.of(self.hash.load(Ordering::Relaxed)).reshapes);
        // The change counts as an acquisition, so the word never returns to a value a claimer may
        // have read with the old capacity (word.rs). A spent counter is rebased on the way.
        let counter = word::counter(w);
        let delta = if counter < word::COUNTER_MAX {
            word::COUNTER_ONE
        } else {
            self.token_base.store(self.token_base.load(Ordering::Relaxed) + counter, Ordering::Relaxed);
            core.stats.of(self.hash.load(Ordering::Relaxed)).retired_acquisitions.fetch_add(counter, Ordering::Relaxed);
            word::COUNTER_ONE.wrapping_sub(counter << word::COUNTER_SHIFT)
        };
        // Release: a claimer that sees the new word sees the new capacity (and base). A
        // read-modify-write, since the reaper may clear `WATCHED` meanwhile.
        self.word.fetch_add(delta.wrapping_sub(word::CAP_CHANGING), Ordering::Release);
        true
    }

    /// Resets the acquisition counter of an idle slot whose counter is spent, moving the token
    /// base past every token handed out. Returns false if the slot was not idle.
    pub(crate) fn rebase(&self, core: &Core) -> bool {
        let w = self.word.load(Ordering::Acquire);
        if !word::is_unheld(w) {
            return false;
        }
        if self.word.compare_exchange(w, w | word::CAP_CHANGING, Ordering::Acquire, Ordering::Relaxed).is_err() {
            return false;
        }
        let base = self.token_base.load(Ordering::Relaxed) + word::counter(w);
        self.token_base.store(base, Ordering::Relaxed);
        // The acquisitions this counter counted now live in the shard's total.
        core.stats
            .of(self.hash.load(Ordering::Relaxed))
            .retired_acquisitions
            .fetch_add(word::counter(w), Ordering::Relaxed);
        // Release: a claimer that reads the reset counter also reads the new base. A read-modify-
        // write, not a store: the reaper may clear `WATCHED` meanwhile.
        self.word.fetch_and(!word::REBASE_CLEARS, Ordering::Release);
        true
    }

    /// The highest token this incarnation handed out, given its last live word.
    pub(crate) fn last_token_dead(&self, last_word: u64) -> u64 {
        self.token_base.load(Ordering::Relaxed) + word::counter(last_word)
    }
}

/// A holding an expirer or revoker ended, as its callback sees it (before its units go back).
#[derive(Debug)]
pub(crate) struct Ended {
    pub(crate) token: u64,
    /// `meta(mode, units)`.
    pub(crate) meta: u64,
    pub(crate) owner: Option<Owner>,
    /// Expired (true) or revoked.
    pub(crate) expired: bool,
}

/// A release or promotion found the holding ended already, by an expirer or a revoker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct AlreadyEnded;

/// How `force_end` ends a holding.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Ending {
    /// Expire it if its deadline is at or before `now`; with `token`, only the holding with it.
    Expiry { now: u64, token: Option<u64> },
    /// Revoke it; with `token`, only the holding with it.
    Revocation { token: Option<u64> },
}

/// Why a renewal failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Lost {
    /// Expired, revoked or released already.
    Gone,
    /// Still held, but its deadline passed at this clock reading.
    PastDeadline(u64),
}

/// What a scan of a slot's holdings found.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ScanResult {
    pub(crate) expired: usize,
    pub(crate) earliest: u64,
    pub(crate) in_flux: bool,
}

#[cfg(all(test, not(leasehold_loom)))]
mod layout {
    use super::*;

    #[test]
    fn the_fast_path_fits_one_cache_line() {
        assert_eq!(std::mem::size_of::<Record>(), 32);
        assert_eq!(std::mem::align_of::<Slot<u64>>(), 64);
        // With a `u64` key: the word, base, capacity, key and record 0 on the first line.
        assert!(std::mem::offset_of!(Slot<u64>, records) + std::mem::size_of::<Record>() <= 64);
        assert!(std::mem::offset_of!(Slot<u64>, key) + 8 <= 64);
        // With a `String` key: the key and the token and lease words of record 0 (what a plain
        // holding writes) still there.
        assert!(std::mem::offset_of!(Slot<String>, records) + 16 <= 64);
        let size = std::mem::size_of::<Slot<String>>();
        assert!(size <= 256, "a slot grew to {size} bytes");
        // A reclamation and a rebirth touch the first line and the one with `swept` and the hash.
        assert_eq!(std::mem::offset_of!(Slot<u64>, swept) / 64, std::mem::offset_of!(Slot<u64>, hash) / 64);
    }
}
