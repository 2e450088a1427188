//! Calls to the cluster: each bounded in time, retried across members and leader elections
//! until the operation's bound, behind a circuit breaker so a dead cluster is not hammered.

use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use etcd_client::Client;

use crate::error::{classify, EtcdError, Failure};
use crate::EtcdOptions;

/// Consecutive unavailable operations open the circuit for a cool-down; the first call after it
/// is let through, and one success closes it.
#[derive(Debug)]
pub(crate) struct Breaker {
    failures: AtomicU32,
    open_until: parking_lot::Mutex<Option<Instant>>,
}

impl Breaker {
    pub(crate) fn new() -> Self {
        Breaker { failures: AtomicU32::new(0), open_until: parking_lot::Mutex::new(None) }
    }

    fn check(&self) -> Result<(), EtcdError> {
        let mut open = self.open_until.lock();
        match *open {
            Some(until) => {
                let now = Instant::now();
                if now < until {
                    return Err(EtcdError::CircuitOpen { retry_in: until - now });
                }
                // Half-open: this call goes through; a failure reopens at once.
                *open = None;
                Ok(())
            }
            None => Ok(()),
        }
    }

    fn success(&self) {
        // Relaxed: a heuristic count, ordered by nothing else.
        self.failures.store(0, Ordering::Relaxed);
    }

    fn failure(&self, opts: &EtcdOptions) {
        let n = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if n >= opts.breaker_threshold {
            *self.open_until.lock() = Some(Instant::now() + opts.breaker_cooldown);
        }
    }
}

/// What one operation ended with, before mapping to the caller's error.
#[derive(Debug)]
pub(crate) enum CallError {
    LeaseGone,
    Failed(EtcdError),
}

impl From<CallError> for EtcdError {
    fn from(e: CallError) -> Self {
        match e {
            CallError::LeaseGone => EtcdError::Lock(leasehold::LockError::Expired),
            CallError::Failed(e) => e,
        }
    }
}

/// Runs `op` until it succeeds, fails for good, or `opts.op_timeout` has passed; each attempt is
/// bounded by `opts.attempt_timeout`. Transient failures (a member down, a leader election) are
/// retried with a short backoff; the balanced channel sends the retry to a live member.
pub(crate) async fn call<T, F, Fut>(
    client: &Client,
    opts: &EtcdOptions,
    breaker: &Breaker,
    mut op: F,
) -> Result<T, CallError>
where
    F: FnMut(Client) -> Fut,
    Fut: Future<Output = Result<T, etcd_client::Error>>,
{
    breaker.check().map_err(CallError::Failed)?;
    let start = Instant::now();
    let deadline = start + opts.op_timeout;
    let mut backoff = Duration::from_millis(20);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let last = match tokio::time::timeout(opts.attempt_timeout.min(left), op(client.clone())).await {
            Ok(Ok(v)) => {
                breaker.success();
                return Ok(v);
            }
            Ok(Err(e)) => match classify(e) {
                Failure::LeaseGone => {
                    breaker.success();
                    return Err(CallError::LeaseGone);
                }
                Failure::Fatal(message) => {
                    breaker.success();
                    return Err(CallError::Failed(EtcdError::Etcd { message }));
                }
                Failure::Transient(m) => m,
            },
            Err(_) => "no answer within the attempt's bound".to_string(),
        };
        let now = Instant::now();
        if now + backoff >= deadline {
            breaker.failure(opts);
            return Err(CallError::Failed(EtcdError::Unavailable { after: now - start, last }));
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_millis(250));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(threshold: u32, cooldown: Duration) -> EtcdOptions {
        EtcdOptions { breaker_threshold: threshold, breaker_cooldown: cooldown, ..EtcdOptions::default() }
    }

    #[test]
    fn the_circuit_opens_after_the_threshold_and_a_success_resets_the_count() {
        let o = opts(2, Duration::from_secs(3600));
        let b = Breaker::new();
        b.failure(&o);
        assert!(b.check().is_ok());
        b.success();
        b.failure(&o);
        assert!(b.check().is_ok(), "a success in between resets the count");
        b.failure(&o);
        match b.check() {
            Err(EtcdError::CircuitOpen { retry_in }) => assert!(retry_in > Duration::from_secs(3000)),
            other => panic!("after two failures in a row: {other:?}"),
        }
    }

    #[test]
    fn after_the_cool_down_one_call_goes_through_and_a_failure_reopens() {
        let o = opts(1, Duration::ZERO);
        let b = Breaker::new();
        b.failure(&o);
        assert!(b.check().is_ok(), "cool-down over: half-open");
        let o = opts(1, Duration::from_secs(3600));
        b.failure(&o);
        assert!(matches!(b.check(), Err(EtcdError::CircuitOpen { .. })));
    }
}
