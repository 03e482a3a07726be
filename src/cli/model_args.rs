//! The options of every command that runs a trained network: which of the checkpoint's weights,
//! in which arithmetic.
use std::path::Path;

use clap::Args;

use crate::device::Device;
use crate::error::Result;
use crate::nn::ConvPrecision;
use crate::train::{ScoreModel, Weights};

#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// Which weights of the checkpoint: their EMA or the raw ones.
    #[arg(long, value_enum, default_value_t = Weights::Ema)]
    pub weights: Weights,
    /// Arithmetic of the network's forward convolutions [default: the one the checkpoint was
    /// trained with].
    #[arg(long, value_enum)]
    pub precision: Option<ConvPrecision>,
}

impl Default for ModelArgs {
    /// The command line's defaults: the EMA weights, in the checkpoint's own precision.
    fn default() -> Self {
        Self {
            weights: Weights::Ema,
            precision: None,
        }
    }
}

impl ModelArgs {
    /// The model in the checkpoint file `path`, with the weights and precision asked for.
    pub fn load(&self, path: &Path, device: &Device) -> Result<ScoreModel> {
        ScoreModel::load(path, self.weights, self.precision, device)
    }
}
