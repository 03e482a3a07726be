//! Frechet distance between Gaussians fitted to two feature sets (the quantity FID computes, here
//! in the features of our own classifier, so it is named for what it is).
use nalgebra::{DMatrix, DVector, SymmetricEigen};

use super::Features;
use crate::error::{Error, Result};

/// `||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^{1/2})`.
///
/// The trace of the matrix square root is computed as the sum of square roots of the eigenvalues
/// of `S_a^{1/2} S_b S_a^{1/2}`, which is symmetric positive semi-definite, so only symmetric
/// eigendecompositions are needed.
pub fn frechet_distance(a: &Features<'_>, b: &Features<'_>) -> Result<f64> {
    if a.dim != b.dim {
        return Err(Error::invalid(format!(
            "feature dimensions differ: {} vs {}",
            a.dim, b.dim
        )));
    }
    if a.rows() < 2 || b.rows() < 2 {
        return Err(Error::invalid(
            "the Frechet distance needs at least two feature vectors per set",
        ));
    }
    let (mu_a, cov_a) = mean_and_covariance(a);
    let (mu_b, cov_b) = mean_and_covariance(b);
    let sqrt_a = psd_sqrt(&cov_a);
    let middle = &sqrt_a * &cov_b * &sqrt_a;
    let middle = (&middle + middle.transpose()) * 0.5;
    let tr_sqrt: f64 = SymmetricEigen::new(middle)
        .eigenvalues
        .iter()
        .map(|&l| l.max(0.0).sqrt())
        .sum();
    let diff = mu_a - mu_b;
    Ok(diff.dot(&diff) + cov_a.trace() + cov_b.trace() - 2.0 * tr_sqrt)
}

fn mean_and_covariance(f: &Features<'_>) -> (DVector<f64>, DMatrix<f64>) {
    let (n, d) = (f.rows(), f.dim);
    let m = DMatrix::from_fn(n, d, |i, j| f.row(i)[j] as f64);
    let mean = DVector::from_fn(d, |j, _| m.column(j).mean());
    let mut centred = m;
    for j in 0..d {
        centred.column_mut(j).add_scalar_mut(-mean[j]);
    }
    let cov = centred.transpose() * &centred / (n as f64 - 1.0);
    (mean, cov)
}

/// Square root of a symmetric positive semi-definite matrix (negative rounding noise clipped).
fn psd_sqrt(m: &DMatrix<f64>) -> DMatrix<f64> {
    let eig = SymmetricEigen::new(m.clone());
    let roots = eig.eigenvalues.map(|l| l.max(0.0).sqrt());
    &eig.eigenvectors * DMatrix::from_diagonal(&roots) * eig.eigenvectors.transpose()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng;

    fn gaussian(n: usize, d: usize, mean: f32, scale: f32, seed: u64) -> Vec<f32> {
        (0..n * d)
            .map(|i| mean + scale * rng::normal(seed, 0, 0, i as u64))
            .collect()
    }

    #[test]
    fn identical_sets_have_zero_distance() {
        let x = gaussian(500, 4, 0.0, 1.0, 1);
        let f = Features { data: &x, dim: 4 };
        assert!(frechet_distance(&f, &f).unwrap().abs() < 1e-9);
    }

    #[test]
    fn matches_closed_form_for_isotropic_gaussians() {
        // N(0, I) vs N(m, s^2 I) in d dims: d m^2 + d (1 + s^2 - 2 s).
        let (n, d, m, s) = (20_000, 3, 0.5f32, 2.0f32);
        let a = gaussian(n, d, 0.0, 1.0, 2);
        let b = gaussian(n, d, m, s, 3);
        let got = frechet_distance(
            &Features { data: &a, dim: d },
            &Features { data: &b, dim: d },
        )
        .unwrap();
        let want = d as f64 * ((m * m) as f64 + (1.0 + (s * s) as f64 - 2.0 * s as f64));
        assert!((got - want).abs() < 0.08 * want, "{got} vs {want}");
    }

    #[test]
    fn mismatched_dimensions_are_an_error() {
        let x = vec![0.0; 12];
        let err = frechet_distance(
            &Features { data: &x, dim: 3 },
            &Features { data: &x, dim: 4 },
        );
        assert!(err.is_err());
    }
}
