//! `dml level-loss`: the per-level test loss of one or more checkpoints (SPEC 3.2), on the same
//! held-out images and the same noise, as a table, a CSV and a line chart.
use std::path::{Path, PathBuf};

use clap::Args;

use super::model_args::ModelArgs;
use super::paths::{check_outputs, run_dir_of};
use super::progress::Progress;
use super::sample::existing_checkpoint;
use super::scoring::check_image_shape;
use crate::csv;
use crate::data::{Dataset, Split};
use crate::device::Device;
use crate::error::{Error, Result};
use crate::eval::fixed_subset;
use crate::image::write_png;
use crate::plot::{colour_name, Chart, Series};
use crate::train::{level_losses, spread_levels, LevelLoss, ScoreModel};

/// One line per checkpoint in the chart, each its own colour: the palette's size.
const MAX_CHECKPOINTS: usize = 8;
const CSV_HEADER: &str = "checkpoint,level,noise_scale,loss";
const PLOT_SIZE: (usize, usize) = (640, 400);
/// Levels shown in the printed table (the CSV and the chart have them all).
const TABLE_ROWS: usize = 10;

#[derive(Args, Debug, Clone)]
pub struct LevelLossArgs {
    /// A checkpoint file or run directory; give the option again (up to 8) to compare
    /// checkpoints of one dataset and schedule on the same images and noise.
    #[arg(long, required = true)]
    pub checkpoint: Vec<PathBuf>,
    /// The dataset whose test split is used [default: the one the first checkpoint was
    /// trained on].
    #[arg(long)]
    pub data: Option<String>,
    /// Test images (a fixed subset of the split, the one `dml eval` uses).
    #[arg(long, default_value_t = 256)]
    pub count: usize,
    /// Levels evaluated, spread evenly over the trainable ones (all of them when there are
    /// fewer).
    #[arg(long, default_value_t = 100)]
    pub levels: usize,
    /// Images per network pass.
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    /// Seed of the noise (the LEVEL_LOSS stream, SPEC 5).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[command(flatten)]
    pub model: ModelArgs,
    /// The CSV written (replaced) [default: <first run dir>/level_loss.csv].
    #[arg(long)]
    pub csv: Option<PathBuf>,
    /// The chart: loss (log scale) against the level, a line per checkpoint [default: <first
    /// run dir>/level_loss.png].
    #[arg(long)]
    pub png: Option<PathBuf>,
}

impl LevelLossArgs {
    /// Refuses options that cannot give a result, before any work.
    fn check(&self) -> Result<()> {
        let positive = [
            ("--count", self.count),
            ("--levels", self.levels),
            ("--batch", self.batch),
        ];
        if let Some((flag, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(Error::invalid(format!("{flag} must be at least 1")));
        }
        if self.checkpoint.len() > MAX_CHECKPOINTS {
            return Err(Error::invalid(format!(
                "{} checkpoints: at most {MAX_CHECKPOINTS} (one colour each in the chart)",
                self.checkpoint.len()
            )));
        }
        Ok(())
    }
}

pub fn run(device: &Device, args: &LevelLossArgs) -> Result<()> {
    args.check()?;
    let paths = args
        .checkpoint
        .iter()
        .map(|p| existing_checkpoint(p))
        .collect::<Result<Vec<_>>>()?;
    let models = paths
        .iter()
        .map(|p| args.model.load(p, device))
        .collect::<Result<Vec<_>>>()?;
    check_comparable(&models, &paths)?;
    let first = &models[0];
    let data_name = args.data.clone().unwrap_or(first.spec.dataset.clone());
    let run_dir = run_dir_of(&args.checkpoint[0]);
    let csv_path = args
        .csv
        .clone()
        .unwrap_or_else(|| run_dir.join("level_loss.csv"));
    let png = args
        .png
        .clone()
        .unwrap_or_else(|| run_dir.join("level_loss.png"));
    let mut inputs: Vec<&Path> = paths.iter().map(PathBuf::as_path).collect();
    inputs.push(Path::new(&data_name));
    check_outputs(&[("--csv", &csv_path), ("--png", &png)], &inputs)?;

    let images = test_images(&data_name, first, args.count)?;
    let levels = spread_levels(first, args.levels);
    let n_images = images.len() / first.spec.image_shape().iter().product::<usize>();
    eprintln!(
        "level loss of {} checkpoint(s) at {} levels on {n_images} test images of '{data_name}' \
         ({})",
        models.len(),
        levels.len(),
        first.spec.objective.summary()
    );
    let total = (models.len() * levels.len()) as u64;
    let mut progress = Progress::new("level loss", total, 0);
    let mut results = Vec::with_capacity(models.len());
    for (i, model) in models.iter().enumerate() {
        let offset = (i * levels.len()) as u64;
        let done = |n: usize| progress.update(offset + n as u64, String::new);
        results.push(level_losses(
            model,
            &images,
            &levels,
            (args.seed, args.batch),
            done,
        )?);
    }
    progress.finish();

    print_table(&paths, &results);
    let rows = csv_rows(&paths, &results);
    csv::replace(&csv_path, CSV_HEADER, &rows)?;
    println!("wrote {}", csv_path.display());
    write_png(&png, &chart(&results).render(PLOT_SIZE.0, PLOT_SIZE.1))?;
    println!(
        "wrote {}: loss (log scale) against the level; {}",
        png.display(),
        legend(&paths)
    );
    Ok(())
}

/// Checkpoints compare level by level only when they have the same levels, images and loss.
fn check_comparable(models: &[ScoreModel], paths: &[PathBuf]) -> Result<()> {
    let first = &models[0];
    for (model, path) in models.iter().zip(paths).skip(1) {
        let same = model.spec.objective == first.spec.objective
            && model.spec.image_shape() == first.spec.image_shape()
            && model.spec.range == first.spec.range;
        if !same {
            return Err(Error::invalid(format!(
                "{} ({}; {:?} images) and {} ({}; {:?} images) do not compare level by level: \
                 their objectives, image shapes or pixel ranges differ",
                paths[0].display(),
                first.spec.objective.summary(),
                first.spec.image_shape(),
                path.display(),
                model.spec.objective.summary(),
                model.spec.image_shape()
            )));
        }
    }
    Ok(())
}

/// `count` test images (the fixed subset `dml eval` compares with), in the model's range.
fn test_images(data_name: &str, model: &ScoreModel, count: usize) -> Result<Vec<f32>> {
    let test = Dataset::load(data_name, Split::Test)?;
    check_image_shape(&test, data_name, model.spec.image_shape())?;
    Ok(test.images_in_range(&fixed_subset(test.n, count), model.spec.range))
}

/// Up to [`TABLE_ROWS`] levels, a column per checkpoint, then the mean over all levels.
fn print_table(paths: &[PathBuf], results: &[Vec<LevelLoss>]) {
    let levels = &results[0];
    let step = levels.len().div_ceil(TABLE_ROWS).max(1);
    let mut shown: Vec<usize> = (0..levels.len()).step_by(step).collect();
    if shown.last() != Some(&(levels.len() - 1)) {
        shown.push(levels.len() - 1);
    }
    let header: Vec<String> = (0..paths.len())
        .map(|i| format!("{:>12}", format!("[{}]", i + 1)))
        .collect();
    println!("{:>7} {:>10} {}", "level", "noise", header.join(" "));
    for &row in &shown {
        let losses: Vec<String> = results
            .iter()
            .map(|r| format!("{:>12.5}", r[row].loss))
            .collect();
        let l = &levels[row];
        println!(
            "{:>7} {:>10.5} {}",
            l.level,
            l.noise_scale,
            losses.join(" ")
        );
    }
    let means: Vec<String> = results
        .iter()
        .map(|r| {
            format!(
                "{:>12.5}",
                r.iter().map(|l| l.loss).sum::<f64>() / r.len() as f64
            )
        })
        .collect();
    println!("{:>18} {}", "mean", means.join(" "));
    for (i, path) in paths.iter().enumerate() {
        println!("[{}] {}", i + 1, path.display());
    }
}

fn csv_rows(paths: &[PathBuf], results: &[Vec<LevelLoss>]) -> Vec<String> {
    let mut rows = Vec::new();
    for (path, levels) in paths.iter().zip(results) {
        let name = csv::quote(&path.display().to_string());
        for l in levels {
            rows.push(format!("{name},{},{},{:e}", l.level, l.noise_scale, l.loss));
        }
    }
    rows
}

fn chart(results: &[Vec<LevelLoss>]) -> Chart {
    let series = results
        .iter()
        .map(|r| Series {
            points: r.iter().map(|l| (l.level as f64, l.loss)).collect(),
        })
        .collect();
    Chart {
        series,
        log_y: true,
        ..Chart::default()
    }
}

fn legend(paths: &[PathBuf]) -> String {
    let names: Vec<String> = paths
        .iter()
        .enumerate()
        .map(|(i, p)| format!("{} {}", colour_name(i), p.display()))
        .collect();
    names.join(", ")
}
