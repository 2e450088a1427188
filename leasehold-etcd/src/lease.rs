//! One holder's lease: its local deadline, its keep-alive task, and the loss signal.
//!
//! The deadline is computed from when a keep-alive was *sent*: the server restarts the lease's
//! TTL when it receives the keep-alive, which is after it was sent, so `sent + ttl` is never later
//! than the server's own expiry, and the holder stops trusting the lock first. Loss is sticky:
//! once the deadline has passed, or the server said the lease is gone, the holding is lost for
//! good, even if a late keep-alive answer arrives.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{Client, LeaseKeepAliveStream, LeaseKeeper};
use tokio::sync::watch;

use crate::conn::call;
use crate::error::{classify, Failure};
use crate::Shared;

/// What the guard and the keep-alive task share.
#[derive(Debug)]
pub(crate) struct Hold {
    base: Instant,
    /// Nanoseconds after `base` at which the lease may be gone.
    deadline_ns: AtomicU64,
    lost: AtomicBool,
    lost_tx: watch::Sender<bool>,
    /// Set when the guard is released or dropped: the keep-alive task ends.
    stop_tx: watch::Sender<bool>,
    pub(crate) lease: i64,
    pub(crate) ttl: Duration,
}

impl Hold {
    pub(crate) fn new(lease: i64, ttl: Duration, sent: Instant) -> Arc<Self> {
        let (lost_tx, _) = watch::channel(false);
        let (stop_tx, _) = watch::channel(false);
        Arc::new(Hold {
            base: sent,
            deadline_ns: AtomicU64::new(ttl.as_nanos() as u64),
            lost: AtomicBool::new(false),
            lost_tx,
            stop_tx,
            lease,
            ttl,
        })
    }

    pub(crate) fn deadline(&self) -> Instant {
        // Relaxed: the deadline is a plain value; `lost` carries the ordering that matters.
        self.base + Duration::from_nanos(self.deadline_ns.load(Ordering::Relaxed))
    }

    /// A keep-alive sent at `sent` was answered: the lease lives at least until `sent + ttl`.
    /// Refused (false) once the holding is lost or the old deadline has passed (loss is sticky).
    pub(crate) fn extend(&self, sent: Instant) -> bool {
        if self.is_lost() {
            return false;
        }
        let ns = (sent.saturating_duration_since(self.base) + self.ttl).as_nanos() as u64;
        self.deadline_ns.fetch_max(ns, Ordering::Relaxed);
        true
    }

    /// Whether the lease may be gone; marks the loss when the deadline has passed.
    pub(crate) fn is_lost(&self) -> bool {
        // Acquire: pairs with the Release store in `mark_lost`.
        if self.lost.load(Ordering::Acquire) {
            return true;
        }
        if Instant::now() >= self.deadline() {
            self.mark_lost();
            return true;
        }
        false
    }

    pub(crate) fn mark_lost(&self) {
        // Release: pairs with the Acquire load in `is_lost`.
        if !self.lost.swap(true, Ordering::Release) {
            self.lost_tx.send_replace(true);
        }
    }

    /// Resolves when the holding is lost (at the latest, at its deadline).
    pub(crate) async fn lost(&self) {
        let mut rx = self.lost_tx.subscribe();
        loop {
            if self.is_lost() {
                return;
            }
            let deadline = self.deadline();
            tokio::select! {
                _ = rx.changed() => {}
                _ = tokio::time::sleep_until(deadline.into()) => {}
            }
        }
    }

    pub(crate) fn stop(&self) {
        self.stop_tx.send_replace(true);
    }

    fn stopped(&self) -> watch::Receiver<bool> {
        self.stop_tx.subscribe()
    }
}

/// Keeps the lease alive every `ttl * keepalive_fraction` until stopped or lost. A failed stream
/// is reopened (on whichever member the channel picks) until the deadline; past it, the holding
/// is reported lost and the lease revoked, so the lock is freed as soon as the server agrees.
pub(crate) async fn keep_alive(shared: Arc<Shared>, hold: Arc<Hold>, granted_at: Instant) {
    let (client, opts) = (&shared.client, &shared.opts);
    let period = hold.ttl.mul_f64(opts.keepalive_fraction);
    let mut stop = hold.stopped();
    let mut stream: Option<(LeaseKeeper, LeaseKeepAliveStream)> = None;
    let mut next = granted_at + period;
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tokio::time::sleep_until(next.into()) => {}
        }
        // Ping until one is answered, or the deadline passes.
        loop {
            if hold.is_lost() {
                revoke_quietly(shared.clone(), hold.lease).await;
                return;
            }
            let left = hold.deadline().saturating_duration_since(Instant::now());
            let sent = Instant::now();
            let ping = ping(client, hold.lease, &mut stream);
            let answer = tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                a = tokio::time::timeout(opts.attempt_timeout.min(left), ping) => a,
            };
            match answer {
                Ok(Ok(true)) => {
                    if hold.extend(sent) {
                        next = sent + period;
                        break;
                    }
                }
                Ok(Ok(false)) => {
                    hold.mark_lost();
                    return;
                }
                Ok(Err(())) | Err(_) => {
                    stream = None;
                    let pause =
                        Duration::from_millis(100).min(hold.deadline().saturating_duration_since(Instant::now()));
                    tokio::select! {
                        _ = stop.wait_for(|s| *s) => return,
                        _ = tokio::time::sleep(pause) => {}
                    }
                }
            }
        }
    }
}

/// One keep-alive: `Ok(true)` the lease lives, `Ok(false)` the server says it is gone,
/// `Err` no answer (the stream is reopened next time).
async fn ping(
    client: &Client,
    lease: i64,
    stream: &mut Option<(LeaseKeeper, LeaseKeepAliveStream)>,
) -> Result<bool, ()> {
    if let Some((keeper, answers)) = stream.as_mut() {
        keeper.keep_alive().await.map_err(drop)?;
        return match answers.message().await {
            Ok(Some(resp)) => Ok(resp.ttl() > 0),
            Ok(None) | Err(_) => Err(()),
        };
    }
    // Opening the stream sends the first keep-alive and reads its answer.
    match client.lease_client().keep_alive(lease).await {
        Ok(opened) => {
            *stream = Some(opened);
            Ok(true)
        }
        Err(e) => match classify(e) {
            Failure::LeaseGone => Ok(false),
            Failure::Transient(_) | Failure::Fatal(_) => Err(()),
        },
    }
}

/// Revokes a lease (retried across members within the operation's bound), ignoring failure:
/// the lease then ends at its TTL.
pub(crate) async fn revoke_quietly(shared: Arc<Shared>, lease: i64) {
    let _ = call(&shared.client, &shared.opts, &shared.breaker, |c| async move {
        let mut lc = c.lease_client();
        lc.revoke(lease).await.map(drop)
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deadline_counts_from_when_the_keep_alive_was_sent() {
        let sent = Instant::now() - Duration::from_millis(400);
        let hold = Hold::new(7, Duration::from_secs(2), sent);
        assert_eq!(hold.deadline(), sent + Duration::from_secs(2));
        let later = sent + Duration::from_millis(300);
        assert!(hold.extend(later));
        assert_eq!(hold.deadline(), later + Duration::from_secs(2));
        // An answer to an older keep-alive never moves the deadline back.
        assert!(hold.extend(sent));
        assert_eq!(hold.deadline(), later + Duration::from_secs(2));
        assert!(!hold.is_lost());
    }

    #[test]
    fn loss_is_sticky() {
        // Granted 3 s ago with a 2 s TTL: the deadline has passed.
        let sent = Instant::now() - Duration::from_secs(3);
        let hold = Hold::new(7, Duration::from_secs(2), sent);
        assert!(hold.is_lost());
        // A late answer to a keep-alive does not bring the holding back.
        assert!(!hold.extend(Instant::now()));
        assert!(hold.is_lost());

        let fresh = Hold::new(8, Duration::from_secs(60), Instant::now());
        fresh.mark_lost();
        assert!(fresh.is_lost());
        assert!(!fresh.extend(Instant::now()));
    }

    #[tokio::test]
    async fn lost_resolves_on_the_mark_and_at_the_deadline() {
        let hold = Hold::new(7, Duration::from_secs(60), Instant::now());
        let waiting = {
            let hold = hold.clone();
            tokio::spawn(async move { hold.lost().await })
        };
        hold.mark_lost();
        tokio::time::timeout(Duration::from_secs(5), waiting).await.expect("lost() did not resolve").expect("task");
        // Past its deadline already: resolves at once, without anyone marking it.
        let past = Hold::new(8, Duration::from_secs(1), Instant::now() - Duration::from_secs(2));
        tokio::time::timeout(Duration::from_secs(5), past.lost()).await.expect("lost() past the deadline");
    }
}
