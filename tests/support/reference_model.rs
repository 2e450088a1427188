//! The reference model of the lock table, shared by the proptest model (`tests/model.rs`) and the
//! ops fuzz target (`fuzz/fuzz_targets/ops.rs`), which include it with `#[path]`: one
//! single-threaded description of what `try_acquire`, release, renew, expiry and reclamation must
//! do, over `u8` keys and a clock in milliseconds.
//!
//! The rules: a key's first holder fixes its capacity (a semaphore's permits, else `MAX_UNITS`);
//! a semaphore request with other permits is a `PermitMismatch`, and so is a mode of the
//! hierarchy (intention, upgradable) on a semaphore key; on a read/write key a request is granted
//! when the compatibility matrix admits its mode beside every holder's; on a semaphore key
//! exclusive takes every unit and needs none held, the others take one; a lease ends at its
//! deadline (`now >= deadline`); a guard's end frees its units; zero permits and a zero lease are
//! refused as invalid.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use leasehold::compat::compatible;
use leasehold::{LockError, Mode, MAX_UNITS};

/// One holder as the model sees it.
#[derive(Clone, Debug)]
pub struct Holder {
    pub id: usize,
    pub mode: Mode,
    pub units: u32,
    /// Deadline in clock milliseconds.
    pub deadline: Option<u64>,
}

#[derive(Default, Debug)]
pub struct KeyModel {
    pub capacity: u32,
    pub holders: Vec<Holder>,
    pub last_token: u64,
}

impl KeyModel {
    pub fn held(&self) -> u32 {
        self.holders.iter().map(|h| h.units).sum()
    }
}

#[derive(Default, Debug)]
pub struct Model {
    pub now_ms: u64,
    pub keys: BTreeMap<u8, KeyModel>,
    /// Live holdings: guard id -> key.
    pub live: BTreeMap<usize, u8>,
}

impl Model {
    pub fn acquire(&mut self, key: u8, mode: Mode, lease_ms: Option<u8>, id: usize) -> Result<u32, LockError> {
        if mode == Mode::Semaphore(0) {
            return Err(LockError::InvalidPermits { permits: 0 });
        }
        if lease_ms == Some(0) {
            return Err(LockError::InvalidTtl { ttl: Duration::ZERO });
        }
        let km = self.keys.entry(key).or_default();
        if km.holders.is_empty() {
            km.capacity = match mode {
                Mode::Semaphore(n) => n,
                _ => MAX_UNITS,
            };
        } else {
            match mode {
                Mode::Semaphore(n) if n != km.capacity => {
                    return Err(LockError::PermitMismatch { live: km.capacity, requested: n });
                }
                Mode::Semaphore(_) | Mode::Exclusive | Mode::Shared => {}
                _ if km.capacity != MAX_UNITS => {
                    return Err(LockError::PermitMismatch { live: km.capacity, requested: MAX_UNITS });
                }
                _ => {}
            }
            let fits = if km.capacity == MAX_UNITS {
                km.holders.iter().all(|h| compatible(h.mode.granule(), mode.granule()))
            } else {
                match mode {
                    Mode::Exclusive => km.held() == 0,
                    _ => km.held() < km.capacity,
                }
            };
            if !fits {
                return Err(LockError::WouldBlock);
            }
        }
        let units = if mode == Mode::Exclusive { km.capacity } else { 1 };
        km.holders.push(Holder { id, mode, units, deadline: lease_ms.map(|ms| self.now_ms + u64::from(ms)) });
        self.live.insert(id, key);
        Ok(units)
    }

    pub fn end(&mut self, id: usize) -> bool {
        let Some(key) = self.live.remove(&id) else { return false };
        if let Some(km) = self.keys.get_mut(&key) {
            km.holders.retain(|h| h.id != id);
        }
        true
    }

    pub fn holder(&mut self, id: usize) -> Option<&mut Holder> {
        let key = *self.live.get(&id)?;
        self.keys.get_mut(&key)?.holders.iter_mut().find(|h| h.id == id)
    }

    pub fn advance(&mut self, ms: u64) {
        self.now_ms += ms;
        let now = self.now_ms;
        let mut expired = Vec::new();
        for km in self.keys.values_mut() {
            km.holders.retain(|h| {
                let due = h.deadline.is_some_and(|d| d <= now);
                if due {
                    expired.push(h.id);
                }
                !due
            });
        }
        for id in expired {
            self.live.remove(&id);
        }
    }

    pub fn live_keys(&self) -> usize {
        self.keys.values().filter(|k| !k.holders.is_empty()).count()
    }

    /// Keys that must have a slot: held, or pinned by an ended guard that is still alive (its
    /// `key()` must stay readable).
    /// `guards`: (guard id, key) of every guard still alive.
    pub fn pinned_keys(&self, guards: impl Iterator<Item = (usize, u8)>) -> usize {
        let mut keys: BTreeSet<u8> =
            self.keys.iter().filter(|(_, k)| !k.holders.is_empty()).map(|(&key, _)| key).collect();
        keys.extend(guards.filter(|(id, _)| !self.live.contains_key(id)).map(|(_, key)| key));
        keys.len()
    }
}
