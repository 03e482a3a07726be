//! The additive baseline (SPEC section 8, paper 004): Gaussian noise levels
//! `sigma_1 > ... > sigma_L`, noising `x + sigma_i z`, and annealed Langevin sampling. It shares
//! the network, trainer and kernels with the GBM diffusion so both can be compared on equal terms;
//! its loss is [`super::loss::dsm_loss`].
use super::forward::{batch_size, forward_noise, per_sample};
use super::samplers::{additive_coefficients, MAX_SAMPLER_STEPS};
use super::schedule::{check_level_count, validate_sigma_range, SigmaShape};
use super::score::{GaussianScoreSource, Level};
use crate::device::graph::Replayer;
use crate::error::{Error, Result};
use crate::metadata::MetadataReader;
use crate::ops::{self, PhiloxDraw, StepScalars};
use crate::rng::{self, stream};
use crate::tensor::Tensor;

/// Decreasing noise levels; index 0 is the largest `sigma_1`.
#[derive(Clone, Debug, PartialEq)]
pub struct NoiseLevels {
    shape: SigmaShape,
    sigma_max: f64,
    sigma_min: f64,
    sigmas: Vec<f32>,
}

/// Paper 004's default: geometric from 1 to 0.01 over 10 levels.
pub const DEFAULT_SIGMA_MAX: f64 = 1.0;
pub const DEFAULT_SIGMA_MIN: f64 = 0.01;
pub const DEFAULT_LEVELS: usize = 10;

impl NoiseLevels {
    /// `n_levels` levels from `sigma_max` down to `sigma_min` along `shape` (the curve read from
    /// its noisy end, see [`SigmaShape`]).
    pub fn new(shape: SigmaShape, n_levels: usize, sigma_max: f64, sigma_min: f64) -> Result<Self> {
        if n_levels == 0 {
            return Err(Error::invalid(
                "additive noise levels: at least one level is needed",
            ));
        }
        check_level_count(n_levels, "additive noise levels")?;
        validate_sigma_range(sigma_min, sigma_max, "additive noise levels")?;
        let last = (n_levels - 1).max(1) as f64;
        let sigmas = (0..n_levels)
            .map(|i| shape.value(1.0 - i as f64 / last, sigma_min, sigma_max) as f32)
            .collect();
        Ok(Self {
            shape,
            sigma_max,
            sigma_min,
            sigmas,
        })
    }

    pub fn paper_default() -> Self {
        Self::new(
            SigmaShape::Geometric,
            DEFAULT_LEVELS,
            DEFAULT_SIGMA_MAX,
            DEFAULT_SIGMA_MIN,
        )
        .expect("the paper's constants are valid")
    }

    pub fn len(&self) -> usize {
        self.sigmas.len()
    }
    pub fn is_empty(&self) -> bool {
        self.sigmas.is_empty()
    }
    pub fn sigma(&self, i: usize) -> f32 {
        self.sigmas[i]
    }
    pub fn sigmas(&self) -> &[f32] {
        &self.sigmas
    }

    fn check_index(&self, i: usize, what: &str) -> Result<()> {
        if i >= self.len() {
            return Err(Error::invalid(format!(
                "{what}: noise level {i} out of range ({} levels)",
                self.len()
            )));
        }
        Ok(())
    }

    /// Key/value pairs for checkpoint metadata.
    pub fn describe(&self) -> Vec<(String, String)> {
        vec![
            ("additive.shape".into(), self.shape.name().into()),
            ("additive.levels".into(), self.len().to_string()),
            ("additive.sigma_max".into(), format!("{:?}", self.sigma_max)),
            ("additive.sigma_min".into(), format!("{:?}", self.sigma_min)),
        ]
    }

    pub fn from_describe(pairs: &[(String, String)]) -> Result<Self> {
        let meta = MetadataReader::new("additive", pairs);
        Self::new(
            SigmaShape::parse(meta.text("additive.shape")?)?,
            meta.parse("additive.levels", "a count")?,
            meta.parse("additive.sigma_max", "a number")?,
            meta.parse("additive.sigma_min", "a number")?,
        )
    }
}

/// Level indices uniform in `{0..L-1}`: sample `b` reads Philox (seed, LEVELS, step, b).
pub fn draw_level_indices(batch: usize, levels: &NoiseLevels, seed: u64, step: u32) -> Vec<usize> {
    (0..batch as u64)
        .map(|b| {
            let bits = rng::philox_bits(seed, stream::LEVELS, step, b)[0] as u64;
            ((bits * levels.len() as u64) >> 32) as usize
        })
        .collect()
}

/// `x_0 + sigma_{i_b} z` per sample `b`, `z` element `i` the normal of `draw` for `i`
/// ([`ops::additive_forward`]). Returns `(x_noisy, z)`.
pub fn additive_forward(
    x0: &Tensor,
    indices: &[usize],
    levels: &NoiseLevels,
    draw: PhiloxDraw,
) -> Result<(Tensor, Tensor)> {
    let sigma = indices
        .iter()
        .map(|&i| {
            levels
                .check_index(i, "additive_forward")
                .map(|_| levels.sigma(i))
        })
        .collect::<Result<Vec<f32>>>()?;
    ops::additive_forward(x0, &sigma, draw)
}

/// A noised training batch of the additive baseline: what [`super::loss::dsm_loss`] needs.
pub struct AdditiveNoisedBatch {
    pub x_noisy: Tensor,
    pub z: Tensor,
    pub indices: Vec<usize>,
    /// `sigma` of each sample's level, `[B]`, on the batch's device.
    pub sigma_level: Tensor,
}

/// One training batch: levels from stream LEVELS, noise from FORWARD_NOISE, keyed by the step.
pub fn noise_additive_batch(
    x0: &Tensor,
    levels: &NoiseLevels,
    seed: u64,
    step: u32,
) -> Result<AdditiveNoisedBatch> {
    let indices = draw_level_indices(batch_size(x0), levels, seed, step);
    let (x_noisy, z) = additive_forward(x0, &indices, levels, forward_noise(seed, step))?;
    let sigma_level = per_sample(&indices, |i| levels.sigma(i), x0)?;
    Ok(AdditiveNoisedBatch {
        x_noisy,
        z,
        indices,
        sigma_level,
    })
}

/// Annealed Langevin dynamics (SPEC 8): `T` steps per level with `alpha_i = eps sigma_i^2 / sigma_L^2`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AnnealedLangevinConfig {
    pub steps_per_level: usize,
    pub eps: f32,
    pub seed: u64,
    /// Replay the steps from one captured graph where possible (as [`SamplerConfig::graphs`]).
    pub graphs: bool,
}

/// Paper 004's defaults: `T = 100`, `eps = 2e-5`.
pub const DEFAULT_STEPS_PER_LEVEL: usize = 100;
pub const DEFAULT_EPS: f32 = 2e-5;

impl AnnealedLangevinConfig {
    /// Checks `eps` in (0, [`max_eps`]) and the total steps against [`MAX_SAMPLER_STEPS`].
    pub fn validate_for(&self, levels: &NoiseLevels) -> Result<()> {
        let bound = max_eps(levels);
        if !(self.eps.is_finite() && self.eps > 0.0 && (self.eps as f64) < bound) {
            return Err(Error::invalid(format!(
                "annealed Langevin: eps (--eps) {} must be positive and below {bound:.3e} = \
                 4 sigma_L^2, the smallest noise level's bound; larger steps diverge even with the \
                 exact score (SPEC section 8)",
                self.eps
            )));
        }
        let total = (levels.len() as u64).saturating_mul(self.steps_per_level as u64);
        if self.steps_per_level == 0 || total > MAX_SAMPLER_STEPS {
            return Err(Error::invalid(format!(
                "annealed Langevin: {} levels x --steps-per-level {} = {total} steps; between 1 \
                 and {MAX_SAMPLER_STEPS} per level and in all (the noise stream numbers steps \
                 with 32 bits)",
                levels.len(),
                self.steps_per_level
            )));
        }
        Ok(())
    }

    pub fn paper_default(seed: u64) -> Self {
        Self {
            steps_per_level: DEFAULT_STEPS_PER_LEVEL,
            eps: DEFAULT_EPS,
            seed,
            graphs: true,
        }
    }
}

/// The largest stable `eps` (SPEC section 8): the step `x + alpha_i/2 s(x)` on a target smoothed
/// by a Gaussian of variance `sigma_i^2` (score curvature at most `1/sigma_i^2`) contracts only
/// while `alpha_i / (2 sigma_i^2) < 2`; with `alpha_i = eps sigma_i^2 / sigma_L^2` that is
/// `eps < 4 sigma_L^2` at every level.
pub fn max_eps(levels: &NoiseLevels) -> f64 {
    let sigma_last = levels.sigma(levels.len() - 1) as f64;
    4.0 * sigma_last * sigma_last
}

/// Runs annealed Langevin from `x` through every level, largest sigma first, and returns the
/// samples and how many steps were replayed from a captured graph. The global step counter is the
/// Philox step (stream SAMPLER). `progress` gets the level index after each level. As the GBM
/// sampler's, the first step runs directly and the later ones replay the second's graph where the
/// device and the score allow (`config.graphs`; docs/DESIGN.md section 10): the step's scalars
/// and the level are read from memory written in place before each step.
pub fn annealed_langevin(
    score: &mut dyn GaussianScoreSource,
    levels: &NoiseLevels,
    config: &AnnealedLangevinConfig,
    mut x: Tensor,
    mut progress: Option<&mut dyn FnMut(usize)>,
) -> Result<(Tensor, u64)> {
    config.validate_for(levels)?;
    let device = x.device().clone();
    let sigma_last = levels.sigma(levels.len() - 1) as f64;
    let batch = x.shape().first().copied().unwrap_or(1);
    let mut level_of_sample = Tensor::zeros(&[batch], &device)?;
    let mut scalars = StepScalars::new(&device, &[0.0], 0.0, PhiloxDraw::sampler(config.seed, 0))?;
    let mut replayer = Replayer::new(config.graphs && score.replayable() && !device.is_cpu());
    let (mut step, mut replayed) = (0u32, 0u64);
    for i in 0..levels.len() {
        let sigma = levels.sigma(i) as f64;
        let alpha = (config.eps as f64 * sigma * sigma / (sigma_last * sigma_last)) as f32;
        let (coefs, noise_coef) = additive_coefficients(alpha);
        level_of_sample.write(&vec![i as f32; batch])?;
        for _ in 0..config.steps_per_level {
            scalars.set(&coefs, noise_coef, step)?;
            let level = Level {
                k: i,
                per_sample: &level_of_sample,
            };
            let mut body = || {
                let s = score.s(&x, level)?;
                ops::additive_langevin_step(&mut x, &s, &scalars)
            };
            // SAFETY: the body reads and writes x, the levels and the scalars, which live for
            // the whole run and are written in place only, and the score's weights, borrowed for
            // the run.
            let ran = unsafe { replayer.run(&device, &mut body) }?;
            replayed += ran.replayed(&device, "annealed Langevin steps") as u64;
            step += 1;
        }
        if !ops::all_finite(&x)? {
            return Err(Error::invalid(format!(
                "annealed Langevin: the samples are not finite (NaN or infinite) after noise \
                 level {i} (sigma {sigma}): the chain diverged; try a smaller --eps, or check the \
                 checkpoint's weights"
            )));
        }
        if let Some(report) = progress.as_mut() {
            report(i);
        }
    }
    Ok((x, replayed))
}
