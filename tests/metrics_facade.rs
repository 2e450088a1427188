//! With the `metrics` feature, `publish_metrics` reaches whatever recorder the application
//! installed. Run with `cargo test --features metrics --test metrics_facade`.
#![cfg(feature = "metrics")]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use leasehold::LockManager;
use metrics::{Counter, CounterFn, Gauge, GaugeFn, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};

/// A recorder that remembers the last value of every counter and gauge.
#[derive(Default, Clone)]
struct Capture(Arc<Mutex<BTreeMap<String, f64>>>);

struct Cell(String, Capture);

impl CounterFn for Cell {
    fn increment(&self, value: u64) {
        *self.1 .0.lock().unwrap().entry(self.0.clone()).or_default() += value as f64;
    }
    fn absolute(&self, value: u64) {
        self.1 .0.lock().unwrap().insert(self.0.clone(), value as f64);
    }
}

impl GaugeFn for Cell {
    fn increment(&self, value: f64) {
        *self.1 .0.lock().unwrap().entry(self.0.clone()).or_default() += value;
    }
    fn decrement(&self, value: f64) {
        *self.1 .0.lock().unwrap().entry(self.0.clone()).or_default() -= value;
    }
    fn set(&self, value: f64) {
        self.1 .0.lock().unwrap().insert(self.0.clone(), value);
    }
}

impl Recorder for Capture {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(Arc::new(Cell(key.name().to_owned(), self.clone())))
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        let labels: Vec<String> = key.labels().map(|l| format!("{}={}", l.key(), l.value())).collect();
        Gauge::from_arc(Arc::new(Cell(format!("{}{:?}", key.name(), labels), self.clone())))
    }
    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

#[test]
fn published_values_match_the_snapshot() {
    let capture = Capture::default();
    let locks: LockManager<u64> = LockManager::new();
    let held = locks.exclusive(&1).try_acquire().unwrap();
    let _ = locks.exclusive(&1).try_acquire();
    drop(locks.shared(&2).try_acquire().unwrap());
    metrics::with_local_recorder(&capture, || locks.publish_metrics());
    let got = capture.0.lock().unwrap().clone();
    assert_eq!(got["leasehold_acquisitions_total"], 2.0);
    assert_eq!(got["leasehold_acquire_would_block_total"], 1.0);
    assert_eq!(got["leasehold_acquire_attempts_total"], 3.0);
    assert_eq!(got["leasehold_live_holders[]"], 1.0);
    drop(held);
}
