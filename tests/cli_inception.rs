//! `dml eval --inception FILE`: Inception FID and KID beside the classifier distances, the test
//! images' features cached, files that are not the converted weights refused with a clear error;
//! `dml sweep --inception FILE` recording them and choosing the best setting by them.
//! The weights are the formula stand-ins (tests/inception.rs checks them against PyTorch), written
//! as reference/convert_inception.py writes a converted file.
mod common;

use std::path::{Path, PathBuf};

use common::cli::{fails, ok, s, train_tiny_run, train_tiny_run_with};
use dalemeetslangevin::checkpoint::Checkpoint;
use dalemeetslangevin::nn::inception::formula_state_dict;

fn formula_weights(dir: &Path) -> PathBuf {
    let path = dir.join("fid_inception.safetensors");
    let mut file = Checkpoint::new();
    file.tensors = formula_state_dict();
    file.put_meta("format", "dml-fid-inception-v3");
    file.save(&path).unwrap();
    path
}

fn eval_args<'a>(run: &'a str, csv: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "eval",
        "--checkpoint",
        run,
        "--count",
        "4",
        "--max-reference",
        "6",
        "--classifier-steps",
        "2",
        "--csv",
        csv,
    ];
    args.extend_from_slice(extra);
    args
}

#[test]
fn eval_reports_inception_fid_and_kid_and_caches_the_reference() {
    let run = train_tiny_run("cli-inception", 10, 2);
    let weights = formula_weights(&run);
    let csv = run.join("inception-eval.csv");
    let args = eval_args(s(&run), s(&csv), &["--inception", s(&weights)]);
    let first = ok(&args);
    assert!(
        first.contains("FID (Inception features, 2048-d)"),
        "{first}"
    );
    assert!(
        first.contains("KID (Inception, 100 subsets of 4)"),
        "{first}"
    );
    let second = ok(&args);
    assert!(
        second.contains("using cached Inception features"),
        "{second}"
    );

    // Both rows carry the three Inception columns, equal (same seed, same cached reference).
    let text = std::fs::read_to_string(&csv).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let header: Vec<&str> = lines[0].split(',').collect();
    let columns = ["inception_fid", "inception_kid_mean", "inception_kid_std"];
    let at = columns.map(|c| header.iter().position(|h| *h == c).expect(c));
    // The samples field (quoted, with commas) is first: count the fields from the end.
    let inception = |line: &str| {
        let fields: Vec<&str> = line.split(',').collect();
        at.map(|i| fields[fields.len() - header.len() + i].to_string())
    };
    let (a, b) = (inception(lines[1]), inception(lines[2]));
    assert!(
        a.iter().all(|v| v.parse::<f64>().is_ok_and(f64::is_finite)),
        "{a:?}"
    );
    assert_eq!(a, b);

    // Without --inception the columns stay empty.
    ok(&eval_args(s(&run), s(&csv), &[]));
    let text = std::fs::read_to_string(&csv).unwrap();
    let last = inception(text.lines().last().unwrap());
    assert!(last.iter().all(String::is_empty), "{text}");
}

#[test]
fn eval_refuses_files_that_are_not_the_inception_weights() {
    let run = train_tiny_run("cli-inception-bad", 10, 2);
    let csv = run.join("eval.csv");
    // The score network's own checkpoint, passed by mistake.
    let checkpoint = run.join("checkpoint.safetensors");
    let e = fails(&eval_args(
        s(&run),
        s(&csv),
        &["--inception", s(&checkpoint)],
    ));
    assert!(
        e.contains("checkpoint.safetensors") && e.contains("convert_inception.py"),
        "{e}"
    );
    // A file that is not safetensors at all (pytorch-fid's .pth, unconverted).
    let pth = run.join("pt_inception-2015-12-05-6726825d.pth");
    std::fs::write(&pth, b"PK\x03\x04 a zip archive").unwrap();
    let e = fails(&eval_args(s(&run), s(&csv), &["--inception", s(&pth)]));
    assert!(e.contains("pt_inception-2015-12-05-6726825d.pth"), "{e}");
    let e = fails(&eval_args(
        s(&run),
        s(&csv),
        &["--inception", s(&run.join("absent"))],
    ));
    assert!(e.contains("absent"), "{e}");
}

#[test]
fn train_eval_every_adds_the_inception_columns() {
    let weights = formula_weights(&common::tempdir("cli-inception-train-weights"));
    let eval = [
        "--eval-every",
        "2",
        "--eval-count",
        "4",
        "--eval-max-reference",
        "6",
        "--eval-classifier-steps",
        "2",
        "--eval-inception",
        s(&weights),
    ];
    let out = train_tiny_run_with("cli-inception-train", 10, 2, &eval);
    let text = std::fs::read_to_string(out.join("eval.csv")).unwrap();
    let row = text.lines().nth(1).expect("one evaluation row");
    let fields = dalemeetslangevin::csv::split_line(row);
    let inception = &fields[fields.len() - 3..];
    assert!(
        inception
            .iter()
            .all(|v| v.parse::<f64>().is_ok_and(f64::is_finite)),
        "{text}"
    );
}

/// The column `name` of the CSV file at `path`, one value per row.
fn column(path: &Path, name: &str) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let at = header.iter().position(|h| *h == name).unwrap_or_else(|| {
        panic!("no column {name} in {header:?}");
    });
    lines
        .map(|l| dalemeetslangevin::csv::split_line(l)[at].clone())
        .collect()
}

/// `dml sweep` of one setting (delta_s 0.01) on 4 images against 6 test images: each Inception
/// FID costs about a minute on 2 cores (two 2048x2048 eigendecompositions), so one setting;
/// src/sweep/best.rs tests the choice among several by each metric.
fn sweep_args<'a>(run: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "sweep",
        "--checkpoint",
        run,
        "--delta-s",
        "0.01",
        "--count",
        "4",
        "--batch",
        "4",
        "--max-reference",
        "6",
        "--classifier-steps",
        "2",
    ];
    args.extend_from_slice(extra);
    args
}

#[test]
fn sweep_records_inception_distances_and_chooses_the_best_by_them() {
    let run = train_tiny_run("cli-inception-sweep", 10, 2);
    let weights = formula_weights(&run);
    let out = ok(&sweep_args(
        s(&run),
        &["--inception", s(&weights), "--metric", "inception-fid"],
    ));
    let csv = run.join("sweep.csv");
    assert_eq!(column(&csv, "status"), ["scored"], "{out}");
    let value = |name: &str| -> f64 {
        let values = column(&csv, name);
        assert_eq!(values.len(), 1, "{name}: {values:?}");
        let v = values[0].parse::<f64>();
        assert!(
            v.as_ref().is_ok_and(|v| v.is_finite()),
            "{name}: {values:?}"
        );
        v.unwrap()
    };
    let fid = value("inception_fid");
    let kid = value("inception_kid_mean");
    assert!(value("inception_kid_std") >= 0.0);
    // best_settings.json names the metric and carries the row's Inception numbers.
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("best_settings.json")).unwrap())
            .unwrap();
    assert_eq!(doc["metric"], "inception-fid", "{doc}");
    assert_eq!(doc["options"]["delta-s"], "0.01", "{doc}");
    assert_eq!(doc["scores"]["inception_fid"].as_f64(), Some(fid), "{doc}");
    assert_eq!(
        doc["scores"]["inception_kid_mean"].as_f64(),
        Some(kid),
        "{doc}"
    );
    // The table has the Inception columns; the best line and the plot go by the metric.
    assert!(out.contains("inception_fid"), "{out}");
    assert!(
        out.contains(&format!("best by inception-fid ({fid:.5})")),
        "{out}"
    );
    assert!(out.contains("inception-fid (y, "), "{out}");

    // The same row, chosen by Inception KID: nothing sampled, the file names that metric.
    let out = ok(&sweep_args(
        s(&run),
        &["--inception", s(&weights), "--metric", "inception-kid"],
    ));
    assert!(out.contains("0 to try") && !out.contains("[1/"), "{out}");
    assert!(
        out.contains(&format!("best by inception-kid ({kid:.5})")),
        "{out}"
    );
    let best = std::fs::read_to_string(run.join("best_settings.json")).unwrap();
    assert!(best.contains("\"metric\": \"inception-kid\""), "{best}");

    // A sweep without --inception does not mix its rows into this record.
    let before = std::fs::read_to_string(&csv).unwrap();
    let e = fails(&sweep_args(s(&run), &[]));
    assert!(
        e.contains("sweep.csv") && e.contains("(inception=") && e.contains("(no inception)"),
        "{e}"
    );
    assert_eq!(std::fs::read_to_string(&csv).unwrap(), before);
}

#[test]
fn sweep_refuses_an_inception_metric_without_inception_weights() {
    let run = train_tiny_run("cli-inception-sweep-refused", 10, 2);
    for metric in ["inception-fid", "inception-kid"] {
        let e = fails(&sweep_args(s(&run), &["--metric", metric]));
        assert!(
            e.contains(&format!("--metric {metric}")) && e.contains("--inception FILE"),
            "{e}"
        );
    }
    // Refused before anything was sampled or written.
    assert!(!run.join("sweep.csv").exists());
    assert!(!run.join("best_settings.json").exists());
}
