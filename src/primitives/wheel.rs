//! Hierarchical hashed timer wheel: the deadline index behind lease expiry.
//!
//! Time is an integer tick (`u64`). Read a tick as base-64 digits: digit `l`
//! is the slot at level `l`. An entry is stored at the highest digit in which
//! its deadline differs from the wheel's current tick (`elapsed`), in the slot
//! named by that digit of the deadline. A level-0 slot therefore holds exactly
//! one tick; a level-`l` slot spans `64^l` ticks and is *cascaded* (its
//! entries re-placed at lower levels) when time reaches the slot's first tick.
//!
//! Layout: 11 levels x 64 slots, 6 bits per level = 66 bits, so every `u64`
//! deadline has an exact home and nothing is ever clamped or wrapped around
//! (the top level only uses its slots 0..16). Range: all of `u64`; an entry
//! cascades at most 10 times, whatever its deadline.
//!
//! | level | slot span | level span |
//! |-------|-----------|------------|
//! | 0     | 1         | 2^6        |
//! | 1     | 2^6       | 2^12       |
//! | l     | 2^(6l)    | 2^(6l+6)   |
//! | 10    | 2^60      | all of u64 |
//!
//! Entries live in a slab (`Vec` of nodes indexed by `u32`, plus a free list).
//! Each slot is `LANES` intrusive doubly-linked lists threaded through the
//! slab by index, so insert, remove and reschedule are O(1) and allocate
//! nothing once the slab has grown. Keys carry a generation so a stale key
//! never touches a reused node.
//!
//! Single owner: no atomics, no locks; the caller serialises access.
#![forbid(unsafe_code)]

use std::fmt;

/// Bits of a tick consumed by one level.
const LEVEL_BITS: u32 = 6;

/// Slots per level: one per value of a level's digit.
const SLOTS: usize = 1 << LEVEL_BITS;

/// Mask of one digit.
const SLOT_MASK: u64 = SLOTS as u64 - 1;

/// `ceil(64 / LEVEL_BITS)`: enough levels that every `u64` has a digit at each.
const NUM_LEVELS: usize = (u64::BITS as usize).div_ceil(LEVEL_BITS as usize);

/// Lists (lanes) per slot; node `i` always lives in lane `i % LANES`. Walking
/// one linked list is a chain of dependent cache misses; a cascade walks all
/// lanes of a slot interleaved, so that many misses are in flight at once.
/// On the 1M-entry bench one list per slot cost ~280 ns per expiry; 16, 32
/// and 64 lanes cost ~45, ~40 and ~37 ns. 32 costs 8 KiB of heads per level.
const LANES: usize = 32;

/// Nodes a cascade gathers (on the stack, 1 KiB) before re-placing them:
/// enough to keep every lane's miss in flight, few enough to stay in L1.
const CASCADE_BATCH: usize = 256;

/// End-of-list / empty-lane / empty-free-list marker for slab indices.
const NIL: u32 = u32::MAX;

/// Handle to a scheduled entry: slab index plus the generation the node had
/// when the entry was created. The generation is bumped whenever a node is
/// vacated, so a key outlives neither removal nor firing.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct EntryKey(u32, u32);

impl EntryKey {
    /// The key as one `u64` (never `u64::MAX`: the slab index is never `NIL`).
    pub fn to_bits(self) -> u64 {
        (self.1 as u64) << 32 | self.0 as u64
    }

    /// A key from [`to_bits`](EntryKey::to_bits); `None` for `u64::MAX`.
    pub fn from_bits(bits: u64) -> Option<EntryKey> {
        (bits != u64::MAX).then_some(EntryKey(bits as u32, (bits >> 32) as u32))
    }
}

/// One slab cell: an entry, or a vacant cell on the free list. One struct
/// rather than parallel arrays: the last cascade touches a node shortly before
/// it fires, so the value is then already in cache. Aligned so a node never
/// straddles two cache lines, which would cost a second miss per touch: 32
/// bytes when `Option<T>` fits the 12 spare bytes (`u32`, `NonZeroU64`), 64
/// for a plain `u64`.
#[repr(C, align(32))]
struct Node<T> {
    /// Deadline tick as given by the caller (may be in the past). Together
    /// with `elapsed` it also names the list the node is in (see `place`).
    when: u64,
    /// Previous node in the lane list, `NIL` at the head.
    prev: u32,
    /// Next node in the lane list (`NIL` at the tail); chains the free list
    /// while vacant.
    next: u32,
    /// Bumped on every vacate; must equal the key's to address this node.
    generation: u32,
    /// The payload; `None` exactly when the node is vacant.
    value: Option<T>,
}

/// One level: 64 slots of `LANES` lists each, and bitmaps of what is non-empty.
struct Level {
    /// Bit `s` set iff slot `s` is non-empty (iff `lanes[s] != 0`), so the
    /// next due slot is a rotate and a trailing_zeros instead of a scan.
    occupied: u64,
    /// `lanes[s]` bit `l` set iff lane `l` of slot `s` is non-empty.
    lanes: [u64; SLOTS],
    /// `heads[s][l]`: head (slab index) of lane `l` of slot `s`, `NIL` when empty.
    heads: [[u32; LANES]; SLOTS],
}

impl Level {
    const EMPTY: Level = Level { occupied: 0, lanes: [0; SLOTS], heads: [[NIL; LANES]; SLOTS] };

    /// Makes `head` the head of lane `lane` of slot `slot` after its old head left, clearing the
    /// lane's bit (and the slot's) when that emptied it.
    #[inline]
    fn set_head(&mut self, slot: usize, lane: usize, head: u32) {
        self.heads[slot][lane] = head;
        if head == NIL {
            self.lanes[slot] &= !(1u64 << lane);
            if self.lanes[slot] == 0 {
                self.occupied &= !(1u64 << slot);
            }
        }
    }
}

// Lane masks are u64.
const _: () = assert!(LANES.is_power_of_two() && LANES <= 64);

/// The levels, built on the heap one at a time: the array is about 96 KiB, too much to build on
/// a small stack (a loom model's thread, say) before boxing it.
fn empty_levels() -> Box<[Level; NUM_LEVELS]> {
    let mut levels = Vec::with_capacity(NUM_LEVELS);
    levels.resize_with(NUM_LEVELS, || Level::EMPTY);
    match levels.into_boxed_slice().try_into() {
        Ok(levels) => levels,
        Err(_) => unreachable!("exactly NUM_LEVELS levels were built"),
    }
}

/// A hierarchical hashed timer wheel; see the module docs.
pub struct Wheel<T> {
    /// The current tick. Invariant: every node sits in the list
    /// `place(elapsed, when)` names, and every occupied slot starts after
    /// `elapsed` except the level-0 slot of `elapsed` itself (entries due now,
    /// overdue ones included).
    elapsed: u64,
    /// `levels[l]` slot `s` holds entries whose deadline agrees with `elapsed`
    /// on every digit above `l` and has digit `l` equal to `s`. Boxed so the
    /// wheel itself stays small enough to move cheaply.
    levels: Box<[Level; NUM_LEVELS]>,
    /// The slab. Indices are stable for an entry's lifetime.
    nodes: Vec<Node<T>>,
    /// Head of the free list threaded through vacant nodes' `next`.
    free_head: u32,
    /// Number of live entries.
    len: usize,
}

/// Level at which a deadline `when > elapsed` is stored: the highest base-64
/// digit in which the two differ. `when == elapsed` gives level 0.
#[inline]
pub(crate) fn level_for(elapsed: u64, when: u64) -> usize {
    // OR-ing the low digit in keeps leading_zeros below 64 and sends any
    // difference confined to digit 0 to level 0.
    let diff = (elapsed ^ when) | SLOT_MASK;
    let significant = u64::BITS - 1 - diff.leading_zeros();
    (significant / LEVEL_BITS) as usize
}

/// Slot of `when` at `level`: its base-64 digit number `level`.
#[inline]
pub(crate) fn slot_for(when: u64, level: usize) -> usize {
    ((when >> (level as u32 * LEVEL_BITS)) & SLOT_MASK) as usize
}

/// The (level, slot) an entry due at `when` lives in while the wheel is at
/// `elapsed`. Overdue deadlines count as `elapsed`: the current tick's slot.
/// Not stored per node: the invariant on `Wheel::elapsed` keeps it exact,
/// since time never passes an occupied slot's start without cascading it.
#[inline]
pub(crate) fn place(elapsed: u64, when: u64) -> (usize, usize) {
    let at = when.max(elapsed);
    let level = level_for(elapsed, at);
    (level, slot_for(at, level))
}

/// First tick of `slot` at `level` within the level rotation that contains
/// `elapsed` (digits above `level` taken from `elapsed`, digits below zero).
#[inline]
pub(crate) fn slot_start(elapsed: u64, level: usize, slot: usize) -> u64 {
    let shift = level as u32 * LEVEL_BITS;
    let above = shift + LEVEL_BITS;
    // The top level has no digits above it (66 bits > 64): a shift by >= 64
    // would panic, and there is nothing to keep anyway.
    let base = if above >= u64::BITS { 0 } else { elapsed >> above << above };
    base | ((slot as u64) << shift)
}

/// The lane a node always lives in.
#[inline]
fn lane_of(idx: u32) -> usize {
    idx as usize % LANES
}

impl<T> Default for Wheel<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> fmt::Debug for Wheel<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let occupied: Vec<String> = self.levels.iter().map(|l| format!("{:#066b}", l.occupied)).collect();
        f.debug_struct("Wheel")
            .field("elapsed", &self.elapsed)
            .field("len", &self.len)
            .field("slab", &self.nodes.len())
            .field("occupied", &occupied)
            .finish()
    }
}

impl<T> Wheel<T> {
    /// An empty wheel at tick 0.
    pub fn new() -> Self {
        Self::with_capacity(0)
    }

    /// An empty wheel at tick 0 whose slab holds `n` entries without growing.
    /// The `n` nodes are built (as the free list) right away, so their memory
    /// is touched here rather than page-faulted in by inserts, which
    /// typically run under the caller's lock.
    ///
    /// # Panics
    /// If `n >= u32::MAX`.
    pub fn with_capacity(n: usize) -> Self {
        assert!(n < NIL as usize, "timer wheel capacity too large");
        let mut nodes = Vec::with_capacity(n);
        // Ascending free list: a fresh wheel fills its slab front to back.
        nodes.extend((1..=n).map(|next| Node {
            when: 0,
            prev: NIL,
            next: if next == n { NIL } else { next as u32 },
            generation: 0,
            value: None,
        }));
        Wheel { elapsed: 0, levels: empty_levels(), nodes, free_head: if n == 0 { NIL } else { 0 }, len: 0 }
    }

    /// The wheel's current tick.
    pub fn elapsed(&self) -> u64 {
        self.elapsed
    }

    /// Number of scheduled entries (including due ones not yet polled).
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no entry is scheduled.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Schedule `value` to fire at tick `when`. `when <= elapsed()` fires at the
    /// next poll. Every `u64` is in range; nothing is clamped.
    ///
    /// # Panics
    /// If the slab would exceed `u32::MAX - 1` entries.
    pub fn insert(&mut self, when: u64, value: T) -> EntryKey {
        let idx = match self.free_head {
            NIL => {
                let idx = self.nodes.len();
                assert!(idx < NIL as usize, "timer wheel slab is full");
                self.nodes.push(Node { when, prev: NIL, next: NIL, generation: 0, value: Some(value) });
                idx as u32
            }
            idx => {
                let node = &mut self.nodes[idx as usize];
                self.free_head = node.next;
                node.when = when;
                node.value = Some(value);
                idx
            }
        };
        self.link(idx);
        self.len += 1;
        EntryKey(idx, self.nodes[idx as usize].generation)
    }

    /// Cancel an entry, returning its value; `None` for a stale or fired key.
    pub fn remove(&mut self, key: EntryKey) -> Option<T> {
        let idx = self.live(key)?;
        self.unlink(idx);
        Some(self.vacate(idx))
    }

    /// Move an entry to a new deadline (earlier, later or past); `false` for a
    /// stale or fired key. The key stays valid.
    pub fn reschedule(&mut self, key: EntryKey, when: u64) -> bool {
        let Some(idx) = self.live(key) else {
            return false;
        };
        // Unlink before changing `when`: it locates the node's list.
        self.unlink(idx);
        self.nodes[idx as usize].when = when;
        self.link(idx);
        true
    }

    /// The deadline of a live entry.
    pub fn when(&self, key: EntryKey) -> Option<u64> {
        self.live(key).map(|idx| self.nodes[idx as usize].when)
    }

    /// The value of a live entry.
    pub fn get(&self, key: EntryKey) -> Option<&T> {
        let idx = self.live(key)?;
        self.nodes[idx as usize].value.as_ref()
    }

    /// The value of a live entry, mutably.
    pub fn get_mut(&mut self, key: EntryKey) -> Option<&mut T> {
        let idx = self.live(key)?;
        self.nodes[idx as usize].value.as_mut()
    }

    /// The earliest tick at which `poll` could return something: the start of
    /// the earliest occupied slot, never later than the earliest deadline and
    /// never earlier than `elapsed()` (so with an overdue entry it is
    /// `elapsed()`). `None` when empty. Reads bitmaps only.
    pub fn next_expiration(&self) -> Option<u64> {
        self.next_slot().map(|(_, _, start)| start)
    }

    /// Advance time to `now` (a `now` below `elapsed()` counts as `elapsed()`)
    /// and remove and return one entry whose deadline is `<= now`; `None` once
    /// none is due. Entries come out in non-decreasing tick order (overdue
    /// entries count as due at the tick they were inserted); order within a
    /// tick is unspecified.
    pub fn poll(&mut self, now: u64) -> Option<(EntryKey, T)> {
        let now = now.max(self.elapsed);
        while let Some((level, slot, start)) = self.next_slot() {
            if start > now {
                break;
            }
            // Moving to a slot's start never skips another occupied slot:
            // `next_slot` picked the earliest.
            self.elapsed = start;
            if level == 0 {
                return Some(self.pop_front(slot));
            }
            self.cascade(level, slot);
        }
        self.elapsed = now;
        None
    }

    /// Remove and return the head of the first non-empty lane of the due
    /// level-0 `slot` (an `unlink` that already knows where the node is).
    fn pop_front(&mut self, slot: usize) -> (EntryKey, T) {
        let lvl = &mut self.levels[0];
        let lane = lvl.lanes[slot].trailing_zeros() as usize;
        let idx = lvl.heads[slot][lane];
        let node = &self.nodes[idx as usize];
        debug_assert!(
            node.when <= self.elapsed && node.prev == NIL,
            "early fire: when={:#b} elapsed={:#b}",
            node.when,
            self.elapsed
        );
        let (next, key) = (node.next, EntryKey(idx, node.generation));
        lvl.set_head(slot, lane, next);
        if next != NIL {
            self.nodes[next as usize].prev = NIL;
        }
        (key, self.vacate(idx))
    }

    /// Earliest occupied slot as (level, slot, start tick). Lower levels hold
    /// strictly earlier deadlines than any higher-level slot start (they share
    /// `elapsed`'s higher digits), so the first non-empty level wins.
    fn next_slot(&self) -> Option<(usize, usize, u64)> {
        for (level, lvl) in self.levels.iter().enumerate() {
            if lvl.occupied == 0 {
                continue;
            }
            let now_slot = slot_for(self.elapsed, level);
            // Slots behind `now_slot` are never occupied (they were cascaded
            // before time passed them). Rotating rather than masking means a
            // broken invariant would surface as an immediate, late fire
            // instead of a lost entry.
            debug_assert_eq!(
                lvl.occupied & ((1u64 << now_slot) - 1),
                0,
                "slot behind elapsed at level {level}: occupied={:#066b} elapsed={:#b}",
                lvl.occupied,
                self.elapsed
            );
            let ahead = lvl.occupied.rotate_right(now_slot as u32).trailing_zeros() as usize;
            let slot = (now_slot + ahead) % SLOTS;
            let start = slot_start(self.elapsed, level, slot).max(self.elapsed);
            return Some((level, slot, start));
        }
        None
    }

    /// Re-place every entry of a higher-level slot relative to the new
    /// `elapsed` (its start). Each lands strictly lower, so this terminates.
    fn cascade(&mut self, level: usize, slot: usize) {
        let lvl = &mut self.levels[level];
        // Detach the whole slot first: `link` rewrites `next`.
        let mut cursors = std::mem::replace(&mut lvl.heads[slot], [NIL; LANES]);
        lvl.lanes[slot] = 0;
        lvl.occupied &= !(1u64 << slot);
        // Chunks of two passes. First only chase the lanes, one step of each
        // per round, into `batch`: a tight loop whose loads are independent
        // across lanes, so the cache misses overlap. Then re-place the batch,
        // whose nodes are now in cache. (`link` rewrites `next`, hence the
        // chase must stay ahead of it.)
        let mut batch = [NIL; CASCADE_BATCH];
        loop {
            let mut n = 0;
            while n + LANES <= CASCADE_BATCH {
                let before = n;
                for cursor in cursors.iter_mut().filter(|c| **c != NIL) {
                    batch[n] = *cursor;
                    n += 1;
                    *cursor = self.nodes[*cursor as usize].next;
                }
                if n == before {
                    break;
                }
            }
            if n == 0 {
                return;
            }
            for &idx in &batch[..n] {
                debug_assert!(place(self.elapsed, self.nodes[idx as usize].when).0 < level);
                self.link(idx);
            }
        }
    }

    /// Index of the node `key` addresses, if it is still live.
    fn live(&self, key: EntryKey) -> Option<u32> {
        let node = self.nodes.get(key.0 as usize)?;
        (node.generation == key.1 && node.value.is_some()).then_some(key.0)
    }

    /// Push node `idx` (with `when` set) onto the front of its lane in the
    /// slot `place` names.
    fn link(&mut self, idx: u32) {
        let (level, slot) = place(self.elapsed, self.nodes[idx as usize].when);
        let lane = lane_of(idx);
        let lvl = &mut self.levels[level];
        let head = std::mem::replace(&mut lvl.heads[slot][lane], idx);
        lvl.lanes[slot] |= 1u64 << lane;
        lvl.occupied |= 1u64 << slot;
        if head != NIL {
            self.nodes[head as usize].prev = idx;
        }
        let node = &mut self.nodes[idx as usize];
        node.prev = NIL;
        node.next = head;
    }

    /// Take node `idx` out of its lane, clearing the slot's bit if it empties.
    fn unlink(&mut self, idx: u32) {
        let Node { when, prev, next, .. } = self.nodes[idx as usize];
        if prev == NIL {
            let (level, slot) = place(self.elapsed, when);
            let lane = lane_of(idx);
            let lvl = &mut self.levels[level];
            debug_assert_eq!(lvl.heads[slot][lane], idx, "node not where place() says");
            lvl.set_head(slot, lane, next);
        } else {
            self.nodes[prev as usize].next = next;
        }
        if next != NIL {
            self.nodes[next as usize].prev = prev;
        }
    }

    /// Return an unlinked node to the free list, invalidating its keys.
    fn vacate(&mut self, idx: u32) -> T {
        let node = &mut self.nodes[idx as usize];
        node.generation = node.generation.wrapping_add(1);
        node.next = self.free_head;
        self.free_head = idx;
        self.len -= 1;
        node.value.take().expect("live node has a value")
    }

    /// Test-only full consistency check: lists, bitmaps, placement, free list.
    #[cfg(test)]
    fn check_invariants(&self) {
        let mut seen = 0;
        for (level, lvl) in self.levels.iter().enumerate() {
            for (slot, heads) in lvl.heads.iter().enumerate() {
                let any = heads.iter().any(|&h| h != NIL);
                assert_eq!(lvl.occupied >> slot & 1 == 1, any, "bit {level}/{slot}");
                for (lane, &head) in heads.iter().enumerate() {
                    assert_eq!(lvl.lanes[slot] >> lane & 1 == 1, head != NIL);
                    let (mut prev, mut idx) = (NIL, head);
                    while idx != NIL {
                        let n = &self.nodes[idx as usize];
                        assert_eq!(n.prev, prev);
                        assert_eq!(lane_of(idx), lane);
                        assert!(self.nodes[idx as usize].value.is_some());
                        assert_eq!(
                            (level, slot),
                            place(self.elapsed, n.when),
                            "misplaced: when={:#b} elapsed={:#b}",
                            n.when,
                            self.elapsed
                        );
                        if level > 0 || slot != slot_for(self.elapsed, 0) {
                            assert!(slot_start(self.elapsed, level, slot) > self.elapsed);
                        }
                        seen += 1;
                        (prev, idx) = (idx, n.next);
                    }
                }
            }
        }
        assert_eq!(seen, self.len);
        let mut free = 0;
        let mut idx = self.free_head;
        while idx != NIL {
            assert!(self.nodes[idx as usize].value.is_none());
            free += 1;
            idx = self.nodes[idx as usize].next;
        }
        assert_eq!(free + self.len, self.nodes.len());
    }
}

#[cfg(test)]
mod tests;
