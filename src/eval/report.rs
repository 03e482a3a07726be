//! One evaluation of a set of samples (SPEC section 10): distances between the samples and the
//! test split in the classifier's feature space, the classifier's own test accuracy, pixel-space
//! nearest neighbours in the training split, and the fraction of non-positive entries; with a
//! reference "floor" (the same distances for real training images) to read the numbers against.
use super::classifier::{accuracy_of, predicted_classes, Classifier};
use super::copying::{copy_test, CopyTest};
use super::inception::InceptionScores;
use super::neighbours::{nearest_neighbours, Neighbour};
use super::{frechet_distance, Features, KidReference};
use crate::data::{epoch_permutation, Dataset, PixelRange};
use crate::error::{Error, Result};

/// Training images compared with the samples at a time (bounds the memory of the nearest
/// neighbour search to a chunk of the training set in floats).
const NEIGHBOUR_CHUNK: usize = 4096;
/// Seeds the choice of the reference subsets.
const SUBSET_SEED: u64 = 0x4556_414c;

/// The columns of [`EvalReport::csv_row`], in order.
pub const EVAL_CSV_HEADER: &str = "samples,n_samples,n_reference,feature_dim,\
frechet_classifier_features,kid_classifier_features,floor_frechet_classifier_features,\
floor_kid_classifier_features,classifier_test_accuracy,nn_train_l2_mean,nn_train_l2_median,\
test_nn_train_l2_mean,test_nn_train_l2_median,nonpositive_fraction,sampler_sign_changes,\
inception_fid,inception_kid_mean,inception_kid_std,class_balance_tv,floor_class_balance_tv,\
copy_test_images_per_set,copy_test_nn_train_l2_mean,copy_test_nn_test_l2_mean,\
copy_test_nearer_train_fraction";

/// The samples to evaluate: `n` concatenated CHW images in the classifier's pixel range.
pub struct Samples<'a> {
    pub images: &'a [f32],
    /// Entries whose sign flipped during sampling, as the sampler counted them (GBM samplers).
    pub sign_changes: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EvalOptions {
    /// Test images the samples are compared with, at most (a random subset when fewer than the
    /// split).
    pub max_reference: usize,
    /// Nearest training images kept per sample (for the neighbour figure).
    pub neighbours: usize,
}

impl Default for EvalOptions {
    fn default() -> Self {
        Self {
            max_reference: 5000,
            neighbours: 3,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct EvalReport {
    pub n_samples: usize,
    /// Test images in the reference set.
    pub n_reference: usize,
    pub feature_dim: usize,
    /// Frechet distance between Gaussians fitted to sample and reference features.
    pub frechet: f64,
    /// Kernel distance (cubic polynomial kernel, unbiased MMD^2) between the same features.
    pub kid: f64,
    /// The same two distances for `n_samples` random training images in place of the samples:
    /// what real data of the same count scores (both estimators depend on the count).
    pub floor_frechet: f64,
    pub floor_kid: f64,
    /// The classifier's accuracy on the reference test images.
    pub test_accuracy: f64,
    /// Euclidean pixel distance of each sample to its nearest training image: mean and median.
    pub nn_mean: f64,
    pub nn_median: f64,
    /// The same for test images (never trained on): a sample much closer to the training set
    /// than test images are is a near-copy.
    pub test_nn_mean: f64,
    pub test_nn_median: f64,
    /// Fraction of sample entries <= 0: a sign-preserving sampler from a positive start has none
    /// (SPEC 10, for ASAMS).
    pub nonpositive_fraction: f64,
    pub sampler_sign_changes: Option<u64>,
    /// The nearest training images of each sample, closest first (indices into the training
    /// split).
    pub neighbours: Vec<Vec<Neighbour>>,
    /// FID and KID in the FID Inception's features, when its weights were given.
    pub inception: Option<InceptionScores>,
    /// The fraction of the samples the classifier puts in each class.
    pub class_fractions: Vec<f64>,
    /// How far those fractions are from the reference's (classified by the same classifier):
    /// the total variation distance, half the summed absolute differences, 0 to 1. A model that
    /// draws some classes too often scores high here, whatever its images look like.
    pub class_balance_tv: f64,
    /// The same for the floor's training images: what sampling alone gives at this count.
    pub floor_class_balance_tv: f64,
    /// Nearest neighbours among equal numbers of training and test images: copying shows as
    /// samples nearer the training images far more than half the time.
    pub copy_test: CopyTest,
}

impl EvalReport {
    /// An error when a distance is not finite (a classifier whose weights are NaN, say), so
    /// that no NaN row reaches a table or a CSV file.
    fn ensure_finite(&self) -> Result<()> {
        let values = [
            ("Frechet distance", self.frechet),
            ("kernel distance", self.kid),
            ("Frechet floor", self.floor_frechet),
            ("kernel distance floor", self.floor_kid),
            ("nearest-neighbour distance", self.nn_mean),
            ("test nearest-neighbour distance", self.test_nn_mean),
            ("copy test's training distance", self.copy_test.train_mean),
            ("copy test's test distance", self.copy_test.test_mean),
        ];
        match values.iter().find(|(_, v)| !v.is_finite()) {
            None => Ok(()),
            Some((name, v)) => Err(Error::invalid(format!(
                "evaluate: the {name} is {v}: are the classifier's weights finite?"
            ))),
        }
    }

    /// A human-readable table, one quantity a line, the reference floor beside the distances.
    pub fn to_table(&self) -> String {
        let flips = self
            .sampler_sign_changes
            .map_or_else(|| "not recorded".to_string(), |n| n.to_string());
        let rows = [
            ("samples".to_string(), self.n_samples.to_string()),
            (
                "reference (test images)".to_string(),
                self.n_reference.to_string(),
            ),
            (
                format!(
                    "Frechet distance in classifier features ({}-d)",
                    self.feature_dim
                ),
                format!(
                    "{:.4}  (train-image floor {:.4})",
                    self.frechet, self.floor_frechet
                ),
            ),
            (
                "kernel distance (cubic kernel, MMD^2) in classifier features".to_string(),
                format!("{:.5}  (train-image floor {:.5})", self.kid, self.floor_kid),
            ),
            (
                "classifier accuracy on the reference".to_string(),
                format!("{:.2}%", 100.0 * self.test_accuracy),
            ),
            (
                "nearest training image, pixel L2: mean / median".to_string(),
                format!(
                    "{:.3} / {:.3}  (test images: {:.3} / {:.3})",
                    self.nn_mean, self.nn_median, self.test_nn_mean, self.test_nn_median
                ),
            ),
            (
                format!(
                    "copy test: nearest of {} train / {} test images, pixel L2 mean",
                    self.copy_test.images_per_set, self.copy_test.images_per_set
                ),
                format!(
                    "{:.3} / {:.3}",
                    self.copy_test.train_mean, self.copy_test.test_mean
                ),
            ),
            (
                "copy test: samples nearer a training image".to_string(),
                format!(
                    "{:.1}%  (without copying 50% +- {:.1}%)",
                    100.0 * self.copy_test.nearer_train_fraction,
                    100.0 * CopyTest::no_copying_std_error(self.n_samples)
                ),
            ),
            (
                "sample entries <= 0".to_string(),
                format!("{:.4}%", 100.0 * self.nonpositive_fraction),
            ),
            ("sign changes counted by the sampler".to_string(), flips),
            (
                "class balance: total variation from the reference".to_string(),
                format!(
                    "{:.4}  (train-image floor {:.4})",
                    self.class_balance_tv, self.floor_class_balance_tv
                ),
            ),
            (
                "samples per class (classifier), %".to_string(),
                self.class_fractions
                    .iter()
                    .map(|f| format!("{:.1}", 100.0 * f))
                    .collect::<Vec<_>>()
                    .join(" "),
            ),
        ];
        let inception = self.inception.iter().flat_map(|i| {
            [
                (
                    "FID (Inception features, 2048-d)".to_string(),
                    format!("{:.3}", i.fid),
                ),
                (
                    format!(
                        "KID (Inception, {} subsets of {})",
                        i.kid_subsets, i.kid_subset_size
                    ),
                    format!("{:.5} +- {:.5}", i.kid_mean, i.kid_std),
                ),
            ]
        });
        let rows: Vec<(String, String)> = rows.into_iter().chain(inception).collect();
        let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        rows.iter()
            .map(|(k, v)| format!("{k:<width$}  {v}\n"))
            .collect()
    }

    /// The report as one CSV line (no newline) under [`EVAL_CSV_HEADER`]; `samples` says where
    /// the samples came from (quoted as CSV requires).
    pub fn csv_row(&self, samples: &str) -> String {
        let flips = self
            .sampler_sign_changes
            .map_or_else(String::new, |n| n.to_string());
        [
            crate::csv::quote(samples),
            self.n_samples.to_string(),
            self.n_reference.to_string(),
            self.feature_dim.to_string(),
            format!("{:e}", self.frechet),
            format!("{:e}", self.kid),
            format!("{:e}", self.floor_frechet),
            format!("{:e}", self.floor_kid),
            format!("{}", self.test_accuracy),
            format!("{}", self.nn_mean),
            format!("{}", self.nn_median),
            format!("{}", self.test_nn_mean),
            format!("{}", self.test_nn_median),
            format!("{:e}", self.nonpositive_fraction),
            flips,
        ]
        .into_iter()
        .chain(self.inception.map_or_else(
            || vec![String::new(); 3],
            |i| {
                vec![
                    format!("{}", i.fid),
                    format!("{:e}", i.kid_mean),
                    format!("{:e}", i.kid_std),
                ]
            },
        ))
        .chain([
            format!("{}", self.class_balance_tv),
            format!("{}", self.floor_class_balance_tv),
            self.copy_test.images_per_set.to_string(),
            format!("{}", self.copy_test.train_mean),
            format!("{}", self.copy_test.test_mean),
            format!("{}", self.copy_test.nearer_train_fraction),
        ])
        .collect::<Vec<_>>()
        .join(",")
    }
}

/// The fraction of images in each of `classes` classes, by the largest of their logits
/// (`[n, classes]`, row-major).
fn class_fractions(logits: &[f32], classes: usize) -> Vec<f64> {
    let mut counts = vec![0usize; classes];
    for class in predicted_classes(logits, classes) {
        counts[class] += 1;
    }
    let n = (logits.len() / classes).max(1) as f64;
    counts.iter().map(|&c| c as f64 / n).collect()
}

/// Half the summed absolute differences of two distributions over the same classes.
fn total_variation(p: &[f64], q: &[f64]) -> f64 {
    0.5 * p.iter().zip(q).map(|(a, b)| (a - b).abs()).sum::<f64>()
}

/// Evaluates `samples` against the `test` split, with nearest neighbours in `train`, in the
/// feature space of `classifier` (which must have been made for this data).
pub fn evaluate(
    samples: &Samples<'_>,
    train: &Dataset,
    test: &Dataset,
    classifier: &Classifier,
    options: &EvalOptions,
) -> Result<EvalReport> {
    classifier.check_dataset(train)?;
    classifier.check_dataset(test)?;
    let d = train.image_len();
    let n_samples = samples.images.len() / d.max(1);
    if n_samples < 2 || samples.images.len() != n_samples * d {
        return Err(Error::shape(
            "evaluate",
            format!(
                "{} sample values are not two or more images of {:?}",
                samples.images.len(),
                classifier.spec.image_shape
            ),
        ));
    }
    let non_finite = samples.images.iter().filter(|v| !v.is_finite()).count();
    if non_finite > 0 {
        return Err(Error::invalid(format!(
            "evaluate: {non_finite} of {} sample values are not finite (NaN or infinite); \
             distances to them mean nothing",
            samples.images.len()
        )));
    }
    if train.n == 0 || test.n < 2 || options.neighbours == 0 || options.max_reference < 2 {
        return Err(Error::invalid(format!(
            "evaluate: needs training images ('{}' has {}), two or more test images ('{}' has \
             {}, {} asked) and at least one neighbour per sample ({} asked)",
            train.name, train.n, test.name, test.n, options.max_reference, options.neighbours
        )));
    }
    let range = classifier.spec.range;
    let reference_idx = subset(test.n, options.max_reference);
    let floor_idx = subset(train.n, n_samples);
    let (reference, reference_labels) = (
        test.images_in_range(&reference_idx, range),
        reference_idx
            .iter()
            .map(|&i| test.labels[i])
            .collect::<Vec<u8>>(),
    );
    let (ref_features, ref_logits) = classifier.features_and_logits(&reference)?;
    let (sample_features, sample_logits) = classifier.features_and_logits(samples.images)?;
    let (floor_features, floor_logits) =
        classifier.features_and_logits(&train.images_in_range(&floor_idx, range))?;
    let classes = classifier.spec.n_classes;
    let reference_classes = class_fractions(&ref_logits, classes);
    let sample_classes = class_fractions(&sample_logits, classes);
    let dim = classifier.spec.feature_dim;
    let r = Features {
        data: &ref_features,
        dim,
    };
    let s = Features {
        data: &sample_features,
        dim,
    };
    let f = Features {
        data: &floor_features,
        dim,
    };
    let neighbours = nearest_training_images(samples.images, train, range, options.neighbours)?;
    let nn: Vec<f32> = neighbours.iter().map(|n| n[0].distance).collect();
    let test_for_nn = &reference[..n_samples.min(reference_idx.len()) * d];
    let test_nn: Vec<f32> = nearest_training_images(test_for_nn, train, range, 1)?
        .iter()
        .map(|n| n[0].distance)
        .collect();
    let kid_reference = KidReference::new(&r)?;
    let report = EvalReport {
        n_samples,
        n_reference: reference_idx.len(),
        feature_dim: dim,
        frechet: frechet_distance(&s, &r)?,
        kid: kid_reference.distance(&s)?,
        floor_frechet: frechet_distance(&f, &r)?,
        floor_kid: kid_reference.distance(&f)?,
        test_accuracy: accuracy_of(&ref_logits, &reference_labels, classifier.spec.n_classes),
        nn_mean: mean(&nn),
        nn_median: median(&nn),
        test_nn_mean: mean(&test_nn),
        test_nn_median: median(&test_nn),
        nonpositive_fraction: samples.images.iter().filter(|&&v| v <= 0.0).count() as f64
            / samples.images.len() as f64,
        sampler_sign_changes: samples.sign_changes,
        neighbours,
        inception: None,
        class_balance_tv: total_variation(&sample_classes, &reference_classes),
        floor_class_balance_tv: total_variation(
            &class_fractions(&floor_logits, classes),
            &reference_classes,
        ),
        class_fractions: sample_classes,
        copy_test: copy_test(samples.images, train, test, range)?,
    };
    report.ensure_finite()?;
    Ok(report)
}

/// `count` indices of `0..n`: all in order when `count >= n`, else a fixed random subset.
pub fn subset(n: usize, count: usize) -> Vec<usize> {
    if count >= n {
        return (0..n).collect();
    }
    let mut idx: Vec<usize> = epoch_permutation(n, SUBSET_SEED, 0)[..count]
        .iter()
        .map(|&i| i as usize)
        .collect();
    idx.sort_unstable();
    idx
}

/// The `k` nearest training images of each of `images` (pixel space, training images mapped
/// into `range`).
pub fn nearest_training_images(
    images: &[f32],
    train: &Dataset,
    range: PixelRange,
    k: usize,
) -> Result<Vec<Vec<Neighbour>>> {
    let all: Vec<usize> = (0..train.n).collect();
    nearest_images(images, train, &all, range, k)
}

/// The `k` nearest of the images `indices` of `data` to each of `images` (pixel space, `data`
/// mapped into `range`; neighbours' indices are into `data`), searching a chunk at a time.
pub(super) fn nearest_images(
    images: &[f32],
    data: &Dataset,
    indices: &[usize],
    range: PixelRange,
    k: usize,
) -> Result<Vec<Vec<Neighbour>>> {
    let d = data.image_len();
    let n = images.len() / d.max(1);
    let mut best: Vec<Vec<Neighbour>> = vec![Vec::new(); n];
    for chunk_indices in indices.chunks(NEIGHBOUR_CHUNK) {
        let chunk = data.images_in_range(chunk_indices, range);
        let found = nearest_neighbours(images, &chunk, d, k.min(chunk_indices.len()))?;
        for (kept, new) in best.iter_mut().zip(found) {
            kept.extend(new.into_iter().map(|nb| Neighbour {
                index: chunk_indices[nb.index],
                ..nb
            }));
            kept.sort_by(|a, b| a.distance.total_cmp(&b.distance));
            kept.truncate(k);
        }
    }
    Ok(best)
}

fn mean(v: &[f32]) -> f64 {
    v.iter().map(|&x| x as f64).sum::<f64>() / v.len().max(1) as f64
}

fn median(v: &[f32]) -> f64 {
    let mut s: Vec<f32> = v.to_vec();
    s.sort_by(f32::total_cmp);
    match s.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => s[n / 2] as f64,
        n => (s[n / 2 - 1] as f64 + s[n / 2] as f64) / 2.0,
    }
}
