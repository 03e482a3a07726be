//! The reverse-time sampler loop (SPEC section 4): Algorithm 1 (plain Euler-Maruyama), ADLS
//! (annealed Dale-Langevin) and ASAMS (annealed sign-agnostic), for any [`ScoreSource`].
use super::step::{dale_step, sign_agnostic_step, DaleVariant, StepCoefficients};
use crate::diffusion::schedule::Schedule;
use crate::diffusion::score::ScoreSource;
use crate::error::{Error, Result};
use crate::ops::{FlipCounter, PhiloxDraw};
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

    pub fn validate(&self) -> Result<()> {
        let positive = |v: f32| v.is_finite() && v > 0.0;
        if !positive(self.delta_s) {
            return Err(Error::invalid(format!(
                "sampler: delta_s {} must be positive",
                self.delta_s
            )));
        }
        if self.inner_steps == 0 {
            return Err(Error::invalid(
                "sampler: at least one inner step per level (L >= 1)",
            ));
        }
        if !positive(self.chi) {
            return Err(Error::invalid(format!(
                "sampler: chi {} must be positive",
                self.chi
            )));
        }
        if !(self.kappa_start.is_finite() && self.kappa_start >= 0.0) {
            return Err(Error::invalid(format!(
                "sampler: kappa_start {} must be non-negative",
                self.kappa_start
            )));
        }
        Ok(())
    }

    /// Steps [`sample`] will take for a schedule of `n_levels` levels.
    pub fn total_steps(&self, n_levels: usize) -> u64 {
        ((n_levels - 1) * self.inner_steps + self.terminal_denoise_steps) as u64
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
}

/// Runs the reverse chain from `x` (drawn from the initial law at level `N-1`) down to level 1,
/// then the terminal denoising steps, and returns the samples and statistics. The global step
/// counter (0, 1, ...) is the Philox step of each step's noise. `progress` is called once per
/// level.
pub fn sample(
    score: &mut dyn ScoreSource,
    schedule: &Schedule,
    config: &SamplerConfig,
    mut x: Tensor,
    mut progress: Option<&mut dyn FnMut(SamplerProgress)>,
) -> Result<(Tensor, SamplerStats)> {
    config.validate()?;
    let total_steps = config.total_steps(schedule.n_levels());
    let mut flips = FlipCounter::new(x.device())?;
    let mut stats = SamplerStats::default();
    let mut kappa = config.kappa_start;
    let mut take_steps =
        |x: &mut Tensor, k: usize, kappa: f32, count: usize, stats: &mut SamplerStats| {
            for _ in 0..count {
                let h = score.h(x, k)?;
                let noise = PhiloxDraw::sampler(config.seed, stats.steps as u32);
                let (sigma, mu) = (schedule.sigma(k), schedule.mu(k));
                match config.step {
                    StepKind::DaleLangevin(variant) => {
                        let c = StepCoefficients::dale(sigma, mu, config.delta_s, kappa, variant);
                        dale_step(x, &h, c, noise)?
                    }
                    StepKind::SignAgnostic => {
                        let c = StepCoefficients::sign_agnostic(sigma, mu, config.delta_s, kappa);
                        sign_agnostic_step(x, &h, c, noise, &mut flips)?
                    }
                }
                stats.steps += 1;
            }
            stats.sign_changes += flips.drain()?;
            Ok::<(), Error>(())
        };
    for k in (1..schedule.n_levels()).rev() {
        take_steps(&mut x, k, kappa, config.inner_steps, &mut stats)?;
        if let Some(report) = progress.as_mut() {
            report(SamplerProgress {
                level: k,
                kappa,
                steps_done: stats.steps,
                total_steps,
            });
        }
        kappa *= config.chi;
    }
    take_steps(&mut x, 1, 0.0, config.terminal_denoise_steps, &mut stats)?;
    let values = x.to_vec()?;
    let nonpositive = values.iter().filter(|&&v| v <= 0.0 || v.is_nan()).count();
    stats.nonpositive_fraction = nonpositive as f64 / values.len().max(1) as f64;
    Ok((x, stats))
}
