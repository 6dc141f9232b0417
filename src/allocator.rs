//! The memory allocator's settings, shared by the `repflow` binary and the benchmarks (both
//! use mimalloc as their global allocator).
//!
//! Why: networks allocate and free tensors of several megabytes every step. mimalloc keeps
//! freed memory for reuse but, by default, returns pages to the kernel 1 s after they are
//! freed, so a training loop kept touching fresh pages: ~20,000 page faults in 12 ResNet-18
//! steps instead of ~500 (`perf stat -e page-faults`), and on a virtual machine each fresh
//! huge page can cost milliseconds. Pages unused for [`PURGE_DELAY_MS`] are still returned,
//! so memory freed when a phase of a run ends does not stay with the process.

/// How long freed memory stays with the process before it is returned to the kernel.
pub const PURGE_DELAY_MS: i64 = 10_000;

/// mimalloc's `mi_option_purge_delay`: its position in `mi_option_e` (`mimalloc.h`), which
/// `libmimalloc-sys` does not name.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Applies the settings; call first in `main`. A `MIMALLOC_PURGE_DELAY` in the environment
/// (mimalloc's own variable) wins.
pub fn configure() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return;
    }
    // SAFETY: sets a process-wide option before the program's threads start; the option is
    // an integer read by mimalloc when it frees pages.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS as _) }
}
