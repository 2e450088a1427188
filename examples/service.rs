//! A service that exposes its lock manager to operators: `/metrics` in the Prometheus text format,
//! `/locks` as a table of who holds what, `/wait-graph` as Graphviz DOT (who waits for whom among
//! sessions) and `/deadlocks` (the most recent ones), served over HTTP on loopback while worker
//! threads take locks (some with leases that a "hung" worker lets run out, and two transfer
//! sessions that take two accounts in opposite orders, so deadlocks happen and are broken).
//!
//! `cargo run --release --example service -- [seconds]` (default 3): serves on 127.0.0.1 for that
//! long, fetches both endpoints itself and prints them, then stops. Point curl at the printed
//! address meanwhile to look for yourself.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use leasehold::{LockInfo, LockManager};

fn main() -> std::io::Result<()> {
    let seconds: u64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(3);
    let locks: Arc<LockManager<String>> = Arc::new(LockManager::new());
    let stop = Arc::new(AtomicBool::new(false));

    // Workers: each takes order locks with a lease and an owner label; one in twenty "hangs"
    // past its lease, so its lock expires and a contender takes over.
    let mut workers = Vec::new();
    for w in 0..4 {
        let (locks, stop) = (Arc::clone(&locks), Arc::clone(&stop));
        workers.push(thread::spawn(move || {
            let owner = format!("worker-{w}");
            let mut n = w as u64;
            while !stop.load(Ordering::Relaxed) {
                n = n.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let key = format!("orders/{}", (n >> 33) % 8);
                let lease = Duration::from_millis(20);
                match locks
                    .exclusive(&key)
                    .lease(lease)
                    .owner(owner.as_str())
                    .acquire_timeout(Duration::from_millis(50))
                {
                    Ok(g) if (n >> 20) % 20 == 0 => {
                        thread::sleep(lease * 2); // hung past the lease
                        drop(g);
                    }
                    Ok(g) => {
                        thread::sleep(Duration::from_micros(200));
                        drop(g);
                    }
                    Err(_) => {}
                }
                // Readers of a shared config, and a connection pool.
                let _cfg = locks.shared("config").acquire();
                let _conn = locks.semaphore("db-pool", 2).acquire_timeout(Duration::from_millis(5));
            }
        }));
    }

    // Transfers: each a session taking two accounts in opposite orders; a deadlock fails one of
    // them (the requester), which aborts (drops what it holds) and tries again.
    for w in 0..2 {
        let (locks, stop) = (Arc::clone(&locks), Arc::clone(&stop));
        workers.push(thread::spawn(move || {
            let (first, second) = if w == 0 { ("accounts/a", "accounts/b") } else { ("accounts/b", "accounts/a") };
            let tx = locks.session(format!("transfer-{w}"));
            while !stop.load(Ordering::Relaxed) {
                let Ok(one) = tx.exclusive(first).acquire() else { continue };
                thread::sleep(Duration::from_micros(100));
                let two = tx.exclusive(second).acquire();
                drop((two, one));
            }
        }));
    }

    let listener = TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    println!("serving /metrics, /locks, /wait-graph and /deadlocks on http://{addr} for {seconds} s");
    let server = {
        let (locks, stop) = (Arc::clone(&locks), Arc::clone(&stop));
        thread::spawn(move || serve(&listener, &locks, &stop))
    };

    thread::sleep(
        Duration::from_secs(seconds).saturating_sub(Duration::from_millis(500)).max(Duration::from_millis(300)),
    );
    println!("\n$ GET /locks\n{}", get(&addr.to_string(), "/locks")?);
    println!("$ GET /wait-graph\n{}", get(&addr.to_string(), "/wait-graph")?);
    println!("$ GET /deadlocks (the last three)");
    let deadlocks = get(&addr.to_string(), "/deadlocks")?;
    for line in deadlocks.lines().rev().take(3) {
        println!("{line}");
    }
    let metrics = get(&addr.to_string(), "/metrics")?;
    println!("$ GET /metrics (counters and gauges)");
    for line in metrics.lines().filter(|l| !l.starts_with('#') && !l.contains("_bucket")) {
        println!("{line}");
    }

    stop.store(true, Ordering::Relaxed);
    for w in workers {
        let _ = w.join();
    }
    let _ = server.join();
    Ok(())
}

/// Answers GET /metrics and GET /locks until `stop` (loopback only, one request per connection).
fn serve(listener: &TcpListener, locks: &LockManager<String>, stop: &AtomicBool) {
    let started = Instant::now();
    while !stop.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(600) {
        let Ok((stream, _)) = listener.accept() else {
            thread::sleep(Duration::from_millis(5));
            continue;
        };
        let _ = answer(stream, locks);
    }
}

fn answer(mut stream: TcpStream, locks: &LockManager<String>) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut request = String::new();
    BufReader::new(&stream).read_line(&mut request)?;
    let path = request.split_whitespace().nth(1).unwrap_or("/");
    let (status, body) = match path {
        "/metrics" => ("200 OK", locks.metrics().to_prometheus()),
        "/locks" => ("200 OK", table(&locks.snapshot(), locks.now())),
        "/wait-graph" => ("200 OK", locks.wait_graph().to_dot()),
        "/deadlocks" => ("200 OK", locks.deadlocks().iter().map(|c| format!("{c}\n")).collect()),
        _ => ("404 Not Found", "try /metrics, /locks, /wait-graph or /deadlocks\n".to_owned()),
    };
    write!(stream, "HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())
}

/// The snapshot as a fixed-width table: one line per holder or waiter.
fn table(snapshot: &[LockInfo<String>], now: Duration) -> String {
    let mut rows = vec![format!(
        "{:<12} {:<14} {:>6} {:<10} {:>10} {:>11}",
        "key", "state", "token", "owner", "held for", "expires in"
    )];
    let mut sorted: Vec<_> = snapshot.iter().collect();
    sorted.sort_by(|a, b| a.key.cmp(&b.key));
    for info in sorted {
        for h in &info.holders {
            let held = h.acquired_at.map_or("-".into(), |t| format!("{:?}", now.saturating_sub(t)));
            let left = h.expires_at.map_or("-".into(), |t| format!("{:?}", t.saturating_sub(now)));
            let owner = h.owner.as_ref().map_or("-", |o| o.as_str());
            rows.push(format!(
                "{:<12} {:<14} {:>6} {:<10} {:>10} {:>11}",
                info.key,
                format!("held {}", h.mode),
                h.token.as_u64(),
                owner,
                held,
                left
            ));
        }
        for w in &info.waiters {
            let owner = w.owner.as_ref().map_or("-", |o| o.as_str());
            rows.push(format!(
                "{:<12} {:<14} {:>6} {:<10} {:>10} {:>11}",
                info.key,
                format!("waits {}", w.mode),
                "",
                owner,
                format!("{:?}", w.waited),
                "-"
            ));
        }
    }
    rows.join("\n") + "\n"
}

/// A plain HTTP GET over loopback.
fn get(addr: &str, path: &str) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(response.split_once("\r\n\r\n").map_or(response.clone(), |(_, body)| body.to_owned()))
}
