//! Softmax over the last axis (kernels/softmax.cu, `softmax_rows_f32` and
//! `softmax_rows_backward_f32`): the attention weights w = softmax(q^T k / sqrt(C)) of the DDPM++
//! self-attention, over the keys (docs/SPEC.md section 11 (DDPM++)).
//!
//! For a row x of length L: y = exp(x - max x) / sum exp(x - max x). Subtracting the maximum keeps
//! every exponent at most 0, so logits of any size give no infinity (nor a 0/0). A NaN in a row
//! makes that whole row NaN (it reaches the sum), as do +infinity (inf - inf) and a row that is
//! all -infinity; other rows are unaffected. The backward pass is dx = y (dy - sum(dy y)).
use super::cpu_exp;
use super::cpu_parallel::{batch_workers, for_each_item_chunk};
use super::cpu_simd::avx2_fma;
use super::cpu_sum::{lane_sum, lane_sum_of};
use crate::device::Device;
use crate::error::{Error, Result};
use crate::ops::launch::{launch, Arg, LaunchGeometry};
use crate::tensor::Tensor;

/// Threads per block of the row kernels: one warp per row, so 8 rows per block.
const THREADS: u32 = 256;
const ROWS_PER_BLOCK: usize = THREADS as usize / 32;

/// (rows, L) of `x`, whose last axis is the softmax's: an error for a scalar, an empty last axis,
/// or a size the kernels' 32-bit indexing cannot reach.
fn rows_and_len(x: &Tensor, op: &'static str) -> Result<(usize, usize)> {
    match x.shape().last() {
        Some(&len) if len > 0 => {
            if x.numel() >= i32::MAX as usize {
                return Err(Error::invalid(format!(
                    "{op}: {:?} has 2^31 elements or more, too many for the kernels' 32-bit indexing",
                    x.shape()
                )));
            }
            Ok((x.numel() / len, len))
        }
        _ => Err(Error::shape(
            op,
            format!(
                "{:?}: the softmax runs over the last axis, which must have at least one element",
                x.shape()
            ),
        )),
    }
}

/// One warp per row.
fn per_row(rows: usize) -> LaunchGeometry {
    LaunchGeometry::new(
        [rows.div_ceil(ROWS_PER_BLOCK).max(1) as u32, 1, 1],
        [THREADS, 1, 1],
        0,
    )
}

/// Rows per cpu worker: about this many elements, so short rows are not handed out one by one.
const CPU_ELEMENTS_PER_ITEM: usize = 4096;

/// Runs `f(row, out_row)` over every row of `out` (rows of `len`), spread over the cores.
fn for_each_row(out: &mut [f32], len: usize, f: impl Fn(usize, &mut [f32]) + Sync) {
    let per_item = CPU_ELEMENTS_PER_ITEM.div_ceil(len);
    let items = (out.len() / len).div_ceil(per_item);
    // exp dominates: some tens of operations per element.
    let workers = batch_workers(items, 20 * per_item * len);
    for_each_item_chunk(out, per_item * len, workers, |first, chunk| {
        for (i, row) in chunk.chunks_mut(len).enumerate() {
            f(first * per_item + i, row);
        }
    });
}

/// The largest of `row` (NaN ignored, as `f32::max` does), in 8 lanes: one running maximum
/// waits on every comparison, and was half of the softmax's time. The maximum of a set does
/// not depend on the order it is taken in.
#[inline(always)]
fn row_max(row: &[f32]) -> f32 {
    const LANES: usize = 8;
    let chunks = row.chunks_exact(LANES);
    let tail = chunks
        .remainder()
        .iter()
        .copied()
        .fold(f32::NEG_INFINITY, f32::max);
    let mut lanes = [f32::NEG_INFINITY; LANES];
    for chunk in chunks {
        for (m, &v) in lanes.iter_mut().zip(chunk) {
            *m = m.max(v);
        }
    }
    lanes.into_iter().fold(tail, f32::max)
}

/// One row's softmax, `out = exp(row - max) / sum`.
#[inline(always)]
fn softmax_row(row: &[f32], out: &mut [f32]) {
    let m = row_max(row);
    // v - m <= 0: the branch-free exponential (within 2 ulp) vectorises; the sum is a separate
    // pass in f64 lanes.
    for (o, &v) in out.iter_mut().zip(row) {
        *o = cpu_exp::exp_nonpositive(v - m);
    }
    let sum = lane_sum_of(out, |e| e as f64) as f32;
    out.iter_mut().for_each(|o| *o /= sum);
}

/// [`softmax_row`] with AVX2's 8 lanes where the core has them (ops/cpu_simd.rs): a third less
/// time for DDPM++'s attention rows of 256.
fn softmax_row_wide(row: &[f32], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn wide(row: &[f32], out: &mut [f32]) {
        softmax_row(row, out)
    }
    #[cfg(target_arch = "x86_64")]
    if avx2_fma() {
        // SAFETY: the core runs AVX2 and FMA.
        return unsafe { wide(row, out) };
    }
    softmax_row(row, out)
}

/// The softmax of every row of `x` (its last axis), in `x`'s shape.
pub fn softmax_rows(x: &Tensor) -> Result<Tensor> {
    let (rows, len) = rows_and_len(x, "softmax_rows")?;
    let mut y = Tensor::uninit(x.shape(), x.device())?;
    if rows == 0 {
        return Ok(y);
    }
    match x.device() {
        Device::Cpu => {
            let x = x.host()?;
            for_each_row(y.host_mut()?, len, |r, out| {
                softmax_row_wide(&x[r * len..][..len], out)
            });
        }
        dev => launch(
            dev,
            "softmax_rows_f32",
            per_row(rows),
            &mut [
                Arg::In(x),
                Arg::Out(&mut y),
                Arg::I32(rows as i32),
                Arg::I32(len as i32),
            ],
        )?,
    }
    Ok(y)
}

/// The gradient of [`softmax_rows`] with respect to its input, from its output `y` and the
/// output gradient `dy`: dx = y (dy - sum(dy y)) row by row.
pub fn softmax_rows_backward(y: &Tensor, dy: &Tensor) -> Result<Tensor> {
    let op = "softmax_rows_backward";
    let (rows, len) = rows_and_len(y, op)?;
    dy.check_same_shape(y, op)?;
    let mut dx = Tensor::uninit(y.shape(), y.device())?;
    if rows == 0 {
        return Ok(dx);
    }
    match y.device() {
        Device::Cpu => {
            let (y, dy) = (y.host()?, dy.host()?);
            for_each_row(dx.host_mut()?, len, |r, out| {
                let (y, dy) = (&y[r * len..][..len], &dy[r * len..][..len]);
                let dot = lane_sum(y, dy, |a, b| a as f64 * b as f64) as f32;
                for ((o, &y), &g) in out.iter_mut().zip(y).zip(dy) {
                    *o = y * (g - dot);
                }
            });
        }
        dev => launch(
            dev,
            "softmax_rows_backward_f32",
            per_row(rows),
            &mut [
                Arg::In(y),
                Arg::In(dy),
                Arg::Out(&mut dx),
                Arg::I32(rows as i32),
                Arg::I32(len as i32),
            ],
        )?,
    }
    Ok(dx)
}
