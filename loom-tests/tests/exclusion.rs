//! Mutual exclusion in each mode: who may hold a key beside whom.

#![cfg(leasehold_loom)]

mod common;

use common::{manager, Seen, KEY};
use leasehold::{LockError, MAX_UNITS};
use loom::cell::UnsafeCell;
use loom::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use loom::sync::Arc;
use loom::thread;

/// Two threads `acquire()` one key exclusively (the second may park): their critical sections
/// never overlap, and each sees the other's writes (loom flags an unordered access to the cell
/// as a data race, so this also checks the Release/Acquire pairing of release and claim).
#[test]
fn exclusive_holders_never_overlap() {
    loom::model(|| {
        let (locks, _clock) = manager();
        let data = Arc::new(UnsafeCell::new(0_u32));
        let inside = Arc::new(AtomicUsize::new(0));
        let work = {
            let (locks, data, inside) = (locks.clone(), data.clone(), inside.clone());
            move || {
                let g = locks.exclusive(&KEY).acquire().expect("an exclusive acquire only waits");
                assert_eq!(inside.fetch_add(1, SeqCst), 0, "two exclusive holders at once");
                // SAFETY: the exclusive lock is the only thing that orders these accesses; loom
                // reports a race if it does not.
                data.with_mut(|p| unsafe { *p += 1 });
                inside.fetch_sub(1, SeqCst);
                drop(g);
            }
        };
        let t = thread::spawn(work.clone());
        work();
        t.join().expect("the other holder finished");
        // SAFETY: both holders are done (joined).
        assert_eq!(data.with(|p| unsafe { *p }), 2);
    });
}

static READERS_OVERLAPPED: Seen = Seen::new();
static WRITER_REFUSED: Seen = Seen::new();

/// Two readers and a writer `try_acquire` one key: never a writer beside a reader. Readers only
/// read the cell and the writer writes it, so loom also flags a write that is not ordered after
/// every read (and the other way round).
#[test]
fn writer_never_beside_a_reader() {
    loom::model(|| {
        let (locks, _clock) = manager();
        let data = Arc::new(UnsafeCell::new(0_u32));
        let readers = Arc::new(AtomicUsize::new(0));
        let writers = Arc::new(AtomicUsize::new(0));
        let reader = {
            let (locks, data, readers, writers) = (locks.clone(), data.clone(), readers.clone(), writers.clone());
            move || {
                let Ok(g) = locks.shared(&KEY).try_acquire() else { return };
                if readers.fetch_add(1, SeqCst) == 1 {
                    READERS_OVERLAPPED.mark();
                }
                assert_eq!(writers.load(SeqCst), 0, "a reader beside a writer");
                // SAFETY: shared holders only read; the lock orders them against the writer.
                data.with(|p| unsafe { *p });
                readers.fetch_sub(1, SeqCst);
                drop(g);
            }
        };
        let writer = {
            let (locks, data, readers, writers) = (locks.clone(), data.clone(), readers.clone(), writers.clone());
            thread::spawn(move || match locks.exclusive(&KEY).try_acquire() {
                Ok(g) => {
                    writers.fetch_add(1, SeqCst);
                    assert_eq!(readers.load(SeqCst), 0, "a writer beside a reader");
                    // SAFETY: the exclusive holder is alone (what this model checks).
                    data.with_mut(|p| unsafe { *p += 1 });
                    writers.fetch_sub(1, SeqCst);
                    drop(g);
                }
                Err(e) => {
                    assert_eq!(e, LockError::WouldBlock);
                    WRITER_REFUSED.mark();
                }
            })
        };
        let other_reader = thread::spawn(reader.clone());
        reader();
        other_reader.join().expect("reader finished");
        writer.join().expect("writer finished");
    });
    assert!(READERS_OVERLAPPED.get(), "no execution had both readers in at once");
    assert!(WRITER_REFUSED.get(), "no execution refused the writer");
}

static TWO_INSIDE: Seen = Seen::new();
static THIRD_REFUSED: Seen = Seen::new();

/// Three threads `try_acquire` one permit each of a two-permit semaphore: never more than two
/// holders at once (the third is refused with `WouldBlock`).
#[test]
fn semaphore_admits_at_most_its_permits() {
    loom::model(|| {
        let (locks, _clock) = manager();
        let inside = Arc::new(AtomicUsize::new(0));
        let work = {
            let (locks, inside) = (locks.clone(), inside.clone());
            move || match locks.semaphore(&KEY, 2).try_acquire() {
                Ok(g) => {
                    let before = inside.fetch_add(1, SeqCst);
                    assert!(before < 2, "{} holders of a two-permit semaphore", before + 1);
                    if before == 1 {
                        TWO_INSIDE.mark();
                    }
                    inside.fetch_sub(1, SeqCst);
                    drop(g);
                }
                Err(e) => {
                    assert_eq!(e, LockError::WouldBlock);
                    THIRD_REFUSED.mark();
                }
            }
        };
        let a = thread::spawn(work.clone());
        let b = thread::spawn(work.clone());
        work();
        a.join().expect("holder finished");
        b.join().expect("holder finished");
    });
    assert!(TWO_INSIDE.get(), "no execution had two permits held at once");
    assert!(THIRD_REFUSED.get(), "no execution refused a third holder");
}

static SEMAPHORE_RESHAPED: Seen = Seen::new();
static EXCLUSIVE_GOT_IN: Seen = Seen::new();

/// An idle read/write key (capacity `MAX_UNITS`) is asked for as a two-permit semaphore, which
/// changes its capacity under `CAP_CHANGING`, while another thread asks for it exclusively with
/// the capacity it read before: the two never hold at once, and the semaphore holder sees its own
/// capacity.
#[test]
fn capacity_change_never_admits_beside_exclusive() {
    loom::model(|| {
        let (locks, _clock) = manager();
        drop(locks.shared(&KEY).try_acquire().expect("a free key"));
        let inside = Arc::new(AtomicUsize::new(0));
        let permit = {
            let (locks, inside) = (locks.clone(), inside.clone());
            thread::spawn(move || match locks.semaphore(&KEY, 2).try_acquire() {
                Ok(g) => {
                    assert_eq!(inside.fetch_add(1, SeqCst), 0, "a permit beside an exclusive holder");
                    assert_eq!(g.mode(), leasehold::Mode::Semaphore(2));
                    SEMAPHORE_RESHAPED.mark();
                    inside.fetch_sub(1, SeqCst);
                    drop(g);
                }
                // The exclusive holder keeps the key a read/write key: the semaphore request is
                // told so (or, if it looked in the middle, told to wait).
                Err(e) => assert!(
                    matches!(e, LockError::WouldBlock | LockError::PermitMismatch { live: MAX_UNITS, requested: 2 }),
                    "{e:?}"
                ),
            })
        };
        match locks.exclusive(&KEY).try_acquire() {
            Ok(g) => {
                assert_eq!(inside.fetch_add(1, SeqCst), 0, "an exclusive holder beside a permit");
                EXCLUSIVE_GOT_IN.mark();
                inside.fetch_sub(1, SeqCst);
                drop(g);
            }
            Err(e) => assert_eq!(e, LockError::WouldBlock),
        }
        permit.join().expect("the permit thread finished");
    });
    assert!(SEMAPHORE_RESHAPED.get() && EXCLUSIVE_GOT_IN.get(), "one side never got in");
}
