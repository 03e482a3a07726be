//! Philox normals and raw Philox words on every backend (kernels/elementwise.cu: `normal_f32`,
//! `philox_bits_u32`), SPEC section 5; and [`PhiloxDraw`], which names the draw every kernel that
//! uses randomness takes.
use super::cpu_parallel::for_each_element_chunk;
use super::launch::{launch, Arg, LaunchGeometry};
use crate::device::Device;
use crate::error::Result;
use crate::rng;
use crate::tensor::Tensor;

/// Which Philox draw a tensor takes (SPEC section 5): element `i` reads the counter
/// (seed, stream, step, i), the same numbers on every backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PhiloxDraw {
    pub seed: u64,
    /// One of [`crate::rng::stream`].
    pub stream: u32,
    pub step: u32,
}

impl PhiloxDraw {
    pub fn new(seed: u64, stream: u32, step: u32) -> Self {
        Self { seed, stream, step }
    }

    /// The sampler's stream (SPEC section 5) at global sampler step `step`.
    pub fn sampler(seed: u64, step: u32) -> Self {
        Self::new(seed, rng::stream::SAMPLER, step)
    }

    /// The standard normal of element `i`.
    pub fn normal(self, i: u64) -> f32 {
        rng::normal(self.seed, self.stream, self.step, i)
    }

    /// `out[j]` = the standard normal of element `first + j`.
    pub fn fill_normals(self, first: u64, out: &mut [f32]) {
        rng::fill_normals(self.seed, self.stream, self.step, first, out)
    }

    /// The four Philox words of element `i`.
    pub fn bits(self, i: u64) -> [u32; 4] {
        rng::philox_bits(self.seed, self.stream, self.step, i)
    }
}

/// A tensor of standard normals: element `i` is the normal of `draw` for element `i`, the same
/// draw on every backend up to floating-point rounding.
pub fn normal(shape: &[usize], draw: PhiloxDraw, device: &Device) -> Result<Tensor> {
    let mut out = Tensor::uninit(shape, device)?;
    let n = out.numel();
    match device {
        Device::Cpu => fill_normals(out.host_mut()?, draw),
        dev => {
            let [seed, stream, step] = Arg::philox(draw);
            launch(
                dev,
                "normal_f32",
                LaunchGeometry::elementwise(n),
                &mut [Arg::Out(&mut out), seed, stream, step, Arg::U64(n as u64)],
            )?
        }
    }
    Ok(out)
}

/// `out[i]` = the normal of `draw` for element `i`, on every core (each element's value is a
/// function of its index alone).
pub(crate) fn fill_normals(out: &mut [f32], draw: PhiloxDraw) {
    for_each_element_chunk(out, |offset, part| draw.fill_normals(offset as u64, part));
}

/// The four raw Philox words of each of `n` elements, as computed on `device` (for tests that
/// check the generators agree bit for bit).
pub fn philox_words(n: usize, draw: PhiloxDraw, device: &Device) -> Result<Vec<u32>> {
    match device {
        Device::Cpu => Ok((0..n as u64).flat_map(|i| draw.bits(i)).collect()),
        dev => {
            // Words are carried in f32 storage and reinterpreted, never converted.
            let mut out = Tensor::zeros(&[4 * n], dev)?;
            let [seed, stream, step] = Arg::philox(draw);
            launch(
                dev,
                "philox_bits_u32",
                LaunchGeometry::elementwise(n),
                &mut [
                    Arg::OutWords(&mut out),
                    seed,
                    stream,
                    step,
                    Arg::U64(n as u64),
                ],
            )?;
            Ok(out.to_vec()?.into_iter().map(f32::to_bits).collect())
        }
    }
}
