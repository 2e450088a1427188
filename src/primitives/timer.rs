//! Timed wake-ups for async waiters: one lazily started thread per process wakes a task at an
//! instant (a lease holder's deadline), so that a future expires a blocker itself, as a parked
//! thread does, without a reaper and without depending on any runtime's timer.

#![deny(unsafe_code)]

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::sync::{Condvar, Mutex, OnceLock};
use std::task::Waker;
use std::time::Instant;

struct Entry {
    at: Instant,
    /// Arrival order, so entries with one instant compare unequal.
    seq: u64,
    waker: Waker,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl Eq for Entry {}

impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Entry {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

#[derive(Default)]
struct Pending {
    heap: BinaryHeap<Reverse<Entry>>,
    seq: u64,
}

struct Timer {
    pending: Mutex<Pending>,
    changed: Condvar,
}

/// The process's timer, or `None` if its thread could not be started.
static TIMER: OnceLock<Option<&'static Timer>> = OnceLock::new();

/// Wakes `waker` at `at` (or soon after). If the timer thread cannot run, wakes it now: the task
/// then polls again and looks at the deadline itself.
pub(crate) fn wake_at(at: Instant, waker: &Waker) {
    let Some(timer) = *TIMER.get_or_init(start) else {
        waker.wake_by_ref();
        return;
    };
    let mut p = timer.pending.lock().unwrap_or_else(|e| e.into_inner());
    let earliest = p.heap.peek().is_none_or(|Reverse(e)| at < e.at);
    p.seq += 1;
    let seq = p.seq;
    p.heap.push(Reverse(Entry { at, seq, waker: waker.clone() }));
    drop(p);
    if earliest {
        timer.changed.notify_one();
    }
}

fn start() -> Option<&'static Timer> {
    let timer: &'static Timer =
        Box::leak(Box::new(Timer { pending: Mutex::new(Pending::default()), changed: Condvar::new() }));
    std::thread::Builder::new().name("leasehold-timer".into()).spawn(move || run(timer)).ok().map(|_| timer)
}

fn run(timer: &'static Timer) {
    let mut due = Vec::new();
    let mut p = timer.pending.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let now = Instant::now();
        while p.heap.peek().is_some_and(|Reverse(e)| e.at <= now) {
            if let Some(Reverse(e)) = p.heap.pop() {
                due.push(e.waker);
            }
        }
        if !due.is_empty() {
            // Woken outside the lock: a waker may run its task inline, and that task may arm again.
            drop(p);
            due.drain(..).for_each(Waker::wake);
            p = timer.pending.lock().unwrap_or_else(|e| e.into_inner());
            continue;
        }
        p = match p.heap.peek() {
            None => timer.changed.wait(p).unwrap_or_else(|e| e.into_inner()),
            Some(Reverse(e)) => {
                let left = e.at.saturating_duration_since(now);
                timer.changed.wait_timeout(p, left).unwrap_or_else(|e| e.into_inner()).0
            }
        };
    }
}

#[cfg(all(test, not(leasehold_loom)))]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::{mpsc, Arc};
    use std::task::Wake;
    use std::time::Duration;

    struct Signal(Mutex<mpsc::Sender<usize>>, AtomicUsize, usize);

    impl Wake for Signal {
        fn wake(self: Arc<Self>) {
            self.1.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let _ = self.0.lock().unwrap().send(self.2);
        }
    }

    #[test]
    fn wakes_each_task_at_its_instant_in_order() {
        let (tx, rx) = mpsc::channel();
        let start = Instant::now();
        let signals: Vec<Arc<Signal>> =
            (0..3).map(|i| Arc::new(Signal(Mutex::new(tx.clone()), AtomicUsize::new(0), i))).collect();
        // Armed out of order.
        for (i, ms) in [(2_usize, 30_u64), (0, 10), (1, 20)] {
            wake_at(start + Duration::from_millis(ms), &Waker::from(Arc::clone(&signals[i])));
        }
        let order: Vec<usize> = (0..3).map(|_| rx.recv_timeout(Duration::from_secs(5)).expect("woken")).collect();
        assert_eq!(order, [0, 1, 2]);
        assert!(start.elapsed() >= Duration::from_millis(30));
        assert!(signals.iter().all(|s| s.1.load(std::sync::atomic::Ordering::SeqCst) == 1));
    }
}
