//! `dml train`: train a score network, with checkpoints, exact resume, a progress bar and a CSV
//! loss log.
use std::path::{Path, PathBuf};

use clap::Args;

use super::progress::Progress;
use super::stop;
use super::train_eval::{
    best_checkpoint_path, eval_csv_path, training_plot_path, EvalEveryArgs, TrainEval,
};
use super::train_resume::resume_changes;
use crate::checkpoint::Checkpoint;
use crate::data::{Dataset, PixelRange, Split};
use crate::device::Device;
use crate::diffusion::loss::{LossTarget, LossWeighting};
use crate::diffusion::{Parameterisation, SigmaShape};
use crate::error::{Error, Result};
use crate::nn::Preset;
use crate::ops::ConvPrecision;
use crate::optim::LrDecay;
use crate::train::{
    self, checkpoint_path, Diffusion, ModelSpec, ObjectiveSettings, OptimizerKind, Periodic,
    Recipe, RunEnd, RunLock, TrainConfig, Trainer,
};

const DEFAULT_STEPS: u64 = 2000;
const DEFAULT_DATA: &str = "fashion-mnist";

#[derive(Args, Debug, Clone)]
pub struct TrainArgs {
    /// Training data: shapes (built in), fashion-mnist, mnist, kmnist, cifar10 (looked for in
    /// $DML_DATA_DIR, /usr/share/datasets, ./data), or a directory of IDX / CIFAR-10 files
    /// [default: fashion-mnist; on --resume, the run's own].
    #[arg(long)]
    pub data: Option<String>,
    /// Use only the first N training images (quick experiments) [on --resume, the run's own].
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
    /// The level the loss is taken at (gbm; SPEC section 3.1).
    #[arg(long, value_enum, default_value_t = LossTarget::Exact)]
    pub target: LossTarget,
    /// A named set of defaults (options given on the command line win; documented in
    /// src/train/recipe.rs with where each number comes from).
    #[arg(long, value_enum)]
    pub recipe: Option<Recipe>,
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
    /// What the learning rate does after the warm-up.
    #[arg(long, value_enum, default_value_t = LrDecay::Constant)]
    pub lr_decay: LrDecay,
    /// The step at which a cosine decay reaches --lr-final [default: --steps; on --resume, the
    /// run's own, which may change].
    #[arg(long)]
    pub lr_decay_steps: Option<u64>,
    /// The learning rate a cosine decay ends at.
    #[arg(long, default_value_t = 0.0)]
    pub lr_final: f32,
    /// AdamW's decoupled weight decay.
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f32,
    /// Clip the global gradient norm to this value (0: no clipping).
    #[arg(long, default_value_t = 1.0)]
    pub clip: f32,
    /// Decay of the exponential moving average of the weights (sampled from by default).
    #[arg(long, default_value_t = 0.999)]
    pub ema: f32,
    /// Shorter averages at first: the update after step n uses min(--ema, (1 + n)/(10 + n)), so
    /// the average is not dominated by the random initial weights early in a run.
    #[arg(long)]
    pub ema_warmup: bool,
    /// Arithmetic of the convolutions (all three passes), stored in the checkpoint: fp32, or
    /// tf32 or bf16 operands on tensor cores [default: tf32 on cuda, fp32 on cpu and emu; on
    /// --resume, the run's own, which a different value may not change].
    #[arg(long, value_enum)]
    pub precision: Option<ConvPrecision>,
    /// Seeds initialisation, data order, levels and noise: same seed, same run.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Steps between checkpoints (also written at the end and on Ctrl-C).
    #[arg(long, default_value_t = 500)]
    pub checkpoint_every: u64,
    #[command(flatten)]
    pub eval: EvalEveryArgs,
    /// Run directory: checkpoint.safetensors and loss.csv go here
    /// [default: runs/<data>-<preset>-<diffusion>].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Continue the run in --out from its checkpoint. Its settings are kept: an option that
    /// contradicts them is an error. --steps, --checkpoint-every, --lr, --warmup and
    /// --lr-decay-steps may change (their own values give the same weights as an uninterrupted
    /// run).
    #[arg(long)]
    pub resume: bool,
    /// The options given on the command line (clap ids), so that a resumed run can tell them
    /// from defaults; filled by [`super::parse`].
    #[arg(skip)]
    pub given: Vec<String>,
}

impl TrainArgs {
    /// Whether the option with clap id `flag` was given on the command line.
    pub fn was_given(&self, flag: &str) -> bool {
        self.given.iter().any(|g| g == flag)
    }

    /// `--data`, or the default for a new run.
    fn data_name(&self) -> &str {
        self.data.as_deref().unwrap_or(DEFAULT_DATA)
    }

    pub fn out_dir(&self) -> PathBuf {
        self.out.clone().unwrap_or_else(|| {
            let name = self.data_name();
            let data = Path::new(name)
                .file_name()
                .map_or(name.to_string(), |n| n.to_string_lossy().into_owned());
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
            target: self.target,
        }
    }

    fn config(&self) -> Result<TrainConfig> {
        let steps = self.steps.unwrap_or(DEFAULT_STEPS);
        let config = TrainConfig {
            optimizer: self.optimizer,
            lr: self.lr,
            warmup_steps: self.warmup,
            lr_decay: self.lr_decay,
            lr_decay_steps: self.lr_decay_steps.unwrap_or(steps),
            lr_final: self.lr_final,
            weight_decay: self.weight_decay,
            clip_norm: (self.clip != 0.0).then_some(self.clip),
            ema_decay: self.ema,
            ema_warmup: self.ema_warmup,
            seed: self.seed,
            checkpoint_every: self.checkpoint_every,
            ..TrainConfig::new(self.batch, steps)
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

/// A run ready to train: the lock of its directory (taken before its checkpoint is read), the
/// trainer `args` describe (new or resumed) and its training data.
struct Start {
    lock: RunLock,
    trainer: Trainer,
    data: Dataset,
}

/// Resumes the run in `args`' directory, on its own data unless `--data` says otherwise.
fn resume(args: &TrainArgs, device: &Device) -> Result<Start> {
    let dir = args.out_dir();
    let path = checkpoint_path(&dir);
    if !path.exists() {
        return Err(Error::file(
            &path,
            "no checkpoint to resume from (train without --resume first)",
        ));
    }
    let lock = RunLock::acquire(&dir)?;
    let ckpt = Checkpoint::load(&path)?;
    let changes = resume_changes(args, &ckpt)?;
    let data_name = match &args.data {
        Some(name) => name.clone(),
        None => ckpt.meta("data.name")?.to_string(),
    };
    let run_images: usize = ckpt.meta_parse("train.examples")?;
    let data = load_data(
        &data_name,
        Split::Train,
        args.max_images.or(Some(run_images)),
    )?;
    let trainer = Trainer::resume_from(&ckpt, &path, &data, device, &changes)?;
    Ok(Start {
        lock,
        trainer,
        data,
    })
}

/// A new run in `args`' directory; everything is checked before the directory is made.
fn start_new(args: &TrainArgs, device: &Device) -> Result<Start> {
    let dir = args.out_dir();
    let exists = || {
        checkpoint_path(&dir).exists().then(|| {
            Error::file(
                checkpoint_path(&dir),
                "a run already exists here: pass --resume to continue it, or choose another \
                 --out",
            )
        })
    };
    if let Some(e) = exists() {
        return Err(e);
    }
    let config = args.config()?;
    let objective = args.objective_settings().objective()?;
    let range = PixelRange::new(args.range_lo, args.range_hi)?;
    let data = load_data(args.data_name(), Split::Train, args.max_images)?;
    let spec = ModelSpec::for_dataset(args.preset, &data, objective, range)?.with_precision(
        args.precision
            .unwrap_or_else(|| ConvPrecision::default_for(device)),
    );
    let lock = RunLock::acquire(&dir)?;
    // Another run may have started here while this one was checking.
    if let Some(e) = exists() {
        return Err(e);
    }
    let trainer = Trainer::new(config, spec, &data, device)?;
    Ok(Start {
        lock,
        trainer,
        data,
    })
}

/// Trains as `args` say; returns the exit code: 0 when the run finished, 128 + the signal when
/// one stopped it (after writing its checkpoint).
pub fn run(device: &Device, args: &TrainArgs) -> Result<u8> {
    let Start {
        lock,
        mut trainer,
        data,
    } = if args.resume {
        resume(args, device)?
    } else {
        start_new(args, device)?
    };
    let dir = lock.dir().to_path_buf();
    trainer.check_step_memory()?;
    print_header(&trainer, &data, device, &dir);
    let mut evaluation = train_eval(args, &trainer, &dir, device)?;
    let mut evaluate = |t: &Trainer| match &mut evaluation {
        Some(e) => e.evaluate(t),
        None => Ok(()),
    };
    let periodic = (args.eval.eval_every > 0).then_some(Periodic {
        every: args.eval.eval_every,
        action: &mut evaluate,
    });
    stop::install();
    let mut progress = Progress::new("train", trainer.config.steps, trainer.steps_done());
    let summary = train::run_with(
        &mut trainer,
        &data,
        &lock,
        stop::flag(),
        &mut |r| progress.update(r.step, || format!("loss {:.4}", r.loss)),
        periodic,
    );
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
    Ok(stop::exit_code().unwrap_or(0))
}

/// The periodic evaluation `--eval-every` asks for, on the run's dataset as `dml eval` finds it
/// (its classifier trained first when none is cached).
fn train_eval(
    args: &TrainArgs,
    trainer: &Trainer,
    dir: &Path,
    device: &Device,
) -> Result<Option<TrainEval>> {
    if args.eval.eval_every == 0 {
        return Ok(None);
    }
    let spec = &trainer.model.spec;
    let evaluation = TrainEval::open(
        &args.eval,
        dir,
        &spec.dataset,
        spec,
        trainer.steps_done(),
        device,
    )?;
    eprintln!(
        "evaluating the EMA weights every {} steps ({} samples): {}, {}, {}",
        args.eval.eval_every,
        args.eval.eval_count,
        eval_csv_path(dir).display(),
        best_checkpoint_path(dir).display(),
        training_plot_path(dir).display()
    );
    Ok(Some(evaluation))
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
        spec.net.precision()
    );
    eprintln!("diffusion {}", spec.objective.summary());
    let c = &trainer.config;
    let decay = match c.lr_decay {
        LrDecay::Constant => String::new(),
        LrDecay::Cosine => format!(", cosine to {} at step {}", c.lr_final, c.lr_decay_steps),
    };
    let ema = match c.ema_warmup {
        true => " with warm-up",
        false => "",
    };
    eprintln!(
        "{} lr {} (warm-up {}{decay}), ema {}{ema}, batch {}, steps {}..{}, seed {}, run dir {}",
        c.optimizer.name(),
        c.lr,
        c.warmup_steps,
        c.ema_decay,
        c.batch_size,
        trainer.steps_done(),
        c.steps,
        c.seed,
        dir.display()
    );
}
