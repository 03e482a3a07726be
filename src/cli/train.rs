//! `dml train`: train a score network, with checkpoints, exact resume, a progress bar and a CSV
//! loss log.
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use clap::Args;

use super::progress::Progress;
use crate::data::{Dataset, PixelRange, Split};
use crate::device::Device;
use crate::diffusion::loss::LossWeighting;
use crate::diffusion::{Parameterisation, SigmaShape};
use crate::error::{Error, Result};
use crate::nn::ncsn::Preset;
use crate::ops::ConvPrecision;
use crate::train::{
    self, checkpoint_path, Diffusion, ModelSpec, ObjectiveSettings, OptimizerKind, RunEnd,
    TrainConfig, Trainer,
};

const DEFAULT_STEPS: u64 = 2000;

#[derive(Args, Debug, Clone)]
pub struct TrainArgs {
    /// Training data: shapes (built in), fashion-mnist, mnist, kmnist, cifar10 (looked for in
    /// $DML_DATA_DIR, /usr/share/datasets, ./data), or a directory of IDX / CIFAR-10 files.
    #[arg(long, default_value = "fashion-mnist")]
    pub data: String,
    /// Use only the first N training images (quick experiments).
    #[arg(long)]
    pub max_images: Option<usize>,
    /// Network size (reference/NETWORK.md section 1).
    #[arg(long, value_enum, default_value_t = Preset::Tiny)]
    pub preset: Preset,
    /// The diffusion the network learns to reverse.
    #[arg(long, value_enum, default_value_t = Diffusion::Gbm)]
    pub diffusion: Diffusion,
    /// Shape of sigma over time [default: constant for gbm, geometric for additive].
    #[arg(long, value_enum)]
    pub schedule: Option<SigmaShape>,
    /// Number of noise levels N [default: 1000 for gbm, 10 for additive].
    #[arg(long)]
    pub levels: Option<usize>,
    /// Smallest sigma [default: 0.8 for gbm, 0.01 for additive]; ignored by a constant schedule.
    #[arg(long)]
    pub sigma_min: Option<f64>,
    /// Largest sigma [default: 0.8 for gbm, 1 for additive].
    #[arg(long)]
    pub sigma_max: Option<f64>,
    /// M-DSM weight w_k (gbm; SPEC section 3).
    #[arg(long, value_enum, default_value_t = LossWeighting::SkSquared)]
    pub weighting: LossWeighting,
    /// What the network outputs (gbm; SPEC section 3).
    #[arg(long, value_enum, default_value_t = Parameterisation::H)]
    pub parameterisation: Parameterisation,
    /// Pixels are mapped to [lo, hi] (SPEC 1; must be positive for gbm).
    #[arg(long, default_value_t = 1.0)]
    pub range_lo: f32,
    #[arg(long, default_value_t = 2.0)]
    pub range_hi: f32,
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    /// Total optimiser steps [default: 2000; on --resume, the run's own count]. A resumed run
    /// continues up to this count.
    #[arg(long)]
    pub steps: Option<u64>,
    /// The optimiser.
    #[arg(long, value_enum, default_value_t = OptimizerKind::AdamW)]
    pub optimizer: OptimizerKind,
    /// Peak learning rate.
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f32,
    /// Linear learning-rate warm-up over this many steps.
    #[arg(long, default_value_t = 100)]
    pub warmup: u64,
    /// AdamW's decoupled weight decay.
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f32,
    /// Clip the global gradient norm to this value (0: no clipping).
    #[arg(long, default_value_t = 1.0)]
    pub clip: f32,
    /// Decay of the exponential moving average of the weights (sampled from by default).
    #[arg(long, default_value_t = 0.999)]
    pub ema: f32,
    /// Arithmetic of the forward convolutions, stored in the checkpoint [default: fp32; on
    /// --resume, the run's own, which a different value may not change].
    #[arg(long, value_enum)]
    pub precision: Option<ConvPrecision>,
    /// Seeds initialisation, data order, levels and noise: same seed, same run.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Steps between checkpoints (also written at the end and on Ctrl-C).
    #[arg(long, default_value_t = 500)]
    pub checkpoint_every: u64,
    /// Run directory: checkpoint.safetensors and loss.csv go here
    /// [default: runs/<data>-<preset>-<diffusion>].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Continue the run in --out from its checkpoint (its settings are kept; --steps may raise
    /// the total). Gives the same weights as an uninterrupted run.
    #[arg(long)]
    pub resume: bool,
}

impl TrainArgs {
    pub fn out_dir(&self) -> PathBuf {
        self.out.clone().unwrap_or_else(|| {
            let data = Path::new(&self.data)
                .file_name()
                .map_or(self.data.clone(), |n| n.to_string_lossy().into_owned());
            PathBuf::from("runs").join(format!("{data}-{}-{}", self.preset, self.diffusion))
        })
    }

    /// The objective these options describe, the diffusion's defaults filling the gaps.
    fn objective_settings(&self) -> ObjectiveSettings {
        ObjectiveSettings {
            diffusion: self.diffusion,
            shape: self.schedule,
            levels: self.levels,
            sigma_min: self.sigma_min,
            sigma_max: self.sigma_max,
            weighting: self.weighting,
            parameterisation: self.parameterisation,
        }
    }

    fn config(&self) -> Result<TrainConfig> {
        let config = TrainConfig {
            optimizer: self.optimizer,
            lr: self.lr,
            warmup_steps: self.warmup,
            weight_decay: self.weight_decay,
            clip_norm: (self.clip != 0.0).then_some(self.clip),
            ema_decay: self.ema,
            seed: self.seed,
            checkpoint_every: self.checkpoint_every,
            ..TrainConfig::new(self.batch, self.steps.unwrap_or(DEFAULT_STEPS))
        };
        config.validate()?;
        Ok(config)
    }
}

/// The training split of `--data`, with a hint when a named dataset is not installed.
pub fn load_data(name: &str, split: Split, max_images: Option<usize>) -> Result<Dataset> {
    let data = Dataset::load(name, split).map_err(|e| {
        if name == "fashion-mnist" {
            Error::invalid(format!(
                "{e}\n  install it with `sudo apt-get install dataset-fashion-mnist`, point \
                 $DML_DATA_DIR at a directory holding fashion-mnist/, or use --data shapes \
                 (built in)"
            ))
        } else {
            e
        }
    })?;
    Ok(match max_images {
        Some(0) => return Err(Error::invalid("--max-images must be at least 1")),
        Some(n) => data.truncated(n),
        None => data,
    })
}

/// Builds or resumes the trainer `args` describe.
pub fn trainer(args: &TrainArgs, data: &Dataset, device: &Device) -> Result<Trainer> {
    let dir = args.out_dir();
    let ckpt = checkpoint_path(&dir);
    if args.resume {
        if !ckpt.exists() {
            return Err(Error::file(
                &ckpt,
                "no checkpoint to resume from (train without --resume first)",
            ));
        }
        return Trainer::resume(&ckpt, data, device, args.steps, args.precision);
    }
    if ckpt.exists() {
        return Err(Error::file(
            &ckpt,
            "a run already exists here: pass --resume to continue it, or choose another --out",
        ));
    }
    let objective = args.objective_settings().objective()?;
    let range = PixelRange::new(args.range_lo, args.range_hi)?;
    let spec = ModelSpec::for_dataset(args.preset, data, objective, range)?
        .with_precision(args.precision.unwrap_or_default());
    Trainer::new(args.config()?, spec, data, device)
}

pub fn run(device: &Device, args: &TrainArgs) -> Result<()> {
    let data = load_data(&args.data, Split::Train, args.max_images)?;
    let mut trainer = trainer(args, &data, device)?;
    let dir = args.out_dir();
    print_header(&trainer, &data, device, &dir);
    let stop = Arc::new(AtomicBool::new(false));
    install_stop_handler(&stop);
    let mut progress = Progress::new("train", trainer.config.steps, trainer.steps_done());
    let summary = train::run(&mut trainer, &data, &dir, &stop, &mut |r| {
        progress.update(r.step, || format!("loss {:.4}", r.loss))
    });
    progress.finish();
    let summary = summary?;
    let rate = summary.steps_run as f64 / summary.seconds.max(1e-9);
    match summary.end {
        RunEnd::Finished => eprintln!(
            "done: {} steps ({} this run, {rate:.2} steps/s); checkpoint {}",
            summary.steps_done,
            summary.steps_run,
            checkpoint_path(&dir).display()
        ),
        RunEnd::Stopped => eprintln!(
            "stopped at step {}; checkpoint saved. Continue with the same command plus --resume",
            summary.steps_done
        ),
    }
    eprintln!("loss log: {}", train::loss_log_path(&dir).display());
    Ok(())
}

fn print_header(trainer: &Trainer, data: &Dataset, device: &Device, dir: &Path) {
    let spec = &trainer.model.spec;
    eprintln!(
        "data {} ({} images, {}x{}x{}), range [{}, {}]",
        data.name, data.n, data.channels, data.height, data.width, spec.range.lo, spec.range.hi
    );
    eprintln!(
        "model {} ({} parameters, {} convolutions) on {device}",
        spec.net.describe(),
        trainer.model.store.num_elements(),
        spec.net.precision
    );
    eprintln!("diffusion {}", spec.objective.summary());
    let c = &trainer.config;
    eprintln!(
        "{} lr {} (warm-up {}), batch {}, steps {}..{}, seed {}, run dir {}",
        c.optimizer.name(),
        c.lr,
        c.warmup_steps,
        c.batch_size,
        trainer.steps_done(),
        c.steps,
        c.seed,
        dir.display()
    );
}

/// Ctrl-C asks the loop to stop after the current step and write a checkpoint; a second Ctrl-C
/// is not caught twice (the handler only sets the flag), so a stuck run can still be killed.
fn install_stop_handler(stop: &Arc<AtomicBool>) {
    let flag = Arc::clone(stop);
    let installed = ctrlc::set_handler(move || {
        if flag.swap(true, std::sync::atomic::Ordering::Relaxed) {
            std::process::exit(130);
        }
        eprintln!("\nstopping after this step; writing a checkpoint (Ctrl-C again to abort)");
    });
    if let Err(e) = installed {
        eprintln!(
            "warning: cannot catch Ctrl-C ({e}); a kill loses the steps since the last checkpoint"
        );
    }
}
