//! Temporary stand-in for the hierarchical timer wheel (replaced by the real one).
use std::collections::BTreeMap;

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct EntryKey(u32, u32);

pub struct Wheel<T> {
    elapsed: u64,
    seq: u32,
    by_time: BTreeMap<(u64, u32), T>,
    when: std::collections::HashMap<u32, u64>,
}

impl<T> Default for Wheel<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Wheel<T> {
    pub fn new() -> Self {
        Wheel { elapsed: 0, seq: 0, by_time: BTreeMap::new(), when: Default::default() }
    }
    pub fn elapsed(&self) -> u64 {
        self.elapsed
    }
    pub fn len(&self) -> usize {
        self.by_time.len()
    }
    pub fn is_empty(&self) -> bool {
        self.by_time.is_empty()
    }
    pub fn insert(&mut self, when: u64, value: T) -> EntryKey {
        self.seq += 1;
        let when = when.max(self.elapsed);
        self.by_time.insert((when, self.seq), value);
        self.when.insert(self.seq, when);
        EntryKey(self.seq, 0)
    }
    pub fn remove(&mut self, key: EntryKey) -> Option<T> {
        let when = self.when.remove(&key.0)?;
        self.by_time.remove(&(when, key.0))
    }
    pub fn reschedule(&mut self, key: EntryKey, when: u64) -> bool {
        match self.remove(key) {
            Some(v) => {
                let when = when.max(self.elapsed);
                self.by_time.insert((when, key.0), v);
                self.when.insert(key.0, when);
                true
            }
            None => false,
        }
    }
    pub fn next_expiration(&self) -> Option<u64> {
        self.by_time.keys().next().map(|k| k.0)
    }
    pub fn poll(&mut self, now: u64) -> Option<(EntryKey, T)> {
        self.elapsed = self.elapsed.max(now);
        let (&(when, seq), _) = self.by_time.iter().next()?;
        if when > now {
            return None;
        }
        let v = self.by_time.remove(&(when, seq))?;
        self.when.remove(&seq);
        Some((EntryKey(seq, 0), v))
    }
}
