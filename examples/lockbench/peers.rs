//! The peers: leasehold and the keyed locks a user would pick instead, each behind one trait so
//! that every peer runs the same workload code.
//!
//! The trait is generic (closure-taking methods), never used as `dyn`: each peer's timed loop is
//! monomorphised, so a peer pays exactly what a user of that peer pays (its own lookup, its own
//! guard, its own hasher), plus an empty closure that inlines away.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use dashmap::DashMap;
use leasehold::LockManager;
use parking_lot::RwLock;

/// How a workload asks for a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Exclusive,
    Shared,
    /// One permit of a semaphore with this many permits.
    Permit(u32),
}

/// What a peer can do; workloads that need a mode a peer lacks skip that peer.
#[derive(Clone, Copy, Debug)]
pub struct Modes {
    pub exclusive: bool,
    pub shared: bool,
    pub permit: bool,
}

const X: Modes = Modes { exclusive: true, shared: false, permit: false };
const XS: Modes = Modes { exclusive: true, shared: true, permit: false };
const XSP: Modes = Modes { exclusive: true, shared: true, permit: true };
const P: Modes = Modes { exclusive: false, shared: false, permit: true };

/// Live entries a peer holds after a churn, where it has a notion of them.
#[derive(Clone, Copy, Debug)]
pub struct Entries {
    /// Entries (slots, map entries, locks) right after the workload.
    pub now: usize,
    /// After the peer's explicit reclamation, where it has one (leasehold's `reclaim_idle`).
    pub after_reclaim: Option<usize>,
    /// A fixed lock array: the count is the array, not live keys.
    pub fixed: bool,
}

/// A keyed lock, as the workloads see it. `f` runs while the lock is held; acquisition blocks
/// (or, for a peer with only a non-blocking acquire, retries) until it succeeds.
pub trait KeyedLock: Sync {
    fn name(&self) -> &'static str;
    fn modes(&self) -> Modes;
    fn exclusive<R>(&self, key: u64, f: impl FnOnce() -> R) -> R;
    fn shared<R>(&self, key: u64, f: impl FnOnce() -> R) -> R;
    fn permit<R>(&self, key: u64, permits: u32, f: impl FnOnce() -> R) -> R;
    fn entries(&self) -> Entries;

    #[inline(always)]
    fn with<R>(&self, mode: Mode, key: u64, f: impl FnOnce() -> R) -> R {
        match mode {
            Mode::Exclusive => self.exclusive(key, f),
            Mode::Shared => self.shared(key, f),
            Mode::Permit(n) => self.permit(key, n, f),
        }
    }
}

fn unsupported(peer: &str, mode: &str) -> ! {
    panic!("harness bug: {peer} was asked for a {mode} lock it does not offer")
}

// ---------------------------------------------------------------------------------------------
// 1. leasehold

/// `LockManager<u64>` with default settings, blocking `acquire()`. With `LEASED`, every acquire
/// carries a [`LEASE`] (workload L); a const parameter, so the plain peer pays no branch for it.
pub struct Leasehold<const LEASED: bool> {
    locks: LockManager<u64>,
}

impl<const LEASED: bool> Leasehold<LEASED> {
    pub fn new() -> Self {
        Leasehold { locks: LockManager::new() }
    }

    #[inline(always)]
    fn hold<'m, R>(&self, req: leasehold::Request<'m, '_, u64, u64>, f: impl FnOnce() -> R) -> R
    where
        Self: 'm,
    {
        let req = if LEASED { req.lease(LEASE) } else { req };
        let g = req.acquire().expect("leasehold acquire");
        let r = f();
        drop(g);
        r
    }
}

impl<const LEASED: bool> KeyedLock for Leasehold<LEASED> {
    fn name(&self) -> &'static str {
        if LEASED {
            "leasehold+lease"
        } else {
            "leasehold"
        }
    }
    fn modes(&self) -> Modes {
        XSP
    }
    #[inline(always)]
    fn exclusive<R>(&self, key: u64, f: impl FnOnce() -> R) -> R {
        self.hold(self.locks.exclusive(&key), f)
    }
    #[inline(always)]
    fn shared<R>(&self, key: u64, f: impl FnOnce() -> R) -> R {
        self.hold(self.locks.shared(&key), f)
    }
    #[inline(always)]
    fn permit<R>(&self, key: u64, permits: u32, f: impl FnOnce() -> R) -> R {
        self.hold(self.locks.semaphore(&key, permits), f)
    }
    fn entries(&self) -> Entries {
        let now = self.locks.slot_count();
        self.locks.reclaim_idle();
        Entries { now, after_reclaim: Some(self.locks.slot_count()), fixed: false }
    }
}

// ---------------------------------------------------------------------------------------------
// 2. std::sync::Mutex<HashMap> + Condvar, removing idle entries

#[derive(Default)]
struct TableEntry {
    writer: bool,
    readers: u32,
    permits: u32,
    waiters: u32,
}

impl TableEntry {
    fn admits(&self, mode: Mode) -> bool {
        match mode {
            Mode::Exclusive => !self.writer && self.readers == 0 && self.permits == 0,
            Mode::Shared => !self.writer && self.permits == 0,
            Mode::Permit(n) => !self.writer && self.readers == 0 && self.permits < n,
        }
    }
    fn take(&mut self, mode: Mode) {
        match mode {
            Mode::Exclusive => self.writer = true,
            Mode::Shared => self.readers += 1,
            Mode::Permit(_) => self.permits += 1,
        }
    }
    fn give(&mut self, mode: Mode) {
        match mode {
            Mode::Exclusive => self.writer = false,
            Mode::Shared => self.readers -= 1,
            Mode::Permit(_) => self.permits -= 1,
        }
    }
    fn idle(&self) -> bool {
        !self.writer && self.readers == 0 && self.permits == 0 && self.waiters == 0
    }
}

/// One global `std::sync::Mutex` over a `HashMap` (std's default hasher) of per-key counts, one
/// `Condvar` that waiters wait on; an entry is removed when its last holder and waiter leave.
#[derive(Default)]
pub struct StdMutexMap {
    map: Mutex<HashMap<u64, TableEntry>>,
    cv: Condvar,
}

impl StdMutexMap {
    #[inline(always)]
    fn hold<R>(&self, key: u64, mode: Mode, f: impl FnOnce() -> R) -> R {
        let mut map = self.map.lock().unwrap();
        loop {
            let e = map.entry(key).or_default();
            if e.admits(mode) {
                e.take(mode);
                break;
            }
            e.waiters += 1;
            map = self.cv.wait(map).unwrap();
            map.get_mut(&key).expect("a waited-on entry stays").waiters -= 1;
        }
        drop(map);
        let r = f();
        let mut map = self.map.lock().unwrap();
        let e = map.get_mut(&key).expect("a held entry stays");
        e.give(mode);
        let wake = e.waiters > 0;
        if e.idle() {
            map.remove(&key);
        }
        drop(map);
        if wake {
            self.cv.notify_all();
        }
        r
    }
}

impl KeyedLock for StdMutexMap {
    fn name(&self) -> &'static str {
        "std-mutex-map"
    }
    fn modes(&self) -> Modes {
        XSP
    }
    #[inline(always)]
    fn exclusive<R>(&self, key: u64, f: impl FnOnce() -> R) -> R {
        self.hold(key, Mode::Exclusive, f)
    }
    #[inline(always)]
    fn shared<R>(&self, key: u64, f: impl FnOnce() -> R) -> R {
        self.hold(key, Mode::Shared, f)
    }
    #[inline(always)]
    fn permit<R>(&self, key: u64, permits: u32, f: impl FnOnce() -> R) -> R {
        self.hold(key, Mode::Permit(permits), f)
    }
    fn entries(&self) -> Entries {
        Entries { now: self.map.lock().unwrap().len(), after_reclaim: None, fixed: false }
    }
}

// ---------------------------------------------------------------------------------------------
// 3 and 4. DashMap<u64, Arc<RwLock<()>>>, keeping entries or removing idle ones on release

/// `DashMap` (its default hasher) of `Arc<parking_lot::RwLock<()>>`: look up with `get` (shard
/// read lock), insert with `entry` only for a new key, clone the `Arc`, lock it. With `remove`,
/// every release then takes the shard write lock and removes the entry if no one else has a clone.
pub struct DashMapLocks {
    map: DashMap<u64, Arc<RwLock<()>>>,
    remove: bool,
}

impl DashMapLocks {
    pub fn new(remove: bool) -> Self {
        DashMapLocks { map: DashMap::new(), remove }
    }

    #[inline(always)]
    fn lock_of(&self, key: u64) -> Arc<RwLock<()>> {
        if let Some(l) = self.map.get(&key) {
            return Arc::clone(&l);
        }
        Arc::clone(&self.map.entry(key).or_insert_with(|| Arc::new(RwLock::new(()))))
    }

    #[inline(always)]
    fn done(&self, key: u64, lock: Arc<RwLock<()>>) {
        drop(lock);
        if self.remove {
            // Under the shard write lock no one can take a new clone, so a unique Arc means no
            // holder and no one about to lock it.
            self.map.remove_if(&key, |_, l| Arc::strong_count(l) == 1);
        }
    }
}

impl KeyedLock for DashMapLocks {
    fn name(&self) -> &'static str {
        if self.remove {
            "dashmap-remove"
        } else {
            "dashmap-keep"
        }
    }
    fn modes(&self) -> Modes {
        XS
    }
    #[inline(always)]
    fn exclusive<R>(&self, key: u64, f: impl FnOnce() -> R) -> R {
        let lock = self.lock_of(key);
        let g = lock.write();
        let r = f();
        drop(g);
        self.done(key, lock);
        r
    }
    #[inline(always)]
    fn shared<R>(&self, key: u64, f: impl FnOnce() -> R) -> R {
        let lock = self.lock_of(key);
        let g = lock.read();
        let r = f();
        drop(g);
        self.done(key, lock);
        r
    }
    fn permit<R>(&self, _: u64, _: u32, _: impl FnOnce() -> R) -> R {
        unsupported(self.name(), "semaphore")
    }
    fn entries(&self) -> Entries {
        Entries { now: self.map.len(), after_reclaim: None, fixed: false }
    }
}

// ---------------------------------------------------------------------------------------------
// 5. lockable::LockPool

/// `lockable::LockPool<u64>` with `blocking_lock`: exclusive only.
#[derive(Default)]
pub struct Lockable {
    pool: lockable::LockPool<u64>,
}

impl KeyedLock for Lockable {
    fn name(&self) -> &'static str {
        "lockable"
    }
    fn modes(&self) -> Modes {
        X
    }
    #[inline(always)]
    fn exclusive<R>(&self, key: u64, f: impl FnOnce() -> R) -> R {
        let g = self.pool.blocking_lock(key);
        let r = f();
        drop(g);
        r
    }
    fn shared<R>(&self, _: u64, _: impl FnOnce() -> R) -> R {
        unsupported(self.name(), "shared")
    }
    fn permit<R>(&self, _: u64, _: u32, _: impl FnOnce() -> R) -> R {
        unsupported(self.name(), "semaphore")
    }
    fn entries(&self) -> Entries {
        Entries { now: self.pool.num_locked(), after_reclaim: None, fixed: false }
    }
}

// ---------------------------------------------------------------------------------------------
// 6. 1,024 striped RwLocks

pub const STRIPES: usize = 1024;

/// A fixed array of 1,024 `parking_lot::RwLock<()>` (unpadded, as such arrays are usually
/// written), key to stripe by a multiplicative hash: no table, no reclamation, distinct keys may
/// share a stripe.
pub struct Striped {
    locks: Box<[RwLock<()>]>,
}

impl Default for Striped {
    fn default() -> Self {
        Striped { locks: (0..STRIPES).map(|_| RwLock::new(())).collect() }
    }
}

impl Striped {
    #[inline(always)]
    fn stripe(&self, key: u64) -> &RwLock<()> {
        let h = key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - STRIPES.trailing_zeros());
        &self.locks[h as usize]
    }
}

impl KeyedLock for Striped {
    fn name(&self) -> &'static str {
        "striped-1024"
    }
    fn modes(&self) -> Modes {
        XS
    }
    #[inline(always)]
    fn exclusive<R>(&self, key: u64, f: impl FnOnce() -> R) -> R {
        let _g = self.stripe(key).write();
        f()
    }
    #[inline(always)]
    fn shared<R>(&self, key: u64, f: impl FnOnce() -> R) -> R {
        let _g = self.stripe(key).read();
        f()
    }
    fn permit<R>(&self, _: u64, _: u32, _: impl FnOnce() -> R) -> R {
        unsupported(self.name(), "semaphore")
    }
    fn entries(&self) -> Entries {
        Entries { now: STRIPES, after_reclaim: None, fixed: true }
    }
}

// ---------------------------------------------------------------------------------------------
// 7. one bare mutex

/// One `parking_lot::Mutex<()>` for every key (shared requests take it too): the per-op floor.
/// Its W1 cell at one thread is F.
#[derive(Default)]
pub struct BareMutex {
    lock: parking_lot::Mutex<()>,
}

impl KeyedLock for BareMutex {
    fn name(&self) -> &'static str {
        "bare-mutex"
    }
    fn modes(&self) -> Modes {
        XS
    }
    #[inline(always)]
    fn exclusive<R>(&self, _: u64, f: impl FnOnce() -> R) -> R {
        let _g = self.lock.lock();
        f()
    }
    #[inline(always)]
    fn shared<R>(&self, _: u64, f: impl FnOnce() -> R) -> R {
        let _g = self.lock.lock();
        f()
    }
    fn permit<R>(&self, _: u64, _: u32, _: impl FnOnce() -> R) -> R {
        unsupported(self.name(), "semaphore")
    }
    fn entries(&self) -> Entries {
        Entries { now: 1, after_reclaim: None, fixed: true }
    }
}

// ---------------------------------------------------------------------------------------------
// 8. tokio::sync::Semaphore

/// One `tokio::sync::Semaphore` (every key maps to it): `try_acquire` and drop, retried (with a
/// spin hint, then a yield) when all permits are out, since it has no blocking acquire.
pub struct TokioSemaphore {
    sem: tokio::sync::Semaphore,
    permits: u32,
}

impl TokioSemaphore {
    pub fn new(permits: u32) -> Self {
        TokioSemaphore { sem: tokio::sync::Semaphore::new(permits as usize), permits }
    }
}

impl KeyedLock for TokioSemaphore {
    fn name(&self) -> &'static str {
        "tokio-semaphore"
    }
    fn modes(&self) -> Modes {
        P
    }
    fn exclusive<R>(&self, _: u64, _: impl FnOnce() -> R) -> R {
        unsupported(self.name(), "exclusive")
    }
    fn shared<R>(&self, _: u64, _: impl FnOnce() -> R) -> R {
        unsupported(self.name(), "shared")
    }
    #[inline(always)]
    fn permit<R>(&self, _: u64, permits: u32, f: impl FnOnce() -> R) -> R {
        assert_eq!(permits, self.permits, "harness bug: one tokio semaphore, one permit count");
        let mut spins = 0_u32;
        let p = loop {
            match self.sem.try_acquire() {
                Ok(p) => break p,
                Err(_) => {
                    spins += 1;
                    if spins < 64 {
                        std::hint::spin_loop();
                    } else {
                        std::thread::yield_now();
                    }
                }
            }
        };
        let r = f();
        drop(p);
        r
    }
    fn entries(&self) -> Entries {
        Entries { now: 1, after_reclaim: None, fixed: true }
    }
}

// ---------------------------------------------------------------------------------------------

/// Every peer, by id: the driver loops over ids and builds a fresh peer for every cell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerId {
    Leasehold,
    LeaseholdLease,
    StdMutexMap,
    DashMapKeep,
    DashMapRemove,
    Lockable,
    Striped,
    BareMutex,
    TokioSemaphore,
}

/// The peers in table order (leasehold first, the floors last).
pub const ALL: [PeerId; 9] = [
    PeerId::Leasehold,
    PeerId::LeaseholdLease,
    PeerId::StdMutexMap,
    PeerId::DashMapKeep,
    PeerId::DashMapRemove,
    PeerId::Lockable,
    PeerId::TokioSemaphore,
    PeerId::Striped,
    PeerId::BareMutex,
];

/// The lease of workload L.
pub const LEASE: Duration = Duration::from_secs(30);

/// A computation that runs on one concrete peer type (the generic stand-in for `dyn`).
pub trait Visit {
    type Out;
    fn visit<L: KeyedLock>(self, lock: &L) -> Self::Out;
}

impl PeerId {
    /// Builds a fresh peer and runs `v` on it; the peer is dropped afterwards.
    pub fn with<V: Visit>(self, permits: u32, v: V) -> V::Out {
        match self {
            PeerId::Leasehold => v.visit(&Leasehold::<false>::new()),
            PeerId::LeaseholdLease => v.visit(&Leasehold::<true>::new()),
            PeerId::StdMutexMap => v.visit(&StdMutexMap::default()),
            PeerId::DashMapKeep => v.visit(&DashMapLocks::new(false)),
            PeerId::DashMapRemove => v.visit(&DashMapLocks::new(true)),
            PeerId::Lockable => v.visit(&Lockable::default()),
            PeerId::Striped => v.visit(&Striped::default()),
            PeerId::BareMutex => v.visit(&BareMutex::default()),
            PeerId::TokioSemaphore => v.visit(&TokioSemaphore::new(permits)),
        }
    }

    /// The peer's name, as its `KeyedLock::name` gives it (the correctness check compares them).
    pub fn name(self) -> &'static str {
        match self {
            PeerId::Leasehold => "leasehold",
            PeerId::LeaseholdLease => "leasehold+lease",
            PeerId::StdMutexMap => "std-mutex-map",
            PeerId::DashMapKeep => "dashmap-keep",
            PeerId::DashMapRemove => "dashmap-remove",
            PeerId::Lockable => "lockable",
            PeerId::Striped => "striped-1024",
            PeerId::BareMutex => "bare-mutex",
            PeerId::TokioSemaphore => "tokio-semaphore",
        }
    }

    pub fn modes(self) -> Modes {
        match self {
            PeerId::Leasehold | PeerId::LeaseholdLease | PeerId::StdMutexMap => XSP,
            PeerId::DashMapKeep | PeerId::DashMapRemove | PeerId::Striped | PeerId::BareMutex => XS,
            PeerId::Lockable => X,
            PeerId::TokioSemaphore => P,
        }
    }
}
