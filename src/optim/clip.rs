//! Global-norm gradient clipping: one norm over all gradients, every gradient scaled by the same
//! factor. The norm is a deterministic reduction (the pattern of `crate::ops::sum`): a fixed
//! number of partial sums per tensor, all in one buffer, summed by one block in a fixed order.
use crate::device::Device;
use crate::error::{Error, Result};
use crate::ops::launch::{launch, with_partials, Arg, LaunchGeometry};
use crate::tensor::Tensor;

/// `sqrt(sum over all gradients of g^2)`. All tensors must be on one device.
pub fn global_norm(grads: &[&Tensor]) -> Result<f32> {
    let Some(first) = grads.first() else {
        return Ok(0.0);
    };
    let device = first.device().clone();
    if let Some(other) = grads.iter().find(|g| !g.device().same(&device)) {
        return Err(Error::DeviceMismatch {
            op: "global_norm",
            a: device.to_string(),
            b: other.device().to_string(),
        });
    }
    if device.is_cpu() {
        let mut total = 0f64;
        for g in grads {
            total += g.host()?.iter().map(|&v| v as f64 * v as f64).sum::<f64>();
        }
        return Ok(total.sqrt() as f32);
    }
    let geometries: Vec<LaunchGeometry> = grads.iter().map(|g| with_partials(g.numel())).collect();
    let n_partials: usize = geometries.iter().map(|g| g.grid[0] as usize).sum();
    let mut partial = Tensor::uninit(&[n_partials], &device)?;
    let mut offset = 0u64;
    for (g, geometry) in grads.iter().zip(&geometries) {
        launch(
            &device,
            "sum_squares_partial_f32",
            *geometry,
            &mut [
                Arg::In(g),
                Arg::Out(&mut partial),
                Arg::U64(offset),
                Arg::U64(g.numel() as u64),
            ],
        )?;
        offset += geometry.grid[0] as u64;
    }
    let total = crate::ops::sum(&partial)?.item()?;
    Ok(total.sqrt())
}

/// The factor that brings a gradient of norm `norm` down to at most `max_norm`: 1 when it is
/// already within, `max_norm / norm` otherwise. A non-finite norm gives 1: the caller checks the
/// norm itself before trusting the step.
pub fn clip_factor(norm: f32, max_norm: f32) -> f32 {
    if norm.is_finite() && norm > max_norm {
        max_norm / norm
    } else {
        1.0
    }
}

/// Scales all gradients in place so their global norm is at most `max_norm`; returns the norm
/// before clipping. (The optimisers can instead take [`clip_factor`] as their `grad_scale`,
/// which saves this pass.)
pub fn clip_grad_norm(grads: &mut [&mut Tensor], max_norm: f32) -> Result<f32> {
    let norm = {
        let views: Vec<&Tensor> = grads.iter().map(|g| &**g).collect();
        global_norm(&views)?
    };
    let factor = clip_factor(norm, max_norm);
    if factor != 1.0 {
        for g in grads.iter_mut() {
            scale_in_place(g, factor)?;
        }
    }
    Ok(norm)
}

/// `x <- alpha * x`.
pub fn scale_in_place(x: &mut Tensor, alpha: f32) -> Result<()> {
    let n = x.numel();
    match x.device().clone() {
        Device::Cpu => {
            x.host_mut()?.iter_mut().for_each(|v| *v *= alpha);
            Ok(())
        }
        dev => launch(
            &dev,
            "scale_in_place_f32",
            LaunchGeometry::elementwise(n),
            &mut [Arg::Out(x), Arg::F32(alpha), Arg::U64(n as u64)],
        ),
    }
}
