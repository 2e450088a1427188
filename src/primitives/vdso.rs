//! The kernel's `clock_gettime`, called without the C library's wrapper.
//!
//! On Linux the kernel maps a small shared object, the vDSO, into every process; its
//! `clock_gettime` reads the clocks from memory, without a system call. The C library's
//! `clock_gettime` calls it through a pointer of its own, and that wrapper is not free: on this
//! project's x86-64 machine a coarse read costs 3.7 ns through glibc and 2.1 ns called directly,
//! and a leased acquire and release read the coarse clock twice (`bench/perf5-lease.md`,
//! Phase 9). With glibc the vDSO is a loaded object named `linux-vdso.so.1`, so `dlsym` finds its
//! function; anywhere else (musl, a static glibc, another architecture, a process started
//! without a vDSO, as under valgrind) the C library's `clock_gettime` is used, which is always
//! correct.

use std::sync::OnceLock;

/// `clock_gettime`'s signature, as the C library and the vDSO both define it.
pub(crate) type ClockGettime = unsafe extern "C" fn(libc::clockid_t, *mut libc::timespec) -> libc::c_int;

/// The fastest `clock_gettime` there is: the vDSO's where it can be found, else the C library's.
/// Resolved once per process.
pub(crate) fn clock_gettime() -> ClockGettime {
    static RESOLVED: OnceLock<ClockGettime> = OnceLock::new();
    *RESOLVED.get_or_init(|| vdso_clock_gettime().unwrap_or(libc::clock_gettime))
}

/// The vDSO's name for `clock_gettime` on this architecture (vdso(7)), where we look for it.
#[cfg(all(target_os = "linux", target_env = "gnu", target_arch = "x86_64"))]
const SYMBOL: Option<&std::ffi::CStr> = Some(c"__vdso_clock_gettime");
#[cfg(all(target_os = "linux", target_env = "gnu", target_arch = "aarch64"))]
const SYMBOL: Option<&std::ffi::CStr> = Some(c"__kernel_clock_gettime");
#[cfg(not(all(target_os = "linux", target_env = "gnu", any(target_arch = "x86_64", target_arch = "aarch64"))))]
const SYMBOL: Option<&std::ffi::CStr> = None;

/// The vDSO's `clock_gettime`, if this process has a vDSO and the C library lets us name it.
#[cfg(all(target_os = "linux", target_env = "gnu", not(target_feature = "crt-static")))]
pub(crate) fn vdso_clock_gettime() -> Option<ClockGettime> {
    let symbol = SYMBOL?;
    // SAFETY: with RTLD_NOLOAD, dlopen only looks for an object already loaded (glibc registers
    // the vDSO under its soname at start-up); it loads nothing and runs no initialiser. The
    // handle is never closed: the vDSO stays mapped for the life of the process anyway.
    let handle = unsafe { libc::dlopen(c"linux-vdso.so.1".as_ptr(), libc::RTLD_NOW | libc::RTLD_NOLOAD) };
    if handle.is_null() {
        return None;
    }
    // SAFETY: `handle` is a live handle from dlopen and `symbol` is NUL-terminated.
    let found = unsafe { libc::dlsym(handle, symbol.as_ptr()) };
    if found.is_null() {
        return None;
    }
    // SAFETY: the kernel's ABI (vdso(7)): on this architecture the vDSO exports `clock_gettime`
    // under this name, with the C library's signature and semantics, and it stays mapped (and
    // the function valid) for the life of the process, forks included.
    Some(unsafe { std::mem::transmute::<*mut libc::c_void, ClockGettime>(found) })
}

/// Without glibc there is no portable way to name the vDSO, and a static glibc's `dlopen` wants
/// the shared libraries at run time (and warns at link time): the C library's wrapper it is.
#[cfg(not(all(target_os = "linux", target_env = "gnu", not(target_feature = "crt-static"))))]
pub(crate) fn vdso_clock_gettime() -> Option<ClockGettime> {
    let _ = SYMBOL;
    None
}

#[cfg(test)]
mod tests {
    use super::{clock_gettime, vdso_clock_gettime, ClockGettime};

    fn read(f: ClockGettime, id: libc::clockid_t) -> u128 {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
        assert_eq!(unsafe { f(id, &mut ts) }, 0);
        ts.tv_sec as u128 * 1_000_000_000 + ts.tv_nsec as u128
    }

    #[test]
    fn the_direct_read_agrees_with_the_c_library() {
        let direct = clock_gettime();
        for _ in 0..1000 {
            let before = read(libc::clock_gettime, libc::CLOCK_MONOTONIC);
            let now = read(direct, libc::CLOCK_MONOTONIC);
            let after = read(libc::clock_gettime, libc::CLOCK_MONOTONIC);
            assert!(before <= now && now <= after, "{before} {now} {after}");
            // The coarse clock is never ahead of the exact one.
            let coarse = read(direct, libc::CLOCK_MONOTONIC_COARSE);
            assert!(coarse <= read(libc::clock_gettime, libc::CLOCK_MONOTONIC));
            assert!(read(libc::clock_gettime, libc::CLOCK_MONOTONIC_COARSE) <= read(direct, libc::CLOCK_MONOTONIC));
        }
    }

    /// Where the kernel mapped a vDSO and glibc is the C library, on the two architectures we name
    /// its symbol for, it is found (so the fast path is the one taken, not only the fallback).
    #[test]
    #[cfg(all(
        target_os = "linux",
        target_env = "gnu",
        not(target_feature = "crt-static"),
        any(target_arch = "x86_64", target_arch = "aarch64")
    ))]
    fn the_vdso_is_found_where_the_kernel_mapped_one() {
        // SAFETY: getauxval has no preconditions.
        let mapped = unsafe { libc::getauxval(libc::AT_SYSINFO_EHDR) } != 0;
        assert_eq!(vdso_clock_gettime().is_some(), mapped);
    }
}
