//! `dml sweep`: the grid of sampler settings scored on a tiny checkpoint; the CSV, plot and best
//! setting it writes; resuming without scoring a setting twice; refused and failed settings
//! recorded with their reason; scores equal to `dml eval`'s for the same setting; `sample`/`eval
//! --settings best`.
mod common;

use common::cli::{fails, ok, s, train_tiny_run, train_tiny_run_with};

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// A tiny run on the built-in shapes (10 levels, 4 steps), trained once per test binary.
fn trained_run() -> &'static Path {
    static RUN: OnceLock<PathBuf> = OnceLock::new();
    RUN.get_or_init(|| train_tiny_run("cli-sweep-run", 10, 4))
}

/// A run directory of its own holding a copy of the tiny checkpoint (each test sweeps into its
/// own, as the sweep's files live beside the checkpoint).
fn run_copy(name: &str) -> PathBuf {
    let dir = common::tempdir(name);
    std::fs::copy(
        trained_run().join("checkpoint.safetensors"),
        dir.join("checkpoint.safetensors"),
    )
    .unwrap();
    dir
}

/// What both `sweep` and `eval` take to score: 4 images, 10 test images, a 2-step classifier.
const SCORING: [&str; 8] = [
    "--count",
    "4",
    "--batch",
    "4",
    "--max-reference",
    "10",
    "--classifier-steps",
    "2",
];

fn sweep(run: &Path, extra: &[&str]) -> Vec<String> {
    let mut args = vec!["sweep", "--checkpoint", s(run)];
    args.extend(SCORING);
    args.extend(extra);
    args.iter().map(|a| a.to_string()).collect()
}

fn refs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

/// The column `name` of the CSV file at `path`, one value per row.
fn column(path: &Path, name: &str) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let at = header.iter().position(|h| *h == name).unwrap();
    lines
        .map(|l| dalemeetslangevin::csv::split_line(l)[at].clone())
        .collect()
}

#[test]
fn a_sweep_writes_csv_plot_and_best_and_resumes_without_scoring_twice() {
    let run = run_copy("cli-sweep-resume");
    let out = ok(&refs(&sweep(
        &run,
        &["--delta-s", "0.01,0.02,1e6", "--kappa", "1,1e30"],
    )));
    let csv = run.join("sweep.csv");
    let status = column(&csv, "status");
    assert_eq!(status.len(), 6, "{out}");
    // 1e6 is beyond the schedule's bound: refused before sampling, with the sampler's reason.
    let reasons = column(&csv, "reason");
    let delta = column(&csv, "delta_s");
    for ((st, why), d) in status.iter().zip(&reasons).zip(&delta) {
        if d == "1000000" {
            assert_eq!(st, "refused");
            assert!(why.contains("SPEC section 4"), "{why}");
        }
    }
    // kappa 1e30 diverges: the samples are not finite, the setting failed, never the best.
    let kappa = column(&csv, "kappa");
    let huge = |k: &String| k.parse::<f32>().unwrap() == 1e30;
    let failed = status
        .iter()
        .zip(&kappa)
        .filter(|(st, k)| *st == "failed" && huge(k));
    assert_eq!(failed.count(), 2, "{status:?} {kappa:?}");
    assert_eq!(status.iter().filter(|st| *st == "scored").count(), 2);
    let png = std::fs::read(run.join("sweep.png")).unwrap();
    assert_eq!(&png[1..4], b"PNG");
    let best = std::fs::read_to_string(run.join("best_settings.json")).unwrap();
    assert!(
        best.contains("\"kappa\": \"1\"") && best.contains("\"delta-s\": \"0.0"),
        "{best}"
    );

    // Run again with one value more: only the new settings are tried, the old rows are kept.
    let before = std::fs::read_to_string(&csv).unwrap();
    let out = ok(&refs(&sweep(
        &run,
        &["--delta-s", "0.01,0.02,1e6,0.005", "--kappa", "1,1e30"],
    )));
    assert!(
        out.contains("8 settings, 6 in") && out.contains("2 to try"),
        "{out}"
    );
    let after = std::fs::read_to_string(&csv).unwrap();
    assert!(
        after.starts_with(&before),
        "rows were rewritten:\n{before}\n{after}"
    );
    assert_eq!(column(&csv, "status").len(), 8);
    // Nothing left to do: nothing is sampled, the table is printed again.
    let out = ok(&refs(&sweep(&run, &["--delta-s", "0.01", "--kappa", "1"])));
    assert!(out.contains("0 to try") && !out.contains("[1/"), "{out}");
    assert_eq!(std::fs::read_to_string(&csv).unwrap(), after);
}

#[test]
fn a_sweep_refuses_a_record_made_under_other_conditions() {
    let run = run_copy("cli-sweep-conditions");
    ok(&refs(&sweep(&run, &["--delta-s", "0.01"])));
    let e = fails(&refs(&sweep(&run, &["--delta-s", "0.01", "--seed", "7"])));
    assert!(
        e.contains("seed=7") && e.contains("seed=0") && e.contains("sweep.csv"),
        "{e}"
    );
    // Nothing but refused settings: an error saying so, the reasons in the CSV.
    let other = run_copy("cli-sweep-all-refused");
    let e = fails(&refs(&sweep(&other, &["--delta-s", "1e6"])));
    assert!(e.contains("none of the settings could be scored"), "{e}");
    assert_eq!(column(&other.join("sweep.csv"), "status"), ["refused"]);
}

#[test]
fn sweep_scores_equal_eval_scores_and_settings_best_reuses_them() {
    let run = run_copy("cli-sweep-equal");
    let table = ok(&refs(&sweep(
        &run,
        &[
            "--delta-s",
            "0.01,0.02",
            "--sampler",
            "adls,asams",
            "--inner-steps",
            "2",
        ],
    )));
    assert!(
        table.contains("nearest") && table.contains("(test images: "),
        "{table}"
    );
    let csv = run.join("sweep.csv");
    let frechet = column(&csv, "frechet");
    let best = (0..frechet.len())
        .min_by(|&a, &b| {
            let v = |i: usize| frechet[i].parse::<f64>().unwrap();
            v(a).total_cmp(&v(b))
        })
        .unwrap();
    let eval_csv = run.join("eval-check.csv");
    let mut eval = vec!["eval", "--checkpoint", s(&run), "--csv", s(&eval_csv)];
    eval.extend(SCORING);
    eval.extend(["--settings", "best"]);
    let out = ok(&eval);
    let sampler = &column(&csv, "sampler")[best];
    let delta = &column(&csv, "delta_s")[best];
    assert!(
        out.contains(&format!("sampler {sampler}, delta_s {delta} inner steps 2")),
        "{out}"
    );
    // The same setting, seed and count: the very same numbers (both written with `{:e}`).
    assert_eq!(
        column(&eval_csv, "frechet_classifier_features"),
        [frechet[best].clone()]
    );
    assert_eq!(
        column(&eval_csv, "kid_classifier_features"),
        [column(&csv, "kid")[best].clone()]
    );
    // And the same distances to the nearest training image, which the table shows.
    for name in ["nn_train_l2_mean", "test_nn_train_l2_mean"] {
        let value = |path: &Path, row: usize| column(path, name)[row].parse::<f64>().unwrap();
        assert_eq!(value(&eval_csv, 0), value(&csv, best), "{name}");
    }

    // Options given on the command line win over the settings file.
    let png = run.join("x.png");
    let mut sample = vec!["sample", "--checkpoint", s(&run), "--out", s(&png)];
    sample.extend(["--count", "2", "--settings", "best", "--delta-s", "0.003"]);
    let out = ok(&sample);
    assert!(
        out.contains(&format!("sampler {sampler}, delta_s 0.003 inner steps 2")),
        "{out}"
    );
    // A preset and a settings file are two answers to one question.
    let mut both = sample.clone();
    both.extend(["--sampler-preset", "fashion-adls"]);
    let e = String::from_utf8(common::cli::dml(&both).stderr).unwrap();
    assert!(
        e.contains("--sampler-preset") && e.contains("--settings"),
        "{e}"
    );
    // A run without a sweep has no best setting: the error says where it looked and why.
    let e = fails(&[
        "sample",
        "--checkpoint",
        s(trained_run()),
        "--out",
        s(&png),
        "--settings",
        "best",
    ]);
    assert!(
        e.contains("best_settings.json") && e.contains("dml sweep"),
        "{e}"
    );
}

#[test]
fn an_additive_checkpoint_sweeps_its_own_sampler_and_best_reuses_it() {
    let run = train_tiny_run_with("cli-sweep-additive", 3, 2, &["--diffusion", "additive"]);
    // An axis of the GBM samplers would repeat the same samples: refused, naming the flag.
    let e = fails(&refs(&sweep(&run, &["--delta-s", "0.01,0.02"])));
    assert!(e.contains("--delta-s") && e.contains("--eps"), "{e}");

    let out = ok(&refs(&sweep(
        &run,
        &["--eps", "1e-5,3e-5", "--steps-per-level", "2,3"],
    )));
    let csv = run.join("sweep.csv");
    assert_eq!(column(&csv, "status"), ["scored"; 4], "{out}");
    assert_eq!(
        column(&csv, "eps"),
        ["0.00001", "0.00003", "0.00001", "0.00003"]
    );
    assert_eq!(column(&csv, "steps_per_level"), ["2", "2", "3", "3"]);
    assert_eq!(column(&csv, "init"), ["noise"; 4]);
    assert!(out.contains("against eps"), "{out}");
    // The settings differ in their samples: four distinct scores.
    let mut frechet = column(&csv, "frechet");
    frechet.dedup();
    assert_eq!(frechet.len(), 4, "{frechet:?}");

    // eval --settings best reproduces the best row's score.
    let best = std::fs::read_to_string(run.join("best_settings.json")).unwrap();
    assert!(
        best.contains("\"eps\"") && best.contains("\"steps-per-level\""),
        "{best}"
    );
    let eval_csv = run.join("eval-best.csv");
    let mut args = vec!["eval", "--checkpoint", s(&run), "--settings", "best"];
    args.extend(SCORING);
    args.extend(["--csv", s(&eval_csv)]);
    ok(&args);
    let scored = column(&csv, "frechet");
    let least = scored
        .iter()
        .map(|f| f.parse::<f64>().unwrap())
        .fold(f64::INFINITY, f64::min);
    let eval_frechet: f64 = column(&eval_csv, "frechet_classifier_features")[0]
        .parse()
        .unwrap();
    assert_eq!(eval_frechet, least);
}
