//! A count of the bytes held by the tensors one thread makes, and its high-water mark, so that
//! benchmarks can report the memory a step needs and the cli can check that a batch fits.
//!
//! Every tensor adds its storage size to its making thread's count when it is made and
//! subtracts it from its dropping thread's count when it is dropped. The count is per thread
//! because a measurement must see only the step it measures: with one process-wide count, any
//! other thread making or dropping tensors meanwhile (the test harness runs tests side by side)
//! moved the mark, and a test that measured a 4 MiB tensor saw 3.9 MiB. Tensors are made on the
//! thread that runs the op (the cpu backend's pool threads write into slices of an output made
//! before), so one thread's count covers a whole step. It covers host and GPU storage alike and
//! leaves out scratch buffers that are not tensors (the cpu convolution's im2col columns, a few
//! MB per thread).
use std::cell::Cell;

thread_local! {
    /// Bytes made minus bytes dropped on this thread: negative on a thread that drops tensors
    /// another made, which is why the marks below are read as differences.
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

pub(super) fn allocated(bytes: usize) {
    let live = LIVE.get() + bytes as isize;
    LIVE.set(live);
    PEAK.set(PEAK.get().max(live));
}

pub(super) fn freed(bytes: usize) {
    LIVE.set(LIVE.get() - bytes as isize);
}

/// Bytes held by tensors this thread made and has not seen dropped.
pub fn live_bytes() -> usize {
    LIVE.get().max(0) as usize
}

/// Runs `run` and returns, with its result, the most bytes of tensors this thread held at once
/// during it beyond those alive when it began. Measurements nest: an enclosing one still sees
/// the inner run's peak.
pub fn high_water<T>(run: impl FnOnce() -> T) -> (T, usize) {
    let outer_peak = PEAK.get();
    let base = LIVE.get();
    PEAK.set(base);
    let result = run();
    let peak = PEAK.get();
    PEAK.set(outer_peak.max(peak));
    (result, (peak - base) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::{Device, Tensor};

    fn megabytes(n: usize) -> Tensor {
        Tensor::zeros(&[n << 18], &Device::Cpu).unwrap()
    }

    #[test]
    fn another_thread_does_not_move_the_mark() {
        // The other thread makes and drops 64 MiB at once while this one measures 4 MiB.
        let held = megabytes(8);
        let (other, (_, bytes)) = std::thread::scope(|s| {
            let other = s.spawn(|| {
                for _ in 0..50 {
                    drop(megabytes(64));
                }
            });
            let measured = high_water(|| {
                for _ in 0..50 {
                    drop(megabytes(4));
                }
            });
            (other.join(), measured)
        });
        other.unwrap();
        drop(held);
        assert_eq!(bytes, 4 << 20);
    }

    #[test]
    fn measurements_nest_and_count_tensors_dropped_during_them() {
        let ((), outer) = high_water(|| {
            let a = megabytes(2);
            let ((), inner) = high_water(|| drop(megabytes(3)));
            assert_eq!(inner, 3 << 20);
            drop(a);
            let _b = megabytes(1);
        });
        assert_eq!(outer, 5 << 20);
    }
}
