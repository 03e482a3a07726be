//! Drawing images from a trained model (SPEC 4 for GBM, SPEC 8 for the additive baseline), in
//! batches, with either initialisation of `x_{N-1}`.
use std::time::Instant;

use crate::device::Device;
use crate::diffusion::additive::{annealed_langevin, AnnealedLangevinConfig};
use crate::diffusion::samplers::{class_average_init, sample, SamplerConfig, SamplerStats};
use crate::diffusion::{NetworkGaussianScore, NetworkScore};
use crate::error::{Error, Result};
use crate::memory_budget;
use crate::rng::{self, stream};
use crate::tensor::Tensor;
use crate::train::{Objective, ScoreModel};

crate::named::value_names! {
    /// How `x_{N-1}` is drawn (SPEC 4).
    pub enum InitKind {
        /// `exp(mu_hat + sigma_hat z)` per channel, fitted on the training set (GBM only).
        LogNormal = "lognormal" => "exp(mu + sigma z) per channel, fitted on the training set (gbm)",
        /// Each class's mean training image pushed through the forward process; sample `i` gets
        /// class `i mod n_classes`, so a grid's columns line up by class.
        ClassAverage = "class-average" => "each class's mean training image pushed through the forward process",
        /// The middle of the pixel range plus Gaussian noise of the largest `sigma` (additive only).
        Noise = "noise" => "the middle of the pixel range plus noise of the largest sigma (additive)",
    }
}

impl InitKind {
    /// The natural start of a diffusion: log-normal for GBM, noise for the additive baseline.
    pub fn default_for(objective: &Objective) -> Self {
        match objective {
            Objective::Gbm { .. } => Self::LogNormal,
            Objective::Additive { .. } => Self::Noise,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct GenerateOptions {
    pub count: usize,
    pub batch: usize,
    pub init: InitKind,
    /// The GBM sampler (ADLS, ASAMS or Algorithm 1) and its knobs; its seed seeds everything.
    pub sampler: SamplerConfig,
    /// Annealed Langevin steps and step size for the additive baseline.
    pub additive: AnnealedLangevinConfig,
}

/// Where a run of [`generate`] is.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GenerateProgress {
    pub images_done: usize,
    /// Network evaluations done and to do over the whole run.
    pub evals_done: u64,
    pub evals_total: u64,
}

pub struct Generated {
    /// `[count, C, H, W]` on the host, in the model's pixel range (before clamping).
    pub images: Tensor,
    /// The class each sample started from (class-average init).
    pub classes: Option<Vec<usize>>,
    /// Sampler statistics summed over batches (the non-positive fraction over all images).
    pub stats: SamplerStats,
    pub seconds: f64,
}

impl Generated {
    pub fn images_per_second(&self) -> f64 {
        self.images.shape()[0] as f64 / self.seconds.max(1e-9)
    }
}

/// Each batch's own seed, so batches are independent draws yet the whole run is a function of
/// the one seed.
fn batch_seed(seed: u64, batch: usize) -> u64 {
    seed ^ (batch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// Draws `opts.count` images from `model` on its device.
pub fn generate(
    model: &ScoreModel,
    opts: &GenerateOptions,
    progress: &mut dyn FnMut(GenerateProgress),
) -> Result<Generated> {
    validate(model, opts)?;
    let device = model.store.device().clone();
    let evals_per_image_batch = evals_per_batch(model, opts);
    let n_batches = opts.count.div_ceil(opts.batch);
    let evals_total = evals_per_image_batch * n_batches as u64;
    let start = Instant::now();
    let mut images = Vec::with_capacity(opts.count * image_len(model));
    let mut classes = Vec::new();
    let mut stats = SamplerStats::default();
    let mut nonpositive = 0f64;
    for b in 0..n_batches {
        let size = opts.batch.min(opts.count - b * opts.batch);
        let seed = batch_seed(opts.sampler.seed, b);
        let batch_classes: Vec<usize> = (b * opts.batch..b * opts.batch + size)
            .map(|i| i % model.spec.n_classes)
            .collect();
        let evals_before = evals_per_image_batch * b as u64;
        let mut report = |evals: u64| {
            progress(GenerateProgress {
                images_done: b * opts.batch,
                evals_done: evals_before + evals,
                evals_total,
            })
        };
        let (x, s) = sample_batch(model, opts, &batch_classes, seed, &device, &mut report)?;
        images.extend(x.to_vec()?);
        stats.steps += s.steps;
        stats.sign_changes += s.sign_changes;
        stats.replayed_steps += s.replayed_steps;
        nonpositive += s.nonpositive_fraction * size as f64;
        classes.extend(batch_classes);
        report(evals_per_image_batch);
    }
    stats.nonpositive_fraction = nonpositive / opts.count as f64;
    let [c, h, w] = model.spec.image_shape();
    Ok(Generated {
        images: Tensor::from_vec(images, &[opts.count, c, h, w], &Device::Cpu)?,
        classes: (opts.init == InitKind::ClassAverage).then_some(classes),
        stats,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// Refuses options that cannot give finite samples or would not fit in memory, before any work
/// (`generate` runs it; `dml sweep` runs it alone to tell a refused setting from a failed one).
pub fn validate(model: &ScoreModel, opts: &GenerateOptions) -> Result<()> {
    if opts.count == 0 || opts.batch == 0 {
        return Err(Error::invalid(format!(
            "sample: --count {} and --batch {} must be at least 1",
            opts.count, opts.batch
        )));
    }
    match &model.spec.objective {
        Objective::Additive { levels } => {
            opts.additive.validate_for(levels)?;
            if opts.init == InitKind::LogNormal {
                return Err(Error::invalid(
                    "the additive baseline has no log-normal initialisation: use --init noise or class-average",
                ));
            }
        }
        Objective::Gbm { schedule, .. } => {
            opts.sampler.validate_for(schedule)?;
            if opts.init == InitKind::Noise {
                return Err(Error::invalid(
                    "--init noise is for the additive baseline: use lognormal or class-average",
                ));
            }
        }
    }
    let [c, h, w] = model.spec.image_shape();
    memory_budget::ensure_fits(
        &Device::Cpu,
        &format!("sample: --count {} images of {c}x{h}x{w}", opts.count),
        memory_budget::f32_bytes(&[opts.count, c * h * w]),
    )?;
    // The network's activations at the sampling batch, on the model's device.
    let batch = opts.batch.min(opts.count) as u64;
    memory_budget::ensure_fits(
        model.store.device(),
        &format!("sample: --batch {batch}"),
        model.peak_bytes_per_image(false)?.checked_mul(batch),
    )
}

fn image_len(model: &ScoreModel) -> usize {
    model.spec.image_shape().iter().product()
}

fn evals_per_batch(model: &ScoreModel, opts: &GenerateOptions) -> u64 {
    match &model.spec.objective {
        Objective::Gbm { schedule, .. } => opts.sampler.total_steps(schedule.n_levels()),
        Objective::Additive { levels } => {
            (levels.len() as u64).saturating_mul(opts.additive.steps_per_level as u64)
        }
    }
}

/// One batch of samples: the initial draw, then the reverse chain.
fn sample_batch(
    model: &ScoreModel,
    opts: &GenerateOptions,
    classes: &[usize],
    seed: u64,
    device: &Device,
    report: &mut dyn FnMut(u64),
) -> Result<(Tensor, SamplerStats)> {
    let [c, h, w] = model.spec.image_shape();
    let shape = [classes.len(), c, h, w];
    match &model.spec.objective {
        Objective::Gbm {
            schedule,
            parameterisation,
            ..
        } => {
            let x = match opts.init {
                InitKind::LogNormal => model
                    .spec
                    .lognormal
                    .as_ref()
                    .ok_or_else(|| {
                        Error::invalid("the checkpoint holds no log-normal initialisation")
                    })?
                    .sample(&shape, seed, device)?,
                InitKind::ClassAverage | InitKind::Noise => {
                    let means = model.spec.class_means_tensor(device)?;
                    class_average_init(&means, classes, schedule, seed)?
                }
            };
            let mut score = NetworkScore::new(
                |x: &Tensor, levels: &Tensor| model.output_at(x, levels),
                *parameterisation,
            );
            let config = SamplerConfig {
                seed,
                ..opts.sampler
            };
            let mut on_level =
                |p: crate::diffusion::samplers::SamplerProgress| report(p.steps_done);
            sample(&mut score, schedule, &config, x, Some(&mut on_level))
        }
        Objective::Additive { levels } => {
            let x = additive_init(model, opts.init, classes, levels.sigma(0), seed, device)?;
            let mut score =
                NetworkGaussianScore(|x: &Tensor, levels: &Tensor| model.output_at(x, levels));
            let config = AnnealedLangevinConfig {
                seed,
                ..opts.additive
            };
            let per_level = opts.additive.steps_per_level as u64;
            let mut on_level = |i: usize| report((i as u64 + 1) * per_level);
            let (x, replayed_steps) =
                annealed_langevin(&mut score, levels, &config, x, Some(&mut on_level))?;
            let stats = SamplerStats {
                steps: levels.len() as u64 * per_level,
                replayed_steps,
                ..SamplerStats::default()
            };
            Ok((x, stats))
        }
    }
}

/// The additive baseline's start: the middle of the pixel range (or each class's mean image)
/// plus Gaussian noise of the largest level's `sigma`.
fn additive_init(
    model: &ScoreModel,
    init: InitKind,
    classes: &[usize],
    sigma_max: f32,
    seed: u64,
    device: &Device,
) -> Result<Tensor> {
    let d = image_len(model);
    let mid = 0.5 * (model.spec.range.lo + model.spec.range.hi);
    let base = |b: usize, j: usize| match init {
        InitKind::ClassAverage => model.spec.class_means[classes[b] * d + j],
        InitKind::LogNormal | InitKind::Noise => mid,
    };
    let values = (0..classes.len() * d)
        .map(|i| {
            base(i / d, i % d) + sigma_max * rng::normal(seed, stream::SAMPLER_INIT, 0, i as u64)
        })
        .collect();
    let [c, h, w] = model.spec.image_shape();
    Tensor::from_vec(values, &[classes.len(), c, h, w], device)
}
