//! `dml sweep`: a grid search over sampler settings on one checkpoint, each setting scored with
//! exactly `dml eval`'s distances (same sampling, same scorer) on a fixed seed and count. Writes
//! sweep.csv (one row per setting, resumable), sweep.png (the metric against the step size) and
//! best_settings.json (read back by `sample`/`eval --settings best`) into the run directory.
//! A GBM checkpoint's sweep varies the GBM samplers' options (SPEC 4); an additive baseline's, its
//! annealed Langevin's `eps` and `T` (SPEC 8): the two samplers on equal terms.
use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Args;

use super::eval::draw_samples;
use super::model_args::ModelArgs;
use super::paths::{check_outputs, run_dir_of};
use super::sample::{existing_checkpoint, print_model, SamplerArgs};
use super::scoring::{Scorer, ScoringArgs};
use crate::device::Device;
use crate::diffusion::additive;
use crate::diffusion::samplers::{
    DaleVariant, SamplerKind, PAPER_CHI, PAPER_DELTA_S, PAPER_INNER_STEPS,
};
use crate::error::{Error, Result};
use crate::eval::EvalOptions;
use crate::generate::{validate, InitKind};
use crate::image::write_png;
use crate::plot::colour_name;
use crate::sweep::{
    best_row, sweep_chart, BestSettings, Grid, Metric, Row, Scores, Setting, Status, SweepRecord,
    BEST_SETTINGS_FILE, SWEEP_CSV_FILE,
};
use crate::train::ScoreModel;

/// The plot's size in pixels.
const PLOT_SIZE: (usize, usize) = (640, 400);
const SWEEP_PNG_FILE: &str = "sweep.png";

#[derive(Args, Debug, Clone)]
pub struct SweepArgs {
    /// A checkpoint file, or a run directory holding checkpoint.safetensors; sweep.csv,
    /// sweep.png and best_settings.json are written into its run directory.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Samplers to try (comma list).
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [SamplerKind::Adls])]
    pub sampler: Vec<SamplerKind>,
    /// Step sizes delta_s to try (comma list, e.g. 1e-4,3e-4,1e-3); one beyond the schedule's
    /// bound is recorded as refused.
    #[arg(long, value_delimiter = ',', default_values_t = [PAPER_DELTA_S])]
    pub delta_s: Vec<f32>,
    /// Inner steps L per level to try (comma list).
    #[arg(long, value_delimiter = ',', default_values_t = [PAPER_INNER_STEPS])]
    pub inner_steps: Vec<usize>,
    /// Annealing factors chi to try (comma list).
    #[arg(long, value_delimiter = ',', default_values_t = [PAPER_CHI])]
    pub chi: Vec<f32>,
    /// Starting kappas to try (comma list).
    #[arg(long, value_delimiter = ',', default_values_t = [1.0])]
    pub kappa: Vec<f32>,
    /// Starts of the chain to try (comma list) [default: lognormal for gbm, noise for additive].
    #[arg(long, value_enum, value_delimiter = ',')]
    pub init: Vec<InitKind>,
    /// Additive baseline: step sizes eps to try (comma list).
    #[arg(long, value_delimiter = ',', default_values_t = [additive::DEFAULT_EPS])]
    pub eps: Vec<f32>,
    /// Additive baseline: Langevin steps T per level to try (comma list).
    #[arg(long, value_delimiter = ',', default_values_t = [additive::DEFAULT_STEPS_PER_LEVEL])]
    pub steps_per_level: Vec<usize>,
    /// Images drawn per setting (the same for all, as the distances depend on the count).
    #[arg(long, default_value_t = 64)]
    pub count: usize,
    /// Images sampled together.
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    /// The seed of every setting's samples.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Extra noise-free steps at level 1, for every setting.
    #[arg(long, default_value_t = 0)]
    pub terminal_steps: usize,
    /// Drift of the Dale-Langevin step (adls, em), for every setting.
    #[arg(long, value_enum, default_value_t = DaleVariant::Derived)]
    pub variant: DaleVariant,
    #[command(flatten)]
    pub model: ModelArgs,
    /// The distance the best setting minimises (inception-fid and inception-kid need
    /// --inception, which adds the Inception distances to every row of sweep.csv).
    #[arg(long, value_enum, default_value_t = Metric::Frechet)]
    pub metric: Metric,
    #[command(flatten)]
    pub scoring: ScoringArgs,
}

impl SweepArgs {
    /// The grid for a checkpoint of the additive baseline (`additive`) or of the GBM; an error
    /// when an axis of the other diffusion's sampler is given more than one value (it would
    /// repeat the same samples under other names).
    fn grid(&self, additive: bool) -> Result<Grid> {
        let gbm_axes = [
            ("--sampler", self.sampler.len()),
            ("--delta-s", self.delta_s.len()),
            ("--inner-steps", self.inner_steps.len()),
            ("--chi", self.chi.len()),
            ("--kappa", self.kappa.len()),
        ];
        let additive_axes = [
            ("--eps", self.eps.len()),
            ("--steps-per-level", self.steps_per_level.len()),
        ];
        let (others, what) = match additive {
            true => (
                &gbm_axes[..],
                "the additive baseline's annealed Langevin (--eps, --steps-per-level)",
            ),
            false => (
                &additive_axes[..],
                "the GBM samplers (--sampler, --delta-s, --inner-steps, --chi, --kappa, --init)",
            ),
        };
        if let Some((flag, _)) = others.iter().find(|(_, n)| *n > 1) {
            return Err(Error::invalid(format!(
                "sweep: {flag} has no effect on this checkpoint's sampler; its sweep varies {what}"
            )));
        }
        let init = match (self.init.is_empty(), additive) {
            (true, true) => vec![InitKind::Noise],
            (true, false) => vec![InitKind::LogNormal],
            (false, _) => self.init.clone(),
        };
        Ok(Grid {
            sampler: self.sampler.clone(),
            delta_s: self.delta_s.clone(),
            inner_steps: self.inner_steps.clone(),
            chi: self.chi.clone(),
            kappa: self.kappa.clone(),
            init,
            eps: self.eps.clone(),
            steps_per_level: self.steps_per_level.clone(),
        })
    }

    /// `sample`/`eval`'s options for `setting`, the fixed ones from the sweep's.
    fn sampling(&self, setting: &Setting) -> SamplerArgs {
        SamplerArgs {
            sampler_preset: None,
            settings: None,
            count: self.count,
            batch: self.batch,
            sampler: setting.sampler,
            delta_s: setting.delta_s,
            inner_steps: setting.inner_steps,
            chi: setting.chi,
            kappa: setting.kappa,
            terminal_steps: self.terminal_steps,
            variant: self.variant,
            init: Some(setting.init),
            steps_per_level: setting.steps_per_level,
            eps: setting.eps,
            seed: self.seed,
            no_graphs: false,
            model: self.model.clone(),
        }
    }

    /// Options fixed for the whole sweep that a setting's result depends on, as `sample`
    /// options: the best setting carries them.
    fn fixed_options(&self) -> Vec<(String, String)> {
        vec![
            ("terminal-steps".into(), self.terminal_steps.to_string()),
            ("variant".into(), self.variant.name().into()),
        ]
    }

    /// What every score of this sweep depends on besides its setting: scores made under other
    /// conditions (another checkpoint, seed, count, ...) are not comparable.
    fn conditions(&self, checkpoint: &Path, data_name: &str) -> Result<String> {
        let bytes = crate::regular_file::read(checkpoint)?;
        let precision = self
            .model
            .precision
            .map_or_else(|| "checkpoint's".to_string(), |p| p.to_string());
        Ok(format!(
            "checkpoint={};weights={};precision={precision};seed={};count={};batch={};\
             terminal_steps={};variant={};{}",
            crate::checksum::of(&bytes),
            self.model.weights,
            self.seed,
            self.count,
            self.batch,
            self.terminal_steps,
            self.variant,
            self.scoring.conditions(data_name)
        ))
    }
}

/// The files a sweep writes into the run directory.
struct Outputs {
    csv: PathBuf,
    png: PathBuf,
    best: PathBuf,
}

pub fn run(device: &Device, args: &SweepArgs) -> Result<()> {
    args.scoring.check()?;
    if args.metric.needs_inception() && args.scoring.inception.is_none() {
        return Err(Error::invalid(format!(
            "--metric {} is measured in the FID InceptionV3's features: give its converted \
             weights with --inception FILE (README, \"Inception FID and KID\"), or sweep by \
             --metric {} or {}",
            args.metric,
            Metric::Frechet,
            Metric::Kid
        )));
    }
    let path = existing_checkpoint(&args.checkpoint)?;
    let model = args.model.load(&path, device)?;
    let additive = !model.spec.objective.diffusion().requires_positive_pixels();
    let settings = args.grid(additive)?.settings();
    let data_name = args.scoring.data_name(&model.spec.dataset);
    let splits = Scorer::datasets(&args.scoring, &data_name, model.spec.image_shape())?;
    let outputs = outputs_checked(args, &path, &data_name, &splits.0, &model)?;
    let conditions = args.conditions(&path, &data_name)?;
    let mut record = SweepRecord::open(&outputs.csv, &conditions)?;
    let todo: Vec<&Setting> = settings.iter().filter(|s| !record.has(s)).collect();
    eprintln!(
        "sweep: {} settings, {} in {} already, {} to try; {} images each, seed {}",
        settings.len(),
        settings.len() - todo.len(),
        outputs.csv.display(),
        todo.len(),
        args.count,
        args.seed
    );
    if !todo.is_empty() {
        print_model(&model, device);
        let neighbours = EvalOptions::default().neighbours;
        let scorer = Scorer::new(&args.scoring, splits, model.spec.range, neighbours, device)?;
        for (i, setting) in todo.iter().enumerate() {
            let row = try_setting(&model, args, setting, &scorer, &conditions);
            let line = describe(&row, args.metric, additive);
            eprintln!("[{}/{}] {line}", i + 1, todo.len());
            record.append(row)?;
            write_best_and_plot(&record, args, &outputs, additive)?;
        }
    }
    // Again at the end, for a sweep with nothing left to try: another --metric picks another
    // best from the same rows.
    write_best_and_plot(&record, args, &outputs, additive)?;
    report(&record, &settings, args, &outputs, additive)
}

/// The output paths, checked to be writable and none of the inputs.
fn outputs_checked(
    args: &SweepArgs,
    checkpoint: &Path,
    data_name: &str,
    train: &crate::data::Dataset,
    model: &ScoreModel,
) -> Result<Outputs> {
    let run_dir = run_dir_of(&args.checkpoint);
    let outputs = Outputs {
        csv: run_dir.join(SWEEP_CSV_FILE),
        png: run_dir.join(SWEEP_PNG_FILE),
        best: run_dir.join(BEST_SETTINGS_FILE),
    };
    let cached = Scorer::cached_classifier(&args.scoring, train, model.spec.range);
    let mut inputs = vec![checkpoint, Path::new(data_name), &cached];
    inputs.extend(args.scoring.classifier.as_deref());
    inputs.extend(args.scoring.inception.as_deref());
    check_outputs(
        &[
            ("sweep.csv", &outputs.csv),
            ("sweep.png", &outputs.png),
            ("best_settings.json", &outputs.best),
        ],
        &inputs,
    )?;
    Ok(outputs)
}

/// Samples `setting` and scores the samples as `dml eval` would; a setting the sampler's checks
/// refuse, or whose samples cannot be scored, is a row saying why.
fn try_setting(
    model: &ScoreModel,
    args: &SweepArgs,
    setting: &Setting,
    scorer: &Scorer,
    conditions: &str,
) -> Row {
    let start = Instant::now();
    let sampling = args.sampling(setting);
    let checked = sampling
        .generate_options(model)
        .and_then(|opts| validate(model, &opts));
    let status = match checked {
        Err(e) => Status::Refused(e.to_string()),
        Ok(()) => match draw_samples(model, &sampling, &args.checkpoint)
            .and_then(|s| scorer.score(&s.images, s.sign_changes))
        {
            Ok(report) => Status::Scored(Scores {
                frechet: report.frechet,
                kid: report.kid,
                floor_frechet: report.floor_frechet,
                floor_kid: report.floor_kid,
                n_samples: report.n_samples,
                inception_fid: report.inception.map(|i| i.fid),
                inception_kid_mean: report.inception.map(|i| i.kid_mean),
                inception_kid_std: report.inception.map(|i| i.kid_std),
                nn_mean: Some(report.nn_mean),
                test_nn_mean: Some(report.test_nn_mean),
            }),
            Err(e) => Status::Failed(e.to_string()),
        },
    };
    Row {
        setting: *setting,
        status,
        seconds: start.elapsed().as_secs_f64(),
        conditions: conditions.to_string(),
    }
}

/// One line on a row: its setting and how it ended.
fn describe(row: &Row, metric: Metric, additive: bool) -> String {
    let outcome = match &row.status {
        Status::Scored(s) => {
            let value = s
                .get(metric)
                .map_or_else(|| "-".into(), |v| format!("{v:.5}"));
            let inception = match (s.inception_fid, s.inception_kid_mean) {
                (Some(fid), Some(kid)) => {
                    format!(", inception fid {fid:.3}, inception kid {kid:.5}")
                }
                _ => String::new(),
            };
            format!(
                "{metric} {value} (frechet {:.5}, kid {:.6}{inception})",
                s.frechet, s.kid
            )
        }
        Status::Refused(why) => format!("refused: {why}"),
        Status::Failed(why) => format!("failed: {why}"),
    };
    format!(
        "{}: {outcome} [{:.1} s]",
        row.setting.describe(additive),
        row.seconds
    )
}

/// Rewrites best_settings.json and sweep.png from the rows so far (so a killed sweep leaves
/// both up to date with its CSV).
fn write_best_and_plot(
    record: &SweepRecord,
    args: &SweepArgs,
    outputs: &Outputs,
    additive: bool,
) -> Result<()> {
    let Some(row) = best_row(&record.rows, args.metric) else {
        return Ok(());
    };
    BestSettings {
        row,
        metric: args.metric,
        fixed: args.fixed_options(),
    }
    .write(&outputs.best)?;
    let (chart, _) = sweep_chart(&record.rows, args.metric, additive);
    write_png(&outputs.png, &chart.render(PLOT_SIZE.0, PLOT_SIZE.1))
}

/// Prints the table of this sweep's settings (best first), what the plot shows and the best;
/// an error when none of them could be scored.
fn report(
    record: &SweepRecord,
    settings: &[Setting],
    args: &SweepArgs,
    outputs: &Outputs,
    additive: bool,
) -> Result<()> {
    let mut rows: Vec<&Row> = record
        .rows
        .iter()
        .filter(|r| settings.contains(&r.setting))
        .collect();
    let score = |r: &Row| match &r.status {
        Status::Scored(s) => s
            .get(args.metric)
            .filter(|v| v.is_finite())
            .unwrap_or(f64::INFINITY),
        _ => f64::INFINITY,
    };
    rows.sort_by(|a, b| score(a).total_cmp(&score(b)));
    // The Inception columns when the rows have them (a sweep with --inception).
    let inception = args.scoring.inception.is_some();
    let scores_header = match inception {
        true => format!(
            "{:>12} {:>12} {:>13} {:>13} {:>8}",
            "frechet", "kid", "inception_fid", "inception_kid", "nearest"
        ),
        false => format!("{:>12} {:>12} {:>8}", "frechet", "kid", "nearest"),
    };
    match additive {
        true => println!("{:>10} {:>5} {scores_header}  status", "eps", "T"),
        false => println!(
            "{:<8} {:>10} {:>3} {:>8} {:>6} {:<14} {scores_header}  status",
            "sampler", "delta_s", "L", "chi", "kappa", "init"
        ),
    }
    for r in &rows {
        println!("{}", table_line(r, additive, inception));
    }
    if let Some(test_nn) = rows
        .iter()
        .find_map(|r| scores_of(r).and_then(|s| s.test_nn_mean))
    {
        println!(
            "nearest: mean pixel L2 from a sample to its nearest training image (test images: \
             {test_nn:.3})"
        );
    }
    println!("wrote {}", outputs.csv.display());
    let Some(best) = best_row(&record.rows, args.metric) else {
        return Err(Error::invalid(format!(
            "sweep: none of the settings could be scored (see the reasons in {})",
            outputs.csv.display()
        )));
    };
    print_plot_legend(record, args, outputs, additive);
    println!(
        "best by {} ({:.5}): {}\nwrote {} (use it with `dml sample --settings best` or `dml \
         eval --settings best`)",
        args.metric,
        score(best),
        best.setting.describe(additive),
        outputs.best.display()
    );
    if let Some(warning) = scores_of(best).and_then(noise_warning) {
        println!("{warning}");
    }
    Ok(())
}

fn scores_of(row: &Row) -> Option<&Scores> {
    match &row.status {
        Status::Scored(s) => Some(s),
        _ => None,
    }
}

/// Samples further than this times the test images' distance from their nearest training image
/// carry pixel noise: the grainy samples of `--kappa 1.414` on the demo's model lie 5.8 from it
/// where test images lie 3.6 and clean samples 3.2-3.9 (README, "What the demo reaches").
const NOISY_SAMPLES_RATIO: f64 = 1.25;

/// A warning when `best`'s samples lie much further from every training image than test images
/// do: speckled samples can score well in the classifier's features, which barely see pixel
/// noise.
fn noise_warning(best: &Scores) -> Option<String> {
    let (nn, test_nn) = (best.nn_mean?, best.test_nn_mean?);
    (nn > NOISY_SAMPLES_RATIO * test_nn).then(|| {
        format!(
            "note: the best setting's samples lie {nn:.2} from their nearest training image, \
             test images {test_nn:.2}: they carry pixel noise, which the classifier's features \
             barely see; look at them (`dml sample --settings best`) before trusting the score"
        )
    })
}

/// One row of the table; with `inception`, the Inception FID and KID columns too.
fn table_line(r: &Row, additive: bool, inception: bool) -> String {
    let s = &r.setting;
    let optional =
        |x: Option<f64>, digits: usize| x.map_or_else(String::new, |v| format!("{v:.digits$}"));
    let ([frechet, kid, inception_fid, inception_kid, nearest], status) = match &r.status {
        Status::Scored(x) => (
            [
                format!("{:.5}", x.frechet),
                format!("{:.6}", x.kid),
                optional(x.inception_fid, 3),
                optional(x.inception_kid_mean, 5),
                optional(x.nn_mean, 3),
            ],
            "scored".into(),
        ),
        Status::Refused(why) => (Default::default(), format!("refused: {why}")),
        Status::Failed(why) => (Default::default(), format!("failed: {why}")),
    };
    let scores = match inception {
        true => {
            format!("{frechet:>12} {kid:>12} {inception_fid:>13} {inception_kid:>13} {nearest:>8}")
        }
        false => format!("{frechet:>12} {kid:>12} {nearest:>8}"),
    };
    if additive {
        return format!("{:>10} {:>5} {scores}  {status}", s.eps, s.steps_per_level);
    }
    format!(
        "{:<8} {:>10} {:>3} {:>8} {:>6} {:<14} {scores}  {status}",
        s.sampler.name(),
        s.delta_s,
        s.inner_steps,
        s.chi,
        s.kappa,
        s.init.name(),
    )
}

/// What sweep.png shows: the PNG carries no text, so its axes and colours are printed.
fn print_plot_legend(record: &SweepRecord, args: &SweepArgs, outputs: &Outputs, additive: bool) {
    let (chart, lines) = sweep_chart(&record.rows, args.metric, additive);
    let Some([(x0, x1), (y0, y1)]) = chart.ranges() else {
        return;
    };
    println!(
        "wrote {}: {} (y, {}) against {} (x, log scale, {:.3e} to {:.3e}), one line per \
         setting of the other axes:",
        outputs.png.display(),
        args.metric,
        match chart.log_y {
            true => format!(
                "log scale, {:.4e} to {:.4e}",
                10f64.powf(y0),
                10f64.powf(y1)
            ),
            false => format!("linear, {y0:.4} to {y1:.4}"),
        },
        if additive { "eps" } else { "delta_s" },
        10f64.powf(x0),
        10f64.powf(x1)
    );
    for (i, line) in lines.iter().enumerate() {
        match additive {
            true => println!("  {}: T {}", colour_name(i), line.steps_per_level),
            false => println!(
                "  {}: {} L {} chi {} kappa {} init {}",
                colour_name(i),
                line.sampler,
                line.inner_steps,
                line.chi,
                line.kappa,
                line.init
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn noisy_best_samples_are_flagged() {
        let scores = |nn: Option<f64>| Scores {
            frechet: 26.3,
            kid: 1.5,
            floor_frechet: 5.2,
            floor_kid: -0.25,
            n_samples: 256,
            inception_fid: None,
            inception_kid_mean: None,
            inception_kid_std: None,
            nn_mean: nn,
            test_nn_mean: Some(3.611),
        };
        // The demo's model with kappa 1.414 (grainy) and 1 (clean), and a row from before the
        // neighbour columns.
        let warning = noise_warning(&scores(Some(5.778))).unwrap();
        assert!(
            warning.contains("5.78") && warning.contains("3.61"),
            "{warning}"
        );
        assert_eq!(noise_warning(&scores(Some(3.666))), None);
        assert_eq!(noise_warning(&scores(None)), None);
    }
}
