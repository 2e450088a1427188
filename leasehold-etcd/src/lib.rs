//! leasehold's locks on an etcd cluster: the same requests and guards as the in-process
//! [`leasehold::LockManager`], behind the same [`leasehold::LockBackend`] trait, for processes and
//! machines that must share locks.
//!
//! ```no_run
//! use leasehold::{BackendGuard, LockBackend};
//! use leasehold_etcd::{EtcdLocks, EtcdOptions};
//! use std::time::Duration;
//!
//! async fn nightly<B: LockBackend>(locks: &B) -> Result<(), B::Error> {
//!     let g = locks.exclusive("jobs/nightly").lease(Duration::from_secs(10)).acquire_timeout(Duration::from_secs(5)).await?;
//!     // ... work, fencing writes with g.token() ...
//!     g.release().await
//! }
//!
//! # async fn run() -> Result<(), leasehold_etcd::EtcdError> {
//! let locks = EtcdLocks::connect(["127.0.0.1:2379", "127.0.0.1:22379"], EtcdOptions::default()).await?;
//! nightly(&locks).await?;
//! # Ok(()) }
//! ```
//!
//! # The recipes
//!
//! Built from the client with transactions, as etcd's `concurrency` package does (not with the
//! server-side Lock RPC, which in etcd 3.4 can report success to a waiter whose lease expired while
//! it waited, etcd issue 11456). A lock named `name` is the key range `{namespace}{name}\0`; each
//! waiter puts one key there bound to its lease, and etcd's cluster-wide revision counter orders
//! them:
//!
//! - **exclusive** (etcd's mutex): held by the lowest create revision; each waiter watches only
//!   the deletion of the waiter just before it (no thundering herd);
//! - **shared** (etcd's RWMutex): a reader holds when no earlier waiter is a writer, and watches only
//!   the latest earlier writer; a writer waits for every earlier waiter;
//! - **semaphore(n)**: held while among the n lowest create revisions; a full semaphore's waiters
//!   watch the range for any deletion.
//!
//! After every wait the waiter reads the range again and checks that its own key still exists: if
//! its lease expired while it waited, it fails with [`LockError::Expired`] instead of holding.
//!
//! # Tokens
//!
//! A holding's [`FenceToken`] is its key's create revision: strictly increasing per lock across the
//! cluster, stable while held, so [`leasehold::Fenced`] works unchanged. Holders are granted in
//! create-revision order, so every holder's token is larger than that of every earlier holder it
//! conflicts with; holders that hold together (readers, permits) are ordered by their place in
//! the queue, not by the instant each one learned of its grant. For state kept in etcd
//! itself, [`EtcdLocks::fenced_put`] is a put guarded by a transaction comparing the holder key's
//! create revision.
//!
//! # Leases: one per holder
//!
//! Every acquisition gets its own etcd lease (granted with the request's TTL, or
//! [`EtcdOptions::default_ttl`]), kept alive by a background task every third of the TTL. One per
//! holder rather than one per session because then a holding's fate is its own: renewing,
//! releasing (a revoke, which deletes the key atomically) or losing one lock never touches another,
//! each request's TTL is honoured, and a process that dies frees each of its locks after that lock's
//! own TTL. The price is one lease grant per acquisition (a Raft round, measured in the README's
//! table); a session lease would save it but share one fate and one TTL among all of a process's
//! locks.
//!
//! The guard's deadline is computed from when the last answered keep-alive was *sent*, so the
//! holder stops trusting the lock before the server could have expired the lease. A failed
//! keep-alive stream is reopened on a live member; when no keep-alive is answered before the
//! deadline, or the server says the lease is gone, the guard reports the loss
//! ([`EtcdGuard::is_held`] false for good, [`EtcdGuard::lost`] resolves) and never claims to hold.
//!
//! # Faults
//!
//! Every call is bounded ([`EtcdOptions::attempt_timeout`] per try, [`EtcdOptions::op_timeout`] in
//! all) and retried across members and leader elections within that bound; past it the caller gets
//! [`EtcdError::Unavailable`]. After [`EtcdOptions::breaker_threshold`] unavailable operations in a
//! row, calls are refused at once with [`EtcdError::CircuitOpen`] for
//! [`EtcdOptions::breaker_cooldown`].

#![deny(unsafe_code)]
#![warn(missing_docs)]

mod conn;
mod entry;
mod error;
mod guard;
mod lease;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, GetOptions, PutOptions, SortOrder, SortTarget, Txn, TxnOp,
    TxnOpResponse, WatchFilterType, WatchOptions,
};
use leasehold::{FenceToken, LockBackend, LockError, LockSpec, Mode, Wait, MAX_PERMITS, MAX_TTL};

pub use error::EtcdError;
pub use guard::EtcdGuard;

use conn::{call, Breaker};
use entry::{Entry, Verdict};
use lease::Hold;

/// How the etcd backend talks to the cluster.
///
/// # Examples
///
/// ```
/// use leasehold_etcd::EtcdOptions;
/// use std::time::Duration;
/// let opts = EtcdOptions { op_timeout: Duration::from_secs(2), ..EtcdOptions::default() };
/// assert_eq!(opts.namespace, "leasehold/");
/// ```
#[derive(Clone, Debug)]
pub struct EtcdOptions {
    /// Prefix of every key this backend writes.
    pub namespace: String,
    /// The lease of a request that names none: a holder's process that dies frees the lock after
    /// this long.
    pub default_ttl: Duration,
    /// Bound of one call to one member.
    pub attempt_timeout: Duration,
    /// Bound of one operation, retries included: past it, [`EtcdError::Unavailable`].
    pub op_timeout: Duration,
    /// Unavailable operations in a row that open the circuit.
    pub breaker_threshold: u32,
    /// How long an open circuit refuses calls.
    pub breaker_cooldown: Duration,
    /// Keep-alives are sent every `ttl * keepalive_fraction` (at most 1/2).
    pub keepalive_fraction: f64,
    /// Longest wait between two readings of a waited-on lock's range (a safety net for a watch
    /// that went quiet on a failed member).
    pub recheck_interval: Duration,
}

impl Default for EtcdOptions {
    fn default() -> Self {
        EtcdOptions {
            namespace: "leasehold/".to_string(),
            default_ttl: Duration::from_secs(10),
            attempt_timeout: Duration::from_secs(1),
            op_timeout: Duration::from_secs(5),
            breaker_threshold: 3,
            breaker_cooldown: Duration::from_secs(2),
            keepalive_fraction: 1.0 / 3.0,
            recheck_interval: Duration::from_secs(2),
        }
    }
}

/// What the manager and its guards share.
pub(crate) struct Shared {
    pub(crate) client: Client,
    pub(crate) opts: Arc<EtcdOptions>,
    pub(crate) breaker: Breaker,
    pub(crate) runtime: tokio::runtime::Handle,
}

/// Locks on an etcd cluster, with the requests of [`LockBackend`]: `exclusive`, `shared`,
/// `semaphore`, then `lease`, `owner`, and `try_acquire` / `acquire_timeout` / `acquire`.
/// Cheap to clone (the connection is shared). Needs a tokio runtime: keep-alives run on the one
/// it was connected on.
///
/// # Examples
///
/// ```no_run
/// use leasehold::LockBackend;
/// use leasehold_etcd::{EtcdLocks, EtcdOptions};
/// use std::time::Duration;
/// # async fn run() -> Result<(), leasehold_etcd::EtcdError> {
/// let locks = EtcdLocks::connect(["127.0.0.1:2379"], EtcdOptions::default()).await?;
/// let g = locks.semaphore("workers", 4).lease(Duration::from_secs(5)).acquire_timeout(Duration::from_secs(1)).await?;
/// println!("permit with token {}", g.token());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct EtcdLocks {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for EtcdLocks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdLocks").field("opts", &self.shared.opts).finish()
    }
}

impl EtcdLocks {
    /// Connects to the cluster at `endpoints` (`host:port` or `http://host:port`). The connection
    /// is made lazily and kept across member failures; this fails only on bad endpoints or options.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), leasehold_etcd::EtcdError> {
    /// let locks = leasehold_etcd::EtcdLocks::connect(["127.0.0.1:2379"], Default::default()).await?;
    /// # Ok(()) }
    /// ```
    pub async fn connect<E: AsRef<str>>(
        endpoints: impl IntoIterator<Item = E>,
        opts: EtcdOptions,
    ) -> Result<Self, EtcdError> {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return Err(EtcdError::Etcd {
                message: "EtcdLocks needs a tokio runtime (etcd-client runs on tokio)".into(),
            });
        };
        let endpoints: Vec<String> = endpoints.into_iter().map(|e| e.as_ref().to_string()).collect();
        if !(opts.keepalive_fraction > 0.0 && opts.keepalive_fraction <= 0.5) {
            return Err(EtcdError::Etcd {
                message: format!("keepalive_fraction must be in (0, 0.5], not {}", opts.keepalive_fraction),
            });
        }
        let connect = ConnectOptions::new()
            .with_connect_timeout(opts.attempt_timeout)
            .with_keep_alive(Duration::from_secs(1), opts.attempt_timeout)
            .with_keep_alive_while_idle(true);
        let client = match tokio::time::timeout(opts.op_timeout, Client::connect(endpoints, Some(connect))).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return Err(EtcdError::Etcd { message: e.to_string() }),
            Err(_) => return Err(EtcdError::Unavailable { after: opts.op_timeout, last: "connect".into() }),
        };
        Ok(EtcdLocks { shared: Arc::new(Shared { client, opts: Arc::new(opts), breaker: Breaker::new(), runtime }) })
    }

    /// The options in force.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn f(locks: leasehold_etcd::EtcdLocks) {
    /// assert_eq!(locks.options().namespace, "leasehold/");
    /// # }
    /// ```
    pub fn options(&self) -> &EtcdOptions {
        &self.shared.opts
    }

    /// The underlying etcd client (for reading what fenced writes wrote, for instance).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run(locks: leasehold_etcd::EtcdLocks) -> Result<(), Box<dyn std::error::Error>> {
    /// let value = locks.client().get("config/x", None).await?;
    /// # Ok(()) }
    /// ```
    pub fn client(&self) -> Client {
        self.shared.client.clone()
    }

    /// The etcd-side fence: writes `key = value` only if `guard`'s holder key still exists with
    /// `guard`'s token as its create revision, in one transaction. A holder whose lease expired
    /// (even one that does not know it yet) gets [`EtcdError::FenceRejected`], never a write.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run(locks: leasehold_etcd::EtcdLocks) -> Result<(), leasehold_etcd::EtcdError> {
    /// use leasehold::LockBackend;
    /// let g = locks.exclusive("config").lease(std::time::Duration::from_secs(5)).acquire().await?;
    /// locks.fenced_put(&g, "config/x", "42").await?;
    /// # Ok(()) }
    /// ```
    pub async fn fenced_put(
        &self,
        guard: &EtcdGuard,
        key: impl Into<Vec<u8>>,
        value: impl Into<Vec<u8>>,
    ) -> Result<(), EtcdError> {
        let (key, value) = (key.into(), value.into());
        let entry = guard.entry_key().to_vec();
        let token = guard.token().as_u64() as i64;
        let s = &self.shared;
        let resp = call(&s.client, &s.opts, &s.breaker, |mut c| {
            let txn = Txn::new()
                .when([Compare::create_revision(entry.clone(), CompareOp::Equal, token)])
                .and_then([TxnOp::put(key.clone(), value.clone(), None)]);
            async move { c.txn(txn).await }
        })
        .await
        .map_err(EtcdError::from)?;
        if resp.succeeded() {
            Ok(())
        } else {
            Err(EtcdError::FenceRejected { token: token as u64 })
        }
    }

    async fn acquire_inner(&self, name: &str, spec: LockSpec, wait: Wait) -> Result<EtcdGuard, EtcdError> {
        if name.contains('\0') {
            return Err(EtcdError::InvalidName { name: name.to_string() });
        }
        if let Mode::Semaphore(n) = spec.mode {
            if n == 0 || n > MAX_PERMITS {
                return Err(LockError::InvalidPermits { permits: n }.into());
            }
        }
        let ttl = spec.lease.unwrap_or(self.shared.opts.default_ttl);
        if ttl.is_zero() || ttl > MAX_TTL {
            return Err(LockError::InvalidTtl { ttl }.into());
        }
        let started = Instant::now();
        let wait_deadline = match wait {
            Wait::Timeout(d) => Some(started.checked_add(d).unwrap_or(started + MAX_TTL)),
            Wait::Try | Wait::Forever => None,
        };
        let s = &self.shared;
        // etcd counts a lease's TTL in whole seconds: round up.
        let ttl_secs = ttl.as_secs() as i64 + i64::from(ttl.subsec_nanos() > 0);
        let sent = Instant::now();
        let granted = call(&s.client, &s.opts, &s.breaker, |mut c| async move { c.lease_grant(ttl_secs, None).await })
            .await
            .map_err(EtcdError::from)?;
        let hold = Hold::new(granted.id(), Duration::from_secs(granted.ttl().max(1) as u64), sent);
        s.runtime.spawn(lease::keep_alive(self.shared.clone(), hold.clone(), sent));
        let prefix = entry::lock_prefix(&s.opts.namespace, name);
        let mine = entry::entry_key(&prefix, hold.lease);
        // Until the guard exists, dropping this (an error, or the caller dropping the acquire
        // future mid-wait) leaves the queue: the keep-alive stops and the lease is revoked, which
        // deletes the waiter's key.
        let mut leave = LeaveOnDrop { shared: Some(self.shared.clone()), hold: hold.clone() };
        let token = match self.queue_and_wait(&prefix, &mine, &spec, &hold, wait, wait_deadline).await {
            Ok(token) => token,
            Err(e @ EtcdError::Lock(_)) => {
                // A lock outcome (would block, timed out, ...): leave the queue before answering,
                // so a caller that retries does not find its own stale key in the way.
                hold.stop();
                lease::revoke_quietly(self.shared.clone(), hold.lease).await;
                leave.shared = None;
                return Err(e);
            }
            // The cluster failed: revoke in the background (`leave`), not delaying the error.
            Err(e) => return Err(e),
        };
        leave.shared = None;
        Ok(EtcdGuard {
            shared: self.shared.clone(),
            hold,
            name: name.to_string(),
            entry: mine,
            token: FenceToken::from_u64(token as u64),
            mode: spec.mode,
            owner: spec.owner,
            done: false,
        })
    }

    /// Puts the waiter's key and waits until the rule says it holds; returns its create revision.
    async fn queue_and_wait(
        &self,
        prefix: &[u8],
        mine: &[u8],
        spec: &LockSpec,
        hold: &Hold,
        wait: Wait,
        wait_deadline: Option<Instant>,
    ) -> Result<i64, EtcdError> {
        let s = &self.shared;
        let value = entry::encode(spec.mode, spec.owner.as_ref().map(|o| o.as_str()));
        let range = || GetOptions::new().with_prefix().with_sort(SortTarget::Create, SortOrder::Ascend);
        // Idempotent, so a retry after an ambiguous failure cannot queue twice: put only if the key
        // does not exist yet; read the whole range in the same transaction.
        let resp = call(&s.client, &s.opts, &s.breaker, |mut c| {
            let txn = Txn::new()
                .when([Compare::create_revision(mine.to_vec(), CompareOp::Equal, 0)])
                .and_then([
                    TxnOp::put(mine.to_vec(), value.clone(), Some(PutOptions::new().with_lease(hold.lease))),
                    TxnOp::get(prefix.to_vec(), Some(range())),
                ])
                .or_else([TxnOp::get(prefix.to_vec(), Some(range()))]);
            async move { c.txn(txn).await }
        })
        .await
        .map_err(EtcdError::from)?;
        let mut revision = resp.header().map_or(0, |h| h.revision());
        let mut entries = resp
            .op_responses()
            .into_iter()
            .find_map(|r| match r {
                TxnOpResponse::Get(g) => Some(to_entries(g.kvs())),
                _ => None,
            })
            .unwrap_or_default();
        loop {
            let verdict = entry::verdict(&entries, mine, spec.mode);
            let wait_on = match verdict {
                Verdict::Held => {
                    let me = entries.iter().find(|e| e.key == mine).map_or(0, |e| e.create_revision);
                    return Ok(me);
                }
                Verdict::Gone => return Err(LockError::Expired.into()),
                Verdict::Mismatch { live } => {
                    let Mode::Semaphore(requested) = spec.mode else { return Err(LockError::WouldBlock.into()) };
                    return Err(LockError::PermitMismatch { live, requested }.into());
                }
                Verdict::WaitFor(key) => Some(key),
                Verdict::WaitForAny => None,
            };
            if wait == Wait::Try {
                return Err(LockError::WouldBlock.into());
            }
            let now = Instant::now();
            if wait_deadline.is_some_and(|d| now >= d) {
                return Err(LockError::TimedOut.into());
            }
            let until = wait_deadline.map_or(now + s.opts.recheck_interval, |d| d.min(now + s.opts.recheck_interval));
            let (key, whole_range) = match wait_on {
                Some(key) => (key, false),
                None => (prefix.to_vec(), true),
            };
            tokio::select! {
                _ = hold.lost() => return Err(LockError::Expired.into()),
                _ = self.wait_delete(key, whole_range, revision, until) => {}
            }
            // Read again, whatever woke us: our own key must still be there.
            let resp = call(&s.client, &s.opts, &s.breaker, |mut c| {
                let p = prefix.to_vec();
                async move { c.get(p, Some(range())).await }
            })
            .await
            .map_err(EtcdError::from)?;
            revision = resp.header().map_or(revision, |h| h.revision());
            entries = to_entries(resp.kvs());
        }
    }

    /// Waits until `key` (or, for `prefix`, any key under it) is deleted after `revision`, or
    /// `until`. Watch failures end the wait early (the caller reads the range again).
    async fn wait_delete(&self, key: Vec<u8>, prefix: bool, revision: i64, until: Instant) {
        let s = &self.shared;
        let sleep = tokio::time::sleep_until(until.into());
        tokio::pin!(sleep);
        let mut opts = WatchOptions::new().with_start_revision(revision + 1).with_filters([WatchFilterType::NoPut]);
        if prefix {
            opts = opts.with_prefix();
        }
        let watch = async {
            let mut wc = s.client.watch_client();
            let Ok(Ok(mut stream)) = tokio::time::timeout(s.opts.attempt_timeout, wc.watch(key, Some(opts))).await
            else {
                // Could not watch: pause briefly rather than spin, then read again.
                tokio::time::sleep(Duration::from_millis(100)).await;
                return;
            };
            loop {
                match stream.message().await {
                    Ok(Some(resp)) => {
                        if resp.canceled() || !resp.events().is_empty() {
                            return;
                        }
                    }
                    Ok(None) | Err(_) => return,
                }
            }
        };
        tokio::select! {
            _ = &mut sleep => {}
            _ = watch => {}
        }
    }
}

/// Leaves the queue when an acquisition ends without a guard.
struct LeaveOnDrop {
    shared: Option<Arc<Shared>>,
    hold: Arc<Hold>,
}

impl Drop for LeaveOnDrop {
    fn drop(&mut self) {
        if let Some(shared) = self.shared.take() {
            self.hold.stop();
            shared.runtime.spawn(lease::revoke_quietly(shared.clone(), self.hold.lease));
        }
    }
}

fn to_entries(kvs: &[etcd_client::KeyValue]) -> Vec<Entry> {
    kvs.iter()
        .map(|kv| Entry {
            key: kv.key().to_vec(),
            create_revision: kv.create_revision(),
            mode: entry::decode(kv.value()),
        })
        .collect()
}

impl LockBackend for EtcdLocks {
    type Guard<'a> = EtcdGuard;
    type Error = EtcdError;

    fn acquire_with(
        &self,
        key: &str,
        spec: LockSpec,
        wait: Wait,
    ) -> impl Future<Output = Result<EtcdGuard, EtcdError>> + Send {
        self.acquire_inner(key, spec, wait)
    }
}
