//! `dml sample`: draw images from a checkpoint with ADLS, ASAMS or Algorithm 1 (GBM) or annealed
//! Langevin (additive), write a PNG grid and optionally the raw tensors.
use std::path::{Path, PathBuf};

use clap::Args;

use super::model_args::ModelArgs;
use super::paths::check_outputs;
use super::progress::Progress;
use crate::device::Device;
use crate::diffusion::additive::{self, AnnealedLangevinConfig};
use crate::diffusion::samplers::{
    DaleVariant, SamplerConfig, SamplerKind, SamplerPreset, PAPER_CHI, PAPER_DELTA_S,
    PAPER_INNER_STEPS,
};
use crate::error::{Error, Result};
use crate::generate::{generate, GenerateOptions, Generated, InitKind};
use crate::image::{write_grid, ImageShape};
use crate::memory_budget;
use crate::sample_file::SampleFile;
use crate::train::{checkpoint_path, ScoreModel};

#[derive(Args, Debug, Clone)]
pub struct SampleArgs {
    /// A checkpoint file, or a run directory holding checkpoint.safetensors.
    #[arg(long)]
    pub checkpoint: PathBuf,
    #[command(flatten)]
    pub sampling: SamplerArgs,
    /// PNG grid of the samples.
    #[arg(long, default_value = "samples.png")]
    pub out: PathBuf,
    /// Also write the samples (and their start classes) as safetensors (the format
    /// `dml eval --samples` reads).
    #[arg(long)]
    pub tensors: Option<PathBuf>,
    /// Images per row of the grid [default: about the square root of --count].
    #[arg(long)]
    pub per_row: Option<usize>,
}

/// How many images to draw and with which sampler: shared by `dml sample` and `dml eval`.
#[derive(Args, Debug, Clone)]
pub struct SamplerArgs {
    /// The sampler settings the paper's released code ships for a dataset (options given on
    /// the command line win; src/diffusion/samplers/preset.rs cites each number).
    #[arg(long, value_enum)]
    pub sampler_preset: Option<SamplerPreset>,
    /// The sampler settings a `dml sweep` chose: `best` (best_settings.json in the checkpoint's
    /// run directory) or the path of such a file. Options given on the command line win.
    #[arg(long, conflicts_with = "sampler_preset")]
    pub settings: Option<String>,
    /// Number of images.
    #[arg(long, default_value_t = 64)]
    pub count: usize,
    /// Images sampled together.
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    /// The GBM sampler (SPEC section 4).
    #[arg(long, value_enum, default_value_t = SamplerKind::Adls)]
    pub sampler: SamplerKind,
    /// Sampling step delta_s (SPEC 4).
    #[arg(long, default_value_t = PAPER_DELTA_S)]
    pub delta_s: f32,
    /// Inner steps L per level (adls, asams).
    #[arg(long, default_value_t = PAPER_INNER_STEPS)]
    pub inner_steps: usize,
    /// Annealing factor chi: kappa is multiplied by it after each level (adls, asams).
    #[arg(long, default_value_t = PAPER_CHI)]
    pub chi: f32,
    /// kappa at the noisiest level.
    #[arg(long, default_value_t = 1.0)]
    pub kappa: f32,
    /// Extra noise-free steps at level 1 (paper 003's terminal denoising).
    #[arg(long, default_value_t = 0)]
    pub terminal_steps: usize,
    /// Drift of the Dale-Langevin step (adls, em).
    #[arg(long, value_enum, default_value_t = DaleVariant::Derived)]
    pub variant: DaleVariant,
    /// Start of the chain [default: lognormal for gbm, noise for additive].
    #[arg(long, value_enum)]
    pub init: Option<InitKind>,
    /// Additive baseline: Langevin steps T per level.
    #[arg(long, default_value_t = additive::DEFAULT_STEPS_PER_LEVEL)]
    pub steps_per_level: usize,
    /// Additive baseline: step size eps (alpha_i = eps sigma_i^2 / sigma_L^2).
    #[arg(long, default_value_t = additive::DEFAULT_EPS)]
    pub eps: f32,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Launch every kernel of every sampler step instead of capturing one step as a CUDA graph
    /// and replaying it (same samples; for timing comparisons and debugging).
    #[arg(long)]
    pub no_graphs: bool,
    #[command(flatten)]
    pub model: ModelArgs,
}

impl SamplerArgs {
    fn sampler_config(&self) -> Result<SamplerConfig> {
        let mut config = self.sampler.config(
            self.delta_s,
            self.inner_steps,
            self.chi,
            self.variant,
            self.seed,
        );
        config.kappa_start = self.kappa;
        config.terminal_denoise_steps = self.terminal_steps;
        config.graphs = !self.no_graphs;
        config.validate()?;
        Ok(config)
    }

    /// What [`generate`] needs to draw from `model` as these options say.
    pub fn generate_options(&self, model: &ScoreModel) -> Result<GenerateOptions> {
        let init = self
            .init
            .unwrap_or_else(|| InitKind::default_for(&model.spec.objective));
        Ok(GenerateOptions {
            count: self.count,
            batch: self.batch,
            init,
            sampler: self.sampler_config()?,
            additive: AnnealedLangevinConfig {
                steps_per_level: self.steps_per_level,
                eps: self.eps,
                seed: self.seed,
                graphs: !self.no_graphs,
            },
        })
    }
}

/// A checkpoint argument: the file itself, or the run directory holding it.
pub fn resolve_checkpoint(path: &Path) -> PathBuf {
    if path.is_dir() {
        checkpoint_path(path)
    } else {
        path.to_path_buf()
    }
}

/// [`resolve_checkpoint`], and an error naming the path when no checkpoint file is there.
pub fn existing_checkpoint(path: &Path) -> Result<PathBuf> {
    let path = resolve_checkpoint(path);
    if !path.is_file() {
        return Err(Error::file(
            &path,
            "no checkpoint here (a run directory of `dml train`, or its checkpoint file)",
        ));
    }
    Ok(path)
}

pub fn run(device: &Device, args: &SampleArgs) -> Result<()> {
    let path = resolve_checkpoint(&args.checkpoint);
    let mut outputs = vec![("--out", args.out.as_path())];
    outputs.extend(args.tensors.as_deref().map(|t| ("--tensors", t)));
    check_outputs(&outputs, &[&path])?;
    let model = args.sampling.model.load(&path, device)?;
    let opts = args.sampling.generate_options(&model)?;
    ensure_outputs_fit(&model, args)?;
    print_model(&model, device);
    print_sampler(&model, &args.sampling, &opts);
    let generated = sample_with_progress(&model, &opts)?;
    write_outputs(&model, &generated, args)?;
    println!(
        "{} images in {:.1} s: {:.2} images/s",
        args.sampling.count,
        generated.seconds,
        generated.images_per_second()
    );
    if model.spec.objective.diffusion().requires_positive_pixels() {
        println!(
            "sign changes during sampling: {}; final entries not positive: {:.4}%",
            generated.stats.sign_changes,
            100.0 * generated.stats.nonpositive_fraction
        );
    }
    if let Device::Cuda(_) = device {
        println!(
            "sampler steps replayed from a CUDA graph: {} of {}",
            generated.stats.replayed_steps, generated.stats.steps
        );
    }
    Ok(())
}

/// One line on the model about to be sampled from: network, convolution precision, diffusion.
pub fn print_model(model: &ScoreModel, device: &Device) {
    eprintln!(
        "model {} ({} convolutions; {}) on {device}",
        model.spec.net.describe(),
        model.spec.net.precision(),
        model.spec.objective.summary()
    );
}

/// One line on the sampler settings in use (a preset's included), as `--help` names them.
pub fn print_sampler(model: &ScoreModel, args: &SamplerArgs, opts: &GenerateOptions) {
    let settings = match model.spec.objective.diffusion().requires_positive_pixels() {
        true => {
            let c = &opts.sampler;
            format!(
                "{}, delta_s {} inner steps {} chi {} kappa {} terminal steps {}",
                args.sampler,
                c.delta_s,
                c.inner_steps,
                c.chi,
                c.kappa_start,
                c.terminal_denoise_steps
            )
        }
        false => format!(
            "annealed Langevin, {} steps per level, eps {}",
            opts.additive.steps_per_level, opts.additive.eps
        ),
    };
    eprintln!("sampler {settings}, start {}", opts.init);
}

/// [`generate`] with a progress bar over network evaluations.
pub fn sample_with_progress(model: &ScoreModel, opts: &GenerateOptions) -> Result<Generated> {
    let mut bar: Option<Progress> = None;
    let generated = generate(model, opts, &mut |p| {
        // Made at the first report, which comes after the first evaluation: the rate counts from
        // there.
        let bar = bar.get_or_insert_with(|| Progress::new("sample", p.evals_total, p.evals_done));
        bar.update(p.evals_done, || {
            format!("{}/{} images finished", p.images_done, opts.count)
        });
    });
    if let Some(bar) = &bar {
        bar.finish();
    }
    generated
}

/// Pixels around and between the grid's tiles.
const GRID_PADDING: usize = 2;

/// Images per row of the grid: `--per-row`, at most `--count` (more columns would only widen
/// the picture with padding), else about the square root of the count.
fn per_row(args: &SampleArgs) -> usize {
    let count = args.sampling.count;
    args.per_row
        .unwrap_or_else(|| (count as f64).sqrt().ceil() as usize)
        .min(count)
}

/// Refuses a run whose samples and outputs would not fit in memory: the samples twice (drawn and
/// copied out), three more copies for `--tensors` (the file's own, the tensor, the
/// serialisation), and the grid's bytes. Runs before the sampling.
fn ensure_outputs_fit(model: &ScoreModel, args: &SampleArgs) -> Result<()> {
    if args.per_row == Some(0) {
        return Err(Error::invalid("sample: --per-row must be at least 1"));
    }
    let [c, h, w] = model.spec.image_shape();
    let count = args.sampling.count;
    let copies = if args.tensors.is_some() { 5 } else { 2 };
    let samples = memory_budget::f32_bytes(&[count, c * h * w, copies]);
    let (columns, rows) = (per_row(args), count.div_ceil(per_row(args).max(1)));
    let grid_side = |tiles: usize, side: usize| {
        (tiles as u64)
            .checked_mul((side + GRID_PADDING) as u64)?
            .checked_add(GRID_PADDING as u64)
    };
    let grid = grid_side(rows, h)
        .zip(grid_side(columns, w))
        .and_then(|(height, width)| height.checked_mul(width)?.checked_mul(c as u64));
    memory_budget::ensure_fits(
        &Device::Cpu,
        &format!("sample: --count {count} images of {c}x{h}x{w} and their grid"),
        samples.zip(grid).and_then(|(a, b)| a.checked_add(b)),
    )
}

fn write_outputs(model: &ScoreModel, generated: &Generated, args: &SampleArgs) -> Result<()> {
    let [channels, height, width] = model.spec.image_shape();
    let per_row = per_row(args);
    write_grid(
        &args.out,
        &generated.images.to_vec()?,
        ImageShape {
            channels,
            height,
            width,
        },
        per_row,
        GRID_PADDING,
        model.spec.range,
    )?;
    println!("wrote {}", args.out.display());
    if let Some(path) = &args.tensors {
        sample_file(model, generated, args)?.save(path)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

/// The samples with where they came from; sign statistics only for a diffusion whose pixels
/// stay positive (for the others sign changes mean nothing).
fn sample_file(model: &ScoreModel, generated: &Generated, args: &SampleArgs) -> Result<SampleFile> {
    let shape: [usize; 4] = generated.images.shape().try_into().map_err(|_| {
        Error::shape(
            "sample",
            format!("images {:?}, not [n, C, H, W]", generated.images.shape()),
        )
    })?;
    let signs = model.spec.objective.diffusion().requires_positive_pixels();
    Ok(SampleFile {
        classes: generated.classes.clone(),
        range: Some(model.spec.range),
        checkpoint: Some(args.checkpoint.display().to_string()),
        sampler: Some(args.sampling.sampler.name().to_string()),
        seed: Some(args.sampling.seed),
        sign_changes: signs.then_some(generated.stats.sign_changes),
        nonpositive_fraction: signs.then_some(generated.stats.nonpositive_fraction),
        ..SampleFile::new(shape, generated.images.to_vec()?)?
    })
}
