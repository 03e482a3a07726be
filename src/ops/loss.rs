//! The fused denoising score-matching losses (kernels/loss.cu): M-DSM for the GBM diffusion
//! (SPEC section 3) and DSM for the additive baseline (SPEC section 8). Each computes the scalar
//! loss and its gradient w.r.t. the network output in one kernel launch, each block writing the
//! sum of its grid-stride share; the partials are then summed in a fixed order by
//! [`super::sum`], so the loss is deterministic.
use super::cpu_parallel::map_items;
use super::gbm::batch_layout;
use super::launch::{check_same_device, launch, with_partials, Arg};
use crate::device::Device;
use crate::error::{Error, Result};
use crate::tensor::Tensor;

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
    check_same_device(&[output, per_sample], op)?;
    let (batch, n_per) = batch_layout(output, per_sample.numel(), op)?;
    if batch == 0 {
        return Err(Error::shape(op, "empty batch"));
    }
    Ok((batch, n_per))
}

/// What both losses share: the per-sample vector checked against the batch, the gradient
/// allocated, and the dispatch. On the CPU `cpu(grad, per_sample, inv_batch)` fills the gradient
/// and returns the batch's summed loss (samples on the pool's threads, each sample's sum in f64,
/// the samples' sums added in sample order); on a GPU `kernel` takes `output`, the `inputs`, the
/// gradient, one partial sum per block, the loss's own `int` `flags`, `1/B`, the elements per
/// sample and the count, and the partials are summed in a fixed order (deterministic).
struct FusedLoss<'a> {
    op: &'static str,
    kernel: &'static str,
    inputs: &'a [&'a Tensor],
    flags: &'a [i32],
}

impl FusedLoss<'_> {
    fn run(
        &self,
        output: &Tensor,
        per_sample_values: &Tensor,
        cpu: impl FnOnce(&mut [f32], usize, f32) -> Result<f64>,
    ) -> Result<LossAndGrad> {
        let (batch, per_sample) = per_sample_inputs(output, per_sample_values, self.op)?;
        let inv_batch = 1.0 / batch as f32;
        let dev = output.device();
        let mut grad = Tensor::uninit(output.shape(), dev)?;
        let loss = match dev {
            Device::Cpu => {
                let total = cpu(grad.host_mut()?, per_sample, inv_batch)?;
                Tensor::scalar((total / batch as f64) as f32, dev)?
            }
            _ => {
                let n = output.numel();
                let g = with_partials(n);
                let mut partial = Tensor::uninit(&[g.grid[0] as usize], dev)?;
                let mut args = vec![Arg::In(output)];
                args.extend(self.inputs.iter().map(|t| Arg::In(t)));
                args.extend([Arg::Out(&mut grad), Arg::Out(&mut partial)]);
                args.extend(self.flags.iter().map(|&f| Arg::I32(f)));
                args.extend([
                    Arg::F32(inv_batch),
                    Arg::U64(per_sample as u64),
                    Arg::U64(n as u64),
                ]);
                launch(dev, self.kernel, g, &mut args)?;
                super::sum(&partial)?
            }
        };
        Ok(LossAndGrad { loss, grad })
    }
}

/// The M-DSM loss `(1/B) sum_b w_b 1/2 ||h - target||^2` (SPEC section 3) and its gradient
/// w.r.t. `output`, from the noised batch `(x_k, z)`, the per-sample levels `(s_level, t_level)`
/// and the loss's form `(weight_power, stein)`. `output`, `x_k` and `z` share a shape `[B, ...]`; `s_level` is `[B]`, each
/// sample's `s_k`, and `t_level` the `s` of the level the loss is taken at: `s_level` itself for
/// the exact target `-(1 + z/s_b)`, else the target is `-(1 + z s_b / t_b^2)` (the released code's
/// offset, SPEC 3.1). The weight is `w_b = t_b^weight_power` (0, 2 or 4); `h = x_k * output` when
/// `stein` (the network outputs the Stein score), else `h = output`.
pub fn mdsm_loss(
    output: &Tensor,
    (x_k, z): (&Tensor, &Tensor),
    (s_level, t_level): (&Tensor, &Tensor),
    (weight_power, stein): (i32, bool),
) -> Result<LossAndGrad> {
    output.check_same_shape(x_k, "mdsm_loss (output vs x_k)")?;
    output.check_same_shape(z, "mdsm_loss (output vs z)")?;
    s_level.check_same_shape(t_level, "mdsm_loss (s_level vs t_level)")?;
    if ![0, 2, 4].contains(&weight_power) {
        return Err(Error::invalid(format!(
            "mdsm_loss: weight power {weight_power} (0, 2 or 4)"
        )));
    }
    let loss = FusedLoss {
        op: "mdsm_loss",
        kernel: "mdsm_loss_f32",
        inputs: &[x_k, z, s_level, t_level],
        flags: &[weight_power, stein as i32],
    };
    loss.run(output, s_level, |grad, per_sample, inv_batch| {
        let (out, xk, zs) = (output.host()?, x_k.host()?, z.host()?);
        let (s, t) = (s_level.host()?, t_level.host()?);
        let per_sample_totals = map_items(grad, per_sample, |b, grad_b| {
            let (s_b, t_b) = (s[b], t[b]);
            let t2 = t_b * t_b;
            let w = match weight_power {
                4 => t2 * t2,
                2 => t2,
                _ => 1.0,
            };
            let at = b * per_sample;
            let mut total = 0.0f64;
            for (j, g) in grad_b.iter_mut().enumerate() {
                let i = at + j;
                let target = if t_b == s_b {
                    -(1.0 + zs[i] / s_b)
                } else {
                    -(1.0 + zs[i] * s_b / t2)
                };
                let h = if stein { xk[i] * out[i] } else { out[i] };
                let r = h - target;
                total += 0.5 * w as f64 * (r as f64) * (r as f64);
                let gi = w * r * inv_batch;
                *g = if stein { gi * xk[i] } else { gi };
            }
            total
        });
        Ok(per_sample_totals.iter().sum())
    })
}

/// The additive DSM loss `(1/B) sum_b sigma_b^2/2 ||s + z/sigma_b||^2` (SPEC section 8) and its
/// gradient w.r.t. `output` (the Stein score at `x_0 + sigma_b z`). `sigma_level` is `[B]`.
pub fn dsm_loss(output: &Tensor, z: &Tensor, sigma_level: &Tensor) -> Result<LossAndGrad> {
    output.check_same_shape(z, "dsm_loss (output vs z)")?;
    let loss = FusedLoss {
        op: "dsm_loss",
        kernel: "dsm_loss_f32",
        inputs: &[z, sigma_level],
        flags: &[],
    };
    loss.run(output, sigma_level, |grad, per_sample, inv_batch| {
        let (out, zs, sig) = (output.host()?, z.host()?, sigma_level.host()?);
        let per_sample_totals = map_items(grad, per_sample, |b, grad_b| {
            let sigma = sig[b];
            let at = b * per_sample;
            let mut total = 0.0f64;
            for (j, g) in grad_b.iter_mut().enumerate() {
                let r = out[at + j] + zs[at + j] / sigma;
                total += 0.5 * (sigma * sigma) as f64 * (r as f64) * (r as f64);
                *g = sigma * sigma * r * inv_batch;
            }
            total
        });
        Ok(per_sample_totals.iter().sum())
    })
}
