//! The agent's own memory: how the allocator is set up, and giving memory back to the
//! host after a job.
//!
//! glibc's malloc keeps freed memory in its arenas, and raises its mmap threshold as
//! large blocks are freed (up to 32 MiB), after which big buffers come from the heap
//! and stay in it: a job that streamed a lot of output could leave the agent's RSS
//! tens of MiB above idle for good. So at start-up the agent fixes the thresholds
//! (blocks of 128 KiB and more are mmapped and unmapped on free; the heap's top is
//! returned past 128 KiB free), caps the arenas at two (the runtime is single-threaded;
//! the few blocking threads share the second), and after every job asks malloc to
//! return every free page ([`trim`]).

/// Blocks at least this big are mmapped (and returned on free).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: i32 = 128 * 1024;
/// Free memory at the heap's top beyond this is returned.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_THRESHOLD: i32 = 128 * 1024;
/// malloc arenas: one for the runtime's thread, one shared by the blocking threads.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const ARENA_MAX: i32 = 2;

/// Sets the allocator up (call once, first thing, before threads start).
#[allow(unsafe_code)]
pub fn configure() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; it is called before any thread
    // exists, and the values are in the ranges glibc documents.
    unsafe {
        use nix::libc::{M_ARENA_MAX, M_MMAP_THRESHOLD, M_TRIM_THRESHOLD, mallopt};
        mallopt(M_ARENA_MAX, ARENA_MAX);
        mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD);
    }
}

/// Returns free memory to the host (after a job, whose output came and went).
#[allow(unsafe_code)]
pub fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim walks the allocator's own free lists under its locks; it
    // takes no pointer from us.
    unsafe {
        nix::libc::malloc_trim(0);
    }
}

/// The agent's resident memory (VmRSS) in bytes, when /proc tells it.
pub fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
