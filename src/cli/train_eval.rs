//! `train --eval-every N`: every N steps the EMA weights draw a fixed count of samples with a
//! fixed seed (`sample`'s default sampler settings) and are scored exactly as `dml eval` scores
//! them. Each score is a row of the run's eval.csv (`dml eval`'s columns; its `samples` field
//! reads `train step N ...`), the checkpoint of the best Frechet distance so far is kept as
//! best.safetensors beside checkpoint.safetensors, and training.png (loss above, distances
//! below, against steps) is redrawn. A resumed run drops the rows of steps it is about to redo,
//! as the loss log does, and keeps the best score so far.
use std::path::{Path, PathBuf};

use clap::Args;

use super::model_args::ModelArgs;
use super::sample::SamplerArgs;
use super::scoring::{Scorer, ScoringArgs};
use crate::csv::{read_rows, replace, split_line};
use crate::device::Device;
use crate::diffusion::additive;
use crate::diffusion::samplers::{
    DaleVariant, SamplerKind, PAPER_CHI, PAPER_DELTA_S, PAPER_INNER_STEPS,
};
use crate::error::{Error, Result};
use crate::eval::{ClassifierTraining, EvalOptions, EvalReport, EVAL_CSV_HEADER};
use crate::generate::generate;
use crate::image::write_png;
use crate::plot::{stack, Chart, Series};
use crate::train::{read_losses, ModelSpec, ScoreModel, Trainer, Weights};

/// The `samples` field of a training evaluation's row starts with this, then the step.
const ROW_PREFIX: &str = "train step ";
/// Each panel of training.png, in pixels.
const PANEL_SIZE: (usize, usize) = (640, 240);

/// The evaluation file, best checkpoint and plot of a run directory.
pub fn eval_csv_path(dir: &Path) -> PathBuf {
    dir.join("eval.csv")
}
pub fn best_checkpoint_path(dir: &Path) -> PathBuf {
    dir.join("best.safetensors")
}
pub fn training_plot_path(dir: &Path) -> PathBuf {
    dir.join("training.png")
}

/// `train`'s options for evaluating as it goes.
#[derive(Args, Debug, Clone)]
pub struct EvalEveryArgs {
    /// Evaluate the EMA weights every N steps (0: never): --eval-count samples from
    /// --eval-seed with `sample`'s default sampler, scored as `dml eval` scores them. Each score
    /// is appended to eval.csv, the best checkpoint so far (least Frechet distance) is kept as
    /// best.safetensors, and training.png (loss above, Frechet distance in blue and the kernel
    /// distance in orange below, against steps) is redrawn.
    #[arg(long, default_value_t = 0)]
    pub eval_every: u64,
    /// Samples drawn at each evaluation (the same seed each time).
    #[arg(long, default_value_t = 64)]
    pub eval_count: usize,
    /// The seed of each evaluation's samples.
    #[arg(long, default_value_t = 0)]
    pub eval_seed: u64,
    /// Steps for training the cached classifier the evaluations use, when there is none yet.
    #[arg(long, default_value_t = ClassifierTraining::default().steps)]
    pub eval_classifier_steps: u64,
    /// Test images each evaluation compares the samples with, at most.
    #[arg(long, default_value_t = EvalOptions::default().max_reference)]
    pub eval_max_reference: usize,
    /// Also score each evaluation by Inception FID and KID with these converted FID InceptionV3
    /// weights (as `dml eval --inception`; slow on a CPU: the samples' features each time).
    #[arg(long, value_name = "FILE")]
    pub eval_inception: Option<PathBuf>,
}

/// No evaluation, the other options at their defaults (`dml demo`'s run).
impl Default for EvalEveryArgs {
    fn default() -> Self {
        Self {
            eval_every: 0,
            eval_count: 64,
            eval_seed: 0,
            eval_classifier_steps: ClassifierTraining::default().steps,
            eval_max_reference: EvalOptions::default().max_reference,
            eval_inception: None,
        }
    }
}

/// A run's periodic evaluation, ready to score.
pub struct TrainEval {
    count: usize,
    seed: u64,
    scorer: Scorer,
    sampling: SamplerArgs,
    dir: PathBuf,
    /// The least Frechet distance scored so far in this run (kept rows included).
    best: f64,
}

impl TrainEval {
    /// The evaluation of the run in `dir` on data `data_name` after `steps_done` steps: eval.csv
    /// trimmed to those steps (atomically), the classifier loaded or trained.
    pub fn open(
        args: &EvalEveryArgs,
        dir: &Path,
        data_name: &str,
        spec: &ModelSpec,
        steps_done: u64,
        device: &Device,
    ) -> Result<Self> {
        let scoring = ScoringArgs {
            classifier: None,
            classifier_steps: args.eval_classifier_steps,
            data: Some(data_name.to_string()),
            max_reference: args.eval_max_reference,
            inception: args.eval_inception.clone(),
        };
        scoring.check()?;
        if args.eval_count < 2 {
            return Err(Error::invalid(format!(
                "--eval-count {} must be at least 2 (the distances compare distributions)",
                args.eval_count
            )));
        }
        let best = trim_rows(&eval_csv_path(dir), steps_done)?;
        let splits = Scorer::datasets(&scoring, data_name, spec.image_shape())?;
        let neighbours = EvalOptions::default().neighbours;
        let scorer = Scorer::new(&scoring, splits, spec.range, neighbours, device)?;
        let sampling = default_sampling(args.eval_count, args.eval_seed);
        Ok(Self {
            count: args.eval_count,
            seed: args.eval_seed,
            scorer,
            sampling,
            dir: dir.to_path_buf(),
            best,
        })
    }

    /// Scores the trainer's EMA weights, appends the row, keeps the checkpoint when it is the
    /// best so far and redraws the plot. Samples that cannot be scored (a diverging network) are
    /// a warning: the run goes on.
    pub fn evaluate(&mut self, trainer: &Trainer) -> Result<()> {
        let step = trainer.steps_done();
        let ckpt = trainer.checkpoint()?;
        let model =
            ScoreModel::from_checkpoint(&ckpt, Weights::Ema, None, trainer.model.store.device())?;
        let report = match self.score(&model) {
            Ok(report) => report,
            Err(e) => {
                eprintln!("\nwarning: evaluation at step {step} failed: {e}");
                return Ok(());
            }
        };
        let source = format!(
            "{ROW_PREFIX}{step} weights=ema sampler={} seed={} count={}",
            self.sampling.sampler, self.seed, self.count
        );
        let path = eval_csv_path(&self.dir);
        crate::csv::append_atomically(&path, EVAL_CSV_HEADER, &report.csv_row(&source))?;
        let improved = report.frechet < self.best;
        if improved {
            ckpt.save(best_checkpoint_path(&self.dir))?;
            self.best = report.frechet;
        }
        write_png(training_plot_path(&self.dir), &training_plot(&self.dir)?)?;
        eprintln!(
            "\neval at step {step}: frechet {:.5} kid {:.6}{}",
            report.frechet,
            report.kid,
            if improved {
                " (best so far: kept as best.safetensors)"
            } else {
                ""
            }
        );
        Ok(())
    }

    fn score(&self, model: &ScoreModel) -> Result<EvalReport> {
        let opts = self.sampling.generate_options(model)?;
        let generated = generate(model, &opts, &mut |_| {})?;
        let signs = model.spec.objective.diffusion().requires_positive_pixels();
        self.scorer.score(
            &generated.images.to_vec()?,
            signs.then_some(generated.stats.sign_changes),
        )
    }
}

/// `sample`'s defaults with `count` images from `seed`: what `dml eval --count C --seed S`
/// draws, so its score of best.safetensors is the row's.
fn default_sampling(count: usize, seed: u64) -> SamplerArgs {
    SamplerArgs {
        sampler_preset: None,
        settings: None,
        count,
        batch: 64,
        sampler: SamplerKind::Adls,
        delta_s: PAPER_DELTA_S,
        inner_steps: PAPER_INNER_STEPS,
        chi: PAPER_CHI,
        kappa: 1.0,
        terminal_steps: 0,
        variant: DaleVariant::Derived,
        init: None,
        steps_per_level: additive::DEFAULT_STEPS_PER_LEVEL,
        eps: additive::DEFAULT_EPS,
        seed,
        no_graphs: false,
        model: ModelArgs::default(),
    }
}

/// The step of a training evaluation's row, `None` for a `dml eval` row.
fn row_step(fields: &[String]) -> Option<u64> {
    let rest = fields.first()?.strip_prefix(ROW_PREFIX)?;
    rest.split(' ').next()?.parse().ok()
}

/// The Frechet distance of a row (the fifth column of [`EVAL_CSV_HEADER`]).
fn row_frechet(fields: &[String]) -> Option<f64> {
    fields.get(4)?.parse().ok()
}

fn row_kid(fields: &[String]) -> Option<f64> {
    fields.get(5)?.parse().ok()
}

/// Drops the training rows of eval.csv past `steps_done` (a resumed run redoes those steps),
/// keeping `dml eval`'s rows; returns the least Frechet distance of the rows kept.
fn trim_rows(path: &Path, steps_done: u64) -> Result<f64> {
    let rows = read_rows(path, EVAL_CSV_HEADER)?;
    let kept: Vec<String> = rows
        .into_iter()
        .filter(|line| row_step(&split_line(line)).is_none_or(|s| s <= steps_done))
        .collect();
    if path.exists() {
        replace(path, EVAL_CSV_HEADER, &kept)?;
    }
    let best = kept
        .iter()
        .map(|line| split_line(line))
        .filter(|f| row_step(f).is_some())
        .filter_map(|f| row_frechet(&f))
        .fold(f64::INFINITY, f64::min);
    Ok(best)
}

/// Loss (log scale) above, Frechet (blue) and kernel distance (orange, scaled to the Frechet
/// distance's largest value) below, against steps.
fn training_plot(dir: &Path) -> Result<crate::image::Picture> {
    let losses = read_losses(&crate::train::loss_log_path(dir))?;
    let loss = Chart {
        series: vec![Series {
            points: losses.iter().map(|&(s, l)| (s as f64, l as f64)).collect(),
        }],
        log_y: true,
        ..Chart::default()
    };
    // Both panels span the steps of the loss log, so that an evaluation sits under its step.
    let steps = loss.ranges().map(|[x, _]| x);
    let rows: Vec<Vec<String>> = read_rows(&eval_csv_path(dir), EVAL_CSV_HEADER)?
        .iter()
        .map(|l| split_line(l))
        .filter(|f| row_step(f).is_some())
        .collect();
    let points = |value: fn(&[String]) -> Option<f64>| -> Vec<(f64, f64)> {
        rows.iter()
            .filter_map(|f| Some((row_step(f)? as f64, value(f)?)))
            .collect()
    };
    let frechet = points(row_frechet);
    let kid = points(row_kid);
    let scale = |v: &[(f64, f64)]| v.iter().map(|p| p.1.abs()).fold(0.0, f64::max);
    let factor = scale(&frechet) / scale(&kid).max(f64::MIN_POSITIVE);
    let distances = Chart {
        series: vec![
            Series { points: frechet },
            Series {
                points: kid.iter().map(|&(s, k)| (s, k * factor)).collect(),
            },
        ],
        x_range: steps,
        ..Chart::default()
    };
    Ok(stack(&[
        loss.render(PANEL_SIZE.0, PANEL_SIZE.1),
        distances.render(PANEL_SIZE.0, PANEL_SIZE.1),
    ]))
}
