//! Philox normals on every backend (SPEC section 5).
use crate::device::Device;
use crate::error::Result;
use crate::ops::launch::{launch, Arg, LaunchGeometry};
use crate::rng;
use crate::tensor::Tensor;

/// A tensor of standard normals: element `i` is the normal for (seed, stream, step, i), the same
/// draw on every backend up to floating-point rounding.
pub fn normal(
    shape: &[usize],
    seed: u64,
    stream: u32,
    step: u32,
    device: &Device,
) -> Result<Tensor> {
    let mut out = Tensor::uninit(shape, device)?;
    let n = out.numel();
    match device {
        Device::Cpu => {
            for (i, o) in out.host_mut()?.iter_mut().enumerate() {
                *o = rng::normal(seed, stream, step, i as u64);
            }
        }
        dev => launch(
            dev,
            "normal_f32",
            LaunchGeometry::elementwise(n),
            &mut [
                Arg::Out(&mut out),
                Arg::U64(seed),
                Arg::U32(stream),
                Arg::U32(step),
                Arg::U64(n as u64),
            ],
        )?,
    }
    Ok(out)
}

/// The four raw Philox words of each of `n` elements, as computed on `device` (for tests that
/// check the generators agree bit for bit).
pub fn philox_words(
    n: usize,
    seed: u64,
    stream: u32,
    step: u32,
    device: &Device,
) -> Result<Vec<u32>> {
    match device {
        Device::Cpu => Ok((0..n as u64)
            .flat_map(|i| rng::philox_bits(seed, stream, step, i))
            .collect()),
        dev => {
            // Words are carried in f32 storage and reinterpreted, never converted.
            let mut out = Tensor::zeros(&[4 * n], dev)?;
            launch(
                dev,
                "philox_bits_u32",
                LaunchGeometry::elementwise(n),
                &mut [
                    Arg::OutWords(&mut out),
                    Arg::U64(seed),
                    Arg::U32(stream),
                    Arg::U32(step),
                    Arg::U64(n as u64),
                ],
            )?;
            Ok(out.to_vec()?.into_iter().map(f32::to_bits).collect())
        }
    }
}
