//! The one sync shim: every atomic the crate uses comes from here, and every cell, lock and
//! thread primitive of the lock protocol (slots, shards, the wait queue, the wheel), so the code
//! that loom explores is the code that ships.
//!
//! Normally these are `std` and `parking_lot`; under `--cfg leasehold_loom` (a crate-specific cfg,
//! declared in `Cargo.toml`'s check-cfg, so it switches loom on in this crate and nowhere else)
//! they are loom's model-checked twins.
//!
//! Outside the shim, on purpose, and never seen by loom: the atomics of [`untracked`] (below);
//! the reaper and audit threads with their handles and the reaper handle's mutex (no background
//! thread exists under loom: models drive expiry themselves); the event bus's subscriber list and
//! a `Fenced` resource's mutex (observation, and a user-side resource, neither part of the lock
//! table); the `ManualClock`'s listener list; and `Arc`s that only own memory.

#![deny(unsafe_code)]

/// Atomics that are `std`'s under loom too, by design: observation counters and gauges (metrics,
/// event-drop counts, the bounded slot count, the guard's `managed` flag, the reaper's shutdown
/// flag), whose values order no other memory access of the lock protocol, so a loom model would
/// only multiply its executions by exploring them; and the guard's service pointer, which
/// publishes only the guard's own boxed cell (a `std` `OnceLock`, not modelled either). Anything that publishes or protects data goes
/// through the modelled types above; every other file takes its atomics from here, never from
/// `std::sync::atomic` directly.
pub(crate) mod untracked {
    pub(crate) use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
}

#[cfg(not(leasehold_loom))]
mod imp {
    pub(crate) use std::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, AtomicU8, Ordering};
    pub(crate) use std::sync::Arc;
    pub(crate) use std::thread;

    /// A short pause in a spin loop.
    #[inline]
    pub(crate) fn spin_loop() {
        std::hint::spin_loop();
    }

    /// A mutex without poisoning (`parking_lot`'s), behind the same API as the loom twin.
    #[derive(Debug, Default)]
    pub(crate) struct Mutex<T>(parking_lot::Mutex<T>);

    pub(crate) type MutexGuard<'a, T> = parking_lot::MutexGuard<'a, T>;

    impl<T> Mutex<T> {
        pub(crate) const fn new(value: T) -> Self {
            Self(parking_lot::const_mutex(value))
        }

        #[inline]
        pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
            self.0.lock()
        }
    }

    /// `UnsafeCell` with loom's closure API, so that loom can check every access.
    #[derive(Debug)]
    pub(crate) struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

    impl<T> UnsafeCell<T> {
        pub(crate) const fn new(value: T) -> Self {
            Self(std::cell::UnsafeCell::new(value))
        }

        #[inline]
        pub(crate) fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
            f(self.0.get())
        }

        #[inline]
        pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
            f(self.0.get())
        }
    }

    /// Parks the current thread until unparked or until `timeout` passes (spurious wake-ups
    /// allowed; callers re-check their condition).
    pub(crate) fn park(timeout: Option<std::time::Duration>) {
        match timeout {
            Some(t) => std::thread::park_timeout(t),
            None => std::thread::park(),
        }
    }
}

#[cfg(leasehold_loom)]
mod imp {
    pub(crate) use loom::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, AtomicU8, Ordering};
    pub(crate) use loom::sync::Arc;
    pub(crate) use loom::thread;

    /// Under loom a spin is a yield, so that loom explores the other threads.
    #[inline]
    pub(crate) fn spin_loop() {
        loom::thread::yield_now();
    }

    #[derive(Debug)]
    pub(crate) struct Mutex<T>(loom::sync::Mutex<T>);

    pub(crate) type MutexGuard<'a, T> = loom::sync::MutexGuard<'a, T>;

    impl<T> Mutex<T> {
        pub(crate) fn new(value: T) -> Self {
            Self(loom::sync::Mutex::new(value))
        }

        pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
            // A poisoned lock means a model thread panicked: loom reports that panic itself.
            self.0.lock().unwrap_or_else(|e| e.into_inner())
        }
    }

    impl<T: Default> Default for Mutex<T> {
        fn default() -> Self {
            Self::new(T::default())
        }
    }

    pub(crate) use loom::cell::UnsafeCell;

    /// Loom has no timed park: a timed park is a plain park, and models never rely on timeouts.
    pub(crate) fn park(_timeout: Option<std::time::Duration>) {
        loom::thread::park();
    }
}

pub(crate) use imp::*;
