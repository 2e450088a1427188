//! The shadow the stress tests check exclusion with: each holder of a key enters the key's shadow
//! while it holds and leaves it before it releases, and entering fails the test if a mode the
//! compatibility matrix forbids beside the new one is held, or a semaphore has more holders than
//! permits. Shared by `stress.rs`, `db_stress.rs` and `hierarchy.rs` through `#[path]`.

#![allow(dead_code)] // each test binary uses what it needs

use std::sync::atomic::{AtomicI64, Ordering};

use leasehold::compat::{compatible, ALL};
use leasehold::Mode;

/// Holders of one key per matrix mode, as the holders report themselves.
#[derive(Default)]
pub struct Shadow {
    held: [AtomicI64; ALL.len()],
}

impl Shadow {
    /// A holder of `mode` begins; panics on a mode held beside it that the matrix forbids.
    pub fn enter(&self, mode: Mode) {
        let g = mode.granule();
        let mine = self.held[g as usize].fetch_add(1, Ordering::SeqCst) + 1;
        for h in ALL {
            let n = self.held[h as usize].load(Ordering::SeqCst) - i64::from(h == g);
            assert!(n <= 0 || compatible(h, g), "{mode} beside {n} holders of {h}");
        }
        if let Mode::Semaphore(n) = mode {
            assert!(mine <= n as i64, "{mine} holders of a {n}-permit semaphore");
        }
    }

    /// A holder of `mode` is about to release.
    pub fn exit(&self, mode: Mode) {
        self.held[mode.granule() as usize].fetch_sub(1, Ordering::SeqCst);
    }
}
