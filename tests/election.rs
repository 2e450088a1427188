//! Leader election (issue 13): candidates that crash (forget their leadership) or pause past
//! their lease; never two leaders at once, tokens strictly increase across leaders, a deposed
//! leader's fenced write is refused, and observers see every change in order.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use leasehold::{ChangeKind, LeaderChange, LockError, LockManager, LossCause, ManualClock, OBSERVER_CAPACITY};

const TTL: Duration = Duration::from_secs(3);

fn manual() -> (LockManager<String>, ManualClock) {
    let clock = ManualClock::new();
    let locks = LockManager::<String>::builder().clock(clock.clone()).build().expect("valid settings");
    (locks, clock)
}

fn drain(changes: &leasehold::LeaderChanges) -> Vec<LeaderChange> {
    std::iter::from_fn(|| changes.try_next()).collect()
}

fn kinds_and_labels(changes: &[LeaderChange]) -> Vec<(ChangeKind, Option<String>)> {
    changes.iter().map(|c| (c.kind, c.leader.as_ref().map(|l| l.label.as_str().to_owned()))).collect()
}

/// Elections have their own names: a lock on the key "scheduler" does not stop the election
/// "scheduler", and a manager with integer keys runs elections too.
#[test]
fn elections_have_their_own_namespace() {
    let (locks, _clock) = manual();
    let _lock = locks.exclusive("scheduler").try_acquire().expect("free");
    let lead = locks.elect("scheduler").candidate("n1").try_acquire().expect("the election is its own name");
    assert!(lead.is_leader());
    let ints: LockManager<u64> = LockManager::new();
    assert!(ints.elect("scheduler").try_acquire().is_ok());
}

/// A leader that crashes (its leadership forgotten, renewing by hand) stops renewing; its lease
/// runs out and the next candidate is elected with a larger token. Observers see it in order.
#[test]
fn a_crashed_leader_is_replaced_after_its_lease() {
    let (locks, clock) = manual();
    let changes = locks.observe("e");
    let a = locks.elect("e").candidate("a").lease(TTL).renew_by_hand().try_acquire().expect("free");
    a.proclaim("10.0.0.1:80").expect("leader");
    let first = a.token();
    std::mem::forget(a);
    assert_eq!(locks.elect("e").candidate("b").try_acquire().unwrap_err(), LockError::WouldBlock);
    clock.advance(TTL);
    let b = locks.elect("e").candidate("b").lease(TTL).try_acquire().expect("a's lease ran out");
    assert!(b.token() > first);
    let leader = locks.leader("e").expect("b leads");
    assert_eq!((leader.label.as_str(), leader.token, leader.value), ("b", b.token(), None));
    let seen = drain(&changes);
    assert_eq!(
        kinds_and_labels(&seen),
        [
            (ChangeKind::Current, None),
            (ChangeKind::Elected, Some("a".into())),
            (ChangeKind::Proclaimed, Some("a".into())),
            (ChangeKind::Expired, Some("a".into())),
            (ChangeKind::Elected, Some("b".into())),
        ]
    );
    assert!(seen.iter().all(|c| c.missed_before == 0));
}

/// A leader that pauses past its lease while its renewer is starved (frozen): the waiting
/// candidate is elected only after the old leader is told, and the old leader's late fenced
/// write is refused.
#[test]
fn a_paused_leader_is_deposed_and_its_late_write_refused() {
    let (locks, clock) = manual();
    let db = locks.fenced(Vec::<String>::new());
    let a = locks.elect("e").candidate("a").lease(TTL).try_acquire().expect("free");
    for _ in 0..10 {
        clock.advance(Duration::from_secs(1));
        assert!(a.is_leader(), "kept alive");
    }
    db.write(a.token(), |log| log.push("a".into())).expect("a writes");
    let stall = locks.stall_renewer();
    std::thread::scope(|s| {
        let b = s.spawn(|| {
            let b = locks.elect("e").candidate("b").lease(TTL).acquire().expect("elected in the end");
            let a_was = (a.is_leader(), a.is_lost());
            db.write(b.token(), |log| log.push("b".into())).expect("b writes");
            (a_was, b.token())
        });
        while locks.inspect_election("e").is_none_or(|i| i.waiters.is_empty()) {
            std::thread::yield_now();
        }
        for _ in 0..3 {
            clock.advance(Duration::from_secs(1));
        }
        let ((a_leader, a_lost), b_token) = b.join().expect("b");
        assert!(!a_leader && a_lost, "b was elected while a still believed it led");
        assert!(b_token > a.token());
    });
    drop(stall);
    assert_eq!(a.loss_cause(), Some(LossCause::Expired));
    let late = db.write(a.token(), |log| log.push("a, late".into()));
    assert!(matches!(late, Err(LockError::StaleToken { .. })), "{late:?}");
    assert_eq!(a.proclaim("x"), Err(LockError::Expired));
    assert_eq!(a.resign(), Err(LockError::Expired));
}

use std::future::Future;

struct CountingWaker(AtomicUsize);

impl Wake for CountingWaker {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// A small deterministic generator (xorshift), so a failing schedule can be replayed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Random schedules of candidates that campaign, resign, crash (forget their leadership), stop
/// renewing, get revoked, or run while the renewer is frozen, with the clock moving on: at every
/// step at most one candidate believes it leads, the leader on the board is that one, tokens
/// strictly increase across leaders, and an observer sees every tenure begin and end, in token
/// order, with the cause that really ended it.
#[test]
fn random_schedules_never_have_two_leaders() {
    for seed in 1..=20_u64 {
        let (locks, clock) = manual();
        let changes = locks.observe("e");
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let labels: Vec<String> = (0..4).map(|i| format!("c{i}")).collect();
        let mut leaders: Vec<leasehold::Leadership<'_>> = Vec::new();
        let mut stall = None;
        let mut last_token = None;
        // How each tenure ended, by our hand (resign / revoke); the rest must be expiries.
        let mut ended_by: HashMap<u64, ChangeKind> = HashMap::new();
        let mut seen: Vec<LeaderChange> = Vec::new();
        for step in 0..400 {
            match rng.below(8) {
                0 | 1 => {
                    let i = rng.below(4) as usize;
                    let campaign = locks.elect("e").candidate(labels[i].as_str()).lease(TTL);
                    let campaign = if i % 2 == 0 { campaign } else { campaign.renew_by_hand() };
                    if let Ok(l) = campaign.try_acquire() {
                        assert!(last_token < Some(l.token()), "seed {seed} step {step}: token did not grow");
                        last_token = Some(l.token());
                        leaders.push(l);
                    }
                }
                2 => {
                    if let Some(l) = leaders.pop() {
                        let t = l.token().as_u64();
                        if l.resign().is_ok() {
                            ended_by.insert(t, ChangeKind::Resigned);
                        }
                    }
                }
                3 => {
                    if let Some(l) = leaders.pop() {
                        std::mem::forget(l); // a crash: no resign, no more renewals by hand
                    }
                }
                4 => {
                    for l in &leaders {
                        let _ = l.renew();
                    }
                }
                5 => {
                    stall = match stall {
                        Some(_) => None,
                        None => Some(locks.stall_renewer()),
                    }
                }
                6 => {
                    // The operator deposes whoever leads now (maybe a crashed leader kept alive).
                    if let Some(l) = locks.leader("e") {
                        if locks.revoke_owner(l.label.clone()) > 0 {
                            ended_by.insert(l.token.as_u64(), ChangeKind::Revoked);
                        }
                    }
                }
                _ => clock.advance(Duration::from_millis(rng.below(2_000))),
            }
            let believers: Vec<_> = leaders.iter().filter(|l| l.is_leader()).map(|l| l.token()).collect();
            assert!(believers.len() <= 1, "seed {seed} step {step}: two leaders {believers:?}");
            if let Some(t) = believers.first() {
                assert_eq!(locks.leader("e").map(|l| l.token), Some(*t), "seed {seed} step {step}");
            }
            seen.extend(drain(&changes));
        }
        drop(stall);
        // The observer's record: tenures in token order, each closed before the next opens.
        let mut open: Option<u64> = None;
        let mut tenures = 0;
        for c in &seen {
            assert_eq!(c.missed_before, 0, "seed {seed}: drained every step, yet missed changes");
            let token = c.leader.as_ref().map(|l| l.token.as_u64());
            match c.kind {
                ChangeKind::Current => assert_eq!(token, None),
                ChangeKind::Elected => {
                    assert_eq!(open, None, "seed {seed}: elected {token:?} while {open:?} was open");
                    open = token;
                    tenures += 1;
                }
                ChangeKind::Proclaimed => assert_eq!(token, open),
                end => {
                    assert_eq!(token, open, "seed {seed}: {end:?} of a tenure that was not open");
                    let t = token.expect("an end names its tenure");
                    let expected = ended_by.get(&t).copied().unwrap_or(ChangeKind::Expired);
                    assert_eq!(end, expected, "seed {seed}: tenure {t} ended by {end:?}");
                    open = None;
                }
            }
        }
        assert!(tenures >= 3, "seed {seed}: only {tenures} tenures: the schedule tests little");
    }
}

/// An observer that does not keep up loses the oldest changes and is told how many.
#[test]
fn a_lagging_observer_is_told_how_many_it_missed() {
    let (locks, _clock) = manual();
    let changes = locks.observe("e");
    let lead = locks.elect("e").try_acquire().expect("free");
    for i in 0..100 {
        lead.proclaim(format!("v{i}")).expect("leader");
    }
    let got = drain(&changes);
    let total = 1 + 1 + 100;
    assert_eq!(got.len(), OBSERVER_CAPACITY);
    assert_eq!(got[0].missed_before, (total - OBSERVER_CAPACITY) as u64);
    assert!(got[1..].iter().all(|c| c.missed_before == 0));
    assert_eq!(got.last().and_then(|c| c.leader.as_ref()).and_then(|l| l.value.as_deref()), Some("v99"));
}

/// Campaigning and observing asynchronously: a waiting candidate's future completes when the
/// leader resigns, and the observer's future sees each change.
#[tokio::test(flavor = "current_thread")]
async fn async_campaign_and_observer() {
    let locks: LockManager<u64> = LockManager::new();
    let changes = locks.observe("e");
    assert_eq!(changes.next().await.kind, ChangeKind::Current);
    let a = locks.elect("e").candidate("a").acquire_async().await.expect("free");
    assert_eq!(changes.next().await.kind, ChangeKind::Elected);
    let mut b = Box::pin(locks.elect("e").candidate("b").acquire_async());
    let wakes = Arc::new(CountingWaker(AtomicUsize::new(0)));
    let waker = Waker::from(Arc::clone(&wakes));
    assert!(b.as_mut().poll(&mut Context::from_waker(&waker)).is_pending(), "b elected while a leads");
    let a_token = a.token();
    a.resign().expect("leader");
    assert_eq!(wakes.0.load(Ordering::SeqCst), 1, "the resign did not wake the waiting candidate");
    let b = match b.as_mut().poll(&mut Context::from_waker(&waker)) {
        Poll::Ready(b) => b.expect("b elected after a resigned"),
        Poll::Pending => panic!("woken, yet not elected"),
    };
    assert!(b.token() > a_token);
    assert_eq!(changes.next().await.kind, ChangeKind::Resigned);
    let elected = changes.next().await;
    assert_eq!(
        (elected.kind, elected.leader.map(|l| l.label.as_str().to_owned())),
        (ChangeKind::Elected, Some("b".into()))
    );
}
