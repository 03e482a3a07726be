//! `train --eval-every`: rows in eval.csv at the right steps, scored exactly as `dml eval`
//! scores the kept best.safetensors; the plot; a resumed run keeps the rows of the steps it
//! does not redo.
mod common;

use common::cli::{args_ref, ok, s, shapes_run};

use std::path::Path;

/// `train` on the built-in shapes with an evaluation of 4 samples every 2 steps.
fn train_evaluating(dir: &Path, extra: &[&str]) -> Vec<String> {
    let mut args = vec![
        "--preset",
        "tiny",
        "--eval-every",
        "2",
        "--eval-count",
        "4",
        "--eval-max-reference",
        "10",
        "--eval-classifier-steps",
        "2",
    ];
    args.extend(extra);
    shapes_run(dir, &args)
}

/// The (step, Frechet distance as written) of each training evaluation in eval.csv.
fn evaluations(dir: &Path) -> Vec<(u64, String)> {
    let text = std::fs::read_to_string(dir.join("eval.csv")).unwrap();
    text.lines()
        .skip(1)
        .map(dalemeetslangevin::csv::split_line)
        .map(|f| {
            let step = f[0].strip_prefix("train step ").unwrap();
            (
                step.split(' ').next().unwrap().parse().unwrap(),
                f[4].clone(),
            )
        })
        .collect()
}

#[test]
fn eval_every_writes_rows_best_checkpoint_and_plot_and_resume_keeps_the_rows() {
    let dir = common::tempdir("cli-train-eval");
    ok(&args_ref(&train_evaluating(&dir, &["--steps", "4"])));
    let rows = evaluations(&dir);
    let steps: Vec<u64> = rows.iter().map(|r| r.0).collect();
    assert_eq!(steps, [2, 4]);
    let png = std::fs::read(dir.join("training.png")).unwrap();
    assert_eq!(&png[1..4], b"PNG");

    // best.safetensors is the checkpoint of the least distance; `dml eval` of its EMA weights
    // with the same count, seed and classifier reports that very distance.
    let best = rows
        .iter()
        .min_by(|a, b| a.1.parse::<f64>().unwrap().total_cmp(&b.1.parse().unwrap()))
        .unwrap();
    let check = dir.join("check.csv");
    let best_ckpt = dir.join("best.safetensors");
    ok(&[
        "eval",
        "--checkpoint",
        s(&best_ckpt),
        "--count",
        "4",
        "--max-reference",
        "10",
        "--classifier-steps",
        "2",
        "--csv",
        s(&check),
    ]);
    let text = std::fs::read_to_string(&check).unwrap();
    let row = dalemeetslangevin::csv::split_line(text.lines().nth(1).unwrap());
    assert_eq!(
        row[4], best.1,
        "eval of best.safetensors vs the training row"
    );

    // A row of a step past the checkpoint (a run killed after evaluating, before saving) is
    // dropped on resume and redone; the earlier rows stay as they were.
    let csv = dir.join("eval.csv");
    let before = std::fs::read_to_string(&csv).unwrap();
    let last = before
        .lines()
        .last()
        .unwrap()
        .replacen("train step 4 ", "train step 5 ", 1);
    std::fs::write(&csv, format!("{before}{last}\n")).unwrap();
    ok(&args_ref(&train_evaluating(
        &dir,
        &["--steps", "6", "--resume"],
    )));
    let steps: Vec<u64> = evaluations(&dir).iter().map(|r| r.0).collect();
    assert_eq!(steps, [2, 4, 6]);
    assert!(std::fs::read_to_string(&csv).unwrap().starts_with(&before));
}
