//! Deadlock reports and the wait-for graph as values: sessions' ids, the edges of a cycle, the
//! victim policy, a snapshot of the graph with its DOT rendering, and the detector's counters.

#![deny(unsafe_code)]

use std::fmt;

use crate::vocab::mode::{Mode, Owner};

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
    /// The session whose wait closed the cycle gets [`LockError::Deadlock`](crate::LockError::Deadlock) (RocksDB, TiKV).
    #[default]
    Requester,
    /// The youngest session of the cycle (the most recently created) is woken out of its wait
    /// with [`LockError::Deadlock`](crate::LockError::Deadlock); the requester keeps waiting.
    Youngest,
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
pub struct SessionId(pub(crate) u64);

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
