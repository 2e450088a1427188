//! With the `tracing` feature: trace events on the slow paths (waiting, giving up, expiry,
//! revocation), carrying key, token and owner, and nothing on the uncontended fast path.
//! Run with `cargo test --features tracing --test tracing_events`.
#![cfg(feature = "tracing")]

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use leasehold::{LockManager, ManualClock};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

/// Keeps every event as "message key=... owner=..." lines.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<String>>>);

struct Line(String);

impl Visit for Line {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.push_str(&format!(" {}={:?}", field.name(), value));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.push_str(&format!(" {}={}", field.name(), value));
    }
}

impl Subscriber for Capture {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut line = Line(String::new());
        event.record(&mut line);
        self.0.lock().unwrap().push(line.0);
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

#[test]
fn slow_paths_are_traced_and_the_fast_path_is_not() {
    let capture = Capture::default();
    let clock = ManualClock::new();
    let locks = LockManager::<String>::builder().clock(clock.clone()).describe_keys().build().unwrap();
    tracing::subscriber::with_default(capture.clone(), || {
        for _ in 0..100 {
            drop(locks.exclusive("fast").try_acquire().unwrap());
        }
        assert!(capture.0.lock().unwrap().is_empty(), "the uncontended path traced: {:?}", capture.0.lock().unwrap());

        let holder = locks.exclusive("k").lease(Duration::from_millis(5)).owner("w1").try_acquire().unwrap();
        let mut waiter = Box::pin(locks.exclusive("k").owner("w2").acquire_async());
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        assert!(waiter.as_mut().poll(&mut cx).is_pending());
        clock.advance(Duration::from_millis(5));
        let g = match waiter.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(g) => g.unwrap(),
            std::task::Poll::Pending => panic!("the expiry did not wake the waiter"),
        };
        locks.revoke("k", g.token()).unwrap();
        assert!(locks.exclusive("k").try_acquire().is_ok());
        drop(holder);
    });
    let lines = capture.0.lock().unwrap().clone();
    let find = |what: &str| {
        lines.iter().find(|l| l.contains(what)).cloned().unwrap_or_else(|| panic!("no {what:?} in {lines:?}"))
    };
    let waiting = find("message=waiting");
    assert!(waiting.contains("key=\"k\"") && waiting.contains("owner=w2"), "{waiting}");
    let expired = find("message=lease expired");
    assert!(expired.contains("owner=w1") && expired.contains("token="), "{expired}");
    assert!(find("message=holding revoked").contains("owner=w2"));
}
