//! Fresh random inputs, and copies of them to cycle through so that repeats of a small item do
//! not measure the cache (BENCH.md "Method": copies that together exceed 128 MiB, at most 32).
use crate::device::Device;
use crate::error::Result;
use crate::ops;
use crate::rng;
use crate::tensor::Tensor;

/// More than an H100/H200 L2 (and any host's last-level cache here): 2 x 64 MiB.
const ROTATION_BYTES: f64 = 128.0 * 1024.0 * 1024.0;
const MAX_COPIES: usize = 32;

/// The Philox stream of benchmark inputs (any stream works: the values only need to be random).
const BENCH_STREAM: u32 = rng::stream::TEST;

/// Copies of an item's inputs, handed out in turn.
pub struct Rotation<T> {
    sets: Vec<T>,
    next: usize,
}

impl<T> Rotation<T> {
    /// Enough sets of `input_bytes` each to exceed the cache, set `i` made by `make(i)` (use `i`
    /// to draw fresh values).
    pub fn exceeding_cache(input_bytes: f64, make: impl FnMut(u32) -> Result<T>) -> Result<Self> {
        let copies = (ROTATION_BYTES / input_bytes.max(1.0)).ceil() as usize;
        Self::with_copies(copies.clamp(1, MAX_COPIES), make)
    }

    /// `copies` sets (the network items alternate between 2, as the PyTorch side does).
    pub fn with_copies(copies: usize, make: impl FnMut(u32) -> Result<T>) -> Result<Self> {
        let sets = (0..copies.max(1) as u32)
            .map(make)
            .collect::<Result<Vec<T>>>()?;
        Ok(Self { sets, next: 0 })
    }

    /// The next set of inputs.
    pub fn next_set(&mut self) -> &mut T {
        let i = self.next;
        self.next = (i + 1) % self.sets.len();
        &mut self.sets[i]
    }
}

/// Standard normals, draw `draw` of the benchmark stream.
pub fn normal(shape: &[usize], draw: u32, device: &Device) -> Result<Tensor> {
    ops::normal(shape, ops::PhiloxDraw::new(0, BENCH_STREAM, draw), device)
}

/// Uniform in [0.5, 1.5): a positive GBM state.
pub fn positive(shape: &[usize], draw: u32, device: &Device) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    let values = (0..n as u64)
        .map(|i| 0.5 + rng::uniform_closed_open(rng::philox_bits(1, BENCH_STREAM, draw, i)[0]))
        .collect();
    Tensor::from_vec(values, shape, device)
}

/// Uniform in [0, 1): pixel intensities.
pub fn unit(shape: &[usize], draw: u32, device: &Device) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    let values = (0..n as u64)
        .map(|i| rng::uniform_closed_open(rng::philox_bits(4, BENCH_STREAM, draw, i)[0]))
        .collect();
    Tensor::from_vec(values, shape, device)
}

/// `batch` level indices uniform in 0..n_levels, as f32 (the norms' and network's level input).
pub fn levels(batch: usize, n_levels: usize, draw: u32, device: &Device) -> Result<Tensor> {
    let values = (0..batch as u64)
        .map(|b| {
            let bits = rng::philox_bits(2, BENCH_STREAM, draw, b)[0] as u64;
            ((bits * n_levels as u64) >> 32) as f32
        })
        .collect();
    Tensor::from_vec(values, &[batch], device)
}
