//! The fused denoising score-matching losses: M-DSM for the GBM diffusion (SPEC section 3) and
//! DSM for the additive baseline (SPEC section 8). Each computes the scalar loss and its gradient
//! w.r.t. the network output in one kernel launch, then sums the per-block partials in a fixed
//! order (deterministic).
use super::forward::batch_layout;
use super::score::Parameterisation;
use crate::device::Device;
use crate::error::{Error, Result};
use crate::ops;
use crate::ops::launch::{launch, with_partials, Arg};
use crate::tensor::Tensor;

/// The per-level weight `w_k` of the M-DSM loss (SPEC section 3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum LossWeighting {
    /// `w_k = 1` (paper 001 Eq. 33/38): levels with small `s_k` dominate, their target
    /// `-(1 + z/s_k)` being O(1/s_k).
    Unit,
    /// `w_k = s_k^2` (the NCSN choice): every level contributes O(1). The default until a
    /// measurement says otherwise.
    #[default]
    SkSquared,
}

crate::named::value_names!(LossWeighting {
    Unit = "unit" | "1" => "w_k = 1 (paper 001 Eq. 33): levels with small s_k dominate",
    SkSquared = "sk2" | "s_k^2" => "w_k = s_k^2 (as NCSN): every level contributes O(1)",
});

impl LossWeighting {
    /// The weighting called `name`, as checkpoints store it.
    pub fn parse(name: &str) -> Result<Self> {
        crate::named::parse(name, "loss weighting")
    }

    fn weight(self, s: f32) -> f32 {
        match self {
            Self::Unit => 1.0,
            Self::SkSquared => s * s,
        }
    }
}

/// A loss value and its gradient w.r.t. the network output.
pub struct LossAndGrad {
    /// The scalar loss, a one-element tensor on the output's device (read it with `item()`).
    pub loss: Tensor,
    /// `d loss / d output`, the output's shape.
    pub grad: Tensor,
}

/// Checks the per-sample vector `[B]` against the batch and returns (batch, elements per sample).
fn per_sample_inputs(
    output: &Tensor,
    per_sample: &Tensor,
    op: &'static str,
) -> Result<(usize, usize)> {
    if per_sample.shape().len() != 1 {
        return Err(Error::shape(
            op,
            format!(
                "per-sample levels must be a vector [B]; got {:?}",
                per_sample.shape()
            ),
        ));
    }
    if !per_sample.device().same(output.device()) {
        return Err(Error::DeviceMismatch {
            op,
            a: output.device().to_string(),
            b: per_sample.device().to_string(),
        });
    }
    let (batch, n_per) = batch_layout(output, per_sample.numel(), op)?;
    if batch == 0 {
        return Err(Error::shape(op, "empty batch"));
    }
    Ok((batch, n_per))
}

/// The M-DSM loss `(1/B) sum_b w_k 1/2 ||h - target||^2`, `target = -(1 + z/s_k)` (SPEC 3), and
/// its gradient w.r.t. `output`. `output`, `x_k` and `z` share a shape `[B, ...]`; `s_level` is
/// `[B]`, each sample's `s_k` (see [`super::forward::NoisedBatch`]). With
/// [`Parameterisation::Stein`], `h = x_k * output`.
pub fn mdsm_loss(
    output: &Tensor,
    x_k: &Tensor,
    z: &Tensor,
    s_level: &Tensor,
    weighting: LossWeighting,
    parameterisation: Parameterisation,
) -> Result<LossAndGrad> {
    output.check_same_shape(x_k, "mdsm_loss (output vs x_k)")?;
    output.check_same_shape(z, "mdsm_loss (output vs z)")?;
    let (batch, per_sample) = per_sample_inputs(output, s_level, "mdsm_loss")?;
    let stein = parameterisation == Parameterisation::Stein;
    let inv_batch = 1.0 / batch as f32;
    let dev = output.device();
    let mut grad = Tensor::uninit(output.shape(), dev)?;
    let loss = match dev {
        Device::Cpu => {
            let (out, xk, zs, s) = (output.host()?, x_k.host()?, z.host()?, s_level.host()?);
            let mut total = 0.0f64;
            for (i, g) in grad.host_mut()?.iter_mut().enumerate() {
                let s_b = s[i / per_sample];
                let w = weighting.weight(s_b);
                let target = -(1.0 + zs[i] / s_b);
                let h = if stein { xk[i] * out[i] } else { out[i] };
                let r = h - target;
                total += 0.5 * w as f64 * (r as f64) * (r as f64);
                let gi = w * r * inv_batch;
                *g = if stein { gi * xk[i] } else { gi };
            }
            Tensor::scalar((total / batch as f64) as f32, dev)?
        }
        _ => {
            let n = output.numel();
            let g = with_partials(n);
            let mut partial = Tensor::uninit(&[g.grid[0] as usize], dev)?;
            launch(
                dev,
                "mdsm_loss_f32",
                g,
                &mut [
                    Arg::In(output),
                    Arg::In(x_k),
                    Arg::In(z),
                    Arg::In(s_level),
                    Arg::Out(&mut grad),
                    Arg::Out(&mut partial),
                    Arg::I32((weighting == LossWeighting::SkSquared) as i32),
                    Arg::I32(stein as i32),
                    Arg::F32(inv_batch),
                    Arg::U64(per_sample as u64),
                    Arg::U64(n as u64),
                ],
            )?;
            ops::sum(&partial)?
        }
    };
    Ok(LossAndGrad { loss, grad })
}

/// The additive DSM loss `(1/B) sum_b sigma_b^2/2 ||s + z/sigma_b||^2` (SPEC 8) and its gradient
/// w.r.t. `output` (the Stein score at `x_0 + sigma_b z`). `sigma_level` is `[B]`.
pub fn dsm_loss(output: &Tensor, z: &Tensor, sigma_level: &Tensor) -> Result<LossAndGrad> {
    output.check_same_shape(z, "dsm_loss (output vs z)")?;
    let (batch, per_sample) = per_sample_inputs(output, sigma_level, "dsm_loss")?;
    let inv_batch = 1.0 / batch as f32;
    let dev = output.device();
    let mut grad = Tensor::uninit(output.shape(), dev)?;
    let loss = match dev {
        Device::Cpu => {
            let (out, zs, sig) = (output.host()?, z.host()?, sigma_level.host()?);
            let mut total = 0.0f64;
            for (i, g) in grad.host_mut()?.iter_mut().enumerate() {
                let sigma = sig[i / per_sample];
                let r = out[i] + zs[i] / sigma;
                total += 0.5 * (sigma * sigma) as f64 * (r as f64) * (r as f64);
                *g = sigma * sigma * r * inv_batch;
            }
            Tensor::scalar((total / batch as f64) as f32, dev)?
        }
        _ => {
            let n = output.numel();
            let g = with_partials(n);
            let mut partial = Tensor::uninit(&[g.grid[0] as usize], dev)?;
            launch(
                dev,
                "dsm_loss_f32",
                g,
                &mut [
                    Arg::In(output),
                    Arg::In(z),
                    Arg::In(sigma_level),
                    Arg::Out(&mut grad),
                    Arg::Out(&mut partial),
                    Arg::F32(inv_batch),
                    Arg::U64(per_sample as u64),
                    Arg::U64(n as u64),
                ],
            )?;
            ops::sum(&partial)?
        }
    };
    Ok(LossAndGrad { loss, grad })
}
