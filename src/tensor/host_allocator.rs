//! Tuning of the C allocator that holds every cpu tensor (and the host side of every transfer).
//!
//! The cpu backend frees and allocates tensors of the same few sizes on every op: a paper-preset
//! activation at batch 8 is 3.2 MB. glibc serves such blocks with a fresh `mmap` and returns
//! them with `munmap`, or trims the freed top of its heap, so every op paid again for the kernel
//! to hand out and zero new pages (13% of a paper training step in `clear_page`). Keeping freed
//! memory in the process for reuse made `dml bench`'s paper training step 7% and its sampler
//! step 27% faster (benches/RESULTS.md). The process holds on to its peak instead of giving
//! memory back between ops, which is what a training or sampling run wants.

/// Blocks up to this size come from the heap, not from `mmap` (glibc's own upper limit).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: i32 = 32 << 20;
/// Freed memory at the top of the heap is given back only beyond this much.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_THRESHOLD: i32 = 1 << 30;

/// Makes the allocator keep freed memory for reuse; called once at the start of a command. A
/// no-op where the C library is not glibc.
pub fn retain_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes two of the allocator's thresholds; it is called before any
    // thread of ours allocates, and glibc serialises it with allocation in any case.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
    }
}
