//! `dml sample`, `dml eval` and `dml bench` against a hostile user: outputs pointed at inputs,
//! settings that make the chain diverge, sizes beyond memory, absurd step counts. Each is a clear
//! error before any long work (never a panic, an abort or a NaN file), or works.
mod common;

use common::cli::{fails, fake_idx_dir, ok, s, train_tiny_run};

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use dalemeetslangevin::checkpoint::Checkpoint;
use dalemeetslangevin::data::PixelRange;
use dalemeetslangevin::image::{grid, ImageShape};
use dalemeetslangevin::sample_file::SampleFile;

/// A tiny run on the built-in shapes (5 levels, 2 steps), trained once per test binary.
fn checkpoint() -> &'static Path {
    static RUN: OnceLock<PathBuf> = OnceLock::new();
    RUN.get_or_init(|| train_tiny_run("cli-sample-run", 5, 2).join("checkpoint.safetensors"))
}

/// `dml sample` from the tiny run with `extra` arguments.
fn sample_args<'a>(out: &'a Path, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["sample", "--checkpoint", s(checkpoint()), "--out", s(out)];
    args.extend_from_slice(extra);
    args
}

/// `dml eval` from the tiny run, drawing 2 samples, with a 2-step classifier.
fn eval_args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "eval",
        "--checkpoint",
        s(checkpoint()),
        "--count",
        "2",
        "--max-reference",
        "10",
        "--classifier-steps",
        "2",
    ];
    args.extend_from_slice(extra);
    args
}

/// A copy of the tiny run's checkpoint changed by `edit`.
fn edited_checkpoint(name: &str, edit: impl FnOnce(&mut Checkpoint)) -> PathBuf {
    let mut ckpt = Checkpoint::load(checkpoint()).unwrap();
    edit(&mut ckpt);
    let path = common::tempdir(name).join("checkpoint.safetensors");
    ckpt.save(&path).unwrap();
    path
}

#[test]
fn outputs_that_are_inputs_are_refused_before_any_work() {
    let dir = common::tempdir("cli-sample-paths");
    let ckpt = checkpoint();
    let before = std::fs::read(ckpt).unwrap();
    let png = dir.join("x.png");
    let e = fails(&sample_args(ckpt, &["--count", "2"]));
    assert!(e.contains("--out") && e.contains("input"), "{e}");
    let e = fails(&sample_args(&png, &["--count", "2", "--tensors", s(ckpt)]));
    assert!(e.contains("--tensors") && e.contains("input"), "{e}");
    for flag in ["--csv", "--neighbours-png"] {
        let e = fails(&eval_args(&[flag, s(ckpt)]));
        assert!(e.contains(flag) && e.contains("input"), "{e}");
    }
    assert_eq!(
        std::fs::read(ckpt).unwrap(),
        before,
        "the checkpoint changed"
    );

    // Unwritable outputs are found before sampling (which prints the model first) and before
    // the classifier is trained (which comes before "evaluating").
    let nowhere = dir.join("missing").join("x.png");
    let e = fails(&sample_args(&nowhere, &["--count", "2"]));
    assert!(e.contains("--out") && !e.contains("model tiny"), "{e}");
    let e = fails(&eval_args(&["--csv", s(&nowhere)]));
    assert!(e.contains("--csv") && !e.contains("evaluating"), "{e}");
}

#[test]
fn diverging_settings_and_non_finite_samples_are_errors_and_never_written() {
    let dir = common::tempdir("cli-sample-nan");
    let png = dir.join("x.png");
    let tensors = dir.join("x.safetensors");
    let sample = |ckpt: &Path, extra: &[&str]| {
        let mut args = vec![
            "sample",
            "--checkpoint",
            s(ckpt),
            "--count",
            "2",
            "--out",
            s(&png),
            "--tensors",
            s(&tensors),
        ];
        args.extend_from_slice(extra);
        let e = fails(&args);
        assert!(
            !png.exists() && !tensors.exists(),
            "a file was written: {e}"
        );
        e
    };
    let ckpt = checkpoint();
    let e = sample(ckpt, &["--delta-s", "1e6"]);
    assert!(
        e.contains("--delta-s") && e.contains("SPEC section 4"),
        "{e}"
    );
    let e = sample(ckpt, &["--chi", "1e30"]);
    assert!(e.contains("--chi") && e.contains("(0, 1]"), "{e}");
    let e = sample(ckpt, &["--kappa", "inf"]);
    assert!(e.contains("--kappa"), "{e}");
    // A finite but enormous kappa diverges: the level where it happened is named.
    let e = sample(ckpt, &["--kappa", "1e30"]);
    assert!(e.contains("not finite") && e.contains("level 4"), "{e}");

    let nan_weights = edited_checkpoint("cli-sample-nan-weights", |c| {
        for (_, values) in c.tensors.values_mut() {
            values.fill(f32::NAN);
        }
    });
    // Refused at load, naming the tensor (the checkpoint reader checks every value).
    let e = sample(&nan_weights, &[]);
    assert!(e.contains("holds NaN") && e.contains("tensor"), "{e}");
    assert_eq!(e.matches("checkpoint.safetensors").count(), 1, "{e}");
    let nan_init = edited_checkpoint("cli-sample-nan-init", |c| {
        c.put_meta("init.lognormal.mu", "NaN");
    });
    let e = sample(&nan_init, &[]);
    assert!(e.contains("initial draw"), "{e}");

    // eval refuses NaN samples and appends no row.
    let nan_samples = dir.join("nan.safetensors");
    SampleFile {
        range: Some(PixelRange::new(1.0, 2.0).unwrap()),
        ..SampleFile::new([2, 1, 28, 28], vec![f32::NAN; 2 * 28 * 28]).unwrap()
    }
    .save(&nan_samples)
    .unwrap();
    let csv = dir.join("eval.csv");
    let e = fails(&eval_args(&[
        "--samples",
        s(&nan_samples),
        "--csv",
        s(&csv),
    ]));
    assert!(e.contains("not finite"), "{e}");
    assert!(!csv.exists(), "eval wrote {}", csv.display());
}

#[test]
fn sizes_beyond_memory_are_refused_before_allocating() {
    let dir = common::tempdir("cli-sample-sizes");
    let png = dir.join("x.png");
    let e = fails(&sample_args(
        &png,
        &["--count", "100000000", "--batch", "4"],
    ));
    assert!(e.contains("--count 100000000") && e.contains("GB"), "{e}");
    let e = fails(&sample_args(&png, &["--count", "18446744073709551615"]));
    assert!(e.contains("--count") && e.contains("2^64"), "{e}");
    // More columns than images: the grid just has one row.
    ok(&sample_args(
        &png,
        &["--count", "2", "--per-row", "100000000"],
    ));
    let e = fails(&sample_args(&png, &["--count", "2", "--per-row", "0"]));
    assert!(e.contains("--per-row"), "{e}");

    for size in [["--elementwise-batch", "100000000"], ["--batch", "100000"]] {
        let mut args = vec!["bench", "--quick", "--no-torch"];
        args.extend(size);
        let e = fails(&args);
        assert!(e.contains(size[0]) && e.contains("GB"), "{e}");
    }
}

/// [`fails`] for a command that, were the check missing, would run for hours: killed after 30 s.
fn fails_at_once(args: &[&str]) -> String {
    let mut child = Command::new(common::cli::dml_exe())
        .args(["--device", "cpu"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(30) {
            child.kill().unwrap();
            panic!("dml {args:?} still running after 30 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success() && stderr.contains("error:"),
        "{stderr}"
    );
    stderr
}

#[test]
fn absurd_step_totals_are_refused_and_progress_shows_within_a_level() {
    let png = common::tempdir("cli-sample-steps").join("x.png");
    for flag in ["--inner-steps", "--terminal-steps"] {
        let e = fails_at_once(&sample_args(&png, &["--count", "1", flag, "1000000000000"]));
        assert!(e.contains(flag) && e.contains("4294967296"), "{e}");
    }

    // 4 levels of 10^9 steps: allowed, and a progress line comes long before the first level
    // ends.
    let mut args = vec!["--device", "cpu"];
    args.extend(sample_args(
        &png,
        &[
            "--count",
            "1",
            "--batch",
            "1",
            "--inner-steps",
            "1000000000",
        ],
    ));
    let mut child = Command::new(common::cli::dml_exe())
        .args(&args)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let start = Instant::now();
    let mut seen = Vec::new();
    let found = loop {
        match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(line) if line.starts_with("sample ") => break true,
            Ok(line) => seen.push(line),
            Err(_) if start.elapsed() > Duration::from_secs(60) => break false,
            Err(_) => {}
        }
    };
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(found, "no progress within a level in 60 s: {seen:?}");
}

#[test]
fn eval_messages_say_what_to_do() {
    // A run trained on a dataset given by a relative path, evaluated from another directory.
    let data = fake_idx_dir("cli-sample-relative-data", 16, 28, None);
    let base = data.parent().unwrap();
    let name = data.file_name().unwrap().to_str().unwrap();
    let run = common::tempdir("cli-sample-relative-run");
    let trained = Command::new(common::cli::dml_exe())
        .current_dir(base)
        .args([
            "--device", "cpu", "train", "--data", name, "--preset", "tiny",
        ])
        .args([
            "--levels",
            "5",
            "--batch",
            "2",
            "--steps",
            "1",
            "--out",
            s(&run),
        ])
        .output()
        .unwrap();
    assert!(trained.status.success(), "{trained:?}");
    let e = fails(&["eval", "--checkpoint", s(&run), "--count", "2"]);
    assert!(e.contains(name) && e.contains("--data"), "{e}");

    let e = fails(&eval_args(&["--max-reference", "0"]));
    assert!(
        e.contains("--max-reference") && !e.contains("shape mismatch"),
        "{e}"
    );

    // A samples file of another shape: the file is named once, with no kind prefix after it.
    let wrong = common::tempdir("cli-sample-wrong").join("wrong.safetensors");
    SampleFile::new([2, 1, 4, 4], vec![1.5; 32])
        .unwrap()
        .save(&wrong)
        .unwrap();
    let e = fails(&eval_args(&["--samples", s(&wrong)]));
    assert!(
        e.contains("wrong.safetensors") && !e.contains(": invalid argument:"),
        "{e}"
    );

    // Image shapes print as CxHxW, not as a Rust struct.
    let shape = ImageShape {
        channels: 1,
        height: 28,
        width: 28,
    };
    let range = PixelRange::new(1.0, 2.0).unwrap();
    let e = grid(&[1.0; 5], shape, 1, 2, range).unwrap_err().to_string();
    assert!(e.contains("1x28x28") && !e.contains("ImageShape"), "{e}");
}

#[test]
fn demo_runs_end_to_end_from_the_class_averages() {
    // The demo's sampler starts from each class's mean image (README, "What the demo reaches").
    let dir = common::tempdir("cli-demo-end-to-end");
    let demo = |steps: &str| {
        let args = ["demo", "--data", "shapes", "--steps", steps, "--count", "6"];
        ok(&[&args[..], &["--out", s(&dir)]].concat())
    };
    let out = demo("3");
    assert!(out.contains("start class-average"), "{out}");
    assert!(out.contains("demo done"), "{out}");
    assert!(dir.join("samples.png").is_file());
    // Run again with more steps: the same run continues.
    let out = demo("4");
    assert!(out.contains("start class-average"), "{out}");
}
