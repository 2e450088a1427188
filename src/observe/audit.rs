//! An audit trail: lock events as JSON lines in an append-only file.

#![deny(unsafe_code)]

use crate::primitives::sync::untracked::{AtomicBool, AtomicU64, Ordering};
use std::fmt::{self, Display, Write as _};
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::observe::events::{EventReceiver, LockEvent};

/// How often the audit file is flushed at most (and on stop and drop).
pub const DEFAULT_FLUSH_INTERVAL: Duration = Duration::from_millis(200);

/// Writes every event of a subscription to a file, one JSON object per line, on its own thread:
///
/// ```text
/// {"at_ns":1200,"event":"acquired","key":"orders/17","mode":"exclusive","token":5,"owner":"worker-3"}
/// ```
///
/// The file is opened for appending; it is flushed at least every flush interval and when the log
/// is stopped or dropped, so who held what and when can be read back later.
///
/// # Examples
///
/// ```
/// use leasehold::{AuditLog, LockManager};
/// let dir = std::env::temp_dir().join(format!("leasehold-audit-doc-{}", std::process::id()));
/// std::fs::create_dir_all(&dir)?;
/// let path = dir.join("locks.jsonl");
/// let locks: LockManager<String> = LockManager::new();
/// let audit = AuditLog::start(locks.subscribe(1024), &path)?;
/// drop(locks.exclusive("orders/17").owner("worker-3").try_acquire());
/// assert_eq!(audit.stop()?, 2);
/// let text = std::fs::read_to_string(&path)?;
/// assert!(text.lines().next().unwrap().contains(r#""event":"acquired","key":"orders/17""#));
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct AuditLog {
    stop: Arc<AtomicBool>,
    written: Arc<AtomicU64>,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuditLog").field("written", &self.written.load(Ordering::Relaxed)).finish()
    }
}

impl AuditLog {
    /// Starts writing `events` to `path` (appending), flushing at least every 200 ms.
    ///
    /// # Errors
    ///
    /// If the file cannot be opened or the writer thread cannot start.
    ///
    /// # Examples
    ///
    /// ```
    /// let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
    /// let path = std::env::temp_dir().join(format!("leasehold-start-{}.jsonl", std::process::id()));
    /// let audit = leasehold::AuditLog::start(locks.subscribe(256), &path)?;
    /// drop(locks.exclusive(&1).try_acquire());
    /// audit.stop()?;
    /// # std::fs::remove_file(&path)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn start<K: Display + Send + 'static>(
        events: EventReceiver<K>,
        path: impl AsRef<Path>,
    ) -> io::Result<AuditLog> {
        Self::with_flush_interval(events, path, DEFAULT_FLUSH_INTERVAL)
    }

    /// [`start`](AuditLog::start) with another flush interval.
    ///
    /// # Errors
    ///
    /// If the file cannot be opened or the writer thread cannot start.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
    /// let path = std::env::temp_dir().join(format!("leasehold-flush-{}.jsonl", std::process::id()));
    /// let audit = leasehold::AuditLog::with_flush_interval(locks.subscribe(256), &path, Duration::from_millis(10))?;
    /// # drop(audit);
    /// # std::fs::remove_file(&path)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn with_flush_interval<K: Display + Send + 'static>(
        events: EventReceiver<K>,
        path: impl AsRef<Path>,
        flush_every: Duration,
    ) -> io::Result<AuditLog> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let stop = Arc::new(AtomicBool::new(false));
        let written = Arc::new(AtomicU64::new(0));
        let (stop2, written2) = (Arc::clone(&stop), Arc::clone(&written));
        let thread = std::thread::Builder::new()
            .name("leasehold-audit".into())
            .spawn(move || run(events, file, flush_every, &stop2, &written2))?;
        Ok(AuditLog { stop, written, thread: Some(thread) })
    }

    /// Lines written so far.
    ///
    /// # Examples
    ///
    /// ```
    /// let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
    /// let path = std::env::temp_dir().join(format!("leasehold-written-{}.jsonl", std::process::id()));
    /// let audit = leasehold::AuditLog::start(locks.subscribe(256), &path)?;
    /// assert_eq!(audit.written(), 0);
    /// # drop(audit);
    /// # std::fs::remove_file(&path)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    /// Writes what is queued, flushes, stops, and returns the number of lines written.
    ///
    /// # Errors
    ///
    /// The first write or flush error the writer met.
    ///
    /// # Examples
    ///
    /// ```
    /// let locks: leasehold::LockManager<u64> = leasehold::LockManager::new();
    /// let path = std::env::temp_dir().join(format!("leasehold-stop-{}.jsonl", std::process::id()));
    /// let audit = leasehold::AuditLog::start(locks.subscribe(256), &path)?;
    /// drop(locks.shared(&1).try_acquire());
    /// assert_eq!(audit.stop()?, 2); // acquired, released
    /// # std::fs::remove_file(&path)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn stop(mut self) -> io::Result<u64> {
        self.finish()?;
        Ok(self.written())
    }

    fn finish(&mut self) -> io::Result<()> {
        self.stop.store(true, Ordering::SeqCst);
        match self.thread.take() {
            Some(t) => t.join().unwrap_or_else(|_| Err(io::Error::other("the audit writer panicked"))),
            None => Ok(()),
        }
    }
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        // Errors cannot be reported from drop; `stop` reports them.
        let _ = self.finish();
    }
}

fn run<K: Display>(
    events: EventReceiver<K>,
    file: File,
    flush_every: Duration,
    stop: &AtomicBool,
    written: &AtomicU64,
) -> io::Result<()> {
    let mut out = BufWriter::new(file);
    let mut line = String::new();
    let mut last_flush = Instant::now();
    let mut dirty = false;
    loop {
        let stopping = stop.load(Ordering::SeqCst);
        // Wait for an event, but never past the next flush.
        let wait = flush_every.saturating_sub(last_flush.elapsed()).max(Duration::from_millis(1));
        let first = if stopping { events.try_recv() } else { events.recv_timeout(wait) };
        for event in first.into_iter().chain(events.drain()) {
            line.clear();
            json_line(&mut line, &event);
            out.write_all(line.as_bytes())?;
            written.fetch_add(1, Ordering::Relaxed);
            dirty = true;
        }
        if dirty && (stopping || last_flush.elapsed() >= flush_every) {
            out.flush()?;
            dirty = false;
            last_flush = Instant::now();
        }
        if stopping {
            out.flush()?;
            return Ok(());
        }
    }
}

/// One event as a JSON object and a newline.
pub(crate) fn json_line<K: Display>(out: &mut String, e: &LockEvent<K>) {
    let _ = write!(out, "{{\"at_ns\":{},\"event\":\"{}\",\"key\":", e.at.as_nanos(), e.kind);
    json_string(out, &e.key.to_string());
    let _ = write!(out, ",\"mode\":\"{}\",\"token\":{},\"owner\":", e.mode, e.token.as_u64());
    match &e.owner {
        Some(o) => json_string(out, o.as_str()),
        None => out.push_str("null"),
    }
    out.push_str("}\n");
}

fn json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::events::EventKind;
    use crate::vocab::mode::{Mode, Owner};
    use crate::vocab::token::FenceToken;

    #[test]
    fn escapes_what_json_needs_escaped() {
        let mut s = String::new();
        json_string(&mut s, "a\"b\\c\nd\u{1}é");
        assert_eq!(s, r#""a\"b\\c\nd\u0001é""#);
    }

    #[test]
    fn one_line_per_event() {
        let e = LockEvent {
            kind: EventKind::Revoked,
            key: "k",
            mode: Mode::Semaphore(4),
            token: FenceToken::from_u64(9),
            owner: Some(Owner::from("w")),
            at: Duration::from_nanos(5),
        };
        let mut s = String::new();
        json_line(&mut s, &e);
        assert_eq!(
            s,
            "{\"at_ns\":5,\"event\":\"revoked\",\"key\":\"k\",\"mode\":\"semaphore(4)\",\"token\":9,\"owner\":\"w\"}\n"
        );
    }
}
