//! Exponentiated gradient descent, SPEC section 7 (paper 001 Eq. 2):
//! `theta <- theta * exp(-eta * grad * sign(theta))`. Multiplicative, so no weight ever changes
//! sign (Dale's law).
//!
//! A weight that is exactly zero cannot move multiplicatively. Such entries take one additive
//! step `theta <- -eta * grad` (plain SGD), after which their sign is fixed like any other; or
//! start them away from zero with [`signed_log_normal_init`]. Magnitudes stay within the normal
//! f32 range, so a weight never underflows to zero (which would reopen the additive rule). The
//! element update is [`ops::egd_step`].
use super::{check_pair, LrSchedule, ParamGrad};
use crate::checkpoint::Checkpoint;
use crate::device::Device;
use crate::error::Result;
use crate::ops;
use crate::rng::{self, stream};
use crate::tensor::Tensor;

pub struct Egd {
    pub schedule: LrSchedule,
    /// Updates taken so far (the warm-up position).
    step: u64,
}

const STEP_KEY: &str = "egd.step";

impl Egd {
    pub fn new(schedule: LrSchedule) -> Self {
        Self { schedule, step: 0 }
    }

    pub fn steps_taken(&self) -> u64 {
        self.step
    }

    /// The rate `eta` the next update will use.
    pub fn current_lr(&self) -> f32 {
        self.schedule.lr(self.step)
    }

    /// One update of every parameter, gradients multiplied by `grad_scale` first.
    pub fn step(&mut self, params: &mut [ParamGrad<'_>], grad_scale: f32) -> Result<()> {
        let lr = self.current_lr();
        for p in params.iter_mut() {
            check_pair(p.name, p.param, p.grad)?;
            ops::egd_step(p.param, p.grad, lr, grad_scale)?;
        }
        self.step += 1;
        Ok(())
    }

    pub fn export_to(&self, ckpt: &mut Checkpoint) {
        ckpt.put_meta(STEP_KEY, self.step);
    }

    pub fn import_from(&mut self, ckpt: &Checkpoint) -> Result<()> {
        self.step = ckpt.meta_parse(STEP_KEY)?;
        Ok(())
    }
}

/// Weights for EGD that are never zero: magnitude `exp(log_mean + log_std * z)`, sign `+` or `-`
/// with equal probability. Element `i` uses Philox stream `PARAM_INIT` at (seed, step 0, i) for
/// `z` and (seed, step 1, i) for the sign, so give each tensor its own seed.
pub fn signed_log_normal_init(
    shape: &[usize],
    log_mean: f32,
    log_std: f32,
    seed: u64,
    device: &Device,
) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    let values = (0..n as u64)
        .map(|i| {
            let magnitude =
                (log_mean + log_std * rng::normal(seed, stream::PARAM_INIT, 0, i)).exp();
            let negative = rng::philox_bits(seed, stream::PARAM_INIT, 1, i)[0] & 1 == 1;
            if negative {
                -magnitude
            } else {
                magnitude
            }
        })
        .collect();
    Tensor::from_vec(values, shape, device)
}
