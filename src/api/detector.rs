//! Deadlock detection: the wait-for graph of sessions, searched only when a session waits.
//!
//! A [`Session`] is a transaction's identity: its holdings and its one pending wait. The graph is
//! implicit: a waiting session points at the key it waits on, and the key at the sessions that
//! hold it in a conflicting mode (read from their holding lists at search time). There is no
//! per-key index to keep: an uncontended acquire appends to its own session's list (a mutex only
//! that session's thread and a detection touch) and never enters the graph lock.
//!
//! When a session is about to wait, it registers its wait and searches, under the graph lock,
//! for a path back to itself (depth-first, at most `depth` sessions deep). Waits register one at a
//! time under that lock, so of the sessions of a cycle the last to wait sees every other edge:
//! its holdings were recorded before it waited, and so were everyone else's. A cycle found is
//! validated with the mutexes of all its sessions held at once, which freezes their lists: a
//! holder recorded in a list still holds (a holding leaves its list before it is released), so a
//! waiter pointing at it cannot have been granted, and the cycle is a real deadlock at that
//! instant (no false positive).
//!
//! Edges: a session waiting for `m` on `k` points at every session holding `k` in a mode that the
//! compatibility matrix ([`crate::vocab::compat`]) says conflicts with `m` (itself too: re-acquiring a
//! key in a stronger mode while holding it waits for oneself). A shared request also points at
//! sessions that queued an exclusive request on `k` before it (writer preference makes the reader
//! wait for them). Semaphore waits wait for any one permit, not all: they do not enter the graph.
//!
//! Victim policy ([`VictimPolicy`]): the requester (the session whose wait closed the cycle) fails
//! by default, as RocksDB and TiKV do; or the youngest session of the cycle (largest id) fails,
//! woken out of its wait. Beyond the depth bound the search gives up and fails the requester,
//! as RocksDB does (`Cycle::depth_exceeded`).

#![deny(unsafe_code)]

use std::collections::{HashSet, VecDeque};
use std::fmt;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::Waker;
use std::time::Instant;

// Sessions are not modelled by loom (their waits park through `std::thread` and a waker): plain
// `parking_lot` here, not the loom shim.
use parking_lot::Mutex;

use crate::vocab::compat::{self, Granule};
use crate::vocab::deadlock::{Cycle, CycleEdge, DeadlockStats, SessionId, SessionNode, VictimPolicy, WaitGraph};
use crate::vocab::error::LockError;
use crate::vocab::mode::{Mode, Owner};

/// The default depth bound of the search (RocksDB's `deadlock_detect_depth` is 50 too).
pub const DEFAULT_DEPTH: usize = 50;
/// How many recent deadlocks [`LockManager::deadlocks`] keeps by default.
pub const DEFAULT_HISTORY: usize = 32;
/// How often a search whose cycle changed under it (a session in it moved on) is run again.
const REVALIDATE: usize = 64;

/// The detector's settings (builder options).
#[derive(Clone, Copy, Debug)]
pub(crate) struct DetectConfig {
    pub(crate) depth: usize,
    pub(crate) victim: VictimPolicy,
    pub(crate) history: usize,
}

impl Default for DetectConfig {
    fn default() -> Self {
        DetectConfig { depth: DEFAULT_DEPTH, victim: VictimPolicy::Requester, history: DEFAULT_HISTORY }
    }
}

/// Role of a key in a session's wait.
#[derive(Clone)]
struct Waiting<K> {
    key: K,
    mode: Mode,
    /// An upgrade's wait: the id of the session's own upgradable holding of the key, which the
    /// upgrade does not wait for.
    upgrade_of: Option<u64>,
    /// Order of registration (the youngest-victim policy compares it).
    seq: u64,
}

struct Held<K> {
    key: K,
    mode: Mode,
    id: u64,
}

struct SessionInner<K> {
    waiting: Option<Waiting<K>>,
    held: Vec<Held<K>>,
    next_held: u64,
    /// Set when the youngest-victim policy chose this session's wait (by its `seq`): that wait
    /// ends with this error.
    abort: Option<(u64, Box<Cycle>)>,
    /// Wakes the session's wait (for an abort).
    waker: Option<Waker>,
}

pub(crate) struct SessionState<K> {
    pub(crate) id: SessionId,
    pub(crate) label: Owner,
    inner: Mutex<SessionInner<K>>,
}

struct Graph<K> {
    sessions: Vec<Arc<SessionState<K>>>,
    recent: VecDeque<Cycle>,
    seq: u64,
}

/// The per-manager detector state.
pub(crate) struct Detector<K> {
    config: DetectConfig,
    graph: Mutex<Graph<K>>,
    next_id: AtomicU64,
    searches: AtomicU64,
    deadlocks: AtomicU64,
    search_ns: AtomicU64,
}

impl<K> Detector<K> {
    pub(crate) fn new(config: DetectConfig) -> Self {
        Detector {
            config,
            graph: Mutex::new(Graph { sessions: Vec::new(), recent: VecDeque::new(), seq: 0 }),
            next_id: AtomicU64::new(1),
            searches: AtomicU64::new(0),
            deadlocks: AtomicU64::new(0),
            search_ns: AtomicU64::new(0),
        }
    }

    pub(crate) fn unregister(&self, state: &Arc<SessionState<K>>) {
        let mut g = self.graph.lock();
        g.sessions.retain(|s| !Arc::ptr_eq(s, state));
    }

    pub(crate) fn recent(&self) -> Vec<Cycle> {
        self.graph.lock().recent.iter().cloned().collect()
    }

    pub(crate) fn stats(&self) -> DeadlockStats {
        // Relaxed: independent statistics counters.
        DeadlockStats {
            searches: self.searches.load(Ordering::Relaxed),
            deadlocks: self.deadlocks.load(Ordering::Relaxed),
            search_ns: self.search_ns.load(Ordering::Relaxed),
        }
    }
}

fn granule(mode: Mode) -> Granule {
    mode.granule()
}

/// One out-edge of a waiting session, before rendering.
struct Edge<K> {
    from: usize,
    key: K,
    mode: Mode,
    seq: u64,
    to: usize,
    held: Mode,
    /// A queued-writer edge (the target waits, rather than holds).
    queued: bool,
}

impl<K: Hash + Eq + Clone + fmt::Debug> Detector<K> {
    pub(crate) fn register(&self, label: Owner) -> Arc<SessionState<K>> {
        // Relaxed: ids need only be unique and grow; the graph lock orders everything else.
        let id = SessionId(self.next_id.fetch_add(1, Ordering::Relaxed));
        let state = Arc::new(SessionState {
            id,
            label,
            inner: Mutex::new(SessionInner { waiting: None, held: Vec::new(), next_held: 0, abort: None, waker: None }),
        });
        self.graph.lock().sessions.push(Arc::clone(&state));
        state
    }

    /// The out-edges of session `from` (none if it does not wait or is being aborted).
    fn edges_of(&self, sessions: &[Arc<SessionState<K>>], from: usize) -> Vec<Edge<K>> {
        let waiting = {
            let s = sessions[from].inner.lock();
            match (&s.waiting, &s.abort) {
                (Some(w), None) => w.clone(),
                _ => return Vec::new(),
            }
        };
        let asked = granule(waiting.mode);
        let mut out = Vec::new();
        for (to, t) in sessions.iter().enumerate() {
            let t = t.inner.lock();
            for h in &t.held {
                let own_upgrade = to == from && waiting.upgrade_of == Some(h.id);
                if h.key == waiting.key && !own_upgrade && !compat::compatible(granule(h.mode), asked) {
                    out.push(Edge {
                        from,
                        key: waiting.key.clone(),
                        mode: waiting.mode,
                        seq: waiting.seq,
                        to,
                        held: h.mode,
                        queued: false,
                    });
                    break;
                }
            }
            // Upgradable requests queue behind writers as readers do; an upgrade waits as a writer.
            if matches!(waiting.mode, Mode::Shared | Mode::Upgradable) && to != from && t.abort.is_none() {
                if let Some(w) = &t.waiting {
                    // Any writer waiting on the key, whatever the order its wait registered in:
                    // the slot may have queued it ahead of this reader before it registered (a
                    // stress run hung on exactly that). Every writer waiting on one key has the
                    // same out-edges (the key's holders), so a cycle through one that is really
                    // behind this reader exists through the one ahead of it too: no cycle is
                    // invented, none is missed.
                    if w.key == waiting.key && w.mode == Mode::Exclusive {
                        out.push(Edge {
                            from,
                            key: waiting.key.clone(),
                            mode: waiting.mode,
                            seq: waiting.seq,
                            to,
                            held: w.mode,
                            queued: true,
                        });
                    }
                }
            }
        }
        out
    }

    /// Depth-first search for a path from `start` back to it. `Ok(Some(path))`: a cycle;
    /// `Err(path)`: the depth bound was passed.
    #[allow(clippy::type_complexity)]
    fn search(&self, sessions: &[Arc<SessionState<K>>], start: usize) -> Result<Option<Vec<Edge<K>>>, Vec<Edge<K>>> {
        let mut visited = HashSet::new();
        let mut path: Vec<Edge<K>> = Vec::new();
        let mut stack: Vec<Vec<Edge<K>>> = vec![self.edges_of(sessions, start)];
        visited.insert(start);
        while let Some(frontier) = stack.last_mut() {
            let Some(edge) = frontier.pop() else {
                stack.pop();
                path.pop();
                continue;
            };
            let to = edge.to;
            path.push(edge);
            if to == start {
                return Ok(Some(path));
            }
            if !visited.insert(to) {
                path.pop();
                continue;
            }
            let next = self.edges_of(sessions, to);
            if !next.is_empty() && path.len() >= self.config.depth {
                // A path of `depth` edges that goes on: give up (RocksDB's choice).
                return Err(path);
            }
            stack.push(next);
        }
        Ok(None)
    }

    /// Whether every edge of `path` still stands, with all its sessions' lists frozen.
    fn validate(sessions: &[Arc<SessionState<K>>], path: &[Edge<K>]) -> bool {
        let mut ids: Vec<usize> = path.iter().map(|e| e.from).collect();
        ids.sort_unstable();
        ids.dedup();
        let guards: Vec<_> = ids.iter().map(|&i| (i, sessions[i].inner.lock())).collect();
        let inner_of = |i: usize| guards.iter().find(|(j, _)| *j == i).map(|(_, g)| &**g);
        path.iter().all(|e| {
            let (Some(from), Some(to)) = (inner_of(e.from), inner_of(e.to)) else { return false };
            let waits = from.abort.is_none()
                && from.waiting.as_ref().is_some_and(|w| w.seq == e.seq && w.key == e.key && w.mode == e.mode);
            let upgrade_of = from.waiting.as_ref().and_then(|w| w.upgrade_of);
            let blocks = if e.queued {
                to.abort.is_none() && to.waiting.as_ref().is_some_and(|w| w.key == e.key && w.mode == Mode::Exclusive)
            } else {
                to.held.iter().any(|h| {
                    let own_upgrade = e.from == e.to && upgrade_of == Some(h.id);
                    h.key == e.key && !own_upgrade && !compat::compatible(granule(h.mode), granule(e.mode))
                })
            };
            waits && blocks
        })
    }

    fn render(sessions: &[Arc<SessionState<K>>], path: &[Edge<K>]) -> Vec<CycleEdge> {
        path.iter()
            .map(|e| CycleEdge {
                session: sessions[e.from].id,
                label: sessions[e.from].label.clone(),
                key: format!("{:?}", e.key),
                mode: e.mode,
                holder: sessions[e.to].id,
                held: e.held,
            })
            .collect()
    }

    /// Registers `me`'s wait for `mode` on `key` and searches for a cycle it would close. An
    /// upgrade's wait names the session's own upgradable holding (`upgrade_of`, its id in the
    /// list): it waits for every other holder of the key in a mode exclusive conflicts with.
    /// `Err(Deadlock)` when the requester is the victim (its wait is withdrawn).
    /// `Ok(Some(seq))`: the wait is registered as `seq`; `Ok(None)`: the session already has a
    /// registered wait (another thread's request of the same session), and this one stays out of
    /// the graph.
    pub(crate) fn begin_wait(
        &self,
        me: &Arc<SessionState<K>>,
        key: K,
        mode: Mode,
        upgrade_of: Option<u64>,
    ) -> Result<Option<u64>, LockError> {
        let started = Instant::now();
        let mut g = self.graph.lock();
        g.seq += 1;
        let seq = g.seq;
        {
            let mut mine = me.inner.lock();
            if mine.waiting.is_some() {
                return Ok(None);
            }
            mine.waiting = Some(Waiting { key, mode, upgrade_of, seq });
        }
        // Relaxed: statistics.
        self.searches.fetch_add(1, Ordering::Relaxed);
        let Some(start) = g.sessions.iter().position(|s| Arc::ptr_eq(s, me)) else {
            return Ok(Some(seq));
        };
        let mut outcome = Ok(Some(seq));
        for _ in 0..REVALIDATE {
            let sessions = &g.sessions;
            let (path, depth_exceeded) = match self.search(sessions, start) {
                Ok(None) => break,
                Ok(Some(path)) => (path, false),
                Err(path) => (path, true),
            };
            if !depth_exceeded && !Self::validate(sessions, &path) {
                continue; // a session of it moved on meanwhile: search again
            }
            let victim = match self.config.victim {
                VictimPolicy::Youngest if !depth_exceeded => {
                    path.iter().map(|e| e.from).max_by_key(|&i| sessions[i].id).unwrap_or(start)
                }
                _ => start,
            };
            let cycle = Cycle { edges: Self::render(sessions, &path), victim: sessions[victim].id, depth_exceeded };
            self.deadlocks.fetch_add(1, Ordering::Relaxed);
            if victim == start {
                me.inner.lock().waiting = None;
                outcome = Err(LockError::Deadlock { cycle: Box::new(cycle.clone()) });
            } else {
                let mut v = sessions[victim].inner.lock();
                // Validated above and the victim cannot start a new wait without the graph lock;
                // but it may have been granted meanwhile (then it has no wait to abort).
                if let Some(w) = &v.waiting {
                    v.abort = Some((w.seq, Box::new(cycle.clone())));
                    if let Some(w) = v.waker.take() {
                        w.wake();
                    }
                }
            }
            if g.recent.len() == self.config.history {
                g.recent.pop_front();
            }
            if self.config.history > 0 {
                g.recent.push_back(cycle);
            }
            break;
        }
        drop(g);
        // Relaxed: statistics.
        self.search_ns.fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        outcome
    }

    pub(crate) fn wait_graph(&self) -> WaitGraph {
        let g = self.graph.lock();
        let sessions = &g.sessions;
        let mut edges = Vec::new();
        for i in 0..sessions.len() {
            edges.extend(Self::render(sessions, &self.edges_of(sessions, i)));
        }
        let nodes = sessions
            .iter()
            .map(|s| {
                let inner = s.inner.lock();
                SessionNode {
                    id: s.id,
                    label: s.label.clone(),
                    waiting: inner.waiting.as_ref().map(|w| (format!("{:?}", w.key), w.mode)),
                    held: inner.held.iter().map(|h| (format!("{:?}", h.key), h.mode)).collect(),
                }
            })
            .collect();
        WaitGraph { sessions: nodes, edges }
    }
}

impl<K> SessionState<K> {
    /// Ends the registered wait `seq` (if any): withdraws it and takes its abort, if one was set.
    pub(crate) fn end_wait(&self, seq: Option<u64>) -> Option<Box<Cycle>> {
        let seq = seq?;
        let mut s = self.inner.lock();
        if s.waiting.as_ref().is_some_and(|w| w.seq == seq) {
            s.waiting = None;
            s.waker = None;
        }
        match s.abort.take() {
            Some((at, cycle)) if at == seq => Some(cycle),
            other => {
                s.abort = other;
                None
            }
        }
    }

    /// Records a holding; returns its entry id. The wait `seq` is withdrawn in the same step, so
    /// a search never sees this session both waiting for the key and holding it.
    pub(crate) fn record(&self, key: K, mode: Mode, seq: Option<u64>) -> Result<u64, Box<Cycle>> {
        if let Some(cycle) = self.end_wait(seq) {
            return Err(cycle);
        }
        let mut s = self.inner.lock();
        let id = s.next_held;
        s.next_held += 1;
        s.held.push(Held { key, mode, id });
        Ok(id)
    }

    /// Changes the mode of holding `id` in the list (an upgrade, after it happened; a downgrade,
    /// before it happens: so the list never claims more than the holding has).
    pub(crate) fn set_mode(&self, id: u64, mode: Mode) {
        let mut s = self.inner.lock();
        if let Some(h) = s.held.iter_mut().find(|h| h.id == id) {
            h.mode = mode;
        }
    }

    /// Drops a holding from the list (before the lock is released, so the list never names a
    /// holding that is gone).
    pub(crate) fn forget(&self, id: u64) {
        let mut s = self.inner.lock();
        if let Some(i) = s.held.iter().position(|h| h.id == id) {
            s.held.swap_remove(i);
        }
    }

    /// Registers the waker of wait `seq`, or returns its abort if it was chosen as a victim.
    pub(crate) fn set_waker(&self, seq: Option<u64>, waker: &Waker) -> Option<Box<Cycle>> {
        let seq = seq?;
        let mut s = self.inner.lock();
        if s.abort.as_ref().is_some_and(|(at, _)| *at == seq) {
            drop(s);
            return self.end_wait(Some(seq));
        }
        if !s.waker.as_ref().is_some_and(|w| w.will_wake(waker)) {
            s.waker = Some(waker.clone());
        }
        None
    }
}
