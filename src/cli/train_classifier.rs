//! `dml train-classifier`: train the classifier whose features `dml eval` measures distances in
//! (SPEC section 10), report its test accuracy and save it where `dml eval` looks for it.
use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Args;

use super::progress::Progress;
use crate::data::{Dataset, PixelRange, Split};
use crate::device::Device;
use crate::error::{Error, Result};
use crate::eval::{Classifier, ClassifierSpec, ClassifierTraining};

/// Where classifiers are cached when no path is given: `$XDG_CACHE_HOME/dml`, else
/// `$HOME/.cache/dml`, else `.cache/dml` in the working directory.
pub fn cache_dir() -> PathBuf {
    let non_empty = |var: &str| std::env::var_os(var).filter(|v| !v.is_empty());
    if let Some(dir) = non_empty("XDG_CACHE_HOME") {
        PathBuf::from(dir).join("dml")
    } else if let Some(home) = non_empty("HOME") {
        PathBuf::from(home).join(".cache").join("dml")
    } else {
        PathBuf::from(".cache").join("dml")
    }
}

/// The cached classifier for `data` (by its [`Dataset::fingerprint`], so the same content under
/// any path shares it and other content never does) with images in `range`, trained for `steps`:
/// `classifier-<fingerprint>-<lo>-<hi>-<steps>steps.safetensors` in [`cache_dir`].
pub fn cached_classifier_path(data: &Dataset, range: PixelRange, steps: u64) -> PathBuf {
    cache_dir().join(format!(
        "classifier-{}-{}-{}-{steps}steps.safetensors",
        data.fingerprint(),
        range.lo,
        range.hi
    ))
}

/// An error naming `flag` unless `steps` is at least 1: no steps would cache an untrained
/// classifier that every later evaluation would use.
pub fn check_steps(flag: &str, steps: u64) -> Result<()> {
    if steps == 0 {
        return Err(Error::invalid(format!(
            "{flag} must be at least 1 (0 would save an untrained classifier)"
        )));
    }
    Ok(())
}

fn check_lr(lr: f32) -> Result<()> {
    if !(lr.is_finite() && lr > 0.0) {
        return Err(Error::invalid(format!(
            "--lr must be a finite number above 0, got {lr}"
        )));
    }
    Ok(())
}

#[derive(Args, Debug, Clone)]
pub struct TrainClassifierArgs {
    /// Training data: shapes (built in), fashion-mnist, mnist, kmnist, cifar10, or a directory of
    /// IDX / CIFAR-10 files (as `dml train --data`).
    #[arg(long, alias = "dataset", default_value = "fashion-mnist")]
    pub data: String,
    /// Use only the first N training images.
    #[arg(long)]
    pub max_images: Option<usize>,
    /// The pixel range of the score models it will evaluate (SPEC 1).
    #[arg(long, default_value_t = 1.0)]
    pub range_lo: f32,
    #[arg(long, default_value_t = 2.0)]
    pub range_hi: f32,
    #[arg(long, default_value_t = ClassifierTraining::default().steps)]
    pub steps: u64,
    #[arg(long, default_value_t = ClassifierTraining::default().batch)]
    pub batch: usize,
    /// AdamW learning rate.
    #[arg(long, default_value_t = ClassifierTraining::default().lr)]
    pub lr: f32,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output file [default: the cache file `dml eval` looks for, see `cached_classifier_path`].
    #[arg(long)]
    pub out: Option<PathBuf>,
}

pub fn run(device: &Device, args: &TrainClassifierArgs) -> Result<()> {
    check_steps("--steps", args.steps)?;
    check_lr(args.lr)?;
    let range = PixelRange::new(args.range_lo, args.range_hi)?;
    let full = Dataset::load(&args.data, Split::Train)?;
    // The classifier is for the whole training split, also when it sees only its first images.
    let spec = ClassifierSpec::for_dataset(&full, range);
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| cached_classifier_path(&full, range, args.steps));
    let train = match args.max_images {
        Some(n) => full.truncated(n),
        None => full,
    };
    let test = Dataset::load(&args.data, Split::Test)?;
    let training = ClassifierTraining {
        steps: args.steps,
        batch: args.batch,
        lr: args.lr,
        seed: args.seed,
    };
    train_and_save(spec, &train, &test, training, device, &out)?;
    Ok(())
}

/// Trains a classifier with a progress bar, measures its test accuracy, prints both and saves it
/// to `out` (creating the directory).
pub fn train_and_save(
    spec: ClassifierSpec,
    train: &Dataset,
    test: &Dataset,
    training: ClassifierTraining,
    device: &Device,
    out: &Path,
) -> Result<Classifier> {
    check_writable_dir(out)?;
    eprintln!(
        "training the evaluation classifier on '{}' ({} images, {} steps of {}) on {device}",
        train.name, train.n, training.steps, training.batch
    );
    let start = Instant::now();
    let mut bar = Progress::new("classifier", training.steps, 0);
    let mut classifier = Classifier::train(spec, train, training, device, &mut |step, loss| {
        bar.update(step, || format!("loss {loss:.4}"));
    })?;
    bar.finish();
    let accuracy = classifier.accuracy(test, test.n)?;
    classifier.test_accuracy = Some(accuracy);
    println!(
        "classifier: test accuracy {:.2}% on {} images after {} steps in {:.1} s",
        100.0 * accuracy,
        test.n,
        training.steps,
        start.elapsed().as_secs_f64()
    );
    classifier.save(out)?;
    println!("wrote {}", out.display());
    Ok(classifier)
}

/// Creates the directory `out` goes in and writes a probe file there, so that a cache or output
/// directory that cannot take the classifier fails before the training, not after it.
fn check_writable_dir(out: &Path) -> Result<()> {
    let dir = match out.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let io = |e| Error::Io {
        context: format!("cannot write the classifier into {}", dir.display()),
        source: e,
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    let probe = dir.join(format!(".dml-write-probe-{}", std::process::id()));
    std::fs::File::create(&probe).map_err(io)?;
    std::fs::remove_file(&probe).map_err(io)
}
