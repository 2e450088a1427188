//! Keep-alive: the shared renewer's renewal racing the guard's release, and racing expiry. The
//! renewer is `renew_due` on another thread (no background threads exist under loom).

#![cfg(leasehold_loom)]

mod common;

use std::time::Duration;

use common::{manager, Seen, KEY};
use leasehold::{LockError, LossCause};
use loom::thread;

const TTL: Duration = Duration::from_millis(30);

static RENEWED_FIRST: Seen = Seen::new();
static RELEASED_FIRST: Seen = Seen::new();

/// The renewer renews a due keep-alive lease while its guard releases. The release always wins
/// its holding back (a renewal never makes it fail as if expired), the renewal either happens
/// before the release or not at all (never after: the per-holding counter says so, and stays put
/// while the clock runs on), and the unit comes back exactly once.
#[test]
fn renewal_races_release() {
    loom::model(|| {
        let (locks, clock) = manager();
        let g = locks.exclusive(&KEY).lease(TTL).keep_alive().try_acquire().expect("a free key");
        let renewals = g.renewal_counter().expect("a keep-alive guard counts its renewals");
        clock.advance(TTL / 3);
        let renewer = {
            let locks = locks.clone();
            thread::spawn(move || locks.renew_due())
        };
        assert_eq!(g.release(), Ok(()), "a renewal made the release fail");
        let renewed = renewer.join().expect("renew_due finished");
        let counted = renewals.load(std::sync::atomic::Ordering::SeqCst);
        assert_eq!(counted, renewed as u64);
        match renewed {
            1 => RENEWED_FIRST.mark(),
            0 => RELEASED_FIRST.mark(),
            n => panic!("renewed {n} times"),
        }
        clock.advance(TTL);
        assert_eq!(locks.renew_due(), 0, "a released holding was renewed");
        assert_eq!(renewals.load(std::sync::atomic::Ordering::SeqCst), counted);
        drop(locks.exclusive(&KEY).try_acquire().expect("the unit came back"));
        assert_eq!(locks.reclaim_idle(), 1, "the slot is not idle: {}", locks.debug_state(&KEY));
    });
    assert!(RENEWED_FIRST.get(), "no execution renewed before the release");
    assert!(RELEASED_FIRST.get(), "no execution released before the renewal");
}

static RENEWAL_WON: Seen = Seen::new();
static EXPIRY_WON: Seen = Seen::new();

/// The renewer renews while another thread moves the clock to the deadline and expires. The
/// lease word's compare-exchange decides: either the renewal landed before the deadline (the
/// holding lives on and nothing expired), or the holding expired exactly once and its loss
/// signal fired, with the renewal refused.
#[test]
fn renewal_races_expiry() {
    loom::model(|| {
        let (locks, clock) = manager();
        let g = locks.exclusive(&KEY).lease(TTL).keep_alive().try_acquire().expect("a free key");
        assert!(!g.is_lost()); // attaches nothing new: a keep-alive guard has its signal
        clock.advance(TTL / 3);
        let expirer = {
            let (locks, clock) = (locks.clone(), clock.clone());
            thread::spawn(move || {
                clock.advance(TTL - TTL / 3);
                locks.expire_due()
            })
        };
        let renewed = locks.renew_due();
        let expired = expirer.join().expect("expire_due finished");
        match (renewed, expired) {
            (1, 0) => {
                RENEWAL_WON.mark();
                assert!(g.is_held() && !g.is_lost());
                assert_eq!(locks.exclusive(&KEY).try_acquire().unwrap_err(), LockError::WouldBlock);
                assert_eq!(g.release(), Ok(()));
            }
            (0, 1) => {
                EXPIRY_WON.mark();
                assert_eq!(g.loss_cause(), Some(LossCause::Expired));
                assert_eq!(g.release(), Err(LockError::Expired));
            }
            (renewed, expired) => panic!("renewed {renewed} and expired {expired}: not exactly one winner"),
        }
        drop(locks.exclusive(&KEY).try_acquire().expect("the unit came back"));
        assert_eq!(locks.reclaim_idle(), 1, "the slot is not idle: {}", locks.debug_state(&KEY));
    });
    assert!(RENEWAL_WON.get(), "no execution had the renewal win");
    assert!(EXPIRY_WON.get(), "no execution had the expiry win");
}
