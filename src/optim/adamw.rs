//! AdamW: Adam with decoupled weight decay (Loshchilov & Hutter, 2019), the additive optimiser:
//! its state (moments, step count), warm-up and bias corrections; the element update is
//! [`ops::adamw_step`].
use std::collections::BTreeMap;

use super::{check_pair, LrSchedule, ParamGrad};
use crate::checkpoint::Checkpoint;
use crate::device::Device;
use crate::error::{Error, Result};
use crate::ops::{self, AdamWCoefficients};
use crate::tensor::Tensor;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWConfig {
    pub schedule: LrSchedule,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
}

impl AdamWConfig {
    /// The usual moments (0.9, 0.999), eps 1e-8, no weight decay, no warm-up.
    pub fn new(lr: f32) -> Self {
        Self {
            schedule: LrSchedule::new(lr, 0),
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

/// The first and second moment estimates of one parameter.
struct Moments {
    m: Tensor,
    v: Tensor,
}

pub struct AdamW {
    pub config: AdamWConfig,
    /// Updates taken so far; the next one is number `step + 1` for the bias correction.
    step: u64,
    moments: BTreeMap<String, Moments>,
}

const STEP_KEY: &str = "adamw.step";
const M_PREFIX: &str = "adamw.m/";
const V_PREFIX: &str = "adamw.v/";

impl AdamW {
    pub fn new(config: AdamWConfig) -> Self {
        Self {
            config,
            step: 0,
            moments: BTreeMap::new(),
        }
    }

    /// Updates taken so far.
    pub fn steps_taken(&self) -> u64 {
        self.step
    }

    /// The learning rate the next update will use (after warm-up).
    pub fn current_lr(&self) -> f32 {
        self.config.schedule.lr(self.step)
    }

    /// One update of every parameter, gradients multiplied by `grad_scale` first (1 without
    /// clipping, [`super::clip_factor`] with it). Moments start at zero for a new name.
    pub fn step(&mut self, params: &mut [ParamGrad<'_>], grad_scale: f32) -> Result<()> {
        let c = self.config;
        let t = (self.step + 1) as i32;
        let coefficients = AdamWCoefficients {
            lr: c.schedule.lr(self.step),
            beta1: c.beta1,
            beta2: c.beta2,
            eps: c.eps,
            weight_decay: c.weight_decay,
            bias1: (1.0 - (c.beta1 as f64).powi(t)) as f32,
            bias2: (1.0 - (c.beta2 as f64).powi(t)) as f32,
            grad_scale,
        };
        for p in params.iter_mut() {
            check_pair(p.name, p.param, p.grad)?;
            let moments = self.moments_for(p.name, p.param)?;
            ops::adamw_step(
                p.param,
                p.grad,
                &mut moments.m,
                &mut moments.v,
                &coefficients,
            )?;
        }
        self.step += 1;
        Ok(())
    }

    fn moments_for(&mut self, name: &str, param: &Tensor) -> Result<&mut Moments> {
        if !self.moments.contains_key(name) {
            let m = Tensor::zeros(param.shape(), param.device())?;
            let v = Tensor::zeros(param.shape(), param.device())?;
            self.moments.insert(name.to_string(), Moments { m, v });
        }
        let moments = self.moments.get_mut(name).expect("inserted above");
        if moments.m.shape() != param.shape() || !moments.m.device().same(param.device()) {
            return Err(Error::invalid(format!(
                "AdamW state for '{name}' is {:?} on {}, the parameter {:?} on {}",
                moments.m.shape(),
                moments.m.device(),
                param.shape(),
                param.device()
            )));
        }
        Ok(moments)
    }

    /// Writes the step count and both moments of every parameter into `ckpt`.
    pub fn export_to(&self, ckpt: &mut Checkpoint) -> Result<()> {
        ckpt.put_meta(STEP_KEY, self.step);
        for (name, mo) in &self.moments {
            ckpt.put_tensor(format!("{M_PREFIX}{name}"), &mo.m)?;
            ckpt.put_tensor(format!("{V_PREFIX}{name}"), &mo.v)?;
        }
        Ok(())
    }

    /// Restores the state [`AdamW::export_to`] wrote, onto `device`, replacing the current one.
    pub fn import_from(&mut self, ckpt: &Checkpoint, device: &Device) -> Result<()> {
        let step = ckpt.meta_parse(STEP_KEY)?;
        let mut moments = BTreeMap::new();
        for (key, (shape, _)) in &ckpt.tensors {
            let Some(name) = key.strip_prefix(M_PREFIX) else {
                continue;
            };
            let m = ckpt.tensor(key, shape, device)?;
            let v = ckpt.tensor(&format!("{V_PREFIX}{name}"), shape, device)?;
            moments.insert(name.to_string(), Moments { m, v });
        }
        self.step = step;
        self.moments = moments;
        Ok(())
    }
}
