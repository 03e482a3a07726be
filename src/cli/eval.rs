//! `dml eval`: evaluate a checkpoint's samples (SPEC section 10): distances to the test split in
//! the features of the engine's own classifier, nearest training images (numbers and a figure),
//! sign changes; prints a table and appends a CSV row.
use std::path::{Path, PathBuf};

use clap::Args;

use super::paths::{check_outputs, run_dir_of};
use super::sample::{
    existing_checkpoint, print_model, print_sampler, sample_with_progress, SamplerArgs,
};
use super::scoring::{Scorer, ScoringArgs};
use crate::data::Dataset;
use crate::device::Device;
use crate::error::{Error, Result};
use crate::eval::{EvalOptions, EvalReport, EVAL_CSV_HEADER};
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
    #[command(flatten)]
    pub scoring: ScoringArgs,
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

/// Samples as `[n, C, H, W]` values with the sampler's sign-change count, and a description.
pub struct SampleSet {
    pub images: Vec<f32>,
    pub sign_changes: Option<u64>,
    pub source: String,
}

pub fn run(device: &Device, args: &EvalArgs) -> Result<()> {
    args.scoring.check()?;
    let path = existing_checkpoint(&args.checkpoint)?;
    let model = args.sampling.model.load(&path, device)?;
    let data_name = args.scoring.data_name(&model.spec.dataset);
    let splits = Scorer::datasets(&args.scoring, &data_name, model.spec.image_shape())?;
    let run_dir = run_dir_of(&args.checkpoint);
    let png = args
        .neighbours_png
        .clone()
        .unwrap_or_else(|| run_dir.join("neighbours.png"));
    let csv = args.csv.clone().unwrap_or_else(|| run_dir.join("eval.csv"));
    let cached = Scorer::cached_classifier(&args.scoring, &splits.0, model.spec.range);
    let mut inputs = vec![path.as_path(), Path::new(&data_name), &cached];
    inputs.extend(args.samples.as_deref());
    inputs.extend(args.scoring.classifier.as_deref());
    inputs.extend(args.scoring.inception.as_deref());
    check_outputs(&[("--neighbours-png", &png), ("--csv", &csv)], &inputs)?;
    // Inputs first: a wrong samples, classifier or Inception file is refused before any sampling.
    let given = args
        .samples
        .as_ref()
        .map(|file| read_samples(file, &model))
        .transpose()?;
    let scorer = Scorer::new(
        &args.scoring,
        splits,
        model.spec.range,
        args.neighbours,
        device,
    )?;
    let samples = match given {
        Some(samples) => samples,
        None => {
            print_model(&model, device);
            draw_samples(&model, &args.sampling, &args.checkpoint)?
        }
    };
    eprintln!(
        "evaluating {} samples against {} test images",
        samples.images.len() / scorer.train.image_len(),
        scorer.test.n.min(args.scoring.max_reference)
    );
    let report = scorer.score(&samples.images, samples.sign_changes)?;
    print!("{}", report.to_table());
    write_figure(
        &png,
        &report,
        &samples.images,
        &scorer.train,
        &model,
        args.show,
    )?;
    println!("wrote {}", png.display());
    append_csv(&csv, &report.csv_row(&samples.source))?;
    println!("appended to {}", csv.display());
    Ok(())
}

/// Samples drawn from `model` as `sampling` says, `checkpoint` naming where they came from.
pub fn draw_samples(
    model: &ScoreModel,
    sampling: &SamplerArgs,
    checkpoint: &Path,
) -> Result<SampleSet> {
    let opts = sampling.generate_options(model)?;
    print_sampler(model, sampling, &opts);
    let generated = sample_with_progress(model, &opts)?;
    let signs = model.spec.objective.diffusion().requires_positive_pixels();
    Ok(SampleSet {
        images: generated.images.to_vec()?,
        sign_changes: signs.then_some(generated.stats.sign_changes),
        source: format!(
            "{} sampler={} seed={} count={}",
            checkpoint.display(),
            sampling.sampler,
            sampling.seed,
            sampling.count
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

/// Appends `row` to the eval CSV file at `path` (written whole and renamed, so a kill never
/// leaves half a row; a file from before the Inception columns is upgraded).
fn append_csv(path: &Path, row: &str) -> Result<()> {
    crate::csv::append_atomically(path, EVAL_CSV_HEADER, row)
}
