//! Inception distances (docs/SPEC.md section 10.1): FID and KID in the features of the FID
//! InceptionV3 ([`FidInception`]), computed as torchmetrics computes them, beside the distances in
//! classifier features. The reference's features are cached on disk keyed by the weights, the
//! data's content and the reference subset, since extracting them is the slow part on a CPU.
use std::path::{Path, PathBuf};

use super::kid::cubic_kernel;
use super::{frechet_distance, Features};
use crate::checkpoint::Checkpoint;
use crate::data::{epoch_permutation, Dataset, PixelRange};
use crate::error::{Error, Result};
use crate::nn::inception::{FidInception, FEATURES};
use crate::ops::{gemm_all_cores, MatRef};
use crate::tensor::Tensor;

/// torchmetrics' KernelInceptionDistance defaults: 100 subsets of 1000 images from each side.
pub const KID_SUBSETS: usize = 100;
pub const KID_SUBSET_SIZE: usize = 1000;
/// Images per forward pass: about 360 MiB of tensors at 299x299 (`dml bench`'s memory column).
const BATCH: usize = 16;
/// Seeds the choice of the KID subsets.
const KID_SEED: u64 = 0x4b49_4453;

/// The Inception distances of one set of samples.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct InceptionScores {
    /// The Frechet distance of Gaussians fitted to sample and reference features: FID.
    pub fid: f64,
    /// KID: mean and (n - 1) standard deviation over `kid_subsets` subsets of `kid_subset_size`.
    pub kid_mean: f64,
    pub kid_std: f64,
    pub kid_subsets: usize,
    pub kid_subset_size: usize,
}

/// The FID Inception with the features of the reference images it scores samples against.
pub struct InceptionReference {
    net: FidInception,
    features: Vec<f32>,
}

impl InceptionReference {
    /// The reference: the features of test images `indices` of `test`, read from the cache in
    /// `cache_dir` when it holds them for these weights, data and indices, else extracted (with
    /// progress on stderr) and cached. A cache that cannot be written is a warning: the
    /// features are in hand, so the evaluation goes on.
    pub fn new(
        net: FidInception,
        test: &Dataset,
        indices: &[usize],
        cache_dir: &Path,
    ) -> Result<Self> {
        let path = cache_path(cache_dir, &net, test, indices);
        let features = match read_cache(&path, indices.len()) {
            Some(f) => {
                eprintln!("using cached Inception features {}", path.display());
                f
            }
            None => {
                let unit = test.images_in_range(indices, PixelRange { lo: 0.0, hi: 1.0 });
                eprintln!(
                    "Inception features of {} test images (cached afterwards)",
                    indices.len()
                );
                let shape = [test.channels, test.height, test.width];
                let f = features_of(&net, &unit, shape, "test images")?;
                if let Err(e) = write_cache(&path, &f, indices.len()) {
                    eprintln!("warning: the Inception features were not cached: {e}");
                }
                f
            }
        };
        Ok(Self { net, features })
    }

    /// The distances of `samples` (concatenated CHW images in `range`, clamped to it as a saved
    /// image would be, then mapped to [0, 1]) from the reference.
    pub fn score(
        &self,
        samples: &[f32],
        shape: [usize; 3],
        range: PixelRange,
    ) -> Result<InceptionScores> {
        let unit: Vec<f32> = samples
            .iter()
            .map(|&v| ((v - range.lo) / (range.hi - range.lo)).clamp(0.0, 1.0))
            .collect();
        let features = features_of(&self.net, &unit, shape, "samples")?;
        inception_scores(&features, &self.features)
    }
}

/// FID and KID between two sets of 2048-d features.
pub fn inception_scores(samples: &[f32], reference: &[f32]) -> Result<InceptionScores> {
    let s = Features {
        data: samples,
        dim: FEATURES,
    };
    let r = Features {
        data: reference,
        dim: FEATURES,
    };
    let fid = frechet_distance(&s, &r)?;
    let kid_subset_size = KID_SUBSET_SIZE.min(s.rows()).min(r.rows());
    let kids: Vec<f64> = (0..KID_SUBSETS)
        .map(|k| {
            let a = subset_rows(&s, kid_subset_size, 2 * k as u64);
            let b = subset_rows(&r, kid_subset_size, 2 * k as u64 + 1);
            polynomial_mmd(&a, &b, kid_subset_size)
        })
        .collect::<Result<_>>()?;
    let n = kids.len() as f64;
    let kid_mean = kids.iter().sum::<f64>() / n;
    let kid_std = (kids.iter().map(|k| (k - kid_mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
    let scores = InceptionScores {
        fid,
        kid_mean,
        kid_std,
        kid_subsets: KID_SUBSETS,
        kid_subset_size,
    };
    if [fid, kid_mean, kid_std].iter().any(|v| !v.is_finite()) {
        return Err(Error::invalid(format!(
            "Inception distances are not finite: {scores:?}"
        )));
    }
    Ok(scores)
}

/// `size` rows of `f` drawn without replacement (torchmetrics: `randperm(n)[:size]`), by the
/// permutation numbered `draw`.
fn subset_rows(f: &Features<'_>, size: usize, draw: u64) -> Vec<f32> {
    epoch_permutation(f.rows(), KID_SEED, draw)[..size]
        .iter()
        .flat_map(|&i| f.row(i as usize).iter().copied())
        .collect()
}

/// torchmetrics' `poly_mmd` with degree 3, gamma 1/d, coef 1: the unbiased MMD^2 of two sets of
/// `m` rows, the kernel's dot products taken by the cpu GEMM and summed in f64.
fn polynomial_mmd(a: &[f32], b: &[f32], m: usize) -> Result<f64> {
    if m < 2 {
        return Err(Error::invalid("KID needs at least two images on each side"));
    }
    let gram = |x: &[f32], y: &[f32]| {
        let mut g = vec![0.0f32; m * m];
        let (x, y) = (
            MatRef::row_major(x, m, FEATURES),
            MatRef::row_major(y, m, FEATURES),
        );
        gemm_all_cores(x, y.t(), &mut g);
        g
    };
    let kernel = |dot: f32| cubic_kernel(dot as f64, FEATURES);
    let off_diagonal = |g: &[f32]| -> f64 {
        g.iter()
            .enumerate()
            .filter(|(i, _)| i / m != i % m)
            .map(|(_, &d)| kernel(d))
            .sum()
    };
    let k_aa = off_diagonal(&gram(a, a));
    let k_bb = off_diagonal(&gram(b, b));
    let k_ab: f64 = gram(a, b).iter().map(|&d| kernel(d)).sum();
    let m = m as f64;
    Ok((k_aa + k_bb) / (m * (m - 1.0)) - 2.0 * k_ab / (m * m))
}

/// The features [n, 2048] of `n` concatenated CHW images in [0, 1], in batches, with progress.
pub fn features_of(
    net: &FidInception,
    images: &[f32],
    shape: [usize; 3],
    what: &str,
) -> Result<Vec<f32>> {
    let d: usize = shape.iter().product();
    let n = images.len() / d.max(1);
    let mut out = Vec::with_capacity(n * FEATURES);
    let started = std::time::Instant::now();
    for (i, batch) in images.chunks(BATCH * d).enumerate() {
        let rows = batch.len() / d;
        let x = Tensor::from_slice(batch, &[rows, shape[0], shape[1], shape[2]], net.device())?;
        out.extend(net.features(&x)?.to_vec()?);
        let done = i * BATCH + rows;
        let rate = done as f64 / started.elapsed().as_secs_f64().max(1e-9);
        eprint!("\r  Inception features of {what}: {done}/{n} ({rate:.1} images/s)   ");
    }
    eprintln!();
    if let Some(bad) = out.iter().position(|v| !v.is_finite()) {
        return Err(Error::invalid(format!(
            "the Inception features of {what} hold a non-finite value (image {}): are the weights \
             the converted pytorch-fid file?",
            bad / FEATURES
        )));
    }
    Ok(out)
}

/// Where the reference features for these weights, data and reference subset are cached.
fn cache_path(dir: &Path, net: &FidInception, test: &Dataset, indices: &[usize]) -> PathBuf {
    let mut h = crc32fast::Hasher::new();
    indices
        .iter()
        .for_each(|&i| h.update(&(i as u64).to_le_bytes()));
    dir.join(format!(
        "inception-features-{}-{}-{:08x}-{}.safetensors",
        net.weights_id(),
        test.fingerprint(),
        h.finalize(),
        indices.len()
    ))
}

/// The cached features when the file is there, readable and of the expected size; anything else
/// is a cache miss (the features are extracted again and the file replaced).
fn read_cache(path: &Path, n: usize) -> Option<Vec<f32>> {
    let file = Checkpoint::load(path).ok()?;
    let (shape, data) = file.tensors.get("features")?;
    (shape == &[n, FEATURES] && data.iter().all(|v| v.is_finite())).then(|| data.clone())
}

fn write_cache(path: &Path, features: &[f32], n: usize) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::file(dir, format!("cannot create: {e}")))?;
    }
    let mut file = Checkpoint::new();
    file.tensors
        .insert("features".into(), (vec![n, FEATURES], features.to_vec()));
    file.put_meta(
        "content",
        "FID InceptionV3 pool features of a fixed test-image subset",
    );
    file.save(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::kid;
    use crate::rng;

    fn features(n: usize, shift: f32, seed: u64) -> Vec<f32> {
        (0..n * FEATURES)
            .map(|i| (shift + rng::normal(seed, 0, 0, i as u64)).max(0.0))
            .collect()
    }

    #[test]
    fn kid_by_gemm_over_whole_sets_is_the_direct_estimator() {
        // Subsets as large as both sets are permutations of them: every subset's MMD is the
        // direct O(n^2) estimator of eval::kid, so the mean equals it and the spread vanishes.
        let (a, b) = (features(12, 0.5, 1), features(12, 0.8, 2));
        let scores = inception_scores(&a, &b).unwrap();
        let direct = kid(
            &Features {
                data: &a,
                dim: FEATURES,
            },
            &Features {
                data: &b,
                dim: FEATURES,
            },
        )
        .unwrap();
        assert_eq!(scores.kid_subset_size, 12);
        assert!(
            (scores.kid_mean - direct).abs() <= 1e-6 * direct.abs(),
            "{scores:?} vs {direct}"
        );
        assert!(scores.kid_std <= 1e-6 * direct.abs(), "{scores:?}");
        assert!(direct > 0.0, "shifted sets must differ: {direct}");
    }

    #[test]
    fn kid_subsets_shrink_to_the_smaller_set_and_vary() {
        let (a, b) = (features(5, 0.5, 3), features(30, 0.5, 4));
        let scores = inception_scores(&a, &b).unwrap();
        assert_eq!(
            (scores.kid_subsets, scores.kid_subset_size),
            (KID_SUBSETS, 5)
        );
        assert!(
            scores.kid_std > 0.0,
            "subsets of 5 from 30 differ: {scores:?}"
        );
    }
}
