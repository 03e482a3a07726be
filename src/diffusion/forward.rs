//! The GBM forward process in closed form (SPEC section 2): `x_k = x_0 * exp(m_k + s_k z)`, with
//! levels drawn uniformly in `{1..N-1}` (SPEC section 3), all randomness from Philox.
use super::schedule::Schedule;
use crate::error::Result;
use crate::ops::{self, PhiloxDraw};
use crate::rng::{self, stream};
use crate::tensor::Tensor;

/// A noised training batch: what the M-DSM loss needs.
pub struct NoisedBatch {
    /// `x_k`, the shape of `x_0`.
    pub x_k: Tensor,
    /// The standard normal `z` with `x_k = x_0 exp(m_k + s_k z)`.
    pub z: Tensor,
    /// The level of each sample.
    pub levels: Vec<usize>,
    /// `s_k` of each sample's level, shape `[B]`, on the batch's device.
    pub s_level: Tensor,
}

/// Levels uniform in `{1..N-1}` for `batch` samples: sample `b` reads Philox
/// (seed, LEVELS, step, b), so the draw does not depend on the device or the batch order.
pub fn draw_levels(batch: usize, schedule: &Schedule, seed: u64, step: u32) -> Vec<usize> {
    let choices = (schedule.n_levels() - 1) as u64;
    (0..batch as u64)
        .map(|b| {
            let bits = rng::philox_bits(seed, stream::LEVELS, step, b)[0] as u64;
            1 + ((bits * choices) >> 32) as usize
        })
        .collect()
}

/// `x_k = x_0 * exp(m_{k_b} + s_{k_b} z)` per sample `b`, with `z` element `i` the normal of
/// `draw` for `i` ([`ops::gbm_forward`]). Returns `(x_k, z)`.
pub fn gbm_forward(
    x0: &Tensor,
    levels: &[usize],
    schedule: &Schedule,
    draw: PhiloxDraw,
) -> Result<(Tensor, Tensor)> {
    for &k in levels {
        schedule.check_level(k, "gbm_forward")?;
    }
    let m: Vec<f32> = levels.iter().map(|&k| schedule.m(k)).collect();
    let s: Vec<f32> = levels.iter().map(|&k| schedule.s(k)).collect();
    ops::gbm_forward(x0, &m, &s, draw)
}

/// One training batch: levels from Philox stream LEVELS, noise from stream FORWARD_NOISE, both
/// keyed by the training step.
pub fn noise_batch(x0: &Tensor, schedule: &Schedule, seed: u64, step: u32) -> Result<NoisedBatch> {
    let levels = draw_levels(batch_size(x0), schedule, seed, step);
    let (x_k, z) = gbm_forward(x0, &levels, schedule, forward_noise(seed, step))?;
    let s_level = per_sample(&levels, |k| schedule.s(k), x0)?;
    Ok(NoisedBatch {
        x_k,
        z,
        levels,
        s_level,
    })
}

/// The samples in a batch `x0` (its leading dimension; 0 for a scalar).
pub(crate) fn batch_size(x0: &Tensor) -> usize {
    x0.shape().first().copied().unwrap_or(0)
}

/// The forward noise of training step `step`: Philox stream FORWARD_NOISE (SPEC 5).
pub(crate) fn forward_noise(seed: u64, step: u32) -> PhiloxDraw {
    PhiloxDraw::new(seed, stream::FORWARD_NOISE, step)
}

/// `value(level)` for each sample's level, as a `[B]` tensor on `x0`'s device.
pub(crate) fn per_sample(
    levels: &[usize],
    value: impl Fn(usize) -> f32,
    x0: &Tensor,
) -> Result<Tensor> {
    let values: Vec<f32> = levels.iter().map(|&k| value(k)).collect();
    Tensor::from_vec(values, &[levels.len()], x0.device())
}
