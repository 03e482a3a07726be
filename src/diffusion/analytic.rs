//! Analytic targets (SPEC section 6): data whose log is a Gaussian mixture per coordinate, for
//! which every level's law and Hyvarinen score are known in closed form. They check samplers and
//! losses without training: a sampler run with the exact score from the exact terminal law must
//! return the data law.
use super::samplers::{
    dale_step, sample, PhiloxDraw, SamplerConfig, SamplerStats, StepCoefficients,
};
use super::schedule::Schedule;
use super::score::{Level, ScoreSource};
use crate::device::Device;
use crate::error::{Error, Result};
use crate::rng::{self, stream};
use crate::tensor::Tensor;

/// One mixture component: `log x_0 ~ N(mean, std^2)` with probability `weight`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Component {
    pub weight: f64,
    pub mean: f64,
    pub std: f64,
}

/// `log x_0 ~ sum_j w_j N(a_j, b_j^2)`, independently per coordinate.
#[derive(Clone, Debug, PartialEq)]
pub struct LogNormalMixture {
    components: Vec<Component>,
}

impl LogNormalMixture {
    /// Weights are normalised; every `std` must be positive.
    pub fn new(components: Vec<Component>) -> Result<Self> {
        if components.is_empty() {
            return Err(Error::invalid("log-normal mixture: no components"));
        }
        let total: f64 = components.iter().map(|c| c.weight).sum();
        for c in &components {
            if !(c.weight >= 0.0 && c.std > 0.0 && c.mean.is_finite() && c.std.is_finite())
                || total <= 0.0
            {
                return Err(Error::invalid(format!(
                    "log-normal mixture: component {c:?} needs weight >= 0 (some > 0), finite mean, std > 0"
                )));
            }
        }
        let components = components
            .into_iter()
            .map(|c| Component {
                weight: c.weight / total,
                ..c
            })
            .collect();
        Ok(Self { components })
    }

    /// A single log-normal `LN(a, b^2)`.
    pub fn single(mean: f64, std: f64) -> Result<Self> {
        Self::new(vec![Component {
            weight: 1.0,
            mean,
            std,
        }])
    }

    /// Parses `w:a:b,w:a:b,...` (weight, log-mean, log-std per component), for the CLI.
    pub fn parse(text: &str) -> Result<Self> {
        let parse_component = |part: &str| -> Result<Component> {
            let nums: Vec<f64> = part
                .split(':')
                .map(|v| v.trim().parse::<f64>())
                .collect::<std::result::Result<_, _>>()
                .map_err(|_| {
                    Error::invalid(format!(
                        "mixture component '{part}': expected w:a:b numbers"
                    ))
                })?;
            match nums[..] {
                [weight, mean, std] => Ok(Component { weight, mean, std }),
                _ => Err(Error::invalid(format!(
                    "mixture component '{part}': expected w:a:b"
                ))),
            }
        };
        Self::new(
            text.split(',')
                .map(parse_component)
                .collect::<Result<_>>()?,
        )
    }

    pub fn components(&self) -> &[Component] {
        &self.components
    }

    /// The law of `log x_k` is the mixture with means `a_j + m` and variances `b_j^2 + s^2`.
    fn at_level(&self, m: f64, s: f64) -> impl Iterator<Item = (f64, f64, f64)> + '_ {
        self.components
            .iter()
            .map(move |c| (c.weight, c.mean + m, c.std * c.std + s * s))
    }

    /// `h(x, k) = sum_j r_j(y) (-(y - a_j - m_k) / (b_j^2 + s_k^2)) - 1`, `y = log x` (SPEC 6), for a
    /// level with log-mean shift `m` and log-std `s`. Evaluated at `|x|` (floored at the smallest
    /// positive normal f32) so that the sign-agnostic sampler, whose iterates may leave the
    /// positive half-line, still gets a finite score.
    pub fn h(&self, x: f64, m: f64, s: f64) -> f64 {
        let y = x.abs().max(f32::MIN_POSITIVE as f64).ln();
        let mut log_resp = Vec::with_capacity(self.components.len());
        let mut grads = Vec::with_capacity(self.components.len());
        for (w, mean, var) in self.at_level(m, s) {
            log_resp.push(w.ln() - 0.5 * var.ln() - 0.5 * (y - mean) * (y - mean) / var);
            grads.push(-(y - mean) / var);
        }
        let top = log_resp.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let (mut num, mut den) = (0.0, 0.0);
        for (lr, g) in log_resp.iter().zip(&grads) {
            let r = (lr - top).exp();
            num += r * g;
            den += r;
        }
        num / den - 1.0
    }

    /// `P(log x_k <= y)`.
    pub fn log_cdf(&self, y: f64, m: f64, s: f64) -> f64 {
        self.at_level(m, s)
            .map(|(w, mean, var)| w * normal_cdf((y - mean) / var.sqrt()))
            .sum()
    }

    /// Mean and variance of `log x_k`.
    pub fn log_moments(&self, m: f64, s: f64) -> (f64, f64) {
        let mean: f64 = self.at_level(m, s).map(|(w, mu, _)| w * mu).sum();
        let second: f64 = self
            .at_level(m, s)
            .map(|(w, mu, var)| w * (var + mu * mu))
            .sum();
        (mean, second - mean * mean)
    }

    /// `n` draws of `x_k`: element `i` picks its component with word 2 of Philox
    /// (seed, stream, step, i) and its normal from words 0 and 1 (independent of word 2).
    pub fn sample(&self, n: usize, m: f64, s: f64, seed: u64, stream: u32, step: u32) -> Vec<f32> {
        (0..n as u64)
            .map(|i| {
                let u = rng::uniform_closed_open(rng::philox_bits(seed, stream, step, i)[2]) as f64;
                let mut acc = 0.0;
                let mut chosen = self.components.len() - 1;
                for (j, c) in self.components.iter().enumerate() {
                    acc += c.weight;
                    if u < acc {
                        chosen = j;
                        break;
                    }
                }
                let c = self.components[chosen];
                let z = rng::normal(seed, stream, step, i) as f64;
                let var = c.std * c.std + s * s;
                (c.mean + m + var.sqrt() * z).exp() as f32
            })
            .collect()
    }

    /// `n` draws of the data law `x_0`.
    pub fn sample_data(&self, n: usize, seed: u64, stream: u32, step: u32) -> Vec<f32> {
        self.sample(n, 0.0, 0.0, seed, stream, step)
    }
}

/// The standard normal CDF through `erfc` (Numerical Recipes' Chebyshev fit, relative error
/// below 1.2e-7 everywhere).
pub fn normal_cdf(x: f64) -> f64 {
    0.5 * erfc(-x / std::f64::consts::SQRT_2)
}

fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let r = t * poly.exp();
    if x >= 0.0 {
        r
    } else {
        2.0 - r
    }
}

/// The exact score of a [`LogNormalMixture`] at every level of a schedule, as a
/// [`ScoreSource`] (evaluated on the host, returned on the input's device).
pub struct AnalyticScore<'a> {
    pub mixture: &'a LogNormalMixture,
    pub schedule: &'a Schedule,
}

impl ScoreSource for AnalyticScore<'_> {
    fn h(&mut self, x: &Tensor, level: Level<'_>) -> Result<Tensor> {
        let k = level.k;
        self.schedule.check_level(k, "analytic score")?;
        let (m, s) = (self.schedule.m(k) as f64, self.schedule.s(k) as f64);
        let h: Vec<f32> = x
            .to_vec()?
            .into_iter()
            .map(|v| self.mixture.h(v as f64, m, s) as f32)
            .collect();
        Tensor::from_vec(h, x.shape(), x.device())
    }
}

/// The Kolmogorov-Smirnov statistic `sup |F_n - F|` of samples `y` against a continuous CDF.
/// Non-finite samples count as `-inf` (below every quantile).
pub fn ks_statistic(mut y: Vec<f64>, cdf: impl Fn(f64) -> f64) -> f64 {
    for v in y.iter_mut() {
        if !v.is_finite() {
            *v = f64::NEG_INFINITY;
        }
    }
    y.sort_by(f64::total_cmp);
    let n = y.len() as f64;
    y.iter()
        .enumerate()
        .map(|(i, &v)| {
            let f = if v == f64::NEG_INFINITY { 0.0 } else { cdf(v) };
            (f - i as f64 / n).abs().max(((i + 1) as f64 / n - f).abs())
        })
        .fold(0.0, f64::max)
}

/// The KS statistic below which a sample of size `n` from the hypothesised law falls with
/// probability 99% (asymptotic: `1.628 / sqrt(n)`).
pub fn ks_critical_99(n: usize) -> f64 {
    1.628 / (n as f64).sqrt()
}

/// The outcome of [`check_sampler`]: the final samples against the data law, in log space.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SamplerCheck {
    pub n_samples: usize,
    pub ks_statistic: f64,
    pub ks_critical_99: f64,
    pub log_mean: f64,
    pub log_var: f64,
    pub target_log_mean: f64,
    pub target_log_var: f64,
    pub stats: SamplerStats,
}

/// Mean and variance of `log x` over the positive samples.
pub fn log_sample_moments(x: &[f32]) -> (f64, f64) {
    let ys: Vec<f64> = x
        .iter()
        .filter(|&&v| v > 0.0)
        .map(|&v| (v as f64).ln())
        .collect();
    let n = ys.len() as f64;
    let mean = ys.iter().sum::<f64>() / n;
    let var = ys.iter().map(|y| (y - mean) * (y - mean)).sum::<f64>() / n;
    (mean, var)
}

/// Runs a sampler with the exact score from `n_samples` draws of the exact terminal law
/// (level `N-1`, Philox stream SAMPLER_INIT) and compares the result with the data law.
pub fn check_sampler(
    mixture: &LogNormalMixture,
    schedule: &Schedule,
    config: &SamplerConfig,
    n_samples: usize,
    device: &Device,
) -> Result<SamplerCheck> {
    if n_samples == 0 {
        return Err(Error::invalid("check_sampler: no samples requested"));
    }
    let k = schedule.terminal_level();
    let init = mixture.sample(
        n_samples,
        schedule.m(k) as f64,
        schedule.s(k) as f64,
        config.seed,
        stream::SAMPLER_INIT,
        0,
    );
    let x = Tensor::from_vec(init, &[n_samples], device)?;
    let mut score = AnalyticScore { mixture, schedule };
    let (x, stats) = sample(&mut score, schedule, config, x, None)?;
    let values = x.to_vec()?;
    let ys = values
        .iter()
        .map(|&v| {
            if v > 0.0 {
                (v as f64).ln()
            } else {
                f64::NEG_INFINITY
            }
        })
        .collect();
    let (log_mean, log_var) = log_sample_moments(&values);
    let (target_log_mean, target_log_var) = mixture.log_moments(0.0, 0.0);
    Ok(SamplerCheck {
        n_samples,
        ks_statistic: ks_statistic(ys, |y| mixture.log_cdf(y, 0.0, 0.0)),
        ks_critical_99: ks_critical_99(n_samples),
        log_mean,
        log_var,
        target_log_mean,
        target_log_var,
        stats,
    })
}

/// The stationary variance of `log x` under the mirrored Langevin iteration with step `eta` for
/// the target `LN(a, b^2)` (paper 003 App. D): `b^2 / (1 - eta / (2 b^2))`, valid for
/// `eta < 2 b^2`.
pub fn mirrored_langevin_stationary_log_variance(b: f64, eta: f64) -> f64 {
    b * b / (1.0 - eta / (2.0 * b * b))
}

/// Runs `n_steps` mirrored Langevin iterations `x <- x exp(eta (1 + h) + sqrt(2 eta) z)` (SPEC 6)
/// with the data-law score of `mixture` on `n_chains` chains started from the data law, through
/// the Dale-Langevin kernel; returns the final states. Noise: Philox (seed, SAMPLER, step).
pub fn mirrored_langevin(
    mixture: &LogNormalMixture,
    eta: f32,
    n_chains: usize,
    n_steps: usize,
    seed: u64,
    device: &Device,
) -> Result<Tensor> {
    if !(eta.is_finite() && eta > 0.0) {
        return Err(Error::invalid(format!(
            "mirrored Langevin: eta {eta} must be positive"
        )));
    }
    let init = mixture.sample_data(n_chains, seed, stream::SAMPLER_INIT, 0);
    let mut x = Tensor::from_vec(init, &[n_chains], device)?;
    let c = StepCoefficients::mirrored_langevin(eta);
    for step in 0..n_steps {
        let h: Vec<f32> = x
            .to_vec()?
            .into_iter()
            .map(|v| mixture.h(v as f64, 0.0, 0.0) as f32)
            .collect();
        let h = Tensor::from_vec(h, &[n_chains], device)?;
        dale_step(&mut x, &h, c, PhiloxDraw::sampler(seed, step as u32))?;
    }
    Ok(x)
}
