//! Kernel distance with the cubic polynomial kernel (KID's estimator, Binkowski et al. 2018),
//! in the features of our own classifier.
use super::Features;
use crate::error::{Error, Result};

/// `k(x, y) = (x.y / d + 1)^3`.
fn kernel(x: &[f32], y: &[f32]) -> f64 {
    let dot: f64 = x.iter().zip(y).map(|(&a, &b)| a as f64 * b as f64).sum();
    cubic_kernel(dot, x.len())
}

/// The cubic kernel of two `dim`-wide vectors from their dot product: `(dot / dim + 1)^3`
/// (torchmetrics' `poly_kernel` with degree 3, gamma 1/dim, coef 1).
pub(super) fn cubic_kernel(dot: f64, dim: usize) -> f64 {
    (dot / dim as f64 + 1.0).powi(3)
}

/// The unbiased estimate of the squared maximum mean discrepancy under the cubic kernel.
pub fn kernel_inception_distance(a: &Features<'_>, b: &Features<'_>) -> Result<f64> {
    KidReference::new(b)?.distance(a)
}

/// One side of the kernel distance with its within-set mean computed once, so that several sets
/// (samples, and real images for the floor) are compared with the same reference without
/// recomputing its O(n^2) term.
pub struct KidReference<'a> {
    features: &'a Features<'a>,
    within: f64,
}

impl<'a> KidReference<'a> {
    pub fn new(features: &'a Features<'a>) -> Result<Self> {
        let within = within_set_mean(features)?;
        Ok(Self { features, within })
    }

    /// The kernel distance between `a` and the reference.
    pub fn distance(&self, a: &Features<'_>) -> Result<f64> {
        let b = self.features;
        if a.dim != b.dim {
            return Err(Error::invalid(format!(
                "feature dimensions differ: {} vs {}",
                a.dim, b.dim
            )));
        }
        let within_a = within_set_mean(a)?;
        let (m, n) = (a.rows(), b.rows());
        let mut cross = 0.0;
        for i in 0..m {
            for j in 0..n {
                cross += kernel(a.row(i), b.row(j));
            }
        }
        Ok(within_a + self.within - 2.0 * cross / (m as f64 * n as f64))
    }
}

/// The mean kernel value over distinct pairs of one set (the unbiased within-set term).
fn within_set_mean(f: &Features<'_>) -> Result<f64> {
    let k = f.rows();
    if k < 2 {
        return Err(Error::invalid(
            "the kernel distance needs at least two feature vectors per set",
        ));
    }
    let mut s = 0.0;
    for i in 0..k {
        for j in i + 1..k {
            s += kernel(f.row(i), f.row(j));
        }
    }
    Ok(2.0 * s / (k as f64 * (k as f64 - 1.0)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng;

    fn gaussian(n: usize, d: usize, mean: f32, seed: u64) -> Vec<f32> {
        (0..n * d)
            .map(|i| mean + rng::normal(seed, 0, 0, i as u64))
            .collect()
    }

    #[test]
    fn same_law_is_near_zero_and_shifted_law_is_not() {
        let d = 8;
        let a = gaussian(400, d, 0.0, 1);
        let b = gaussian(400, d, 0.0, 2);
        let c = gaussian(400, d, 1.0, 3);
        let fa = Features { data: &a, dim: d };
        let same = kernel_inception_distance(&fa, &Features { data: &b, dim: d }).unwrap();
        let shifted = kernel_inception_distance(&fa, &Features { data: &c, dim: d }).unwrap();
        assert!(same.abs() < 0.05, "same law: {same}");
        assert!(shifted > 0.5, "shifted law: {shifted}");
    }
}
