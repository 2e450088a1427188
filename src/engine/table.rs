//! The table: shards of slots looked up by key hash, and the two ways to claim a slot, the
//! lock-free fast path (`try_fast`, `claim_found`) and the locked path under the shard lock
//! (`attempt`: find or create the slot, claim, or queue), with the retry of a woken waiter.
//!
//! The engine speaks the vocabulary (`Mode`, `Owner`, `LockError`) and nothing of the façade:
//! events and traces are the caller's, told through `OnEnded` when the engine ends a holding.

use std::borrow::Borrow;
use std::hash::{BuildHasher, Hash};
use std::time::Duration;

use crate::engine::census::Census;
use crate::engine::core::Core;
use crate::engine::holding::{Ask, Holding, RecordPtr};
use crate::engine::queue::Waiter;
use crate::engine::shard::{key_matches, Shard};
use crate::engine::slot::{Blocked, Ended, Slot, SlotInner};
use crate::engine::sweep::{idle_per_shard, slot_cost, IdleBound, SweepTimer, IDLE_BYTES_PER_SHARD, SWEEP_ON_INSERT};
use crate::engine::word;
use crate::primitives::counters::{shard_of, ShardStats, SHARD_HASH_SHIFT};
use crate::primitives::sync::untracked::AtomicUsize;
use crate::primitives::sync::{Arc as SyncArc, Ordering};
use crate::vocab::{LockError, Mode};

/// The hasher a manager uses unless told otherwise: foldhash's, seeded per process (fast, and
/// resistant enough to chosen keys for a lock table).
#[cfg(not(leasehold_loom))]
pub type DefaultHasher = foldhash::fast::RandomState;
/// Under loom, a fixed seed: loom replays each execution step by step and needs every run of a
/// model to hash (and so to probe and sweep) the same way.
#[cfg(leasehold_loom)]
pub type DefaultHasher = foldhash::fast::FixedState;

/// Told of every holding the engine ends on its own (an expired blocker met on the locked path),
/// before its units go back; the façade turns it into an event.
pub(crate) type OnEnded<'a, K> = &'a dyn Fn(&Slot<K>, &Ended);

/// The lock table: the engine's state for one manager.
pub(crate) struct Table<K, S> {
    pub(crate) core: Core,
    shards: Box<[Shard<K>]>,
    /// The byte offset of a key's shard in `shards` is `(hash >> (SHARD_HASH_SHIFT - stride
    /// shift)) & shard_offsets` (`shard_of`): the shard number in bytes, one shift and one mask.
    shard_offsets: usize,
    hasher: S,
    pub(super) max_slots: usize,
    /// A shard with this many slots reclaims idle ones as it creates new ones.
    pub(super) idle_per_shard: usize,
    /// Slots in the index over all shards, kept only when `max_slots` is bounded (a counter every
    /// slot creation and reclamation writes; unbounded managers sum the shards' own counts).
    /// Not a synchronising atomic (a bound checked under each shard's own lock), so not loom's.
    pub(super) bounded: Option<AtomicUsize>,
    /// The next shard a refusal at the slot bound sweeps (`sweep_for_capacity`).
    pub(super) capacity_cursor: AtomicUsize,
    /// When the next periodic sweep is due (`sweep.rs`).
    pub(crate) sweep_timer: SweepTimer,
    /// A driver thread sleeps without a sweep timer while the table is empty: the first slot
    /// created in a shard wakes it.
    pub(super) wake_driver_on_first: bool,
}

/// How a table is sized (checked by the builder).
pub(crate) struct TableConfig {
    pub(crate) shards: usize,
    pub(crate) max_slots: usize,
    /// The idle cache's bound (`None`: `IDLE_BYTES_PER_SHARD` per shard).
    pub(crate) idle: Option<IdleBound>,
    pub(crate) wake_driver_on_first: bool,
    /// Every token is above this floor (`Builder::token_floor`).
    pub(crate) token_floor: u64,
}

impl<K, S> Table<K, S> {
    /// `log2` of a shard's size: `Shard` is aligned to a power of two that its fields fit in.
    const STRIDE_SHIFT: u32 = {
        let size = std::mem::size_of::<Shard<K>>();
        assert!(size.is_power_of_two() && size.trailing_zeros() <= SHARD_HASH_SHIFT);
        size.trailing_zeros()
    };

    pub(crate) fn new(core: Core, hasher: S, config: TableConfig) -> Self {
        let TableConfig { shards, max_slots, idle, wake_driver_on_first, token_floor } = config;
        let now = core.clock.now_ns();
        Table {
            core,
            shards: (0..shards).map(|_| Shard::new(token_floor)).collect(),
            shard_offsets: {
                assert!(shards.is_power_of_two(), "the builder checks that shards is a power of two");
                assert!(shards <= 1 << (64 - SHARD_HASH_SHIFT), "the builder bounds the shard count");
                (shards - 1) << Self::STRIDE_SHIFT
            },
            hasher,
            max_slots,
            idle_per_shard: idle_per_shard::<K>(
                idle.unwrap_or(IdleBound::Bytes(IDLE_BYTES_PER_SHARD * shards)),
                shards,
            ),
            bounded: (max_slots != usize::MAX).then(|| AtomicUsize::new(0)),
            capacity_cursor: AtomicUsize::new(0),
            sweep_timer: SweepTimer::new(now),
            wake_driver_on_first,
        }
    }

    /// The shards, for the visits that walk the whole table (snapshots, metrics, sweeps).
    pub(crate) fn shards(&self) -> &[Shard<K>] {
        &self.shards
    }

    /// The most slots the idle cache keeps over the whole table, and the bytes they take (slot
    /// and index).
    pub(crate) fn idle_bound(&self) -> (usize, usize) {
        let slots = self.idle_per_shard * self.shards.len();
        (slots, slots * slot_cost::<K>())
    }

    /// Slots in the table (held, waited on, or idle and cached), summed over the shards.
    pub(crate) fn total_slots(&self) -> usize {
        self.shards.iter().map(Shard::count).sum()
    }
}

/// What the locked path did.
pub(crate) enum Attempt<'a, K> {
    Acquired(&'a Slot<K>, Holding),
    Queued(&'a Slot<K>, SyncArc<Waiter>),
    Failed(LockError),
}

impl<K, S> Table<K, S>
where
    K: Hash + Eq + Send + Sync + 'static,
    S: BuildHasher + Send + Sync + 'static,
{
    #[inline(always)]
    pub(crate) fn hash<Q: ?Sized + Hash>(&self, key: &Q) -> u64 {
        self.hasher.hash_one(key)
    }

    #[inline(always)]
    pub(crate) fn shard(&self, hash: u64) -> &Shard<K> {
        let offset = (hash >> (SHARD_HASH_SHIFT - Self::STRIDE_SHIFT)) as usize & self.shard_offsets;
        debug_assert_eq!(offset >> Self::STRIDE_SHIFT, shard_of(hash, self.shards.len()));
        // SAFETY: `shard_offsets` is `(shards.len() - 1) << STRIDE_SHIFT` (`new`), with
        // `shards.len()` a power of two, so `offset` is `i * size_of::<Shard<K>>()` for an
        // `i < shards.len()`: the start of a shard of the slice.
        unsafe { &*self.shards.as_ptr().byte_add(offset) }
    }

    /// The fast path: a lock-free lookup and one compare-exchange. `None` means "take the locked
    /// path" (no slot yet, busy, or anything unusual). Also returns the slot found, for spinning.
    #[inline(always)]
    pub(crate) fn try_fast<Q>(&self, hash: u64, key: &Q, ask: &Ask) -> (Option<&Slot<K>>, Option<Holding>)
    where
        K: Borrow<Q>,
        Q: ?Sized + Hash + Eq,
    {
        if ask.mode.is_intention() {
            // The matrix decides, under the slot lock: nothing to try (or spin on) here.
            return (None, None);
        }
        let Some(slot) = self.shard(hash).find(hash) else {
            return (None, None);
        };
        (Some(slot), self.claim_found(slot, key, ask))
    }

    /// `try_fast` for a plain request: the slot and holding, or the slot found (if any) for the
    /// slow path. `limit` is the claim's counter limit (`Slot::try_claim_plain`).
    #[inline(always)]
    pub(crate) fn try_fast_plain<Q>(
        &self,
        hash: u64,
        key: &Q,
        mode: Mode,
        limit: u64,
    ) -> Result<(&Slot<K>, Holding), Option<&Slot<K>>>
    where
        K: Borrow<Q>,
        Q: ?Sized + Hash + Eq,
    {
        let Some(slot) = self.shard(hash).find(hash) else {
            return Err(None);
        };
        let h = slot.try_claim_plain(&self.core, mode, limit).map_err(|_| Some(slot))?;
        // SAFETY: our claim pins the slot, so it is live and its key stays put.
        if unsafe { key_matches(slot, key) } {
            Ok((slot, h))
        } else {
            self.undo_collision(slot, h.rec, h.token, h.bits);
            Err(None)
        }
    }

    /// `try_fast_plain` for a lease without owner (`Slot::try_claim_lease`), with the same
    /// `limit`.
    #[inline(always)]
    pub(crate) fn try_fast_lease<Q>(
        &self,
        hash: u64,
        key: &Q,
        mode: Mode,
        ttl_ns: u64,
        limit: u64,
    ) -> Result<(&Slot<K>, Holding), Option<&Slot<K>>>
    where
        K: Borrow<Q>,
        Q: ?Sized + Hash + Eq,
    {
        let Some(slot) = self.shard(hash).find(hash) else {
            return Err(None);
        };
        let h = slot.try_claim_lease(&self.core, mode, ttl_ns, limit).map_err(|_| Some(slot))?;
        // SAFETY: our claim pins the slot, so it is live and its key stays put.
        if unsafe { key_matches(slot, key) } {
            Ok((slot, h))
        } else {
            self.undo_collision(slot, h.rec, h.token, h.bits);
            Err(None)
        }
    }

    /// A full 64-bit hash collision with a key that holds this slot: undo the claim. The holding
    /// comes as scalars: lent by address (`&Holding`), it would have to be stored to memory on
    /// every fast-path acquire for this cold call's sake (3 stores, bench/perf5-hotpath.md).
    #[cold]
    #[inline(never)]
    fn undo_collision(&self, slot: &Slot<K>, rec: RecordPtr, token: u64, bits: u64) {
        let _ = slot.release(&self.core, &Holding { rec, token, bits });
    }

    /// Claims a slot found by the lock-free lookup, then checks its key (the claim pins it).
    #[inline(always)]
    pub(crate) fn claim_found<Q>(&self, slot: &Slot<K>, key: &Q, ask: &Ask) -> Option<Holding>
    where
        K: Borrow<Q>,
        Q: ?Sized + Hash + Eq,
    {
        let h = slot.try_claim(&self.core, ask, false).ok()?;
        // SAFETY: our claim pins the slot, so it is live and its key stays put.
        if unsafe { key_matches(slot, key) } {
            Some(h)
        } else {
            // A full 64-bit hash collision with a key that holds this slot: undo and go slow.
            let _ = slot.release(&self.core, &h);
            None
        }
    }

    /// The authoritative path, under the shard lock: finds or creates the slot, claims, or (with
    /// `waiter`) queues. Expired holders blocking the request are expired first (`on_ended` hears
    /// of each). Refusals are counted.
    pub(crate) fn attempt<Q>(
        &self,
        hash: u64,
        key: &Q,
        ask: &Ask,
        waiter: Option<&dyn Fn() -> SyncArc<Waiter>>,
        on_ended: OnEnded<'_, K>,
    ) -> Attempt<'_, K>
    where
        K: Borrow<Q> + From<Q::Owned>,
        Q: ?Sized + Hash + Eq + ToOwned,
    {
        let attempt = self.attempt_locked(hash, key, ask, waiter, on_ended);
        if let Attempt::Failed(e) = &attempt {
            self.count_refusal(hash, e);
        }
        attempt
    }

    /// Counts a refused request.
    #[cold]
    pub(crate) fn count_refusal(&self, hash: u64, e: &LockError) {
        let stats = self.core.stats.of(hash);
        ShardStats::bump(match e {
            LockError::WouldBlock => &stats.would_block,
            LockError::TimedOut => &stats.timeouts,
            _ => &stats.refused,
        });
    }

    /// The locked path's body (see [`attempt`](Table::attempt)).
    fn attempt_locked<Q>(
        &self,
        hash: u64,
        key: &Q,
        ask: &Ask,
        waiter: Option<&dyn Fn() -> SyncArc<Waiter>>,
        on_ended: OnEnded<'_, K>,
    ) -> Attempt<'_, K>
    where
        K: Borrow<Q>,
        Q: ?Sized + Hash + Eq + ToOwned,
        K: From<Q::Owned>,
    {
        let shard = self.shard(hash);
        let mut reclaimed_for_capacity = false;
        loop {
            let mut g = shard.lock();
            let slot = match shard.find_locked(&g, hash, key) {
                Some(slot) => slot,
                None => {
                    // Before anything changes: a panic in the key's conversion leaves the shard as it
                    // was.
                    let owned = K::from(key.to_owned());
                    let Some((slot, place)) = self.dead_slot(shard, &mut g) else {
                        // At the bound: a bounded stretch of this shard, then of the next few shards
                        // in turn (`sweep_for_capacity`), so that a refusal costs O(1), not a sweep of
                        // the whole table; repeated refusals go round the table.
                        let reclaimed = shard.sweep(&mut g, SWEEP_ON_INSERT, 1, &self.core, true);
                        if reclaimed > 0 {
                            self.note_reclaimed(reclaimed);
                            continue;
                        }
                        drop(g);
                        if !reclaimed_for_capacity {
                            reclaimed_for_capacity = true;
                            if self.sweep_for_capacity() > 0 {
                                continue;
                            }
                        }
                        return Attempt::Failed(LockError::Capacity { max_slots: self.max_slots });
                    };
                    let capacity = ask.mode.capacity();
                    let claim = self.birth(&mut g, slot, hash, owned, capacity, false, |start| {
                        let mut claim = ask
                            .claim(start, capacity, false, self.core.counter_limit)
                            .expect("a fresh slot admits any request");
                        if ask.mode.is_intention() {
                            // Born a matrix key, its census counting its creator: the slot is not yet
                            // published, so nobody can see the word before the census.
                            claim.word |= word::MATRIX;
                            let mut census = Census::default();
                            census.add(ask.mode.granule());
                            *slot.lock().census_mut() = census;
                        }
                        claim
                    });
                    Self::publish(shard, &mut g, hash, slot, place);
                    self.born(g, place);
                    let h = slot.finish_claim(&self.core, ask, claim, None);
                    return Attempt::Acquired(slot, h);
                }
            };
            // Found under the shard lock: pinned while we hold it. Take the slot lock too, and
            // claim (or set `WAITERS`) before the shard lock goes: reclamation needs the shard
            // lock but not the slot lock, so a slot left idle between the two could be reclaimed
            // and reborn for another key, and a claim or a wait on it would be for that key.
            let mut inner = slot.lock();
            let claimed = slot.claim_locked(&self.core, ask, false, waiter.is_some(), &mut inner);
            drop(g);
            // From here the slot may be reclaimed only once it is idle: our claim or our
            // `WAITERS` flag prevents that; if neither happens we go round again.
            match claimed {
                Ok(h) => return Attempt::Acquired(slot, h),
                Err(blocked @ (Blocked::Busy | Blocked::Exhausted)) => {
                    // A spent counter is reset once nobody holds a unit; until then, wait.
                    if blocked == Blocked::Exhausted && slot.rebase(&self.core) {
                        continue;
                    }
                    if self.expire_blockers(slot, &mut inner, on_ended) > 0 {
                        continue;
                    }
                    let Some(make) = waiter else {
                        return Attempt::Failed(LockError::WouldBlock);
                    };
                    let w = make();
                    slot.enqueue(SyncArc::clone(&w), &mut inner);
                    return Attempt::Queued(slot, w);
                }
                Err(Blocked::Mismatch(live)) => {
                    let requested = match ask.mode {
                        Mode::Semaphore(n) => n,
                        _ => word::MAX_UNITS,
                    };
                    return Attempt::Failed(LockError::PermitMismatch { live, requested });
                }
                Err(Blocked::Reshape) => {
                    slot.reshape(&self.core, ask.mode.capacity());
                }
                Err(Blocked::Unstable | Blocked::Overflow) => crate::primitives::sync::spin_loop(),
            }
        }
    }

    /// A queued waiter's retry after a wake-up, under the slot lock.
    pub(crate) fn retry_queued(
        &self,
        slot: &Slot<K>,
        waiter: &SyncArc<Waiter>,
        inner: &mut SlotInner,
        on_ended: OnEnded<'_, K>,
    ) -> Option<Holding> {
        // Privileged (may pass the writer-waiting flag) only if no exclusive request is queued
        // ahead of it: a retry after a timeout or a holder's deadline was not woken by a release,
        // and a reader behind a writer must not take the lock before it.
        let privileged = !inner.queue.ahead_of(waiter).any(|w| w.ask.mode.is_exclusive());
        loop {
            match slot.claim_locked(&self.core, &waiter.ask, privileged, true, inner) {
                Ok(h) => {
                    slot.leave_queue(waiter, inner);
                    return Some(h);
                }
                Err(Blocked::Exhausted) if slot.rebase(&self.core) => continue,
                Err(Blocked::Busy | Blocked::Exhausted) => {
                    if self.expire_blockers(slot, inner, on_ended) > 0 {
                        continue;
                    }
                    waiter.rearm();
                    return None;
                }
                Err(_) => {
                    crate::primitives::sync::spin_loop();
                }
            }
        }
    }

    /// Whether a woken waiter for `ask` may retry with lock-free claims ([`Table::claim_woken`]):
    /// not on a matrix key (its claims are decided under the slot lock), and not for a reader
    /// while a writer is queued (only the locked retry can tell, from the queue, that the reader
    /// may pass it).
    pub(crate) fn woken_claims_lock_free(&self, slot: &Slot<K>, ask: &Ask) -> bool {
        // Relaxed: a hint; a claim that the word refuses only costs the spin.
        let w = slot.word.load(Ordering::Relaxed);
        !ask.mode.is_intention()
            && w & word::MATRIX == 0
            && (ask.mode.is_exclusive() || w & (word::EXCL_WAITING | word::UPGRADING) == 0)
    }

    /// A woken waiter's retry without the slot lock: one lock-free claim, as a barger would make
    /// (not privileged: the locked retry, `retry_queued`, decides who may pass a queued writer).
    /// Its queue entry pins the slot (`WAITERS` is set while it is queued). On success it leaves
    /// the queue, waking whoever its leaving lets proceed.
    #[inline]
    pub(crate) fn claim_woken(&self, slot: &Slot<K>, waiter: &SyncArc<Waiter>) -> Option<Holding> {
        let h = slot.try_claim(&self.core, &waiter.ask, false).ok()?;
        slot.leave_queue(waiter, &mut slot.lock());
        Some(h)
    }

    /// Expires the leased holders of `slot` whose deadlines have passed (a contender never waits
    /// on them, whether or not the wheel has run). Returns how many.
    pub(crate) fn expire_blockers(&self, slot: &Slot<K>, inner: &mut SlotInner, on_ended: OnEnded<'_, K>) -> usize {
        if slot.earliest_deadline(inner).is_none() {
            return 0;
        }
        let now = self.core.clock.now_ns();
        let w = slot.word.load(Ordering::Acquire);
        slot.expire_overdue(&self.core, now, w, inner, &mut |e| on_ended(slot, e)).expired
    }

    /// How long a queued waiter may sleep before it must look at the holders' deadlines itself.
    pub(crate) fn holder_deadline_wait(&self, slot: &Slot<K>) -> Option<Duration> {
        if !self.core.clock.is_real_time() {
            return None;
        }
        let earliest = slot.earliest_deadline(&slot.lock())?;
        let now = self.core.clock.now_ns();
        Some(Duration::from_nanos(earliest.saturating_sub(now)))
    }
}
