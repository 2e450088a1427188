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
mod tests {
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
                    let msg =
                        format!("slot_start(elapsed={elapsed:#066b}, level={level}, slot={slot}) = {start:#066b}");
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
}
