//! Upgradable holders (issue 12): an upgrade against readers, against a second upgradable
//! request, and a downgrade with a writer waiting. Each model checks exclusion with plain
//! counters the threads update while they hold (a writer beside a reader, or two upgradable or
//! exclusive holders, would see the other's mark), and a lost wake-up shows as loom's deadlock.

#![cfg(leasehold_loom)]

mod common;

use common::{manager, Seen, KEY};
use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use loom::sync::Arc;
use loom::thread;

static LATE_READER_CAME_AFTER_THE_WRITER: Seen = Seen::new();

/// An upgradable holder upgrades while a reader holds the key and another reader arrives. The
/// late reader never gets in beside the exclusive holding (it got in before the upgrade began,
/// or waits for the writer to leave), and the upgrader is woken by the last reader's release.
#[test]
fn upgrade_against_readers() {
    loom::model(|| {
        let (locks, _clock) = manager();
        let readers = Arc::new(AtomicUsize::new(0));
        let writer = Arc::new(AtomicBool::new(false));
        let upgraded = Arc::new(AtomicBool::new(false));
        let r = locks.shared(&KEY).try_acquire().expect("a free key");
        readers.fetch_add(1, SeqCst);
        let upgrader = {
            let (locks, readers, writer, upgraded) = (locks.clone(), readers.clone(), writer.clone(), upgraded.clone());
            thread::spawn(move || {
                let u = locks.upgradable(&KEY).try_acquire().expect("upgradable beside readers");
                let w = u.upgrade().expect("only readers are in the way");
                assert_eq!(readers.load(SeqCst), 0, "exclusive beside a reader");
                writer.store(true, SeqCst);
                upgraded.store(true, SeqCst);
                writer.store(false, SeqCst);
                drop(w);
            })
        };
        let late = {
            let (locks, readers, writer, upgraded) = (locks.clone(), readers.clone(), writer.clone(), upgraded.clone());
            thread::spawn(move || {
                let g = locks.shared(&KEY).acquire().expect("a shared acquire only waits");
                readers.fetch_add(1, SeqCst);
                assert!(!writer.load(SeqCst), "a reader beside the exclusive holding");
                if upgraded.load(SeqCst) {
                    LATE_READER_CAME_AFTER_THE_WRITER.mark();
                }
                readers.fetch_sub(1, SeqCst);
                drop(g);
            })
        };
        readers.fetch_sub(1, SeqCst);
        drop(r); // the present reader leaves: its release must wake a waiting upgrader
        upgrader.join().expect("the upgrader was woken");
        late.join().expect("the late reader got in");
    });
    assert!(LATE_READER_CAME_AFTER_THE_WRITER.get(), "no execution had the late reader wait for the upgrade");
}

static SECOND_WAITED_FOR_THE_FIRST: Seen = Seen::new();

/// Two upgradable requests, one of which upgrades, with a reader present: never two upgradable
/// (or upgradable and exclusive) holders at once, and no deadlock (the second upgradable waits
/// for the first holding to end, not for an upgrade).
#[test]
fn upgrade_against_a_second_upgradable() {
    loom::model(|| {
        let (locks, _clock) = manager();
        let strong = Arc::new(AtomicUsize::new(0));
        let first_done = Arc::new(AtomicBool::new(false));
        let r = locks.shared(&KEY).try_acquire().expect("a free key");
        let upgrading = {
            let (locks, strong, first_done) = (locks.clone(), strong.clone(), first_done.clone());
            thread::spawn(move || {
                let u = locks.upgradable(&KEY).acquire().expect("an upgradable acquire only waits");
                assert_eq!(strong.fetch_add(1, SeqCst), 0, "two upgradable holders");
                let w = u.upgrade().expect("only a reader is in the way");
                strong.fetch_sub(1, SeqCst);
                first_done.store(true, SeqCst);
                drop(w);
            })
        };
        let second = {
            let (locks, strong, first_done) = (locks.clone(), strong.clone(), first_done.clone());
            thread::spawn(move || {
                let u = locks.upgradable(&KEY).acquire().expect("an upgradable acquire only waits");
                assert_eq!(strong.fetch_add(1, SeqCst), 0, "two upgradable holders");
                if first_done.load(SeqCst) {
                    SECOND_WAITED_FOR_THE_FIRST.mark();
                }
                strong.fetch_sub(1, SeqCst);
                drop(u);
            })
        };
        drop(r);
        upgrading.join().expect("the upgrader finished");
        second.join().expect("the second upgradable got in");
    });
    assert!(SECOND_WAITED_FOR_THE_FIRST.get(), "no execution had the second upgradable come after the upgrade");
}

static READER_BESIDE_THE_DOWNGRADED_HOLDER: Seen = Seen::new();

/// An exclusive holder downgrades to shared while a writer and a reader wait (in either order):
/// the writer never gets in before the downgraded holder releases, the reader never beside the
/// writer, and a reader admitted by the downgrade gets in beside the downgraded holder.
#[test]
fn downgrade_with_a_waiting_writer() {
    loom::model(|| {
        let (locks, _clock) = manager();
        let holder_alive = Arc::new(AtomicBool::new(true));
        let writer_in = Arc::new(AtomicBool::new(false));
        let w = locks.exclusive(&KEY).try_acquire().expect("a free key");
        let writer = {
            let (locks, holder_alive, writer_in) = (locks.clone(), holder_alive.clone(), writer_in.clone());
            thread::spawn(move || {
                let g = locks.exclusive(&KEY).acquire().expect("an exclusive acquire only waits");
                assert!(!holder_alive.load(SeqCst), "the writer got in beside the downgraded holder");
                writer_in.store(true, SeqCst);
                writer_in.store(false, SeqCst);
                drop(g);
            })
        };
        let reader = {
            let (locks, holder_alive, writer_in) = (locks.clone(), holder_alive.clone(), writer_in.clone());
            thread::spawn(move || {
                let g = locks.shared(&KEY).acquire().expect("a shared acquire only waits");
                assert!(!writer_in.load(SeqCst), "a reader beside the writer");
                if holder_alive.load(SeqCst) {
                    READER_BESIDE_THE_DOWNGRADED_HOLDER.mark();
                }
                drop(g);
            })
        };
        let r = w.downgrade().expect("an exclusive guard downgrades");
        holder_alive.store(false, SeqCst);
        drop(r);
        writer.join().expect("the writer got in");
        reader.join().expect("the reader got in");
    });
    assert!(READER_BESIDE_THE_DOWNGRADED_HOLDER.get(), "no execution let a reader in beside the downgraded holder");
}
