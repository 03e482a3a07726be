//! A count of the bytes held by live tensors, and its high-water mark, so that benchmarks can
//! report the memory a step needs.
//!
//! Every tensor adds its storage size when it is made and subtracts it when it is dropped. The
//! count is process-wide (atomics), covers host and GPU storage alike, and leaves out scratch
//! buffers that are not tensors (the cpu convolution's im2col columns, a few MB per thread).
use std::sync::atomic::{AtomicUsize, Ordering};

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

pub(super) fn allocated(bytes: usize) {
    let live = LIVE.fetch_add(bytes, Ordering::Relaxed) + bytes;
    PEAK.fetch_max(live, Ordering::Relaxed);
}

pub(super) fn freed(bytes: usize) {
    LIVE.fetch_sub(bytes, Ordering::Relaxed);
}

/// Bytes held by tensors alive now.
pub fn live_bytes() -> usize {
    LIVE.load(Ordering::Relaxed)
}

/// The most bytes tensors held at once since the last [`reset_peak`] (or since start-up).
pub fn peak_bytes() -> usize {
    PEAK.load(Ordering::Relaxed)
}

/// Starts a new high-water mark at the bytes alive now.
pub fn reset_peak() {
    PEAK.store(LIVE.load(Ordering::Relaxed), Ordering::Relaxed);
}
