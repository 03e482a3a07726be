//! Training score networks (issue 5): the objective of either diffusion, the model as a checkpoint
//! holds it, the optimiser loop with exact resume, the loss log and the run directory.
mod config;
mod loss_log;
mod model;
mod objective;
mod run;
mod trainer;

pub use config::{OptimizerKind, TrainConfig};
pub use loss_log::{read_losses, LossLog};
pub use model::{ModelSpec, ScoreModel, Weights, EMA_PREFIX, PARAM_PREFIX};
pub use objective::{Diffusion, NoiseDefaults, NoisedInput, Objective, ObjectiveSettings};
pub use run::{checkpoint_path, loss_log_path, run, RunEnd, RunSummary};
pub use trainer::{StepReport, Trainer};
