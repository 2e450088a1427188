//! A three-member etcd cluster for the tests and the benchmark: loopback ports only, data in a
//! temporary directory, started and waited for here, stopped (SIGTERM, then SIGKILL after a
//! bound) when dropped. Every wait is bounded.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The `etcd` binary: `$LEASEHOLD_ETCD_BIN`, or `etcd` on the PATH.
pub fn etcd_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("LEASEHOLD_ETCD_BIN") {
        let p = PathBuf::from(p);
        return p.is_file().then_some(p);
    }
    std::env::split_paths(&std::env::var_os("PATH")?).map(|d| d.join("etcd")).find(|p| p.is_file())
}

struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    data_dir: PathBuf,
    child: Option<Child>,
}

/// A running cluster.
pub struct Cluster {
    bin: PathBuf,
    dir: PathBuf,
    initial: String,
    members: Vec<Member>,
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn temp_root() -> PathBuf {
    // tmpfs when there is one: etcd fsyncs every commit, and the tests measure locks, not disks.
    let shm = Path::new("/dev/shm");
    if shm.is_dir() && std::fs::metadata(shm).map(|m| !m.permissions().readonly()).unwrap_or(false) {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

impl Cluster {
    /// Starts `n` members and waits (at most `within`) until every one reports healthy.
    pub fn start(bin: &Path, n: usize, within: Duration) -> Result<Cluster, String> {
        let dir = temp_root().join(format!(
            "leasehold-etcd-{}-{}",
            std::process::id(),
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos())
        ));
        std::fs::create_dir_all(&dir).map_err(|e| format!("temp dir {}: {e}", dir.display()))?;
        let mut members = Vec::new();
        for i in 0..n {
            members.push(Member {
                name: format!("m{i}"),
                client_port: free_port().map_err(|e| e.to_string())?,
                peer_port: free_port().map_err(|e| e.to_string())?,
                data_dir: dir.join(format!("m{i}")),
                child: None,
            });
        }
        let initial = members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = Cluster { bin: bin.to_path_buf(), dir, initial, members };
        for i in 0..n {
            cluster.spawn(i)?;
        }
        cluster.wait_healthy(within)?;
        Ok(cluster)
    }

    fn spawn(&mut self, i: usize) -> Result<(), String> {
        let m = &self.members[i];
        let log = std::fs::File::create(self.dir.join(format!("{}.log", m.name))).map_err(|e| e.to_string())?;
        let client = format!("http://127.0.0.1:{}", m.client_port);
        let peer = format!("http://127.0.0.1:{}", m.peer_port);
        let mut cmd = Command::new(&self.bin);
        #[cfg(target_os = "linux")]
        {
            use std::os::unix::process::CommandExt;
            #[allow(unsafe_code)]
            // SAFETY: between fork and exec only prctl(2), which is async-signal-safe, is called.
            // A member dies with the process that started it, even one killed without unwinding
            // (SIGKILL from a timeout), so no etcd outlives its test run.
            unsafe {
                cmd.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    Ok(())
                });
            }
        }
        let child = cmd
            .args(["--name", &m.name])
            .arg("--data-dir")
            .arg(&m.data_dir)
            .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &self.initial, "--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", "leasehold-test"])
            // Elections in half a second: a killed leader is replaced well within a lease's TTL.
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .args(["--log-level", "warn", "--logger", "zap"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", self.bin.display()))?;
        self.members[i].child = Some(child);
        Ok(())
    }

    /// `127.0.0.1:port` of every member.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| format!("127.0.0.1:{}", m.client_port)).collect()
    }

    /// `127.0.0.1:port` of member `i`.
    pub fn endpoint(&self, i: usize) -> String {
        format!("127.0.0.1:{}", self.members[i].client_port)
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether member `i` answers `/health` with a healthy cluster behind it.
    pub fn is_healthy(&self, i: usize) -> bool {
        http_get(self.members[i].client_port, "/health").is_some_and(|body| body.contains("\"health\":\"true\""))
    }

    /// Waits (at most `within`) until every running member is healthy.
    pub fn wait_healthy(&self, within: Duration) -> Result<(), String> {
        let end = Instant::now() + within;
        loop {
            let sick: Vec<usize> =
                (0..self.members.len()).filter(|&i| self.members[i].child.is_some() && !self.is_healthy(i)).collect();
            if sick.is_empty() {
                return Ok(());
            }
            if Instant::now() >= end {
                return Err(format!("members {sick:?} not healthy within {within:?}; logs in {}", self.dir.display()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The index of the member that is the Raft leader, if one says it is.
    pub fn leader(&self) -> Option<usize> {
        (0..self.members.len()).find(|&i| {
            self.members[i].child.is_some()
                && http_get(self.members[i].client_port, "/metrics")
                    .is_some_and(|b| b.lines().any(|l| l.trim() == "etcd_server_is_leader 1"))
        })
    }

    /// Sends `signal` to member `i` and waits (bounded) for it to exit; SIGKILL after the bound.
    pub fn stop_member(&mut self, i: usize, signal: i32) {
        if let Some(mut child) = self.members[i].child.take() {
            stop_child(&mut child, signal, Duration::from_secs(5));
        }
    }

    /// Starts member `i` again on its data and waits (bounded) for the cluster to be healthy.
    pub fn restart_member(&mut self, i: usize, within: Duration) -> Result<(), String> {
        if self.members[i].child.is_none() {
            self.spawn(i)?;
        }
        self.wait_healthy(within)
    }

    pub fn pid(&self, i: usize) -> Option<u32> {
        self.members[i].child.as_ref().map(|c| c.id())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for m in &mut self.members {
            if let Some(child) = m.child.as_mut() {
                send(child.id(), libc::SIGTERM);
            }
        }
        for m in &mut self.members {
            if let Some(mut child) = m.child.take() {
                stop_child(&mut child, libc::SIGTERM, Duration::from_secs(5));
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn send(pid: u32, signal: i32) {
    #[allow(unsafe_code)]
    // SAFETY: kill(2) on a pid of a child this process started and has not reaped.
    unsafe {
        libc::kill(pid as libc::pid_t, signal);
    }
}

/// Signals `child`, waits up to `bound` for it to exit, then kills it.
pub fn stop_child(child: &mut Child, signal: i32, bound: Duration) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    send(child.id(), signal);
    let end = Instant::now() + bound;
    while Instant::now() < end {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// A bounded plain-HTTP GET on loopback; the body, or `None`.
fn http_get(port: u16, path: &str) -> Option<String> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(300)).ok()?;
    s.set_read_timeout(Some(Duration::from_millis(1000))).ok()?;
    s.set_write_timeout(Some(Duration::from_millis(300))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.").then(|| body.to_string())
}
