//! Exponential moving average of the weights: `ema <- decay * ema + (1 - decay) * w`, the weights
//! that are sampled from (as in NCSN v2). The element update is [`ops::ema_update`].
//!
//! With a warm-up, the decay of the update after `n` optimiser steps is
//! `min(decay, (1 + n) / (10 + n))` (the `num_updates` rule of TensorFlow's
//! `ExponentialMovingAverage`): without it a long average (0.999) still holds a third of the
//! random initial weights after 1000 steps (0.999^1000 = 0.37), and samples drawn from it early
//! in a run are blurred by them.
use std::collections::BTreeMap;

use crate::checkpoint::Checkpoint;
use crate::device::Device;
use crate::error::{Error, Result};
use crate::ops;
use crate::tensor::Tensor;

pub struct Ema {
    pub decay: f32,
    /// Whether early updates use a shorter average (the module's warm-up rule).
    pub warmup: bool,
    weights: BTreeMap<String, Tensor>,
}

const PREFIX: &str = "ema/";

impl Ema {
    pub fn new(decay: f32, warmup: bool) -> Self {
        Self {
            decay,
            warmup,
            weights: BTreeMap::new(),
        }
    }

    /// The decay of the update that follows optimiser step number `step` (counting from 1).
    pub fn decay_at(&self, step: u64) -> f32 {
        if !self.warmup {
            return self.decay;
        }
        let n = step as f64;
        self.decay.min(((1.0 + n) / (10.0 + n)) as f32)
    }

    /// Folds in the weights after optimiser step number `step` (counting from 1). A name seen
    /// for the first time starts as a copy.
    pub fn update<'a>(
        &mut self,
        params: impl IntoIterator<Item = (&'a str, &'a Tensor)>,
        step: u64,
    ) -> Result<()> {
        let decay = self.decay_at(step);
        for (name, w) in params {
            match self.weights.get_mut(name) {
                Some(ema) => {
                    ema.check_same_shape(w, "ema update")
                        .map_err(|e| Error::invalid(format!("EMA of '{name}': {e}")))?;
                    ops::ema_update(ema, w, decay)?;
                }
                None => {
                    self.weights.insert(name.to_string(), ops::copy(w)?);
                }
            }
        }
        Ok(())
    }

    /// The averaged weights by name.
    pub fn weights(&self) -> &BTreeMap<String, Tensor> {
        &self.weights
    }

    pub fn export_to(&self, ckpt: &mut Checkpoint) -> Result<()> {
        for (name, w) in &self.weights {
            ckpt.put_tensor(format!("{PREFIX}{name}"), w)?;
        }
        Ok(())
    }

    /// Restores the averages [`Ema::export_to`] wrote, onto `device`, replacing the current ones.
    pub fn import_from(&mut self, ckpt: &Checkpoint, device: &Device) -> Result<()> {
        let mut weights = BTreeMap::new();
        for (key, (shape, _)) in &ckpt.tensors {
            if let Some(name) = key.strip_prefix(PREFIX) {
                weights.insert(name.to_string(), ckpt.tensor(key, shape, device)?);
            }
        }
        self.weights = weights;
        Ok(())
    }
}
