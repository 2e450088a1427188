//! The sharded index from key hash to slot, and the slot pools behind it.
//!
//! # Ground rules
//!
//! - Readers never lock: a lookup loads the shard's current mask and entries (`Lookup`, on the
//!   shard's first line, so that the probe's first entry is one dependent load from the shard)
//!   and probes them (linear probing over `(hash, slot)` entries). What it finds is a *hint*: the caller claims the slot and then
//!   checks the key, or falls back to the locked path, which is authoritative.
//! - Writers (insert, remove, grow, reclaim) hold the shard lock. Removal shifts later entries
//!   back (no tombstones), so a reader racing a removal may miss an entry: it then takes the
//!   locked path, never acts on a wrong key.
//! - Nothing a reader may still hold is freed: slots come from per-shard pools and tables that
//!   are outgrown are retired, not freed; both are freed when the manager is dropped. Memory
//!   therefore follows the most slots live at once (plus a bounded idle cache), not the keys ever
//!   seen: keys themselves are dropped the moment their slot is reclaimed.

use std::borrow::Borrow;
use std::hash::Hash;

mod walk;
pub(crate) use walk::Walk;

use crossbeam_utils::CachePadded;

use crate::engine::core::Core;
use crate::engine::slot::Slot;
use crate::engine::word;
use crate::primitives::sync::untracked;
use crate::primitives::sync::{AtomicPtr, AtomicU64, Mutex, MutexGuard, Ordering};

/// Smallest table, in entries.
pub(crate) const MIN_TABLE: usize = 16;
/// Most slots allocated at once when a pool runs dry.
const MAX_CHUNK: usize = 64;

/// Index bytes per slot: a 16-byte entry at a load of at most 1/4 (`Shard::insert`).
pub(crate) const INDEX_BYTES_PER_SLOT: usize = 4 * std::mem::size_of::<Entry<()>>();

struct Entry<K> {
    hash: AtomicU64,
    slot: AtomicPtr<Slot<K>>,
}

/// One open-addressing table. Retired tables stay valid (their slots are type-stable).
struct Table<K> {
    mask: usize,
    entries: Box<[Entry<K>]>,
}

impl<K> Table<K> {
    fn with_capacity(capacity: usize) -> Box<Self> {
        let capacity = capacity.next_power_of_two().max(MIN_TABLE);
        let entries: Box<[Entry<K>]> = (0..capacity)
            .map(|_| Entry { hash: AtomicU64::new(0), slot: AtomicPtr::new(std::ptr::null_mut()) })
            .collect();
        // `entry` relies on this: every `i & mask` is in bounds.
        assert_eq!(entries.len(), capacity);
        Box::new(Table { mask: capacity - 1, entries })
    }

    #[inline]
    fn home(&self, hash: u64) -> usize {
        hash as usize & self.mask
    }

    /// Entry `i & mask`, without a bounds check.
    #[inline(always)]
    fn entry(&self, i: usize) -> &Entry<K> {
        // SAFETY: `entries.len() == mask + 1`, a power of two (`with_capacity`), so `i & mask` is
        // in bounds.
        unsafe { self.entries.get_unchecked(i & self.mask) }
    }
}

/// A shard: its lock-free index and its lock-protected pool and bookkeeping. Padded parts: what
/// every lookup reads, and what only writers under the lock change; aligned to a power of two
/// (512 bytes) so that a shift, not a multiply, finds a shard.
#[repr(C, align(512))]
pub(crate) struct Shard<K> {
    lookup: CachePadded<Lookup<K>>,
    locked: CachePadded<Locked<K>>,
}

/// The shard's read-mostly line: the current table, and its entries and mask as the lock-free
/// lookup reads them. Mask and entries side by side, so a lookup loads both from the shard at
/// once and its first entry is one dependent load away (through `table`, it was two: the table,
/// then its entries' pointer; bench/PERF-PLAN.md, P3). Tables only grow, and `grow` publishes
/// the new entries before the new mask: a lookup loads the mask first (Acquire), so the entries
/// it loads next are that mask's table or a later, larger one, and every `i & mask` is in bounds.
#[repr(C)]
struct Lookup<K> {
    /// The current table, owned (`Box::into_raw`). Swapped under the lock when the table grows.
    table: AtomicPtr<Table<K>>,
    /// The current table's first entry.
    entries: AtomicPtr<Entry<K>>,
    /// The current table's mask (its entries, less one).
    mask: AtomicU64,
}

/// The shard's written-under-the-lock line: the mirrored count, the mutex and the fields of
/// `ShardInner` that every creation and reclamation reads and writes share one cache line (a
/// churn op touches this line and the table pointer's, not four lines of the shard).
#[repr(C)]
struct Locked<K> {
    /// `ShardInner::present`, mirrored for readers that do not take the lock (`slot_count`),
    /// written with a plain store under the lock.
    count: untracked::AtomicUsize,
    inner: Mutex<ShardInner<K>>,
}

/// What the shard lock protects; the fields a creation or reclamation touches first (`Locked`).
#[repr(C)]
pub(crate) struct ShardInner<K> {
    /// Slots in the index (held, waited on, or idle and cached).
    pub(crate) present: usize,
    /// The highest token handed out by any slot of this shard that has since been reclaimed:
    /// a new incarnation counts from here, so tokens of a key never go back.
    pub(crate) high_water: u64,
    /// Acquisitions counted by this shard's reclaimed slots, less the counters their next
    /// incarnations continue from (wrapping): the metrics add it to the live slots' counters.
    /// Creation and reclamation change it under the lock; capacity changes and rebases, under a
    /// slot lock only, use `ShardStats::retired_acquisitions` instead.
    pub(crate) retired_acquisitions: u64,
    /// Where the idle sweep resumes.
    hand: usize,
    /// Creations to let pass before the next insert-time sweep: a sweep that found only held
    /// slots (a shard full of long-held locks) doubles it, any other resets it, so such a shard
    /// does not pay a fruitless scan per new key.
    pub(crate) sweep_backoff: u32,
    pub(crate) sweep_skip: u32,
    /// The last sweep saw an idle slot it spared (so it was not fruitless). Read only by the
    /// insert-time backoff after a sweep that reclaimed nothing, so the insert-time sweeps write
    /// it only then (`reclaim_for_reuse`, `creation_walk`).
    pub(crate) last_sweep_found_idle: bool,
    /// Dead slots ready for reuse.
    free: Vec<*mut Slot<K>>,
    /// The memory of every slot this shard ever allocated.
    chunks: Vec<Box<[Slot<K>]>>,
    /// Outgrown tables, kept until the manager is dropped (readers may still probe them).
    #[allow(clippy::vec_box)]
    retired: Vec<Box<Table<K>>>,
}

// SAFETY: the raw slot pointers point into `chunks`, owned by this shard and freed only on drop.
unsafe impl<K: Send> Send for ShardInner<K> {}

/// The outcome of trying to reclaim one slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reclaim {
    /// Reclaimed: its key is dropped, it is out of the index, and the caller puts it in the pool
    /// or reuses it.
    Done,
    /// Idle but used since the last sweep: given a second chance.
    Spared,
    /// Held, waited on, or pinned by a zombie guard.
    Busy,
}

impl<K> Shard<K> {
    /// An empty shard whose first token is `token_floor + 1`.
    pub(crate) fn new(token_floor: u64) -> Self {
        let table = Table::with_capacity(MIN_TABLE);
        Shard {
            lookup: CachePadded::new(Lookup {
                entries: AtomicPtr::new(table.entries.as_ptr() as *mut Entry<K>),
                mask: AtomicU64::new(table.mask as u64),
                table: AtomicPtr::new(Box::into_raw(table)),
            }),
            locked: CachePadded::new(Locked {
                count: untracked::AtomicUsize::new(0),
                inner: Mutex::new(ShardInner {
                    present: 0,
                    free: Vec::new(),
                    chunks: Vec::new(),
                    retired: Vec::new(),
                    high_water: token_floor,
                    retired_acquisitions: 0,
                    hand: 0,
                    sweep_backoff: 0,
                    sweep_skip: 0,
                    last_sweep_found_idle: false,
                }),
            }),
        }
    }

    #[inline(always)]
    fn table(&self) -> &Table<K> {
        // SAFETY: the pointer is always a live table: the current one, or (for a reader that
        // loaded it before a swap) a retired one, kept until the shard is dropped. Acquire pairs
        // with the Release that published it.
        unsafe { &*self.lookup.table.load(Ordering::Acquire) }
    }

    /// Lock-free lookup: the slot of an entry whose hash matches, if the probe finds one. A hint
    /// only: the caller claims it and then checks the key (the claim pins it), and a wrong slot
    /// (a full 64-bit collision, or an entry read while a writer moved it, its pointer and hash
    /// from two different keys) is released again or sent to the locked path. The slot's own
    /// hash is not compared here: it costs a load and a test on every lookup to spare a claim
    /// and its undo in a race that rare (bench/perf5-hotpath.md, Phase 6).
    #[inline(always)]
    pub(crate) fn find(&self, hash: u64) -> Option<&Slot<K>> {
        // Acquire, the mask first: pairs with `grow`'s Release of the mask, stored after the
        // entries, so the entries loaded next have at least `mask + 1` of them (`Lookup`).
        let mask = self.lookup.mask.load(Ordering::Acquire) as usize;
        // Acquire: pairs with the Release that published these entries (`grow`), so their
        // initialisation is seen.
        let entries = self.lookup.entries.load(Ordering::Acquire);
        let mut i = hash as usize;
        // At most one turn of the table (it is never more than 1/4 full, so a probe ends at an
        // empty entry long before; the bound keeps a reader racing removals finite).
        let mut left = mask;
        loop {
            // SAFETY: `entries` is a live table (current, or retired and kept until the shard is
            // dropped) of at least `mask + 1` entries (`Lookup`), so `i & mask` is in bounds.
            let entry = unsafe { &*entries.add(i & mask) };
            // Acquire: pairs with the Release in `place`, so the slot's fields are initialised.
            let p = entry.slot.load(Ordering::Acquire);
            if p.is_null() {
                return None;
            }
            if entry.hash.load(Ordering::Relaxed) == hash {
                // SAFETY: slots are type-stable (module ground rules).
                return Some(unsafe { &*p });
            }
            if left == 0 {
                return None;
            }
            left -= 1;
            i = i.wrapping_add(1);
        }
    }

    /// Slots in this shard's index, read without the lock.
    pub(crate) fn count(&self) -> usize {
        self.locked.count.load(untracked::Ordering::Relaxed)
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, ShardInner<K>> {
        crate::primitives::write_audit::note(&*self.locked);
        self.locked.inner.lock()
    }

    /// Authoritative lookup under the shard lock.
    pub(crate) fn find_locked<Q>(&self, g: &ShardInner<K>, hash: u64, key: &Q) -> Option<&Slot<K>>
    where
        K: Borrow<Q>,
        Q: ?Sized + Eq,
    {
        self.find_or_vacancy(g, hash, key).ok()
    }

    /// Under the shard lock: the key's slot, or else the position of the first empty entry of its
    /// probe run, where a slot created for it goes (`place_at`, under the same lock hold, with no
    /// index change in between). One probe for the creation's lookup and its insert.
    #[inline(always)]
    pub(crate) fn find_or_vacancy<Q>(&self, _g: &ShardInner<K>, hash: u64, key: &Q) -> Result<&Slot<K>, usize>
    where
        K: Borrow<Q>,
        Q: ?Sized + Eq,
    {
        let table = self.table();
        let mut i = hash as usize;
        loop {
            let entry = table.entry(i);
            let p = entry.slot.load(Ordering::Relaxed);
            if p.is_null() {
                return Err(i);
            }
            if entry.hash.load(Ordering::Relaxed) == hash {
                // SAFETY: slots are type-stable (module ground rules).
                let slot = unsafe { &*p };
                // SAFETY: slots in the index are live while we hold the shard lock (reclamation
                // needs it), so their keys are initialised and stay put.
                if unsafe { slot.key() }.borrow() == key {
                    return Ok(slot);
                }
            }
            i = i.wrapping_add(1);
        }
    }

    /// Grows the table if one more slot would take it past a load of 1/4 (before a
    /// `find_or_vacancy` whose position a slot from the pool then takes).
    #[inline(always)]
    pub(crate) fn make_room(&self, g: &mut ShardInner<K>) {
        if (g.present + 1) * 4 > self.table().mask + 1 {
            self.grow(g);
        }
    }

    /// Publishes a slot (already initialised) at position `i` of the current table, an empty entry
    /// that `find_or_vacancy` returned under this lock hold, or (`creation_walk`) the slot's own
    /// entry, reclaimed in place, whose hash changes to the new key's. `new`: a slot from the pool (counted
    /// here, with room made by `make_room`), not one reclaimed for reuse in place (still counted).
    #[inline(always)]
    pub(crate) fn place_at(&self, g: &mut ShardInner<K>, i: usize, hash: u64, slot: &Slot<K>, new: bool) {
        let entry = self.table().entry(i);
        debug_assert!({
            let p = entry.slot.load(Ordering::Relaxed);
            p.is_null() || std::ptr::eq(p, slot)
        });
        entry.hash.store(hash, Ordering::Relaxed);
        // Release: a reader that loads the pointer sees the hash and the slot's initialisation.
        entry.slot.store(slot as *const Slot<K> as *mut Slot<K>, Ordering::Release);
        if new {
            g.present += 1;
            self.locked.count.store(g.present, untracked::Ordering::Relaxed);
        }
    }

    /// Puts back in the pool a dead slot that a creation took and did not use (the key had a slot
    /// after all): `counted`, one reclaimed for reuse in place, still counted in `present`.
    #[cold]
    pub(crate) fn unused(&self, g: &mut ShardInner<K>, slot: &Slot<K>, counted: bool) {
        if counted {
            g.present -= 1;
            self.locked.count.store(g.present, untracked::Ordering::Relaxed);
        }
        g.free.push(slot as *const Slot<K> as *mut Slot<K>);
    }

    /// Takes a dead slot from the pool (allocating a chunk if it is empty).
    pub(crate) fn alloc(&self, g: &mut ShardInner<K>) -> &Slot<K> {
        if g.free.is_empty() {
            let n = (g.present / 2).clamp(1, MAX_CHUNK);
            let chunk: Box<[Slot<K>]> = (0..n).map(|_| Slot::new_dead()).collect();
            g.free.extend(chunk.iter().map(|s| s as *const Slot<K> as *mut Slot<K>));
            g.chunks.push(chunk);
        }
        let p = g.free.pop().expect("the pool was just refilled");
        // SAFETY: pool slots live in `chunks`, owned by this shard.
        unsafe { &*p }
    }

    /// Publishes a slot (already initialised) in the index.
    #[inline(always)]
    pub(crate) fn insert(&self, g: &mut ShardInner<K>, hash: u64, slot: &Slot<K>) {
        // Grown at a load of 1/4: a miss (every new key's first probe) then looks at ~1.4 entries
        // on average instead of ~2.5 at 1/2, for 16 bytes more per slot.
        if (g.present + 1) * 4 > self.table().mask + 1 {
            self.grow(g);
        }
        self.place(self.table(), hash, slot as *const Slot<K> as *mut Slot<K>);
        g.present += 1;
        self.locked.count.store(g.present, untracked::Ordering::Relaxed);
    }

    /// Publishes a slot reclaimed for reuse in place (`reclaim_for_reuse`), already initialised,
    /// in the index: it is still counted in `present`, and the index has room for it (it held
    /// the reclaimed slot's entry), so there is no growth check and no count to change.
    #[inline(always)]
    pub(crate) fn reinsert(&self, _g: &mut ShardInner<K>, hash: u64, slot: &Slot<K>) {
        self.place(self.table(), hash, slot as *const Slot<K> as *mut Slot<K>);
    }

    #[inline(always)]
    fn place(&self, table: &Table<K>, hash: u64, p: *mut Slot<K>) {
        let mut i = hash as usize;
        while !table.entry(i).slot.load(Ordering::Relaxed).is_null() {
            i = i.wrapping_add(1);
        }
        let entry = table.entry(i);
        entry.hash.store(hash, Ordering::Relaxed);
        // Release: a reader that loads the pointer sees the hash and the slot's initialisation.
        entry.slot.store(p, Ordering::Release);
    }

    fn grow(&self, g: &mut ShardInner<K>) {
        let old = self.table();
        let new = Table::with_capacity((old.mask + 1) * 2);
        for entry in old.entries.iter() {
            let p = entry.slot.load(Ordering::Relaxed);
            if !p.is_null() {
                self.place(&new, entry.hash.load(Ordering::Relaxed), p);
            }
        }
        let (entries, mask) = (new.entries.as_ptr() as *mut Entry<K>, new.mask as u64);
        let old = self.lookup.table.swap(Box::into_raw(new), Ordering::AcqRel);
        // Release: publishes the new entries (initialised and filled above) to a lookup's Acquire.
        self.lookup.entries.store(entries, Ordering::Release);
        // Release, after the entries: a lookup that loads this mask then loads these entries or
        // a later table's, never the old, smaller one (`Lookup`). One that loaded the old mask
        // probes a part of the new table: a miss at worst, and a miss takes the locked path.
        self.lookup.mask.store(mask, Ordering::Release);
        // SAFETY: `old` came from `Box::into_raw` and is no longer current; readers that still
        // probe it are why it is retired, not freed.
        g.retired.push(unsafe { Box::from_raw(old) });
    }

    /// Removes the slot at index position `i` (of the current table), shifting later entries of
    /// its probe run back. `present` is the caller's to change. Returns the one entry it empties
    /// (the last one it moved an entry from, or `i`).
    #[inline(always)]
    fn remove_at(&self, table: &Table<K>, i: usize) -> usize {
        let mut hole = i & table.mask;
        let mut j = (hole + 1) & table.mask;
        loop {
            let q = table.entry(j).slot.load(Ordering::Relaxed);
            if q.is_null() {
                break;
            }
            let h = table.entry(j).hash.load(Ordering::Relaxed);
            let home = table.home(h);
            // Entry j may move into the hole if its home is not in the cyclic range (hole, j].
            let stays = if hole <= j { hole < home && home <= j } else { hole < home || home <= j };
            if !stays {
                table.entry(hole).hash.store(h, Ordering::Relaxed);
                table.entry(hole).slot.store(q, Ordering::Release);
                hole = j;
            }
            j = (j + 1) & table.mask;
        }
        table.entry(hole).slot.store(std::ptr::null_mut(), Ordering::Release);
        hole
    }

    /// Tries to reclaim `slot`, an indexed slot (under the shard lock): an idle slot with no
    /// zombies becomes dead and its key is dropped. Its entry stays: the caller removes it
    /// (`remove_at`) or reuses it in place for a new key under the same lock hold, and puts the
    /// slot back in the pool (uncounting it from `present`) or reuses it. `retire`: its counter
    /// goes into `retired_acquisitions` (which the next incarnation's `birth` takes back); a
    /// creation that reborns it under this lock hold (`creation_walk`) passes `false` and births
    /// it with `continued` instead, so the add and the subtraction do not both happen.
    #[inline(always)]
    fn try_reclaim(
        &self,
        g: &mut ShardInner<K>,
        slot: &Slot<K>,
        core: &Core,
        second_chance: bool,
        retire: bool,
    ) -> Reclaim {
        // Acquire: pairs with the last release's Release, so the zombie count read below includes
        // every expirer that returned units before the slot went idle.
        let w = slot.word.load(Ordering::Acquire);
        if !word::is_idle(w) || slot.zombies.load(Ordering::Acquire) != 0 {
            return Reclaim::Busy;
        }
        // Second chance: a slot claimed since the sweep last looked is spared this time. The
        // counter tells, so the sweep writes nothing into the word (claimers own it). (Its bits
        // in place, `Slot::swept`: the dead word below keeps exactly them.)
        let counted = w & word::COUNTER_MASK;
        if second_chance && slot.swept.load(Ordering::Relaxed) != counted {
            slot.swept.store(counted, Ordering::Relaxed);
            return Reclaim::Spared;
        }
        // Only from idle: a claim racing this compare-exchange either wins (and the slot stays) or
        // finds it dead and looks the key up again under the shard lock we hold.
        let dead = word::DEAD | counted;
        debug_assert_eq!(dead, word::dead_from(w));
        if slot.word.compare_exchange(w, dead, Ordering::Acquire, Ordering::Relaxed).is_err() {
            return Reclaim::Busy;
        }
        if w & word::WATCHED != 0 {
            core.wheel.unregister(&slot.watch);
        }
        // Its acquisitions move into the shard's total (the next incarnation subtracts the counter
        // it continues from): a plain field under the lock we hold, not a locked RMW.
        if retire {
            g.retired_acquisitions = g.retired_acquisitions.wrapping_add(word::counter(w));
        }
        g.high_water = g.high_water.max(slot.last_token_dead(w));
        // SAFETY: we hold the shard lock, moved the word from idle to dead, and saw no zombies.
        unsafe { slot.drop_key() };
        Reclaim::Done
    }

    /// Sweeps up to `budget` index entries from the hand, reclaiming idle slots (with a second
    /// chance for recently used ones unless `thorough`) into the pool, until `enough` are
    /// reclaimed. Returns how many it reclaimed.
    pub(crate) fn sweep(
        &self,
        g: &mut ShardInner<K>,
        budget: usize,
        enough: usize,
        core: &Core,
        thorough: bool,
    ) -> usize {
        let mut reclaimed = 0;
        let mut examined = 0;
        g.last_sweep_found_idle = false;
        // Twice the table: a reclaimed entry's position is looked at again (the shift may have
        // moved another entry into it), so one full turn needs up to `len + reclaimed` steps.
        let table = self.table(); // only this thread (holding the lock) could swap it
        let budget = budget.min(2 * (table.mask + 1));
        while examined < budget && g.present > 0 && reclaimed < enough {
            let p = table.entry(g.hand).slot.load(Ordering::Relaxed);
            examined += 1;
            if p.is_null() {
                g.hand = g.hand.wrapping_add(1);
                continue;
            }
            // SAFETY: slots are type-stable.
            let slot = unsafe { &*p };
            match self.try_reclaim(g, slot, core, !thorough, true) {
                // The shift may have moved another entry into position i: look at it next.
                Reclaim::Done => {
                    self.remove_at(table, g.hand);
                    reclaimed += 1;
                    g.present -= 1;
                    self.locked.count.store(g.present, untracked::Ordering::Relaxed);
                    g.free.push(slot as *const Slot<K> as *mut Slot<K>);
                }
                Reclaim::Spared => {
                    g.last_sweep_found_idle = true;
                    g.hand = g.hand.wrapping_add(1);
                }
                Reclaim::Busy => g.hand = g.hand.wrapping_add(1),
            }
        }
        if reclaimed > 0 {
            // The shard has idle slots again (a burst's keys released): the insert-time sweep's
            // backoff from when they were all held ends, or the next creations would grow the
            // shard past its bound for up to `MAX_SWEEP_BACKOFF` of them.
            (g.sweep_backoff, g.sweep_skip) = (0, 0);
        }
        reclaimed
    }

    /// Every slot in the index (under the shard lock, where indexed slots are live).
    pub(crate) fn slots<'a>(&'a self, _g: &'a ShardInner<K>) -> impl Iterator<Item = &'a Slot<K>> + 'a {
        self.table().entries.iter().filter_map(|e| {
            let p = e.slot.load(Ordering::Relaxed);
            // SAFETY: slots are type-stable; under the shard lock, indexed slots are live.
            (!p.is_null()).then(|| unsafe { &*p })
        })
    }
}

impl<K> Drop for Shard<K> {
    fn drop(&mut self) {
        let table = self.lookup.table.load(Ordering::Relaxed);
        // SAFETY: `&mut self`: no reader is left. Live slots are exactly those in the index.
        unsafe {
            for entry in (*table).entries.iter() {
                let p = entry.slot.load(Ordering::Relaxed);
                if !p.is_null() {
                    (*p).drop_key();
                }
            }
            drop(Box::from_raw(table));
        }
    }
}

/// Whether a key equals the key of a slot the caller has pinned.
///
/// # Safety
///
/// The slot is pinned and live (see `Slot::key`).
#[inline(always)]
pub(crate) unsafe fn key_matches<K, Q>(slot: &Slot<K>, key: &Q) -> bool
where
    K: Borrow<Q>,
    Q: ?Sized + Eq + Hash,
{
    // SAFETY: forwarded from the caller.
    unsafe { slot.key() }.borrow() == key
}
