//! Exponential moving average of the weights: `ema <- decay * ema + (1 - decay) * w`, the weights
//! that are sampled from (as in NCSN v2). The element update is [`ops::ema_update`].
use std::collections::BTreeMap;

use crate::checkpoint::Checkpoint;
use crate::device::Device;
use crate::error::{Error, Result};
use crate::ops;
use crate::tensor::Tensor;

pub struct Ema {
    pub decay: f32,
    weights: BTreeMap<String, Tensor>,
}

const PREFIX: &str = "ema/";

impl Ema {
    pub fn new(decay: f32) -> Self {
        Self {
            decay,
            weights: BTreeMap::new(),
        }
    }

    /// Folds the current weights in. A name seen for the first time starts as a copy.
    pub fn update<'a>(
        &mut self,
        params: impl IntoIterator<Item = (&'a str, &'a Tensor)>,
    ) -> Result<()> {
        for (name, w) in params {
            match self.weights.get_mut(name) {
                Some(ema) => {
                    ema.check_same_shape(w, "ema update")
                        .map_err(|e| Error::invalid(format!("EMA of '{name}': {e}")))?;
                    ops::ema_update(ema, w, self.decay)?;
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
