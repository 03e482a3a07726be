//! The equal-size copy test (SPEC 10): is each sample nearer to images the model was trained on
//! than to images of the same data it never saw?
//!
//! A sample's distance to its nearest training image, set beside test images' distance to
//! theirs, mixes two things: copying, and how smooth the samples are (a blurred average of many
//! items lies close to a great many images). Comparing each sample with two sets of the same
//! size, one drawn from the training split and one from the test split, removes the second: a
//! model that generalises draws samples that owe nothing to which images it was trained on, so
//! its samples are nearer the training set half the time; a model that copies is nearer it
//! nearly always.
use super::report::{nearest_images, subset};
use crate::data::{Dataset, PixelRange};
use crate::error::Result;

/// What the copy test found.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CopyTest {
    /// Images in each of the two sets: as many as the smaller split holds.
    pub images_per_set: usize,
    /// Mean pixel L2 distance of a sample to its nearest image of the training set.
    pub train_mean: f64,
    /// The same for the test set.
    pub test_mean: f64,
    /// Fraction of samples nearer their nearest training image than their nearest test image
    /// (a tie counts one half): about 0.5 without copying, near 1 when samples are copies.
    pub nearer_train_fraction: f64,
}

impl CopyTest {
    /// The binomial standard error of `nearer_train_fraction` for `n` samples when there is no
    /// copying (a fair coin per sample): 0.5 / sqrt(n). It holds for samples whose comparisons
    /// are independent; samples that collapse onto a few shapes share their nearest images, and
    /// their fraction can stray further (SPEC 10).
    pub fn no_copying_std_error(n: usize) -> f64 {
        0.5 / (n.max(1) as f64).sqrt()
    }
}

/// Runs the copy test on `samples` (concatenated images in `range`) with sets of
/// `min(train.n, test.n)` images: all of the smaller split and a fixed random subset of the
/// larger.
pub fn copy_test(
    samples: &[f32],
    train: &Dataset,
    test: &Dataset,
    range: PixelRange,
) -> Result<CopyTest> {
    let m = train.n.min(test.n);
    let nearest = |data: &Dataset| -> Result<Vec<f32>> {
        let found = nearest_images(samples, data, &subset(data.n, m), range, 1)?;
        Ok(found.iter().map(|n| n[0].distance).collect())
    };
    let to_train = nearest(train)?;
    let to_test = nearest(test)?;
    let n = to_train.len().max(1) as f64;
    let nearer_train: f64 = to_train
        .iter()
        .zip(&to_test)
        .map(|(a, b)| match a.total_cmp(b) {
            std::cmp::Ordering::Less => 1.0,
            std::cmp::Ordering::Equal => 0.5,
            std::cmp::Ordering::Greater => 0.0,
        })
        .sum();
    let mean = |v: &[f32]| v.iter().map(|&x| x as f64).sum::<f64>() / n;
    Ok(CopyTest {
        images_per_set: m,
        train_mean: mean(&to_train),
        test_mean: mean(&to_test),
        nearer_train_fraction: nearer_train / n,
    })
}
