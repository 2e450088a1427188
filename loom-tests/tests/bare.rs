//! Bare holdings (engine/word.rs): a plain exclusive holding claimed by the lock-free path takes
//! every unit and no record. Nothing but the state word says it is there, so every reader of
//! holdings must find it in the word, and a renewal that gives it a lease takes record 0 under the
//! slot lock, against the sweep, introspection and the expirer.

#![cfg(leasehold_loom)]

mod common;

use std::time::Duration;

use common::{manager, Seen, KEY};
use leasehold::{LockError, Mode, MAX_UNITS};
use loom::thread;

const TTL: Duration = Duration::from_millis(10);

static SWEPT_FIRST: Seen = Seen::new();
static CLAIMED_FIRST: Seen = Seen::new();

/// A bare claim of an idle slot races the sweep that would reclaim it, and introspection. The
/// claim pins the slot by its units alone: either the sweep reclaimed the slot first (the claim
/// then made a new one) or it left the held slot alone. Whatever introspection saw is the
/// holding, with its token and mode; afterwards the key's slot is idle (no unit left out) and
/// the next token is larger.
#[test]
fn bare_claim_against_the_sweep_and_inspect() {
    loom::model(|| {
        let (locks, _clock) = manager();
        let first = locks.exclusive(&KEY).try_acquire().expect("a free key").token();
        let sweeper = {
            let locks = locks.clone();
            thread::spawn(move || locks.reclaim_idle())
        };
        let inspector = {
            let locks = locks.clone();
            thread::spawn(move || locks.inspect(&KEY))
        };
        let g = locks.exclusive(&KEY).try_acquire().expect("nobody holds the key");
        let token = g.token();
        assert!(token > first);
        // Swept first, the claim made a new slot on the locked path, whose record inspect may
        // find still being written (a holding that begins during the snapshot may be left out);
        // a bare claim has no such moment: inspect sees the word with the holding, or no holding.
        let swept = sweeper.join().expect("the sweep finished") == 1;
        if swept {
            SWEPT_FIRST.mark();
        } else {
            CLAIMED_FIRST.mark();
        }
        if let Some(info) = inspector.join().expect("inspect finished") {
            assert_eq!((info.mode, info.units_held), (Some(Mode::Exclusive), MAX_UNITS), "{info:?}");
            assert!(info.holders.len() == 1 || swept && info.holders.is_empty(), "{info:?}");
            for h in &info.holders {
                assert_eq!((h.token, h.mode), (token, Mode::Exclusive));
            }
        }
        let info = locks.inspect(&KEY).expect("held");
        assert_eq!(info.holders.len(), 1, "{info:?}");
        assert_eq!(info.holders[0].token, token);
        assert_eq!(locks.slot_count(), 1, "{}", locks.debug_state(&KEY));
        drop(g);
        assert_eq!(locks.reclaim_idle(), 1, "the slot is not idle: {}", locks.debug_state(&KEY));
        assert!(locks.exclusive(&KEY).try_acquire().expect("a free key").token() > token);
    });
    assert!(SWEPT_FIRST.get() && CLAIMED_FIRST.get(), "the sweep and the claim never raced both ways");
}

static SAW_IT_BARE: Seen = Seen::new();
static SAW_IT_LEASED: Seen = Seen::new();
static RELEASE_WON: Seen = Seen::new();
static EXPIRY_WON: Seen = Seen::new();

/// A renewal promotes a bare holding (it takes record 0 and a lease) while introspection looks:
/// it sees the one holding, bare or leased, never none or two. Then, past the deadline, the
/// guard's release races the expirer: exactly one ends the holding, and its units and record 0
/// come back exactly once (the next holder gets the key, and then the slot is idle and is
/// reclaimed: no record bit left behind by a release that forgot the record it took).
#[test]
fn promotion_against_inspect_then_release_against_expiry() {
    loom::model(|| {
        let (locks, clock) = manager();
        // The key's first holding made its slot on the locked path (with a record); the second
        // is claimed lock-free: bare.
        drop(locks.exclusive(&KEY).try_acquire().expect("a free key"));
        let g = locks.exclusive(&KEY).try_acquire().expect("a free key");
        let token = g.token();
        let inspector = {
            let locks = locks.clone();
            thread::spawn(move || locks.inspect(&KEY))
        };
        g.renew(TTL).expect("a held holding renews");
        let info = inspector.join().expect("inspect finished").expect("held throughout");
        assert_eq!(info.holders.len(), 1, "{info:?}");
        assert_eq!((info.holders[0].token, info.holders[0].mode), (token, Mode::Exclusive));
        match info.holders[0].expires_at {
            None => SAW_IT_BARE.mark(),
            Some(_) => SAW_IT_LEASED.mark(),
        }
        clock.advance(TTL);
        let expirer = {
            let locks = locks.clone();
            thread::spawn(move || locks.expire_due())
        };
        let released = g.release();
        match (released, expirer.join().expect("expire_due finished")) {
            (Err(LockError::Expired), 0) => RELEASE_WON.mark(),
            (Err(LockError::Expired), 1) => EXPIRY_WON.mark(),
            (released, expired) => panic!("release {released:?} and expire_due {expired}: not exactly one winner"),
        }
        assert_eq!(locks.metrics().expiries, 1);
        let next = locks.exclusive(&KEY).try_acquire().expect("the units came back");
        assert!(next.token() > token);
        drop(next);
        assert_eq!(locks.reclaim_idle(), 1, "the slot is not idle: {}", locks.debug_state(&KEY));
    });
    assert!(SAW_IT_BARE.get() && SAW_IT_LEASED.get(), "inspect never saw both sides of the promotion");
    assert!(RELEASE_WON.get() && EXPIRY_WON.get(), "the release and the expiry never raced both ways");
}

static SAW_IT_HELD: Seen = Seen::new();
static SAW_IT_GONE: Seen = Seen::new();

/// A promoted bare holding released before its deadline, while introspection and the expirer
/// look: the release gives back its units and the record the promotion took (the slot is idle
/// and reclaimed afterwards), the expirer finds nothing due, and introspection sees the one
/// leased holding, or nothing, or the units of the holding being released.
#[test]
fn promoted_release_in_time_against_inspect_and_the_expirer() {
    loom::model(|| {
        let (locks, _clock) = manager();
        drop(locks.exclusive(&KEY).try_acquire().expect("a free key"));
        let g = locks.exclusive(&KEY).try_acquire().expect("a free key (a bare holding)");
        let token = g.token();
        g.renew(TTL).expect("a held holding renews");
        let inspector = {
            let locks = locks.clone();
            thread::spawn(move || locks.inspect(&KEY))
        };
        let expirer = {
            let locks = locks.clone();
            thread::spawn(move || locks.expire_due())
        };
        g.release().expect("released before its deadline");
        assert_eq!(expirer.join().expect("expire_due finished"), 0);
        match inspector.join().expect("inspect finished") {
            // A release ends the holding (its lease word) before its units go back: in between
            // the snapshot may show the units without the holding ending during it.
            Some(info) if info.holders.is_empty() => assert_eq!(info.units_held, MAX_UNITS, "{info:?}"),
            Some(info) => {
                assert_eq!(info.holders.len(), 1, "{info:?}");
                assert_eq!((info.holders[0].token, info.holders[0].expires_at), (token, Some(TTL)));
                SAW_IT_HELD.mark();
            }
            None => SAW_IT_GONE.mark(),
        }
        assert_eq!(locks.reclaim_idle(), 1, "the slot is not idle: {}", locks.debug_state(&KEY));
        assert!(locks.exclusive(&KEY).try_acquire().expect("a free key").token() > token);
    });
    assert!(SAW_IT_HELD.get() && SAW_IT_GONE.get(), "inspect never saw both sides of the release");
}
