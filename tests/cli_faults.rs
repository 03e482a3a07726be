//! `dml train` under the faults a hostile user (or a scheduler) brings: a resumed run killed at
//! once, two runs in one directory, SIGTERM and SIGHUP, a diverging learning rate, options that
//! contradict the run being resumed, and `dml demo` pointed at another run. Nothing is lost and
//! nothing is silently wrong.
mod common;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::cli::{args_ref, fails, ok, s, shapes_run};
use dalemeetslangevin::checkpoint::Checkpoint;
use dalemeetslangevin::train::read_losses;

/// A running `dml`, killed when dropped: a failing assertion never leaves a long run behind.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl std::ops::Deref for Running {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Running {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

fn spawn(args: &[String]) -> Running {
    let child = Command::new(common::cli::dml_exe())
        .args(["--device", "cpu"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the dml binary runs");
    Running(child)
}

/// Waits up to a minute for `ready`, failing the test with `what` otherwise.
fn wait_for(what: &str, mut ready: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ready() {
        assert!(start.elapsed() < Duration::from_secs(60), "{what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait_exit(child: &mut Child) -> ExitStatus {
    let mut status = None;
    wait_for("the run did not stop", || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    status.unwrap()
}

fn signal(child: &Child, name: &str) {
    let sent = Command::new("kill")
        .args([format!("-{name}"), child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success(), "kill -{name} failed");
}

fn checkpoint_step(dir: &Path) -> u64 {
    Checkpoint::load(dir.join("checkpoint.safetensors"))
        .unwrap()
        .meta_parse("train.step")
        .unwrap()
}

fn fresh_dir(name: &str) -> PathBuf {
    common::tempdir(name).join("run")
}

#[test]
fn a_resumed_run_killed_at_once_keeps_its_loss_log() {
    let dir = fresh_dir("faults-log");
    ok(&args_ref(&shapes_run(
        &dir,
        &["--steps", "6", "--checkpoint-every", "3"],
    )));
    let log = dir.join("loss.csv");
    assert_eq!(read_losses(&log).unwrap().len(), 6);
    let inode = std::fs::metadata(&log).unwrap().ino();
    let mut child = spawn(&shapes_run(
        &dir,
        &[
            "--resume",
            "--steps",
            "100000",
            "--checkpoint-every",
            "100000",
        ],
    ));
    // Kill as soon as the resumed run has opened (rewritten) its log, long before it would
    // flush again.
    let rewritten = || {
        std::fs::metadata(&log).is_ok_and(|m| m.ino() != inode || m.len() < 10)
            || child.try_wait().unwrap().is_some()
    };
    wait_for("the resumed run never opened its loss log", rewritten);
    child.kill().unwrap();
    child.wait().unwrap();
    let rows = read_losses(&log).unwrap();
    assert_eq!(
        rows.iter().map(|r| r.0).collect::<Vec<_>>(),
        (1..=6).collect::<Vec<_>>(),
        "the loss log lost the rows of the run it resumed"
    );
}

#[test]
fn a_second_run_in_the_same_directory_is_refused() {
    let dir = fresh_dir("faults-lock");
    let mut first = spawn(&shapes_run(
        &dir,
        &["--steps", "100000", "--checkpoint-every", "100000"],
    ));
    let lock = dir.join(".lock");
    wait_for("the first run never took its lock", || {
        std::fs::read_to_string(&lock).is_ok_and(|pid| !pid.is_empty())
    });
    let e = fails(&args_ref(&shapes_run(&dir, &["--steps", "2"])));
    assert!(
        e.contains("another dml process") && e.contains(&first.id().to_string()),
        "{e}"
    );
    first.kill().unwrap();
    first.wait().unwrap();
    // The lock dies with its process, kill -9 included: the directory is usable again.
    ok(&args_ref(&shapes_run(&dir, &["--steps", "2"])));
}

#[test]
fn sigterm_and_sighup_stop_cleanly_with_the_shell_exit_codes() {
    for (name, code) in [("TERM", 143), ("HUP", 129), ("INT", 130)] {
        let dir = fresh_dir(&format!("faults-sig{name}"));
        let mut child = spawn(&shapes_run(
            &dir,
            &["--steps", "100000", "--checkpoint-every", "100000"],
        ));
        // Let a few steps run (the log's first rows are flushed only at the end).
        wait_for("the run never started", || dir.join(".lock").exists());
        std::thread::sleep(Duration::from_millis(1500));
        signal(&child, name);
        let status = wait_exit(&mut child);
        assert_eq!(status.code(), Some(code), "SIG{name}: {status:?}");
        let saved = checkpoint_step(&dir);
        let rows = read_losses(&dir.join("loss.csv")).unwrap();
        assert!(saved >= 1, "SIG{name}: no step was saved");
        assert_eq!(
            rows.last().map(|r| r.0),
            Some(saved),
            "SIG{name}: the loss log and the checkpoint disagree"
        );
    }
}

#[test]
fn a_diverging_run_stops_and_keeps_the_last_good_checkpoint() {
    let dir = fresh_dir("faults-diverge");
    ok(&args_ref(&shapes_run(
        &dir,
        &["--steps", "5", "--checkpoint-every", "5"],
    )));
    let good = std::fs::read(dir.join("checkpoint.safetensors")).unwrap();
    let e = fails(&args_ref(&shapes_run(
        &dir,
        &[
            "--resume",
            "--steps",
            "300",
            "--lr",
            "1000",
            "--checkpoint-every",
            "1",
        ],
    )));
    assert!(e.contains("diverged") && e.contains("holds step 5"), "{e}");
    assert_eq!(
        std::fs::read(dir.join("checkpoint.safetensors")).unwrap(),
        good,
        "a diverged checkpoint replaced the good one"
    );
}

#[test]
fn resume_refuses_contradicting_options_and_continues_on_its_own_data() {
    let dir = fresh_dir("faults-resume");
    ok(&args_ref(&shapes_run(&dir, &["--steps", "2"])));
    let resume = |extra: &[&str]| {
        let mut a = vec!["train", "--resume", "--out", s(&dir)];
        a.extend_from_slice(extra);
        a.into_iter().map(String::from).collect::<Vec<_>>()
    };
    let e = fails(&args_ref(&resume(&[
        "--preset",
        "paper",
        "--levels",
        "20",
        "--batch",
        "0",
        "--lr-decay",
        "cosine",
        "--ema-warmup",
    ])));
    for expected in [
        "--preset paper (the run's: tiny)",
        "--levels 20 (the run's: 10)",
        "--batch 0 (the run's: 2)",
        "--lr-decay cosine (the run's: constant)",
        "--ema-warmup true (the run's: false)",
    ] {
        assert!(e.contains(expected), "missing '{expected}' in: {e}");
    }
    let e = fails(&args_ref(&resume(&["--lr=-5"])));
    assert!(e.contains("--lr -5"), "{e}");
    // No --data: the run's own (the built-in shapes, its first 64 images), not the default.
    // Options that repeat the run's own values are accepted; --lr may change, with a note.
    let out = ok(&args_ref(&resume(&[
        "--steps", "3", "--seed", "0", "--batch", "2", "--lr", "0.0005",
    ])));
    assert!(out.contains("note: --lr 0.0005"), "{out}");
    assert_eq!(checkpoint_step(&dir), 3);
}

#[test]
fn demo_refuses_a_directory_holding_another_run() {
    let dir = fresh_dir("faults-demo");
    ok(&args_ref(&shapes_run(&dir, &["--steps", "2"])));
    let before = std::fs::read(dir.join("checkpoint.safetensors")).unwrap();
    let e = fails(&[
        "demo",
        "--data",
        "shapes",
        "--steps",
        "3",
        "--count",
        "4",
        "--out",
        s(&dir),
    ]);
    assert!(e.contains("not this demo's"), "{e}");
    assert_eq!(
        std::fs::read(dir.join("checkpoint.safetensors")).unwrap(),
        before
    );
    assert!(!dir.join("samples.png").exists());
}

#[test]
fn a_few_images_or_a_single_class_can_train() {
    // The first 3 built-in pictures hold 3 of its 5 classes; the missing ones take the mean of
    // all images as their class-average start.
    let dir = fresh_dir("faults-few");
    ok(&[
        "train",
        "--data",
        "shapes",
        "--max-images",
        "3",
        "--levels",
        "10",
        "--batch",
        "2",
        "--steps",
        "1",
        "--out",
        s(&dir),
    ]);
}

#[test]
fn absurd_level_counts_and_batches_are_refused_before_training() {
    let dir = fresh_dir("faults-sizes");
    let run = |extra: &[&str]| {
        let mut args = vec![
            "train",
            "--data",
            "shapes",
            "--steps",
            "1",
            "--out",
            s(&dir),
        ];
        args.extend_from_slice(extra);
        fails(&args)
    };
    let e = run(&["--levels", "1000000000000"]);
    assert!(e.contains("--levels") && e.contains("100000"), "{e}");
    let e = run(&["--levels", "10", "--batch", "100000000"]);
    assert!(e.contains("--batch 100000000") && e.contains("GB"), "{e}");
    assert!(!dir.join("checkpoint.safetensors").exists());

    // Sampling: the network's activations at the batch, estimated before the first step.
    ok(&args_ref(&shapes_run(&dir, &["--steps", "1"])));
    let png = dir.join("x.png");
    let e = fails(&[
        "sample",
        "--checkpoint",
        s(&dir),
        "--count",
        "1000000",
        "--batch",
        "1000000",
        "--out",
        s(&png),
    ]);
    assert!(e.contains("--batch 1000000") && e.contains("GB"), "{e}");
}
