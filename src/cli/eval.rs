//! `dml eval`: evaluate a checkpoint's samples (SPEC section 10): distances to the test split in
//! the features of the engine's own classifier, nearest training images (numbers and a figure),
//! sign changes; prints a table and appends a CSV row.
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use clap::Args;

use super::paths::check_outputs;
use super::sample::{
    print_model, print_sampler, resolve_checkpoint, sample_with_progress, SamplerArgs,
};
use super::train_classifier::{cached_classifier_path, check_steps, train_and_save};
use crate::data::{Dataset, Split};
use crate::device::Device;
use crate::error::{Error, Result};
use crate::eval::{
    evaluate, Classifier, ClassifierSpec, ClassifierTraining, EvalOptions, EvalReport, Samples,
    EVAL_CSV_HEADER,
};
use crate::image::{neighbour_grid, write_png, ImageShape};
use crate::sample_file::SampleFile;
use crate::train::ScoreModel;

#[derive(Args, Debug, Clone)]
pub struct EvalArgs {
    /// A checkpoint file, or a run directory holding checkpoint.safetensors.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Evaluate these samples (written by `dml sample --tensors`) instead of drawing new ones.
    /// The score network's --precision applies to drawing; the classifier always runs fp32.
    #[arg(long)]
    pub samples: Option<PathBuf>,
    #[command(flatten)]
    pub sampling: SamplerArgs,
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
    /// Nearest training images shown beside each sample in the figure.
    #[arg(long, default_value_t = EvalOptions::default().neighbours)]
    pub neighbours: usize,
    /// Samples shown in the nearest-neighbour figure, at most.
    #[arg(long, default_value_t = 16)]
    pub show: usize,
    /// The nearest-neighbour figure [default: <run dir>/neighbours.png].
    #[arg(long)]
    pub neighbours_png: Option<PathBuf>,
    /// CSV file the report's row is appended to (header written when new) [default:
    /// <run dir>/eval.csv].
    #[arg(long)]
    pub csv: Option<PathBuf>,
}

impl EvalArgs {
    /// The run directory: the checkpoint argument itself or the directory of the file.
    fn run_dir(&self) -> PathBuf {
        if self.checkpoint.is_dir() {
            return self.checkpoint.clone();
        }
        match self.checkpoint.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        }
    }
}

/// Samples as `[n, C, H, W]` values with the sampler's sign-change count, and a description.
struct SampleSet {
    images: Vec<f32>,
    sign_changes: Option<u64>,
    source: String,
}

pub fn run(device: &Device, args: &EvalArgs) -> Result<()> {
    check_steps("--classifier-steps", args.classifier_steps)?;
    let path = resolve_checkpoint(&args.checkpoint);
    if !path.is_file() {
        return Err(Error::file(
            &path,
            "no checkpoint here (a run directory of `dml train`, or its checkpoint file)",
        ));
    }
    if args.max_reference < 2 {
        return Err(Error::invalid(format!(
            "eval: --max-reference {} must be at least 2 (the distances compare distributions)",
            args.max_reference
        )));
    }
    let model = args.sampling.load_model(&path, device)?;
    let data_name = args
        .data
        .clone()
        .unwrap_or_else(|| model.spec.dataset.clone());
    let train = load_dataset(&data_name, Split::Train, args)?;
    let test = load_dataset(&data_name, Split::Test, args)?;
    let [c, h, w] = model.spec.image_shape();
    if [train.channels, train.height, train.width] != [c, h, w] {
        return Err(Error::invalid(format!(
            "dataset '{data_name}' has {}x{}x{} images, the checkpoint {c}x{h}x{w}",
            train.channels, train.height, train.width
        )));
    }
    let run_dir = args.run_dir();
    let png = args
        .neighbours_png
        .clone()
        .unwrap_or_else(|| run_dir.join("neighbours.png"));
    let csv = args.csv.clone().unwrap_or_else(|| run_dir.join("eval.csv"));
    let cached = cached_classifier_path(&train, model.spec.range, args.classifier_steps);
    let mut inputs = vec![path.as_path(), Path::new(&data_name), &cached];
    inputs.extend(args.samples.as_deref());
    inputs.extend(args.classifier.as_deref());
    check_outputs(&[("--neighbours-png", &png), ("--csv", &csv)], &inputs)?;
    let samples = match &args.samples {
        Some(file) => read_samples(file, &model)?,
        None => {
            print_model(&model, device);
            draw_samples(&model, args)?
        }
    };
    let classifier = classifier_for(args, &model, &train, &test, device)?;
    let options = EvalOptions {
        max_reference: args.max_reference,
        neighbours: args.neighbours,
    };
    eprintln!(
        "evaluating {} samples against {} test images",
        samples.images.len() / train.image_len(),
        test.n.min(args.max_reference)
    );
    let report = evaluate(
        &Samples {
            images: &samples.images,
            sign_changes: samples.sign_changes,
        },
        &train,
        &test,
        &classifier,
        &options,
    )?;
    print!("{}", report.to_table());
    write_figure(&png, &report, &samples.images, &train, &model, args.show)?;
    println!("wrote {}", png.display());
    append_csv(&csv, &report.csv_row(&samples.source))?;
    println!("appended to {}", csv.display());
    Ok(())
}

/// The dataset `name`; when it came from the checkpoint (a path is kept as `train` was given
/// it, relative to where `train` ran), the error says how to point at it.
fn load_dataset(name: &str, split: Split, args: &EvalArgs) -> Result<Dataset> {
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

fn draw_samples(model: &ScoreModel, args: &EvalArgs) -> Result<SampleSet> {
    let opts = args.sampling.generate_options(model)?;
    print_sampler(model, &args.sampling, &opts);
    let generated = sample_with_progress(model, &opts)?;
    let signs = model.spec.objective.diffusion().requires_positive_pixels();
    Ok(SampleSet {
        images: generated.images.to_vec()?,
        sign_changes: signs.then_some(generated.stats.sign_changes),
        source: format!(
            "{} sampler={} seed={} count={}",
            args.checkpoint.display(),
            args.sampling.sampler,
            args.sampling.seed,
            args.sampling.count
        ),
    })
}

/// Samples written by `dml sample --tensors`, which must be images the model makes (at least
/// two: the distances compare distributions).
fn read_samples(file: &Path, model: &ScoreModel) -> Result<SampleSet> {
    let samples = SampleFile::load(file)?;
    samples
        .check_fits(model.spec.image_shape(), model.spec.range)
        .map_err(|e| Error::file(file, e.to_string()))?;
    let non_finite = samples.images.iter().filter(|v| !v.is_finite()).count();
    if non_finite > 0 {
        return Err(Error::file(
            file,
            format!(
                "{non_finite} of {} sample values are not finite (NaN or infinite): the sampler \
                 diverged; nothing to evaluate",
                samples.images.len()
            ),
        ));
    }
    if samples.count() < 2 {
        return Err(Error::file(
            file,
            format!(
                "{} sample(s); the distances need at least 2",
                samples.count()
            ),
        ));
    }
    Ok(SampleSet {
        images: samples.images,
        sign_changes: samples.sign_changes,
        source: file.display().to_string(),
    })
}

/// The classifier named by `--classifier` (which must match the data), else the cached one,
/// trained and cached first when there is none that matches.
fn classifier_for(
    args: &EvalArgs,
    model: &ScoreModel,
    train: &Dataset,
    test: &Dataset,
    device: &Device,
) -> Result<Classifier> {
    let range = model.spec.range;
    if let Some(path) = &args.classifier {
        let classifier = Classifier::load(path, device)?;
        classifier
            .spec
            .check_matches(train, range)
            .map_err(|e| Error::file(path, e.to_string()))?;
        return Ok(classifier);
    }
    let cached = cached_classifier_path(train, range, args.classifier_steps);
    if cached.is_file() {
        match Classifier::load(&cached, device) {
            Ok(c) if c.spec.check_matches(train, range).is_ok() => {
                eprintln!("using the cached classifier {}", cached.display());
                return Ok(c);
            }
            _ => eprintln!(
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

/// Rows of the first `show` samples, each followed by its nearest training images.
fn write_figure(
    path: &Path,
    report: &EvalReport,
    samples: &[f32],
    train: &Dataset,
    model: &ScoreModel,
    show: usize,
) -> Result<()> {
    let shown = report.neighbours.len().min(show.max(1));
    let d = train.image_len();
    let k = report.neighbours[0].len();
    let indices: Vec<usize> = report.neighbours[..shown]
        .iter()
        .flat_map(|row| row.iter().map(|n| n.index))
        .collect();
    let [channels, height, width] = model.spec.image_shape();
    let picture = neighbour_grid(
        &samples[..shown * d],
        &train.images_in_range(&indices, model.spec.range),
        k,
        ImageShape {
            channels,
            height,
            width,
        },
        2,
        model.spec.range,
    )?;
    write_png(path, &picture)
}

/// Appends `row` to the CSV file at `path`, writing [`EVAL_CSV_HEADER`] first when the file is
/// new or empty.
fn append_csv(path: &Path, row: &str) -> Result<()> {
    let io = |e| Error::Io {
        context: format!("appending to {}", path.display()),
        source: e,
    };
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(io)?;
    if file.metadata().map_err(io)?.len() == 0 {
        writeln!(file, "{EVAL_CSV_HEADER}").map_err(io)?;
    }
    writeln!(file, "{row}").map_err(io)
}
