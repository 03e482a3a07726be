//! Training score networks: the objective of either diffusion, the model as a checkpoint
//! holds it, the optimiser loop with exact resume, the loss log and the run directory.
mod config;
mod divergence;
mod level_loss;
mod loss_log;
mod model;
mod objective;
mod recipe;
mod run;
mod run_lock;
mod trainer;

pub use config::{OptimizerKind, TrainConfig};
pub use divergence::DivergenceGuard;
pub use level_loss::{level_losses, spread_levels, LevelLoss};
pub use loss_log::{read_losses, LossLog};
pub use model::{ModelSpec, ScoreModel, Weights, EMA_PREFIX, PARAM_PREFIX};
pub use objective::{Diffusion, NoiseDefaults, NoisedInput, Objective, ObjectiveSettings};
pub use recipe::Recipe;
pub use run::{checkpoint_path, loss_log_path, run, run_with, Periodic, RunEnd, RunSummary};
pub use run_lock::{lock_path, RunLock};
pub use trainer::{ResumeChanges, StepReport, Trainer};
