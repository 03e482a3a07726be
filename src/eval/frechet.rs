//! Frechet distance between Gaussians fitted to two feature sets (the quantity FID computes, here
//! in the features of our own classifier, so it is named for what it is).
use nalgebra::{DMatrix, DVector, SymmetricEigen};

use super::Features;
use crate::error::{Error, Result};

/// `||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^{1/2})`.
///
/// `Tr (S_a S_b)^{1/2}` is the sum of the square roots of the eigenvalues of `S_a S_b`, taken from
/// whichever symmetric matrix with the same non-zero eigenvalues is smaller (see
/// [`trace_sqrt_of_product`]), so only symmetric eigendecompositions are needed and 2048-d
/// Inception features of a few thousand images do not need a 2048x2048 one.
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
    let (mu_a, x_a) = mean_and_centred(a);
    let (mu_b, x_b) = mean_and_centred(b);
    let trace = |x: &DMatrix<f64>| x.norm_squared() / (x.nrows() as f64 - 1.0);
    let diff = mu_a - mu_b;
    Ok(diff.dot(&diff) + trace(&x_a) + trace(&x_b) - 2.0 * trace_sqrt_of_product(&x_a, &x_b))
}

/// `Tr (S_a S_b)^{1/2}` for `S = X^T X / (n - 1)` of centred rows `X` [n, d]. With many rows it
/// is the trace of the square root of `S_a^{1/2} S_b S_a^{1/2}` (d x d, symmetric positive
/// semi-definite, the same eigenvalues as `S_a S_b`). With fewer rows than dimensions it is the
/// sum of the singular values of `M = X_a X_b^T / sqrt((n_a - 1)(n_b - 1))`, since
/// `S_a S_b = X_a^T M X_b / c` shares its non-zero eigenvalues with `M M^T` (the square roots of
/// the eigenvalues of the smaller of `M M^T` and `M^T M`): exact, and `min(n_a, n_b)` wide.
fn trace_sqrt_of_product(x_a: &DMatrix<f64>, x_b: &DMatrix<f64>) -> f64 {
    let (n_a, n_b, d) = (x_a.nrows(), x_b.nrows(), x_a.ncols());
    let sum_of_roots = |m: DMatrix<f64>| -> f64 {
        let m = (&m + m.transpose()) * 0.5;
        SymmetricEigen::new(m)
            .eigenvalues
            .iter()
            .map(|&l| l.max(0.0).sqrt())
            .sum()
    };
    if n_a.min(n_b) < d {
        let m = x_a * x_b.transpose() / (((n_a - 1) * (n_b - 1)) as f64).sqrt();
        let gram = if n_a <= n_b {
            &m * m.transpose()
        } else {
            m.transpose() * &m
        };
        sum_of_roots(gram)
    } else {
        let cov = |x: &DMatrix<f64>| x.transpose() * x / (x.nrows() as f64 - 1.0);
        let sqrt_a = psd_sqrt(&cov(x_a));
        sum_of_roots(&sqrt_a * cov(x_b) * &sqrt_a)
    }
}

/// The mean of the rows and the rows minus it.
fn mean_and_centred(f: &Features<'_>) -> (DVector<f64>, DMatrix<f64>) {
    let (n, d) = (f.rows(), f.dim);
    let m = DMatrix::from_fn(n, d, |i, j| f.row(i)[j] as f64);
    let mean = DVector::from_fn(d, |j, _| m.column(j).mean());
    let mut centred = m;
    for j in 0..d {
        centred.column_mut(j).add_scalar_mut(-mean[j]);
    }
    (mean, centred)
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
    fn few_rows_and_many_rows_give_the_same_trace() {
        // 6 and 9 rows in 16 dimensions take the small Gram form; the d x d form over the same
        // rows must give the same trace, in either order of the sets.
        let (d, n_a, n_b) = (16, 6, 9);
        let a = gaussian(n_a, d, 0.3, 1.0, 4);
        let b = gaussian(n_b, d, -0.2, 1.5, 5);
        let (_, x_a) = mean_and_centred(&Features { data: &a, dim: d });
        let (_, x_b) = mean_and_centred(&Features { data: &b, dim: d });
        let small = trace_sqrt_of_product(&x_a, &x_b);
        let cov = |x: &DMatrix<f64>| x.transpose() * x / (x.nrows() as f64 - 1.0);
        let sqrt_a = psd_sqrt(&cov(&x_a));
        let middle = &sqrt_a * cov(&x_b) * &sqrt_a;
        let large: f64 = SymmetricEigen::new((&middle + middle.transpose()) * 0.5)
            .eigenvalues
            .iter()
            .map(|&l| l.max(0.0).sqrt())
            .sum();
        // The d x d form loses ~1e-8 to the square roots of rank-deficient matrices' zero eigenvalues.
        assert!((small - large).abs() < 1e-7 * large, "{small} vs {large}");
        let swapped = trace_sqrt_of_product(&x_b, &x_a);
        assert!(
            (swapped - large).abs() < 1e-7 * large,
            "{swapped} vs {large}"
        );
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
