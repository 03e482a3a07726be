//! `dml level-loss`: the per-level test loss (SPEC 3.2) against the M-DSM formula written out
//! here with the LEVEL_LOSS stream's normals; independent of the batch; two checkpoints on the
//! same noise; its CSV and chart; refused inputs.
mod common;

use common::cli::{fails, ok, s, train_tiny_run};

use dalemeetslangevin::data::{Dataset, Split};
use dalemeetslangevin::eval::fixed_subset;
use dalemeetslangevin::rng::{normal, stream};
use dalemeetslangevin::train::{Objective, ScoreModel, Weights};
use dalemeetslangevin::{Device, Tensor};

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The tiny preset on the built-in shapes, 10 levels, trained for 4 and for 12 steps.
fn runs() -> &'static (PathBuf, PathBuf) {
    static RUNS: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    RUNS.get_or_init(|| {
        (
            train_tiny_run("cli-level-loss-4", 10, 4),
            train_tiny_run("cli-level-loss-12", 10, 12),
        )
    })
}

/// `(checkpoint, level, noise_scale, loss)` rows of the CSV.
fn read_csv(path: &Path) -> Vec<(String, usize, f32, f64)> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("checkpoint,level,noise_scale,loss"));
    lines
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            assert_eq!(f.len(), 4, "row '{l}'");
            (
                f[0].to_string(),
                f[1].parse().unwrap(),
                f[2].parse().unwrap(),
                f[3].parse().unwrap(),
            )
        })
        .collect()
}

fn level_loss(out: &Path, checkpoints: &[&Path], extra: &[&str]) -> Vec<(String, usize, f32, f64)> {
    let csv = out.join("level_loss.csv");
    let png = out.join("level_loss.png");
    let mut args = vec!["level-loss", "--device", "cpu"];
    for c in checkpoints {
        args.extend(["--checkpoint", s(c)]);
    }
    args.extend(["--csv", s(&csv), "--png", s(&png)]);
    args.extend(extra);
    let stdout = ok(&args);
    assert!(stdout.contains("mean"), "{stdout}");
    assert!(png.is_file(), "no chart");
    read_csv(&csv)
}

/// The loss at `level` computed from SPEC 3 and 3.2 directly: `x_k = x_0 exp(m_k + s_k z)` with
/// z the LEVEL_LOSS normals, `target = -(1 + z / s_k)`, `w_k = s_k^2` (the default weighting),
/// `1/2 ||h - target||^2` averaged over the images, summed in f64.
fn loss_by_formula(run: &Path, level: usize, count: usize, seed: u64) -> f64 {
    let path = run.join("checkpoint.safetensors");
    let model = ScoreModel::load(&path, Weights::Ema, None, &Device::Cpu).unwrap();
    let Objective::Gbm { schedule, .. } = &model.spec.objective else {
        panic!("a GBM run");
    };
    let (m, s_k) = (schedule.m(level) as f64, schedule.s(level) as f64);
    let test = Dataset::load("shapes", Split::Test).unwrap();
    let images = test.images_in_range(&fixed_subset(test.n, count), model.spec.range);
    let n = images.len() / test.image_len();
    let z: Vec<f64> = (0..images.len() as u64)
        .map(|e| normal(seed, stream::LEVEL_LOSS, level as u32, e) as f64)
        .collect();
    let x_k: Vec<f32> = images
        .iter()
        .zip(&z)
        .map(|(&x0, &z)| (x0 as f64 * (m + s_k * z).exp()) as f32)
        .collect();
    let [c, h, w] = model.spec.image_shape();
    let x = Tensor::from_vec(x_k, &[n, c, h, w], &Device::Cpu).unwrap();
    let out = model.output(&x, &vec![level; n]).unwrap().to_vec().unwrap();
    let squares: f64 = out
        .iter()
        .zip(&z)
        .map(|(&h, &z)| (h as f64 + 1.0 + z / s_k).powi(2))
        .sum();
    s_k * s_k * 0.5 * squares / n as f64
}

#[test]
fn level_loss_is_the_m_dsm_loss_on_the_level_loss_streams_noise() {
    let (run, _) = runs();
    let out = common::tempdir("cli-level-loss-formula");
    let rows = level_loss(
        &out,
        &[run],
        &["--count", "6", "--batch", "4", "--seed", "3"],
    );
    // 10 levels: the trainable ones are 1..9, all of them (fewer than --levels' 100).
    let levels: Vec<usize> = rows.iter().map(|r| r.1).collect();
    assert_eq!(levels, (1..10).collect::<Vec<_>>());
    for &(_, level, _, loss) in &rows {
        let want = loss_by_formula(run, level, 6, 3);
        assert!(
            (loss - want).abs() <= 1e-4 * want.abs(),
            "level {level}: {loss} against the formula's {want}"
        );
    }
    // Another seed draws other noise.
    let other = level_loss(&out, &[run], &["--count", "6", "--seed", "4"]);
    assert!(other.iter().zip(&rows).all(|(a, b)| a.3 != b.3));
}

#[test]
fn level_loss_does_not_depend_on_the_batch() {
    let (run, _) = runs();
    let out = common::tempdir("cli-level-loss-batch");
    let one = level_loss(
        &out,
        &[run],
        &["--count", "5", "--batch", "1", "--levels", "3"],
    );
    let all = level_loss(
        &out,
        &[run],
        &["--count", "5", "--batch", "5", "--levels", "3"],
    );
    // Three levels spread over 1..9: both ends and the middle.
    assert_eq!(one.iter().map(|r| r.1).collect::<Vec<_>>(), [1, 5, 9]);
    for (a, b) in one.iter().zip(&all) {
        assert_eq!((a.1, a.2), (b.1, b.2));
        assert!((a.3 - b.3).abs() <= 1e-5 * b.3, "{a:?} against {b:?}");
    }
}

#[test]
fn level_loss_compares_checkpoints_on_the_same_noise() {
    let (short, long) = runs();
    let out = common::tempdir("cli-level-loss-compare");
    let extra = ["--count", "4", "--levels", "4"];
    let rows = level_loss(&out, &[short, long], &extra);
    assert_eq!(rows.len(), 8, "4 levels for each of 2 checkpoints");
    let (a, b) = rows.split_at(4);
    assert!(a[0].0.contains("cli-level-loss-4") && b[0].0.contains("cli-level-loss-12"));
    // Each checkpoint's losses are those it has alone: the same images and noise.
    let alone = level_loss(&out, &[long], &extra);
    for (x, y) in b.iter().zip(&alone) {
        assert_eq!((x.1, x.3), (y.1, y.3));
    }
    assert!(
        a.iter().zip(b).any(|(x, y)| x.3 != y.3),
        "other weights, same losses"
    );
}

#[test]
fn level_loss_refuses_what_it_cannot_compute() {
    let (run, _) = runs();
    let ckpt = run.join("checkpoint.safetensors");
    let err = fails(&["level-loss", "--checkpoint", s(run), "--count", "0"]);
    assert!(err.contains("--count must be at least 1"), "{err}");
    let err = fails(&["level-loss", "--checkpoint", s(run), "--csv", s(&ckpt)]);
    assert!(err.contains("is the input file"), "{err}");
    let missing = common::tempdir("cli-level-loss-missing");
    let err = fails(&["level-loss", "--checkpoint", s(&missing)]);
    assert!(err.contains("no checkpoint here"), "{err}");
    let other_levels = train_tiny_run("cli-level-loss-5-levels", 5, 1);
    let err = fails(&[
        "level-loss",
        "--checkpoint",
        s(run),
        "--checkpoint",
        s(&other_levels),
    ]);
    assert!(err.contains("do not compare level by level"), "{err}");
    // Nothing was written by the refused runs.
    assert!(!run.join("level_loss.csv").exists());
}
