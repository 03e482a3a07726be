//! The reverse-time sampler loop (SPEC section 4): Algorithm 1 (plain Euler-Maruyama), ADLS
//! (annealed Dale-Langevin) and ASAMS (annealed sign-agnostic), for any [`ScoreSource`].
use std::time::{Duration, Instant};

use super::step::{DaleVariant, StepCoefficients};
use crate::device::graph::Replayer;
use crate::diffusion::schedule::Schedule;
use crate::diffusion::score::{Level, ScoreSource};
use crate::error::{Error, Result};
use crate::ops::{self, FlipCounter, PhiloxDraw, StepScalars};
use crate::tensor::Tensor;

/// Which step the sampler takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepKind {
    /// Sign-preserving, log space (ADLS when annealed).
    DaleLangevin(DaleVariant),
    /// Ambient Euler-Maruyama (ASAMS when annealed); signs may flip and are counted.
    SignAgnostic,
}

/// The sampler's knobs (SPEC section 4).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SamplerConfig {
    pub step: StepKind,
    /// The sampling step `delta_s` (may differ from the training `delta`).
    pub delta_s: f32,
    /// Inner steps `L` per level.
    pub inner_steps: usize,
    /// Annealing: `kappa` is multiplied by `chi` after each level.
    pub chi: f32,
    /// `kappa` at the first (noisiest) level.
    pub kappa_start: f32,
    /// Extra steps at level 1 with `kappa = 0` (paper 003's terminal denoising).
    pub terminal_denoise_steps: usize,
    /// Seed of the SAMPLER Philox stream.
    pub seed: u64,
    /// Capture a step (the network's forward and the fused update) once as a graph and replay
    /// it for every later step, where the device and the score allow (docs/DESIGN.md section
    /// 10); the samples are the same either way.
    pub graphs: bool,
}

crate::named::value_names! {
    /// The GBM samplers by name (SPEC section 4).
    #[derive(Hash)]
    pub enum SamplerKind {
        /// Annealed Dale-Langevin: log-space steps, signs preserved.
        Adls = "adls" => "annealed Dale-Langevin: log-space steps, signs preserved",
        /// Annealed sign-agnostic: ambient steps; sign changes are counted.
        Asams = "asams" => "annealed sign-agnostic: ambient steps, sign changes counted",
        /// Algorithm 1: Dale-Langevin Euler-Maruyama with `L = 1`, `chi = 1`.
        Em = "em" => "Algorithm 1: Dale-Langevin Euler-Maruyama (L = 1, chi = 1)",
    }
}

impl SamplerKind {
    /// The sampler's configuration. `em` fixes `inner_steps` = 1 and `chi` = 1 and ignores the
    /// values given; `variant` sets the drift of the Dale-Langevin samplers (`asams` has none).
    pub fn config(
        self,
        delta_s: f32,
        inner_steps: usize,
        chi: f32,
        variant: DaleVariant,
        seed: u64,
    ) -> SamplerConfig {
        let mut config = match self {
            Self::Adls => SamplerConfig::adls(delta_s, inner_steps, chi, seed),
            Self::Asams => SamplerConfig::asams(delta_s, inner_steps, chi, seed),
            Self::Em => SamplerConfig::algorithm1(delta_s, seed),
        };
        if let StepKind::DaleLangevin(_) = config.step {
            config.step = StepKind::DaleLangevin(variant);
        }
        config
    }
}

/// The most steps one run may take: each step draws its noise at Philox step `steps as u32`
/// (SPEC section 5), so a longer run would repeat its noise.
pub const MAX_SAMPLER_STEPS: u64 = u32::MAX as u64 + 1;

/// The largest stable `delta_s` for `schedule` (SPEC section 4): in log space a step moves `y`
/// by `delta_s sigma_k^2 grad log p_k(y)`, and `p_k` is the data law smoothed by a Gaussian of
/// variance `s_k^2`, whose curvature `-grad^2 log p_k` is at most `1/s_k^2`. The step is a
/// contraction only while `delta_s sigma_k^2 / s_k^2 < 2` at every level `k >= 1`: the bound is
/// `2 min_k s_k^2 / sigma_k^2`, `2/N` for a constant schedule.
pub fn max_delta_s(schedule: &Schedule) -> f64 {
    (1..schedule.n_levels())
        .map(|k| {
            let (s, sigma) = (schedule.s(k) as f64, schedule.sigma(k) as f64);
            2.0 * s * s / (sigma * sigma)
        })
        .fold(f64::INFINITY, f64::min)
}

/// The paper's sampling constants (SPEC 4): `delta_s = 2e-4`, `chi = 0.995`, `L = 3`.
pub const PAPER_DELTA_S: f32 = 2e-4;
pub const PAPER_CHI: f32 = 0.995;
pub const PAPER_INNER_STEPS: usize = 3;

impl SamplerConfig {
    /// Algorithm 1: Dale-Langevin Euler-Maruyama, `L = 1`, `chi = 1`.
    pub fn algorithm1(delta_s: f32, seed: u64) -> Self {
        Self {
            step: StepKind::DaleLangevin(DaleVariant::Derived),
            delta_s,
            inner_steps: 1,
            chi: 1.0,
            kappa_start: 1.0,
            terminal_denoise_steps: 0,
            seed,
            graphs: true,
        }
    }

    /// ADLS: annealed Dale-Langevin.
    pub fn adls(delta_s: f32, inner_steps: usize, chi: f32, seed: u64) -> Self {
        Self {
            inner_steps,
            chi,
            ..Self::algorithm1(delta_s, seed)
        }
    }

    /// ASAMS: annealed sign-agnostic.
    pub fn asams(delta_s: f32, inner_steps: usize, chi: f32, seed: u64) -> Self {
        Self {
            step: StepKind::SignAgnostic,
            ..Self::adls(delta_s, inner_steps, chi, seed)
        }
    }

    /// Checks the knobs that need no schedule: `delta_s > 0`, `L >= 1`, `chi` in (0, 1] (a `chi`
    /// above 1 makes `kappa` grow without bound), `kappa_start >= 0`, all finite.
    pub fn validate(&self) -> Result<()> {
        let positive = |v: f32| v.is_finite() && v > 0.0;
        if !positive(self.delta_s) {
            return Err(Error::invalid(format!(
                "sampler: delta_s (--delta-s) {:?} must be positive",
                self.delta_s
            )));
        }
        if self.inner_steps == 0 {
            return Err(Error::invalid(
                "sampler: at least one inner step per level (L >= 1)",
            ));
        }
        if !(positive(self.chi) && self.chi <= 1.0) {
            return Err(Error::invalid(format!(
                "sampler: chi (--chi) {:?} must be in (0, 1]",
                self.chi
            )));
        }
        if !(self.kappa_start.is_finite() && self.kappa_start >= 0.0) {
            return Err(Error::invalid(format!(
                "sampler: kappa_start (--kappa) {:?} must be finite and non-negative",
                self.kappa_start
            )));
        }
        Ok(())
    }

    /// [`Self::validate`], and the bounds that depend on the schedule: `delta_s` below
    /// [`max_delta_s`] and at most [`MAX_SAMPLER_STEPS`] steps in all.
    pub fn validate_for(&self, schedule: &Schedule) -> Result<()> {
        self.validate()?;
        let bound = max_delta_s(schedule);
        if self.delta_s as f64 >= bound {
            return Err(Error::invalid(format!(
                "sampler: delta_s (--delta-s) {:?} must be below {bound:.3e} = 2 min_k s_k^2/sigma_k^2 \
                 for this schedule of {} levels; larger steps diverge even with the exact score \
                 (SPEC section 4)",
                self.delta_s,
                schedule.n_levels()
            )));
        }
        let total = self.total_steps(schedule.n_levels());
        if total > MAX_SAMPLER_STEPS {
            return Err(Error::invalid(format!(
                "sampler: (levels - 1) x --inner-steps + --terminal-steps = {total} steps; at most \
                 {MAX_SAMPLER_STEPS} (the noise stream numbers steps with 32 bits)"
            )));
        }
        Ok(())
    }

    /// Steps [`sample`] will take for a schedule of `n_levels` levels.
    /// Saturating, so that absurd settings reach [`Self::validate_for`]'s error.
    pub fn total_steps(&self, n_levels: usize) -> u64 {
        (n_levels.saturating_sub(1) as u64)
            .saturating_mul(self.inner_steps as u64)
            .saturating_add(self.terminal_denoise_steps as u64)
    }
}

/// Where the sampler is, for progress reports.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SamplerProgress {
    pub level: usize,
    pub kappa: f32,
    pub steps_done: u64,
    pub total_steps: u64,
}

/// What a sampler run measured.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub struct SamplerStats {
    pub steps: u64,
    /// Entries that changed sign or hit zero, summed over steps (sign-agnostic steps only).
    pub sign_changes: u64,
    /// Fraction of the final entries that are not positive (SPEC 10: for a positive
    /// initialisation, the fraction that changed sign or reached zero).
    pub nonpositive_fraction: f64,
    /// Steps run by replaying a captured graph (the others ran launch by launch).
    pub replayed_steps: u64,
}

/// Runs the reverse chain from `x` (drawn from the initial law at level `N-1`) down to level 1,
/// then the terminal denoising steps, and returns the samples and statistics. The global step
/// counter (0, 1, ...) is the Philox step of each step's noise. `progress` is called after each
/// level, and within a level at most once per [`PROGRESS_EVERY`]. A start or a level that ends
/// with a non-finite entry is an error naming it.
pub fn sample(
    score: &mut dyn ScoreSource,
    schedule: &Schedule,
    config: &SamplerConfig,
    mut x: Tensor,
    progress: Option<&mut dyn FnMut(SamplerProgress)>,
) -> Result<(Tensor, SamplerStats)> {
    config.validate_for(schedule)?;
    ensure_finite(
        &x,
        "the initial draw x_{N-1} (are the checkpoint's initialisation parameters finite?)",
    )?;
    let mut reporter = Reporter {
        progress,
        last: Instant::now(),
        total_steps: config.total_steps(schedule.n_levels()),
    };
    let mut chain = Chain::new(score, schedule, config, &x)?;
    let mut kappa = config.kappa_start;
    for k in (1..schedule.n_levels()).rev() {
        chain.take_steps(&mut x, k, kappa, config.inner_steps, &mut reporter)?;
        ensure_finite(&x, &format!("level {k} (kappa {kappa:?})"))?;
        reporter.report(k, kappa, chain.stats.steps);
        kappa *= config.chi;
    }
    chain.take_steps(&mut x, 1, 0.0, config.terminal_denoise_steps, &mut reporter)?;
    ensure_finite(&x, "the terminal denoising steps")?;
    let mut stats = chain.stats;
    let values = x.to_vec()?;
    let nonpositive = values.iter().filter(|&&v| v <= 0.0 || v.is_nan()).count();
    stats.nonpositive_fraction = nonpositive as f64 / values.len().max(1) as f64;
    Ok((x, stats))
}

/// The longest a caller of [`sample`] waits for news within a level.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// An error saying where the chain went non-finite, so a diverging sampler never hands back
/// NaN images as samples.
fn ensure_finite(x: &Tensor, after: &str) -> Result<()> {
    if ops::all_finite(x)? {
        return Ok(());
    }
    Err(Error::invalid(format!(
        "sampler: the samples are not finite (NaN or infinite) after {after}: the chain diverged; \
         try a smaller --delta-s or --kappa, or check the checkpoint's weights"
    )))
}

/// The caller's progress callback, with the time of the last call.
struct Reporter<'a> {
    progress: Option<&'a mut dyn FnMut(SamplerProgress)>,
    last: Instant,
    total_steps: u64,
}

impl Reporter<'_> {
    fn report(&mut self, level: usize, kappa: f32, steps_done: u64) {
        self.last = Instant::now();
        if let Some(report) = self.progress.as_mut() {
            report(SamplerProgress {
                level,
                kappa,
                steps_done,
                total_steps: self.total_steps,
            });
        }
    }

    /// [`Self::report`] when the last report is [`PROGRESS_EVERY`] old.
    fn report_if_due(&mut self, level: usize, kappa: f32, steps_done: u64) {
        if self.last.elapsed() >= PROGRESS_EVERY {
            self.report(level, kappa, steps_done);
        }
    }
}

/// What the steps of one run share: the schedule and knobs, the work of one step, how steps run,
/// and the statistics so far.
struct Chain<'a> {
    schedule: &'a Schedule,
    config: &'a SamplerConfig,
    step: StepWork<'a>,
    replayer: Replayer,
    stats: SamplerStats,
}

/// One step's work and the memory it reads and writes besides `x`, all of it kept in place for
/// the whole run: a captured step reads the level and the step's scalars from here at replay.
struct StepWork<'a> {
    score: &'a mut dyn ScoreSource,
    kind: StepKind,
    /// The level index per sample, written at each level.
    levels: Tensor,
    scalars: StepScalars,
    flips: FlipCounter,
}

impl<'a> Chain<'a> {
    fn new(
        score: &'a mut dyn ScoreSource,
        schedule: &'a Schedule,
        config: &'a SamplerConfig,
        x: &Tensor,
    ) -> Result<Self> {
        let device = x.device();
        let batch = x.shape().first().copied().unwrap_or(1);
        let replayer = Replayer::new(config.graphs && score.replayable() && !device.is_cpu());
        let draw = PhiloxDraw::sampler(config.seed, 0);
        Ok(Self {
            schedule,
            config,
            step: StepWork {
                score,
                kind: config.step,
                levels: Tensor::zeros(&[batch], device)?,
                scalars: StepScalars::new(device, &[0.0; 2], 0.0, draw)?,
                flips: FlipCounter::new(device)?,
            },
            replayer,
            stats: SamplerStats::default(),
        })
    }

    /// `count` steps at level `k` with annealing factor `kappa`.
    fn take_steps(
        &mut self,
        x: &mut Tensor,
        k: usize,
        kappa: f32,
        count: usize,
        reporter: &mut Reporter<'_>,
    ) -> Result<()> {
        let (sigma, mu, delta_s) = (
            self.schedule.sigma(k),
            self.schedule.mu(k),
            self.config.delta_s,
        );
        let c = match self.config.step {
            StepKind::DaleLangevin(variant) => {
                StepCoefficients::dale(sigma, mu, delta_s, kappa, variant)
            }
            StepKind::SignAgnostic => StepCoefficients::sign_agnostic(sigma, mu, delta_s, kappa),
        };
        if count > 0 {
            let levels = &mut self.step.levels;
            levels.write(&vec![k as f32; levels.numel()])?;
        }
        for _ in 0..count {
            c.write(&mut self.step.scalars, self.stats.steps as u32)?;
            self.run_step(x, k)?;
            self.stats.steps += 1;
            reporter.report_if_due(k, kappa, self.stats.steps);
        }
        self.stats.sign_changes += self.step.flips.drain()?;
        Ok(())
    }

    /// One step at level `k`: directly, or by replaying the graph captured from an earlier step.
    fn run_step(&mut self, x: &mut Tensor, k: usize) -> Result<()> {
        let device = x.device().clone();
        // SAFETY: the step reads and writes `x` and `self.step`'s tensors, which live for the
        // whole run and are only written in place (the levels, the scalars and the flip count by
        // `Tensor::write`, `x` by the steps), and the score's weights, borrowed for the run.
        let ran = unsafe { self.replayer.run(&device, &mut || self.step.run(x, k)) }?;
        if ran.replayed(&device, "sampler steps") {
            self.stats.replayed_steps += 1;
        }
        Ok(())
    }
}

impl StepWork<'_> {
    /// The step: `h` at level `k` (written into `self.levels`), then the fused update of `x`
    /// with the current scalars. Everything it allocates is dropped before it returns, as a
    /// capture requires.
    fn run(&mut self, x: &mut Tensor, k: usize) -> Result<()> {
        let level = Level {
            k,
            per_sample: &self.levels,
        };
        let h = self.score.h(x, level)?;
        match self.kind {
            StepKind::DaleLangevin(_) => ops::gbm_dale_step(x, &h, &self.scalars),
            StepKind::SignAgnostic => {
                ops::gbm_sign_agnostic_step(x, &h, &mut self.flips, &self.scalars)
            }
        }
    }
}
