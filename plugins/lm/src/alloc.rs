//! Allocator settings for processes that train language models on the CPU (docs/lm-rlhf.md,
//! "Speed").
//!
//! candle allocates a fresh buffer for every tensor and every gradient, and a PPO step on the
//! embedded GPT-2 allocates and frees megabytes of them per mini-batch. glibc serves blocks above
//! its mmap threshold with fresh `mmap`ed pages and returns them on `free`, so the next step
//! page-faults and zero-fills the same amount again (about a tenth of a PPO step in `perf`).
//! Raising the mmap threshold to glibc's maximum (32 MiB) and the trim threshold keeps freed
//! memory in the heap for reuse, at the price of holding up to a few hundred MiB that the process
//! has already used once. The settings are process-wide, so only binaries call this, first thing.

/// Keep freed memory for reuse (glibc on Linux; elsewhere nothing). Returns whether the settings
/// took effect.
pub fn keep_freed_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes allocator parameters; any value is valid for these three
        // (glibc clamps the mmap threshold to its maximum), and no allocation is in flight.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20) == 1
                && libc::mallopt(libc::M_TRIM_THRESHOLD, 256 << 20) == 1
                && libc::mallopt(libc::M_TOP_PAD, 64 << 20) == 1
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}
