//! What scoring samples needs, shared by `dml eval`, `dml sweep` and `dml train --eval-every`
//! so that all three report the same numbers for the same samples: the dataset's train and test
//! splits and the classifier whose features the distances use, loaded (or trained and cached)
//! once, and [`evaluate`] over them.
use std::path::{Path, PathBuf};

use clap::Args;

use super::train_classifier::{cache_dir, cached_classifier_path, check_steps, train_and_save};
use crate::data::{Dataset, PixelRange, Split};
use crate::device::Device;
use crate::error::{Error, Result};
use crate::eval::inception::InceptionReference;
use crate::eval::{
    evaluate, fixed_subset, Classifier, ClassifierSpec, ClassifierTraining, EvalOptions,
    EvalReport, Samples,
};
use crate::nn::inception::FidInception;

/// The options that choose the data, the classifier and the reference set of a score.
#[derive(Args, Debug, Clone)]
pub struct ScoringArgs {
    /// The classifier whose features the distances use [default: a cached one for the
    /// checkpoint's dataset and range, trained on first use].
    #[arg(long)]
    pub classifier: Option<PathBuf>,
    /// Steps for training the cached classifier when there is none yet.
    #[arg(long, default_value_t = ClassifierTraining::default().steps)]
    pub classifier_steps: u64,
    /// The dataset [default: the one the checkpoint was trained on].
    #[arg(long)]
    pub data: Option<String>,
    /// Test images the samples are compared with, at most.
    #[arg(long, default_value_t = EvalOptions::default().max_reference)]
    pub max_reference: usize,
    /// FID InceptionV3 weights: pytorch-fid's pt_inception-2015-12-05-6726825d.pth converted
    /// by reference/convert_inception.py (README, "Inception FID and KID"). Adds Inception FID
    /// and KID to the scores (eval's report and CSV, each row of sweep.csv); the test images'
    /// features are cached after the first use.
    #[arg(long, value_name = "FILE")]
    pub inception: Option<PathBuf>,
}

impl ScoringArgs {
    /// Refuses options that cannot give a score, before any work.
    pub fn check(&self) -> Result<()> {
        check_steps("--classifier-steps", self.classifier_steps)?;
        if self.max_reference < 2 {
            return Err(Error::invalid(format!(
                "--max-reference {} must be at least 2 (the distances compare distributions)",
                self.max_reference
            )));
        }
        Ok(())
    }

    /// The dataset's name: `--data`, else the one the checkpoint was trained on.
    pub fn data_name(&self, checkpoint_dataset: &str) -> String {
        self.data
            .clone()
            .unwrap_or_else(|| checkpoint_dataset.to_string())
    }

    /// A short description of what the score depends on besides the samples, for records
    /// that must not mix scores made differently.
    pub fn conditions(&self, data_name: &str) -> String {
        let classifier = self.classifier.as_ref().map_or_else(
            || format!("cached-{}steps", self.classifier_steps),
            |p| p.display().to_string(),
        );
        let inception = self
            .inception
            .as_ref()
            .map_or_else(String::new, |p| format!(";inception={}", p.display()));
        format!(
            "data={data_name};classifier={classifier};max_reference={}{inception}",
            self.max_reference
        )
    }
}

/// The splits and classifier a score is made with.
pub struct Scorer {
    pub train: Dataset,
    pub test: Dataset,
    pub classifier: Classifier,
    pub options: EvalOptions,
    /// The FID Inception and its reference features, with `--inception`.
    pub inception: Option<InceptionReference>,
}

impl Scorer {
    /// The two splits of `data_name`, which must hold images of `image_shape`.
    pub fn datasets(
        args: &ScoringArgs,
        data_name: &str,
        image_shape: [usize; 3],
    ) -> Result<(Dataset, Dataset)> {
        let train = load_dataset(data_name, Split::Train, args)?;
        let test = load_dataset(data_name, Split::Test, args)?;
        check_image_shape(&train, data_name, image_shape)?;
        Ok((train, test))
    }

    /// The path the cached classifier for `train` in `range` has (an input of the command).
    pub fn cached_classifier(args: &ScoringArgs, train: &Dataset, range: PixelRange) -> PathBuf {
        cached_classifier_path(train, range, args.classifier_steps)
    }

    /// The scorer over `train` and `test`, its classifier `--classifier`, else the cached one
    /// (trained and cached first when there is none that matches).
    pub fn new(
        args: &ScoringArgs,
        (train, test): (Dataset, Dataset),
        range: PixelRange,
        neighbours: usize,
        device: &Device,
    ) -> Result<Self> {
        let classifier = classifier_for(args, range, &train, &test, device)?;
        let inception = match &args.inception {
            None => None,
            Some(path) => {
                let net = FidInception::load(path, device)?;
                let indices = fixed_subset(test.n, args.max_reference);
                Some(InceptionReference::new(net, &test, &indices, &cache_dir())?)
            }
        };
        Ok(Self {
            train,
            test,
            classifier,
            options: EvalOptions {
                max_reference: args.max_reference,
                neighbours,
            },
            inception,
        })
    }

    /// The report on `images` (concatenated CHW images in the classifier's range).
    pub fn score(&self, images: &[f32], sign_changes: Option<u64>) -> Result<EvalReport> {
        let samples = Samples {
            images,
            sign_changes,
        };
        let mut report = evaluate(
            &samples,
            &self.train,
            &self.test,
            &self.classifier,
            &self.options,
        )?;
        if let Some(inception) = &self.inception {
            let spec = &self.classifier.spec;
            report.inception = Some(inception.score(images, spec.image_shape, spec.range)?);
        }
        Ok(report)
    }
}

/// An error unless `data` (named `data_name`) holds images of a checkpoint's `image_shape`.
pub fn check_image_shape(data: &Dataset, data_name: &str, image_shape: [usize; 3]) -> Result<()> {
    let [c, h, w] = image_shape;
    if [data.channels, data.height, data.width] != [c, h, w] {
        return Err(Error::invalid(format!(
            "dataset '{data_name}' has {}x{}x{} images, the checkpoint {c}x{h}x{w}",
            data.channels, data.height, data.width
        )));
    }
    Ok(())
}

/// The dataset `name`; when it came from the checkpoint (a path is kept as `train` was given
/// it, relative to where `train` ran), the error says how to point at it.
fn load_dataset(name: &str, split: Split, args: &ScoringArgs) -> Result<Dataset> {
    Dataset::load(name, split).map_err(|e| {
        if args.data.is_some() {
            return e;
        }
        Error::invalid(format!(
            "{e}\n  the checkpoint was trained on '{name}'; a relative path is relative to the \
             directory `dml train` ran in: pass --data with the dataset's name or directory"
        ))
    })
}

/// The classifier named by `--classifier` (which must match the data), else the cached one,
/// trained and cached first when there is none that matches.
fn classifier_for(
    args: &ScoringArgs,
    range: PixelRange,
    train: &Dataset,
    test: &Dataset,
    device: &Device,
) -> Result<Classifier> {
    if let Some(path) = &args.classifier {
        return load_matching(path, train, range, device);
    }
    let cached = cached_classifier_path(train, range, args.classifier_steps);
    if cached.is_file() {
        match load_matching(&cached, train, range, device) {
            Ok(c) => {
                eprintln!("using the cached classifier {}", cached.display());
                return Ok(c);
            }
            Err(_) => eprintln!(
                "the cached classifier {} is for other data; training a new one",
                cached.display()
            ),
        }
    }
    let training = ClassifierTraining {
        steps: args.classifier_steps,
        ..ClassifierTraining::default()
    };
    let spec = ClassifierSpec::for_dataset(train, range);
    train_and_save(spec, train, test, training, device, &cached)
}

fn load_matching(
    path: &Path,
    train: &Dataset,
    range: PixelRange,
    device: &Device,
) -> Result<Classifier> {
    let classifier = Classifier::load(path, device)?;
    classifier
        .spec
        .check_matches(train, range)
        .map_err(|e| Error::file(path, e.to_string()))?;
    Ok(classifier)
}
