//! The GBM kernels (BENCH.md): `gbm_dale_step`, SPEC 4's Dale-Langevin update with its normal
//! drawn in registers, and `mdsm_loss`, SPEC 3's fused loss and gradient with w_k = 1.
use super::rotation::{normal, positive, Rotation};
use super::{BenchConfig, Item, Run};
use crate::device::Device;
use crate::diffusion::loss::{mdsm_loss, LossWeighting};
use crate::diffusion::samplers::{DaleVariant, PhiloxDraw, StepCoefficients};
use crate::diffusion::Parameterisation;
use crate::error::Result;
use crate::ops;
use crate::rng;
use crate::tensor::Tensor;

pub(super) const KEY_ROOTS: &[&str] = &["gbm_dale_step", "mdsm_loss"];

/// BENCH.md's step: delta_s = 2e-4, sigma = 0.8, mu = sigma^2/2, kappa = 1.
pub(super) const DELTA_S: f32 = 2e-4;
pub(super) const SIGMA: f32 = 0.8;
pub(super) const KAPPA: f32 = 1.0;

/// The Dale-Langevin coefficients of BENCH.md's step (SPEC 4, the derived drift).
pub(super) fn dale_coefficients() -> StepCoefficients {
    StepCoefficients::dale(
        SIGMA,
        0.5 * SIGMA * SIGMA,
        DELTA_S,
        KAPPA,
        DaleVariant::Derived,
    )
}

pub(super) fn items(cfg: &BenchConfig) -> Vec<Item> {
    let images = cfg.elementwise_images;
    let n = images * IMAGE_ELEMENTS;
    let (d1, d2) = (cfg.device.clone(), cfg.device.clone());
    vec![
        // x and h read, x written; z drawn in registers.
        Item::new(
            format!("gbm_dale_step/{n}"),
            4.0 * 3.0 * n as f64,
            6.0 * n as f64,
            move || dale(images, &d1),
        ),
        // h and z read, dh written; per-sample s_k, w_k and the scalar loss neglected.
        Item::new(
            format!("mdsm_loss/{n}"),
            4.0 * 3.0 * n as f64,
            8.0 * n as f64,
            move || mdsm(images, &d2),
        ),
    ]
}

/// The element-wise items work on images of 28x28 (BENCH.md `--elementwise-batch`).
pub(super) const IMAGE_ELEMENTS: usize = 28 * 28;

/// Input sets of `images` images each (two of them read per element, hence the bytes), rotated
/// through more memory than the caches hold; `make(shape, i)` builds set `i`.
fn image_inputs<T>(
    images: usize,
    mut make: impl FnMut(&[usize], u32) -> Result<T>,
) -> Result<Rotation<T>> {
    let shape = [images, 1, 28, 28];
    let bytes = 8.0 * (images * IMAGE_ELEMENTS) as f64;
    Rotation::exceeding_cache(bytes, |i| make(&shape, i))
}

fn dale(images: usize, device: &Device) -> Result<Run> {
    let mut inputs = image_inputs(images, |shape, i| {
        Ok((
            positive(shape, 2 * i, device)?,
            normal(shape, 2 * i + 1, device)?,
        ))
    })?;
    let coefficients = dale_coefficients();
    let mut scalars = coefficients.scalars(device, PhiloxDraw::sampler(0, 0))?;
    let mut step = 0u32;
    Ok(Box::new(move || {
        let (x, h) = inputs.next_set();
        step = step.wrapping_add(1);
        // The scalars written in place, as the sampler does before each step.
        coefficients.write(&mut scalars, step)?;
        ops::gbm_dale_step(x, h, &scalars)
    }))
}

/// `s_k = sigma sqrt(k/N)` for random k in 1..N-1, N = 1000 (the constant schedule's s_k).
fn random_s_levels(images: usize, draw: u32, device: &Device) -> Result<Tensor> {
    const N: u64 = 1000;
    let s = (0..images as u64)
        .map(|b| {
            let bits = rng::philox_bits(3, rng::stream::TEST, draw, b)[0] as u64;
            let k = 1 + ((bits * (N - 1)) >> 32);
            SIGMA * (k as f32 / N as f32).sqrt()
        })
        .collect();
    Tensor::from_vec(s, &[images], device)
}

fn mdsm(images: usize, device: &Device) -> Result<Run> {
    let mut inputs = image_inputs(images, |shape, i| {
        Ok((
            normal(shape, 3 * i, device)?,
            // x_k: read only by the Stein parameterisation, not by this one.
            positive(shape, 3 * i + 1, device)?,
            normal(shape, 3 * i + 2, device)?,
            random_s_levels(images, i, device)?,
        ))
    })?;
    Ok(Box::new(move || {
        let (h, x_k, z, s) = inputs.next_set();
        mdsm_loss(h, x_k, z, s, LossWeighting::Unit, Parameterisation::H).map(drop)
    }))
}
