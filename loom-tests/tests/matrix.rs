//! Matrix keys (intention modes): the census that decides their claims under the slot lock must
//! count exactly the holders there are, although a reader that came by the lock-free path may
//! release (one `fetch_sub`) at the moment an intention request turns the key into a matrix key.
//! A census that counted one too few would admit a mode beside an incompatible one; one that
//! counted one too many would leave the key a matrix key for ever (never idle, never reclaimed).

#![cfg(leasehold_loom)]

mod common;

use common::{manager, Seen, KEY};
use loom::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use loom::sync::Arc;
use loom::thread;

static IX_WAITED_FOR_THE_READER: Seen = Seen::new();

/// A plain reader releases while an intention-exclusive request reads the word into its census.
/// IX never holds beside the reader, gets the key once the reader is gone, and afterwards the key
/// is ordinary again: idle, reclaimable, and the fast path grants a reader.
#[test]
fn a_lock_free_release_racing_the_census_is_counted_out_once() {
    loom::model(|| {
        let (locks, _clock) = manager();
        let readers = Arc::new(AtomicUsize::new(0));
        let r = locks.shared(&KEY).try_acquire().expect("a free key");
        readers.fetch_add(1, SeqCst);
        let writer = {
            let (locks, readers) = (locks.clone(), readers.clone());
            thread::spawn(move || {
                let ix = locks.intent_exclusive(&KEY).acquire().expect("IX only waits");
                assert_eq!(readers.load(SeqCst), 0, "IX beside a reader");
                drop(ix);
            })
        };
        readers.fetch_sub(1, SeqCst);
        drop(r);
        writer.join().expect("IX got the key");
        if locks.metrics().contended > 0 {
            IX_WAITED_FOR_THE_READER.mark();
        }
        assert!(locks.inspect(&KEY).is_none(), "nothing held or queued");
        assert_eq!(locks.reclaim_idle(), 1, "the key is idle again (MATRIX cleared)");
        drop(locks.shared(&KEY).try_acquire().expect("an ordinary key again"));
    });
    assert!(IX_WAITED_FOR_THE_READER.get(), "no execution had IX wait for the reader");
}

/// A plain reader waits behind an intention-exclusive holder; the holder's release (under the
/// slot lock, counting it out and clearing `MATRIX`) must wake it.
#[test]
fn an_intention_release_wakes_a_waiting_reader() {
    loom::model(|| {
        let (locks, _clock) = manager();
        let ix = locks.intent_exclusive(&KEY).try_acquire().expect("a free key");
        let first = ix.token();
        let reader = {
            let locks = locks.clone();
            thread::spawn(move || {
                let r = locks.shared(&KEY).acquire().expect("a reader only waits");
                assert!(r.token() > first);
            })
        };
        drop(ix);
        reader.join().expect("the reader got the key");
        assert_eq!(locks.reclaim_idle(), 1, "idle again");
    });
}
