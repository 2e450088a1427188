//! Sessions and deadlock detection: the wait-for graph, searched only when a session waits.
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
//! compatibility matrix ([`crate::compat`]) says conflicts with `m` (itself too: re-acquiring a
//! key in a stronger mode while holding it waits for oneself). A shared request also points at
//! sessions that queued an exclusive request on `k` before it (writer preference makes the reader
//! wait for them). Semaphore waits wait for any one permit, not all: they do not enter the graph.
//!
//! Victim policy ([`VictimPolicy`]): the requester (the session whose wait closed the cycle) fails
//! by default, as RocksDB and TiKV do; or the youngest session of the cycle (largest id) fails,
//! woken out of its wait. Beyond the depth bound the search gives up and fails the requester,
//! as RocksDB does (`Cycle::depth_exceeded`).

#![deny(unsafe_code)]

use std::borrow::Borrow;
use std::collections::{HashSet, VecDeque};
use std::fmt;
use std::future::Future;
use std::hash::{BuildHasher, Hash};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use crate::compat::{self, Granule};
use crate::error::LockError;
use crate::guard::LockGuard;
use crate::manager::{DefaultHasher, LockManager};
use crate::mode::{Mode, Owner};
use crate::request::{AcquireFuture, Request};
use std::sync::Arc;

// Sessions are not modelled by loom (their waits park through `std::thread` and a waker): plain
// `parking_lot` here, not the loom shim.
use crate::token::FenceToken;
use parking_lot::Mutex;

/// The default depth bound of the search (RocksDB's `deadlock_detect_depth` is 50 too).
pub const DEFAULT_DEPTH: usize = 50;
/// How many recent deadlocks [`LockManager::deadlocks`] keeps by default.
pub const DEFAULT_HISTORY: usize = 32;
/// How often a search whose cycle changed under it (a session in it moved on) is run again.
const REVALIDATE: usize = 64;

/// Which request fails when a wait would close a cycle.
///
/// # Examples
///
/// ```
/// use leasehold::{LockManager, VictimPolicy};
/// let locks = LockManager::<u64>::builder().deadlock_victim(VictimPolicy::Youngest).build()?;
/// # Ok::<(), leasehold::ConfigError>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum VictimPolicy {
    /// The session whose wait closed the cycle gets [`LockError::Deadlock`] (RocksDB, TiKV).
    #[default]
    Requester,
    /// The youngest session of the cycle (the most recently created) is woken out of its wait
    /// with [`LockError::Deadlock`]; the requester keeps waiting.
    Youngest,
}

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

/// A session's identity: ids grow with creation, so a larger id is a younger session.
///
/// # Examples
///
/// ```
/// let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
/// let (a, b) = (locks.session("t1"), locks.session("t2"));
/// assert!(b.id() > a.id());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(u64);

impl SessionId {
    /// The number.
    ///
    /// # Examples
    ///
    /// ```
    /// let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
    /// assert!(locks.session("t").id().get() > 0);
    /// ```
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s{}", self.0)
    }
}

/// One edge of a deadlock: `session` waits for `mode` on `key`, which `holder` holds in `held`
/// (or, for a queued-writer edge, waits for in `held` ahead of it).
///
/// # Examples
///
/// ```
/// # use leasehold::{LockError, LockManager};
/// let locks: LockManager<u64> = LockManager::new();
/// let tx = locks.session("t");
/// let _s = tx.shared(&1).try_acquire()?;
/// let err = tx.exclusive(&1).acquire().unwrap_err();   // waits for itself
/// let LockError::Deadlock { cycle } = err else { panic!() };
/// assert_eq!(cycle.edges[0].key, "1");
/// assert_eq!(cycle.edges[0].session, cycle.edges[0].holder);
/// # Ok::<(), LockError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CycleEdge {
    /// The waiting session.
    pub session: SessionId,
    /// Its label.
    pub label: Owner,
    /// The key it waits on, in its `Debug` form.
    pub key: String,
    /// The mode it waits for.
    pub mode: Mode,
    /// The session it waits for (the next edge's `session`).
    pub holder: SessionId,
    /// The mode in which `holder` holds (or awaits) the key.
    pub held: Mode,
}

/// A deadlock: the cycle of sessions waiting on each other, and which of them was failed.
///
/// # Examples
///
/// ```
/// # use leasehold::LockManager;
/// let locks: LockManager<u64> = LockManager::new();
/// let tx = locks.session("t");
/// let _s = tx.shared(&1).try_acquire()?;
/// assert!(tx.exclusive(&1).acquire().is_err());
/// let recent = locks.deadlocks();
/// assert_eq!(recent.len(), 1);
/// assert_eq!(recent[0].victim, tx.id());
/// assert!(recent[0].to_string().contains("waits for exclusive on 1"));
/// # Ok::<(), leasehold::LockError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Cycle {
    /// The edges in order: each edge's `holder` is the next edge's `session`, the last's the
    /// first's. With `depth_exceeded`, the path searched so far (not closed).
    pub edges: Vec<CycleEdge>,
    /// The session whose request failed.
    pub victim: SessionId,
    /// The search passed the depth bound: the requester was failed without a proven cycle.
    pub depth_exceeded: bool,
}

impl fmt::Display for Cycle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.depth_exceeded {
            f.write_str("wait chain deeper than the detection bound: ")?;
        }
        for (i, e) in self.edges.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{} ({}) waits for {} on {} held {} by {}", e.session, e.label, e.mode, e.key, e.held, e.holder)?;
        }
        write!(f, "; victim {}", self.victim)
    }
}

/// The wait-for graph at one instant: sessions, what each holds and waits for, and who waits for
/// whom.
///
/// # Examples
///
/// ```
/// let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
/// let tx = locks.session("t1");
/// let _g = tx.exclusive(&7).try_acquire()?;
/// let graph = locks.wait_graph();
/// assert_eq!(graph.sessions.len(), 1);
/// assert!(graph.edges.is_empty());
/// assert!(graph.to_dot().starts_with("digraph wait_for {"));
/// # Ok::<(), leasehold::LockError>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WaitGraph {
    /// Every live session.
    pub sessions: Vec<SessionNode>,
    /// Who waits for whom (`holder` is the target).
    pub edges: Vec<CycleEdge>,
}

/// A session in a [`WaitGraph`].
///
/// # Examples
///
/// ```
/// let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
/// let tx = locks.session("t1");
/// let _g = tx.exclusive(&7).try_acquire()?;
/// let node = &locks.wait_graph().sessions[0];
/// assert_eq!(node.label.as_str(), "t1");
/// assert_eq!(node.held, vec![("7".to_string(), leasehold::Mode::Exclusive)]);
/// # Ok::<(), leasehold::LockError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SessionNode {
    /// Its id.
    pub id: SessionId,
    /// Its label.
    pub label: Owner,
    /// The key (`Debug` form) and mode it waits for, if it waits.
    pub waiting: Option<(String, Mode)>,
    /// The keys and modes it holds.
    pub held: Vec<(String, Mode)>,
}

impl WaitGraph {
    /// The graph in Graphviz DOT: one node per session, one edge per wait, labelled with the key
    /// and the modes.
    ///
    /// # Examples
    ///
    /// ```
    /// let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
    /// let dot = locks.wait_graph().to_dot();
    /// assert!(dot.trim_end().ends_with('}'));
    /// ```
    pub fn to_dot(&self) -> String {
        let mut out = String::from("digraph wait_for {\n  node [shape=box];\n");
        for s in &self.sessions {
            let held: Vec<String> = s.held.iter().map(|(k, m)| format!("{m} {k}")).collect();
            out.push_str(&format!(
                "  {} [label=\"{} {}\\nholds: {}\"];\n",
                s.id,
                s.id,
                dot_escape(s.label.as_str()),
                dot_escape(&held.join(", "))
            ));
        }
        for e in &self.edges {
            out.push_str(&format!(
                "  {} -> {} [label=\"{} {} (held {})\"];\n",
                e.session,
                e.holder,
                e.mode,
                dot_escape(&e.key),
                e.held
            ));
        }
        out.push_str("}\n");
        out
    }
}

fn dot_escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// Counters of the detector.
///
/// # Examples
///
/// ```
/// let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
/// let stats = locks.deadlock_stats();
/// assert_eq!(stats.searches, 0);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeadlockStats {
    /// Searches run (one per session wait that entered the graph).
    pub searches: u64,
    /// Deadlocks found (cycles and depth-bound failures).
    pub deadlocks: u64,
    /// Time spent in searches, graph lock included, in nanoseconds.
    pub search_ns: u64,
}

/// Role of a key in a session's wait.
#[derive(Clone)]
struct Waiting<K> {
    key: K,
    mode: Mode,
    /// Order of registration (a queued-writer edge points only at earlier writers).
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
    id: SessionId,
    label: Owner,
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

    fn unregister(&self, state: &Arc<SessionState<K>>) {
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
    match mode {
        Mode::Exclusive => Granule::X,
        Mode::Shared | Mode::Semaphore(_) => Granule::S,
    }
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
    fn register(&self, label: Owner) -> Arc<SessionState<K>> {
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
                if h.key == waiting.key && !compat::compatible(granule(h.mode), asked) {
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
            if waiting.mode == Mode::Shared && to != from && t.abort.is_none() {
                if let Some(w) = &t.waiting {
                    if w.key == waiting.key && w.mode == Mode::Exclusive && w.seq < waiting.seq {
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
            let blocks = if e.queued {
                to.abort.is_none()
                    && to.waiting.as_ref().is_some_and(|w| w.key == e.key && w.mode == Mode::Exclusive && w.seq < e.seq)
            } else {
                to.held.iter().any(|h| h.key == e.key && !compat::compatible(granule(h.mode), granule(e.mode)))
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

    /// Registers `me`'s wait for `mode` on `key` and searches for a cycle it would close.
    /// `Err(Deadlock)` when the requester is the victim (its wait is withdrawn).
    /// `Ok(Some(seq))`: the wait is registered as `seq`; `Ok(None)`: the session already has a
    /// registered wait (another thread's request of the same session), and this one stays out of
    /// the graph.
    fn begin_wait(&self, me: &Arc<SessionState<K>>, key: K, mode: Mode) -> Result<Option<u64>, LockError> {
        let started = Instant::now();
        let mut g = self.graph.lock();
        g.seq += 1;
        let seq = g.seq;
        {
            let mut mine = me.inner.lock();
            if mine.waiting.is_some() {
                return Ok(None);
            }
            mine.waiting = Some(Waiting { key, mode, seq });
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

    fn wait_graph(&self) -> WaitGraph {
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
    fn end_wait(&self, seq: Option<u64>) -> Option<Box<Cycle>> {
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
    fn record(&self, key: K, mode: Mode, seq: Option<u64>) -> Result<u64, Box<Cycle>> {
        if let Some(cycle) = self.end_wait(seq) {
            return Err(cycle);
        }
        let mut s = self.inner.lock();
        let id = s.next_held;
        s.next_held += 1;
        s.held.push(Held { key, mode, id });
        Ok(id)
    }

    /// Drops a holding from the list (before the lock is released, so the list never names a
    /// holding that is gone).
    fn forget(&self, id: u64) {
        let mut s = self.inner.lock();
        if let Some(i) = s.held.iter().position(|h| h.id == id) {
            s.held.swap_remove(i);
        }
    }

    /// Registers the waker of wait `seq`, or returns its abort if it was chosen as a victim.
    fn set_waker(&self, seq: Option<u64>, waker: &Waker) -> Option<Box<Cycle>> {
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

/// A transaction: its holdings and waits enter the wait-for graph, so a wait that would close a
/// cycle of sessions waiting on each other fails with [`LockError::Deadlock`] instead of hanging.
///
/// Holdings are ordinary locks (a plain `locks.exclusive(k)` and a session's exclusive exclude
/// each other), but only sessions' holdings and waits are edges of the graph. Session requests
/// take no lease: a session's holding lasts until its guard is dropped (a transaction's locks last
/// until it commits or aborts). A session has one wait in the graph at a time: if two threads
/// make requests of one session at once, the second wait stays out of the graph.
///
/// # Examples
///
/// ```
/// use leasehold::{LockError, LockManager};
/// let locks: LockManager<String> = LockManager::new();
/// let tx = locks.session("txn-42");
/// let row = tx.exclusive("row/9").acquire()?;
/// assert!(row.is_held());
/// // The row's token fences the write, as with any guard.
/// let _t = row.token();
/// # Ok::<(), LockError>(())
/// ```
pub struct Session<'m, K, S = DefaultHasher> {
    locks: &'m LockManager<K, S>,
    state: Arc<SessionState<K>>,
}

impl<K, S> fmt::Debug for Session<'_, K, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session").field("id", &self.state.id).field("label", &self.state.label).finish()
    }
}

impl<K, S> Session<'_, K, S> {
    /// This session's id (larger is younger).
    ///
    /// # Examples
    ///
    /// ```
    /// let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
    /// let tx = locks.session("t");
    /// assert_eq!(locks.wait_graph().sessions[0].id, tx.id());
    /// ```
    pub fn id(&self) -> SessionId {
        self.state.id
    }

    /// This session's label.
    ///
    /// # Examples
    ///
    /// ```
    /// let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
    /// assert_eq!(locks.session("txn-1").label().as_str(), "txn-1");
    /// ```
    pub fn label(&self) -> &Owner {
        &self.state.label
    }
}

impl<'m, K, S> Session<'m, K, S>
where
    K: Hash + Eq + Clone + fmt::Debug + Send + Sync + 'static,
    S: BuildHasher + Send + Sync + 'static,
{
    pub(crate) fn new(locks: &'m LockManager<K, S>, label: Owner) -> Self {
        let state = locks.detector.register(label);
        Session { locks, state }
    }

    /// A request for `key` alone, on behalf of this session.
    ///
    /// # Examples
    ///
    /// ```
    /// let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
    /// let tx = locks.session("t");
    /// let g = tx.exclusive(&1).try_acquire()?;
    /// assert!(locks.shared(&1).try_acquire().is_err());
    /// # Ok::<(), leasehold::LockError>(())
    /// ```
    pub fn exclusive<'s, 'q, Q>(&'s self, key: &'q Q) -> SessionRequest<'s, 'm, 'q, K, Q, S>
    where
        K: Borrow<Q> + From<Q::Owned>,
        Q: ?Sized + Hash + Eq + ToOwned,
    {
        SessionRequest { session: self, key, mode: Mode::Exclusive, owner: None }
    }

    /// A request for `key` beside other shared holders, on behalf of this session.
    ///
    /// # Examples
    ///
    /// ```
    /// let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
    /// let (a, b) = (locks.session("a"), locks.session("b"));
    /// let _r1 = a.shared(&1).try_acquire()?;
    /// let _r2 = b.shared(&1).try_acquire()?;
    /// # Ok::<(), leasehold::LockError>(())
    /// ```
    pub fn shared<'s, 'q, Q>(&'s self, key: &'q Q) -> SessionRequest<'s, 'm, 'q, K, Q, S>
    where
        K: Borrow<Q> + From<Q::Owned>,
        Q: ?Sized + Hash + Eq + ToOwned,
    {
        SessionRequest { session: self, key, mode: Mode::Shared, owner: None }
    }

    /// A request for one of `permits` permits of `key`, on behalf of this session. Its waits do
    /// not enter the wait-for graph (a permit waits for any one holder, not all).
    ///
    /// # Examples
    ///
    /// ```
    /// let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
    /// let tx = locks.session("t");
    /// let p = tx.semaphore(&1, 2).try_acquire()?;
    /// assert_eq!(p.mode(), leasehold::Mode::Semaphore(2));
    /// # Ok::<(), leasehold::LockError>(())
    /// ```
    pub fn semaphore<'s, 'q, Q>(&'s self, key: &'q Q, permits: u32) -> SessionRequest<'s, 'm, 'q, K, Q, S>
    where
        K: Borrow<Q> + From<Q::Owned>,
        Q: ?Sized + Hash + Eq + ToOwned,
    {
        SessionRequest { session: self, key, mode: Mode::Semaphore(permits), owner: None }
    }

    /// Several keys at once, all or nothing, on behalf of this session (see
    /// [`LockManager::lock_many`]): each key's wait enters the wait-for graph.
    ///
    /// # Examples
    ///
    /// ```
    /// use leasehold::Mode;
    /// let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
    /// let tx = locks.session("t");
    /// let all = tx.lock_many([(&1, Mode::Exclusive), (&2, Mode::Shared)]).acquire()?;
    /// assert_eq!(all.len(), 2);
    /// # Ok::<(), leasehold::LockError>(())
    /// ```
    pub fn lock_many<'s, 'q, Q, I>(&'s self, keys: I) -> crate::many::ManyRequest<'s, 'm, 'q, K, Q, S>
    where
        I: IntoIterator<Item = (&'q Q, Mode)>,
        K: Borrow<Q> + From<Q::Owned>,
        Q: ?Sized + Hash + Eq + Ord + ToOwned + 'q,
    {
        crate::many::ManyRequest::new(self.locks, Some(self), keys)
    }
}

impl<K, S> Drop for Session<'_, K, S> {
    fn drop(&mut self) {
        // Guards borrow the session, so none is left: only the registration remains.
        self.locks.detector.unregister(&self.state);
    }
}

/// A request of a [`Session`]: one key, one mode; then acquire in one of the four ways.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
/// let tx = locks.session("t");
/// let g = tx.exclusive(&3).owner("txn-3").acquire_timeout(Duration::from_millis(10))?;
/// assert_eq!(g.owner().unwrap().as_str(), "txn-3");
/// # Ok::<(), leasehold::LockError>(())
/// ```
#[must_use = "a request does nothing until one of its acquire methods is called"]
pub struct SessionRequest<'s, 'm, 'q, K, Q: ?Sized, S = DefaultHasher> {
    session: &'s Session<'m, K, S>,
    key: &'q Q,
    mode: Mode,
    owner: Option<Owner>,
}

impl<K, Q: ?Sized + fmt::Debug, S> fmt::Debug for SessionRequest<'_, '_, '_, K, Q, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionRequest")
            .field("session", &self.session.state.id)
            .field("key", &self.key)
            .field("mode", &self.mode)
            .finish()
    }
}

impl<'s, 'm, 'q, K, Q, S> SessionRequest<'s, 'm, 'q, K, Q, S>
where
    K: Hash + Eq + Clone + fmt::Debug + Send + Sync + 'static + Borrow<Q> + From<Q::Owned>,
    Q: ?Sized + Hash + Eq + ToOwned,
    S: BuildHasher + Send + Sync + 'static,
{
    pub(crate) fn new(session: &'s Session<'m, K, S>, key: &'q Q, mode: Mode, owner: Option<Owner>) -> Self {
        SessionRequest { session, key, mode, owner }
    }

    /// Labels the holding (introspection, revocation); the session's label is not used by default
    /// because an owner label costs the slot lock on acquire.
    ///
    /// # Examples
    ///
    /// ```
    /// let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
    /// let tx = locks.session("t");
    /// let g = tx.shared(&1).owner("t").try_acquire()?;
    /// assert_eq!(g.owner().unwrap().as_str(), "t");
    /// # Ok::<(), leasehold::LockError>(())
    /// ```
    pub fn owner(mut self, owner: impl Into<Owner>) -> Self {
        self.owner = Some(owner.into());
        self
    }

    fn request(&self) -> Request<'m, 'q, K, Q, S> {
        let r = Request::new(self.session.locks, self.key, self.mode);
        match &self.owner {
            Some(o) => r.owner(o.clone()),
            None => r,
        }
    }

    fn wrap(&self, guard: LockGuard<'m, K, S>, seq: Option<u64>) -> Result<SessionGuard<'s, 'm, K, S>, LockError> {
        let key = guard.key().clone();
        match self.session.state.record(key, self.mode, seq) {
            Ok(id) => Ok(SessionGuard { guard: Some(guard), session: &self.session.state, id }),
            // Chosen as a victim just as the lock came: the abort wins (the report says so);
            // dropping the guard releases it.
            Err(cycle) => Err(LockError::Deadlock { cycle }),
        }
    }

    /// Takes the lock if it is free now; never waits (and so never deadlocks).
    ///
    /// # Errors
    ///
    /// As [`Request::try_acquire`].
    ///
    /// # Examples
    ///
    /// ```
    /// use leasehold::LockError;
    /// let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
    /// let (a, b) = (locks.session("a"), locks.session("b"));
    /// let _g = a.exclusive(&1).try_acquire()?;
    /// assert_eq!(b.exclusive(&1).try_acquire().unwrap_err(), LockError::WouldBlock);
    /// # Ok::<(), LockError>(())
    /// ```
    pub fn try_acquire(self) -> Result<SessionGuard<'s, 'm, K, S>, LockError> {
        let g = self.request().try_acquire()?;
        self.wrap(g, None)
    }

    /// Waits for the lock; fails at once with [`LockError::Deadlock`] if the wait would close a
    /// cycle and this session is the victim (or later, if the youngest-victim policy picks it).
    ///
    /// # Errors
    ///
    /// [`LockError::Deadlock`], and the validation errors of [`Request::acquire`].
    ///
    /// # Examples
    ///
    /// ```
    /// let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
    /// let tx = locks.session("t");
    /// let g = tx.exclusive(&1).acquire()?;
    /// # Ok::<(), leasehold::LockError>(())
    /// ```
    pub fn acquire(self) -> Result<SessionGuard<'s, 'm, K, S>, LockError> {
        self.acquire_until(None)
    }

    /// Waits at most `timeout`.
    ///
    /// # Errors
    ///
    /// [`LockError::TimedOut`], [`LockError::Deadlock`], and the validation errors.
    ///
    /// # Examples
    ///
    /// ```
    /// use leasehold::LockError;
    /// use std::time::Duration;
    /// let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
    /// let (a, b) = (locks.session("a"), locks.session("b"));
    /// let _g = a.exclusive(&1).try_acquire()?;
    /// let err = b.exclusive(&1).acquire_timeout(Duration::from_millis(5)).unwrap_err();
    /// assert_eq!(err, LockError::TimedOut);
    /// # Ok::<(), LockError>(())
    /// ```
    pub fn acquire_timeout(self, timeout: Duration) -> Result<SessionGuard<'s, 'm, K, S>, LockError> {
        let deadline = Instant::now().checked_add(timeout);
        self.acquire_until(Some(deadline.unwrap_or_else(|| Instant::now() + Duration::from_secs(1 << 30))))
    }

    pub(crate) fn acquire_until(self, deadline: Option<Instant>) -> Result<SessionGuard<'s, 'm, K, S>, LockError> {
        // Uncontended: no waker, no graph; only this session's list.
        match self.request().try_acquire() {
            Ok(g) => return self.wrap(g, None),
            Err(LockError::WouldBlock) => {}
            Err(e) => return Err(e),
        }
        let mut fut = SessionAcquire { request: self, state: AcquireState::Contended };
        let waker = Waker::from(std::sync::Arc::new(ThreadWaker(std::thread::current())));
        let mut cx = Context::from_waker(&waker);
        loop {
            if let Poll::Ready(r) = Pin::new(&mut fut).poll(&mut cx) {
                return r;
            }
            match deadline {
                None => std::thread::park(),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        // Dropping the future withdraws the wait (and releases a lock handed to
                        // it meanwhile).
                        drop(fut);
                        return Err(LockError::TimedOut);
                    }
                    std::thread::park_timeout(d - now);
                }
            }
        }
    }

    /// A future that resolves to the lock, on any executor.
    ///
    /// # Cancel safety
    ///
    /// Dropping it before it completes withdraws its wait from the queue and from the wait-for
    /// graph, and releases a lock handed to it meanwhile.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), leasehold::LockError> {
    /// let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
    /// let tx = locks.session("t");
    /// let g = tx.exclusive(&1).acquire_async().await?;
    /// assert!(g.is_held());
    /// # Ok(())
    /// # }
    /// ```
    pub fn acquire_async(self) -> SessionAcquire<'s, 'm, 'q, K, Q, S> {
        SessionAcquire { request: self, state: AcquireState::Start }
    }
}

struct ThreadWaker(std::thread::Thread);

impl Wake for ThreadWaker {
    fn wake(self: std::sync::Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &std::sync::Arc<Self>) {
        self.0.unpark();
    }
}

/// The future of [`SessionRequest::acquire_async`].
#[must_use = "futures do nothing unless polled"]
pub struct SessionAcquire<'s, 'm, 'q, K, Q: ?Sized, S = DefaultHasher> {
    request: SessionRequest<'s, 'm, 'q, K, Q, S>,
    state: AcquireState<'m, 'q, K, Q, S>,
}

enum AcquireState<'m, 'q, K, Q: ?Sized, S> {
    Start,
    /// A `try_acquire` just failed: register the wait without trying again.
    Contended,
    /// Waiting in the engine; registered in the graph as this wait (if it was).
    Waiting(AcquireFuture<'m, 'q, K, Q, S>, Option<u64>),
    Done,
}

impl<K, Q: ?Sized + fmt::Debug, S> fmt::Debug for SessionAcquire<'_, '_, '_, K, Q, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            AcquireState::Start | AcquireState::Contended => "start",
            AcquireState::Waiting(..) => "waiting",
            AcquireState::Done => "done",
        };
        f.debug_struct("SessionAcquire").field("request", &self.request).field("state", &state).finish()
    }
}

impl<K, Q: ?Sized, S> Unpin for SessionAcquire<'_, '_, '_, K, Q, S> {}

impl<'s, 'm, 'q, K, Q, S> Future for SessionAcquire<'s, 'm, 'q, K, Q, S>
where
    K: Hash + Eq + Clone + fmt::Debug + Send + Sync + 'static + Borrow<Q> + From<Q::Owned>,
    Q: ?Sized + Hash + Eq + ToOwned,
    S: BuildHasher + Send + Sync + 'static,
{
    type Output = Result<SessionGuard<'s, 'm, K, S>, LockError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let session = &this.request.session.state;
        if let AcquireState::Start | AcquireState::Contended = this.state {
            if let AcquireState::Start = this.state {
                // Uncontended: no graph, only this session's list.
                match this.request.request().try_acquire() {
                    Ok(g) => {
                        this.state = AcquireState::Done;
                        return Poll::Ready(this.request.wrap(g, None));
                    }
                    Err(LockError::WouldBlock) => {}
                    Err(e) => {
                        this.state = AcquireState::Done;
                        return Poll::Ready(Err(e));
                    }
                }
            }
            let mut seq = None;
            if !matches!(this.request.mode, Mode::Semaphore(_)) {
                let key = K::from(this.request.key.to_owned());
                match this.request.session.locks.detector.begin_wait(session, key, this.request.mode) {
                    Ok(s) => seq = s,
                    Err(e) => {
                        this.state = AcquireState::Done;
                        return Poll::Ready(Err(e));
                    }
                }
            }
            this.state = AcquireState::Waiting(this.request.request().acquire_async(), seq);
        }
        let AcquireState::Waiting(fut, seq) = &mut this.state else {
            panic!("SessionAcquire polled after it completed");
        };
        let seq = *seq;
        // The waker first, so an abort set after this check wakes us.
        if let Some(cycle) = session.set_waker(seq, cx.waker()) {
            this.state = AcquireState::Done; // drops the engine future: cancel-safe
            return Poll::Ready(Err(LockError::Deadlock { cycle }));
        }
        match Pin::new(fut).poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(g)) => {
                this.state = AcquireState::Done;
                Poll::Ready(this.request.wrap(g, seq))
            }
            Poll::Ready(Err(e)) => {
                this.state = AcquireState::Done;
                let abort = session.end_wait(seq);
                Poll::Ready(Err(abort.map_or(e, |cycle| LockError::Deadlock { cycle })))
            }
        }
    }
}

impl<K, Q: ?Sized, S> Drop for SessionAcquire<'_, '_, '_, K, Q, S> {
    fn drop(&mut self) {
        if let AcquireState::Waiting(fut, seq) = std::mem::replace(&mut self.state, AcquireState::Done) {
            // The engine future leaves its queue (releasing a lock handed to it); then the graph
            // forgets the wait.
            drop(fut);
            self.request.session.state.end_wait(seq);
        }
    }
}

/// A holding of a [`Session`]: a [`LockGuard`] (it derefs to one) that also leaves the session's
/// list when it ends. Dropping it releases the lock.
///
/// # Examples
///
/// ```
/// let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
/// let tx = locks.session("t");
/// let g = tx.exclusive(&1).try_acquire()?;
/// let token = g.token();
/// g.release()?;
/// assert!(locks.exclusive(&1).try_acquire()?.token() > token);
/// # Ok::<(), leasehold::LockError>(())
/// ```
#[must_use = "dropping the guard releases the lock at once"]
pub struct SessionGuard<'s, 'm, K, S = DefaultHasher> {
    guard: Option<LockGuard<'m, K, S>>,
    session: &'s SessionState<K>,
    id: u64,
}

impl<K: Hash + Eq + fmt::Debug, S: BuildHasher> fmt::Debug for SessionGuard<'_, '_, K, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionGuard").field("session", &self.session.id).field("guard", &self.guard).finish()
    }
}

impl<'m, K, S> std::ops::Deref for SessionGuard<'_, 'm, K, S> {
    type Target = LockGuard<'m, K, S>;

    fn deref(&self) -> &Self::Target {
        match &self.guard {
            Some(g) => g,
            None => unreachable!("the guard is taken only by release and drop"),
        }
    }
}

impl<K, S> SessionGuard<'_, '_, K, S> {
    /// Releases the lock now.
    ///
    /// # Errors
    ///
    /// As [`LockGuard::release`].
    ///
    /// # Examples
    ///
    /// ```
    /// let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
    /// let tx = locks.session("t");
    /// tx.exclusive(&1).try_acquire()?.release()?;
    /// assert!(locks.wait_graph().sessions[0].held.is_empty());
    /// # Ok::<(), leasehold::LockError>(())
    /// ```
    pub fn release(mut self) -> Result<(), LockError> {
        self.session.forget(self.id);
        match self.guard.take() {
            Some(g) => g.release(),
            None => Ok(()),
        }
    }

    /// The fencing token (as [`LockGuard::token`]).
    ///
    /// # Examples
    ///
    /// ```
    /// let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
    /// let tx = locks.session("t");
    /// let a = tx.shared(&1).try_acquire()?;
    /// let b = tx.shared(&2).try_acquire()?;
    /// assert!(a.token() > leasehold::FenceToken::from_u64(0) || b.token() > a.token());
    /// # Ok::<(), leasehold::LockError>(())
    /// ```
    pub fn token(&self) -> FenceToken {
        match &self.guard {
            Some(g) => g.token(),
            None => unreachable!("the guard is taken only by release and drop"),
        }
    }
}

impl<K, S> Drop for SessionGuard<'_, '_, K, S> {
    fn drop(&mut self) {
        // Out of the list first: a search must never see a holding that is already released.
        self.session.forget(self.id);
        drop(self.guard.take());
    }
}

impl<K, S> LockManager<K, S>
where
    K: Hash + Eq + Clone + fmt::Debug + Send + Sync + 'static,
    S: BuildHasher + Send + Sync + 'static,
{
    /// A session (a transaction): its waits enter the wait-for graph, so a deadlock among
    /// sessions fails one request with [`LockError::Deadlock`] instead of hanging.
    ///
    /// # Examples
    ///
    /// ```
    /// let locks: leasehold::LockManager<String> = leasehold::LockManager::new();
    /// let tx = locks.session("txn-42");
    /// let g = tx.exclusive("row/9").acquire()?;
    /// # Ok::<(), leasehold::LockError>(())
    /// ```
    pub fn session(&self, label: impl Into<Owner>) -> Session<'_, K, S> {
        Session::new(self, label.into())
    }

    /// The wait-for graph now (sessions, holdings, waits), for a picture: see
    /// [`WaitGraph::to_dot`].
    ///
    /// # Examples
    ///
    /// ```
    /// let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
    /// assert!(locks.wait_graph().sessions.is_empty());
    /// ```
    pub fn wait_graph(&self) -> WaitGraph {
        self.detector.wait_graph()
    }
}

impl<K, S> LockManager<K, S> {
    /// The most recent deadlocks (oldest first; a bounded ring, see `Builder::deadlock_history`).
    ///
    /// # Examples
    ///
    /// ```
    /// let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
    /// assert!(locks.deadlocks().is_empty());
    /// ```
    pub fn deadlocks(&self) -> Vec<Cycle> {
        self.detector.recent()
    }

    /// The detector's counters: searches, deadlocks, time spent searching.
    ///
    /// # Examples
    ///
    /// ```
    /// let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
    /// let tx = locks.session("t");
    /// let _g = tx.exclusive(&1).acquire()?;   // uncontended: no search
    /// assert_eq!(locks.deadlock_stats().searches, 0);
    /// # Ok::<(), leasehold::LockError>(())
    /// ```
    pub fn deadlock_stats(&self) -> DeadlockStats {
        self.detector.stats()
    }
}
