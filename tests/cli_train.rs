//! The command line end to end: train on Fashion-MNIST (the loss falls), resume exactly, survive
//! kill -9, sample, evaluate; and every kind of bad input answered by a clear error, never a panic.
mod common;

use common::cli::{fails, fake_idx_dir, ok, s, shapes_run};

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use dalemeetslangevin::checkpoint::Checkpoint;
use dalemeetslangevin::data::{Dataset, Split};
use dalemeetslangevin::train::read_losses;

fn fashion_installed() -> bool {
    let found = Dataset::load("fashion-mnist", Split::Test).is_ok();
    if !found {
        // CI installs it (.ci/run): there, a missing dataset is a failure, not a skip.
        assert!(
            std::env::var_os("CI").is_none(),
            "Fashion-MNIST must be installed in CI"
        );
        eprintln!(
            "skipped: Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)"
        );
    }
    found
}

fn tensors_bitwise_equal(a: &Path, b: &Path) {
    let (a, b) = (Checkpoint::load(a).unwrap(), Checkpoint::load(b).unwrap());
    assert_eq!(a.metadata, b.metadata);
    assert_eq!(a.tensors.len(), b.tensors.len());
    for (name, (_, x)) in &a.tensors {
        let y = &b.tensors[name].1;
        let same = x.iter().zip(y).all(|(p, q)| p.to_bits() == q.to_bits());
        assert!(same, "tensor {name} differs");
    }
}

const FASHION_STEPS: &str = "300";

fn fashion_train(dir: &Path, steps: &str, resume: bool) {
    let mut args = vec![
        "train",
        "--data",
        "fashion-mnist",
        "--preset",
        "tiny",
        "--levels",
        "100",
        "--batch",
        "8",
        "--steps",
        steps,
        "--checkpoint-every",
        "100",
        "--out",
        s(dir),
    ];
    if resume {
        args.push("--resume");
    }
    ok(&args);
}

#[test]
fn fashion_mnist_trains_resumes_exactly_and_samples() {
    if !fashion_installed() {
        return;
    }
    let straight = common::tempdir("cli-fashion");
    fashion_train(&straight, FASHION_STEPS, false);
    let losses = read_losses(&straight.join("loss.csv")).unwrap();
    assert_eq!(losses.len(), 300);
    let mean = |xs: &[(u64, f32)]| xs.iter().map(|p| p.1 as f64).sum::<f64>() / xs.len() as f64;
    let (first, last) = (mean(&losses[..50]), mean(&losses[250..]));
    assert!(
        last < 0.8 * first,
        "the loss did not fall: first 50 steps {first:.2}, last 50 {last:.2}"
    );

    let resumed = common::tempdir("cli-fashion-resumed");
    fashion_train(&resumed, "150", false);
    fashion_train(&resumed, FASHION_STEPS, true);
    let ckpt = |d: &Path| d.join("checkpoint.safetensors");
    tensors_bitwise_equal(&ckpt(&straight), &ckpt(&resumed));
    assert_eq!(losses, read_losses(&resumed.join("loss.csv")).unwrap());

    let (png, raw) = (straight.join("s.png"), straight.join("s.safetensors"));
    let out = ok(&[
        "sample",
        "--checkpoint",
        s(&straight),
        "--count",
        "6",
        "--batch",
        "4",
        "--delta-s",
        "0.01",
        "--inner-steps",
        "1",
        "--out",
        s(&png),
        "--tensors",
        s(&raw),
    ]);
    assert!(out.contains("images/s"), "{out}");
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&png).unwrap()));
    let info = decoder.read_info().unwrap().info().clone();
    // 3 x 3 tiles of 28 pixels with 2 pixels of padding around and between.
    assert_eq!((info.width, info.height), (3 * 30 + 2, 2 * 30 + 2));
    let samples = Checkpoint::load(&raw).unwrap();
    assert_eq!(samples.tensors["samples"].0, vec![6, 1, 28, 28]);

    // Evaluate those samples against the test split; the classifier is trained on first use
    // and cached (here in the test's own cache directory).
    let out = Command::new(common::cli::dml_exe())
        .env("XDG_CACHE_HOME", straight.join("cache"))
        .args([
            "--device",
            "cpu",
            "eval",
            "--checkpoint",
            s(&straight),
            "--samples",
            s(&raw),
        ])
        .args(["--classifier-steps", "40", "--max-reference", "500"])
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(report.contains("Frechet distance"), "{report}");
    for file in ["neighbours.png", "eval.csv"] {
        assert!(straight.join(file).is_file(), "eval did not write {file}");
    }
}

#[test]
fn kill_minus_nine_loses_nothing_before_the_last_checkpoint() {
    let base = common::tempdir("cli-kill");
    let (killed, straight) = (base.join("killed"), base.join("straight"));
    let args = |dir: &PathBuf| -> Vec<String> {
        let mut args = vec!["--device".to_string(), "cpu".to_string()];
        args.extend(shapes_run(dir, &["--checkpoint-every", "5"]));
        args
    };
    let mut child = Command::new(common::cli::dml_exe())
        .args(args(&killed))
        .args(["--steps", "400"])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let log = killed.join("loss.csv");
    let start = Instant::now();
    // Kill once a couple of checkpoints have been written and the run is between two.
    while read_losses(&log).map_or(0, |l| l.len()) < 12 {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "training did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let ckpt = Checkpoint::load(killed.join("checkpoint.safetensors")).unwrap();
    let saved: u64 = ckpt.meta_parse("train.step").unwrap();
    assert!(
        saved >= 10 && saved.is_multiple_of(5),
        "checkpoint at step {saved}"
    );

    // Resume, finish, and compare with an uninterrupted run of the same total.
    let total = (saved + 7).to_string();
    let mut resume = args(&killed);
    resume.extend(["--resume".into(), "--steps".into(), total.clone()]);
    let run = |a: &[String]| {
        let out = Command::new(common::cli::dml_exe())
            .args(a)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&resume);
    let mut uninterrupted = args(&straight);
    uninterrupted.extend(["--steps".into(), total]);
    run(&uninterrupted);
    tensors_bitwise_equal(
        &killed.join("checkpoint.safetensors"),
        &straight.join("checkpoint.safetensors"),
    );
    let (a, b) = (
        read_losses(&log).unwrap(),
        read_losses(&straight.join("loss.csv")).unwrap(),
    );
    assert_eq!(a, b, "the loss log after kill and resume differs");
}

#[test]
fn bad_input_is_a_clear_error() {
    let out = common::tempdir("cli-bad");
    let run_dir = out.join("run");
    let train = |extra: &[&str]| {
        let mut a = vec![
            "train",
            "--out",
            s(&run_dir),
            "--steps",
            "1",
            "--batch",
            "2",
        ];
        a.extend_from_slice(extra);
        fails(&a)
    };
    let missing = out.join("nowhere");
    let e = train(&["--data", s(&missing)]);
    assert!(
        e.contains("nowhere") && e.contains("not a directory"),
        "{e}"
    );

    let truncated = fake_idx_dir("cli-truncated", 20, 28, Some(1000));
    let e = train(&["--data", s(&truncated)]);
    assert!(
        e.contains("train-images-idx3-ubyte") && e.contains("truncated"),
        "{e}"
    );

    let small = fake_idx_dir("cli-small", 20, 16, None);
    let e = train(&["--data", s(&small)]);
    assert!(e.contains("16x16") && e.contains("tiny"), "{e}");

    let e = train(&["--data", "shapes", "--sigma-max=-0.5"]);
    assert!(e.contains("sigma"), "{e}");
    let e = train(&["--data", "shapes", "--levels", "0"]);
    assert!(e.contains("levels"), "{e}");
    let e = fails(&[
        "train",
        "--data",
        "shapes",
        "--steps",
        "0",
        "--out",
        s(&run_dir),
    ]);
    assert!(e.contains("--steps"), "{e}");
    let e = train(&["--data", "shapes", "--range-lo", "0"]);
    assert!(e.contains("pixel range") && e.contains("0 < lo"), "{e}");
    let e = train(&["--data", "shapes", "--preset", "huge"]);
    assert!(e.contains("huge") && e.contains("tiny_deep"), "{e}");
    let e = train(&["--data", "shapes", "--precision", "fp16"]);
    assert!(
        e.contains("fp16") && e.contains("bf16") && e.contains("tf32"),
        "{e}"
    );
    let e = train(&["--data", "shapes", "--resume"]);
    assert!(e.contains("no checkpoint"), "{e}");

    let corrupt = out.join("corrupt.safetensors");
    std::fs::write(&corrupt, b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\": garbage").unwrap();
    let e = fails(&[
        "sample",
        "--checkpoint",
        s(&corrupt),
        "--out",
        s(&out.join("x.png")),
    ]);
    assert!(e.contains("corrupt.safetensors"), "{e}");
    let e = fails(&[
        "sample",
        "--checkpoint",
        s(&missing),
        "--out",
        s(&out.join("x.png")),
    ]);
    assert!(e.contains("nowhere"), "{e}");

    // A real checkpoint with bad sampler settings.
    ok(&[
        "train",
        "--data",
        "shapes",
        "--max-images",
        "16",
        "--levels",
        "5",
        "--batch",
        "2",
        "--steps",
        "1",
        "--out",
        s(&run_dir),
    ]);
    let e = train(&["--data", "shapes"]);
    assert!(
        e.contains("--resume"),
        "an existing run is not overwritten: {e}"
    );
    // A resumed run keeps its convolution precision (fp32 here, the default).
    let e = train(&[
        "--data",
        "shapes",
        "--max-images",
        "16",
        "--resume",
        "--precision",
        "tf32",
    ]);
    assert!(
        e.contains("--precision fp32") && e.contains("cannot resume with --precision tf32"),
        "{e}"
    );
    // Sampling may run in another precision, and says which.
    for precision in ["tf32", "bf16"] {
        let out_png = out.join(format!("{precision}.png"));
        let said = ok(&[
            "sample",
            "--checkpoint",
            s(&run_dir),
            "--count",
            "2",
            "--precision",
            precision,
            "--out",
            s(&out_png),
        ]);
        assert!(
            said.contains(&format!("{precision} convolutions")),
            "{said}"
        );
    }
    let sample = |extra: &[&str]| {
        let png = out.join("s.png");
        let mut a = vec![
            "sample",
            "--checkpoint",
            s(&run_dir),
            "--count",
            "2",
            "--out",
            s(&png),
        ];
        a.extend_from_slice(extra);
        fails(&a)
    };
    let e = sample(&["--delta-s", "0"]);
    assert!(e.contains("delta_s"), "{e}");
    let e = sample(&["--delta-s=-1"]);
    assert!(e.contains("delta_s"), "{e}");
    let e = sample(&["--count", "0"]);
    assert!(e.contains("--count"), "{e}");
    let e = sample(&["--sampler", "ddpm"]);
    assert!(e.contains("ddpm"), "{e}");
    let e = sample(&["--init", "noise"]);
    assert!(e.contains("additive"), "{e}");
}

#[test]
fn help_lists_every_choice_with_its_meaning() {
    let help = ok(&["train", "--help"]);
    for choice in [
        "tiny_deep",
        "additive",
        "cosine",
        "sk2",
        "stein",
        "egd",
        "tf32",
        "emu-reverse",
    ] {
        assert!(
            help.contains(choice),
            "train --help lacks {choice}:\n{help}"
        );
    }
    assert!(help.contains("exponentiated gradient descent"), "{help}");
    let help = ok(&["sample", "--help"]);
    for choice in ["asams", "supplement", "class-average", "raw", "tf32"] {
        assert!(
            help.contains(choice),
            "sample --help lacks {choice}:\n{help}"
        );
    }
}
