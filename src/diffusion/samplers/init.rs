//! Initial draws `x_{N-1}` for the samplers (SPEC section 4): log-normal per channel, fitted on
//! the training data, and the class average pushed through the forward process.
use crate::device::Device;
use crate::diffusion::forward::gbm_forward;
use crate::diffusion::schedule::Schedule;
use crate::error::{Error, Result};
use crate::metadata::MetadataReader;
use crate::ops::PhiloxDraw;
use crate::rng::{self, stream};
use crate::tensor::Tensor;

/// Batch size, channels and elements per channel plane of a `[B, C, ...]` tensor (a `[B]`
/// tensor has one channel of one element).
fn channel_layout(shape: &[usize], op: &'static str) -> Result<(usize, usize, usize)> {
    let (&batch, rest) = shape
        .split_first()
        .ok_or_else(|| Error::shape(op, "expected [B, C, ...]; got a scalar"))?;
    let channels = rest.first().copied().unwrap_or(1);
    let plane = rest.iter().skip(1).product::<usize>();
    if batch == 0 || channels == 0 || plane == 0 {
        return Err(Error::shape(op, format!("empty tensor {shape:?}")));
    }
    Ok((batch, channels, plane))
}

/// `x = exp(mu_c + sigma_c z)` per channel `c` (SPEC 4, log-normal initialisation).
#[derive(Clone, Debug, PartialEq)]
pub struct LogNormalInit {
    pub mu: Vec<f32>,
    pub sigma: Vec<f32>,
}

impl LogNormalInit {
    /// Fits `mu_c = mean(log x_0) + m_{N-1}` and `sigma_c = sqrt(var(log x_0) + s_{N-1}^2)` over
    /// the samples and pixels of channel `c` of `x0` (`[n, C, ...]`, positive), i.e. the moments
    /// of the forward-terminal law in log space.
    pub fn fit(x0: &Tensor, schedule: &Schedule) -> Result<Self> {
        let (_, channels, plane) = channel_layout(x0.shape(), "LogNormalInit::fit")?;
        let data = x0.to_vec()?;
        let (mut sum, mut sum_sq, mut count) = (
            vec![0f64; channels],
            vec![0f64; channels],
            vec![0u64; channels],
        );
        for (i, &v) in data.iter().enumerate() {
            if !(v > 0.0 && v.is_finite()) {
                return Err(Error::invalid(format!(
                    "LogNormalInit::fit: element {i} is {v}; the data must be positive"
                )));
            }
            let c = (i / plane) % channels;
            let y = (v as f64).ln();
            sum[c] += y;
            sum_sq[c] += y * y;
            count[c] += 1;
        }
        let moments: (Vec<f64>, Vec<f64>) = (0..channels)
            .map(|c| {
                let n = count[c] as f64;
                let mean = sum[c] / n;
                (mean, (sum_sq[c] / n - mean * mean).max(0.0))
            })
            .unzip();
        Self::from_log_moments(&moments.0, &moments.1, schedule)
    }

    /// The same fit from per-channel moments of `log x_0` computed elsewhere (e.g. exactly over a
    /// whole dataset, [`crate::data::Dataset::log_stats`]).
    pub fn from_log_moments(means: &[f64], vars: &[f64], schedule: &Schedule) -> Result<Self> {
        if means.is_empty() || means.len() != vars.len() {
            return Err(Error::invalid(format!(
                "LogNormalInit: {} channel means and {} variances",
                means.len(),
                vars.len()
            )));
        }
        let k = schedule.terminal_level();
        let (m, s) = (schedule.m(k) as f64, schedule.s(k) as f64);
        let (mu, sigma) = means
            .iter()
            .zip(vars)
            .map(|(&mean, &var)| ((mean + m) as f32, (var.max(0.0) + s * s).sqrt() as f32))
            .unzip();
        Ok(Self { mu, sigma })
    }

    /// A batch of `shape = [B, C, ...]` draws; element `i` uses the normal
    /// (seed, SAMPLER_INIT, 0, i).
    pub fn sample(&self, shape: &[usize], seed: u64, device: &Device) -> Result<Tensor> {
        let (_, channels, plane) = channel_layout(shape, "LogNormalInit::sample")?;
        if channels != self.mu.len() {
            return Err(Error::shape(
                "LogNormalInit::sample",
                format!("{channels} channels requested, fitted on {}", self.mu.len()),
            ));
        }
        let n: usize = shape.iter().product();
        let data = (0..n)
            .map(|i| {
                let c = (i / plane) % channels;
                let z = rng::normal(seed, stream::SAMPLER_INIT, 0, i as u64);
                (self.mu[c] + self.sigma[c] * z).exp()
            })
            .collect();
        Tensor::from_vec(data, shape, device)
    }

    /// Key/value pairs for checkpoint metadata (`init.lognormal.mu`, `init.lognormal.sigma`, as
    /// comma-separated lists).
    pub fn describe(&self) -> Vec<(String, String)> {
        let list = |v: &[f32]| {
            v.iter()
                .map(|x| format!("{x:?}"))
                .collect::<Vec<_>>()
                .join(",")
        };
        vec![
            ("init.lognormal.mu".into(), list(&self.mu)),
            ("init.lognormal.sigma".into(), list(&self.sigma)),
        ]
    }

    pub fn from_describe(pairs: &[(String, String)]) -> Result<Self> {
        let meta = MetadataReader::new("initialisation", pairs);
        let list = |key| meta.list::<f32>(key, "a number");
        let (mu, sigma) = (list("init.lognormal.mu")?, list("init.lognormal.sigma")?);
        if mu.len() != sigma.len() || sigma.iter().any(|&s| s.is_nan() || s < 0.0) {
            return Err(Error::invalid(
                "initialisation metadata: mu and sigma must have one non-negative sigma per channel",
            ));
        }
        Ok(Self { mu, sigma })
    }
}

/// The mean image of each class: `data` is `[n, ...]`, `labels[i] < n_classes`; returns
/// `[n_classes, ...]` on the host device of `data` (a class without samples is an error).
pub fn class_means(data: &Tensor, labels: &[usize], n_classes: usize) -> Result<Tensor> {
    let (&n, rest) = data
        .shape()
        .split_first()
        .ok_or_else(|| Error::shape("class_means", "expected [n, ...]; got a scalar"))?;
    if labels.len() != n {
        return Err(Error::shape(
            "class_means",
            format!("{} labels for {n} samples", labels.len()),
        ));
    }
    let per: usize = rest.iter().product();
    let values = data.to_vec()?;
    let mut sums = vec![0f64; n_classes * per];
    let mut counts = vec![0usize; n_classes];
    for (i, &c) in labels.iter().enumerate() {
        if c >= n_classes {
            return Err(Error::invalid(format!(
                "class_means: label {c} of sample {i} >= {n_classes}"
            )));
        }
        counts[c] += 1;
        for (s, &v) in sums[c * per..(c + 1) * per]
            .iter_mut()
            .zip(&values[i * per..(i + 1) * per])
        {
            *s += v as f64;
        }
    }
    if let Some(empty) = counts.iter().position(|&c| c == 0) {
        return Err(Error::invalid(format!(
            "class_means: class {empty} has no samples"
        )));
    }
    let means = sums
        .chunks(per)
        .zip(&counts)
        .flat_map(|(chunk, &count)| chunk.iter().map(move |&s| (s / count as f64) as f32))
        .collect();
    let mut shape = vec![n_classes];
    shape.extend_from_slice(rest);
    Tensor::from_vec(means, &shape, data.device())
}

/// Class-average initialisation: sample `b` is `xbar_{classes[b]} * exp(m_{N-1} + s_{N-1} z)`
/// (SPEC 4), `z` from (seed, SAMPLER_INIT, 0, i). `means` is `[n_classes, ...]` from
/// [`class_means`]; the result is on `means`' device.
pub fn class_average_init(
    means: &Tensor,
    classes: &[usize],
    schedule: &Schedule,
    seed: u64,
) -> Result<Tensor> {
    let (&n_classes, rest) = means
        .shape()
        .split_first()
        .ok_or_else(|| Error::shape("class_average_init", "expected [n_classes, ...]"))?;
    let per: usize = rest.iter().product();
    let values = means.to_vec()?;
    let mut gathered = Vec::with_capacity(classes.len() * per);
    for &c in classes {
        if c >= n_classes {
            return Err(Error::invalid(format!(
                "class_average_init: class {c} >= {n_classes}"
            )));
        }
        gathered.extend_from_slice(&values[c * per..(c + 1) * per]);
    }
    let mut shape = vec![classes.len()];
    shape.extend_from_slice(rest);
    let x0 = Tensor::from_vec(gathered, &shape, means.device())?;
    let levels = vec![schedule.terminal_level(); classes.len()];
    let (x, _) = gbm_forward(
        &x0,
        &levels,
        schedule,
        PhiloxDraw::new(seed, stream::SAMPLER_INIT, 0),
    )?;
    Ok(x)
}
