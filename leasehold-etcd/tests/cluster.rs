//! The etcd backend against a real three-member cluster that this test starts itself (loopback
//! ports, a temporary directory, stopped at the end). Several tests spawn client *processes*:
//! this binary re-invoked with `LEASEHOLD_ETCD_CHILD` naming the child's role.
//!
//! Without an `etcd` binary (on the PATH or at `$LEASEHOLD_ETCD_BIN`) the tests are skipped with a
//! message, unless `LEASEHOLD_ETCD_REQUIRED=1` (set by CI), which turns the skip into a failure.
//! A name given as argument runs only the tests whose names contain it.

mod support;

use std::future::Future;
use std::io::{BufRead, BufReader, Write};
use std::pin::Pin;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use leasehold::{BackendError, BackendGuard, Fenced, LockBackend, LockError, LockManager, Mode};
use leasehold_etcd::{EtcdError, EtcdLocks, EtcdOptions};
use support::cluster::{etcd_binary, send, stop_child, Cluster};

const CHILD_ENV: &str = "LEASEHOLD_ETCD_CHILD";

fn main() {
    if let Ok(role) = std::env::var(CHILD_ENV) {
        std::process::exit(child::run(&role));
    }
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let required = std::env::var("LEASEHOLD_ETCD_REQUIRED").is_ok_and(|v| v == "1");
    let Some(bin) = etcd_binary() else {
        if required {
            eprintln!("FAILED: no etcd binary (PATH or LEASEHOLD_ETCD_BIN) and LEASEHOLD_ETCD_REQUIRED=1");
            std::process::exit(1);
        }
        println!("SKIPPED: the etcd cluster tests need an `etcd` binary on the PATH (Debian: apt-get install etcd-server) or at $LEASEHOLD_ETCD_BIN");
        return;
    };
    let started = Instant::now();
    let cluster = match Cluster::start(&bin, 3, Duration::from_secs(30)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("FAILED: could not start the etcd cluster: {e}");
            std::process::exit(1);
        }
    };
    println!("cluster of {} members up in {:.1?}: {:?}", cluster.len(), started.elapsed(), cluster.endpoints());
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("a tokio runtime");
    let mut ctx = Ctx { cluster, ns: 0 };
    let tests: Vec<(&str, Test)> = vec![
        ("modes_in_one_process", |c| Box::pin(modes_in_one_process(c))),
        ("try_and_timeout_leave_no_waiter_behind", |c| Box::pin(try_and_timeout_leave_no_waiter_behind(c))),
        ("the_hierarchy_in_one_process", |c| Box::pin(the_hierarchy_in_one_process(c))),
        ("generic_code_runs_on_both_backends", |c| Box::pin(generic_code_runs_on_both_backends(c))),
        ("a_waiter_whose_lease_is_gone_never_holds", |c| Box::pin(a_waiter_whose_lease_is_gone_never_holds(c))),
        ("exclusive_across_processes", |c| Box::pin(exclusive_across_processes(c))),
        ("shared_across_processes", |c| Box::pin(shared_across_processes(c))),
        ("semaphore_across_processes", |c| Box::pin(semaphore_across_processes(c))),
        ("paused_holder_loses_and_is_fenced", |c| Box::pin(paused_holder_loses_and_is_fenced(c))),
        ("killed_holder_frees_the_lock_after_its_ttl", |c| Box::pin(killed_holder_frees_the_lock_after_its_ttl(c))),
        ("killing_the_leader_keeps_the_lock", |c| Box::pin(killing_the_leader_keeps_the_lock(c))),
        ("partitioned_client_fails_fast", |c| Box::pin(partitioned_client_fails_fast(c))),
    ];
    let (mut passed, mut failed) = (0, 0);
    for (name, test) in tests {
        if filter.as_ref().is_some_and(|f| !name.contains(f.as_str())) {
            continue;
        }
        ctx.ns += 1;
        let t0 = Instant::now();
        let result = rt.block_on(async { tokio::time::timeout(Duration::from_secs(60), test(&mut ctx)).await });
        let result = result.unwrap_or_else(|_| Err("did not finish within 60 s".into()));
        match result {
            Ok(()) => {
                passed += 1;
                println!("test {name} ... ok ({:.1?})", t0.elapsed());
            }
            Err(e) => {
                failed += 1;
                println!("test {name} ... FAILED ({:.1?}): {e}", t0.elapsed());
            }
        }
    }
    drop(ctx);
    drop(rt);
    println!("cluster: {passed} passed, {failed} failed (in {:.1?})", started.elapsed());
    if failed > 0 {
        std::process::exit(1);
    }
}

type Test = for<'a> fn(&'a mut Ctx) -> Pin<Box<dyn Future<Output = Result<(), String>> + 'a>>;

struct Ctx {
    cluster: Cluster,
    /// Each test works in its own namespace, so tests sharing the cluster cannot meet.
    ns: u32,
}

impl Ctx {
    fn opts(&self) -> EtcdOptions {
        EtcdOptions { namespace: format!("leasehold-test/{}/", self.ns), ..EtcdOptions::default() }
    }

    async fn locks(&self) -> Result<EtcdLocks, String> {
        EtcdLocks::connect(self.cluster.endpoints(), self.opts()).await.map_err(|e| e.to_string())
    }

    /// Spawns this binary as a client process in `role`, with `vars` as its parameters.
    fn child(&self, role: &str, vars: &[(&str, String)]) -> Result<ChildProc, String> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let mut cmd = Command::new(exe);
        cmd.env(CHILD_ENV, role)
            .env("LH_ENDPOINTS", self.cluster.endpoints().join(","))
            .env("LH_NAMESPACE", self.opts().namespace)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in vars {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().map_err(|e| format!("spawn child: {e}"))?;
        let stdout = child.stdout.take().ok_or("no child stdout")?;
        let stdin = child.stdin.take();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(ChildProc { child, stdin, lines: rx })
    }
}

/// A client process and its output, line by line.
struct ChildProc {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
}

impl ChildProc {
    /// The next line, waiting at most `within` (on a blocking thread: the runtime stays free).
    async fn line(&mut self, within: Duration) -> Result<String, String> {
        let end = Instant::now() + within;
        loop {
            match self.lines.try_recv() {
                Ok(l) => return Ok(l),
                Err(mpsc::TryRecvError::Disconnected) => return Err("the child exited".into()),
                Err(mpsc::TryRecvError::Empty) if Instant::now() >= end => {
                    return Err(format!("no line from the child within {within:?}"))
                }
                Err(mpsc::TryRecvError::Empty) => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
    }

    /// Every line up to the child's exit, waiting at most `within` in all.
    async fn all_lines(&mut self, within: Duration) -> Result<Vec<String>, String> {
        let end = Instant::now() + within;
        let mut out = Vec::new();
        loop {
            match self.lines.try_recv() {
                Ok(l) => out.push(l),
                Err(mpsc::TryRecvError::Disconnected) => return Ok(out),
                Err(mpsc::TryRecvError::Empty) if Instant::now() >= end => {
                    return Err(format!("the child did not finish within {within:?}"))
                }
                Err(mpsc::TryRecvError::Empty) => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
    }

    fn say(&mut self, line: &str) -> Result<(), String> {
        let stdin = self.stdin.as_mut().ok_or("stdin closed")?;
        writeln!(stdin, "{line}").and_then(|()| stdin.flush()).map_err(|e| e.to_string())
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for ChildProc {
    fn drop(&mut self) {
        self.stdin = None;
        stop_child(&mut self.child, libc::SIGKILL, Duration::from_secs(2));
    }
}

fn check(cond: bool, what: impl FnOnce() -> String) -> Result<(), String> {
    if cond {
        Ok(())
    } else {
        Err(what())
    }
}

fn lock_err<T: std::fmt::Debug>(r: &Result<T, EtcdError>) -> Option<LockError> {
    r.as_ref().err().and_then(|e| e.lock_error().cloned())
}

// ---------------------------------------------------------------------------------------------
// In one process: the rules of the three modes, try and timeout.

async fn modes_in_one_process(ctx: &mut Ctx) -> Result<(), String> {
    let a = ctx.locks().await?;
    let b = ctx.locks().await?;
    let ttl = Duration::from_secs(5);

    // Exclusive: one holder; the next holder's token is larger.
    let g = a.exclusive("x").lease(ttl).try_acquire().await.map_err(|e| e.to_string())?;
    let r = b.exclusive("x").try_acquire().await;
    check(lock_err(&r) == Some(LockError::WouldBlock), || format!("second exclusive: {r:?}"))?;
    let first = g.token();
    g.release().await.map_err(|e| e.to_string())?;
    let g = b.exclusive("x").try_acquire().await.map_err(|e| e.to_string())?;
    check(g.token() > first, || format!("token {} after {}", g.token(), first))?;
    drop(g);

    // Shared: readers together; a writer waits for them; a reader after a queued writer waits too.
    let r1 = a.shared("s").try_acquire().await.map_err(|e| e.to_string())?;
    let r2 = b.shared("s").try_acquire().await.map_err(|e| e.to_string())?;
    let w = b.exclusive("s").try_acquire().await;
    check(lock_err(&w) == Some(LockError::WouldBlock), || format!("writer beside readers: {w:?}"))?;
    // The refused try has left the queue when it answered.
    wait_for_entries(&a, "s", 2).await?;
    let b2 = b.clone();
    let writer = tokio::spawn(async move { b2.exclusive("s").acquire_timeout(Duration::from_secs(10)).await });
    // The writer is queued once its key is in the range (observed, not slept for).
    wait_for_entries(&a, "s", 3).await?;
    let late = a.shared("s").try_acquire().await;
    check(lock_err(&late) == Some(LockError::WouldBlock), || format!("reader after a queued writer: {late:?}"))?;
    r1.release().await.map_err(|e| e.to_string())?;
    check(!writer.is_finished(), || "the writer got in beside a reader".into())?;
    r2.release().await.map_err(|e| e.to_string())?;
    let w = writer.await.map_err(|e| e.to_string())?.map_err(|e| e.to_string())?;
    check(w.mode() == Mode::Exclusive && w.is_held(), || "writer not held".into())?;
    drop(w);

    // Semaphore(2): two permits, a third waits; another permit count is refused.
    let p1 = a.semaphore("n", 2).try_acquire().await.map_err(|e| e.to_string())?;
    let p2 = b.semaphore("n", 2).try_acquire().await.map_err(|e| e.to_string())?;
    let p3 = a.semaphore("n", 2).try_acquire().await;
    check(lock_err(&p3) == Some(LockError::WouldBlock), || format!("third permit: {p3:?}"))?;
    let odd = a.semaphore("n", 3).try_acquire().await;
    check(lock_err(&odd) == Some(LockError::PermitMismatch { live: 2, requested: 3 }), || {
        format!("other permits: {odd:?}")
    })?;
    drop(p1);
    let p3 = a.semaphore("n", 2).acquire_timeout(Duration::from_secs(5)).await.map_err(|e| e.to_string())?;
    check(p3.token() > p2.token(), || "permit tokens not increasing".into())?;

    // Bad input: typed errors.
    let bad = a.semaphore("n0", 0).try_acquire().await;
    check(lock_err(&bad) == Some(LockError::InvalidPermits { permits: 0 }), || format!("{bad:?}"))?;
    let bad = a.exclusive("nul\0name").try_acquire().await;
    check(matches!(bad, Err(EtcdError::InvalidName { .. })), || format!("{bad:?}"))?;
    let bad = a.exclusive("z").lease(Duration::ZERO).try_acquire().await;
    check(lock_err(&bad) == Some(LockError::InvalidTtl { ttl: Duration::ZERO }), || format!("{bad:?}"))?;
    Ok(())
}

/// Intention modes over the cluster: two row writers' IX share a table key, a scan's S waits for
/// both, a reader's IS does not, and the scan gets in once the writers leave.
async fn the_hierarchy_in_one_process(ctx: &mut Ctx) -> Result<(), String> {
    let a = ctx.locks().await?;
    let b = ctx.locks().await?;
    let ix1 = a.request("t", Mode::IntentExclusive).try_acquire().await.map_err(|e| e.to_string())?;
    let ix2 = b.request("t", Mode::IntentExclusive).try_acquire().await.map_err(|e| e.to_string())?;
    let s = a.shared("t").try_acquire().await;
    check(lock_err(&s) == Some(LockError::WouldBlock), || format!("S beside IX: {s:?}"))?;
    let six = b.request("t", Mode::SharedIntentExclusive).try_acquire().await;
    check(lock_err(&six) == Some(LockError::WouldBlock), || format!("SIX beside IX: {six:?}"))?;
    let is = a.request("t", Mode::IntentShared).try_acquire().await.map_err(|e| e.to_string())?;
    check(is.mode() == Mode::IntentShared, || "IS mode".into())?;
    drop(is);
    wait_for_entries(&a, "t", 2).await?;
    let b2 = b.clone();
    let scan = tokio::spawn(async move { b2.shared("t").acquire_timeout(Duration::from_secs(10)).await });
    wait_for_entries(&a, "t", 3).await?;
    ix1.release().await.map_err(|e| e.to_string())?;
    check(!scan.is_finished(), || "the scan got in beside a row writer".into())?;
    ix2.release().await.map_err(|e| e.to_string())?;
    let g = scan.await.map_err(|e| e.to_string())?.map_err(|e| e.to_string())?;
    check(g.mode() == Mode::Shared && g.is_held(), || "scan not held".into())?;
    Ok(())
}

/// Waits (bounded) until the lock `name` has `n` waiter keys.
async fn wait_for_entries(locks: &EtcdLocks, name: &str, n: usize) -> Result<Vec<(Vec<u8>, i64)>, String> {
    let mut prefix = format!("{}{name}", locks.options().namespace).into_bytes();
    prefix.push(0);
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let resp = locks
            .client()
            .get(prefix.clone(), Some(etcd_client::GetOptions::new().with_prefix()))
            .await
            .map_err(|e| e.to_string())?;
        if resp.kvs().len() == n {
            return Ok(resp.kvs().iter().map(|kv| (kv.key().to_vec(), kv.lease())).collect());
        }
        if Instant::now() >= end {
            return Err(format!("lock {name} has {} waiter keys, expected {n}", resp.kvs().len()));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn try_and_timeout_leave_no_waiter_behind(ctx: &mut Ctx) -> Result<(), String> {
    let a = ctx.locks().await?;
    let held = a.exclusive("t").lease(Duration::from_secs(5)).try_acquire().await.map_err(|e| e.to_string())?;
    let t0 = Instant::now();
    let r = a.exclusive("t").acquire_timeout(Duration::from_millis(300)).await;
    let waited = t0.elapsed();
    check(lock_err(&r) == Some(LockError::TimedOut), || format!("timed acquire: {r:?}"))?;
    check(waited >= Duration::from_millis(300) && waited < Duration::from_secs(3), || {
        format!("timed out after {waited:?}")
    })?;
    let r = a.exclusive("t").try_acquire().await;
    check(lock_err(&r) == Some(LockError::WouldBlock), || format!("try: {r:?}"))?;
    // An acquire dropped mid-wait (here by a timeout around it) leaves the queue too.
    let dropped = tokio::time::timeout(Duration::from_millis(200), a.exclusive("t").acquire()).await;
    check(dropped.is_err(), || format!("the dropped acquire finished: {dropped:?}"))?;
    // The failed and dropped waiters' keys are gone (their leases revoked; the keep-alives
    // stopped): only the holder's remains.
    wait_for_entries(&a, "t", 1).await?;
    check(held.is_held(), || "holder lost".into())?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// One interface, two backends.

async fn generic_section<B: LockBackend>(locks: &B, key: &str) -> Result<(u64, u64), B::Error> {
    let g = locks
        .exclusive(key)
        .lease(Duration::from_secs(5))
        .owner("generic")
        .acquire_timeout(Duration::from_secs(5))
        .await?;
    assert!(g.is_held());
    assert_eq!(g.owner().map(|o| o.as_str().to_string()).as_deref(), Some("generic"));
    g.renew(Duration::from_secs(5)).await?;
    let first = g.token().as_u64();
    let busy = locks.exclusive(key).try_acquire().await.err();
    assert_eq!(busy.as_ref().and_then(|e| e.lock_error()), Some(&LockError::WouldBlock));
    g.release().await?;
    let second = locks.shared(key).acquire().await?;
    let t = second.token().as_u64();
    second.release().await?;
    Ok((first, t))
}

async fn generic_code_runs_on_both_backends(ctx: &mut Ctx) -> Result<(), String> {
    let local: LockManager<String> = LockManager::new();
    let (a, b) = generic_section(&local, "g").await.map_err(|e| e.to_string())?;
    check(b > a, || format!("in-process tokens {a} then {b}"))?;
    let etcd = ctx.locks().await?;
    let (a, b) = generic_section(&etcd, "g").await.map_err(|e| e.to_string())?;
    check(b > a, || format!("etcd tokens {a} then {b}"))?;
    Ok(())
}

/// etcd issue 11456: a waiter whose lease expired while it waited must not be told it holds.
async fn a_waiter_whose_lease_is_gone_never_holds(ctx: &mut Ctx) -> Result<(), String> {
    let a = ctx.locks().await?;
    let holder = a.exclusive("w").lease(Duration::from_secs(5)).try_acquire().await.map_err(|e| e.to_string())?;
    let a2 = a.clone();
    let waiter = tokio::spawn(async move {
        a2.exclusive("w").lease(Duration::from_secs(5)).acquire_timeout(Duration::from_secs(20)).await
    });
    let keys = wait_for_entries(&a, "w", 2).await?;
    let waiter_lease = keys.iter().map(|(_, l)| *l).find(|&l| l != holder.lease_id()).ok_or("no waiter lease")?;
    a.client().lease_revoke(waiter_lease).await.map_err(|e| e.to_string())?;
    holder.release().await.map_err(|e| e.to_string())?;
    let r = waiter.await.map_err(|e| e.to_string())?;
    check(lock_err(&r) == Some(LockError::Expired), || format!("the waiter whose lease was revoked got {r:?}"))?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Several client processes.

/// One critical section as a child saw it: [enter, exit] on the machine's monotonic clock.
#[derive(Debug, Clone)]
struct Section {
    child: usize,
    enter: u64,
    exit: u64,
    token: u64,
    mode: char,
}

async fn run_cyclers(ctx: &Ctx, lock: &str, modes: &[&str], iters: u32, hold_ms: u64) -> Result<Vec<Section>, String> {
    let mut children = Vec::new();
    for m in modes {
        children.push(ctx.child(
            "cycle",
            &[
                ("LH_LOCK", lock.to_string()),
                ("LH_MODE", m.to_string()),
                ("LH_ITERS", iters.to_string()),
                ("LH_HOLD_MS", hold_ms.to_string()),
            ],
        )?);
    }
    let mut sections = Vec::new();
    for (i, c) in children.iter_mut().enumerate() {
        let lines = c.all_lines(Duration::from_secs(40)).await?;
        let mut open: Option<(u64, u64)> = None;
        let mut done = false;
        for l in &lines {
            let f: Vec<&str> = l.split_whitespace().collect();
            match f.as_slice() {
                ["E", t, tok] => open = Some((t.parse().map_err(|_| l.clone())?, tok.parse().map_err(|_| l.clone())?)),
                ["X", t] => {
                    let (enter, token) = open.take().ok_or("exit without enter")?;
                    let mode = modes[i].chars().next().unwrap_or('?');
                    sections.push(Section { child: i, enter, exit: t.parse().map_err(|_| l.clone())?, token, mode });
                }
                ["DONE"] => done = true,
                _ => return Err(format!("child {i}: {l}")),
            }
        }
        check(done, || format!("child {i} did not finish: {lines:?}"))?;
    }
    check(sections.len() == modes.len() * iters as usize, || format!("{} sections", sections.len()))?;
    Ok(sections)
}

/// The most sections open at once, and whether a section of mode 'x' ever overlapped another.
fn overlaps(sections: &[Section]) -> (usize, bool) {
    let mut most = 0;
    let mut writer_beside = false;
    for s in sections {
        let beside: Vec<&Section> = sections.iter().filter(|o| o.enter <= s.enter && s.enter < o.exit).collect();
        most = most.max(beside.len());
        if beside.len() > 1 && beside.iter().any(|o| o.mode == 'x') {
            writer_beside = true;
        }
    }
    (most, writer_beside)
}

async fn exclusive_across_processes(ctx: &mut Ctx) -> Result<(), String> {
    let mut s = run_cyclers(ctx, "ex", &["x", "x", "x"], 8, 10).await?;
    let (most, _) = overlaps(&s);
    check(most == 1, || format!("{most} exclusive holders at once"))?;
    s.sort_by_key(|x| x.enter);
    check(s.windows(2).all(|w| w[0].token < w[1].token), || "tokens not increasing in holding order".into())?;
    check(s.iter().map(|x| x.child).collect::<std::collections::HashSet<_>>().len() == 3, || {
        "not every process held".into()
    })?;
    Ok(())
}

async fn shared_across_processes(ctx: &mut Ctx) -> Result<(), String> {
    let s = run_cyclers(ctx, "rw", &["x", "s", "s", "x"], 8, 15).await?;
    let (_, writer_beside) = overlaps(&s);
    check(!writer_beside, || "a writer held beside another holder".into())?;
    // Tokens of the writers increase with their holding order, readers' included between them.
    let mut w: Vec<&Section> = s.iter().filter(|x| x.mode == 'x').collect();
    w.sort_by_key(|x| x.enter);
    check(w.windows(2).all(|p| p[0].token < p[1].token), || "writer tokens not increasing".into())?;
    Ok(())
}

async fn semaphore_across_processes(ctx: &mut Ctx) -> Result<(), String> {
    let s = run_cyclers(ctx, "sem", &["n2", "n2", "n2", "n2"], 8, 15).await?;
    let (most, _) = overlaps(&s);
    check(most <= 2, || format!("{most} permits of 2 held at once"))?;
    println!("    (most permits held at once: {most})");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Loss, fencing, faults.

async fn paused_holder_loses_and_is_fenced(ctx: &mut Ctx) -> Result<(), String> {
    let ttl_ms = 2000u64;
    let mut a = ctx.child("hold", &[("LH_LOCK", "fence".into()), ("LH_TTL_MS", ttl_ms.to_string())])?;
    let line = a.line(Duration::from_secs(15)).await?;
    let token_a: u64 =
        line.strip_prefix("ACQUIRED ").and_then(|t| t.parse().ok()).ok_or(format!("holder said {line:?}"))?;
    send(a.pid(), libc::SIGSTOP);
    // A second process acquires once the paused holder's lease has expired on the server.
    let mut b = ctx.child(
        "acquire",
        &[("LH_LOCK", "fence".into()), ("LH_TIMEOUT_MS", "15000".into()), ("LH_VALUE", "B".into())],
    )?;
    let line = b.line(Duration::from_secs(20)).await?;
    let mut f = line.split_whitespace().skip(1);
    let token_b: u64 = f.next().and_then(|t| t.parse().ok()).ok_or(format!("second said {line:?}"))?;
    let waited_ms: u64 = f.next().and_then(|t| t.parse().ok()).ok_or(format!("second said {line:?}"))?;
    check(token_b > token_a, || format!("token {token_b} after {token_a}"))?;
    check(waited_ms + 200 >= ttl_ms / 2, || {
        format!("the second acquired after {waited_ms} ms, before the paused lease could expire")
    })?;
    let fenced = b.line(Duration::from_secs(10)).await?;
    check(fenced == "FENCED ok", || format!("second's fenced write: {fenced}"))?;
    // Resume the first: its guard must report the loss and its fenced write be refused.
    send(a.pid(), libc::SIGCONT);
    a.say("GO")?;
    let report = a.all_lines(Duration::from_secs(15)).await?;
    check(report.iter().any(|l| l == "HELD false"), || format!("resumed holder: {report:?}"))?;
    check(report.iter().any(|l| l == "FENCED refused"), || format!("resumed holder: {report:?}"))?;
    check(report.iter().any(|l| l == "LOST true"), || format!("resumed holder: {report:?}"))?;
    check(report.iter().any(|l| l == "RELEASE expired"), || format!("resumed holder: {report:?}"))?;
    // What etcd holds is the second holder's write.
    let locks = ctx.locks().await?;
    let v = locks.client().get(format!("{}data", locks.options().namespace), None).await.map_err(|e| e.to_string())?;
    check(v.kvs().first().map(|kv| kv.value()) == Some(b"B".as_slice()), || {
        format!("fenced key holds {:?}", v.kvs().first().map(|kv| kv.value().to_vec()))
    })?;
    // And a local resource fenced with the etcd tokens refuses the stale one, unchanged.
    let resource = Fenced::new(0u32);
    resource.write(leasehold::FenceToken::from_u64(token_b), |v| *v = 2).map_err(|e| e.to_string())?;
    let stale = resource.write(leasehold::FenceToken::from_u64(token_a), |v| *v = 1);
    check(matches!(stale, Err(LockError::StaleToken { .. })) && resource.read(|v| *v) == 2, || {
        format!("stale write: {stale:?}")
    })?;
    Ok(())
}

async fn killed_holder_frees_the_lock_after_its_ttl(ctx: &mut Ctx) -> Result<(), String> {
    let ttl_ms = 2000u64;
    let mut a = ctx.child("hold", &[("LH_LOCK", "dies".into()), ("LH_TTL_MS", ttl_ms.to_string())])?;
    let line = a.line(Duration::from_secs(15)).await?;
    check(line.starts_with("ACQUIRED "), || format!("holder said {line:?}"))?;
    let locks = ctx.locks().await?;
    let busy = locks.exclusive("dies").try_acquire().await;
    check(lock_err(&busy) == Some(LockError::WouldBlock), || format!("while the holder lives: {busy:?}"))?;
    send(a.pid(), libc::SIGKILL);
    let t0 = Instant::now();
    let g = locks.exclusive("dies").acquire_timeout(Duration::from_secs(15)).await.map_err(|e| e.to_string())?;
    let waited = t0.elapsed();
    check(waited < Duration::from_millis(ttl_ms * 2 + 2000), || format!("freed only after {waited:?}"))?;
    check(g.is_held(), || "not held".into())?;
    println!("    (freed {waited:.1?} after the holder was killed; its TTL was {ttl_ms} ms)");
    Ok(())
}

async fn killing_the_leader_keeps_the_lock(ctx: &mut Ctx) -> Result<(), String> {
    let leader = ctx.cluster.leader().ok_or("no leader found")?;
    let r = leader_killed_mid_hold(ctx, leader).await;
    // Whatever happened, the next tests get the whole cluster back.
    ctx.cluster.restart_member(leader, Duration::from_secs(20))?;
    r
}

async fn leader_killed_mid_hold(ctx: &mut Ctx, leader: usize) -> Result<(), String> {
    let locks = ctx.locks().await?;
    let ttl = Duration::from_secs(3);
    let g = locks.exclusive("lead").lease(ttl).try_acquire().await.map_err(|e| e.to_string())?;
    ctx.cluster.stop_member(leader, libc::SIGKILL);
    // Past two TTLs without the leader: the keep-alives moved to the new leader.
    let end = Instant::now() + ttl * 2;
    while Instant::now() < end {
        check(g.is_held(), || format!("lost the lock {:?} after the leader was killed", end - Instant::now()))?;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let other = locks.exclusive("lead").try_acquire().await;
    check(lock_err(&other) == Some(LockError::WouldBlock), || {
        format!("second holder after the leader died: {other:?}")
    })?;
    let token = g.token();
    g.release().await.map_err(|e| e.to_string())?;
    let next = locks.exclusive("lead").acquire_timeout(Duration::from_secs(5)).await.map_err(|e| e.to_string())?;
    check(next.token() > token, || "token did not grow".into())?;
    next.release().await.map_err(|e| e.to_string())?;
    Ok(())
}

async fn partitioned_client_fails_fast(ctx: &mut Ctx) -> Result<(), String> {
    let k = 2;
    let r = cut_off_from_member(ctx, k).await;
    ctx.cluster.restart_member(k, Duration::from_secs(20))?;
    r
}

async fn cut_off_from_member(ctx: &mut Ctx, k: usize) -> Result<(), String> {
    let opts = EtcdOptions {
        op_timeout: Duration::from_millis(1500),
        attempt_timeout: Duration::from_millis(500),
        breaker_threshold: 2,
        ..ctx.opts()
    };
    let cut = EtcdLocks::connect([ctx.cluster.endpoint(k)], opts).await.map_err(|e| e.to_string())?;
    cut.exclusive("p")
        .try_acquire()
        .await
        .map_err(|e| format!("before the partition: {e}"))?
        .release()
        .await
        .map_err(|e| e.to_string())?;
    ctx.cluster.stop_member(k, libc::SIGTERM);
    let mut outcomes = Vec::new();
    for _ in 0..3 {
        let t0 = Instant::now();
        let r = cut.exclusive("p").acquire_timeout(Duration::from_secs(30)).await;
        outcomes.push((r.err(), t0.elapsed()));
    }
    // The first two run into the bound; then the circuit is open and refuses at once.
    for (e, took) in &outcomes[..2] {
        check(matches!(e, Some(EtcdError::Unavailable { .. })), || format!("partitioned acquire: {e:?}"))?;
        check(*took < Duration::from_secs(3), || format!("took {took:?}"))?;
    }
    let (e, took) = &outcomes[2];
    check(matches!(e, Some(EtcdError::CircuitOpen { .. })), || format!("third call: {e:?}"))?;
    check(*took < Duration::from_millis(50), || format!("open circuit took {took:?}"))?;
    // The rest of the cluster is unaffected.
    let whole = ctx.locks().await?;
    let g = whole.exclusive("p").try_acquire().await.map_err(|e| format!("majority side: {e}"))?;
    g.release().await.map_err(|e| e.to_string())?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The client processes.

mod child {
    use super::*;

    fn var(name: &str) -> String {
        std::env::var(name).unwrap_or_default()
    }

    fn mono_ns() -> u64 {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        #[allow(unsafe_code)]
        // SAFETY: clock_gettime writes one timespec through a valid pointer.
        unsafe {
            libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts);
        }
        ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
    }

    fn mode() -> Mode {
        match var("LH_MODE").as_str() {
            "s" => Mode::Shared,
            m if m.starts_with('n') => Mode::Semaphore(m[1..].parse().unwrap_or(1)),
            _ => Mode::Exclusive,
        }
    }

    pub fn run(role: &str) -> i32 {
        let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build() {
            Ok(rt) => rt,
            Err(e) => {
                println!("ERROR runtime: {e}");
                return 2;
            }
        };
        let r = rt.block_on(async {
            let endpoints: Vec<String> = var("LH_ENDPOINTS").split(',').map(str::to_string).collect();
            let opts = EtcdOptions { namespace: var("LH_NAMESPACE"), ..EtcdOptions::default() };
            let locks = EtcdLocks::connect(endpoints, opts).await.map_err(|e| e.to_string())?;
            match role {
                "cycle" => cycle(&locks).await,
                "hold" => hold(&locks).await,
                "acquire" => acquire(&locks).await,
                other => Err(format!("unknown role {other}")),
            }
        });
        match r {
            Ok(()) => 0,
            Err(e) => {
                println!("ERROR {e}");
                1
            }
        }
    }

    async fn cycle(locks: &EtcdLocks) -> Result<(), String> {
        let lock = var("LH_LOCK");
        let iters: u32 = var("LH_ITERS").parse().unwrap_or(1);
        let hold = Duration::from_millis(var("LH_HOLD_MS").parse().unwrap_or(10));
        let spec = leasehold::LockSpec::new(mode()).lease(Duration::from_secs(5));
        for _ in 0..iters {
            let g = locks
                .acquire_with(&lock, spec.clone(), leasehold::Wait::Timeout(Duration::from_secs(30)))
                .await
                .map_err(|e| e.to_string())?;
            println!("E {} {}", mono_ns(), g.token().as_u64());
            tokio::time::sleep(hold).await;
            println!("X {}", mono_ns());
            g.release().await.map_err(|e| e.to_string())?;
        }
        println!("DONE");
        Ok(())
    }

    async fn hold(locks: &EtcdLocks) -> Result<(), String> {
        let ttl = Duration::from_millis(var("LH_TTL_MS").parse().unwrap_or(2000));
        let g = locks.exclusive(&var("LH_LOCK")).lease(ttl).try_acquire().await.map_err(|e| e.to_string())?;
        println!("ACQUIRED {}", g.token().as_u64());
        // Wait for the parent's word (after a SIGSTOP and SIGCONT, perhaps) on a blocking thread.
        let word = tokio::task::spawn_blocking(|| {
            let mut l = String::new();
            std::io::stdin().read_line(&mut l).map(|_| l)
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
        if word.trim() != "GO" {
            return Ok(());
        }
        println!("HELD {}", g.is_held());
        match locks.fenced_put(&g, format!("{}data", locks.options().namespace), "A").await {
            Ok(()) => println!("FENCED ok"),
            Err(EtcdError::FenceRejected { .. }) => println!("FENCED refused"),
            Err(e) => println!("FENCED error {e}"),
        }
        let lost = tokio::time::timeout(Duration::from_secs(3), g.lost()).await.is_ok();
        println!("LOST {lost}");
        match g.release().await {
            Ok(()) => println!("RELEASE ok"),
            Err(EtcdError::Lock(LockError::Expired)) => println!("RELEASE expired"),
            Err(e) => println!("RELEASE error {e}"),
        }
        Ok(())
    }

    async fn acquire(locks: &EtcdLocks) -> Result<(), String> {
        let timeout = Duration::from_millis(var("LH_TIMEOUT_MS").parse().unwrap_or(10_000));
        let t0 = Instant::now();
        let g = locks
            .exclusive(&var("LH_LOCK"))
            .lease(Duration::from_secs(5))
            .acquire_timeout(timeout)
            .await
            .map_err(|e| e.to_string())?;
        println!("ACQUIRED {} {}", g.token().as_u64(), t0.elapsed().as_millis());
        match locks.fenced_put(&g, format!("{}data", locks.options().namespace), var("LH_VALUE")).await {
            Ok(()) => println!("FENCED ok"),
            Err(e) => println!("FENCED error {e}"),
        }
        g.release().await.map_err(|e| e.to_string())?;
        println!("DONE");
        Ok(())
    }
}
