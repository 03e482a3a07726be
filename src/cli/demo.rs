//! `dml demo`: the README's first command. Trains the tiny preset for a few minutes on the CPU
//! (Fashion-MNIST when installed, the built-in shapes otherwise), samples, writes the images.
use std::path::{Path, PathBuf};

use clap::Args;

use super::model_args::ModelArgs;
use super::sample::{self, SampleArgs, SamplerArgs};
use super::train::{self, TrainArgs};
use super::train_eval::EvalEveryArgs;
use super::train_resume::resume_changes;
use crate::checkpoint::Checkpoint;
use crate::data::Dataset;
use crate::data::Split;
use crate::device::Device;
use crate::diffusion::loss::{LossTarget, LossWeighting};
use crate::diffusion::samplers::{DaleVariant, SamplerKind};
use crate::diffusion::Parameterisation;
use crate::error::{Error, Result};
use crate::generate::InitKind;
use crate::nn::Preset;
use crate::ops::ConvPrecision;
use crate::optim::LrDecay;
use crate::train::{checkpoint_path, Diffusion, OptimizerKind};

/// The demo's schedule: fewer levels than the paper's 1000 so that sampling takes seconds on a
/// CPU; the sampling step covers the same reverse time per level as training's delta = 1/N.
const DEMO_LEVELS: usize = 100;
/// The sampler's settings, chosen by `dml sweep` on demo checkpoints (README, "What the demo
/// reaches"): no annealing of kappa (chi = 1: annealing towards zero noise draws from a
/// sharpened law, which the Frechet distance scores far worse), three inner steps per level
/// (more score better, and cost linearly: three keep the demo within its four minutes), and one
/// terminal step, which with delta_s = 1/N is Tweedie's denoising of the last level's noise
/// (SPEC 4).
const DEMO_INNER_STEPS: usize = 3;
const DEMO_CHI: f32 = 1.0;
const DEMO_TERMINAL_STEPS: usize = 1;
/// The chain starts from each class's mean training image pushed through the forward process
/// (sample `i` from class `i mod 10`), not from one log-normal law per channel: at sigma 0.8 the
/// forward process still holds the images' layout at its last level, which the log-normal start
/// lacks, and the chain then draws some classes far too often (pullovers and shirts, few
/// trousers or dresses). Measured (README, "What the demo reaches"): Frechet 71.1 -> 35.6 at
/// 1000 steps, and longer training helps with it (24.1 at 5000 steps) where it hurt before.
const DEMO_INIT: InitKind = InitKind::ClassAverage;
/// The weights sampled from: an average over about the last 1000 steps, warmed up so that a
/// short run is not dominated by its first weights.
const DEMO_EMA: f32 = 0.999;

#[derive(Args, Debug, Clone)]
pub struct DemoArgs {
    /// Training data [default: fashion-mnist when installed, else shapes (built in)].
    #[arg(long)]
    pub data: Option<String>,
    /// Training steps (batch 32). 1000 take about 3 minutes on 2 CPU cores and give recognisable
    /// Fashion-MNIST items; run again with more steps to continue the same model.
    #[arg(long, default_value_t = 1000)]
    pub steps: u64,
    /// Images to draw.
    #[arg(long, default_value_t = 64)]
    pub count: usize,
    /// Output directory (checkpoint, loss log, samples.png). An existing demo run there is
    /// continued, not restarted; a directory holding another kind of run is refused.
    #[arg(long, default_value = "demo-out")]
    pub out: PathBuf,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Arithmetic of the forward convolutions [default: fp32; when continuing, the run's own].
    #[arg(long, value_enum)]
    pub precision: Option<ConvPrecision>,
}

/// `fashion-mnist` when it can be loaded, else the built-in dataset.
fn default_data() -> String {
    if Dataset::load("fashion-mnist", Split::Test).is_ok() {
        "fashion-mnist".into()
    } else {
        eprintln!(
            "Fashion-MNIST is not installed (`sudo apt-get install dataset-fashion-mnist`); \
             using the built-in shapes dataset"
        );
        "shapes".into()
    }
}

/// Trains, then samples; returns the exit code (128 + signal when a signal stopped training,
/// and then nothing is sampled).
pub fn run(device: &Device, args: &DemoArgs) -> Result<u8> {
    let data = args.data.clone().unwrap_or_else(default_data);
    let continuing = checkpoint_path(&args.out).exists();
    let train_args = TrainArgs {
        data: Some(data),
        max_images: None,
        preset: Preset::Tiny,
        diffusion: Diffusion::Gbm,
        schedule: None,
        levels: Some(DEMO_LEVELS),
        sigma_min: None,
        sigma_max: None,
        weighting: LossWeighting::SkSquared,
        parameterisation: Parameterisation::H,
        target: LossTarget::Exact,
        recipe: None,
        range_lo: 1.0,
        range_hi: 2.0,
        batch: 32,
        steps: Some(args.steps),
        optimizer: OptimizerKind::AdamW,
        lr: 2e-3,
        warmup: 50,
        lr_decay: LrDecay::Constant,
        lr_decay_steps: None,
        lr_final: 0.0,
        weight_decay: 0.0,
        clip: 1.0,
        ema: DEMO_EMA,
        ema_warmup: true,
        seed: args.seed,
        precision: args.precision,
        checkpoint_every: 250,
        out: Some(args.out.clone()),
        resume: continuing,
        eval: EvalEveryArgs::default(),
        // Every setting is the demo's own: continuing a run that differs in any of them is
        // refused (it is not a demo run).
        given: DEMO_SETTINGS.iter().map(|s| s.to_string()).collect(),
    };
    if continuing {
        check_demo_run(&train_args, &args.out)?;
    }
    let code = train::run(device, &train_args)?;
    if code != 0 {
        return Ok(code);
    }
    let sample_args = SampleArgs {
        checkpoint: args.out.clone(),
        sampling: SamplerArgs {
            sampler_preset: None,
            settings: None,
            count: args.count,
            batch: args.count.min(64),
            sampler: SamplerKind::Adls,
            delta_s: 1.0 / DEMO_LEVELS as f32,
            inner_steps: DEMO_INNER_STEPS,
            chi: DEMO_CHI,
            kappa: 1.0,
            terminal_steps: DEMO_TERMINAL_STEPS,
            variant: DaleVariant::Derived,
            init: Some(DEMO_INIT),
            steps_per_level: 1,
            eps: 2e-5,
            seed: args.seed,
            no_graphs: false,
            model: ModelArgs::default(),
        },
        out: args.out.join("samples.png"),
        tensors: None,
        per_row: None,
    };
    sample::run(device, &sample_args)?;
    println!(
        "demo done: samples in {}, loss log in {}",
        sample_args.out.display(),
        crate::train::loss_log_path(&args.out).display()
    );
    Ok(0)
}

/// The options the demo sets that identify a run (see `train_resume`).
const DEMO_SETTINGS: &[&str] = &[
    "preset",
    "diffusion",
    "levels",
    "weighting",
    "parameterisation",
    "range_lo",
    "range_hi",
    "batch",
    "optimizer",
    "lr_decay",
    "weight_decay",
    "clip",
    "ema",
    "ema_warmup",
    "seed",
];

/// An existing run in `dir` is continued only when it is a demo run with these settings.
fn check_demo_run(train_args: &TrainArgs, dir: &Path) -> Result<()> {
    let ckpt = Checkpoint::load(checkpoint_path(dir))?;
    resume_changes(train_args, &ckpt).map(drop).map_err(|e| {
        Error::file(
            dir,
            format!(
                "holds a run that is not this demo's, which `dml demo` will not continue or \
                 overwrite; choose another --out (or continue it with `dml train --resume \
                 --out {}`).\n{e}",
                dir.display()
            ),
        )
    })
}
