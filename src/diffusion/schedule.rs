//! Noise schedules of the GBM forward process (SPEC section 2): `sigma(t)` of a chosen shape,
//! a drift `mu(t)`, and the per-level log-mean shift `m_k` and log-standard-deviation `s_k`
//! that the closed-form noising, the losses and the samplers read.
use std::f64::consts::FRAC_PI_2;

use crate::error::{Error, Result};
use crate::metadata::MetadataReader;

crate::named::value_names! {
    /// The shape of a noise-scale curve between `sigma_min` and `sigma_max`.
    ///
    /// For the GBM schedule the argument is forward time `t in [0, 1]` (noise grows with `t`);
    /// the additive baseline (SPEC section 8) reads the same curves from its noisiest level down.
    pub enum SigmaShape parsed as "sigma schedule" {
        /// `sigma_max` throughout (`sigma_min` is ignored).
        Constant = "constant" => "sigma_max at every level (sigma_min ignored)",
        /// `sigma_min * (sigma_max / sigma_min)^u`.
        Geometric = "geometric" => "evenly spaced in log sigma from sigma_min to sigma_max",
        /// A logistic S-curve `sigma_min + (sigma_max - sigma_min) * r(u)`, `r` the logistic of
        /// `SIGMOID_STEEPNESS * (u - 1/2)` rescaled to run exactly from 0 to 1. Paper 004 gives a
        /// literal sigmoid sequence whose end points miss its own `sigma_1 = 1`; we keep its shape
        /// (flat at both ends) and pin the end points.
        Sigmoid = "sigmoid" => "a logistic S-curve from sigma_min to sigma_max, flat at both ends",
        /// `sigma_min + (sigma_max - sigma_min) * sin(u * pi/2)`: read from the noisy end this is
        /// paper 004's `sigma_0 * cos(k/L * pi/2)`, with the end points pinned instead of its `alpha`.
        Cosine = "cosine" => "sigma_min + (sigma_max - sigma_min) sin(t pi/2), t in [0, 1]",
    }
}

/// Steepness of the [`SigmaShape::Sigmoid`] curve in units of the whole range (paper 004 uses
/// about one level per unit over ten levels).
const SIGMOID_STEEPNESS: f64 = 10.0;

impl SigmaShape {
    /// The noise scale at `u in [0, 1]` (0: `sigma_min`, 1: `sigma_max`).
    pub fn value(self, u: f64, sigma_min: f64, sigma_max: f64) -> f64 {
        let span = sigma_max - sigma_min;
        match self {
            Self::Constant => sigma_max,
            Self::Geometric => sigma_min * (sigma_max / sigma_min).powf(u),
            Self::Sigmoid => {
                let logistic = |v: f64| 1.0 / (1.0 + (-v).exp());
                let lo = logistic(-SIGMOID_STEEPNESS / 2.0);
                let hi = logistic(SIGMOID_STEEPNESS / 2.0);
                let r = (logistic(SIGMOID_STEEPNESS * (u - 0.5)) - lo) / (hi - lo);
                sigma_min + span * r
            }
            Self::Cosine => sigma_min + span * (u * FRAC_PI_2).sin(),
        }
    }
}

/// Checks the end points of a sigma curve: positive, finite, ordered.
/// The most noise levels a schedule may have. Each level is a row of every conditional norm's
/// embedding (SPEC 9) and an entry of the schedule's tables, so a count far beyond the paper's
/// 1000 would exhaust memory before training starts (and 10^12 would never finish building).
pub const MAX_LEVELS: usize = 100_000;

/// An error unless `n_levels` is at most [`MAX_LEVELS`].
pub(crate) fn check_level_count(n_levels: usize, what: &str) -> Result<()> {
    if n_levels > MAX_LEVELS {
        return Err(Error::invalid(format!(
            "{what}: {n_levels} levels; at most {MAX_LEVELS} (--levels; the paper uses 1000)"
        )));
    }
    Ok(())
}

pub(crate) fn validate_sigma_range(sigma_min: f64, sigma_max: f64, what: &str) -> Result<()> {
    if !(sigma_min.is_finite() && sigma_max.is_finite() && sigma_min > 0.0 && sigma_max > 0.0) {
        return Err(Error::invalid(format!(
            "{what}: sigma_min {sigma_min} and sigma_max {sigma_max} must be positive and finite"
        )));
    }
    if sigma_min > sigma_max {
        return Err(Error::invalid(format!(
            "{what}: sigma_min {sigma_min} exceeds sigma_max {sigma_max}"
        )));
    }
    Ok(())
}

/// Noised pixels `x_0 exp(m_k + s_k z)` (SPEC section 2) must stay within f32: a normal `z`
/// reaches 8 in about one draw in 10^15, so `|m_k| + 8 s_k` is held below 80 (f32 overflows past
/// e^88.7). A larger schedule would turn training into NaN at once, read as divergence.
fn check_f32_range(m: &[f32], s: &[f32], sigma_max: f64) -> Result<()> {
    const LOG_BOUND: f32 = 80.0;
    let reach = m
        .iter()
        .zip(s)
        .map(|(m_k, s_k)| m_k.abs() + 8.0 * s_k)
        .fold(0.0f32, f32::max);
    if reach > LOG_BOUND {
        return Err(Error::invalid(format!(
            "schedule: with sigma_max {sigma_max} the noised pixels x_0 exp(m_k + s_k z) reach \
             e^{reach:.0} at 8 standard deviations, beyond the f32 range (e^{LOG_BOUND} at most); \
             lower --sigma-max"
        )));
    }
    Ok(())
}

/// The drift `mu(t)` of `dX = mu X dt + sigma X dW` (SPEC section 2).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Drift {
    /// `mu = sigma^2 / 2`: the paper's default, `m_k = 0` (variance exploding in log space).
    HalfSigmaSquared,
    /// `mu = c * sigma(t)^2`.
    SigmaSquaredTimes(f64),
    /// `mu` constant in time.
    Constant(f64),
}

impl Drift {
    fn at(self, sigma: f64) -> f64 {
        match self {
            Drift::HalfSigmaSquared => 0.5 * sigma * sigma,
            Drift::SigmaSquaredTimes(c) => c * sigma * sigma,
            Drift::Constant(mu) => mu,
        }
    }

    /// `half-sigma-squared`, `sigma-squared-times:<c>` or `constant:<mu>`.
    pub fn parse(text: &str) -> Result<Self> {
        let number = |v: &str| {
            v.parse::<f64>()
                .ok()
                .filter(|x| x.is_finite())
                .ok_or_else(|| Error::invalid(format!("drift '{text}': '{v}' is not a number")))
        };
        match text.split_once(':') {
            None if text == "half-sigma-squared" => Ok(Drift::HalfSigmaSquared),
            Some(("sigma-squared-times", v)) => Ok(Drift::SigmaSquaredTimes(number(v)?)),
            Some(("constant", v)) => Ok(Drift::Constant(number(v)?)),
            _ => Err(Error::invalid(format!(
                "unknown drift '{text}': expected half-sigma-squared, sigma-squared-times:<c> or constant:<mu>"
            ))),
        }
    }

    pub fn describe(self) -> String {
        match self {
            Drift::HalfSigmaSquared => "half-sigma-squared".into(),
            Drift::SigmaSquaredTimes(c) => format!("sigma-squared-times:{c}"),
            Drift::Constant(mu) => format!("constant:{mu}"),
        }
    }
}

/// A discretised GBM schedule: `N` levels, `delta = 1/N`, `t_k = k * delta`, and per level
/// `sigma_k`, `mu_k`, `m_k`, `s_k` (SPEC section 2), accumulated in f64.
#[derive(Clone, Debug, PartialEq)]
pub struct Schedule {
    shape: SigmaShape,
    drift: Drift,
    sigma_min: f64,
    sigma_max: f64,
    sigma: Vec<f32>,
    mu: Vec<f32>,
    m: Vec<f32>,
    s: Vec<f32>,
}

/// The paper's default: constant `sigma = 0.8`, `mu = sigma^2/2`, `N = 1000` (SPEC section 2).
pub const PAPER_SIGMA: f64 = 0.8;
pub const PAPER_LEVELS: usize = 1000;

impl Schedule {
    /// `n_levels` levels (at least 2: level 0 is the data, training draws `k in 1..N-1`) of the
    /// given shape between `sigma_min` and `sigma_max`, drift `mu = sigma^2/2`.
    pub fn new(shape: SigmaShape, n_levels: usize, sigma_min: f64, sigma_max: f64) -> Result<Self> {
        Self::with_drift(
            shape,
            n_levels,
            sigma_min,
            sigma_max,
            Drift::HalfSigmaSquared,
        )
    }

    /// A constant `sigma`.
    pub fn constant(n_levels: usize, sigma: f64) -> Result<Self> {
        Self::new(SigmaShape::Constant, n_levels, sigma, sigma)
    }

    /// The paper's default schedule.
    pub fn paper_default() -> Self {
        Self::constant(PAPER_LEVELS, PAPER_SIGMA).expect("the paper's constants are valid")
    }

    pub fn with_drift(
        shape: SigmaShape,
        n_levels: usize,
        sigma_min: f64,
        sigma_max: f64,
        drift: Drift,
    ) -> Result<Self> {
        if n_levels < 2 {
            return Err(Error::invalid(format!(
                "schedule: {n_levels} levels; at least 2 are needed (level 0 is the data)"
            )));
        }
        check_level_count(n_levels, "schedule")?;
        validate_sigma_range(sigma_min, sigma_max, "schedule")?;
        let delta = 1.0 / n_levels as f64;
        let (mut sigma, mut mu, mut m, mut s) = (vec![], vec![], vec![], vec![]);
        let (mut m_acc, mut var_acc) = (0.0f64, 0.0f64);
        for k in 0..n_levels {
            let sigma_k = shape.value(k as f64 * delta, sigma_min, sigma_max);
            let mu_k = drift.at(sigma_k);
            // m_k and s_k^2 sum over i < k: push before accumulating level k.
            m.push(m_acc as f32);
            s.push(var_acc.sqrt() as f32);
            sigma.push(sigma_k as f32);
            mu.push(mu_k as f32);
            m_acc += (mu_k - 0.5 * sigma_k * sigma_k) * delta;
            var_acc += sigma_k * sigma_k * delta;
        }
        if !m_acc.is_finite() || !var_acc.is_finite() {
            return Err(Error::invalid("schedule: m_k or s_k overflowed"));
        }
        check_f32_range(&m, &s, sigma_max)?;
        Ok(Self {
            shape,
            drift,
            sigma_min,
            sigma_max,
            sigma,
            mu,
            m,
            s,
        })
    }

    pub fn shape(&self) -> SigmaShape {
        self.shape
    }
    pub fn drift(&self) -> Drift {
        self.drift
    }
    pub fn n_levels(&self) -> usize {
        self.sigma.len()
    }
    /// The training step `delta = 1/N`.
    pub fn delta(&self) -> f64 {
        1.0 / self.n_levels() as f64
    }
    pub fn sigma(&self, k: usize) -> f32 {
        self.sigma[k]
    }
    pub fn mu(&self, k: usize) -> f32 {
        self.mu[k]
    }
    /// `m_k = sum_{i<k} (mu_i - sigma_i^2/2) delta`.
    pub fn m(&self, k: usize) -> f32 {
        self.m[k]
    }
    /// `s_k = sqrt(sum_{i<k} sigma_i^2 delta)`.
    pub fn s(&self, k: usize) -> f32 {
        self.s[k]
    }
    /// `s_{k+1} = sqrt(s_k^2 + sigma_k^2 delta)`, defined for every level `k`, `N - 1`
    /// included (the released code's loss offset, SPEC 3.1).
    pub fn s_next(&self, k: usize) -> f32 {
        let delta = 1.0 / self.n_levels() as f64;
        let (s_k, sigma_k) = (self.s[k] as f64, self.sigma[k] as f64);
        (s_k * s_k + sigma_k * sigma_k * delta).sqrt() as f32
    }

    /// The last level `N - 1`, where sampling starts.
    pub fn terminal_level(&self) -> usize {
        self.n_levels() - 1
    }

    /// Fails unless `k` is a level of this schedule.
    pub fn check_level(&self, k: usize, what: &str) -> Result<()> {
        if k >= self.n_levels() {
            return Err(Error::invalid(format!(
                "{what}: level {k} out of range (the schedule has {} levels)",
                self.n_levels()
            )));
        }
        Ok(())
    }

    /// Key/value pairs that rebuild this schedule with [`Schedule::from_describe`] (checkpoint
    /// metadata).
    pub fn describe(&self) -> Vec<(String, String)> {
        [
            ("schedule.shape", self.shape.name().to_string()),
            ("schedule.levels", self.n_levels().to_string()),
            ("schedule.sigma_min", format!("{:?}", self.sigma_min)),
            ("schedule.sigma_max", format!("{:?}", self.sigma_max)),
            ("schedule.drift", self.drift.describe()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    pub fn from_describe(pairs: &[(String, String)]) -> Result<Self> {
        let meta = MetadataReader::new("schedule", pairs);
        Self::with_drift(
            SigmaShape::parse(meta.text("schedule.shape")?)?,
            meta.parse("schedule.levels", "a count")?,
            meta.parse("schedule.sigma_min", "a number")?,
            meta.parse("schedule.sigma_max", "a number")?,
            Drift::parse(meta.text("schedule.drift")?)?,
        )
    }
}
